"""Acceptance: the whole system (the runner) started with a Keepa key the server rejects and a
webhook configured posts an alert naming the key within 90 s, without the key in it; with
LOG_FORMAT=json every line every process writes is one JSON object, and none holds the key."""

from __future__ import annotations

import json
import signal
import time

import pytest
from ops_helpers import ForegroundRunner, clean_environment, copy_project
from support import launch_simulator, wait_until

from keepa_deals.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
REJECTED_KEY = "Rj3" + "q" * 58 + "X9z"  # well-formed: the server, not the config, refuses it
ALERT_DEADLINE_S = 90


def test_a_rejected_key_is_alerted_within_90_s_and_logs_are_json(tmp_path, webhook):
    sim = launch_simulator(tmp_path, {"catalogue": {"n_products": 300, "domains": [1]}})
    project = copy_project(tmp_path / "project")
    env = clean_environment(
        KEEPA_API_KEY=REJECTED_KEY, KEEPA_API_URL=sim.url, KEEPA_SIM_PORT=free_port(),
        DASHBOARD_PORT=free_port(), ALERT_WEBHOOK_URL=webhook.url, LOG_FORMAT="json",
        BACKFILL_INTERVAL_S=5, UPSERT_INTERVAL_S=5, LOCK_TTL_S=5, TASK_SLICE_S=8)
    started = time.monotonic()
    runner = ForegroundRunner(project, env)
    try:
        wait_until(lambda: webhook.requests or runner.process.poll() is not None,
                   ALERT_DEADLINE_S, "the alert POST")
        assert runner.process.poll() is None, runner.output()[-3000:]
        arrived_s = time.monotonic() - started
        body = webhook.requests[0].json()
        assert body["kind"] == "alert" and body["status"] == "unhealthy"
        assert "key" in body["cause"].lower() and "KEEPA_API_KEY" in body["fix"]
        assert REJECTED_KEY not in webhook.requests[0].body.decode()
        assert arrived_s <= ALERT_DEADLINE_S
    finally:
        runner.process.send_signal(signal.SIGTERM)
        runner.process.wait(timeout=60)
        sim.stop()
    lines = [line for line in runner.lines if line.strip()]
    entries = [json.loads(line) for line in lines]  # each line one JSON object
    assert all({"time", "level", "process", "message"} <= set(e) for e in entries)
    assert {"runner", "worker", "beat", "dashboard"} <= {e["process"] for e in entries}
    assert any(e.get("task") and e.get("run_id") for e in entries), "runs carry their context"
    assert not [line for line in lines if REJECTED_KEY in line]
