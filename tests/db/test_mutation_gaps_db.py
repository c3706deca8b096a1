"""What `make mutation` found untested by the store's own tests (docs/mutation.md): the reader's
busy timeout, legacy tables that cannot or need not be changed, the freshness and run queries
that only the dashboard tests used, and the name in TransactionRequired."""

from __future__ import annotations

import os

import pytest
from db_helpers import BASE_TIME, make_deal, stored

from keepa_deals import db

pytestmark = pytest.mark.timeout(30)


def legacy_database(db_path, script: str):
    conn = db.connect(db_path)
    conn.executescript(script)
    return conn


def asin_indexes(conn) -> list[tuple[str, bool]]:
    """(name, unique) of every index of deals that covers exactly the asin column."""
    found = []
    for index in conn.execute("PRAGMA index_list(deals)").fetchall():
        columns = [c["name"] for c in conn.execute(f'PRAGMA index_info("{index["name"]}")')]
        if columns == ["asin"]:
            found.append((index["name"], bool(index["unique"])))
    return found


def test_a_reader_waits_as_long_as_it_is_told(sqlite_conn, db_path):
    reader = db.readonly_connect(db_path, busy_timeout_s=12.5)
    assert reader.execute("PRAGMA busy_timeout").fetchone()[0] == 12_500


def test_a_legacy_not_null_column_without_default_is_refused_by_name(db_path):
    legacy = legacy_database(db_path, """
        CREATE TABLE deals (asin TEXT PRIMARY KEY, last_update_at INTEGER,
                            shelf TEXT NOT NULL, bin TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
    """)
    with pytest.raises(db.MigrationError) as refused:
        db.migrate(legacy)
    assert str(refused.value) == ("the existing deals table has NOT NULL columns without a "
                                  "default that this code never fills: shelf, bin")


def test_a_legacy_not_null_column_with_a_default_is_kept(db_path):
    legacy = legacy_database(db_path, """
        CREATE TABLE deals (asin TEXT PRIMARY KEY, last_update_at INTEGER,
                            note TEXT NOT NULL DEFAULT 'n/a');
        INSERT INTO deals (asin, last_update_at) VALUES ('B0LEGACY01', 1600000000);
    """)
    db.migrate(legacy)
    with db.transaction(legacy):
        db.upsert_deals(legacy, [make_deal("B0NEWDEAL1")], source="backfill_deals",
                        seen_at=BASE_TIME)
    notes = dict(legacy.execute("SELECT asin, note FROM deals").fetchall())
    assert notes == {"B0LEGACY01": "n/a", "B0NEWDEAL1": "n/a"}


def test_a_legacy_table_with_unique_asins_gets_no_second_index(db_path):
    legacy = legacy_database(db_path, """
        CREATE TABLE deals (asin TEXT PRIMARY KEY, last_update_at INTEGER);
    """)
    before = asin_indexes(legacy)
    assert len(before) == 1 and before[0][1]
    db.migrate(legacy)
    assert asin_indexes(legacy) == before


def test_a_legacy_table_without_unique_asins_gets_exactly_one(db_path):
    legacy = legacy_database(db_path, """
        CREATE TABLE deals (id INTEGER PRIMARY KEY, asin TEXT, last_update_at INTEGER);
    """)
    assert asin_indexes(legacy) == []
    db.migrate(legacy)
    assert asin_indexes(legacy) == [("deals_asin", True)]


def test_duplicate_legacy_asins_are_refused_with_the_fix(db_path):
    legacy = legacy_database(db_path, """
        CREATE TABLE deals (id INTEGER PRIMARY KEY, asin TEXT, last_update_at INTEGER);
        INSERT INTO deals (asin, last_update_at) VALUES ('B0LEGACY01', 1), ('B0LEGACY01', 2);
    """)
    with pytest.raises(db.MigrationError) as refused:
        db.migrate(legacy)
    assert str(refused.value) == ("the existing deals table holds duplicate ASINs; deduplicate "
                                  "them, then migrate again")


