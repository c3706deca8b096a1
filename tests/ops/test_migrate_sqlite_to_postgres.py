"""Diagnostics/migrate_sqlite_to_postgres.py run as a human runs it (a file, a subprocess) against
a real SQLite file and the real PostgreSQL: an exact copy of every table, resumable after a kill,
never overwriting a newer PostgreSQL row, idempotent, and one clear line for every failure."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import psycopg.rows
import pytest
from db_helpers import BASE_TIME
from db_helpers import make_deal as deal
from ops_helpers import PROJECT_ROOT, clean_environment, show
from pg_server import PASSWORD
from support import wait_until

from Diagnostics import migrate_sqlite_to_postgres as tool
from keepa_deals import db
from keepa_deals.deals import DealRecord

pytestmark = pytest.mark.timeout(180)

SCRIPT = PROJECT_ROOT / "Diagnostics" / "migrate_sqlite_to_postgres.py"
# Titles whose bytes must survive: accents (composed and decomposed), CJK, emoji with a joiner,
# right-to-left text, quotes, a backslash, a percent sign and a newline.
TITLES = ("Café crème", "Cafe\u0301 cre\u0300me", "東京の時計", "👩‍💻 Laptop stand",
          "مكبر صوت", "It's \"quoted\" \\ 100% new\nline")
KEYS = {"deals": "asin", "pipeline_state": "name", "runs": "id", "freshness_samples": "id",
        "janitor_removals": "id"}


def many_deals(count: int) -> list[DealRecord]:
    """`count` deals with varied values, mixed-case ASINs (byte order is not dictionary order)
    and the unicode titles."""
    return [deal(f"{'Bb'[i % 2]}{i:09d}", title=TITLES[i % len(TITLES)],
                 current_cents=1_000 + i, rating=None if i % 5 == 0 else 3.25 + i % 3,
                 brand="Ünïcode™" if i % 3 == 0 else None, last_update_at=BASE_TIME + i,
                 enriched_at=BASE_TIME + i if i % 4 == 0 else None)
            for i in range(count)]


def write_deals(location, records: list[DealRecord], *, seen_at: int = BASE_TIME) -> None:
    conn = db.connect(location)
    try:
        db.migrate(conn)
        with db.transaction(conn):
            db.upsert_deals(conn, records, source="backfill_deals", seen_at=seen_at)
    finally:
        conn.close()


def sqlite_store(path: Path, deals: int = 40) -> Path:
    """A migrated SQLite store with rows in every table the tool copies."""
    write_deals(path, many_deals(deals))
    conn = db.connect(path)
    try:
        for i in range(5):
            run_id = db.start_run(conn, "backfill_deals", host="old-host", pid=100 + i,
                                  revision="abc123")
            db.finish_run(conn, run_id, outcome="ok", deals_written=i, tokens_spent=10 * i,
                          detail={"pages": i, "note": "Grüße"})
        with db.transaction(conn):
            db.set_state(conn, "backfill_checkpoint", {"page": 7, "title": "東京"})
            db.set_state(conn, "fence:backfill_lock", 12)
            db.add_freshness_samples(conn, [("new", 30), ("changed", 95)],
                                     recorded_at=BASE_TIME)
            conn.execute("INSERT INTO janitor_removals (removed_at, asin, last_seen_at) "
                         "VALUES (?, ?, ?)", (BASE_TIME, "B999999999", BASE_TIME - 86_400))
    finally:
        conn.close()
    return path


def migrate(sqlite: Path, url: str, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--sqlite", str(sqlite),
                           "--postgres", url, *args], cwd=PROJECT_ROOT,
                          env=clean_environment(**env), capture_output=True, text=True,
                          timeout=120, check=False)


def start_migrate(sqlite: Path, url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--sqlite", str(sqlite),
                             "--postgres", url, *args], cwd=PROJECT_ROOT,
                            env=clean_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rows(location, table: str) -> list[dict]:
    """Every row of `table` as a dict, in key order (byte order for text keys)."""
    key = KEYS[table]
    if isinstance(location, Path):
        conn = sqlite3.connect(location)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key}")]
        finally:
            conn.close()
    order = key if key == "id" else f'{key} COLLATE "C"'
    with psycopg.connect(location, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def pg_value(url: str, sql: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def line_of(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_an_exact_copy_of_every_table_with_equal_checksums(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")

    result = migrate(source, postgres_url, "--batch-size", "7")

    assert result.returncode == tool.EXIT_OK, show(result)
    for table in KEYS:
        assert rows(postgres_url, table) == rows(source, table), table
        verified = line_of(result.stdout, f"verify {table}:")
        count = len(rows(source, table))
        assert f"SQLite {count} rows, PostgreSQL {count}: {count} equal, 0 kept newer" in verified
    titles = [row[0] for row in psycopg.connect(postgres_url).execute(
        "SELECT title FROM deals ORDER BY asin COLLATE \"C\"")]
    assert [t.encode() for t in titles] == [d.title.encode() for d in
                                            sorted(many_deals(40), key=lambda d: d.asin)]
    assert result.stdout.count("(equal)") == len(KEYS), "every table's sha256 is equal"
    assert "verified: every SQLite row is in PostgreSQL" in result.stdout
    assert pg_value(postgres_url, "SELECT COUNT(*) FROM sqlite_import_progress") == 0, \
        "a finished copy forgets its progress"
    conn = db.connect(postgres_url)
    try:
        assert db.start_run(conn, "upsert_deals", host="new", pid=1, revision=None) == 6, \
            "a run started on PostgreSQL takes the id after the copied ones"
        with db.transaction(conn):
            db.add_freshness_samples(conn, [("new", 1)], recorded_at=BASE_TIME)
    finally:
        conn.close()


@pytest.fixture
def dictionary_order_url(postgres_server):
    """A database whose default collation is ICU's en-US (a < A < b < B), unlike byte order
    (A < B < a < b), as production servers often have."""
    name = f"icu_{os.getpid()}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                     "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    yield postgres_server.url(name)
    postgres_server.drop_database(postgres_server.url(name))


def test_keys_are_matched_in_byte_order_whatever_the_collation(tmp_path,
                                                               dictionary_order_url):
    source = sqlite_store(tmp_path / "deals.db")

    result = migrate(source, dictionary_order_url, "--batch-size", "6")

    assert result.returncode == tool.EXIT_OK, show(result)
    assert "40 equal, 0 kept newer in PostgreSQL, 0 missing, 0 different; 0 only in " \
        "PostgreSQL" in line_of(result.stdout, "verify deals:")
    assert result.stdout.count("(equal)") == len(KEYS)


def test_a_stopped_copy_continues_after_its_last_batch(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db", deals=100)

    first = migrate(source, postgres_url, "--batch-size", "10", "--max-batches", "3")

    assert first.returncode == tool.EXIT_STOPPED, show(first)
    copied = rows(postgres_url, "deals")
    assert copied == rows(source, "deals")[:30], "three batches, the first 30 ASINs in order"
    last = copied[-1]["asin"]
    assert json.loads(pg_value(postgres_url, "SELECT last_key FROM sqlite_import_progress "
                                             "WHERE table_name = 'deals'")) == last
    second = migrate(source, postgres_url, "--batch-size", "10")
    assert second.returncode == tool.EXIT_OK, show(second)
    assert f"deals: resuming after {last!r}" in second.stdout
    assert "deals: 70 rows read, 70 written" in second.stdout, "continued, not restarted"
    for table in KEYS:
        assert rows(postgres_url, table) == rows(source, table), table


def test_tables_finished_before_a_stop_are_not_read_again(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    stopped = migrate(source, postgres_url, "--batch-size", "10", "--max-batches", "4")
    assert stopped.returncode == tool.EXIT_STOPPED, show(stopped)
    assert "runs: 0 rows read so far" in stopped.stdout, "the fifth batch would be runs"

    result = migrate(source, postgres_url, "--batch-size", "10")

    assert result.returncode == tool.EXIT_OK, show(result)
    assert "deals: already copied by the earlier run that stopped" in result.stdout
    assert "runs: 5 rows read, 5 written" in result.stdout
    assert result.stdout.count("(equal)") == len(KEYS)


def interrupted_copy(source: Path, url: str, signum: int) -> tuple[int, str]:
    """The copy of `source` (3 000 deals, batches of 5) sent `signum` after its first committed
    batch of deals: (its exit status, its stderr)."""
    write_deals(source, many_deals(3_000))
    process = start_migrate(source, url, "--batch-size", "5")
    try:
        wait_until(lambda: process.poll() is not None or deals_batch_committed(url),
                   timeout=60, message="a committed batch of deals", interval=0.01)
        process.send_signal(signum)
    finally:
        stderr = process.communicate(timeout=30)[1]
    return process.returncode, stderr


def deals_batch_committed(url: str) -> bool:
    if not pg_value(url, "SELECT to_regclass('sqlite_import_progress') IS NOT NULL"):
        return False
    return pg_value(url, "SELECT EXISTS (SELECT 1 FROM sqlite_import_progress "
                         "WHERE table_name = 'deals' AND last_key IS NOT NULL)")


def assert_progress_matches_the_rows(source: Path, url: str) -> None:
    """PostgreSQL holds exactly SQLite's deals up to the recorded key: whole batches, committed
    with their progress."""
    last_key = json.loads(pg_value(url, "SELECT last_key FROM sqlite_import_progress "
                                        "WHERE table_name = 'deals'"))
    copied = rows(url, "deals")
    assert 0 < len(copied) < 3_000 and len(copied) % 5 == 0
    assert copied == rows(source, "deals")[:len(copied)]
    assert copied[-1]["asin"] == last_key


def test_ctrl_c_stops_after_the_batch_in_progress(tmp_path, postgres_url):
    source = tmp_path / "deals.db"
    status, stderr = interrupted_copy(source, postgres_url, signal.SIGINT)

    assert status == tool.EXIT_INTERRUPTED, stderr
    assert stderr == ("error: interrupted: the copy stopped after its last committed batch; "
                      "run again to continue\n")
    assert_progress_matches_the_rows(source, postgres_url)
    result = migrate(source, postgres_url)
    assert result.returncode == tool.EXIT_OK, show(result)
    assert "deals: resuming after" in result.stdout


def test_a_killed_copy_resumes_and_ends_verified_without_duplicates(tmp_path, postgres_url):
    source = tmp_path / "deals.db"
    status, _ = interrupted_copy(source, postgres_url, signal.SIGKILL)
    assert status == -signal.SIGKILL, "killed while it was copying"
    assert_progress_matches_the_rows(source, postgres_url)

    result = migrate(source, postgres_url, "--batch-size", "50")

    assert result.returncode == tool.EXIT_OK, show(result)
    assert "deals: resuming after" in result.stdout
    assert rows(postgres_url, "deals") == rows(source, "deals")
    assert pg_value(postgres_url, "SELECT COUNT(DISTINCT asin) FROM deals") == 3_000
    assert "SQLite 3000 rows, PostgreSQL 3000: 3000 equal" in result.stdout
    assert result.stdout.count("(equal)") == len(KEYS)


def test_rows_newer_in_postgres_are_kept_and_reported(tmp_path, postgres_url):
    source = tmp_path / "deals.db"
    write_deals(source, [deal("B000000001", title="sqlite", last_update_at=BASE_TIME + 100),
                         deal("B000000002", title="sqlite", last_update_at=BASE_TIME + 100),
                         deal("B000000003", title="sqlite", last_update_at=BASE_TIME + 100),
                         deal("B000000004", title="sqlite", last_update_at=BASE_TIME + 100)],
                seen_at=BASE_TIME + 500)
    # PostgreSQL already holds: 1 newer by lastUpdate, 2 the same version seen later (both
    # kept), 3 an older version (replaced); 4 only in SQLite; 5 only in PostgreSQL.
    write_deals(postgres_url, [deal("B000000001", title="pg newer", last_update_at=BASE_TIME + 200),
                               deal("B000000005", title="pg only")], seen_at=BASE_TIME + 500)
    write_deals(postgres_url, [deal("B000000002", title="pg seen later",
                                    last_update_at=BASE_TIME + 100)], seen_at=BASE_TIME + 900)
    write_deals(postgres_url, [deal("B000000003", title="pg older", last_update_at=BASE_TIME)],
                seen_at=BASE_TIME + 900)
    set_state_at(source, "checkpoint", "sqlite newer", updated_at=BASE_TIME + 50)
    set_state_at(source, "fence:lock", 3, updated_at=BASE_TIME)
    set_state_at(postgres_url, "checkpoint", "pg older", updated_at=BASE_TIME)
    set_state_at(postgres_url, "fence:lock", 9, updated_at=BASE_TIME + 50)

    result = migrate(source, postgres_url)

    assert result.returncode == tool.EXIT_OK, show(result)
    titles = dict(psycopg.connect(postgres_url).execute("SELECT asin, title FROM deals"))
    assert titles == {"B000000001": "pg newer", "B000000002": "pg seen later",
                      "B000000003": "sqlite", "B000000004": "sqlite", "B000000005": "pg only"}
    state = dict(psycopg.connect(postgres_url).execute("SELECT name, value FROM pipeline_state"))
    assert state == {"checkpoint": '"sqlite newer"', "fence:lock": "9"}
    assert "deals: 4 rows read, 2 written, 2 left as they were" in result.stdout
    verified = line_of(result.stdout, "verify deals:")
    assert "SQLite 4 rows, PostgreSQL 5: 2 equal, 2 kept newer in PostgreSQL, 0 missing, " \
           "0 different; 1 only in PostgreSQL" in verified
    assert "(different, by design" in result.stdout
    assert "1 equal, 1 kept newer" in line_of(result.stdout, "verify pipeline_state:")
    assert "(2 deals equal, 2 kept newer in PostgreSQL, 0 missing)" in result.stdout


def set_state_at(location, name: str, value, *, updated_at: int) -> None:
    conn = db.connect(location)
    try:
        db.migrate(conn)
        with db.transaction(conn):
            db.set_state(conn, name, value)
            conn.execute("UPDATE pipeline_state SET updated_at = ? WHERE name = ?",
                         (updated_at, name))
    finally:
        conn.close()


def test_a_second_run_writes_nothing(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    assert migrate(source, postgres_url).returncode == tool.EXIT_OK
    versions = {table: pg_versions(postgres_url, table) for table in KEYS}

    again = migrate(source, postgres_url, "--batch-size", "3")

    assert again.returncode == tool.EXIT_OK, show(again)
    for table in KEYS:
        assert " 0 written" in line_of(again.stdout, f"{table}: "), table
        assert pg_versions(postgres_url, table) == versions[table], f"{table} was rewritten"
    assert again.stdout.count("(equal)") == len(KEYS)


def pg_versions(url: str, table: str) -> list[tuple]:
    """(key, xmin) of every row: xmin changes whenever a row is written, even unchanged."""
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {KEYS[table]}, xmin::text FROM {table} "
                            f"ORDER BY {KEYS[table]}").fetchall()


def test_verify_only_names_missing_and_different_rows_and_writes_nothing(tmp_path,
                                                                         postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    assert migrate(source, postgres_url).returncode == tool.EXIT_OK
    first, second = (row["asin"] for row in rows(source, "deals")[:2])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM deals WHERE asin = %s", (first,))
        conn.execute("UPDATE deals SET current_cents = 1 WHERE asin = %s", (second,))
        conn.execute("DELETE FROM runs WHERE id = 3")
    before = {table: pg_versions(postgres_url, table) for table in KEYS}

    result = migrate(source, postgres_url, "--verify-only")

    assert result.returncode == tool.EXIT_MISMATCH, show(result)
    assert "38 equal, 0 kept newer in PostgreSQL, 1 missing, 1 different" in line_of(
        result.stdout, "verify deals:")
    assert f"{first!r} missing" in result.stdout
    assert f"{second!r} differs in current_cents" in result.stdout
    assert "3 missing" in result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "verification failed (deals: 1 missing, 1 different; runs: 1 missing, " \
           "0 different)" in result.stderr
    assert {table: pg_versions(postgres_url, table) for table in KEYS} == before

    repaired = migrate(source, postgres_url)
    assert repaired.returncode == tool.EXIT_MISMATCH, "the changed price is not newer, and " \
        "an equal version is never overwritten: only the missing rows come back"
    assert "1 different" in line_of(repaired.stdout, "verify deals:")
    assert "0 missing" in line_of(repaired.stdout, "verify runs:")


def test_a_wrong_password_is_one_line_without_any_password(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    wrong = "Wr0ng%2Fpw-55z"  # percent-encoded in the URL, "Wr0ng/pw-55z" as sent

    result = migrate(source, postgres_url.replace(PASSWORD, wrong))

    assert result.returncode == tool.EXIT_POSTGRES, show(result)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "password authentication failed" in result.stderr
    assert ":***@127.0.0.1" in result.stderr
    for secret in (wrong, "Wr0ng/pw-55z", PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_an_unreachable_server_is_one_clear_line(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    closed = postgres_url.rsplit(":", 1)[0] + ":1/nothing"

    result = migrate(source, closed)

    assert result.returncode == tool.EXIT_POSTGRES, show(result)
    assert result.stderr.startswith("error: cannot connect to PostgreSQL at postgresql://"
                                    "keepa:***@127.0.0.1:1/nothing")
    assert result.stderr.count("\n") == 1 and PASSWORD not in result.stderr


def test_a_missing_sqlite_file_is_one_line_and_postgres_is_untouched(tmp_path, postgres_url):
    missing = tmp_path / "nowhere" / "deals.db"

    result = migrate(missing, postgres_url)

    assert result.returncode == tool.EXIT_SQLITE, show(result)
    assert result.stderr == f"error: SQLite store {missing} does not exist (pass --sqlite " \
                            "PATH or set DATABASE_PATH)\n"
    assert not missing.parent.exists(), "a reader must not create the store"
    assert pg_value(postgres_url, "SELECT to_regclass('deals') IS NULL")


def test_a_sqlite_store_at_another_schema_version_is_refused_with_the_fix(tmp_path,
                                                                         postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    conn = sqlite3.connect(source)
    conn.execute("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) "
                 "FROM schema_migrations)")
    conn.commit()
    conn.close()

    result = migrate(source, postgres_url)

    assert result.returncode == tool.EXIT_SCHEMA, show(result)
    assert f"is at schema version {db.latest_version() - 1}, this code's is " \
           f"{db.latest_version()}" in result.stderr
    assert f"DATABASE_PATH={source} .venv/bin/python -m keepa_deals.ops migrate" \
        in result.stderr
    assert result.stderr.count("\n") == 1
    assert pg_value(postgres_url, "SELECT to_regclass('deals') IS NULL")


def test_verify_only_before_any_copy_names_the_missing_schema(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    result = migrate(source, postgres_url, "--verify-only")
    assert result.returncode == tool.EXIT_SCHEMA, show(result)
    assert "PostgreSQL is at schema version 0" in result.stderr
    assert pg_value(postgres_url, "SELECT to_regclass('schema_migrations') IS NULL")


def test_the_locations_default_to_database_path_and_database_url(tmp_path, postgres_url):
    source = sqlite_store(tmp_path / "deals.db")
    command = [sys.executable, str(SCRIPT), "--batch-size", "100"]

    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=clean_environment(DATABASE_PATH=source,
                                                  DATABASE_URL=postgres_url),
                            timeout=120, check=False)
    assert result.returncode == tool.EXIT_OK, show(result)
    assert rows(postgres_url, "deals") == rows(source, "deals")

    no_url = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=clean_environment(DATABASE_PATH=source, DATABASE_URL=""),
                            timeout=60, check=False)
    assert no_url.returncode == tool.EXIT_CONFIG, show(no_url)
    assert no_url.stderr == ("error: no PostgreSQL database: pass --postgres URL or set "
                             "DATABASE_URL\n")


def test_bad_usage_exits_2_without_echoing_the_url(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--postgres", "mysql://u:pw-x@h/db",
                             "--sqlite", str(tmp_path / "x.db")], cwd=PROJECT_ROOT,
                            env=clean_environment(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "expected a postgresql:// URL" in result.stderr
    assert "pw-x" not in result.stderr
    assert subprocess.run([sys.executable, str(SCRIPT), "--batch-size", "0"],
                          cwd=PROJECT_ROOT, env=clean_environment(), capture_output=True,
                          timeout=60, check=False).returncode == 2


def test_every_exit_code_is_documented():
    codes = [getattr(tool, name) for name in dir(tool) if name.startswith("EXIT_")]
    for code in codes:
        assert f"\n  {code} " in tool._EPILOG, code
