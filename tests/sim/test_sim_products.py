"""/product: objects consistent with the deals, history and stats options, and the cost rules."""

from __future__ import annotations

import math

import pytest
from sim_helpers import BROAD, FROZEN, SMALL, call, deal, products

pytestmark = pytest.mark.timeout(60)

NEW, USED, RANK, BUY_BOX = 1, 2, 3, 18
NINETY_DAYS = 3
UNKNOWN_ASIN = "B0ZZZZZZZZ"


@pytest.fixture
def sim(sim_factory):
    return sim_factory(clock=FROZEN, catalogue=SMALL)


def test_products_agree_with_their_deals(sim):
    deals = deal(sim, BROAD).json()["deals"]["dr"][:20]
    answer = products(sim, [d["asin"] for d in deals], stats=90).json()
    assert answer["tokensConsumed"] == 20
    for item, product in zip(deals, answer["products"], strict=True):
        assert product["asin"] == item["asin"]
        assert product["lastUpdate"] == item["lastUpdate"]
        assert product["categories"] == item["categories"]
        assert product["csv"][NEW][-1] == item["current"][NEW]
        assert product["csv"][NEW][-2] == item["currentSince"][NEW]
        assert product["stats"]["current"][:19] == item["current"][:19]
        assert product["stats"]["avg90"][NEW] == item["avg"][NINETY_DAYS][NEW]
        assert len(product["csv"]) == 36 and product["csv"][5] is None
        assert len(product["csv"][BUY_BOX]) % 3 == 0
        assert product["productType"] == 0


def test_history_and_days_options(sim):
    asin = next(d["asin"] for d in deal(sim, BROAD).json()["deals"]["dr"]
                if d["categories"] and d["current"][RANK] >= 0)
    full = products(sim, [asin]).json()["products"][0]
    assert full["salesRanks"] == {str(full["rootCategory"]): full["csv"][RANK]}
    week = products(sim, [asin], days=7).json()["products"][0]
    assert len(week["csv"][RANK]) < len(full["csv"][RANK])
    assert all(t >= week["lastUpdate"] - 7 * 1440 for t in week["csv"][RANK][2::2])
    bare = products(sim, [asin], history=0).json()["products"][0]
    assert bare["csv"] is None and bare["salesRanks"] is None
    assert bare["title"] == full["title"]


def test_stats_object(sim):
    asin = sim.truth(BROAD)["deals"][0]["asin"]
    stats = products(sim, [asin], stats=90, history=0).json()["products"][0]["stats"]
    assert stats["avg"] == stats["avg90"]
    for name in ("current", "avg30", "avg180", "avg365", "outOfStockPercentage30"):
        assert len(stats[name]) == 36
    lowest, highest = stats["min"][NEW][1], stats["max"][NEW][1]
    assert lowest <= stats["avg365"][NEW] <= highest
    assert lowest <= stats["minInInterval"][NEW][1] <= stats["maxInInterval"][NEW][1] <= highest
    assert stats["salesRankDrops365"] >= stats["salesRankDrops30"] >= 0
    ranged = products(sim, [asin], stats="2026-08-01,2026-10-01", history=0)
    assert ranged.status_code == 200 and ranged.json()["products"][0]["stats"]["avg"][NEW] > 0


def test_offers_cost_six_per_page_of_ten(sim):
    chosen = [d["asin"] for d in sim.truth(BROAD)["deals"][:5]]
    answer = products(sim, chosen, offers=20).json()
    found = [len(p["offers"]) for p in answer["products"]]
    assert any(n > 10 for n in found)
    assert answer["tokensConsumed"] == sum(6 * max(1, math.ceil(n / 10)) for n in found)
    assert all(len(p["liveOffersOrder"]) == len(p["offers"]) for p in answer["products"])


def test_update_0_costs_one_more_while_data_are_fresh(sim):
    now = sim.truth(BROAD)["now_keepa_minute"]
    deals = sim.truth(BROAD)["deals"]
    fresh = next(d["asin"] for d in deals if now - d["lastUpdate"] < 60)
    old = next(d["asin"] for d in deals if now - d["lastUpdate"] >= 60)
    assert products(sim, [fresh], update=0).json()["tokensConsumed"] == 2
    assert products(sim, [old], update=0).json()["tokensConsumed"] == 1
    assert products(sim, [fresh]).json()["tokensConsumed"] == 1


def test_unknown_asins_and_codes(sim):
    known = products(sim, [sim.truth(BROAD)["deals"][0]["asin"]]).json()["products"][0]
    unknown = products(sim, [UNKNOWN_ASIN]).json()
    assert unknown["products"][0]["productType"] == 4 and unknown["tokensConsumed"] == 1
    skipped = products(sim, [UNKNOWN_ASIN], update=-1).json()
    assert skipped["products"] == [] and skipped["tokensConsumed"] == 0
    by_code = call(sim, "/product", domain=1, code=known["eanList"][0]).json()
    assert [p["asin"] for p in by_code["products"]] == [known["asin"]]
    assert by_code["tokensConsumed"] == 1
    assert call(sim, "/product", domain=1, code="0000000000000").json()["products"] == []


@pytest.mark.parametrize(("params", "complaint"), [
    ({"domain": 1, "asin": ",".join(["B0AAAAAAAA"] * 101)}, "at most 100"),
    ({"domain": 1, "asin": "B0AAAAAAAA", "code": "9780000000002"}, "exactly one"),
    ({"domain": 1}, "exactly one"),
    ({"asin": "B0AAAAAAAA"}, "domain"),
    ({"domain": 1, "asin": "B0AAAAAAAA", "offers": 5}, "offers"),
    ({"domain": 1, "asin": "B0AAAAAAAA", "stats": "soon"}, "stats"),
])
def test_bad_parameters_get_specific_400s(sim, params, complaint):
    refused = call(sim, "/product", **params)
    assert refused.status_code == 400
    assert complaint in refused.json()["error"]["message"]
    assert refused.json()["tokensConsumed"] == 0
