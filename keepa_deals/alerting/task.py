"""Task keepa_deals.alerting.check_alerts: beat's periodic alert check (alerting.check.check)."""

from __future__ import annotations

import logging

from celery import shared_task

from keepa_deals.alerting.check import check
from keepa_deals.config import ConfigError, load_settings

log = logging.getLogger(__name__)
ALERT_TASK = "keepa_deals.alerting.check_alerts"


@shared_task(name=ALERT_TASK, ignore_result=True)
def check_alerts() -> dict:
    """Celery entry point: one alert check; returns the incident and delivery state."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        log.error("alert check not run: %s", exc)
        return {"error": str(exc)}
    state = check(settings)
    return {"incident_since": state.incident_since, "pending": len(state.pending)}
