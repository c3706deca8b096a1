"""The token envelope: parsed from every body, and never invented when absent."""

import pytest

from keepa_deals.envelope import TokenEnvelope

pytestmark = pytest.mark.timeout(10)


def test_full_envelope_is_parsed():
    body = {"timestamp": 1594177158252, "tokensLeft": -3, "refillIn": 38205, "refillRate": 20,
            "tokenFlowReduction": 0.5, "tokensConsumed": 5, "processingTimeInMs": 12}
    env = TokenEnvelope.from_json(body)
    assert env == TokenEnvelope(1594177158252, -3, 38205, 20, 5, 0.5, 12)


@pytest.mark.parametrize(
    "body",
    [{}, {"tokensLeft": 5}, {"timestamp": 1, "tokensLeft": "5", "refillIn": 1, "refillRate": 5},
     {"timestamp": 1, "tokensLeft": True, "refillIn": 1, "refillRate": 5}, [], "html"],
)
def test_missing_or_mistyped_fields_give_none_not_zero(body):
    assert TokenEnvelope.from_json(body) is None
