"""Pipeline health: a verdict per task and an overall "are deals flowing?" answer.

The verdict functions are pure: they turn inputs (recent runs, heartbeats, live task statuses,
lock inspection, the token bucket snapshot, now) into a `TaskVerdict` — running (with progress),
waiting_tokens (with an ETA), idle (until the next run), stalled (with the cause and the fix an
operator should apply) or unknown. `collect_health(settings, redis=, conn=, now=)` gathers the
inputs itself, with the freshness figures (freshness.collect_freshness), and never raises: an
unreachable Redis or database is reported as a cause.

Healthy (`PipelineHealth.ok`) means progress, not liveness (FAILURES O4): a backfill or upserter
run recently ended having written or confirmed deals, worker and beat heartbeats are fresh, and
no task is stalled. `status` says the same in one word for people and alerts: healthy, starting
(the services came up less than one progress window ago and nothing is wrong yet: the first runs
are due, not overdue) or unhealthy, with `fix` beside `reason`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import redis

from keepa_deals import db, heartbeats, locks
from keepa_deals.config import Settings
from keepa_deals.constants import (
    BACKFILL_LOCK,
    DEAL_PAGE_SIZE,
    PIPELINE_TASKS,
    TASK_BACKFILL,
    TASK_UPSERT,
    UPSERT_LOCK,
)
from keepa_deals.freshness import Scan, collect_freshness
from keepa_deals.redis_server import RedisUnavailable, connect, explain, redis_url_for
from keepa_deals.tokens import TokenBucket

STATES = ("running", "waiting_tokens", "idle", "stalled", "unknown")
STATUSES = ("healthy", "starting", "unhealthy")
TASK_LOCKS = {TASK_BACKFILL: BACKFILL_LOCK, TASK_UPSERT: UPSERT_LOCK}
BACKFILL_CURSOR_STATE = "backfill_cursor"  # backfiller.CURSOR_STATE
RUNS_PER_TASK = 10
RECENT_RUNS = 20
FAILURES_BEFORE_STALLED = 3  # consecutive failed runs with a transient cause
STATUS_STALE_S = 15.0  # a running task republishes its status every few seconds
_SILENT_LEASE_FRACTION = 2 / 3  # renewed every ttl/3: silent for 2/3 of its TTL = no live holder
_START_CELERY = "run ./start_celery.sh"


@dataclass(frozen=True)
class TaskVerdict:
    """What one task is doing now; `cause` and `fix` are set for stalled (and unknown) tasks."""

    task: str
    state: str
    summary: str
    cause: str | None = None
    fix: str | None = None
    progress: str | None = None
    eta_s: float | None = None

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")


@dataclass(frozen=True)
class PipelineHealth:
    """The whole pipeline: the overall verdict, per-task verdicts and the facts behind them."""

    ok: bool
    reason: str
    verdicts: list[TaskVerdict]
    generated_at: float
    status: str = "unhealthy"  # one of STATUSES
    fix: str | None = None  # what to do when not healthy
    deal_count: int | None = None
    deals_last_hour: int | None = None
    deals_last_day: int | None = None
    newest_deal_age_s: float | None = None
    last_write_age_s: float | None = None
    workers: list[dict] = field(default_factory=list)
    beat: dict | None = None
    locks: list[dict] = field(default_factory=list)
    tokens: dict | None = None
    backfill: dict | None = None
    freshness: dict | None = None  # freshness.Freshness.to_dict(); None when unreadable
    recent_runs: list[dict] = field(default_factory=list)
    redis_error: str | None = None
    database_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (what /api/status and `health_report.py --json` print)."""
        return asdict(self)

    def verdict(self, task: str) -> TaskVerdict | None:
        return next((v for v in self.verdicts if v.task == task), None)


# --------------------------------------------------------------------------- error causes

@dataclass(frozen=True)
class _Cause:
    marker: str  # a substring of runs.error
    permanent: bool  # stalled after one failure (retrying cannot help)
    cause: str
    fix: str


