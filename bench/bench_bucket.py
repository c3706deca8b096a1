"""Benchmark of the shared token bucket; every figure is printed beside a baseline run here.

1. Overhead: acquire+reconcile pairs per second from one process, against a plain Redis
   INCRBY+GET round-trip pair (the cheapest possible "shared counter").
2. Token utilisation against the Keepa simulator over SIM_MINUTES simulated minutes: tokens spent
   ÷ tokens the plan made available, for the bucket (KeepaClient through TokenBucket) and for a
   naive policy run at the same time on a second key (check /token; send if the balance covers
   the cost, else sleep one simulated minute; FAILURES.md T7).

Starts its own redis-server and simulator on free ports; runs in well under 2 minutes.
Usage: .venv/bin/python bench/bench_bucket.py
"""

from __future__ import annotations

import random
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from bench_support import NoGate, SimulatorProcess, private_redis, table_row

from keepa_deals.constants import PRIORITY_BACKFILL
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.keepa_api import KeepaClient
from keepa_deals.redis_server import connect
from keepa_deals.tokens import TokenBucket
from keepa_sim.request_log import key_label

PAIRS = 3_000
MINUTE_MS = 250
SIM_MINUTES = 60
RATE = 20
COSTS = (10, 100)  # product batches of this many ASINs (1 token each)
KEY_BUCKET = "BenchBucketPolicyKey".ljust(64, "0")
KEY_NAIVE = "BenchNaivePolicyKey".ljust(64, "0")
SIM_CONFIG = {"clock": {"mode": "scaled", "minute_ms": MINUTE_MS},
              "keys": {key: {"refill_rate": RATE, "initial_tokens": 0}
                       for key in (KEY_BUCKET, KEY_NAIVE)},
              "catalogue": {"n_products": 200}}


def pairs_per_second(redis_url: str) -> tuple[float, float]:
    """(bucket acquire+reconcile pairs/s, INCRBY+GET pairs/s)."""
    client = connect(redis_url)
    bucket = TokenBucket(client, refill_period_ms=60_000, name="bench-pairs")
    bucket.sync(TokenEnvelope(timestamp_ms=1, tokens_left=10**9, refill_in_ms=60_000,
                              refill_rate=10**7))
    started = time.perf_counter()
    for i in range(PAIRS):
        grant = bucket.acquire(1, PRIORITY_BACKFILL, "bench")
        bucket.reconcile(grant.reservation, TokenEnvelope(
            timestamp_ms=2 + i, tokens_left=10**9 - i, refill_in_ms=60_000, refill_rate=10**7,
            tokens_consumed=1), status=200)
    bucket_rate = PAIRS / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(PAIRS):
        client.incrby("kd:bench:counter", 1)
        client.get("kd:bench:counter")
    baseline_rate = PAIRS / (time.perf_counter() - started)
    client.delete("kd:bench:counter")
    return bucket_rate, baseline_rate


def asins(rng: random.Random, count: int) -> list[str]:
    alphabet = string.digits + string.ascii_uppercase
    return ["B0" + "".join(rng.choices(alphabet, k=8)) for _ in range(count)]


def bucket_policy(sim_url: str, redis_url: str, ends: float) -> None:
    bucket = TokenBucket(connect(redis_url), refill_period_ms=MINUTE_MS, name="bench-util")
    client = KeepaClient(sim_url, KEY_BUCKET, bucket, task="bench", retry_backoff_s=0.02)
    rng = random.Random(7)
    while time.monotonic() < ends:
        client.products(asins(rng, rng.randint(*COSTS)), stats=None)


def naive_policy(sim_url: str, ends: float) -> None:
    client = KeepaClient(sim_url, KEY_NAIVE, NoGate(), task="naive", retry_backoff_s=0.02)
    rng = random.Random(7)
    cost = rng.randint(*COSTS)
    while time.monotonic() < ends:
        if client.token_status().tokens_left >= cost:
            client.products(asins(rng, cost), stats=None)
            cost = rng.randint(*COSTS)
        else:
            time.sleep(MINUTE_MS / 1000)  # "sleep 60 s and check again"


def utilisation(sim_url: str, redis_url: str) -> dict[str, float]:
    """Tokens spent and paid for ÷ tokens the plan made available (rate × ticks), per policy.

    Both keys start at 0; a deficit left at the end (tokens borrowed from the next ticks) is not
    counted as used.
    """
    keys = (KEY_BUCKET, KEY_NAIVE)
    for key in keys:
        requests.post(sim_url + "/_sim/tokens", json={"key": key, "tokens": 0}, timeout=5)
    before = _buckets(sim_url, keys)
    started = time.monotonic()
    ends = started + SIM_MINUTES * MINUTE_MS / 1000
    threads = [threading.Thread(target=bucket_policy, args=(sim_url, redis_url, ends)),
               threading.Thread(target=naive_policy, args=(sim_url, ends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = _buckets(sim_url, keys)
    return {key: (after[key]["consumed"] - before[key]["consumed"]
                  - max(0, -after[key]["tokens"])) / _made_available(before[key], after[key])
            for key in keys}


def _made_available(before: dict, after: dict) -> int:
    """The refill of the ticks the simulator applied between two states of one key."""
    return RATE * (after["next_tick_ms"] - before["next_tick_ms"]) // MINUTE_MS


def _buckets(sim_url: str, keys) -> dict[str, dict]:
    state = requests.get(sim_url + "/_sim/state", timeout=5).json()
    return {key: state["buckets"][key_label(key)] for key in keys}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-bucket-") as tmp, \
            private_redis(Path(tmp)) as redis_url:
        sim = SimulatorProcess(Path(tmp), "bucket", SIM_CONFIG)
        try:
            bucket_pairs, baseline_pairs = pairs_per_second(redis_url)
            used = utilisation(sim.url, redis_url)
        finally:
            sim.stop()
    rows = [
        ("acquire+reconcile pairs/s", f"{bucket_pairs:,.0f}",
         f"INCRBY+GET {baseline_pairs:,.0f}", bucket_pairs / baseline_pairs),
        (f"token utilisation, {SIM_MINUTES} sim min", f"{used[KEY_BUCKET]:.1%}",
         f"naive {used[KEY_NAIVE]:.1%}", used[KEY_BUCKET] / used[KEY_NAIVE]),
    ]
    widths = (34, 12, 24, 8)
    print(table_row(("measure", "bucket", "baseline", "ratio"), widths))
    for name, value, baseline, ratio in rows:
        print(table_row((name, value, baseline, f"{ratio:.2f}"), widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
