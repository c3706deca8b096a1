"""Lease locks against a real Redis: crash recovery by TTL, renewal, ownership, inspection."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from support import wait_until

from keepa_deals.constants import BACKFILL_LOCK, LOCK_KEY_PREFIX, UPSERT_LOCK
from keepa_deals.locks import LeaseLock, LeaseLost, LockHeld, inspect
from keepa_deals.redis_server import connect

pytestmark = pytest.mark.timeout(60)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TTL_S = 1.0


def start_holder(redis_url, name, ttl_s):
    """A separate Python process that holds the lease (with its heartbeat) until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from keepa_deals.locks import LeaseLock
        from keepa_deals.redis_server import connect
        with LeaseLock(connect({redis_url!r}), {name!r}, ttl_s={ttl_s}, task_id="holder-task"):
            print("held", flush=True)
            while True:
                time.sleep(0.05)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_killed_holders_lock_frees_itself_within_one_ttl(redis_server, redis_client):
    holder = start_holder(redis_server.url, BACKFILL_LOCK, TTL_S)
    try:
        [info] = inspect(redis_client)
        assert info.name == BACKFILL_LOCK and info.key == LOCK_KEY_PREFIX + BACKFILL_LOCK
        assert info.owner["pid"] == holder.pid and info.owner["task_id"] == "holder-task"
        assert info.holder_alive is True and 0 < info.ttl_s <= TTL_S
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        holder.wait(timeout=5)
        wait_until(lambda: redis_client.get(LOCK_KEY_PREFIX + BACKFILL_LOCK) is None,
                 TTL_S + 1, "the dead holder's lease to expire")
        assert time.monotonic() - killed_at <= TTL_S + 0.25
        assert LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=TTL_S).acquire()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_dead_holder_is_reported_as_dead_until_its_lease_expires(redis_server, redis_client):
    holder = start_holder(redis_server.url, UPSERT_LOCK, 30)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=5)
    [info] = inspect(redis_client)
    assert info.owner["pid"] == holder.pid and info.holder_alive is False
    assert info.ttl_s > 20, "still within its TTL: only the dead pid tells"


def test_a_live_holder_keeps_its_lease_for_more_than_ten_ttls(redis_client):
    rival = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=TTL_S)
    with LeaseLock(redis_client, UPSERT_LOCK, ttl_s=TTL_S, task_id="long-run") as lock:
        ends = time.monotonic() + 10.5 * TTL_S
        while time.monotonic() < ends:
            lock.check()
            assert redis_client.pttl(lock.key) > 0
            assert not rival.acquire(), "a second instance must never get a live holder's lock"
            time.sleep(0.1)
        [info] = inspect(redis_client)
        assert info.age_s >= 10 * TTL_S and info.holder_alive is True
        assert time.time() - info.renewed_at < TTL_S
    assert redis_client.get(lock.key) is None, "leaving the context releases the lease"


def test_a_non_owner_cannot_release_or_renew(redis_client):
    owner = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5)
    other = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5)
    assert owner.acquire() and not other.acquire()
    assert other.release() is False and other.renew() is False
    assert redis_client.get(owner.key) is not None, "the owner's lease is untouched"
    assert owner.owner()["pid"] == os.getpid()
    assert owner.release() is True and redis_client.get(owner.key) is None


def test_an_expired_holder_cannot_release_its_successors_lock(redis_client):
    first = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=0.2)
    assert first.acquire()
    wait_until(lambda: redis_client.get(first.key) is None, 2, "the lease to expire", interval=0.01)
    second = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5)
    assert second.acquire()
    assert first.renew() is False and first.lost.is_set()
    assert first.release() is False
    with pytest.raises(LeaseLost, match="backfill_deals_lock"):
        first.check()
    assert second.owner() is not None and redis_client.pttl(second.key) > 1000


def test_an_expired_holder_releasing_without_a_renew_leaves_the_successor_alone(redis_client):
    first = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=0.2)
    assert first.acquire()
    wait_until(lambda: redis_client.get(first.key) is None, 2, "the lease to expire", interval=0.01)
    second = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5, task_id="the-successor")
    assert second.acquire()
    assert first.release() is False, "compare-and-delete: not the owner any more"
    assert second.owner()["task_id"] == "the-successor"


def test_the_heartbeat_signals_a_lease_taken_over(redis_client):
    with LeaseLock(redis_client, UPSERT_LOCK, ttl_s=TTL_S) as lock:
        redis_client.set(lock.key, "someone else")  # e.g. a human ran force_clear + restart
        assert lock.lost.wait(TTL_S), "the next renewal must notice"
        with pytest.raises(LeaseLost):
            lock.check()
    assert redis_client.get(lock.key) == "someone else", "exit must not delete another's lock"


def test_a_lease_that_cannot_be_renewed_for_a_ttl_is_lost(redis_server, redis_client):
    lock = LeaseLock(connect(redis_server.url, socket_timeout=0.2), UPSERT_LOCK, ttl_s=TTL_S)
    with lock:
        redis_server.stop()
        try:
            assert lock.lost.wait(3 * TTL_S), "Redis unreachable for a TTL: the lease is gone"
        finally:
            redis_server.start()


def test_entering_a_held_lock_names_the_holder(redis_client):
    with LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5, task_id="task-1"):
        second = LeaseLock(redis_client, BACKFILL_LOCK, ttl_s=5)
        with pytest.raises(LockHeld, match=f"pid {os.getpid()} .*task task-1") as caught:
            second.__enter__()
        assert caught.value.owner["task_id"] == "task-1"


def test_inspect_reports_foreign_hosts_dead_local_holders_and_unknown_values(redis_client):
    redis_client.set(LOCK_KEY_PREFIX + "elsewhere",
                     '{"host": "other-host", "pid": 1, "task_id": null, "since": 1.0, '
                     '"renewed_at": 2.0, "token": "t"}', px=5000)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    redis_client.set(LOCK_KEY_PREFIX + "orphan", json.dumps(
        {"host": socket.gethostname(), "pid": exited.pid, "task_id": "gone", "since": 1.0,
         "renewed_at": 1.0, "token": "t"}), px=5000)
    redis_client.set(LOCK_KEY_PREFIX + "legacy", "1")
    infos = {info.name: info for info in inspect(redis_client)}
    assert infos["elsewhere"].holder_alive is None and infos["elsewhere"].renewed_at == 2.0
    assert infos["orphan"].holder_alive is False, "a holder that exited on this host is dead"
    assert "token" not in infos["elsewhere"].owner
    assert infos["legacy"].owner == {"raw": "1"} and infos["legacy"].ttl_s is None
