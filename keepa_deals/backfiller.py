"""Task keepa_deals.backfiller.backfill_deals: sweep the whole deal query and enrich every deal.

A sweep pages the query (keepa_query.json) from page 0 to its last page and enriches every deal
with /product data in batches sized to the token budget. Progress is a cursor
(sweep id, page, index within the page) in pipeline_state, committed in the same transaction as
the rows of each batch (FAILURES D1/D6): a crash or a slice end loses at most one batch, and a
page too big for one slice still advances. A run is a bounded slice (TASK_SLICE_S); when a sweep
finishes the run ends and the cursor points at the next sweep, so a small query is swept at
most once per backfill interval.

Pages are fetched ahead, as many as the run can afford to enrich before its deadline, so that a
sweep reads one consistent snapshot (Keepa caches a query's result set for 120 s) when tokens
allow. A deal already enriched in this sweep with the same lastUpdate is not fetched again
(ASIN dedupe across pages and across resumed runs). Tokens are waited for at
PRIORITY_BACKFILL; running out of them ends the slice cleanly ("partial").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from keepa_deals.constants import (
    BACKFILL_LOCK,
    DEAL_PAGE_COST,
    DEAL_PAGE_SIZE,
    MAX_DEALS_PER_QUERY,
    PRIORITY_BACKFILL,
    TASK_BACKFILL,
)
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.task_runtime import TaskRun, TaskSpec, celery_task, local_runner

CURSOR_STATE = "backfill_cursor"
SPEC = TaskSpec(TASK_BACKFILL, BACKFILL_LOCK, PRIORITY_BACKFILL)
LAST_PAGE_INDEX = -(-MAX_DEALS_PER_QUERY // DEAL_PAGE_SIZE) - 1  # Keepa returns ≤ 10 000 deals


@dataclass(frozen=True)
class Cursor:
    """Where the backfill stands: the next deal to process is page `page`, position `index`."""

    sweep_id: int = 1
    page: int = 0
    index: int = 0
    sweep_started_at: int = 0
    last_sweep_finished_at: int | None = None

    @classmethod
    def from_state(cls, value: dict | None, *, now: int) -> Cursor:
        if not value:
            return cls(sweep_started_at=now)
        known = {name: value[name] for name in cls.__dataclass_fields__ if name in value}
        return cls(**known)

    def to_state(self) -> dict:
        return asdict(self)

    def after(self, processed: int, page: ParsedPage, *, now: int) -> Cursor:
        """The cursor once `processed` more records of `page` (the cursor's page) are done."""
        index = self.index + processed
        if index < len(page.records):
            return Cursor(self.sweep_id, self.page, index, self.sweep_started_at,
                          self.last_sweep_finished_at)
        if page.is_last_page or self.page >= LAST_PAGE_INDEX:
            return Cursor(self.sweep_id + 1, 0, 0, now, now)
        return Cursor(self.sweep_id, self.page + 1, 0, self.sweep_started_at,
                      self.last_sweep_finished_at)


def backfill_slice(run: TaskRun) -> bool:
    """Process batches until the slice ends (False) or the current sweep finishes (True)."""
    cursor = Cursor.from_state(run.load_state(CURSOR_STATE), now=int(time.time()))
    pages = _PageWindow(run)
    sweep = cursor.sweep_id
    while not run.past_deadline():
        page = pages.get(cursor.page)
        pending = page.records[cursor.index:cursor.index + run.batch_size()]
        rows = run.enrich(_not_yet_swept(run, pending, cursor.sweep_started_at))
        cursor = cursor.after(len(pending), page, now=int(time.time()))
        run.commit(rows, CURSOR_STATE, cursor.to_state())
        run.progress(f"sweep {cursor.sweep_id}, page {cursor.page}, deal {cursor.index}")
        if cursor.sweep_id != sweep:
            run.count("sweeps_finished")
            return True
    return False


run_backfill = local_runner(SPEC, backfill_slice)
backfill_deals = celery_task("keepa_deals.backfiller.backfill_deals", SPEC, backfill_slice)


def _not_yet_swept(run: TaskRun, records: list[DealRecord],
                   sweep_started_at: int) -> list[DealRecord]:
    """Drop records this sweep already enriched with the same lastUpdate (ASIN dedupe)."""
    stored = run.stored_versions(r.asin for r in records)
    fresh = []
    for record in records:
        last_update, enriched_at = stored.get(record.asin, (None, None))
        if (last_update == record.last_update_at and enriched_at is not None
                and enriched_at > sweep_started_at):
            run.count("duplicates_skipped")
            continue
        fresh.append(record)
    return fresh


class _PageWindow:
    """The pages of the current sweep fetched so far in this run, filled ahead of the cursor.

    When page p is needed and missing, pages p, p+1, ... are fetched back to back (one
    consistent snapshot of the query while Keepa's 120 s cache holds), as many as the run can
    still afford to enrich before its deadline, stopping at the last page.
    """

    def __init__(self, run: TaskRun):
        self._run = run
        self._pages: dict[int, ParsedPage] = {}

    def get(self, number: int) -> ParsedPage:
        if number not in self._pages:
            self._fill_from(number)
        return self._pages[number]

    def _fill_from(self, first: int) -> None:
        number = first
        while True:
            page, _ = self._run.fetch_deal_page(self._run.selection, number)
            self._pages[number] = page
            if (page.is_last_page or number >= LAST_PAGE_INDEX
                    or number - first + 1 >= self._affordable_pages()):
                return
            number += 1

    def _affordable_pages(self) -> int:
        """Pages whose deals the run can pay to enrich before its deadline (at least 1)."""
        envelope = self._run.gate.last_envelope
        if envelope is None:
            return 1
        period_s = self._run.services.settings.refill_period_ms / 1000
        ticks = max(0.0, self._run.time_left()) / period_s
        affordable = max(0, envelope.tokens_left) + envelope.refill_rate * ticks
        return max(1, int(affordable // (DEAL_PAGE_SIZE + DEAL_PAGE_COST)))
