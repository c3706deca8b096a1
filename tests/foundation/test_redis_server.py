"""The private redis-server: started when none answers, reused when running, data kept on stop."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keepa_deals.config import load_settings
from keepa_deals.redis_server import answers, connect, ensure_redis, private_redis

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_private_server_is_started_reused_and_keeps_data(tmp_path):
    settings = load_settings(
        {"VAR_DIR": str(tmp_path / "var"), "REDIS_URL": "redis://127.0.0.1:1/0"},
        dotenv_path=tmp_path / "none",
    )
    url, server = ensure_redis(settings)
    try:
        assert server is not None and answers(url)
        assert (tmp_path / "var" / "redis" / "redis.pid").is_file()
        connect(url).set("kd:probe", "kept")
        again, _ = ensure_redis(settings)
        assert again == url, "a running private server must be reused, not duplicated"
        server.stop()
        assert not answers(url)
        url, server = ensure_redis(settings)
        assert connect(url).get("kd:probe") == "kept", "stop must snapshot, start must reload"
    finally:
        private_redis(settings).stop(save=False)


def test_configured_redis_that_answers_is_used_as_is(tmp_path, redis_server):
    settings = load_settings(
        {"VAR_DIR": str(tmp_path / "var"), "REDIS_URL": redis_server.url},
        dotenv_path=tmp_path / "none",
    )
    url, server = ensure_redis(settings)
    assert url == redis_server.url and server is None


@pytest.mark.parametrize("module", ["keepa_deals.celery_app", "keepa_deals.task_runtime"])
def test_importing_the_pipeline_starts_no_server(tmp_path, module):
    """FAILURES: a bare import used to start a redis-server that outlived the importer."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KEEPA_API_KEY")}
    env.update(VAR_DIR=str(tmp_path / "var"), PYTHONPATH=str(PROJECT_ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", f"import {module}; from keepa_deals.config import load_settings;"
         " from keepa_deals.task_runtime import PipelineServices;"
         " PipelineServices.from_settings(load_settings())"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "Redis is not reachable" in output and "./start_celery.sh" in output, output[-2000:]
    assert not (tmp_path / "var" / "redis" / "redis.pid").exists(), "a server was started"
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                and str(tmp_path) in _whereabouts(pid)], "a process runs in the test's VAR_DIR"


def _whereabouts(pid: str) -> str:
    """A process's command line and working directory ('' once it is gone)."""
    try:
        proc = Path("/proc") / pid
        return proc.joinpath("cmdline").read_bytes().decode(errors="replace") + os.readlink(
            proc / "cwd")
    except OSError:
        return ""
