"""When to notify: one alert per incident, reminders, one recovery, retries with back-off."""

from __future__ import annotations

import itertools
import json

from keepa_deals.alerting import incidents
from keepa_deals.alerting.incidents import AlertState

REPEAT_S = 6 * 3600
LINK = "http://127.0.0.1:5000/"


def observe(state, status, cause="Redis unreachable", now=0.0):
    return incidents.observe(state, status, cause, "start Redis", now=now, repeat_s=REPEAT_S,
                             dashboard=LINK)


def test_one_alert_per_incident_reminders_while_it_lasts_and_one_recovery():
    state = AlertState()
    assert observe(state, "healthy", now=0) is None
    alert = observe(state, "unhealthy", now=100)
    assert (alert.kind, alert.cause, alert.fix, alert.since) == (
        "alert", "Redis unreachable", "start Redis", 100)
    kinds = [observe(state, "unhealthy", now=100 + t) for t in range(30, REPEAT_S, 600)]
    assert kinds == [None] * len(kinds), "no second alert within ALERT_REPEAT_H"
    reminder = observe(state, "unhealthy", cause="no worker heartbeat", now=100 + REPEAT_S)
    assert (reminder.kind, reminder.cause, reminder.since) == (
        "reminder", "no worker heartbeat", 100)
    recovery = observe(state, "healthy", now=100 + REPEAT_S + 60)
    assert recovery.kind == "recovery" and "no worker heartbeat" in recovery.cause
    assert recovery.since == 100
    assert observe(state, "healthy", now=100 + REPEAT_S + 90) is None
    assert observe(state, "unhealthy", now=100 + REPEAT_S + 120).kind == "alert", "a new one"


def test_starting_is_not_an_incident_and_a_restart_is_not_a_recovery():
    state = AlertState()
    assert observe(state, "starting", now=0) is None and state.incident_since is None
    observe(state, "unhealthy", now=10)
    assert observe(state, "starting", now=20) is None
    assert state.incident_since == 10, "the incident stays open while the services restart"
    assert observe(state, "healthy", now=30).kind == "recovery"


def test_a_failed_delivery_is_retried_with_back_off_per_channel_and_then_forgotten():
    state = AlertState()
    notice = observe(state, "unhealthy", now=0)
    incidents.queue(state, notice, ("webhook", "email"), now=0)
    [pending] = incidents.due(state, 0)
    incidents.record(state, pending, {"webhook": "webhook http://h/***: HTTP 500",
                                      "email": None}, now=0)
    assert pending.channels == ["webhook"], "e-mail took it: never sent twice"
    assert state.last_sent == {"kind": "alert", "at": 0, "channels": ["email"]}
    assert state.delivery_failing["errors"] == {"webhook": "webhook http://h/***: HTTP 500"}
    tries = [pending.next_try_at]
    for _attempt in range(1, 8):
        assert incidents.due(state, tries[-1] - 0.1) == [], "not before its back-off"
        incidents.record(state, pending, {"webhook": "HTTP 500"}, now=tries[-1])
        tries.append(pending.next_try_at)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps == sorted(gaps) and gaps[0] == 2 * incidents.RETRY_FIRST_S
    assert max(gaps) == incidents.RETRY_MAX_S
    incidents.record(state, pending, {"webhook": None}, now=tries[-1])
    assert state.pending == [] and state.delivery_failing is None


def test_the_state_survives_a_round_trip_through_json():
    state = AlertState()
    incidents.queue(state, observe(state, "unhealthy", now=5), ("webhook",), now=5)
    again = AlertState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
