"""Load for the token-bucket acceptance tests: the real KeepaClient, the real bucket, the simulator.

`run_load(spec)` runs in its own process (or thread) and returns a LoadResult. The gate it hands
to the client is the real TokenBucket behind a thin recorder that notes how long every reserve
took and what every response reported; nothing about admission is faked.
"""

from __future__ import annotations

import random
import string
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from keepa_deals.keepa_api import KeepaClient
from keepa_deals.redis_server import connect
from keepa_deals.tokens import TokenBucket

DEAL_SELECTION = {"priceTypes": [0], "dateRange": 3, "sortType": 1}
# (share of deal pages, smallest and largest product batch)
MIXES = {"backfill": (0.25, 10, 100), "upserter": (0.5, 5, 20), "greedy": (0.0, 60, 100),
         "batches": (0.0, 10, 20)}


@dataclass(frozen=True)
class LoadSpec:
    redis_url: str
    sim_url: str
    api_key: str
    period_ms: int
    task: str
    priority: int
    mix: str
    seconds: float
    seed: int
    sync_every: int = 0  # call the free /token every n requests and check the mirror (0 = never)
    bucket_name: str = "default"


@dataclass
class Response:
    at: float  # time.time() when reconciled
    status: int | None
    consumed: int
    tokens_left: int | None
    refill_rate: int | None
    bucket_rate: int | None  # the bucket's refill rate right after reconciling this response


@dataclass
class LoadResult:
    task: str
    priority: int
    reserves: list[tuple[float, float]] = field(default_factory=list)  # wall ms start, end
    responses: list[Response] = field(default_factory=list)
    sync_checks: int = 0
    sync_mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> Counter:
        return Counter(r.status for r in self.responses)

    @property
    def reserve_waits(self) -> list[float]:
        """Seconds each reserve took."""
        return [(end - start) / 1000 for start, end in self.reserves]

    @property
    def consumed(self) -> int:
        return sum(r.consumed for r in self.responses)


class RecordingGate:
    """The real bucket, with each reserve's duration and each response's envelope recorded."""

    def __init__(self, bucket: TokenBucket, result: LoadResult, *, record_rate: bool = False):
        self.bucket, self.result, self.record_rate = bucket, result, record_rate

    def reserve(self, cost, **kwargs):
        started = time.time() * 1000
        reservation = self.bucket.reserve(cost, **kwargs)
        self.result.reserves.append((started, time.time() * 1000))
        return reservation

    def reconcile(self, reservation, envelope, *, status=None):
        self.bucket.reconcile(reservation, envelope, status=status)
        rate = self.bucket.snapshot()["refill_rate"] if self.record_rate else None
        self.result.responses.append(Response(
            time.time(), status, envelope.tokens_consumed if envelope else 0,
            envelope.tokens_left if envelope else None,
            envelope.refill_rate if envelope else None, rate))

    def sync(self, envelope):
        self.bucket.sync(envelope)


def random_asins(rng: random.Random, count: int) -> list[str]:
    alphabet = string.digits + string.ascii_uppercase
    return ["B0" + "".join(rng.choices(alphabet, k=8)) for _ in range(count)]


def run_load(spec: LoadSpec, *, stop: threading.Event | None = None,
             record_rate: bool = False) -> LoadResult:
    """Send paid requests of `spec.mix` for `spec.seconds` (or until `stop` is set)."""
    result = LoadResult(spec.task, spec.priority)
    rng = random.Random(spec.seed)
    redis_client = connect(spec.redis_url)
    bucket = TokenBucket(redis_client, refill_period_ms=spec.period_ms, name=spec.bucket_name)
    client = KeepaClient(spec.sim_url, spec.api_key, RecordingGate(bucket, result,
                                                                   record_rate=record_rate),
                         task=spec.task, priority=spec.priority, read_timeout_s=10,
                         retry_backoff_s=0.02)
    deal_share, smallest, largest = MIXES[spec.mix]
    ends = time.monotonic() + spec.seconds
    sent = 0
    try:
        while time.monotonic() < ends and not (stop and stop.is_set()):
            if rng.random() < deal_share:
                client.deals(DEAL_SELECTION, page=rng.randrange(3))
            else:
                client.products(random_asins(rng, rng.randint(smallest, largest)), stats=None)
            sent += 1
            if spec.sync_every and sent % spec.sync_every == 0:
                check_mirror(client, bucket, redis_client, result)
    except Exception:  # noqa: BLE001 - reported to the test, which fails on any error
        result.errors.append(traceback.format_exc())
    finally:
        client.close()
    return result


def check_mirror(client, bucket, redis_client, result: LoadResult) -> None:
    """After a /token sync the bucket holds that balance, unless a newer envelope replaced it."""
    envelope = client.token_status()
    server_ts, server_left = (int(v) for v in redis_client.hmget(bucket.keys.state,
                                                                  "server_ts", "server_left"))
    if server_ts > envelope.timestamp_ms:
        return  # another process adopted a newer response meanwhile
    result.sync_checks += 1
    if server_ts < envelope.timestamp_ms or server_left > envelope.tokens_left:
        result.sync_mismatches.append(
            f"/token said {envelope.tokens_left} at {envelope.timestamp_ms}, "
            f"bucket holds {server_left} from {server_ts}")
