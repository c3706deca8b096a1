"""Migrations happen once per start or deploy, behind a snapshot a rollback can restore; a
schema the code does not match is one line naming the fix, never a traceback or a task run's
silent upgrade."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pg_server import PASSWORD

from keepa_deals import db
from keepa_deals.config import load_settings
from keepa_deals.ops import control

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path):
    return load_settings({"VAR_DIR": str(tmp_path / "var")}, dotenv_path=os.devnull)


def database_at(path: Path, version: int) -> None:
    """A database migrated up to `version` only (an older deployment's)."""
    conn = db.connect(path)
    try:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at INTEGER NOT NULL)")
        for number, script in db.available_migrations()[:version]:
            for statement in db._statements(script.read_text()):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
        conn.execute("INSERT INTO pipeline_state VALUES ('marker', '\"before\"', 0)")
    finally:
        conn.close()


def test_a_snapshot_is_taken_only_when_migrations_are_pending_and_restores_exactly(settings):
    older = db.latest_version() - 1
    database_at(settings.database_path, older)
    snapshot = settings.var_dir / "backups" / "before.db"
    said = []
    control.migrate(settings, snapshot=snapshot, report=said.append)
    assert snapshot.is_file() and "schema " + str(older) in said[0]
    conn = db.connect(settings.database_path)
    assert db.schema_version(conn) == db.latest_version()
    with db.transaction(conn):
        db.set_state(conn, "marker", "after")
    conn.close()

    control.restore_snapshot(settings, snapshot, report=said.append)
    conn = db.connect(settings.database_path)
    assert db.schema_version(conn) == older and db.get_state(conn, "marker") == "before"
    conn.close()
    control.migrate(settings)
    control.migrate(settings, snapshot=snapshot)
    assert not snapshot.exists(), "nothing pending: no snapshot, and no stale one left"


def test_a_database_newer_than_the_code_is_one_line_with_the_fix(settings, tmp_path):
    database_at(settings.database_path, db.latest_version())
    conn = sqlite3.connect(settings.database_path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    conn.commit()
    conn.close()
    env = {**os.environ, "VAR_DIR": str(settings.var_dir)}
    env.pop("DATABASE_PATH", None)
    result = subprocess.run([sys.executable, "-m", "keepa_deals.ops", "migrate"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "schema version 99 is newer than this code's" in result.stderr


def test_a_task_run_never_upgrades_an_existing_database(settings):
    database_at(settings.database_path, db.latest_version() - 1)
    conn = db.connect(settings.database_path)
    with pytest.raises(db.MigrationError, match=r"apply the migrations: .*ops migrate"):
        db.ensure_schema(conn)
    assert db.schema_version(conn) == db.latest_version() - 1
    conn.close()
    fresh = db.connect(settings.var_dir / "fresh.db")
    db.ensure_schema(fresh)
    assert db.schema_version(fresh) == db.latest_version(), "a brand-new database is created"
    fresh.close()


def test_ops_migrate_on_postgresql_upgrades_without_a_snapshot_and_hides_the_password(
        postgres_url, tmp_path):
    conn = db.connect(postgres_url)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                 "applied_at BIGINT NOT NULL)")
    older = db.latest_version() - 1
    for number, script in db.available_migrations("postgresql")[:older]:
        conn.execute_script(script.read_text())
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
    conn.close()
    snapshot = tmp_path / "before.db"
    env = {**os.environ, "DATABASE_URL": postgres_url, "VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-m", "keepa_deals.ops", "migrate", "--snapshot",
                           str(snapshot)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "no snapshot taken" in done.stdout and not snapshot.exists()
    assert "postgresql://keepa:***@" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    conn = db.connect(postgres_url)
    assert db.schema_version(conn) == db.latest_version()
    conn.close()


def test_a_postgresql_server_that_refuses_is_one_line_without_the_password(postgres_server,
                                                                           tmp_path):
    env = {**os.environ, "DATABASE_URL": postgres_server.url(password="not-Q3-it"),
           "VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-m", "keepa_deals.ops", "migrate"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "not-Q3-it" not in done.stdout + done.stderr
    assert "postgresql://keepa:***@" in done.stderr, done.stderr
