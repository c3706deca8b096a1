"""Where the dashboard's data comes from: the SQLite file (read-only) and Redis.

Either may be down; callers catch `SOURCE_ERRORS` and show the message instead of failing.
One read-only connection per request (closed at teardown); one Redis client per app, created
on first use and recreated after a failure (the private server's port may change on restart).
"""

from __future__ import annotations

import threading

import redis
from flask import g

from keepa_deals import db
from keepa_deals.config import Settings
from keepa_deals.redis_server import RedisUnavailable, connect, redis_url_for

SOURCE_ERRORS = (*db.ERRORS, OSError, redis.RedisError, RedisUnavailable)
READ_BUSY_TIMEOUT_S = 2.0  # a page waits this long at most for a locked database
REDIS_TIMEOUT_S = 1.0


class Sources:
    """The app's handles on the database and Redis."""

    def __init__(self, settings: Settings, redis_client: redis.Redis | None = None):
        self.settings = settings
        self._redis = redis_client
        self._fixed_redis = redis_client is not None
        self._guard = threading.Lock()

    def db(self) -> db.Connection:
        """This request's read-only connection (raises db.ERRORS/OSError when unavailable)."""
        if "db" not in g:
            g.db = db.readonly_connect(self.settings.database,
                                       busy_timeout_s=READ_BUSY_TIMEOUT_S)
        return g.db

    def redis(self) -> redis.Redis:
        """The Redis client (raises RedisUnavailable when no server is known)."""
        with self._guard:
            if self._redis is None:
                url = redis_url_for(self.settings)
                self._redis = connect(url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
            return self._redis

    def redis_failed(self) -> None:
        """Forget a client that failed, so that the next request resolves the server again."""
        if self._fixed_redis:
            return
        with self._guard:
            self._redis = None

    @staticmethod
    def close(_exc=None) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()
