"""Notifications over a real HTTP receiver and a real SMTP server, in each payload shape; no
secret in any message or error."""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from keepa_deals.alerting.channels import Notice, deliver
from keepa_deals.config import AlertSettings

NOTICE = Notice("alert", "unhealthy", "Keepa rejects the API key (invalid key)",
                "Set a valid KEEPA_API_KEY", time.time() - 120, "http://127.0.0.1:5000/")


def test_the_json_webhook_carries_status_cause_fix_since_and_the_dashboard(webhook):
    results = deliver(NOTICE, AlertSettings(webhook_url=webhook.url))
    assert results == {"webhook": None}
    [received] = webhook.requests
    body = received.json()
    assert {k: body[k] for k in ("kind", "status", "cause", "fix", "dashboard")} == {
        "kind": "alert", "status": "unhealthy", "cause": NOTICE.cause, "fix": NOTICE.fix,
        "dashboard": NOTICE.dashboard}
    assert body["since"].endswith("+00:00") and "NOT HEALTHY" in body["title"]


@pytest.mark.parametrize(("webhook_format", "field"), [("slack", "text"), ("discord", "content")])
def test_slack_and_discord_get_their_text_field(webhook, webhook_format, field):
    deliver(NOTICE, AlertSettings(webhook_url=webhook.url, webhook_format=webhook_format))
    body = webhook.requests[0].json()
    assert list(body) == [field]
    assert NOTICE.cause in body[field] and NOTICE.fix in body[field]
    assert NOTICE.dashboard in body[field]


def test_ntfy_gets_the_text_as_body_and_the_title_in_a_header(webhook):
    deliver(NOTICE, AlertSettings(webhook_url=webhook.url, webhook_format="ntfy"))
    received = webhook.requests[0]
    assert received.headers["Title"].startswith("keepa-deals: NOT HEALTHY")
    assert received.headers["Priority"] == "high" and received.headers["Click"]
    assert NOTICE.fix in received.body.decode()


def test_a_refusing_webhook_is_reported_without_its_secret_path(webhook):
    webhook.status = 500
    results = deliver(NOTICE, AlertSettings(webhook_url=webhook.url))
    assert "HTTP 500" in results["webhook"]
    assert "SECRET" not in results["webhook"] and "/hooks" not in results["webhook"]


def test_email_arrives_with_the_cause_and_the_fix(smtp_server):
    host, port, inbox = smtp_server
    alerts = AlertSettings(smtp_host=host, smtp_port=port, email_to=("ops@example.com",),
                           email_from="collector@example.com")
    assert deliver(NOTICE, alerts) == {"email": None}
    [envelope] = inbox.messages
    assert envelope.rcpt_tos == ["ops@example.com"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == NOTICE.title
    text = message.get_content()
    assert NOTICE.cause in text and NOTICE.fix in text and NOTICE.dashboard in text


def test_an_unreachable_smtp_server_is_a_delivery_error_without_the_password():
    alerts = AlertSettings(smtp_host="127.0.0.1", smtp_port=9, email_to=("ops@example.com",),
                           smtp_user="ops", smtp_password="s3cret-pw")
    error = deliver(NOTICE, alerts)["email"]
    assert error.startswith("SMTP 127.0.0.1:9:") and "s3cret-pw" not in error
