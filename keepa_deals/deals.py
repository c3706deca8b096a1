"""Parsing Keepa `/deal` and `/product` JSON into typed, null-safe records.

Contract (docs/architecture.md, keepa-api.md §2.2, §2.3, §3):

* Prices, ranks and counts are integers in the locale's smallest unit (cents); -1, -2 (any
  negative), null and absent all become None. Deltas keep their sign (a drop is negative); only
  null/absent become None. Ratings are stars (Keepa 45 → 4.5).
* `avg`, `delta` and `deltaPercent` are indexed `x[dateRange][priceType]`; the undocumented
  dateRange 4 ("all intervals") reads the widest interval, 90 days (row 3).
* Times are unix seconds (UTC) via keepa_time; a deal without a valid `lastUpdate` is malformed.
* A value of the wrong JSON type makes its record malformed (`MalformedRecord`, naming the
  field); `parse_deal_page` counts and reports such records and parses the rest of the page.

Parsing is straight-line code over dicts and lists (no validation framework): the pipeline
targets 10 000 deals/s on one core from raw page bytes to committed rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from keepa_deals.constants import DEAL_PAGE_SIZE, UNKNOWN_ROOT_CATEGORY
from keepa_deals.keepa_api import validate_selection
from keepa_deals.keepa_time import keepa_minute_to_unix

IMAGE_BASE_URL = "https://m.media-amazon.com/images/I/"
_IMAGE_NAME = re.compile(r"[A-Za-z0-9._%+-]+")
_UNKNOWN_ROOTS = frozenset({0, UNKNOWN_ROOT_CATEGORY})
_WIDEST_INTERVAL_ROW = 3  # avg/delta/deltaPercent rows: day, week, month, 90 days

# CSV type indices (keepa-api.md §3.3) that a DealRecord carries besides its own price type.
_AMAZON, _NEW, _USED, _SALES, _LIST_PRICE = 0, 1, 2, 3, 4
_COUNT_NEW, _COUNT_USED, _RATING, _COUNT_REVIEWS = 11, 12, 16, 17


class MalformedRecord(ValueError):
    """A deal or product object that cannot be parsed; the message names the field."""


@dataclass(frozen=True, slots=True)
class DealRecord:
    """One deal, typed; attribute names are the columns of the `deals` table."""

    asin: str
    domain_id: int
    title: str | None
    image_url: str | None
    root_category: int | None
    categories: tuple[int, ...]
    category_name: str | None
    brand: str | None
    price_type: int
    current_cents: int | None
    avg_cents: int | None
    delta_cents: int | None
    delta_percent: int | None
    amazon_cents: int | None
    new_cents: int | None
    used_cents: int | None
    list_price_cents: int | None
    sales_rank: int | None
    rating: float | None
    review_count: int | None
    offer_count_new: int | None
    offer_count_used: int | None
    deal_created_at: int | None
    last_update_at: int
    enriched_at: int | None = None


DEAL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DealRecord))


@dataclass(frozen=True)
class ParsedPage:
    """The deals of one `/deal` page that parsed, and one line per deal that did not."""

    records: list[DealRecord]
    malformed: list[str]

    @property
    def deal_count(self) -> int:
        """Deals Keepa returned on the page, parsed or not; fewer than 150 = the last page."""
        return len(self.records) + len(self.malformed)

    @property
    def is_last_page(self) -> bool:
        return self.deal_count < DEAL_PAGE_SIZE


@dataclass(frozen=True, slots=True)
class ProductDetails:
    """The fields of a `/product` object that enrich a deal."""

    asin: str
    title: str | None
    brand: str | None
    category_name: str | None
    root_category: int | None
    categories: tuple[int, ...]
    image_url: str | None
    list_price_cents: int | None
    rating: float | None
    review_count: int | None


# --------------------------------------------------------------------------- selections

def selection_price_type(selection: Mapping) -> int:
    """The deal query's price type: `priceTypes` as an int or a one-element list (default 0)."""
    validate_selection(selection)
    value = selection.get("priceTypes", 0)
    return value if isinstance(value, int) else value[0]


def selection_date_range(selection: Mapping) -> int:
    """The deal query's `dateRange` (default 0 = day)."""
    validate_selection(selection)
    return selection.get("dateRange", 0)


# --------------------------------------------------------------------------- deals

def parse_deal_page(payload: Mapping, *, domain_id: int, price_type: int,
                    date_range: int) -> ParsedPage:
    """Parse a `/deal` body (KeepaResponse.payload, or its inner `deals` object).

    Raises MalformedRecord only when the page itself has no `dr` list; a bad deal is reported
    in `malformed` as "#<index> (asin <asin>): <reason>" and the others are kept.
    """
    deals = payload.get("deals", payload) if isinstance(payload, Mapping) else None
    items = deals.get("dr") if isinstance(deals, Mapping) else None
    if not isinstance(items, list):
        raise MalformedRecord("deal page: 'deals.dr' is missing or not a list")
    names = _root_category_names(deals)
    records: list[DealRecord] = []
    malformed: list[str] = []
    for index, raw in enumerate(items):
        try:
            records.append(parse_deal(raw, domain_id=domain_id, price_type=price_type,
                                      date_range=date_range, category_names=names))
        except MalformedRecord as exc:
            asin = raw.get("asin") if isinstance(raw, Mapping) else None
            malformed.append(f"#{index} (asin {asin if isinstance(asin, str) else '?'}): {exc}")
    return ParsedPage(records, malformed)