_ERROR_CAUSES = (
    _Cause("InvalidKeyError", True, "Keepa rejects the API key (invalid key)",
           "Set a valid KEEPA_API_KEY (64 letters and digits) in .env, then restart the "
           "worker: ./start_celery.sh."),
    _Cause("PaymentRequiredError", True, "Keepa answered 402: the key has no active plan",
           "Renew the Keepa subscription of this key; the next run resumes by itself."),
    _Cause("TokenStarvedError", True, "Keepa reports a refill rate of 0 tokens per minute",
           "Check the key's plan and remove API product trackings that use up the refill."),
    _Cause("QueryFileError", True, "the deal query file (KEEPA_QUERY_PATH) is invalid",
           "Fix keepa_query.json as the error in the last run says; the next run reads it."),
    _Cause("database is locked", False, "the database is locked by another writer",
           "Close whatever holds a write transaction on DATABASE_PATH (an sqlite3 shell, a "
           "stuck script); runs retry by themselves."),
    _Cause("database error", False, "the database cannot be written",
           "Check that DATABASE_PATH is writable and its disk is not full, or that the "
           "PostgreSQL server of DATABASE_URL runs and accepts the role's password."),
    _Cause("Redis unavailable", False, "the worker cannot reach Redis",
           "Start Redis (python -m keepa_deals.redis_server start) or fix REDIS_URL."),
    _Cause("NotEnoughTokensError", False, "Keepa keeps answering 429 (not enough tokens)",
           "Stop any other client that spends this key's tokens; runs retry by themselves."),
    _Cause("TransientError", False, "repeated Keepa errors (timeouts, resets or 5xx)",
           "Check the network and Keepa's status; runs retry on every interval."),
    _Cause("BadResponseError", False, "Keepa returns unusable responses",
           "See the error of the last runs; check keepa_query.json against Keepa's docs."),
    _Cause("RequestRejectedError", False, "Keepa rejects the request",
           "See the error of the last runs; check keepa_query.json against Keepa's docs."),
)
_UNKNOWN_ERROR = _Cause("", False, "the last runs failed",
                        "Read the error of the last runs and the worker log (VAR_DIR/log).")


def classify_error(error: str | None) -> _Cause:
    """The known cause (and its fix) of a run's recorded error."""
    text = error or ""
    return next((c for c in _ERROR_CAUSES if c.marker in text), _UNKNOWN_ERROR)


# --------------------------------------------------------------------------- the verdicts

@dataclass(frozen=True)
class Liveness:
    """Process-level facts shared by every task's verdict."""

    redis_error: str | None
    workers: list[dict]
    beat: dict | None
    database_error: str | None = None


def task_verdict(task: str, *, runs: list[dict], status: dict | None,
                 lock: locks.LockInfo | None, live: Liveness, bucket: dict | None,
                 interval_s: float, slice_s: float, now: float) -> TaskVerdict:
    """The verdict of one task. `runs` are its latest runs, newest first."""
    if live.redis_error:
        return _stalled(task, "Redis is unreachable, so no task can take its lease or tokens",
                        f"Redis unreachable ({live.redis_error})",
                        "Start Redis (python -m keepa_deals.redis_server start, or "
                        "./start_celery.sh) or fix REDIS_URL.")
    if lock is not None and _holder_dead(lock, now):
        return _dead_holder_verdict(task, lock)
    live_status = _live_status(status, lock, now)
    if live_status is not None or lock is not None:
        return _active_verdict(task, live_status or {"state": "running"}, lock)
    if not live.workers:
        return _stalled(task, "no Celery worker is alive to run it",
                        "no worker heartbeat (no Celery worker process is running)",
                        f"Start the worker and beat: {_START_CELERY}.")
    if live.beat is None:
        return _stalled(task, "nothing schedules it", "no beat heartbeat (celery beat is down)",
                        f"Start exactly one beat: {_START_CELERY}.")
    if bucket and bucket.get("state") == "ok" and bucket.get("refill_rate") == 0 \
            and (bucket.get("projected_balance") or 0) <= 0:
        cause = classify_error("TokenStarvedError")
        return _stalled(task, "no token can ever be admitted", cause.cause, cause.fix)
    failure = _failure_verdict(task, runs)
    if failure is not None:
        return failure
    if live.database_error and not runs:
        return TaskVerdict(task, "unknown", "its runs cannot be read",
                           f"database unavailable ({live.database_error})",
                           "Check DATABASE_PATH; the dashboard reads it read-only.")
    return _idle_verdict(task, runs, interval_s=interval_s, slice_s=slice_s, now=now)


def _stalled(task: str, summary: str, cause: str, fix: str) -> TaskVerdict:
    return TaskVerdict(task, "stalled", f"stalled: {summary}", cause, fix)


