"""Test doubles for the client tests: a recording TokenGate and a canned HTTP server.

The gate grants every reservation at once and records reserve / reconcile / sync calls, so that
tests can assert the protocol (one reconcile per reserve, on every path). Like a real gate it can
be told to honour 429s: the next reserve then waits for the refill tick the 429 envelope
announced.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keepa_deals.envelope import TokenEnvelope

_MAX_MODELLED_WAIT_S = 2.0


@dataclass
class Reserved:
    id: int
    cost: int
    priority: int
    task: str
    sync: Callable[[], TokenEnvelope]
    deadline: float | None


@dataclass
class Reconciled:
    id: int
    envelope: TokenEnvelope | None
    status: int | None


@dataclass
class RecordingGate:
    honour_429: bool = False
    sync_on_first_reserve: bool = False
    on_reconcile: Callable[[Reconciled], None] | None = None
    reserved: list[Reserved] = field(default_factory=list)
    reconciled: list[Reconciled] = field(default_factory=list)
    synced: list[TokenEnvelope] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)
    _wait_s: float = 0.0

    def reserve(self, cost, *, priority, task, sync, deadline=None):
        if self.sync_on_first_reserve and not self.reserved:
            self.sync(sync())
        if self._wait_s:
            time.sleep(self._wait_s)  # models the gate waiting for the announced refill tick
            self._wait_s = 0.0
        entry = Reserved(next(self._ids), cost, priority, task, sync, deadline)
        self.reserved.append(entry)
        return entry.id

    def reconcile(self, reservation, envelope, *, status=None):
        entry = Reconciled(reservation, envelope, status)
        self.reconciled.append(entry)
        if self.honour_429 and status == 429 and envelope is not None:
            self._wait_s = min(_MAX_MODELLED_WAIT_S, envelope.refill_in_ms / 1000 + 0.02)
        if self.on_reconcile is not None:
            self.on_reconcile(entry)

    def sync(self, envelope):
        assert isinstance(envelope, TokenEnvelope)
        self.synced.append(envelope)

    @property
    def statuses(self) -> list[int | None]:
        return [r.status for r in self.reconciled]

    def assert_balanced(self) -> None:
        """Every reservation was reconciled exactly once, in order, and nothing else was."""
        assert [r.id for r in self.reconciled] == [r.id for r in self.reserved]


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()



class CannedServer:
    """A real HTTP server answering queued replies in order (for bodies the simulator never
    produces, e.g. a payload of the wrong type). `paths` records every request line."""

    def __init__(self):
        self.replies: deque[tuple[int, bytes]] = deque()
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.paths.append(self.path)
                status, body = server.replies.popleft() if server.replies else (500, b"empty")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def reply(self, status: int, body: dict | bytes) -> None:
        encoded = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.replies.append((status, encoded))

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def canned():
    server = CannedServer()
    yield server
    server.close()
