"""The shared Keepa token bucket in Redis: one atomic Lua script per operation.

The bucket mirrors what Keepa reports (balance, refillRate, next refill tick, ceiling 60 × rate)
and projects whole refill ticks between responses. Requests reserve their estimated cost before
they are sent; reservations are kept apart from the mirrored balance, so adopting a server
envelope never erases another process's in-flight request (available = balance − reservations).
Admission follows Keepa: grant while available > 0, whatever the cost. Waits are derived from
the refill clock, bounded, jittered, and re-checked at least once per refill period. A 429 means
the server admits nothing before its next refill tick, whatever balance it reports: nothing is
granted to anyone before the tick the 429's refillIn names (state field blocked_until).

Priorities: a lower number goes first (constants.PRIORITY_UPSERTER). A request yields while a
more urgent one is due, unless its class has had less than GUARANTEED_SHARE of the recent tokens
(then the more urgent class yields to it): the backfiller is never starved.

A missing state (Redis restarted, keys lost) means "sync from /token": `reserve` calls the free
`sync` callable it was given; nothing ever assumes that no time has passed.

Redis keys (all under kd:bucket:<name>:): state, reservations, waiters, share, history, tasks,
ledger:<task>, spent:<task>. The scripts in keepa_deals/lua/ document each one.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from keepa_deals.constants import (
    BUCKET_KEY_PREFIX,
    DEAL_PAGE_COST,
    PRIORITY_BACKFILL,
    PRIORITY_UPSERTER,
)
from keepa_deals.envelope import TokenEnvelope

GUARANTEED_SHARE = 0.35  # a waiting class below this share of recent tokens is served first
# What the pipeline's less urgent requests leave available (TokenBucket urgent_headroom): the
# upserter's next newest page, so it never waits a refill tick behind the backfiller.
URGENT_HEADROOM = DEAL_PAGE_COST
SHARE_WINDOW_TICKS = 10  # the share counters halve once per this many refill periods
DEFAULT_RESERVATION_TTL_MS = 120_000  # > the longest request; a dead holder's tokens come back
HISTORY_LENGTH = 480  # balance samples kept for the dashboard chart
HISTORY_SAMPLES_PER_PERIOD = 4
LEDGER_MINUTES = 120  # per-minute spending kept per task
_YIELD_DIVISOR = 20  # a yielding request re-checks after period / 20
_MIN_YIELD_MS = 5
_MIN_WAITER_GRACE_MS = 2_000  # a waiter that stops re-checking stops blocking others after this
_JITTER_FRACTION = 0.05
_MAX_JITTER_MS = 1_000
_REDIS_OUTAGE_S = 30.0  # connection errors are retried this long (a Redis restart)
_MAX_SYNCS_PER_RESERVE = 3
_LUA_DIR = Path(__file__).with_name("lua")
_SCRIPTS = ("acquire", "reconcile", "sync", "cancel_wait", "snapshot")


class TokenWaitTimeout(Exception):
    """The deadline passed while waiting for tokens: end the slice, this is not a failure."""


class TokenStarvedError(RuntimeError):
    """Keepa reports refillRate 0 and no positive balance: nothing can ever be admitted."""


class TokenSyncError(RuntimeError):
    """The bucket has no state and the /token envelope could not be adopted."""


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one request between reserve() and reconcile()."""

    id: str
    cost: int
    priority: int
    task: str


@dataclass(frozen=True)
class Grant:
    reservation: Reservation
    available_after: int


@dataclass(frozen=True)
class Wait:
    """Not granted: try again after `wait_ms`. reason: tokens | yield | inflight | needs_sync."""

    wait_ms: int
    reason: str


@dataclass(frozen=True)
class BucketKeys:
    """The Redis keys of one bucket, all under kd:bucket:<name>:."""

    base: str

    @classmethod
    def named(cls, name: str) -> BucketKeys:
        return cls(f"{BUCKET_KEY_PREFIX}{name}:")

    state = property(lambda self: self.base + "state")
    reservations = property(lambda self: self.base + "reservations")
    waiters = property(lambda self: self.base + "waiters")
    share = property(lambda self: self.base + "share")
    history = property(lambda self: self.base + "history")
    tasks = property(lambda self: self.base + "tasks")

    def ledger(self, task: str) -> str:
        return f"{self.base}ledger:{task}"

    def spent(self, task: str) -> str:
        return f"{self.base}spent:{task}"


