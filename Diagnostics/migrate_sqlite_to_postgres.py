"""Copy a SQLite deal store into PostgreSQL: resumable, verified row by row, newer rows kept.

Usage: .venv/bin/python Diagnostics/migrate_sqlite_to_postgres.py [--sqlite PATH]
           [--postgres URL] [--batch-size N] [--max-batches N] [--verify-only]

--sqlite defaults to DATABASE_PATH (var/deals.db), --postgres to DATABASE_URL. Stop the
pipeline's writers first (or run the tool again once they are stopped: a later run copies what
changed meanwhile).

Contracts:

* The SQLite store is only read (a read-only connection) and must be at this code's schema
  version; PostgreSQL is migrated to it first (db.migrate). --verify-only writes nothing.
* deals, runs, pipeline_state, freshness_samples and janitor_removals are copied in keyset
  batches (by asin, id or name). Each batch and the tool's progress (the last key copied, in
  PostgreSQL's `sqlite_import_progress` table, the tool's own) commit in one transaction, the
  store's write turn, so a pipeline already writing PostgreSQL takes turns with the copy. A
  killed run continues after its last committed batch; a finished copy forgets its progress, so
  a later run reads everything again and writes only what is missing or newer in SQLite: run
  twice, the second writes nothing. Ctrl-C lets the batch in progress commit, then stops; a
  second Ctrl-C stops at once (the batch rolls back).
* Newer rows win. A deal is replaced only when SQLite's (last_update_at, last_seen_at) is
  greater than PostgreSQL's: Keepa's version of the deal first, then the later sighting. On a
  tie PostgreSQL's row stays, so an identical row is never rewritten. A pipeline_state value is
  replaced only when SQLite's updated_at is later. Rows of runs, freshness_samples and
  janitor_removals are copied by id and never replace a PostgreSQL row; their identity
  sequences are moved past the highest id (SQLite's and PostgreSQL's) before and after the copy,
  so runs started on PostgreSQL never take an id of a copied row.
* Verification (after every complete copy, or alone with --verify-only) streams each table from
  both databases in key order (text keys in byte order, as SQLite's BINARY collation and
  PostgreSQL's "C" collation sort), compares every row, and prints per table: rows equal, kept
  newer in PostgreSQL (by the rules above), missing, different, only in PostgreSQL, and the
  sha256 of each side's rows (equal exactly when the tables are). Rows missing or different
  without being newer in PostgreSQL fail it.

URLs carry passwords: messages show redact_url(url) and scrub the password from server errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from Diagnostics._cli import fail, parser, scrub
from keepa_deals import db, postgres
from keepa_deals.config import ConfigError, load_settings, password_forms, redact_url

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_CONFIG = 3
EXIT_SQLITE = 4
EXIT_POSTGRES = 5
EXIT_SCHEMA = 6
EXIT_STOPPED = 7
EXIT_INTERRUPTED = 130

DEFAULT_BATCH_SIZE = 1000
CONNECT_TIMEOUT_S = 10
PROGRESS_EVERY_S = 10.0  # a long table's copy says how far it got this often
STREAM_ROWS = 2000  # rows fetched at a time while PostgreSQL's side is verified
EXAMPLES_PER_TABLE = 3  # missing or different keys named in the report
PROGRESS_TABLE = "sqlite_import_progress"

_EPILOG = """\
exit codes:
  0    copied (or, with --verify-only, verified): every SQLite row is in PostgreSQL, equal or
       kept newer there
  1    verification failed: rows are missing in PostgreSQL or differ without being newer there
  2    bad command-line usage
  3    the configuration (.env / environment) is invalid, or no PostgreSQL URL is given
  4    the SQLite store is missing or unreadable
  5    PostgreSQL is unreachable, refused the login, or failed mid-way (committed batches are
       kept: run again to continue)
  6    schema mismatch: the SQLite store is not at this code's schema version, or PostgreSQL's
       is newer than the code (or, with --verify-only, not migrated yet)
  7    stopped after --max-batches before the copy finished: run again to continue
  130  interrupted (Ctrl-C): the copy stopped after the batch in progress committed (a second
       Ctrl-C stops at once, the batch rolled back); run again to continue
