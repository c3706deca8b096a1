"""Token utilisation of the two pipeline tasks sharing one bucket, beside a naive policy.

Both policies run for SIM_MINUTES refill ticks against their own simulator (same seed, same
plan, starting from an empty balance) and their own Redis keys / SQLite file:

* pipeline: `run_backfill` in a loop of slices and `run_upserter` every UPSERT_INTERVAL_S, in
  two threads, through the shared TokenBucket (reserve → request → reconcile);
* naive: the same work with "check-and-abort plus fixed sleeps" as the earlier collector did it
  (FAILURES T3, T6, T7): a hard-coded batch of 20 ASINs; before a paid call, read /token and give
  up (sleep one refill period) when the balance is below the cost; after each batch, a fixed
  sleep of one period; the upserter skips its run below a threshold. Both threads spend on
  their own reading (no shared reservation, T4);
* abort-only: the naive policy without the fixed sleep after each batch (a stronger baseline).

"Available" = the tokens the plan made available while the policy ran (refill rate × ticks; the
key starts empty); "useful" = tokens charged, in that window, for answers the client could use
(HTTP 200 without an injected fault), from the simulator's request log. A request admitted at a
small positive balance may overdraw the key (Keepa's rule), so useful can exceed available by
up to one batch. Figures are printed as a table and as the
pipeline/naive ratio. Targets: pipeline utilisation >= 95 %, 429s <= 1 % of requests; the exit
status is 1 when a target is missed.

Run: .venv/bin/python bench/bench_pipeline_tokens.py   (about a minute; starts its own Redis
and simulators on free ports; nothing else needs to run).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from bench_support import CheckAndAbort, SimulatorProcess, private_redis, table_row

from keepa_deals.backfiller import run_backfill
from keepa_deals.config import load_settings
from keepa_deals.constants import DEAL_PAGE_SIZE
from keepa_deals.keepa_api import KeepaError
from keepa_deals.redis_server import connect
from keepa_deals.simple_task import run_upserter
from keepa_deals.task_runtime import PipelineServices
from keepa_sim import DEFAULT_API_KEY

SIM_MINUTES = 40
MINUTE_MS = 500
REFILL_RATE = 60
N_PRODUCTS = 4000
UPSERT_INTERVAL_S = 2.0
SLICE_S = 5.0
NAIVE_BATCH = 20  # the naive policy's fixed batch size (it never reads the refill rate)
NAIVE_UPSERT_THRESHOLD = 50
QUERY = {"domainId": 1, "priceTypes": [2], "dateRange": 3, "sortType": 4}
TARGET_UTILISATION = 0.95
TARGET_429_SHARE = 0.01


@dataclass(frozen=True)
class Figures:
    policy: str
    available: int
    useful: int
    requests: int
    http_429: int

    @property
    def utilisation(self) -> float:
        return self.useful / self.available if self.available else 0.0

    @property
    def share_429(self) -> float:
        return self.http_429 / self.requests if self.requests else 0.0


class Simulator(SimulatorProcess):
    """The simulator with the benchmark's plan, its catalogue warmed and its request log reset."""

    def __init__(self, workdir: Path, name: str):
        super().__init__(workdir, name, {
            "seed": 11, "catalogue": {"n_products": N_PRODUCTS, "domains": [1]},
            "clock": {"mode": "scaled", "minute_ms": MINUTE_MS},
            "keys": {DEFAULT_API_KEY: {"refill_rate": REFILL_RATE, "initial_tokens": 0}}})
        requests.get(self.url + "/_sim/deals/truth",
                     params={"selection": json.dumps(QUERY)}, timeout=60)  # warm the catalogue
        requests.post(self.url + "/_sim/reset", json={}, timeout=10).raise_for_status()
        self.started_ms = self.clock_ms()

    def clock_ms(self) -> int:
        return self.state()["clock"]["now_ms"]

    def figures(self, policy: str, until_ms: int) -> Figures:
        log = requests.get(self.url + "/_sim/requests", timeout=30).json()["requests"]
        paid = [e for e in log if e["path"].strip("/") in ("deal", "product")
                and e["time_ms"] <= until_ms]
        useful = sum(e["cost"] for e in paid if e["status"] == 200 and not e.get("fault"))
        ticks = (until_ms - self.started_ms) // MINUTE_MS
        return Figures(policy, REFILL_RATE * ticks, useful, len(paid),
                       sum(1 for e in paid if e["status"] == 429))


def settings_for(redis_url: str, sim: Simulator, workdir: Path, name: str):
    query_path = workdir / "query.json"
    query_path.write_text(json.dumps(QUERY))
    return load_settings({
        "REDIS_URL": redis_url, "KEEPA_API_URL": sim.url,
        "DATABASE_PATH": str(workdir / f"{name}.db"), "VAR_DIR": str(workdir / "var"),
        "KEEPA_QUERY_PATH": str(query_path), "KEEPA_REFILL_PERIOD_MS": str(MINUTE_MS),
        "TASK_SLICE_S": str(SLICE_S), "LOCK_TTL_S": "5",
    }, dotenv_path=os.devnull)


