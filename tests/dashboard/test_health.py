"""Health verdicts from real inputs: heartbeats, statuses and locks in the session's Redis, runs
and state in a real SQLite file. Each case is one cause an operator must be told about."""

from __future__ import annotations

import json
import time

import pytest
from dashboard_helpers import insert_run
from freshness_seed import SEEDED, seed_freshness

from keepa_deals import db, heartbeats
from keepa_deals.constants import (
    BACKFILL_LOCK,
    LOCK_KEY_PREFIX,
    TASK_BACKFILL,
    TASK_UPSERT,
    UPSERT_LOCK,
)
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.health import collect_health, duration_text, progress_window_s
from keepa_deals.locks import LeaseLock
from keepa_deals.redis_server import free_port
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def alive(redis_client, monkeypatch):
    """Worker and beat heartbeats, as services that started an hour ago write them."""
    monkeypatch.setattr(heartbeats, "PROCESS_STARTED_AT", time.time() - 3600)
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    heartbeats.beat_heartbeat(redis_client)
    return redis_client


def health(settings, redis_client, database, now=None):
    return collect_health(settings, redis=redis_client, conn=database, now=now)


def test_a_recent_ok_run_with_live_processes_is_healthy(settings, alive, database):
    now = time.time()
    insert_run(database, TASK_UPSERT, started_at=now - 12, ended_at=now - 10, outcome="ok",
               deals_written=3)
    result = health(settings, alive, database, now)
    assert result.ok, result.reason
    assert result.reason.startswith(f"deals flowing: {TASK_UPSERT}")
    upsert = result.verdict(TASK_UPSERT)
    assert upsert.state == "idle" and upsert.eta_s == pytest.approx(48, abs=1)
    assert "next run" in upsert.summary
    assert json.dumps(result.to_dict())  # JSON-serialisable for /api/status and the CLI


def test_liveness_without_progress_is_not_healthy(settings, alive, database):
    now = time.time()
    insert_run(database, TASK_UPSERT, started_at=now - 3600, outcome="ok", deals_written=9)
    insert_run(database, TASK_UPSERT, started_at=now - 20, outcome="partial", deals_written=0)
    result = health(settings, alive, database, now)
    assert not result.ok
    assert "no run wrote or confirmed deals" in result.reason


def test_a_cold_start_is_starting_until_its_first_runs_are_overdue(settings, redis_client,
                                                                   database, monkeypatch):
    now = time.time()
    monkeypatch.setattr(heartbeats, "PROCESS_STARTED_AT", now - 10)
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    heartbeats.beat_heartbeat(redis_client)
    window = progress_window_s(settings)
    result = health(settings, redis_client, database, now)
    assert (result.ok, result.status, result.fix) == (False, "starting", None)
    assert result.reason.startswith("starting: worker and beat came up 10 s ago")
    assert f"overdue in {duration_text(window - 10)}" in result.reason
    late = health(settings, redis_client, database, now - 10 + window + 1)
    assert late.status == "unhealthy" and "no run wrote or confirmed deals" in late.reason
    assert late.fix, "an overdue start says what to do"


def test_a_failure_during_the_start_is_unhealthy_at_once(settings, redis_client, database,
                                                         monkeypatch):
    now = time.time()
    monkeypatch.setattr(heartbeats, "PROCESS_STARTED_AT", now - 10)
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    heartbeats.beat_heartbeat(redis_client)
    insert_run(database, TASK_UPSERT, started_at=now - 5, ended_at=now - 4, outcome="failed",
               error="InvalidKeyError: Keepa rejects the key")
    result = health(settings, redis_client, database, now)
    assert result.status == "unhealthy" and "invalid key" in result.reason
    assert "KEEPA_API_KEY" in result.fix


def test_missing_worker_and_beat_heartbeats_stall_both_tasks(settings, redis_client, database):
    result = health(settings, redis_client, database)
    assert not result.ok and "no worker heartbeat" in result.reason
    for verdict in result.verdicts:
        assert verdict.state == "stalled"
        assert "no worker heartbeat" in verdict.cause and "./start_celery.sh" in verdict.fix
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    result = health(settings, redis_client, database)
    assert "no beat heartbeat" in result.verdict(TASK_BACKFILL).cause


def test_an_invalid_key_stalls_at_the_first_failure(settings, alive, database):
    now = time.time()
    insert_run(database, TASK_BACKFILL, started_at=now - 30, outcome="failed",
               error="InvalidKeyError: Keepa rejected the API key (HTTP 400)")
    verdict = health(settings, alive, database, now).verdict(TASK_BACKFILL)
    assert verdict.state == "stalled" and "invalid key" in verdict.cause
    assert "KEEPA_API_KEY" in verdict.fix


def test_transient_keepa_errors_stall_only_when_repeated(settings, alive, database):
    now = time.time()
    error = "TransientError: read timeout after 60 s"
    insert_run(database, TASK_UPSERT, started_at=now - 200, outcome="ok", deals_written=1)
    insert_run(database, TASK_UPSERT, started_at=now - 130, outcome="failed", error=error)
    first = health(settings, alive, database, now).verdict(TASK_UPSERT)
    assert first.state == "idle" and "retrying" in first.summary
    insert_run(database, TASK_UPSERT, started_at=now - 70, outcome="skipped")
    insert_run(database, TASK_UPSERT, started_at=now - 65, outcome="failed", error=error)
    insert_run(database, TASK_UPSERT, started_at=now - 5, outcome="failed", error=error)
    result = health(settings, alive, database, now)
    verdict = result.verdict(TASK_UPSERT)
    assert verdict.state == "stalled" and "repeated Keepa errors" in verdict.cause
    assert not result.ok and f"{TASK_UPSERT} stalled" in result.reason


