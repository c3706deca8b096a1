"""Diagnostics/force_clear_locks.py against a real Redis, run as a human runs it (a file)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from ops_helpers import PROJECT_ROOT, clean_environment

from Diagnostics import force_clear_locks
from keepa_deals.constants import BACKFILL_LOCK, LOCK_KEY_PREFIX, UPSERT_LOCK
from keepa_deals.locks import LeaseLock, inspect
from keepa_deals.redis_server import free_port

pytestmark = pytest.mark.timeout(60)

SCRIPT = PROJECT_ROOT / "Diagnostics" / "force_clear_locks.py"


def clear_locks(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=PROJECT_ROOT,
                          env=clean_environment(REDIS_URL=redis_url), capture_output=True,
                          text=True, timeout=30, check=False)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def plant(client, name: str, pid: int, host: str | None = None) -> None:
    value = {"host": host or socket.gethostname(), "pid": pid, "task_id": f"t-{name}",
             "since": time.time() - 90, "renewed_at": time.time(), "token": "x"}
    client.set(LOCK_KEY_PREFIX + name, json.dumps(value), ex=600)


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(name + " "))


def test_dead_holders_lock_is_deleted_and_live_ones_are_kept(redis_server, redis_client):
    plant(redis_client, BACKFILL_LOCK, dead_pid())
    plant(redis_client, UPSERT_LOCK, os.getpid())
    plant(redis_client, "elsewhere_lock", 1, host="another-host")

    result = clear_locks(redis_server.url)

    assert result.returncode == 0, result.stderr
    assert redis_client.get(LOCK_KEY_PREFIX + BACKFILL_LOCK) is None
    assert redis_client.get(LOCK_KEY_PREFIX + UPSERT_LOCK) is not None
    assert redis_client.get(LOCK_KEY_PREFIX + "elsewhere_lock") is not None
    assert "DELETED" in row(result.stdout, BACKFILL_LOCK)
    live = row(result.stdout, UPSERT_LOCK)
    assert f"pid {os.getpid()}" in live and "yes" in live and "kept" in live
    assert re.search(r" 9\ds .* 9m5\ds ", live), "age (~90 s) and TTL (~600 s) are shown"
    assert "another host" in row(result.stdout, "elsewhere_lock")
    assert "free" in row(result.stdout, "celery_beat_lock"), "known free locks are listed"


def test_dry_run_deletes_nothing_and_says_so_in_its_exit_code(redis_server, redis_client):
    plant(redis_client, BACKFILL_LOCK, dead_pid())
    result = clear_locks(redis_server.url, "--dry-run")
    assert result.returncode == force_clear_locks.EXIT_DEAD_LOCKS_LEFT
    assert "would delete" in row(result.stdout, BACKFILL_LOCK)
    assert redis_client.get(LOCK_KEY_PREFIX + BACKFILL_LOCK) is not None

    assert clear_locks(redis_server.url, "--dry-run", "--force").returncode == 1
    assert clear_locks(redis_server.url).returncode == 0
    assert clear_locks(redis_server.url, "--dry-run").returncode == 0, "nothing dead is left"


def test_force_deletes_live_holders_locks_too(redis_server, redis_client):
    lock = LeaseLock(redis_client, UPSERT_LOCK, ttl_s=60, task_id="live")
    assert lock.acquire()
    assert clear_locks(redis_server.url).returncode == 0
    assert lock.owner() is not None, "without --force a live holder keeps its lock"
    assert clear_locks(redis_server.url, "--force").returncode == 0
    assert lock.owner() is None


def test_a_lock_taken_over_after_it_was_judged_is_not_deleted(redis_client):
    plant(redis_client, BACKFILL_LOCK, dead_pid())
    judged = next(info for info in inspect(redis_client) if info.name == BACKFILL_LOCK)
    assert judged.holder_alive is False
    redis_client.delete(judged.key)  # the lease expired; a live worker takes it
    plant(redis_client, BACKFILL_LOCK, os.getpid())

    action = force_clear_locks._action(redis_client, judged, dry_run=False, force=False)

    assert action.startswith("kept")
    assert json.loads(redis_client.get(judged.key))["pid"] == os.getpid()


def test_unreachable_redis_is_one_line_without_the_password():
    url = f"redis://:Secret-Pw-123@127.0.0.1:{free_port()}/0"
    result = clear_locks(url)
    assert result.returncode == force_clear_locks.EXIT_UNREACHABLE
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Secret-Pw-123" not in result.stderr and "***" in result.stderr


def test_help_documents_the_exit_codes():
    result = clear_locks("redis://127.0.0.1:1/0", "--help")
    assert result.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {code}" in result.stdout
