"""List the pipeline's Redis locks; delete those whose holder process is dead.

Usage: .venv/bin/python Diagnostics/force_clear_locks.py [--dry-run] [--force]

Locks are leases (keepa_deals.locks): a crashed holder stops renewing and its lock expires
within one TTL by itself, so this tool is for a human in a hurry, not the recovery mechanism.
A deletion is a compare-and-delete of the exact value that was judged, so a lock taken over
meanwhile by a new, live holder is never deleted by mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from Diagnostics._cli import fail, parser, scrub
from keepa_deals.config import ConfigError, load_settings
from keepa_deals.constants import KNOWN_LOCKS, LOCK_KEY_PREFIX
from keepa_deals.host import host_name
from keepa_deals.locks import LockInfo, inspect
from keepa_deals.redis_server import (
    RedisUnavailable,
    connect,
    ensure_redis,
    explain,
    password_forms,
)

EXIT_OK = 0
EXIT_DEAD_LOCKS_LEFT = 1
EXIT_UNREACHABLE = 3

_EPILOG = """\
what happens to each lock:
  holder process on this host is gone            deleted (listed only, with --dry-run)
  holder alive, on another host, or unreadable   kept; deleted only with --force

exit codes:
  0  no lock of a dead holder is left (deleted now, or there was none)
  1  --dry-run found locks of dead holders (nothing was deleted)
  2  bad command-line usage
  3  Redis unreachable, or the configuration (.env / environment) is invalid
"""

# KEYS[1] lock key, ARGV[1] the exact value judged; deletes only that value.
_DELETE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Unreachable(Exception):
    """Redis cannot be used; the message is one line without secrets."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client, passwords = _connect()
    except _Unreachable as exc:
        return fail(str(exc), EXIT_UNREACHABLE)
    try:
        return _clear(client, dry_run=args.dry_run, force=args.force)
    except redis.RedisError as exc:
        return fail(f"Redis failed mid-way: {scrub(str(exc), *passwords)}", EXIT_UNREACHABLE)


def _connect() -> tuple[redis.Redis, tuple[str, ...]]:
    try:
        settings = load_settings()
        url = settings.redis_url or ensure_redis(settings, start=False)[0]
    except (ConfigError, RedisUnavailable) as exc:
        raise _Unreachable(str(exc)) from None
    client = connect(url)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise _Unreachable(explain(exc, url)) from None
    return client, password_forms(url)


def _clear(client: redis.Redis, *, dry_run: bool, force: bool) -> int:
    found = {info.name: info for info in inspect(client)}
    names = list(KNOWN_LOCKS) + sorted(set(found) - set(KNOWN_LOCKS))
    rows = [("LOCK", "HOLDER", "AGE", "TTL", "ALIVE", "ACTION")]
    dead_left = 0
    for name in names:
        info = found.get(name)
        if info is None:
            rows.append((name, "-", "-", "-", "-", "free"))
            continue
        action = _action(client, info, dry_run=dry_run, force=force)
        dead_left += info.holder_alive is False and action.startswith("would")
        rows.append((name, _holder(info.owner), _duration(info.age_s), _duration(info.ttl_s),
                     _alive(info.holder_alive), action))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return EXIT_DEAD_LOCKS_LEFT if dead_left else EXIT_OK


def _action(client: redis.Redis, info: LockInfo, *, dry_run: bool, force: bool) -> str:
    if info.holder_alive is not False and not force:
        return f"kept ({_why_kept(info)}; --force deletes)"
    if dry_run:
        return "would delete"
    raw = client.get(info.key)
    if raw is None:
        return "gone meanwhile"
    if not _same_holder(raw, info.owner):
        return "kept (taken over meanwhile)"
    deleted = client.eval(_DELETE_IF_UNCHANGED, 1, info.key, raw)
    return "DELETED" if deleted else "kept (changed meanwhile)"


def _why_kept(info: LockInfo) -> str:
    if info.holder_alive:
        return "holder alive"
    if info.owner and info.owner.get("host") and info.owner["host"] != host_name():
        return "holder on another host"
    return "holder unknown"


def _same_holder(raw: str, owner: dict | None) -> bool:
    """Whether the lock's current value still names the holder that was judged."""
    owner = owner or {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return owner.get("raw") == raw[:200]
    return all(value.get(k) == owner.get(k) for k in ("host", "pid", "since"))


def _holder(owner: dict | None) -> str:
    if not owner:
        return "?"
    if "raw" in owner:
        return f"unreadable value {owner['raw'][:30]!r}"
    task = f" task {str(owner['task_id'])[:24]}" if owner.get("task_id") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')}{task}"


def _alive(alive: bool | None) -> str:
    return {True: "yes", False: "NO", None: "?"}[alive]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    return time.strftime("%Hh%Mm", time.gmtime(seconds)) if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _parser() -> argparse.ArgumentParser:
    cli = parser(
        "force_clear_locks.py", epilog=_EPILOG,
        description=f"List the locks under {LOCK_KEY_PREFIX}* (holder, age, TTL, whether the "
                    "holder is alive) and delete those whose holder is dead. Redis: REDIS_URL, "
                    "else the project's private server (never started by this tool).")
    cli.add_argument("--dry-run", action="store_true", help="list and decide, delete nothing")
    cli.add_argument("--force", action="store_true",
                     help="also delete locks whose holder is alive or cannot be checked")
    return cli


if __name__ == "__main__":
    sys.exit(main())
