"""clock.speed / --speed: one simulator clock at N times wall pace for deal data and refill ticks.

Also the deal engine's shared matching: sortTypes of one minute share one matching, and the
incremental per-minute matching equals matching from scratch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
import requests
from sim_helpers import (
    BROAD,
    FROZEN,
    FROZEN_START_MS,
    MINUTE_MS,
    PRODUCTION,
    SMALL,
    call,
    deal,
    run_sim,
)
from support import wait_until

from keepa_sim import config as sim_config
from keepa_sim import key_label
from keepa_sim.clock import KEEPA_EPOCH_MINUTE, SimClock, keepa_minute, wall_ms
from keepa_sim.deal_engine import DealEngine
from keepa_sim.selection import parse_selection
from keepa_sim.simulator import Simulator

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]

SPEED = 60  # one Keepa minute, and so one refill tick, per wall second
TICK_WALL_S = MINUTE_MS / SPEED / 1000
FAST = {"mode": "real", "speed": SPEED, "start_ms": FROZEN_START_MS}
RATE = 20


def sim_now(sim) -> tuple[int, float, float]:
    """(simulator ms, wall s before asking, wall s after the answer)."""
    before = time.monotonic()
    now = sim.state()["clock"]["now_ms"]
    return now, before, time.monotonic()


def test_simulator_time_runs_speed_times_the_wall_clock(sim_factory):
    sim = sim_factory(clock=FAST)
    start, start_before, start_after = sim_now(sim)

    def three_keepa_minutes_later():
        reading = sim_now(sim)
        return reading if reading[0] >= start + 3 * MINUTE_MS else None

    end, end_before, end_after = wait_until(three_keepa_minutes_later, 15, "3 Keepa minutes")
    elapsed = end - start
    assert SPEED * (end_before - start_after) * 1000 - 50 <= elapsed
    assert elapsed <= SPEED * (end_after - start_before) * 1000 + 50

    before = sim.state()["clock"]["now_ms"]
    stamp = call(sim, "/token").json()["timestamp"]
    assert before <= stamp <= sim.state()["clock"]["now_ms"]  # simulator time ...
    assert abs(stamp - wall_ms()) > 24 * 60 * MINUTE_MS  # ... not the wall clock


def test_a_refill_tick_every_minute_ms_over_speed_wall_ms(sim_factory):
    sim = sim_factory(clock=FAST)
    sim.tokens(tokens=-100)  # 429 territory for five ticks
    balances, risen_at = [-100], []

    def next_tick():
        body = call(sim, "/token").json()
        assert 0 < body["refillIn"] <= MINUTE_MS / SPEED  # wall ms
        if body["tokensLeft"] == balances[-1]:
            return False
        balances.append(body["tokensLeft"])
        risen_at.append(time.monotonic())
        return True

    for _ in range(3):
        wait_until(next_tick, 5 * TICK_WALL_S, "a refill tick", interval=0.01)
    assert balances == [-100, -100 + RATE, -100 + 2 * RATE, -100 + 3 * RATE]
    for gap in (later - earlier for earlier, later in pairwise(risen_at)):
        assert 0.8 * TICK_WALL_S <= gap <= 1.2 * TICK_WALL_S

    # A client that sleeps refillIn wall ms wakes up at the tick.
    sent = time.monotonic()
    body = call(sim, "/token").json()
    answered = time.monotonic()
    wait_until(next_tick, 5 * TICK_WALL_S, "the announced tick", interval=0.01)
    refill_in_s = body["refillIn"] / 1000
    assert sent + refill_in_s - 0.02 <= risen_at[-1] <= answered + refill_in_s + 0.15


def test_429_and_state_report_refill_in_as_wall_ms(sim_factory):
    sim = sim_factory(clock=FAST, catalogue=SMALL)
    sim.tokens(tokens=-1000)
    refused = deal(sim, BROAD)
    assert refused.status_code == 429
    assert 0 < refused.json()["refillIn"] <= MINUTE_MS / SPEED
    bucket = sim.state()["buckets"][key_label(sim.key)]
    assert 0 < bucket["refill_in_ms"] <= MINUTE_MS / SPEED
    assert bucket["period_ms"] == MINUTE_MS  # the tick is a Keepa minute of simulator time
    assert sim.state()["clock"]["speed"] == SPEED


def test_deal_data_follow_the_simulator_minute(sim_factory):
    fast = sim_factory(clock=FAST, catalogue=SMALL)
    first = fast.truth(BROAD)
    assert first["deals_minute"] - keepa_minute(FROZEN_START_MS) < 30  # not the wall clock
    wait_until(lambda: fast.state()["clock"]["keepa_minute"] >= first["deals_minute"] + 3, 15,
               "3 Keepa minutes")
    later = fast.truth(BROAD)
    assert later["deals_minute"] == later["now_keepa_minute"] >= first["deals_minute"] + 3
    assert all(d["creationDate"] <= d["lastUpdate"] <= later["deals_minute"]
               for d in later["deals"])

    at_that_minute = (later["deals_minute"] + KEEPA_EPOCH_MINUTE) * MINUTE_MS
    twin = sim_factory(clock={"mode": "frozen", "start_ms": at_that_minute}, catalogue=SMALL)
    assert twin.truth(BROAD)["deals"] == later["deals"]


def test_sim_clock_speed_with_freeze_advance_and_set():
    speed = 1000
    created_before = time.monotonic()
    clock = SimClock(minute_ms=MINUTE_MS, speed=speed, start_ms=FROZEN_START_MS)
    created_after = time.monotonic()
    wait_until(lambda: clock.now_ms() >= FROZEN_START_MS + 200_000, 5, "0.2 s at speed 1000")
    read_before = time.monotonic()
    now = clock.now_ms()
    read_after = time.monotonic()
    assert speed * (read_before - created_after) * 1000 - 2 <= now - FROZEN_START_MS
    assert now - FROZEN_START_MS <= speed * (read_after - created_before) * 1000 + 2

    clock.freeze(True)
    frozen_at, frozen_wall = clock.now_ms(), time.monotonic()
    wait_until(lambda: time.monotonic() - frozen_wall >= 0.05, 5, "50 ms of wall time")
    assert clock.now_ms() == frozen_at
    clock.advance(5_000)
    assert clock.now_ms() == frozen_at + 5_000
    clock.set(FROZEN_START_MS)
    assert clock.now_ms() == FROZEN_START_MS

    thawed_before = time.monotonic()
    clock.freeze(False)
    resumed = clock.now_ms() - FROZEN_START_MS  # continues from the frozen value, no jump
    assert 0 <= resumed <= speed * (time.monotonic() - thawed_before) * 1000 + 2
    assert (clock.wall_ms_for(MINUTE_MS), clock.wall_ms_for(1)) == (60, 1)
    assert SimClock(minute_ms=MINUTE_MS, speed=SPEED).wall_ms_for(MINUTE_MS - 59) == 1000


def frozen_simulator() -> Simulator:
    return Simulator(sim_config.load({"clock": FROZEN, "catalogue": SMALL}))


def test_sort_types_of_one_minute_share_one_matching(monkeypatch):
    simulator = frozen_simulator()
    matchings = []
    match_all = DealEngine._match_all

    def counting(self, matcher, selection, minute):
        matchings.append(minute)
        return match_all(self, matcher, selection, minute)

    monkeypatch.setattr(DealEngine, "_match_all", counting)
    knobs = simulator.config["deals"]
    by_age = parse_selection({**BROAD, "sortType": 1}, None, knobs)
    by_percent = parse_selection({**BROAD, "sortType": 4}, None, knobs)
    engine = simulator.deals
    engine.page("collector", by_age)
    engine.page("collector", by_percent)
    age, percent = engine.truth(by_age, None), engine.truth(by_percent, None)
    assert len(matchings) == 1
    assert sorted(d["asin"] for d in age["deals"]) == sorted(d["asin"] for d in percent["deals"])
    ages = [(d["creationDate"], d["lastUpdate"]) for d in age["deals"]]
    assert ages == sorted(ages, reverse=True)
    assert [d["asin"] for d in age["deals"]] != [d["asin"] for d in percent["deals"]]

    simulator.clock.advance(MINUTE_MS)
    engine.truth(by_percent, None)
    engine.truth(by_age, None)
    assert len(matchings) == 2  # one more minute, one more matching


@pytest.mark.parametrize("selection", [
    PRODUCTION, {**BROAD, "dateRange": 4, "sortType": 2},
    {"domainId": 1, "priceTypes": [2], "dateRange": 1, "isBackInStock": True},
], ids=["production", "date_range_4", "back_in_stock"])
def test_incremental_matching_equals_matching_from_scratch(selection):
    simulator = frozen_simulator()
    parsed = parse_selection(selection, None, simulator.config["deals"])
    compared = 0
    # Steps of a few hours cross the 12 h update window, the day and week date ranges and the
    # 24 h stock window many times; some move back in time.
    for minutes in (0, 1, 1, 30, 719, 2, -700, 1440, 1, *[97, 131, 173, -61] * 4, -3000, -1):
        simulator.clock.advance(minutes * MINUTE_MS)
        fresh = DealEngine(simulator.clock, simulator.catalogue, simulator.config)
        incremental = simulator.deals.truth(parsed, None)
        assert incremental == fresh.truth(parsed, None)
        compared += incremental["count"]
    assert compared > 0


def test_speed_flag_sets_the_clock_and_is_fixed_after_start():
    process, url = run_sim("--speed", "60")
    try:
        state = requests.get(url + "/_sim/state", timeout=5).json()
        assert state["config"]["clock"]["speed"] == 60 and state["clock"]["speed"] == 60
        envelope = requests.get(url + "/token", params={"key": sim_config.DEFAULT_API_KEY},
                                timeout=5).json()
        assert 0 < envelope["refillIn"] <= MINUTE_MS / 60
        refused = requests.post(url + "/_sim/config", json={"clock": {"speed": 2}}, timeout=5)
        assert refused.status_code == 400
        assert "clock.speed" in refused.json()["error"]
        assert "fixed after start" in refused.json()["error"]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("value", ["0", "-2", "fast", "nan", "1e9"])
def test_an_invalid_speed_is_a_one_line_error_naming_the_knob(value):
    result = subprocess.run([sys.executable, "-m", "keepa_sim", "--port", "0", "--speed", value],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "clock.speed" in lines[0] and "Traceback" not in result.stderr


def test_a_speed_in_the_config_file_is_checked_too(tmp_path):
    config = tmp_path / "speed.json"
    config.write_text('{"clock": {"speed": "60"}}')
    result = subprocess.run([sys.executable, "-m", "keepa_sim", "--port", "0", "--config",
                             str(config)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert "clock.speed: must be a number" in result.stderr


def test_help_explains_speed_and_refill_in_wall_ms():
    result = subprocess.run([sys.executable, "-m", "keepa_sim", "--help"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=30, check=True)
    assert "--speed N" in result.stdout and "clock.speed" in result.stdout
    assert "`refillIn` is reported in wall ms" in " ".join(result.stdout.split())
