"""/metrics: the pipeline in Prometheus text format (prometheus_client).

Every figure is read from Redis and the database at scrape time by one collector, never counted
in this process, so it is right however many worker processes there are. Metric names start
with `keepa_deals_`; docs/prometheus-alerts.yml alerts on them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from keepa_deals.health import STATES, STATUSES, PipelineHealth
from keepa_deals.keepa_stats import read_responses
from keepa_deals.web.sources import SOURCE_ERRORS, Sources
from keepa_deals.web.status import alert_summary, current_health

PREFIX = "keepa_deals_"
bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(current_app.extensions["keepa_sources"]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class PipelineCollector:
    """A prometheus_client collector over the dashboard's sources (see the module docstring)."""

    def __init__(self, sources: Sources):
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        health = current_health(self.sources, now)
        yield from _health_metrics(health)
        yield from _token_metrics(health.tokens)
        yield from _freshness_metrics(health.freshness)
        yield from self._run_metrics(now)
        yield from self._response_metrics()
        failing = alert_summary(self.sources.settings)["delivery_failing"]
        yield _gauge("alert_delivery_failing", "1 while alert notifications fail to go out",
                     1 if failing else 0)

    def _run_metrics(self, now: float) -> Iterator[Metric]:
        written = CounterMetricFamily(PREFIX + "deals_written", "Deals written by task runs",
                                      labels=["task"])
        tokens = CounterMetricFamily(PREFIX + "tokens_spent", "Keepa tokens spent by task runs",
                                     labels=["task"])
        runs = CounterMetricFamily(PREFIX + "runs", "Task runs recorded, by outcome",
                                   labels=["task", "outcome"])
        since_ok = GaugeMetricFamily(PREFIX + "seconds_since_last_ok_run",
                                     "Seconds since the task's last run ended ok",
                                     labels=["task"])
        try:
            rows = self.sources.db().execute(
                "SELECT task, outcome, COUNT(*), CAST(COALESCE(SUM(deals_written), 0) AS BIGINT), "
                "CAST(COALESCE(SUM(tokens_spent), 0) AS BIGINT), MAX(ended_at) FROM runs "
                "GROUP BY task, outcome").fetchall()
        except SOURCE_ERRORS:
            rows = []
        totals: dict[str, list[int]] = {}
        for task, outcome, count, deals, spent, last_end in rows:
            runs.add_metric([task, outcome], count)
            total = totals.setdefault(task, [0, 0])
            total[0] += deals
            total[1] += spent
            if outcome == "ok" and last_end is not None:
                since_ok.add_metric([task], max(0.0, now - last_end))
        for task, (deals, spent) in sorted(totals.items()):
            written.add_metric([task], deals)
            tokens.add_metric([task], spent)
        yield from (written, tokens, runs, since_ok)

    def _response_metrics(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(PREFIX + "keepa_responses",
                                        "Keepa responses by endpoint and HTTP status "
                                        "(status none: no HTTP answer)",
                                        labels=["endpoint", "status"])
        try:
            counts = read_responses(self.sources.redis())
        except SOURCE_ERRORS:
            counts = {}
        for (endpoint, status), count in sorted(counts.items()):
            responses.add_metric([endpoint, status], count)
        yield responses


def _health_metrics(health: PipelineHealth) -> Iterator[Metric]:
    yield _gauge("up", "1 while deals are flowing (what /healthz answers 200 for)",
                 1 if health.ok else 0)
    status = GaugeMetricFamily(PREFIX + "status", "The pipeline's status (1 for the current)",
                               labels=["status"])
    for name in STATUSES:
        status.add_metric([name], 1 if health.status == name else 0)
    yield status
    yield _gauge("redis_up", "1 while Redis answers", 0 if health.redis_error else 1)
    yield _gauge("database_up", "1 while the database answers",
                 0 if health.database_error else 1)
    if health.deal_count is not None:
        yield _gauge("deals", "Deals in the table", health.deal_count)
    task_state = GaugeMetricFamily(PREFIX + "task_state",
                                   "Each task's state (1 for the current)",
                                   labels=["task", "state"])
    for verdict in health.verdicts:
        for state in STATES:
            task_state.add_metric([verdict.task, state], 1 if verdict.state == state else 0)
    yield task_state
    workers = GaugeMetricFamily(PREFIX + "worker_heartbeat_age_seconds",
                                "Seconds since each worker's heartbeat", labels=["worker"])
    for worker in health.workers:
        workers.add_metric([str(worker.get("name"))], max(0.0, health.generated_at
                                                          - float(worker.get("ts") or 0)))
    yield workers
    if health.beat:
        yield _gauge("beat_heartbeat_age_seconds", "Seconds since beat's heartbeat",
                     max(0.0, health.generated_at - float(health.beat.get("ts") or 0)))
    leases = GaugeMetricFamily(PREFIX + "lease_held",
                               "1 per held lease, labelled with its holder",
                               labels=["lock", "host", "pid", "holder_alive"])
    for lock in health.locks:
        leases.add_metric([lock["name"], str(lock.get("host")), str(lock.get("pid")),
                           str(lock.get("holder_alive")).lower()], 1)
    yield leases


def _token_metrics(tokens: dict | None) -> Iterator[Metric]:
    if not tokens:
        return
    if tokens.get("balance") is not None:
        yield _gauge("token_balance", "Keepa tokens left, as last reported by Keepa",
                     tokens["balance"])
    if tokens.get("refill_rate") is not None:
        yield _gauge("token_refill_rate", "Keepa tokens refilled per minute",
                     tokens["refill_rate"])
    yield _gauge("tokens_reserved", "Tokens reserved by requests in flight",
                 tokens.get("reserved") or 0)


def _freshness_metrics(freshness: dict | None) -> Iterator[Metric]:
    if not freshness:
        return
    lag = GaugeMetricFamily(PREFIX + "deal_lag_minutes",
                            "Lag of the deals written in the last hour (Keepa minutes)",
                            labels=["kind", "quantile"])
    for kind in ("new", "changed"):
        for quantile, field in (("0.5", "p50_min"), ("0.95", "p95_min")):
            value = (freshness.get(kind) or {}).get(field)
            if value is not None:
                lag.add_metric([kind, quantile], value)
    yield lag
    if freshness.get("enriched_share") is not None:
        yield _gauge("enriched_share", "Share of deals enriched within ENRICH_MAX_AGE_H",
                     freshness["enriched_share"])


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)
