"""The deals page's results on both backends, against a Python oracle: every order (NULLs
last, ties by ASIN, text by bytes), keyset pages that concatenate to the whole ordered list in
either direction (also when a bounded walk cuts pages short), title search semantics
(case-insensitive for ASCII letters, any substring, wildcards literal), the CSV export's rows,
the title index following writes, and bad cursors answered with 400.

The PostgreSQL database orders text linguistically (module_store): the byte order and the
ASCII-only case folding must come from the queries themselves.
"""

from __future__ import annotations

import csv
import io

import pytest
import requests
from dashboard_helpers import deal_row, fill_store, insert_deals, synthetic_deals

from keepa_deals import db, postgres
from keepa_deals.dashboard import create_app
from keepa_deals.web import deal_query
from keepa_deals.web.deal_query import (
    COLUMNS,
    COLUMNS_BY_KEY,
    BadParameter,
    DealQuery,
    Position,
    encode_cursor,
)

pytestmark = pytest.mark.timeout(120)

NOW = 1_780_000_000
SYNTHETIC = 600
TEXTS = ("apple", "Apple", "APPLE", "Äpfel", "äpfel", "ÄPFEL", "Zebra", "zebra", "éclair",
         "Eclair", "100% cotton", "100 percent", "snake_case lamp", "snake case lamp",
         "back\\slash", 'quote "x" kettle', "kettle", "KETTLE", "Kettle", "日本語 kettle")
CATEGORIES = ("books", "Books", "Ärger", "Zubehör", "zubehör", None)
ORDERS = [(column.key, direction) for column in COLUMNS for direction in ("asc", "desc")]
SEARCHES = ("kettle", "KETTLE", "kEtTlE", "äpf", "ÄPF", "Äpfel", "100%", "e_c", "\\sl",
            '"x" k', "lamp 1", "apple", "本語 k", "nothing like this")
