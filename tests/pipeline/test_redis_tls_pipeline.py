"""End to end over Redis with a password and TLS: real `celery worker`, `celery beat` and
dashboard processes whose only Redis is a TLS-only redis-server with `requirepass`
(tests/tls_redis.py), configured as a deployment would be (REDIS_URL=rediss://:PASSWORD@…,
REDIS_TLS_CA_FILE). The first sweep must equal the simulator's ground truth, and the password,
in either spelling, must appear in no process output and no file the processes wrote.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from pipeline_helpers import (
    LOOSE_QUERY,
    PROJECT_ROOT,
    frozen_sim,
    runs,
    state,
    stored_deals,
    truth_deals,
)
from support import wait_until
from tls_redis import ENCODED_PASSWORD, PASSWORD, TlsRedis

from keepa_deals.backfiller import CURSOR_STATE
from keepa_deals.config import redact_url
from keepa_deals.heartbeats import read_beat, read_workers
from keepa_deals.redis_server import connect, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def tls_redis(tmp_path_factory) -> TlsRedis:
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis")).start()
    yield server
    server.stop()


def start_dashboard(env: dict, log_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "keepa_deals.dashboard"], cwd=PROJECT_ROOT,
                               env={**env, "DASHBOARD_PORT": str(port)},
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def answer(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def test_worker_beat_and_dashboard_run_over_rediss_and_no_output_shows_the_password(
        tls_redis, sim_factory, pipeline_env, start_celery, tmp_path):
    # tls_redis first: set up before, so torn down after, the Celery processes
    sim = frozen_sim(sim_factory)
    env = pipeline_env(sim, REDIS_URL=tls_redis.url(ca=False),
                       REDIS_TLS_CA_FILE=str(tls_redis.ca_file))
    client = connect(tls_redis.url())  # what the settings fold REDIS_TLS_CA_FILE into
    database = tmp_path / "deals.db"

    worker = start_celery("worker", env)
    wait_until(lambda: read_workers(client), 60, "the worker heartbeat over TLS")
    beat = start_celery("beat", env)
    dashboard, dashboard_url = start_dashboard(env, tmp_path / "dashboard.log")
    try:
        wait_until(lambda: (state(database, CURSOR_STATE) or {}).get("sweep_id", 1) > 1, 90,
                   "the first full sweep")
        wait_until(lambda: any(r["outcome"] == "ok" for r in runs(database, "backfill_deals")),
                   60, "the backfill run that finished the sweep")
        assert stored_deals(database) == truth_deals(sim, LOOSE_QUERY)
        assert read_beat(client), "beat heartbeat over TLS"

        status = wait_until(lambda: answer(dashboard_url + "/api/status"), 30,
                            "the dashboard to answer").json()
        assert status["redis_error"] is None and status["workers"]
        pages = [answer(dashboard_url + path) for path in ("/", "/api/status", "/metrics")]
        assert all(page is not None and page.status_code == 200 for page in pages)
        assert "keepa_deals_redis_up 1.0" in pages[2].text
        report = subprocess.run([sys.executable, "Diagnostics/health_report.py"],
                                cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        assert "Redis unreachable" not in report.stdout, report.stdout
        shown = [page.text for page in pages] + [report.stdout, report.stderr]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=15)
    assert worker.alive() and beat.alive()

    worker.stop()
    beat.stop()
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {"worker-0.log", "beat-1.log", "dashboard.log"} <= {path.name for path in written}
    for secret in (PASSWORD, ENCODED_PASSWORD):
        assert not [text for text in shown if secret in text], "a page shows the password"
        leaked = [path.name for path in written if secret.encode() in path.read_bytes()]
        assert not leaked, f"the password is in {leaked}"
    assert f"broker {redact_url(tls_redis.url())})" in worker.log(), "the broker is the TLS one"
