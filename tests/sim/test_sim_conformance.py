"""The ten conformance checks of keepa-api.md §5.8, over real HTTP against `python -m keepa_sim`."""

from __future__ import annotations

import gzip
import json
import re
import threading

import pytest
import requests
from sim_helpers import (
    BROAD,
    FROZEN,
    MINUTE_MS,
    SMALL,
    all_pages,
    call,
    deal,
    products,
    tokens_left,
)

from keepa_deals.constants import KEEPA_EPOCH_OFFSET_MINUTES

pytestmark = pytest.mark.timeout(60)

ENVELOPE_FIELDS = ["timestamp", "tokensLeft", "refillIn", "refillRate", "tokenFlowReduction",
                   "tokensConsumed", "processingTimeInMs"]
DEAL_FIELDS = {"asin", "parentAsin", "title", "rootCat", "categories", "image", "creationDate",
               "lastUpdate", "lightningEnd", "warehouseCondition", "warehouseConditionComment",
               "current", "currentSince", "avg", "delta", "deltaPercent", "deltaLast"}
SLOW_KEY = "S" * 64


def keepa_minute(epoch_ms: int) -> int:
    return epoch_ms // 60_000 - KEEPA_EPOCH_OFFSET_MINUTES


def test_1_token_is_free_and_answers_at_a_negative_balance(sim_factory):
    sim = sim_factory(clock=FROZEN)
    first = call(sim, "/token")
    body = first.json()
    assert first.status_code == 200
    assert list(body)[:7] == ENVELOPE_FIELDS
    assert body["tokensConsumed"] == 0
    assert 0 < body["refillIn"] <= 60_000
    assert tokens_left(sim) == body["tokensLeft"]

    sim.tokens(tokens=-50)
    negative = call(sim, "/token")
    assert negative.status_code == 200
    assert negative.json()["tokensLeft"] == -50


