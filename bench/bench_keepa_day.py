"""A realistic Keepa day in minutes: how fast new and changed deals reach the table.

One simulator (bench/keepa_day_sim.json: a query of ~10,000 deals, bench/keepa_day_query.json)
runs its whole clock SPEED times faster than the wall clock: deal data time and token ticks
together, so 20 tokens per Keepa minute stay 20 tokens per Keepa minute. Two collectors run
against it at the same time, each with its own API key (its own token bucket, 20/min, starting
empty) and its own SQLite file:

* pipeline: this repository's Celery worker and beat (real processes, the default settings of a
  real deployment scaled by SPEED: both tasks every Keepa minute, slices of 4 Keepa minutes,
  ENRICH_MAX_AGE_H of 24 Keepa hours);
* naive: sweep the query's pages in order and enrich every deal of each page in chunks of 20,
  checking /token before each call and sleeping a refill period when it looks too low
  (check-and-abort), with a fixed sleep of one period after every chunk; its upserter reads the
  newest page every Keepa minute and enriches its first 20 deals. Rows are written enriched.

A poller reads the simulator's ground truth (`/_sim/deals/truth`, free) once a Keepa minute
and both tables four times a Keepa minute (the resolution of the lags). Events, from the
ground truth:

* new deal: an ASIN appears with a creationDate not seen before (created after the start);
  its lag runs from creationDate until the table holds a row with that lastUpdate or newer;
* changed deal: a listed deal's lastUpdate moves (its creationDate kept); the lag runs from the
  new lastUpdate until the row holds it or a newer one.

Figures count events of the measured window (after WARMUP_H, until 30 Keepa minutes before the
end); an event not landed by the end counts with its lag so far (a lower bound) and as "never
landed". Tokens come from the simulator's request log (per key, HTTP 200 without a fault):
utilisation = tokens charged / tokens the plan made available in the window; "on unchanged
deals" = /product tokens for a deal whose lastUpdate had not moved since its previous fetch less
than 24 Keepa hours before; tokens per new deal = newest-first (sortType 1) page tokens plus the
first /product fetch of each new deal, over the new deals.

Targets (20 tokens/min, 10,000 deals): new-deal lag p95 <= 3 Keepa minutes; changed-deal lag p95
<= 45; zero tokens on unchanged deals (races may cost <= 2 %); utilisation >= 95 % while work is
pending; changed-deal lag p95 >= 10x better than the naive collector's. A missed target is
reported, never hidden; the exit status is 1 then.

Run: .venv/bin/python bench/bench_keepa_day.py [--hours 6] [--speed 80]
     [--collector-root DIR --label NAME]  (another checkout's pipeline, e.g. the code before
     this change, in place of this one; the naive collector is skipped then)
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests
from bench_support import ROOT, CheckAndAbort, SimulatorProcess, private_redis, table_row

from keepa_deals import db, deals
from keepa_deals.constants import DEAL_PAGE_SIZE, KEEPA_EPOCH_OFFSET_MINUTES
from keepa_deals.freshness import percentile
from keepa_deals.keepa_api import KeepaError
from keepa_deals.keepa_time import unix_to_keepa_minute
from keepa_sim import DEFAULT_API_KEY
from keepa_sim.request_log import key_label

RATE = 20
HOURS = 6.0
SPEED = 80.0
WARMUP_H = 1.0
CENSOR_MARGIN_MIN = 30
DB_POLLS_PER_MINUTE = 4
REFRESH_AGE_MIN = 24 * 60
NAIVE_KEY = "NaiveCollectorBenchKey" + "0" * 41 + "2"  # 64 letters and digits
NAIVE_CHUNK = 20
NAIVE_UPSERT_THRESHOLD = 50
SIM_CONFIG = ROOT / "bench" / "keepa_day_sim.json"
QUERY = json.loads((ROOT / "bench" / "keepa_day_query.json").read_text())
TARGETS = {"new_p95": 3.0, "changed_p95": 45.0, "unchanged_share": 0.02, "utilisation": 0.95,
           "changed_ratio": 10.0}


# --------------------------------------------------------------------------- clock

@dataclass
class SimTime:
    """Simulator time from the wall clock: the simulator runs exactly `speed` times faster."""

    base_ms: int
    base_wall: float
    speed: float

    def now_minutes(self) -> float:
        """Simulator now in (fractional) Keepa minutes."""
        now_ms = self.base_ms + (time.monotonic() - self.base_wall) * 1000 * self.speed
        return now_ms / 60_000 - KEEPA_EPOCH_OFFSET_MINUTES


# --------------------------------------------------------------------------- ground truth

@dataclass
class Event:
    kind: str  # new | changed
    asin: str
    at: int  # Keepa minute: creationDate (new) or the new lastUpdate (changed)
    required: int  # the lastUpdate the row must hold (or newer)


class Truth:
    """Events from successive ground-truth polls, and each deal's lastUpdate history."""

    def __init__(self, start_minute: int):
        self.start_minute = start_minute
        self.events: list[Event] = []
        self.seen: dict[str, tuple[int, int]] = {}  # asin -> (creationDate, lastUpdate)
        self.history: dict[str, tuple[list[float], list[int]]] = {}  # asin -> (seen at, L)
        self.current: dict[str, int] = {}  # the last poll: asin -> lastUpdate

    def poll(self, deals_now: list[dict], at: float) -> list[Event]:
        new_events = []
        current = {}
        for item in deals_now:
            asin, created, updated = item["asin"], item["creationDate"], item["lastUpdate"]
            current[asin] = updated
            before = self.seen.get(asin)
            if before is None:
                if created >= self.start_minute:
                    new_events.append(Event("new", asin, created, updated))
            elif created > before[0]:
                new_events.append(Event("new", asin, created, updated))
            elif updated > before[1]:
                new_events.append(Event("changed", asin, updated, updated))
            if before is None or updated != before[1]:
                times, values = self.history.setdefault(asin, ([], []))
                times.append(at)
                values.append(updated)
            self.seen[asin] = (created, updated)
        self.current = current
        self.events.extend(new_events)
        return new_events

    def last_update_at(self, asin: str, minute: float) -> int | None:
        """The deal's lastUpdate as last polled at or before `minute`."""
        times, values = self.history.get(asin, ((), ()))
        index = bisect.bisect_right(times, minute) - 1
        return values[index] if index >= 0 else None


