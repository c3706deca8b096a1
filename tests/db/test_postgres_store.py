"""The PostgreSQL backend's own behaviour (keepa_deals/postgres.py): writers take turns across
connections, readers never block writers, read-only means read-only, a restarted server heals
by itself, the password never shows. Everything else runs on both backends (`store`)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from db_helpers import BASE_TIME, make_deal
from pg_server import PASSWORD
from support import migrated_store, wait_until

from keepa_deals import db, postgres
from keepa_deals.config import load_settings
from keepa_deals.redis_server import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pg(postgres_url):
    yield from migrated_store(postgres_url)


def waiting_writers(conn) -> int:
    """Connections waiting for the write turn (an ungranted advisory lock)."""
    return conn.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND NOT granted").fetchone()[0]


def test_parameters_are_translated_outside_quoted_text():
    sql = "SELECT x::int, '50% ?:a' FROM t WHERE a = ? AND b LIKE ? AND c >= :since"
    assert postgres.translate(sql) == ("SELECT x::int, '50%% ?:a' FROM t WHERE a = %s "
                                       "AND b LIKE %s AND c >= %(since)s")


def test_rows_read_by_position_name_and_as_a_dict(pg):
    row = pg.execute("SELECT 1 AS one, 'two' AS two").fetchone()
    assert (row[0], row["two"], dict(row), tuple(row)) == (1, "two", {"one": 1, "two": "two"},
                                                           (1, "two"))


def test_a_second_writer_waits_for_the_first_across_connections(pg, postgres_url):
    """The write turn (BEGIN + advisory lock) is what keeps read-merge-write upserts and
    fencing checks atomic when workers on several hosts share the database."""
    holder = db.connect(postgres_url)
    finished = threading.Event()
    errors = []

    def second_writer():
        other = db.connect(postgres_url)
        try:
            with db.transaction(other):
                db.upsert_deals(other, [make_deal("B000000002")], source="backfill_deals",
                                seen_at=BASE_TIME)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            other.close()
            finished.set()

    with db.transaction(holder):
        db.set_state(holder, "holder", 1)
        thread = threading.Thread(target=second_writer)
        thread.start()
        wait_until(lambda: waiting_writers(pg) == 1, 10, "the second writer to queue",
                   interval=0.01)
        assert not finished.is_set(), "the second writer wrote during the first's transaction"
        assert db.deal_count(pg) == 0
    thread.join(timeout=20)
    holder.close()
    assert finished.is_set() and errors == []
    assert db.deal_count(pg) == 1 and db.get_state(pg, "holder") == 1


def test_concurrent_fences_are_distinct(postgres_url, pg):
    fences, barrier = [], threading.Barrier(4)

    def take():
        conn = db.connect(postgres_url)
        barrier.wait()
        fences.append(db.take_fence(conn, "backfill"))
        conn.close()

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(fences) == [1, 2, 3, 4]


def test_a_long_reader_never_blocks_a_writer(pg, postgres_url):
    with db.transaction(pg):
        db.upsert_deals(pg, [make_deal("B000000001")], source="backfill_deals",
                        seen_at=BASE_TIME)
    reader = db.readonly_connect(postgres_url)
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert db.deal_count(reader) == 1
    writer = db.connect(postgres_url, busy_timeout_s=1)
    with db.transaction(writer):
        db.upsert_deals(writer, [make_deal("B000000002")], source="backfill_deals",
                        seen_at=BASE_TIME)
    assert db.deal_count(reader) == 1, "the reader keeps its snapshot"
    reader.execute("COMMIT")
    assert db.deal_count(reader) == 2
    reader.close()
    writer.close()


def test_a_readonly_connection_cannot_write(pg, postgres_url):
    reader = db.readonly_connect(postgres_url)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.execute("DELETE FROM deals")
    reader.close()
    again = db.readonly_connect(postgres_url)  # the pool's connection is healthy again
    assert db.deal_count(again) == 0
    again.close()


def test_a_restarted_server_is_used_again_without_a_restart_of_ours(pg, postgres_url,
                                                                    postgres_server):
    pg.close()
    postgres_server.stop()
    postgres_server.start()
    conn = db.connect(postgres_url)  # the pool's old connection is dead: checked and replaced
    assert db.deal_count(conn) == 0
    conn.close()


def test_an_unreachable_server_fails_within_the_timeout_without_the_password():
    url = f"postgresql://keepa:{PASSWORD}@127.0.0.1:{free_port()}/deals"
    started = time.monotonic()
    with pytest.raises(db.ERRORS) as raised:
        db.connect(url, busy_timeout_s=1)
    assert time.monotonic() - started < 10
    assert PASSWORD not in str(raised.value)


def test_a_wrong_password_is_refused_without_echoing_it(postgres_server):
    url = postgres_server.url(password="wrong-Zz9-password")
    with pytest.raises(db.ERRORS) as raised:
        db.connect(url, busy_timeout_s=2)
    assert "wrong-Zz9-password" not in str(raised.value)


def test_the_settings_never_show_the_database_password(postgres_url):
    settings = load_settings({"DATABASE_URL": postgres_url}, dotenv_path="/dev/null")
    assert settings.database == postgres_url
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.redacted())
