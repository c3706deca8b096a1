"""The deals table query: validated sort, filters and paging from request arguments, as SQL.

`DealQuery.parse(args)` accepts only known values and raises `BadParameter` (a message naming
the parameter and what it accepts) for anything else; empty values mean "no filter". Every
value reaches SQL as a bound parameter; column names come from the COLUMNS whitelist only.
Prices are dollars in the URL and cents in the database. "Drop %" is the deal's price drop as a
positive number (the database keeps Keepa's sign: delta_percent is negative for a drop).

Order, the same on SQLite and PostgreSQL: `ORDER BY <column> <dir> NULLS LAST, asin <dir>`,
text by bytes (SQLite's BINARY; PostgreSQL `COLLATE "C"`, as its indexes). ASINs are capital
letters and digits, which every collation orders by bytes, so asin needs no collation.

Paging is by keyset: a page starts after (`after=`) or ends before (`before=`) a cursor, the
position of a row (its sort value and ASIN), so a deep page costs what the first one costs.
`page` only labels the page; without a cursor it must be 1. A page walks two segments of the
order: the deals with a sort value, ordered by (value, asin), then those without, ordered by
asin; each is one range of the sort column's `(column, asin)` index that both databases walk in
either direction without a sort step (a PostgreSQL index walked backwards puts NULLs first, so
one range holding both would need a second index).

Plans (`Pager`), chosen per request inside one read snapshot:

* unfiltered: walk the sort index from the cursor;
* filtered with at most COUNT_CAP matches: list the matches (through the filters' own indexes
  or the title search index), then fetch and sort only those;
* filtered with more: walk the sort index checking the filters, examining at most WALK_CAP
  index entries per segment; a page that reaches that bound before it is full is `cut`: it
  shows what it found and its Next link continues the walk where it stopped.

Title search `q` is a case-insensitive (ASCII letters) substring of at least
MIN_SEARCH_LENGTH characters: on SQLite the FTS5 trigram index `deals_title_fts` (migration
0005) finds candidates and `LIKE` decides; on PostgreSQL `ILIKE` in the C collation, served by
the pg_trgm index of migration 0005.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation

from keepa_deals import db

PER_PAGE_CHOICES = (25, 50, 100, 200)
DEFAULT_PER_PAGE = 50
MAX_PAGE = 10**9  # a page label; pages are reached by cursor, so it only bounds the number
COUNT_CAP = 10_000  # matches are counted up to this many (exact counts of 1M rows are slow)
WALK_CAP = 20_000  # index entries a filtered page examines per segment when matches are many
PROBE_CAP = 20_000  # SQLite: a filter with more candidates on its own index is broad (Pager)
EXPORT_CHUNK = 1_000  # rows per keyset step of the CSV export
MIN_SEARCH_LENGTH = 3  # the title indexes are built from 3-character sequences
MAX_SEARCH_LENGTH = 200
MAX_CURSOR_LENGTH = 8_192
MAX_CURSOR_ASIN_LENGTH = 64
MAX_PRICE_DOLLARS = Decimal(10_000_000)
MAX_RANK = 2**31
ASIN_PATTERN = re.compile(r"^[A-Z0-9]{10}$")
_CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_LIKE_ESCAPE = "ESCAPE '\\'"


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
    nullable: bool = True  # NOT NULL columns have no segment of deals without a value
    bytewise: bool = False  # text that PostgreSQL must compare in the C collation


COLUMNS = (
    Column("title", "Title", "title", "text", bytewise=True),
    Column("asin", "ASIN", "asin", "text", nullable=False),
    Column("category", "Category", "category_name", "text", bytewise=True),
    Column("price", "Price", "current_cents", "money"),
    Column("avg_price", "Average", "avg_cents", "money"),
    Column("drop", "Drop %", "delta_percent", "drop", inverted=True),
    Column("rank", "Sales rank", "sales_rank", "int"),
    Column("rating", "Rating", "rating", "rating"),
    Column("reviews", "Reviews", "review_count", "int"),
    Column("offers", "New offers", "offer_count_new", "int"),
    Column("updated", "Updated", "last_update_at", "time", nullable=False),
    Column("first_seen", "First seen", "first_seen_at", "time", nullable=False),
)
COLUMNS_BY_KEY = {column.key: column for column in COLUMNS}
SELECT_COLUMNS = ("asin, domain_id, title, image_url, root_category, category_name, brand, "
                  "current_cents, avg_cents, delta_cents, delta_percent, amazon_cents, "
                  "new_cents, used_cents, list_price_cents, sales_rank, rating, review_count, "
                  "offer_count_new, offer_count_used, deal_created_at, last_update_at, "
                  "first_seen_at, last_seen_at, source")
FILTER_NAMES = ("min_price", "max_price", "min_drop", "category", "min_rank", "max_rank", "q")
PLAN_INDEX, PLAN_MATCHES, PLAN_WALK = "index", "matches", "walk"


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends in the deals page's SQL."""

    name: str
    bytewise: str  # appended to a text column compared by bytes
    unindexed: str  # prefix keeping the planner off a column's index (SQLite's unary +)
    search: str  # the title search operator, before its pattern
    begin: str  # opens one read snapshot for the statements of a page
    match_id: str  # the column naming a match in the list of matches


