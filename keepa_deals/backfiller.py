"""Task keepa_deals.backfiller.backfill_deals: find what changed across the whole query, then
spend /product tokens by priority.

A sweep reads the query's pages (keepa_query.json) from page 0 to the last page. Reading pages
is the cheap way to learn what changed (5 tokens for 150 deals): each page's deal fields
(price, average, delta, rank, lastUpdate, title, image) are written at once, newer-wins, in one
transaction with the cursor, so the table is current after one sweep even while enrichment
waits, and a crash or a slice end loses at most one page. The expensive part, /product, goes
only to the enrichment queue (enrichment.py: never enriched → lastUpdate moved → enrichment
older than ENRICH_MAX_AGE_H); an unchanged deal enriched within that age costs nothing.

Order: while both have work, pages get SCAN_TOKEN_SHARE of the sweep's tokens (the changed-deal
lag is one sweep) and enrichment the rest, in whole batches (one refill tick of ASINs each) once
it has earned one. The cursor carries the sweep's page and enrichment tokens, so the split holds
across runs.
A sweep starts at most once per backfill interval: when the sweep that just ended started at
least an interval ago (a large query) the next one begins at once; otherwise (a small query)
the run works on the queue until it is empty or the slice ends, and the query is not re-read
in a loop.
Tokens are waited for at PRIORITY_BACKFILL; the slice ending while waiting ends the run cleanly
("partial") and the next run resumes at the cursor.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from keepa_deals import enrichment
from keepa_deals.constants import (
    BACKFILL_LOCK,
    DEAL_PAGE_SIZE,
    MAX_DEALS_PER_QUERY,
    PRIORITY_BACKFILL,
    SCAN_TOKEN_SHARE,
    TASK_BACKFILL,
)
from keepa_deals.deals import ParsedPage
from keepa_deals.task_runtime import TaskRun, TaskSpec, celery_task, local_runner

CURSOR_STATE = "backfill_cursor"
SPEC = TaskSpec(TASK_BACKFILL, BACKFILL_LOCK, PRIORITY_BACKFILL)
LAST_PAGE_INDEX = -(-MAX_DEALS_PER_QUERY // DEAL_PAGE_SIZE) - 1  # Keepa returns ≤ 10 000 deals


@dataclass(frozen=True)
class Cursor:
    """The sweep in progress (its next page) and what the last complete sweep saw."""

    sweep_id: int = 1
    page: int = 0
    sweep_started_at: int = 0
    last_sweep_finished_at: int | None = None
    last_sweep_started_at: int | None = None
    last_sweep_pages: int | None = None
    page_tokens: int = 0  # what this sweep spent on pages ...
    enrich_tokens: int = 0  # ... and on enrichment (saved with each page)

    @classmethod
    def from_state(cls, value: dict | None, *, now: int) -> Cursor:
        if not value:
            return cls(sweep_started_at=now)
        known = {name: value[name] for name in cls.__dataclass_fields__ if name in value}
        return cls(**known)

    def to_state(self) -> dict:
        return asdict(self)

    def after(self, page: ParsedPage, *, now: int, page_tokens: int = 0,
              enrich_tokens: int = 0) -> Cursor:
        """The cursor once `page` (the cursor's page) is written, with the tokens spent on it
        and on enrichment since the last page."""
        if page.is_last_page or self.page >= LAST_PAGE_INDEX:
            return Cursor(self.sweep_id + 1, 0, now, now, self.sweep_started_at, self.page + 1)
        return replace(self, page=self.page + 1, page_tokens=self.page_tokens + page_tokens,
                       enrich_tokens=self.enrich_tokens + enrich_tokens)

    def enrichment_allowance(self, unsaved_enrich_tokens: int) -> float:
        """Tokens enrichment may spend before the sweep's next page, by SCAN_TOKEN_SHARE."""
        earned = self.page_tokens * (1 - SCAN_TOKEN_SHARE) / SCAN_TOKEN_SHARE
        return earned - self.enrich_tokens - unsaved_enrich_tokens

    @property
    def listed_since(self) -> int:
        """Deals seen at or after this are still in the query: the start of the last complete
        sweep (0, every deal, before the first one ends)."""
        return self.last_sweep_started_at or 0


def backfill_slice(run: TaskRun) -> bool:
    """Sweep and enrich until the slice ends (False) or the sweep is done and nothing waits
    for enrichment (True)."""
    cursor = Cursor.from_state(run.load_state(CURSOR_STATE), now=int(time.time()))
    sweep = cursor.sweep_id
    interval_s = run.services.settings.backfill_interval_s
    unsaved = 0  # enrichment tokens not yet in the cursor
    while not run.past_deadline():
        if cursor.sweep_id != sweep and cursor.last_sweep_started_at <= time.time() - interval_s:
            sweep = cursor.sweep_id  # the sweep that ended took longer than an interval
        sweeping = cursor.sweep_id == sweep
        size = run.batch_size()
        if sweeping and cursor.enrichment_allowance(unsaved) < size:
            cursor, unsaved = _scan_page(run, cursor, unsaved), 0
            continue
        batch = enrichment.next_batch(run, size, seen_since=cursor.listed_since)
        if batch:
            unsaved += enrichment.enrich_batch(run, batch)
        elif sweeping:
            cursor, unsaved = _scan_page(run, cursor, unsaved), 0
        else:
            return True
    return False


run_backfill = local_runner(SPEC, backfill_slice)
backfill_deals = celery_task("keepa_deals.backfiller.backfill_deals", SPEC, backfill_slice)


def _scan_page(run: TaskRun, cursor: Cursor, enrich_tokens: int) -> Cursor:
    """Read the cursor's page and commit its deals with the next cursor (which counts the
    page's tokens and `enrich_tokens` spent since the last page)."""
    run.progress(f"sweep {cursor.sweep_id}, reading page {cursor.page}")
    spent_before = run.detail.get("tokens_pages", 0)
    page, server_now = run.fetch_deal_page(run.selection, cursor.page)
    following = cursor.after(page, now=int(time.time()),
                             page_tokens=run.detail.get("tokens_pages", 0) - spent_before,
                             enrich_tokens=enrich_tokens)
    run.commit(page.records, CURSOR_STATE, following.to_state(), server_now=server_now)
    if following.sweep_id != cursor.sweep_id:
        run.count("sweeps_finished")
        run.progress(f"sweep {cursor.sweep_id} done ({following.last_sweep_pages} pages); "
                     "enriching")
    return following
