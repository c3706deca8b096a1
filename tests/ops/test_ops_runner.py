"""`python -m keepa_deals.runner`: the whole system in the foreground, in a copy of the project
(its own private Redis and simulator): start, a dead child reported and restarted, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import requests
from ops_helpers import ForegroundRunner, children_of, ok_runs_since, recorded_pid, run, show
from support import wait_until

from keepa_deals.processes import process_alive

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

SERVICES = ("simulator", "worker", "beat", "dashboard")


def test_runner_runs_everything_restarts_a_dead_child_and_stops_cleanly(project, stack_env):
    env = stack_env()
    runner = ForegroundRunner(project, env)
    try:
        announced = wait_until(lambda: runner.said(r"==> keepa-deals is running: dashboard (\S+)"),
                               60, "the runner to announce the dashboard")
        assert requests.get(announced.group(1) + "healthz", timeout=5).status_code in (200, 503)
        simulator = f"http://127.0.0.1:{env['KEEPA_SIM_PORT']}/_sim/state"
        assert requests.get(simulator, timeout=5).status_code == 200
        refused = run(project, "./start_celery.sh", env=env, timeout=60)
        assert refused.returncode == 1 and "already running" in refused.stderr, show(refused)

        beat = recorded_pid(project, "beat")
        subprocess.run(["kill", "-KILL", str(beat)], check=True)
        wait_until(lambda: runner.said(rf"!!! beat \(pid {beat}\) was killed by SIGKILL"), 10,
                   "a loud report of the dead beat")
        # the killed beat's lease blocks a new beat for one LOCK_TTL_S; the runner outlasts it
        wait_until(lambda: runner.count("beat: ready") == 2, 60, "a new beat to be ready")
        assert recorded_pid(project, "beat") not in (None, beat)

        everything = [recorded_pid(project, name) for name in SERVICES]
        everything += children_of(recorded_pid(project, "worker"))
        redis_pid = int((project / "var" / "redis" / "redis.pid").read_text())
        runner.process.send_signal(signal.SIGTERM)
        assert runner.process.wait(timeout=40) == 0, runner.output()
        assert not [pid for pid in [*everything, redis_pid] if process_alive(pid)]
        assert not list((project / "var" / "run").glob("*.pid"))
        assert "redis: private server stopped" in runner.output()
    finally:
        if runner.process.poll() is None:
            runner.process.kill()


def test_a_killed_private_redis_is_restarted_and_deals_flow_again(project, stack_env):
    env = stack_env(BACKFILL_INTERVAL_S=2, UPSERT_INTERVAL_S=2)
    runner = ForegroundRunner(project, env)
    try:
        announced = wait_until(lambda: runner.said(r"==> keepa-deals is running: dashboard (\S+)"),
                               60, "the runner to announce the dashboard")
        healthz = announced.group(1) + "healthz"
        wait_until(lambda: requests.get(healthz, timeout=5).status_code == 200, 60,
                   "deals flowing before the crash")
        pidfile = project / "var" / "redis" / "redis.pid"
        redis_pid = int(pidfile.read_text())
        subprocess.run(["kill", "-KILL", str(redis_pid)], check=True)
        wait_until(lambda: runner.said(r"redis: back after"), 20, "the runner to restart Redis")
        back_at = int(time.time())
        assert int(pidfile.read_text()) != redis_pid
        assert runner.count("redis: the private server is down") == 1, "said once, not per check"
        wait_until(lambda: ok_runs_since(project / "var" / "deals.db", back_at), 60,
                   "a pipeline run started after the restart to succeed")
        assert requests.get(healthz, timeout=5).status_code == 200
        assert runner.process.poll() is None, "nothing gave up"
    finally:
        if runner.process.poll() is None:
            runner.process.send_signal(signal.SIGTERM)
            runner.process.wait(timeout=40)
