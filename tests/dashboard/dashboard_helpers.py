"""Helpers of the dashboard tests (and bench/bench_dashboard.py): deal rows, runs, polling."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg

from keepa_deals import db, postgres

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CATEGORIES = ((172282, "Electronics"), (1055398, "Home & Kitchen"), (165793011, "Toys & Games"),
              (3760911, "Beauty & Personal Care"), (283155, "Books"), (3375251, "Sports"),
              (2619525011, "Appliances"), (228013, "Tools & Home Improvement"))
_WORDS = ("Wireless", "Compact", "Deluxe", "Stainless", "Portable", "Classic", "Smart", "Mini",
          "Kettle", "Headphones", "Blender", "Drill", "Puzzle", "Lamp", "Backpack", "Charger")
DEAL_INSERT_COLUMNS = (
    "asin", "domain_id", "title", "image_url", "root_category", "category_name", "price_type",
    "current_cents", "avg_cents", "delta_cents", "delta_percent", "sales_rank", "rating",
    "review_count", "offer_count_new", "last_update_at", "first_seen_at", "last_seen_at",
    "source")


def synthetic_deals(count: int, *, now: int, seed: int = 7, start: int = 0) -> Iterator[tuple]:
    """`count` varied deal rows (tuples in DEAL_INSERT_COLUMNS order), some values missing."""
    rng = random.Random(seed)
    for number in range(start, start + count):
        root, category = CATEGORIES[rng.randrange(len(CATEGORIES))]
        avg = rng.randrange(500, 50_000)
        drop = rng.randrange(5, 90)
        current = avg * (100 - drop) // 100
        first_seen = now - rng.randrange(0, 3 * 86400)
        yield (
            f"B{number:09d}", 1,
            f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {number}",
            f"https://m.media-amazon.com/images/I/{number:08d}.jpg", root, category, 0,
            current, avg, current - avg, -drop,
            None if number % 17 == 0 else rng.randrange(1, 2_000_000),
            None if number % 13 == 0 else rng.randrange(10, 51) / 10,
            rng.randrange(0, 20_000), rng.randrange(1, 40),
            first_seen + rng.randrange(0, 3600), first_seen, now - rng.randrange(0, 600),
            "backfill_deals",
        )


def insert_deals(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert deal rows (DEAL_INSERT_COLUMNS order) in one transaction."""
    placeholders = ", ".join("?" * len(DEAL_INSERT_COLUMNS))
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO deals ({', '.join(DEAL_INSERT_COLUMNS)}) "
                     f"VALUES ({placeholders})", rows)
    conn.execute("COMMIT")


def copy_deals(url: str, rows: Iterable[tuple]) -> None:
    """Load deal rows (DEAL_INSERT_COLUMNS order) into a PostgreSQL store with one COPY."""
    with psycopg.connect(url) as conn, conn.cursor() as cursor, cursor.copy(
            f"COPY deals ({', '.join(DEAL_INSERT_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def fill_store(location: str | Path, rows: Iterable[tuple]) -> None:
    """A migrated store (SQLite path or PostgreSQL URL) holding `rows`, with fresh planner
    statistics (PostgreSQL: vacuumed too, so index-only scans need no heap visits)."""
    conn = db.connect(location)
    try:
        db.migrate(conn)
        if postgres.is_url(location):
            copy_deals(location, rows)
            conn.execute("VACUUM ANALYZE deals")
        else:
            insert_deals(conn, rows)
            conn.execute("ANALYZE")
    finally:
        conn.close()


def deal_row(asin: str, *, now: int, **values) -> tuple:
    """One deal row with sensible defaults; keyword arguments override columns."""
    row = dict(zip(DEAL_INSERT_COLUMNS, next(synthetic_deals(1, now=now)), strict=True))
    row.update(asin=asin, **values)
    return tuple(row[name] for name in DEAL_INSERT_COLUMNS)


def insert_run(conn: sqlite3.Connection, task: str, *, started_at: float, outcome: str,
               ended_at: float | None = None, deals_written: int = 0, tokens_spent: int = 0,
               error: str | None = None) -> int:
    """A row of `runs` as task_runtime records it (ended_at defaults to started_at + 1)."""
    if ended_at is None and outcome != "running":
        ended_at = started_at + 1
    cursor = conn.execute(
        "INSERT INTO runs (task, started_at, ended_at, outcome, deals_written, tokens_spent, "
        "error, host, pid, revision) VALUES (?, ?, ?, ?, ?, ?, ?, 'test-host', 1, 'r1') "
        "RETURNING id",
        (task, int(started_at), None if ended_at is None else int(ended_at), outcome,
         deals_written, tokens_spent, error))
    return cursor.fetchone()[0]
