"""Pidfiles that identify exactly one process: its pid plus the command line it runs.

`<name>.pid` holds the pid; `<name>.cmdline` holds the command line in /proc/<pid>/cmdline
format (each argument NUL-terminated). A pidfile names a live process only while
/proc/<pid>/cmdline equals the recorded bytes exactly, so a reused pid, a `tail -f worker.log`
or a zombie never passes for our worker (FAILURES L7), and a stale pidfile is ignored, never
trusted, never "fixed" by deleting the process it names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from keepa_deals.ops import processes
from keepa_deals.processes import process_alive


def encode_argv(argv: Sequence[str]) -> bytes:
    """The /proc/<pid>/cmdline bytes of a process started with `argv`."""
    return b"".join(os.fsencode(arg) + b"\0" for arg in argv)


def own_command_line() -> bytes:
    """This process's command line, exactly as /proc shows it."""
    return processes.command_line(os.getpid()) or b""


class PidFile:
    """The pidfile pair `<run_dir>/<name>.pid` and `<run_dir>/<name>.cmdline`."""

    def __init__(self, run_dir: Path, name: str):
        self.name = name
        self.pid_path = Path(run_dir) / f"{name}.pid"
        self.cmdline_path = Path(run_dir) / f"{name}.cmdline"

    def __repr__(self) -> str:
        return f"PidFile({str(self.pid_path)!r})"

    def write(self, pid: int, command_line: bytes) -> None:
        """Record `pid` running `command_line` (each file replaced atomically)."""
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        _replace(self.cmdline_path, command_line)
        _replace(self.pid_path, f"{pid}\n".encode())

    def recorded_pid(self) -> int | None:
        """The pid in the file, whatever runs under it (None when absent or unreadable)."""
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def live_pid(self) -> int | None:
        """The recorded pid when that process is alive and runs the recorded command line."""
        pid = self.recorded_pid()
        if pid is None or not process_alive(pid):
            return None
        try:
            expected = self.cmdline_path.read_bytes()
        except OSError:
            return None
        return pid if expected and processes.command_line(pid) == expected else None

    def remove(self, *, if_pid: int | None = None) -> None:
        """Delete both files; with `if_pid`, only while they still record that pid."""
        if if_pid is not None and self.recorded_pid() != if_pid:
            return
        self.pid_path.unlink(missing_ok=True)
        self.cmdline_path.unlink(missing_ok=True)


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
