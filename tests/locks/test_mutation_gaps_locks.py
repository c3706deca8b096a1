"""What `make mutation` found untested in locks.py (docs/mutation.md): the holder named in
LockHeld, inspect's ages and TTLs, values that are not ours, bytes replies, a lock that vanishes
while it is inspected."""

import json
import os
import socket
import threading
import time

import pytest
from support import wait_until

from keepa_deals.constants import LOCK_KEY_PREFIX, UPSERT_LOCK
from keepa_deals.locks import LeaseLock, LockHeld, inspect
from keepa_deals.redis_server import connect

pytestmark = pytest.mark.timeout(30)


def test_lock_held_names_pid_host_task_and_utc_start():
    error = LockHeld("upsert", {"pid": 42, "host": "box-1", "task_id": "t-9", "since": 0.0})
    assert str(error) == ("lock 'upsert' is held by pid 42 on box-1 (task t-9) since "
                          "1970-01-01 00:00:00 UTC")
    assert error.owner["host"] == "box-1"


def test_lock_held_without_an_owner_or_start_time_says_so():
    assert str(LockHeld("upsert", None)) == "lock 'upsert' is held by unknown holder"
    undated = LockHeld("upsert", {"pid": 1, "host": "h", "task_id": None, "since": "soon"})
    assert str(undated).endswith("since an unknown time")


def test_repr_tells_whether_the_lease_is_held(redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5)
    assert repr(lock) == f"LeaseLock(name={UPSERT_LOCK!r}, ttl_s=5, held=False)"
    assert lock.acquire()
    assert repr(lock).endswith("held=True)")


def test_inspect_reports_a_new_locks_age_and_ttl_in_seconds(redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=10_000)
    assert lock.acquire()
    [info] = inspect(redis_client)
    assert 0 <= info.age_s < 0.5
    assert 9_999 < info.ttl_s <= 10_000
    assert info.owner["pid"] == os.getpid() and info.owner["host"] == socket.gethostname()
    assert info.holder_alive is True


@pytest.mark.parametrize("value", ["not json " + "x" * 300, json.dumps(["a list"] * 50)],
                         ids=["text", "json-list"])
def test_a_value_that_is_not_our_json_is_shown_raw_and_cut_to_200_characters(redis_client,
                                                                              value):
    redis_client.set(LOCK_KEY_PREFIX + "foreign", value)
    [info] = inspect(redis_client)
    assert info.owner == {"raw": value[:200]}
    assert info.age_s is None and info.renewed_at is None and info.holder_alive is None


def test_inspect_with_a_bytes_client_gives_text_names(redis_server, redis_client):
    assert LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5).acquire()
    [info] = inspect(connect(redis_server.url, decode_responses=False))
    assert info.name == UPSERT_LOCK and info.key == LOCK_KEY_PREFIX + UPSERT_LOCK
    assert info.owner["pid"] == os.getpid()


class _VanishingKeyClient:
    """A client whose SCAN also returns a lock that expires before it is read."""

    def __init__(self, client):
        self._client = client

    def scan_iter(self, **options):
        yield from self._client.scan_iter(**options)
        yield LOCK_KEY_PREFIX + "expired-meanwhile"

    def pipeline(self, **options):
        return self._client.pipeline(**options)


def test_a_lock_that_expires_during_inspect_is_listed_without_an_owner(redis_client):
    assert LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5).acquire()
    infos = {info.name: info for info in inspect(_VanishingKeyClient(redis_client))}
    gone = infos["expired-meanwhile"]
    assert gone.owner is None and gone.age_s is None and gone.renewed_at is None
    assert gone.ttl_s is None and gone.holder_alive is None
    assert infos[UPSERT_LOCK].owner["pid"] == os.getpid()
    assert time.time() - infos[UPSERT_LOCK].renewed_at < 5


def test_a_renewal_keeps_the_leases_token_and_start(redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5)
    assert lock.acquire()
    before = json.loads(redis_client.get(lock.key))
    assert lock.renew()
    after = json.loads(redis_client.get(lock.key))
    assert after["token"] == before["token"] and len(after["token"]) == 32
    assert after["since"] == before["since"] and after["renewed_at"] >= before["renewed_at"]


def test_a_lost_lease_stays_lost(redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5)
    assert lock.acquire()
    redis_client.set(lock.key, "someone else")
    assert lock.renew() is False and lock.lost.is_set()
    assert lock.renew() is False and lock.release() is False
    assert repr(lock).endswith("held=False)")
    assert redis_client.get(lock.key) == "someone else"


def test_entering_a_held_lock_names_the_lock(redis_client):
    assert LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5).acquire()
    with pytest.raises(LockHeld) as caught, LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5):
        pass
    assert str(caught.value).startswith(f"lock {UPSERT_LOCK!r} is held by pid {os.getpid()}")


def test_the_heartbeat_never_keeps_a_process_alive(redis_client):
    with LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5):
        [heartbeat] = [t for t in threading.enumerate() if t.name == f"lease-{UPSERT_LOCK}"]
        assert heartbeat.daemon


def test_leaving_the_context_while_redis_is_down_does_not_raise(redis_server, redis_client):
    lock = LeaseLock(connect(redis_server.url, socket_timeout=0.2), UPSERT_LOCK, ttl_s=5)
    try:
        with lock:
            redis_server.stop()
    finally:
        redis_server.start()
    assert not lock.lost.is_set()


def test_a_redis_outage_shorter_than_the_ttl_keeps_the_lease(redis_server, redis_client):
    lock = LeaseLock(connect(redis_server.url, socket_timeout=0.2), UPSERT_LOCK, ttl_s=3)
    renewals = []
    renew = lock.renew

    def counted_renew() -> bool:
        try:
            renewals.append(renew())
        except Exception:
            renewals.append("error")
            raise
        return renewals[-1]

    lock.renew = counted_renew
    with lock:
        redis_server.stop(save=True)  # the lease survives the restart
        try:
            wait_until(lambda: "error" in renewals, 5, "a renewal to fail")
            assert not lock.lost.is_set(), "one failed renewal, less than a TTL: still ours"
        finally:
            redis_server.start()
        wait_until(lambda: renewals[-1] is True, 5, "a renewal after Redis is back")
        assert not lock.lost.is_set()


@pytest.mark.parametrize("ttl_s", [0, -1])
def test_a_lease_needs_a_positive_ttl(redis_client, ttl_s):
    with pytest.raises(ValueError, match=f"ttl_s must be positive, got {ttl_s}"):
        LeaseLock(redis_client, UPSERT_LOCK, ttl_s=ttl_s)


def test_a_lock_never_acquired_holds_nothing(redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=5)
    assert lock.renew() is False and lock.release() is False
    assert repr(lock).endswith("held=False)") and not lock.lost.is_set()
