"""End to end against a live simulator clock: deals created and changed every Keepa minute.

The simulator runs 60 times faster than the wall clock (one Keepa minute per second, refill
ticks included) with spare tokens; a real Celery worker and beat run both tasks every Keepa
minute. The test polls the simulator's ground truth and the SQLite table twice a Keepa minute
and checks the acceptance of "every token on what changed": new deals land within about two
upserter intervals, changed deals within a few backfill intervals, no /product request goes to a
deal whose lastUpdate has not moved since its last fetch (a race may cost <= 2 %), and once the
clock stops every deal is stored with the server's lastUpdate.
"""

from __future__ import annotations

import bisect
import time

import pytest
from pipeline_helpers import LOOSE_QUERY, sim_config, stored_deals, truth_versions, wait_for_worker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SPEED = 60  # Keepa minutes per wall minute: one per second
WARMUP_MIN = 12  # the first sweep and the first upserter window settle first
RUN_MIN = 60
KEEPA_MINUTE_S = 60
START_MS = 1_795_000_000_000  # a fixed simulator time: the same deals are created every run


class History:
    """Per ASIN, the lastUpdate values the ground truth showed and when (Keepa minutes)."""

    def __init__(self):
        self.updates: dict[str, tuple[list[float], list[int]]] = {}
        self.created: dict[str, tuple[int, float]] = {}  # asin -> (creationDate, first seen)
        self.changes: list[tuple[str, int, float]] = []  # (asin, new lastUpdate, seen at)

    def record(self, versions: dict[str, tuple[int, int]], now: float) -> None:
        for asin, (created, updated) in versions.items():
            times, values = self.updates.setdefault(asin, ([], []))
            if not values or values[-1] != updated:
                if values:
                    self.changes.append((asin, updated, now))
                times.append(now)
                values.append(updated)
            if self.created.get(asin, (None,))[0] != created:
                self.created[asin] = (created, now)

    def at(self, asin: str, minute: float) -> int | None:
        times, values = self.updates.get(asin, ((), ()))
        index = bisect.bisect_right(times, minute) - 1
        return values[index] if index >= 0 else None


def test_new_and_changed_deals_land_fast_and_unchanged_deals_cost_nothing(
        sim_factory, pipeline_env, start_celery, redis_server, tmp_path):
    sim = sim_factory(**sim_config(
        clock={"mode": "real", "minute_ms": 60_000, "speed": SPEED, "start_ms": START_MS},
        catalogue={"n_products": 8000}, default_refill_rate=400,
        control={"request_log_size": 200_000}))
    env = pipeline_env(sim, KEEPA_REFILL_PERIOD_MS=60_000 // SPEED, UPSERT_INTERVAL_S=1,
                       BACKFILL_INTERVAL_S=1, TASK_SLICE_S=4, ENRICH_MAX_AGE_H=24 / SPEED)
    start_celery("worker", env)
    wait_for_worker(redis_server.url)
    start_celery("beat", env)
    database = tmp_path / "deals.db"

    def now_minute() -> float:
        return sim.state()["clock"]["now_ms"] / 60_000

    history = History()
    landed: dict[tuple[str, int], float] = {}
    start = now_minute()
    while (now := now_minute()) < start + RUN_MIN:
        history.record(to_minutes(truth_versions(sim, LOOSE_QUERY)), now)
        stored = to_minutes_flat(stored_deals(database))
        for asin, (_, values) in history.updates.items():
            for value in values:
                if (asin, value) not in landed and stored.get(asin, -1) >= value:
                    landed[(asin, value)] = now
        time.sleep(0.5)

    measured_from = start + WARMUP_MIN
    until = start + RUN_MIN - 4  # later events may still be in flight
    new_lags = [landed.get((asin, history.at(asin, seen)), until + 99) - created
                for asin, (created, seen) in history.created.items()
                if measured_from <= created <= until]
    changed_lags = [landed.get((asin, updated), until + 99) - updated
                    for asin, updated, _ in history.changes if measured_from <= updated <= until]
    assert len(new_lags) >= 5 and len(changed_lags) >= 50, \
        f"deals were created and changed: {len(new_lags)} new, {len(changed_lags)} changed"
    assert share(new_lags, lambda lag: lag <= 3) >= 0.9, f"new deals late: {sorted(new_lags)}"
    assert share(changed_lags, lambda lag: lag <= 6) >= 0.9, sorted(changed_lags)[-20:]

    fetches = product_fetches(sim, start_ms=int(start * 60_000))
    unchanged = wasted_fetches(fetches, history)
    assert len(fetches) > 100, "enrichment went on during the run"
    assert unchanged <= 0.02 * len(fetches), f"{unchanged} of {len(fetches)} unchanged fetches"

    sim.clock(freeze=True)
    sim.clock(advance_ms=121_000)  # past Keepa's 120 s result cache: every read is of now
    sim.tokens(tokens=100_000)  # a frozen clock refills nothing
    expected = to_minutes_flat({a: v[1] for a, v in truth_versions(sim, LOOSE_QUERY).items()})

    def unsettled() -> dict[str, tuple[int, int | None]]:
        stored = to_minutes_flat(stored_deals(database))
        return {a: (u, stored.get(a)) for a, u in expected.items() if stored.get(a) != u}

    deadline = time.monotonic() + 60
    while unsettled() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = unsettled()
    assert not left, f"{len(left)} listed deals not stored with the server's lastUpdate once " \
                     f"the clock stopped, e.g. {list(left.items())[:5]}"


def to_minutes(versions: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {a: (c // KEEPA_MINUTE_S, u // KEEPA_MINUTE_S) for a, (c, u) in versions.items()}


def to_minutes_flat(stored: dict[str, int]) -> dict[str, int]:
    return {asin: updated // KEEPA_MINUTE_S for asin, updated in stored.items()}


def share(values: list[float], condition) -> float:
    return sum(1 for v in values if condition(v)) / len(values)


def product_fetches(sim, *, start_ms: int) -> list[tuple[str, float]]:
    """(asin, Keepa minute) of every ASIN of a usable /product answer since `start_ms`."""
    return [(asin, entry["time_ms"] / 60_000) for entry in sim.requests_log()
            if entry["path"].strip("/") == "product" and entry["status"] == 200
            and not entry.get("fault") and entry["time_ms"] >= start_ms
            for asin in entry["params"]["asin"].split(",")]


def wasted_fetches(fetches: list[tuple[str, float]], history: History) -> int:
    """Fetches of a deal whose lastUpdate had not moved since its previous fetch."""
    previous: dict[str, int | None] = {}
    wasted = 0
    for asin, minute in fetches:
        updated = history.at(asin, minute)
        if asin in previous and updated is not None and previous[asin] == updated:
            wasted += 1
        previous[asin] = updated
    return wasted
