"""deploy_update.sh against a local bare remote: fast-forward, restart, health gate, rollback,
idempotence — with real worker, beat, dashboard, Redis and simulator."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from ops_helpers import clean_environment, ok_runs_since, recorded_pid, run, show
from support import wait_until

from keepa_deals import heartbeats
from keepa_deals.redis_server import free_port

pytestmark = [pytest.mark.timeout(170), pytest.mark.e2e]

MINUTE_MS = 250
SIM = {"seed": 7, "catalogue": {"n_products": 1000, "domains": [1]},
       "clock": {"mode": "scaled", "minute_ms": MINUTE_MS}, "default_refill_rate": 100}


def git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.name=Ops Test", "-c", "user.email=ops@test", *args], cwd=cwd,
        capture_output=True, text=True, timeout=30, check=True)
    return completed.stdout.strip()


@pytest.fixture
def deployment(project, tmp_path, sim_factory, redis_server, redis_client):
    """(checkout, author clone, env): the project copy as a checkout of a bare remote, running
    revision 1 started by start_celery.sh; the author clone pushes new revisions."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    (project / ".git").mkdir()
    git(project, "init", "--quiet", "-b", "main")
    (project / ".git" / "info" / "exclude").write_text(".venv\nvar/\n")
    git(project, "add", "-A")
    git(project, "commit", "--quiet", "-m", "revision 1")
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "--quiet", "-u", "origin", "main")
    author = tmp_path / "author"
    git(tmp_path, "clone", "--quiet", str(remote), str(author))

    sim = sim_factory(**SIM)
    env = {**_env(sim, redis_server.url), "DEPLOY_HEALTH_TIMEOUT_S": "45"}
    started = run(project, "./start_celery.sh", env=env, timeout=120)
    assert started.returncode == 0, show(started)
    return project, author, env


def _env(sim, redis_url: str) -> dict[str, str]:
    return clean_environment(
        REDIS_URL=redis_url, KEEPA_API_URL=sim.url, KEEPA_REFILL_PERIOD_MS=MINUTE_MS,
        DASHBOARD_PORT=free_port(), BACKFILL_INTERVAL_S=1, UPSERT_INTERVAL_S=1, LOCK_TTL_S=5,
        TASK_SLICE_S=8, KEEPA_READ_TIMEOUT_S=10, DEPLOY_STOP_TIMEOUT_S=15)


def push(author: Path, path: str, text: str, *, append: bool = False) -> str:
    target = author / path
    target.write_text((target.read_text() if append else "") + text)
    git(author, "add", path)
    git(author, "commit", "--quiet", "-m", f"edit {path}")
    git(author, "push", "--quiet", "origin", "main")
    return git(author, "rev-parse", "HEAD")


def worker_revision(redis_client, project: Path) -> str | None:
    pid = recorded_pid(project, "worker")
    return next((w["revision"] for w in heartbeats.read_workers(redis_client)
                 if w["pid"] == pid), None)


def test_deploy_runs_the_new_revision_and_a_second_deploy_changes_nothing(deployment,
                                                                           redis_client):
    project, author, env = deployment
    old_worker = recorded_pid(project, "worker")
    revision = push(author, "README.md", "\nDeployed by the operations test.\n", append=True)
    deploy_log = project / "var" / "log" / "deploy.log"
    deploy_log.parent.mkdir(parents=True, exist_ok=True)
    deploy_log.write_text("an old deploy line\n" * 60_000)  # past its 1 MB cap

    deployed = run(project, "./deploy_update.sh", env=env, timeout=150)

    assert deployed.returncode == 0, show(deployed)
    assert git(project, "rev-parse", "HEAD") == revision
    assert (project / "var" / "REVISION").read_text().strip() == revision
    assert recorded_pid(project, "worker") != old_worker, "the worker was restarted"
    assert worker_revision(redis_client, project) == revision
    assert "health gate passed" in deployed.stdout
    log = deploy_log.read_text()
    assert f"deployed {revision[:12]}: healthy" in log
    assert "an old deploy line" not in log and deploy_log.stat().st_size < 100_000, "rotated"
    assert (project / "var" / "log" / "deploy.log.1").stat().st_size > 1_000_000

    pids = {name: recorded_pid(project, name) for name in ("worker", "beat", "dashboard")}
    again = run(project, "./deploy_update.sh", env=env, timeout=60)
    assert again.returncode == 0, show(again)
    assert "nothing to do" in again.stdout
    assert {name: recorded_pid(project, name) for name in pids} == pids, "no restart"


