"""The counts the overview shows equal the table's, on both backends, through every kind of
write: inserts, sightings, changes, enrichment, the janitor's deletes, a truncate. (PostgreSQL
reads them from deal_hours, kept by triggers; SQLite counts its indexes.)"""

from __future__ import annotations

import dataclasses

import pytest
from db_helpers import BASE_TIME, make_deal

from keepa_deals import db

pytestmark = pytest.mark.timeout(60)
HOUR = 3600


def direct(conn, where: str = "TRUE", params=()) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM deals WHERE {where}", params).fetchone()[0]


def assert_counts_match(conn) -> None:
    assert db.deal_count(conn) == direct(conn)
    for since in (0, BASE_TIME - 5 * HOUR + 1, BASE_TIME, BASE_TIME + HOUR + 7, 2**40):
        assert db.deals_added_since(conn, since) == direct(conn, "first_seen_at >= ?", (since,))
        enriched, total = db.enrichment_coverage(conn, enriched_since=since)
        assert (enriched, total) == (direct(conn, "enriched_at >= ?", (since,)), direct(conn))
    per_hour = db.deals_first_seen_per_hour(conn, BASE_TIME - 10 * HOUR, BASE_TIME + 10 * HOUR)
    expected = {}
    for (first_seen,) in conn.execute("SELECT first_seen_at FROM deals"):
        hour = first_seen // HOUR * HOUR
        expected[hour] = expected.get(hour, 0) + 1
    assert per_hour == expected


def write(conn, records, seen_at: int) -> None:
    with db.transaction(conn):
        db.upsert_deals(conn, records, source="backfill_deals", seen_at=seen_at)


def test_counts_follow_every_kind_of_write(conn):
    deals = [make_deal(f"B{n:09d}", last_update_at=BASE_TIME + n) for n in range(60)]
    for hour in range(-4, 2):  # first seen over six hours
        write(conn, deals[(hour + 4) * 10:(hour + 5) * 10], BASE_TIME + hour * HOUR + 30)
    assert_counts_match(conn)

    write(conn, deals, BASE_TIME + 3 * HOUR)  # seen again: nothing counted moves
    changed = [dataclasses.replace(d, last_update_at=d.last_update_at + 99, current_cents=1)
               for d in deals[:25]]
    write(conn, changed, BASE_TIME + 3 * HOUR + 5)
    assert_counts_match(conn)

    enriched = {d.asin: d.last_update_at for d in changed[:15]}
    with db.transaction(conn):
        db.record_enrichment(conn, [dataclasses.replace(d, enriched_at=BASE_TIME + 2 * HOUR)
                                    for d in changed[:15]], enriched_for=enriched)
    with db.transaction(conn):  # enriched again an hour later: moves between hours
        db.record_enrichment(conn, [dataclasses.replace(d, enriched_at=BASE_TIME + 3 * HOUR)
                                    for d in changed[:5]], enriched_for=enriched)
    assert_counts_match(conn)

    with db.transaction(conn):
        conn.execute("DELETE FROM deals WHERE first_seen_at < ?", (BASE_TIME - 2 * HOUR,))
    assert_counts_match(conn)
    assert db.deal_count(conn) == 40

    with db.transaction(conn):
        conn.execute("DELETE FROM deals" if not db.is_postgres(conn) else "TRUNCATE deals")
    assert_counts_match(conn)
    assert db.deal_count(conn) == 0


def test_a_rolled_back_write_counts_nothing(conn):
    with pytest.raises(RuntimeError), db.transaction(conn):
        db.upsert_deals(conn, [make_deal()], source="backfill_deals", seen_at=BASE_TIME)
        raise RuntimeError("the page failed")
    assert db.deal_count(conn) == 0 == direct(conn)
