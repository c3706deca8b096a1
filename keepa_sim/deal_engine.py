"""Browsing deals: the deal universe at a Keepa minute, filters, sorting, paging and snapshots.

A product is a deal for (price type, date range) at minute T when (keepa-api.md §5.4):
* Keepa updated it within the last 12 h (`lastUpdate ≥ T − 720`), and the deal data are those
  computed at that update;
* its value for the price type changed inside the date-range window (`currentSince ≥ T − window`)
  and moved the right way against the interval average (drop; rise with `isRisers`); with
  `isOutOfStock`/`isBackInStock` the value must instead have gone out of / back into stock
  within 24 h;
* it passes the selection's range and filter options.
`creationDate` = `currentSince` of the price type (when the current value was first seen).

Snapshots: `page()` serves pages of 150 from a snapshot per (API key, selection without page),
rebuilt when older than `deals.cache_ttl_s` token seconds. The matching is memoised per
(selection without sortType and page, Keepa minute) and shared by every sortType, which only
sorts, applies singleVariation and caps (memoised per selection and minute), so it is all a pure
function of (seed, simulator time); `truth()` reads the same function without the snapshot cache
and without cost.

Matching at a new minute is incremental: the static filters are evaluated once per selection,
and each product keeps its verdict while its last update is unchanged and no time window of its
match has expired (every time-dependent condition only turns false as time passes).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from keepa_sim import categories
from keepa_sim.catalogue import TYPE_SLOTS, USED_CONDITION_SLOT, USED_FAMILY, Product
from keepa_sim.clock import SimClock, keepa_minute
from keepa_sim.history import (
    DEAL_AVERAGE_WINDOWS,
    DEAL_CHANGE_WINDOWS,
    MINUTES_PER_DAY,
    average,
    current_run,
    summary,
)
from keepa_sim.selection import Selection

PAGE_SIZE = 150
RECENT_UPDATE_MINUTES = 12 * 60
CSV_TYPES = 36
USED_TYPES = frozenset({2, 9, 19, 20, 21, 22, 32})
_AMAZON, _RANK = 0, 3
_STOCK_WINDOW = MINUTES_PER_DAY
_STOCK_FLAGS = frozenset({"isOutOfStock", "isBackInStock"})
_NEVER = 1 << 62  # the expiry of a verdict that holds until the product's next update
# Results keep their serialised pages (~300 KB per page of 150 deals): keep few of them.
_RESULTS_KEPT = 4
_SNAPSHOTS_KEPT = 16
_MATCHED_KEPT = 4
_MATCHERS_KEPT = 8
_CONDITION_COMMENTS = {2: "Like new - packaging damaged", 3: "Very good - light wear",
                       4: "Good - visible wear", 5: "Acceptable - heavy wear"}


@dataclass(frozen=True, slots=True)
class TypeState:
    """One product's data for one csv type, as computed at its last update."""

    last_update: int
    current: int
    since: int
    previous: int
    averages: tuple[int, int, int, int]  # per date range (day uses 48 h)
    rank: int
    amazon: int
    condition: int  # warehouse condition of the current used offer (0 = none)


@dataclass(frozen=True, slots=True)
class Match:
    product: Product
    state: TypeState
    date_range: int  # the interval that qualified it (for dateRange 4)
    delta: int  # current − average (raw sign)
    delta_percent: int


class Candidate(NamedTuple):
    """A product that passes a selection's static filters (those independent of time)."""

    product: Product
    interval: int  # its update grid, for the per-minute scan
    offset: int
    root: int  # where it counts in categoryCount
    listed: bool  # passes the category filters (categoryCount counts it either way)


class Verdict(NamedTuple):
    """A candidate's match at its update `last_update`; holds for minutes in [valid_from,
    valid_until)."""

    last_update: int
    valid_from: int
    valid_until: int
    match: Match | None


@dataclass
class Matcher:
    """One selection's (without sortType/page) candidates and their latest verdicts."""

    candidates: list[Candidate]
    verdicts: list[Verdict | None]


@dataclass
class Matched:
    """The unsorted matches of one selection (without sortType/page) at one Keepa minute."""

    matches: list[Match]
    category_counts: list[tuple[int, int]]


@dataclass
class Result:
    """The deals of one selection at one Keepa minute, sorted and capped."""

    minute: int
    matches: list[Match]
    category_counts: list[tuple[int, int]]
    pages: dict[int, str] = field(default_factory=dict)  # page -> serialised `deals` object


@dataclass
class Snapshot:
    built_at_ms: int
    result: Result


