"""The token bucket's Lua scripts against a real Redis, with the clock injected (now_ms).

Period 1000 ms throughout; `env(ts, left, refill_in, rate)` builds a server envelope.
"""

import pytest

from keepa_deals.constants import PRIORITY_BACKFILL, PRIORITY_UPSERTER
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.tokens import (
    HISTORY_LENGTH,
    Grant,
    TokenBucket,
    TokenStarvedError,
    Wait,
)

pytestmark = pytest.mark.timeout(30)

PERIOD = 1000
UP, BACK = PRIORITY_UPSERTER, PRIORITY_BACKFILL


def env(ts, left, refill_in=400, rate=5, consumed=0):
    return TokenEnvelope(timestamp_ms=ts, tokens_left=left, refill_in_ms=refill_in,
                         refill_rate=rate, tokens_consumed=consumed)


@pytest.fixture
def bucket(redis_client):
    return TokenBucket(redis_client, refill_period_ms=PERIOD, name="unit",
                       reservation_ttl_ms=5_000)


def spend(bucket, priority, cost, *, ts, left):
    """One granted and charged request at now_ms=1000; the server's envelope says `left`."""
    grant = bucket.acquire(cost, priority, "t", now_ms=1_000)
    assert isinstance(grant, Grant)
    bucket.reconcile(grant.reservation, env(ts, left, refill_in=400, rate=50, consumed=cost),
                     status=200, now_ms=1_000)


def projected(bucket, now):
    return bucket.snapshot(now_ms=now)["projected_balance"]


def test_missing_state_asks_for_a_sync_never_assumes_time_stood_still(bucket):
    assert bucket.acquire(5, BACK, "t", now_ms=1_000) == Wait(0, "needs_sync")
    assert bucket.snapshot(now_ms=1_000)["state"] == "needs_sync"


def test_refill_is_projected_in_whole_ticks_from_the_servers_refill_clock(bucket):
    bucket.sync(env(ts=10, left=3, refill_in=400, rate=5), now_ms=1_000)
    assert projected(bucket, 1_399) == 3, "no tick before refillIn elapsed"
    assert projected(bucket, 1_400) == 8
    assert projected(bucket, 2_399) == 8, "partial periods add nothing"
    assert projected(bucket, 2_400) == 13
    assert bucket.snapshot(now_ms=2_500)["next_tick_ms"] == 3_400


def test_balance_never_exceeds_sixty_times_the_rate(bucket):
    bucket.sync(env(ts=10, left=298, refill_in=400, rate=5), now_ms=1_000)
    assert projected(bucket, 1_400) == 300
    assert projected(bucket, 50_000) == 300
    snap = bucket.snapshot(now_ms=1_000)
    assert snap["ceiling"] == 300 and snap["refill_rate"] == 5


def test_downgrade_clips_an_over_ceiling_balance_at_the_next_tick(bucket):
    bucket.sync(env(ts=10, left=300, refill_in=400, rate=1), now_ms=1_000)
    assert projected(bucket, 1_000) == 300, "clipped at the tick, like the simulator"
    assert projected(bucket, 1_400) == 60


def test_a_deficit_is_paid_down_by_ticks_and_the_wait_counts_them(bucket):
    bucket.sync(env(ts=10, left=-10, refill_in=400, rate=5), now_ms=1_000)
    # available -10: ticks = ceil((1 - -10) / 5) = 3 -> 400 ms + 2 periods
    assert bucket.acquire(5, BACK, "t", now_ms=1_000) == Wait(2_400, "tokens")
    assert bucket.acquire(5, BACK, "t", now_ms=2_400) == Wait(1_000, "tokens")  # -5 -> 0 -> 5
    assert projected(bucket, 3_399) == 0, "0 is not positive: Keepa would answer 429"
    assert isinstance(bucket.acquire(5, BACK, "t", now_ms=3_400), Grant)


def test_any_cost_is_granted_while_available_is_positive_even_beyond_the_ceiling(bucket):
    bucket.sync(env(ts=10, left=1, refill_in=400, rate=1), now_ms=1_000)  # ceiling 60
    grant = bucket.acquire(500, BACK, "t", now_ms=1_000)
    assert isinstance(grant, Grant) and grant.available_after == -499
    # The next request waits for the refill to cover the in-flight 500, not forever.
    wait = bucket.acquire(5, BACK, "t", now_ms=1_000)
    assert wait.reason == "tokens" and wait.wait_ms == 400 + 499 * PERIOD


