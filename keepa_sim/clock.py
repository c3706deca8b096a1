"""The simulator clock: wall speed or frozen, movable by the control API; Keepa-minute helpers.

`now_ms()` is simulator time in epoch ms; deal data and Keepa minutes derive from it. Reported
`timestamp`s add `skew_ms` (a server clock that is wrong relative to the client). The refill
tick period is `minute_ms` of simulator time; "token seconds" are sixtieths of it.
"""

from __future__ import annotations

import threading
import time

KEEPA_EPOCH_MINUTE = 21_564_000  # minutes from 1970-01-01 to 2011-01-01 (UTC)
MS_PER_MINUTE = 60_000


def keepa_minute(epoch_ms: int) -> int:
    """Keepa minute (minutes since 2011-01-01 UTC) containing `epoch_ms`."""
    return epoch_ms // MS_PER_MINUTE - KEEPA_EPOCH_MINUTE


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SimClock:
    """Simulator time. Running: wall clock + offset. Frozen: a fixed value until moved."""

    def __init__(self, *, minute_ms: int, frozen: bool = False, skew_ms: int = 0,
                 start_ms: int | None = None):
        self.minute_ms = minute_ms
        self.skew_ms = skew_ms
        self._lock = threading.Lock()
        start = wall_ms() if start_ms is None else start_ms
        self._offset = start - wall_ms()
        self._frozen_at: int | None = start if frozen else None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now_ms(self) -> int:
        frozen_at = self._frozen_at
        return frozen_at if frozen_at is not None else wall_ms() + self._offset

    def timestamp_ms(self) -> int:
        """What responses report as `timestamp`."""
        return self.now_ms() + self.skew_ms

    def token_seconds_ms(self, seconds: float) -> int:
        """Simulator ms of `seconds` token seconds (60 token seconds = one refill tick)."""
        return round(seconds * self.minute_ms / 60)

    def freeze(self, frozen: bool) -> None:
        with self._lock:
            if frozen and self._frozen_at is None:
                self._frozen_at = self.now_ms()
            elif not frozen and self._frozen_at is not None:
                self._offset = self._frozen_at - wall_ms()
                self._frozen_at = None

    def advance(self, ms: int) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += ms
            else:
                self._offset += ms

    def set(self, epoch_ms: int) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = epoch_ms
            else:
                self._offset = epoch_ms - wall_ms()

    def state(self) -> dict:
        now = self.now_ms()
        return {"now_ms": now, "timestamp_ms": now + self.skew_ms,
                "keepa_minute": keepa_minute(now), "frozen": self.frozen,
                "minute_ms": self.minute_ms, "skew_ms": self.skew_ms}
