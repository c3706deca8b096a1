"""The deals page's SQL: which plan SQLite picks for each query shape, and that both plans (sort
index driving, or matches found first and then sorted) return the rows a plain query returns.

Plans are checked with EXPLAIN QUERY PLAN on a small migrated database (the shape, not timing:
on 1 000 000 rows the wrong shape costs seconds).
"""

from __future__ import annotations

import sqlite3

import pytest
from dashboard_helpers import insert_deals, synthetic_deals

from keepa_deals import db
from keepa_deals.web import deal_query
from keepa_deals.web.deal_query import COLUMNS_BY_KEY, SELECT_COLUMNS, DealQuery

pytestmark = pytest.mark.timeout(30)

NOW = 1_780_000_000
DEALS = 1500
# Query shapes of the deals page: (URL arguments, the index the sort-driven plan walks).
SORT_DRIVEN = (
    ({}, "deals_first_seen_at"),
    ({"sort": "price", "dir": "asc"}, "deals_current_cents_asin"),
    ({"sort": "price", "dir": "asc", "min_drop": "30", "category": "Electronics",
      "min_price": "10"}, "deals_current_cents_asin"),
    ({"sort": "rank", "category": "Books"}, "deals_sales_rank_asin"),
    ({"sort": "rating", "category": "172282"}, "deals_rating_asin"),
    ({"sort": "drop", "category": "Books", "min_rank": "1000", "max_rank": "90000"},
     "deals_delta_percent_asin"),
    ({"sort": "updated", "min_price": "100", "max_price": "100.20"}, "deals_last_update_at"),
    ({"q": "wireless"}, "deals_first_seen_at"),
    ({"q": "lamp", "sort": "title", "dir": "asc"}, "deals_title_asin"),
)


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "deals.db"
    writer = db.connect(path)
    db.migrate(writer)
    insert_deals(writer, synthetic_deals(DEALS, now=NOW))
    writer.close()
    reader = db.readonly_connect(path)
    yield reader
    reader.close()


def plan(conn: sqlite3.Connection, sql_and_params: tuple[str, list]) -> list[str]:
    sql, params = sql_and_params
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def plain_page(conn: sqlite3.Connection, query: DealQuery) -> list[str]:
    """The page's ASINs by the plainest SQL (no plan hints)."""
    column = COLUMNS_BY_KEY[query.sort]
    sql_dir = "ASC" if (query.direction == "asc") != column.inverted else "DESC"
    where, params = query.where()
    rows = conn.execute(f"SELECT asin FROM deals{where} ORDER BY {column.sql} {sql_dir} "
                        f"NULLS LAST, asin {sql_dir} LIMIT ? OFFSET ?",
                        (*params, query.per_page, (query.page - 1) * query.per_page))
    return [asin for (asin,) in rows]


@pytest.mark.parametrize(("args", "index"), SORT_DRIVEN)
def test_unfiltered_or_crowded_queries_walk_the_sort_index_without_sorting(conn, args, index):
    steps = plan(conn, DealQuery.parse(args).page_sql())
    assert steps[0].startswith(("SCAN deals USING INDEX", "SEARCH deals USING INDEX")), steps
    assert f" INDEX {index}" in steps[0], steps
    assert "USE TEMP B-TREE FOR ORDER BY" not in steps, steps  # at most ties are sorted


@pytest.mark.parametrize(("args", "index"), SORT_DRIVEN)
def test_few_matches_are_fetched_by_rowid_then_sorted(conn, args, index):
    steps = plan(conn, DealQuery.parse(args).page_sql([1, 2, 3]))
    assert steps[0] == "SEARCH deals USING INTEGER PRIMARY KEY (rowid=?)", steps
    assert not any(index in step for step in steps), steps
    assert "USE TEMP B-TREE FOR ORDER BY" in steps


def test_title_search_counts_matches_on_the_covering_title_index(conn):
    steps = plan(conn, DealQuery.parse({"q": "nothing like this", "sort": "price"}).match_sql())
    assert steps == ["SCAN deals USING COVERING INDEX deals_title_asin"]


def test_category_filter_counts_matches_on_its_own_index(conn):
    steps = plan(conn, DealQuery.parse({"category": "Books", "sort": "rank"}).match_sql())
    assert steps == ["SEARCH deals USING COVERING INDEX deals_category_name_asin "
                     "(category_name=?)"]


@pytest.mark.parametrize("args", [
    {"q": "nothing like this"},
    {"q": "1"},
    {"q": "wireless", "sort": "price", "dir": "asc", "page": "3", "per_page": "25"},
    {"category": "Books", "sort": "rank", "page": "2"},
    {"category": "Books", "sort": "rank", "dir": "asc", "page": "2"},
    {"min_drop": "80", "sort": "drop", "dir": "asc"},
    {"sort": "rating", "min_price": "20", "max_price": "60", "page": "2", "per_page": "25"},
])
@pytest.mark.parametrize("cap", [20, deal_query.COUNT_CAP])
def test_both_plans_return_the_plain_querys_page_and_count(conn, monkeypatch, args, cap):
    """With a cap of 20 most shapes take the sort-driven plan, with the real cap the
    matches-first one; the rows and the (capped) count must not depend on it."""
    monkeypatch.setattr(deal_query, "COUNT_CAP", cap)
    query = DealQuery.parse(args)
    rows, matches, capped = query.page_of(conn)
    assert [row["asin"] for row in rows] == plain_page(conn, query)
    where, params = query.where()
    exact = conn.execute(f"SELECT COUNT(*) FROM deals{where}", params).fetchone()[0]
    assert (matches, capped) == (min(exact, cap), exact > cap)
    assert not conn.in_transaction


def test_unfiltered_page_leaves_the_count_to_the_caller(conn):
    rows, matches, capped = DealQuery.parse({"sort": "asin", "dir": "asc"}).page_of(conn)
    assert (matches, capped) == (None, False)
    assert [row["asin"] for row in rows] == [f"B{n:09d}" for n in range(50)]
    assert set(rows[0].keys()) == {name.strip() for name in SELECT_COLUMNS.split(",")}
