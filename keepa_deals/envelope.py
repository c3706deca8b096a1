"""The token status that Keepa attaches to every JSON response, errors included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_REQUIRED_FIELDS = ("timestamp", "tokensLeft", "refillIn", "refillRate")


@dataclass(frozen=True)
class TokenEnvelope:
    """Keepa's token fields of one response; the server is the authority on all of them."""

    timestamp_ms: int
    tokens_left: int
    refill_in_ms: int
    refill_rate: int
    tokens_consumed: int = 0
    token_flow_reduction: float = 0.0
    processing_time_ms: int = 0

    @classmethod
    def from_json(cls, body: Mapping) -> TokenEnvelope | None:
        """Build from a decoded response body; None when the token fields are absent or mistyped.

        A missing envelope must never be read as "0 tokens" (see keepa-api.md §4).
        """
        if not isinstance(body, Mapping):
            return None
        values = [body.get(name) for name in _REQUIRED_FIELDS]
        if not all(_is_int(v) for v in values):
            return None
        consumed = body.get("tokensConsumed", 0)
        reduction = body.get("tokenFlowReduction", 0.0)
        processing = body.get("processingTimeInMs", 0)
        return cls(
            timestamp_ms=values[0],
            tokens_left=values[1],
            refill_in_ms=values[2],
            refill_rate=values[3],
            tokens_consumed=consumed if _is_int(consumed) else 0,
            token_flow_reduction=float(reduction) if isinstance(reduction, int | float) else 0.0,
            processing_time_ms=processing if _is_int(processing) else 0,
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
