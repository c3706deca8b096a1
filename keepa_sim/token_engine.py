"""Per-key token buckets with Keepa's rules (keepa-api.md §1.3 and §5.2).

* Refill in discrete ticks every `period` ms (the clock's `minute_ms`), phase set when the key
  is created: `tokens = min(tokens + rate, 60 × rate)`; deficits are paid down the same way.
  `rate` is the effective rate, `max(0, refill_rate − round(tokenFlowReduction))`.
* Admission: a paid request runs while `tokens > 0`, whatever it costs; the cost is charged
  later (see `charge`), so parallel requests overshoot like the real service.
* A balance above the ceiling (rate cut, manual set) is clipped per `clip_on_rate_change`.
* Timed changes: a new flow reduction waits for the next 5-minute boundary (absolute, in
  ticks), the `schedule` knob changes keys at given token seconds, and phantom consumers spend
  from the same bucket each tick and in bursts.

All state changes happen under one lock, lazily: every call first catches the buckets up to
"now" of the simulator clock, which makes the result a pure function of the clock. Times inside
are simulator ms; the reported `refillIn` (and `refill_in_ms` of `describe`) is the wall ms until
the next tick (`SimClock.wall_ms_for`), because clients sleep in their own time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from keepa_sim.clock import SimClock
from keepa_sim.config import key_settings

_BOUNDARY_TICKS = 5  # tokenFlowReduction is recomputed every 5 minutes


@dataclass
class Phantom:
    """Another client spending from the same key."""

    tokens_per_tick: int
    burst_every_ms: int
    burst_tokens: int
    next_burst_at: int | None


@dataclass
class Bucket:
    rate: int
    tokens: int
    status: str
    flow_reduction: float
    last_tick: int
    period: int
    clip_rule: str = "next_tick"
    pending_flow: tuple[int, float] | None = None
    phantoms: list[Phantom] = field(default_factory=list)
    phantom_spent: int = 0
    consumed: int = 0
    requests: int = 0
    rejected: int = 0

    @property
    def effective_rate(self) -> int:
        return max(0, self.rate - round(self.flow_reduction))

    @property
    def ceiling(self) -> int:
        return 60 * self.effective_rate

    def advance(self, now: int) -> None:
        """Apply every tick and timed event up to `now` (a clock moved back only re-phases)."""
        if now < self.last_tick:
            ticks_back = -(-(self.last_tick - now) // self.period)
            self.last_tick -= ticks_back * self.period
            return
        while (event_at := self._next_event_at()) is not None and event_at <= now:
            self._ticks((event_at - self.last_tick) // self.period)
            self._fire_events(event_at)
        self._ticks((now - self.last_tick) // self.period)

    def refill_in(self, now: int) -> int:
        return self.last_tick + self.period - now

    def set_rate(self, rate: int) -> None:
        self.rate = rate
        self._clip_if_immediate()

    def set_flow_reduction(self, value: float, now: int, *, immediate: bool) -> None:
        if immediate:
            self.pending_flow = None
            self.flow_reduction = value
            self._clip_if_immediate()
        else:
            boundary = _BOUNDARY_TICKS * self.period
            self.pending_flow = ((now // boundary + 1) * boundary, value)

    def _clip_if_immediate(self) -> None:
        if self.clip_rule == "immediate":
            self.tokens = min(self.tokens, self.ceiling)

    def _next_event_at(self) -> int | None:
        times = [p.next_burst_at for p in self.phantoms if p.next_burst_at is not None]
        if self.pending_flow is not None:
            times.append(self.pending_flow[0])
        return min(times, default=None)

    def _fire_events(self, at: int) -> None:
        if self.pending_flow is not None and self.pending_flow[0] <= at:
            self.flow_reduction = self.pending_flow[1]
            self.pending_flow = None
            self._clip_if_immediate()
        for phantom in self.phantoms:
            if phantom.next_burst_at is not None and phantom.next_burst_at <= at:
                self._phantom_spend(phantom.burst_tokens)
                phantom.next_burst_at += phantom.burst_every_ms

    def _phantom_spend(self, cost: int) -> None:
        if self.tokens > 0 and cost:
            self.tokens -= cost
            self.phantom_spent += cost

    def _refill(self, ticks: int) -> None:
        if self.tokens >= self.ceiling:
            if self.clip_rule != "never":
                self.tokens = self.ceiling
        else:
            self.tokens = min(self.tokens + ticks * self.effective_rate, self.ceiling)

    def _ticks(self, count: int) -> None:
        if count <= 0:
            return
        self.last_tick += count * self.period
        drains = [p.tokens_per_tick for p in self.phantoms if p.tokens_per_tick]
        if not drains:
            self._refill(count)
            return
        # Tick by tick while phantoms spend; the balance is the whole state, so a repeated
        # balance is a cycle that can be skipped in one step.
        seen: dict[int, tuple[int, int]] = {}
        done = 0
        while done < count:
            if self.tokens in seen:
                first_done, first_spent = seen.pop(self.tokens)
                cycle = done - first_done
                cycles = (count - done) // cycle
                self.phantom_spent += cycles * (self.phantom_spent - first_spent)
                done += cycles * cycle
                seen.clear()
                if done >= count:
                    break
            seen[self.tokens] = (done, self.phantom_spent)
            self._refill(1)
            for cost in drains:
                self._phantom_spend(cost)
            done += 1


class TokenEngine:
    """All buckets, the token knobs and the timed schedule; thread-safe."""

    def __init__(self, clock: SimClock, config: dict):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, Bucket] = {}
        self._schedule: list[tuple[int, dict]] = []
        self._config: dict = {}
        self.configure(config, reset=True)

    # --- configuration ---------------------------------------------------------------------

    def configure(self, config: dict, *, reset: bool = False) -> None:
        """Apply a (new) configuration: keys, token knobs, schedule, phantom consumers.

        reset=True recreates every bucket from its configured initial state.
        """
        with self._lock:
            now = self.clock.now_ms()
            old = self._config
            self._catch_up(now)
            if reset:
                self._buckets.clear()
            for key in config["keys"]:
                settings = key_settings(config, key)
                bucket = self._buckets.get(key)
                if bucket is None:
                    self._buckets[key] = self._new_bucket(settings, now)
                elif settings != _settings_or_none(old, key):
                    self._apply(bucket, settings, now, config)
            for bucket in self._buckets.values():
                bucket.clip_rule = config["tokens"]["clip_on_rate_change"]
            if reset or config["schedule"] != old.get("schedule"):
                self._schedule = sorted(
                    ((now + self.clock.token_seconds_ms(e["at_s"]), e) for e in config["schedule"]),
                    key=lambda item: item[0])
            if reset or config["phantom_consumers"] != old.get("phantom_consumers"):
                self._install_phantoms(config["phantom_consumers"], now)
            self._config = config

    def _new_bucket(self, settings: dict, now: int) -> Bucket:
        return Bucket(rate=settings["refill_rate"], tokens=settings["initial_tokens"],
                      status=settings["status"], flow_reduction=settings["flow_reduction"],
                      last_tick=now, period=self.clock.minute_ms)

    def _install_phantoms(self, phantoms: list[dict], now: int) -> None:
        for bucket in self._buckets.values():
            bucket.phantoms = []
        for entry in phantoms:
            every = self.clock.token_seconds_ms(entry["burst_every_s"])
            bursts = every > 0 and entry["burst_tokens"] > 0
            self._buckets[entry["key"]].phantoms.append(Phantom(
                tokens_per_tick=entry["tokens_per_min"], burst_every_ms=every,
                burst_tokens=entry["burst_tokens"], next_burst_at=now + every if bursts else None))

    def _apply(self, bucket: Bucket, change: dict, now: int, config: dict) -> None:
        if "tokens" in change:
            bucket.tokens = change["tokens"]
        if "refill_rate" in change:
            bucket.set_rate(change["refill_rate"])
        if "flow_reduction" in change:
            immediate = config["tokens"]["flow_reduction_apply"] == "immediate"
            if float(change["flow_reduction"]) != bucket.flow_reduction or bucket.pending_flow:
                bucket.set_flow_reduction(float(change["flow_reduction"]), now,
                                          immediate=immediate)
        if "status" in change:
            bucket.status = change["status"]

    # --- time -------------------------------------------------------------------------------

    def _catch_up(self, now: int) -> None:
        while self._schedule and self._schedule[0][0] <= now:
            at, event = self._schedule.pop(0)
            bucket = self._buckets.get(event["key"])
            if bucket is not None:
                bucket.advance(at)
                self._apply(bucket, event, at, self._config)
        for bucket in self._buckets.values():
            bucket.advance(now)

    # --- the API's view ---------------------------------------------------------------------

    def status(self, key: str | None) -> str | None:
        """'active', 'expired', or None for an unknown key."""
        with self._lock:
            self._catch_up(self.clock.now_ms())
            bucket = self._buckets.get(key) if key else None
            return bucket.status if bucket else None

    def token_fields(self, key: str) -> dict:
        """tokensLeft, refillIn, refillRate, tokenFlowReduction of a known key, right now."""
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            return _fields(self._buckets[key], now, self.clock)

    def admit(self, key: str) -> tuple[bool, dict]:
        """Keepa's admission rule: a paid request runs while the balance is positive."""
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            bucket = self._buckets[key]
            bucket.requests += 1
            admitted = bucket.tokens > 0
            if not admitted:
                bucket.rejected += 1
            return admitted, _fields(bucket, now, self.clock)

    def charge(self, key: str, cost: int) -> tuple[int, dict]:
        """Deduct `cost` (negatives allowed); returns (balance before, token fields after)."""
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            bucket = self._buckets[key]
            before = bucket.tokens
            bucket.tokens -= cost
            bucket.consumed += cost
            return before, _fields(bucket, now, self.clock)

    def set(self, key: str, change: dict) -> dict:
        """Control API: change tokens / refill_rate / flow_reduction / status of a key now."""
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            bucket = self._buckets[key]
            self._apply(bucket, change, now, self._config)
            return _describe(bucket, now, self.clock)

    def knows(self, key: str) -> bool:
        return key in self._buckets

    def describe(self, key: str) -> dict:
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            return _describe(self._buckets[key], now, self.clock)

    def describe_all(self) -> dict[str, dict]:
        with self._lock:
            now = self.clock.now_ms()
            self._catch_up(now)
            return {key: _describe(bucket, now, self.clock)
                    for key, bucket in self._buckets.items()}


