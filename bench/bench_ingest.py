"""Benchmark of deal ingestion: raw `/deal` page bytes to committed rows, on one core.

The pipeline path per page: json.loads → deals.parse_deal_page → one transaction holding
db.upsert_deals (one executemany) and the checkpoint (db.set_state). The baseline, run in the
same script on the same schema: the same parsing, then row by row SELECT-then-UPDATE/INSERT
with a commit per row (how the collector this project replaces wrote its rows).

Three phases over the same ASINs, each on realistic generated pages (150 deals, the shape of
keepa-api.md §2.2): new deals (inserts), changed deals (newer lastUpdate, new prices), and the
same pages seen again (sightings only). Target: ≥ 10 000 deals/s over all phases.
Both backends: SQLite, then PostgreSQL (a server of its own on a free port, fsync on, commits
not waiting for the flush like SQLite's WAL with synchronous=NORMAL; tests/pg_server.py).
Usage: .venv/bin/python bench/bench_ingest.py [pages per phase, default 200]
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import orjson
from bench_support import table_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_server import PostgresServer

from keepa_deals import db, postgres
from keepa_deals.constants import DEAL_PAGE_SIZE, KEEPA_EPOCH_OFFSET_MINUTES
from keepa_deals.deals import DEAL_FIELDS, parse_deal_page

TARGET_DEALS_PER_S = 10_000
DEFAULT_PAGES = 200
BASELINE_PAGES = 10
CSV_TYPES = 36
AVERAGE_WINDOWS = 4
PRICE_TYPE, DATE_RANGE, DOMAIN = 0, 0, 1
ROOT_CATEGORIES = {283155: "Books", 172282: "Electronics", 1055398: "Home & Kitchen",
                   165793011: "Toys & Games", 3760911: "Beauty", 228013: "Tools"}
WORDS = ("Silent", "Golden", "Hidden", "Modern", "Complete", "Essential", "Wild", "Little",
         "Ultimate", "Classic", "River", "Garden", "Kingdom", "Memory", "Ocean", "Empire",
         "Speaker", "Blender", "Backpack", "Lamp", "Puzzle", "Kettle", "Charger", "Tent",
         "Headphones", "Organizer", "Drill", "Mug", "Camera", "Wireless", "Portable", "Deluxe")
PHASES = ("new deals", "changed deals", "seen again")


# --------------------------------------------------------------------------- realistic pages

def deal_object(product: random.Random, market: random.Random, asin: str, minute: int) -> dict:
    """One deal as Keepa's /deal answers it: every csv type, 4 average windows. `product`
    draws what stays with the ASIN (title, categories, rating, reviews), `market` what moves
    between updates (prices, rank, offer counts)."""
    root = product.choice(list(ROOT_CATEGORIES))
    title = " ".join(product.choices(WORDS, k=product.randrange(3, 12)))
    categories = [root, product.randrange(10**6, 10**9)]
    image = list(f"{asin}L{product.randrange(10**6)}.jpg".encode("ascii"))
    created = minute - product.randrange(60, 20_000)
    current = [-1] * CSV_TYPES
    current[16], current[17] = product.randrange(10, 51), product.randrange(0, 40_000)
    for csv_type in (0, 1, 2, 4, 10, 18):
        current[csv_type] = market.randrange(199, 60_000) if market.random() < 0.8 else -1
    current[3] = market.randrange(1, 3_000_000)
    current[11], current[12] = market.randrange(0, 60), market.randrange(0, 30)
    avg = [[value if value < 0 else int(value * market.uniform(1.0, 1.6)) for value in current]
           for _ in range(AVERAGE_WINDOWS)]
    delta = [[c - a if c >= 0 and a > 0 else 0 for c, a in zip(current, row, strict=True)]
             for row in avg]
    percent = [[round(d * 100 / a) if a > 0 else 0 for d, a in zip(drow, arow, strict=True)]
               for drow, arow in zip(delta, avg, strict=True)]
    return {
        "asin": asin, "parentAsin": None, "title": title, "rootCat": root,
        "categories": categories, "image": image, "creationDate": created,
        "lastUpdate": minute, "lightningEnd": 0, "warehouseCondition": 0,
        "warehouseConditionComment": None, "current": current,
        "currentSince": [minute - market.randrange(0, 9_000)] * CSV_TYPES,
        "avg": avg, "delta": delta, "deltaPercent": percent,
        "deltaLast": [0] * CSV_TYPES, "minRating": -1,
    }


def make_pages(pages: int, minute: int) -> list[bytes]:
    """`pages` serialised /deal bodies of 150 deals, ASINs B{page}{index}, updated at
    `minute` (the same products at every minute, their prices drawn anew)."""
    market = random.Random(minute)
    bodies = []
    for page in range(pages):
        deals = []
        for index in range(DEAL_PAGE_SIZE):
            asin = f"B{page:05d}{index:04d}"
            deals.append(deal_object(random.Random(asin), market, asin, minute))
        body = {"deals": {"dr": deals, "drDateIndex": [],
                          "categoryIds": list(ROOT_CATEGORIES),
                          "categoryNames": list(ROOT_CATEGORIES.values()),
                          "categoryCount": [1] * len(ROOT_CATEGORIES)},
                "timestamp": (minute + KEEPA_EPOCH_OFFSET_MINUTES) * 60_000,
                "tokensLeft": 100, "refillIn": 30_000, "refillRate": 20, "tokensConsumed": 5}
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


# --------------------------------------------------------------------------- the two writers

def parse_page(body: bytes):
    page = parse_deal_page(json.loads(body), domain_id=DOMAIN, price_type=PRICE_TYPE,
                           date_range=DATE_RANGE)
    assert not page.malformed, page.malformed[:3]
    return page.records


def pipeline_ingest(conn, bodies: list[bytes], seen_at: int, spent: dict[str, float]) -> None:
    """The pipeline's path; adds the seconds of each step to `spent`."""
    clock = time.perf_counter
    for number, body in enumerate(bodies):
        started = clock()
        payload = orjson.loads(body)  # as KeepaClient decodes response.content
        decoded = clock()
        page = parse_deal_page(payload, domain_id=DOMAIN, price_type=PRICE_TYPE,
                               date_range=DATE_RANGE)
        parsed = clock()
        with db.transaction(conn):
            db.upsert_deals(conn, page.records, source="bench", seen_at=seen_at)
            db.set_state(conn, "bench_cursor", {"page": number})
        spent["decode"] += decoded - started
        spent["parse"] += parsed - decoded
        spent["store"] += clock() - parsed


