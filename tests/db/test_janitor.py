"""The janitor removes deals unseen while ingestion worked, and nothing during a stall (D11)."""

from __future__ import annotations

import pytest
from db_helpers import make_deal

from keepa_deals import db, janitor
from keepa_deals.constants import TASK_BACKFILL, TASK_JANITOR, TASK_UPSERT

pytestmark = pytest.mark.timeout(30)

HOUR = 3600
MAX_AGE = 72 * HOUR
NOW = 1_700_000_000


def seen(conn, asin: str, at: int) -> None:
    with db.transaction(conn):
        db.upsert_deals(conn, [make_deal(asin, last_update_at=at)], source=TASK_UPSERT,
                        seen_at=at)


def run(conn, task: str, outcome: str, *, started: int, ended: int) -> None:
    run_id = db.start_run(conn, task, host="worker-1", pid=7, revision="r")
    db.finish_run(conn, run_id, outcome=outcome, deals_written=1, tokens_spent=5)
    conn.execute("UPDATE runs SET started_at = ?, ended_at = ? WHERE id = ?",
                 (started, ended, run_id))


@pytest.fixture
def aging_deals(conn):
    """Three deals: fresh, unseen for 75 h, unseen for 100 h."""
    seen(conn, "B00000FRSH", NOW - HOUR)
    seen(conn, "B0000075HR", NOW - 75 * HOUR)
    seen(conn, "B000100HRS", NOW - 100 * HOUR)
    return conn


def asins(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT asin FROM deals")}


def test_healthy_pipeline_removes_stale_deals_and_logs_each(aging_deals):
    conn = aging_deals
    run(conn, TASK_UPSERT, "ok", started=NOW - 120, ended=NOW - 60)
    result = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                        ingestion_healthy=True)
    assert result == janitor.JanitorResult(removed=2, cutoff=NOW - 120 - MAX_AGE)
    assert asins(conn) == {"B00000FRSH"}
    removals = conn.execute("SELECT asin, last_seen_at, removed_at FROM janitor_removals "
                            "ORDER BY asin").fetchall()
    assert [tuple(r) for r in removals] == [("B0000075HR", NOW - 75 * HOUR, NOW),
                                            ("B000100HRS", NOW - 100 * HOUR, NOW)]
    assert db.deal_count(conn) == 1


def test_stalled_ingestion_verdict_deletes_nothing(aging_deals):
    conn = aging_deals
    run(conn, TASK_UPSERT, "ok", started=NOW - 120, ended=NOW - 60)
    result = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                        ingestion_healthy=False)
    assert result.removed == 0 and "not healthy" in result.refused
    assert db.deal_count(conn) == 3
    assert conn.execute("SELECT COUNT(*) FROM janitor_removals").fetchone()[0] == 0


@pytest.mark.parametrize("runs", [
    [],
    [(TASK_UPSERT, "failed", NOW - 120, NOW - 60), (TASK_BACKFILL, "partial", NOW - 99, NOW - 9)],
    [(TASK_UPSERT, "ok", NOW - 80 * HOUR, NOW - 79 * HOUR)],
    [(TASK_JANITOR, "ok", NOW - 120, NOW - 60)],
], ids=["no runs", "only failed or partial", "last success too old", "only janitor runs"])
def test_wrong_healthy_verdict_is_caught_by_the_runs_table(aging_deals, runs):
    conn = aging_deals
    for task, outcome, started, ended in runs:
        run(conn, task, outcome, started=started, ended=ended)
    result = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                        ingestion_healthy=True)
    assert result.removed == 0 and "no successful" in result.refused
    assert db.deal_count(conn) == 3


def test_a_recent_stall_only_removes_deals_unseen_before_it_began(aging_deals):
    """Last success 10 h ago: a deal unseen for 75 h was unseen for only 65 h of working
    ingestion and stays; the one unseen for 100 h goes."""
    conn = aging_deals
    run(conn, TASK_BACKFILL, "ok", started=NOW - 10 * HOUR, ended=NOW - 10 * HOUR + 60)
    run(conn, TASK_UPSERT, "failed", started=NOW - 120, ended=NOW - 60)
    result = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                        ingestion_healthy=True)
    assert result.cutoff == NOW - 10 * HOUR - MAX_AGE
    assert asins(conn) == {"B00000FRSH", "B0000075HR"}


def test_repeated_runs_remove_nothing_more(aging_deals):
    conn = aging_deals
    run(conn, TASK_UPSERT, "ok", started=NOW - 120, ended=NOW - 60)
    janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW, ingestion_healthy=True)
    again = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW, ingestion_healthy=True)
    assert again.removed == 0 and again.refused is None
    assert conn.execute("SELECT COUNT(*) FROM janitor_removals").fetchone()[0] == 2


def test_non_positive_max_age_is_refused(conn):
    with pytest.raises(ValueError, match="max_age_s must be positive"):
        janitor.remove_stale_deals(conn, max_age_s=0, now=NOW, ingestion_healthy=True)


DAY = 24 * HOUR


def insert_runs(conn, task: str, rows: list[tuple[str, int | None]]) -> list[int]:
    """Runs of `task` as (outcome, ended_at), oldest id first; returns their ids."""
    with db.transaction(conn):
        return [conn.execute("INSERT INTO runs (task, started_at, ended_at, outcome) "
                             "VALUES (?, ?, ?, ?) RETURNING id",
                             (task, (ended or NOW) - 60, ended, outcome)).fetchone()[0]
                for outcome, ended in rows]


def run_ids(conn) -> set[int]:
    return {row[0] for row in conn.execute("SELECT id FROM runs")}


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "refused"])
def test_old_finished_runs_are_pruned_beyond_each_tasks_newest(conn, healthy):
    old, recent = NOW - 31 * DAY, NOW - 29 * DAY
    last_ok, still_running, pruned, long_run = insert_runs(conn, TASK_BACKFILL, [
        ("ok", NOW - 60 * DAY), ("running", None), ("failed", old), ("partial", recent)])
    pruned_too = insert_runs(conn, TASK_BACKFILL, [("skipped", old), ("failed", old - DAY)])
    newest = insert_runs(conn, TASK_BACKFILL, [("failed", old)] * janitor.RUNS_KEPT_PER_TASK)
    other_task = insert_runs(conn, TASK_UPSERT, [("ok", old), ("failed", old)])
    before = run_ids(conn)

    result = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                        ingestion_healthy=healthy)

    gone = {pruned, *pruned_too}
    assert result.runs_pruned == len(gone)
    assert run_ids(conn) == before - gone
    assert {last_ok, still_running, long_run, *newest, *other_task} <= run_ids(conn)
    assert db.last_successful_run(conn, TASK_BACKFILL).id == last_ok
    again = janitor.remove_stale_deals(conn, max_age_s=MAX_AGE, now=NOW,
                                       ingestion_healthy=healthy)
    assert again.runs_pruned == 0