def _settings_or_none(config: dict, key: str) -> dict | None:
    return key_settings(config, key) if config and key in config["keys"] else None


def _fields(bucket: Bucket, now: int, clock: SimClock) -> dict:
    flow = bucket.flow_reduction
    return {"tokensLeft": bucket.tokens, "refillIn": clock.wall_ms_for(bucket.refill_in(now)),
            "refillRate": bucket.effective_rate,
            "tokenFlowReduction": int(flow) if float(flow).is_integer() else flow}


def _describe(bucket: Bucket, now: int, clock: SimClock) -> dict:
    """A bucket for the control API: refill_in_ms in wall ms (like refillIn), other times in
    simulator ms."""
    return {
        "tokens": bucket.tokens, "refill_rate": bucket.rate,
        "effective_rate": bucket.effective_rate,
        "ceiling": bucket.ceiling, "flow_reduction": bucket.flow_reduction,
        "pending_flow_reduction": (None if bucket.pending_flow is None else
                                   {"at_ms": bucket.pending_flow[0],
                                    "value": bucket.pending_flow[1]}),
        "status": bucket.status, "refill_in_ms": clock.wall_ms_for(bucket.refill_in(now)),
        "next_tick_ms": bucket.last_tick + bucket.period, "period_ms": bucket.period,
        "consumed": bucket.consumed, "requests": bucket.requests, "rejected_429": bucket.rejected,
        "phantom_spent": bucket.phantom_spent,
    }
