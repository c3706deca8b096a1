"""/product: request parsing, product objects, offers and the cost rules (keepa-api.md §2.3, §5.5).

* `asin` xor `code`, at most 100 items, `domain` required → otherwise 400.
* A malformed ASIN → `MalformedAsin` (the API answers 200 with `error`, no `products`, cost 0).
* A well-formed unknown ASIN → a product with `productType` 4 and nulls, cost 1; with
  `update=-1` it is omitted and costs 0. A code matches the catalogue's EANs (1 per product).
* Cost per returned product: 1, or with `offers` 6 × ceil(found / 10) instead; +1 with `update=0`
  while the data are less than an hour old; +2 for `buybox=1` without offers.
* Data are those of the product's last update. `history=0` gives `csv: null`; `days` trims the
  histories (which span `catalogue.history_days`); `stats` adds the statistics object.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass

from keepa_sim import categories
from keepa_sim.catalogue import SHIPPING_TYPES, TYPE_SLOTS, Product
from keepa_sim.clock import keepa_minute
from keepa_sim.config import DOMAINS
from keepa_sim.history import (
    MINUTES_PER_DAY,
    current_run,
    drops,
    points,
    summaries,
    summary,
)
from keepa_sim.rand import rng

MAX_ITEMS = 100
CSV_TYPES = 36
INVALID_PRODUCT_TYPE = 4
_ASIN = re.compile(r"^[A-Z0-9]{10}$")
_CODE = re.compile(r"^[0-9]{8,14}$")
_STATS_WINDOWS_DAYS = (30, 90, 180, 365)  # the last one is the horizon of min/max
_STATS_HORIZON_DAYS = _STATS_WINDOWS_DAYS[-1]
_FRESH_MINUTES = 60
_OFFER_PAGE, _OFFER_PAGE_COST = 10, 6
_BUYBOX_COST = 2
_FLAGS = ("buybox", "rating", "stock", "rental", "videos", "aplus", "only-live-offers",
          "historical-variations")
_CACHE_SIZE = 4096
_PRICE_TYPES = (0, 1, 2, 10, 18)
_NEW, _USED, _COUNT_NEW, _COUNT_USED, _RANK = 1, 2, 11, 12, 3


class ProductParamError(ValueError):
    """A parameter the API rejects with 400; the message names it."""


class MalformedAsin(ValueError):
    """An ASIN that is not 10 letters/digits (the API answers 200 with an error)."""


@dataclass(frozen=True)
class ProductRequest:
    domain: int
    asins: tuple[str, ...]
    codes: tuple[str, ...]
    stats: tuple[int, int] | int | None  # days, or (from, to) Keepa minutes
    history: bool
    days: int | None
    offers: int | None
    update: int | None
    buybox: bool

    def shape(self) -> tuple:
        """The parts of the request that shape one product's JSON."""
        return (self.stats, self.history, self.days, self.offers)


def parse_request(params: dict[str, str]) -> ProductRequest:
    domain = _int_param(params, "domain")
    if domain is None or domain not in DOMAINS:
        raise ProductParamError(f"domain must be one of {list(DOMAINS)}")
    asin, code = params.get("asin"), params.get("code")
    if (asin is None) == (code is None):
        raise ProductParamError("give exactly one of asin= and code=")
    items = [item.strip() for item in (asin if asin is not None else code).split(",")]
    if len(items) > MAX_ITEMS:
        raise ProductParamError(f"{len(items)} items requested; at most {MAX_ITEMS} per call")
    if asin is not None:
        items = [item.upper() for item in items]
        bad = [item for item in items if not _ASIN.match(item)]
        if bad:
            raise MalformedAsin(f"invalid ASIN {bad[0][:20]!r}")
    elif any(not _CODE.match(item) for item in items):
        raise ProductParamError("code must be UPC/EAN/ISBN-13 digits")
    offers = _int_param(params, "offers")
    if offers is not None and not 20 <= offers <= 100:
        raise ProductParamError("offers must be between 20 and 100")
    days = _int_param(params, "days")
    if days is not None and days <= 0:
        raise ProductParamError("days must be a positive integer")
    update = _int_param(params, "update")
    if update is not None and update < -1:
        raise ProductParamError("update must be -1 or a number of hours >= 0")
    history = params.get("history", "1")
    if history not in ("0", "1"):
        raise ProductParamError("history must be 0 or 1")
    for flag in _FLAGS:
        if params.get(flag, "0") not in ("0", "1"):
            raise ProductParamError(f"{flag} must be 0 or 1")
    return ProductRequest(
        domain=domain, asins=tuple(items) if asin is not None else (),
        codes=tuple(items) if code is not None else (), stats=_stats_param(params.get("stats")),
        history=history == "1", days=days, offers=offers, update=update,
        buybox=params.get("buybox") == "1")