class DealEngine:
    def __init__(self, clock: SimClock, catalogue_for, config: dict):
        """`catalogue_for(domain)` returns the Catalogue of a domain (None if not simulated)."""
        self.clock = clock
        self._catalogue_for = catalogue_for
        self._config = config
        self._lock = threading.Lock()
        self._states: dict[tuple[int, int, int], TypeState] = {}
        self._matchers: OrderedDict[str, Matcher] = OrderedDict()
        self._matched: OrderedDict[tuple[str, int], Matched] = OrderedDict()
        self._results: OrderedDict[tuple[str, int], Result] = OrderedDict()
        self._snapshots: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()

    def configure(self, config: dict, *, data_changed: bool) -> None:
        """New knobs drop sorted results and snapshots; new data also drop the matching."""
        with self._lock:
            self._config = config
            self._snapshots.clear()
            self._results.clear()
            if data_changed:
                self._states.clear()
                self._matchers.clear()
                self._matched.clear()

    # --- the API ---------------------------------------------------------------------------

    def page(self, api_key: str, selection: Selection) -> tuple[str, int]:
        """(serialised `deals` object, number of deals) of one page, from the key's snapshot."""
        knobs = self._config["deals"]
        now = self.clock.now_ms()
        cache_key = (api_key, selection.cache_key())
        with self._lock:
            snapshot = self._snapshots.get(cache_key)
            ttl = self.clock.token_seconds_ms(knobs["cache_ttl_s"])
            if snapshot is None or not 0 <= now - snapshot.built_at_ms < ttl:
                snapshot = Snapshot(now, self._result(selection, self._minute(now)))
                self._snapshots[cache_key] = snapshot
            _keep_recent(self._snapshots, cache_key, _SNAPSHOTS_KEPT)
            result = snapshot.result
            matches = result.matches[selection.page * PAGE_SIZE:(selection.page + 1) * PAGE_SIZE]
            text = result.pages.get(selection.page)
            if text is None:
                text = self._serialise_page(result, matches, selection)
                result.pages[selection.page] = text
        return text, len(matches)

    def truth(self, selection: Selection, since: int | None) -> dict:
        """What /deal would return over all pages right now (no snapshot, no cost)."""
        now = self.clock.now_ms()
        minute = self._minute(now)
        with self._lock:
            result = self._result(selection, minute)
        deals = [{"asin": m.product.asin, "lastUpdate": m.state.last_update,
                  "creationDate": m.state.since, "title": m.product.title}
                 for m in result.matches if since is None or m.state.last_update > since]
        return {"deals": deals, "count": len(deals), "now_keepa_minute": keepa_minute(now),
                "deals_minute": minute}

    def _minute(self, now_ms: int) -> int:
        return keepa_minute(now_ms) - self._config["faults"]["stale_deals"]["lag_min"]

    # --- matching --------------------------------------------------------------------------

    def _result(self, selection: Selection, minute: int) -> Result:
        memo_key = (selection.cache_key(), minute)
        result = self._results.get(memo_key)
        if result is None:
            matched = self._matches_at(selection, minute)
            knobs = self._config["deals"]
            matches = sorted(matched.matches,
                             key=_sort_key(selection.sort_type, knobs["deal_age_field"]))
            if "singleVariation" in selection.flags:
                matches = _one_per_parent(matches)
            result = Result(minute, matches[:knobs["max_results"]], matched.category_counts)
            self._results[memo_key] = result
        _keep_recent(self._results, memo_key, _RESULTS_KEPT)
        return result

    def _matches_at(self, selection: Selection, minute: int) -> Matched:
        match_key = selection.match_key()
        memo_key = (match_key, minute)
        matched = self._matched.get(memo_key)
        if matched is None:
            matched = self._match_all(self._matcher(selection, match_key), selection, minute)
            self._matched[memo_key] = matched
        _keep_recent(self._matched, memo_key, _MATCHED_KEPT)
        return matched

    def _matcher(self, selection: Selection, match_key: str) -> Matcher:
        matcher = self._matchers.get(match_key)
        if matcher is None:
            catalogue = self._catalogue_for(selection.domain)
            candidates = [
                Candidate(product, product.grid.interval, product.grid.offset,
                          categories.aggregate_root(product.root),
                          _category_ok(product, selection))
                for product in (catalogue.products if catalogue else ())
                if _static_ok(product, selection)]
            matcher = Matcher(candidates, [None] * len(candidates))
            self._matchers[match_key] = matcher
        _keep_recent(self._matchers, match_key, _MATCHERS_KEPT)
        return matcher

    def _match_all(self, matcher: Matcher, selection: Selection, minute: int) -> Matched:
        matches, counts = [], {}
        verdicts = matcher.verdicts
        for n, (product, interval, offset, root, listed) in enumerate(matcher.candidates):
            last_update = minute - (minute - offset) % interval  # UpdateGrid, inlined
            verdict = verdicts[n]
            if verdict is None or verdict[0] != last_update or not (
                    verdict[1] <= minute < verdict[2]):
                verdict = self._verdict(product, selection, minute, last_update)
                verdicts[n] = verdict
            match = verdict[3]
            if match is not None:
                counts[root] = counts.get(root, 0) + 1
                if listed:
                    matches.append(match)
        category_counts = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return Matched(matches, category_counts)

    def _verdict(self, product: Product, selection: Selection, minute: int,
                 last_update: int) -> Verdict:
        """The product's match at `minute` (static filters passed) and how long it holds.

        A non-match holds until the product's next update; a match until the first of its time
        windows (12 h since the update, the date range, the 24 h stock window) expires.
        """
        no_match = Verdict(last_update, minute, _NEVER, None)
        if last_update < minute - RECENT_UPDATE_MINUTES or last_update < product.tracking_since:
            return no_match
        state = self._state(product, selection.price_type, last_update)
        if state is None:
            return no_match
        if "mustHaveAmazonOffer" in selection.flags and state.amazon < 0:
            return no_match
        if "mustNotHaveAmazonOffer" in selection.flags and state.amazon >= 0:
            return no_match
        if selection.warehouse_conditions is not None:
            if selection.price_type not in USED_TYPES:
                return no_match
            if state.condition not in selection.warehouse_conditions:
                return no_match
        date_ranges = range(4) if selection.date_range == 4 else (selection.date_range,)
        for date_range in date_ranges:
            match = _qualify(product, state, selection, date_range, minute)
            if match is not None and _extremes_ok(product, selection, state):
                last = min(last_update + RECENT_UPDATE_MINUTES,
                           state.since + DEAL_CHANGE_WINDOWS[date_range])
                if selection.flags & _STOCK_FLAGS:
                    last = min(last, state.since + _STOCK_WINDOW)
                return Verdict(last_update, minute, last + 1, match)
        return no_match

    def _state(self, product: Product, csv_type: int, last_update: int) -> TypeState | None:
        """The product's data for csv_type at its update `last_update` (memoised)."""
        slot = TYPE_SLOTS.get(csv_type)
        if slot is None:
            return None
        key = (product.domain, product.index, csv_type)
        state = self._states.get(key)
        if state is not None and state.last_update == last_update:
            return state
        family, member = product.families[slot[0]], slot[1]
        segments = family.segments(last_update, DEAL_AVERAGE_WINDOWS[-1])
        current, since, previous = current_run(segments, member)
        state = TypeState(
            last_update=last_update, current=current, since=since, previous=previous,
            averages=tuple(average(segments, member, last_update - w)
                           for w in DEAL_AVERAGE_WINDOWS),
            rank=product.families[TYPE_SLOTS[_RANK][0]].current(last_update)[0],
            amazon=product.families[TYPE_SLOTS[_AMAZON][0]].current(last_update)[0],
            condition=_used_condition(product, last_update) if csv_type in USED_TYPES else 0)
        self._states[key] = state
        return state

    # --- output ----------------------------------------------------------------------------

    def _serialise_page(self, result: Result, matches: list[Match], selection: Selection) -> str:
        sign = -1 if self._config["deals"]["delta_sign"] == "positive_for_drop" else 1
        counts = result.category_counts
        deals = {
            "dr": [_deal_object(m.product, m.state, selection.price_type, sign) for m in matches],
            "drDateIndex": [],
            "categoryIds": [root for root, _count in counts],
            "categoryNames": [categories.name(root) for root, _count in counts],
            "categoryCount": [count for _root, count in counts],
        }
        return json.dumps(deals, separators=(",", ":"))


