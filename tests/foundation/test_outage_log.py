"""OutageLog: a dependency that keeps failing is logged once, reminded, and once back."""

import logging

import pytest

from keepa_deals.outage_log import OutageLog

pytestmark = pytest.mark.timeout(10)


def test_a_long_outage_is_logged_once_with_reminders_and_once_when_back(caplog):
    now = [0.0]
    outage = OutageLog(logging.getLogger("test.outage"), "beat: Redis", remind_every_s=300,
                       clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        for _ in range(1_000):  # an attempt a second for 1 000 s
            outage.failed(ConnectionError("Connection refused"))
            now[0] += 1
        outage.ok()
        outage.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5, messages  # down, 3 reminders (300, 600, 900 s), back
    assert "unavailable (Connection refused)" in messages[0]
    assert "still unavailable after 300 s and 301 attempts" in messages[1]
    assert messages[-1].startswith("beat: Redis is back after 1000.0 s")
