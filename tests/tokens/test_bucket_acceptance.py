"""The shared bucket under real load: separate processes, the real KeepaClient, the simulator
as a real HTTP server with a fast refill clock, and a real Redis (restarted in one test).
"""

import multiprocessing
import random
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest
from bucket_load import LoadResult, LoadSpec, RecordingGate, random_asins, run_load
from support import wait_until

from keepa_deals.constants import PRIORITY_BACKFILL, PRIORITY_UPSERTER
from keepa_deals.keepa_api import KeepaClient
from keepa_deals.tokens import TokenBucket
from keepa_sim import DEFAULT_API_KEY
from keepa_sim.request_log import key_label

pytestmark = pytest.mark.timeout(120)


def start_sim(sim_factory, *, minute_ms, rate, initial=None, latency_ms=0):
    key = {"refill_rate": rate}
    if initial is not None:
        key["initial_tokens"] = initial
    return sim_factory(clock={"mode": "scaled", "minute_ms": minute_ms},
                       keys={DEFAULT_API_KEY: key}, catalogue={"n_products": 300},
                       latency={"base_ms": latency_ms, "jitter_ms": latency_ms})


def spec_for(sim, redis_server, *, minute_ms, **fields):
    base = LoadSpec(redis_url=redis_server.url, sim_url=sim.url, api_key=sim.key,
                    period_ms=minute_ms, task="backfill_deals", priority=PRIORITY_BACKFILL,
                    mix="backfill", seconds=1.0, seed=0)
    return replace(base, **fields)


def run_processes(specs: list[LoadSpec]) -> list[LoadResult]:
    with multiprocessing.get_context("fork").Pool(len(specs)) as pool:
        results = pool.map(run_load, specs)
    for result in results:
        assert not result.errors, result.errors[0]
    return results


def sim_bucket(sim) -> dict:
    return sim.state()["buckets"][key_label(sim.key)]


def tick_counter(sim, minute_ms):
    """Simulator tick boundaries passed between two wall-clock ms (its clock is the wall's)."""
    phase = sim_bucket(sim)["next_tick_ms"] % minute_ms
    return lambda start, end: (end - phase) // minute_ms - (start - phase) // minute_ms


def assert_bucket_matches_simulator(sim, redis_client, minute_ms):
    """At rest, a /token sync leaves the bucket exactly at the simulator's balance."""
    bucket = TokenBucket(redis_client, refill_period_ms=minute_ms)
    gate_client = KeepaClient(sim.url, sim.key, bucket)
    envelope = gate_client.token_status()
    snap = bucket.snapshot()
    assert snap["reserved"] == 0, "every reservation was reconciled"
    assert snap["balance"] == envelope.tokens_left
    assert abs(sim_bucket(sim)["tokens"] - snap["projected_balance"]) <= snap["refill_rate"], \
        "at most one tick apart between the two reads"


def test_four_processes_share_one_key_without_429s_or_deep_deficits(
        sim_factory, redis_server, redis_client):
    minute_ms, rate = 200, 100
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=rate, initial=500, latency_ms=15)
    seconds = 61 * minute_ms / 1000  # > 60 simulated minutes
    specs = [spec_for(sim, redis_server, minute_ms=minute_ms, seconds=seconds, seed=n,
                      sync_every=7, task=f"worker-{n}") for n in range(4)]
    results = run_processes(specs)

    statuses = sum((r.statuses for r in results), start=Counter())
    paid = statuses[200]
    assert paid > 100, statuses
    assert statuses[429] <= 0.01 * paid, statuses
    deepest = min(r.tokens_left for res in results for r in res.responses
                  if r.tokens_left is not None)
    assert deepest >= -100, f"deficit {deepest} deeper than one in-flight batch (max cost 100)"
    log_deepest = min(entry["balance_after"] for entry in sim.requests_log()
                      if entry.get("balance_after") is not None)
    assert log_deepest >= -100
    assert sum(r.sync_checks for r in results) >= 10
    assert [m for r in results for m in r.sync_mismatches] == []
    spent = sum(r.consumed for r in results)
    assert spent >= 0.8 * rate * 60, "the four processes together used the refill"
    assert_bucket_matches_simulator(sim, redis_client, minute_ms)


