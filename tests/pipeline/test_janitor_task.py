"""The janitor task's wiring: it deletes stale deals only with a healthy pipeline verdict.

Deals come from a real backfill run (simulator, Redis, SQLite); "stale" is made by moving their
last sighting back in time, and health comes from real heartbeats (or their absence).
"""

from __future__ import annotations

import time

import pytest
from pipeline_helpers import runs, sim_config, stored_deals

from keepa_deals import db, heartbeats
from keepa_deals.backfiller import run_backfill
from keepa_deals.janitor_task import run_janitor

pytestmark = pytest.mark.timeout(60)


def age_deals(database, asins, seconds: int) -> None:
    conn = db.connect(database)
    with db.transaction(conn):
        conn.executemany("UPDATE deals SET last_seen_at = last_seen_at - ? WHERE asin = ?",
                         [(seconds, asin) for asin in asins])
    conn.close()


def test_stale_deals_go_only_while_the_pipeline_is_healthy(sim_factory, services_for,
                                                           redis_client):
    sim = sim_factory(**sim_config(clock={"mode": "frozen"}))
    services, database = services_for(sim, JANITOR_MAX_AGE_H=1)
    assert run_backfill(services).outcome == "ok"
    stale = sorted(stored_deals(database))[:25]
    age_deals(database, stale, 2 * 3600)

    refused = run_janitor(services)  # no worker or beat heartbeat: not healthy
    assert refused["outcome"] == "skipped" and refused["removed"] == 0
    assert "not healthy" in refused["refused"]
    assert set(stale) <= set(stored_deals(database))

    heartbeats.worker_heartbeat(redis_client, "w@test")
    heartbeats.beat_heartbeat(redis_client)
    before = stored_deals(database)
    done = run_janitor(services, now=int(time.time()))
    assert done["outcome"] == "ok" and done["removed"] == len(stale)
    assert set(stored_deals(database)) == set(before) - set(stale)
    assert [r["outcome"] for r in runs(database, "remove_stale_deals")] == ["skipped", "ok"]
