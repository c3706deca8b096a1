"""The upserter's watermark rules and the backfill cursor, as pure functions (no servers).

Pages are built from DealRecords sorted by creationDate like sortType 1 (or deliberately not),
with lastUpdate scattered, equal timestamps and timestamps in the future of the server clock
(FAILURES D1–D4, D6).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from keepa_deals.backfiller import LAST_PAGE_INDEX, Cursor
from keepa_deals.constants import DEAL_PAGE_SIZE, DEAL_RESULT_CACHE_MS, SCAN_TOKEN_SHARE
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.simple_task import (
    INITIAL_LOOKBACK_S,
    OVERLAP_S,
    advance_watermark,
    cache_wait_ms,
    is_new_or_changed,
    never_enriched,
    read_window,
    window_start,
)

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000


def deal(asin: str, created: int, last_update: int | None = None) -> DealRecord:
    """A deal created at `created` whose lastUpdate is `last_update` (default: `created`)."""
    return DealRecord(
        asin=asin, domain_id=1, title=None, image_url=None, root_category=None, categories=(),
        category_name=None, brand=None, price_type=2, current_cents=1000, avg_cents=None,
        delta_cents=None, delta_percent=None, amazon_cents=None, new_cents=None, used_cents=None,
        list_price_cents=None, sales_rank=None, rating=None, review_count=None,
        offer_count_new=None, offer_count_used=None, deal_created_at=created,
        last_update_at=created if last_update is None else last_update)


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

def test_paging_stops_at_the_first_page_created_before_the_window_however_updates_scatter():
    watermark = NOW - 3_600
    start = watermark - OVERLAP_S
    rng = random.Random(5)
    created = sorted((NOW - rng.randint(0, 40_000) for _ in range(6 * DEAL_PAGE_SIZE)),
                     reverse=True)  # sortType 1: newest creationDate first
    records = [deal(f"S{i:04d}", c, max(c, NOW - rng.randint(0, 600)))  # all updated recently
               for i, c in enumerate(created)]
    pages = [page_of(records[n:n + DEAL_PAGE_SIZE], full=True)
             for n in range(0, len(records), DEAL_PAGE_SIZE)]
    fetch, fetched = scripted(pages)
    window, _ = read_window(fetch, watermark)
    new = sum(1 for c in created if c >= start)
    assert len(fetched) <= 1 + -(-new // DEAL_PAGE_SIZE), "sorted pages: no extra page"
    assert fetched == list(range(len(fetched)))
    assert pages[fetched[-1]].records[-1].deal_created_at < start, "it stopped where it ends"
    assert {r.asin for r in window} == {r.asin for r in records if r.deal_created_at >= start}


def test_a_page_that_ends_in_the_window_is_followed_by_the_next():
    watermark = NOW - 3_600
    start = watermark - OVERLAP_S
    pages = [page_of([deal("N1", NOW), deal("N2", start)], full=True),  # sorted, ends in it
             page_of([deal("N3", start), deal("O1", start - 1)], full=True),
             page_of([deal("O2", start - 2)], full=True)]
    fetch, fetched = scripted(pages)
    window, _ = read_window(fetch, watermark)
    assert fetched == [0, 1] and {r.asin for r in window} == {"N1", "N2", "N3"}


def test_unsorted_pages_are_read_until_a_page_lies_wholly_before_the_window():
    watermark = NOW - 3_600
    start = watermark - OVERLAP_S
    pages = [
        page_of([deal("A1", NOW - 10), deal("A2", start - 999), deal("A3", NOW - 5)], full=True),
        # all but one created before the window: paging must go on past this page
        page_of([deal("B1", start - 1), deal("B2", start), deal("B3", start - 5000)], full=True),
        page_of([deal("C1", start - 1, NOW), deal("C2", start - 2, NOW)], full=True),
        page_of([deal("D1", NOW)], full=True),  # never reached
    ]
    fetch, fetched = scripted(pages)
    window, now = read_window(fetch, watermark)
    assert fetched == [0, 1, 2]
    assert now == NOW
    assert [r.asin for r in window] == ["B2", "A1", "A3"]


def test_window_is_oldest_created_first_one_record_per_asin():
    pages = [page_of([deal("X", NOW - 30), deal("Y", NOW - 40), deal("X", NOW - 30, NOW - 20),
                      deal("Z", NOW - 40)], full=False)]
    fetch, _ = scripted(pages)
    window, _ = read_window(fetch, NOW - 100)
    assert [(r.asin, r.last_update_at) for r in window] == [
        ("Y", NOW - 40), ("Z", NOW - 40), ("X", NOW - 20)]


def test_a_deal_without_creation_date_counts_by_its_last_update():
    undated = replace(deal("U", 0), deal_created_at=None, last_update_at=NOW - 60)
    fetch, fetched = scripted([page_of([undated], full=True), page_of([], full=False)])
    window, _ = read_window(fetch, NOW - 100)
    assert [r.asin for r in window] == ["U"] and fetched == [0, 1]


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


# --------------------------------------------------------------------------- what gets enriched

def test_only_never_enriched_window_deals_are_enriched_by_the_upserter():
    window = [deal("N1", NOW - 50), deal("C1", NOW - 40, NOW - 5), deal("F1", NOW - 30),
              deal("R1", NOW - 20, NOW - 10)]
    stored = {"C1": (NOW - 30, NOW - 30),  # enriched, lastUpdate moved: the backfiller's
              "F1": (NOW - 30, NOW - 25),  # enriched, unchanged
              "R1": (NOW - 2, None)}  # stored by the scan with a newer lastUpdate, never enriched
    queued = never_enriched(window, stored)
    assert [(q.asin, q.reason, q.last_update_at) for q in queued] == [
        ("N1", "new", NOW - 50), ("R1", "new", NOW - 2)]


# --------------------------------------------------------------------------- backfill cursor

def test_cursor_moves_page_by_page_then_to_the_next_sweep():
    full = page_of([deal(f"F{i}", NOW) for i in range(140)], full=True)  # 10 malformed
    last = page_of([deal(f"L{i}", NOW) for i in range(30)], full=False)
    cursor = Cursor(sweep_id=3, page=1, sweep_started_at=NOW - 99, last_sweep_started_at=NOW - 500)
    assert cursor.listed_since == NOW - 500
    cursor = cursor.after(full, now=NOW)
    assert (cursor.sweep_id, cursor.page, cursor.sweep_started_at) == (3, 2, NOW - 99)
    cursor = cursor.after(last, now=NOW + 7)
    assert (cursor.sweep_id, cursor.page) == (4, 0)
    assert cursor.sweep_started_at == cursor.last_sweep_finished_at == NOW + 7
    assert cursor.last_sweep_started_at == cursor.listed_since == NOW - 99
    assert cursor.last_sweep_pages == 3


def test_cursor_ends_a_sweep_at_the_query_cap():
    full = page_of([deal("F", NOW)], full=True)
    cursor = Cursor(sweep_id=1, page=LAST_PAGE_INDEX, sweep_started_at=NOW).after(full, now=NOW)
    assert (cursor.sweep_id, cursor.page) == (2, 0)


def test_cursor_state_round_trips_and_starts_a_first_sweep():
    cursor = Cursor(sweep_id=2, page=7, sweep_started_at=NOW, last_sweep_pages=9)
    assert Cursor.from_state(cursor.to_state(), now=0) == cursor
    first = Cursor.from_state(None, now=NOW)
    assert (first.sweep_id, first.page, first.sweep_started_at) == (1, 0, NOW)
    assert first.listed_since == 0, "before the first sweep ends every stored deal is listed"
    legacy = Cursor.from_state({"sweep_id": 4, "page": 2, "index": 30}, now=NOW)
    assert (legacy.sweep_id, legacy.page) == (4, 2), "a cursor of the previous version resumes"


def test_enrichment_earns_its_share_of_the_sweep_across_runs():
    page = page_of([deal("P", NOW)], full=True)
    cursor = Cursor(sweep_id=1, sweep_started_at=NOW)
    for _ in range(12):  # 12 pages of 5 tokens: 60 page tokens, 20 earned at a 75 % share
        cursor = cursor.after(page, now=NOW, page_tokens=5)
    assert cursor.enrichment_allowance(0) == pytest.approx(60 * (1 - SCAN_TOKEN_SHARE)
                                                            / SCAN_TOKEN_SHARE)
    cursor = cursor.after(page, now=NOW, page_tokens=5, enrich_tokens=20)
    assert Cursor.from_state(cursor.to_state(), now=0) == cursor, "the split survives a restart"
    assert cursor.enrichment_allowance(unsaved_enrich_tokens=3) == pytest.approx(
        65 * (1 - SCAN_TOKEN_SHARE) / SCAN_TOKEN_SHARE - 20 - 3)
    last = page_of([deal("L", NOW)], full=False)
    fresh = cursor.after(last, now=NOW, page_tokens=5)
    assert (fresh.page_tokens, fresh.enrich_tokens) == (0, 0), "a new sweep starts even"


def test_the_newest_page_is_read_again_once_keepas_cached_result_expired():
    now_ms = NOW * 1000
    assert cache_wait_ms(None, now_ms) == 0
    assert cache_wait_ms(now_ms - DEAL_RESULT_CACHE_MS, now_ms) == 0
    assert cache_wait_ms(now_ms - 30_000, now_ms) == DEAL_RESULT_CACHE_MS - 30_000
    assert cache_wait_ms(now_ms + 50_000, now_ms) == DEAL_RESULT_CACHE_MS, "future = now"
