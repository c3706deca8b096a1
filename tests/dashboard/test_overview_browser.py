"""Browser tests of the overview: the count, in-place refresh, a dead lease holder, phone width."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dashboard_helpers import insert_deals, synthetic_deals
from freshness_seed import REFILL_RATE, SEEDED, seed_freshness
from support import wait_until

from keepa_deals import db
from keepa_deals.constants import BACKFILL_LOCK, TASK_BACKFILL
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.freshness import collect_freshness
from keepa_deals.tokens import TokenBucket

pytestmark = [pytest.mark.timeout(60), pytest.mark.browser]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def select_count(settings) -> int:
    with sqlite3.connect(settings.database_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM deals").fetchone()[0]


def shown_count(page) -> int:
    return int(page.locator("#deal-count").inner_text().replace(",", ""))


def test_overview_count_equals_select_count_and_refreshes_in_place(
        dashboard, seeded, settings, page, screenshot):
    page.goto(dashboard + "/")
    assert shown_count(page) == select_count(settings) == 137
    screenshot("overview")

    page.evaluate("window.__sameDocument = true")
    insert_deals(seeded, synthetic_deals(1_250, now=int(time.time()), start=10_000))
    wait_until(lambda: shown_count(page) == select_count(settings) == 1_387, 10,
               "the overview to show the new count")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert page.locator("#deal-count").inner_text() == "1,387"


def test_overview_fits_a_phone_screen(dashboard, seeded, page, screenshot):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(dashboard + "/")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the overview is {overflow}px wider than a phone screen"
    screenshot("overview-phone")
    page.goto(dashboard + "/deals")
    screenshot("deals-phone")
    assert page.locator("a[data-sort=price]").is_visible(), "sorting must stay usable"


def shown(page, path: str) -> str:
    """The text of the overview's element bound to status `path`."""
    return page.locator(f'[data-field="{path}"]').inner_text()


def test_overview_shows_the_freshness_the_database_holds(
        dashboard, database, settings, redis_client, page, screenshot):
    now = int(time.time())
    seed_freshness(database, now)
    TokenBucket(redis_client, refill_period_ms=settings.refill_period_ms).sync(TokenEnvelope(
        timestamp_ms=now * 1000, tokens_left=100, refill_in_ms=30_000, refill_rate=REFILL_RATE))
    expected = collect_freshness(database, now=now, enrich_max_age_h=settings.enrich_max_age_h,
                                 refill_rate=REFILL_RATE, cursor=db.get_state(
                                     database, "backfill_cursor"),
                                 refill_period_ms=settings.refill_period_ms)
    page.goto(dashboard + "/")
    assert [shown(page, f"freshness.new.{key}") for key in ("p50_min", "p95_min", "count")] \
        == ["1.5 min", "10.0 min", "4"]
    assert [shown(page, f"freshness.changed.{key}") for key in ("p50_min", "p95_min", "count")] \
        == ["10.0 min", "19.0 min", "20"]
    assert shown(page, "freshness.enrich_max_age_h") == "24 h"
    assert shown(page, "freshness.enriched_share") == "70.0%"
    assert shown(page, "freshness.scan_eta_s") == "10 min"
    assert shown(page, "freshness.last_scan_pages") == "10"
    assert [(shown(page, f"freshness.tokens_last_hour.{use}"),
             shown(page, f"freshness.token_shares.{use}"))
            for use in ("pages", "new", "changed", "refresh")] == \
        [("60", "60.0%"), ("8", "8.0%"), ("24", "24.0%"), ("8", "8.0%")]
    assert shown(page, "freshness.plan.verdict") == expected.plan.verdict
    assert expected.plan.verdict.startswith("The plan keeps up")
    screenshot("overview-freshness")
    api = requests.get(dashboard + "/api/status", timeout=10).json()["freshness"]
    assert {key: api[key] for key in SEEDED} == \
        {**SEEDED, "scan_eta_s": pytest.approx(SEEDED["scan_eta_s"], abs=30)}
    assert api["plan"]["verdict"] == expected.plan.verdict

    with db.transaction(database):  # four more new deals, 20 min late: refreshed in place
        database.executemany("INSERT INTO freshness_samples (recorded_at, kind, lag_s) "
                             "VALUES (?, 'new', 1200)", [(int(time.time()),)] * 4)
    in_hour = database.execute("SELECT COUNT(*) FROM freshness_samples WHERE kind = 'new' "
                               "AND recorded_at >= ?", (int(time.time()) - 3600,)).fetchone()[0]
    wait_until(lambda: shown(page, "freshness.new.count") == str(in_hour) == "8", 10,
               "the overview to count the new samples")
    assert shown(page, "freshness.new.p50_min") == "10.0 min"  # rank 4 of 8: 600 s
    assert shown(page, "freshness.new.p95_min") == "20.0 min"  # rank 8 of 8: 1200 s


@pytest.fixture
def fake_worker(settings, tmp_path):
    """fake_worker(ttl_s) -> a subprocess holding the backfill lease, beating, 'running'."""
    processes = []

    def start(ttl_s: float) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake_worker.py")),
             settings.redis_url, BACKFILL_LOCK, TASK_BACKFILL, str(ttl_s)],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        processes.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_task_with_a_killed_lease_holder_turns_stalled_within_one_ttl(
        dashboard, database, page, fake_worker, screenshot):
    ttl_s = 6.0
    worker = fake_worker(ttl_s)
    card = page.locator(f"#task-{TASK_BACKFILL}")
    page.goto(dashboard + "/")
    wait_until(lambda: "running" in card.locator("h3").inner_text(), 10, "the task to show running")
    assert "pid" in card.inner_text()

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    killed_at = time.monotonic()
    wait_until(lambda: "stalled" in card.locator("h3").inner_text(), ttl_s, "the stalled verdict")
    assert time.monotonic() - killed_at < ttl_s
    cause = card.locator(".cause").inner_text()
    assert "held by a dead worker" in cause and f"pid {worker.pid}" in cause
    assert "expires by itself" in cause  # the fix
    screenshot("overview-stalled")

    status = requests.get(dashboard + "/api/status", timeout=10).json()
    verdict = status["tasks"][TASK_BACKFILL]
    assert verdict["state"] == "stalled" and BACKFILL_LOCK in verdict["cause"]
    healthz = requests.get(dashboard + "/healthz", timeout=10)
    assert healthz.status_code == 503 and "dead worker" in healthz.json()["reason"]
