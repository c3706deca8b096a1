"""How every process writes its log: human-readable lines (LOG_FORMAT=text, the default) or one
JSON object per line (LOG_FORMAT=json) for log shippers.

A JSON line has `time` (ISO 8601, UTC), `level`, `process` (worker, beat, dashboard, runner,
supervisor, …), `pid`, `logger`, `message`, the `task` and `run_id` of the pipeline run it
belongs to (`log_context`), any `extra=` fields of the call, and `exception` when there is one.
Messages pass through keepa_api.redact, so the Keepa key is never written.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator

_mode = {"format": "text", "process": None}
_context: contextvars.ContextVar[tuple] = contextvars.ContextVar("keepa_log_context",
                                                                 default=())  # (key, value)…
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def configure(settings, process: str) -> None:
    """Set this process's format (settings.log_format) and name, and register the secrets of
    `settings` for redaction (call once at start, before logging is set up)."""
    from keepa_deals.keepa_api import register_secret

    _mode.update(format=settings.log_format, process=process)
    for secret in (settings.keepa_api_key, settings.dashboard_password,
                   settings.alerts.smtp_password, settings.alerts.webhook_url,
                   *settings.url_secrets):
        register_secret(secret or "")


def is_json() -> bool:
    return _mode["format"] == "json"


@contextlib.contextmanager
def log_context(**fields) -> Iterator[None]:
    """Fields (e.g. task, run_id) added to every JSON line logged inside the block."""
    token = _context.set((*_context.get(), *fields.items()))
    try:
        yield
    finally:
        _context.reset(token)


def json_line(message: str, *, level: str = "info", process: str | None = None,
              **fields) -> str:
    """One JSON log line for a message that does not come through `logging` (a field given as
    None, e.g. pid=None for another process's line, is left out)."""
    entry = {"time": _iso(time.time()), "level": level,
             "process": process or _mode["process"], "pid": os.getpid(),
             "message": _redacted(message), **dict(_context.get()), **fields}
    return json.dumps({k: v for k, v in entry.items() if v is not None}, default=str,
                      ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        extra = {key: value for key, value in vars(record).items()
                 if key not in _RECORD_FIELDS and not key.startswith("_")}
        entry = {"time": _iso(record.created), "level": record.levelname.lower(),
                 "process": _mode["process"] or record.processName, "pid": record.process,
                 "logger": record.name, "message": _redacted(record.getMessage()),
                 **dict(_context.get()), **extra}
        if record.exc_info:
            entry["exception"] = _redacted(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def apply_to(logger: logging.Logger) -> None:
    """In JSON mode, make every handler of `logger` write JSON lines."""
    if is_json():
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + \
        f".{int(timestamp % 1 * 1000):03d}Z"


def _redacted(text: str) -> str:
    from keepa_deals.keepa_api import redact

    return redact(text)
