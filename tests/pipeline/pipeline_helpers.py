"""Helpers of the pipeline tests: the test query and timings, reading results, Celery processes.

Celery processes run with the venv's python (`sys.executable -m celery`) in their own process
group, so a SIGKILL takes the prefork children with it like a crashed machine would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
from support import wait_until

from keepa_deals import postgres
from keepa_deals.keepa_time import keepa_minute_to_unix
from keepa_deals.redis_server import connect

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Used prices of any category that moved within 90 days: ~380 deals (3 pages) from the
# 1 000-product catalogue of sim_config(). All integers, like the real query (keepa-api.md §2.2).
LOOSE_QUERY = {"domainId": 1, "priceTypes": [2], "dateRange": 3, "sortType": 4}
MINUTE_MS = 250  # the simulator's refill tick
KEEPA_MINUTE_MS = 60_000  # one minute of Keepa time (lastUpdate resolution)

FAST_TIMINGS = {
    "KEEPA_REFILL_PERIOD_MS": MINUTE_MS,
    "BACKFILL_INTERVAL_S": 1,
    "UPSERT_INTERVAL_S": 1,
    "JANITOR_INTERVAL_S": 3600,
    "TASK_SLICE_S": 8,
    "LOCK_TTL_S": 3,
    "KEEPA_READ_TIMEOUT_S": 10,
}


def sim_config(**sections) -> dict:
    """A small, fast simulator (1 000 products, refill tick MINUTE_MS); sections merge in."""
    config = {
        "seed": 7,
        "catalogue": {"n_products": 1000, "domains": [1]},
        "clock": {"mode": "scaled", "minute_ms": MINUTE_MS},
        "default_refill_rate": 100,
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


def frozen_sim(sim_factory, **sections):
    """A simulator frozen one second into a Keepa minute (small advances stay in the minute)."""
    sim = sim_factory(**sim_config(clock={"mode": "frozen"}, **sections))
    now = sim.state()["clock"]["now_ms"]
    sim.clock(set_ms=now - now % KEEPA_MINUTE_MS + 1_000)
    return sim


# --------------------------------------------------------------------------- reading results

def _query(database: Path | str, sql: str, params=()) -> list[tuple]:
    """Rows of `sql` from a SQLite file or a PostgreSQL URL ([] before the tables exist)."""
    if postgres.is_url(database):
        return _query_postgres(database, sql, params)
    if not Path(database).exists():
        return []
    conn = sqlite3.connect(database, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:  # tables not migrated yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def _query_postgres(url: str, sql: str, params) -> list[tuple]:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(postgres.translate(sql) if params else sql,
                                params or None).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def stored_deals(database: Path) -> dict[str, int]:
    """{asin: last_update_at} of the deals table; fails the test on a duplicate ASIN."""
    rows = _query(database, "SELECT asin, last_update_at FROM deals")
    assert len(rows) == len({asin for asin, _ in rows}), "duplicate ASINs in deals"
    return dict(rows)


def enrichment_lag(database: Path) -> dict[str, int]:
    """{asin: last_update_at} of the deals whose /product data predate their lastUpdate."""
    return dict(_query(database, "SELECT asin, last_update_at FROM deals WHERE enriched_at IS "
                                 "NULL OR enriched_update_at < last_update_at"))


def enriched_count(database: Path) -> int:
    """How many deals have /product data."""
    rows = _query(database, "SELECT COUNT(*) FROM deals WHERE enriched_at IS NOT NULL")
    return rows[0][0] if rows else 0


def never_enriched(database: Path) -> set[str]:
    """ASINs of the deals that never got /product data."""
    rows = _query(database, "SELECT asin FROM deals WHERE enriched_at IS NULL")
    return {asin for (asin,) in rows}


def newest_enrichment(database: Path) -> int:
    """The latest enriched_at of the deals table (unix seconds)."""
    return _query(database, "SELECT MAX(enriched_at) FROM deals")[0][0]


def deal_prices(database: Path, asins) -> dict[str, int | None]:
    """{asin: current_cents} of the given ASINs."""
    asins = list(asins)
    marks = ", ".join("?" * len(asins))
    return dict(_query(database, f"SELECT asin, current_cents FROM deals WHERE asin IN ({marks})",
                       asins))


def state(database: Path, name: str):
    rows = _query(database, "SELECT value FROM pipeline_state WHERE name = ?", (name,))
    return json.loads(rows[0][0]) if rows else None


def runs(database: Path, task: str) -> list[dict]:
    names = ("id", "outcome", "deals_written", "tokens_spent", "error", "detail", "revision",
             "started_at", "ended_at")
    rows = _query(database, f"SELECT {', '.join(names)} FROM runs WHERE task = ? ORDER BY id",
                  (task,))
    return [dict(zip(names, row, strict=True)) for row in rows]


def truth_deals(sim, selection: dict) -> dict[str, int]:
    """{asin: lastUpdate in unix seconds}: the simulator's ground truth for `selection` now."""
    return {item["asin"]: keepa_minute_to_unix(item["lastUpdate"])
            for item in sim.truth(selection)["deals"]}


def truth_versions(sim, selection: dict) -> dict[str, tuple[int, int]]:
    """{asin: (creationDate, lastUpdate) in unix seconds}: the simulator's deals now."""
    return {item["asin"]: (keepa_minute_to_unix(item["creationDate"]),
                           keepa_minute_to_unix(item["lastUpdate"]))
            for item in sim.truth(selection)["deals"]}


def product_batches(sim) -> list[list[str]]:
    """ASIN lists of the /product requests the simulator answered usefully, in order."""
    return [entry["params"]["asin"].split(",") for entry in sim.requests_log()
            if entry["path"].strip("/") == "product" and entry["status"] == 200
            and not entry.get("fault")]


def deal_requests(sim) -> list[dict]:
    return [entry for entry in sim.requests_log() if entry["path"].strip("/") == "deal"]


# --------------------------------------------------------------------------- celery processes

class CeleryProcess:
    """`celery -A keepa_deals.celery_app <worker|beat>` in its own process group."""

    def __init__(self, kind: str, env: dict, log_path: Path, extra: list[str]):
        self.kind = kind
        self.log_path = log_path
        command = [sys.executable, "-m", "celery", "-A", "keepa_deals.celery_app", kind,
                   "--loglevel", "INFO", *extra]
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env,
                                        stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: worker and pool children die mid-request."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stray pool children

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_worker(redis_url: str, timeout: float = 60) -> None:
    """Until a worker heartbeat appears (the worker consumes from then on)."""
    client = connect(redis_url)
    wait_until(lambda: next(client.scan_iter(match="kd:hb:worker:*"), None), timeout,
               "a celery worker heartbeat")
