"""The simulated deal universe: the production query, evolution, filters, sorting, deal knobs."""

from __future__ import annotations

import pytest
from sim_helpers import BROAD, FROZEN, MINUTE_MS, PRODUCTION, SMALL, call, deal

pytestmark = pytest.mark.timeout(60)

USED, NEW, RANK, RATING, REVIEWS, AMAZON = 2, 1, 3, 16, 17, 0
NINETY_DAYS = 3
BOOKS = 283155


def asins(truth: dict) -> list[str]:
    return [d["asin"] for d in truth["deals"]]


def page_deals(sim, selection: dict, page: int = 0) -> list[dict]:
    response = deal(sim, selection, page=page)
    assert response.status_code == 200, response.text
    return response.json()["deals"]["dr"]


def test_production_query_yields_hundreds_of_matching_deals(sim_factory):
    sim = sim_factory(clock=FROZEN)  # the default catalogue of 5000 products
    assert 200 <= sim.truth(PRODUCTION)["count"] <= 3000
    deals = page_deals(sim, PRODUCTION)
    assert len(deals) == 150
    percents = [abs(d["deltaPercent"][NINETY_DAYS][USED]) for d in deals]
    assert percents == sorted(percents, reverse=True)  # sortType 4
    for item in deals:
        assert 2000 <= item["current"][USED] <= 45100
        assert item["delta"][NINETY_DAYS][USED] < 0
        assert abs(item["deltaPercent"][NINETY_DAYS][USED]) >= 10
        assert 10_000 <= item["current"][RANK] <= 10_000_000
        assert item["current"][RATING] >= 10
        assert item["warehouseCondition"] in (2, 3, 4, 5)
        assert BOOKS in item["categories"]


def test_the_universe_moves_with_the_clock(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    before = sim.truth(BROAD)
    sim.clock(advance_ms=60 * MINUTE_MS)
    after = sim.truth(BROAD)
    assert after["now_keepa_minute"] == before["now_keepa_minute"] + 60
    newest_before = max(d["lastUpdate"] for d in before["deals"])
    updated = [d for d in after["deals"] if d["lastUpdate"] > newest_before]
    assert len(updated) >= 10
    assert set(asins(after)) - set(asins(before))  # new deals appeared
    sim.clock(advance_ms=-60 * MINUTE_MS)
    assert sim.truth(BROAD) == before  # a pure function of the simulator time


def test_sort_types_order_the_pages(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    by_age = page_deals(sim, {**BROAD, "sortType": 1})
    ages = [(d["creationDate"], d["lastUpdate"]) for d in by_age]
    assert ages == sorted(ages, reverse=True)
    deltas = [abs(d["delta"][NINETY_DAYS][NEW]) for d in page_deals(sim, {**BROAD, "sortType": 2})]
    assert deltas == sorted(deltas, reverse=True)
    ranks = [d["current"][RANK] for d in page_deals(sim, {**BROAD, "sortType": 3})]
    ranked = [r for r in ranks if r >= 0]
    assert ranked == sorted(ranked) and ranks[: len(ranked)] == ranked
    percents = [abs(d["deltaPercent"][NINETY_DAYS][NEW])
                for d in page_deals(sim, {**BROAD, "sortType": -4})]
    assert percents == sorted(percents)


def test_deal_age_field_knob_sorts_by_last_update(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"deal_age_field": "lastUpdate"})
    updates = [d["lastUpdate"] for d in page_deals(sim, BROAD)]
    assert updates == sorted(updates, reverse=True)


def test_snapshot_cache_ttl_knob(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"cache_ttl_s": 3600})
    first = [d["asin"] for d in page_deals(sim, BROAD)]
    sim.clock(advance_ms=30 * MINUTE_MS)
    assert [d["asin"] for d in page_deals(sim, BROAD)] == first
    assert asins(sim.truth(BROAD))[:150] != first
    sim.clock(advance_ms=31 * MINUTE_MS)
    assert [d["asin"] for d in page_deals(sim, BROAD)] == asins(sim.truth(BROAD))[:150]


def test_max_results_caps_the_query(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"max_results": 100})
    assert sim.truth(BROAD)["count"] == 100
    assert len(page_deals(sim, BROAD)) == 100
    assert page_deals(sim, BROAD, page=1) == []


def test_page_cost_knobs(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL,
                      deals={"page_cost": 7, "empty_page_cost": 0})
    assert deal(sim, BROAD).json()["tokensConsumed"] == 7
    assert deal(sim, BROAD, page=60).json()["tokensConsumed"] == 0


def test_delta_sign_knob(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"delta_sign": "positive_for_drop"})
    for item in page_deals(sim, BROAD):
        assert item["current"][NEW] < item["avg"][NINETY_DAYS][NEW]
        assert item["delta"][NINETY_DAYS][NEW] == (item["avg"][NINETY_DAYS][NEW]
                                                   - item["current"][NEW]) > 0
        assert item["deltaPercent"][NINETY_DAYS][NEW] >= 0  # tiny drops round to 0 %


