"""The deals table query: validated sort, filters and paging from request arguments, as SQL.

`DealQuery.parse(args)` accepts only known values and raises `BadParameter` (a message naming
the parameter and what it accepts) for anything else; empty values mean "no filter". Every
value reaches SQL as a bound parameter; column names come from the COLUMNS whitelist only.
Prices are dollars in the URL and cents in the database. "Drop %" is the deal's price drop as a
positive number (the database keeps Keepa's sign: delta_percent is negative for a drop).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation

PER_PAGE_CHOICES = (25, 50, 100, 200)
DEFAULT_PER_PAGE = 50
MAX_PAGE = 20_000
COUNT_CAP = 10_000  # matches are counted up to this many (exact counts of 1M rows are slow)
MAX_SEARCH_LENGTH = 200
MAX_PRICE_DOLLARS = Decimal(10_000_000)
MAX_RANK = 2**31
ASIN_PATTERN = re.compile(r"^[A-Z0-9]{10}$")
_ROWID_IN_JSON = " rowid IN (SELECT value FROM json_each(?))"


class BadParameter(ValueError):
    """A query parameter has a value the dashboard does not accept (answered with 400)."""


@dataclass(frozen=True)
class Column:
    """A sortable deals-table column: its URL key, header, SQL column and how to show it."""

    key: str
    label: str
    sql: str
    kind: str  # text | money | drop | int | rating | time
    inverted: bool = False  # sorting "desc" by this column means ascending SQL (drop %)


COLUMNS = (
    Column("title", "Title", "title", "text"),
    Column("asin", "ASIN", "asin", "text"),
    Column("category", "Category", "category_name", "text"),
    Column("price", "Price", "current_cents", "money"),
    Column("avg_price", "Average", "avg_cents", "money"),
    Column("drop", "Drop %", "delta_percent", "drop", inverted=True),
    Column("rank", "Sales rank", "sales_rank", "int"),
    Column("rating", "Rating", "rating", "rating"),
    Column("reviews", "Reviews", "review_count", "int"),
    Column("offers", "New offers", "offer_count_new", "int"),
    Column("updated", "Updated", "last_update_at", "time"),
    Column("first_seen", "First seen", "first_seen_at", "time"),
)
COLUMNS_BY_KEY = {column.key: column for column in COLUMNS}
SELECT_COLUMNS = ("asin, domain_id, title, image_url, root_category, category_name, brand, "
                  "current_cents, avg_cents, delta_cents, delta_percent, amazon_cents, "
                  "new_cents, used_cents, list_price_cents, sales_rank, rating, review_count, "
                  "offer_count_new, offer_count_used, deal_created_at, last_update_at, "
                  "first_seen_at, last_seen_at, source")
FILTER_NAMES = ("min_price", "max_price", "min_drop", "category", "min_rank", "max_rank", "q")


@dataclass(frozen=True)
class DealQuery:
    """One validated request for a page of deals."""

    sort: str = "first_seen"
    direction: str = "desc"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    min_drop: int | None = None
    category: str | None = None
    min_rank: int | None = None
    max_rank: int | None = None
    q: str | None = None

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> DealQuery:
        """Validate request arguments; raise BadParameter naming the first bad one."""
        def get(name: str) -> str | None:
            value = args.get(name)
            return value.strip() if value and value.strip() else None

        sort = get("sort") or cls.sort
        if sort not in COLUMNS_BY_KEY:
            raise BadParameter(f"sort: must be one of {', '.join(COLUMNS_BY_KEY)}, got {sort!r}")
        direction = (get("dir") or cls.direction).lower()
        if direction not in ("asc", "desc"):
            raise BadParameter(f"dir: must be asc or desc, got {direction!r}")
        per_page = _integer(get("per_page"), "per_page", 1, max(PER_PAGE_CHOICES))
        if per_page is not None and per_page not in PER_PAGE_CHOICES:
            raise BadParameter(f"per_page: must be one of {PER_PAGE_CHOICES}, got {per_page}")
        query = cls(
            sort=sort,
            direction=direction,
            page=_integer(get("page"), "page", 1, MAX_PAGE) or 1,
            per_page=per_page or DEFAULT_PER_PAGE,
            min_price=_dollars(get("min_price"), "min_price"),
            max_price=_dollars(get("max_price"), "max_price"),
            min_drop=_integer(get("min_drop"), "min_drop", 0, 100),
            category=_printable(get("category"), "category"),
            min_rank=_integer(get("min_rank"), "min_rank", 0, MAX_RANK),
            max_rank=_integer(get("max_rank"), "max_rank", 0, MAX_RANK),
            q=_printable(get("q"), "q"),
        )
        query._check_ranges()
        return query

    def _check_ranges(self) -> None:
        if None not in (self.min_price, self.max_price) and self.min_price > self.max_price:
            raise BadParameter(f"min_price ({self.min_price}) is above max_price "
                               f"({self.max_price})")
        if None not in (self.min_rank, self.max_rank) and self.min_rank > self.max_rank:
            raise BadParameter(f"min_rank ({self.min_rank}) is above max_rank ({self.max_rank})")

    # --- SQL ------------------------------------------------------------------------------

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) is not None for name in FILTER_NAMES)

    def where(self, *, index_for: str | None = None) -> tuple[str, list]:
        """The WHERE clause (or '') and its parameters.

        With `index_for` (an SQL column), every other filter column gets a unary `+`, so the
        only index SQLite may use for filtering is that column's (the sort index then drives).
        """
        clauses, params = [], []

        def add(column: str, test: str, value) -> None:
            prefix = "+" if index_for not in (None, column) else ""
            clauses.append(f"{prefix}{column} {test}")
            params.append(value)

        if self.min_price is not None:
            add("current_cents", ">= ?", int(self.min_price * 100))
        if self.max_price is not None:
            add("current_cents", "<= ?", int(self.max_price * 100))
        if self.min_drop is not None:
            add("delta_percent", "<= ?", -self.min_drop)
        if self.category is not None:
            if self.category.isdigit():
                add("root_category", "= ?", int(self.category))
            else:
                add("category_name", "= ?", self.category)
        if self.min_rank is not None:
            add("sales_rank", ">= ?", self.min_rank)
        if self.max_rank is not None:
            add("sales_rank", "<= ?", self.max_rank)
        if self.q is not None:
            add("title", "LIKE ? ESCAPE '\\'", "%" + _like_escaped(self.q) + "%")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def order_by(self, *, sort_index: bool = True) -> str:
        """The ORDER BY clause; without `sort_index` the sort column gets a unary `+` (SQLite
        then finds the matches first and sorts them, instead of walking the sort index)."""
        column = COLUMNS_BY_KEY[self.sort]
        ascending = (self.direction == "asc") != column.inverted
        sql_dir = "ASC" if ascending else "DESC"
        prefix = "" if sort_index else "+"
        return f" ORDER BY {prefix}{column.sql} {sql_dir} NULLS LAST, asin {sql_dir}"

    def page_sql(self, rowids: list[int] | None = None) -> tuple[str, list]:
        """SQL and parameters of the requested page.

        Without `rowids` (unfiltered, or more than COUNT_CAP matches) the sort column's index
        drives: the other filters are checked row by row and the page is reached after few
        rows. With `rowids` (all the matches, from match_sql) SQLite fetches those and sorts
        them: walking the sort index would visit every row to learn that few match. The
        filters are checked again, so a row changed in between is not shown.
        """
        if rowids is None:
            where, params = self.where(index_for=COLUMNS_BY_KEY[self.sort].sql)
            order_by = self.order_by()
        else:
            where, params = self.where(index_for="rowid")
            where = (where + " AND" if where else " WHERE") + _ROWID_IN_JSON
            params.append(json.dumps(rowids))
            order_by = self.order_by(sort_index=False)
        sql = f"SELECT {SELECT_COLUMNS} FROM deals{where}{order_by} LIMIT ? OFFSET ?"
        return sql, [*params, self.per_page, (self.page - 1) * self.per_page]

    def match_sql(self) -> tuple[str, list]:
        """SQL and parameters listing the rowids of up to COUNT_CAP + 1 matching deals."""
        where, params = self.where()
        return f"SELECT rowid FROM deals{where} LIMIT ?", [*params, COUNT_CAP + 1]

    def page_of(self, conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], int | None, bool]:
        """(rows of the requested page, matches, capped), read from one snapshot.

        Matches are counted (up to COUNT_CAP) only when filtered, else None (the caller
        knows the table's size); capped tells there are more than COUNT_CAP.
        """
        with _read_transaction(conn):
            if not self.filtered:
                return conn.execute(*self.page_sql()).fetchall(), None, False
            rowids = [row[0] for row in conn.execute(*self.match_sql())]
            if len(rowids) > COUNT_CAP:
                return conn.execute(*self.page_sql()).fetchall(), COUNT_CAP, True
            return conn.execute(*self.page_sql(rowids)).fetchall(), len(rowids), False

    def iter_all(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Row]:
        """Every matching row in the requested order (for the CSV export)."""
        where, params = self.where()
        yield from conn.execute(f"SELECT {SELECT_COLUMNS} FROM deals{where}{self.order_by()}",
                                params)

    # --- URLs -----------------------------------------------------------------------------

    def args(self, **changes) -> dict[str, str]:
        """URL arguments reproducing this query (with `changes`), defaults left out."""
        values = asdict(replace(self, **changes))
        values["dir"] = values.pop("direction")
        defaults = asdict(DealQuery())
        defaults["dir"] = defaults.pop("direction")
        return {k: str(v) for k, v in values.items() if v is not None and v != defaults[k]}

    def filter_values(self) -> dict[str, str]:
        return {name: "" if getattr(self, name) is None else str(getattr(self, name))
                for name in FILTER_NAMES}


def _integer(raw: str | None, name: str, low: int, high: int) -> int | None:
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        raise BadParameter(f"{name}: expected a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _dollars(raw: str | None, name: str) -> Decimal | None:
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,2})?", raw.lstrip("$")):
        raise BadParameter(f"{name}: expected a price in dollars such as 12.50, "
                           f"got {raw[:40]!r}")
    try:
        value = Decimal(raw.lstrip("$"))
    except InvalidOperation:
        raise BadParameter(f"{name}: expected a price in dollars, got {raw[:40]!r}") from None
    if value > MAX_PRICE_DOLLARS:
        raise BadParameter(f"{name}: must be at most {MAX_PRICE_DOLLARS}, got {value}")
    return value


def _printable(raw: str | None, name: str) -> str | None:
    if raw is not None and (len(raw) > MAX_SEARCH_LENGTH or not raw.isprintable()):
        raise BadParameter(f"{name}: expected at most {MAX_SEARCH_LENGTH} printable "
                           f"characters, got {len(raw)}")
    return raw


@contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One snapshot for the statements inside (unless the caller already opened one)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def check_asin(asin: str) -> str:
    """The ASIN if it has Amazon's form (10 capital letters or digits), else BadParameter."""
    if not ASIN_PATTERN.fullmatch(asin):
        raise BadParameter(f"asin: expected 10 capital letters or digits, got {asin[:40]!r}")
    return asin
