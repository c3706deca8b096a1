"""Pipeline state (JSON values) and the runs table."""

from __future__ import annotations

import pytest
from db_helpers import BASE_TIME

from keepa_deals import db

pytestmark = pytest.mark.timeout(30)


def set_state(conn, name, value):
    with db.transaction(conn):
        db.set_state(conn, name, value)


def test_state_round_trips_json_values(conn):
    assert db.get_state(conn, "watermark") is None
    assert db.get_state(conn, "watermark", default=0) == 0
    set_state(conn, "watermark", BASE_TIME)
    set_state(conn, "cursor", {"sweep_id": 3, "page": 7, "index": 150, "asins": ["B1"]})
    set_state(conn, "watermark", BASE_TIME + 60)
    assert db.get_state(conn, "watermark") == BASE_TIME + 60
    assert db.get_state(conn, "cursor") == {"sweep_id": 3, "page": 7, "index": 150,
                                            "asins": ["B1"]}


def test_state_that_is_not_json_is_refused_with_its_name(conn):
    with pytest.raises(TypeError, match="'cursor' is not JSON-serialisable"), \
            db.transaction(conn):
        db.set_state(conn, "cursor", {1, 2})
    assert db.get_state(conn, "cursor") is None


def test_state_outside_a_transaction_is_refused(conn):
    with pytest.raises(db.TransactionRequired, match="set_state"):
        db.set_state(conn, "watermark", 1)


def test_run_lifecycle_is_recorded(conn):
    run_id = db.start_run(conn, "backfill_deals", host="worker-1", pid=4242, revision="abc123")
    [running] = db.recent_runs(conn)
    assert (running.id, running.outcome, running.ended_at, running.host, running.pid) == (
        run_id, "running", None, "worker-1", 4242)
    db.finish_run(conn, run_id, outcome="partial", deals_written=150, tokens_spent=55,
                  error=None, detail={"pages": 2})
    [finished] = db.recent_runs(conn)
    assert (finished.outcome, finished.deals_written, finished.tokens_spent, finished.detail) == (
        "partial", 150, 55, {"pages": 2})
    assert finished.ended_at >= finished.started_at


def test_start_run_is_committed_at_once_so_a_crash_leaves_it_visible(conn, store):
    db.start_run(conn, "update_recent_deals", host="worker-1", pid=99, revision=None)
    other = db.readonly_connect(store)
    [run] = db.recent_runs(other)
    assert (run.outcome, run.host, run.pid) == ("running", "worker-1", 99)


def test_recent_runs_newest_first_and_per_task(conn):
    ids = [db.start_run(conn, task, host="h", pid=1, revision="r")
           for task in ("backfill_deals", "update_recent_deals", "backfill_deals")]
    assert [r.id for r in db.recent_runs(conn)] == ids[::-1]
    assert [r.id for r in db.recent_runs(conn, limit=1)] == ids[-1:]
    assert [r.id for r in db.recent_runs(conn, task="backfill_deals")] == [ids[2], ids[0]]


def test_last_successful_run_ignores_other_outcomes_and_tasks(conn):
    assert db.last_successful_run(conn, "update_recent_deals") is None
    outcomes = [("update_recent_deals", "ok"), ("update_recent_deals", "failed"),
                ("backfill_deals", "ok"), ("update_recent_deals", "partial")]
    ids = []
    for task, outcome in outcomes:
        ids.append(db.start_run(conn, task, host="h", pid=1, revision="r"))
        db.finish_run(conn, ids[-1], outcome=outcome, deals_written=0, tokens_spent=0)
    assert db.last_successful_run(conn, "update_recent_deals").id == ids[0]


def test_finish_run_rejects_unknown_outcomes_and_runs(conn):
    run_id = db.start_run(conn, "backfill_deals", host="h", pid=1, revision="r")
    with pytest.raises(ValueError, match="outcome must be one of"):
        db.finish_run(conn, run_id, outcome="done", deals_written=0, tokens_spent=0)
    with pytest.raises(LookupError, match="run 999 does not exist"):
        db.finish_run(conn, 999, outcome="ok", deals_written=0, tokens_spent=0)
    assert db.recent_runs(conn)[0].outcome == "running"
