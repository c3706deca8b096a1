"""The last line of defence for secrets: no answer may contain the Keepa key or a password.

Secrets are never put into pages on purpose; the scrubber replaces any that slipped into a
message (a run error quoting a URL with key=..., a Redis error) by ***, in every non-static
answer and in each chunk of the CSV export (chunks end at row boundaries).
"""

from __future__ import annotations

from keepa_deals.config import Settings

MIN_SECRET_LENGTH = 4  # shorter "secrets" would mangle ordinary text
MASK = "***"


class SecretScrubber:
    """Replaces the Keepa key, the dashboard password and the Redis and database passwords."""

    def __init__(self, settings: Settings):
        values = [settings.keepa_api_key, settings.dashboard_password, *settings.url_secrets]
        self._secrets = [v for v in values if v and len(v) >= MIN_SECRET_LENGTH]
        self._encoded = [v.encode() for v in self._secrets]

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        return value

    def after_request(self, response):
        """Flask after_request hook: scrub buffered bodies (static files and streams pass)."""
        if response.direct_passthrough or response.is_streamed or not self._encoded:
            return response
        body = response.get_data()
        if any(secret in body for secret in self._encoded):
            for secret in self._encoded:
                body = body.replace(secret, MASK.encode())
            response.set_data(body)
        return response
