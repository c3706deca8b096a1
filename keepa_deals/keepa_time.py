"""Keepa time: whole minutes since 2011-01-01 00:00 UTC (keepa-api.md §3.1).

Keepa reports every time stamp in deal and product data (creationDate, lastUpdate, history
points) in Keepa minutes. Decoding them with any other epoch mis-dates everything by years
(FAILURES.md D4), so this module is the only place that converts them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from keepa_deals.constants import KEEPA_EPOCH_OFFSET_MINUTES

_SECONDS_PER_MINUTE = 60


def keepa_minute_to_unix(minute: int) -> int:
    """Unix time in whole seconds (UTC) of the start of Keepa minute `minute`."""
    return (minute + KEEPA_EPOCH_OFFSET_MINUTES) * _SECONDS_PER_MINUTE


def unix_to_keepa_minute(seconds: float) -> int:
    """The Keepa minute containing unix time `seconds` (floored, also before the epoch)."""
    return int(seconds // _SECONDS_PER_MINUTE) - KEEPA_EPOCH_OFFSET_MINUTES


def keepa_minute_to_datetime(minute: int) -> datetime:
    """Timezone-aware UTC datetime of the start of Keepa minute `minute`."""
    return datetime.fromtimestamp(keepa_minute_to_unix(minute), tz=UTC)