def _holder_dead(lock: locks.LockInfo, now: float) -> bool:
    """The lease exists but its holder is gone (killed process, or renewals stopped)."""
    if lock.holder_alive is False:
        return True
    if lock.renewed_at is None or lock.ttl_s is None:
        return False
    ttl = lock.ttl_s + (now - lock.renewed_at)  # the lease's full TTL, approximately
    return now - lock.renewed_at > ttl * _SILENT_LEASE_FRACTION + 1


def _dead_holder_verdict(task: str, lock: locks.LockInfo) -> TaskVerdict:
    owner = lock.owner or {}
    holder = f"pid {owner.get('pid')} on {owner.get('host')}"
    expires = "" if lock.ttl_s is None else f"; the lease expires in {lock.ttl_s:.0f} s"
    return _stalled(
        task, f"its lease is held by a dead worker ({holder})",
        f"lease {lock.name} held by a dead worker ({holder}, task {owner.get('task_id')}) "
        f"that stopped renewing it{expires}",
        "Nothing to clear: the lease expires by itself within one TTL and the next run "
        f"resumes from its checkpoint. If no worker is alive, {_START_CELERY}.")


def _live_status(status: dict | None, lock: locks.LockInfo | None, now: float) -> dict | None:
    """The task's published status if it describes a run in progress right now."""
    if not status or status.get("state") not in ("running", "waiting_tokens"):
        return None
    updated = status.get("updated_at")
    fresh = isinstance(updated, int | float) and now - updated <= STATUS_STALE_S
    return status if fresh or lock is not None else None


def _active_verdict(task: str, status: dict, lock: locks.LockInfo | None) -> TaskVerdict:
    written = status.get("progress")
    parts = []
    if isinstance(written, int | float):
        parts.append(f"{int(written)} deals written this run")
    if status.get("detail"):
        parts.append(str(status["detail"]))
    progress = "; ".join(parts) or None
    holder = ""
    if lock is not None and lock.owner:
        holder = f" (pid {lock.owner.get('pid')} on {lock.owner.get('host')})"
    if status["state"] == "waiting_tokens":
        eta = status.get("eta_s")
        when = f", ready in about {duration_text(eta)}" if isinstance(eta, int | float) else ""
        return TaskVerdict(task, "waiting_tokens", f"waiting for tokens{when}{holder}",
                           progress=progress, eta_s=eta if isinstance(eta, int | float) else None)
    return TaskVerdict(task, "running", f"running{holder}", progress=progress)


def _failure_verdict(task: str, runs: list[dict]) -> TaskVerdict | None:
    """Stalled when the latest runs keep failing; None when the last run did not fail."""
    finished = [r for r in runs if r.get("outcome") not in ("running", "skipped", None)]
    failed = []
    for run in finished:
        if run["outcome"] != "failed":
            break
        failed.append(run)
    if not failed:
        return None
    cause = classify_error(failed[0].get("error"))
    error = failed[0].get("error") or "no error recorded"
    if cause.permanent or len(failed) >= FAILURES_BEFORE_STALLED:
        runs_text = "the last run" if len(failed) == 1 else f"the last {len(failed)} runs"
        return _stalled(task, f"{runs_text} failed", f"{cause.cause}: {error}", cause.fix)
    return TaskVerdict(task, "idle", f"last run failed ({error}); retrying on the next run",
                       cause=cause.cause, fix=cause.fix)


def _idle_verdict(task: str, runs: list[dict], *, interval_s: float, slice_s: float,
                  now: float) -> TaskVerdict:
    started = [r for r in runs if isinstance(r.get("started_at"), int | float)]
    if not started:
        return TaskVerdict(task, "idle", "no run recorded yet; waiting for the first one",
                           eta_s=None)
    last = started[0]
    since = now - last["started_at"]
    overdue_after = 3 * interval_s + slice_s
    if since > overdue_after:
        return _stalled(
            task, f"no run started for {duration_text(since)} although worker and beat are alive",
            f"no run for {duration_text(since)} (expected every {duration_text(interval_s)}): the "
            "worker does not consume this task's messages",
            "Restart the services with ./start_celery.sh and look in the worker log for "
            "'unregistered task' or a crash at start-up.")
    next_in = max(0.0, last["started_at"] + interval_s - now)
    outcome = last.get("outcome") or "running"
    written = last.get("deals_written") or 0
    summary = (f"idle until the next run in about {duration_text(next_in)} "
               f"(last run {outcome}, {written} deals written)")
    if outcome == "running":  # started, never finished, and nobody holds the lease now
        summary = (f"idle: run {last.get('id')} ended without a record (its worker died); "
                   f"the next run in about {duration_text(next_in)} resumes from the checkpoint")
    return TaskVerdict(task, "idle", summary, eta_s=round(next_in, 1))