def run_for_the_window(sim: Simulator, threads: list[threading.Thread],
                       stop: threading.Event) -> int:
    """Let the threads work SIM_MINUTES ticks; returns the simulator time when they were told
    to stop (the end of the measured window)."""
    time.sleep(SIM_MINUTES * MINUTE_MS / 1000)
    until_ms = sim.clock_ms()
    stop.set()
    for thread in threads:
        thread.join(timeout=SLICE_S + 30)
    return until_ms


def repeat_until(stop: threading.Event, action, pause_s: float = 0.0) -> threading.Thread:
    def loop():
        while not stop.is_set():
            action()
            if pause_s:
                stop.wait(pause_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- the policies

def run_pipeline(redis_url: str, sim: Simulator, workdir: Path) -> int:
    services = PipelineServices.from_settings(settings_for(redis_url, sim, workdir, "pipeline"),
                                              connect(redis_url))
    stop = threading.Event()
    threads = [repeat_until(stop, lambda: run_backfill(services)),
               repeat_until(stop, lambda: run_upserter(services), UPSERT_INTERVAL_S)]
    return run_for_the_window(sim, threads, stop)


class NaivePolicy:
    """Check /token and abort when it looks too low; fixed sleeps of one refill period."""

    def __init__(self, sim: Simulator, stop: threading.Event, *, sleep_after_batch: bool):
        self._stop = stop
        self._sleep_after_batch = sleep_after_batch
        self._keepa = CheckAndAbort(sim.url, DEFAULT_API_KEY, QUERY, period_s=MINUTE_MS / 1000,
                                    stop=stop)

    def _enrich(self, asins: list[str]) -> None:
        self._keepa.wait_until_affordable(len(asins))
        with contextlib.suppress(KeepaError):  # a failed call just wasted its tokens
            self._keepa.client.products(asins)
        if self._sleep_after_batch:
            self._stop.wait(self._keepa.period_s)  # "60 s between chunks"

    def backfill(self) -> None:
        number = 0
        while not self._stop.is_set():
            page = self._keepa.page(number, 4)
            if page is None:
                continue
            asins = [r.asin for r in page.records]
            for start in range(0, len(asins), NAIVE_BATCH):
                if self._stop.is_set():
                    return
                self._enrich(asins[start:start + NAIVE_BATCH])
            number = 0 if page.deal_count < DEAL_PAGE_SIZE else number + 1

    def upsert(self) -> None:
        if (self._keepa.tokens_left() or 0) < NAIVE_UPSERT_THRESHOLD:
            return  # "not enough tokens, try next run" (FAILURES T3)
        page = self._keepa.page(0, 1)
        if page is not None and page.records:
            self._enrich([r.asin for r in page.records[:NAIVE_BATCH]])


def run_naive(sim: Simulator, *, sleep_after_batch: bool) -> int:
    stop = threading.Event()
    policy = NaivePolicy(sim, stop, sleep_after_batch=sleep_after_batch)
    threads = [repeat_until(stop, policy.backfill),
               repeat_until(stop, policy.upsert, UPSERT_INTERVAL_S)]
    return run_for_the_window(sim, threads, stop)


# --------------------------------------------------------------------------- the report

def main() -> int:
    started = time.monotonic()
    policies = {
        "pipeline": lambda sim, redis_url, workdir: run_pipeline(redis_url, sim, workdir),
        "naive": lambda sim, *_: run_naive(sim, sleep_after_batch=True),
        "abort-only": lambda sim, *_: run_naive(sim, sleep_after_batch=False),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workdir = Path(tmp)
        with private_redis(workdir) as redis_url:
            for name, run in policies.items():
                sim = Simulator(workdir, name)
                try:
                    results.append(sim.figures(name, run(sim, redis_url, workdir)))
                finally:
                    sim.stop()
    print(f"{SIM_MINUTES} simulated minutes per policy, refill {REFILL_RATE}/min, "
          f"tick {MINUTE_MS} ms, {N_PRODUCTS} products, backfill + upserter every "
          f"{UPSERT_INTERVAL_S:g} s")
    widths = (11, 9, 7, 7, 8, 5, 6)
    print(table_row(("policy", "available", "useful", "util", "requests", "429s", "429 %"),
                    widths, sep=" "))
    for f in results:
        print(table_row((f.policy, str(f.available), str(f.useful), f"{f.utilisation:.1%}",
                         str(f.requests), str(f.http_429), f"{f.share_429:.1%}"),
                        widths, sep=" "))
    pipeline = results[0]
    for baseline in results[1:]:
        ratio = (pipeline.utilisation / baseline.utilisation if baseline.utilisation
                 else float("inf"))
        print(f"ratio pipeline/{baseline.policy} utilisation: {ratio:.2f}x")
    print(f"wall time: {time.monotonic() - started:.0f} s")
    ok = (pipeline.utilisation >= TARGET_UTILISATION
          and pipeline.share_429 <= TARGET_429_SHARE)
    print("pipeline targets (utilisation >= 95 %, 429s <= 1 %):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