# --------------------------------------------------------------------------- one collector

@dataclass
class Tracker:
    """One collector: when its table first held each lastUpdate, what its tokens went to."""

    name: str
    database: Path
    key: str
    held: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)
    last_fetch: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    awaiting_first_fetch: set[str] = field(default_factory=set)
    tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def stored(self) -> dict[str, int]:
        """{asin: lastUpdate Keepa minute} of the collector's table (empty before it exists)."""
        if not self.database.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT asin, last_update_at FROM deals").fetchall()
        except sqlite3.OperationalError:
            return {}
        finally:
            conn.close()
        return {asin: unix_to_keepa_minute(updated) for asin, updated in rows}

    def observe(self, now: float) -> None:
        """Record which lastUpdate each row holds from `now` on (rows that changed)."""
        for asin, updated in self.stored().items():
            times, values = self.held.setdefault(asin, ([], []))
            if not values or values[-1] != updated:
                times.append(now)
                values.append(updated)

    def landed_at(self, event: Event) -> float | None:
        """When the table first held the event's lastUpdate (or a newer one)."""
        times, values = self.held.get(event.asin, ((), ()))
        return next((t for t, v in zip(times, values, strict=True) if v >= event.required),
                    None)

    def watch(self, events: list[Event]) -> None:
        self.awaiting_first_fetch.update(e.asin for e in events if e.kind == "new")

    def count_request(self, entry: dict, truth: Truth, window: tuple[float, float]) -> None:
        at = entry["keepa_minute"] + (entry["time_ms"] % 60_000) / 60_000
        if not window[0] <= at <= window[1]:
            return
        if entry["status"] != 200 or entry.get("fault"):
            self.tokens["wasted_on_errors"] += entry["cost"]
            return
        cost = entry["cost"]
        self.tokens["all"] += cost
        path = entry["path"].strip("/")
        if path == "deal":
            self.tokens["pages"] += cost
            selection = json.loads(entry["params"].get("selection") or "{}")
            if selection.get("sortType") == 1:
                self.tokens["newest_pages"] += cost
            return
        asins = [a for a in entry["params"].get("asin", "").split(",") if a]
        for asin in asins:
            share = cost / len(asins)
            self.tokens["products"] += share
            updated = truth.last_update_at(asin, at)
            previous = self.last_fetch.get(asin)
            if (previous is not None and updated is not None and previous[1] == updated
                    and at - previous[0] < REFRESH_AGE_MIN):
                self.tokens["unchanged"] += share
            if asin in self.awaiting_first_fetch:
                self.awaiting_first_fetch.discard(asin)
                self.tokens["new_first_fetch"] += share
            self.last_fetch[asin] = (at, updated)


