"""Helpers shared by test modules: `from support import wait_until`."""

import time
from collections.abc import Callable

import pytest


def wait_until(condition: Callable[[], object], timeout: float, message: str = "condition",
               interval: float = 0.05) -> object:
    """Poll `condition` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)