def test_the_upserter_goes_first_and_the_backfiller_keeps_its_share(
        sim_factory, redis_server, redis_client):
    minute_ms, rate = 400, 100  # rate >= the largest backfill batch: a deficit heals in a tick
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=rate, initial=100, latency_ms=10)
    seconds = 30 * minute_ms / 1000
    common = dict(minute_ms=minute_ms, seconds=seconds)
    specs = [spec_for(sim, redis_server, seed=n, task="backfill_deals", **common)
             for n in range(3)]
    # A greedy upserter (60-100 tokens per request) would take most of each tick's refill
    # if priority alone decided: the backfiller's share then rests on the guarantee.
    specs.append(spec_for(sim, redis_server, seed=9, task="update_recent_deals",
                          priority=PRIORITY_UPSERTER, mix="greedy", **common))
    *backfill, upserter = run_processes(specs)

    ticks = tick_counter(sim, minute_ms)
    ticks_waited = [ticks(start, end) for start, end in upserter.reserves]
    print(f"upserter reserves by ticks waited: {sorted(Counter(ticks_waited).items())}")
    assert len(ticks_waited) > 20
    assert max(ticks_waited) <= 2, "every upserter reserve is granted within two refill ticks"
    backfill_tokens = sum(r.consumed for r in backfill)
    share = backfill_tokens / (backfill_tokens + upserter.consumed)
    print(f"backfill share {share:.0%} of {backfill_tokens + upserter.consumed} tokens")
    assert share >= 0.30
    assert sum(r.statuses[429] for r in (*backfill, upserter)) == 0


def test_a_cost_above_the_whole_bucket_is_granted_into_deficit(sim_factory, redis_client):
    minute_ms = 40
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=1)  # ceiling 60, starts full
    result = LoadResult("backfill_deals", PRIORITY_BACKFILL)
    bucket = TokenBucket(redis_client, refill_period_ms=minute_ms)
    client = KeepaClient(sim.url, sim.key, RecordingGate(bucket, result), retry_backoff_s=0.02)
    asins = random_asins(random.Random(1), 100)
    first = client.products(asins, stats=None)
    assert first.envelope.tokens_consumed == 100 and first.envelope.tokens_left == -40
    second = client.products(asins, stats=None)  # waits for -40 -> 1: 41 ticks, not forever
    assert second.status == 200 and second.envelope.tokens_left <= -98
    assert 40 <= tick_counter(sim, minute_ms)(*result.reserves[1]) <= 43
    assert result.statuses == Counter({200: 2}), "no request was sent into a 429"


def test_lost_redis_state_is_resynced_from_token_and_the_run_continues(
        sim_factory, redis_server, redis_client):
    minute_ms = 200
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=100, initial=200, latency_ms=10)
    spec = spec_for(sim, redis_server, minute_ms=minute_ms, mix="batches", seconds=30)

    def paid_since(first_id):
        return [e for e in sim.requests_log() if e["id"] > first_id and e["path"] != "/token"]

    # Two threads keep spending while Redis loses everything under them.
    stop = threading.Event()
    results: list[LoadResult] = []
    threads = [threading.Thread(target=lambda n=n: results.append(
        run_load(replace(spec, seed=n), stop=stop))) for n in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(paid_since(0)) >= 10, 10, "load before the restart")
    before = max(e["id"] for e in sim.requests_log())
    redis_server.restart(keep_data=False)
    wait_until(lambda: len(paid_since(before)) >= 20, 15, "load after the restart")
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert len(results) == 2 and not any(r.errors for r in results), results
    statuses = sum((r.statuses for r in results), start=Counter())
    assert statuses[429] <= 0.01 * statuses[200], statuses
    assert_bucket_matches_simulator(sim, redis_client, minute_ms)

    # With nothing in flight, the next request finds no state and syncs from /token first.
    redis_server.restart(keep_data=False)
    before = max(e["id"] for e in sim.requests_log())
    client = KeepaClient(sim.url, sim.key, TokenBucket(redis_client, refill_period_ms=minute_ms))
    client.products(random_asins(random.Random(2), 10), stats=None)
    paths = [e["path"] for e in sim.requests_log() if e["id"] > before]
    assert paths == ["/token", "/product"]


