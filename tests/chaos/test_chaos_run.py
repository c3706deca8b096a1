"""Chaos: one run of the whole system (the runner, as `make run` starts it) against a simulator
that keeps answering with 5xx, resets, hangs and truncated JSON, hurt in turn by each fault of
issue 10. Each test measures the recovery time — fault cleared (or, for a kill, the kill) → every
deal created or changed since then stored — and bounds it; the last test checks the table
against the simulator's ground truth: nothing lost, nothing duplicated, no row older than the
source. The tests share one system and run in file order.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time

import pytest
from chaos_system import NO_FAULTS, ChaosSystem
from ops_helpers import children_of, in_append_only_file
from pipeline_helpers import enrichment_lag, state, stored_deals
from support import wait_until

from keepa_deals import db
from keepa_deals.backfiller import CURSOR_STATE
from keepa_deals.constants import BACKFILL_LOCK
from keepa_deals.heartbeats import read_beat

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(150)]

RECOVERY_BOUND_S = 30  # fault cleared → deals flowing, for every fault below
LOCK_TTL_S = 3  # chaos_system.CHAOS_TIMINGS
KEEPA_OUTAGE_S = 8  # 32 token minutes of 250 ms
DATABASE_LOCKED_S = 30
DISK_FULL_S = 6


def hold(seconds: float) -> None:
    """Keep a fault on for its stated duration (the fault itself, not a wait for a result)."""
    time.sleep(seconds)


def test_worker_killed_mid_batch_recovers(chaos: ChaosSystem):
    wait_until(lambda: chaos.healthz() == 200, 60, "deals flowing before the first fault")
    chaos.truth()
    fresh = chaos.advance()
    worker = chaos.pid("worker")
    wait_until(lambda: chaos.lock_holder_pid(BACKFILL_LOCK) in children_of(worker), 30,
               "a backfill run in the worker's pool")
    chaos.signal(worker, signal.SIGKILL)
    killed_at = time.monotonic()

    chaos.recovered("worker SIGKILL", fresh, killed_at, RECOVERY_BOUND_S)
    assert chaos.pid("worker") not in (None, worker), "a new worker runs"
    assert chaos.still_supervised()


def test_beat_killed_recovers(chaos: ChaosSystem):
    beat = chaos.pid("beat")
    chaos.signal(beat, signal.SIGKILL)
    killed_at = time.monotonic()
    # the dead beat's lease keeps a new one out for up to one LOCK_TTL_S, then it schedules
    wait_until(lambda: (pid := chaos.pid("beat")) not in (None, beat)
               and (read_beat(chaos.redis()) or {}).get("pid") == pid,
               RECOVERY_BOUND_S, "a new beat with its heartbeat")
    fresh = chaos.advance()
    chaos.recovered("beat SIGKILL", fresh, killed_at, RECOVERY_BOUND_S)
    assert chaos.still_supervised()


def test_redis_killed_is_restarted_with_its_data(chaos: ChaosSystem):
    chaos.redis().set("kd:chaos:probe", "written before the crash")
    wait_until(lambda: in_append_only_file(chaos.var / "redis", b"kd:chaos:probe"), 5,
               "the write in the append-only file (fsync every second)")
    redis_pid = chaos.redis_pid()
    chaos.signal(redis_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    wait_until(chaos.redis_answers, 10, "the keeper to restart Redis")
    assert chaos.redis_pid() != redis_pid
    assert chaos.redis().get("kd:chaos:probe") == "written before the crash"
    fresh = chaos.advance()
    chaos.recovered("redis SIGKILL", fresh, killed_at, RECOVERY_BOUND_S)
    wait_until(lambda: chaos.healthz() == 200, RECOVERY_BOUND_S, "/healthz 200 again")
    assert chaos.runner.count("redis: the private server is down") == 1, "said once"
    assert chaos.still_supervised()


def test_paused_worker_cannot_overwrite_newer_work(chaos: ChaosSystem):
    fresh = chaos.advance()
    holder = wait_until(lambda: chaos.lock_holder_pid(BACKFILL_LOCK), 30,
                        "a backfill run holding its lease")
    positions: list[tuple[int, int]] = []
    watching = threading.Event()
    watcher = threading.Thread(target=watch_cursor, args=(chaos, positions, watching))
    watcher.start()
    try:
        chaos.signal(holder, signal.SIGSTOP)
        paused_at = time.monotonic()
        successor = wait_until(
            lambda: (pid := chaos.lock_holder_pid(BACKFILL_LOCK)) not in (None, holder) and pid,
            3 * LOCK_TTL_S + 5, "another process to take the expired lease")
        hold(max(0.0, paused_at + 2 * LOCK_TTL_S + 1 - time.monotonic()))
        chaos.signal(holder, signal.SIGCONT)
        resumed_at = time.monotonic()
        chaos.recovered("worker SIGSTOP > 2 TTL", fresh, resumed_at, RECOVERY_BOUND_S)
        fresh = chaos.advance()  # and what comes after the sleeper woke
        chaos.deals_flowing(fresh, time.monotonic(), RECOVERY_BOUND_S)
    finally:
        watching.set()
        watcher.join()
    assert successor != holder
    went_back = [(a, b) for a, b in itertools.pairwise(positions) if b < a]
    assert not went_back, f"the backfill cursor moved backwards: {went_back}"
    assert chaos.still_supervised()


def watch_cursor(chaos: ChaosSystem, positions: list, done: threading.Event) -> None:
    """Record each new (sweep_id, page) of the backfill cursor until `done`."""
    while not done.wait(0.05):
        cursor = state(chaos.database, CURSOR_STATE)
        position = (cursor["sweep_id"], cursor["page"]) if cursor else None
        if position and (not positions or positions[-1] != position):
            positions.append(position)


def test_keepa_outage_of_several_token_minutes(chaos: ChaosSystem):
    failing = {kind: {"p": 0.0} for kind in NO_FAULTS} | {
        "http_5xx": {"p": 1.0, "codes": {"502": 0.5, "503": 0.5}, "html_body": True}}
    with chaos.sim_faults(failing):
        began = chaos.sim.requests_log()[-1]["id"]
        fresh = chaos.advance()
        hold(KEEPA_OUTAGE_S)
        stored = db.stored_versions(chaos.database)
        assert not any(stored.get(a, 0) >= t for a, t in fresh.items()), "an outage indeed"
    cleared_at = time.monotonic()
    chaos.recovered("Keepa outage", fresh, cleared_at, RECOVERY_BOUND_S)
    refused = [e for e in chaos.sim.requests_log() if e["id"] > began and e["status"] >= 500]
    assert len(refused) >= 5, "the tasks kept trying through the outage (no give-up)"
    assert chaos.still_supervised()


def test_database_locked_by_an_outside_writer(chaos: ChaosSystem):
    survive(chaos, "database locked 30 s", chaos.database_locked(), DATABASE_LOCKED_S)


def test_disk_full_under_var(chaos: ChaosSystem):
    if not chaos.mounted:
        pytest.skip("a size-limited tmpfs under VAR_DIR needs root (mount -t tmpfs)")
    survive(chaos, "disk full", chaos.disk_full(), DISK_FULL_S)


def survive(chaos: ChaosSystem, name: str, fault, seconds: float) -> None:
    """Keep `fault` (a context manager) on for `seconds` while deals are created, then bound
    the recovery; nothing may have given up."""
    with fault:
        fresh = chaos.advance()
        hold(seconds)
    chaos.recovered(name, fresh, time.monotonic(), RECOVERY_BOUND_S)
    assert chaos.still_supervised()


def test_table_equals_ground_truth_after_every_fault(chaos: ChaosSystem):
    """Every deal the source lists now is stored exactly; a row of a deal that left the query
    (the janitor's, after JANITOR_MAX_AGE_H) is one the source listed, at least as new."""
    with chaos.sim_faults(NO_FAULTS):
        truth = chaos.truth()

        def unenriched() -> set[str]:  # deals no longer listed are not enriched (db.py)
            return set(enrichment_lag(chaos.database)) & set(truth)

        def settled() -> bool:
            stored = db.stored_versions(chaos.database)
            return {a: stored.get(a) for a in truth} == truth and not unenriched()

        deadline = time.monotonic() + 60
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert differences(stored_deals(chaos.database), truth, chaos.listed) == {}
        assert not unenriched(), "every listed deal enriched for its lastUpdate"
        wait_until(lambda: chaos.healthz() == 200, 30, "/healthz 200")
    assert chaos.still_supervised()


def differences(stored: dict[str, int], truth: dict[str, int],
                listed: dict[str, int]) -> dict[str, list]:
    """What keeps the table from the ground truth (stored_deals already failed on a duplicate
    ASIN): deals lost, rows older or newer than the source, rows the source never listed."""
    departed = set(stored) - set(truth)
    found = {
        "lost": sorted(set(truth) - set(stored)),
        "older than the source": sorted(a for a in truth if a in stored and stored[a] < truth[a]),
        "newer than the source": sorted(a for a in truth if a in stored and stored[a] > truth[a]),
        "never listed by the source": sorted(departed - set(listed)),
        "older than the source last listed": sorted(a for a in departed & set(listed)
                                                    if stored[a] < listed[a]),
    }
    return {name: asins[:10] + ([f"… {len(asins)} in all"] if len(asins) > 10 else [])
            for name, asins in found.items() if asins}
