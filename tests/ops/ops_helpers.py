"""Helpers of the operations tests: a throw-away copy of the project, scripts run in it,
pidfiles read from it, conditions polled with deadlines."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from keepa_deals.processes import process_alive

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_NOT_COPIED = {".venv", ".git", "var", "tests", "bench", "__pycache__", ".pytest_cache",
               ".ruff_cache", ".env"}
_OUR_VARIABLES = ("KEEPA_API_KEY", "KEEPA_API_URL", "REDIS_URL", "VAR_DIR", "DATABASE_PATH",
                  "PYTHONPATH", "KEEPA_QUERY_PATH", "DASHBOARD_PASSWORD", "DATABASE_URL",
                  "HOST_NAME", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_REQS")


def copy_project(destination: Path) -> Path:
    """The working tree copied to `destination`, with the real .venv symlinked (not rebuilt)."""
    shutil.copytree(PROJECT_ROOT, destination,
                    ignore=lambda _dir, names: [n for n in names if n in _NOT_COPIED])
    (destination / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return destination


def clean_environment(**overrides) -> dict[str, str]:
    """Our environment without the project's variables (a copy must not see the real ones)."""
    env = {k: v for k, v in os.environ.items() if k not in _OUR_VARIABLES}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run(root: Path, *command: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a script of the copy (e.g. "./start_celery.sh") from its root; output captured."""
    return subprocess.run(list(command), cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def recorded_pid(root: Path, name: str) -> int | None:
    try:
        return int((root / "var" / "run" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (e.g. a Celery worker's pool)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def show(result: subprocess.CompletedProcess) -> str:
    """A script's output for an assertion message."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def ok_runs_since(database: Path, since: float) -> int:
    """How many task runs that started after `since` (unix time) ended ok."""
    conn = sqlite3.connect(database, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM runs WHERE outcome = 'ok' AND started_at > ?",
                            (since,)).fetchone()[0]
    finally:
        conn.close()


def in_append_only_file(redis_dir: Path, data: bytes) -> bool:
    """Whether `data` reached the private Redis's append-only file on disk."""
    files = [*redis_dir.glob("appendonly*.aof"), *redis_dir.glob("appendonlydir/*.aof")]
    return any(data in path.read_bytes() for path in files)


class ForegroundRunner:
    """The runner as a subprocess, its merged output collected line by line."""

    def __init__(self, project: Path, env: dict, *arguments: str):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keepa_deals.runner", "--stop-timeout", "15", *arguments],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, pattern: str) -> re.Match | None:
        return next((m for line in list(self.lines) if (m := re.search(pattern, line))), None)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def output(self) -> str:
        return "\n".join(self.lines)