def _load_scripts(client: redis.Redis) -> dict:
    common = (_LUA_DIR / "common.lua").read_text()
    return {
        name: client.register_script(common + "\n" + (_LUA_DIR / f"{name}.lua").read_text())
        for name in _SCRIPTS
    }


class TokenBucket:
    """The shared bucket; implements keepa_api.TokenGate (reserve / reconcile / sync).

    `urgent_headroom` > 0: a request less urgent than PRIORITY_UPSERTER is granted only when it
    leaves that many tokens available (acquire.lua says when the rule yields); 0 is Keepa's
    plain rule for every priority.
    """

    def __init__(self, redis_client: redis.Redis, *, refill_period_ms: int = 60_000,
                 name: str = "default",
                 reservation_ttl_ms: int = DEFAULT_RESERVATION_TTL_MS,
                 urgent_headroom: int = 0):
        if refill_period_ms <= 0:
            raise ValueError(f"refill_period_ms must be positive, got {refill_period_ms}")
        self.redis = redis_client
        self.name = name
        self.period_ms = int(refill_period_ms)
        self.reservation_ttl_ms = int(reservation_ttl_ms)
        self.urgent_headroom = int(urgent_headroom)
        self.keys = BucketKeys.named(name)
        self._scripts = _load_scripts(redis_client)

    def __repr__(self) -> str:
        return f"TokenBucket(name={self.name!r}, period_ms={self.period_ms})"

    # --- the TokenGate protocol -------------------------------------------------------------

    def reserve(self, cost: int, *, priority: int, task: str,
                sync: Callable[[], TokenEnvelope], deadline: float | None = None) -> Reservation:
        """Block until `cost` tokens are reserved; raise TokenWaitTimeout past `deadline`.

        Sleeps are derived from the refill clock, capped at one period (so a rate change or a
        refund is noticed) and jittered. A missing state or a refill rate of 0 first re-syncs
        through `sync` (the free /token call); TokenStarvedError if the rate stays 0.
        """
        request_id = uuid.uuid4().hex
        slept_s = 0.0
        syncs = 0
        try:
            while True:
                try:
                    outcome = self.acquire(cost, priority, task, request_id=request_id,
                                           waited_ms=round(slept_s * 1000))
                except TokenStarvedError:
                    if syncs >= 1:
                        raise
                    outcome = Wait(0, "needs_sync")
                if isinstance(outcome, Grant):
                    return outcome.reservation
                if outcome.reason == "needs_sync":
                    syncs += 1
                    if syncs > _MAX_SYNCS_PER_RESERVE:
                        raise TokenSyncError(
                            f"bucket {self.name!r}: no token state after {syncs - 1} /token "
                            "syncs (the envelope had no usable timestamp)")
                    self.sync(sync())
                    continue
                slept_s += self._sleep(outcome.wait_ms, cost, task, deadline)
        except BaseException:
            self._cancel_wait(request_id, task, slept_s)
            raise

    def reconcile(self, reservation: Reservation, envelope: TokenEnvelope | None, *,
                  status: int | None = None, now_ms: int | None = None) -> None:
        """Settle a request: drop its reservation, adopt the envelope if newer, update the ledger.

        The envelope's tokensLeft already includes this request's charge, so tokensConsumed is
        not subtracted again: it goes to the task's ledger and corrects the priority share.
        envelope None means the request failed without a Keepa body: only the reservation is
        dropped (the caller re-syncs from /token, since whether it was charged is unknown).
        status 429 with an envelope blocks every grant until now + its refillIn (blocked_until).
        """
        keys = self.keys
        self._call(
            "reconcile",
            [keys.state, keys.reservations, keys.share, keys.ledger(reservation.task),
             keys.spent(reservation.task), keys.history, keys.tasks],
            [reservation.id, reservation.cost, reservation.priority, reservation.task,
             _opt(now_ms), _opt(status), *_envelope_args(envelope),
             envelope.tokens_consumed if envelope else 0,
             self._history_every_ms, HISTORY_LENGTH, LEDGER_MINUTES],
        )

    def sync(self, envelope: TokenEnvelope, *, now_ms: int | None = None) -> None:
        """Adopt a free /token envelope (when newer than the last one); reservations are kept."""
        self._call("sync", [self.keys.state, self.keys.history],
                   [_opt(now_ms), *_envelope_args(envelope), self._history_every_ms,
                    HISTORY_LENGTH])

    # --- non-blocking admission and the dashboard view -------------------------------------

    def acquire(self, cost: int, priority: int, task: str, now_ms: int | None = None, *,
                request_id: str | None = None, waited_ms: int = 0) -> Grant | Wait:
        """One atomic attempt: reserve `cost` now (Grant) or say how long to wait (Wait).

        Wait(reason="needs_sync") when the bucket has no state. Raises TokenStarvedError when
        the server reports refillRate 0 and the balance is not positive.
        """
        request_id = request_id or uuid.uuid4().hex
        reply = self._decide(cost, priority, task, now_ms, request_id=request_id,
                             waited_ms=waited_ms, peek=False)
        if reply[0] == "grant":
            return Grant(Reservation(request_id, cost, priority, task), int(reply[1]))
        if reply[0] == "wait":
            return Wait(int(reply[1]), _text(reply[2]))
        return Wait(0, "needs_sync")

    def eta_ms(self, cost: int = 1, priority: int = PRIORITY_BACKFILL,
               now_ms: int | None = None) -> int | None:
        """Milliseconds until `acquire` would grant a request of this priority (0 = now).

        Read-only: acquire's own decision, computed without reserving, registering a waiter or
        purging. None when the bucket has no state (it needs a /token sync first); raises
        TokenStarvedError like acquire. After a 429 the ETA is at least the time to the tick
        the server named (blocked_until).
        """
        reply = self._decide(cost, priority, "", now_ms, request_id="", waited_ms=0, peek=True)
        if reply[0] == "grant":
            return 0
        if reply[0] == "wait":
            return int(reply[1])
        return None

    def snapshot(self, now_ms: int | None = None) -> dict:
        """The bucket for the dashboard (shape in docs/architecture.md, tokens.py section)."""
        keys = self.keys
        reply = self._call("snapshot", [keys.state, keys.reservations, keys.waiters],
                           [_opt(now_ms), self.period_ms])
        now, reserved, priorities = int(reply[0]), int(reply[1]), [int(p) for p in reply[2]]
        waiting = {"upserter": 0, "backfill": 0}
        for priority in priorities:
            waiting["upserter" if priority <= PRIORITY_UPSERTER else "backfill"] += 1
        synced = len(reply) > 3
        balance, projected, rate, next_tick, synced_at, blocked_until = (
            [int(v) for v in reply[3:9]] if synced else [None] * 6)
        return {
            "state": "ok" if synced else "needs_sync",
            "balance": balance,
            "projected_balance": projected,
            "reserved": reserved,
            "refill_rate": rate,
            "ceiling": 60 * rate if synced else None,
            "next_tick_ms": next_tick,
            "period_ms": self.period_ms,
            "synced_at_ms": synced_at,
            "blocked_until_ms": blocked_until or None,
            "waiting": waiting,
            "tasks": self._ledgers(now),
            "history": self._history(),
        }

    # --- internals ----------------------------------------------------------------------------

    @property
    def _yield_ms(self) -> int:
        return max(self.period_ms // _YIELD_DIVISOR, _MIN_YIELD_MS)

    @property
    def _history_every_ms(self) -> int:
        return self.period_ms // HISTORY_SAMPLES_PER_PERIOD

    def _decide(self, cost: int, priority: int, task: str, now_ms: int | None, *,
                request_id: str, waited_ms: int, peek: bool) -> list:
        """Run acquire.lua (peek: the same decision, nothing written); the reply with its verdict
        decoded. Raises ValueError for a bad cost/priority, TokenStarvedError when starved."""
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise ValueError(f"cost must be a whole number >= 0, got {cost!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"priority must be an int, got {priority!r}")
        keys = self.keys
        reply = self._call(
            "acquire",
            [keys.state, keys.reservations, keys.waiters, keys.share, keys.ledger(task),
             keys.tasks],
            [cost, priority, request_id, _opt(now_ms), self.period_ms, self.reservation_ttl_ms,
             GUARANTEED_SHARE, SHARE_WINDOW_TICKS * self.period_ms, self._yield_ms,
             max(self.period_ms, _MIN_WAITER_GRACE_MS), waited_ms, task, int(peek),
             self.urgent_headroom if priority > PRIORITY_UPSERTER else 0],
        )
        verdict = _text(reply[0])
        if verdict == "starved":
            raise TokenStarvedError(
                f"bucket {self.name!r}: Keepa reports refillRate 0 and a balance <= 0; no "
                "request can be admitted (check the key's plan and its API trackings)")
        return [verdict, *reply[1:]]

    def _sleep(self, wait_ms: int, cost: int, task: str, deadline: float | None) -> float:
        """Sleep for one bounded, jittered slice of a wait; returns the seconds slept."""
        if deadline is not None and time.time() >= deadline:
            raise TokenWaitTimeout(
                f"bucket {self.name!r}: {task} still waiting for {cost} tokens at its deadline")
        jitter_ms = random.uniform(0, min(self.period_ms * _JITTER_FRACTION, _MAX_JITTER_MS))
        pause = (min(wait_ms, self.period_ms) + jitter_ms) / 1000
        if deadline is not None:
            pause = max(0.0, min(pause, deadline - time.time()))
        time.sleep(pause)
        return pause

    def _cancel_wait(self, request_id: str, task: str, slept_s: float) -> None:
        """Withdraw a waiter that gives up; best effort (its entry expires anyway)."""
        with contextlib.suppress(redis.RedisError):
            self._scripts["cancel_wait"](
                keys=[self.keys.waiters, self.keys.ledger(task), self.keys.tasks],
                args=[request_id, round(slept_s * 1000), task])

    def _call(self, script: str, keys: list, args: list):
        """Run a script, riding out a Redis restart (connection errors) for a bounded time.

        A reply lost after the script ran can make a retried acquire reserve twice; the extra
        reservation expires with its TTL.
        """
        give_up = time.monotonic() + _REDIS_OUTAGE_S
        delay = 0.05
        while True:
            try:
                return self._scripts[script](keys=keys, args=args)
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > give_up:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _ledgers(self, now_ms: int) -> dict:
        tasks = sorted(_text(t) for t in self.redis.smembers(self.keys.tasks))
        pipe = self.redis.pipeline(transaction=False)
        for task in tasks:
            pipe.hgetall(self.keys.ledger(task))
            pipe.hgetall(self.keys.spent(task))
        replies = pipe.execute()
        first_minute = now_ms // 60_000 - 59
        ledgers = {}
        for index, task in enumerate(tasks):
            counters = {_text(k): int(v) for k, v in replies[2 * index].items()}
            minutes = sorted((int(_text(m)), int(v)) for m, v in replies[2 * index + 1].items())
            recent = [[m, v] for m, v in minutes if m >= first_minute]
            ledgers[task] = {
                "tokens_last_hour": sum(v for _, v in recent),
                "requests": counters.get("requests", 0),
                "http_429": counters.get("http_429", 0),
                "waits": counters.get("waits", 0),
                "wait_ms": counters.get("wait_ms", 0),
                "per_minute": recent,
            }
        return ledgers

    def _history(self) -> list[list[int]]:
        samples = [_text(s).split(":") for s in self.redis.lrange(self.keys.history, 0, -1)]
        return [[int(ts), int(balance)] for ts, balance in reversed(samples)]


def _envelope_args(envelope: TokenEnvelope | None) -> list:
    if envelope is None:
        return ["", "", "", ""]
    return [envelope.timestamp_ms, envelope.tokens_left, envelope.refill_in_ms,
            envelope.refill_rate]


def _opt(value) -> str | int:
    return "" if value is None else value


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
