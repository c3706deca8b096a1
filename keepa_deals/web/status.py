"""The overview's data: the pipeline health plus the series its charts draw.

`overview_status(sources)` is what /api/status answers and what the overview page renders; it
never raises when Redis or the database is down (the health reports them as causes).
"""

from __future__ import annotations

import threading
import time

from flask import current_app

from keepa_deals import db
from keepa_deals.alerting.check import read_state
from keepa_deals.health import PipelineHealth, collect_health
from keepa_deals.web.formatting import utc
from keepa_deals.web.sources import SOURCE_ERRORS, Sources

CHART_HOURS = 24
CHART_CACHE_S = 60


def current_health(sources: Sources, now: float | None = None) -> PipelineHealth:
    """collect_health with the app's Redis client and this request's connection when usable."""
    try:
        client = sources.redis()
    except SOURCE_ERRORS:
        client = None
    try:
        conn = sources.db()
    except SOURCE_ERRORS:
        conn = None
    health = collect_health(sources.settings, redis=client, conn=conn, now=now)
    if health.redis_error:
        sources.redis_failed()
    return health


def overview_status(sources: Sources) -> dict:
    """Everything the overview shows, JSON-serialisable."""
    now = time.time()
    health = current_health(sources, now)
    status = health.to_dict()
    status["tasks"] = {v["task"]: v for v in status["verdicts"]}
    status["alerts"] = alert_summary(sources.settings)
    if status["alerts"]["delivery_failing"]:
        status["warnings"].append(status["alerts"]["delivery_failing"])
    status["charts"] = {
        "balance": (health.tokens or {}).get("history", []),
        "deals_per_hour": _deals_per_hour(sources, now) if not health.database_error else [],
        "tokens_per_task": _tokens_per_task(health.tokens),
    }
    return status


def alert_summary(settings) -> dict:
    """Where alerts go, the open incident, the last notification sent, and a sentence when
    delivery is failing (alerting.check keeps retrying it)."""
    state = read_state(settings)
    failing = state.delivery_failing if state else None
    sentence = None
    if failing:
        errors = "; ".join(f"{channel}: {error}" for channel, error in failing["errors"].items())
        sentence = (f"Alert delivery failing since {utc(failing['since'])} ({errors}); "
                    f"next try {utc(failing['next_try_at'])}.")
    return {"channels": list(settings.alerts.channels),
            "incident_since": state.incident_since if state else None,
            "last_sent": state.last_sent if state else None,
            "delivery_failing": sentence}


class HourlyCounts:
    """Deals first seen per hour over the last CHART_HOURS hours.

    A row's first_seen_at never changes, so the counts of completed hours are cached for
    CHART_CACHE_S (only the janitor's deletions can change them); the current hour is always
    counted live.
    """

    def __init__(self):
        self._completed: dict[int, int] = {}
        self._first_hour: int | None = None
        self._computed_at = float("-inf")
        self._guard = threading.Lock()

    def series(self, conn: db.Connection, now: float) -> list[list[int]]:
        """[[hour start (unix s), deals first seen in that hour], ...], oldest first."""
        current = int(now) // 3600 * 3600
        first = current - (CHART_HOURS - 1) * 3600
        with self._guard:
            if self._first_hour != first or time.monotonic() - self._computed_at > CHART_CACHE_S:
                self._completed = db.deals_first_seen_per_hour(conn, first, current)
                self._first_hour, self._computed_at = first, time.monotonic()
            completed = self._completed
        live = db.deals_added_since(conn, current)
        return [[hour, completed.get(hour, 0)] for hour in range(first, current, 3600)] \
            + [[current, live]]


def _deals_per_hour(sources: Sources, now: float) -> list[list[int]]:
    counts = current_app.extensions.setdefault("keepa_hourly_counts", HourlyCounts())
    try:
        return counts.series(sources.db(), now)
    except SOURCE_ERRORS:
        return []


def _tokens_per_task(tokens: dict | None) -> dict[str, list[list[int]]]:
    """{task: [[unix minute, tokens spent], ...]} from the bucket's ledger (last hour)."""
    if not tokens:
        return {}
    return {task: ledger.get("per_minute", []) for task, ledger in tokens["tasks"].items()}
