"""The deals page's SQL plans on both backends: every page of every order is one range of the
sort column's index walked in order (no sort step), a bounded walk finds its end on the index
alone, a crowded filter walks the sort index, few matches are fetched by id and sorted, the
title search counts on its own index (SQLite FTS5 trigram, PostgreSQL pg_trgm), and SQLite's
count lets the most selective filter's index list the candidates.

Plans are read with EXPLAIN QUERY PLAN (SQLite) and EXPLAIN (PostgreSQL) on a 20 000-deal store
with fresh statistics: the shape, not timing (on 1 000 000 rows the wrong shape costs seconds;
bench/bench_dashboard.py measures the time).
"""

from __future__ import annotations

import pytest
from dashboard_helpers import fill_store, synthetic_deals

from keepa_deals import db
from keepa_deals.web import deal_query
from keepa_deals.web.deal_query import (
    COLUMNS,
    DIALECTS,
    PLAN_INDEX,
    PLAN_MATCHES,
    PLAN_WALK,
    DealQuery,
    Pager,
    Position,
)

pytestmark = pytest.mark.timeout(120)

NOW = 1_780_000_000
DEALS = 20_000
SMALL_WALK = 50  # WALK_CAP for the bounded walks: well inside every segment of 20 000 deals
ORDERS = [(column.key, direction) for column in COLUMNS for direction in ("asc", "desc")]
CROWDED = (
    {"sort": "price", "dir": "asc", "min_drop": "30", "category": "Electronics",
     "min_price": "10"},
    {"sort": "rank", "category": "Books"},
    {"sort": "rating", "category": "172282"},
    {"sort": "drop", "category": "Books", "min_rank": "1000", "max_rank": "900000"},
    {"q": "wireless"},
    {"q": "lamp", "sort": "title", "dir": "asc"},
)


@pytest.fixture(scope="module")
def conn(module_store):
    fill_store(module_store, synthetic_deals(DEALS, now=NOW))
    reader = db.readonly_connect(module_store)
    yield reader
    reader.close()


def explain(conn, sql_and_params: tuple[str, list]) -> str:
    """The plan as text, one step or node per line."""
    sql, params = sql_and_params
    if db.is_postgres(conn):
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params))
    return "\n".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def sorts(plan: str) -> bool:
    return "USE TEMP B-TREE" in plan or "Sort" in plan


def sort_index(conn, sql_column: str) -> str:
    """The index that orders `sql_column` (with asin as the tie-breaker)."""
    if sql_column == "asin":
        return "deals_pkey" if db.is_postgres(conn) else "sqlite_autoindex_deals_1"
    return f"deals_{sql_column}_asin"


def pager(conn, args: dict, kind: str, **options) -> Pager:
    return Pager(DealQuery.parse(args), DIALECTS[db.dialect(conn)], kind, conn=conn, **options)


def bounded_to_the_sort_index(plan: str, index: str) -> bool:
    """PostgreSQL: the rows come from a range of the sort index bounded by a position (a
    planner may sort such a range when it estimates it small: bounded work either way)."""
    return index in plan and "Seq Scan" not in plan and "ROW(" in plan


def early_positions(conn, walk: Pager, segment) -> list:
    """The starts of a segment's walk checked: its beginning and the 100th row, as a page
    after the first one starts (a planner sees most of the segment still ahead)."""
    rows = conn.execute(*walk.segment_sql(segment, None, None, 100)).fetchall()
    return [None, walk.query.position(rows[-1])] if len(rows) == 100 else [None]


@pytest.mark.parametrize(("sort", "direction"), ORDERS)
@pytest.mark.parametrize("forward", [True, False], ids=["next", "previous"])
def test_every_page_of_every_order_walks_its_sort_index_without_sorting(conn, sort, direction,
                                                                       forward):
    walk = pager(conn, {"sort": sort, "dir": direction}, PLAN_INDEX)
    index = sort_index(conn, walk.query.column.sql)
    for segment, _ in walk.segments(forward, None):
        for start in early_positions(conn, walk, segment):
            plan = explain(conn, walk.segment_sql(segment, start, None, 51))
            assert f"INDEX {index}" in plan or f"using {index}" in plan, plan
            assert not sorts(plan), plan


@pytest.mark.parametrize(("sort", "direction"), ORDERS)
def test_a_bounded_walk_finds_its_end_on_the_index_alone(conn, monkeypatch, sort, direction):
    monkeypatch.setattr(deal_query, "WALK_CAP", SMALL_WALK)
    walk = pager(conn, {"sort": sort, "dir": direction, "min_drop": "10"}, PLAN_WALK)
    index = sort_index(conn, walk.query.column.sql)
    for segment, start in walk.segments(True, None):
        plan = explain(conn, walk.end_sql(segment, start))
        assert (f"COVERING INDEX {index}" in plan
                or f"Index Only Scan using {index}" in plan
                or f"Index Only Scan Backward using {index}" in plan), plan
        assert not sorts(plan), plan


