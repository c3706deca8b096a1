"""When to notify: one alert per incident, a reminder every ALERT_REPEAT_H while it lasts, one
recovery message — and notifications that failed to go out, retried with back-off.

`AlertState` is plain data (saved as JSON by alerting.check). `observe(state, status, cause,
fix, now, ...)` advances it with one health observation and returns the notice to send, if any:

    healthy / starting, no incident      nothing
    unhealthy, no incident               open one: "alert"
    unhealthy, incident, repeat elapsed  "reminder" (naming the cause now)
    healthy, incident                    close it: "recovery"
    starting, incident                   nothing (a restart is not a recovery)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from keepa_deals.alerting.channels import Notice

RETRY_FIRST_S = 15.0
RETRY_MAX_S = 600.0
MAX_PENDING = 10  # the oldest undelivered reminders give way to newer notices


@dataclass
class Pending:
    """A notice some channels have not taken yet."""

    notice: Notice
    channels: list[str]
    attempts: int = 0
    next_try_at: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class AlertState:
    incident_since: float | None = None
    cause: str | None = None
    notified_at: float | None = None  # the last alert or reminder queued
    checked_at: float | None = None  # the last observation (the watchdog's clue)
    pending: list[Pending] = field(default_factory=list)
    last_sent: dict | None = None  # {"kind", "at", "channels"}
    delivery_failing: dict | None = None  # {"since", "errors": {channel: error}}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AlertState:
        pending = [Pending(Notice(**p["notice"]), **{k: v for k, v in p.items()
                                                     if k != "notice"})
                   for p in data.get("pending", [])]
        return cls(**{**data, "pending": pending})


def observe(state: AlertState, status: str, cause: str, fix: str | None, *, now: float,
            repeat_s: float, dashboard: str) -> Notice | None:
    """Advance `state` with one health observation; the notice to queue, or None."""
    state.checked_at = now
    if status == "unhealthy":
        if state.incident_since is None:
            state.incident_since, state.cause, state.notified_at = now, cause, now
            return Notice("alert", status, cause, fix or "", now, dashboard)
        if now - (state.notified_at or 0) >= repeat_s:
            state.cause, state.notified_at = cause, now
            return Notice("reminder", status, cause, fix or "", state.incident_since, dashboard)
        return None
    if status == "healthy" and state.incident_since is not None:
        notice = Notice("recovery", status, f"recovered from: {state.cause}", "",
                        state.incident_since, dashboard)
        state.incident_since = state.cause = state.notified_at = None
        return notice
    return None


def queue(state: AlertState, notice: Notice, channels: tuple[str, ...], now: float) -> None:
    """Add `notice` for delivery through `channels` at once."""
    if not channels:
        return
    state.pending.append(Pending(notice, list(channels), next_try_at=now))
    while len(state.pending) > MAX_PENDING:
        oldest = next((p for p in state.pending if p.notice.kind == "reminder"),
                      state.pending[0])
        state.pending.remove(oldest)


def due(state: AlertState, now: float) -> list[Pending]:
    return [p for p in state.pending if p.next_try_at <= now]


def record(state: AlertState, pending: Pending, results: dict[str, str | None],
           now: float) -> None:
    """Take one delivery attempt's results: drop the channels that took it, back off the rest."""
    pending.attempts += 1
    pending.errors = {channel: error for channel, error in results.items() if error}
    delivered = [channel for channel, error in results.items() if error is None]
    pending.channels = [c for c in pending.channels if c not in delivered]
    if delivered:
        state.last_sent = {"kind": pending.notice.kind, "at": now, "channels": delivered}
    if pending.channels:
        pending.next_try_at = now + min(RETRY_MAX_S,
                                        RETRY_FIRST_S * 2 ** (pending.attempts - 1))
        since = (state.delivery_failing or {}).get("since", now)
        state.delivery_failing = {"since": since, "errors": pending.errors,
                                  "next_try_at": pending.next_try_at}
    else:
        state.pending.remove(pending)
        if not any(p.errors for p in state.pending):
            state.delivery_failing = None
