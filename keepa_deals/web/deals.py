"""Deals pages: the sortable, filterable table, its CSV export and one deal's detail view."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from contextlib import closing

from flask import Blueprint, Response, abort, current_app, render_template, request

from keepa_deals import db
from keepa_deals.health import one_line
from keepa_deals.web import deal_query, formatting
from keepa_deals.web.deal_query import (
    COLUMNS,
    MIN_SEARCH_LENGTH,
    PER_PAGE_CHOICES,
    SELECT_COLUMNS,
    DealQuery,
    check_asin,
)
from keepa_deals.web.sources import READ_BUSY_TIMEOUT_S, SOURCE_ERRORS, Sources

CATEGORY_CACHE_S = 300
MAX_CATEGORIES = 200
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula injection

bp = Blueprint("deals", __name__)


def sources() -> Sources:
    return current_app.extensions["keepa_sources"]


@bp.get("/deals")
def table():
    query = DealQuery.parse(request.args)
    shown = {"query": query, "columns": COLUMNS, "per_page_choices": PER_PAGE_CHOICES,
             "walk_cap": deal_query.WALK_CAP, "min_search_length": MIN_SEARCH_LENGTH}
    try:
        page = deal_page(query, sources())
        categories = category_choices(sources())
    except SOURCE_ERRORS as exc:
        return render_template("deals.html", error=one_line(exc), page=None, categories=[],
                               **shown), 503
    return render_template("deals.html", page=page, error=None, categories=categories,
                           **shown)


@bp.get("/deals.csv")
def export_csv():
    query = DealQuery.parse(request.args)
    location = sources().settings.database
    try:  # fail before the first byte when the database is unavailable
        db.readonly_connect(location, busy_timeout_s=READ_BUSY_TIMEOUT_S).close()
    except SOURCE_ERRORS as exc:
        return Response(f"database unavailable: {one_line(exc)}\n", 503, mimetype="text/plain")
    filename = time.strftime("deals-%Y%m%d-%H%M%S.csv", time.gmtime())
    scrub = current_app.extensions["keepa_scrubber"].text
    return Response(map(scrub, _csv_lines(query, location)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/deals/<asin>")
def detail(asin: str):
    check_asin(asin)
    try:
        row = sources().db().execute(f"SELECT {SELECT_COLUMNS}, categories, enriched_at "
                                     "FROM deals WHERE asin = ?", (asin,)).fetchone()
    except SOURCE_ERRORS as exc:
        return render_template("deal.html", deal=None, asin=asin, error=one_line(exc)), 503
    if row is None:
        abort(404, description=f"no deal with ASIN {asin} in the database")
    return render_template("deal.html", deal=dict(row), asin=asin, error=None)


# --------------------------------------------------------------------------- data

def deal_page(query: DealQuery, source: Sources) -> dict:
    """The rows of one page, the number of matches (capped when filtered) and paging facts:
    `next_cursor` / `prev_cursor` (the after= / before= arguments of the neighbouring pages,
    None at either end) and `cut` (the page stopped after examining WALK_CAP deals)."""
    conn = source.db()
    found = query.page_of(conn)
    total = db.deal_count(conn) if found.matches is None else found.matches
    return {"rows": [deal_dict(row) for row in found.rows], "total": total,
            "capped": found.capped, "page": found.label, "per_page": query.per_page,
            "pages": max(1, -(-total // query.per_page)),
            "has_next": found.next_cursor is not None, "next_cursor": found.next_cursor,
            "prev_cursor": found.prev_cursor, "cut": found.cut}


def deal_dict(row) -> dict:
    """A deal row as a dict with its Amazon and Keepa links."""
    deal = dict(row)
    deal["amazon_url"] = formatting.amazon_url(deal["asin"])
    deal["keepa_url"] = formatting.keepa_url(deal["asin"], deal.get("domain_id"))
    return deal


class _CategoryCache:
    """The most common category names, recomputed at most every CATEGORY_CACHE_S."""

    def __init__(self):
        self._names: list[str] = []
        self._computed_at = float("-inf")
        self._guard = threading.Lock()

    def names(self, source: Sources) -> list[str]:
        with self._guard:
            if time.monotonic() - self._computed_at > CATEGORY_CACHE_S:
                rows = source.db().execute(
                    "SELECT category_name FROM deals WHERE category_name IS NOT NULL "
                    "GROUP BY category_name ORDER BY COUNT(*) DESC LIMIT ?",
                    (MAX_CATEGORIES,)).fetchall()
                self._names = sorted(row[0] for row in rows)
                self._computed_at = time.monotonic()
            return self._names


def category_choices(source: Sources) -> list[str]:
    cache = current_app.extensions.setdefault("keepa_categories", _CategoryCache())
    return cache.names(source)


_CSV_HEADER = ("asin", "title", "category", "root_category", "price", "average_price",
               "drop_percent", "sales_rank", "rating", "reviews", "new_offers", "updated_utc",
               "first_seen_utc", "amazon_url", "keepa_url")


def _csv_lines(query: DealQuery, location) -> Iterator[str]:
    """The CSV of every deal matching the query, in its order, streamed in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_HEADER)
    conn = db.readonly_connect(location, busy_timeout_s=READ_BUSY_TIMEOUT_S)
    try:
        with closing(query.iter_all(conn)) as rows:  # ends its snapshot before the close
            for count, row in enumerate(rows, start=1):
                writer.writerow(_csv_row(deal_dict(row)))
                if count % 1000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()
    finally:
        conn.close()


def _csv_row(deal: dict) -> list:
    def cents(value):
        return "" if value is None else f"{value / 100:.2f}"

    drop = None if deal["delta_percent"] is None else -deal["delta_percent"]
    values = [deal["asin"], deal["title"], deal["category_name"], deal["root_category"],
              cents(deal["current_cents"]), cents(deal["avg_cents"]), drop, deal["sales_rank"],
              deal["rating"], deal["review_count"], deal["offer_count_new"],
              formatting.utc(deal["last_update_at"]), formatting.utc(deal["first_seen_at"]),
              deal["amazon_url"], deal["keepa_url"]]
    return ["" if v is None else _no_formula(v) for v in values]


def _no_formula(value):
    """Text that a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