def parse_deal(raw: Mapping, *, domain_id: int, price_type: int, date_range: int,
               category_names: Mapping[int, str] | None = None) -> DealRecord:
    """One deal object → DealRecord; `category_names` maps root category ids to names (the
    page's categoryIds/categoryNames) for `category_name` until a product enriches it."""
    if not isinstance(raw, Mapping):
        raise MalformedRecord(f"deal is a {type(raw).__name__}, expected an object")
    asin = raw.get("asin")
    if type(asin) is not str or not asin:
        raise MalformedRecord(f"asin is {asin!r}, expected a non-empty string")
    last_update = _keepa_time(raw.get("lastUpdate"), "lastUpdate")
    if last_update is None:
        raise MalformedRecord(f"lastUpdate is {raw.get('lastUpdate')!r}, expected a Keepa minute")
    current = _list(raw.get("current"), "current")
    row = min(date_range, _WIDEST_INTERVAL_ROW)
    root = _root_category(raw.get("rootCat"), "rootCat")
    rating = _amount(current, _RATING, "current")
    return DealRecord(
        asin=asin,
        domain_id=domain_id,
        title=_text(raw.get("title"), "title"),
        image_url=_image_url(raw.get("image"), "image"),
        root_category=root,
        categories=_int_tuple(raw.get("categories"), "categories"),
        category_name=category_names.get(root) if category_names and root is not None else None,
        brand=None,
        price_type=price_type,
        current_cents=_amount(current, price_type, "current"),
        avg_cents=_cell(raw.get("avg"), row, price_type, "avg", _amount),
        delta_cents=_cell(raw.get("delta"), row, price_type, "delta", _value),
        delta_percent=_cell(raw.get("deltaPercent"), row, price_type, "deltaPercent", _value),
        amazon_cents=_amount(current, _AMAZON, "current"),
        new_cents=_amount(current, _NEW, "current"),
        used_cents=_amount(current, _USED, "current"),
        list_price_cents=_amount(current, _LIST_PRICE, "current"),
        sales_rank=_amount(current, _SALES, "current"),
        rating=None if rating is None else rating / 10,
        review_count=_amount(current, _COUNT_REVIEWS, "current"),
        offer_count_new=_amount(current, _COUNT_NEW, "current"),
        offer_count_used=_amount(current, _COUNT_USED, "current"),
        deal_created_at=_keepa_time(raw.get("creationDate"), "creationDate"),
        last_update_at=last_update,
    )


def _root_category_names(deals: Mapping) -> dict[int, str]:
    ids, names = deals.get("categoryIds"), deals.get("categoryNames")
    if not isinstance(ids, list) or not isinstance(names, list):
        return {}
    return {i: n for i, n in zip(ids, names, strict=False)
            if type(i) is int and isinstance(n, str) and i not in _UNKNOWN_ROOTS}


# --------------------------------------------------------------------------- products

def parse_product(raw: Mapping) -> ProductDetails:
    """One `/product` object → ProductDetails (current values from `stats`, else the last
    point of the `csv` history; category name = the leaf of `categoryTree`)."""
    if not isinstance(raw, Mapping):
        raise MalformedRecord(f"product is a {type(raw).__name__}, expected an object")
    asin = raw.get("asin")
    if type(asin) is not str or not asin:
        raise MalformedRecord(f"asin is {asin!r}, expected a non-empty string")
    rating = _latest(raw, _RATING)
    return ProductDetails(
        asin=asin,
        title=_text(raw.get("title"), "title"),
        brand=_text(raw.get("brand"), "brand") or None,
        category_name=_category_leaf(raw.get("categoryTree")),
        root_category=_root_category(raw.get("rootCategory"), "rootCategory"),
        categories=_int_tuple(raw.get("categories"), "categories"),
        image_url=_product_image_url(raw),
        list_price_cents=_latest(raw, _LIST_PRICE),
        rating=None if rating is None else rating / 10,
        review_count=_latest(raw, _COUNT_REVIEWS),
    )


