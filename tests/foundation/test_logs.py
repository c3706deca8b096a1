"""LOG_FORMAT=json: one JSON object per record, with the run's context and the call's extra
fields, and never a registered secret."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from keepa_deals import logs
from keepa_deals.config import load_settings
from keepa_deals.ops.logsink import ConsoleSink

KEY = "Lg9" + "k" * 58 + "Z7x"


@pytest.fixture
def json_mode():
    settings = load_settings({"LOG_FORMAT": "json", "KEEPA_API_KEY": KEY},
                             dotenv_path=os.devnull)
    logs.configure(settings, "worker")
    yield
    logs.configure(load_settings({}, dotenv_path=os.devnull), "worker")


def test_a_record_is_one_json_object_with_context_extras_and_no_key(json_mode):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("keepa_deals.test_logs")
    logger.addHandler(handler)
    logs.apply_to(logger)
    try:
        with logs.log_context(task="backfill_deals", run_id=7):
            logger.warning("GET /deal?key=%s failed", KEY, extra={"status": 502})
        try:
            raise ValueError(f"boom with {KEY}")
        except ValueError:
            logger.exception("crashed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["process"] == "worker"
    assert (first["task"], first["run_id"], first["status"]) == ("backfill_deals", 7, 502)
    assert "task" not in second, "the context ends with its block"
    assert "ValueError" in second["exception"]
    assert KEY not in stream.getvalue()


def test_the_runner_console_passes_json_through_and_wraps_the_rest(json_mode):
    stream = io.StringIO()
    sink = ConsoleSink("simulator", stream)
    sink.write('{"level": "info", "message": "already json"}')
    sink.write("a plain line")
    sink.write("   ")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "a blank line is dropped"
    assert json.loads(lines[0]) == {"level": "info", "message": "already json"}
    wrapped = json.loads(lines[1])
    assert (wrapped["process"], wrapped["message"]) == ("simulator", "a plain line")
    assert "pid" not in wrapped, "another process's line: its pid is unknown here"
