"""Browser tests of the deals pages: sorting, filters, pagination, CSV export, detail view."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest
import requests

from keepa_deals.web import deal_query
from keepa_deals.web.deal_query import COLUMNS

pytestmark = [pytest.mark.timeout(60), pytest.mark.browser]


def sql(settings, query: str, params=()) -> list[tuple]:
    with sqlite3.connect(settings.database_path) as conn:
        return conn.execute(query, params).fetchall()


def shown_asins(page) -> list[str]:
    return page.locator("#deals-table tbody tr[data-asin]").evaluate_all(
        "rows => rows.map(r => r.dataset.asin)")


def test_sorting_by_a_header_orders_the_whole_table_server_side(dashboard, seeded, settings,
                                                                 page, screenshot):
    page.goto(dashboard + "/deals")
    page.click("a[data-sort=price]")  # text columns start ascending, numbers descending
    expected = [a for (a,) in sql(settings, "SELECT asin FROM deals ORDER BY current_cents DESC, "
                                            "asin DESC LIMIT 50")]
    assert shown_asins(page) == expected
    page.click("a[data-sort=price]")
    expected = [a for (a,) in sql(settings, "SELECT asin FROM deals ORDER BY current_cents, asin "
                                            "LIMIT 50")]
    assert shown_asins(page) == expected
    assert page.locator("th[aria-sort=ascending]").inner_text().startswith("Price")
    screenshot("deals-sorted-by-price")


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.key)
def test_every_column_sorts_both_ways_with_missing_values_last(dashboard, seeded, settings,
                                                              column):
    for direction in ("asc", "desc"):
        body = requests.get(dashboard + "/api/deals", timeout=10, params={
            "sort": column.key, "dir": direction, "per_page": 200}).json()
        values = [row[column.sql] for row in body["rows"]]
        assert len(values) == 137
        present = [v for v in values if v is not None]
        assert values == present + [None] * (len(values) - len(present)), "missing values last"
        ascending = (direction == "asc") != column.inverted
        assert present == sorted(present, reverse=not ascending), (column.key, direction)


def test_filters_narrow_the_table_to_matching_deals(dashboard, seeded, settings, page,
                                                   screenshot):
    page.goto(dashboard + "/deals")
    page.fill("input[name=min_price]", "20")
    page.fill("input[name=max_price]", "300.50")
    page.fill("input[name=min_drop]", "30")
    page.fill("input[name=min_rank]", "1000")
    page.fill("input[name=max_rank]", "1500000")
    page.select_option("select[name=category]", "Electronics")
    page.click("button[type=submit]")
    expected = sql(settings, "SELECT COUNT(*) FROM deals WHERE current_cents BETWEEN 2000 AND "
                             "30050 AND delta_percent <= -30 AND sales_rank BETWEEN 1000 AND "
                             "1500000 AND category_name = 'Electronics'")[0][0]
    assert 0 < expected < 137
    assert len(shown_asins(page)) == expected
    assert page.locator("#match-count").inner_text().startswith(f"{expected} deal")
    screenshot("deals-filtered")

    page.goto(dashboard + "/deals")
    page.fill("input[name=q]", "Kettle")
    page.press("input[name=q]", "Enter")
    titles = page.locator("a.deal-title").all_inner_texts()
    assert titles and all("Kettle" in t for t in titles)
    assert len(titles) == sql(settings, "SELECT COUNT(*) FROM deals WHERE title LIKE "
                                        "'%Kettle%'")[0][0]


def walk_next_links(page) -> list[str]:
    """The ASINs of this page and of every page its Next links lead to."""
    seen = []
    while True:
        seen += shown_asins(page)
        if not page.locator("#next-page").count():
            return seen
        page.click("#next-page")
        assert "after=" in page.url and "offset" not in page.url, "pages by cursor"


def test_pagination_walks_through_every_deal_once(dashboard, seeded, settings, page):
    page.goto(dashboard + "/deals?per_page=25&sort=asin&dir=asc")
    seen = walk_next_links(page)
    assert seen == [a for (a,) in sql(settings, "SELECT asin FROM deals ORDER BY asin")]
    assert "page 6" in page.locator(".pager").inner_text()
    page.click("#prev-page")
    assert shown_asins(page) == seen[100:125]
    assert "before=" in page.url
    for _ in range(4):
        page.click("#prev-page")
    assert shown_asins(page) == seen[:25]
    assert "after=" not in page.url and "before=" not in page.url, "page 1 has no cursor"
    assert not page.locator("#prev-page").count()


def test_a_walk_that_meets_no_match_stops_early_and_next_continues(dashboard, seeded, settings,
                                                                  page, screenshot,
                                                                  monkeypatch):
    """Many matches (more than COUNT_CAP) sorted against them: the most expensive deals have
    no drop of 80 %. Each page examines at most WALK_CAP deals, says so, and Next goes on."""
    monkeypatch.setattr(deal_query, "COUNT_CAP", 5)
    monkeypatch.setattr(deal_query, "WALK_CAP", 30)
    page.goto(dashboard + "/deals?min_drop=80&sort=price&dir=desc&per_page=25")
    assert page.locator("#match-count").inner_text().startswith("More than 5 deals match")
    assert "stopped after examining 30 deals" in page.locator("#walk-cut").inner_text()
    screenshot("deals-walk-cut")
    seen = walk_next_links(page)
    assert seen == [a for (a,) in sql(settings, "SELECT asin FROM deals WHERE delta_percent "
                                                "<= -80 ORDER BY current_cents DESC, asin DESC")]


def test_csv_export_holds_every_deal_of_the_current_filter_in_order(dashboard, seeded,
                                                                   settings, page):
    page.goto(dashboard + "/deals?min_drop=40&sort=drop&dir=desc&per_page=25")
    with page.expect_download() as download_info:
        page.click("#csv-export")
    text = download_info.value.path().read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = sql(settings, "SELECT asin, current_cents FROM deals WHERE delta_percent <= -40 "
                             "ORDER BY delta_percent ASC, asin ASC")
    assert len(expected) > 25, "more than one page, so the export is not just the page"
    assert [r["asin"] for r in rows] == [a for a, _ in expected]
    assert [r["price"] for r in rows] == [f"{c / 100:.2f}" for _, c in expected]
    assert rows[0]["amazon_url"] == f"https://www.amazon.com/dp/{expected[0][0]}"


def test_detail_view_links_to_amazon_and_keepa(dashboard, seeded, settings, page, screenshot):
    page.goto(dashboard + "/deals?sort=asin&dir=asc")
    first = page.locator("a.deal-title").first
    title = first.inner_text()
    first.click()
    assert page.locator("#deal-title").inner_text() == title
    asin = sql(settings, "SELECT asin FROM deals ORDER BY asin LIMIT 1")[0][0]
    assert page.url.endswith(f"/deals/{asin}")
    assert page.locator(f"a[href='https://www.amazon.com/dp/{asin}']").count() == 1
    assert page.locator(f"a[href='https://keepa.com/#!product/1-{asin}']").count() == 1
    screenshot("deal-detail")
    assert requests.get(f"{dashboard}/deals/B999999999", timeout=10).status_code == 404