def _int_param(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ProductParamError(f"{name} must be an integer, got {value[:20]!r}") from None


def _stats_param(value: str | None):
    if value is None or value == "":
        return None
    if "," not in value:
        if not value.isdigit() or int(value) <= 0:
            raise ProductParamError("stats must be a number of days or from,to")
        return int(value)
    parts = value.split(",")
    if len(parts) != 2:
        raise ProductParamError("stats must be a number of days or from,to")
    start, end = (_stats_bound(part.strip()) for part in parts)
    if end < start:
        raise ProductParamError("stats: the end is before the start")
    return (start, end)


def _stats_bound(text: str) -> int:
    if text.isdigit():
        return keepa_minute(int(text))
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ProductParamError(f"stats bound {text[:20]!r} is neither ms nor YYYY-MM-DD") \
            from None
    return keepa_minute(int(day.timestamp() * 1000))


class ProductService:
    """Answers /product requests from the catalogues; product JSON is memoised per update."""

    def __init__(self, catalogue_for, config: dict):
        self._catalogue_for = catalogue_for
        self._config = config
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, str] = OrderedDict()

    def configure(self, config: dict) -> None:
        with self._lock:
            self._config = config
            self._cache.clear()

    def answer(self, request: ProductRequest, minute: int) -> tuple[list[str], int]:
        """(serialised product objects, cost) at Keepa minute `minute`."""
        catalogue = self._catalogue_for(request.domain)
        found: list[tuple[str, Product | None]] = []
        for asin in request.asins:
            found.append((asin, catalogue.by_asin.get(asin) if catalogue else None))
        for code in request.codes:
            product = catalogue.by_ean.get(code.zfill(13)) if catalogue else None
            if product is not None:
                found.append((product.asin, product))
        texts, cost = [], 0
        for asin, product in found:
            if product is None or product.tracking_since > minute:
                if request.update == -1 or request.codes:
                    continue
                texts.append(json.dumps(_unknown_product(asin, request.domain),
                                        separators=(",", ":")))
                cost += 1
                continue
            text, offers_found = self._product_json(product, request, minute)
            texts.append(text)
            cost += _product_cost(request, offers_found, minute - product.last_update(minute))
        return texts, cost

    def _product_json(self, product: Product, request: ProductRequest,
                      minute: int) -> tuple[str, int]:
        last_update = product.last_update(minute)
        key = (product.domain, product.index, last_update, request.shape())
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            body = _product_object(product, request, last_update,
                                   self._config["catalogue"]["history_days"])
            cached = (json.dumps(body, separators=(",", ":")), len(body.get("offers") or ()))
            with self._lock:
                self._cache[key] = cached
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return cached


def _product_cost(request: ProductRequest, offers_found: int, age_minutes: int) -> int:
    if request.offers is not None:
        cost = _OFFER_PAGE_COST * max(1, math.ceil(offers_found / _OFFER_PAGE))
    else:
        cost = 1 + (_BUYBOX_COST if request.buybox else 0)
    if request.update == 0 and age_minutes < _FRESH_MINUTES:
        cost += 1
    return cost


def _unknown_product(asin: str, domain: int) -> dict:
    return {"asin": asin, "domainId": domain, "productType": INVALID_PRODUCT_TYPE, "title": None,
            "parentAsin": None, "rootCategory": 0, "categories": None, "categoryTree": None,
            "trackingSince": 0, "lastUpdate": 0, "csv": None, "stats": None, "offers": None}


def _product_object(product: Product, request: ProductRequest, minute: int,
                    history_days: int) -> dict:
    history_minutes = min(history_days, request.days or history_days) * MINUTES_PER_DAY
    horizon = history_minutes
    if request.stats is not None:
        horizon = max(horizon, _STATS_HORIZON_DAYS * MINUTES_PER_DAY,
                      request.stats * MINUTES_PER_DAY if isinstance(request.stats, int)
                      else minute - request.stats[0])
    segments = [family.segments(minute, horizon) for family in product.families]
    current = {t: current_run(segments[f], m) for t, (f, m) in TYPE_SLOTS.items()}
    price_changes = [current[t][1] for t in _PRICE_TYPES if current[t][1] >= 0]
    root = product.root
    body = {
        "asin": product.asin, "domainId": product.domain, "productType": 0,
        "title": product.title, "parentAsin": product.parent_asin, "rootCategory": root,
        "categories": product.categories,
        "categoryTree": [{"catId": c, "name": categories.name(c)} for c in product.categories],
        "productGroup": product.product_group, "brand": product.brand,
        "manufacturer": product.manufacturer, "author": product.author,
        "binding": product.binding, "color": product.color, "imagesCSV": product.image,
        "images": [{"l": product.image, "lH": 500, "lW": 500, "m": product.image, "mH": 160,
                    "mW": 160}],
        "eanList": [product.ean], "upcList": None,
        "trackingSince": product.tracking_since, "listedSince": product.listed_since,
        "lastUpdate": minute, "lastPriceChange": max(price_changes, default=-1),
        "lastRatingUpdate": current[16][1], "availabilityAmazon": 0 if current[0][0] >= 0 else -1,
        "salesRankReference": root if root else -1,
        "salesRanks": None, "csv": None,
    }
    if request.history:
        low = minute - history_minutes
        body["csv"] = [
            points(segments[TYPE_SLOTS[t][0]], TYPE_SLOTS[t][1], low,
                   triples=t in SHIPPING_TYPES) if t in TYPE_SLOTS else None
            for t in range(CSV_TYPES)]
        if root and current[_RANK][0] >= 0:
            body["salesRanks"] = {str(root): body["csv"][_RANK]}
    if request.offers is not None:
        body.update(_offers(product, current, minute, request.offers))
    if request.stats is not None:
        body["stats"] = _stats(segments, current, request, minute, product)
    return body


