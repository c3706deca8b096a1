"""Freshness inputs whose figures are known by hand: `seed_freshness(conn, now)` writes them into
a migrated database, SEEDED holds what keepa_deals.freshness must make of them (shared by the
dashboard and health-report tests)."""

from __future__ import annotations

import json
import sqlite3

from keepa_deals import db
from keepa_deals.constants import TASK_BACKFILL, TASK_UPSERT

# Lag samples recorded 100 s ago: new 30/90/150/600 s -> p50 (rank 2) 90 s, p95 (rank 4) 600 s;
# changed 60..1200 s -> p50 (rank 10) 600 s, p95 (rank 19) 1140 s. Older ones must be ignored.
NEW_LAGS_S = (600, 30, 150, 90)
CHANGED_LAGS_S = tuple(range(60, 1201, 60))
OLD_SAMPLES = ((3601, "new", 5000), (7200, "changed", 9000))  # (seconds ago, kind, lag)
# Deals: 7 enriched an hour ago, 2 thirty hours ago, 1 never -> 70 % within 24 h.
ENRICHED_AGES_H = (1, 1, 1, 1, 1, 1, 1, 30, 30, None)
# Runs (task, ended seconds ago, detail). The 2-hour-old one finished the first scan and lies
# outside the hour. In the hour: pages 10 + 50, new 8, changed 24, refresh 8 = 100 tokens,
# enrichment 40 tokens for 20 deals (2 tokens a deal).
RUNS = ((TASK_BACKFILL, 7200, {"tokens_pages": 1000, "sweeps_finished": 1}),
        (TASK_UPSERT, 600, {"tokens_pages": 10, "tokens_new": 8, "enriched_new": 4}),
        (TASK_BACKFILL, 1200, {"tokens_pages": 50, "tokens_changed": 24, "tokens_refresh": 8,
                               "enriched_changed": 12, "enriched_refresh": 4,
                               "sweeps_finished": 1}))
REFILL_RATE = 20


def cursor(now: int) -> dict:
    """Scan 3 read 4 pages in 400 s (100 s a page); the last complete scan had 10 pages."""
    return {"sweep_id": 3, "page": 4, "sweep_started_at": now - 400,
            "last_sweep_finished_at": now - 400, "last_sweep_started_at": now - 1400,
            "last_sweep_pages": 10}


SEEDED = {
    "new": {"count": 4, "p50_min": 1.5, "p95_min": 10.0},
    "changed": {"count": 20, "p50_min": 10.0, "p95_min": 19.0},
    "enrich_max_age_h": 24,
    "enriched_share": 0.7,
    "tokens_last_hour": {"pages": 60, "new": 8, "changed": 24, "refresh": 8},
    "token_shares": {"pages": 0.6, "new": 0.08, "changed": 0.24, "refresh": 0.08},
    "last_scan_pages": 10,
    "scan_eta_s": 600.0,  # 6 pages left at 100 s a page
}


def seed_freshness(conn: sqlite3.Connection, now: int) -> None:
    """Write the samples, deals, runs and cursor above (recorded relative to `now`)."""
    samples = [(now - 100, "new", lag) for lag in NEW_LAGS_S]
    samples += [(now - 100, "changed", lag) for lag in CHANGED_LAGS_S]
    samples += [(now - ago, kind, lag) for ago, kind, lag in OLD_SAMPLES]
    with db.transaction(conn):
        conn.executemany("INSERT INTO freshness_samples (recorded_at, kind, lag_s) "
                         "VALUES (?, ?, ?)", samples)
        conn.executemany(
            "INSERT INTO deals (asin, domain_id, price_type, last_update_at, first_seen_at, "
            "last_seen_at, source, enriched_at) VALUES (?, 1, 0, ?, ?, ?, 'backfill_deals', ?)",
            [(f"F{number:09d}", now - 60, now - 7200, now - 60,
              None if age is None else now - age * 3600)
             for number, age in enumerate(ENRICHED_AGES_H)])
        conn.executemany(
            "INSERT INTO runs (task, started_at, ended_at, outcome, detail, host, pid, revision) "
            "VALUES (?, ?, ?, 'ok', ?, 'test-host', 1, 'r1')",
            [(task, now - ago - 60, now - ago, json.dumps(detail)) for task, ago, detail in RUNS])
        db.set_state(conn, "backfill_cursor", cursor(now))