# --------------------------------------------------------------------------- overall

def overall(verdicts: list[TaskVerdict], *, runs: dict[str, list[dict]], live: Liveness,
            settings: Settings, now: float) -> tuple[bool, str]:
    """(ok, reason): ok only while deals are flowing and nothing is stalled."""
    if live.redis_error:
        return False, f"Redis unreachable ({live.redis_error})"
    if live.database_error:
        return False, f"database unavailable ({live.database_error})"
    if not live.workers:
        return False, f"no worker heartbeat: {_START_CELERY}"
    if live.beat is None:
        return False, f"no beat heartbeat: {_START_CELERY}"
    stalled = [v for v in verdicts if v.state == "stalled"]
    if stalled:
        return False, "; ".join(f"{v.task} stalled: {v.cause}" for v in stalled)
    window = progress_window_s(settings)
    progressing = [
        (run, task) for task, task_runs in runs.items() for run in task_runs
        if _made_progress(run) and now - (run.get("ended_at") or 0) <= window
    ]
    if not progressing:
        return False, (f"no run wrote or confirmed deals in the last {duration_text(window)}")
    run, task = max(progressing, key=lambda pair: pair[0]["ended_at"])
    return True, (f"deals flowing: {task} run {run.get('id')} ended {run['outcome']} "
                  f"{duration_text(now - run['ended_at'])} ago, "
                  f"{run.get('deals_written') or 0} deals written")


def overall_status(ok: bool, reason: str, verdicts: list[TaskVerdict], *, live: Liveness,
                   settings: Settings, now: float) -> tuple[str, str, str | None]:
    """(status, reason, fix). Not healthy but nothing wrong yet, with worker and beat up for less
    than one progress window: "starting", with when the first runs are overdue."""
    if ok:
        return "healthy", reason, None
    fix = _overall_fix(verdicts, live)
    started = _services_started_at(live)
    window = progress_window_s(settings)
    nothing_wrong = fix is None and started is not None
    if nothing_wrong and now - started <= window:
        overdue_in = started + window - now
        return "starting", (f"starting: worker and beat came up {duration_text(now - started)} "
                            "ago; the first runs that write deals are due, overdue in "
                            f"{duration_text(overdue_in)}"), None
    return "unhealthy", reason, fix or ("Look at each task's verdict on the dashboard and at "
                                        "the worker log (VAR_DIR/log/worker.log).")


def _overall_fix(verdicts: list[TaskVerdict], live: Liveness) -> str | None:
    """The fix of what is wrong, None when nothing is wrong but progress is missing."""
    if live.redis_error:
        return ("Start Redis (./start_celery.sh starts the private one) or fix REDIS_URL; "
                "every service reconnects by itself.")
    if live.database_error:
        return "Check that DATABASE_PATH exists, is writable and its disk is not full."
    if not live.workers or live.beat is None:
        return ("Run ./start_celery.sh (or make run) and read VAR_DIR/log/ of the missing "
                "service.")
    return next((v.fix for v in verdicts if v.state == "stalled" and v.fix), None)


def _services_started_at(live: Liveness) -> float | None:
    """When the newest of the live worker and beat processes started, None when one is
    missing or its start is unknown."""
    starts = [w.get("started_at") for w in live.workers] + [(live.beat or {}).get("started_at")]
    if not live.workers or live.beat is None or not all(
            isinstance(t, int | float) for t in starts):
        return None
    return max(starts)


def progress_window_s(settings: Settings) -> float:
    """How recent a progressing run must be: a few upserter intervals plus one slice."""
    return 3 * min(settings.upsert_interval_s, settings.backfill_interval_s) \
        + settings.task_slice_s


def _made_progress(run: dict) -> bool:
    """An ok run confirmed the deals it read; a partial one counts when it wrote deals."""
    if not isinstance(run.get("ended_at"), int | float):
        return False
    return run.get("outcome") == "ok" or (
        run.get("outcome") == "partial" and (run.get("deals_written") or 0) > 0)


