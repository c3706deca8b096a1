"""keepa_deals.freshness: the percentile and lag figures, the scan ETA, the plan model, and
collect_freshness on a real SQLite database whose figures are known by hand."""

from __future__ import annotations

import json
import time

import pytest
from freshness_seed import REFILL_RATE, SEEDED, seed_freshness

from keepa_deals import db
from keepa_deals.constants import TASK_BACKFILL
from keepa_deals.freshness import (
    Demand,
    Scan,
    assess_plan,
    collect_freshness,
    lags,
    outlook,
    percentile,
)

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000
TEN_THOUSAND_DEALS = 67  # pages of 150
DAY_MIN = 24 * 60


# --------------------------------------------------------------------------- figures

def test_percentile_is_the_nearest_rank():
    values = list(range(1, 21))
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile([7], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_lags_sort_the_samples_and_give_minutes():
    result = lags([600, 30, 150, 90])
    assert (result.count, result.p50_min, result.p95_min) == (4, 1.5, 10.0)
    assert lags([]).p50_min is None and lags([]).count == 0


def test_scan_eta_uses_the_current_pace_else_the_last_scans():
    scan = Scan.from_cursor({"page": 4, "sweep_started_at": NOW - 400, "last_sweep_pages": 10,
                             "last_sweep_started_at": NOW - 3000,
                             "last_sweep_finished_at": NOW - 400})
    assert scan.eta_s(10, NOW) == 600.0  # 6 pages at 100 s
    fresh = Scan.from_cursor({"page": 0, "sweep_started_at": NOW, "last_sweep_pages": 10,
                              "last_sweep_started_at": NOW - 3000,
                              "last_sweep_finished_at": NOW - 1000})
    assert fresh.eta_s(10, NOW) == 2000.0  # the last scan: 200 s a page
    assert Scan.from_cursor({"page": 0, "sweep_started_at": NOW}).eta_s(10, NOW) is None


def test_scan_size_prefers_the_last_complete_scan():
    assert Scan.from_cursor({"page": 2, "last_sweep_pages": 5}).size(40) == 750
    assert Scan.from_cursor({"page": 2}).size(40) == 300  # at least what was read
    assert Scan.from_cursor({"page": 0}).size(20_000) == 10_000  # Keepa's cap
    assert Scan.from_cursor({"page": "x", "last_sweep_pages": True}).size(None) == 0


# --------------------------------------------------------------------------- the model

def day_query(changed_per_min: float, *, new_per_min: float = 2.0) -> Demand:
    """A 10,000-deal query: one upserter page a minute, every deal refreshed once a day."""
    return Demand(upserter_pages=5, new=new_per_min, changed=changed_per_min,
                  refresh=10_000 / DAY_MIN)


def test_a_10000_deal_query_at_20_tokens_with_150_changes_a_minute_does_not_keep_up():
    plan = assess_plan(20, day_query(150), TEN_THOUSAND_DEALS)
    current = plan.current
    assert not current.keeps_up
    assert current.enrichment_capacity == pytest.approx(0.25 * (20 - 5 - 2), abs=0.05)
    assert current.scan_minutes == pytest.approx(67 * 5 / (0.75 * 13), abs=0.05)  # 34.4
    assert plan.verdict.startswith("The plan does not keep up: enrichment needs 156.9 "
                                   "tokens/min but gets 3.2")
    assert plan.next_plan.refill_rate == 60 and not plan.next_plan.keeps_up
    assert "At 60 tokens/min: still behind, changed deals within ~8.4 min." in plan.verdict


def test_the_next_plan_keeps_up_where_the_current_one_does_not():
    demand = day_query(5)  # needs 5 + 6.9 = 11.9 tokens/min of enrichment
    at_20, at_60 = assess_plan(20, demand, TEN_THOUSAND_DEALS), assess_plan(60, demand, 67)
    assert not at_20.current.keeps_up and at_20.next_plan.keeps_up
    assert at_60.current == at_20.next_plan and at_60.current.keeps_up
    # keeping up, pages get all that enrichment leaves: 53 - 11.9 tokens/min for 335 tokens
    assert at_60.current.scan_minutes == pytest.approx(335 / (53 - 11.94), abs=0.05)
    assert at_60.verdict.startswith("The plan keeps up: enrichment needs 11.9 of the 13.2 "
                                    "tokens/min")
    assert "At 250 tokens/min: keeps up" in at_60.verdict


def test_a_query_half_as_wide_halves_the_scan_time():
    plan = assess_plan(20, day_query(150, new_per_min=0), 66)
    assert plan.half_query.scan_pages == 33
    assert plan.half_query.scan_minutes == pytest.approx(plan.current.scan_minutes / 2, abs=0.1)
    assert plan.half_query.enrichment_need == pytest.approx(plan.current.enrichment_need / 2,
                                                            abs=0.1)


def test_an_upserter_using_the_whole_plan_leaves_nothing_to_scan():
    plan = assess_plan(20, Demand(upserter_pages=15, new=6, changed=1, refresh=1), 67)
    assert not plan.current.keeps_up and plan.current.scan_minutes is None
    assert "alone needs 21 of its 20 tokens/min" in plan.verdict
    assert plan.next_plan.scan_minutes is not None


def test_the_largest_plan_has_no_next_plan_and_tokens_per_deal_count():
    plan = assess_plan(4000, Demand(upserter_pages=5, new=0, changed=100, refresh=0), 67)
    assert plan.next_plan is None and "tokens/min:" not in plan.verdict
    doubled = outlook(4000, Demand(5, 0, 100, 0, tokens_per_deal=2.0), 67)
    assert doubled.enrichment_need == 2 * plan.current.enrichment_need == 200


# --------------------------------------------------------------------------- on a database

def collect(conn, now, *, cursor, refill_rate=REFILL_RATE):
    return collect_freshness(conn, now=now, enrich_max_age_h=24, refill_rate=refill_rate,
                             refill_period_ms=60_000, cursor=cursor)


def test_collect_freshness_gives_the_figures_of_the_last_hour(database):
    now = int(time.time())
    seed_freshness(database, now)
    result = collect(database, now, cursor=db.get_state(database, "backfill_cursor"))
    figures = result.to_dict()
    assert {key: figures[key] for key in SEEDED} == SEEDED
    # the plan, from the hour's rates per tick (60 ticks) and 2 tokens a deal
    measured = Demand(upserter_pages=10 / 60, new=4 / 60, changed=20 / 60, refresh=10 / DAY_MIN,
                      tokens_per_deal=2.0)
    assert result.plan == assess_plan(REFILL_RATE, measured, 10)
    current = result.plan.current
    assert (current.upserter_need, current.enrichment_need, current.enrichment_capacity) == \
        (0.3, 0.7, 4.9)
    assert current.keeps_up and current.scan_minutes == 2.6  # 50 tokens at 19.0 a tick
    assert json.dumps(figures)


def test_rates_are_measured_only_after_the_first_complete_scan(database):
    now = int(time.time())
    cursor = {"sweep_id": 2, "page": 0, "sweep_started_at": now - 600, "last_sweep_pages": 5,
              "last_sweep_started_at": now - 2000, "last_sweep_finished_at": now - 600}
    with db.transaction(database):
        database.executemany(
            "INSERT INTO freshness_samples (recorded_at, kind, lag_s) VALUES (?, 'changed', 60)",
            [(now - 1800,)] * 30 + [(now - 300,)] * 5)  # the first scan's burst, then 5 changes
        database.execute("INSERT INTO runs (task, started_at, ended_at, outcome, detail) "
                         "VALUES (?, ?, ?, 'ok', ?)", (TASK_BACKFILL, now - 2000, now - 600,
                                                       json.dumps({"sweeps_finished": 1})))
    result = collect(database, now, cursor=cursor)
    assert result.changed.count == 35  # the lags cover the whole hour
    assert result.plan.current.enrichment_need == 0.5  # 5 changes in 10 ticks, no deals stored
    assert result.scan_eta_s == 1400.0  # the last scan's pace: 5 pages in 1400 s


def test_no_plan_before_a_complete_scan_or_without_a_refill_rate(database):
    now = int(time.time())
    seed_freshness(database, now)
    first_scan = {"sweep_id": 1, "page": 0, "sweep_started_at": now - 300}
    assert collect(database, now, cursor=first_scan).plan is None
    assert collect(database, now, cursor=db.get_state(database, "backfill_cursor"),
                   refill_rate=None).plan is None
