"""The alert check end to end in this process: health → incident → webhook, with the state in
VAR_DIR; the watchdog; a supervisor giving up; the dashboard seeing failed deliveries."""

from __future__ import annotations

import os

import pytest

from keepa_deals.alerting import check as alert_check
from keepa_deals.config import load_settings
from keepa_deals.health import PipelineHealth
from keepa_deals.web.status import alert_summary


@pytest.fixture
def settings_for(tmp_path):
    def build(**env):
        values = {"VAR_DIR": str(tmp_path / "var"), "ALERT_CHECK_S": "30", **env}
        return load_settings(values, dotenv_path=os.devnull)

    return build


def health(status: str, reason: str = "Redis unreachable (connection refused)",
           fix: str | None = "Start Redis") -> PipelineHealth:
    return PipelineHealth(ok=status == "healthy", reason=reason, verdicts=[], generated_at=0,
                          status=status, fix=fix if status != "healthy" else None)


def test_an_incident_posts_once_then_its_recovery(settings_for, webhook):
    settings = settings_for(ALERT_WEBHOOK_URL=webhook.url)
    alert_check.check(settings, health=health("starting"), now=1000)
    assert webhook.requests == [], "a cold start is not an incident"
    for now in (1030, 1060, 1090):
        alert_check.check(settings, health=health("unhealthy"), now=now)
    alert_check.check(settings, health=health("healthy", "deals flowing"), now=1120)
    bodies = [r.json() for r in webhook.requests]
    assert [b["kind"] for b in bodies] == ["alert", "recovery"]
    assert bodies[0]["cause"] == "Redis unreachable (connection refused)"
    assert bodies[0]["fix"] == "Start Redis"


def test_a_failed_delivery_shows_on_the_dashboard_and_is_retried(settings_for, webhook):
    settings = settings_for(ALERT_WEBHOOK_URL=webhook.url)
    webhook.status = 503
    alert_check.check(settings, health=health("unhealthy"), now=1000)
    summary = alert_summary(settings)
    assert "Alert delivery failing" in summary["delivery_failing"]
    assert "HTTP 503" in summary["delivery_failing"] and "SECRET" not in str(summary)
    webhook.status = 200
    alert_check.check(settings, health=health("unhealthy"), now=1001)
    assert len(webhook.requests) == 1, "not retried before its back-off"
    alert_check.check(settings, health=health("unhealthy"), now=1000 + 60)
    assert [r.json()["kind"] for r in webhook.requests] == ["alert", "alert"]
    assert alert_summary(settings)["delivery_failing"] is None
    assert alert_summary(settings)["last_sent"]["kind"] == "alert"


def test_the_watchdog_checks_only_when_beats_checks_stopped(settings_for, webhook, monkeypatch):
    settings = settings_for(ALERT_WEBHOOK_URL=webhook.url)
    checked = []
    monkeypatch.setattr(alert_check, "collect_health",
                        lambda _settings, now: checked.append(now) or health("unhealthy"))
    alert_check.check(settings, health=health("healthy", "deals flowing"), now=1000)
    assert not alert_check.watchdog(settings, now=1000 + 3 * 30 - 1), "beat checks in time"
    assert alert_check.watchdog(settings, now=1000 + 3 * 30)
    assert checked == [1090] and webhook.requests[0].json()["kind"] == "alert"


def test_a_service_given_up_by_its_supervisor_alerts_at_once(settings_for, webhook):
    settings = settings_for(ALERT_WEBHOOK_URL=webhook.url)
    alert_check.notify_gave_up(settings, "worker", "it crashed 5 times in a row", now=1000)
    body = webhook.requests[0].json()
    assert body["kind"] == "alert" and "worker was given up" in body["cause"]
    assert "VAR_DIR/log/worker.log" in body["fix"]
    alert_check.check(settings, health=health("unhealthy"), now=1030)
    assert len(webhook.requests) == 1, "the same incident: no second alert"
