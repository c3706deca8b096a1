"""Shared fixtures: a real redis-server and the Keepa simulator as a real HTTP server.

Nothing here assumes a service is already running: every server is started on a free port and
stopped at the end. Helpers wait on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pg_server import PostgresServer
from support import SimHandle, launch_simulator, migrated_store

from keepa_deals import postgres
from keepa_deals.redis_server import PrivateRedis, connect, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RedisUnderTest:
    """A private redis-server for the test session, restartable to simulate crashes."""

    def __init__(self, data_dir: Path):
        self.server = PrivateRedis(data_dir, port=free_port())

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self, *, save: bool = False) -> None:
        self.server.stop(save=save)

    def restart(self, *, keep_data: bool) -> None:
        """Restart on the same port; keep_data=False simulates a Redis that lost its state."""
        self.server.stop(save=keep_data)
        if not keep_data:  # the snapshot and the append-only file: nothing to reload
            (self.server.data_dir / "dump.rdb").unlink(missing_ok=True)
            (self.server.data_dir / "appendonly.aof").unlink(missing_ok=True)
            shutil.rmtree(self.server.data_dir / "appendonlydir", ignore_errors=True)
        self.server.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisUnderTest:
    server = RedisUnderTest(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop(save=False)


@pytest.fixture
def redis_client(redis_server):
    """A str-decoding client; every key is deleted after the test (no FLUSHALL)."""
    redis_server.start()  # a previous test may have stopped it
    client = connect(redis_server.url)
    yield client
    try:
        cleaner = connect(redis_server.url)
        keys = list(cleaner.scan_iter(count=1000))
        if keys:
            cleaner.delete(*keys)
    except Exception:  # noqa: BLE001 - a test that stopped Redis leaves nothing to clean
        pass


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """One real PostgreSQL server for the session (pg_server.py); each test its own database."""
    server = PostgresServer().start()
    yield server
    postgres.close_pools()
    server.remove()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new empty database, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres.close_pools()
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> str | Path:
    """Where a deal store lives, once per backend: a SQLite file path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "var" / "deals.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store_conn(store):
    """A writable connection to an empty migrated store, per backend."""
    yield from migrated_store(store)


@pytest.fixture
def sim_factory(tmp_path) -> Callable[..., SimHandle]:
    """Start simulators with config overrides (keepa-api.md §5.6 structure); all stopped after."""
    started: list[SimHandle] = []

    def start(**config) -> SimHandle:
        handle = launch_simulator(tmp_path, config)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sim(sim_factory) -> SimHandle:
    return sim_factory()


@pytest.fixture
def app_env(tmp_path, redis_server):
    """Build the environment for a project process (worker, beat, dashboard, script) in tests.

    Usage: env = app_env(sim, BACKFILL_INTERVAL_S="1"). KEEPA_API_KEY is removed so the process
    talks to the simulator at sim.url with the simulator's default key.
    """

    def build(sim: SimHandle | None = None, **overrides) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KEEPA_API_KEY"}
        env.update(
            REDIS_URL=redis_server.url,
            DATABASE_PATH=str(tmp_path / "deals.db"),
            VAR_DIR=str(tmp_path / "var"),
            PYTHONPATH=str(PROJECT_ROOT),
        )
        if sim is not None:
            env["KEEPA_API_URL"] = sim.url
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    return build
