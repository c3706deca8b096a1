"""Helpers for the deal store tests."""

from __future__ import annotations

import dataclasses

from keepa_deals.deals import DealRecord

BASE_TIME = 1_700_000_000


def make_deal(asin: str = "B000000001", **changes) -> DealRecord:
    """A plausible unenriched deal; keyword arguments override fields."""
    record = DealRecord(
        asin=asin, domain_id=1, title="Golden River Speaker", image_url=None,
        root_category=172282, categories=(172282, 667846011), category_name="Electronics",
        brand=None, price_type=1, current_cents=2_499, avg_cents=3_999, delta_cents=-1_500,
        delta_percent=-38, amazon_cents=None, new_cents=2_499, used_cents=1_899,
        list_price_cents=4_999, sales_rank=12_345, rating=4.5, review_count=321,
        offer_count_new=7, offer_count_used=2, deal_created_at=BASE_TIME - 3_600,
        last_update_at=BASE_TIME, enriched_at=None)
    return dataclasses.replace(record, **changes)


def stored(conn, asin: str) -> dict:
    """The deals row of `asin` as a dict."""
    row = conn.execute("SELECT * FROM deals WHERE asin = ?", (asin,)).fetchone()
    assert row is not None, f"{asin} is not stored"
    return dict(row)