def test_date_range_4_union_or_reject(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    union = set(asins(sim.truth({**BROAD, "dateRange": 4})))
    assert set(asins(sim.truth(BROAD))) <= union
    assert set(asins(sim.truth({**BROAD, "dateRange": 0}))) <= union
    sim.config({"deals": {"date_range_4": "reject"}})
    rejected = deal(sim, {**BROAD, "dateRange": 4})
    assert rejected.status_code == 400
    assert "dateRange" in rejected.json()["error"]["message"]


@pytest.mark.parametrize(("policy", "range_applies"), [("if_present", True), ("off", False)])
def test_switch_default_knob(sim_factory, policy, range_applies):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"switch_default": policy})
    ranged = {**BROAD, "deltaPercentRange": [40, 100]}
    deals = page_deals(sim, ranged)
    strong = all(abs(d["deltaPercent"][NINETY_DAYS][NEW]) >= 40 for d in deals)
    assert strong is range_applies
    assert (sim.truth(ranged)["count"] < sim.truth(BROAD)["count"]) is range_applies
    explicit = {**ranged, "isRangeEnabled": True}
    assert all(abs(d["deltaPercent"][NINETY_DAYS][NEW]) >= 40 for d in page_deals(sim, explicit))


@pytest.mark.parametrize(("policy", "equivalent"), [("default", 0), ("coerce", 1),
                                                     ("reject", None)])
def test_string_numbers_knob(sim_factory, policy, equivalent):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL, deals={"string_numbers": policy})
    stringly = {**BROAD, "dateRange": "1"}
    if equivalent is None:
        refused = deal(sim, stringly)
        assert refused.status_code == 400
        assert "dateRange" in refused.json()["error"]["message"]
    else:
        assert sim.truth(stringly) == sim.truth({**BROAD, "dateRange": equivalent})


def test_strict_knob_rejects_unknown_fields_and_several_price_types(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    assert deal(sim, {**BROAD, "notAField": 1}).status_code == 200
    assert sim.truth({**BROAD, "priceTypes": [1, 2]}) == sim.truth(BROAD)
    sim.config({"deals": {"strict": True}})
    unknown = deal(sim, {**BROAD, "notAField": 1})
    assert unknown.status_code == 400 and "notAField" in unknown.json()["error"]["message"]
    assert deal(sim, {**BROAD, "priceTypes": [1, 2]}).status_code == 400


def test_category_filters_and_aggregates(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    everything = deal(sim, BROAD).json()["deals"]
    books = deal(sim, {**BROAD, "includeCategories": [BOOKS]}).json()["deals"]
    assert books["dr"] and all(BOOKS in d["categories"] for d in books["dr"])
    assert books["categoryIds"] == everything["categoryIds"]  # aggregates ignore the filter
    assert books["categoryCount"] == everything["categoryCount"]
    assert books["categoryIds"][books["categoryNames"].index("Books")] == BOOKS
    child = books["dr"][0]["categories"][1]
    only_child = page_deals(sim, {**BROAD, "includeCategories": [child]})
    assert only_child and all(d["categories"][1] == child for d in only_child)
    no_books = page_deals(sim, {**BROAD, "excludeCategories": [BOOKS]})
    assert no_books and not any(BOOKS in d["categories"] for d in no_books)
    switched_off = {**BROAD, "includeCategories": [BOOKS], "isFilterEnabled": False}
    assert sim.truth(switched_off) == sim.truth(BROAD)
    assert sim.truth({**BROAD, "includeCategories": [], "isFilterEnabled": True}) == \
        sim.truth(BROAD)


def test_product_filters(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    assert all("the" in d["title"].lower() and "mountain" in d["title"].lower()
               for d in page_deals(sim, {**BROAD, "titleSearch": "MOUNTAIN the"}))
    rated = page_deals(sim, {**BROAD, "minRating": 40, "hasReviews": True})
    assert rated and all(d["current"][RATING] >= 40 and d["current"][REVIEWS] > 0
                         for d in rated)
    with_amazon = page_deals(sim, {**BROAD, "mustHaveAmazonOffer": True})
    without = page_deals(sim, {**BROAD, "mustNotHaveAmazonOffer": True})
    assert with_amazon and all(d["current"][AMAZON] >= 0 for d in with_amazon)
    assert without and all(d["current"][AMAZON] == -1 for d in without)
    single = [d["parentAsin"] for d in page_deals(sim, {**BROAD, "singleVariation": True,
                                                        "sortType": 3})
              if d["parentAsin"]]
    assert len(single) == len(set(single))


def test_post_body_equals_get_selection(sim_factory):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    by_get = page_deals(sim, BROAD)
    by_post = call(sim, "/deal", method="POST", json_body={**BROAD, "page": 0})
    assert by_post.status_code == 200
    assert by_post.json()["deals"]["dr"] == by_get


@pytest.mark.parametrize(("selection", "complaint"), [
    ({"priceTypes": [1]}, "domainId"),
    ({**BROAD, "priceTypes": [99]}, "priceTypes"),
    ({**BROAD, "sortType": 9}, "sortType"),
    ({**BROAD, "currentRange": [100]}, "currentRange"),
    ({**BROAD, "singleVariation": "yes"}, "singleVariation"),
    ({**BROAD, "domainId": 12}, "domainId"),
])
def test_bad_selections_get_specific_400s(sim_factory, selection, complaint):
    sim = sim_factory(clock=FROZEN, catalogue=SMALL)
    refused = deal(sim, selection)
    assert refused.status_code == 400
    assert complaint in refused.json()["error"]["message"]
    assert refused.json()["tokensConsumed"] == 0
    broken = call(sim, "/deal", selection="{not json")
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
