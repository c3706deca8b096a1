"""Diagnostics/send_test_alert.py: one test message through every configured channel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_ROOT / "Diagnostics" / "send_test_alert.py"


def send(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "KEEPA_"))}
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, check=False,
                          env={**base, "VAR_DIR": str(tmp_path / "var"), **env})


def test_it_reaches_the_webhook_and_the_mailbox(tmp_path, webhook, smtp_server):
    host, port, inbox = smtp_server
    result = send(tmp_path, ALERT_WEBHOOK_URL=webhook.url, ALERT_SMTP_HOST=host,
                  ALERT_SMTP_PORT=str(port), ALERT_EMAIL_TO="ops@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["webhook: sent", "email: sent"]
    assert webhook.requests[0].json()["kind"] == "test" and len(inbox.messages) == 1


def test_a_failing_channel_is_named_and_exits_1_without_its_secret(tmp_path, webhook):
    webhook.status = 404
    result = send(tmp_path, ALERT_WEBHOOK_URL=webhook.url)
    assert result.returncode == 1
    assert "webhook: FAILED" in result.stdout and "HTTP 404" in result.stdout
    assert "SECRET" not in result.stdout + result.stderr


def test_without_a_channel_it_says_what_to_set(tmp_path):
    result = send(tmp_path)
    assert result.returncode == 3
    assert "ALERT_WEBHOOK_URL" in result.stderr and "Traceback" not in result.stderr
