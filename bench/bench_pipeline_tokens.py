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
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keepa_deals import deals  # noqa: E402
from keepa_deals.backfiller import run_backfill  # noqa: E402
from keepa_deals.config import load_settings  # noqa: E402
from keepa_deals.constants import DEAL_PAGE_SIZE  # noqa: E402
from keepa_deals.keepa_api import KeepaClient, KeepaError  # noqa: E402
from keepa_deals.redis_server import PrivateRedis, connect, free_port  # noqa: E402
from keepa_deals.simple_task import run_upserter  # noqa: E402
from keepa_deals.task_runtime import PipelineServices  # noqa: E402
from keepa_sim import DEFAULT_API_KEY  # noqa: E402

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


class Simulator:
    """`python -m keepa_sim` on a free port with the benchmark's plan."""

    def __init__(self, workdir: Path, name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"seed": 11, "catalogue": {"n_products": N_PRODUCTS, "domains": [1]},
                  "clock": {"mode": "scaled", "minute_ms": MINUTE_MS},
                  "keys": {DEFAULT_API_KEY: {"refill_rate": REFILL_RATE, "initial_tokens": 0}}}
        config_path = workdir / f"sim-{name}.json"
        config_path.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keepa_sim", "--host", "127.0.0.1", "--port", str(self.port),
             "--config", str(config_path)],
            cwd=ROOT, stdout=(workdir / f"sim-{name}.log").open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/_sim/state", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"simulator did not start; see {workdir}/sim-{name}.log")
            time.sleep(0.1)
        requests.get(self.url + "/_sim/deals/truth",
                     params={"selection": json.dumps(QUERY)}, timeout=60)  # warm the catalogue
        requests.post(self.url + "/_sim/reset", json={}, timeout=10).raise_for_status()
        self.started_ms = self.clock_ms()

    def clock_ms(self) -> int:
        return requests.get(self.url + "/_sim/state", timeout=10).json()["clock"]["now_ms"]

    def figures(self, policy: str, until_ms: int) -> Figures:
        log = requests.get(self.url + "/_sim/requests", timeout=30).json()["requests"]
        paid = [e for e in log if e["path"].strip("/") in ("deal", "product")
                and e["time_ms"] <= until_ms]
        useful = sum(e["cost"] for e in paid if e["status"] == 200 and not e.get("fault"))
        ticks = (until_ms - self.started_ms) // MINUTE_MS
        return Figures(policy, REFILL_RATE * ticks, useful, len(paid),
                       sum(1 for e in paid if e["status"] == 429))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


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


class _NoGate:
    """The naive policy has no shared bucket: every request goes out at once."""

    def reserve(self, cost, **_):
        return None

    def reconcile(self, reservation, envelope, *, status=None):
        pass

    def sync(self, envelope):
        pass


class NaivePolicy:
    """Check /token and abort when it looks too low; fixed sleeps of one refill period."""

    def __init__(self, sim: Simulator, stop: threading.Event, *, sleep_after_batch: bool):
        self._stop = stop
        self._sleep_after_batch = sleep_after_batch
        self._client = KeepaClient(sim.url, DEFAULT_API_KEY, _NoGate(), max_consecutive_429=1,
                                   max_transient_retries=1, retry_backoff_s=0.05)
        self._period_s = MINUTE_MS / 1000
        self._price_type = deals.selection_price_type(QUERY)
        self._date_range = deals.selection_date_range(QUERY)

    def _afford(self, cost: int) -> bool:
        if self._client.token_status().tokens_left >= cost:
            return True
        self._stop.wait(self._period_s)  # "not enough tokens, try again in a minute"
        return False

    def _page(self, number: int, sort_type: int):
        if not self._afford(5):
            return None
        try:
            response = self._client.deals({**QUERY, "sortType": sort_type}, page=number)
        except KeepaError:
            return None
        return deals.parse_deal_page(response.payload, domain_id=1,
                                     price_type=self._price_type, date_range=self._date_range)

    def _enrich(self, asins: list[str]) -> None:
        while not self._stop.is_set() and not self._afford(len(asins)):
            pass
        with contextlib.suppress(KeepaError):  # a failed call just wasted its tokens
            self._client.products(asins)
        if self._sleep_after_batch:
            self._stop.wait(self._period_s)  # "60 s between chunks"

    def backfill(self) -> None:
        number = 0
        while not self._stop.is_set():
            page = self._page(number, 4)
            if page is None:
                continue
            asins = [r.asin for r in page.records]
            for start in range(0, len(asins), NAIVE_BATCH):
                if self._stop.is_set():
                    return
                self._enrich(asins[start:start + NAIVE_BATCH])
            number = 0 if page.deal_count < DEAL_PAGE_SIZE else number + 1

    def upsert(self) -> None:
        if self._client.token_status().tokens_left < NAIVE_UPSERT_THRESHOLD:
            return  # "not enough tokens, try next run" (FAILURES T3)
        page = self._page(0, 1)
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
        redis_server = PrivateRedis(workdir / "redis", port=free_port())
        redis_url = redis_server.start()
        try:
            for name, run in policies.items():
                sim = Simulator(workdir, name)
                try:
                    results.append(sim.figures(name, run(sim, redis_url, workdir)))
                finally:
                    sim.stop()
        finally:
            redis_server.stop(save=False)
    print(f"{SIM_MINUTES} simulated minutes per policy, refill {REFILL_RATE}/min, "
          f"tick {MINUTE_MS} ms, {N_PRODUCTS} products, backfill + upserter every "
          f"{UPSERT_INTERVAL_S:g} s")
    print(f"{'policy':11} {'available':>9} {'useful':>7} {'util':>7} {'requests':>8} "
          f"{'429s':>5} {'429 %':>6}")
    for f in results:
        print(f"{f.policy:11} {f.available:9d} {f.useful:7d} {f.utilisation:7.1%} "
              f"{f.requests:8d} {f.http_429:5d} {f.share_429:6.1%}")
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
