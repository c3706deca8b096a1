"""KeepaClient over real HTTP against the simulator: the gate protocol and every error class."""

import json

import pytest
import requests

from keepa_deals.constants import PRIORITY_UPSERTER
from keepa_deals.deals import enrich, parse_deal_page
from keepa_deals.keepa_api import (
    BadResponseError,
    InvalidKeyError,
    KeepaClient,
    NotEnoughTokensError,
    PaymentRequiredError,
    RequestRejectedError,
    SelectionError,
    TransientError,
)
from keepa_deals.keepa_time import keepa_minute_to_unix

pytestmark = pytest.mark.timeout(30)

QUERY = {"priceTypes": [2], "dateRange": 3, "sortType": 1}
ASIN = "B000000001"  # well-formed; an unknown ASIN is a cheap, fast /product answer
FAST_TICK = {"clock": {"minute_ms": 300}}
HANG_MS = 1500
READ_TIMEOUT_S = 0.3


def make_client(sim, gate, *, key=None, **kwargs):
    kwargs.setdefault("max_transient_retries", 2)
    kwargs.setdefault("read_timeout_s", 5)
    return KeepaClient(sim.url, key or sim.key, gate, connect_timeout_s=1, retry_backoff_s=0.01,
                       **kwargs)


def paths(sim):
    return [entry["path"] for entry in sim.requests_log()]


def test_token_status_is_free_and_syncs_the_gate(sim, gate):
    envelope = make_client(sim, gate).token_status()
    assert envelope.refill_rate == 20 and envelope.tokens_left == 1200
    assert envelope.tokens_consumed == 0 and 0 < envelope.refill_in_ms <= 60_000
    assert gate.synced == [envelope]
    assert gate.reserved == []  # free: never reserved
    assert paths(sim) == ["/token"]


def test_deal_page_is_reserved_sent_gzipped_with_integers_and_reconciled(sim, gate):
    encodings = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda r, *a, **k: encodings.append(r.headers.get("Content-Encoding")))
    client = make_client(sim, gate, task="update_recent_deals", priority=PRIORITY_UPSERTER,
                         session=session)
    response = client.deals(QUERY, page=1, deadline=4_000_000_000.0)

    assert response.status == 200 and encodings == ["gzip"]
    reserved = gate.reserved[0]
    assert (reserved.cost, reserved.priority, reserved.task, reserved.deadline) == (
        5, PRIORITY_UPSERTER, "update_recent_deals", 4_000_000_000.0)
    assert gate.statuses == [200]
    assert gate.reconciled[0].envelope == response.envelope
    assert response.envelope.tokens_consumed == 5 and response.envelope.tokens_left == 1195
    gate.assert_balanced()

    sent = sim.requests_log()[-1]
    assert sent["params"]["domain"] == "1"
    assert json.loads(sent["params"]["selection"]) == {**QUERY, "page": 1, "domainId": 1}

    page = parse_deal_page(response.payload, domain_id=1, price_type=2, date_range=3)
    assert len(page.records) == 150 and page.malformed == []
    now_s = response.envelope.timestamp_ms // 1000
    assert all(now_s - 12 * 3600 - 60 <= r.last_update_at <= now_s for r in page.records)
    assert keepa_minute_to_unix(0) < page.records[0].deal_created_at <= now_s


def test_products_reserve_one_token_per_asin_and_enrich_deals(sim, gate):
    client = make_client(sim, gate)
    deals = client.deals(QUERY, page=0).payload
    record = parse_deal_page(deals, domain_id=1, price_type=2, date_range=3).records[0]
    response = client.products([record.asin, ASIN, "B000000002"])
    assert gate.reserved[1].cost == 3
    assert response.envelope.tokens_consumed == 3
    products = {p["asin"]: p for p in response.payload["products"]}
    enriched = enrich(record, products[record.asin], now=1)
    assert enriched.title and enriched.category_name and enriched.enriched_at == 1
    gate.assert_balanced()


def test_product_offers_reserve_the_offer_cost(gate):
    client = KeepaClient("http://127.0.0.1:9", "k" * 64, gate, max_transient_retries=0,
                         connect_timeout_s=0.2, retry_backoff_s=0.01)
    with pytest.raises(TransientError):
        client.products([ASIN, "B000000002"], offers=20)
    assert gate.reserved[0].cost == 2 * 12
    with pytest.raises(ValueError, match="at most 100"):
        client.products([ASIN] * 101)
    with pytest.raises(ValueError, match="list of ASIN"):
        client.products(ASIN)
    assert len(gate.reserved) == 1
    gate.assert_balanced()


def test_gate_sync_callback_is_the_free_token_call(sim, gate):
    gate.sync_on_first_reserve = True
    make_client(sim, gate).products([ASIN])
    assert paths(sim) == ["/token", "/product"]
    assert gate.synced[0].tokens_consumed == 0
    gate.assert_balanced()


def test_429_is_reconciled_then_waits_for_the_refill_and_retries(sim_factory, gate):
    sim = sim_factory(**FAST_TICK)
    sim.tokens(tokens=0)
    gate.honour_429 = True
    response = make_client(sim, gate).products([ASIN])
    assert response.status == 200
    assert gate.statuses[0] == 429 and gate.statuses[-1] == 200
    assert gate.reconciled[0].envelope.tokens_left == 0  # the gate learns the server balance
    assert sim.requests_log()[0]["status"] == 429
    gate.assert_balanced()


