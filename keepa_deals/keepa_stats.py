"""Keepa responses counted by endpoint and status in Redis, shared by every worker process
(what /metrics reports as keepa_deals_keepa_responses_total)."""

from __future__ import annotations

import logging

import redis

from keepa_deals.constants import KEY_PREFIX

RESPONSES_KEY = KEY_PREFIX + "stats:keepa_responses"  # hash "endpoint status" -> count
NO_ANSWER = "none"  # the status label of a request that got no HTTP answer

log = logging.getLogger(__name__)


def response_counter(client: redis.Redis):
    """A KeepaClient `on_response(endpoint, status)` that counts into Redis; never raises."""

    def count(endpoint: str, status: int | None) -> None:
        try:
            client.hincrby(RESPONSES_KEY, f"{endpoint} {status or NO_ANSWER}", 1)
        except redis.RedisError as exc:
            log.debug("keepa response not counted (%s)", exc)

    return count


def read_responses(client: redis.Redis) -> dict[tuple[str, str], int]:
    """{(endpoint, status): count} since the counters began."""
    found = {}
    for field, value in client.hgetall(RESPONSES_KEY).items():
        endpoint, _, status = (field.decode() if isinstance(field, bytes) else field).partition(
            " ")
        found[(endpoint, status)] = int(value)
    return found