def test_waits_follow_refill_rate_changes_within_one_response(
        sim_factory, redis_server, redis_client):
    minute_ms = 200
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=20, initial=0)
    spec = spec_for(sim, redis_server, minute_ms=minute_ms, mix="batches", seconds=30)
    stop = threading.Event()
    results: list[LoadResult] = []
    worker = threading.Thread(target=lambda: results.append(
        run_load(spec, stop=stop, record_rate=True)))
    worker.start()
    phases = [(20, 10), (80, 10), (5, 20)]  # (refill rate, ticks)
    changes = []
    for rate, ticks in phases:
        if changes:
            sim.tokens(refill_rate=rate)
        changes.append(time.time() * 1000)
        time.sleep(ticks * minute_ms / 1000)
    stop.set()
    worker.join(timeout=15)
    [result] = results
    assert not result.errors, result.errors[0]
    changes.append(time.time() * 1000)

    for index, (rate, _) in enumerate(phases):
        start, end = changes[index], changes[index + 1]
        responses = [r for r in result.responses if start <= r.at * 1000 < end]
        first_new = next(i for i, r in enumerate(responses) if r.refill_rate == rate)
        assert all(r.bucket_rate == rate for r in responses[first_new:]), \
            "the bucket adopts a new refill rate from the first response that reports it"
        # Throughput after the change settles = the new rate (waits follow the refill clock).
        settled = [r for r in responses if r.at * 1000 >= start + 2 * minute_ms]
        ticks = (end - start - 2 * minute_ms) / minute_ms
        per_tick = sum(r.consumed for r in settled) / ticks
        print(f"rate {rate}: {per_tick:.1f} tokens per tick")
        assert 0.7 * rate <= per_tick <= 1.3 * rate + 20 / ticks, (rate, per_tick)
        assert not any(r.status == 429 for r in responses), "no 429 after a downgrade either"


def test_a_forced_429_window_is_waited_out_at_most_one_429_per_client_per_tick(
        sim_factory, redis_server, redis_client):
    """Keepa-side 429s while the envelope reports a full balance: the bucket holds everybody
    until the tick each 429 names, so the clients neither burn their 429 retries in a burst
    (NotEnoughTokensError) nor send more than one probe per tick each."""
    minute_ms, window_ticks = 300, 2
    sim = start_sim(sim_factory, minute_ms=minute_ms, rate=20)  # a full bucket: 1200 tokens
    results = [LoadResult(task, priority) for task, priority in
               (("update_recent_deals", PRIORITY_UPSERTER), ("backfill_deals", PRIORITY_BACKFILL))]
    clients = [KeepaClient(sim.url, sim.key,
                           RecordingGate(TokenBucket(redis_client, refill_period_ms=minute_ms),
                                         result),
                           task=result.task, priority=result.priority, retry_backoff_s=0.02)
               for result in results]
    clients[0].token_status()
    opened = time.time() * 1000
    sim.config({"faults": {"forced_429": {"windows": [{"from_s": 0, "to_s": 60 * window_ticks}]}}})
    closed = opened + window_ticks * minute_ms
    # Each client keeps calling until a call is answered after the window (a 429 is retried
    # inside the call; too many in a row would raise NotEnoughTokensError).
    served_at: list[float] = []
    errors: list[str] = []

    def call_until_served(client, seed):
        rng = random.Random(seed)
        try:
            while not served_at or served_at[-1] <= closed:
                client.products(random_asins(rng, 5), stats=None)
                served_at.append(time.time() * 1000)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=call_until_served, args=(client, n))
               for n, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == [] and not any(thread.is_alive() for thread in threads)

    log = [e for e in sim.requests_log() if e["path"] == "/product"]
    rejected = [e["time_ms"] for e in log if e["status"] == 429]
    served = [e["time_ms"] for e in log if e["status"] == 200]
    assert rejected and all(opened - 2 <= t <= closed + 2 for t in rejected)
    assert served and min(served) >= closed - 2, "nothing is served inside the window"
    assert min(served) <= closed + 1.5 * minute_ms, "served at the first tick after the window"
    phase = sim_bucket(sim)["next_tick_ms"] % minute_ms
    per_tick = Counter((t - phase) // minute_ms for t in rejected)
    print(f"429s per tick: {sorted(per_tick.items())}")
    assert max(per_tick.values()) <= len(clients), "at most one 429 per client and tick"
    assert len(per_tick) <= window_ticks + 1, "a two-tick window touches at most three ticks"
    ledger = TokenBucket(redis_client, refill_period_ms=minute_ms).snapshot()["tasks"]
    assert sum(ledger[r.task]["http_429"] for r in results) == len(rejected)
    assert sum(r.statuses[429] for r in results) == len(rejected)
