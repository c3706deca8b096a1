"""The deal store: connections, migrations, deal upserts, pipeline state and runs.

Two backends behind one interface: SQLite (a file path, the default) and PostgreSQL (a
postgresql:// URL, DATABASE_URL; keepa_deals/postgres.py adapts a pooled psycopg connection to
the sqlite3 API used here). Each has its own numbered migrations with the same versions.

Contracts (docs/architecture.md):

* `connect()` is the one way the pipeline opens the database (SQLite: WAL, busy_timeout, NORMAL
  sync, foreign keys, Row factory; both: autocommit, transactions explicit via `transaction()`,
  which lets one writer at a time in, on PostgreSQL across hosts too).
  `readonly_connect()` is for readers such as the dashboard; they never block a writer and a
  writer never blocks them.
* `upsert_deals()` and `set_state()` run inside the caller's `transaction()`, so deal rows and
  the checkpoint covering them commit together (DESIGN principle 5).
* All times are unix seconds (UTC). "Deal count" everywhere is `deal_count()`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from keepa_deals import postgres
from keepa_deals.constants import FENCE_STATE_PREFIX
from keepa_deals.deals import DEAL_FIELDS, DealRecord

MIGRATIONS_DIR = Path(__file__).with_name("migrations")  # SQLite; PostgreSQL's in postgresql/
DIALECTS = ("sqlite", "postgresql")
# What a failing database raises, on either backend (FileNotFoundError etc. are OSError).
ERRORS = (sqlite3.Error, postgres.Error)
Connection = sqlite3.Connection | postgres.PgConnection
DEFAULT_BUSY_TIMEOUT_S = 30.0
RUN_OUTCOMES = frozenset({"ok", "partial", "skipped", "failed"})

# Deal columns describing the product rather than the deal's current prices: a sighting that
# lacks them (an unenriched record, a page without a title) keeps the stored value.
STICKY_COLUMNS = frozenset({
    "title", "image_url", "root_category", "categories", "category_name", "brand",
    "list_price_cents", "rating", "review_count", "deal_created_at", "enriched_at",
})
DEAL_COLUMNS = (*DEAL_FIELDS, "first_seen_at", "last_seen_at", "source")

# Filled into NOT NULL columns that a pre-migration deals table lacks.
_LEGACY_FILL = {"domain_id": 1, "price_type": 0, "last_update_at": 0, "source": "'legacy'"}
_LEGACY_SEEN_COLUMNS = ("first_seen_at", "last_seen_at")  # filled with the migration time
_SQL_VARIABLES_PER_QUERY = 500
_WAL_SWITCH_RETRY_S = 0.01
# A writer's page cache (the default 2 MiB thrashes on the deal indexes) and the WAL pages that
# accumulate before a checkpoint (each checkpoint fsyncs; upserting one /deal page can dirty
# over 1 000 index pages, so the default of 1 000 checkpointed after nearly every commit).
_WRITER_CACHE_KIB = 65_536
_WAL_CHECKPOINT_PAGES = 10_000


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this code expects."""


class TransactionRequired(RuntimeError):
    """A write that must commit together with the caller's other writes ran outside one."""


@dataclass(frozen=True)
class UpsertResult:
    """Per record: inserted (a new ASIN), updated (the stored data changed), unchanged (only
    the sighting, last_seen_at, was recorded). `new_asins` are the inserted ASINs and
    `moved_asins` the stored ones whose lastUpdate moved forward (freshness samples)."""

    inserted: int
    updated: int
    unchanged: int
    new_asins: frozenset[str] = frozenset()
    moved_asins: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Run:
    """One row of `runs`; `detail` decoded from JSON. A "running" run whose host/pid is dead
    was abandoned by a crashed worker (judged by the health module)."""

    id: int
    task: str
    started_at: int
    ended_at: int | None
    outcome: str | None
    deals_written: int
    tokens_spent: int
    error: str | None
    detail: Any
    host: str | None
    pid: int | None
    revision: str | None


# --------------------------------------------------------------------------- connections

