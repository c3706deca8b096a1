"""How values are shown: money, drops, durations, times. Used as Jinja filters and in the CSV.

Every function accepts None (an unknown value) and then returns "–" (or "" for the CSV).
"""

from __future__ import annotations

import time
from urllib.parse import quote

from keepa_deals.health import duration_text

MISSING = "–"
AMAZON_PRODUCT_URL = "https://www.amazon.com/dp/{asin}"
KEEPA_PRODUCT_URL = "https://keepa.com/#!product/{domain}-{asin}"


def money(cents) -> str:
    return MISSING if cents is None else f"${cents / 100:,.2f}"


def drop(delta_percent) -> str:
    """A price drop as a positive percentage (Keepa stores drops as negative deltas)."""
    return MISSING if delta_percent is None else f"{-delta_percent}%"


def number(value) -> str:
    return MISSING if value is None else f"{value:,}"


def stars(rating) -> str:
    return MISSING if rating is None else f"{rating:.1f}★"


def duration(seconds) -> str:
    return MISSING if seconds is None else duration_text(seconds)


def ago(timestamp, now: float | None = None) -> str:
    """'5 min ago' for a unix time (or 'in 5 min' for a future one)."""
    if timestamp is None:
        return MISSING
    delta = (time.time() if now is None else now) - timestamp
    return f"{duration_text(delta)} ago" if delta >= 0 else f"in {duration_text(-delta)}"


def utc(timestamp) -> str:
    """ISO 8601 UTC, e.g. 2024-05-01T12:00:00Z ('' when unknown)."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def amazon_url(asin: str) -> str:
    return AMAZON_PRODUCT_URL.format(asin=quote(asin, safe=""))


def keepa_url(asin: str, domain_id: int | None = 1) -> str:
    return KEEPA_PRODUCT_URL.format(domain=int(domain_id or 1), asin=quote(asin, safe=""))


def safe_image(url) -> str | None:
    """The image URL when it is an https URL (anything else is not rendered)."""
    return url if isinstance(url, str) and url.startswith("https://") else None


def lookup(data, path: str):
    """data["a"]["b"] for the path "a.b" (list items by index); None when absent."""
    for key in path.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict):
            data = data.get(key)
        else:
            return None
    return data


# Display kinds shared with static/overview.js (data-format attributes): same names, same text.
_KINDS = {
    "text": lambda v: MISSING if v in (None, "") else str(v),
    "int": number,
    "money": money,
    "duration": duration,
    "age": lambda v: MISSING if v is None else f"{duration_text(v)} ago",
    "ago": ago,
    "percent": lambda v: MISSING if v is None else f"{v * 100:.1f}%",
    "minutes": lambda v: MISSING if v is None else f"{v:.1f} min",
    "hours": lambda v: MISSING if v is None else f"{v:g} h",
    "alive": lambda v: {True: "alive", False: "dead"}.get(v, "unknown"),
}


def show(value, kind: str = "text") -> str:
    """A value as the overview shows it; `kind` is one of _KINDS."""
    return _KINDS[kind](value)


FILTERS = {"money": money, "drop": drop, "number": number, "stars": stars,
           "duration": duration, "ago": ago, "utc": utc, "amazon_url": amazon_url,
           "keepa_url": keepa_url, "safe_image": safe_image, "show": show}
GLOBALS = {"lookup": lookup}
