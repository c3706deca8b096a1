"""Parsing and normalising the /deal `selection` JSON (keepa-api.md §2.2, §5.4).

`parse_selection(raw, domain_param, knobs)` returns a frozen `Selection` or raises
`SelectionError` with a message naming the field. Rules:

* `domainId` (or the `domain` query parameter) is required; numeric strings are accepted.
* `priceTypes`, `dateRange`, `sortType` sent as strings follow `deals.string_numbers`
  (coerce / silently use the default / reject). `priceTypes` may be an int or a list; a list of
  more than one is rejected in strict mode, otherwise its first element is used.
* `isRangeEnabled` gates the range options, `isFilterEnabled` gates include/exclude categories;
  an absent switch follows `deals.switch_default`. Other filters always apply.
* `deltaPercentRange` has a minimum of 10 (80 for the sales rank type); `salesRankRange` upper
  bound −1 means open. Unknown fields are ignored (400 in strict mode).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from keepa_sim.config import DOMAINS

SALES_RANK_TYPE = 3
DEAL_PRICE_TYPES = frozenset({0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 18, 19, 20, 21, 22, 32, 33})
DEAL_DOMAINS = frozenset(DOMAINS) - {12}  # Brazil has no deals
MAX_CATEGORIES = 500
MAX_TITLE_KEYWORDS = 50
RANGE_FIELDS = ("currentRange", "deltaRange", "deltaPercentRange", "deltaLastRange",
                "salesRankRange")
FLAG_FIELDS = ("hasReviews", "filterErotic", "singleVariation", "isLowest", "isLowest90",
               "isHighest", "isLowestOffer", "isOutOfStock", "isBackInStock", "isRisers",
               "isPrimeExclusive", "mustHaveAmazonOffer", "mustNotHaveAmazonOffer")
ATTRIBUTE_FIELDS = (
    "material", "type", "manufacturer", "brand", "productGroup", "model", "color", "size",
    "unitType", "scent", "itemForm", "pattern", "style", "itemTypeKeyword",
    "targetAudienceKeyword", "edition", "format", "author", "binding", "languages",
    "brandStoreName", "brandStoreUrlName", "websiteDisplayGroup", "websiteDisplayGroupName",
    "salesRankDisplayGroup")
KNOWN_FIELDS = frozenset({
    "page", "domainId", "priceTypes", "dateRange", "sortType", "isRangeEnabled",
    "isFilterEnabled", "includeCategories", "excludeCategories", "minRating",
    "warehouseConditions", "titleSearch", *RANGE_FIELDS, *FLAG_FIELDS, *ATTRIBUTE_FIELDS})
_DEFAULTS = {"priceTypes": 0, "dateRange": 0, "sortType": 1}
_INT32_MAX = 2_147_483_647


class SelectionError(ValueError):
    """The selection cannot be served; the message names the offending field."""


@dataclass(frozen=True)
class Selection:
    domain: int
    page: int
    price_type: int
    date_range: int  # 0..3, or 4 = union of all
    sort_type: int
    ranges: tuple[tuple[str, int, int], ...]  # (field, min, max) of enabled range options
    include_categories: frozenset[int] | None
    exclude_categories: frozenset[int]
    min_rating: int
    flags: frozenset[str]
    warehouse_conditions: frozenset[int] | None
    title_words: tuple[str, ...]
    attributes: tuple[tuple[str, frozenset[str]], ...]

    def cache_key(self) -> str:
        """Everything that defines the result set, i.e. all but the page, as a string."""
        return self._key(("page",))

    def match_key(self) -> str:
        """Everything that decides which deals match, i.e. all but the page and sortType."""
        return self._key(("page", "sort_type"))

    def _key(self, left_out: tuple[str, ...]) -> str:
        fields = asdict(self)
        for name in left_out:
            fields.pop(name)
        return json.dumps(fields, sort_keys=True, default=sorted)


def parse_selection(raw: object, domain_param: str | None, knobs: dict) -> Selection:
    if not isinstance(raw, dict):
        raise SelectionError("selection must be a JSON object")
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown and knobs["strict"]:
        raise SelectionError(f"unknown selection field {unknown[0]!r}")
    parser = _Parser(raw, knobs)
    range_on = parser.switch("isRangeEnabled", RANGE_FIELDS)
    filter_on = parser.switch("isFilterEnabled", ("includeCategories", "excludeCategories"))
    price_type = parser.price_type()
    return Selection(
        domain=parser.domain(domain_param),
        page=parser.page(),
        price_type=price_type,
        date_range=parser.date_range(),
        sort_type=parser.sort_type(),
        ranges=parser.ranges(price_type) if range_on else (),
        include_categories=(frozenset(parser.ints("includeCategories", MAX_CATEGORIES))
                            if filter_on and raw.get("includeCategories") else None),
        exclude_categories=(frozenset(parser.ints("excludeCategories", MAX_CATEGORIES))
                            if filter_on else frozenset()),
        min_rating=parser.min_rating(),
        flags=frozenset(name for name in FLAG_FIELDS if parser.flag(name)),
        warehouse_conditions=(frozenset(parser.ints("warehouseConditions", 10))
                              if raw.get("warehouseConditions") else None),
        title_words=parser.title_words(),
        attributes=parser.attributes(),
    )


class _Parser:
    def __init__(self, raw: dict, knobs: dict):
        self.raw = raw
        self.knobs = knobs

    def switch(self, name: str, gated: tuple[str, ...]) -> bool:
        if name in self.raw:
            return self._bool(name)
        policy = self.knobs["switch_default"]
        return policy == "on" or (policy == "if_present" and any(g in self.raw for g in gated))

    def domain(self, domain_param: str | None) -> int:
        value = self.raw.get("domainId", domain_param)
        if value is None:
            raise SelectionError("domainId is required (in the selection or as domain=)")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not _is_int(value) or value not in DEAL_DOMAINS:
            raise SelectionError(f"domainId {value!r} has no deals; use one of "
                                 f"{sorted(DEAL_DOMAINS)}")
        return value

    def page(self) -> int:
        value = self.raw.get("page", 0)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not _is_int(value) or value < 0:
            raise SelectionError(f"page must be an integer >= 0, got {value!r}")
        return value

    def _number(self, name: str, value):
        """An int-valued field subject to deals.string_numbers."""
        if isinstance(value, str):
            policy = self.knobs["string_numbers"]
            if policy == "default":
                return _DEFAULTS[name]
            if policy == "coerce" and value.strip().lstrip("-").isdigit():
                return int(value)
            raise SelectionError(f"{name} must be a JSON integer, got the string {value!r}")
        return value

    def price_type(self) -> int:
        value = self.raw.get("priceTypes", _DEFAULTS["priceTypes"])
        if isinstance(value, list):
            if not value:
                raise SelectionError("priceTypes must hold one price type")
            if len(value) > 1 and self.knobs["strict"]:
                raise SelectionError("priceTypes must hold exactly one price type")
            value = value[0]
        value = self._number("priceTypes", value)
        if not _is_int(value) or value not in DEAL_PRICE_TYPES:
            raise SelectionError(f"priceTypes {value!r} is not a deal price type "
                                 f"({sorted(DEAL_PRICE_TYPES)})")
        return value

    def date_range(self) -> int:
        value = self._number("dateRange", self.raw.get("dateRange", _DEFAULTS["dateRange"]))
        allowed = (0, 1, 2, 3, 4) if self.knobs["date_range_4"] == "union" else (0, 1, 2, 3)
        if not _is_int(value) or value not in allowed:
            raise SelectionError(f"dateRange must be one of {allowed}, got {value!r}")
        return value

    def sort_type(self) -> int:
        value = self._number("sortType", self.raw.get("sortType") or _DEFAULTS["sortType"])
        if not _is_int(value) or abs(value) not in (1, 2, 3, 4):
            raise SelectionError(f"sortType must be 1..4 or -1..-4, got {value!r}")
        return 1 if value == -1 else value  # deal age is not invertible

    def ranges(self, price_type: int) -> tuple[tuple[str, int, int], ...]:
        out = []
        for name in RANGE_FIELDS:
            if name not in self.raw:
                continue
            value = self.raw[name]
            if not (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))):
                raise SelectionError(f"{name} must be [min, max] integers, got {value!r}")
            low, high = value
            if name == "deltaPercentRange":
                low = max(low, 80 if price_type == SALES_RANK_TYPE else 10)
            if name == "salesRankRange" and high == -1:
                high = _INT32_MAX
            out.append((name, low, high))
        return tuple(out)

    def ints(self, name: str, limit: int) -> list[int]:
        value = self.raw.get(name) or []
        if not isinstance(value, list) or not all(map(_is_int, value)):
            raise SelectionError(f"{name} must be a list of integers, got {value!r}")
        if len(value) > limit:
            raise SelectionError(f"{name} holds {len(value)} entries; at most {limit} allowed")
        return value

    def min_rating(self) -> int:
        value = self.raw.get("minRating", -1)
        if not _is_int(value) or not -1 <= value <= 50:
            raise SelectionError(f"minRating must be -1..50, got {value!r}")
        return value

    def flag(self, name: str) -> bool:
        return name in self.raw and self._bool(name)

    def _bool(self, name: str) -> bool:
        value = self.raw[name]
        if not isinstance(value, bool):
            raise SelectionError(f"{name} must be true or false, got {value!r}")
        return value

    def title_words(self) -> tuple[str, ...]:
        value = self.raw.get("titleSearch") or ""
        if not isinstance(value, str):
            raise SelectionError(f"titleSearch must be a string, got {value!r}")
        words = tuple(value.lower().split())
        if len(words) > MAX_TITLE_KEYWORDS:
            raise SelectionError(f"titleSearch has {len(words)} keywords; "
                                 f"at most {MAX_TITLE_KEYWORDS} allowed")
        return words

    def attributes(self) -> tuple[tuple[str, frozenset[str]], ...]:
        out = []
        for name in ATTRIBUTE_FIELDS:
            value = self.raw.get(name)
            if value in (None, [], ""):
                continue
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise SelectionError(f"{name} must be a list of strings, got {value!r}")
            out.append((name, frozenset(v.lower() for v in values)))
        return tuple(out)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