# --------------------------------------------------------------------------- the naive collector

class NaiveCollector:
    """Sweep pages in order, enrich everything, check-and-abort, fixed sleeps (see above)."""

    def __init__(self, sim_url: str, database: Path, period_s: float, stop: threading.Event):
        self._keepa = CheckAndAbort(sim_url, NAIVE_KEY, QUERY, period_s=period_s, stop=stop)
        self._database = database
        self._connections = threading.local()  # one SQLite connection per thread
        db.migrate(self._connection())
        self._stop = stop

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._connections, "conn", None)
        if conn is None:
            conn = self._connections.conn = db.connect(self._database)
        return conn

    def _enrich_and_store(self, records) -> None:
        if not self._keepa.wait_until_affordable(len(records)):
            return
        try:
            products = self._keepa.client.products([r.asin for r in records])
        except KeepaError:
            return
        by_asin = {p.get("asin"): p for p in products.payload["products"]}
        rows = []
        for record in records:
            try:
                rows.append(deals.enrich(record, by_asin[record.asin]))
            except (KeyError, deals.MalformedRecord):
                rows.append(record)
        conn = self._connection()
        with db.transaction(conn):
            db.upsert_deals(conn, rows, source="naive")
        self._stop.wait(self._keepa.period_s)  # "a minute between chunks"

    def backfill(self) -> None:
        number = 0
        while not self._stop.is_set():
            page = self._keepa.page(number, QUERY.get("sortType", 4))
            if page is None:
                continue
            for start in range(0, len(page.records), NAIVE_CHUNK):
                if self._stop.is_set():
                    return
                self._enrich_and_store(page.records[start:start + NAIVE_CHUNK])
            number = 0 if page.deal_count < DEAL_PAGE_SIZE else number + 1

    def upsert(self) -> None:
        while not self._stop.is_set():
            enough = (self._keepa.tokens_left() or 0) >= NAIVE_UPSERT_THRESHOLD
            page = self._keepa.page(0, 1) if enough else None  # "not enough tokens, next run"
            if page is not None and page.records:
                self._enrich_and_store(page.records[:NAIVE_CHUNK])
            self._stop.wait(self._keepa.period_s)


# --------------------------------------------------------------------------- the pipeline

