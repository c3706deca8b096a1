"""What `make mutation` found untested in tokens.py (docs/mutation.md): eta_ms's default request
size, and a Redis outage while a reserve that is giving up withdraws its waiter."""

import pytest

from keepa_deals.constants import PRIORITY_BACKFILL
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.redis_server import connect
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(30)

PERIOD = 1000


class KeepaDown(Exception):
    """What the caller's /token call raises in these tests."""


def test_eta_ms_defaults_to_a_one_token_backfill_request(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="eta", urgent_headroom=5)
    bucket.sync(TokenEnvelope(timestamp_ms=10, tokens_left=6, refill_in_ms=400, refill_rate=20),
                now_ms=1_000)
    assert bucket.eta_ms(now_ms=1_000) == 0, "6 - 1 leaves the headroom of 5"
    assert bucket.eta_ms(2, now_ms=1_000) == 400, "6 - 2 does not: the next tick"


def test_a_redis_outage_while_giving_up_keeps_the_callers_error(redis_server, redis_client):
    bucket = TokenBucket(connect(redis_server.url, socket_timeout=0.5), name="giving-up")

    def sync_then_fail() -> TokenEnvelope:
        redis_server.stop(save=False)  # withdrawing the waiter now fails too
        raise KeepaDown("the /token call failed")

    try:
        with pytest.raises(KeepaDown):
            bucket.reserve(1, priority=PRIORITY_BACKFILL, task="bf", sync=sync_then_fail)
    finally:
        redis_server.start()


def test_a_synced_bucket_says_ok_on_the_dashboard(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="dashboard")
    assert bucket.snapshot(now_ms=1_000)["state"] == "needs_sync"
    bucket.sync(TokenEnvelope(timestamp_ms=10, tokens_left=7, refill_in_ms=400, refill_rate=20),
                now_ms=1_000)
    view = bucket.snapshot(now_ms=1_000)
    assert (view["state"], view["balance"], view["refill_rate"], view["ceiling"]) == \
        ("ok", 7, 20, 1_200)


def test_a_refill_in_of_zero_means_the_next_millisecond_not_now(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="refill-now")
    bucket.sync(TokenEnvelope(timestamp_ms=10, tokens_left=3, refill_in_ms=0, refill_rate=5),
                now_ms=1_000)
    assert bucket.snapshot(now_ms=1_000)["projected_balance"] == 3
    assert bucket.snapshot(now_ms=1_001)["projected_balance"] == 8


def test_the_headroom_still_applies_when_cost_and_headroom_fill_the_ceiling(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="full-ceiling",
                         urgent_headroom=5)
    bucket.sync(TokenEnvelope(timestamp_ms=10, tokens_left=58, refill_in_ms=400, refill_rate=1),
                now_ms=1_000)
    assert bucket.eta_ms(55, now_ms=1_000) == 1_400, "55 + 5 = 60 fits the ceiling: 2 ticks"
    assert bucket.eta_ms(53, now_ms=1_000) == 0


def test_the_priority_share_counts_what_was_charged_not_the_estimate(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="share")
    bucket.sync(TokenEnvelope(timestamp_ms=10, tokens_left=50, refill_in_ms=400, refill_rate=20),
                now_ms=1_000)
    grant = bucket.acquire(10, PRIORITY_BACKFILL, "bf", now_ms=1_000)
    assert float(redis_client.hget(bucket.keys.share, f"p{PRIORITY_BACKFILL}")) == 10
    charged = TokenEnvelope(timestamp_ms=20, tokens_left=46, refill_in_ms=390, refill_rate=20,
                            tokens_consumed=4)
    bucket.reconcile(grant.reservation, charged, status=200, now_ms=1_010)
    assert float(redis_client.hget(bucket.keys.share, f"p{PRIORITY_BACKFILL}")) == 4


def test_a_reserve_that_waited_is_counted_in_its_tasks_ledger(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=200, name="ledger")
    now_s, micros = redis_client.time()
    bucket.sync(TokenEnvelope(timestamp_ms=now_s * 1000 + micros // 1000, tokens_left=0,
                              refill_in_ms=100, refill_rate=5))
    bucket.reserve(1, priority=PRIORITY_BACKFILL, task="bf",
                   sync=lambda: pytest.fail("the bucket has a state: no /token call"))
    ledger = bucket.snapshot()["tasks"]["bf"]
    assert ledger["waits"] == 1 and 50 <= ledger["wait_ms"] <= 1_000


def test_the_same_envelope_twice_never_rolls_the_balance_back(redis_client):
    bucket = TokenBucket(redis_client, refill_period_ms=PERIOD, name="same-envelope")
    envelope = TokenEnvelope(timestamp_ms=10, tokens_left=5, refill_in_ms=400, refill_rate=20)
    bucket.sync(envelope, now_ms=1_000)
    bucket.acquire(1, PRIORITY_BACKFILL, "bf", now_ms=1_500)  # stores the tick at 1 400: 25
    bucket.sync(envelope, now_ms=1_500)  # a repeated answer, e.g. a retried /token
    assert bucket.snapshot(now_ms=1_500)["balance"] == 25