DIALECTS = {
    "sqlite": Dialect("sqlite", "", "+", "LIKE", "BEGIN", "rowid"),
    "postgresql": Dialect("postgresql", ' COLLATE "C"', "", 'COLLATE "C" ILIKE',
                          "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "asin"),
}


@dataclass(frozen=True)
class Position:
    """A row's place in the order: its sort value (None: the row has none) and ASIN.
    As a page boundary the row itself is outside the page unless `inclusive`."""

    value: object
    asin: str
    inclusive: bool = False

    def flipped(self) -> Position:
        """The same boundary seen from the page on its other side."""
        return replace(self, inclusive=not self.inclusive)


@dataclass(frozen=True)
class Segment:
    """One index range of a walk: the rows with a sort value or those without (`nulls`),
    walked in SQL order `ascending` or descending."""

    nulls: bool
    ascending: bool


@dataclass(frozen=True)
class DealPage:
    """One page: rows in display order, the (capped) number of matches when filtered,
    the cursors of the neighbouring pages (None at either end) and whether it is cut."""

    rows: list
    matches: int | None
    capped: bool
    label: int
    next_cursor: str | None
    prev_cursor: str | None
    cut: bool


@dataclass(frozen=True)
class DealQuery:
    """One validated request for a page of deals."""

    sort: str = "first_seen"
    direction: str = "desc"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    after: str | None = None
    before: str | None = None
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
            after=get("after"),
            before=get("before"),
            min_price=_dollars(get("min_price"), "min_price"),
            max_price=_dollars(get("max_price"), "max_price"),
            min_drop=_integer(get("min_drop"), "min_drop", 0, 100),
            category=_printable(get("category"), "category"),
            min_rank=_integer(get("min_rank"), "min_rank", 0, MAX_RANK),
            max_rank=_integer(get("max_rank"), "max_rank", 0, MAX_RANK),
            q=_search(get("q")),
        )
        query._check_ranges()
        query._check_paging()
        return query

    def _check_ranges(self) -> None:
        if None not in (self.min_price, self.max_price) and self.min_price > self.max_price:
            raise BadParameter(f"min_price ({self.min_price}) is above max_price "
                               f"({self.max_price})")
        if None not in (self.min_rank, self.max_rank) and self.min_rank > self.max_rank:
            raise BadParameter(f"min_rank ({self.min_rank}) is above max_rank ({self.max_rank})")

    def _check_paging(self) -> None:
        if self.after is not None and self.before is not None:
            raise BadParameter("after: cannot be combined with before (a page starts after "
                               "one cursor or ends before one)")
        if self.page > 1 and self.after is None and self.before is None:
            raise BadParameter(f"page: page {self.page} is reached with the Next and Previous "
                               "links (after= or before= cursors), not by its number")
        self.start()  # raises BadParameter for a cursor that is not one of this order's

    # --- order and cursors ----------------------------------------------------------------

    @property
    def column(self) -> Column:
        return COLUMNS_BY_KEY[self.sort]

    @property
    def ascending(self) -> bool:
        """The SQL direction of the requested order ("desc" by drop % is ascending SQL)."""
        return (self.direction == "asc") != self.column.inverted

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) is not None for name in FILTER_NAMES)

    def start(self) -> Position | None:
        """The decoded after= or before= cursor (None on the first page)."""
        for name in ("after", "before"):
            token = getattr(self, name)
            if token is not None:
                return decode_cursor(self, token, name)
        return None

    def position(self, row) -> Position:
        """Where `row` (a result row of this query) stands in its order."""
        return Position(row[self.column.sql], row["asin"])

    # --- reading --------------------------------------------------------------------------

    def page_of(self, conn) -> DealPage:
        """The requested page, read from one snapshot (on either backend).

        Matches are counted (up to COUNT_CAP) only when filtered, else None (the caller
        knows the table's size); capped tells there are more than COUNT_CAP. A before= page
        that reaches the start of the order is the first page instead.
        """
        with _read_transaction(conn):
            pager = Pager.plan(self, conn)
            start = self.start()
            if self.before is not None:
                page = self._backward(pager, start)
                if page is not None:
                    return page
                start = None
            return self._forward(pager, start)

    def _forward(self, pager: Pager, start: Position | None) -> DealPage:
        rows, cut = pager.walk(True, start, self.per_page + 1)
        more = len(rows) > self.per_page
        rows = rows[:self.per_page]
        following = cut.flipped() if cut else (self.position(rows[-1]) if more else None)
        preceding = None
        if start is not None:
            preceding = self.position(rows[0]) if rows else start.flipped()
        return self._page(pager, rows, following=following, preceding=preceding,
                          cut=cut is not None, label=self.page if start is not None else 1)

    def _backward(self, pager: Pager, start: Position) -> DealPage | None:
        """The page ending before `start`, or None when fewer than a page precede it."""
        found, cut = pager.walk(False, start, self.per_page + 1)
        if cut is None and len(found) <= self.per_page:
            return None
        rows = found[:self.per_page][::-1]
        preceding = cut.flipped() if cut else self.position(rows[0])
        following = self.position(rows[-1]) if rows else start.flipped()
        return self._page(pager, rows, following=following, preceding=preceding,
                          cut=cut is not None, label=self.page)

    def _page(self, pager: Pager, rows: list, *, following: Position | None,
              preceding: Position | None, cut: bool, label: int) -> DealPage:
        def token(position: Position | None) -> str | None:
            return None if position is None else encode_cursor(self, position)

        return DealPage(rows, pager.matches, pager.capped, label, token(following),
                        token(preceding), cut)

    def iter_all(self, conn) -> Iterator:
        """Every matching row in the requested order (for the CSV export): keyset steps of
        EXPORT_CHUNK rows, never bounded by WALK_CAP, all in one read snapshot."""
        with _read_transaction(conn):
            pager = Pager.plan(self, conn, bounded=False)
            start = None
            while True:
                rows, _ = pager.walk(True, start, EXPORT_CHUNK)
                yield from rows
                if len(rows) < EXPORT_CHUNK:
                    return
                start = self.position(rows[-1])

    # --- URLs -----------------------------------------------------------------------------

    def args(self, **changes) -> dict[str, str]:
        """URL arguments reproducing this query (with `changes`), defaults left out."""
        values = asdict(replace(self, **changes))
        values["dir"] = values.pop("direction")
        defaults = asdict(DealQuery())
        defaults["dir"] = defaults.pop("direction")
        return {k: str(v) for k, v in values.items() if v is not None and v != defaults[k]}

    def first_page_args(self, **changes) -> dict[str, str]:
        """URL arguments of the first page of this query (with `changes`)."""
        return self.args(page=1, after=None, before=None, **changes)

    def next_args(self, label: int, cursor: str) -> dict[str, str]:
        """URL arguments of the page after page `label`, whose Next cursor is `cursor`."""
        return self.args(page=label + 1, after=cursor, before=None)

    def prev_args(self, label: int, cursor: str) -> dict[str, str]:
        """URL arguments of the page before page `label` (the first page: no cursor)."""
        if label <= 2:
            return self.first_page_args()
        return self.args(page=label - 1, after=None, before=cursor)

    def filter_values(self) -> dict[str, str]:
        return {name: "" if getattr(self, name) is None else str(getattr(self, name))
                for name in FILTER_NAMES}

    # --- SQL pieces -----------------------------------------------------------------------

    def filters(self) -> list[tuple[str, str, object]]:
        """The filters as (SQL column, test with one `?`, value); the title search's test
        is "search" (its SQL depends on the dialect)."""
        found = []

        def add(column: str, test: str, value) -> None:
            found.append((column, test, value))

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
            add("title", "search", "%" + _like_escaped(self.q) + "%")
        return found