@pytest.mark.parametrize("args", CROWDED)
def test_a_crowded_filter_walks_the_sort_index_up_to_the_bound(conn, monkeypatch, args):
    """More than COUNT_CAP matches: the sort index drives between the cursor and the end
    of the bounded walk; the filters are checked row by row."""
    monkeypatch.setattr(deal_query, "WALK_CAP", SMALL_WALK)
    walk = pager(conn, args, PLAN_WALK)
    index = sort_index(conn, walk.query.column.sql)
    segment, start = walk.segments(True, None)[0]
    end = conn.execute(*walk.end_sql(segment, start)).fetchone()
    plan = explain(conn, walk.segment_sql(segment, start, Position(*end, inclusive=True), 51))
    if db.is_postgres(conn):
        assert bounded_to_the_sort_index(plan, index), plan
    else:
        assert f"INDEX {index}" in plan and not sorts(plan), plan


@pytest.mark.parametrize("args", CROWDED)
def test_few_matches_are_fetched_by_id_then_sorted(conn, args):
    """At most COUNT_CAP matches: fetched by rowid (SQLite) or ASIN into a CTE (PostgreSQL)
    and sorted; walking the sort index would visit every row to find few."""
    ids = [5, 17, 300] if not db.is_postgres(conn) else ["B000000005", "B000000017"]
    fetch = pager(conn, args, PLAN_MATCHES, ids=ids)
    segment, start = fetch.segments(True, None)[0]
    plan = explain(conn, fetch.segment_sql(segment, start, None, 51))
    if db.is_postgres(conn):
        assert "CTE matches" in plan and "Index Cond: (asin = ANY" in plan, plan
    else:
        assert plan.startswith("SEARCH deals USING INTEGER PRIMARY KEY (rowid=?)"), plan
    assert sorts(plan), plan


@pytest.mark.parametrize("q", ["lamp 12", "nothing like this", "Wireless Mini"])
def test_title_search_lists_its_matches_on_the_trigram_index(conn, q):
    counter = pager(conn, {"q": q}, PLAN_MATCHES)
    driver = counter.driver()
    plan = explain(conn, counter.match_sql(driver))
    if db.is_postgres(conn):
        assert driver is None
        assert "Bitmap Index Scan on deals_category_title_trgm" in plan, plan
    else:
        assert driver == "title"
        assert plan.startswith("SCAN deals_title_fts VIRTUAL TABLE INDEX 0:M"), plan
        assert "SEARCH deals USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan


def test_postgresql_intersects_a_category_and_a_search_in_one_index_scan(conn):
    """A broad word in one category: the GIN index holds both, so PostgreSQL reads only the
    deals having both instead of filtering every deal with the word."""
    if not db.is_postgres(conn):
        return
    counter = pager(conn, {"q": "wireless", "category": "Books"}, PLAN_MATCHES)
    plan = explain(conn, counter.match_sql(counter.driver()))
    assert "Bitmap Index Scan on deals_category_title_trgm" in plan, plan
    assert "Index Cond: ((category_name = 'Books'::text) AND" in plan, plan


@pytest.mark.parametrize(("args", "driver", "index"), [
    ({"category": "Books", "max_rank": "1000"}, "sales_rank", "deals_sales_rank_asin"),
    ({"q": "lamp 12", "category": "Books"}, "title", "deals_title_fts"),
    ({"category": "Books", "min_drop": "88"}, "delta_percent", "deals_delta_percent_asin"),
    ({"min_price": "400", "category": "Books", "q": "wireless"}, "current_cents",
     "deals_current_cents_asin"),
])
def test_sqlite_lets_the_most_selective_filter_list_the_candidates(conn, args, driver, index):
    """SQLite knows no value ranges: it would walk every deal of a category instead of a
    narrow rank range. The filter with the fewest candidates on its own index drives."""
    counter = pager(conn, args, PLAN_MATCHES)
    if db.is_postgres(conn):
        assert counter.driver() is None, "PostgreSQL's planner has range statistics"
        return
    assert counter.driver() == driver
    assert index in explain(conn, counter.match_sql(driver)).split("\n")[0]


def test_sqlite_leaves_the_choice_to_itself_when_every_filter_is_broad(conn, monkeypatch):
    monkeypatch.setattr(deal_query, "PROBE_CAP", 100)
    counter = pager(conn, {"category": "Books", "min_drop": "10", "q": "wireless"},
                    PLAN_MATCHES)
    if db.is_postgres(conn):
        return
    assert counter.driver() is None
    assert explain(conn, counter.match_sql(None)) == \
        "SEARCH deals USING INDEX deals_category_name_asin (category_name=?)"


def test_the_plan_follows_the_number_of_matches(conn, monkeypatch):
    assert Pager.plan(DealQuery.parse({"sort": "price"}), conn).kind == PLAN_INDEX
    few = Pager.plan(DealQuery.parse({"q": "lamp 12"}), conn)
    assert (few.kind, few.matches, few.capped) == (PLAN_MATCHES, len(few.ids), False)
    monkeypatch.setattr(deal_query, "COUNT_CAP", len(few.ids) - 1)
    many = Pager.plan(DealQuery.parse({"q": "lamp 12"}), conn)
    assert (many.kind, many.matches, many.capped) == (PLAN_WALK, len(few.ids) - 1, True)
