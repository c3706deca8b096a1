"""Benchmark of the dashboard: p95 latency of its pages on 1 000 000 deals vs 10 000 deals, on
SQLite and on PostgreSQL.

For each backend and database size, a store is migrated (db.migrate: the real schema, its
indexes and title search index) and filled with synthetic deals (SQLite: executemany;
PostgreSQL: COPY, then VACUUM ANALYZE), a day of runs is recorded, a private redis-server holds
heartbeats, and the app is served by waitress on a free port. PostgreSQL is a private server
(tests/pg_server.py) in a temporary directory. Each page is requested WARMUP + SAMPLES times
over HTTP keep-alive; p50/p95 of the samples are printed with the ratio to the 10 000-deal
baseline of the same backend and the target; a missed target is reported, the rest still run.

Pages: the overview (/), the deals table (first page; sorted and filtered; a deep page reached
by cursor, forwards and backwards; a filter with many matches sorted against them, whose walk
is bounded; title searches: a common word, a rare phrase, a common word in one category) and
/api/deal-count. Runs in about 5 minutes. Usage: .venv/bin/python bench/bench_dashboard.py
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "dashboard")]

from bench_support import private_redis  # noqa: E402
from dashboard_helpers import copy_deals, insert_deals, insert_run, synthetic_deals  # noqa: E402
from pg_server import PostgresServer  # noqa: E402
from waitress.server import create_server  # noqa: E402

from keepa_deals import db, heartbeats, postgres  # noqa: E402
from keepa_deals.config import load_settings  # noqa: E402
from keepa_deals.constants import TASK_BACKFILL, TASK_UPSERT  # noqa: E402
from keepa_deals.dashboard import create_app  # noqa: E402
from keepa_deals.redis_server import connect  # noqa: E402
from keepa_deals.web.deal_query import DealQuery, Position, encode_cursor  # noqa: E402

BIG, BASELINE = 1_000_000, 10_000
WARMUP, SAMPLES = 3, 40
INSERT_CHUNK = 100_000
BACKENDS = ("sqlite", "postgresql")
DEEP = 0.9  # the deep page starts this far into the order
DEEP_ORDER = {"sort": "price", "dir": "asc"}
PAGE_TARGET_MS, COUNT_TARGET_MS = 150, 50
PAGES = {  # name: (path, p95 target in ms); {deep} is the cursor 90 % into DEEP_ORDER
    "overview": ("/", PAGE_TARGET_MS),
    "deals, first page": ("/deals", PAGE_TARGET_MS),
    "deals sorted+filtered": ("/deals?sort=price&dir=asc&min_drop=30&category=Electronics"
                              "&min_price=10", PAGE_TARGET_MS),
    "deep page, Next": ("/deals?sort=price&dir=asc&page=18000&after={deep}", PAGE_TARGET_MS),
    "deep page, Previous": ("/deals?sort=price&dir=asc&page=18000&before={deep}",
                            PAGE_TARGET_MS),
    "big filter vs its sort": ("/deals?min_drop=80&sort=price&dir=desc", PAGE_TARGET_MS),
    "search, common word": ("/deals?q=kettle", PAGE_TARGET_MS),
    "search, rare phrase": ("/deals?q=lamp+1234", PAGE_TARGET_MS),
    "search + category": ("/deals?q=wireless&category=Books", PAGE_TARGET_MS),
    "api/deal-count": ("/api/deal-count", COUNT_TARGET_MS),
}


def fill(location, deals: int, now: int) -> None:
    """Migrate the store and load `deals` synthetic deals and a day of runs."""
    conn = db.connect(location)
    try:
        db.migrate(conn)
        chunks = ((start, min(INSERT_CHUNK, deals - start))
                  for start in range(0, deals, INSERT_CHUNK))
        if db.is_postgres(conn):
            for start, size in chunks:
                copy_deals(location, synthetic_deals(size, now=now, seed=start, start=start))
        else:
            conn.execute("PRAGMA journal_mode = OFF")  # bulk load only; the app reads in WAL
            conn.execute("PRAGMA synchronous = OFF")
            for start, size in chunks:
                insert_deals(conn, synthetic_deals(size, now=now, seed=start, start=start))
        conn.execute("BEGIN")
        for minute in range(24 * 60):
            for task in (TASK_UPSERT, TASK_BACKFILL):
                insert_run(conn, task, started_at=now - 60 * minute - 5, outcome="ok",
                           deals_written=minute % 7, tokens_spent=minute % 30)
        conn.execute("COMMIT")
        conn.execute("VACUUM ANALYZE deals" if db.is_postgres(conn) else "ANALYZE")
        if not db.is_postgres(conn):
            conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def deep_cursor(location, deals: int) -> str:
    """The cursor DEEP into DEEP_ORDER (the position of that row)."""
    conn = db.readonly_connect(location)
    try:
        row = conn.execute("SELECT current_cents, asin FROM deals WHERE current_cents IS NOT "
                           "NULL ORDER BY current_cents, asin LIMIT 1 OFFSET ?",
                           (int(deals * DEEP),)).fetchone()
    finally:
        conn.close()
    return encode_cursor(DealQuery.parse(DEEP_ORDER), Position(row[0], row[1]))


def measure(base_url: str, cursor: str) -> dict[str, tuple[float, float]]:
    """{page: (p50 ms, p95 ms)} over keep-alive HTTP."""
    session = requests.Session()
    results = {}
    for name, (path, _) in PAGES.items():
        url = base_url + path.format(deep=cursor)
        timings = []
        for attempt in range(WARMUP + SAMPLES):
            started = time.perf_counter()
            response = session.get(url, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
            if attempt >= WARMUP:
                timings.append(elapsed)
        timings.sort()
        results[name] = (statistics.median(timings), timings[int(0.95 * len(timings)) - 1])
    return results


@contextlib.contextmanager
def stores(backend: str, workdir: Path) -> Iterator:
    """new_store(deals) -> a location for that many deals, on `backend`."""
    if backend == "sqlite":
        yield lambda deals: workdir / f"deals-{deals}.db"
        return
    server = PostgresServer().start()
    try:
        yield lambda deals: server.create_database()
    finally:
        postgres.close_pools()
        server.remove()


def bench(location, deals: int, workdir: Path, redis_url: str) -> dict[str, tuple]:
    started = time.perf_counter()
    now = int(time.time())
    fill(location, deals, now)
    print(f"  {deals:>9,} deals: store built in {time.perf_counter() - started:.0f} s",
          flush=True)
    env = {"REDIS_URL": redis_url, "VAR_DIR": str(workdir / "var"),
           "DATABASE_PATH": str(workdir / "unused.db")}
    env["DATABASE_URL" if postgres.is_url(location) else "DATABASE_PATH"] = str(location)
    settings = load_settings(env, dotenv_path="/dev/null")
    server = create_server(create_app(settings), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()  # ends with the bench process
    return measure(f"http://127.0.0.1:{server.effective_port}", deep_cursor(location, deals))


def report(backend: str, baseline: dict, big: dict) -> int:
    """Print one backend's table; the number of pages over their target."""
    print(f"\n{backend}\n{'page':<26}{'p50 10k':>9}{'p95 10k':>9}{'p50 1M':>9}{'p95 1M':>9}"
          f"{'ratio':>8}{'target':>8}  verdict")
    failures = 0
    for name, (_, target) in PAGES.items():
        (b50, b95), (p50, p95) = baseline[name], big[name]
        verdict = "ok" if p95 <= target else "OVER TARGET"
        failures += p95 > target
        print(f"{name:<26}{b50:>8.1f} {b95:>8.1f} {p50:>8.1f} {p95:>8.1f} "
              f"{p95 / b95:>7.1f}x {target:>6} ms  {verdict}")
    return failures


def main() -> int:
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        workdir = Path(tmp)
        with private_redis(workdir) as redis_url:
            client = connect(redis_url)
            heartbeats.worker_heartbeat(client, "bench-worker")
            heartbeats.beat_heartbeat(client)
            print(f"dashboard p95 latency, {SAMPLES} samples per page after {WARMUP} warm-up "
                  "requests (waitress, HTTP keep-alive)")
            for backend in BACKENDS:
                print(backend, flush=True)
                with stores(backend, workdir) as new_store:
                    results[backend] = [bench(new_store(deals), deals, workdir, redis_url)
                                        for deals in (BASELINE, BIG)]
    failures = sum(report(backend, *results[backend]) for backend in BACKENDS)
    print(f"\np95 at 1M, side by side\n{'page':<26}{'SQLite':>9}{'PostgreSQL':>12}{'target':>8}")
    for name, (_, target) in PAGES.items():
        sqlite_p95, pg_p95 = (results[backend][1][name][1] for backend in BACKENDS)
        print(f"{name:<26}{sqlite_p95:>8.1f} {pg_p95:>11.1f} {target:>6} ms")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