def enrich(record: DealRecord, product: Mapping | ProductDetails, *,
           now: int | None = None) -> DealRecord:
    """`record` with the product's title, brand, category name, list price, rating, review
    count (each kept from the deal when the product lacks it), the product image when the deal
    had none, and `enriched_at` = `now` (default: the current unix second)."""
    details = product if isinstance(product, ProductDetails) else parse_product(product)
    if details.asin != record.asin:
        raise MalformedRecord(f"product {details.asin} does not belong to deal {record.asin}")
    return replace(
        record,
        title=_first(details.title, record.title),
        brand=_first(details.brand, record.brand),
        category_name=_first(details.category_name, record.category_name),
        root_category=_first(record.root_category, details.root_category),
        categories=record.categories or details.categories,
        image_url=_first(record.image_url, details.image_url),
        list_price_cents=_first(details.list_price_cents, record.list_price_cents),
        rating=_first(details.rating, record.rating),
        review_count=_first(details.review_count, record.review_count),
        enriched_at=int(time.time()) if now is None else now,
    )


def _first(preferred, fallback):
    return fallback if preferred is None else preferred


def _latest(product: Mapping, csv_type: int) -> int | None:
    stats = product.get("stats")
    if stats is not None and not isinstance(stats, Mapping):
        raise MalformedRecord(f"stats is a {type(stats).__name__}, expected an object")
    value = _amount(_list(stats.get("current"), "stats.current"), csv_type,
                    "stats.current") if stats else None
    if value is not None:
        return value
    history = _row(product.get("csv"), csv_type, "csv")
    return _amount(history, len(history) - 1, f"csv[{csv_type}]") if history else None


def _category_leaf(tree: object) -> str | None:
    if tree is None:
        return None
    if not isinstance(tree, list):
        raise MalformedRecord(f"categoryTree is a {type(tree).__name__}, expected a list")
    leaf = tree[-1] if tree else None
    if leaf is None:
        return None
    if not isinstance(leaf, Mapping):
        raise MalformedRecord("categoryTree entries must be {catId, name} objects")
    return _text(leaf.get("name"), "categoryTree.name") or None


def _product_image_url(product: Mapping) -> str | None:
    images = product.get("images")
    if images:
        if not isinstance(images, list) or not isinstance(images[0], Mapping):
            raise MalformedRecord("images must be a list of {l, m, ...} objects")
        return _image_url(images[0].get("l") or images[0].get("m"), "images[0]")
    names = _text(product.get("imagesCSV"), "imagesCSV")
    return _image_url(names.split(",", 1)[0], "imagesCSV") if names else None


# --------------------------------------------------------------------------- field readers

def _list(value: object, field: str) -> list | None:
    if value is None or type(value) is list:
        return value
    raise MalformedRecord(f"{field} is a {type(value).__name__}, expected a list")


def _row(matrix: object, index: int, field: str) -> list | None:
    """matrix[index] of a list of lists, None when absent."""
    rows = _list(matrix, field)
    if rows is None or not 0 <= index < len(rows):
        return None
    return _list(rows[index], f"{field}[{index}]")


def _cell(matrix: object, row: int, column: int, field: str, read) -> int | None:
    """read(matrix[row], column) for an avg/delta/deltaPercent matrix, null-safe."""
    if not matrix:
        return None
    values = _row(matrix, row, field)
    try:
        return read(values, column, field)
    except MalformedRecord:  # name the full position; built only on this rare path
        return read(values, column, f"{field}[{row}]")


def _value(values: list | None, index: int, field: str) -> int | None:
    """values[index] as an int of any sign; None when null or out of range."""
    if values is None or not 0 <= index < len(values):
        return None
    value = values[index]
    if value is None or type(value) is int:
        return value
    raise MalformedRecord(f"{field}[{index}] is {value!r}, expected an integer")


def _amount(values: list | None, index: int, field: str) -> int | None:
    """A price, rank or count: like _value, but negative markers (-1, -2) become None."""
    value = _value(values, index, field)
    return value if value is not None and value >= 0 else None


def _keepa_time(value: object, field: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise MalformedRecord(f"{field} is {value!r}, expected a Keepa minute")
    return keepa_minute_to_unix(value) if value > 0 else None


def _text(value: object, field: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise MalformedRecord(f"{field} is a {type(value).__name__}, expected a string")


def _root_category(value: object, field: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise MalformedRecord(f"{field} is {value!r}, expected a category id")
    return None if value in _UNKNOWN_ROOTS else value


def _int_tuple(value: object, field: str) -> tuple[int, ...]:
    items = _list(value, field)
    if not items:
        return ()
    if not all(type(i) is int for i in items):
        raise MalformedRecord(f"{field} must hold integers, got {items!r}")
    return tuple(items)


def _image_url(value: object, field: str) -> str | None:
    """Keepa image name (ASCII code list or string) → Amazon image URL."""
    if not value:
        return None
    if type(value) is list:
        try:
            value = bytes(value).decode("ascii")
        except (TypeError, ValueError):
            raise MalformedRecord(f"{field} is not a list of ASCII codes") from None
    if type(value) is not str or not _IMAGE_NAME.fullmatch(value):
        raise MalformedRecord(f"{field} {value!r} is not an image file name")
    return IMAGE_BASE_URL + value
