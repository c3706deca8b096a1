"""One test per control endpoint under /_sim (keepa-api.md §5.7)."""

from __future__ import annotations

import json

import pytest
import requests
from sim_helpers import BROAD, FROZEN, FROZEN_START_MS, MINUTE_MS, SMALL, call, deal, tokens_left

from keepa_deals.constants import KEEPA_EPOCH_OFFSET_MINUTES
from keepa_sim import key_label

pytestmark = pytest.mark.timeout(60)


def post(sim, path: str, body) -> requests.Response:
    return requests.post(sim.url + path, json=body, timeout=10)


def test_state_shows_clock_buckets_and_config_without_keys(sim_factory):
    sim = sim_factory(clock=FROZEN)
    state = sim.state()
    assert state["clock"]["now_ms"] == FROZEN_START_MS and state["clock"]["frozen"]
    bucket = state["buckets"][key_label(sim.key)]
    assert (bucket["tokens"], bucket["ceiling"], bucket["refill_rate"]) == (1200, 1200, 20)
    assert state["config"]["deals"]["cache_ttl_s"] == 120
    assert sim.key not in json.dumps(state)


def test_config_merges_knobs_and_rejects_bad_ones(sim_factory):
    sim = sim_factory(clock=FROZEN)
    merged = sim.config({"latency": {"base_ms": 5}, "keys": {"N" * 64: {"refill_rate": 7}}})
    assert merged["config"]["latency"]["base_ms"] == 5
    assert merged["config"]["latency"]["jitter_ms"] == 0  # untouched siblings stay
    assert call(sim, "/token", key="N" * 64).json()["refillRate"] == 7
    assert tokens_left(sim) == 1200  # the existing key is still there

    for bad, complaint in (({"tokens": {"charge_at": "later"}}, "tokens.charge_at"),
                           ({"faults": {"hang": {"pp": 1}}}, "faults.hang.pp"),
                           ({"clock": {"minute_ms": 100}}, "clock.minute_ms"),
                           ([1, 2], "JSON object")):
        refused = post(sim, "/_sim/config", bad)
        assert refused.status_code == 400
        assert complaint in refused.json()["error"]
    assert sim.state()["config"]["tokens"]["charge_at"] == "completion"


def test_clock_freezes_advances_and_sets(sim_factory):
    sim = sim_factory()
    frozen = sim.clock(freeze=True)["now_ms"]
    assert sim.state()["clock"]["now_ms"] == frozen
    assert sim.clock(advance_ms=MINUTE_MS)["now_ms"] == frozen + MINUTE_MS
    moved = sim.clock(set_ms=FROZEN_START_MS)
    assert moved["keepa_minute"] == FROZEN_START_MS // 60_000 - KEEPA_EPOCH_OFFSET_MINUTES
    assert call(sim, "/token").json()["timestamp"] == FROZEN_START_MS
    assert post(sim, "/_sim/clock", {"advance_ms": "1"}).status_code == 400
    assert post(sim, "/_sim/clock", {"rewind": 1}).status_code == 400


def test_tokens_sets_balance_rate_flow_and_status(sim_factory):
    sim = sim_factory(clock=FROZEN, tokens={"flow_reduction_apply": "immediate"})
    bucket = sim.tokens(tokens=-7, refill_rate=30, flow_reduction=5)
    assert (bucket["tokens"], bucket["effective_rate"]) == (-7, 25)
    assert bucket["key"] == key_label(sim.key)
    envelope = call(sim, "/token").json()
    assert (envelope["tokensLeft"], envelope["refillRate"], envelope["tokenFlowReduction"]) == (
        -7, 25, 5)
    sim.tokens(status="expired")
    assert call(sim, "/token").status_code == 402
    assert post(sim, "/_sim/tokens", {"key": "nope", "tokens": 1}).status_code == 404
    assert post(sim, "/_sim/tokens", {"key": sim.key, "tokens": "many"}).status_code == 400


def test_reset_restores_buckets_log_and_optionally_the_seed(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    before = sim.truth(BROAD)
    deal(sim, BROAD)
    sim.tokens(refill_rate=3)
    reset = post(sim, "/_sim/reset", {})
    assert reset.json() == {"reset": True, "seed": 42}
    assert tokens_left(sim) == 1200 and call(sim, "/token").json()["refillRate"] == 20
    assert sim.requests_log()[0]["path"] == "/token"  # the log restarted
    assert sim.truth(BROAD) == before
    post(sim, "/_sim/reset", {"seed": 43})
    assert sim.truth(BROAD)["deals"] != before["deals"]


def test_requests_log_records_calls_without_keys(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    call(sim, "/token")
    deal(sim, BROAD)
    call(sim, "/token", key="X" * 64)
    log = sim.requests_log()
    assert [(e["path"], e["status"], e["cost"]) for e in log] == [
        ("/token", 200, 0), ("/deal", 200, 5), ("/token", 400, 0)]
    assert (log[1]["balance_before"], log[1]["balance_after"]) == (1200, 1195)
    assert log[1]["key"] == key_label(sim.key)
    assert "selection" in log[1]["params"]
    assert sim.key not in json.dumps(log) and "X" * 64 not in json.dumps(log)
    newer = requests.get(sim.url + "/_sim/requests", params={"since_id": log[1]["id"]},
                         timeout=10).json()["requests"]
    assert [e["id"] for e in newer] == [log[2]["id"]]


def test_deal_truth_by_get_and_post_with_since(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    by_post = sim.truth(BROAD)
    by_get = requests.get(sim.url + "/_sim/deals/truth",
                          params={"selection": json.dumps(BROAD)}, timeout=10).json()
    assert by_get == by_post
    assert by_post["count"] == len(by_post["deals"]) > 150
    cut = sorted(d["lastUpdate"] for d in by_post["deals"])[len(by_post["deals"]) // 2]
    recent = sim.truth(BROAD, since=cut)["deals"]
    assert recent == [d for d in by_post["deals"] if d["lastUpdate"] > cut]
    assert tokens_left(sim) == 1200  # the truth is free
    refused = post(sim, "/_sim/deals/truth", {"selection": {"priceTypes": [1]}})
    assert refused.status_code == 400 and "domainId" in refused.json()["error"]
