"""A bounded, thread-safe log of the Keepa requests the simulator answered (GET /_sim/requests).

Entries never hold an API key: the key is recorded as its `key_label`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque


def key_label(key: str | None) -> str | None:
    """A stable, non-reversible name for an API key, safe to show in logs and state."""
    if key is None:
        return None
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10]


class RequestLog:
    def __init__(self, size: int):
        self._lock = threading.Lock()
        self._entries: deque[dict] = deque(maxlen=size)
        self._next_id = 1

    def add(self, entry: dict) -> None:
        with self._lock:
            self._entries.append({"id": self._next_id, **entry})
            self._next_id += 1

    def entries(self, since_id: int = 0) -> list[dict]:
        with self._lock:
            return [entry for entry in self._entries if entry["id"] > since_id]

    def resize(self, size: int) -> None:
        with self._lock:
            if size != self._entries.maxlen:
                self._entries = deque(self._entries, maxlen=size)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
