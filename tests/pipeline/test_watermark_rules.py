"""The upserter's watermark rules and the backfill cursor, as pure functions (no servers).

Pages are built from DealRecords, deliberately unsorted by lastUpdate, with equal timestamps and
timestamps in the future of the server clock (FAILURES D1–D4, D6).
"""

from __future__ import annotations

import random

import pytest

from keepa_deals.backfiller import LAST_PAGE_INDEX, Cursor
from keepa_deals.constants import DEAL_PAGE_SIZE
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.simple_task import (
    INITIAL_LOOKBACK_S,
    OVERLAP_S,
    advance_watermark,
    commit_plan,
    is_new_or_changed,
    read_window,
    window_start,
)

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000


def deal(asin: str, last_update: int) -> DealRecord:
    return DealRecord(
        asin=asin, domain_id=1, title=None, image_url=None, root_category=None, categories=(),
        category_name=None, brand=None, price_type=2, current_cents=1000, avg_cents=None,
        delta_cents=None, delta_percent=None, amazon_cents=None, new_cents=None, used_cents=None,
        list_price_cents=None, sales_rank=None, rating=None, review_count=None,
        offer_count_new=None, offer_count_used=None, deal_created_at=None,
        last_update_at=last_update)


def page_of(records: list[DealRecord], *, full: bool) -> ParsedPage:
    """A page; `full` pads the deal count to 150 with malformed entries (not the last page)."""
    padding = [f"#{i} (asin ?): padding" for i in range(DEAL_PAGE_SIZE - len(records))]
    return ParsedPage(list(records), padding if full else [])


def scripted(pages: list[ParsedPage], now: int = NOW):
    fetched: list[int] = []

    def fetch(number: int):
        fetched.append(number)
        return pages[number], now

    return fetch, fetched


# --------------------------------------------------------------------------- window rules

def test_window_reaches_back_an_overlap_before_the_watermark():
    assert window_start(NOW - 100, NOW) == NOW - 100 - OVERLAP_S
    assert window_start(None, NOW) == NOW - INITIAL_LOOKBACK_S


def test_a_watermark_in_the_future_counts_as_now():
    assert window_start(NOW + 86_400, NOW) == NOW - OVERLAP_S


def test_watermark_never_passes_the_server_clock_nor_moves_back():
    assert advance_watermark(None, NOW + 5_000, NOW) == NOW
    assert advance_watermark(NOW - 10, NOW - 500, NOW) == NOW - 10
    assert advance_watermark(NOW - 500, NOW - 10, NOW) == NOW - 10
    assert advance_watermark(NOW + 9_999, NOW - 10, NOW) == NOW  # a future one is repaired


def test_only_newer_versions_are_written_again():
    record = deal("B000000001", NOW - 60)
    assert is_new_or_changed(record, None)
    assert is_new_or_changed(record, (NOW - 120, None))
    assert not is_new_or_changed(record, (NOW - 60, NOW - 30))
    assert not is_new_or_changed(record, (NOW, NOW))


# --------------------------------------------------------------------------- paging

def test_unsorted_pages_are_read_until_a_page_lies_wholly_before_the_window():
    watermark = NOW - 3_600
    start = watermark - OVERLAP_S
    pages = [
        page_of([deal("A1", NOW - 10), deal("A2", start - 999), deal("A3", NOW - 5)], full=True),
        # all but one older than the window: paging must go on past this page
        page_of([deal("B1", start - 1), deal("B2", start), deal("B3", start - 5000)], full=True),
        page_of([deal("C1", start - 1), deal("C2", start - 2)], full=True),
        page_of([deal("D1", NOW)], full=True),  # never reached
    ]
    fetch, fetched = scripted(pages)
    window, now = read_window(fetch, watermark)
    assert fetched == [0, 1, 2]
    assert now == NOW
    assert [r.asin for r in window] == ["B2", "A1", "A3"]


def test_window_is_oldest_first_one_record_per_asin():
    pages = [page_of([deal("X", NOW - 30), deal("Y", NOW - 40), deal("X", NOW - 20),
                      deal("Z", NOW - 40)], full=False)]
    fetch, _ = scripted(pages)
    window, _ = read_window(fetch, NOW - 100)
    assert [(r.asin, r.last_update_at) for r in window] == [
        ("Y", NOW - 40), ("Z", NOW - 40), ("X", NOW - 20)]


def test_paging_stops_at_the_last_page_and_at_the_query_cap():
    fetch, fetched = scripted([page_of([deal("A", NOW)], full=False)])
    read_window(fetch, None)
    assert fetched == [0]
    endless = [page_of([deal(f"P{n}", NOW)], full=True) for n in range(LAST_PAGE_INDEX + 5)]
    fetch, fetched = scripted(endless)
    read_window(fetch, None)
    assert fetched == list(range(LAST_PAGE_INDEX + 1))


