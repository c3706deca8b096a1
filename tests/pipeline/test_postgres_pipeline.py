"""End to end on PostgreSQL: real worker and beat processes with DATABASE_URL, one host and two.

The two hosts are two installations on this machine with their own VAR_DIR and HOST_NAME,
sharing the session's Redis and one PostgreSQL database, with one beat; SIGKILLing the
worker of the host that holds the backfill lease leaves the other host to finish the sweep,
exactly (DESIGN: leases, fencing, the database's write turn).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import requests
from pg_server import PASSWORD
from pipeline_helpers import (
    LOOSE_QUERY,
    PROJECT_ROOT,
    _query,
    enriched_count,
    enrichment_lag,
    frozen_sim,
    runs,
    stored_deals,
    truth_deals,
)
from support import wait_until
from test_celery_pipeline import sim_key, sweeps_done
from werkzeug.serving import make_server

from keepa_deals import db
from keepa_deals.config import load_settings
from keepa_deals.dashboard import create_app
from keepa_deals.heartbeats import read_workers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
BACKFILL_LOCK = "kd:lock:backfill_deals_lock"


@pytest.fixture
def dashboard_for(tmp_path):
    """dashboard_for(env) -> base URL of the dashboard with that environment's settings."""
    servers = []

    def start(env: dict) -> str:
        app = create_app(load_settings(env, dotenv_path=os.devnull))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def stored_titles(url) -> dict[str, str | None]:
    return dict(_query(url, "SELECT asin, title FROM deals"))


def truth_titles(sim) -> dict[str, str]:
    return {item["asin"]: item["title"] for item in sim.truth(LOOSE_QUERY)["deals"]}


def test_the_whole_system_on_postgresql_ingests_the_keepa_server_exactly(
        postgres_url, sim_factory, pipeline_env, start_celery, redis_server, dashboard_for,
        tmp_path):
    sim = frozen_sim(sim_factory)
    env = pipeline_env(sim, DATABASE_URL=postgres_url)
    start_celery("worker", env)
    start_celery("beat", env)
    wait_until(lambda: sweeps_done(postgres_url) >= 1 and enriched_count(postgres_url) > 0
               and not enrichment_lag(postgres_url), 90, "the first sweep, enriched")

    truth = truth_deals(sim, LOOSE_QUERY)
    assert len(truth) > 150, "the query spans several pages"
    assert stored_deals(postgres_url) == truth  # same ASINs, same lastUpdate, no duplicates
    assert stored_titles(postgres_url) == truth_titles(sim)  # byte for byte
    assert not (tmp_path / "deals.db").exists(), "nothing went to SQLite"

    base = dashboard_for(env)
    shown = requests.get(base + "api/deal-count", timeout=10).json()["deal_count"]
    assert shown == len(_query(postgres_url, "SELECT asin FROM deals")) == len(truth)
    pages = "".join(requests.get(base + path, timeout=10).text
                    for path in ("", "deals", "api/status", "metrics"))
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*.log"))
    assert logs and PASSWORD not in pages + logs, "the database password was shown"


def test_two_hosts_share_redis_and_postgresql_and_one_finishes_when_the_other_dies(
        postgres_url, sim_factory, pipeline_env, start_celery, redis_server, redis_client,
        dashboard_for, tmp_path):
    sim = frozen_sim(sim_factory, default_refill_rate=20,
                     keys={sim_key(): {"initial_tokens": 20_000}},
                     latency={"per_endpoint": {"product": 300}})
    hosts = {}
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
        hosts[name] = pipeline_env(sim, DATABASE_URL=postgres_url, HOST_NAME=name,
                                   VAR_DIR=str(tmp_path / name / "var"),
                                   DATABASE_PATH=str(tmp_path / name / "unused.db"),
                                   UPSERT_INTERVAL_S=3600, BACKFILL_INTERVAL_S=2)
    workers = {name: start_celery("worker", env, "-n", f"w@{name}")
               for name, env in hosts.items()}
    start_celery("beat", hosts["host-a"])

    def both_hosts_beating():
        return {w.get("host") for w in read_workers(redis_client)} == set(hosts)

    wait_until(both_hosts_beating, 60, "heartbeats of both hosts")
    health = subprocess.run([sys.executable, "Diagnostics/health_report.py"], check=False,
                            cwd=PROJECT_ROOT,
                            env=hosts["host-b"], capture_output=True, text=True, timeout=60)
    assert all(f"on {name}" in health.stdout for name in hosts), health.stdout
    base = dashboard_for(hosts["host-b"])
    overview = requests.get(base, timeout=10).text
    assert "host-a" in overview and "host-b" in overview

    def lease_holder():
        owner = redis_client.get(BACKFILL_LOCK)
        return owner and enriched_count(postgres_url) >= 40 and json.loads(owner)["host"]

    victim = wait_until(lease_holder, 90, "a backfill lease holder with committed batches")
    survivor = next(name for name in hosts if name != victim)
    workers[victim].kill()
    assert enrichment_lag(postgres_url), "killed before the enrichment was done"

    wait_until(lambda: sweeps_done(postgres_url) >= 1 and not enrichment_lag(postgres_url),
               120, f"{survivor} to finish the sweep and its enrichment", interval=0.1)
    truth = truth_deals(sim, LOOSE_QUERY)
    assert stored_deals(postgres_url) == truth
    assert stored_titles(postgres_url) == truth_titles(sim)
    hosts_of_ok_runs = {row[0] for row in _query(
        postgres_url, "SELECT host FROM runs WHERE task = 'backfill_deals' AND outcome = 'ok'")}
    assert survivor in hosts_of_ok_runs
    assert all(r["outcome"] != "failed" for r in runs(postgres_url, "backfill_deals"))
    conn = db.readonly_connect(postgres_url)
    assert db.deal_count(conn) == len(truth)
    conn.close()


def test_alert_checks_run_on_the_beat_host_only_while_it_checks(
        postgres_url, sim_factory, pipeline_env, start_celery, redis_client, tmp_path):
    """One alert state for the whole installation: beat's checks go to its host's queue, and
    the other host's watchdog sees in Redis that checks happen (else each host would alert)."""
    sim = frozen_sim(sim_factory)
    hosts = {name: pipeline_env(sim, DATABASE_URL=postgres_url, HOST_NAME=name,
                                VAR_DIR=str(tmp_path / name / "var"), ALERT_CHECK_S=1,
                                UPSERT_INTERVAL_S=3600, BACKFILL_INTERVAL_S=3600)
             for name in ("host-a", "host-b")}
    for name, env in hosts.items():
        start_celery("worker", env, "-n", f"w@{name}")
    start_celery("beat", hosts["host-a"])
    state_file = {name: tmp_path / name / "var" / "alerts" / "state.json" for name in hosts}

    def beats_of(name):
        return [w["ts"] for w in read_workers(redis_client) if w.get("host") == name]

    wait_until(lambda: beats_of("host-a") and beats_of("host-b"), 60, "both workers")
    first = beats_of("host-b")[0]
    wait_until(state_file["host-a"].exists, 30, "a check on beat's host")
    # host-b's heartbeat thread runs its watchdog every 10 s; 3 missed checks (3 s) would do
    wait_until(lambda: beats_of("host-b") and beats_of("host-b")[0] >= first + 15, 40,
               "two more heartbeats of host-b")
    assert not state_file["host-b"].exists(), "host-b checked although beat's host did"