def start_pipeline(root: Path, workdir: Path, redis_url: str, sim_url: str,
                   speed: float) -> list[subprocess.Popen]:
    """This (or another) checkout's Celery worker and beat, timings scaled by `speed`."""
    query_path = workdir / "query.json"
    query_path.write_text(json.dumps(QUERY))
    minute_s = 60 / speed
    env = {**os.environ, "PYTHONPATH": str(root), "REDIS_URL": redis_url,
           "KEEPA_API_URL": sim_url, "DATABASE_PATH": str(workdir / "pipeline.db"),
           "VAR_DIR": str(workdir / "var"), "KEEPA_QUERY_PATH": str(query_path),
           "KEEPA_REFILL_PERIOD_MS": str(round(60_000 / speed)),
           "UPSERT_INTERVAL_S": f"{minute_s:.3f}", "BACKFILL_INTERVAL_S": f"{minute_s:.3f}",
           "TASK_SLICE_S": f"{max(1.0, 4 * minute_s):.3f}",
           "ENRICH_MAX_AGE_H": f"{24 / speed:.4f}"}
    env.pop("KEEPA_API_KEY", None)
    celery = [sys.executable, "-m", "celery", "-A", "keepa_deals.celery_app"]
    processes = []
    for kind, extra in (("worker", ["--concurrency", "2", "--without-gossip",
                                    "--without-mingle", "--without-heartbeat"]),
                        ("beat", [])):
        log = (workdir / f"{kind}.log").open("wb")
        processes.append(subprocess.Popen([*celery, kind, "--loglevel", "WARNING", *extra],
                                          cwd=root, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    return processes


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# --------------------------------------------------------------------------- figures

@dataclass(frozen=True)
class Figures:
    name: str
    new_p50: float | None
    new_p95: float | None
    new_count: int
    changed_p50: float | None
    changed_p95: float | None
    changed_count: int
    never_landed: int
    tokens_per_new_deal: float | None
    unchanged_tokens: float
    unchanged_share: float
    page_share: float
    utilisation: float
    current_share: float


def figures(tracker: Tracker, truth: Truth, window: tuple[float, float], end: float,
            stored_at_end: dict[str, int]) -> Figures:
    lags: dict[str, list[float]] = {"new": [], "changed": []}
    never = 0
    for event in truth.events:
        if not window[0] <= event.at <= end - CENSOR_MARGIN_MIN:
            continue
        landed = tracker.landed_at(event)
        if landed is None:
            never += 1
        lags[event.kind].append(max(0.0, (end if landed is None else landed) - event.at))
    for values in lags.values():
        values.sort()  # percentile() wants them ascending
    tokens = tracker.tokens
    new_count = len(lags["new"])
    available = RATE * (window[1] - window[0])
    current = sum(1 for asin, updated in truth.current.items()
                  if stored_at_end.get(asin) == updated)
    products = tokens["products"]
    return Figures(
        tracker.name, percentile(lags["new"], 0.5), percentile(lags["new"], 0.95), new_count,
        percentile(lags["changed"], 0.5), percentile(lags["changed"], 0.95),
        len(lags["changed"]), never,
        (tokens["newest_pages"] + tokens["new_first_fetch"]) / new_count if new_count else None,
        tokens["unchanged"], tokens["unchanged"] / products if products else 0.0,
        tokens["pages"] / tokens["all"] if tokens["all"] else 0.0,
        tokens["all"] / available if available else 0.0,
        current / len(truth.current) if truth.current else 0.0)


def report(results: list[Figures], hours: float, speed: float, wall_s: float,
           churn: dict) -> bool:
    print(f"{hours:g} Keepa hours at speed {speed:g} ({wall_s:.0f} s wall), {RATE} tokens/min "
          f"per collector from an empty key, query of {churn['deals']} deals; measured after "
          f"a {WARMUP_H:g} h warm-up: {churn['new_per_min']:.1f} new and "
          f"{churn['changed_per_min']:.1f} changed deals per Keepa minute")
    names = [f.name for f in results]
    widths = (34, *(max(12, len(n)) for n in names), 10)
    print(table_row(("measure", *names, "target"), widths, sep="  "))

    def row(label, values, target=""):
        print(table_row((label, *values, target), widths, sep="  "))

    def pair(a, b):
        return "n/a" if a is None else f"{a:.1f} / {b:.1f}"

    row("new-deal lag p50 / p95 (Keepa min)", [pair(f.new_p50, f.new_p95) for f in results],
        "p95 <= 3")
    row("  new deals", [str(f.new_count) for f in results])
    row("changed-deal lag p50 / p95", [pair(f.changed_p50, f.changed_p95) for f in results],
        "p95 <= 45")
    row("  changes", [str(f.changed_count) for f in results])
    row("  never landed", [str(f.never_landed) for f in results])
    row("tokens per new deal", ["n/a" if f.tokens_per_new_deal is None
                                else f"{f.tokens_per_new_deal:.1f}" for f in results])
    row("tokens on unchanged deals", [f"{f.unchanged_tokens:.0f} ({f.unchanged_share:.1%})"
                                      for f in results], "0 (<= 2 %)")
    row("share of tokens on pages", [f"{f.page_share:.0%}" for f in results])
    row("utilisation", [f"{f.utilisation:.1%}" for f in results], ">= 95 %")
    row("query current at the end", [f"{f.current_share:.1%}" for f in results])
    pipeline = results[0]
    met = [pipeline.new_p95 is not None and pipeline.new_p95 <= TARGETS["new_p95"],
           pipeline.changed_p95 is not None and pipeline.changed_p95 <= TARGETS["changed_p95"],
           pipeline.unchanged_share <= TARGETS["unchanged_share"],
           pipeline.utilisation >= TARGETS["utilisation"]]
    for baseline in results[1:]:
        if pipeline.changed_p95 and baseline.changed_p95 is not None:
            ratio = baseline.changed_p95 / pipeline.changed_p95
            print(f"changed-deal lag p95, {baseline.name} / {pipeline.name}: {ratio:.1f}x "
                  f"(target >= {TARGETS['changed_ratio']:g}x)")
            met.append(ratio >= TARGETS["changed_ratio"])
    print(f"{pipeline.name} targets:", "met" if all(met) else "MISSED")
    return all(met)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=HOURS, help="Keepa hours to simulate")
    parser.add_argument("--speed", type=float, default=SPEED, help="simulator speed factor")
    parser.add_argument("--collector-root", type=Path, default=ROOT,
                        help="checkout whose pipeline runs (default: this one)")
    parser.add_argument("--label", default="pipeline", help="name of that pipeline's column")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with_naive = args.collector_root == ROOT
    wall_start = time.monotonic()
    config = json.loads(SIM_CONFIG.read_text())
    config["clock"] = {**config.get("clock", {}), "speed": args.speed}
    config["keys"] = {DEFAULT_API_KEY: {"refill_rate": RATE, "initial_tokens": 0},
                      NAIVE_KEY: {"refill_rate": RATE, "initial_tokens": 0}}
    config["control"] = {"request_log_size": 500_000}
    with tempfile.TemporaryDirectory(prefix="bench-keepa-day-") as tmp:
        workdir = Path(tmp)
        sim = SimulatorProcess(workdir, "day", config)
        try:
            truth_url = sim.url + "/_sim/deals/truth"
            requests.post(truth_url, json={"selection": QUERY}, timeout=300)  # warm up
            clock = sim.state()["clock"]
            sim_time = SimTime(clock["now_ms"], time.monotonic(), args.speed)
            with private_redis(workdir) as redis_url:
                return run_day(args, workdir=workdir, sim=sim, redis_url=redis_url,
                               sim_time=sim_time, with_naive=with_naive, wall_start=wall_start)
        finally:
            sim.stop()


def run_day(args, *, workdir: Path, sim: SimulatorProcess, redis_url: str,
            sim_time: SimTime, with_naive: bool, wall_start: float) -> int:
    start = sim_time.now_minutes()
    truth = Truth(int(start))
    trackers = [Tracker(args.label, workdir / "pipeline.db", key_label(DEFAULT_API_KEY))]
    stop = threading.Event()
    threads = []
    processes = start_pipeline(args.collector_root, workdir, redis_url, sim.url, args.speed)
    if with_naive:
        trackers.append(Tracker("naive", workdir / "naive.db", key_label(NAIVE_KEY)))
        naive = NaiveCollector(sim.url, workdir / "naive.db", 60 / args.speed, stop)
        threads = [threading.Thread(target=naive.backfill, daemon=True),
                   threading.Thread(target=naive.upsert, daemon=True)]
        for thread in threads:
            thread.start()
    end = start + args.hours * 60
    window = (start + WARMUP_H * 60, end)
    by_key = {t.key: t for t in trackers}
    log_since = 0
    next_truth = start
    try:
        while (now := sim_time.now_minutes()) < end:
            if now >= next_truth:  # the ground truth once a Keepa minute
                body = requests.post(sim.url + "/_sim/deals/truth", json={"selection": QUERY},
                                     timeout=60).json()
                events = truth.poll(body["deals"], now)
                for tracker in trackers:
                    tracker.watch(events)
                log_since = read_log(sim, log_since, by_key, truth, window)
                next_truth += 1
            for tracker in trackers:  # the tables DB_POLLS_PER_MINUTE times a Keepa minute
                tracker.observe(sim_time.now_minutes())
            pause = (1 / DB_POLLS_PER_MINUTE - (sim_time.now_minutes() - now)) * 60 / args.speed
            time.sleep(max(0.0, pause))
        read_log(sim, log_since, by_key, truth, window)
        stored_at_end = {t.name: t.stored() for t in trackers}
    finally:
        stop.set()
        stop_processes(processes)
        for thread in threads:
            thread.join(timeout=30)
    churn = churn_of(truth, window)
    results = [figures(t, truth, window, end, stored_at_end[t.name]) for t in trackers]
    ok = report(results, args.hours, args.speed, time.monotonic() - wall_start, churn)
    return 0 if ok else 1


def read_log(sim: SimulatorProcess, since: int, by_key: dict[str, Tracker], truth: Truth,
             window: tuple[float, float]) -> int:
    entries = requests.get(sim.url + "/_sim/requests", params={"since_id": since},
                           timeout=60).json()["requests"]
    for entry in entries:
        tracker = by_key.get(entry.get("key"))
        if tracker is not None and entry["path"].strip("/") in ("deal", "product"):
            tracker.count_request(entry, truth, window)
    return max((e["id"] for e in entries), default=since)


def churn_of(truth: Truth, window: tuple[float, float]) -> dict:
    minutes = max(1.0, window[1] - window[0])
    inside = [e for e in truth.events if window[0] <= e.at <= window[1]]
    return {"deals": len(truth.current),
            "new_per_min": sum(1 for e in inside if e.kind == "new") / minutes,
            "changed_per_min": sum(1 for e in inside if e.kind == "changed") / minutes}


if __name__ == "__main__":
    sys.exit(main())