# --------------------------------------------------------------------------- gathering

def collect_health(settings: Settings, *, redis: redis.Redis | None = None,
                   conn: db.Connection | None = None,
                   now: float | None = None) -> PipelineHealth:
    """Gather every input and judge the pipeline. Never raises for Redis or database trouble."""
    now = time.time() if now is None else now
    facts = _RedisFacts.gather(settings, redis)
    stats = _DatabaseFacts.gather(settings, conn, now,
                                  refill_rate=(facts.bucket or {}).get("refill_rate"))
    live = Liveness(facts.error, facts.workers, facts.beat, stats.error)
    lock_by_name = {info.name: info for info in facts.locks}
    verdicts = [
        task_verdict(task, runs=stats.runs.get(task, []), status=facts.statuses.get(task),
                     lock=lock_by_name.get(TASK_LOCKS[task]), live=live, bucket=facts.bucket,
                     interval_s=_interval(settings, task), slice_s=settings.task_slice_s,
                     now=now)
        for task in PIPELINE_TASKS
    ]
    ok, reason = overall(verdicts, runs=stats.runs, live=live, settings=settings, now=now)
    status, reason, fix = overall_status(ok, reason, verdicts, live=live, settings=settings,
                                         now=now)
    return PipelineHealth(
        ok=ok, reason=reason, verdicts=verdicts, generated_at=now, status=status, fix=fix,
        deal_count=stats.deal_count, deals_last_hour=stats.deals_last_hour,
        deals_last_day=stats.deals_last_day,
        newest_deal_age_s=_age(now, stats.newest_first_seen),
        last_write_age_s=_age(now, stats.newest_last_seen),
        workers=facts.workers, beat=facts.beat,
        locks=[_lock_dict(info) for info in facts.locks],
        tokens=_token_summary(facts.bucket),
        backfill=backfill_progress(stats.cursor, stats.deal_count, now),
        freshness=stats.freshness,
        recent_runs=stats.recent_runs,
        redis_error=facts.error, database_error=stats.error,
        warnings=_warnings(facts.workers) + stats.warnings,
    )


def _interval(settings: Settings, task: str) -> float:
    return settings.backfill_interval_s if task == TASK_BACKFILL else settings.upsert_interval_s


@dataclass
class _RedisFacts:
    error: str | None = None
    workers: list[dict] = field(default_factory=list)
    beat: dict | None = None
    statuses: dict[str, dict] = field(default_factory=dict)
    locks: list[locks.LockInfo] = field(default_factory=list)
    bucket: dict | None = None

    @classmethod
    def gather(cls, settings: Settings, client: redis.Redis | None) -> _RedisFacts:
        facts = cls()
        try:
            client = client or connect(redis_url_for(settings))
            facts.workers = heartbeats.read_workers(client)
            facts.beat = heartbeats.read_beat(client)
            facts.statuses = heartbeats.read_task_statuses(client)
            facts.locks = locks.inspect(client)
            bucket = TokenBucket(client, refill_period_ms=settings.refill_period_ms)
            facts.bucket = bucket.snapshot()
        except RedisUnavailable as exc:
            facts.error = one_line(exc)
        except (redis.RedisError, OSError) as exc:
            facts.error = explain(exc, redis_url_for(settings)) if settings.redis_url else \
                f"no answer from Redis: {one_line(exc)}"
        return facts