class Pager:
    """The SQL of one query's pages on one connection, with the plan its filters need.

    `plan(query, conn)` counts the matches (when filtered) and picks PLAN_INDEX (unfiltered),
    PLAN_MATCHES (at most COUNT_CAP matches: `ids` lists them) or PLAN_WALK (more matches:
    walk the sort index, bounded by WALK_CAP unless `bounded` is False).
    """

    def __init__(self, query: DealQuery, dialect: Dialect, kind: str, *,
                 ids: list | None = None, bounded: bool = True, conn=None):
        self.query = query
        self.dialect = dialect
        self.kind = kind
        self.ids = ids
        self.bounded = bounded
        self.conn = conn

    @classmethod
    def plan(cls, query: DealQuery, conn, *, bounded: bool = True) -> Pager:
        dialect = DIALECTS[db.dialect(conn)]
        if not query.filtered:
            return cls(query, dialect, PLAN_INDEX, conn=conn)
        counter = cls(query, dialect, PLAN_MATCHES, conn=conn)
        ids = [row[0] for row in conn.execute(*counter.match_sql(counter.driver()))]
        if len(ids) > COUNT_CAP:
            return cls(query, dialect, PLAN_WALK, bounded=bounded, conn=conn)
        return cls(query, dialect, PLAN_MATCHES, ids=ids, conn=conn)

    @property
    def matches(self) -> int | None:
        if self.kind == PLAN_INDEX:
            return None
        return COUNT_CAP if self.kind == PLAN_WALK else len(self.ids)

    @property
    def capped(self) -> bool:
        return self.kind == PLAN_WALK

    # --- walking --------------------------------------------------------------------------

    def walk(self, forward: bool, start: Position | None, limit: int
             ) -> tuple[list, Position | None]:
        """Up to `limit` rows from `start` (None: from the first row when `forward`, the
        last when not), in walk order, and where the walk was cut (None when it was not: an
        inclusive bound, the last index entry examined)."""
        rows: list = []
        if self.kind == PLAN_MATCHES and not self.ids:
            return rows, None
        for segment, after in self.segments(forward, start):
            found, cut = self._walk_segment(segment, after, limit - len(rows))
            rows += found
            if cut is not None or len(rows) >= limit:
                return rows, cut
        return rows, None

    def segments(self, forward: bool, start: Position | None
                 ) -> list[tuple[Segment, Position | None]]:
        """The segments a walk visits from `start`, each with the position it starts from."""
        ascending = self.query.ascending == forward
        visit = [False, True] if forward else [True, False]
        if not self.query.column.nullable:
            visit = [False]
        found, started = [], start is None
        for nulls in visit:
            if not started and (start.value is None) == nulls:
                found.append((Segment(nulls, ascending), start))
                started = True
            elif started:
                found.append((Segment(nulls, ascending), None))
        return found

    def _walk_segment(self, segment: Segment, start: Position | None, limit: int
                      ) -> tuple[list, Position | None]:
        """Up to `limit` rows of `segment` after `start`, and, when a bounded walk reached
        its WALK_CAP-th index entry before `limit` rows matched, that entry (else None)."""
        end = None
        if self.kind == PLAN_WALK and self.bounded:
            row = self.conn.execute(*self.end_sql(segment, start)).fetchone()
            end = None if row is None else Position(row[0], row[1], inclusive=True)
        rows = self.conn.execute(*self.segment_sql(segment, start, end, limit)).fetchall()
        return rows, (end if end is not None and len(rows) < limit else None)

    # --- SQL ------------------------------------------------------------------------------

    def driver(self) -> str | None:
        """SQLite: the filter column whose own index (the title search's: its FTS index)
        should list the candidate matches, or None to leave the choice to SQLite.

        SQLite has no statistics on value ranges, so it may walk 125 000 deals of a
        category rather than the 500 of a sales-rank range. Each filtered column's
        candidates are counted on its index alone, up to PROBE_CAP (each a bounded
        index-only count); the fewest drive. When every column has PROBE_CAP or more,
        SQLite chooses (it prefers an equality, which finds dense matches soonest).
        PostgreSQL's planner has range statistics: always None there.
        """
        columns = list(dict.fromkeys(column for column, _, _ in self.query.filters()))
        if self.dialect.name != "sqlite":
            return None
        if len(columns) == 1:
            return columns[0]
        counts = {column: self.conn.execute(*self.probe_sql(column)).fetchone()[0]
                  for column in columns}
        best = min(columns, key=counts.__getitem__)
        return best if counts[best] < PROBE_CAP else None

    def probe_sql(self, column: str) -> tuple[str, list]:
        """SQL and parameters counting, up to PROBE_CAP, the deals that pass the filters on
        `column` alone (SQLite; on its index, or the FTS index for the title search)."""
        if column == "title":
            return ("SELECT count(*) FROM (SELECT rowid FROM deals_title_fts "
                    "WHERE deals_title_fts MATCH ? LIMIT ?)", [self._phrase(), PROBE_CAP])
        where, params = self._filters(only=column)
        return (f"SELECT count(*) FROM (SELECT 1 FROM deals WHERE {' AND '.join(where)} "
                "LIMIT ?)", [*params, PROBE_CAP])

    def match_sql(self, driver: str | None = None) -> tuple[str, list]:
        """SQL and parameters naming up to COUNT_CAP + 1 matches (rowids on SQLite, ASINs
        on PostgreSQL), listed through the `driver` column's index (see driver(); "title":
        the FTS index), or the one the planner picks."""
        where, params = self._filters(keep=driver, table="deals.")
        limit = [COUNT_CAP + 1]
        if driver == "title":
            return ("SELECT deals.rowid FROM deals_title_fts CROSS JOIN deals "
                    "ON deals.rowid = deals_title_fts.rowid WHERE deals_title_fts MATCH ? AND "
                    + " AND ".join(where) + " LIMIT ?", [self._phrase(), *params, *limit])
        return (f"SELECT deals.{self.dialect.match_id} FROM deals WHERE "
                + " AND ".join(where) + " LIMIT ?", [*params, *limit])

    def _phrase(self) -> str:
        """The title search as an FTS5 phrase: with the trigram tokenizer, any substring."""
        return '"' + self.query.q.replace('"', '""') + '"'

    def segment_sql(self, segment: Segment, start: Position | None, end: Position | None,
                    limit: int) -> tuple[str, list]:
        """SQL and parameters of up to `limit` rows of `segment` after `start` and up to
        `end` (each None: unbounded), in walk order, by this pager's plan."""
        indexed = self.kind != PLAN_MATCHES
        where, params = self._range(segment, start, end, indexed=indexed)
        prefix, prefix_params, source = "", [], "deals"
        if self.kind == PLAN_WALK:
            more, more_params = self._filters(keep=self.query.column.sql)
            where, params = where + more, params + more_params
        elif self.kind == PLAN_MATCHES:
            prefix, prefix_params, source, member, member_params = self._members()
            where, params = where + member, params + member_params
        sql = (f"{prefix}SELECT {SELECT_COLUMNS} FROM {source} WHERE " + " AND ".join(where)
               + f" ORDER BY {self._order(segment, indexed=indexed)} LIMIT ?")
        return sql, [*prefix_params, *params, limit]

    def end_sql(self, segment: Segment, start: Position | None) -> tuple[str, list]:
        """SQL and parameters of the WALK_CAP-th index entry of `segment` after `start` that
        the sort column's own filters admit: where a bounded walk stops (none: no bound)."""
        where, params = self._range(segment, start, None, indexed=True)
        own, own_params = self._filters(only=self.query.column.sql)
        column = self.query.column.sql
        sql = (f"SELECT {column}, asin FROM deals WHERE " + " AND ".join(where + own)
               + f" ORDER BY {self._order(segment, indexed=True)} LIMIT 1 OFFSET ?")
        return sql, [*params, *own_params, WALK_CAP - 1]

    def _ref(self, column: str, *, indexed: bool) -> str:
        return column if indexed else self.dialect.unindexed + column

    def _sort_ref(self, *, indexed: bool) -> str:
        column = self.query.column
        return (self._ref(column.sql, indexed=indexed)
                + (self.dialect.bytewise if column.bytewise else ""))

    def _range(self, segment: Segment, start: Position | None, end: Position | None, *,
               indexed: bool) -> tuple[list[str], list]:
        """The clauses keeping `segment` between `start` and `end` (walk order)."""
        column = self.query.column
        sort, asin = self._sort_ref(indexed=indexed), self._ref("asin", indexed=indexed)
        plain = self._ref(column.sql, indexed=indexed)
        if segment.nulls:
            where, key = [f"{plain} IS NULL"], (asin,)
        elif column.sql == "asin":
            where, key = [], (asin,)
        else:
            where, key = [f"{plain} IS NOT NULL"], (sort, asin)
        params: list = []
        for bound, later in ((start, True), (end, False)):
            if bound is None:
                continue
            operator = ">" if later == segment.ascending else "<"
            operator += "=" if bound.inclusive else ""
            values = (bound.asin,) if len(key) == 1 else (bound.value, bound.asin)
            where.append(f"({', '.join(key)}) {operator} ({', '.join('?' * len(key))})")
            params += values
        return where or ["1 = 1"], params

    def _order(self, segment: Segment, *, indexed: bool) -> str:
        """ORDER BY of a segment: (column, asin) in its direction, also for the rows without
        a value (all NULL, so ordered by asin), which is the index's own order there too: a
        PostgreSQL planner cannot infer that order from `IS NULL` and would sort."""
        direction = "ASC" if segment.ascending else "DESC"
        asin = f"{self._ref('asin', indexed=indexed)} {direction}"
        if self.query.column.sql == "asin":
            return asin
        return f"{self._sort_ref(indexed=indexed)} {direction}, {asin}"

    def _filters(self, *, keep: str | None = None, only: str | None = None, table: str = ""
                 ) -> tuple[list[str], list]:
        """The filter clauses on columns of `table` (a prefix such as "deals."). `keep`: on
        SQLite only that column's index may serve them (the others get a unary +); None:
        any. `only`: just the range or equality filters on that SQL column."""
        where, params = [], []
        for column, test, value in self.query.filters():
            if only is not None and (column != only or test == "search"):
                continue
            ref = self._ref(table + column, indexed=keep in (None, column))
            if test == "search":
                where.append(f"{ref} {self.dialect.search} ? {_LIKE_ESCAPE}")
            else:
                where.append(f"{ref} {test}")
            params.append(value)
        return where, params

    def _members(self) -> tuple[str, list, str, list[str], list]:
        """(WITH prefix, its parameters, source table, clauses, their parameters) restricting
        a page to `ids`: SQLite fetches them by rowid, PostgreSQL by ASIN into a CTE that
        keeps the planner from walking the sort index instead."""
        if self.dialect.name == "sqlite":
            return ("", [], "deals", ["rowid IN (SELECT value FROM json_each(?))"],
                    [json.dumps(self.ids)])
        return (f"WITH matches AS MATERIALIZED (SELECT {SELECT_COLUMNS} FROM deals "
                "WHERE asin = ANY(?)) ", [self.ids], "matches", [], [])


