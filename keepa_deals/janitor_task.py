"""Task keepa_deals.janitor.remove_stale_deals: the Celery wiring of janitor.remove_stale_deals.

Each run asks the health module whether ingestion is healthy (deals flowing, worker and beat
alive, nothing stalled) and hands that verdict to the janitor, which deletes nothing otherwise
(FAILURES D11). The run is recorded like the pipeline's: outcome "ok" with the number removed,
or "skipped" with the reason the janitor refused.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

from celery import shared_task

from keepa_deals import db, health, heartbeats, janitor
from keepa_deals.config import ConfigError
from keepa_deals.constants import TASK_JANITOR
from keepa_deals.host import host_name
from keepa_deals.redis_server import RedisUnavailable
from keepa_deals.task_runtime import PipelineServices, process_services

log = logging.getLogger(__name__)


def run_janitor(services: PipelineServices, *, now: int | None = None) -> dict:
    """One janitor run with the current health verdict; returns what it did (never raises)."""
    settings = services.settings
    now = int(time.time()) if now is None else now
    verdict = health.collect_health(settings, redis=services.redis, now=now)
    try:
        conn = db.connect(settings.database)
        try:
            db.ensure_schema(conn)
            run_id = db.start_run(conn, TASK_JANITOR, host=host_name(),
                                  pid=os.getpid(), revision=heartbeats.code_revision())
            result = janitor.remove_stale_deals(
                conn, max_age_s=round(settings.janitor_max_age_h * 3600), now=now,
                ingestion_healthy=verdict.ok)
            outcome = "skipped" if result.refused else "ok"
            db.finish_run(conn, run_id, outcome=outcome, deals_written=0, tokens_spent=0,
                          error=result.refused, detail=asdict(result))
        finally:
            conn.close()
    except (*db.ERRORS, db.MigrationError) as exc:
        log.error("janitor not run: database error (%s: %s)", type(exc).__name__, exc)
        return {"outcome": "failed", "error": f"database error ({type(exc).__name__}: {exc})"}
    log.info("janitor %s: %d stale deals removed%s (health: %s)", outcome, result.removed,
             f" ({result.refused})" if result.refused else "", verdict.reason)
    return {"outcome": outcome, **asdict(result)}


@shared_task(name="keepa_deals.janitor.remove_stale_deals", ignore_result=True)
def remove_stale_deals() -> dict:
    """Celery entry point: one janitor run."""
    try:
        services = process_services()
    except (ConfigError, RedisUnavailable) as exc:
        log.error("janitor not run: %s", exc)
        return {"outcome": "failed", "error": str(exc)}
    return run_janitor(services)
