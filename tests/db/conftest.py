"""Fixtures for the deal store tests: a migrated store on each backend (`conn`, `store` from
tests/conftest.py), or a SQLite file (`db_path`, `sqlite_conn`) for SQLite's own behaviour."""

from __future__ import annotations

import pytest
from support import migrated_store


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "var" / "deals.db"


@pytest.fixture
def conn(store_conn):
    return store_conn


@pytest.fixture
def sqlite_conn(db_path):
    yield from migrated_store(db_path)
