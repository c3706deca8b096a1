"""Operations fixtures: a throw-away copy of the project whose scripts the tests run, and the
environment of those scripts (free ports, fast refill clock, nothing from the real setup)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ops_helpers import clean_environment, copy_project, run

from keepa_deals.redis_server import free_port

SIM_MINUTE_MS = 250


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the working tree (its .venv symlinked); whatever it started is stopped after."""
    root = copy_project(tmp_path / "project")
    yield root
    if (root / "var" / "run").is_dir():
        run(root, "./kill_everything_force.sh", "--timeout", "5", env=clean_environment(),
            timeout=60)


@pytest.fixture
def stack_env():
    """env(**overrides): the environment of the copy's scripts and services. Without
    overrides the copy runs its own simulator (fast clock) and its private Redis; the periodic
    tasks are due only after an hour (set *_INTERVAL_S to make them run)."""

    def build(**overrides) -> dict[str, str]:
        return clean_environment(**{
            "KEEPA_SIM_PORT": free_port(),
            "DASHBOARD_PORT": free_port(),
            "KEEPA_REFILL_PERIOD_MS": SIM_MINUTE_MS,
            "BACKFILL_INTERVAL_S": 3600,
            "UPSERT_INTERVAL_S": 3600,
            "LOCK_TTL_S": 5,
            "TASK_SLICE_S": 8,
            "KEEPA_READ_TIMEOUT_S": 10,
            **overrides,
        })

    return build
