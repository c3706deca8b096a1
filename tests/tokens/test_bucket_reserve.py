"""TokenBucket.reserve with the real clock: waits follow the refill clock, syncs, deadlines."""

import time

import pytest

from keepa_deals.constants import PRIORITY_BACKFILL
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.tokens import TokenBucket, TokenStarvedError, TokenSyncError, TokenWaitTimeout

pytestmark = pytest.mark.timeout(30)

PERIOD = 200


def redis_now_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


class FakeKeepaToken:
    """Stands in for KeepaClient's free /token call: returns the next envelope, counts calls."""

    def __init__(self, client, left, rate=5, refill_in=100):
        self.client, self.left, self.rate, self.refill_in = client, left, rate, refill_in
        self.calls = 0

    def __call__(self) -> TokenEnvelope:
        self.calls += 1
        return TokenEnvelope(timestamp_ms=redis_now_ms(self.client), tokens_left=self.left,
                             refill_in_ms=self.refill_in, refill_rate=self.rate)


def script_calls(client) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


@pytest.fixture
def bucket(redis_client):
    return TokenBucket(redis_client, refill_period_ms=PERIOD, name="reserve")


def reserve(bucket, cost, sync, **kwargs):
    return bucket.reserve(cost, priority=PRIORITY_BACKFILL, task="bf", sync=sync, **kwargs)


def test_a_missing_state_is_synced_from_token_once(bucket, redis_client):
    token = FakeKeepaToken(redis_client, left=50)
    reservation = reserve(bucket, 10, token)
    assert token.calls == 1 and reservation.cost == 10
    assert bucket.snapshot()["reserved"] == 10
    reserve(bucket, 10, token)
    assert token.calls == 1, "a bucket with state must not call /token again"


def test_the_wait_follows_the_refill_clock_without_busy_polling(bucket, redis_client):
    token = FakeKeepaToken(redis_client, left=-12, rate=5, refill_in=100)
    bucket.sync(token())
    calls_before = script_calls(redis_client)
    started = time.monotonic()
    reserve(bucket, 5, token)
    elapsed_ms = (time.monotonic() - started) * 1000
    # ticks = ceil((1 + 12) / 5) = 3: 100 ms to the next tick + 2 periods.
    assert 480 <= elapsed_ms < 900, elapsed_ms
    assert script_calls(redis_client) - calls_before <= 6, "sleeps, not a polling loop"


def test_a_deadline_ends_the_wait_with_token_wait_timeout(bucket, redis_client):
    token = FakeKeepaToken(redis_client, left=-1_000, rate=1)
    bucket.sync(token())
    started = time.monotonic()
    with pytest.raises(TokenWaitTimeout, match="bf still waiting for 5 tokens"):
        reserve(bucket, 5, token, deadline=time.time() + 0.3)
    assert 0.25 <= time.monotonic() - started < 0.8
    snap = bucket.snapshot()
    assert snap["waiting"] == {"upserter": 0, "backfill": 0}, "a waiter that gives up leaves"
    assert snap["tasks"]["bf"]["waits"] == 1 and snap["tasks"]["bf"]["wait_ms"] >= 250


def test_refill_rate_zero_resyncs_once_then_raises(bucket, redis_client):
    token = FakeKeepaToken(redis_client, left=0, rate=0)
    with pytest.raises(TokenStarvedError):
        reserve(bucket, 5, token)
    assert token.calls == 1


def test_refill_rate_zero_recovers_when_the_resync_reports_a_rate(bucket, redis_client):
    bucket.sync(TokenEnvelope(timestamp_ms=redis_now_ms(redis_client) - 1_000, tokens_left=0,
                              refill_in_ms=100, refill_rate=0))
    token = FakeKeepaToken(redis_client, left=30, rate=5)
    assert reserve(bucket, 5, token).cost == 5
    assert token.calls == 1


def test_an_unusable_token_envelope_is_a_clear_error_not_a_loop(bucket, redis_client):
    def no_timestamp():
        return TokenEnvelope(timestamp_ms=0, tokens_left=0, refill_in_ms=0, refill_rate=0)

    with pytest.raises(TokenSyncError, match="no token state"):
        reserve(bucket, 5, no_timestamp)