FILTERS = (
    {"min_drop": "40", "sort": "drop", "dir": "desc"},
    {"min_drop": "80", "sort": "price", "dir": "desc"},
    {"category": "Books", "sort": "rank", "dir": "asc"},
    {"category": "172282", "sort": "rating"},
    {"min_price": "20", "max_price": "90.50", "sort": "title", "dir": "asc"},
    {"min_rank": "1000", "max_rank": "900000", "q": "lamp", "sort": "reviews"},
    {"q": "kettle", "sort": "category", "dir": "desc"},
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def crafted_rows() -> list[tuple]:
    """Rows for the edge cases: byte-order texts, missing titles and categories, ties."""
    rows = []
    for number in range(120):
        values = {"title": TEXTS[number % len(TEXTS)] if number % 11 else None,
                  "category_name": CATEGORIES[number % len(CATEGORIES)]}
        if number % 3 == 0:  # ties in every numeric column, broken by ASIN
            values.update(current_cents=1234, avg_cents=2000, delta_percent=-38,
                          sales_rank=777, rating=4.5, review_count=10, offer_count_new=3,
                          last_update_at=NOW - 60, first_seen_at=NOW - 120)
        rows.append(deal_row(f"C{number:09d}", now=NOW, **values))
    return rows


@pytest.fixture(scope="module")
def filled_store(module_store):
    fill_store(module_store, [*synthetic_deals(SYNTHETIC, now=NOW), *crafted_rows()])
    return module_store


@pytest.fixture(scope="module")
def conn(filled_store):
    reader = db.readonly_connect(filled_store)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def everything(conn) -> list[dict]:
    return [dict(row) for row in conn.execute(f"SELECT {deal_query.SELECT_COLUMNS} FROM deals")]


@pytest.fixture
def small_caps(monkeypatch):
    """Caps small enough for 700 deals to take every plan and cut pages short."""
    monkeypatch.setattr(deal_query, "COUNT_CAP", 5)
    monkeypatch.setattr(deal_query, "WALK_CAP", 40)
    monkeypatch.setattr(deal_query, "PROBE_CAP", 30)


# --------------------------------------------------------------------------- the oracle

def ascii_folded(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def matches(deal: dict, query: DealQuery) -> bool:
    """The filters of `query`, in Python."""
    def within(value, low, high) -> bool:
        return value is not None and (low is None or value >= low) and (
            high is None or value <= high)

    cents = [None if v is None else int(v * 100) for v in (query.min_price, query.max_price)]
    if (query.min_price, query.max_price) != (None, None) and not within(
            deal["current_cents"], *cents):
        return False
    if query.min_drop is not None and not within(deal["delta_percent"], None, -query.min_drop):
        return False
    if query.category is not None:
        column = "root_category" if query.category.isdigit() else "category_name"
        wanted = int(query.category) if query.category.isdigit() else query.category
        if deal[column] != wanted:
            return False
    if (query.min_rank, query.max_rank) != (None, None) and not within(
            deal["sales_rank"], query.min_rank, query.max_rank):
        return False
    return query.q is None or (deal["title"] is not None
                               and ascii_folded(query.q) in ascii_folded(deal["title"]))


def expected(everything: list[dict], query: DealQuery) -> list[str]:
    """The ASINs `query` must list, in order: values ascending or descending (text by code
    point, which is UTF-8 byte order), ties by ASIN the same way, missing values last."""
    column = query.column.sql
    found = [deal for deal in everything if matches(deal, query)]
    present = sorted((d for d in found if d[column] is not None),
                     key=lambda d: (d[column], d["asin"]), reverse=not query.ascending)
    missing = sorted((d for d in found if d[column] is None), key=lambda d: d["asin"],
                     reverse=not query.ascending)
    return [deal["asin"] for deal in present + missing]


# --------------------------------------------------------------------------- walking pages

def forward_pages(conn, args: dict) -> list:
    """Every page from the first, following the Next cursors."""
    pages = [DealQuery.parse(args).page_of(conn)]
    while pages[-1].next_cursor is not None:
        query = DealQuery.parse(args)
        pages.append(DealQuery.parse(query.next_args(pages[-1].label, pages[-1].next_cursor)
                                     ).page_of(conn))
        assert len(pages) < 1000, "the walk ends"
    assert not conn.in_transaction
    return pages


def backward_asins(conn, args: dict, last) -> list[str]:
    """The ASINs met from page `last` back to the first page, following the Previous
    cursors (as before= pages; the first page may overlap the one after it)."""
    collected = [row["asin"] for row in last.rows]
    page = last
    while page.prev_cursor is not None:
        query = DealQuery.parse(args)
        page = DealQuery.parse(query.args(page=max(2, page.label - 1), after=None,
                                          before=page.prev_cursor)).page_of(conn)
        collected = [row["asin"] for row in page.rows if row["asin"] not in collected] \
            + collected
        assert len(collected) <= 10_000
    return collected


def asins(pages) -> list[str]:
    return [row["asin"] for page in pages for row in page.rows]


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize(("sort", "direction"), ORDERS)
def test_every_order_pages_through_the_whole_table_in_both_directions(conn, everything, sort,
                                                                     direction):
    args = {"sort": sort, "dir": direction, "per_page": "25"}
    want = expected(everything, DealQuery.parse(args))
    pages = forward_pages(conn, args)
    assert asins(pages) == want
    assert [page.label for page in pages] == list(range(1, len(pages) + 1))
    assert all(len(page.rows) == 25 for page in pages[:-1])
    assert backward_asins(conn, args, pages[-1]) == want


def test_text_orders_by_bytes_and_missing_values_go_last(conn, everything):
    rows = asins(forward_pages(conn, {"sort": "title", "dir": "asc", "per_page": "200"}))
    titles = {deal["asin"]: deal["title"] for deal in everything}
    shown = [titles[asin] for asin in rows]
    present = [t for t in shown if t is not None]
    assert present == sorted(present), "code point (UTF-8 byte) order"
    assert present.index("APPLE") < present.index("Apple") < present.index("Zebra") \
        < present.index("apple") < present.index("Äpfel") < present.index("éclair")
    assert shown[len(present):] == [None] * (len(shown) - len(present))


@pytest.mark.parametrize("args", FILTERS)
@pytest.mark.parametrize("caps", ["real", "small"])
def test_filtered_pages_concatenate_to_the_filtered_order(conn, everything, request, args,
                                                         caps):
    """Real caps: few matches, fetched then sorted. Small caps: the bounded walk of the sort
    index, whose pages may be cut short; no row is lost or repeated either way."""
    if caps == "small":
        request.getfixturevalue("small_caps")
    args = {**args, "per_page": "25"}
    want = expected(everything, DealQuery.parse(args))
    assert want, "the filter matches something"
    pages = forward_pages(conn, args)
    assert asins(pages) == want
    assert backward_asins(conn, args, pages[-1]) == want
    first = pages[0]
    assert (first.matches, first.capped) == ((5, True) if caps == "small" and len(want) > 5
                                             else (len(want), False))


def test_a_walk_against_the_filter_is_cut_and_continued(conn, everything, small_caps):
    """Drops of 80 % or more are cheap deals: sorted by price from the most expensive, the
    walk meets none for a while. Pages stop after WALK_CAP entries and say so."""
    args = {"min_drop": "80", "sort": "price", "dir": "desc", "per_page": "25"}
    pages = forward_pages(conn, args)
    assert pages[0].cut and pages[0].rows == [] and pages[0].next_cursor is not None
    assert sum(page.cut for page in pages) > len(pages) // 2
    assert asins(pages) == expected(everything, DealQuery.parse(args))


@pytest.mark.parametrize("q", SEARCHES)
@pytest.mark.parametrize("caps", ["real", "small"])
def test_title_search_is_an_ascii_case_insensitive_substring(conn, everything, request, q,
                                                            caps):
    if caps == "small":
        request.getfixturevalue("small_caps")
    args = {"q": q, "sort": "asin", "dir": "asc", "per_page": "50"}
    assert asins(forward_pages(conn, args)) == expected(everything, DealQuery.parse(args))


def test_search_semantics_spelled_out(conn, everything):
    def titles(q: str) -> set[str]:
        pages = forward_pages(conn, {"q": q, "per_page": "200"})
        return {row["title"] for page in pages for row in page.rows}

    assert {"kettle", "KETTLE", "Kettle"} <= titles("KeTtLe")
    assert titles("äpf") == {"äpfel"}, "non-ASCII letters are compared as they are"
    assert titles("100%") == {"100% cotton"}, "% is a character, not a wildcard"
    assert titles("e_c") == {"snake_case lamp"}, "_ is a character, not a wildcard"
    assert titles("\\sl") == {"back\\slash"}
    assert titles('"x" k') == {'quote "x" kettle'}


def test_the_csv_rows_are_every_match_in_order(conn, everything, monkeypatch):
    monkeypatch.setattr(deal_query, "EXPORT_CHUNK", 7)
    for args in ({"sort": "rating", "dir": "desc"}, *FILTERS):
        query = DealQuery.parse(args)
        assert [row["asin"] for row in query.iter_all(conn)] == expected(everything, query)
        assert not conn.in_transaction


def test_the_app_pages_by_cursor_and_exports_every_match_on_both_backends(filled_store,
                                                                        everything,
                                                                        make_settings):
    setting = "DATABASE_URL" if postgres.is_url(filled_store) else "DATABASE_PATH"
    client = create_app(make_settings(**{setting: filled_store})).test_client()
    args = {"sort": "rating", "dir": "asc", "min_drop": "20", "per_page": "100"}
    want = expected(everything, DealQuery.parse(args))
    seen, params = [], dict(args)
    while True:
        body = client.get("/api/deals", query_string=params).get_json()
        seen += [row["asin"] for row in body["rows"]]
        if body["next_cursor"] is None:
            break
        params = {**args, "after": body["next_cursor"], "page": body["page"] + 1}
    assert seen == want and body["page"] == -(-len(want) // 100)
    html = client.get("/deals", query_string=args).get_data(as_text=True)
    assert 'id="next-page"' in html and "after=" in html and 'id="prev-page"' not in html
    exported = client.get("/deals.csv", query_string=args).get_data(as_text=True)
    assert [row["asin"] for row in csv.DictReader(io.StringIO(exported))] == want


def test_the_title_index_follows_inserts_title_changes_and_deletes(store_conn):
    conn = store_conn

    def found(q: str) -> list[str]:
        return [row["asin"] for row in DealQuery.parse({"q": q}).page_of(conn).rows]

    insert_deals(conn, [deal_row("D000000001", now=NOW, title="Brass Lantern"),
                        deal_row("D000000002", now=NOW, title=None)])
    assert found("lantern") == ["D000000001"]
    with db.transaction(conn):
        conn.execute("UPDATE deals SET title = ? WHERE asin = ?", ("Copper Kettle", "D000000001"))
        conn.execute("UPDATE deals SET title = ? WHERE asin = ?", ("Tin Lantern", "D000000002"))
        conn.execute("UPDATE deals SET current_cents = 5 WHERE asin = ?", ("D000000002",))
    assert (found("lantern"), found("kettle")) == (["D000000002"], ["D000000001"])
    with db.transaction(conn):
        conn.execute("UPDATE deals SET title = NULL WHERE asin = ?", ("D000000001",))
        conn.execute("DELETE FROM deals WHERE asin = ?", ("D000000002",))
    assert (found("lantern"), found("kettle")) == ([], [])
    if not db.is_postgres(conn):
        assert conn.execute("INSERT INTO deals_title_fts (deals_title_fts) "
                            "VALUES ('integrity-check')").rowcount == 1


def _cursor(args: dict, value, asin="B000000001", inclusive=False) -> str:
    return encode_cursor(DealQuery.parse(args), Position(value, asin, inclusive))


BAD_CURSORS = [
    ({"after": "not a cursor!"}, "after"),
    ({"before": "bm90IGpzb24"}, "before"),
    ({"after": "W10"}, "after"),  # []
    ({"after": "x" * (deal_query.MAX_CURSOR_LENGTH + 1)}, "after"),
    ({"sort": "price", "after": _cursor({"sort": "rank"}, 5)}, "after"),
    ({"sort": "price", "dir": "asc", "after": _cursor({"sort": "price"}, 5)}, "after"),
    ({"sort": "price", "after": _cursor({"sort": "price"}, "cheap")}, "after"),
    ({"sort": "price", "after": _cursor({"sort": "price"}, True)}, "after"),
    ({"sort": "rating", "after": _cursor({"sort": "rating"}, float("inf"))}, "after"),
    ({"sort": "title", "after": _cursor({"sort": "title"}, 7)}, "after"),
    ({"after": _cursor({}, None)}, "after"),  # first seen is never missing
    ({"after": _cursor({}, NOW, asin="")}, "after"),
    ({"after": _cursor({}, NOW), "before": _cursor({}, NOW)}, "after"),
    ({"page": "3"}, "page"),
    ({"q": "ab"}, "q"),
]


@pytest.mark.parametrize(("args", "parameter"), BAD_CURSORS)
def test_bad_paging_arguments_are_refused_naming_the_parameter(args, parameter):
    with pytest.raises(BadParameter, match=f"^{parameter}: "):
        DealQuery.parse(args)


@pytest.mark.parametrize(("args", "parameter"), BAD_CURSORS[:6] + BAD_CURSORS[-3:])
def test_bad_paging_arguments_get_400_with_the_reason(dashboard, args, parameter):
    page = requests.get(dashboard + "/deals", params=args, timeout=10)
    api = requests.get(dashboard + "/api/deals", params=args, timeout=10)
    assert (page.status_code, api.status_code) == (400, 400)
    assert f"{parameter}: " in page.text
    assert api.json()["error"].startswith(f"{parameter}: ")


def test_a_cursor_round_trips_every_kind_of_value():
    for key, value in (("title", 'Ü "q" \\ 日本'), ("rating", 4.25), ("price", 2**40),
                       ("rating", None), ("asin", "B000000001")):
        query = DealQuery.parse({"sort": key})
        for inclusive in (False, True):
            token = encode_cursor(query, Position(value, "B000000001", inclusive))
            assert DealQuery.parse({"sort": key, "after": token}).start() == Position(
                value, "B000000001", inclusive)
    assert COLUMNS_BY_KEY["asin"].nullable is False
