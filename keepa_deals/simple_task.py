"""Task keepa_deals.simple_task.update_recent_deals: new deals in the table fast, at a cost
bounded by what is new.

Each run pages the deal query by its own sort key, deal age (sortType 1: creationDate, newest
first), and stops at the first page that ends before `watermark − OVERLAP_S`: a page sorted
newest first whose last deal was created before it, or any page whose deals all were (or at the
last page). A run therefore reads at most 1 + ceil(new deals / 150) pages from a sorted result
and 2 + ceil(new deals / 150) when pages come out of order, whatever the query size and however
lastUpdate is scattered (nothing in Keepa sorts by lastUpdate). The window's deals that are new
to the table, or newer than the stored row (lastUpdate), are written at once together with the
watermark they justify, in one transaction (FAILURES D1–D4). Then the window's deals that were
never enriched get their /product data at PRIORITY_UPSERTER, one refill tick of ASINs per call;
a run that ends before that leaves them first in the backfiller's enrichment queue.

Watermark rules (a creationDate, in server time):

* it moves only past what is stored: to the newest creationDate of the window written with it;
* it never moves beyond the server's clock (future creationDates clamp to "now") nor backwards;
  a stored watermark in the future is treated as "now";
* the overlap window re-reads deals created at (or a little before) the watermark, so equal
  timestamps and pages that are not strictly sorted lose nothing;
* low tokens mean waiting (the bucket), never skipping; a failed run leaves the watermark where
  it was, and the rows it did write are simply found unchanged next time.

"Now" is the server's clock from the /deal response (Keepa minutes are server time), so a
simulator with a fast clock and the real API behave alike. A deal without a creationDate counts
by its lastUpdate. The first run, without a watermark, looks back INITIAL_LOOKBACK_S; older
deals are the backfiller's.

Keepa serves a query's result set from a cache for 120 s (DEAL_RESULT_CACHE_MS): a read before
it expires pays 5 tokens for the answer already read. So a run first asks the free /token for
the server's clock; when the last read (READ_AT_STATE, server ms) is younger than the cache, it
waits for the expiry if that comes within one Keepa minute, else it ends at once ("cached"). The
newest page is thus read about every two minutes, as soon as it can hold something new.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

from keepa_deals import enrichment
from keepa_deals.backfiller import LAST_PAGE_INDEX
from keepa_deals.constants import (
    DEAL_RESULT_CACHE_MS,
    KEEPA_MINUTE_MS,
    PRIORITY_UPSERTER,
    TASK_UPSERT,
    UPSERT_LOCK,
)
from keepa_deals.db import QueuedDeal
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.task_runtime import TaskRun, TaskSpec, celery_task, local_runner

WATERMARK_STATE = "upsert_watermark"
READ_AT_STATE = "upsert_read_at_ms"  # server time of the last read of the newest page
SPEC = TaskSpec(TASK_UPSERT, UPSERT_LOCK, PRIORITY_UPSERTER)
NEWEST_FIRST = 1  # sortType 1: deal age (creationDate), newest first
OVERLAP_S = 10 * 60
INITIAL_LOOKBACK_S = 60 * 60


# --------------------------------------------------------------------------- watermark rules

def created_at(record: DealRecord) -> int:
    """The deal's sort key under sortType 1: creationDate, else lastUpdate."""
    created = record.deal_created_at
    return record.last_update_at if created is None else created


def window_start(watermark: int | None, now: int) -> int:
    """Deals created at or after this are (re)considered; a future watermark counts as now."""
    if watermark is None:
        return now - INITIAL_LOOKBACK_S
    return min(watermark, now) - OVERLAP_S


def advance_watermark(watermark: int | None, stored_up_to: int, now: int) -> int:
    """The watermark once every window deal created at or before `stored_up_to` is stored."""
    candidate = min(stored_up_to, now)
    if watermark is None:
        return candidate
    return max(min(watermark, now), candidate)


def page_ends_window(records: Sequence[DealRecord], start: int) -> bool:
    """True when no later page can hold a deal created in the window: every deal of the page
    was created before it (an empty page too), or the page is sorted newest first, as sortType
    1 promises, and ends before it. A page out of order proves nothing: paging goes on."""
    created = [created_at(r) for r in records]
    if all(c < start for c in created):
        return True
    return created[-1] < start and all(a >= b for a, b in pairwise(created))


