"""Price histories as piecewise-constant functions of Keepa minutes, pure functions of the seed.

* Keepa re-checks a product every `interval` minutes (its update grid); `lastUpdate` at time T is
  the last grid point ≤ T.
* A `Family` of csv series changes together in epochs of `period` minutes (period ≥ 2 ×
  interval): epoch j starts at `offset + j × period`; Keepa sees its values at the first update at
  or after that start (the epoch's *detection* time). Epoch values are `levels(mix64(stream ^ j))`
  — one value per csv type of the family, plus optional extras (e.g. the warehouse condition).
* A `Segment` is (start, end, values): what Keepa observed between two detections. Statistics
  (current value and since when, previous value, time-weighted averages ignoring −1, extremes,
  out-of-stock share, drops, csv points) are computed from the segments newest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from keepa_sim.rand import GOLDEN, MASK64, mix64

MINUTES_PER_DAY = 1440
# Deal intervals (day, week, month, 90 days); the "day" average spans 48 h (keepa-api.md §2.2).
DEAL_AVERAGE_WINDOWS = (2 * MINUTES_PER_DAY, 7 * MINUTES_PER_DAY, 31 * MINUTES_PER_DAY,
                        90 * MINUTES_PER_DAY)
DEAL_CHANGE_WINDOWS = (MINUTES_PER_DAY, 7 * MINUTES_PER_DAY, 31 * MINUTES_PER_DAY,
                       90 * MINUTES_PER_DAY)
CONSTANT_PERIOD = 1 << 40  # a family that never changes

Segment = tuple[int, int, tuple]


class UpdateGrid:
    """The minutes at which Keepa refreshes one product: offset + k × interval."""

    __slots__ = ("interval", "offset")

    def __init__(self, interval: int, offset: int):
        self.interval = interval
        self.offset = offset

    def last_at_or_before(self, minute: int) -> int:
        return minute - (minute - self.offset) % self.interval

    def first_at_or_after(self, minute: int) -> int:
        return minute + (self.offset - minute) % self.interval


class Family:
    """csv series of one product that change together (see module docstring)."""

    __slots__ = ("grid", "levels", "offset", "period", "stream", "tracking_since", "types")

    def __init__(self, types: tuple[int, ...], *, period: int, offset: int, stream: int,
                 grid: UpdateGrid, tracking_since: int, levels: Callable[[int], tuple]):
        self.types = types
        self.period = period
        self.offset = offset
        self.stream = stream
        self.grid = grid
        self.tracking_since = tracking_since
        self.levels = levels

    def _detect(self, epoch: int) -> int:
        return self.grid.first_at_or_after(self.offset + epoch * self.period)

    def _values(self, epoch: int) -> tuple:
        return self.levels(mix64(self.stream ^ (epoch & MASK64)))

    def current(self, t: int) -> tuple:
        """The values Keepa shows at minute t (all −1/0 before tracking started)."""
        epoch = (t - self.offset) // self.period
        if self._detect(epoch) > t:
            epoch -= 1
        return self._values(epoch)

    def segments(self, t: int, horizon: int) -> list[Segment]:
        """Observed segments newest first, covering [t − horizon, t] within the tracked time."""
        tracking = self.tracking_since
        if t < tracking:
            return []
        low = max(t - horizon, tracking)
        # The hot loop of the simulator: detection times and mix64 are inlined.
        period, offset, stream, levels = self.period, self.offset, self.stream, self.levels
        interval, grid_offset = self.grid.interval, self.grid.offset
        epoch = (t - offset) // period
        begin = offset + epoch * period
        start = begin + (grid_offset - begin) % interval
        if start > t:
            epoch -= 1
            begin -= period
            start = begin + (grid_offset - begin) % interval
        out = []
        end = t
        while True:
            x = ((stream ^ (epoch & MASK64)) + GOLDEN) & MASK64
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
            values = levels(x ^ (x >> 31))
            if start <= tracking:
                out.append((tracking, end, values))
                return out
            out.append((start, end, values))
            if start <= low:
                return out
            end = start
            epoch -= 1
            begin -= period
            start = begin + (grid_offset - begin) % interval


# --- statistics over segments (newest first); m = index into the values tuple ----------------

def current_run(segments: Sequence[Segment], m: int) -> tuple[int, int, int]:
    """(current value, since when it holds, the value before it); −1 for unknown."""
    if not segments:
        return -1, -1, -1
    value = segments[0][2][m]
    since = segments[0][0]
    for start, _end, values in segments[1:]:
        if values[m] != value:
            return value, since, values[m]
        since = start
    return value, since, -1


def average(segments: Sequence[Segment], m: int, low: int) -> int:
    """Time-weighted average over [low, newest end] ignoring −1 stretches; −1 if none."""
    total = duration = 0
    for start, end, values in segments:
        if end <= low:
            break
        value = values[m]
        if value >= 0:
            span = end - (start if start > low else low)
            total += value * span
            duration += span
    return round(total / duration) if duration else -1


Summary = tuple[int, int, list | None, list | None]


def summary(segments: Sequence[Segment], m: int, low: int) -> Summary:
    """(average, out-of-stock percent, [time, min], [time, max]) over [low, newest end].

    The average and extremes ignore −1 stretches (−1 / None when nothing valid is known);
    the out-of-stock percent is the share of time at −1 (−1 when nothing is covered).
    """
    return summaries(segments, m, (low,))[0]


def summaries(segments: Sequence[Segment], m: int, lows: Sequence[int]) -> list[Summary]:
    """`summary` for several nested windows in one pass; `lows` must be in descending order."""
    out: list[Summary] = []
    total = valid = covered = 0
    lowest = highest = None  # [time, value]
    pending, count = 0, len(lows)
    for start, end, values in segments:
        value = values[m]
        while pending < count and start <= lows[pending]:
            span = max(0, end - lows[pending])  # the part of this segment inside the window
            if span and value >= 0:
                out.append(_result(
                    total + value * span, valid + span, covered + span,
                    lowest if lowest is not None and lowest[1] <= value else [start, value],
                    highest if highest is not None and highest[1] >= value else [start, value]))
            else:
                out.append(_result(total, valid, covered + span, lowest, highest))
            pending += 1
        if pending == count:
            return out
        span = end - start
        covered += span
        if value >= 0:
            total += value * span
            valid += span
            if lowest is None or value < lowest[1]:
                lowest = [start, value]
            if highest is None or value > highest[1]:
                highest = [start, value]
    out.extend(_result(total, valid, covered, lowest, highest) for _ in range(count - pending))
    return out


def _result(total: int, valid: int, covered: int, lowest, highest) -> Summary:
    return (round(total / valid) if valid else -1,
            round(100 * (covered - valid) / covered) if covered else -1, lowest, highest)


def drops(segments: Sequence[Segment], m: int, lows: Sequence[int]) -> list[int]:
    """For each low: how often the value went down (e.g. sales rank drops) after it."""
    times = [newer[0] for newer, older in pairwise(segments) if 0 <= newer[2][m] < older[2][m]]
    return [sum(1 for time in times if time >= low) for low in lows]


def points(segments: Sequence[Segment], m: int, low: int, *, triples: bool = False) -> list[int]:
    """Keepa csv array [t0, v0, t1, v1, ...] oldest first (triples [t, v, 0] for shipping)."""
    flat: list[int] = []
    previous = None
    for start, end, values in reversed(segments):
        if end <= low and end != start:
            continue
        value = values[m]
        if value == previous:
            continue
        previous = value
        flat.extend((start, value, 0) if triples else (start, value))
    return flat
