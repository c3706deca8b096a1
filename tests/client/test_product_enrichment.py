"""Parsing `/product` objects and enriching deals with them."""

import pytest

from keepa_deals.deals import DealRecord, MalformedRecord, enrich, parse_deal, parse_product

pytestmark = pytest.mark.timeout(10)

NOW = 1_767_225_600


def make_product(**overrides):
    csv = [None] * 36
    csv[4] = [7_800_000, 3999, 7_880_000, 4299]        # LISTPRICE history: last = 4299
    csv[16] = [7_800_000, 40, 7_880_000, 43]            # RATING: last = 4.3
    csv[17] = [7_800_000, 100, 7_880_000, 250]          # COUNT_REVIEWS: last = 250
    product = {
        "asin": "B0TESTASIN", "domainId": 1, "productType": 0, "title": "Product title",
        "brand": "Acme", "rootCategory": 283155, "categories": [283155, 4],
        "categoryTree": [{"catId": 283155, "name": "Books"}, {"catId": 4, "name": "Poetry"}],
        "images": [{"l": "71large.jpg", "m": "71medium.jpg"}], "imagesCSV": "71old.jpg,72.jpg",
        "csv": csv, "stats": None,
    }
    product.update(overrides)
    return product


def bare_deal(**overrides):
    deal = {"asin": "B0TESTASIN", "lastUpdate": 7_889_760, "title": "Deal title",
            "current": [-1, -1, 1450]}
    deal.update(overrides)
    return parse_deal(deal, domain_id=1, price_type=2, date_range=0)


def test_product_fields_from_csv_history():
    details = parse_product(make_product())
    assert details.title == "Product title" and details.brand == "Acme"
    assert details.category_name == "Poetry"
    assert details.root_category == 283155 and details.categories == (283155, 4)
    assert details.image_url == "https://m.media-amazon.com/images/I/71large.jpg"
    assert (details.list_price_cents, details.rating, details.review_count) == (4299, 4.3, 250)


def test_stats_current_wins_over_csv_and_negative_stats_fall_back():
    current = [-1] * 36
    current[4], current[16], current[17] = 4599, 48, -2
    details = parse_product(make_product(stats={"current": current}))
    assert (details.list_price_cents, details.rating, details.review_count) == (4599, 4.8, 250)


def test_images_csv_is_used_when_images_is_absent():
    details = parse_product(make_product(images=None))
    assert details.image_url.endswith("/I/71old.jpg")


def test_unknown_product_with_nulls_parses_to_empty_details():
    details = parse_product({"asin": "B0UNKNOWN1", "productType": 4, "title": None,
                             "csv": None, "categoryTree": None, "brand": ""})
    assert details.title is None and details.brand is None and details.category_name is None
    assert details.list_price_cents is None and details.rating is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"asin": None}, "asin"), ({"categoryTree": "Books"}, "categoryTree"),
     ({"categoryTree": ["Books"]}, "categoryTree"), ({"stats": [1]}, "stats"),
     ({"csv": {"4": []}}, "csv"), ({"images": ["x.jpg"]}, "images"),
     ({"brand": 5}, "brand")],
)
def test_malformed_product_raises(overrides, field):
    with pytest.raises(MalformedRecord, match=field):
        parse_product(make_product(**overrides))


def test_enrich_fills_product_fields_and_keeps_deal_prices():
    record = bare_deal()
    enriched = enrich(record, make_product(), now=NOW)
    assert isinstance(enriched, DealRecord)
    assert enriched.title == "Product title"
    assert enriched.brand == "Acme" and enriched.category_name == "Poetry"
    assert enriched.list_price_cents == 4299 and enriched.rating == 4.3
    assert enriched.review_count == 250
    assert enriched.image_url.endswith("/I/71large.jpg")
    assert enriched.root_category == 283155 and enriched.categories == (283155, 4)
    assert enriched.current_cents == 1450 and enriched.used_cents == 1450
    assert enriched.enriched_at == NOW
    assert record.enriched_at is None  # records are immutable


def test_enrich_keeps_the_deal_image_and_deal_values_the_product_lacks():
    record = bare_deal(image=list(b"deal.jpg"), current=[-1] * 16 + [41, 77])
    enriched = enrich(record, make_product(csv=None, title=None), now=NOW)
    assert enriched.image_url.endswith("/I/deal.jpg")
    assert enriched.title == "Deal title"
    assert (enriched.rating, enriched.review_count) == (4.1, 77)


def test_enrich_defaults_enriched_at_to_now():
    import time

    before = int(time.time())
    assert enrich(bare_deal(), make_product()).enriched_at >= before


def test_enrich_refuses_a_product_of_another_asin():
    with pytest.raises(MalformedRecord, match="B0OTHER"):
        enrich(bare_deal(), make_product(asin="B0OTHER"))


def test_enrich_accepts_parsed_details():
    details = parse_product(make_product())
    assert enrich(bare_deal(), details, now=NOW).brand == "Acme"