def newest_per_asin(records: Iterable[DealRecord]) -> list[DealRecord]:
    """One record per ASIN, the one with the latest lastUpdate."""
    newest: dict[str, DealRecord] = {}
    for record in records:
        kept = newest.get(record.asin)
        if kept is None or record.last_update_at > kept.last_update_at:
            newest[record.asin] = record
    return list(newest.values())


def read_window(fetch: Callable[[int], tuple[ParsedPage, int]],
                watermark: int | None) -> tuple[list[DealRecord], int]:
    """Page newest-created first until a page ends the window (page_ends_window) or the last page.

    `fetch(page)` returns the parsed page and the server clock. Returns the window's deals,
    one per ASIN, oldest created first, and the server clock of the first page ("now").
    """
    collected: list[DealRecord] = []
    start = now = None
    for number in range(LAST_PAGE_INDEX + 1):
        page, server_now = fetch(number)
        if start is None:
            now, start = server_now, window_start(watermark, server_now)
        collected.extend(page.records)
        if page.is_last_page or page_ends_window(page.records, start):
            break
    recent = [r for r in newest_per_asin(collected) if created_at(r) >= start]
    recent.sort(key=lambda r: (created_at(r), r.asin))
    return recent, now


def cache_wait_ms(last_read_ms: int | None, server_now_ms: int) -> int:
    """Server ms until the result cached by the last read expires (0: a read gets news)."""
    if last_read_ms is None:
        return 0
    return max(0, min(last_read_ms, server_now_ms) + DEAL_RESULT_CACHE_MS - server_now_ms)


def is_new_or_changed(record: DealRecord, stored: tuple | None) -> bool:
    """True when the deals table lacks the ASIN or holds an older lastUpdate."""
    return stored is None or record.last_update_at > stored[0]


# --------------------------------------------------------------------------- the task

def upsert_recent(run: TaskRun) -> bool:
    """Store the window's new or changed deals with the watermark, then enrich the new ones."""
    if not wait_for_fresh_result(run):
        run.detail["stopped"] = "Keepa's cached result holds nothing new yet"
        return True
    watermark = run.load_state(WATERMARK_STATE)
    selection = {**run.selection, "sortType": NEWEST_FIRST}

    def fetch(number: int) -> tuple[ParsedPage, int]:
        run.progress(f"reading recent deals, page {number}")
        page, server_now = run.fetch_deal_page(selection, number)
        if number == 0:
            run.save_state(READ_AT_STATE, run.gate.last_envelope.timestamp_ms)
        return page, server_now

    window, now = read_window(fetch, watermark)
    if not window:
        return True
    stored = run.stored_versions(r.asin for r in window)
    changed = [r for r in window if is_new_or_changed(r, stored.get(r.asin))]
    run.count("window_deals", len(window))
    run.commit(changed, WATERMARK_STATE,
               advance_watermark(watermark, created_at(window[-1]), now), server_now=now)
    enrich_new(run, never_enriched(window, stored))
    return True


def wait_for_fresh_result(run: TaskRun) -> bool:
    """True once a read of the newest page can bring news: at once, or after sleeping until
    the cached result expires when that is within one Keepa minute; False (skip this run)
    when it is further away."""
    wait_ms = cache_wait_ms(run.load_state(READ_AT_STATE), run.client.token_status().timestamp_ms)
    if wait_ms > KEEPA_MINUTE_MS:
        return False
    if wait_ms:  # server ms; one Keepa minute lasts one refill period here
        run.progress("waiting for Keepa's cached result to expire")
        time.sleep(wait_ms / KEEPA_MINUTE_MS * run.services.settings.refill_period_ms / 1000)
    return True


def never_enriched(window: list[DealRecord], stored: dict[str, tuple]) -> list[QueuedDeal]:
    """The window's deals without /product data, with the lastUpdate their row now holds."""
    queued = []
    for record in window:
        last_update, enriched_at = stored.get(record.asin, (record.last_update_at, None))
        if enriched_at is None:
            queued.append(QueuedDeal(record.asin, "new", max(record.last_update_at, last_update)))
    return queued


def enrich_new(run: TaskRun, queued: list[QueuedDeal]) -> None:
    """Enrich the queued deals, one refill tick of ASINs per /product call."""
    done = 0
    while done < len(queued):
        run.progress(f"enriching new deals, {done} of {len(queued)} done")
        batch = queued[done:done + run.batch_size()]
        enrichment.enrich_batch(run, batch)
        done += len(batch)


run_upserter = local_runner(SPEC, upsert_recent)
update_recent_deals = celery_task("keepa_deals.simple_task.update_recent_deals", SPEC,
                                  upsert_recent)