def test_equal_timestamps_at_the_watermark_are_read_again():
    watermark = NOW - 600
    first = [deal("E1", watermark)]
    late_arrival = deal("E2", watermark)  # same minute, visible only on the next run
    fetch, _ = scripted([page_of([*first, late_arrival], full=False)])
    window, _ = read_window(fetch, watermark)
    assert {r.asin for r in window} == {"E1", "E2"}


# --------------------------------------------------------------------------- commit plans

def stored_after(plan, steps: int, stored: set[str]) -> set[str]:
    done = set(stored)
    for batch, _ in plan[:steps]:
        done |= {r.asin for r in batch}
    return done


@pytest.mark.parametrize("seed", range(40))
def test_a_failure_after_any_batch_never_leaves_an_unstored_deal_behind_the_watermark(seed):
    rng = random.Random(seed)
    old_watermark = rng.choice([None, NOW - 4_000, NOW + 500])
    now = NOW
    start = window_start(old_watermark, now)
    records = [deal(f"R{i:03d}", now - rng.randint(-300, 5_000)) for i in range(60)]
    rng.shuffle(records)
    fetch, _ = scripted([page_of(records, full=False)], now)
    window, _ = read_window(fetch, old_watermark)
    assert window and all(r.last_update_at >= start for r in window)
    stored = {r.asin for r in window if rng.random() < 0.3}
    needed = [r for r in window if r.asin not in stored]
    sizes = iter(rng.randint(1, 12) for _ in range(len(needed)))
    plan = list(commit_plan(window, needed, lambda: next(sizes), old_watermark, now))
    previous = old_watermark
    for steps in range(1, len(plan) + 1):
        watermark = plan[steps - 1][1]
        assert watermark <= now
        if previous is not None:
            assert watermark >= min(previous, now)
        previous = watermark
        done = stored_after(plan, steps, stored)
        skipped = [r.asin for r in window
                   if r.last_update_at < window_start(watermark, now) and r.asin not in done]
        assert skipped == [], f"deals skipped after {steps} commits: {skipped}"
    assert stored_after(plan, len(plan), stored) == {r.asin for r in window}
    newest = min(max(r.last_update_at for r in window), now)
    expected = newest if old_watermark is None else max(min(old_watermark, now), newest)
    assert plan[-1][1] == expected


def test_nothing_to_write_still_moves_the_watermark_over_stored_deals():
    window = [deal("S1", NOW - 50), deal("S2", NOW - 20)]
    assert list(commit_plan(window, [], lambda: 10, NOW - 900, NOW)) == [([], NOW - 20)]


# --------------------------------------------------------------------------- backfill cursor

def test_cursor_moves_within_a_page_then_to_the_next_page_then_to_the_next_sweep():
    full = page_of([deal(f"F{i}", NOW) for i in range(140)], full=True)  # 10 malformed
    last = page_of([deal(f"L{i}", NOW) for i in range(30)], full=False)
    cursor = Cursor(sweep_id=3, page=1, index=0, sweep_started_at=NOW - 99)
    cursor = cursor.after(100, full, now=NOW)
    assert (cursor.sweep_id, cursor.page, cursor.index) == (3, 1, 100)
    cursor = cursor.after(40, full, now=NOW)
    assert (cursor.sweep_id, cursor.page, cursor.index) == (3, 2, 0)
    assert cursor.sweep_started_at == NOW - 99
    cursor = cursor.after(30, last, now=NOW + 7)
    assert (cursor.sweep_id, cursor.page, cursor.index) == (4, 0, 0)
    assert cursor.sweep_started_at == cursor.last_sweep_finished_at == NOW + 7


def test_cursor_survives_a_page_that_shrank_since_the_last_run():
    shrunk = page_of([deal("S", NOW)] * 5, full=True)
    cursor = Cursor(sweep_id=1, page=4, index=120, sweep_started_at=NOW).after(0, shrunk, now=NOW)
    assert (cursor.page, cursor.index) == (5, 0)


def test_cursor_state_round_trips_and_starts_a_first_sweep():
    cursor = Cursor(sweep_id=2, page=7, index=33, sweep_started_at=NOW)
    assert Cursor.from_state(cursor.to_state(), now=0) == cursor
    first = Cursor.from_state(None, now=NOW)
    assert (first.sweep_id, first.page, first.index, first.sweep_started_at) == (1, 0, 0, NOW)