@dataclass
class _DatabaseFacts:
    error: str | None = None
    deal_count: int | None = None
    deals_last_hour: int | None = None
    deals_last_day: int | None = None
    newest_first_seen: int | None = None
    newest_last_seen: int | None = None
    runs: dict[str, list[dict]] = field(default_factory=dict)
    recent_runs: list[dict] = field(default_factory=list)
    cursor: dict | None = None
    freshness: dict | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def gather(cls, settings: Settings, conn: db.Connection | None, now: float, *,
               refill_rate: int | None) -> _DatabaseFacts:
        facts = cls()
        own = conn is None
        try:
            if own:
                conn = db.readonly_connect(settings.database)
            facts._read(conn, now)
            facts._read_freshness(conn, settings, now, refill_rate)
        except (*db.ERRORS, OSError, ValueError) as exc:  # ValueError: corrupt run JSON
            facts.error = one_line(exc)
        finally:
            if own and conn is not None:
                conn.close()
        return facts

    def _read(self, conn: db.Connection, now: float) -> None:
        self.deal_count = db.deal_count(conn)
        self.deals_last_hour = db.deals_added_since(conn, int(now) - 3600)
        self.deals_last_day = db.deals_added_since(conn, int(now) - 86400)
        self.newest_first_seen = _scalar(conn, "SELECT MAX(first_seen_at) FROM deals")
        self.newest_last_seen = _scalar(conn, "SELECT MAX(last_seen_at) FROM deals")
        for task in PIPELINE_TASKS:
            self.runs[task] = [asdict(run) for run in db.recent_runs(conn, RUNS_PER_TASK, task)]
        self.recent_runs = [asdict(run) for run in db.recent_runs(conn, RECENT_RUNS)]
        try:
            cursor = db.get_state(conn, BACKFILL_CURSOR_STATE)
        except ValueError:  # not JSON: shown as unknown progress rather than failing the page
            cursor = None
        self.cursor = cursor if isinstance(cursor, dict) else None

    def _read_freshness(self, conn: db.Connection, settings: Settings, now: float,
                        refill_rate: int | None) -> None:
        """The freshness figures; a failure leaves them unknown with a warning, not the page."""
        try:
            self.freshness = collect_freshness(
                conn, now=now, enrich_max_age_h=settings.enrich_max_age_h,
                refill_rate=refill_rate, refill_period_ms=settings.refill_period_ms,
                cursor=self.cursor).to_dict()
        except (*db.ERRORS, ValueError) as exc:
            self.warnings.append(f"freshness figures unavailable: {one_line(exc)}")


def _scalar(conn: db.Connection, sql: str):
    return conn.execute(sql).fetchone()[0]


# --------------------------------------------------------------------------- derived facts

def backfill_progress(cursor: dict | None, deal_count: int | None, now: float) -> dict | None:
    """Position of the current backfill sweep, its estimated size, fraction and ETA.

    The position is the pages read × DEAL_PAGE_SIZE. The sweep's size is not known before its
    last page: it is the last complete sweep's (freshness.Scan.size), else the deal count (the
    backfill sweeps the whole query) at most Keepa's 10 000 deals per query, and at least the
    position reached. The ETA is freshness.Scan.eta_s: the sweep's pace so far.
    """
    if not cursor:
        return None
    scan = Scan.from_cursor(cursor)
    position = scan.page * DEAL_PAGE_SIZE
    total = scan.size(deal_count)
    return {"sweep_id": scan.sweep_id, "page": scan.page, "position": position,
            "estimated_total": total, "fraction": round(position / total, 4) if total else 1.0,
            "eta_s": scan.eta_s(-(-total // DEAL_PAGE_SIZE), now),
            "sweep_started_at": cursor.get("sweep_started_at"),
            "last_sweep_finished_at": cursor.get("last_sweep_finished_at"),
            "last_sweep_pages": scan.last_pages or None}


def _token_summary(bucket: dict | None) -> dict | None:
    if bucket is None:
        return None
    tasks = bucket.get("tasks") or {}
    summary = dict(bucket)
    summary["http_429"] = sum(t.get("http_429", 0) for t in tasks.values())
    return summary


def _lock_dict(info: locks.LockInfo) -> dict:
    owner = info.owner or {}
    return {"name": info.name, "host": owner.get("host"), "pid": owner.get("pid"),
            "task_id": owner.get("task_id"), "age_s": info.age_s, "ttl_s": info.ttl_s,
            "renewed_at": info.renewed_at, "holder_alive": info.holder_alive}


def _warnings(workers: list[dict]) -> list[str]:
    """Workers running another code revision than the one deployed here (FAILURES L10)."""
    deployed = heartbeats.code_revision()
    if deployed == "unknown":
        return []
    return [f"worker {w.get('name')} runs revision {str(w.get('revision'))[:12]}, deployed is "
            f"{deployed[:12]}: restart it with ./start_celery.sh"
            for w in workers if w.get("revision") not in (None, "unknown", deployed)]


def _age(now: float, timestamp) -> float | None:
    return None if timestamp is None else round(now - timestamp, 1)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]


def duration_text(seconds) -> str:
    """12 s, 4 min, 3.5 h, 2 days."""
    if seconds is None:
        return "unknown"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
