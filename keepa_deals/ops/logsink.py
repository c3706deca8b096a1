"""Where a child process's output goes: the console (prefixed) or a size-capped rotated file.

`pump(stream, sink)` copies lines from a child's stdout pipe into a sink on a daemon thread.
Lines are bounded in length, so a child printing without newlines cannot exhaust memory, and
files rotate at a fixed size with a fixed number of backups, so logs cannot fill the disk
(FAILURES O3) however often a child repeats itself.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import BinaryIO, Protocol, TextIO

from keepa_deals import logs

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
MAX_LINE_BYTES = 64 * 1024


class Sink(Protocol):
    def write(self, line: str) -> None: ...


class ConsoleSink:
    """Lines on a terminal, prefixed with the service name (shared lock: no interleaving)."""

    _lock = threading.Lock()

    def __init__(self, name: str, stream: TextIO | None = None, width: int = 9):
        self.name = name
        self.prefix = f"{name:<{width}}| "
        self.stream = stream

    def write(self, line: str) -> None:
        if logs.is_json() and not line.strip():
            return  # a blank line carries nothing worth a JSON object
        shown = as_json_line(line, self.name) if logs.is_json() else self.prefix + line
        self.emit(self.stream or sys.stdout, shown)

    @classmethod
    def emit(cls, stream: TextIO, line: str) -> None:
        """Write one whole line under the shared lock: the runner's own messages (stderr) and
        its children's (stdout) never run into each other on a terminal or a merged pipe."""
        with cls._lock:
            stream.write(line + "\n")
            stream.flush()


class RotatingFileSink:
    """Lines appended to `path`, rotated to path.1 … path.<backups> past `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int = LOG_MAX_BYTES,
                 backups: int = LOG_BACKUPS):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                            encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: str) -> None:
        if logs.is_json():
            if not line.strip():
                return
            line = as_json_line(line, self.path.stem)
        self._handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self._handler.close()


def rotate_when_larger(path: Path, max_bytes: int, backups: int = LOG_BACKUPS) -> bool:
    """Shift path → path.1 → … → path.<backups> (the oldest dropped) once `path` is larger than
    `max_bytes`: for logs this process does not write line by line itself — redis-server
    reopens its log file for every line, a supervisor's error file is opened at each start.
    True when it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))
    return True


def stamped(message: str) -> str:
    """A supervisor message with a UTC timestamp (child lines keep their own format); with
    LOG_FORMAT=json a JSON line of process "supervisor"."""
    if logs.is_json():
        return logs.json_line(message, process="supervisor")
    return time.strftime("[%Y-%m-%d %H:%M:%S UTC] ", time.gmtime()) + message


def as_json_line(line: str, process: str) -> str:
    """`line` as it is when it already is a JSON object (a child logging JSON), else wrapped
    into one (a warning, a traceback line, the simulator's output; the child's pid unknown)."""
    if line.startswith("{") and line.endswith("}"):
        return line
    return logs.json_line(line, process=process, pid=None)


def pump(stream: BinaryIO, sink: Sink) -> threading.Thread:
    """Copy `stream` line by line into `sink` until EOF, on a daemon thread."""

    def run() -> None:
        with stream:
            while chunk := stream.readline(MAX_LINE_BYTES):
                sink.write(chunk.decode("utf-8", errors="replace").rstrip("\r\n"))

    thread = threading.Thread(target=run, name="log-pump", daemon=True)
    thread.start()
    return thread
