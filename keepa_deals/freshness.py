"""Freshness: how fast new and changed deals reach the table, where the tokens went, and
whether the Keepa plan keeps up with the query.

Inputs: the lag of each new or changed deal when it was written (freshness_samples, seconds of
Keepa's server time), the counters of the runs (runs.detail: tokens_pages, tokens_new,
tokens_changed, tokens_refresh, enriched_<reason>), the deals' enriched_at, the backfill cursor
and the server's refill rate. `collect_freshness()` reads them (read-only); `assess_plan()` is
the pure model behind the plain verdict. Per refill tick (a Keepa minute):

* the upserter goes first: its pages (measured) and the /product data of every new deal;
* the backfiller gets the rest, B; while deals wait for enrichment it gives at least
  SCAN_TOKEN_SHARE of B to pages, so enrichment of changed and stale deals gets at least
  (1 − SCAN_TOKEN_SHARE) × B;
* the plan keeps up when that covers the changed deals plus refreshing every deal once per
  ENRICH_MAX_AGE_H (an upper bound: a changed deal needs no refresh). Pages then get what
  enrichment leaves of B; otherwise SCAN_TOKEN_SHARE × B, and changed deals wait longer and
  longer for their product data (their prices do not);
* a full scan takes its pages × DEAL_PAGE_COST / page tokens per tick, and a changed deal's
  price lands within about one scan.

The rates are measured over the last hour, or since the first complete scan ended when that is
more recent (the first scan writes every deal of the query as changed, a burst the plan need
not sustain); the plan is judged once a scan has completed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

from keepa_deals import db
from keepa_deals.constants import (
    DEAL_PAGE_COST,
    DEAL_PAGE_SIZE,
    ENRICH_REASONS,
    KEEPA_PLAN_RATES,
    MAX_DEALS_PER_QUERY,
    SCAN_TOKEN_SHARE,
    TASK_BACKFILL,
    TASK_UPSERT,
)

WINDOW_S = 3600
LAG_KINDS = ("new", "changed")
TOKEN_USES = ("pages", *ENRICH_REASONS)


@dataclass(frozen=True)
class Lags:
    """Lags of the deals written in the window, in minutes of Keepa time (nearest rank)."""

    count: int
    p50_min: float | None
    p95_min: float | None


@dataclass(frozen=True)
class Demand:
    """What the query asks of the plan, per refill tick."""

    upserter_pages: float  # tokens
    new: float  # deals
    changed: float  # deals
    refresh: float  # deals
    tokens_per_deal: float = 1.0  # /product tokens per enriched deal

    def halved(self) -> Demand:
        """A query half as wide: half the deals; the upserter still reads its first pages."""
        return Demand(self.upserter_pages, self.new / 2, self.changed / 2, self.refresh / 2,
                      self.tokens_per_deal)


@dataclass(frozen=True)
class PlanOutlook:
    """What one plan size gives one query (tokens per tick; minutes are refill ticks)."""

    refill_rate: int
    scan_pages: int
    keeps_up: bool
    upserter_need: float  # tokens per tick the upserter takes first
    enrichment_need: float  # tokens per tick changed and stale deals need
    enrichment_capacity: float  # tokens per tick enrichment gets at least
    scan_minutes: float | None  # a full scan; None when no token is left for pages


@dataclass(frozen=True)
class PlanAssessment:
    current: PlanOutlook
    next_plan: PlanOutlook | None  # the next size of KEEPA_PLAN_RATES, None at the largest
    half_query: PlanOutlook
    verdict: str


@dataclass(frozen=True)
class Freshness:
    new: Lags
    changed: Lags
    enrich_max_age_h: float
    enriched_share: float | None  # of all deals, enriched within enrich_max_age_h
    tokens_last_hour: dict[str, int]  # by use: pages, new, changed, refresh
    token_shares: dict[str, float | None]  # the same as fractions of their sum
    last_scan_pages: int | None  # pages of the last complete scan
    scan_eta_s: float | None  # until the current scan reads its last page
    plan: PlanAssessment | None

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def lags(seconds: list[int]) -> Lags:
    """Count, p50 and p95 of lags given in seconds, as minutes rounded to 0.1."""
    ordered = sorted(seconds)
    p50, p95 = percentile(ordered, 0.5), percentile(ordered, 0.95)
    return Lags(len(ordered), None if p50 is None else round(p50 / 60, 1),
                None if p95 is None else round(p95 / 60, 1))


# --------------------------------------------------------------------------- the scan

def _whole(value) -> int:
    """`value` when it is a positive int (JSON state may hold anything), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _time(value) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Scan:
    """The backfill cursor (pipeline_state "backfill_cursor") as the dashboard reads it."""

    sweep_id: int
    page: int  # the next page of the current scan = pages read so far
    started_at: float | None
    last_pages: int  # of the last complete scan; 0 before one completed
    last_started_at: float | None
    last_finished_at: float | None

    @classmethod
    def from_cursor(cls, cursor: dict | None) -> Scan:
        cursor = cursor or {}
        return cls(_whole(cursor.get("sweep_id")), _whole(cursor.get("page")),
                   _time(cursor.get("sweep_started_at")), _whole(cursor.get("last_sweep_pages")),
                   _time(cursor.get("last_sweep_started_at")),
                   _time(cursor.get("last_sweep_finished_at")))

    def size(self, deal_count: int | None) -> int:
        """Deals of a full scan: the last complete scan's pages × DEAL_PAGE_SIZE, else the deal
        count (at most Keepa's MAX_DEALS_PER_QUERY), at least what this scan has read."""
        known = self.last_pages * DEAL_PAGE_SIZE if self.last_pages \
            else min(MAX_DEALS_PER_QUERY, deal_count or 0)
        return max(self.page * DEAL_PAGE_SIZE, known)

    def eta_s(self, pages: int, now: float) -> float | None:
        """Seconds until this scan reads the last of `pages`: at its own pace once it read a
        page, before that at the last complete scan's."""
        if self.page and self.started_at is not None and now > self.started_at:
            per_page = (now - self.started_at) / self.page
        elif self.last_pages and self.last_started_at is not None \
                and self.last_finished_at is not None:
            per_page = max(0.0, self.last_finished_at - self.last_started_at) / self.last_pages
        else:
            return None
        return round(max(0, pages - self.page) * per_page, 1)


