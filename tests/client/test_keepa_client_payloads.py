"""Bodies the simulator never sends (wrong payload types, no envelope), over real HTTP."""

import pytest
import requests

from keepa_deals.keepa_api import (
    BadResponseError,
    KeepaClient,
    NotEnoughTokensError,
    RequestRejectedError,
)

pytestmark = pytest.mark.timeout(20)

KEY = "C" * 64
ENVELOPE = {"timestamp": 1_767_225_600_000, "tokensLeft": 100, "refillIn": 30_000,
            "refillRate": 20, "tokenFlowReduction": 0.0, "tokensConsumed": 5,
            "processingTimeInMs": 1}


def make_client(canned, gate, **kwargs):
    kwargs.setdefault("max_transient_retries", 2)
    return KeepaClient(canned.url, KEY, gate, connect_timeout_s=1, read_timeout_s=2,
                       retry_backoff_s=0.01, **kwargs)


@pytest.mark.parametrize(
    ("body", "problem"),
    [({**ENVELOPE, "deals": {"dr": {}}}, "'deals.dr' is a dict"),
     ({**ENVELOPE, "deals": []}, "'deals' is a list"),
     ({**ENVELOPE}, "'deals' field is missing"),
     ({"deals": {"dr": []}}, "token fields are missing"),
     ([ENVELOPE], "JSON list, not an object")],
)
def test_unusable_deal_bodies_raise_bad_response(canned, gate, body, problem):
    canned.reply(200, body)
    with pytest.raises(BadResponseError, match=problem) as info:
        make_client(canned, gate).deals({}, page=0)
    assert info.value.status == 200
    assert len(canned.paths) == 1  # a bad 200 is final: not retried
    gate.assert_balanced()


def test_products_must_be_a_list(canned, gate):
    canned.reply(200, {**ENVELOPE, "products": {"B0TESTASIN": {}}})
    with pytest.raises(BadResponseError, match="'products' is a dict"):
        make_client(canned, gate).products(["B0TESTASIN"])
    assert gate.reserved[0].cost == 1
    gate.assert_balanced()


def test_garbled_body_is_retried_after_a_free_token_resync(canned, gate):
    canned.reply(200, b'{"timestamp": 17672256')  # truncated
    canned.reply(200, ENVELOPE)  # the /token re-sync
    canned.reply(200, {**ENVELOPE, "deals": {"dr": []}})
    response = make_client(canned, gate).deals({"dateRange": 1}, page=2)
    assert response.payload["deals"]["dr"] == []
    assert [p.split("?")[0] for p in canned.paths] == ["/deal", "/token", "/deal"]
    assert gate.statuses == [200, 200] and gate.reconciled[0].envelope is None
    assert len(gate.synced) == 1
    gate.assert_balanced()


def test_other_400_is_rejected_with_the_server_detail(canned, gate):
    error = {"type": "invalidParameter", "message": "selection: unknown sortType"}
    canned.reply(400, {**ENVELOPE, "tokensConsumed": 0, "error": error})
    with pytest.raises(RequestRejectedError, match="unknown sortType") as info:
        make_client(canned, gate).deals({}, page=0)
    assert info.value.status == 400 and info.value.envelope.refill_rate == 20
    assert gate.reconciled[0].envelope.tokens_left == 100  # a real envelope reaches the gate


def test_429_without_a_body_is_still_a_bounded_retry(canned, gate):
    for _ in range(3):
        canned.reply(429, b"<html>Too Many Requests</html>")
    with pytest.raises(NotEnoughTokensError, match="3 times") as info:
        make_client(canned, gate, max_consecutive_429=3).deals({}, page=0)
    assert info.value.envelope is None and info.value.status == 429
    assert gate.statuses == [429, 429, 429]
    gate.assert_balanced()


def test_an_unexpected_exception_mid_request_still_reconciles(canned, gate):
    canned.reply(200, {**ENVELOPE, "deals": {"dr": []}})
    session = requests.Session()

    def explode(response, *args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C or a worker's hard time limit mid-request

    session.hooks["response"].append(explode)
    with pytest.raises(KeyboardInterrupt):
        make_client(canned, gate, session=session).deals({}, page=0)
    assert gate.statuses == [None] and gate.reconciled[0].envelope is None
    gate.assert_balanced()
