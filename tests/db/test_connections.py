"""connect(), readonly_connect(), transaction() on SQLite: WAL readers never fail writers;
contending writers wait for each other instead of failing with "database is locked" (FAILURES
D8). The same properties on PostgreSQL: tests/db/test_postgres_store.py."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from db_helpers import BASE_TIME, make_deal

from keepa_deals import db

pytestmark = pytest.mark.timeout(30)
WAITED_S = 0.05  # a writer without a busy timeout fails within a millisecond of its BEGIN


def write_deal(conn, asin: str) -> None:
    with db.transaction(conn):
        db.upsert_deals(conn, [make_deal(asin)], source="backfill_deals", seen_at=BASE_TIME)


def test_connect_creates_the_directory_and_sets_the_pragmas(db_path):
    conn = db.connect(db_path, busy_timeout_s=12.5)
    assert db_path.parent.is_dir()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 12_500
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert isinstance(conn.execute("SELECT 1 AS one").fetchone(), sqlite3.Row)


def test_default_busy_timeout_is_thirty_seconds(db_path):
    assert db.connect(db_path).execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_readonly_connection_reads_but_cannot_write(sqlite_conn, db_path):
    conn = sqlite_conn
    write_deal(conn, "B000000001")
    reader = db.readonly_connect(db_path)
    assert db.deal_count(reader) == 1
    assert reader.execute("SELECT asin FROM deals").fetchone()["asin"] == "B000000001"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM deals")


def test_readonly_connect_to_a_missing_database_says_so(tmp_path):
    missing = tmp_path / "nowhere" / "deals.db"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        db.readonly_connect(missing)
    assert not missing.parent.exists(), "a reader must not create the database"


def test_readonly_connect_works_after_every_writer_closed(sqlite_conn, db_path):
    conn = sqlite_conn
    write_deal(conn, "B000000001")
    conn.close()  # the last writer checkpoints and removes the -wal/-shm files
    assert db.deal_count(db.readonly_connect(db_path)) == 1


def test_long_read_transaction_never_fails_a_writer(sqlite_conn, db_path):
    conn = sqlite_conn
    write_deal(conn, "B000000001")
    reader = db.readonly_connect(db_path, busy_timeout_s=0)
    reader.execute("BEGIN")
    assert db.deal_count(reader) == 1  # the read snapshot is now pinned

    writer = db.connect(db_path, busy_timeout_s=0)  # would fail at once if it had to wait
    for number in range(2, 40):
        write_deal(writer, f"B0000000{number:02d}")
    writer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    assert db.deal_count(reader) == 1, "the reader keeps its snapshot"
    reader.execute("COMMIT")
    assert db.deal_count(reader) == 39


def test_second_writer_waits_for_the_first_instead_of_failing(sqlite_conn, db_path):
    conn = sqlite_conn
    """A writer whose BEGIN IMMEDIATE starts while another holds the write lock neither fails
    nor writes while the holder keeps writing, and writes right after the holder's COMMIT.
    SQLite's trace callback tells when each of its statements starts: no sleep."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO pipeline_state VALUES ('holder', '1', 0)")
    began, statements, outcome = threading.Event(), [], {}

    def trace(sql: str) -> None:  # called in the second writer's thread as a statement starts
        statements.append((time.monotonic(), sql.split(maxsplit=1)[0].upper()))
        if sql.upper().startswith("BEGIN"):
            began.set()

    def second_writer():
        other = db.connect(db_path, busy_timeout_s=20)
        other.set_trace_callback(trace)
        try:
            write_deal(other, "B000000002")
            outcome["finished_at"] = time.monotonic()
        except sqlite3.Error as exc:
            outcome["error"] = exc
        finally:
            other.close()

    thread = threading.Thread(target=second_writer)
    thread.start()
    assert began.wait(10), "the second writer never began its transaction"
    begin_at = statements[0][0]
    rows = 0  # the holder keeps writing until the second writer has waited WAITED_S
    while not outcome and time.monotonic() - begin_at < WAITED_S:
        rows += 1
        conn.execute("INSERT INTO pipeline_state VALUES (?, '1', 0)", (f"work-{rows}",))
    assert not outcome and thread.is_alive(), f"the second writer did not wait: {outcome}"
    committed_at = time.monotonic()
    conn.execute("COMMIT")
    thread.join(timeout=20)
    assert not thread.is_alive() and "error" not in outcome, outcome
    first_write_at = next(at for at, verb in statements if verb == "INSERT")
    assert begin_at < committed_at <= first_write_at, "it wrote only after the holder's COMMIT"
    assert db.deal_count(conn) == 1
    assert conn.execute("SELECT COUNT(*) FROM pipeline_state").fetchone()[0] == rows + 1


def test_without_a_busy_timeout_the_same_contention_fails(sqlite_conn, db_path):
    conn = sqlite_conn
    """The contrast that makes the test above meaningful (the old 5 s default failed this way)."""
    conn.execute("BEGIN IMMEDIATE")
    impatient = db.connect(db_path, busy_timeout_s=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        write_deal(impatient, "B000000002")
    assert not impatient.in_transaction
    conn.execute("ROLLBACK")


def test_transaction_rolls_back_on_error_and_commits_otherwise(conn):
    with pytest.raises(ValueError), db.transaction(conn):
        db.set_state(conn, "cursor", 1)
        raise ValueError("boom")
    assert not conn.in_transaction
    assert db.get_state(conn, "cursor") is None
    with db.transaction(conn):
        db.set_state(conn, "cursor", 2)
    assert db.get_state(conn, "cursor") == 2