def _keep_recent(cache: OrderedDict, used_key, size: int) -> None:
    """Mark `used_key` as most recently used and evict the least recently used beyond size."""
    cache.move_to_end(used_key)
    while len(cache) > size:
        cache.popitem(last=False)


def _static_ok(product: Product, selection: Selection) -> bool:
    if selection.title_words:
        title = product.title.lower()
        if not all(word in title for word in selection.title_words):
            return False
    for name, values in selection.attributes:
        if product.attributes.get(name) not in values:
            return False
    flags = selection.flags
    if "isPrimeExclusive" in flags or ("filterErotic" in flags and product.erotic):
        return False
    if selection.min_rating >= 0 and product.rating < selection.min_rating:
        return False
    return not ("hasReviews" in flags and product.reviews <= 0)


def _category_ok(product: Product, selection: Selection) -> bool:
    ids = set(product.categories)
    if selection.include_categories is not None and not ids & selection.include_categories:
        return False
    return not ids & selection.exclude_categories


def _used_condition(product: Product, minute: int) -> int:
    return product.families[USED_FAMILY].current(minute)[USED_CONDITION_SLOT]


def _qualify(product: Product, state: TypeState, selection: Selection, date_range: int,
             minute: int) -> Match | None:
    flags = selection.flags
    if state.since < minute - DEAL_CHANGE_WINDOWS[date_range]:
        return None
    avg = state.averages[date_range]
    delta = state.current - avg if state.current >= 0 and avg >= 0 else 0
    percent = round(delta * 100 / avg) if avg > 0 and state.current >= 0 else 0
    stock_change = state.since >= minute - _STOCK_WINDOW
    if "isOutOfStock" in flags:
        if not (state.current < 0 <= state.previous and stock_change):
            return None
    elif "isBackInStock" in flags:
        if not (state.current >= 0 > state.previous and stock_change):
            return None
    elif not (delta > 0 if "isRisers" in flags else delta < 0):
        return None
    values = {"currentRange": state.current, "deltaRange": abs(delta),
              "deltaPercentRange": abs(percent),
              "deltaLastRange": (abs(state.current - state.previous)
                                 if state.current >= 0 and state.previous >= 0 else None),
              "salesRankRange": state.rank if state.rank >= 0 else None}
    for name, low, high in selection.ranges:
        value = values[name]
        if value is None or not low <= value <= high:
            return None
    return Match(product, state, date_range, delta, percent)