def connect(location: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
    """Open the database for reading and writing: a PostgreSQL URL (a pooled connection,
    waiting up to `busy_timeout_s` for the server), or a SQLite file (created with its
    directory)."""
    if postgres.is_url(location):
        return postgres.connect(location, timeout_s=busy_timeout_s)
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    _enable_wal(conn, busy_timeout_s)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL. The switch of a new database needs it exclusively, and SQLite answers
    "locked" at once, without its busy handler, while another process is switching it too."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError("database is locked: could not switch it to WAL "
                                           f"within {timeout_s} s")
        time.sleep(_WAL_SWITCH_RETRY_S)


def readonly_connect(location: str | Path, *,
                     busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
    """Open an existing database read-only; raises FileNotFoundError when a SQLite file does
    not exist, psycopg.OperationalError when PostgreSQL cannot be reached in time."""
    if postgres.is_url(location):
        return postgres.connect(location, readonly=True, timeout_s=busy_timeout_s)
    path = Path(location).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database {path} does not exist (has the pipeline started?)")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s,
                           isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    return conn


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """BEGIN as the only writer (SQLite: IMMEDIATE, waits up to busy_timeout for other
    writers; PostgreSQL: an advisory lock) … COMMIT, or ROLLBACK when the block raises."""
    if is_postgres(conn):
        conn.begin_write()
    else:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def is_postgres(conn) -> bool:
    """Whether `conn` is a PostgreSQL connection (else SQLite)."""
    return isinstance(conn, postgres.PgConnection)


def dialect(conn) -> str:
    """"postgresql" or "sqlite"."""
    return "postgresql" if is_postgres(conn) else "sqlite"


def _require_transaction(conn: Connection, what: str) -> None:
    if not conn.in_transaction:
        raise TransactionRequired(f"{what} must run inside db.transaction(conn)")


def stored_versions(location: str | Path, busy_timeout_s: float = 5.0) -> dict[str, int]:
    """{asin: last_update_at} of every deal, read-only; {} while the database cannot be read
    (not created yet, locked past the timeout, on a full disk): for watchers that poll."""
    try:
        conn = readonly_connect(location, busy_timeout_s=busy_timeout_s)
        try:
            return {asin: stamp for asin, stamp in
                    conn.execute("SELECT asin, last_update_at FROM deals")}
        finally:
            conn.close()
    except (*ERRORS, FileNotFoundError):
        return {}


# --------------------------------------------------------------------------- migrations

def available_migrations(dialect: str = "sqlite") -> list[tuple[int, Path]]:
    """[(version, file)] of keepa_deals/migrations[/postgresql]/NNNN_name.sql, in order."""
    directory = MIGRATIONS_DIR / "postgresql" if dialect == "postgresql" else MIGRATIONS_DIR
    found = [(int(p.name.split("_", 1)[0]), p) for p in directory.glob("[0-9]*_*.sql")]
    return sorted(found)


def schema_version(conn: Connection) -> int:
    """The highest applied migration; 0 for a new or pre-migration database."""
    if not _table_exists(conn, "schema_migrations"):
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(conn: Connection) -> int:
    """Apply pending migrations in one transaction; returns the schema version.

    Idempotent and safe to run from several processes at once. Nothing is dropped: a deals
    table created before migrations existed gets the missing v1 columns and keeps its rows.
    A database newer than this code raises MigrationError.
    """
    migrations = available_migrations(dialect(conn))
    latest = latest_version()
    with transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        current = schema_version(conn)
        if current > latest:
            raise MigrationError(
                f"database schema version {current} is newer than this code's {latest}: "
                "deploy the newer code (or restore a matching database); nothing was changed")
        for version, path in migrations:
            if version <= current:
                continue
            script = path.read_text(encoding="utf-8")
            if is_postgres(conn):
                conn.execute_script(script)  # PostgreSQL has never had a pre-migration table
            else:
                if version == 1 and _table_exists(conn, "deals"):
                    _adopt_legacy_deals(conn, path)
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                         (version, int(time.time())))
    return latest


def latest_version() -> int:
    """The schema version this code expects: its highest migration (the same for both
    dialects; tests/db/test_migrations.py checks)."""
    migrations = available_migrations()
    return migrations[-1][0] if migrations else 0


