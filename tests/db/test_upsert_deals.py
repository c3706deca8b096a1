"""upsert_deals: newer data wins, older never overwrites, sightings always count."""

from __future__ import annotations

import dataclasses
import json

import pytest
from db_helpers import BASE_TIME, make_deal, stored

from keepa_deals import db
from keepa_deals.deals import DEAL_FIELDS

pytestmark = pytest.mark.timeout(30)


def upsert(conn, records, *, source="backfill_deals", seen_at=BASE_TIME):
    with db.transaction(conn):
        return db.upsert_deals(conn, records, source=source, seen_at=seen_at)


def test_deals_table_columns_are_the_record_fields_plus_bookkeeping(conn):
    columns = [column[0] for column in conn.execute("SELECT * FROM deals LIMIT 0").description]
    assert columns == [*DEAL_FIELDS, "first_seen_at", "last_seen_at", "source",
                       "enriched_update_at"]


def test_insert_stores_every_field_as_typed_values(conn):
    deal = make_deal(enriched_at=BASE_TIME + 5, brand="Acme")
    result = upsert(conn, [deal], seen_at=BASE_TIME + 10)
    assert result == db.UpsertResult(inserted=1, updated=0, unchanged=0,
                                     new_asins=frozenset({deal.asin}))
    row = stored(conn, deal.asin)
    for name in DEAL_FIELDS:
        expected = deal.categories if name == "categories" else getattr(deal, name)
        actual = tuple(json.loads(row[name])) if name == "categories" else row[name]
        assert actual == expected, name
    assert (row["first_seen_at"], row["last_seen_at"], row["source"]) == (
        BASE_TIME + 10, BASE_TIME + 10, "backfill_deals")


def test_newer_data_replaces_the_row_but_keeps_first_seen(conn):
    upsert(conn, [make_deal(current_cents=2_499)], seen_at=BASE_TIME)
    newer = make_deal(current_cents=1_999, last_update_at=BASE_TIME + 60, used_cents=None)
    result = upsert(conn, [newer], source="update_recent_deals", seen_at=BASE_TIME + 90)
    assert result == db.UpsertResult(inserted=0, updated=1, unchanged=0,
                                     moved_asins=frozenset({newer.asin}))
    row = stored(conn, newer.asin)
    assert row["current_cents"] == 1_999
    assert row["used_cents"] is None, "a price that disappeared must not keep its old value"
    assert row["last_update_at"] == BASE_TIME + 60
    assert row["source"] == "update_recent_deals"
    assert (row["first_seen_at"], row["last_seen_at"]) == (BASE_TIME, BASE_TIME + 90)


def test_older_data_never_overwrites_but_still_counts_as_a_sighting(conn):
    upsert(conn, [make_deal(current_cents=1_999, last_update_at=BASE_TIME + 60)],
           seen_at=BASE_TIME)
    older = make_deal(current_cents=2_499, last_update_at=BASE_TIME, title="Stale title")
    result = upsert(conn, [older], source="update_recent_deals", seen_at=BASE_TIME + 500)
    assert result == db.UpsertResult(inserted=0, updated=0, unchanged=1)
    row = stored(conn, older.asin)
    assert (row["current_cents"], row["last_update_at"], row["title"]) == (
        1_999, BASE_TIME + 60, "Golden River Speaker")
    assert row["source"] == "backfill_deals"
    assert row["last_seen_at"] == BASE_TIME + 500, "Keepa still lists it: it was seen"


def test_last_seen_never_moves_backwards(conn):
    upsert(conn, [make_deal()], seen_at=BASE_TIME + 100)
    upsert(conn, [make_deal(last_update_at=BASE_TIME + 1)], seen_at=BASE_TIME + 50)
    assert stored(conn, "B000000001")["last_seen_at"] == BASE_TIME + 100


def test_unenriched_sighting_keeps_the_enrichment_of_the_same_version(conn):
    enriched = make_deal(brand="Acme", title="Full product title", category_name="Speakers",
                         enriched_at=BASE_TIME + 30)
    upsert(conn, [enriched])
    bare = make_deal(brand=None, title=None, category_name=None, categories=(), rating=None)
    assert upsert(conn, [bare], seen_at=BASE_TIME + 60).unchanged == 1
    repriced = dataclasses.replace(bare, current_cents=2_399)
    assert upsert(conn, [repriced], seen_at=BASE_TIME + 70).updated == 1
    row = stored(conn, bare.asin)
    assert (row["brand"], row["title"], row["category_name"], row["enriched_at"]) == (
        "Acme", "Full product title", "Speakers", BASE_TIME + 30)
    assert json.loads(row["categories"]) == list(enriched.categories)
    assert row["rating"] == 4.5
    assert row["current_cents"] == 2_399, "equal lastUpdate still takes the price columns"
    assert row["last_seen_at"] == BASE_TIME + 70


