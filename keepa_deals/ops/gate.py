"""Is the deployed revision healthy? The deploy health gate and the "nothing to do" check.

Gate: the dashboard's /healthz answers 200, at least one task run of the deployed revision,
started after the deploy began, wrote or re-confirmed deals (`ok` or `partial` with deals
written: proof that this revision can store deals, judged on its own runs only), and none of
its runs failed (the `runs` table). "Already healthy" (what makes a
repeated deploy a no-op): every service runs, the worker and beat heartbeats report the
deployed revision (a worker on stale code fails this, FAILURES L10), and /healthz answers 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from keepa_deals import db, heartbeats
from keepa_deals.config import Settings
from keepa_deals.ops.control import OpsError, status
from keepa_deals.ops.paths import revision_file
from keepa_deals.ops.services import dashboard_url, http_status, services
from keepa_deals.redis_server import RedisUnavailable, connect, ensure_redis

_POLL_S = 1.0
_RUNS_SHOWN = 3


class GateFailed(OpsError):
    """The deployed revision did not prove healthy in time; the message says what was missing."""


def healthz_status(settings: Settings) -> int | None:
    """HTTP status of the dashboard's /healthz, None when nothing answers."""
    return http_status(dashboard_url(settings) + "healthz")


def runs_of(settings: Settings, revision: str, since: float
            ) -> list[tuple[str, str, str, int]]:
    """(task, outcome, error, deals written) of the runs of `revision` started at or after
    `since`, newest first; empty while the database or its tables do not exist yet."""
    try:
        conn = db.readonly_connect(settings.database, busy_timeout_s=5)
    except (OSError, *db.ERRORS):
        return []
    try:
        rows = conn.execute(
            "SELECT task, outcome, COALESCE(error, ''), COALESCE(deals_written, 0) FROM runs "
            "WHERE revision = ? AND started_at >= ? ORDER BY id DESC LIMIT 50",
            (revision, int(since))).fetchall()
    except db.ERRORS:  # no runs table yet
        return []
    finally:
        conn.close()
    return [tuple(row) for row in rows]


def wait_healthy(settings: Settings, *, revision: str, since: float, timeout_s: float,
                 report: Callable[[str], None] = print) -> None:
    """Return once /healthz is 200 and a run of `revision` stored deals; raise GateFailed as
    soon as one of its runs fails, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    healthz, runs = None, []
    while time.monotonic() < deadline:
        gave_up = [s for s in status(settings) if s.gave_up and not s.running]
        if gave_up:
            raise GateFailed(f"health gate failed: {gave_up[0].name} gave up: "
                             f"{gave_up[0].gave_up}")
        healthz = healthz_status(settings)
        runs = runs_of(settings, revision, since)
        failed = next((run for run in runs if run[1] == "failed"), None)
        if failed:
            raise GateFailed(f"health gate failed: a {failed[0]} run of revision "
                             f"{revision[:12]} failed: {failed[2][:200]}")
        stored = next((run for run in runs if run[1] in ("ok", "partial") and run[3] > 0), None)
        if healthz == 200 and stored:
            report(f"health gate passed: /healthz 200, a {stored[0]} run of revision "
                   f"{revision[:12]} stored {stored[3]} deals")
            return
        time.sleep(_POLL_S)
    raise GateFailed(f"health gate failed after {timeout_s:g}s: /healthz "
                     f"{healthz or 'did not answer'}; {_describe_runs(runs, revision)}")


def unhealthy_reason(settings: Settings, revision: str) -> str | None:
    """Why the system is not running `revision` healthily right now, or None when it is."""
    recorded = revision_file(settings)
    if not recorded.is_file() or recorded.read_text().strip() != revision:
        return f"the processes were not started from revision {revision[:12]}"
    try:
        url = settings.redis_url or ensure_redis(settings, start=False)[0]
        client = connect(url)
        workers, beat = heartbeats.read_workers(client), heartbeats.read_beat(client)
    except (RedisUnavailable, redis.RedisError, OSError):
        return "Redis does not answer"
    current = {s.name: s for s in status(settings)}
    for service in services(settings, url):
        if current[service.name].pid is None:
            return f"{service.name} is not running"
    pids = {"worker": current["worker"].pid, "beat": current["beat"].pid}
    beating = {"worker": next((w for w in workers if w.get("pid") == pids["worker"]), None),
               "beat": beat if beat and beat.get("pid") == pids["beat"] else None}
    for name, heartbeat in beating.items():
        if heartbeat is None:
            return f"no heartbeat from the {name} (pid {pids[name]})"
        if heartbeat.get("revision") != revision:
            return (f"the {name} runs revision {str(heartbeat.get('revision'))[:12]}, "
                    f"not {revision[:12]} (stale code)")
    healthz = healthz_status(settings)
    return None if healthz == 200 else f"/healthz answered {healthz or 'nothing'}"


def _describe_runs(runs: list[tuple[str, str, str, int]], revision: str) -> str:
    if not runs:
        return f"no task run of revision {revision[:12]} was recorded"
    shown = "; ".join(f"{task} {outcome}, {written} deals" + (f" ({error[:120]})" if error else "")
                      for task, outcome, error, written in runs[:_RUNS_SHOWN])
    return f"no run of revision {revision[:12]} stored deals (latest: {shown})"