def ensure_schema(conn: Connection) -> None:
    """What a task run does before working: create the schema in a brand-new database, else
    require exactly this code's version. Upgrading an existing database is the start script's
    and the deploy's job (once, after a snapshot), never a task run's."""
    current, latest = schema_version(conn), latest_version()
    if current == 0 and not _table_exists(conn, "deals"):
        migrate(conn)
        return
    if current != latest:
        newer = "newer" if current > latest else "older"
        raise MigrationError(
            f"database schema version {current} is {newer} than this code's {latest}: "
            + ("start the matching code (./start_celery.sh or ./deploy_update.sh)"
               if current > latest else
               "apply the migrations: .venv/bin/python -m keepa_deals.ops migrate"))


def snapshot(conn: Connection, path: Path) -> None:
    """A consistent copy of the whole database at `path` (SQLite's online backup API), written
    beside it first and renamed, so `path` is never a half-written copy. SQLite only: a
    PostgreSQL server is backed up by its own tools (docs/deploy.md)."""
    _require_sqlite(conn, "a snapshot")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    target = sqlite3.connect(partial)
    try:
        conn.backup(target)
    finally:
        target.close()
    partial.replace(path)


def restore(conn: Connection, path: Path) -> None:
    """Replace the whole database of `conn` with the snapshot at `path` (backup API, so the
    WAL and other connections see a consistent database). SQLite only."""
    _require_sqlite(conn, "restoring a snapshot")
    source = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        source.backup(conn)
    finally:
        source.close()


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration file (executescript would commit mid-transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        raise MigrationError(f"incomplete SQL statement at the end of a migration: {pending!r}")


def _require_sqlite(conn, what: str) -> None:
    if is_postgres(conn):
        raise MigrationError(f"{what} is for SQLite stores; back PostgreSQL up with pg_dump or "
                             "your provider's backups (docs/deploy.md)")


def _table_exists(conn: Connection, name: str) -> bool:
    if is_postgres(conn):
        return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (name,)).fetchone()
    return row is not None


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, sqlite3.Row]:
    return {row["name"]: row for row in conn.execute(f"PRAGMA table_info({table})")}


def _adopt_legacy_deals(conn: sqlite3.Connection, v1_script: Path) -> None:
    """Bring a pre-migration deals table to the v1 columns in place (FAILURES D9)."""
    target = sqlite3.connect(":memory:")
    target.row_factory = sqlite3.Row
    target.executescript(v1_script.read_text(encoding="utf-8"))
    wanted = _columns(target, "deals")
    target.close()
    present = _columns(conn, "deals")
    blocking = [name for name, column in present.items()
                if name not in wanted and column["notnull"] and column["dflt_value"] is None]
    if blocking:
        raise MigrationError(f"the existing deals table has NOT NULL columns without a default "
                             f"that this code never fills: {', '.join(blocking)}")
    now = int(time.time())
    for name, column in wanted.items():
        if name in present:
            continue
        declaration = f'"{name}" {column["type"]}'
        if column["notnull"]:
            fill = now if name in _LEGACY_SEEN_COLUMNS else _LEGACY_FILL[name]
            declaration += f" NOT NULL DEFAULT {fill}"
        conn.execute(f"ALTER TABLE deals ADD COLUMN {declaration}")
    if not _asin_is_unique(conn):
        try:
            conn.execute("CREATE UNIQUE INDEX deals_asin ON deals (asin)")
        except sqlite3.IntegrityError:
            raise MigrationError("the existing deals table holds duplicate ASINs; "
                                 "deduplicate them, then migrate again") from None


def _asin_is_unique(conn: sqlite3.Connection) -> bool:
    for index in conn.execute("PRAGMA index_list(deals)").fetchall():
        if index["unique"]:
            names = [c["name"] for c in conn.execute(f'PRAGMA index_info("{index["name"]}")')]
            if names == ["asin"]:
                return True
    return False


# --------------------------------------------------------------------------- deals

