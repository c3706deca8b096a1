"""Is the pipeline healthy, and if not, why and what to do? The dashboard's verdicts, in a shell.

Usage: .venv/bin/python Diagnostics/health_report.py [--json]

Reads the same facts as the dashboard (keepa_deals.health.collect_health: runs in SQLite,
heartbeats, live task statuses, locks and the token bucket in Redis); starts nothing, changes
nothing. Healthy means deals are flowing, not merely that processes are up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from Diagnostics._cli import fail, parser, scrub
from keepa_deals.config import ConfigError, Settings, load_settings
from keepa_deals.health import PipelineHealth, TaskVerdict, collect_health, duration_text

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_CONFIG = 3
EXIT_STARTING = 4
_HEADLINES = {"healthy": "OK", "starting": "STARTING", "unhealthy": "NOT HEALTHY"}
_PLAN_NOT_JUDGED = "not judged yet (it needs a complete scan and Keepa's refill rate)"

_EPILOG = """\
exit codes:
  0  healthy: deals are flowing and no task is stalled
  1  not healthy: a task is stalled, no deals arrived recently, or Redis/the database is
     unreachable (the report says why and what to do)
  2  bad command-line usage
  3  the configuration (.env / environment) is invalid
  4  starting: the services came up recently and the first runs are due, not yet overdue
"""


def main(argv: list[str] | None = None) -> int:
    cli = parser(
        "health_report.py", epilog=_EPILOG,
        description="Print the pipeline's health: the overall verdict, each task's state "
                    "(running, waiting for tokens, idle, stalled with cause and fix), deals, "
                    "workers, locks and tokens.")
    cli.add_argument("--json", action="store_true", help="print the facts as JSON")
    args = cli.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    health = collect_health(settings)
    text = json.dumps(health.to_dict(), indent=2, default=str) if args.json else report(health)
    print(_scrubbed(text, settings))
    return {"healthy": EXIT_HEALTHY, "starting": EXIT_STARTING}.get(health.status,
                                                                      EXIT_UNHEALTHY)


def report(health: PipelineHealth) -> str:
    """The health as text: verdict first, then the facts an operator looks at next."""
    lines = [f"pipeline: {_HEADLINES[health.status]} — {health.reason}"]
    if health.fix:
        lines.append(f"fix: {health.fix}")
    lines.append("")
    lines.append(f"deals: {_value(health.deal_count)} stored, "
                 f"{_value(health.deals_last_hour)} new in the last hour, "
                 f"{_value(health.deals_last_day)} in the last day; "
                 f"last write {_ago(health.last_write_age_s)}")
    lines.append("tasks:")
    lines += [line for verdict in health.verdicts for line in _verdict_lines(verdict)]
    lines.append("processes:")
    for worker in health.workers:
        lines.append(f"  worker {worker.get('name')} on {worker.get('host')}: pid "
                     f"{worker.get('pid')}, revision "
                     f"{str(worker.get('revision'))[:12]}")
    if not health.workers:
        lines.append("  no worker heartbeat")
    beat = health.beat
    lines.append(f"  beat: pid {beat.get('pid')}, revision {str(beat.get('revision'))[:12]}"
                 if beat else "  no beat heartbeat")
    if health.locks:
        lines.append("locks:")
        for lock in health.locks:
            alive = {True: "alive", False: "DEAD", None: "not checkable"}[lock["holder_alive"]]
            lines.append(f"  {lock['name']}: pid {lock['pid']} on {lock['host']} ({alive}), "
                         f"ttl {_value(lock['ttl_s'], '{:.0f} s')}")
    tokens = health.tokens
    if tokens:
        lines.append(f"tokens: balance {_value(tokens.get('projected_balance'))} of "
                     f"{_value(tokens.get('ceiling'))}, refill "
                     f"{_value(tokens.get('refill_rate'))}/min, "
                     f"{tokens.get('http_429', 0)} answers 429")
    lines += _freshness_lines(health.freshness)
    for problem in (health.redis_error, health.database_error):
        if problem:
            lines.append(f"unreachable: {problem}")
    lines += [f"warning: {warning}" for warning in health.warnings]
    return "\n".join(lines)


def _verdict_lines(verdict: TaskVerdict) -> list[str]:
    lines = [f"  {verdict.task:<20} {verdict.state:<14} {verdict.summary}"]
    if verdict.progress:
        lines.append(f"  {'':<20} progress: {verdict.progress}")
    if verdict.cause:
        lines.append(f"  {'':<20} cause: {verdict.cause}")
    if verdict.fix:
        lines.append(f"  {'':<20} fix: {verdict.fix}")
    return lines


def _freshness_lines(freshness: dict | None) -> list[str]:
    """Lags, enrichment, the scan, token use and the plan verdict (keepa_deals.freshness)."""
    if freshness is None:
        return []
    lines = ["freshness (last hour; lags in Keepa minutes):"]
    for kind in ("new", "changed"):
        lags = freshness[kind]
        lines.append(f"  {kind} deals: lag p50 {_value(lags['p50_min'], '{} min')}, "
                     f"p95 {_value(lags['p95_min'], '{} min')} ({lags['count']} deals)")
    lines.append(f"  enriched within {freshness['enrich_max_age_h']:g} h: "
                 f"{_value(freshness['enriched_share'], '{:.1%}')} of deals")
    lines.append(f"  next full scan ends in {duration_text(freshness['scan_eta_s'])} "
                 f"(last complete scan: {_value(freshness['last_scan_pages'])} pages)")
    spent, shares = freshness["tokens_last_hour"], freshness["token_shares"]
    lines.append("  tokens: " + ", ".join(f"{use} {spent[use]} ({_value(shares[use], '{:.1%}')})"
                                          for use in spent))
    plan = freshness["plan"]
    lines.append(f"  plan: {plan['verdict'] if plan else _PLAN_NOT_JUDGED}")
    return lines


def _value(value, fmt: str = "{}") -> str:
    return "?" if value is None else fmt.format(value)


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s ago"


def _scrubbed(text: str, settings: Settings) -> str:
    """The output with any secret replaced (defence in depth: the facts should hold none)."""
    return scrub(text, settings.keepa_api_key, settings.dashboard_password,
                 *settings.url_secrets)


if __name__ == "__main__":
    sys.exit(main())
