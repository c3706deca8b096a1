"""start_celery.sh and kill_everything_force.sh, run in a copy of the project with real
processes: private Redis, simulator, Celery worker and beat, dashboard."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from ops_helpers import (
    children_of,
    in_append_only_file,
    ok_runs_since,
    recorded_pid,
    run,
    show,
)
from support import wait_until

from keepa_deals import heartbeats
from keepa_deals.constants import LOCK_KEY_PREFIX
from keepa_deals.ops.pidfile import PidFile, encode_argv
from keepa_deals.processes import process_alive
from keepa_deals.redis_server import answers, connect

pytestmark = [pytest.mark.timeout(150), pytest.mark.e2e]

SERVICES = ("redis", "simulator", "worker", "beat", "dashboard")


def private_redis(project):
    url = (project / "var" / "redis" / "redis.url").read_text().strip()
    return connect(url)


def plant_lock(client, name: str, pid: int) -> None:
    owner = {"host": socket.gethostname(), "pid": pid, "task_id": name, "since": time.time(),
             "renewed_at": time.time(), "token": name}
    client.set(LOCK_KEY_PREFIX + name, json.dumps(owner), ex=600)


def test_start_supervise_refuse_twice_then_kill_everything(project, stack_env):
    env = stack_env()
    started = run(project, "./start_celery.sh", env=env, timeout=120)
    assert started.returncode == 0, show(started)
    assert "4 scheduled tasks registered" in started.stdout, "registration must be checked"
    pids = {name: recorded_pid(project, name) for name in SERVICES}
    assert all(pids.values()), pids
    client = private_redis(project)
    assert any(w["pid"] == pids["worker"] for w in heartbeats.read_workers(client))
    assert heartbeats.read_beat(client)["pid"] == pids["beat"]

    again = run(project, "./start_celery.sh", env=env, timeout=60)
    assert again.returncode == 1 and "already running" in again.stderr, show(again)
    assert {name: recorded_pid(project, name) for name in SERVICES} == pids

    # a crashed worker is restarted by its supervisor; its orphaned pool goes with it
    old_pool = children_of(pids["worker"])
    assert old_pool, "the worker has a prefork pool"
    subprocess.run(["kill", "-KILL", str(pids["worker"])], check=True)
    new_worker = wait_until(
        lambda: (pid := recorded_pid(project, "worker")) != pids["worker"] and pid,
        30, "the supervisor to restart the worker")
    wait_until(lambda: any(w["pid"] == new_worker for w in heartbeats.read_workers(client)), 60,
               "the restarted worker's heartbeat")
    assert not any(process_alive(pid) for pid in old_pool)
    assert "!!! supervisor: worker" in (project / "var/log/worker.log").read_text()

    # state that must survive the kill, and a monitor that must not be mistaken for a worker
    client.set("kd:test:survives", "yes")
    stand_in = subprocess.Popen(["sleep", "60"])
    plant_lock(client, "live_holder_lock", stand_in.pid)
    ended = subprocess.Popen(["true"])
    ended.wait()
    plant_lock(client, "dead_holder_lock", ended.pid)
    tail = subprocess.Popen(["tail", "-f", str(project / "var/log/worker.log")],
                            stdout=subprocess.DEVNULL)
    everything = [recorded_pid(project, f"{name}.supervisor") for name in SERVICES]
    everything += [recorded_pid(project, name) for name in SERVICES]
    everything += children_of(new_worker)
    everything.append(int((project / "var/redis/redis.pid").read_text()))
    try:
        began = time.monotonic()
        killed = run(project, "./kill_everything_force.sh", "--timeout", "20", env=env,
                     timeout=90)
        assert killed.returncode == 0, show(killed)
        assert time.monotonic() - began < 40
        assert not [pid for pid in everything if process_alive(pid)], show(killed)
        assert process_alive(tail.pid), "`tail -f worker.log` is not ours to kill (L7)"
        assert not list((project / "var/run").glob("*.pid"))

        restarted = run(project, sys.executable, "-m", "keepa_deals.redis_server", "start",
                        env=env)
        assert restarted.returncode == 0, show(restarted)
        client = private_redis(project)
        assert client.get("kd:test:survives") == "yes", "Redis data must survive the kill"
        assert client.get(LOCK_KEY_PREFIX + "dead_holder_lock") is None
        assert client.get(LOCK_KEY_PREFIX + "live_holder_lock") is not None
    finally:
        tail.kill()
        stand_in.kill()
        run(project, sys.executable, "-m", "keepa_deals.redis_server", "stop", env=env)


def test_a_killed_private_redis_is_restarted_under_start_celery_with_its_data(
        project, stack_env):
    env = stack_env(BACKFILL_INTERVAL_S=2, UPSERT_INTERVAL_S=2)
    started = run(project, "./start_celery.sh", env=env, timeout=120)
    assert started.returncode == 0, show(started)
    client = private_redis(project)
    client.set("kd:test:survives", "written before the crash")
    redis_pidfile = project / "var" / "redis" / "redis.pid"
    redis_pid = int(redis_pidfile.read_text())
    wait_until(lambda: in_append_only_file(project / "var" / "redis", b"kd:test:survives"), 5,
               "the write in the append-only file (fsync every second)")
    subprocess.run(["kill", "-KILL", str(redis_pid)], check=True)
    killed_at = time.monotonic()

    url = (project / "var" / "redis" / "redis.url").read_text().strip()
    wait_until(lambda: answers(url), 20, "the keeper to restart Redis")
    recovery_s = time.monotonic() - killed_at
    assert recovery_s < 5, f"restarted {recovery_s:.1f} s after the crash (checked every 1 s)"
    assert int(redis_pidfile.read_text()) != redis_pid
    assert private_redis(project).get("kd:test:survives") == "written before the crash"
    back_at = time.time()
    wait_until(lambda: ok_runs_since(project / "var" / "deals.db", back_at), 60,
               "a pipeline run started after the restart to succeed")
    keeper_log = (project / "var/log/redis.log").read_text()
    assert keeper_log.count("the private server is down") == 1, "said once, not per check"
    assert "redis: back after" in keeper_log
    status = run(project, sys.executable, "-m", "keepa_deals.ops", "status", env=env)
    assert status.returncode == 0 and "GAVE UP" not in status.stdout, show(status)


def test_kill_sends_kill_to_what_ignores_term_and_spares_what_is_not_ours(project, stack_env):
    run_dir = project / "var" / "run"
    ignores_term = [sys.executable, "-c",
                    "import signal, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(120)\n"]
    stubborn = subprocess.Popen(ignores_term, start_new_session=True, stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"ready"
    PidFile(run_dir, "worker").write(stubborn.pid, encode_argv(ignores_term))
    bystander = subprocess.Popen(["sleep", "60"])
    PidFile(run_dir, "beat").write(bystander.pid, encode_argv(["celery", "beat"]))
    try:
        began = time.monotonic()
        killed = run(project, "./kill_everything_force.sh", "--timeout", "1", env=stack_env(),
                     timeout=60)
        assert killed.returncode == 0, show(killed)
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - began < 15
        assert "sending KILL" in killed.stdout
        assert process_alive(bystander.pid), "a pid that runs something else is left alone"
        assert not (run_dir / "beat.pid").exists(), "its stale pidfile is removed"
        assert "locks were not checked" in killed.stderr, "no Redis ran: said so, no crash"
    finally:
        stubborn.kill()
        bystander.kill()


def test_start_with_a_venv_lacking_celery_fails_once_with_the_fix(project, stack_env):
    (project / ".venv").unlink()
    created = subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip",
                              str(project / ".venv")], capture_output=True, check=False)
    assert created.returncode == 0, created.stderr
    began = time.monotonic()
    result = run(project, "./start_celery.sh", env=stack_env(), timeout=30)
    assert result.returncode == 2, show(result)
    assert time.monotonic() - began < 10, "no crash loop"
    assert "No module named 'celery'" in result.stderr and "make setup" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "var").exists(), "nothing was started"

    (project / ".venv").rename(project / ".venv-broken")
    result = run(project, "./start_celery.sh", env=stack_env(), timeout=30)
    assert result.returncode == 2 and "make setup" in result.stderr


def test_start_reads_dotenv_and_stops_at_a_bad_value_with_one_line(project, stack_env):
    (project / ".env").write_text("KEEPA_DOMAIN=99\n")
    result = run(project, "./start_celery.sh", env=stack_env(), timeout=30)
    assert result.returncode == 2, show(result)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "KEEPA_DOMAIN" in result.stderr and "Traceback" not in result.stderr
    assert not (project / "var" / "run").exists(), "nothing was started"
