"""One test per fault and token knob of the simulator (keepa-api.md §5.2, §5.6)."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from sim_helpers import (
    BROAD,
    FROZEN,
    FROZEN_START_MS,
    MINUTE_MS,
    SMALL,
    call,
    deal,
    tokens_left,
)
from support import wait_until

pytestmark = pytest.mark.timeout(60)

ONLY_DEALS = {"p": 1.0, "endpoints": ["deal"]}


def test_latency_delays_only_the_configured_endpoint(sim_factory):
    sim = sim_factory(catalogue=SMALL, latency={"per_endpoint": {"deal": 300}})
    deal(sim, BROAD)  # build the catalogue outside the measurement
    started = time.monotonic()
    slow = deal(sim, BROAD)
    assert time.monotonic() - started >= 0.3
    assert slow.json()["processingTimeInMs"] >= 300
    started = time.monotonic()
    call(sim, "/token")
    assert time.monotonic() - started < 0.25


def test_slow_tail_and_latency_scale(sim_factory):
    sim = sim_factory(latency={"slow_tail": {"p": 1.0, "ms": 800}, "latency_scale": 0.5})
    started = time.monotonic()
    assert call(sim, "/token").status_code == 200
    assert 0.4 <= time.monotonic() - started < 0.79


def test_http_5xx_with_html_body_is_not_charged(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"http_5xx": {**ONLY_DEALS, "codes": {"502": 1}}})
    failed = deal(sim, BROAD)
    assert failed.status_code == 502
    assert failed.headers["Content-Type"].startswith("text/html")
    assert "<html>" in failed.text
    assert call(sim, "/token").status_code == 200
    assert tokens_left(sim) == 1200


def test_http_5xx_with_json_body_and_charge(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"http_5xx": {
        **ONLY_DEALS, "codes": {"500": 1}, "html_body": False, "charge": True}})
    failed = deal(sim, BROAD)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "internalServerError"
    assert failed.json()["tokensLeft"] == 1195


def test_in_body_error_answers_200_without_payload(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"in_body_error": ONLY_DEALS})
    answer = deal(sim, BROAD)
    assert answer.status_code == 200
    assert answer.json()["error"]["type"] == "invalidParameter"
    assert "deals" not in answer.json()
    assert answer.json()["tokensConsumed"] == 0
    assert tokens_left(sim) == 1200


@pytest.mark.parametrize("mode", ["truncate", "html", "garbage"])
def test_malformed_json_bodies(sim_factory, mode):
    sim = sim_factory(catalogue=SMALL,
                      faults={"malformed_json": {**ONLY_DEALS, "mode": [mode]}})
    answer = deal(sim, BROAD, headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        answer.json()
    if mode == "truncate":
        assert answer.content.startswith(b'{"timestamp":')
    assert tokens_left(sim) == 1195  # the server did the work and charged it


def test_bad_gzip_cannot_be_decoded(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"bad_gzip": ONLY_DEALS})
    with pytest.raises(requests.exceptions.ContentDecodingError):
        deal(sim, BROAD)
    assert call(sim, "/token").status_code == 200


def test_reset_cuts_the_connection_mid_body(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"reset": ONLY_DEALS})
    with pytest.raises((requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError)):
        deal(sim, BROAD)
    assert call(sim, "/token").status_code == 200


def test_hang_outlasts_the_client_timeout(sim_factory):
    sim = sim_factory(catalogue=SMALL, faults={"hang": {**ONLY_DEALS, "ms": 5000}})
    with pytest.raises(requests.exceptions.ReadTimeout):
        deal(sim, BROAD, timeout=0.5)
    started = time.monotonic()
    assert call(sim, "/token").status_code == 200
    assert time.monotonic() - started < 1


def test_times_limits_how_often_a_fault_fires(sim_factory):
    sim = sim_factory(faults={"http_5xx": {"p": 1.0, "times": 2, "codes": {"503": 1}}})
    assert [call(sim, "/token").status_code for _ in range(3)] == [503, 503, 200]
    sim.config({"faults": {"http_5xx": {"times": 1}}})  # new knobs: the count restarts
    assert [call(sim, "/token").status_code for _ in range(2)] == [503, 200]


def test_forced_429_window_reports_the_real_balance(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL,
                      faults={"forced_429": {"windows": [{"from_s": 60, "to_s": 120}]}})
    assert deal(sim, BROAD).status_code == 200
    sim.clock(advance_ms=MINUTE_MS)
    refused = deal(sim, BROAD)
    assert refused.status_code == 429
    assert refused.json()["tokensLeft"] == 1200 and refused.json()["tokensConsumed"] == 0
    assert call(sim, "/token").status_code == 200
    sim.clock(advance_ms=MINUTE_MS)
    assert deal(sim, BROAD).status_code == 200


def test_stale_deals_lag_behind_the_clock(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, faults={"stale_deals": {"lag_min": 30}})
    truth = sim.truth(BROAD)
    assert truth["deals_minute"] == truth["now_keepa_minute"] - 30
    page = deal(sim, BROAD).json()["deals"]["dr"]
    assert max(d["lastUpdate"] for d in page) <= truth["now_keepa_minute"] - 30


def test_phantom_consumer_drains_each_tick_and_in_bursts(sim_factory):
    sim = sim_factory(clock=FROZEN, phantom_consumers=[{
        "key": "P" * 64, "tokens_per_min": 15, "burst_every_s": 120, "burst_tokens": 100}],
        keys={"P" * 64: {}})
    sim.clock(advance_ms=MINUTE_MS)
    assert tokens_left(sim) == 1185  # refilled to the ceiling, then 15 spent
    sim.clock(advance_ms=MINUTE_MS)
    assert tokens_left(sim) == 1085  # tick and drain again, then a burst of 100
    assert sim.tokens()["phantom_spent"] == 130


def test_phantom_consumer_spends_only_while_the_balance_is_positive(sim_factory):
    key = "P" * 64
    sim = sim_factory(clock=FROZEN, keys={key: {"refill_rate": 5, "initial_tokens": 0}},
                      phantom_consumers=[{"key": key, "tokens_per_min": 15}])
    sim.clock(advance_ms=10 * MINUTE_MS)  # +5 -15 = -10, -5, 0, -10, -5, 0, ... (a 3-tick cycle)
    assert tokens_left(sim) == -10
    assert sim.tokens()["phantom_spent"] == 4 * 15
    sim.clock(advance_ms=3000 * MINUTE_MS)  # days of ticks at once
    assert tokens_left(sim) == -10
    assert sim.tokens()["phantom_spent"] == 1004 * 15


def test_schedule_changes_rate_and_expires_the_key(sim_factory):
    key = "Q" * 64
    sim = sim_factory(clock=FROZEN, keys={key: {}}, schedule=[
        {"at_s": 60, "key": key, "refill_rate": 5}, {"at_s": 120, "key": key, "status": "expired"}])
    assert call(sim, "/token").json()["refillRate"] == 20
    sim.clock(advance_ms=MINUTE_MS)
    after_cut = call(sim, "/token").json()
    assert (after_cut["refillRate"], after_cut["tokensLeft"]) == (5, 1200)
    sim.clock(advance_ms=MINUTE_MS)
    expired = call(sim, "/token")
    assert expired.status_code == 402
    assert expired.json()["tokensLeft"] == 300  # clipped to the new ceiling at the next tick


def test_clock_skew_shifts_reported_timestamps(sim_factory):
    sim = sim_factory(clock={**FROZEN, "skew_ms": -90_000})
    assert call(sim, "/token").json()["timestamp"] == FROZEN_START_MS - 90_000
    assert sim.state()["clock"]["now_ms"] == FROZEN_START_MS


def test_error_on_429_adds_an_error_object(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    sim.tokens(tokens=0)
    assert "error" not in deal(sim, BROAD).json()
    sim.config({"tokens": {"error_on_429": True}})
    refused = deal(sim, BROAD)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "notEnoughTokens"


@pytest.mark.parametrize(("charge_at", "second_status"), [("admission", 429),
                                                          ("completion", 200)])
def test_charge_at_decides_when_the_balance_drops(sim_factory, charge_at, second_status):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, tokens={"charge_at": charge_at})
    deal(sim, BROAD, page=5)  # build catalogue and snapshot before the race
    sim.config({"latency": {"per_endpoint": {"deal": 800}}})
    sim.tokens(tokens=3)
    first = threading.Thread(target=deal, args=(sim, BROAD))
    first.start()

    def first_is_in_flight():
        bucket = sim.tokens()
        return bucket["requests"] >= 2 and (charge_at == "completion" or bucket["tokens"] < 3)

    wait_until(first_is_in_flight, 10, "the first request to be admitted")
    assert deal(sim, BROAD).status_code == second_status
    first.join(timeout=10)


@pytest.mark.parametrize(("rule", "right_after", "after_tick"), [
    ("immediate", 300, 300), ("next_tick", 1200, 300), ("never", 1200, 1200)])
def test_clip_on_rate_change(sim_factory, rule, right_after, after_tick):
    sim = sim_factory(clock=FROZEN, tokens={"clip_on_rate_change": rule})
    sim.tokens(refill_rate=5)
    assert tokens_left(sim) == right_after
    sim.clock(advance_ms=MINUTE_MS)
    assert tokens_left(sim) == after_tick


def test_flow_reduction_waits_for_the_five_minute_boundary(sim_factory):
    sim = sim_factory(clock=FROZEN)
    sim.tokens(flow_reduction=3)
    before = call(sim, "/token").json()
    assert (before["refillRate"], before["tokenFlowReduction"]) == (20, 0)
    boundary = (FROZEN_START_MS // (5 * MINUTE_MS) + 1) * 5 * MINUTE_MS
    sim.clock(set_ms=boundary)
    after = call(sim, "/token").json()
    assert (after["refillRate"], after["tokenFlowReduction"]) == (17, 3)


def test_flow_reduction_applied_immediately(sim_factory):
    sim = sim_factory(clock=FROZEN, tokens={"flow_reduction_apply": "immediate"})
    sim.tokens(flow_reduction=20.4)
    body = call(sim, "/token").json()
    assert (body["refillRate"], body["tokenFlowReduction"]) == (0, 20.4)


def test_always_gzip_ignores_accept_encoding(sim_factory):
    sim = sim_factory(http={"always_gzip": True})
    answer = requests.get(sim.url + "/token", params={"key": sim.key}, stream=True, timeout=10,
                          headers={"Accept-Encoding": "identity"})
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.raw.read(decode_content=False)[:2] == b"\x1f\x8b"