_INSERT_SQL = (f"INSERT INTO deals ({', '.join(DEAL_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(DEAL_COLUMNS))})")
_LAST_UPDATE_AT = DEAL_COLUMNS.index("last_update_at")
_FIRST_SEEN_AT = DEAL_COLUMNS.index("first_seen_at")
_LAST_SEEN_AT = DEAL_COLUMNS.index("last_seen_at")
_STICKY_AT = tuple(i for i, name in enumerate(DEAL_COLUMNS) if name in STICKY_COLUMNS)
_CATEGORIES_AT = DEAL_FIELDS.index("categories")
_fields_before_categories = attrgetter(*DEAL_FIELDS[:_CATEGORIES_AT])
_fields_after_categories = attrgetter(*DEAL_FIELDS[_CATEGORIES_AT + 1:])


def upsert_deals(conn: Connection, records: Sequence[DealRecord], *, source: str,
                 seen_at: int | None = None) -> UpsertResult:
    """Insert or update deals by ASIN inside the caller's transaction (not committed here).

    A record with an older `last_update_at` than the stored row never overwrites its data;
    equal or newer does, except that a missing (None) sticky column keeps the stored value (and
    an older record only fills the stored row's missing sticky columns). Every record counts as
    a sighting: last_seen_at becomes `seen_at` (default now) even when its data is older, since
    Keepa still lists the deal. first_seen_at is set on insert only. `source` is the task
    that wrote the row's current data.

    The rows are merged here and each UPDATE sets only the columns whose value changes:
    SQLite rewrites every index on a column named in SET, changed or not, and on the indexed
    deals table that is most of the cost of a write (bench/bench_ingest.py).
    """
    _require_transaction(conn, "upsert_deals")
    seen_at = int(time.time()) if seen_at is None else seen_at
    stored = _stored_rows(conn, [record.asin for record in records])
    merged = dict(stored)
    inserted = updated = 0
    moved: set[str] = set()
    for record in records:
        row = (*_fields_before_categories(record), _categories_json(record.categories),
               *_fields_after_categories(record), seen_at, seen_at, source)
        previous = merged.get(record.asin)
        if previous is None:
            inserted += 1
            merged[record.asin] = row
            continue
        merged[record.asin] = _merge(previous, row)
        updated += _data_differs(previous, merged[record.asin])
        if record.asin in stored and row[_LAST_UPDATE_AT] > stored[record.asin][_LAST_UPDATE_AT]:
            moved.add(record.asin)
    _write_merged(conn, stored, merged)
    return UpsertResult(inserted, updated, len(records) - inserted - updated,
                        frozenset(merged) - frozenset(stored), frozenset(moved))


def _merge(stored: tuple, sighting: tuple) -> tuple:
    """The row after a sighting (both in DEAL_COLUMNS order), by the rules of upsert_deals."""
    newer = sighting[_LAST_UPDATE_AT] >= stored[_LAST_UPDATE_AT]
    row, fallback = (list(sighting), stored) if newer else (list(stored), sighting)
    for i in _STICKY_AT:
        if row[i] is None:
            row[i] = fallback[i]
    row[_FIRST_SEEN_AT] = stored[_FIRST_SEEN_AT]
    row[_LAST_SEEN_AT] = max(stored[_LAST_SEEN_AT], sighting[_LAST_SEEN_AT])
    return tuple(row)


def _data_differs(before: tuple, after: tuple) -> bool:
    """Whether anything but the sighting time changed."""
    return (before[:_LAST_SEEN_AT] != after[:_LAST_SEEN_AT]
            or before[_LAST_SEEN_AT + 1:] != after[_LAST_SEEN_AT + 1:])


def _write_merged(conn: Connection, stored: dict[str, tuple],
                  merged: dict[str, tuple]) -> None:
    """INSERT the new rows; UPDATE stored rows, grouped by the set of columns that changed."""
    if is_postgres(conn):
        _write_merged_postgres(conn, stored, merged)
        return
    inserts = []
    updates: dict[tuple[int, ...], list[tuple]] = {}
    for asin, row in merged.items():
        before = stored.get(asin)
        if before is None:
            inserts.append(row)
            continue
        changed = tuple(i for i in range(1, len(row)) if row[i] != before[i])
        if changed:
            updates.setdefault(changed, []).append((*(row[i] for i in changed), asin))
    conn.executemany(_INSERT_SQL, inserts)
    for changed, rows in updates.items():
        assignments = ", ".join(f"{DEAL_COLUMNS[i]} = ?" for i in changed)
        conn.executemany(f"UPDATE deals SET {assignments} WHERE asin = ?", rows)