# --------------------------------------------------------------------------- cursors

def encode_cursor(query: DealQuery, position: Position) -> str:
    """The URL form of a page boundary in `query`'s order (base64url of a JSON array)."""
    data = [query.sort, query.direction, position.value, position.asin,
            int(position.inclusive)]
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(query: DealQuery, token: str, name: str) -> Position:
    """The Position `token` names in `query`'s order; BadParameter naming `name` when it is
    not a cursor of this sort order (they come from the Next and Previous links)."""
    def bad(reason: str) -> BadParameter:
        return BadParameter(f"{name}: {reason}; use the Next and Previous links or start "
                            "again from the first page")

    if len(token) > MAX_CURSOR_LENGTH or not _CURSOR_PATTERN.fullmatch(token):
        raise bad("not a page cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad("not a page cursor") from None
    if not (isinstance(data, list) and len(data) == 5):
        raise bad("not a page cursor")
    sort, direction, value, asin, inclusive = data
    if (sort, direction) != (query.sort, query.direction):
        raise bad(f"the cursor belongs to another order ({str(sort)[:20]!r} "
                  f"{str(direction)[:5]!r})")
    if not (isinstance(asin, str) and 0 < len(asin) <= MAX_CURSOR_ASIN_LENGTH
            and asin.isprintable()) or inclusive not in (0, 1) or isinstance(inclusive, bool):
        raise bad("not a page cursor")
    if not _valid_sort_value(query.column, value):
        raise bad(f"not a value of column {query.sort}")
    return Position(value, asin, bool(inclusive))


def _valid_sort_value(column: Column, value) -> bool:
    if value is None:
        return column.nullable
    if column.kind == "text":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if column.kind == "rating":
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, int)


# --------------------------------------------------------------------------- validation

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


def _search(raw: str | None) -> str | None:
    """A title search: printable, MIN_SEARCH_LENGTH to MAX_SEARCH_LENGTH characters."""
    text = _printable(raw, "q")
    if text is not None and len(text) < MIN_SEARCH_LENGTH:
        raise BadParameter(f"q: a title search needs at least {MIN_SEARCH_LENGTH} characters "
                           f"(titles are indexed by {MIN_SEARCH_LENGTH}-character sequences), "
                           f"got {len(text)}")
    return text


@contextmanager
def _read_transaction(conn) -> Iterator[None]:
    """One snapshot for the statements inside (unless the caller already opened one)."""
    if conn.in_transaction:
        yield
        return
    conn.execute(DIALECTS[db.dialect(conn)].begin)
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
