"""Logging a dependency that keeps failing: once when it fails, a reminder while it stays down,
once when it is back — never once per attempt (FAILURES: a beat logged "Redis unavailable"
thirty times a millisecond while Redis was gone)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REMIND_EVERY_S = 300.0


class OutageLog:
    """`failed(exc)` after every failed attempt, `ok()` after every good one."""

    def __init__(self, logger: logging.Logger, what: str, *,
                 remind_every_s: float = REMIND_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self._what = what
        self._remind_every_s = remind_every_s
        self._clock = clock
        self._down_since: float | None = None
        self._reminded_at = 0.0
        self._failures = 0

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._failures += 1
        if self._down_since is None:
            self._down_since = self._reminded_at = now
            self._log.warning("%s unavailable (%s); retrying quietly, a reminder every %.0f s",
                              self._what, exc, self._remind_every_s)
        elif now - self._reminded_at >= self._remind_every_s:
            self._reminded_at = now
            self._log.warning("%s still unavailable after %.0f s and %d attempts (%s)",
                              self._what, now - self._down_since, self._failures, exc)

    def ok(self) -> None:
        if self._down_since is None:
            return
        self._log.warning("%s is back after %.1f s", self._what,
                          self._clock() - self._down_since)
        self._down_since = None
        self._failures = 0
