"""migrate(): numbered, idempotent, upgrades old databases in place (FAILURES D9)."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from db_helpers import BASE_TIME, make_deal, stored

from keepa_deals import db

pytestmark = pytest.mark.timeout(30)

V1_TABLES = {"deals", "pipeline_state", "runs", "janitor_removals", "schema_migrations"}
TABLES = {*V1_TABLES, "freshness_samples"}
# SQLite's FTS5 title index (migration 0005): the virtual table and its shadow tables
FTS_TABLES = {"deals_title_fts", *(f"deals_title_fts_{part}"
                                   for part in ("data", "idx", "docsize", "config"))}


def tables(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def schema(conn) -> list[tuple]:
    """Every table's columns and every index's definition, on either backend."""
    if not db.is_postgres(conn):
        return [tuple(row) for row in
                conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")]
    return [tuple(row) for row in conn.execute(
        "SELECT 'table', table_name, string_agg(column_name || ' ' || data_type || ' ' || "
        " is_nullable, ', ' ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_schema = current_schema() GROUP BY table_name "
        "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = current_schema() ORDER BY 2")]


def test_fresh_database_gets_every_migration(db_path):
    conn = db.connect(db_path)
    latest = db.available_migrations()[-1][0]
    assert db.migrate(conn) == latest
    assert tables(conn) == TABLES | FTS_TABLES
    applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert applied == [version for version, _ in db.available_migrations()]


def test_both_dialects_have_the_same_numbered_migrations():
    versions = {dialect: [version for version, _ in db.available_migrations(dialect)]
                for dialect in db.DIALECTS}
    assert versions["sqlite"] == versions["postgresql"] == list(
        range(1, db.latest_version() + 1))


def test_a_fresh_postgresql_database_gets_every_migration(postgres_url):
    conn = db.connect(postgres_url)
    assert db.migrate(conn) == db.latest_version()
    names = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    assert names >= TABLES
    applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations "
                                              "ORDER BY version")]
    assert applied == [version for version, _ in db.available_migrations("postgresql")]
    db.ensure_schema(conn)  # exactly this code's version: accepted


def test_migrate_is_idempotent_and_keeps_data(conn):
    with db.transaction(conn):
        db.upsert_deals(conn, [make_deal()], source="backfill_deals", seen_at=BASE_TIME)
    before = schema(conn)
    version = db.schema_version(conn)
    assert db.migrate(conn) == version
    assert schema(conn) == before
    assert db.deal_count(conn) == 1
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == version


def test_pre_migration_database_upgrades_in_place_keeping_rows(db_path):
    legacy = db.connect(db_path)
    legacy.executescript("""
        CREATE TABLE deals (asin TEXT PRIMARY KEY, title TEXT, current_cents INTEGER,
                            last_update_at INTEGER NOT NULL, "List at" TEXT);
        INSERT INTO deals VALUES ('B0LEGACY01', 'Old Lamp', 1999, 1600000000, '$24.99');
        INSERT INTO deals VALUES ('B0LEGACY02', 'Old Mug', NULL, 1600000100, NULL);
    """)
    legacy.close()

    conn = db.connect(db_path)
    db.migrate(conn)
    assert db.deal_count(conn) == 2
    row = stored(conn, "B0LEGACY01")
    assert (row["title"], row["current_cents"], row["List at"]) == ("Old Lamp", 1999, "$24.99")
    assert row["source"] == "legacy" and row["domain_id"] == 1 and row["first_seen_at"] > 0

    with db.transaction(conn):
        result = db.upsert_deals(conn, [make_deal("B0LEGACY01", last_update_at=1600000500),
                                        make_deal("B0NEWDEAL1")],
                                 source="backfill_deals", seen_at=BASE_TIME)
    assert result == db.UpsertResult(inserted=1, updated=1, unchanged=0,
                                     new_asins=frozenset({"B0NEWDEAL1"}),
                                     moved_asins=frozenset({"B0LEGACY01"}))
    assert stored(conn, "B0LEGACY01")["current_cents"] == 2_499
    assert stored(conn, "B0LEGACY01")["List at"] == "$24.99", "nothing is dropped"


def test_legacy_table_without_unique_asins_gets_a_unique_index(db_path):
    legacy = db.connect(db_path)
    legacy.executescript("""
        CREATE TABLE deals (id INTEGER PRIMARY KEY, asin TEXT, last_update_at INTEGER);
        INSERT INTO deals (asin, last_update_at) VALUES ('B0LEGACY01', 1600000000);
    """)
    db.migrate(legacy)
    with db.transaction(legacy):
        result = db.upsert_deals(legacy, [make_deal("B0LEGACY01")], source="backfill_deals",
                                 seen_at=BASE_TIME)
    assert result.updated == 1 and db.deal_count(legacy) == 1


def test_legacy_table_with_duplicate_asins_is_refused_unchanged(db_path):
    legacy = db.connect(db_path)
    legacy.executescript("""
        CREATE TABLE deals (id INTEGER PRIMARY KEY, asin TEXT, last_update_at INTEGER);
        INSERT INTO deals (asin, last_update_at) VALUES ('B0LEGACY01', 1), ('B0LEGACY01', 2);
    """)
    before = schema(legacy)
    with pytest.raises(db.MigrationError, match="duplicate ASINs"):
        db.migrate(legacy)
    assert schema(legacy) == before
    assert legacy.execute("SELECT COUNT(*) FROM deals").fetchone()[0] == 2


def test_database_from_a_newer_release_is_refused_unchanged(conn):
    latest = db.schema_version(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (latest + 1, BASE_TIME))
    before = schema(conn)
    with pytest.raises(db.MigrationError, match=f"version {latest + 1} is newer"):
        db.migrate(conn)
    assert schema(conn) == before


def test_concurrent_migrations_apply_each_version_once(store):
    barrier = threading.Barrier(3)
    errors = []

    def migrate():
        barrier.wait()
        try:
            conn = db.connect(store)
            db.migrate(conn)
            conn.close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    conn = db.connect(store)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations "
                                               "ORDER BY version")]
    assert versions == [version for version, _ in db.available_migrations()]


def test_migration_files_are_numbered_without_gaps():
    versions = [version for version, _ in db.available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_a_failing_migration_leaves_the_database_as_it_was(db_path, tmp_path, monkeypatch):
    broken = tmp_path / "migrations"
    broken.mkdir()
    for _version, path in db.available_migrations():
        (broken / path.name).write_text(path.read_text())
    latest = db.available_migrations()[-1][0]
    (broken / f"{latest + 1:04d}_broken.sql").write_text(
        "CREATE TABLE extra (x INTEGER);\nALTER TABLE no_such_table ADD COLUMN y;\n")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", broken)
    conn = db.connect(db_path)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        db.migrate(conn)
    assert tables(conn) == set(), "the whole upgrade is one transaction"
