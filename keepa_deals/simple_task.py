"""Task keepa_deals.simple_task.update_recent_deals: keep the newest deals fresh, fast.

Each run pages the deal query newest-first (sortType 1) and stops after a page whose deals are
all older than `watermark − OVERLAP_S` (or at the last page). Deals in that window that are new
to the deals table, or newer than the stored row (lastUpdate), are enriched at
PRIORITY_UPSERTER and written oldest first; each batch commits its rows together with the
watermark they justify (FAILURES D1–D4):

* the watermark only moves past what is stored: after a batch it is the lastUpdate of the
  newest row written so far (all older window deals are stored by then); after the last batch
  the newest deal of the window;
* it never moves beyond the server's clock (future lastUpdate values clamp to "now") and never
  backwards; a stored watermark in the future is treated as "now";
* the overlap window re-reads deals with a lastUpdate equal to (or a little older than) the
  watermark, so equal timestamps and unsorted pages lose nothing (nothing in Keepa sorts by
  lastUpdate; sortType 1 is deal age);
* low tokens mean waiting (the bucket), never skipping; a failed run leaves the watermark where
  it was, and the rows it did write are simply found unchanged next time.

"Now" is the server's clock from the /deal response (Keepa minutes are server time), so a
simulator with a fast clock and the real API behave alike. The first run, without a watermark,
looks back INITIAL_LOOKBACK_S; older deals are the backfiller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from keepa_deals.backfiller import LAST_PAGE_INDEX
from keepa_deals.constants import PRIORITY_UPSERTER, TASK_UPSERT, UPSERT_LOCK
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.task_runtime import TaskRun, TaskSpec, celery_task, local_runner

WATERMARK_STATE = "upsert_watermark"
SPEC = TaskSpec(TASK_UPSERT, UPSERT_LOCK, PRIORITY_UPSERTER)
NEWEST_FIRST = 1  # sortType 1: deal age, newest first
OVERLAP_S = 10 * 60
INITIAL_LOOKBACK_S = 60 * 60


# --------------------------------------------------------------------------- watermark rules

def window_start(watermark: int | None, now: int) -> int:
    """Deals with lastUpdate >= this are (re)considered; a future watermark counts as now."""
    if watermark is None:
        return now - INITIAL_LOOKBACK_S
    return min(watermark, now) - OVERLAP_S


def advance_watermark(watermark: int | None, stored_up_to: int, now: int) -> int:
    """The watermark once every window deal with lastUpdate <= `stored_up_to` is stored."""
    candidate = min(stored_up_to, now)
    if watermark is None:
        return candidate
    return max(min(watermark, now), candidate)


def page_is_older(records: Iterable[DealRecord], start: int) -> bool:
    """True when every deal of the page is older than the window (an empty page too)."""
    return all(r.last_update_at < start for r in records)


def newest_per_asin(records: Iterable[DealRecord]) -> list[DealRecord]:
    """One record per ASIN, the one with the latest lastUpdate."""
    newest: dict[str, DealRecord] = {}
    for record in records:
        kept = newest.get(record.asin)
        if kept is None or record.last_update_at > kept.last_update_at:
            newest[record.asin] = record
    return list(newest.values())


# --------------------------------------------------------------------------- the task

def upsert_recent(run: TaskRun) -> bool:
    """Write the window's new or changed deals with the watermark; True when all are stored."""
    watermark = run.load_state(WATERMARK_STATE)
    selection = {**run.selection, "sortType": NEWEST_FIRST}

    def fetch(number: int) -> tuple[ParsedPage, int]:
        run.progress(f"reading recent deals, page {number}")
        return run.fetch_deal_page(selection, number)

    window, now = read_window(fetch, watermark)
    if not window:
        return True
    stored = run.stored_versions(r.asin for r in window)
    needed = [r for r in window if is_new_or_changed(r, stored.get(r.asin))]
    run.count("window_deals", len(window))
    written = 0
    for batch, batch_watermark in commit_plan(window, needed, run.batch_size, watermark, now):
        run.progress(f"{written} of {len(needed)} new or changed recent deals written")
        run.commit(run.enrich(batch), WATERMARK_STATE, batch_watermark)
        written += len(batch)
    return True


run_upserter = local_runner(SPEC, upsert_recent)
update_recent_deals = celery_task("keepa_deals.simple_task.update_recent_deals", SPEC,
                                  upsert_recent)


def read_window(fetch: Callable[[int], tuple[ParsedPage, int]],
                watermark: int | None) -> tuple[list[DealRecord], int]:
    """Page newest-first until a page lies wholly before the window (or the last page).

    `fetch(page)` returns the parsed page and the server clock. Returns the window's deals,
    one per ASIN, oldest first, and the server clock of the first page ("now").
    """
    collected: list[DealRecord] = []
    start = now = None
    for number in range(LAST_PAGE_INDEX + 1):
        page, server_now = fetch(number)
        if start is None:
            now, start = server_now, window_start(watermark, server_now)
        collected.extend(page.records)
        if page.is_last_page or page_is_older(page.records, start):
            break
    recent = [r for r in newest_per_asin(collected) if r.last_update_at >= start]
    recent.sort(key=lambda r: (r.last_update_at, r.asin))
    return recent, now


def is_new_or_changed(record: DealRecord, stored: tuple | None) -> bool:
    """True when the deals table lacks the ASIN or holds an older lastUpdate."""
    return stored is None or record.last_update_at > stored[0]


def commit_plan(window: list[DealRecord], needed: list[DealRecord],
                batch_size: Callable[[], int], watermark: int | None,
                now: int) -> Iterator[tuple[list[DealRecord], int]]:
    """The (batch, watermark) pairs to commit in order, each pair in one transaction.

    `window` is oldest first and `needed` its sub-list not stored yet; `batch_size()` is asked
    before each batch (the refill rate may change mid-run). After a batch, every window deal up
    to the batch's last lastUpdate is stored (older ones were stored or written before), so the
    watermark may move there; after the last batch, to the window's newest.
    """
    start = 0
    while start < len(needed):
        batch = needed[start:start + batch_size()]
        start += len(batch)
        covered = (window[-1] if start >= len(needed) else batch[-1]).last_update_at
        watermark = advance_watermark(watermark, covered, now)
        yield batch, watermark
    if not needed:
        yield [], advance_watermark(watermark, window[-1].last_update_at, now)