"""


@dataclass(frozen=True)
class Table:
    """How one table is copied and compared. `key` orders the keyset batches and is the
    conflict target: an integer identity column `id`, else a text key compared in byte order.
    A row is replaced only when its `newer_by` columns, as a tuple, are greater in SQLite;
    without them rows are never replaced. `columns` (key first) are read from the databases."""

    name: str
    key: str
    newer_by: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    @property
    def identity(self) -> bool:
        return self.key == "id"


TABLES = (
    Table("deals", "asin", newer_by=("last_update_at", "last_seen_at")),
    Table("runs", "id"),
    Table("pipeline_state", "name", newer_by=("updated_at",)),
    Table("freshness_samples", "id"),
    Table("janitor_removals", "id"),
)

_PROGRESS_DDL = f"""CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    source TEXT NOT NULL,        -- the SQLite file copied (resolved path)
    table_name TEXT NOT NULL,
    last_key TEXT,               -- JSON of the last key committed; NULL: none yet
    done BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, table_name))"""


class _Failure(Exception):
    """Stops the tool: a one-line message without secrets, and the exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Check:
    """One table compared by key: SQLite's rows against PostgreSQL's."""

    table: str
    sqlite_rows: int = 0
    postgres_rows: int = 0
    equal: int = 0
    kept_newer: int = 0
    missing: int = 0
    different: int = 0
    only_in_postgres: int = 0
    examples: list[str] = field(default_factory=list)
    sqlite_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    postgres_sha: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different)

    def example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES_PER_TABLE:
            self.examples.append(text)


class _Stopper:
    """When a copy stops early: after --max-batches batches, or at Ctrl-C (SIGINT), which lets
    the batch in progress commit first; a second Ctrl-C interrupts at once (rolled back)."""

    def __init__(self, max_batches: int | None):
        self.left = max_batches
        self.interrupted = False

    def take(self) -> bool:
        """Whether one more batch may be written (counted when it may)."""
        if self.interrupted or self.left == 0:
            return False
        if self.left is not None:
            self.left -= 1
        return True

    @contextmanager
    def ctrl_c_between_batches(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _interrupt(self, _signum, _frame) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    cli = _parser()
    args = cli.parse_args(argv)
    if args.postgres is not None and not postgres.is_url(args.postgres):
        cli.error("--postgres: expected a postgresql:// URL")
    # After Ctrl-C the pool warns that it rolls back or closes the connection it gets back
    # mid-batch: what the one-line message already says.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        return _run(args)
    except _Failure as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted: nothing half-written is kept (a batch commits whole); run "
                    "again to continue", EXIT_INTERRUPTED)
    finally:
        postgres.close_pools()


def _parser() -> argparse.ArgumentParser:
    cli = parser(
        "migrate_sqlite_to_postgres.py", epilog=_EPILOG,
        description="Copy a SQLite deal store (deals, runs, pipeline state, freshness samples, "
                    "janitor removals) into PostgreSQL in resumable batches, never replacing a "
                    "row that is newer in PostgreSQL, then verify both row by row (counts and "
                    "sha256 checksums).")
    cli.add_argument("--sqlite", metavar="PATH", type=Path,
                     help="the SQLite store to copy (default: DATABASE_PATH)")
    cli.add_argument("--postgres", metavar="URL",
                     help="the PostgreSQL database to copy into (default: DATABASE_URL)")
    cli.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, metavar="N",
                     help=f"rows per batch and transaction (default {DEFAULT_BATCH_SIZE})")
    cli.add_argument("--max-batches", type=_positive, metavar="N",
                     help="stop after N batches (a trial run; run again to continue)")
    cli.add_argument("--verify-only", action="store_true",
                     help="copy nothing, write nothing: only compare the two databases")
    return cli


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    sqlite_path, url = _locations(args)
    with _errors(sqlite_path, url), closing(_open_sqlite(sqlite_path)) as sqlite_conn:
        _require_sqlite_schema(sqlite_conn, sqlite_path)
        with closing(_open_postgres(url, readonly=args.verify_only)) as pg:
            _prepare_postgres(pg, verify_only=args.verify_only)
            print(f"{'verifying' if args.verify_only else 'copying'} SQLite {sqlite_path} -> "
                  f"PostgreSQL {redact_url(url)} (schema version {db.latest_version()})",
                  flush=True)
            tables = [_with_columns(sqlite_conn, pg, table) for table in TABLES]
            if not args.verify_only:
                stopper = _Stopper(args.max_batches)
                with stopper.ctrl_c_between_batches():
                    complete = _copy(sqlite_conn, pg, tables, batch_size=args.batch_size,
                                     source=str(sqlite_path.resolve()), stopper=stopper)
                if stopper.interrupted:
                    raise _Failure("interrupted: the copy stopped after its last committed "
                                   "batch; run again to continue", EXIT_INTERRUPTED)
                if not complete:
                    print(f"stopped after {args.max_batches} batches as asked; run again to "
                          "continue", flush=True)
                    return EXIT_STOPPED
            checks = [_check_table(sqlite_conn, pg, table) for table in tables]
    return _verdict(checks)


