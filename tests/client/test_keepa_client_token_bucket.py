"""KeepaClient with the real Redis TokenBucket against the simulator."""

import pytest

from keepa_deals.keepa_api import BadResponseError, KeepaClient, TransientError
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(30)

ASIN = "B000000001"
MINUTE_MS = 300


def test_bucket_syncs_waits_for_the_refill_and_never_leaks_reservations(sim_factory,
                                                                         redis_client):
    sim = sim_factory(clock={"minute_ms": MINUTE_MS})
    sim.tokens(tokens=0)
    bucket = TokenBucket(redis_client, refill_period_ms=MINUTE_MS, name="client-test")
    client = KeepaClient(sim.url, sim.key, bucket, task="client_test", read_timeout_s=5,
                         max_transient_retries=1, retry_backoff_s=0.01)

    response = client.products([ASIN])
    assert response.status == 200
    log = sim.requests_log()
    assert log[0]["path"] == "/token"  # no bucket state yet: synced through the free call
    assert [e["status"] for e in log if e["path"] == "/product"] == [200]  # waited, no 429
    snapshot = bucket.snapshot()
    assert snapshot["state"] == "ok" and snapshot["reserved"] == 0
    assert snapshot["tasks"]["client_test"]["requests"] == 1

    sim.config({"faults": {"in_body_error": {"p": 1.0, "endpoints": ["product"]}}})
    with pytest.raises(BadResponseError):
        client.products([ASIN])
    sim.config({"faults": {"in_body_error": {"p": 0.0},
                           "reset": {"p": 1.0, "endpoints": ["product"]}}})
    with pytest.raises(TransientError):
        client.products([ASIN])
    assert bucket.snapshot()["reserved"] == 0
