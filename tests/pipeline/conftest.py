"""Pipeline fixtures: the test query file, process environments, in-process services, Celery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pipeline_helpers import FAST_TIMINGS, LOOSE_QUERY, CeleryProcess

from keepa_deals.config import load_settings
from keepa_deals.task_runtime import PipelineServices


@pytest.fixture
def query_file(tmp_path) -> Path:
    path = tmp_path / "query.json"
    path.write_text(json.dumps(LOOSE_QUERY))
    return path


@pytest.fixture
def pipeline_env(app_env, query_file):
    """env(sim, **overrides): the environment of a pipeline process (fast timings)."""

    def build(sim, **overrides) -> dict[str, str]:
        return app_env(sim, KEEPA_QUERY_PATH=str(query_file), **{**FAST_TIMINGS, **overrides})

    return build


@pytest.fixture
def services_for(pipeline_env, redis_client, store):
    """services(sim, **overrides) -> (PipelineServices, database), in this process, once per
    backend: the database is a SQLite path or a PostgreSQL URL (`store`)."""

    def build(sim, **overrides) -> tuple[PipelineServices, Path | str]:
        if isinstance(store, str):
            overrides.setdefault("DATABASE_URL", store)
        settings = load_settings(pipeline_env(sim, **overrides), dotenv_path=os.devnull)
        return PipelineServices.from_settings(settings, redis_client), settings.database

    return build


@pytest.fixture
def start_celery(tmp_path, request, redis_client):
    """start_celery(kind, env, *extra) -> CeleryProcess.

    Processes stop before the test's Redis keys are cleaned; their logs print on failure.
    """
    started: list[CeleryProcess] = []

    def start(kind: str, env: dict, *extra: str) -> CeleryProcess:
        defaults = []
        if kind == "worker":
            defaults = ["--concurrency", "3", "--without-gossip", "--without-mingle",
                        "--without-heartbeat", "-n", f"w{len(started)}@%h"]
        process = CeleryProcess(kind, env, tmp_path / f"{kind}-{len(started)}.log",
                                [*defaults, *extra])
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    if getattr(request.node, "call_failed", False):
        for process in started:
            print(f"---- {process.log_path.name} (tail) ----\n{process.log()[-5000:]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.call_failed = True
    return report
