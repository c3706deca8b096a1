"""Liveness and live status in Redis: worker and beat heartbeats, and each task's current state.

Keys (all expire, so a dead process simply disappears):
  kd:hb:worker:<hostname>  hash {host, pid, revision, ts}
  kd:hb:beat               hash {host, pid, revision, ts}
  kd:hb:task:<task>        hash {state, detail, progress, eta_s, run_id, updated_at}
Readers never raise on a missing key; values come back as plain dicts with numbers parsed.
"""

from __future__ import annotations

import os
import subprocess
import time
from functools import cache
from pathlib import Path

import redis

from keepa_deals.config import ConfigError, load_settings
from keepa_deals.constants import HEARTBEAT_KEY_PREFIX
from keepa_deals.host import host_name

WORKER_KEY_PREFIX = HEARTBEAT_KEY_PREFIX + "worker:"
BEAT_KEY = HEARTBEAT_KEY_PREFIX + "beat"
TASK_KEY_PREFIX = HEARTBEAT_KEY_PREFIX + "task:"
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_TTL_S = 3 * HEARTBEAT_INTERVAL_S
TASK_STATUS_TTL_S = 24 * 3600
_NUMERIC_FIELDS = ("started_at", "pid", "ts", "progress", "eta_s", "updated_at", "run_id")


@cache
def code_revision() -> str:
    """The deployed revision: $VAR_DIR/REVISION if a deploy wrote it, else `git rev-parse HEAD`."""
    try:
        recorded = load_settings().var_dir / "REVISION"
    except ConfigError:
        recorded = None
    if recorded is not None and recorded.is_file():
        return recorded.read_text().strip()[:40] or "unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


PROCESS_STARTED_AT = time.time()  # this process imported the module: its start, near enough


def _identity() -> dict:
    return {
        "host": host_name(),
        "pid": os.getpid(),
        "revision": code_revision(),
        "started_at": PROCESS_STARTED_AT,
        "ts": time.time(),
    }


def worker_heartbeat(r: redis.Redis, hostname: str | None = None) -> None:
    """Record that this worker process is alive (call every HEARTBEAT_INTERVAL_S)."""
    key = WORKER_KEY_PREFIX + (hostname or host_name())
    r.hset(key, mapping=_identity())
    r.expire(key, HEARTBEAT_TTL_S)


def beat_heartbeat(r: redis.Redis) -> None:
    """Record that the (single) beat process is alive."""
    r.hset(BEAT_KEY, mapping=_identity())
    r.expire(BEAT_KEY, HEARTBEAT_TTL_S)


def set_task_status(r: redis.Redis, task: str, state: str, **fields) -> None:
    """Publish a task's live state (running, waiting_tokens, idle, ...) with optional details."""
    values = {"state": state, "updated_at": time.time(), **fields}
    mapping = {k: ("" if v is None else v) for k, v in values.items()}
    key = TASK_KEY_PREFIX + task
    pipe = r.pipeline()
    pipe.delete(key)
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, TASK_STATUS_TTL_S)
    pipe.execute()


def read_workers(r: redis.Redis) -> list[dict]:
    """Live workers (heartbeat within its TTL), each {name, host, pid, revision, ts}."""
    workers = []
    for key in sorted(r.scan_iter(match=WORKER_KEY_PREFIX + "*", count=100)):
        values = _parsed(r.hgetall(key))
        if values:
            values["name"] = _text(key)[len(WORKER_KEY_PREFIX):]
            workers.append(values)
    return workers


def read_beat(r: redis.Redis) -> dict | None:
    """The beat heartbeat, or None when no beat has beaten within its TTL."""
    return _parsed(r.hgetall(BEAT_KEY)) or None


def read_task_statuses(r: redis.Redis) -> dict[str, dict]:
    """{task: status dict} for every task that published a status."""
    statuses = {}
    for key in sorted(r.scan_iter(match=TASK_KEY_PREFIX + "*", count=100)):
        values = _parsed(r.hgetall(key))
        if values:
            statuses[_text(key)[len(TASK_KEY_PREFIX):]] = values
    return statuses


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parsed(raw: dict) -> dict:
    values = {_text(k): _text(v) for k, v in raw.items()}
    for name in _NUMERIC_FIELDS:
        if values.get(name) not in (None, ""):
            try:
                number = float(values[name])
            except ValueError:
                continue
            whole = number.is_integer() and name in ("pid", "run_id")
            values[name] = int(number) if whole else number
        elif name in values:
            values[name] = None
    return values