# --------------------------------------------------------------------------- the model

def outlook(refill_rate: float, demand: Demand, scan_pages: int) -> PlanOutlook:
    """One plan size against one query: see the module docstring."""
    upserter = demand.upserter_pages + demand.new * demand.tokens_per_deal
    backfill = max(0.0, refill_rate - upserter)
    need = (demand.changed + demand.refresh) * demand.tokens_per_deal
    capacity = (1 - SCAN_TOKEN_SHARE) * backfill
    keeps_up = upserter < refill_rate and need <= capacity
    page_tokens = backfill - need if keeps_up else SCAN_TOKEN_SHARE * backfill
    scan_minutes = None if page_tokens <= 0 else round(scan_pages * DEAL_PAGE_COST / page_tokens,
                                                        1)
    return PlanOutlook(int(refill_rate), scan_pages, keeps_up, round(upserter, 1), round(need, 1),
                       round(capacity, 1), scan_minutes)


def assess_plan(refill_rate: int, demand: Demand, scan_pages: int) -> PlanAssessment:
    """The current plan, the next plan size and a query half as wide, with a plain verdict."""
    current = outlook(refill_rate, demand, scan_pages)
    bigger = next((rate for rate in KEEPA_PLAN_RATES if rate > refill_rate), None)
    next_plan = None if bigger is None else outlook(bigger, demand, scan_pages)
    half = outlook(refill_rate, demand.halved(), math.ceil(scan_pages / 2))
    return PlanAssessment(current, next_plan, half, _verdict(current, next_plan, half))


def _verdict(current: PlanOutlook, next_plan: PlanOutlook | None, half: PlanOutlook) -> str:
    if current.upserter_need >= current.refill_rate:
        text = (f"The plan does not keep up: the upserter (recent pages, new deals) alone needs "
                f"{current.upserter_need:g} of its {current.refill_rate} tokens/min, so nothing "
                "is left to scan for changes.")
    elif current.keeps_up:
        text = (f"The plan keeps up: enrichment needs {current.enrichment_need:g} of the "
                f"{current.enrichment_capacity:g} tokens/min it can have; a changed deal lands "
                f"within about one scan ({_minutes(current.scan_minutes)}).")
    else:
        text = (f"The plan does not keep up: enrichment needs {current.enrichment_need:g} "
                f"tokens/min but gets {current.enrichment_capacity:g}, so the product data of "
                "changed deals fall behind; their prices still land within about one scan "
                f"({_minutes(current.scan_minutes)}).")
    if next_plan is not None:
        text += f" At {next_plan.refill_rate} tokens/min: {_outcome(next_plan)}."
    return text + f" With a query half as wide: {_outcome(half)}."


