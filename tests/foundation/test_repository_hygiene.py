"""Runtime state never reaches git (FAILURES O2): nothing tracked looks like state, and every
kind of runtime file the system writes is ignored."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_FILES = ("var/deals.db", "var/redis/dump.rdb", "var/redis/appendonlydir/a.aof",
                 "var/run/worker.pid", "var/log/worker.log", "celerybeat-schedule.db", ".env",
                 "dump.rdb", "deals.db-wal")
STATE_PATTERNS = ("var/*", "*.rdb", "*.aof", "*.pid", "*.log", "celerybeat-schedule*", ".env",
                  "*.db", "*.db-wal", "*.db-shm")


def git(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(PROJECT_ROOT), *arguments], capture_output=True,
                          text=True, check=False)


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    listed = git("ls-files")
    if listed.returncode != 0:
        pytest.fail(f"not a git checkout ({listed.stderr.strip()}): run the tests from a clone")
    return listed.stdout.splitlines()


def test_no_runtime_state_is_tracked(tracked):
    state = [path for path in tracked
             if any(fnmatch.fnmatch(path, pattern) for pattern in STATE_PATTERNS)]
    assert state == []


def test_every_kind_of_runtime_file_is_ignored(tracked):
    checked = git("check-ignore", "--no-index", *RUNTIME_FILES)
    ignored = set(checked.stdout.splitlines())
    assert [path for path in RUNTIME_FILES if path not in ignored] == []