def _offers(product: Product, current: dict, minute: int, limit: int) -> dict:
    """Deterministic offers: count from COUNT_NEW + COUNT_USED, prices from NEW / USED."""
    r = rng(product.domain, product.index, minute, 7)
    new_count = max(0, current[_COUNT_NEW][0])
    used_count = max(0, current[_COUNT_USED][0])
    found = min(limit, new_count + used_count)
    offers = []
    for n in range(found):
        is_new = n < new_count
        base = current[_NEW if is_new else _USED][0]
        price = max(1, int(max(base, 100) * (1 + 0.02 * n)))
        offers.append({
            "offerId": n, "lastSeen": minute,
            "sellerId": "A" + "".join(r.choices(string.ascii_uppercase + string.digits, k=13)),
            "offerCSV": [minute, price, 0 if r.random() < 0.6 else 399],
            "condition": 1 if is_new else r.randint(2, 5), "isPrime": r.random() < 0.5,
            "isMAP": False, "isShippable": True, "isAddonItem": False, "isPreorder": False,
            "isWarehouseDeal": False, "isScam": False, "isAmazon": False,
            "isFBA": r.random() < 0.4, "shipsFromChina": False})
    return {"offers": offers, "liveOffersOrder": list(range(found)), "offersSuccessful": True}


def _stats(segments: list, current: dict, request: ProductRequest, minute: int,
           product: Product) -> dict:
    stats = request.stats
    if isinstance(stats, int):
        low, high = minute - stats * MINUTES_PER_DAY, minute
    else:
        low, high = stats[0], min(stats[1], minute)
    interval = segments
    if high < minute:
        interval = [family.segments(high, max(0, high - low)) for family in product.families]
    body: dict = {name: [-1] * CSV_TYPES for name in (
        "current", "avg", "avg30", "avg90", "avg180", "avg365", "atIntervalStart",
        "outOfStockPercentageInInterval", "outOfStockPercentage30", "outOfStockPercentage90")}
    body.update({name: [None] * CSV_TYPES
                 for name in ("min", "max", "minInInterval", "maxInInterval")})
    window_lows = [minute - days * MINUTES_PER_DAY for days in _STATS_WINDOWS_DAYS]
    lows = sorted({*window_lows, low} if interval is segments else set(window_lows),
                  reverse=True)
    for csv_type, (f, m) in TYPE_SLOTS.items():
        by_low = dict(zip(lows, summaries(segments[f], m, lows), strict=True))
        body["current"][csv_type] = current[csv_type][0]
        body["atIntervalStart"][csv_type] = _value_at(interval[f], m, low)
        (body["avg"][csv_type], body["outOfStockPercentageInInterval"][csv_type],
         body["minInInterval"][csv_type], body["maxInInterval"][csv_type]) = (
            by_low[low] if interval is segments else summary(interval[f], m, low))
        for days, window_low in zip(_STATS_WINDOWS_DAYS, window_lows, strict=True):
            mean, missing, lowest, highest = by_low[window_low]
            body[f"avg{days}"][csv_type] = mean
            if days in (30, 90):
                body[f"outOfStockPercentage{days}"][csv_type] = missing
        body["min"][csv_type], body["max"][csv_type] = lowest, highest
    rank_family, rank_member = TYPE_SLOTS[_RANK]
    for days, count in zip(_STATS_WINDOWS_DAYS,
                           drops(segments[rank_family], rank_member, window_lows), strict=True):
        body[f"salesRankDrops{days}"] = count
    body["totalOfferCount"] = max(0, current[_COUNT_NEW][0]) + max(0, current[_COUNT_USED][0])
    body["lastOffersUpdate"] = minute if request.offers is not None else -1
    return body


def _value_at(segments: list, member: int, minute: int) -> int:
    for start, _end, values in segments:
        if start <= minute:
            return values[member]
    return -1

