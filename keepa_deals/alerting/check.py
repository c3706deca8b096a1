"""The alert check: judge health, decide (alerting.incidents), deliver (alerting.channels).

It runs
- from beat every ALERT_CHECK_S (the `check_alerts` task in alerting.task), so it works while
  nobody has a page open;
- from the worker's heartbeat thread when no check happened for WATCHDOG_CHECKS intervals: beat
  is dead, or Redis is down and beat cannot send anything (`watchdog`);
- once from a supervisor that gives a service up (`notify_gave_up`).

The state lives in VAR_DIR/alerts/state.json under an flock, not in Redis, so an alert about
Redis itself can be decided and remembered. With workers on several hosts, beat's checks run
on beat's host (its own queue, celery_app.beat_schedule) and each check also records its time
in Redis (ALERT_CHECKED_KEY): the watchdogs of the other hosts step in only when no host has
checked for a while, or Redis is unreachable. A failed delivery is kept and retried with back-off
(incidents.record) and shows on the dashboard (`read_state`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from keepa_deals.alerting import incidents
from keepa_deals.alerting.channels import Notice, deliver
from keepa_deals.alerting.incidents import AlertState
from keepa_deals.config import Settings
from keepa_deals.constants import ALERT_CHECKED_KEY
from keepa_deals.health import PipelineHealth, collect_health
from keepa_deals.heartbeats import PROCESS_STARTED_AT
from keepa_deals.redis_server import RedisUnavailable, connect, redis_url_for

log = logging.getLogger(__name__)
WATCHDOG_CHECKS = 3  # checks missed before the worker's watchdog checks by itself
REDIS_TIMEOUT_S = 2.0

Send = Callable[[Notice, object, tuple[str, ...]], dict[str, str | None]]


def state_path(settings: Settings) -> Path:
    return settings.var_dir / "alerts" / "state.json"


def read_state(settings: Settings) -> AlertState | None:
    """The saved state (for the dashboard), None when no check ever ran or it is unreadable."""
    try:
        return AlertState.from_dict(json.loads(state_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def check(settings: Settings, *, health: PipelineHealth | None = None,
          now: float | None = None, send: Send = deliver) -> AlertState:
    """One check: observe the health, queue what to say, deliver what is due."""
    now = time.time() if now is None else now
    health = health or collect_health(settings, now=now)
    with _locked_state(settings) as state:
        notice = incidents.observe(state, health.status, health.reason, health.fix, now=now,
                                   repeat_s=settings.alerts.repeat_h * 3600,
                                   dashboard=dashboard_link(settings))
        if notice is not None:
            log.warning("alert: %s", notice.title)
            incidents.queue(state, notice, settings.alerts.channels, now)
        _deliver_due(state, settings, now, send)
    _share_check_time(settings, now)
    return state


def watchdog(settings: Settings, *, now: float | None = None, send: Send = deliver) -> bool:
    """Check when beat's checks stopped (beat dead or unable to schedule); True if it did."""
    now = time.time() if now is None else now
    state = read_state(settings)
    checks = [state.checked_at if state else None, _shared_check_time(settings)]
    last = max((at for at in checks if at), default=None)
    if last is not None and now - last < WATCHDOG_CHECKS * settings.alerts.check_interval_s:
        return False
    if last is None and not _past_first_checks(settings, now):
        return False
    check(settings, now=now, send=send)
    return True


def notify_gave_up(settings: Settings, service: str, reason: str, *,
                   now: float | None = None, send: Send = deliver) -> None:
    """A supervisor gave `service` up: alert now (nothing else may be left to notice)."""
    now = time.time() if now is None else now
    cause = f"{service} was given up by its supervisor: {reason}"
    fix = (f"Read VAR_DIR/log/{service}.log for the cause of the crashes, fix it, then start "
           "again: ./start_celery.sh (or make run).")
    with _locked_state(settings) as state:
        if state.incident_since is None:
            state.incident_since, state.cause = now, cause
        state.notified_at = now
        incidents.queue(state, Notice("alert", "unhealthy", cause, fix, state.incident_since,
                                      dashboard_link(settings)), settings.alerts.channels, now)
        _deliver_due(state, settings, now, send)


def dashboard_link(settings: Settings) -> str:
    from keepa_deals.ops.services import dashboard_url

    return settings.alerts.dashboard_url or dashboard_url(settings)


def _deliver_due(state: AlertState, settings: Settings, now: float, send: Send) -> None:
    for pending in incidents.due(state, now):
        results = send(pending.notice, settings.alerts, tuple(pending.channels))
        incidents.record(state, pending, results, now)
        for channel, error in results.items():
            if error:
                log.warning("alert delivery through %s failed (%s); retrying with back-off",
                            channel, error)


def _share_check_time(settings: Settings, now: float) -> None:
    """Tell the other hosts' watchdogs that a check ran (best effort: Redis may be down)."""
    with contextlib.suppress(redis.RedisError, RedisUnavailable), _redis(settings) as client:
        client.set(ALERT_CHECKED_KEY, now)


def _shared_check_time(settings: Settings) -> float | None:
    """When any host last checked, None when unknown or Redis is unreachable."""
    try:
        with _redis(settings) as client:
            value = client.get(ALERT_CHECKED_KEY)
    except (redis.RedisError, RedisUnavailable):
        return None
    return float(value) if value else None


def _redis(settings: Settings) -> redis.Redis:
    return connect(redis_url_for(settings), socket_timeout=REDIS_TIMEOUT_S,
                   socket_connect_timeout=REDIS_TIMEOUT_S)


def _past_first_checks(settings: Settings, now: float) -> bool:
    """No check has ever run: the watchdog steps in once beat had time for a few."""
    return now - PROCESS_STARTED_AT >= WATCHDOG_CHECKS * settings.alerts.check_interval_s


@contextlib.contextmanager
def _locked_state(settings: Settings) -> Iterator[AlertState]:
    """The state under an exclusive flock, saved (atomically) when the block ends."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(settings) or AlertState()
        yield state
        try:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(state.to_dict()))
            os.replace(temporary, path)
        except OSError as exc:  # e.g. the disk is full: the next check decides again
            log.warning("alert state not saved (%s)", exc.strerror)
