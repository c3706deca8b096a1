"""Soak: the whole system for 24 simulated hours under faults on a seeded random schedule.

The runner (as `make run` starts it: private Redis under its keeper, Celery worker and beat, the
dashboard) runs against a simulator whose clock goes SPEED times faster than the wall clock
(`--speed`, deal data and token ticks alike; the collector's refill period, intervals and
ENRICH_MAX_AGE_H are scaled to match), on a 1 000-product catalogue whose ~380-deal query keeps
changing, with background faults on every request (5xx, resets, hangs, truncated JSON). Every
FAULT_EVERY_S (jittered) one fault is drawn with a seeded generator: SIGKILL of the worker, of
beat or of redis-server; SIGSTOP of the backfill lease holder for over two lease TTLs; a Keepa
outage; the database locked by an outside writer. After each, the recovery time is how long
until every service runs again and every deal the simulator listed when the fault was cleared is
stored at least that new.

At the end the simulator's clock stops, faults go off, and once the table has settled it is
compared with the ground truth. Printed: faults survived, longest recovery, deals lost (must be
0), each process's RSS at the start and end (and the ratio end/start), Redis memory, log lines
per simulated hour. Exit status 1 when a target is missed.

Run: .venv/bin/python bench/soak.py [--hours 24] [--speed 240] [--seed 1]   (about 8 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from bench_support import ROOT, SimulatorProcess

from keepa_deals import db
from keepa_deals.heartbeats import read_beat
from keepa_deals.keepa_time import keepa_minute_to_unix
from keepa_deals.processes import process_alive
from keepa_deals.redis_server import connect, free_port
from keepa_sim import DEFAULT_API_KEY

QUERY = {"domainId": 1, "priceTypes": [2], "dateRange": 3, "sortType": 4}
BACKGROUND_FAULTS = {
    "http_5xx": {"p": 0.03, "codes": {"502": 0.5, "503": 0.5}, "html_body": True},
    "reset": {"p": 0.01},
    "hang": {"p": 0.005, "ms": 3_000},
    "malformed_json": {"p": 0.01, "mode": ["truncate"]},
}
OUTAGE = {**{kind: {"p": 0.0} for kind in BACKGROUND_FAULTS},
          "http_5xx": {"p": 1.0, "codes": {"502": 0.5, "503": 0.5}, "html_body": True}}
LOCK_TTL_S = 3
FAULT_EVERY_S = 25.0
FAULT_KINDS = ("worker SIGKILL", "beat SIGKILL", "redis SIGKILL", "lease holder SIGSTOP",
               "Keepa outage", "database locked")
OUTAGE_S = 8.0
DATABASE_LOCKED_S = 10.0
RECOVERY_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 300.0
# Targets: nothing lost, every recovery bounded, no process growing without bound.
MAX_RECOVERY_S = 60.0
MAX_RSS_GROWTH = 1.5


class System:
    """The simulator and the runner, and the levers the schedule pulls."""

    def __init__(self, workdir: Path, speed: float, seed: int):
        self.workdir = workdir
        self.var = workdir / "var"
        self.database = self.var / "deals.db"
        self.sim = SimulatorProcess(workdir, "soak", {
            "seed": seed, "catalogue": {"n_products": 1000, "domains": [1]},
            "clock": {"speed": speed}, "default_refill_rate": 20,
            "keys": {DEFAULT_API_KEY: {"initial_tokens": 1200}},
            "faults": BACKGROUND_FAULTS})
        query = workdir / "query.json"
        query.write_text(json.dumps(QUERY))
        minute_s = 60 / speed
        env = {key: value for key, value in os.environ.items()
               if key not in ("KEEPA_API_KEY", "REDIS_URL", "DATABASE_PATH", "PYTHONPATH")}
        env.update(KEEPA_API_URL=self.sim.url, KEEPA_QUERY_PATH=str(query),
                   VAR_DIR=str(self.var), KEEPA_SIM_PORT=str(free_port()),
                   DASHBOARD_PORT=str(free_port()),
                   KEEPA_REFILL_PERIOD_MS=str(round(60_000 / speed)),
                   BACKFILL_INTERVAL_S=str(max(1, round(minute_s))),
                   UPSERT_INTERVAL_S=str(max(1, round(minute_s))),
                   ENRICH_MAX_AGE_H=f"{24 / speed:.4f}", LOCK_TTL_S=str(LOCK_TTL_S),
                   TASK_SLICE_S="6", KEEPA_READ_TIMEOUT_S="3")
        self.log_lines: Counter[str] = Counter()
        self.log = (workdir / "runner.log").open("w")
        self.runner = subprocess.Popen(
            [sys.executable, "-m", "keepa_deals.runner", "--stop-timeout", "15"], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90):
            self.stop()
            raise SystemExit(f"the system did not start; see {workdir / 'runner.log'}")

    def _read(self) -> None:
        for line in self.runner.stdout:
            self.log.write(line)
            self.log_lines[line.split("|", 1)[0].strip() if "|" in line else "runner"] += 1
            if "==> keepa-deals is running" in line:
                self.ready.set()

    # ------------------------------------------------------------------ what runs

    def pid(self, service: str) -> int | None:
        try:
            return int((self.var / "run" / f"{service}.pid").read_text())
        except (OSError, ValueError):
            return None

    def redis_pid(self) -> int | None:
        try:
            return int((self.var / "redis" / "redis.pid").read_text())
        except (OSError, ValueError):
            return None

    def redis(self):
        return connect((self.var / "redis" / "redis.url").read_text().strip())

    def processes(self) -> dict[str, list[int]]:
        """{name: pids} of every process of the system (the worker with its pool)."""
        found = {"runner": [self.runner.pid]}
        for name in ("redis", "worker", "beat", "dashboard"):
            pid = self.pid(name)
            if pid:
                found["redis keeper" if name == "redis" else name] = [pid] + (
                    children(pid) if name == "worker" else [])
        server = self.redis_pid()
        if server:
            found["redis-server"] = [server]
        return found

    def alive(self) -> bool:
        return self.runner.poll() is None

    # ------------------------------------------------------------------ deals

    def truth(self) -> dict[str, int]:
        answer = requests.post(self.sim.url + "/_sim/deals/truth", json={"selection": QUERY},
                               timeout=30).json()
        return {d["asin"]: keepa_minute_to_unix(d["lastUpdate"]) for d in answer["deals"]}

    def stored(self) -> dict[str, int]:
        return db.stored_versions(self.database)

    def behind(self, wanted: dict[str, int]) -> list[str]:
        """Deals of `wanted` still listed by the source but stored older than wanted."""
        listed = self.truth()
        stored = self.stored()
        return [a for a, t in wanted.items() if a in listed and stored.get(a, 0) < t]

    def services_back(self) -> bool:
        """Every service runs again, beat with its heartbeat in Redis."""
        pids = {name: self.pid(name) for name in ("redis", "worker", "beat", "dashboard")}
        if not all(pid and process_alive(pid) for pid in pids.values()):
            return False
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            return (read_beat(self.redis()) or {}).get("pid") == pids["beat"]
        return False

    def caught_up(self, wanted: dict[str, int], timeout: float) -> float | None:
        """Seconds until every service is back and nothing of `wanted` is behind, None after
        `timeout`."""
        began = time.monotonic()
        while not self.services_back() or self.behind(wanted):
            if time.monotonic() - began > timeout:
                return None
            time.sleep(0.5)
        return time.monotonic() - began

    # ------------------------------------------------------------------ faults

    def inject(self, kind: str) -> None:
        """Apply one fault and return once it is cleared (a kill clears at once)."""
        if kind == "worker SIGKILL":
            signal_pid(self.pid("worker"), signal.SIGKILL)
        elif kind == "beat SIGKILL":
            signal_pid(self.pid("beat"), signal.SIGKILL)
        elif kind == "redis SIGKILL":
            signal_pid(self.redis_pid(), signal.SIGKILL)
        elif kind == "lease holder SIGSTOP":
            holder = self.lease_holder()
            signal_pid(holder, signal.SIGSTOP)
            time.sleep(2 * LOCK_TTL_S + 1)
            signal_pid(holder, signal.SIGCONT)
        elif kind == "Keepa outage":
            self.sim_faults(OUTAGE)
            time.sleep(OUTAGE_S)
            self.sim_faults(BACKGROUND_FAULTS)
        elif kind == "database locked":
            conn = sqlite3.connect(self.database, timeout=30, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            time.sleep(DATABASE_LOCKED_S)
            conn.execute("ROLLBACK")
            conn.close()

    def lease_holder(self) -> int | None:
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            value = self.redis().get("kd:lock:backfill_deals_lock")
            return json.loads(value)["pid"] if value else None
        return None

    def sim_faults(self, faults: dict) -> None:
        requests.post(self.sim.url + "/_sim/config", json={"faults": faults}, timeout=10)

    def freeze(self) -> None:
        requests.post(self.sim.url + "/_sim/clock", json={"freeze": True}, timeout=10)
        no_faults = {kind: {"p": 0.0} for kind in BACKGROUND_FAULTS}
        self.sim_faults(no_faults)
        # a frozen clock no longer refills: enough tokens to finish
        requests.post(self.sim.url + "/_sim/tokens",
                      json={"key": DEFAULT_API_KEY, "tokens": 50_000}, timeout=10)

    def keepa_minute(self) -> int:
        return self.sim.state()["clock"]["keepa_minute"]

    def stop(self) -> None:
        if self.runner.poll() is None:
            self.runner.send_signal(signal.SIGTERM)
            try:
                self.runner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.runner.kill()
        self.sim.stop()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def signal_pid(pid: int | None, signum: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24, help="simulated hours (24)")
    parser.add_argument("--speed", type=float, default=240, help="simulator speed factor (240)")
    parser.add_argument("--seed", type=int, default=1, help="fault schedule seed (1)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="kd-soak-"))
    system = System(workdir, args.speed, args.seed)
    wall_start = time.monotonic()
    result = Result(workdir)
    try:
        system.caught_up(system.truth(), RECOVERY_TIMEOUT_S)
        start_minute = system.keepa_minute()
        result.rss_start = {name: rss_mb(pids) for name, pids in system.processes().items()}
        result.redis_mb[0] = system.redis().info("memory")["used_memory"] / 2**20
        while system.keepa_minute() - start_minute < args.hours * 60 and system.alive():
            time.sleep(rng.uniform(0.5, 1.5) * FAULT_EVERY_S)
            kind = rng.choice(FAULT_KINDS)
            system.inject(kind)
            recovery = system.caught_up(system.truth(), RECOVERY_TIMEOUT_S)
            result.faults.append((kind, recovery))
            shown = f"NOT within {RECOVERY_TIMEOUT_S:.0f} s" if recovery is None else \
                f"{recovery:.1f} s"
            print(f"{(time.monotonic() - wall_start) / 60:5.1f} min  {kind:<22} recovered "
                  f"{shown}", flush=True)
        result.hours = (system.keepa_minute() - start_minute) / 60
        result.rss_end = {name: rss_mb(pids) for name, pids in system.processes().items()}
        result.redis_mb[1] = system.redis().info("memory")["used_memory"] / 2**20
        system.freeze()
        truth = system.truth()
        system.caught_up(truth, SETTLE_TIMEOUT_S)
        stored = system.stored()
        result.deals = len(truth)
        result.lost = [a for a, t in truth.items() if stored.get(a, 0) != t]
        result.alive = system.alive()
    finally:
        system.stop()
    result.log_lines = system.log_lines
    result.wall_s = time.monotonic() - wall_start
    return report(result, args)


@dataclass
class Result:
    """What the soak measured."""

    workdir: Path
    faults: list[tuple[str, float | None]] = field(default_factory=list)  # (kind, recovery s)
    hours: float = 0.0
    deals: int = 0
    lost: list[str] = field(default_factory=list)
    rss_start: dict[str, float] = field(default_factory=dict)
    rss_end: dict[str, float] = field(default_factory=dict)
    redis_mb: list[float] = field(default_factory=lambda: [0.0, 0.0])
    log_lines: Counter = field(default_factory=Counter)
    alive: bool = False
    wall_s: float = 0.0


def report(result: Result, args) -> int:
    recoveries = [r for _, r in result.faults if r is not None]
    longest = max(recoveries, default=0.0)
    unrecovered = [kind for kind, r in result.faults if r is None]
    hours = result.hours
    print(f"\nsoak: {hours:.1f} simulated hours at speed {args.speed:g} "
          f"({result.wall_s / 60:.1f} min wall), seed {args.seed}; logs in {result.workdir}")
    kinds = Counter(kind for kind, _ in result.faults)
    print(f"faults survived: {len(result.faults) - len(unrecovered)} of {len(result.faults)} "
          f"({', '.join(f'{kind} {n}' for kind, n in kinds.items())})")
    print(f"longest recovery: {longest:.1f} s (target ≤ {MAX_RECOVERY_S:g} s)")
    print(f"deals lost: {len(result.lost)} of {result.deals} (target 0)")
    print("RSS MB at start → end (ratio):")
    growth = {}
    for name, start in result.rss_start.items():
        end = result.rss_end.get(name, 0.0)
        growth[name] = end / start if start else 0.0
        print(f"  {name:<14} {start:7.1f} → {end:7.1f}  ({growth[name]:.2f}×)")
    print(f"redis memory: {result.redis_mb[0]:.1f} → {result.redis_mb[1]:.1f} MB")
    print("log lines per simulated hour: " + ", ".join(
        f"{name} {count / max(hours, 1e-9):.0f}"
        for name, count in sorted(result.log_lines.items())))
    missed = []
    if result.lost:
        missed.append(f"{len(result.lost)} deals lost, e.g. {result.lost[:5]}")
    if unrecovered or longest > MAX_RECOVERY_S:
        missed.append(f"recovery: longest {longest:.1f} s, unrecovered {unrecovered}")
    grown = {name: round(g, 2) for name, g in growth.items() if g > MAX_RSS_GROWTH}
    if grown:
        missed.append(f"RSS grew more than {MAX_RSS_GROWTH}×: {grown}")
    if not result.alive:
        missed.append("the runner stopped (a service was given up)")
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