def _outcome(outlook_: PlanOutlook) -> str:
    if outlook_.scan_minutes is None:
        return "still no tokens left to scan"
    state = "keeps up" if outlook_.keeps_up else "still behind"
    return f"{state}, changed deals within {_minutes(outlook_.scan_minutes)}"


def _minutes(minutes: float) -> str:
    return "<1 min" if minutes < 1 else f"~{minutes:g} min"


# --------------------------------------------------------------------------- gathering

def collect_freshness(conn: db.Connection, *, now: float, enrich_max_age_h: float,
                      refill_rate: int | None, refill_period_ms: int,
                      cursor: dict | None) -> Freshness:
    """The freshness figures of the last hour from the database (read-only; db.ERRORS or
    ValueError for an unreadable database or corrupt run JSON)."""
    since = int(now) - WINDOW_S
    enriched, total = db.enrichment_coverage(conn,
                                             enriched_since=int(now - enrich_max_age_h * 3600))
    tokens = _counters(conn, since)
    spent = {use: tokens[f"tokens_{use}"] for use in TOKEN_USES}
    spent_total = sum(spent.values())
    scan = Scan.from_cursor(cursor)
    scan_pages = -(-scan.size(total) // DEAL_PAGE_SIZE)
    first_scan_end = _first_scan_end(conn, scan)
    plan = None
    if refill_rate and scan_pages and first_scan_end is not None:
        demand = _demand(conn, since=max(since, first_scan_end), now=now, deals=total,
                         enrich_max_age_h=enrich_max_age_h, refill_period_ms=refill_period_ms)
        plan = assess_plan(refill_rate, demand, scan_pages)
    return Freshness(
        new=lags(db.freshness_lags(conn, "new", since=since)),
        changed=lags(db.freshness_lags(conn, "changed", since=since)),
        enrich_max_age_h=enrich_max_age_h,
        enriched_share=round(enriched / total, 4) if total else None,
        tokens_last_hour=spent,
        token_shares={use: round(n / spent_total, 4) if spent_total else None
                      for use, n in spent.items()},
        last_scan_pages=scan.last_pages or None,
        scan_eta_s=scan.eta_s(scan_pages, now) if scan_pages else None,
        plan=plan)


def _counters(conn: db.Connection, since: int, tasks=(TASK_UPSERT, TASK_BACKFILL)
              ) -> Counter:
    """The numeric runs.detail counters of the tasks' runs that ended since `since`, summed."""
    summed: Counter = Counter()
    for task in tasks:
        for detail in db.run_details_since(conn, task, since):
            if isinstance(detail, dict):
                summed.update({name: value for name, value in detail.items() if _whole(value)})
    return summed


def _first_scan_end(conn: db.Connection, scan: Scan) -> int | None:
    """When the first complete scan ended (the end of the first backfill run that finished a
    sweep; 0 when those runs were pruned); None while no scan has completed."""
    if not scan.last_pages:
        return None
    return db.first_run_end_with(conn, TASK_BACKFILL, "sweeps_finished") or 0


def _demand(conn: db.Connection, *, since: int, now: float, deals: int,
            enrich_max_age_h: float, refill_period_ms: int) -> Demand:
    """The rates measured since `since`, per refill tick."""
    ticks = max(1.0, (now - since) * 1000 / refill_period_ms)
    upserter = _counters(conn, since, (TASK_UPSERT,))
    counters = upserter + _counters(conn, since, (TASK_BACKFILL,))
    enriched = sum(counters[f"enriched_{reason}"] for reason in ENRICH_REASONS)
    enrich_tokens = sum(counters[f"tokens_{reason}"] for reason in ENRICH_REASONS)
    new, changed = (len(db.freshness_lags(conn, kind, since=since)) for kind in LAG_KINDS)
    return Demand(
        upserter_pages=upserter["tokens_pages"] / ticks, new=new / ticks,
        changed=changed / ticks,
        refresh=deals / max(1.0, enrich_max_age_h * 3600 * 1000 / refill_period_ms),
        tokens_per_deal=enrich_tokens / enriched if enriched else 1.0)