def _extremes_ok(product: Product, selection: Selection, state: TypeState) -> bool:
    wanted = selection.flags & {"isLowest", "isLowest90", "isHighest"}
    if not wanted or state.current < 0:
        return not wanted
    family, member = product.family_of(selection.price_type)
    for flag in wanted:
        days = 90 if flag == "isLowest90" else 365
        segments = family.segments(state.last_update, days * MINUTES_PER_DAY)
        _avg, _oos, lowest, highest = summary(segments, member,
                                              state.last_update - days * MINUTES_PER_DAY)
        bound = highest if flag == "isHighest" else lowest
        if bound is None or bound[1] != state.current:
            return False
    return True


def _sort_key(sort_type: int, age_field: str):
    inverted = sort_type < 0
    kind = abs(sort_type)
    unranked = float("inf")

    if kind == 1:
        def age(m: Match):
            created = m.state.last_update if age_field == "lastUpdate" else m.state.since
            return (-created, -m.state.last_update, m.product.asin)
        return age
    if kind == 3:
        def rank(m: Match):
            value = m.state.rank if m.state.rank >= 0 else None
            if value is None:
                return (1, unranked, m.product.asin)
            return (0, -value if inverted else value, m.product.asin)
        return rank

    def magnitude(m: Match):
        size = abs(m.delta if kind == 2 else m.delta_percent)
        return (size if inverted else -size, m.product.asin)
    return magnitude


def _one_per_parent(matches: list[Match]) -> list[Match]:
    seen: set[str] = set()
    kept = []
    for match in matches:
        parent = match.product.parent_asin
        if parent is not None:
            if parent in seen:
                continue
            seen.add(parent)
        kept.append(match)
    return kept


def _deal_object(product: Product, state: TypeState, price_type: int, sign: int) -> dict:
    """The Deal JSON of keepa-api.md §2.2, with all csv types evaluated at the last update."""
    minute = state.last_update
    current = [-1] * CSV_TYPES
    since = [-1] * CSV_TYPES
    delta_last = [0] * CSV_TYPES
    avg = [[-1] * CSV_TYPES for _ in DEAL_AVERAGE_WINDOWS]
    delta = [[0] * CSV_TYPES for _ in DEAL_AVERAGE_WINDOWS]
    percent = [[0] * CSV_TYPES for _ in DEAL_AVERAGE_WINDOWS]
    for family in product.families:
        segments = family.segments(minute, DEAL_AVERAGE_WINDOWS[-1])
        for member, csv_type in enumerate(family.types):
            value, value_since, previous = current_run(segments, member)
            current[csv_type], since[csv_type] = value, value_since
            if value >= 0 and previous >= 0:
                delta_last[csv_type] = sign * (value - previous)
            for n, window in enumerate(DEAL_AVERAGE_WINDOWS):
                mean = average(segments, member, minute - window)
                avg[n][csv_type] = mean
                if value >= 0 and mean > 0:
                    delta[n][csv_type] = sign * (value - mean)
                    percent[n][csv_type] = sign * round((value - mean) * 100 / mean)
    condition = _used_condition(product, minute) if price_type in USED_TYPES else 0
    return {
        "asin": product.asin,
        "parentAsin": product.parent_asin,
        "title": product.title,
        "rootCat": categories.aggregate_root(product.root),
        "categories": product.categories,
        "image": list(product.image.encode("ascii")),
        "creationDate": state.since,
        "lastUpdate": minute,
        "lightningEnd": 0,
        "warehouseCondition": condition,
        "warehouseConditionComment": _CONDITION_COMMENTS.get(condition),
        "current": current,
        "currentSince": since,
        "avg": avg,
        "delta": delta,
        "deltaPercent": percent,
        "deltaLast": delta_last,
        "minRating": -1,
    }