def test_adopting_a_legacy_table_leaves_no_file_behind(db_path, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    legacy = legacy_database(db_path, "CREATE TABLE deals (asin TEXT PRIMARY KEY, "
                                      "last_update_at INTEGER);")
    db.migrate(legacy)
    assert os.listdir(work) == []


def test_freshness_lags_are_one_kinds_recent_lags_smallest_first(conn):
    with db.transaction(conn):
        db.add_freshness_samples(conn, [("new", 30), ("changed", 5), ("new", 10)],
                                 recorded_at=BASE_TIME)
        db.add_freshness_samples(conn, [("new", 1)], recorded_at=BASE_TIME - 1)
    assert db.freshness_lags(conn, "new", since=BASE_TIME) == [10, 30]
    assert db.freshness_lags(conn, "new", since=BASE_TIME - 1) == [1, 10, 30]
    assert db.freshness_lags(conn, "changed", since=BASE_TIME) == [5]


def test_pruning_freshness_samples_keeps_those_recorded_since(conn):
    with db.transaction(conn):
        db.add_freshness_samples(conn, [("new", 1)], recorded_at=BASE_TIME - 1)
        db.add_freshness_samples(conn, [("new", 2), ("changed", 3)], recorded_at=BASE_TIME)
    with db.transaction(conn):
        assert db.prune_freshness_samples(conn, recorded_before=BASE_TIME) == 1
    assert db.freshness_lags(conn, "new", since=0) == [2]


WRITES = {
    "upsert_deals": ([[make_deal()]], {"source": "backfill_deals"}),
    "set_state": (["cursor", 1], {}),
    "record_enrichment": ([[make_deal()]], {"enriched_for": {"B000000001": BASE_TIME}}),
    "add_freshness_samples": ([[("new", 1)]], {"recorded_at": BASE_TIME}),
    "prune_freshness_samples": ([], {"recorded_before": BASE_TIME}),
    "prune_runs": ([], {"ended_before": BASE_TIME, "keep_per_task": 1}),
}


@pytest.mark.parametrize("write", WRITES)
def test_writes_outside_a_transaction_name_themselves(conn, write):
    positional, keywords = WRITES[write]
    with pytest.raises(db.TransactionRequired) as refused:
        getattr(db, write)(conn, *positional, **keywords)
    assert str(refused.value) == f"{write} must run inside db.transaction(conn)"


def test_every_updated_deal_is_counted_and_a_changed_domain_is_written(conn):
    first = [make_deal("B000000001"), make_deal("B000000002")]
    with db.transaction(conn):
        db.upsert_deals(conn, first, source="backfill_deals", seen_at=BASE_TIME)
    newer = [make_deal("B000000001", last_update_at=BASE_TIME + 60, domain_id=3),
             make_deal("B000000002", last_update_at=BASE_TIME + 60, current_cents=999)]
    with db.transaction(conn):
        result = db.upsert_deals(conn, newer, source="backfill_deals", seen_at=BASE_TIME)
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 0)
    assert stored(conn, "B000000001")["domain_id"] == 3
    assert stored(conn, "B000000002")["current_cents"] == 999


def test_no_fence_is_held_on_a_database_that_never_issued_one(conn):
    assert not db.holds_fence(conn, "upsert", 1)
    assert db.take_fence(conn, "upsert") == 1 and db.holds_fence(conn, "upsert", 1)


def test_enrichment_coverage_counts_deals_enriched_since(conn):
    with db.transaction(conn):
        db.upsert_deals(conn, [make_deal("B000000001", enriched_at=BASE_TIME - 1),
                               make_deal("B000000002", enriched_at=BASE_TIME),
                               make_deal("B000000003")], source="backfill_deals",
                        seen_at=BASE_TIME)
    assert db.enrichment_coverage(conn, enriched_since=BASE_TIME) == (1, 3)
    assert db.enrichment_coverage(conn, enriched_since=BASE_TIME - 1) == (2, 3)


def test_run_details_since_are_one_tasks_decoded_details(conn):
    for task, detail in (("upsert", {"pages": 2}), ("upsert", None), ("backfill", [1])):
        run_id = db.start_run(conn, task, host="h", pid=1, revision=None)
        db.finish_run(conn, run_id, outcome="ok", deals_written=0, tokens_spent=0,
                      detail=detail)
    conn.execute("UPDATE runs SET ended_at = ? WHERE id = 1", (BASE_TIME - 1,))
    assert db.run_details_since(conn, "upsert", since=0) == [{"pages": 2}]
    assert db.run_details_since(conn, "upsert", since=BASE_TIME) == []
    assert db.run_details_since(conn, "backfill", since=BASE_TIME) == [[1]]


def test_recent_runs_returns_twenty_by_default(conn):
    for _ in range(25):
        db.start_run(conn, "upsert", host="h", pid=1, revision=None)
    runs = db.recent_runs(conn)
    assert [run.id for run in runs] == list(range(25, 5, -1))


def test_a_newer_database_is_refused_with_what_to_do(conn):
    latest = db.latest_version()
    conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (latest + 1,))
    with pytest.raises(db.MigrationError) as refused:
        db.migrate(conn)
    assert str(refused.value) == (
        f"database schema version {latest + 1} is newer than this code's {latest}: deploy the "
        "newer code (or restore a matching database); nothing was changed")