def test_updates_set_only_the_columns_that_change(sqlite_conn):
    """SQLite rewrites every index on a column named in SET: a re-sighting must name only
    last_seen_at, a price change only the moved columns."""
    conn = sqlite_conn
    upsert(conn, [make_deal("B000000001"), make_deal("B000000002")])
    statements = []
    conn.set_trace_callback(statements.append)
    upsert(conn, [make_deal("B000000001"),
                  make_deal("B000000002", current_cents=1_999, last_update_at=BASE_TIME + 60)],
           seen_at=BASE_TIME + 90)
    conn.set_trace_callback(None)
    updates = sorted(s.split(" WHERE")[0] for s in statements if s.startswith("UPDATE"))
    assert updates == [
        "UPDATE deals SET current_cents = 1999, last_update_at = 1700000060, "
        "last_seen_at = 1700000090",
        "UPDATE deals SET last_seen_at = 1700000090"]


def test_enrichment_of_an_older_version_fills_gaps_without_overwriting(conn):
    upsert(conn, [make_deal(last_update_at=BASE_TIME + 60, current_cents=1_999, brand=None)])
    late_enriched = make_deal(brand="Acme", current_cents=2_499, enriched_at=BASE_TIME + 90)
    upsert(conn, [late_enriched])
    row = stored(conn, late_enriched.asin)
    assert (row["brand"], row["enriched_at"]) == ("Acme", BASE_TIME + 90)
    assert (row["current_cents"], row["last_update_at"]) == (1_999, BASE_TIME + 60)


def test_same_version_enriched_later_counts_as_updated(conn):
    upsert(conn, [make_deal()])
    result = upsert(conn, [make_deal(brand="Acme", enriched_at=BASE_TIME + 5)])
    assert result == db.UpsertResult(inserted=0, updated=1, unchanged=0)
    assert stored(conn, "B000000001")["brand"] == "Acme"


def test_duplicates_within_one_batch_keep_the_newest(conn):
    records = [make_deal(last_update_at=BASE_TIME + 60, current_cents=1_000),
               make_deal(last_update_at=BASE_TIME, current_cents=3_000),
               make_deal("B000000002")]
    result = upsert(conn, records)
    assert result == db.UpsertResult(inserted=2, updated=0, unchanged=1,
                                     new_asins=frozenset({"B000000001", "B000000002"}))
    assert stored(conn, "B000000001")["current_cents"] == 1_000
    assert db.deal_count(conn) == 2


def test_upsert_outside_a_transaction_is_refused(conn):
    with pytest.raises(db.TransactionRequired, match="upsert_deals"):
        db.upsert_deals(conn, [make_deal()], source="backfill_deals", seen_at=BASE_TIME)
    assert db.deal_count(conn) == 0


def test_rows_and_checkpoint_commit_or_roll_back_together(conn):
    with pytest.raises(RuntimeError, match="crash"), db.transaction(conn):
        db.upsert_deals(conn, [make_deal()], source="backfill_deals", seen_at=BASE_TIME)
        db.set_state(conn, "backfill_cursor", {"page": 1})
        raise RuntimeError("crash between the writes and the commit")
    assert db.deal_count(conn) == 0
    assert db.get_state(conn, "backfill_cursor") is None
    with db.transaction(conn):
        db.upsert_deals(conn, [make_deal()], source="backfill_deals", seen_at=BASE_TIME)
        db.set_state(conn, "backfill_cursor", {"page": 1})
    assert (db.deal_count(conn), db.get_state(conn, "backfill_cursor")) == (1, {"page": 1})


def test_a_record_violating_the_schema_fails_the_whole_batch(conn):
    with pytest.raises(db.ERRORS, match="price_type"), db.transaction(conn):
        db.upsert_deals(conn, [make_deal("B000000002"), make_deal(price_type=None)],
                        source="backfill_deals", seen_at=BASE_TIME)
    assert db.deal_count(conn) == 0


def test_deal_versions_reports_stored_asins_only(conn):
    upsert(conn, [make_deal(enriched_at=BASE_TIME + 1), make_deal("B000000002")])
    asins = ["B000000001", "B000000002", "B00MISSING"] + [f"X{i:09d}" for i in range(1_200)]
    assert db.deal_versions(conn, asins) == {"B000000001": (BASE_TIME, BASE_TIME + 1),
                                             "B000000002": (BASE_TIME, None)}


def test_dashboard_helpers_count_and_find_the_newest(conn):
    assert db.newest_deal(conn) is None
    upsert(conn, [make_deal("B000000001")], seen_at=BASE_TIME)
    upsert(conn, [make_deal("B000000002"), make_deal("B000000001")], seen_at=BASE_TIME + 100)
    assert db.deal_count(conn) == 2
    assert db.deals_added_since(conn, BASE_TIME + 1) == 1
    assert db.deals_added_since(conn, BASE_TIME) == 2
    assert db.newest_deal(conn)["asin"] == "B000000002"
