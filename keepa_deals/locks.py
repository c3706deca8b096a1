"""Lease locks in Redis: short TTL, renewed by a heartbeat thread while the holder lives.

A crashed holder stops renewing, so its lock is gone within one TTL without anybody clearing
it. Only the owner can renew or release (compare-and-set / compare-and-delete on the exact
value). The value names the owner: JSON {"host", "pid", "task_id", "since", "renewed_at",
"token"} under kd:lock:<name>. A holder that finds its lease gone or taken sets `lost` and
`check()` raises LeaseLost at its next checkpoint, so it stops before a second instance clashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from keepa_deals.constants import LOCK_KEY_PREFIX
from keepa_deals.host import host_name
from keepa_deals.processes import process_alive

RENEWALS_PER_TTL = 3

# KEYS[1] lock key; ARGV[1] the value we wrote, ARGV[2] the new value, ARGV[3] ttl ms.
# Returns 1 when the lease was still ours and is extended, 0 when it is gone or someone else's.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lock key; ARGV[1] the value we wrote. Returns 1 when deleted, 0 when not ours.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockHeld(Exception):
    """The lock is held by someone else; `owner` describes the holder (or None if unknown)."""

    def __init__(self, name: str, owner: dict | None):
        self.owner = owner
        holder = "unknown holder"
        if owner:
            holder = (f"pid {owner.get('pid')} on {owner.get('host')} "
                      f"(task {owner.get('task_id')}) since {_clock(owner.get('since'))}")
        super().__init__(f"lock {name!r} is held by {holder}")


class LeaseLost(Exception):
    """Our lease expired or was taken over: stop working under it."""


@dataclass(frozen=True)
class LockInfo:
    """One lock as `inspect` sees it. holder_alive is None when the holder is on another host."""

    name: str
    key: str
    owner: dict | None
    age_s: float | None
    ttl_s: float | None
    renewed_at: float | None
    holder_alive: bool | None


class LeaseLock:
    """A lease on `kd:lock:<name>`; use as a context manager to hold it with a heartbeat."""

    def __init__(self, redis_client: redis.Redis, name: str, *, ttl_s: float = 30,
                 task_id: str | None = None):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.redis = redis_client
        self.name = name
        self.key = LOCK_KEY_PREFIX + name
        self.ttl_s = ttl_s
        self.task_id = task_id
        self.lost = threading.Event()
        self._value: str | None = None
        self._since: float | None = None
        self._renewed_at = 0.0
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._renew = redis_client.register_script(_RENEW_LUA)
        self._release = redis_client.register_script(_RELEASE_LUA)

    def __repr__(self) -> str:
        return f"LeaseLock(name={self.name!r}, ttl_s={self.ttl_s}, held={self._value is not None})"

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    def acquire(self) -> bool:
        """Take the lease if it is free (SET NX with the TTL); True when we now hold it."""
        with self._guard:
            now = time.time()
            value = self._encode(since=now, renewed_at=now, token=uuid.uuid4().hex)
            if not self.redis.set(self.key, value, nx=True, px=self._ttl_ms):
                return False
            self._value, self._since, self._renewed_at = value, now, time.monotonic()
            self.lost.clear()
            return True

    def renew(self) -> bool:
        """Extend our lease by one TTL; False (and `lost` set) when it is gone or not ours."""
        with self._guard:
            if self._value is None:
                return False
            token = json.loads(self._value)["token"]
            value = self._encode(since=self._since, renewed_at=time.time(), token=token)
            if self._renew(keys=[self.key], args=[self._value, value, self._ttl_ms]):
                self._value, self._renewed_at = value, time.monotonic()
                return True
            self._value = None
            self.lost.set()
            return False

    def release(self) -> bool:
        """Delete the lock only if it is still ours (compare-and-delete); True when deleted."""
        with self._guard:
            value, self._value = self._value, None
            if value is None:
                return False
            return bool(self._release(keys=[self.key], args=[value]))

    def owner(self) -> dict | None:
        """The current holder's identity (anyone's), or None when the lock is free."""
        return _decode(self.redis.get(self.key))

    def check(self) -> None:
        """Raise LeaseLost if the heartbeat found the lease gone (call at checkpoints)."""
        if self.lost.is_set():
            raise LeaseLost(f"lease on lock {self.name!r} was lost (expired or taken over)")

    def __enter__(self) -> LeaseLock:
        if not self.acquire():
            raise LockHeld(self.name, self.owner())
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lease-{self.name}",
                                           daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self.ttl_s)
            self._heartbeat = None
        with contextlib.suppress(redis.RedisError):  # else it expires within one TTL
            self.release()

    def _beat(self) -> None:
        """Renew every ttl/3; a lease not renewed for a whole TTL (Redis unreachable) is lost."""
        interval = self.ttl_s / RENEWALS_PER_TTL
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except redis.RedisError:
                if time.monotonic() - self._renewed_at >= self.ttl_s:
                    self.lost.set()
                    return

    def _encode(self, *, since: float, renewed_at: float, token: str) -> str:
        return json.dumps({"host": host_name(), "pid": os.getpid(),
                           "task_id": self.task_id, "since": since, "renewed_at": renewed_at,
                           "token": token})


def inspect(redis_client: redis.Redis) -> list[LockInfo]:
    """Every lock under kd:lock:, with holder, age, remaining TTL, last renewal and liveness."""
    keys = sorted(_text(k) for k in redis_client.scan_iter(match=LOCK_KEY_PREFIX + "*",
                                                           count=100))
    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    now = time.time()
    host = host_name()
    infos = []
    for index, key in enumerate(keys):
        owner = _decode(replies[2 * index])
        pttl = replies[2 * index + 1]
        since = _number(owner.get("since")) if owner else None
        alive = None
        if owner and owner.get("host") == host and isinstance(owner.get("pid"), int):
            alive = process_alive(owner["pid"])
        infos.append(LockInfo(
            name=key[len(LOCK_KEY_PREFIX):],
            key=key,
            owner=owner,
            age_s=None if since is None else max(0.0, now - since),
            ttl_s=pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None,
            renewed_at=_number(owner.get("renewed_at")) if owner else None,
            holder_alive=alive,
        ))
    return infos


def _decode(raw) -> dict | None:
    """The owner dict of a lock value; a value that is not our JSON is reported as {'raw': ...}."""
    if raw is None:
        return None
    text = _text(raw)
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text[:200]}
    if not isinstance(value, dict):
        return {"raw": text[:200]}
    return {k: value.get(k) for k in ("host", "pid", "task_id", "since", "renewed_at")}


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _clock(timestamp) -> str:
    number = _number(timestamp)
    return "an unknown time" if number is None else time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(number))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
