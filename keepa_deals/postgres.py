"""PostgreSQL behind the deal store's connection interface (psycopg 3 with psycopg_pool).

The store (keepa_deals/db.py) is written against the small part of sqlite3's connection API it
needs: `execute`/`executemany` with `?` or `:name` parameters, rows readable by index and by
column name, `in_transaction` and `close()`. `PgConnection` offers the same on a pooled psycopg
connection, so one store implementation serves both backends:

* Parameters are translated once per statement text: `?` → `%s`, `:name` → `%(name)s`, a
  literal `%` → `%%`; quoted strings keep their text. A statement without parameters is sent
  as written.
* The connection is in autocommit mode; transactions are explicit, as with SQLite's
  isolation_level=None. `begin_write()` is SQLite's BEGIN IMMEDIATE: BEGIN, then a
  transaction-scoped advisory lock, so writers of one database take turns exactly as they do
  on SQLite and every read-merge-write of the store stays atomic across hosts.
* One pool per (URL, read-only, process): Celery's prefork children never share a socket with
  their parent. Connections are checked on checkout, so a restarted server heals by itself.

URLs carry passwords: nothing here puts a URL in a message; callers show `redact_url(url)`.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from typing import Any, ClassVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

URL_SCHEMES = ("postgresql://", "postgres://")
POOL_MAX_SIZE = 8
# The advisory lock key that serialises writing transactions (an arbitrary constant: "keepa").
WRITE_LOCK_KEY = 0x6B65657061
Error = psycopg.Error
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

_pools: dict[tuple[str, bool, int], ConnectionPool] = {}
_pools_lock = threading.Lock()
# A quoted string or identifier, a `::` cast, a `:name` or `?` parameter, or a `%`.
_SQL_TOKEN = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")|::|:([A-Za-z_]\w*)|\?|%")


def is_url(location: object) -> bool:
    """Whether a store location names a PostgreSQL database."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


class Row(tuple):
    """A result row readable by position and by column name, like sqlite3.Row."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"__slots__": (), "_index": {n: i for i, n in enumerate(names)}})


def _row_factory(cursor: psycopg.Cursor):
    if cursor.description is None:
        return tuple
    row_class = _row_class(tuple(column.name for column in cursor.description))
    return row_class


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite-style parameters to psycopg's (see the module docstring)."""
    def replace(match: re.Match) -> str:
        token, quoted, name = match.group(0), match.group(1), match.group(2)
        if quoted:
            return quoted.replace("%", "%%")
        if name:
            return f"%({name})s"
        return {"?": "%s", "%": "%%"}.get(token, token)
    return _SQL_TOKEN.sub(replace, sql)


class PgConnection:
    """A pooled psycopg connection with the store's sqlite3-like interface."""

    dialect = "postgresql"

    def __init__(self, pool: ConnectionPool, raw: psycopg.Connection):
        self._pool = pool
        self.raw = raw

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(translate(sql), params)

    def executemany(self, sql: str, rows) -> psycopg.Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql), list(rows))
        return cursor

    def execute_script(self, script: str) -> None:
        """Run several statements in one call (no parameters: the simple query protocol)."""
        self.raw.execute(script.encode("utf-8"), prepare=False)

    def begin_write(self) -> None:
        """Start a transaction that holds the database's write turn until it ends."""
        self.raw.execute("BEGIN")
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))

    @property
    def in_transaction(self) -> bool:
        return self.raw is not None and self.raw.info.transaction_status in _IN_TRANSACTION

    def close(self) -> None:
        """Give the connection back to its pool (rolled back there if a transaction is open)."""
        if self.raw is not None:
            raw, self.raw = self.raw, None
            self._pool.putconn(raw)

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(url: str, *, readonly: bool = False, timeout_s: float = 30.0) -> PgConnection:
    """A connection from this process's pool for `url` (opened on first use). Raises
    psycopg.OperationalError with the server's reason (refused, wrong password, no such
    database) when no connection can be had within `timeout_s`."""
    pool = _pool(url, readonly, timeout_s)
    try:
        return PgConnection(pool, pool.getconn(timeout=timeout_s))
    except PoolTimeout:
        _probe(url, timeout_s)  # raises the reason when the server still refuses
        raise


def _probe(url: str, timeout_s: float) -> None:
    """Connect once outside the pool: the pool only says that it timed out, this says why."""
    psycopg.connect(url, connect_timeout=max(1, round(timeout_s)), autocommit=True).close()


def _pool(url: str, readonly: bool, timeout_s: float) -> ConnectionPool:
    key = (url, readonly, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            _probe(url, timeout_s)  # a wrong URL fails at once, not after the pool's timeout
            pool = ConnectionPool(
                url, min_size=0, max_size=POOL_MAX_SIZE, open=True,
                kwargs={"autocommit": True, "row_factory": _row_factory},
                configure=_read_only if readonly else None,
                check=ConnectionPool.check_connection, name="keepa-deals")
            _pools[key] = pool
    return pool


def _read_only(conn: psycopg.Connection) -> None:
    conn.execute("SET default_transaction_read_only = on")


def close_pools() -> None:
    """Close this process's pools (tests, and before a process exits)."""
    with _pools_lock:
        mine = [key for key in _pools if key[2] == os.getpid()]
        pools = [_pools.pop(key) for key in mine]
    for pool in pools:
        pool.close()