# PostgreSQL: a page of rows goes in as one array per column (one statement, one round trip).
_POSTGRES_TEXT_COLUMNS = frozenset({"asin", "title", "image_url", "categories", "category_name",
                                    "brand", "source"})
_POSTGRES_ARRAY_TYPES = tuple(
    "text[]" if name in _POSTGRES_TEXT_COLUMNS else "float8[]" if name == "rating" else "int8[]"
    for name in DEAL_COLUMNS)
_UPSERT_SQL = (
    f"INSERT INTO deals ({', '.join(DEAL_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"?::{array_type}" for array_type in _POSTGRES_ARRAY_TYPES)
    + ") ON CONFLICT (asin) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in DEAL_COLUMNS[1:])
    + " WHERE excluded.last_update_at >= deals.last_update_at")


def _write_merged_postgres(conn, stored: dict[str, tuple], merged: dict[str, tuple]) -> None:
    """One newer-wins upsert of every new or changed row. On PostgreSQL an UPDATE writes a new
    row version whatever its SET names, so the rows need no grouping by changed columns; the
    WHERE keeps a row whose stored lastUpdate is newer (the merge already never lowers it)."""
    rows = [row for asin, row in merged.items() if stored.get(asin) != row]
    if rows:
        conn.execute(_UPSERT_SQL, [list(column) for column in zip(*rows, strict=True)])


def _stored_rows(conn: Connection, asins: Sequence[str]) -> dict[str, tuple]:
    """{asin: row in DEAL_COLUMNS order} for those of `asins` already stored."""
    return {row[0]: tuple(row) for row in
            _select_by_asin(conn, ", ".join(DEAL_COLUMNS), asins)}


def _select_by_asin(conn: Connection, columns: str,
                    asins: Iterable[str]) -> Iterator[sqlite3.Row]:
    unique = list(dict.fromkeys(asins))
    for start in range(0, len(unique), _SQL_VARIABLES_PER_QUERY):
        chunk = unique[start:start + _SQL_VARIABLES_PER_QUERY]
        yield from conn.execute(f"SELECT {columns} FROM deals "
                                f"WHERE asin IN ({', '.join('?' * len(chunk))})", chunk)


def _categories_json(categories: tuple[int, ...]) -> str | None:
    """A JSON array of the category ids; None (unknown, keeps a stored value) when empty."""
    return f"[{','.join(map(str, categories))}]" if categories else None


def deal_versions(conn: Connection, asins: Iterable[str]
                  ) -> dict[str, tuple[int, int | None]]:
    """{asin: (last_update_at, enriched_at)} for those of `asins` already stored."""
    return {asin: (last_update, enriched) for asin, last_update, enriched
            in _select_by_asin(conn, "asin, last_update_at, enriched_at", asins)}


# --------------------------------------------------------------------------- enrichment

# Columns that /product data fill (deals.enrich); an enrichment write touches only these, so it
# never overwrites the deal prices a newer page wrote meanwhile.
ENRICHED_COLUMNS = ("title", "brand", "category_name", "root_category", "categories",
                    "image_url", "list_price_cents", "rating", "review_count", "enriched_at")
_ENRICHMENT_TIERS = (
    # (reason, condition, order), most urgent first; indexes of migration 0004 serve each.
    ("new", "enriched_at IS NULL", "deal_created_at DESC"),
    ("changed", "enriched_update_at < last_update_at", "enriched_at"),
    ("refresh", "enriched_at < :stale_before", "enriched_at"),
)


@dataclass(frozen=True)
class QueuedDeal:
    """A deal waiting for /product data: why (new | changed | refresh) and the lastUpdate the
    enrichment will be fetched for."""

    asin: str
    reason: str
    last_update_at: int