def test_reservations_survive_a_sync_so_available_excludes_in_flight_requests(bucket):
    bucket.sync(env(ts=10, left=20), now_ms=1_000)
    first = bucket.acquire(10, BACK, "t", now_ms=1_000)
    assert isinstance(first, Grant) and first.available_after == 10
    # Another process syncs: the server has not charged `first` yet and still says 20.
    bucket.sync(env(ts=20, left=20), now_ms=1_010)
    snap = bucket.snapshot(now_ms=1_010)
    assert snap["balance"] == 20 and snap["reserved"] == 10, "a sync must not erase reservations"
    second = bucket.acquire(15, BACK, "t", now_ms=1_010)
    assert isinstance(second, Grant) and second.available_after == -5
    assert isinstance(bucket.acquire(1, BACK, "t", now_ms=1_010), Wait)


def test_reconcile_adopts_newer_envelopes_only(bucket):
    bucket.sync(env(ts=1_000, left=50), now_ms=1_000)
    grant = bucket.acquire(10, BACK, "t", now_ms=1_000)
    bucket.reconcile(grant.reservation, env(ts=900, left=80, consumed=10), status=200,
                     now_ms=1_010)
    snap = bucket.snapshot(now_ms=1_010)
    assert snap["balance"] == 50, "a stale envelope (older timestamp) must be ignored"
    assert snap["reserved"] == 0, "but its reservation is settled"
    grant = bucket.acquire(10, BACK, "t", now_ms=1_020)
    bucket.reconcile(grant.reservation, env(ts=1_100, left=40, consumed=10), status=200,
                     now_ms=1_030)
    assert bucket.snapshot(now_ms=1_030)["balance"] == 40


def test_equal_timestamps_keep_the_lower_balance(bucket):
    bucket.sync(env(ts=1_000, left=50), now_ms=1_000)
    bucket.sync(env(ts=1_000, left=45), now_ms=1_001)
    bucket.sync(env(ts=1_000, left=48), now_ms=1_002)
    assert bucket.snapshot(now_ms=1_002)["balance"] == 45


def test_an_envelope_without_a_timestamp_is_never_adopted(bucket):
    bucket.sync(env(ts=0, left=0, refill_in=0, rate=0), now_ms=1_000)  # invalid-key shape
    assert bucket.snapshot(now_ms=1_000)["state"] == "needs_sync"


def test_a_failed_request_without_a_body_only_drops_its_reservation(bucket):
    bucket.sync(env(ts=10, left=20), now_ms=1_000)
    grant = bucket.acquire(15, BACK, "t", now_ms=1_000)
    bucket.reconcile(grant.reservation, None, status=None, now_ms=1_010)
    snap = bucket.snapshot(now_ms=1_010)
    assert (snap["balance"], snap["reserved"]) == (20, 0)
    assert snap["tasks"]["t"]["requests"] == 1


def test_a_dead_holders_reservation_expires(bucket):
    bucket.sync(env(ts=10, left=10, refill_in=100_000, rate=5), now_ms=1_000)
    assert isinstance(bucket.acquire(10, BACK, "t", now_ms=1_000), Grant)
    assert isinstance(bucket.acquire(1, BACK, "t", now_ms=5_999), Wait)
    assert bucket.snapshot(now_ms=5_999)["reserved"] == 10
    assert isinstance(bucket.acquire(1, BACK, "t", now_ms=6_000), Grant), "TTL 5 s passed"


def test_zero_refill_rate_is_starvation_not_an_infinite_wait(bucket):
    bucket.sync(env(ts=10, left=5, rate=0), now_ms=1_000)
    grant = bucket.acquire(5, BACK, "t", now_ms=1_000)
    assert isinstance(grant, Grant), "a positive balance is still spendable"
    assert bucket.acquire(1, BACK, "t", now_ms=1_000) == Wait(PERIOD, "inflight")
    bucket.reconcile(grant.reservation, env(ts=20, left=0, rate=0, consumed=5), now_ms=1_010)
    with pytest.raises(TokenStarvedError, match="refillRate 0"):
        bucket.acquire(1, BACK, "t", now_ms=1_010)