def _locations(args: argparse.Namespace) -> tuple[Path, str]:
    """(SQLite path, PostgreSQL URL): the options, else DATABASE_PATH and DATABASE_URL."""
    sqlite_path, url = args.sqlite, args.postgres
    if sqlite_path is None or url is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            raise _Failure(str(exc), EXIT_CONFIG) from None
        sqlite_path = sqlite_path or settings.database_path
        url = url or settings.database_url
    if url is None:
        raise _Failure("no PostgreSQL database: pass --postgres URL or set DATABASE_URL",
                       EXIT_CONFIG)
    return sqlite_path, url


@contextmanager
def _errors(sqlite_path: Path, url: str) -> Iterator[None]:
    """Database errors and schema mismatches as one-line _Failures, the password scrubbed."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _Failure(f"SQLite store {sqlite_path}: {_one_line(str(exc))}", EXIT_SQLITE) from None
    except db.MigrationError as exc:
        raise _Failure(f"PostgreSQL at {redact_url(url)}: {exc}", EXIT_SCHEMA) from None
    except postgres.Error as exc:
        raise _Failure(f"PostgreSQL at {redact_url(url)} failed: {_scrubbed(exc, url)} "
                       "(committed batches are kept: run again to continue)",
                       EXIT_POSTGRES) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scrubbed(exc: Exception, url: str) -> str:
    """The error's text on one line, without the URL's password (in any spelling)."""
    return scrub(_one_line(str(exc)), *password_forms(url))


# --------------------------------------------------------------------------- connections

def _open_sqlite(path: Path) -> sqlite3.Connection:
    try:
        conn = db.readonly_connect(path)
    except FileNotFoundError:
        raise _Failure(f"SQLite store {path} does not exist (pass --sqlite PATH or set "
                       "DATABASE_PATH)", EXIT_SQLITE) from None
    return conn


def _require_sqlite_schema(conn: sqlite3.Connection, path: Path) -> None:
    current, latest = db.schema_version(conn), db.latest_version()
    if current < latest:
        raise _Failure(f"SQLite store {path} is at schema version {current}, this code's is "
                       f"{latest}: migrate it first with `DATABASE_PATH={path} "
                       ".venv/bin/python -m keepa_deals.ops migrate`", EXIT_SCHEMA)
    if current > latest:
        raise _Failure(f"SQLite store {path} is at schema version {current}, newer than this "
                       f"code's {latest}: run the tool of the newer code", EXIT_SCHEMA)


def _open_postgres(url: str, *, readonly: bool) -> postgres.PgConnection:
    """A store connection to `url`, after one direct attempt that turns an unreachable server or
    a refused login into a clear message at once (the pool would only time out)."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        raise _Failure(f"cannot connect to PostgreSQL at {redact_url(url)}: "
                       f"{_scrubbed(exc, url)}", EXIT_POSTGRES) from None
    if readonly:
        return db.readonly_connect(url, busy_timeout_s=CONNECT_TIMEOUT_S)
    return db.connect(url, busy_timeout_s=CONNECT_TIMEOUT_S)