def test_a_revision_failing_preflight_is_rolled_back_without_touching_the_services(
        deployment, redis_client):
    project, author, env = deployment
    good = git(project, "rev-parse", "HEAD")
    worker = recorded_pid(project, "worker")
    push(author, "keepa_deals/simple_task.py", "\nraise ImportError('broken revision')\n",
         append=True)

    result = run(project, "./deploy_update.sh", env=env, timeout=120)

    assert result.returncode == 1, show(result)
    assert git(project, "rev-parse", "HEAD") == good
    assert "ImportError" not in (project / "keepa_deals" / "simple_task.py").read_text()
    assert recorded_pid(project, "worker") == worker, "the running services were not touched"
    log = (project / "var" / "log" / "deploy.log").read_text()
    assert f"ROLLING BACK to {good[:12]}" in log and "pre-flight" in log


def test_a_revision_failing_the_health_gate_is_rolled_back_and_restarted(deployment,
                                                                         redis_client):
    project, author, env = deployment
    good = git(project, "rev-parse", "HEAD")
    env = {**env, "DEPLOY_HEALTH_TIMEOUT_S": "6"}
    broken = push(author, "keepa_deals/celery_app.py",
                  "\napp.conf.beat_schedule = {}  # a revision that schedules nothing\n",
                  append=True)

    result = run(project, "./deploy_update.sh", env=env, timeout=150)

    assert result.returncode == 1, show(result)
    assert "health gate failed" in result.stdout
    assert git(project, "rev-parse", "HEAD") == good
    assert (project / "var" / "REVISION").read_text().strip() == good
    wait_until(lambda: worker_revision(redis_client, project) == good, 30,
               "the worker to run the previous revision again")
    log = (project / "var" / "log" / "deploy.log").read_text()
    assert f"revision {broken[:12]} failed: health gate" in log
    assert f"rolled back: revision {good[:12]} is running again" in log


REFUSE_DEAL_WRITES = """\
-- A revision under test: every write to deals aborts (the schema is valid, the data path dead).
CREATE TRIGGER refuse_deal_inserts BEFORE INSERT ON deals
BEGIN SELECT RAISE(ABORT, 'deal writes refused by the revision under test'); END;
CREATE TRIGGER refuse_deal_updates BEFORE UPDATE ON deals
BEGIN SELECT RAISE(ABORT, 'deal writes refused by the revision under test'); END;
"""


def test_a_revision_whose_migration_breaks_every_deal_write_is_rolled_back_with_its_schema(
        deployment, redis_client):
    project, author, env = deployment
    good = git(project, "rev-parse", "HEAD")
    database = project / "var" / "deals.db"
    wait_until(lambda: ok_runs_since(database, 0), 60, "revision 1 storing deals")
    before = schema(database)
    version_before = before[0]
    broken = push(author, f"keepa_deals/migrations/{version_before + 1:04d}_refuse.sql",
                  REFUSE_DEAL_WRITES)

    result = run(project, "./deploy_update.sh", env=env, timeout=150)

    assert result.returncode == 1, show(result)
    assert "health gate failed: a" in result.stdout and "refused" in result.stdout
    assert git(project, "rev-parse", "HEAD") == good
    assert schema(database) == before, "the migration is undone"
    log = (project / "var" / "log" / "deploy.log").read_text()
    assert f"revision {broken[:12]} failed: health gate" in log
    assert f"restoring the database as it was before {broken[:12]}" in log
    assert f"rolled back: revision {good[:12]} is running again" in log
    back_at = time.time()
    wait_until(lambda: worker_revision(redis_client, project) == good, 30,
               "the worker on the previous revision")
    wait_until(lambda: ok_runs_since(database, back_at), 60,
               "deals flowing again on the previous revision")


def schema(database: Path) -> tuple[int, list[str]]:
    """(schema version, trigger names) of the deployment's database."""
    conn = sqlite3.connect(database, timeout=30)
    try:
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        triggers = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        return version, triggers
    finally:
        conn.close()