def test_persistent_429_raises_not_enough_tokens_with_the_envelope(sim, gate):
    sim.config({"faults": {"forced_429": {"windows": [{"from_s": 0, "to_s": 100_000}]}}})
    with pytest.raises(NotEnoughTokensError, match="4 times") as info:
        make_client(sim, gate, max_consecutive_429=4).products([ASIN])
    assert info.value.status == 429 and info.value.envelope.tokens_left == 1200
    assert gate.statuses == [429] * 4
    gate.assert_balanced()


TRANSIENT_FAULTS = {
    "http_5xx": ({"http_5xx": {}}, "HTTP 50"),
    "http_5xx_json": ({"http_5xx": {"html_body": False}}, "HTTP 50"),
    "truncate": ({"malformed_json": {"mode": "truncate"}}, "not valid JSON"),
    "html": ({"malformed_json": {"mode": "html"}}, "not valid JSON"),
    "garbage": ({"malformed_json": {"mode": "garbage"}}, "not valid JSON"),
    "bad_gzip": ({"bad_gzip": {}}, "ContentDecodingError"),
    "reset": ({"reset": {}}, "Error"),
    "hang": ({"hang": {"ms": HANG_MS}}, "ReadTimeout"),
}


def fault_config(name, **extra):
    faults, _ = TRANSIENT_FAULTS[name]
    kind, knobs = next(iter(faults.items()))
    return {"faults": {kind: {**knobs, "p": 1.0, "endpoints": ["product"], **extra}}}


@pytest.mark.parametrize("name", TRANSIENT_FAULTS)
def test_transient_failures_are_retried_with_a_token_resync_then_raised(sim, gate, name):
    sim.config(fault_config(name))
    client = make_client(sim, gate, max_transient_retries=2, read_timeout_s=READ_TIMEOUT_S)
    with pytest.raises(TransientError, match=TRANSIENT_FAULTS[name][1]) as info:
        client.products([ASIN])
    assert "gave up after 3 attempts" in str(info.value)
    assert paths(sim).count("/product") == 3
    assert len(gate.synced) == 2  # a free /token after each failure that is retried
    assert len(gate.reconciled) == 3
    gate.assert_balanced()


@pytest.mark.parametrize("name", ["http_5xx", "truncate", "reset", "hang"])
def test_a_transient_failure_then_success_returns_the_answer(sim, gate, name):
    sim.config(fault_config(name, times=1))
    client = make_client(sim, gate, read_timeout_s=READ_TIMEOUT_S)
    response = client.products([ASIN])
    assert response.status == 200 and len(response.payload["products"]) == 1
    assert len(gate.reserved) == 2 and gate.statuses[-1] == 200
    assert len(gate.synced) == 1
    gate.assert_balanced()


def test_resync_failure_is_logged_and_the_retry_still_happens(sim, gate, caplog):
    sim.config({"faults": {"http_5xx": {"p": 1.0, "times": 2}}})  # the /deal, then the /token
    response = make_client(sim, gate).products([ASIN])
    assert response.status == 200
    assert paths(sim) == ["/product", "/token", "/product"]
    assert gate.synced == []
    assert "re-sync failed" in caplog.text
    gate.assert_balanced()


def test_in_body_error_is_a_bad_response_and_not_retried(sim, gate):
    sim.config({"faults": {"in_body_error": {"p": 1.0, "endpoints": ["product"]}}})
    with pytest.raises(BadResponseError, match="invalidParameter") as info:
        make_client(sim, gate).products([ASIN])
    assert info.value.envelope.tokens_left == 1200 and info.value.status == 200
    assert paths(sim) == ["/product"]
    gate.assert_balanced()


def test_malformed_asin_answer_is_a_bad_response(sim, gate):
    with pytest.raises(BadResponseError, match="HTTP 200 with an error"):
        make_client(sim, gate).products(["not-an-asin!"])
    assert gate.statuses == [200]


def test_expired_key_is_payment_required(sim_factory, gate):
    sim = sim_factory(keys={"E" * 64: {"status": "expired"}})
    client = make_client(sim, gate)
    with pytest.raises(PaymentRequiredError, match="lapsed") as info:
        client.deals(QUERY, page=0)
    assert info.value.status == 402
    assert gate.statuses == [402]
    with pytest.raises(PaymentRequiredError):
        client.token_status()
    assert gate.synced == []
    gate.assert_balanced()


def test_unknown_key_is_an_invalid_key_error_that_never_syncs_zeros(sim, gate):
    client = make_client(sim, gate, key="U" * 64)
    with pytest.raises(InvalidKeyError, match="check KEEPA_API_KEY") as info:
        client.products([ASIN])
    assert "U" * 64 not in str(info.value)
    assert info.value.status == 400 and info.value.envelope is None
    assert gate.statuses == [400]
    assert gate.reconciled[0].envelope is None  # all-zero token fields describe no account
    with pytest.raises(InvalidKeyError):
        client.token_status()
    assert gate.synced == []
    gate.assert_balanced()


def test_unknown_endpoint_is_rejected_not_retried(sim, gate):
    client = KeepaClient(sim.url + "/v0", sim.key, gate, retry_backoff_s=0.01)
    with pytest.raises(RequestRejectedError, match="HTTP 404") as info:
        client.products([ASIN])
    assert info.value.status == 404
    assert len(sim.requests_log()) == 1
    gate.assert_balanced()


def test_string_numbers_raise_before_any_request(sim, gate):
    client = make_client(sim, gate)
    for selection in ({"dateRange": "4"}, {"sortType": "1"}, {"priceTypes": ["2"]}):
        with pytest.raises(SelectionError):
            client.deals(selection, page=0)
    assert sim.requests_log() == []
    assert gate.reserved == []