def _prepare_postgres(pg: postgres.PgConnection, *, verify_only: bool) -> None:
    """Migrate PostgreSQL's schema and create the progress table; with --verify-only only
    require the schema to match."""
    if verify_only:
        current, latest = db.schema_version(pg), db.latest_version()
        if current != latest:
            raise _Failure(f"PostgreSQL is at schema version {current}, this code's is "
                           f"{latest}: run the copy (it migrates) before --verify-only",
                           EXIT_SCHEMA)
        return
    db.migrate(pg)
    with db.transaction(pg):
        pg.execute(_PROGRESS_DDL)


def _with_columns(sqlite_conn: sqlite3.Connection, pg: postgres.PgConnection,
                  table: Table) -> Table:
    """`table` with its columns (key first, then SQLite's order), which both databases must
    have alike."""
    in_sqlite = [row["name"] for row in sqlite_conn.execute(f"PRAGMA table_info({table.name})")]
    in_postgres = [row[0] for row in pg.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table.name,))]
    if set(in_sqlite) != set(in_postgres) or not in_sqlite:
        only_sqlite = sorted(set(in_sqlite) - set(in_postgres)) or ["-"]
        only_postgres = sorted(set(in_postgres) - set(in_sqlite)) or ["-"]
        raise _Failure(f"table {table.name} differs between the databases (columns only in "
                       f"SQLite: {', '.join(only_sqlite)}; only in PostgreSQL: "
                       f"{', '.join(only_postgres)})", EXIT_SCHEMA)
    return replace(table, columns=(table.key, *(c for c in in_sqlite if c != table.key)))


# --------------------------------------------------------------------------- copy

def _copy(sqlite_conn: sqlite3.Connection, pg: postgres.PgConnection, tables: list[Table], *,
          source: str, batch_size: int, stopper: _Stopper) -> bool:
    """Copy every table, continuing an unfinished run of the same source; False when the
    `stopper` stopped it first. A finished copy forgets its progress."""
    progress = _load_progress(pg, source)
    for table in tables:
        if not _copy_table(sqlite_conn, pg, table, progress.get(table.name, (None, False)),
                           source=source, batch_size=batch_size, stopper=stopper):
            return False
    with db.transaction(pg):
        pg.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE source = ?", (source,))
    return True


def _copy_table(sqlite_conn: sqlite3.Connection, pg: postgres.PgConnection, table: Table,
                progress: tuple[object, bool], *, source: str, batch_size: int,
                stopper: _Stopper) -> bool:
    """Copy one table after the key in `progress` (key, done); False when `stopper` stopped
    it first."""
    key, done = progress
    if done:
        print(f"{table.name}: already copied by the earlier run that stopped", flush=True)
        return True
    if key is not None:
        print(f"{table.name}: resuming after {key!r}, where an earlier run stopped", flush=True)
    if table.identity:
        _advance_identity(pg, table, _sqlite_max_id(sqlite_conn, table))
    upsert, read, written = _upsert_sql(table), 0, 0
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while True:
        rows = _read_batch(sqlite_conn, table, key, batch_size)
        if rows and not stopper.take():
            _say_copied(table, read, written, complete=False)
            return False
        last = len(rows) < batch_size
        key = rows[-1][0] if rows else key
        written += _commit_batch(pg, table, upsert, rows, source=source, key=key, done=last)
        read += len(rows)
        if last:
            break
        if time.monotonic() >= next_report:
            print(f"{table.name}: {read} rows so far, up to {key!r}", flush=True)
            next_report = time.monotonic() + PROGRESS_EVERY_S
    if table.identity:
        _advance_identity(pg, table, _sqlite_max_id(sqlite_conn, table))
    _say_copied(table, read, written, complete=True)
    return True