def test_backfill_yields_to_a_due_upserter_but_not_to_a_sleeping_one(bucket):
    bucket.sync(env(ts=10, left=-4, refill_in=400, rate=5), now_ms=1_000)
    upserter = bucket.acquire(5, UP, "up", now_ms=1_000)
    assert upserter == Wait(400, "tokens")  # wakes at the tick (1400)
    assert bucket.acquire(5, BACK, "bf", now_ms=1_100) == Wait(300, "tokens")
    # The tick came: the backfiller must not take it while the upserter is due.
    assert bucket.acquire(5, BACK, "bf", now_ms=1_400) == Wait(PERIOD // 20, "yield")
    assert isinstance(bucket.acquire(5, UP, "up", now_ms=1_410, request_id="x"), Grant)
    # A waiter whose wake-up is far away does not block tokens that are there now.
    bucket.sync(env(ts=20, left=-100, refill_in=400, rate=5), now_ms=1_420)
    far = bucket.acquire(5, UP, "up", now_ms=1_420)
    assert far.wait_ms > PERIOD
    bucket.sync(env(ts=30, left=50, refill_in=400, rate=5), now_ms=1_430)  # e.g. a refund
    assert isinstance(bucket.acquire(5, BACK, "bf", now_ms=1_440), Grant)


def test_a_dead_waiter_stops_blocking_after_its_grace(bucket):
    bucket.sync(env(ts=10, left=-4, refill_in=400, rate=5), now_ms=1_000)
    bucket.acquire(5, UP, "up", now_ms=1_000)  # registers, then "dies"
    assert bucket.acquire(5, BACK, "bf", now_ms=1_500).reason == "yield"
    assert bucket.snapshot(now_ms=1_500)["waiting"] == {"upserter": 1, "backfill": 1}
    grace = max(PERIOD, 2_000)
    assert isinstance(bucket.acquire(5, BACK, "bf", now_ms=1_400 + grace), Grant)
    assert bucket.snapshot(now_ms=1_400 + grace)["waiting"]["upserter"] == 0


def test_an_upserter_yields_to_a_backfiller_that_is_below_its_guaranteed_share(bucket):
    bucket.sync(env(ts=10, left=500, refill_in=400, rate=50), now_ms=1_000)
    spend(bucket, UP, 500, ts=20, left=0)
    assert bucket.acquire(20, BACK, "bf", now_ms=1_001).reason == "tokens"  # waits for the tick
    # At the tick both are due: the backfiller has had 0 % of the tokens, so it goes first.
    assert bucket.acquire(20, UP, "up", now_ms=1_400).reason == "yield"
    assert isinstance(bucket.acquire(20, BACK, "bf", now_ms=1_401), Grant)


def test_a_backfiller_with_its_share_yields_to_the_upserter(bucket):
    bucket.sync(env(ts=10, left=600, refill_in=400, rate=50), now_ms=1_000)
    spend(bucket, BACK, 500, ts=20, left=100)
    spend(bucket, UP, 100, ts=30, left=0)
    assert bucket.acquire(20, UP, "up", now_ms=1_001).reason == "tokens"
    assert bucket.acquire(20, BACK, "bf", now_ms=1_400).reason == "yield"


def test_a_429_blocks_every_grant_until_the_tick_its_envelope_names(bucket):
    bucket.sync(env(ts=10, left=100, refill_in=400), now_ms=1_000)
    first = bucket.acquire(5, UP, "up", now_ms=1_000)
    second = bucket.acquire(5, BACK, "bf", now_ms=1_000)
    # A forced 429 (or a phantom consumer's race) while the server reports a positive balance.
    bucket.reconcile(first.reservation, env(ts=20, left=100, refill_in=300), status=429,
                     now_ms=1_010)
    assert bucket.snapshot(now_ms=1_100)["blocked_until_ms"] == 1_310
    assert bucket.acquire(5, UP, "up", now_ms=1_100) == Wait(210, "tokens")
    assert bucket.acquire(5, BACK, "bf", now_ms=1_100) == Wait(210, "tokens"), "nobody is granted"
    # A late 429 naming an earlier tick does not shorten the block; nor does a /token sync.
    bucket.reconcile(second.reservation, env(ts=15, left=100, refill_in=100), status=429,
                     now_ms=1_120)
    bucket.sync(env(ts=30, left=100, refill_in=180), now_ms=1_130)
    assert bucket.acquire(5, UP, "up", now_ms=1_309) == Wait(1, "tokens")
    assert isinstance(bucket.acquire(5, UP, "up", now_ms=1_310), Grant), "time ends the block"
    assert bucket.snapshot(now_ms=1_310)["blocked_until_ms"] is None
    tasks = bucket.snapshot(now_ms=1_310)["tasks"]
    assert tasks["up"]["http_429"] == 1 and tasks["bf"]["http_429"] == 1


def test_a_429_at_a_deficit_waits_for_the_refill_not_just_the_tick(bucket):
    bucket.sync(env(ts=10, left=5, refill_in=400, rate=5), now_ms=1_000)
    grant = bucket.acquire(5, BACK, "bf", now_ms=1_000)
    # The real API's 429: a phantom consumer drained the key to -7.
    bucket.reconcile(grant.reservation, env(ts=20, left=-7, refill_in=300, rate=5), status=429,
                     now_ms=1_010)
    # -7 -> -2 at the tick, -> 3 one period later: the refill wait, longer than the block.
    assert bucket.acquire(5, BACK, "bf", now_ms=1_010) == Wait(300 + PERIOD, "tokens")


def test_a_429_without_a_keepa_body_blocks_nothing(bucket):
    bucket.sync(env(ts=10, left=100), now_ms=1_000)
    grant = bucket.acquire(5, BACK, "bf", now_ms=1_000)
    bucket.reconcile(grant.reservation, None, status=429, now_ms=1_010)
    assert isinstance(bucket.acquire(5, BACK, "bf", now_ms=1_020), Grant)


def bucket_contents(client) -> dict:
    return {key: client.dump(key) for key in sorted(client.scan_iter("kd:bucket:*"))}


def test_eta_is_the_acquire_decision_without_any_write(bucket, redis_client):
    assert bucket.eta_ms(5, BACK, now_ms=1_000) is None, "no state: sync first"
    bucket.sync(env(ts=10, left=1, refill_in=400, rate=5), now_ms=1_000)
    assert bucket.acquire(11, BACK, "bf", now_ms=1_000).available_after == -10  # expires at 6000
    bucket.acquire(5, UP, "up", now_ms=1_000)  # waits 3 ticks; re-checks at 2000, gone at 4000
    before = bucket_contents(redis_client)
    assert bucket.eta_ms(5, BACK, now_ms=1_000) == 2_400  # ceil(11 / 5) = 3 ticks
    assert bucket.eta_ms(priority=UP, now_ms=3_400) == 0
    assert bucket.eta_ms(priority=BACK, now_ms=3_400) == PERIOD // 20, "yields to the upserter"
    assert bucket.eta_ms(priority=BACK, now_ms=6_000) == 0, "expired entries no longer count"
    assert bucket_contents(redis_client) == before, "eta_ms reserved, registered or purged"
    assert bucket.acquire(5, BACK, "bf", now_ms=3_400) == Wait(PERIOD // 20, "yield")
    grant = bucket.acquire(5, UP, "up", now_ms=3_400)
    bucket.reconcile(grant.reservation, env(ts=20, left=50, refill_in=300), status=429,
                     now_ms=3_410)
    assert bucket.eta_ms(priority=UP, now_ms=3_500) == 210
    bucket.sync(env(ts=30, left=0, rate=0), now_ms=3_800)
    with pytest.raises(TokenStarvedError):
        bucket.eta_ms(now_ms=3_800)


def test_ledger_and_snapshot_shape(bucket):
    bucket.sync(env(ts=10, left=100), now_ms=60_000)
    for n, (status, consumed) in enumerate(((200, 5), (429, 0), (200, 7))):
        now = 60_000 + n * PERIOD  # after the 429's block (refillIn 400) has passed
        grant = bucket.acquire(5, BACK, "bf", now_ms=now, waited_ms=250)
        bucket.reconcile(grant.reservation, env(ts=20 + n, left=90, consumed=consumed),
                         status=status, now_ms=now + 10)
    snap = bucket.snapshot(now_ms=125_000)
    assert set(snap) == {"state", "balance", "projected_balance", "reserved", "refill_rate",
                         "ceiling", "next_tick_ms", "period_ms", "synced_at_ms",
                         "blocked_until_ms", "waiting", "tasks", "history"}
    assert snap["blocked_until_ms"] is None, "a past block is no block"
    assert snap["tasks"]["bf"] == {"tokens_last_hour": 12, "requests": 3, "http_429": 1,
                                   "waits": 3, "wait_ms": 750, "per_minute": [[1, 12]]}
    assert snap["period_ms"] == PERIOD and snap["history"][0] == [60_000, 100]
    assert bucket.snapshot(now_ms=60_000 * 61)["tasks"]["bf"]["tokens_last_hour"] == 0


def test_balance_history_is_sampled_and_bounded(bucket):
    for i in range(HISTORY_LENGTH + 20):
        bucket.sync(env(ts=10 + i, left=i), now_ms=1_000 + i * PERIOD)
    history = bucket.snapshot(now_ms=1_000)["history"]
    assert len(history) == HISTORY_LENGTH
    assert history[-1] == [1_000 + (HISTORY_LENGTH + 19) * PERIOD, HISTORY_LENGTH + 19]
    assert history == sorted(history)


def test_redis_time_is_the_clock_when_none_is_injected(bucket, redis_client):
    seconds, micros = redis_client.time()
    now = seconds * 1000 + micros // 1000
    bucket.sync(env(ts=now, left=10, refill_in=400))
    snap = bucket.snapshot()
    assert abs(snap["synced_at_ms"] - now) < 1_000
    assert isinstance(bucket.acquire(5, BACK, "t"), Grant)


def test_bad_arguments_get_clear_errors(bucket):
    with pytest.raises(ValueError, match="cost must be a whole number"):
        bucket.acquire(-1, BACK, "t")
    with pytest.raises(ValueError, match="cost must be a whole number"):
        bucket.acquire("5", BACK, "t")
    with pytest.raises(ValueError, match="refill_period_ms"):
        TokenBucket(bucket.redis, refill_period_ms=0)


@pytest.fixture
def headroom_bucket(redis_client):
    return TokenBucket(redis_client, refill_period_ms=PERIOD, name="headroom",
                       reservation_ttl_ms=5_000, urgent_headroom=5)


def test_a_less_urgent_request_leaves_the_headroom_for_the_upserter(headroom_bucket):
    bucket = headroom_bucket
    bucket.sync(env(ts=10, left=24, refill_in=400, rate=20), now_ms=1_000)
    assert bucket.acquire(20, BACK, "t", now_ms=1_000) == Wait(400, "tokens"), \
        "24 - 20 < 5: it waits for the next tick"
    granted = bucket.acquire(19, BACK, "t", now_ms=1_000)
    assert isinstance(granted, Grant) and granted.available_after == 5
    urgent = bucket.acquire(5, UP, "t", now_ms=1_000)
    assert isinstance(urgent, Grant), "the upserter finds its page's tokens at once"
    assert bucket.acquire(20, BACK, "t", now_ms=1_000) == Wait(1_400, "tokens"), \
        "0 available: 25 more tokens take two ticks"


def test_the_headroom_never_makes_a_request_impossible(headroom_bucket, bucket):
    headroom_bucket.sync(env(ts=10, left=100, refill_in=400, rate=1), now_ms=1_000)
    assert isinstance(headroom_bucket.acquire(58, BACK, "t", now_ms=1_000), Grant), \
        "58 + 5 > the ceiling of 60: Keepa's plain rule (balance > 0) decides"
    bucket.sync(env(ts=10, left=1, refill_in=400, rate=20), now_ms=1_000)
    assert isinstance(bucket.acquire(20, BACK, "t", now_ms=1_000), Grant), \
        "without a headroom the bucket is Keepa's rule for every priority"
