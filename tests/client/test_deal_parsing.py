"""Parsing `/deal` objects and pages into DealRecord: typed, null-safe, never crashing a page."""

import copy

import pytest

from keepa_deals.deals import (
    DEAL_FIELDS,
    DealRecord,
    MalformedRecord,
    parse_deal,
    parse_deal_page,
    selection_date_range,
    selection_price_type,
)
from keepa_deals.keepa_api import SelectionError
from keepa_deals.keepa_time import keepa_minute_to_unix

pytestmark = pytest.mark.timeout(10)

USED, DATE_RANGE_90 = 2, 3


def make_current():
    current = [-1] * 36
    current[0] = 2599      # AMAZON
    current[1] = 2399      # NEW
    current[2] = 1450      # USED
    current[3] = 48_213    # SALES rank
    current[4] = 3499      # LISTPRICE
    current[11] = 7        # COUNT_NEW
    current[12] = 12       # COUNT_USED
    current[16] = 45       # RATING (4.5 stars)
    current[17] = 1234     # COUNT_REVIEWS
    return current


def make_matrix(fill, cell):
    """[4][36] with `cell` at [DATE_RANGE_90][USED] and a distinct value in every other row."""
    matrix = [[fill + row] * 36 for row in range(4)]
    matrix[DATE_RANGE_90][USED] = cell
    return matrix


def make_deal(**overrides):
    deal = {
        "asin": "B0TESTASIN", "parentAsin": None, "title": "A <b>good</b> book",
        "rootCat": 283155, "categories": [283155, 4], "image": list(b"61k3Lay7JUL.jpg"),
        "creationDate": 7_889_000, "lastUpdate": 7_889_760, "lightningEnd": 0,
        "warehouseCondition": 0, "warehouseConditionComment": None,
        "current": make_current(), "currentSince": [7_889_000] * 36,
        "avg": make_matrix(900, 2100), "delta": make_matrix(-5, -650),
        "deltaPercent": make_matrix(-1, -31), "deltaLast": [0] * 36, "minRating": -1,
    }
    deal.update(overrides)
    return deal


def parse(deal, **kwargs):
    return parse_deal(deal, domain_id=1, price_type=USED, date_range=DATE_RANGE_90, **kwargs)


def page_of(*deals, names=True):
    body = {"timestamp": 1, "tokensLeft": 10, "refillIn": 100, "refillRate": 20,
            "tokensConsumed": 5, "deals": {"dr": list(deals), "drDateIndex": []}}
    if names:
        body["deals"].update(categoryIds=[283155, 9223372036854775807],
                             categoryNames=["Books", "?"], categoryCount=[1, 1])
    return body


def test_full_deal_maps_every_field():
    record = parse(make_deal(), category_names={283155: "Books"})
    assert record == DealRecord(
        asin="B0TESTASIN", domain_id=1, title="A <b>good</b> book",
        image_url="https://m.media-amazon.com/images/I/61k3Lay7JUL.jpg",
        root_category=283155, categories=(283155, 4), category_name="Books", brand=None,
        price_type=USED, current_cents=1450, avg_cents=2100, delta_cents=-650, delta_percent=-31,
        amazon_cents=2599, new_cents=2399, used_cents=1450, list_price_cents=3499,
        sales_rank=48_213, rating=4.5, review_count=1234, offer_count_new=7, offer_count_used=12,
        deal_created_at=keepa_minute_to_unix(7_889_000),
        last_update_at=keepa_minute_to_unix(7_889_760), enriched_at=None,
    )
    assert record.last_update_at == 1_767_225_600  # 2026-01-01 00:00 UTC
    assert DEAL_FIELDS[0] == "asin" and DEAL_FIELDS[-1] == "enriched_at"
    assert len(DEAL_FIELDS) == 25


def test_interval_arrays_are_indexed_date_range_then_price_type():
    day = parse_deal(make_deal(), domain_id=1, price_type=USED, date_range=0)
    assert (day.avg_cents, day.delta_cents, day.delta_percent) == (900, -5, -1)
    other_type = parse_deal(make_deal(), domain_id=1, price_type=1, date_range=DATE_RANGE_90)
    assert (other_type.avg_cents, other_type.current_cents) == (903, 2399)


def test_date_range_4_reads_the_widest_interval():
    record = parse_deal(make_deal(), domain_id=1, price_type=USED, date_range=4)
    assert (record.avg_cents, record.delta_cents) == (2100, -650)


@pytest.mark.parametrize("marker", [-1, -2, None])
def test_missing_markers_become_none(marker):
    current = make_current()
    for index in (0, 1, 2, 3, 4, 11, 12, 16, 17):
        current[index] = marker
    avg = make_matrix(900, marker)
    record = parse(make_deal(current=current, avg=avg))
    for name in ("current_cents", "amazon_cents", "new_cents", "used_cents",
                 "list_price_cents", "sales_rank", "rating", "review_count",
                 "offer_count_new", "offer_count_used", "avg_cents"):
        assert getattr(record, name) is None, name


def test_deltas_keep_their_sign_and_only_null_is_missing():
    delta = make_matrix(0, -1)
    percent = make_matrix(0, None)
    record = parse(make_deal(delta=delta, deltaPercent=percent))
    assert record.delta_cents == -1
    assert record.delta_percent is None


def test_absent_optional_fields_are_none():
    deal = {"asin": "B0MINIMAL1", "lastUpdate": 7_889_760}
    record = parse(deal)
    assert record.asin == "B0MINIMAL1"
    assert record.categories == ()
    assert all(getattr(record, name) is None for name in (
        "title", "image_url", "root_category", "category_name", "current_cents", "avg_cents",
        "delta_cents", "delta_percent", "rating", "deal_created_at"))


