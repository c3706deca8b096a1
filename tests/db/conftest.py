"""Fixtures for the deal store tests: a migrated SQLite file in a fresh directory."""

from __future__ import annotations

import pytest

from keepa_deals import db


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "var" / "deals.db"


@pytest.fixture
def conn(db_path):
    connection = db.connect(db_path)
    db.migrate(connection)
    yield connection
    connection.close()
