"""Diagnostics/health_report.py: the health verdicts on the command line, Redis up and down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from freshness_seed import REFILL_RATE, SEEDED, seed_freshness
from ops_helpers import PROJECT_ROOT, clean_environment

from keepa_deals import db, heartbeats
from keepa_deals.constants import TASK_UPSERT
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.redis_server import free_port
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(60)

SCRIPT = PROJECT_ROOT / "Diagnostics" / "health_report.py"


def health_report(tmp_path, redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = clean_environment(REDIS_URL=redis_url, VAR_DIR=tmp_path / "var",
                            DATABASE_PATH=tmp_path / "deals.db")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def record_ok_run(database) -> None:
    conn = db.connect(database)
    try:
        db.migrate(conn)
        run_id = db.start_run(conn, TASK_UPSERT, host=socket.gethostname(), pid=os.getpid(),
                              revision="abc")
        db.finish_run(conn, run_id, outcome="ok", deals_written=3, tokens_spent=5)
    finally:
        conn.close()


def test_flowing_pipeline_is_reported_healthy(tmp_path, redis_server, redis_client):
    record_ok_run(tmp_path / "deals.db")
    heartbeats.worker_heartbeat(redis_client, "celery@test")
    heartbeats.beat_heartbeat(redis_client)

    result = health_report(tmp_path, redis_server.url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("pipeline: OK — deals flowing")
    assert "worker celery@test" in result.stdout


def test_pipeline_without_worker_is_stalled_with_the_fix(tmp_path, redis_server, redis_client):
    record_ok_run(tmp_path / "deals.db")

    result = health_report(tmp_path, redis_server.url)

    assert result.returncode == 1
    assert result.stdout.startswith("pipeline: NOT HEALTHY — no worker heartbeat")
    assert "stalled" in result.stdout and "fix: Start the worker" in result.stdout


def test_json_report_carries_the_verdicts(tmp_path, redis_server, redis_client):
    record_ok_run(tmp_path / "deals.db")
    result = health_report(tmp_path, redis_server.url, "--json")
    facts = json.loads(result.stdout)
    assert result.returncode == 1 and facts["ok"] is False
    assert {v["task"] for v in facts["verdicts"]} == {"backfill_deals", "update_recent_deals"}


def test_report_carries_the_freshness_figures(tmp_path, redis_server, redis_client):
    now = int(time.time())
    conn = db.connect(tmp_path / "deals.db")
    try:
        db.migrate(conn)
        seed_freshness(conn, now)
    finally:
        conn.close()
    TokenBucket(redis_client).sync(TokenEnvelope(timestamp_ms=now * 1000, tokens_left=100,
                                                 refill_in_ms=30_000, refill_rate=REFILL_RATE))

    text = health_report(tmp_path, redis_server.url).stdout
    facts = json.loads(health_report(tmp_path, redis_server.url, "--json").stdout)["freshness"]

    later = pytest.approx(SEEDED["scan_eta_s"], abs=30)  # the report's clock runs on
    assert {key: facts[key] for key in SEEDED} == {**SEEDED, "scan_eta_s": later}
    assert facts["plan"]["verdict"].startswith("The plan keeps up")
    for line in ("freshness (last hour; lags in Keepa minutes):",
                 "  new deals: lag p50 1.5 min, p95 10.0 min (4 deals)",
                 "  changed deals: lag p50 10.0 min, p95 19.0 min (20 deals)",
                 "  enriched within 24 h: 70.0% of deals",
                 "  next full scan ends in 10 min (last complete scan: 10 pages)",
                 "  tokens: pages 60 (60.0%), new 8 (8.0%), changed 24 (24.0%), refresh 8 (8.0%)",
                 f"  plan: {facts['plan']['verdict']}"):
        assert line in text.splitlines(), f"{line!r} not in:\n{text}"


@pytest.mark.parametrize("output", ["text", "json"])
def test_unreachable_redis_is_unhealthy_without_password_or_traceback(tmp_path, output):
    url = f"redis://:Hidden-Pw-42@127.0.0.1:{free_port()}/0"
    args = ("--json",) if output == "json" else ()

    result = health_report(tmp_path, url, *args)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "Hidden-Pw-42" not in result.stdout + result.stderr
    if output == "json":
        assert "Redis" in json.loads(result.stdout)["redis_error"]
    else:
        assert result.stdout.startswith("pipeline: NOT HEALTHY — Redis unreachable")


def test_bad_configuration_is_one_line(tmp_path):
    env = clean_environment(KEEPA_DOMAIN="x", VAR_DIR=tmp_path / "var")
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "KEEPA_DOMAIN" in result.stderr
