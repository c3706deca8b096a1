"""Send a test notification through every configured alert channel (webhook, e-mail).

Usage: .venv/bin/python Diagnostics/send_test_alert.py

Reads ALERT_* from .env and the environment like the services do, sends one message marked as a
test through each channel once (no retry), and prints each channel's result. Changes nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from Diagnostics._cli import fail, parser
from keepa_deals.alerting.channels import Notice, deliver
from keepa_deals.alerting.check import dashboard_link
from keepa_deals.config import ConfigError, load_settings

EXIT_SENT = 0
EXIT_FAILED = 1
EXIT_CONFIG = 3
_EPILOG = """\
exit codes:
  0  every configured channel took the test message
  1  a channel failed (the line for it says why)
  2  bad command-line usage
  3  the configuration is invalid, or no alert channel is configured
"""


def main(argv: list[str] | None = None) -> int:
    parser("send_test_alert.py", epilog=_EPILOG,
           description="Send a test notification through every configured alert channel."
           ).parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    if not settings.alerts.channels:
        return fail("no alert channel is configured: set ALERT_WEBHOOK_URL, or ALERT_SMTP_HOST "
                    "and ALERT_EMAIL_TO (see the README, Alerts and monitoring)", EXIT_CONFIG)
    notice = Notice("test", "test", "a test sent by Diagnostics/send_test_alert.py",
                    "nothing to do: alerts reach you", time.time(), dashboard_link(settings))
    results = deliver(notice, settings.alerts)
    for channel, error in results.items():
        print(f"{channel}: " + ("sent" if error is None else f"FAILED — {error}"))
    return EXIT_SENT if all(error is None for error in results.values()) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
