"""The janitor: removes deals Keepa stopped listing, never while ingestion is stalled.

FAILURES D11: a janitor deleting "stale" rows while the collectors were stalled decayed the deal
count from 350 to 48. Here a deal is stale only when it went unseen for `max_age_s` while the
pipeline was demonstrably working, so a stall can never empty the table:

* the caller's verdict (`ingestion_healthy`, from the health module) must be True, and
* the runs table must show a successful upserter or backfill run that ended within `max_age_s`
  (so the janitor is safe even when the caller's verdict is wrong); the cutoff is counted back
  from the start of that run, not from `now`.

The Celery task that calls this lives in janitor_task.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from keepa_deals import db
from keepa_deals.constants import PIPELINE_TASKS

RUNS_KEPT_S = 30 * 24 * 3600  # finished runs older than this are pruned ...
RUNS_KEPT_PER_TASK = 1000  # ... except each task's newest ones
FRESHNESS_KEPT_S = 2 * 24 * 3600  # freshness samples (the dashboard shows the last hour)


@dataclass(frozen=True)
class JanitorResult:
    """removed: deals deleted (each logged in janitor_removals); cutoff: deals last seen
    before it were stale (None when refused); refused: why no deal was deleted; runs_pruned:
    old run records deleted (pruned even when deals are kept)."""

    removed: int
    cutoff: int | None
    refused: str | None = None
    runs_pruned: int = 0


def remove_stale_deals(conn: db.Connection, *, max_age_s: int, now: int,
                       ingestion_healthy: bool) -> JanitorResult:
    """Delete deals unseen for `max_age_s` of working ingestion, in one transaction.

    Every call (refused or not) also prunes the runs table: finished runs that ended more than
    RUNS_KEPT_S ago, beyond each task's newest RUNS_KEPT_PER_TASK and its last successful run;
    and freshness samples older than FRESHNESS_KEPT_S.
    """
    if max_age_s <= 0:
        raise ValueError(f"max_age_s must be positive, got {max_age_s}")
    with db.transaction(conn):
        pruned = db.prune_runs(conn, ended_before=now - RUNS_KEPT_S,
                               keep_per_task=RUNS_KEPT_PER_TASK)
        db.prune_freshness_samples(conn, recorded_before=now - FRESHNESS_KEPT_S)
    if not ingestion_healthy:
        return JanitorResult(0, None, "ingestion is not healthy: stale deals are kept until "
                                      "the pipeline makes progress again", pruned)
    with db.transaction(conn):
        last_ok = _last_successful_pipeline_run(conn)
        if last_ok is None or last_ok.ended_at < now - max_age_s:
            return JanitorResult(0, None, f"no successful {' or '.join(PIPELINE_TASKS)} run "
                                          f"ended in the last {max_age_s} s", pruned)
        cutoff = min(now, last_ok.started_at) - max_age_s
        conn.execute("INSERT INTO janitor_removals (removed_at, asin, last_seen_at) "
                     "SELECT ?, asin, last_seen_at FROM deals WHERE last_seen_at < ?",
                     (now, cutoff))
        removed = conn.execute("DELETE FROM deals WHERE last_seen_at < ?", (cutoff,)).rowcount
    return JanitorResult(removed, cutoff, runs_pruned=pruned)


def _last_successful_pipeline_run(conn: db.Connection) -> db.Run | None:
    runs = [db.last_successful_run(conn, task) for task in PIPELINE_TASKS]
    return max((run for run in runs if run is not None), key=lambda run: run.ended_at,
               default=None)