def test_a_locked_database_is_named_with_its_fix(settings, alive, database):
    now = time.time()
    for ago in (90, 60, 30):
        insert_run(database, TASK_BACKFILL, started_at=now - ago, outcome="failed",
                   error="database error (OperationalError: database is locked)")
    verdict = health(settings, alive, database, now).verdict(TASK_BACKFILL)
    assert verdict.state == "stalled" and "database is locked" in verdict.cause
    assert "DATABASE_PATH" in verdict.fix


def test_a_task_waiting_for_tokens_shows_its_eta(settings, alive, database):
    with LeaseLock(alive, UPSERT_LOCK, ttl_s=10, task_id="t1"):
        heartbeats.set_task_status(alive, TASK_UPSERT, "waiting_tokens", eta_s=42.0,
                                   progress=7, run_id=3, detail="page 2")
        verdict = health(settings, alive, database).verdict(TASK_UPSERT)
    assert verdict.state == "waiting_tokens" and verdict.eta_s == 42.0
    assert "ready in about 42 s" in verdict.summary and "7 deals written" in verdict.progress


def test_a_task_that_stopped_being_scheduled_is_stalled(settings, alive, database):
    now = time.time()
    insert_run(database, TASK_BACKFILL, started_at=now - 900, outcome="ok", deals_written=5)
    verdict = health(settings, alive, database, now).verdict(TASK_BACKFILL)
    assert verdict.state == "stalled" and "no run for 15 min" in verdict.cause


def test_a_lease_no_longer_renewed_by_a_remote_holder_is_a_dead_holder(settings, alive,
                                                                       database):
    now = time.time()
    value = {"host": "other-host", "pid": 4242, "task_id": "t9", "since": now - 60,
             "renewed_at": now - 25, "token": "x"}
    alive.set(LOCK_KEY_PREFIX + BACKFILL_LOCK, json.dumps(value), px=5_000)
    verdict = health(settings, alive, database, now).verdict(TASK_BACKFILL)
    assert verdict.state == "stalled"
    assert "dead worker (pid 4242 on other-host" in verdict.cause


def test_a_run_whose_worker_died_is_reported_once_the_lease_is_gone(settings, alive, database):
    now = time.time()
    run_id = insert_run(database, TASK_BACKFILL, started_at=now - 20, outcome="running")
    heartbeats.set_task_status(alive, TASK_BACKFILL, "running", run_id=run_id)
    alive.hset(heartbeats.TASK_KEY_PREFIX + TASK_BACKFILL, "updated_at", now - 60)
    verdict = health(settings, alive, database, now).verdict(TASK_BACKFILL)
    assert verdict.state == "idle" and f"run {run_id} ended without a record" in verdict.summary


def test_backfill_progress_comes_from_the_cursor(settings, alive, database):
    now = float(int(time.time()))  # whole seconds, like the cursor's times
    cursor = {"sweep_id": 4, "page": 2, "sweep_started_at": int(now) - 330,
              "last_sweep_pages": 5}
    with db.transaction(database):
        db.set_state(database, "backfill_cursor", cursor)
    progress = health(settings, alive, database, now).backfill
    assert progress["position"] == 300 and progress["sweep_id"] == 4
    assert progress["estimated_total"] == 750  # the last complete sweep: 5 pages
    assert progress["fraction"] == 0.4
    assert progress["eta_s"] == pytest.approx(3 * 165, abs=1)  # 3 pages left at 165 s a page

    with db.transaction(database):
        db.set_state(database, "backfill_cursor", {**cursor, "last_sweep_pages": None})
    progress = health(settings, alive, database, now).backfill
    assert progress["estimated_total"] == 300  # no deals stored: at least the position
    assert progress["fraction"] == 1.0


def test_freshness_comes_with_the_health_and_the_bucket_rate(settings, alive, database):
    now = int(time.time())
    seed_freshness(database, now)
    assert health(settings, alive, database, now).freshness["plan"] is None  # no refill rate
    TokenBucket(alive, refill_period_ms=settings.refill_period_ms).sync(TokenEnvelope(
        timestamp_ms=now * 1000, tokens_left=100, refill_in_ms=30_000, refill_rate=20))
    freshness = health(settings, alive, database, now).freshness
    assert {key: freshness[key] for key in SEEDED} == SEEDED
    assert freshness["plan"]["current"]["refill_rate"] == 20
    assert freshness["plan"]["verdict"].startswith("The plan keeps up")


def test_unreadable_freshness_is_a_warning_not_a_database_error(settings, alive, database):
    now = time.time()
    insert_run(database, TASK_UPSERT, started_at=now - 12, ended_at=now - 10, outcome="ok",
               deals_written=3)
    database.execute("DROP TABLE freshness_samples")
    result = health(settings, alive, database, now)
    assert result.ok and result.database_error is None and result.freshness is None
    assert any("freshness figures unavailable" in warning and "freshness_samples" in warning
               for warning in result.warnings)


def test_collecting_never_raises_when_redis_and_the_database_are_down(make_settings, tmp_path):
    settings = make_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                             DATABASE_PATH=str(tmp_path / "absent" / "deals.db"))
    result = collect_health(settings)
    assert not result.ok and result.reason.startswith("Redis unreachable")
    assert result.database_error and "does not exist" in result.database_error
    assert result.deal_count is None
    for verdict in result.verdicts:
        assert verdict.state == "stalled" and "Redis" in verdict.fix
