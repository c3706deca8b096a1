"""The HTTP layer: a threading stdlib server that speaks Keepa's wire format.

Routes `/<endpoint>` and `/<endpoint>/` alike; `/_sim/...` goes to the control API unless
disabled. JSON bodies are gzip-compressed when the request accepts gzip (or `http.always_gzip`).
Faults that need the socket live here: a reset sends part of the body and closes with RST; a hang
answers nothing for a while and then closes. Request lines are never logged (they carry keys).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from keepa_sim import api, control
from keepa_sim import config as sim_config
from keepa_sim.simulator import Simulator

_MAX_BODY = 10 * 1024 * 1024
_KEY_IN_TEXT = re.compile(r"key=[^&\s'\"]+")


def redact(text: str) -> str:
    """Remove API keys that travel in URLs from a text meant for a log."""
    return _KEY_IN_TEXT.sub("key=***", text)


class SimulatorServer:
    """The simulator on a real socket, in a background thread.

    `SimulatorServer(config=None, host="127.0.0.1", port=0, control=True)`; `start()`, `stop()`,
    `url`. `config` holds overrides in the config-file structure (see `python -m keepa_sim
    --help`); a bad value raises `keepa_sim.config.ConfigError`.
    """

    def __init__(self, config: dict | None = None, host: str = "127.0.0.1", port: int = 0,
                 control: bool = True):
        self.simulator = Simulator(sim_config.load(config))
        self._httpd = _Server((host, port), _Handler)
        self._httpd.simulator = self.simulator
        self._httpd.control_enabled = control
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="keepa-sim",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hung/slow requests and close every connection."""
        self.simulator.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.close_connections()
        self._httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    simulator: Simulator
    control_enabled: bool

    def __init__(self, address, handler):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            print(f"keepa_sim: connection error: {type(error).__name__}: {redact(str(error))}",
                  file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keepa-sim"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):
        return

    def _dispatch(self) -> None:
        try:
            url = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            body = self._read_body()
            is_control = url.path == control.PREFIX or url.path.startswith(control.PREFIX + "/")
            if is_control and self.server.control_enabled:
                status, document = control.handle(self.server.simulator, self.command,
                                                  url.path, params, body)
                self._send_json(status, json.dumps(document).encode())
                return
            response = api.handle(self.server.simulator,
                                  api.ApiRequest(self.command, url.path, params, body))
            self._send(response)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away
        except Exception as error:  # noqa: BLE001 - answer 500 instead of dropping the socket
            print(f"keepa_sim: internal error on {self.command} {redact(self.path)[:200]}: "
                  f"{type(error).__name__}: {redact(str(error))}", file=sys.stderr)
            self._send_json(500, json.dumps({"error": f"simulator failure: "
                                                      f"{type(error).__name__}"}).encode())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError(f"request body of {length} bytes is too large")
        return self.rfile.read(length) if length > 0 else b""

    def _wants_gzip(self) -> bool:
        accepted = self.headers.get("Accept-Encoding", "").lower()
        return "gzip" in accepted or self.server.simulator.config["http"]["always_gzip"]

    def _send_json(self, status: int, body: bytes) -> None:
        self._send(api.ApiResponse(status, body))

    def _send(self, response: api.ApiResponse) -> None:
        if response.action == "hang":
            self.server.simulator.stopping.wait(response.hang_ms / 1000)
            self.close_connection = True
            return
        body = response.body
        encoded = response.pre_gzipped
        if not encoded and response.content_type == api.JSON_TYPE and self._wants_gzip():
            body = gzip.compress(body, compresslevel=1, mtime=0)
            encoded = True
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if response.action == "reset":
            self.wfile.write(body[: len(body) // 2])
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.wfile.write(body)
