"""Helpers shared by test modules: `from support import wait_until`, and the Keepa simulator
as a real HTTP server in its own process (`launch_simulator`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from keepa_deals import db
from keepa_deals.redis_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIM_START_TIMEOUT_S = 20


def migrated_store(location):
    """Yield a writable connection to the store at `location` (a SQLite path or a PostgreSQL
    URL), migrated to this code's schema; closed afterwards. For fixtures."""
    conn = db.connect(location)
    db.migrate(conn)
    yield conn
    conn.close()


def wait_until(condition: Callable[[], object], timeout: float, message: str = "condition",
               interval: float = 0.05) -> object:
    """Poll `condition` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


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


def launch_simulator(directory: Path, config: dict) -> SimHandle:
    """`python -m keepa_sim` on a free port with `config` (keepa-api.md §5.6 structure), its
    config and log under `directory`; returns once it answers (the caller stops it)."""
    from keepa_sim import DEFAULT_API_KEY

    port = free_port()
    config_path = directory / f"sim-{port}.json"
    config_path.write_text(json.dumps(config))
    log_path = directory / f"sim-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "keepa_sim", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(config_path)],
        cwd=PROJECT_ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    keys = config.get("keys") or {DEFAULT_API_KEY: {}}
    handle = SimHandle(process, f"http://127.0.0.1:{port}", next(iter(keys)), log_path)

    def ready():
        if process.poll() is not None:
            pytest.fail(f"simulator exited with {process.returncode}: {log_path.read_text()}")
        try:
            return requests.get(handle.url + "/_sim/state", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, SIM_START_TIMEOUT_S, message="the simulator to answer")
    except BaseException:
        handle.stop()
        raise
    return handle
