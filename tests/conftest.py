"""Shared fixtures: a real redis-server and the Keepa simulator as a real HTTP server.

Nothing here assumes a service is already running: every server is started on a free port and
stopped at the end. Helpers wait on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support import wait_until

from keepa_deals.redis_server import PrivateRedis, connect, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIM_START_TIMEOUT_S = 20


class RedisUnderTest:
    """A private redis-server for the test session, restartable to simulate crashes."""

    def __init__(self, data_dir: Path):
        self.server = PrivateRedis(data_dir, port=free_port())

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self, *, save: bool = False) -> None:
        self.server.stop(save=save)

    def restart(self, *, keep_data: bool) -> None:
        """Restart on the same port; keep_data=False simulates a Redis that lost its state."""
        self.server.stop(save=keep_data)
        if not keep_data:  # the snapshot and the append-only file: nothing to reload
            (self.server.data_dir / "dump.rdb").unlink(missing_ok=True)
            (self.server.data_dir / "appendonly.aof").unlink(missing_ok=True)
            shutil.rmtree(self.server.data_dir / "appendonlydir", ignore_errors=True)
        self.server.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisUnderTest:
    server = RedisUnderTest(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop(save=False)


@pytest.fixture
def redis_client(redis_server):
    """A str-decoding client; every key is deleted after the test (no FLUSHALL)."""
    redis_server.start()  # a previous test may have stopped it
    client = connect(redis_server.url)
    yield client
    try:
        cleaner = connect(redis_server.url)
        keys = list(cleaner.scan_iter(count=1000))
        if keys:
            cleaner.delete(*keys)
    except Exception:  # noqa: BLE001 - a test that stopped Redis leaves nothing to clean
        pass


class SimHandle:
    """A running `python -m keepa_sim` subprocess and its control API."""

    def __init__(self, process: subprocess.Popen, url: str, key: str, log_path: Path):
        self.process = process
        self.url = url
        self.key = key
        self.log_path = log_path

    def _get(self, path: str, **params):
        response = requests.get(self.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict):
        response = requests.post(self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict:
        return self._get("/_sim/state")

    def config(self, knobs: dict) -> dict:
        return self._post("/_sim/config", knobs)

    def clock(self, **command) -> dict:
        return self._post("/_sim/clock", command)

    def tokens(self, **values) -> dict:
        values.setdefault("key", self.key)
        return self._post("/_sim/tokens", values)

    def requests_log(self) -> list[dict]:
        body = self._get("/_sim/requests")
        return body["requests"] if isinstance(body, dict) else body

    def truth(self, selection: dict, since: int | None = None) -> dict:
        body = {"selection": selection}
        if since is not None:
            body["since"] = since
        return self._post("/_sim/deals/truth", body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def sim_factory(tmp_path) -> Callable[..., SimHandle]:
    """Start simulators with config overrides (keepa-api.md §5.6 structure); all stopped after."""
    from keepa_sim import DEFAULT_API_KEY

    started: list[SimHandle] = []

    def start(**config) -> SimHandle:
        port = free_port()
        config_path = tmp_path / f"sim-{port}.json"
        config_path.write_text(json.dumps(config))
        log_path = tmp_path / f"sim-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "keepa_sim", "--host", "127.0.0.1", "--port", str(port),
             "--config", str(config_path)],
            cwd=PROJECT_ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        keys = config.get("keys") or {DEFAULT_API_KEY: {}}
        handle = SimHandle(process, f"http://127.0.0.1:{port}", next(iter(keys)), log_path)
        started.append(handle)

        def ready():
            if process.poll() is not None:
                pytest.fail(f"simulator exited with {process.returncode}: {log_path.read_text()}")
            try:
                return requests.get(handle.url + "/_sim/state", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, SIM_START_TIMEOUT_S, message="the simulator to answer")
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sim(sim_factory) -> SimHandle:
    return sim_factory()


@pytest.fixture
def app_env(tmp_path, redis_server):
    """Build the environment for a project process (worker, beat, dashboard, script) in tests.

    Usage: env = app_env(sim, BACKFILL_INTERVAL_S="1"). KEEPA_API_KEY is removed so the process
    talks to the simulator at sim.url with the simulator's default key.
    """

    def build(sim: SimHandle | None = None, **overrides) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KEEPA_API_KEY"}
        env.update(
            REDIS_URL=redis_server.url,
            DATABASE_PATH=str(tmp_path / "deals.db"),
            VAR_DIR=str(tmp_path / "var"),
            PYTHONPATH=str(PROJECT_ROOT),
        )
        if sim is not None:
            env["KEEPA_API_URL"] = sim.url
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    return build