_NAIVE_INSERT = (f"INSERT INTO deals ({', '.join(db.DEAL_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(db.DEAL_COLUMNS))})")
_NAIVE_UPDATE = (f"UPDATE deals SET {', '.join(f'{c} = ?' for c in DEAL_FIELDS[1:])}, "
                 "last_seen_at = ?, source = ? WHERE asin = ?")


def naive_ingest(conn, bodies: list[bytes], seen_at: int, spent: dict[str, float]) -> None:
    """Row by row: SELECT the stored row, then UPDATE or INSERT; every row its own commit
    (autocommit). `spent` is not filled: the baseline's steps are not timed apart."""
    for body in bodies:
        for record in parse_page(body):
            values = [json.dumps(v) if name == "categories" else v
                      for name, v in zip(DEAL_FIELDS, (getattr(record, f) for f in DEAL_FIELDS),
                                         strict=True)]
            stored = conn.execute("SELECT last_update_at FROM deals WHERE asin = ?",
                                  (record.asin,)).fetchone()
            if stored is None:
                conn.execute(_NAIVE_INSERT, (*values, seen_at, seen_at, "bench"))
            elif record.last_update_at >= stored[0]:
                conn.execute(_NAIVE_UPDATE, (*values[1:], seen_at, "bench", record.asin))
            else:
                conn.execute("UPDATE deals SET last_seen_at = ? WHERE asin = ?",
                             (seen_at, record.asin))


# --------------------------------------------------------------------------- measurement

def run_phases(location: Path | str, ingest, pages: int, spent: dict[str, float]
               ) -> tuple[list[float], int]:
    """Deals per second of each phase, and the rows stored at the end."""
    conn = db.connect(location)
    db.migrate(conn)
    minute = int(time.time()) // 60 - KEEPA_EPOCH_OFFSET_MINUTES
    inputs = [make_pages(pages, minute - 60), make_pages(pages, minute)]
    inputs.append(inputs[1])
    rates = []
    for number, bodies in enumerate(inputs):
        started = time.perf_counter()
        ingest(conn, bodies, int(time.time()) + number, spent)
        rates.append(len(bodies) * DEAL_PAGE_SIZE / (time.perf_counter() - started))
    count = db.deal_count(conn)
    conn.close()
    return rates, count


def overall(rates: list[float]) -> float:
    """Deals per second over equal-sized phases (harmonic mean)."""
    return len(rates) / sum(1 / rate for rate in rates)


def rates_row(name: str, fast_rate: float, slow_rate: float) -> tuple[str, ...]:
    return name, f"{fast_rate:,.0f}", f"{slow_rate:,.0f}", f"{fast_rate / slow_rate:.1f}x"


def compare(backend: str, locations: tuple[Path | str, Path | str], pages: int) -> bool:
    """Print one backend's table; whether it met the target."""
    spent = dict.fromkeys(("decode", "parse", "store"), 0.0)
    fast, fast_rows = run_phases(locations[0], pipeline_ingest, pages, spent)
    slow, slow_rows = run_phases(locations[1], naive_ingest, BASELINE_PAGES, spent.copy())
    assert fast_rows == pages * DEAL_PAGE_SIZE and slow_rows == BASELINE_PAGES * DEAL_PAGE_SIZE
    print(f"\n{backend}: pipeline {pages} pages x {DEAL_PAGE_SIZE} per phase; "
          f"baseline {BASELINE_PAGES} pages per phase")
    widths = (16, 12, 12, 8)
    print(table_row(("phase", "pipeline/s", "baseline/s", "ratio"), widths))
    for name, fast_rate, slow_rate in zip(PHASES, fast, slow, strict=True):
        print(table_row(rates_row(name, fast_rate, slow_rate), widths))
    total_fast, total_slow = overall(fast), overall(slow)
    met = total_fast >= TARGET_DEALS_PER_S
    print(table_row(rates_row("all phases", total_fast, total_slow), widths)
          + f"   target {TARGET_DEALS_PER_S:,}/s: {'ok' if met else 'BELOW TARGET'}")
    deals = len(PHASES) * pages * DEAL_PAGE_SIZE
    print("pipeline per deal: " + ", ".join(f"{step} {seconds / deals * 1e6:.1f} us"
                                            for step, seconds in spent.items()))
    return met


def main() -> int:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PAGES
    print(f"ingest: /deal page bytes -> committed rows, one process, schema "
          f"v{db.latest_version()}; SQLite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        met = [compare("SQLite", (Path(tmp) / "pipeline.db", Path(tmp) / "naive.db"), pages)]
    server = PostgresServer(durable=True).start()
    try:
        version = server.server_version()
        met.append(compare(f"PostgreSQL {version}", (server.create_database(),
                                                     server.create_database()), pages))
    finally:
        postgres.close_pools()
        server.remove()
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