def enrichment_queue(conn: Connection, limit: int, *, stale_before: int,
                     seen_since: int) -> list[QueuedDeal]:
    """Up to `limit` deals to enrich, most urgent first: never enriched (newest deal first),
    lastUpdate moved since the enrichment (oldest enrichment first), enrichment older than
    `stale_before` (oldest first). Only deals seen at or after `seen_since` (still listed by
    Keepa) qualify; an unchanged deal enriched at or after `stale_before` never does."""
    queued: dict[str, QueuedDeal] = {}
    for reason, condition, order in _ENRICHMENT_TIERS:
        wanted = limit - len(queued)
        if wanted <= 0:
            break
        rows = conn.execute(
            f"SELECT asin, last_update_at FROM deals WHERE {condition} "
            f"AND last_seen_at >= :seen_since ORDER BY {order} LIMIT :limit",
            {"stale_before": stale_before, "seen_since": seen_since,
             "limit": wanted + len(queued)})
        for asin, last_update in rows:
            if asin not in queued and len(queued) < limit:
                queued[asin] = QueuedDeal(asin, reason, last_update)
    return list(queued.values())


def deal_records(conn: Connection, asins: Iterable[str]) -> dict[str, DealRecord]:
    """{asin: the stored row as a DealRecord} for those of `asins` that are stored."""
    records = {}
    for row in _select_by_asin(conn, ", ".join(DEAL_FIELDS), asins):
        values = dict(row)
        values["categories"] = tuple(json.loads(values["categories"] or "[]"))
        records[row["asin"]] = DealRecord(**values)
    return records


def record_enrichment(conn: Connection, records: Sequence[DealRecord], *,
                      enriched_for: dict[str, int]) -> None:
    """Write the product columns and enriched_at of enriched `records` inside the caller's
    transaction, with enriched_update_at = enriched_for[asin] (the lastUpdate the /product call
    was made for). Deal prices and lastUpdate are left as they are."""
    _require_transaction(conn, "record_enrichment")
    assignments = ", ".join(f"{name} = ?" for name in ENRICHED_COLUMNS)
    conn.executemany(
        f"UPDATE deals SET {assignments}, enriched_update_at = ? WHERE asin = ?",
        [(*(_column_value(record, name) for name in ENRICHED_COLUMNS),
          enriched_for[record.asin], record.asin) for record in records])


def _column_value(record: DealRecord, name: str):
    value = getattr(record, name)
    return _categories_json(value) if name == "categories" else value


def enrichment_coverage(conn: Connection, *, enriched_since: int) -> tuple[int, int]:
    """(deals enriched at or after `enriched_since`, all deals)."""
    return _counted_since(conn, "enriched", enriched_since), deal_count(conn)


# --------------------------------------------------------------------------- freshness

def add_freshness_samples(conn: Connection, samples: Iterable[tuple[str, int]], *,
                          recorded_at: int) -> None:
    """Record (kind, lag_s) samples, kind "new" or "changed", inside the caller's transaction."""
    _require_transaction(conn, "add_freshness_samples")
    conn.executemany("INSERT INTO freshness_samples (recorded_at, kind, lag_s) VALUES (?, ?, ?)",
                     [(recorded_at, kind, lag) for kind, lag in samples])


def freshness_lags(conn: Connection, kind: str, *, since: int) -> list[int]:
    """The lags (seconds) of `kind` samples recorded at or after `since`, smallest first."""
    return [lag for (lag,) in conn.execute(
        "SELECT lag_s FROM freshness_samples WHERE kind = ? AND recorded_at >= ? ORDER BY lag_s",
        (kind, since))]


def prune_freshness_samples(conn: Connection, *, recorded_before: int) -> int:
    """Delete samples recorded before `recorded_before` (caller's transaction); how many."""
    _require_transaction(conn, "prune_freshness_samples")
    return conn.execute("DELETE FROM freshness_samples WHERE recorded_at < ?",
                        (recorded_before,)).rowcount