def _read_batch(conn: sqlite3.Connection, table: Table, after: object,
                batch_size: int) -> list[tuple]:
    """The next `batch_size` SQLite rows after key `after` (None: from the first), in key
    order (byte order for text keys)."""
    where, params = ("", (batch_size,)) if after is None else \
        (f"WHERE {table.key} > ? ", (after, batch_size))
    return [tuple(row) for row in conn.execute(
        f"SELECT {', '.join(table.columns)} FROM {table.name} {where}"
        f"ORDER BY {table.key} LIMIT ?", params)]


def _upsert_sql(table: Table) -> str:
    """INSERT of a row that never replaces a PostgreSQL row unless `newer_by` says SQLite's is
    newer (the module's "newer rows win")."""
    insert = (f"INSERT INTO {table.name} ({', '.join(table.columns)}) "
              f"VALUES ({', '.join('?' * len(table.columns))}) ON CONFLICT ({table.key}) ")
    if not table.newer_by:
        return insert + "DO NOTHING"
    assignments = ", ".join(f"{c} = excluded.{c}" for c in table.columns[1:])
    sqlite_side = ", ".join(f"excluded.{c}" for c in table.newer_by)
    postgres_side = ", ".join(f"{table.name}.{c}" for c in table.newer_by)
    return insert + f"DO UPDATE SET {assignments} WHERE ({sqlite_side}) > ({postgres_side})"


def _commit_batch(pg: postgres.PgConnection, table: Table, upsert: str, rows: list[tuple], *,
                  source: str, key: object, done: bool) -> int:
    """Write `rows` and the progress (`key`, `done`) in one transaction; rows written."""
    with db.transaction(pg):
        written = pg.executemany(upsert, rows).rowcount if rows else 0
        pg.execute(f"INSERT INTO {PROGRESS_TABLE} "
                   "(source, table_name, last_key, done, updated_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (source, table_name) DO UPDATE SET last_key = excluded.last_key, "
                   "done = excluded.done, updated_at = excluded.updated_at",
                   (source, table.name, None if key is None else json.dumps(key), done,
                    int(time.time())))
    return written


def _load_progress(pg: postgres.PgConnection, source: str) -> dict[str, tuple[object, bool]]:
    """{table: (last key committed or None, done)} of an unfinished copy of `source`."""
    return {name: (None if key is None else json.loads(key), done) for name, key, done in
            pg.execute(f"SELECT table_name, last_key, done FROM {PROGRESS_TABLE} "
                       "WHERE source = ?", (source,))}


def _sqlite_max_id(conn: sqlite3.Connection, table: Table) -> int:
    return conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table.name}").fetchone()[0]


def _advance_identity(pg: postgres.PgConnection, table: Table, floor: int) -> None:
    """Move the id sequence of `table` so the next generated id exceeds `floor`, every id in
    the table and every id already handed out; never backwards."""
    sequence = pg.execute("SELECT pg_get_serial_sequence(?, 'id')", (table.name,)).fetchone()[0]
    with db.transaction(pg):
        pg.execute(
            f"SELECT setval(?, GREATEST(?, (SELECT COALESCE(MAX(id), 0) FROM {table.name}), "
            f"(SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END FROM {sequence})) + 1, "
            "false)", (sequence, floor))


def _say_copied(table: Table, read: int, written: int, *, complete: bool) -> None:
    kept = "equal or newer in PostgreSQL" if table.newer_by else "id already in PostgreSQL"
    print(f"{table.name}: {read} rows read{'' if complete else ' so far'}, {written} written, "
          f"{read - written} left as they were ({kept})", flush=True)


# --------------------------------------------------------------------------- verification

def _check_table(sqlite_conn: sqlite3.Connection, pg: postgres.PgConnection,
                 table: Table) -> Check:
    """Compare the table's rows in both databases, streamed in the same key order."""
    check = Check(table.name)
    columns = ", ".join(table.columns)
    order = table.key if table.identity else f'{table.key} COLLATE "C"'
    sqlite_rows = sqlite_conn.execute(
        f"SELECT {columns} FROM {table.name} ORDER BY {table.key}")
    with pg.raw.transaction():
        cursor = pg.raw.cursor(name=f"verify_{table.name}")
        cursor.itersize = STREAM_ROWS
        cursor.execute(f"SELECT {columns} FROM {table.name} ORDER BY {order}")
        _merge(table, iter(sqlite_rows), iter(cursor), check)
    _say_checked(check)
    return check