def test_2_a_new_key_is_full_and_never_exceeds_one_hour_of_refill(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    body = call(sim, "/token").json()
    assert body["tokensLeft"] == 60 * body["refillRate"] == 1200

    sim.clock(advance_ms=10 * MINUTE_MS)
    assert tokens_left(sim) == 1200
    assert deal(sim, BROAD).json()["tokensLeft"] == 1195
    sim.clock(advance_ms=3 * MINUTE_MS)
    assert tokens_left(sim) == 1200


def test_3_a_positive_balance_admits_any_cost_then_429_leaves_the_balance(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    asins = [d["asin"] for d in sim.truth(BROAD)["deals"]][:100]
    assert len(asins) == 100
    sim.tokens(tokens=1)

    answer = products(sim, asins)
    assert answer.status_code == 200
    assert answer.json()["tokensConsumed"] == 100
    assert answer.json()["tokensLeft"] == -99
    assert len(answer.json()["products"]) == 100

    refused = deal(sim, BROAD)
    assert refused.status_code == 429
    assert refused.json()["tokensConsumed"] == 0
    assert refused.json()["tokensLeft"] == -99
    assert "deals" not in refused.json()


def test_4_deficits_are_paid_by_whole_ticks(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, keys={SLOW_KEY: {"refill_rate": 5}})
    sim.tokens(tokens=-10)
    observed = []
    for _ in range(4):
        response = deal(sim, BROAD)
        observed.append((response.status_code, response.json()["tokensLeft"]))
        if response.status_code == 200:
            break
        sim.clock(advance_ms=MINUTE_MS)
    assert observed == [(429, -10), (429, -5), (429, 0), (200, 0)]  # 5 admitted, then charged 5


def test_5_parallel_requests_admitted_at_a_small_balance_all_overshoot(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, latency={"per_endpoint": {"deal": 400}})
    sim.tokens(tokens=3)
    results = []

    def one_request():
        response = deal(sim, BROAD)
        results.append((response.status_code, response.json()["tokensConsumed"]))

    threads = [threading.Thread(target=one_request) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [(200, 5)] * 3
    assert tokens_left(sim) == -12


def test_6_deal_pages_are_a_consistent_snapshot(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    truth = [d["asin"] for d in sim.truth(BROAD)["deals"]]
    pages = all_pages(sim, BROAD)
    assert len(pages) >= 2
    assert all(len(page) == 150 for page in pages[:-1])
    assert len(pages[-1]) < 150
    asins = [d["asin"] for page in pages for d in page]
    assert len(asins) == len(set(asins))
    assert asins == truth

    first_page = deal(sim, BROAD).json()["deals"]
    sim.clock(advance_ms=100_000)  # inside the 120 s cache window; the universe moved on
    assert deal(sim, BROAD).json()["deals"] == first_page

    past_end = deal(sim, BROAD, page=len(pages) + 2).json()
    assert past_end["deals"]["dr"] == []
    assert past_end["tokensConsumed"] == 5


def test_7_deal_objects_are_recent_and_complete(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    body = deal(sim, BROAD).json()
    now = keepa_minute(body["timestamp"])
    deals = body["deals"]["dr"]
    assert deals
    for item in deals:
        assert set(item) >= DEAL_FIELDS
        assert now - 720 <= item["lastUpdate"] <= now
        assert item["creationDate"] <= item["lastUpdate"]
        assert re.fullmatch(r"[0-9A-Za-z]{11}\.jpg", bytes(item["image"]).decode("ascii"))
        for name in ("avg", "delta", "deltaPercent"):
            assert len(item[name]) == 4 and all(len(row) == 36 for row in item[name])
        assert len(item["current"]) == len(item["currentSince"]) == len(item["deltaLast"]) == 36
        assert item["delta"][3][1] < 0  # a NEW drop against the 90-day average
        assert item["current"][1] == item["avg"][3][1] + item["delta"][3][1]


def test_8_error_statuses(sim_factory):
    expired = "E" * 64
    sim = sim_factory(clock=FROZEN, keys={"K" * 64: {}, expired: {"status": "expired"}})

    invalid = call(sim, "/token", key="X" * 64)
    assert invalid.status_code == 400
    assert invalid.json()["error"]["type"] == "invalidParameter"
    assert all(invalid.json()[f] == 0 for f in ENVELOPE_FIELDS[1:6])

    lapsed = call(sim, "/token", key=expired)
    assert lapsed.status_code == 402
    assert lapsed.json()["tokensLeft"] == 1200 and lapsed.json()["refillRate"] == 20

    unknown = call(sim, "/nothing-here")
    assert unknown.status_code == 404
    assert list(unknown.json())[:7] == ENVELOPE_FIELDS
    assert call(sim, "/product", method="POST").status_code == 405

    malformed = products(sim, ["B0AAAAAAAA", "NOT-AN-ASIN"])
    assert malformed.status_code == 200
    assert malformed.json()["error"]["type"] == "invalidParameter"
    assert "products" not in malformed.json()
    assert malformed.json()["tokensConsumed"] == 0
    assert tokens_left(sim) == 1200


def test_9_bodies_are_gzip_json_and_trailing_slashes_route_alike(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    packed = requests.get(sim.url + "/token", params={"key": sim.key}, stream=True, timeout=10,
                          headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert json.loads(gzip.decompress(packed.raw.read(decode_content=False)))["tokensLeft"] == 1200
    plain = call(sim, "/token", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.json()["tokensLeft"] == 1200

    asins = [d["asin"] for d in sim.truth(BROAD)["deals"]][:3]
    without_slash = call(sim, "/product", domain=1, asin=",".join(asins)).json()
    with_slash = call(sim, "/product/", domain=1, asin=",".join(asins)).json()
    assert without_slash["products"] == with_slash["products"]
    assert [p["asin"] for p in without_slash["products"]] == asins


def test_10_same_seed_and_clock_give_identical_payloads(sim_factory):
    config = {"seed": 7, "clock": FROZEN, "catalogue": SMALL}
    twins = [sim_factory(**config), sim_factory(**config)]
    other = sim_factory(**{**config, "seed": 8})

    def transcript(sim) -> list[bytes]:
        asins = [d["asin"] for d in sim.truth(BROAD)["deals"]][:5]
        bodies = [call(sim, "/token").content, deal(sim, BROAD, page=1).content,
                  products(sim, asins, stats=90).content]
        return [re.sub(rb'"processingTimeInMs":\d+', b"", body) for body in bodies]

    first, second = (transcript(sim) for sim in twins)
    assert first == second
    assert transcript(other)[1] != first[1]
