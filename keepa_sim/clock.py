"""The simulator clock: `speed` × wall pace or frozen, movable by the control API; Keepa minutes.

`now_ms()` is simulator time in epoch ms; deal data, Keepa minutes and refill ticks derive from
it. Running, it advances `speed` simulator ms per wall ms (measured on the monotonic clock), so
`speed 60` turns a Keepa minute into a wall second. Reported `timestamp`s add `skew_ms` (a server
clock that is wrong relative to the client). The refill tick period is `minute_ms` of simulator
time; "token seconds" are sixtieths of it. Durations a client sleeps on (`refillIn`) are wall ms:
`wall_ms_for(simulator ms)`.
"""

from __future__ import annotations

import math
import threading
import time

KEEPA_EPOCH_MINUTE = 21_564_000  # minutes from 1970-01-01 to 2011-01-01 (UTC)
MS_PER_MINUTE = 60_000
_NS_PER_MS = 1_000_000


def keepa_minute(epoch_ms: int) -> int:
    """Keepa minute (minutes since 2011-01-01 UTC) containing `epoch_ms`."""
    return epoch_ms // MS_PER_MINUTE - KEEPA_EPOCH_MINUTE


def wall_ms() -> int:
    return time.time_ns() // _NS_PER_MS


class SimClock:
    """Simulator time. Running: anchor + `speed` × wall time since the anchor. Frozen: fixed.

    `advance` and `set` take simulator ms and keep the mode; thread-safe (readers take no lock:
    the anchor is one tuple, replaced whole under the lock).
    """

    def __init__(self, *, minute_ms: int, speed: float = 1, frozen: bool = False,
                 skew_ms: int = 0, start_ms: int | None = None):
        self.minute_ms = minute_ms
        self.speed = speed
        self.skew_ms = skew_ms
        self._lock = threading.Lock()
        start = wall_ms() if start_ms is None else start_ms
        # (simulator ms at the anchor, monotonic ns at the anchor, frozen)
        self._anchor: tuple[int, int, bool] = (start, time.monotonic_ns(), frozen)

    @property
    def frozen(self) -> bool:
        return self._anchor[2]

    def now_ms(self) -> int:
        return self._at(self._anchor, time.monotonic_ns())

    def _at(self, anchor: tuple[int, int, bool], monotonic_ns: int) -> int:
        sim_ms, anchored_ns, frozen = anchor
        if frozen:
            return sim_ms
        return sim_ms + int((monotonic_ns - anchored_ns) * self.speed) // _NS_PER_MS

    def timestamp_ms(self) -> int:
        """What responses report as `timestamp`."""
        return self.now_ms() + self.skew_ms

    def token_seconds_ms(self, seconds: float) -> int:
        """Simulator ms of `seconds` token seconds (60 token seconds = one refill tick)."""
        return round(seconds * self.minute_ms / 60)

    def wall_ms_for(self, sim_ms: int) -> int:
        """Wall ms in which the running clock covers `sim_ms` (rounded up, at least 1)."""
        return max(1, math.ceil(sim_ms / self.speed))

    def freeze(self, frozen: bool) -> None:
        with self._lock:
            now_ns = time.monotonic_ns()
            anchor = self._anchor
            if frozen != anchor[2]:
                self._anchor = (self._at(anchor, now_ns), now_ns, frozen)

    def advance(self, ms: int) -> None:
        with self._lock:
            sim_ms, anchored_ns, frozen = self._anchor
            self._anchor = (sim_ms + ms, anchored_ns, frozen)

    def set(self, epoch_ms: int) -> None:
        with self._lock:
            self._anchor = (epoch_ms, time.monotonic_ns(), self._anchor[2])

    def state(self) -> dict:
        now = self.now_ms()
        return {"now_ms": now, "timestamp_ms": now + self.skew_ms,
                "keepa_minute": keepa_minute(now), "frozen": self.frozen,
                "minute_ms": self.minute_ms, "speed": self.speed, "skew_ms": self.skew_ms}