def _merge(table: Table, sqlite_rows: Iterator, postgres_rows: Iterator, check: Check) -> None:
    """Walk both key-ordered row streams together, tallying each key into `check`. Python
    orders str by code point, which is UTF-8's byte order: the order of both streams."""
    mine, theirs = next(sqlite_rows, None), next(postgres_rows, None)
    while mine is not None or theirs is not None:
        if theirs is None or (mine is not None and mine[0] < theirs[0]):
            check.sqlite_sha.update(_encoded(mine))
            check.sqlite_rows += 1
            check.missing += 1
            check.example(f"{mine[0]!r} missing")
            mine = next(sqlite_rows, None)
        elif mine is None or theirs[0] < mine[0]:
            check.postgres_sha.update(_encoded(theirs))
            check.postgres_rows += 1
            check.only_in_postgres += 1
            theirs = next(postgres_rows, None)
        else:
            _compare(table, mine, theirs, check)
            mine, theirs = next(sqlite_rows, None), next(postgres_rows, None)


def _compare(table: Table, mine, theirs, check: Check) -> None:
    """Tally one key present in both: equal, kept newer in PostgreSQL, or different."""
    encoded_mine, encoded_theirs = _encoded(mine), _encoded(theirs)
    check.sqlite_sha.update(encoded_mine)
    check.postgres_sha.update(encoded_theirs)
    check.sqlite_rows += 1
    check.postgres_rows += 1
    if encoded_mine == encoded_theirs:
        check.equal += 1
    elif table.newer_by and _newness(table, theirs) > _newness(table, mine):
        check.kept_newer += 1
    else:
        check.different += 1
        columns = [c for c, a, b in zip(table.columns, mine, theirs, strict=True) if a != b]
        check.example(f"{mine[0]!r} differs in {', '.join(columns) or 'value types'}")


def _newness(table: Table, row) -> tuple:
    return tuple(row[table.columns.index(c)] for c in table.newer_by)


def _encoded(row) -> bytes:
    """A row's canonical bytes (its checksum input): a JSON array, UTF-8, one line."""
    return json.dumps(list(row), ensure_ascii=False, separators=(",", ":"),
                      default=repr).encode("utf-8") + b"\n"


def _say_checked(check: Check) -> None:
    print(f"verify {check.table}: SQLite {check.sqlite_rows} rows, PostgreSQL "
          f"{check.postgres_rows}: {check.equal} equal, {check.kept_newer} kept newer in "
          f"PostgreSQL, {check.missing} missing, {check.different} different; "
          f"{check.only_in_postgres} only in PostgreSQL", flush=True)
    sqlite_sha, postgres_sha = check.sqlite_sha.hexdigest(), check.postgres_sha.hexdigest()
    if sqlite_sha == postgres_sha:
        verdict = "equal"
    elif check.ok:
        verdict = "different, by design: only rows kept newer in or only in PostgreSQL differ"
    else:
        verdict = "different"
    print(f"  sha256 SQLite {sqlite_sha}\n  sha256 PostgreSQL {postgres_sha} ({verdict})")
    for example in check.examples:
        print(f"  {example}")


def _verdict(checks: list[Check]) -> int:
    """The summary line and the exit code."""
    deals = next(check for check in checks if check.table == "deals")
    failed = [check for check in checks if not check.ok]
    if not failed:
        print(f"verified: every SQLite row is in PostgreSQL, equal or kept newer there "
              f"({deals.equal} deals equal, {deals.kept_newer} kept newer in PostgreSQL, "
              f"0 missing)", flush=True)
        return EXIT_OK
    detail = "; ".join(f"{check.table}: {check.missing} missing, {check.different} different"
                       for check in failed)
    return fail(f"verification failed ({detail}): run the copy again (it writes what is missing "
                "or newer in SQLite); rows that still differ were changed in PostgreSQL or "
                "share an id with a different PostgreSQL row", EXIT_MISMATCH)


if __name__ == "__main__":
    sys.exit(main())
