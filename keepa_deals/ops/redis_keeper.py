"""Keeping the private redis-server alive (DESIGN principle 11).

The private server runs daemonized, so no child supervisor sees it die. The `redis` service
(`python -m keepa_deals.ops.redis_keeper`, supervised like the others by the runner and by
start_celery.sh) drives `RedisKeeper.step()`, which checks it every CHECK_EVERY_S and starts
it again on the same port when it is gone, with back-off (1, 2, 4 … MAX_BACKOFF_S between
tries) and its data kept: the append-only file (fsync every second) and the snapshot are
reloaded, so a crash loses at most about a second of writes. It says so once per change of
state (down, still down every REMIND_EVERY_S, back), never once per check. Clients reconnect
to the same URL by themselves.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable

from keepa_deals.config import ConfigError, load_settings
from keepa_deals.ops.logsink import rotate_when_larger
from keepa_deals.redis_server import PrivateRedis, RedisUnavailable, private_redis

CHECK_EVERY_S = 1.0
MAX_BACKOFF_S = 30.0
REMIND_EVERY_S = 300.0
REDIS_LOG_MAX_BYTES = 10 * 1024 * 1024  # redis-server reopens its log per line: renaming works
REDIS_LOG_BACKUPS = 2
STEP_S = 0.2


class RedisKeeper:
    """Restarts `server` when it stops answering; `announce(message, loud)` reports it."""

    def __init__(self, server: PrivateRedis, announce: Callable[[str, bool], None], *,
                 clock: Callable[[], float] = time.monotonic):
        self.server = server
        self._announce = announce
        self._clock = clock
        self._next_check = 0.0
        self._down_since: float | None = None
        self._attempts = 0
        self._reminded_at = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def step(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        rotate_when_larger(self.server.data_dir / "redis.log", REDIS_LOG_MAX_BYTES,
                           REDIS_LOG_BACKUPS)
        if self.server.is_running():
            self._back(now)
            return
        if self._down_since is None:
            self._down_since = self._reminded_at = now
            self._announce("redis: the private server is down; starting it again (its data "
                           "is kept)", True)
        elif now - self._reminded_at >= REMIND_EVERY_S:
            self._reminded_at = now
            self._announce(f"redis: still down after {now - self._down_since:.0f} s; "
                           f"{self._attempts} restarts failed (see {self.server.data_dir}/"
                           "redis.log)", True)
        self._restart(now)

    def _restart(self, now: float) -> None:
        try:
            self.server.start()
        except RedisUnavailable as exc:
            self._attempts += 1
            self._next_check = now + min(MAX_BACKOFF_S, 2.0 ** self._attempts)
            if self._attempts == 1:
                self._announce(f"redis: restart failed ({exc}); retrying with back-off", True)
            return
        self._back(self._clock())

    def _back(self, now: float) -> None:
        if self._down_since is None:
            return
        self._announce(f"redis: back after {now - self._down_since:.1f} s on "
                       f"port {self.server.port}", False)
        self._down_since = None
        self._attempts = 0


def main() -> int:
    """Keep the private server of VAR_DIR alive until SIGTERM/SIGINT (the `redis` service that
    the runner and start_celery.sh supervise); stopping the keeper leaves the server running."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keeper = RedisKeeper(private_redis(settings), _say)
    _say(f"redis: keeping the private server under {keeper.server.data_dir} alive", False)
    while not stop.is_set():
        keeper.step()
        stop.wait(STEP_S)
    return 0


def _say(message: str, loud: bool) -> None:
    print(("!!! " if loud else "") + message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