def deal_count(conn: Connection) -> int:
    """The deal count: every row of `deals`, no filter (FAILURES D12). PostgreSQL reads it
    from deal_hours (migration 0005: kept exact by triggers in the writing transaction)."""
    if is_postgres(conn):
        return conn.execute("SELECT CAST(COALESCE(SUM(deals), 0) AS BIGINT) FROM deal_hours "
                            "WHERE kind = 'first_seen'").fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM deals").fetchone()[0]


def deals_added_since(conn: Connection, since: int) -> int:
    """Deals first seen at or after `since`."""
    return _counted_since(conn, "first_seen", since)


def deals_first_seen_per_hour(conn: Connection, first: int, end: int) -> dict[int, int]:
    """{hour start: deals first seen in that hour} for the whole hours in [first, end)."""
    if is_postgres(conn):
        return dict(conn.execute("SELECT hour, deals FROM deal_hours WHERE kind = 'first_seen' "
                                 "AND hour >= ? AND hour < ? AND deals <> 0", (first, end)))
    return dict(conn.execute(
        "SELECT first_seen_at / 3600 * 3600 AS hour, COUNT(*) FROM deals "
        "WHERE first_seen_at >= ? AND first_seen_at < ? GROUP BY hour", (first, end)))


_HOUR_S = 3600
_COUNTED_COLUMNS = {"first_seen": "first_seen_at", "enriched": "enriched_at"}


