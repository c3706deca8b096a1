"""Runs of both tasks in this process (no Celery) against real Redis, simulator and SQLite.

Covers the backfill cursor resuming in the middle of a page, the upserter's watermark against
real (unsorted, equal-minute) deal pages and a server clock behind the deal data, waiting for
tokens instead of skipping, skipped runs under a held lease, and failures that move nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time

import psycopg
import pytest
from pipeline_helpers import (
    KEEPA_MINUTE_MS,
    LOOSE_QUERY,
    deal_prices,
    deal_requests,
    enrichment_lag,
    frozen_sim,
    never_enriched,
    newest_enrichment,
    product_batches,
    runs,
    sim_config,
    state,
    stored_deals,
    truth_deals,
    truth_versions,
)
from support import wait_until

from keepa_deals import backfiller, postgres
from keepa_deals.backfiller import CURSOR_STATE, run_backfill
from keepa_deals.constants import BACKFILL_LOCK, LOCK_KEY_PREFIX, UPSERT_LOCK
from keepa_deals.heartbeats import read_task_statuses
from keepa_deals.locks import LeaseLock
from keepa_deals.simple_task import OVERLAP_S, WATERMARK_STATE, run_upserter
from keepa_deals.task_runtime import run_pipeline_task
from keepa_sim import DEFAULT_API_KEY

pytestmark = pytest.mark.timeout(90)


def test_backfill_resumes_at_its_page_and_enriches_each_deal_once(sim_factory, services_for):
    # Slow pages and a 1 s slice: a run reads a page or two (and a batch of 10 between them).
    sim = frozen_sim(sim_factory, default_refill_rate=10,
                     keys={DEFAULT_API_KEY: {"initial_tokens": 5000}},
                     latency={"per_endpoint": {"deal": 600, "product": 150}})
    services, database = services_for(sim)
    first = run_backfill(services, slice_s=1.0)
    cursor = state(database, CURSOR_STATE)
    assert first.outcome == "partial"
    assert cursor["sweep_id"] == 1 and 1 <= cursor["page"] < 3
    assert len(stored_deals(database)) == 150 * cursor["page"], "pages commit with the cursor"
    sim.config({"latency": {"per_endpoint": {"deal": 0, "product": 150}}})

    final = None
    for _ in range(30):
        final = run_backfill(services, slice_s=30)
        if final.outcome == "ok":
            break
    assert final.outcome == "ok", final
    assert state(database, CURSOR_STATE)["sweep_id"] >= 2  # slow enrichment: sweeps went on

    truth = truth_deals(sim, LOOSE_QUERY)
    assert stored_deals(database) == truth
    fetched = [asin for batch in product_batches(sim) for asin in batch]
    assert sorted(fetched) == sorted(truth), "every deal enriched exactly once"
    assert all(len(batch) <= 10 for batch in product_batches(sim)), "batch = one refill tick"
    assert set(enrichment_lag(database)) == set(), "every deal enriched for its lastUpdate"


def test_a_sweep_fetches_products_only_for_deals_whose_last_update_moved(sim_factory,
                                                                        services_for):
    sim = frozen_sim(sim_factory, keys={DEFAULT_API_KEY: {"initial_tokens": 50_000}})
    services, database = services_for(sim)
    assert run_backfill(services, slice_s=60).outcome == "ok"
    fetched_first = len(product_batches(sim))

    second = run_backfill(services, slice_s=60)
    assert second.outcome == "ok" and second.detail["sweeps_finished"] >= 1
    assert len(product_batches(sim)) == fetched_first, "an unchanged sweep costs no /product"

    before = stored_deals(database)
    sim.clock(advance_ms=40 * KEEPA_MINUTE_MS)
    assert run_backfill(services, slice_s=60).outcome == "ok"
    truth = truth_deals(sim, LOOSE_QUERY)
    assert stored_deals(database).items() >= truth.items(), "the sweep stored every change"
    moved = {a for a, t in truth.items() if a not in before or before[a] != t}
    assert moved, "40 minutes moved some deals"
    refetched = [a for batch in product_batches(sim)[fetched_first:] for a in batch]
    assert sorted(refetched) == sorted(moved), "exactly the new and changed deals refetched"


def test_a_changed_price_is_in_the_table_before_its_enrichment(sim_factory, services_for):
    sim = frozen_sim(sim_factory, keys={DEFAULT_API_KEY: {"initial_tokens": 50_000}})
    services, database = services_for(sim)
    assert run_backfill(services, slice_s=60).outcome == "ok"
    before = stored_deals(database)
    sim.clock(advance_ms=40 * KEEPA_MINUTE_MS)
    moved = {a: t for a, t in truth_deals(sim, LOOSE_QUERY).items() if before.get(a, t) != t}
    assert moved
    sim.config({"latency": {"per_endpoint": {"product": 3000}}})  # enrichment is slow now

    worker = threading.Thread(target=run_backfill, args=(services,), kwargs={"slice_s": 60})
    worker.start()
    try:
        waiting = wait_until(lambda: {a for a in enrichment_lag(database)
                                      if a in moved and stored_deals(database)[a] == moved[a]},
                             20, "a changed deal stored with its new lastUpdate, not enriched")
        prices = deal_prices(database, waiting)
        assert all(price is not None for price in prices.values())
    finally:
        worker.join(timeout=60)
    assert not enrichment_lag(database), "the same run then enriched them"


def test_enrichment_older_than_enrich_max_age_is_refreshed(sim_factory, services_for):
    sim = frozen_sim(sim_factory, keys={DEFAULT_API_KEY: {"initial_tokens": 50_000}})
    services, database = services_for(sim, ENRICH_MAX_AGE_H="0.001")  # 3.6 s
    assert run_backfill(services, slice_s=60).outcome == "ok"
    enriched_once = len(product_batches(sim))
    assert run_backfill(services, slice_s=60).outcome == "ok"
    assert len(product_batches(sim)) == enriched_once, "still fresh: nothing refetched"
    wait_until(lambda: newest_enrichment(database) < time.time() - 5, 15, "enrichments age")
    report = run_backfill(services, slice_s=60)
    assert report.detail.get("enriched_refresh") == len(stored_deals(database))
    assert report.detail.get("tokens_refresh", 0) >= len(stored_deals(database))


def test_upserter_follows_new_deals_with_a_watermark_that_never_passes_server_time(
        sim_factory, services_for):
    # The server clock runs 3 hours behind the deal data: recent creationDates are "in the
    # future" of the server.
    sim = sim_factory(**sim_config(clock={"mode": "frozen", "skew_ms": -180 * KEEPA_MINUTE_MS}))
    services, database = services_for(sim)
    server_now = sim.state()["clock"]["timestamp_ms"] // 1000

    report = run_upserter(services)
    assert report.outcome == "ok" and report.deals_written > 0
    watermark = state(database, WATERMARK_STATE)
    assert watermark == server_now, "future creationDates clamp to the server clock"
    assert max(created for created, _ in truth_versions(sim, LOOSE_QUERY).values()) > server_now
    assert run_upserter(services).deals_written == 0, "unchanged deals are not written again"

    for step in range(3):
        sim.clock(advance_ms=70 * KEEPA_MINUTE_MS)
        before = state(database, WATERMARK_STATE)
        report = run_upserter(services)
        assert report.outcome == "ok", report
        stored = stored_deals(database)
        window_start = min(before, sim.state()["clock"]["timestamp_ms"] // 1000) - OVERLAP_S
        missing = {a: v for a, v in truth_versions(sim, LOOSE_QUERY).items()
                   if v[0] >= window_start and stored.get(a) != v[1]}
        assert not missing, f"step {step}: recent deals missing or stale: {missing}"
        now = sim.state()["clock"]["timestamp_ms"] // 1000
        assert before <= state(database, WATERMARK_STATE) <= now
    assert not never_enriched(database), "the upserter enriched every new deal it wrote"


def test_upserter_reads_pages_by_creation_however_last_update_is_scattered(
        sim_factory, services_for):
    # 3 000 products: ~1 150 deals over 8 pages, lastUpdate moving all over them.
    sim = frozen_sim(sim_factory, catalogue={"n_products": 3000})
    services, database = services_for(sim)
    assert run_upserter(services).outcome == "ok"
    for _ in range(4):
        sim.clock(advance_ms=20 * KEEPA_MINUTE_MS)
        watermark = state(database, WATERMARK_STATE)
        versions = truth_versions(sim, LOOSE_QUERY)
        report = run_upserter(services)
        new = sum(1 for created, _ in versions.values() if created >= watermark - OVERLAP_S)
        moved = sum(1 for created, updated in versions.values()
                    if created < watermark - OVERLAP_S and updated >= watermark - OVERLAP_S)
        assert moved > 150, "old deals updated recently are spread over every page"
        assert report.detail["pages"] <= 2 + -(-new // 150)


def test_upserter_pays_for_the_newest_page_only_once_keepas_cached_result_expired(
        sim_factory, services_for):
    sim = frozen_sim(sim_factory)
    services, _ = services_for(sim)

    def newest_page_reads() -> int:
        return sum(1 for entry in deal_requests(sim)
                   if json.loads(entry["params"]["selection"]).get("sortType") == 1)

    assert run_upserter(services).outcome == "ok"
    assert newest_page_reads() == 1
    sim.clock(advance_ms=30_000)  # the cache expires in 90 s: more than a Keepa minute away
    skipped = run_upserter(services)
    assert skipped.outcome == "ok" and "cached" in skipped.detail["stopped"]
    assert newest_page_reads() == 1, "no tokens for the answer already read"
    sim.clock(advance_ms=70_000)  # expires in 20 s: the run waits for it, then reads
    assert run_upserter(services).outcome == "ok"
    assert newest_page_reads() == 2
    assert [e["cost"] for e in deal_requests(sim)] == [5, 5]


def test_upserter_waits_for_tokens_and_keeps_its_watermark_when_the_slice_ends(
        sim_factory, services_for, redis_client):
    # Deep deficit, real-time refill (one tick a minute): nothing can be admitted in 3 s.
    sim = sim_factory(**sim_config(clock={"mode": "scaled", "minute_ms": 60_000},
                                   default_refill_rate=5))
    services, database = services_for(sim, KEEPA_REFILL_PERIOD_MS=60_000)
    assert run_upserter(services).outcome == "ok"
    watermark = state(database, WATERMARK_STATE)
    sim.clock(advance_ms=20 * KEEPA_MINUTE_MS)
    sim.tokens(tokens=-200)

    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_upserter(services,
                                                                          slice_s=3)))
    thread.start()
    status = wait_until(lambda: (read_task_statuses(redis_client).get("update_recent_deals", {})
                                 .get("state") == "waiting_tokens"
                                 and read_task_statuses(redis_client)["update_recent_deals"]),
                        10, "status waiting_tokens")
    assert status["eta_s"] > 0
    thread.join(timeout=20)
    report = result["r"]
    assert report.outcome == "partial" and report.error is None
    assert report.detail["stopped"] == "slice ended while waiting for tokens"
    assert state(database, WATERMARK_STATE) == watermark, "no watermark move without the rows"
    assert read_task_statuses(redis_client)["update_recent_deals"]["state"] == "idle"
    assert runs(database, "update_recent_deals")[-1]["outcome"] == "partial"


@pytest.mark.parametrize(("lock_name", "run"), [(BACKFILL_LOCK, run_backfill),
                                                (UPSERT_LOCK, run_upserter)])
def test_a_second_instance_is_skipped_naming_the_holder(sim, services_for, redis_client,
                                                        lock_name, run):
    services, database = services_for(sim)
    holder = LeaseLock(redis_client, lock_name, ttl_s=30, task_id="the-first-instance")
    assert holder.acquire()
    try:
        report = run(services)
    finally:
        holder.release()
    assert report.outcome == "skipped"
    assert "held by" in report.error and "the-first-instance" in report.error
    recorded = runs(database, report_task(run))[-1]
    assert (recorded["outcome"], recorded["error"]) == ("skipped", report.error)
    assert not deal_requests(sim), "a skipped run spends nothing"


def report_task(run) -> str:
    return "backfill_deals" if run is run_backfill else "update_recent_deals"


def test_a_failing_key_is_a_recorded_failure_that_moves_nothing(sim_factory, services_for):
    sim = sim_factory(**sim_config())
    services, database = services_for(sim)
    assert run_upserter(services).outcome == "ok"
    watermark = state(database, WATERMARK_STATE)
    sim.tokens(status="expired")
    sim.clock(advance_ms=15 * KEEPA_MINUTE_MS)
    for run, name in ((run_upserter, WATERMARK_STATE), (run_backfill, CURSOR_STATE)):
        before = state(database, name)
        report = run(services)
        assert report.outcome == "failed"
        assert "402" in report.error and "payment" in report.error.lower()
        assert state(database, name) == before
    assert state(database, WATERMARK_STATE) == watermark
    assert runs(database, "backfill_deals")[-1]["revision"], "the code revision is recorded"


def test_a_broken_query_file_fails_runs_clearly_until_it_is_fixed(sim_factory, services_for,
                                                                  query_file):
    sim = sim_factory(**sim_config())
    services, _ = services_for(sim)
    query_file.write_text(json.dumps({**LOOSE_QUERY, "dateRange": "3"}))
    report = run_upserter(services)
    assert report.outcome == "failed"
    assert "QueryFileError" in report.error and "dateRange" in report.error
    assert not deal_requests(sim), "nothing is sent with a query Keepa would misread"
    query_file.write_text(json.dumps(LOOSE_QUERY))
    assert run_upserter(services).outcome == "ok", "the next run reads the fixed file"


def refuse_deal_writes(database) -> None:
    """A trigger that makes every INSERT or UPDATE of a deal fail (a failing commit)."""
    if postgres.is_url(database):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; "
                "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON deals "
                "FOR EACH ROW EXECUTE FUNCTION refuse()")
        return
    conn = sqlite3.connect(database)
    conn.executescript(
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON deals BEGIN SELECT RAISE(ABORT, "
        "'refused by the test'); END; CREATE TRIGGER refuse_update BEFORE UPDATE ON deals "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;")
    conn.close()


def test_a_failed_commit_moves_neither_cursor_nor_watermark(sim_factory, services_for):
    sim = frozen_sim(sim_factory, keys={DEFAULT_API_KEY: {"initial_tokens": 50_000}})
    services, database = services_for(sim)
    assert run_upserter(services).outcome == "ok"
    watermark = state(database, WATERMARK_STATE)
    sim.clock(advance_ms=70 * KEEPA_MINUTE_MS)
    refuse_deal_writes(database)
    for run, name, before in ((run_backfill, CURSOR_STATE, None),
                              (run_upserter, WATERMARK_STATE, watermark)):
        report = run(services)
        assert report.outcome == "failed" and "refused by the test" in report.error
        assert state(database, name) == before, f"{name} moved without its rows"


def test_a_run_paused_past_its_lease_cannot_overwrite_its_successors_work(
        sim_factory, services_for, redis_client):
    sim = frozen_sim(sim_factory, keys={DEFAULT_API_KEY: {"initial_tokens": 50_000}})
    # A long TTL: the heartbeat (every TTL/3) cannot notice the takeover within the test, as
    # when a whole process is stopped; only the fence stands between the sleeper and the table.
    services, database = services_for(sim, LOCK_TTL_S=120)
    successor = {}

    def sleeps_past_its_lease(run):
        page, server_now = run.fetch_deal_page(run.selection, 0)
        stale = [dataclasses.replace(record, last_update_at=record.last_update_at + 60,
                                     title="written by the sleeper")
                 for record in page.records]
        redis_client.delete(LOCK_KEY_PREFIX + BACKFILL_LOCK)  # its lease ran out meanwhile
        successor["report"] = run_backfill(services)
        successor["cursor"] = state(database, CURSOR_STATE)
        successor["deals"] = stored_deals(database)
        run.commit(stale, CURSOR_STATE, {"written by": "the sleeper"}, server_now=server_now)
        return True

    report = run_pipeline_task(services, backfiller.SPEC, sleeps_past_its_lease)
    assert successor["report"].outcome in ("ok", "partial") and successor["deals"]
    assert report.outcome == "partial" and "fenced" in report.error, report
    assert state(database, CURSOR_STATE) == successor["cursor"], "the cursor went back"
    assert stored_deals(database) == successor["deals"], "the sleeper's rows were written"
