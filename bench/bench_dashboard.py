"""Benchmark of the dashboard: p95 latency of its pages on 1 000 000 deals vs 10 000 deals.

For each database size, a temp SQLite file is migrated (db.migrate, so the real schema and its
indexes) and filled with synthetic deals (executemany), runs are recorded, a private
redis-server holds heartbeats, and the app is served by waitress on a free port. Each page is
requested WARMUP + SAMPLES times over HTTP keep-alive; p50/p95 of the samples are printed with
the ratio to the 10 000-deal baseline and the target.

Pages: the overview (/), a sorted and filtered deals page, /api/deal-count.
Runs in well under 3 minutes. Usage: .venv/bin/python bench/bench_dashboard.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "dashboard"))

from bench_support import private_redis  # noqa: E402
from dashboard_helpers import insert_deals, insert_run, synthetic_deals  # noqa: E402
from waitress.server import create_server  # noqa: E402

from keepa_deals import db, heartbeats  # noqa: E402
from keepa_deals.config import load_settings  # noqa: E402
from keepa_deals.constants import TASK_BACKFILL, TASK_UPSERT  # noqa: E402
from keepa_deals.dashboard import create_app  # noqa: E402
from keepa_deals.redis_server import connect  # noqa: E402

BIG, BASELINE = 1_000_000, 10_000
WARMUP, SAMPLES = 3, 40
INSERT_CHUNK = 100_000
# Indexes on the deals table's sortable/filterable columns, asked of the db.py owner (a
# migration). Until the migrations create them, the bench adds those missing and says so.
PROPOSED_INDEXES = ("title", "category_name", "root_category", "current_cents", "avg_cents",
                    "delta_percent", "sales_rank", "rating", "review_count", "offer_count_new")
PAGES = {  # name: (path, p95 target in ms)
    "overview": ("/", 150),
    "deals sorted+filtered": ("/deals?sort=price&dir=asc&min_drop=30&category=Electronics"
                              "&min_price=10", 150),
    "api/deal-count": ("/api/deal-count", 50),
}


def build_database(path: Path, deals: int) -> float:
    """A migrated database with `deals` synthetic deals and a day of runs; seconds taken."""
    started = time.perf_counter()
    conn = db.connect(path)
    db.migrate(conn)
    conn.execute("PRAGMA journal_mode = OFF")  # bulk load only; the app reads it in WAL mode
    conn.execute("PRAGMA synchronous = OFF")
    now = int(time.time())
    for start in range(0, deals, INSERT_CHUNK):
        insert_deals(conn, synthetic_deals(min(INSERT_CHUNK, deals - start), now=now,
                                           seed=start, start=start))
    conn.execute("BEGIN")
    for minute in range(24 * 60):
        for task in (TASK_UPSERT, TASK_BACKFILL):
            insert_run(conn, task, started_at=now - 60 * minute - 5, outcome="ok",
                       deals_written=minute % 7, tokens_spent=minute % 30)
    conn.execute("COMMIT")
    missing = sorted(set(PROPOSED_INDEXES) - indexed_columns(conn))
    for column in missing:
        conn.execute(f"CREATE INDEX bench_{column} ON deals ({column})")
    if missing:
        print(f"  added indexes the migrations lack (proposed to db.py): {', '.join(missing)}")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - started


def indexed_columns(conn) -> set[str]:
    """Columns of `deals` that lead an index."""
    leading = set()
    for index in conn.execute("PRAGMA index_list(deals)").fetchall():
        columns = conn.execute(f'PRAGMA index_info("{index[1]}")').fetchall()
        if columns:
            leading.add(columns[0][2])
    return leading


def measure(base_url: str) -> dict[str, tuple[float, float]]:
    """{page: (p50 ms, p95 ms)} over keep-alive HTTP."""
    session = requests.Session()
    results = {}
    for name, (path, _) in PAGES.items():
        timings = []
        for attempt in range(WARMUP + SAMPLES):
            started = time.perf_counter()
            response = session.get(base_url + path, timeout=30)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
            if attempt >= WARMUP:
                timings.append(elapsed)
        timings.sort()
        results[name] = (statistics.median(timings), timings[int(0.95 * len(timings)) - 1])
    return results


def bench(deals: int, workdir: Path, redis_url: str) -> dict[str, tuple[float, float]]:
    database = workdir / f"deals-{deals}.db"
    seconds = build_database(database, deals)
    print(f"  {deals:>9,} deals: database built in {seconds:.1f} s "
          f"({database.stat().st_size / 1e6:.0f} MB)", flush=True)
    settings = load_settings({"DATABASE_PATH": str(database), "REDIS_URL": redis_url,
                              "VAR_DIR": str(workdir / "var")}, dotenv_path="/dev/null")
    server = create_server(create_app(settings), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()  # ends with the bench process
    return measure(f"http://127.0.0.1:{server.effective_port}")


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        workdir = Path(tmp)
        with private_redis(workdir) as redis_url:
            client = connect(redis_url)
            heartbeats.worker_heartbeat(client, "bench-worker")
            heartbeats.beat_heartbeat(client)
            print(f"dashboard p95 latency, {SAMPLES} samples per page after {WARMUP} warm-up "
                  "requests (waitress, HTTP keep-alive)")
            baseline = bench(BASELINE, workdir, redis_url)
            big = bench(BIG, workdir, redis_url)
    print(f"\n{'page':<24}{'p50 10k':>9}{'p95 10k':>9}{'p50 1M':>9}{'p95 1M':>9}"
          f"{'ratio':>8}{'target':>8}  verdict")
    failures = 0
    for name, (_, target) in PAGES.items():
        (b50, b95), (p50, p95) = baseline[name], big[name]
        verdict = "ok" if p95 <= target else "OVER TARGET"
        failures += p95 > target
        print(f"{name:<24}{b50:>8.1f} {b95:>8.1f} {p50:>8.1f} {p95:>8.1f} "
              f"{p95 / b95:>7.1f}x {target:>6} ms  {verdict}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