def _counted_since(conn, kind: str, since: int) -> int:
    """Deals whose `kind` time is at or after `since`: on PostgreSQL the whole hours from
    deal_hours plus the rows of the partial hour before them, on the column's index."""
    column = _COUNTED_COLUMNS[kind]
    if not is_postgres(conn):
        return conn.execute(f"SELECT COUNT(*) FROM deals WHERE {column} >= ?",
                            (since,)).fetchone()[0]
    next_hour = -(-since // _HOUR_S) * _HOUR_S
    whole = conn.execute("SELECT CAST(COALESCE(SUM(deals), 0) AS BIGINT) FROM deal_hours "
                         "WHERE kind = ? AND hour >= ?", (kind, next_hour)).fetchone()[0]
    partial = conn.execute(f"SELECT COUNT(*) FROM deals WHERE {column} >= ? AND {column} < ?",
                           (since, next_hour)).fetchone()[0]
    return whole + partial


def newest_deal(conn: Connection) -> Any:
    """The most recently first-seen deal (None when there is none)."""
    return conn.execute("SELECT * FROM deals ORDER BY first_seen_at DESC, asin LIMIT 1"
                        ).fetchone()


# --------------------------------------------------------------------------- pipeline state

def get_state(conn: Connection, name: str, default: Any = None) -> Any:
    """The decoded JSON value stored under `name`, or `default` when never written."""
    row = conn.execute("SELECT value FROM pipeline_state WHERE name = ?", (name,)).fetchone()
    return default if row is None else json.loads(row[0])


def set_state(conn: Connection, name: str, value: Any) -> None:
    """Store a JSON-serialisable value under `name` inside the caller's transaction."""
    _require_transaction(conn, "set_state")
    try:
        encoded = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"pipeline state {name!r} is not JSON-serialisable: {exc}") from None
    conn.execute("INSERT INTO pipeline_state (name, value, updated_at) VALUES (?, ?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                 "updated_at = excluded.updated_at", (name, encoded, int(time.time())))


def take_fence(conn: Connection, lock_name: str) -> int:
    """Make the caller the newest holder of `lock_name` for this database: bump and return the
    lock's fencing number (its own transaction). Call right after acquiring the lease."""
    name = FENCE_STATE_PREFIX + lock_name
    with transaction(conn):
        fence = get_state(conn, name, 0) + 1
        set_state(conn, name, fence)
    return fence


def holds_fence(conn: Connection, lock_name: str, fence: int) -> bool:
    """Whether `fence` is still the newest fencing number of `lock_name`. Checked inside a write
    transaction, it fences the write: a holder that slept past its lease (SIGSTOP, a long pause)
    while a successor took the fence cannot overwrite the successor's work."""
    return get_state(conn, FENCE_STATE_PREFIX + lock_name, 0) == fence


# --------------------------------------------------------------------------- runs

def start_run(conn: Connection, task: str, *, host: str, pid: int,
              revision: str | None) -> int:
    """Record a run as "running" (committed at once outside a transaction); returns its id."""
    return conn.execute(
        "INSERT INTO runs (task, started_at, outcome, host, pid, revision) "
        "VALUES (?, ?, 'running', ?, ?, ?) RETURNING id",
        (task, int(time.time()), host, pid, revision)).fetchone()[0]


def finish_run(conn: Connection, run_id: int, *, outcome: str, deals_written: int,
               tokens_spent: int, error: str | None = None, detail: Any = None) -> None:
    """Record how a run ended; `outcome` is one of RUN_OUTCOMES, `detail` JSON-serialisable."""
    if outcome not in RUN_OUTCOMES:
        raise ValueError(f"run outcome must be one of {sorted(RUN_OUTCOMES)}, got {outcome!r}")
    encoded = None if detail is None else json.dumps(detail, default=str)
    cursor = conn.execute(
        "UPDATE runs SET ended_at = ?, outcome = ?, deals_written = ?, tokens_spent = ?, "
        "error = ?, detail = ? WHERE id = ?",
        (int(time.time()), outcome, deals_written, tokens_spent, error, encoded, run_id))
    if cursor.rowcount != 1:
        raise LookupError(f"run {run_id} does not exist")


def recent_runs(conn: Connection, limit: int = 20, task: str | None = None
                ) -> list[Run]:
    """The newest runs first, of one task or of all."""
    if task is None:
        rows = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute("SELECT * FROM runs WHERE task = ? ORDER BY id DESC LIMIT ?",
                            (task, limit))
    return [_run(row) for row in rows]


def prune_runs(conn: Connection, *, ended_before: int, keep_per_task: int) -> int:
    """Delete finished runs that ended before `ended_before`, except each task's newest
    `keep_per_task` runs and its last successful one (health and the janitor read it).
    Runs inside the caller's transaction; returns how many were deleted."""
    _require_transaction(conn, "prune_runs")
    return conn.execute(
        "DELETE FROM runs WHERE id IN ("
        " SELECT id FROM (SELECT id, outcome, ended_at, ROW_NUMBER() OVER"
        "  (PARTITION BY task ORDER BY id DESC) AS newness FROM runs) AS numbered"
        " WHERE newness > ? AND outcome != 'running' AND ended_at < ?)"
        " AND id NOT IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
        "  (PARTITION BY task ORDER BY ended_at DESC, id DESC) AS recency FROM runs"
        "  WHERE outcome = 'ok') AS successes WHERE recency = 1)",
        (keep_per_task, ended_before)).rowcount


def run_details_since(conn: Connection, task: str, since: int) -> list[Any]:
    """The decoded `detail` of the task's runs that ended at or after `since`."""
    return [json.loads(detail) for (detail,) in conn.execute(
        "SELECT detail FROM runs WHERE task = ? AND ended_at >= ? AND detail IS NOT NULL",
        (task, since))]


def first_run_end_with(conn: Connection, task: str, counter: str) -> int | None:
    """When the task's first run whose detail has `counter` > 0 ended; None when none did."""
    positive = ("CAST(CAST(detail AS json) ->> ? AS integer) > 0" if is_postgres(conn)
                else "json_extract(detail, '$.' || ?) > 0")
    return conn.execute(f"SELECT MIN(ended_at) FROM runs WHERE task = ? AND {positive}",
                        (task, counter)).fetchone()[0]


def last_successful_run(conn: Connection, task: str) -> Run | None:
    """The task's run with outcome "ok" that ended last, or None."""
    row = conn.execute("SELECT * FROM runs WHERE task = ? AND outcome = 'ok' "
                       "ORDER BY ended_at DESC LIMIT 1", (task,)).fetchone()
    return None if row is None else _run(row)


def _run(row: sqlite3.Row) -> Run:
    values = dict(row)
    values["detail"] = None if row["detail"] is None else json.loads(row["detail"])
    return Run(**values)
