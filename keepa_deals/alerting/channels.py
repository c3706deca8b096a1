"""Delivering one notification through a channel: a webhook (JSON, Slack, Discord or ntfy
payload) or e-mail over SMTP (STARTTLS whenever the server offers it).

`deliver(notice, alerts)` tries every configured channel once and returns {channel: error or
None}; retrying is the caller's business (alerting.check). No error message carries a secret:
webhook URLs are shown by host only, SMTP passwords never.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import requests

from keepa_deals.config import AlertSettings, redact_webhook

TIMEOUT_S = 10.0
DISCORD_MAX_CHARS = 2000
KINDS = ("alert", "reminder", "recovery", "test")


class DeliveryError(RuntimeError):
    """A channel did not take the notification; the message is safe to show."""


@dataclass(frozen=True)
class Notice:
    """One notification: what happened (kind), the pipeline's status, why and what to do."""

    kind: str  # one of KINDS
    status: str  # health status: unhealthy / healthy (recovery) / test
    cause: str
    fix: str
    since: float  # unix time the incident began (a recovery: when it began too)
    dashboard: str

    @property
    def title(self) -> str:
        return {
            "alert": f"keepa-deals: NOT HEALTHY — {self.cause}",
            "reminder": f"keepa-deals: still NOT HEALTHY after {self._lasted()} — {self.cause}",
            "recovery": f"keepa-deals: healthy again after {self._lasted()}",
            "test": "keepa-deals: test notification",
        }[self.kind]

    def text(self) -> str:
        """The body for people: the title's facts, the fix and the dashboard link."""
        lines = [self.title, "", f"cause: {self.cause}"]
        if self.fix:
            lines.append(f"fix: {self.fix}")
        lines += [f"since: {_iso(self.since)}", f"dashboard: {self.dashboard}"]
        return "\n".join(lines)

    def to_json(self) -> dict:
        """The `json` webhook body: status, cause, fix, since (ISO 8601), dashboard, kind."""
        body = asdict(self)
        body["since"] = _iso(self.since)
        body["title"] = self.title
        return body

    def _lasted(self) -> str:
        minutes = max(0, round((datetime.now(UTC).timestamp() - self.since) / 60))
        return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def deliver(notice: Notice, alerts: AlertSettings,
            channels: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Send `notice` through each of `channels` (default: all configured); {channel: error}."""
    senders = {"webhook": send_webhook, "email": send_email}
    results: dict[str, str | None] = {}
    for channel in alerts.channels if channels is None else channels:
        try:
            senders[channel](notice, alerts)
            results[channel] = None
        except DeliveryError as exc:
            results[channel] = str(exc)
    return results


def webhook_request(notice: Notice, webhook_format: str) -> dict:
    """The keyword arguments of requests.post for this format: json= or data= plus headers."""
    if webhook_format == "slack":
        return {"json": {"text": f"*{notice.title}*\n{_body_after_title(notice)}"}}
    if webhook_format == "discord":
        return {"json": {"content": notice.text()[:DISCORD_MAX_CHARS]}}
    if webhook_format == "ntfy":
        urgent = notice.kind in ("alert", "reminder")
        return {"data": _body_after_title(notice).encode(),
                "headers": {"Title": notice.title.encode("ascii", "replace").decode(),
                            "Priority": "high" if urgent else "default",
                            "Tags": "warning" if urgent else "white_check_mark",
                            "Click": notice.dashboard}}
    return {"json": notice.to_json()}


def send_webhook(notice: Notice, alerts: AlertSettings) -> None:
    shown = redact_webhook(alerts.webhook_url)
    try:
        response = requests.post(alerts.webhook_url, timeout=TIMEOUT_S,
                                 **webhook_request(notice, alerts.webhook_format))
    except requests.RequestException as exc:
        raise DeliveryError(f"webhook {shown}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"webhook {shown}: HTTP {response.status_code}")


def send_email(notice: Notice, alerts: AlertSettings) -> None:
    message = EmailMessage()
    message["Subject"] = notice.title
    message["From"] = alerts.email_from
    message["To"] = ", ".join(alerts.email_to)
    message.set_content(notice.text())
    where = f"SMTP {alerts.smtp_host}:{alerts.smtp_port}"
    try:
        with smtplib.SMTP(alerts.smtp_host, alerts.smtp_port, timeout=TIMEOUT_S) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if alerts.smtp_user:
                smtp.login(alerts.smtp_user, alerts.smtp_password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError:
        raise DeliveryError(f"{where}: login refused for ALERT_SMTP_USER "
                            f"{alerts.smtp_user!r}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from None


def _body_after_title(notice: Notice) -> str:
    return notice.text().split("\n", 2)[2]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