def test_short_arrays_and_null_rows_are_null_safe():
    record = parse(make_deal(current=[100, 200], avg=[None, None, None, None], delta=[[1]],
                             deltaPercent=None))
    assert record.amazon_cents == 100 and record.new_cents == 200
    assert record.used_cents is None and record.current_cents is None
    assert record.avg_cents is None and record.delta_cents is None


@pytest.mark.parametrize("root", [0, 9223372036854775807])
def test_unknown_root_category_is_none(root):
    record = parse(make_deal(rootCat=root), category_names={283155: "Books"})
    assert record.root_category is None and record.category_name is None


def test_image_given_as_string_and_empty_image():
    assert parse(make_deal(image="51abc.jpg")).image_url.endswith("/I/51abc.jpg")
    assert parse(make_deal(image=[])).image_url is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"asin": None}, "asin"),
        ({"asin": ""}, "asin"),
        ({"asin": 12}, "asin"),
        ({"lastUpdate": None}, "lastUpdate"),
        ({"lastUpdate": "7889760"}, "lastUpdate"),
        ({"lastUpdate": 0}, "lastUpdate"),
        ({"creationDate": 7.5}, "creationDate"),
        ({"current": "1450"}, "current"),
        ({"current": [1, 2, "1450"]}, "current[2]"),
        ({"current": [1, 2, True]}, "current[2]"),
        ({"avg": {"3": [1]}}, "avg"),
        ({"avg": [[1], [1], [1], "x"]}, "avg[3]"),
        ({"delta": [[0] * 36] * 3 + [[0, 0, 1.5]]}, "delta[3][2]"),
        ({"title": ["not", "text"]}, "title"),
        ({"rootCat": "283155"}, "rootCat"),
        ({"categories": [283155, "4"]}, "categories"),
        ({"image": [54, 49, 300]}, "image"),
        ({"image": list(b'"><script>.jpg')}, "image"),
        ({"image": {"name": "x.jpg"}}, "image"),
    ],
)
def test_wrong_types_raise_malformed_record_naming_the_field(overrides, field):
    with pytest.raises(MalformedRecord, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse(make_deal(**overrides))


def test_non_object_deal_is_malformed():
    with pytest.raises(MalformedRecord, match="expected an object"):
        parse(["B0TESTASIN"])


def test_page_keeps_good_records_and_reports_bad_ones():
    good = make_deal()
    second = make_deal(asin="B0SECOND01", rootCat=9223372036854775807)
    body = page_of(good, make_deal(asin="B0BADPRICE", current="oops"), None, second)
    page = parse_deal_page(body, domain_id=1, price_type=USED, date_range=DATE_RANGE_90)
    assert [r.asin for r in page.records] == ["B0TESTASIN", "B0SECOND01"]
    assert page.records[0].category_name == "Books"
    assert page.records[1].category_name is None
    assert len(page.malformed) == 2
    assert page.malformed[0].startswith("#1 (asin B0BADPRICE): current")
    assert page.malformed[1].startswith("#2 (asin ?): deal is a NoneType")
    assert page.deal_count == 4 and page.is_last_page


def test_full_page_of_150_is_not_the_last_even_with_malformed_records():
    deals = [make_deal(asin=f"B0{i:08d}") for i in range(149)] + [make_deal(lastUpdate="x")]
    page = parse_deal_page(page_of(*deals), domain_id=1, price_type=USED,
                           date_range=DATE_RANGE_90)
    assert len(page.records) == 149 and len(page.malformed) == 1
    assert not page.is_last_page


def test_page_accepts_the_inner_deals_object_and_empty_pages():
    inner = page_of(make_deal())["deals"]
    page = parse_deal_page(inner, domain_id=3, price_type=USED, date_range=DATE_RANGE_90)
    assert page.records[0].domain_id == 3
    empty = parse_deal_page(page_of(names=False), domain_id=1, price_type=0, date_range=0)
    assert empty.records == [] and empty.malformed == [] and empty.is_last_page


@pytest.mark.parametrize("payload", [{}, {"deals": None}, {"deals": {"dr": {}}}, [], None])
def test_page_without_a_deal_list_raises(payload):
    with pytest.raises(MalformedRecord, match=r"deals\.dr"):
        parse_deal_page(payload, domain_id=1, price_type=0, date_range=0)


def test_parsing_never_mutates_the_payload():
    body = page_of(make_deal())
    snapshot = copy.deepcopy(body)
    parse_deal_page(body, domain_id=1, price_type=USED, date_range=DATE_RANGE_90)
    assert body == snapshot


@pytest.mark.parametrize(
    ("selection", "price_type", "date_range"),
    [({}, 0, 0), ({"priceTypes": 2, "dateRange": 3}, 2, 3), ({"priceTypes": [2]}, 2, 0),
     ({"priceTypes": (10,), "dateRange": 4}, 10, 4)],
)
def test_selection_helpers(selection, price_type, date_range):
    assert selection_price_type(selection) == price_type
    assert selection_date_range(selection) == date_range


@pytest.mark.parametrize(
    ("selection", "key"),
    [({"priceTypes": "2"}, "priceTypes"), ({"priceTypes": [2, 1]}, "priceTypes"),
     ({"priceTypes": [True]}, "priceTypes"), ({"dateRange": "3"}, "dateRange"),
     ({"dateRange": False}, "dateRange")],
)
def test_selection_helpers_reject_non_integers(selection, key):
    with pytest.raises(SelectionError, match=key):
        selection_price_type(selection)
    with pytest.raises(SelectionError, match=key):
        selection_date_range(selection)
