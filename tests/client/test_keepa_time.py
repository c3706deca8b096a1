"""Keepa minutes use the 2011 epoch (FAILURES.md D4: a 2000 epoch mis-dated everything)."""

from datetime import UTC, datetime

import pytest

from keepa_deals.keepa_time import (
    keepa_minute_to_datetime,
    keepa_minute_to_unix,
    unix_to_keepa_minute,
)

pytestmark = pytest.mark.timeout(10)

CHECK_VALUES = [
    (0, datetime(2011, 1, 1, tzinfo=UTC)),
    (411_180, datetime(2011, 10, 13, 13, 0, tzinfo=UTC)),  # Keepa's Java doc example
    (7_889_760, datetime(2026, 1, 1, tzinfo=UTC)),
    (7_924_816, datetime(2026, 1, 25, 8, 16, tzinfo=UTC)),
]


@pytest.mark.parametrize(("minute", "expected"), CHECK_VALUES)
def test_documented_check_values(minute, expected):
    assert keepa_minute_to_datetime(minute) == expected
    assert keepa_minute_to_unix(minute) == int(expected.timestamp())
    assert unix_to_keepa_minute(expected.timestamp()) == minute


def test_datetime_is_timezone_aware_utc():
    assert keepa_minute_to_datetime(411_180).utcoffset().total_seconds() == 0


def test_unix_to_minute_floors_within_the_minute_and_before_the_epoch():
    start = keepa_minute_to_unix(7_889_760)
    assert unix_to_keepa_minute(start + 59.9) == 7_889_760
    assert unix_to_keepa_minute(start - 0.5) == 7_889_759
    assert unix_to_keepa_minute(keepa_minute_to_unix(0) - 1) == -1


def test_conversion_returns_integers():
    assert isinstance(keepa_minute_to_unix(411_180), int)
    assert isinstance(unix_to_keepa_minute(1_318_510_800.7), int)
