"""Churn of the simulated deal universe, minute by minute, with the simulator in-process.

Two setups: (a) the default catalogue with the repo's keepa_query.json, (b) keepa_day_sim.json
with keepa_day_query.json (~10 000 deals). A frozen simulator clock advances one Keepa minute
at a time over `--minutes` (default 180); each minute's result — what /deal serves over all
pages, i.e. GET /_sim/deals/truth — is compared with the previous minute's:

  deals              result size (mean, min–max; Keepa caps a query at 10 000)
  new                deals whose creationDate is after the previous minute (a drop seen now),
                     whether their ASIN is new to the result or not ("of them new ASINs")
  lastUpdate moves   deals in both results whose lastUpdate changed
  leaving            ASINs of the previous result missing now
  re-entering        ASINs entering with a creationDate at or before the previous minute

all per minute (mean, max). Also the CPU seconds of the catalogue build, the first (cold)
minute, every later minute (matching + sortType of the query + the truth list) and the same
minute's sortType 1 result, which reuses that minute's matching.
Usage: .venv/bin/python bench/sim_churn.py [--minutes N] [--start-ms EPOCH_MS]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench_support import ROOT, table_row

from keepa_sim import config as sim_config
from keepa_sim.clock import MS_PER_MINUTE
from keepa_sim.selection import parse_selection
from keepa_sim.simulator import Simulator

DEFAULT_MINUTES = 180
START_MS = 1_795_000_000_000  # 2026-11-18 17:46 UTC, the tests' frozen time
SETUPS = (("(a) default + keepa_query.json", None, "keepa_query.json"),
          ("(b) keepa_day_sim + _query", "bench/keepa_day_sim.json", "bench/keepa_day_query.json"))
WIDTHS = (36, 32, 32)


def cpu_s(action):
    """(result of action(), CPU seconds it took)."""
    started = time.process_time()
    value = action()
    return value, time.process_time() - started


def measure(config_path: str | None, query_path: str, minutes: int, start_ms: int) -> dict:
    overrides = json.loads((ROOT / config_path).read_text()) if config_path else {}
    overrides["clock"] = {"mode": "frozen", "start_ms": start_ms}
    simulator = Simulator(sim_config.load(overrides))
    query = json.loads((ROOT / query_path).read_text())
    knobs = simulator.config["deals"]
    selection = parse_selection(query, None, knobs)
    by_age = parse_selection({**query, "sortType": 1}, None, knobs)
    _, build_s = cpu_s(lambda: simulator.catalogue(selection.domain))
    truth, cold_s = cpu_s(lambda: simulator.deals.truth(selection, None))
    previous = {d["asin"]: d for d in truth["deals"]}
    rows: dict[str, list[float]] = {name: [] for name in (
        "deals", "new", "new_asins", "moves", "leaving", "reentering", "minute_s", "by_age_s")}
    rows["deals"].append(len(previous))
    for _ in range(minutes):
        simulator.clock.advance(MS_PER_MINUTE)
        truth, minute_s = cpu_s(lambda: simulator.deals.truth(selection, None))
        _, by_age_s = cpu_s(lambda: simulator.deals.truth(by_age, None))
        current = {d["asin"]: d for d in truth["deals"]}
        fresh_after = truth["deals_minute"] - 1
        new = [a for a, d in current.items() if d["creationDate"] > fresh_after]
        entering = current.keys() - previous.keys()
        rows["deals"].append(len(current))
        rows["new"].append(len(new))
        rows["new_asins"].append(sum(1 for asin in new if asin in entering))
        rows["moves"].append(sum(1 for asin in current.keys() & previous.keys()
                                 if current[asin]["lastUpdate"] != previous[asin]["lastUpdate"]))
        rows["leaving"].append(len(previous.keys() - current.keys()))
        rows["reentering"].append(sum(1 for asin in entering
                                      if current[asin]["creationDate"] <= fresh_after))
        rows["minute_s"].append(minute_s)
        rows["by_age_s"].append(by_age_s)
        previous = current
    return {"products": simulator.config["catalogue"]["n_products"], "build_s": build_s,
            "cold_s": cold_s, **rows}


def per_minute(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} (max {max(values):g})"


def cpu(values: list[float]) -> str:
    return (f"{statistics.median(values):.3f} med, {sorted(values)[int(0.95 * len(values))]:.3f}"
            f" p95, {max(values):.3f} max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=DEFAULT_MINUTES)
    parser.add_argument("--start-ms", type=int, default=START_MS)
    args = parser.parse_args()
    results = [measure(config, query, args.minutes, args.start_ms)
               for _name, config, query in SETUPS]
    print(f"{args.minutes} Keepa minutes from {args.start_ms} (epoch ms), frozen clock, "
          f"one minute per step")
    lines = [
        ("", lambda r: r["name"]),
        ("products per domain", lambda r: str(r["products"])),
        ("catalogue build, CPU s", lambda r: f"{r['build_s']:.2f}"),
        ("first minute (cold), CPU s", lambda r: f"{r['cold_s']:.2f}"),
        ("each new minute, CPU s", lambda r: cpu(r["minute_s"])),
        ("same minute, sortType 1, CPU s", lambda r: cpu(r["by_age_s"])),
        ("deals", lambda r: f"{statistics.mean(r['deals']):.0f} ({min(r['deals'])}–"
                            f"{max(r['deals'])})"),
        ("new /min", lambda r: per_minute(r["new"])),
        ("  of them new ASINs /min", lambda r: per_minute(r["new_asins"])),
        ("lastUpdate moves /min", lambda r: per_minute(r["moves"])),
        ("leaving /min", lambda r: per_minute(r["leaving"])),
        ("re-entering (old creationDate) /min", lambda r: per_minute(r["reentering"])),
    ]
    for result, (name, _config, _query) in zip(results, SETUPS, strict=True):
        result["name"] = name
    for label, cell in lines:
        print(table_row([label, *(cell(r) for r in results)], WIDTHS, sep="  "))


if __name__ == "__main__":
    main()
