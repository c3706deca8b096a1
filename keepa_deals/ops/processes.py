"""Processes on this host, read from /proc: command lines, process groups, TERM-then-KILL.

A zombie counts as gone everywhere here (as in keepa_deals.processes.process_alive): it runs no
code and holds no lock, and its parent may simply not have reaped it yet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keepa_deals.processes import process_alive

_PROC = Path("/proc")
_POLL_S = 0.1
_AFTER_KILL_S = 5.0  # how long a SIGKILLed process may take to vanish


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], pgrp is [2])."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def process_group(pid: int) -> int | None:
    """The process group of a live process, else None."""
    fields = _stat_fields(pid)
    return int(fields[2]) if fields and fields[0] not in ("Z", "X") else None


def command_line(pid: int) -> bytes | None:
    """/proc/<pid>/cmdline exactly (NUL-terminated arguments), or None when it is gone."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def send(pid: int, sig: int, *, group: bool = False) -> None:
    """Send `sig` to a process (or its whole group); a vanished process is not an error."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


@dataclass(frozen=True)
class StopTarget:
    """A process to stop. With `group`, it leads its own process group (we started it in a new
    session) and the whole group is waited for and, at the end, killed. Without `term`, it is
    only waited for (its supervisor, also a target, passes the TERM on) and killed at the end."""

    label: str
    pid: int
    group: bool = False
    term: bool = True

    def gone(self) -> bool:
        if process_alive(self.pid):
            return False
        return not (self.group and group_members(self.pid))


def stop(targets: Sequence[StopTarget], timeout_s: float,
         report: Callable[[str], None] = print) -> bool:
    """SIGTERM the targets, wait up to `timeout_s` for all of them, then SIGKILL the rest.

    TERM goes to the target process only (a Celery worker then shuts down warmly and stops its
    own pool); KILL goes to the whole group of group targets. True when everything is gone.
    """
    started = time.monotonic()
    for target in targets:
        if target.term:
            send(target.pid, signal.SIGTERM)
    pending = list(targets)
    deadline = started + timeout_s
    while pending and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        for target in [t for t in pending if t.gone()]:
            pending.remove(target)
            report(f"{target.label}: stopped ({time.monotonic() - started:.1f}s after TERM)")
    for target in pending:
        report(f"{target.label}: still running {timeout_s:g}s after TERM; sending KILL")
        send(target.pid, signal.SIGKILL, group=target.group)
    kill_deadline = time.monotonic() + _AFTER_KILL_S
    while pending and time.monotonic() < kill_deadline:
        pending = [t for t in pending if not t.gone()]
        time.sleep(_POLL_S)
    for target in pending:
        report(f"{target.label}: pid {target.pid} survived KILL (uninterruptible or not ours?)")
    return not pending
