"""The whole system, as `make run` starts it, under faults: the runner (private Redis, worker,
beat, dashboard) in a copy of the project whose VAR_DIR is a small tmpfs of its own, against an
independent Keepa simulator that answers with faults (5xx, resets, hangs, truncated JSON).

The simulator's clock is frozen so its ground truth stands still; `advance()` moves Keepa time
on, which creates new deals, and `deals_flowing()` measures how long until every one of them is
in the table. That is the recovery time of each fault: fault cleared → deals flowing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from ops_helpers import ForegroundRunner, clean_environment, copy_project, recorded_pid
from pipeline_helpers import KEEPA_MINUTE_MS, LOOSE_QUERY, MINUTE_MS, truth_deals
from support import launch_simulator, wait_until

from keepa_deals import db
from keepa_deals.constants import LOCK_KEY_PREFIX
from keepa_deals.keepa_time import keepa_minute_to_unix
from keepa_deals.redis_server import answers, connect, free_port
from keepa_sim import DEFAULT_API_KEY

VAR_SIZE = "64m"  # the tmpfs under VAR_DIR: room for everything, small enough to fill at once
BACKGROUND_FAULTS = {
    "http_5xx": {"p": 0.05, "codes": {"502": 0.5, "503": 0.5}, "html_body": True},
    "reset": {"p": 0.02},
    "hang": {"p": 0.01, "ms": 3_000},
    "malformed_json": {"p": 0.02, "mode": ["truncate"]},
}
NO_FAULTS = {kind: {"p": 0.0} for kind in BACKGROUND_FAULTS}
CHAOS_TIMINGS = {
    "KEEPA_REFILL_PERIOD_MS": MINUTE_MS,
    "BACKFILL_INTERVAL_S": 1,
    "UPSERT_INTERVAL_S": 1,
    "JANITOR_INTERVAL_S": 3600,
    "TASK_SLICE_S": 6,
    "LOCK_TTL_S": 3,
    "KEEPA_READ_TIMEOUT_S": 2,
}


class ChaosSystem:
    """One running system and the levers to hurt it; see the module docstring."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.project = copy_project(directory / "project")
        self.var = self.project / "var"
        self.var.mkdir()
        self.database = self.var / "deals.db"
        self.mounted = _mount_tmpfs(self.var, VAR_SIZE)
        self.sim = self.runner = None
        self.listed: dict[str, int] = {}  # every deal version the source listed while observed
        self.recoveries: dict[str, float] = {}  # fault -> seconds until deals flowed again
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        directory = self.directory
        self.sim = launch_simulator(directory, {
            "seed": 11,
            "catalogue": {"n_products": 1000, "domains": [1]},
            "clock": {"mode": "frozen"},
            "default_refill_rate": 20,
            "keys": {DEFAULT_API_KEY: {"initial_tokens": 500_000}},  # frozen: no refill
            "faults": BACKGROUND_FAULTS,
            "latency": {"per_endpoint": {"product": 300}},  # batches long enough to hit
        })
        now = self.sim.state()["clock"]["now_ms"]
        self.sim.clock(set_ms=now - now % KEEPA_MINUTE_MS + 1_000)
        query = directory / "query.json"
        query.write_text(json.dumps(LOOSE_QUERY))
        self.env = clean_environment(
            KEEPA_API_URL=self.sim.url, KEEPA_SIM_PORT=free_port(),
            DASHBOARD_PORT=free_port(), KEEPA_QUERY_PATH=str(query), **CHAOS_TIMINGS)
        self.runner = ForegroundRunner(self.project, self.env)

        def started():
            if self.runner.process.poll() is not None:
                pytest.fail(f"the runner ended at start:\n{self.runner.output()}")
            return self.runner.said(r"==> keepa-deals is running: dashboard (\S+)")

        self.dashboard = wait_until(started, 60, "the runner to start everything").group(1)

    # ----------------------------------------------------------------- what runs

    def pid(self, service: str) -> int | None:
        return recorded_pid(self.project, service)

    def redis_pid(self) -> int:
        return int((self.var / "redis" / "redis.pid").read_text())

    def redis(self):
        return connect((self.var / "redis" / "redis.url").read_text().strip())

    def redis_answers(self) -> bool:
        return answers((self.var / "redis" / "redis.url").read_text().strip())

    def lock_holder_pid(self, lock_name: str) -> int | None:
        """The pid in the lease `lock_name`, None while it is free (or Redis is away)."""
        try:
            value = self.redis().get(LOCK_KEY_PREFIX + lock_name)
        except (redis.RedisError, OSError):
            return None
        return json.loads(value)["pid"] if value else None

    def healthz(self) -> int | None:
        try:
            return requests.get(self.dashboard + "healthz", timeout=5).status_code
        except requests.RequestException:
            return None

    def still_supervised(self) -> bool:
        """The runner runs and gave up on nothing (no fault may end supervision)."""
        return (self.runner.process.poll() is None
                and not self.runner.said("cannot be kept running"))

    # ----------------------------------------------------------------- deals

    def advance(self, minutes: int = 15) -> dict[str, int]:
        """Move Keepa time on; the deals created or changed meanwhile ({asin: lastUpdate})."""
        self.truth()
        before = keepa_minute_to_unix(self.sim.state()["clock"]["keepa_minute"])
        self.sim.clock(advance_ms=minutes * KEEPA_MINUTE_MS)
        fresh = {asin: stamp for asin, stamp in self.truth().items() if stamp > before}
        assert fresh, "moving the clock on created or changed deals"
        return fresh

    def truth(self) -> dict[str, int]:
        """The simulator's deals now ({asin: lastUpdate}); each version is remembered in
        `listed`, so deals that later leave the query can still be checked."""
        now = truth_deals(self.sim, LOOSE_QUERY)
        for asin, stamp in now.items():
            self.listed[asin] = max(stamp, self.listed.get(asin, 0))
        return now

    def deals_flowing(self, fresh: dict[str, int], since: float, timeout: float) -> float:
        """Seconds from `since` (time.monotonic()) until every deal of `fresh` is stored at least
        as new as the simulator has it; fails the test after `timeout`."""

        def all_stored() -> bool:
            stored = db.stored_versions(self.database)
            return all(stored.get(asin, 0) >= stamp for asin, stamp in fresh.items())

        wait_until(all_stored, timeout, f"{len(fresh)} new or changed deals in the table",
                   interval=0.2)
        return time.monotonic() - since

    def recovered(self, fault: str, fresh: dict[str, int], since: float, bound: float) -> None:
        """deals_flowing within `bound` seconds of `since`, remembered in `recoveries`."""
        self.recoveries[fault] = round(self.deals_flowing(fresh, since, bound), 1)

    # ----------------------------------------------------------------- faults

    def signal(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    @contextlib.contextmanager
    def sim_faults(self, faults: dict):
        """Simulator faults set for the block, the background faults restored after it."""
        self.sim.config({"faults": faults})
        try:
            yield
        finally:
            self.sim.config({"faults": {**NO_FAULTS, **BACKGROUND_FAULTS}})

    @contextlib.contextmanager
    def database_locked(self):
        """An outside writer holding the database's write lock for the block."""
        conn = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    @contextlib.contextmanager
    def disk_full(self):
        """VAR_DIR's file system filled to the last byte for the block."""
        filler = self.var / "filler"
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in (1 << 20, 4096, 1):  # down to the last byte
                with contextlib.suppress(OSError):
                    while os.write(descriptor, b"\0" * chunk):
                        pass
        finally:
            os.close(descriptor)
        try:
            yield
        finally:
            filler.unlink()

    # ----------------------------------------------------------------- the end

    def close(self) -> None:
        """Stop everything this system started, whatever state it is in."""
        if self.runner is not None and self.runner.process.poll() is None:
            self.runner.process.send_signal(signal.SIGTERM)
            try:
                self.runner.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.runner.process.kill()
        for pid_path in self.var.glob("run/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_path.read_text().split()[0]), signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.redis_pid(), signal.SIGKILL)
        if self.sim is not None:
            self.sim.stop()
        if self.runner is not None:
            (self.directory / "runner.log").write_text(self.runner.output())
        print(f"chaos recoveries (s): {json.dumps(self.recoveries)}")
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.var)], check=False)


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` on `path` (root only); False when this machine does not allow it."""
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    return done.returncode == 0
