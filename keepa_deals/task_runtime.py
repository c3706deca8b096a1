"""What every pipeline task run shares: services, lease lock, run record, live status, deadline.

One run of `backfill_deals` or `update_recent_deals` is:

    run_pipeline_task(services, spec, work)

which records the run in SQLite (`db.start_run` / `db.finish_run`), takes the task's lease lock
(a second instance records outcome "skipped" with "held by <owner>" and returns at once), hands
`work` a `TaskRun` (Keepa client metered for tokens, DB connection, slice deadline, lease
checkpoint, progress reporting) and publishes the live status (running / waiting_tokens with an
ETA / idle) to Redis every STATUS_INTERVAL_S. Outcomes:

  ok       `work` returned True: its unit of work is done
  partial  `work` returned False, the slice ended while waiting for tokens (TokenWaitTimeout),
           or the lease was lost: committed progress stays, the next run resumes
  skipped  another instance holds the lease
  failed   anything else (Keepa error, Redis or SQLite unavailable, ...): the error is recorded

A run never raises: Celery would log a traceback every interval (FAILURES O3) while the run
record and the task status already say what happened.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import redis
from celery import shared_task

from keepa_deals import db, deals, heartbeats, logs
from keepa_deals.config import ConfigError, Settings, load_settings
from keepa_deals.constants import MAX_ASINS_PER_PRODUCT_CALL
from keepa_deals.deals import DealRecord, ParsedPage
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.host import host_name
from keepa_deals.keepa_api import (
    BadResponseError,
    KeepaClient,
    KeepaError,
    RequestRejectedError,
    SelectionError,
    redact,
    validate_selection,
)
from keepa_deals.keepa_stats import response_counter
from keepa_deals.locks import LeaseLock, LeaseLost, LockHeld
from keepa_deals.redis_server import RedisUnavailable, connect, redis_url_for
from keepa_deals.tokens import URGENT_HEADROOM, TokenBucket, TokenStarvedError, TokenWaitTimeout

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 2.0
COLLECTING_SINCE_STATE = "collecting_since"  # server time (unix s) of the first committed rows
_WAITING_AFTER_S = 0.5  # a reserve() blocked longer than this is shown as waiting_tokens


class QueryFileError(ValueError):
    """The deal query file is missing, not JSON, or has a wrongly typed value."""


def load_selection(path: Path) -> dict:
    """The deal query (keepa_query.json): a JSON object whose numbers are real integers."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise QueryFileError(f"KEEPA_QUERY_PATH: cannot read {path}: {exc.strerror}") from None
    try:
        selection = json.loads(text)
    except ValueError as exc:
        raise QueryFileError(f"KEEPA_QUERY_PATH: {path} is not valid JSON ({exc})") from None
    try:
        validate_selection(selection)
    except SelectionError as exc:
        raise QueryFileError(f"KEEPA_QUERY_PATH: {path}: {exc}") from None
    return selection

@dataclass(frozen=True)
class TaskSpec:
    """Identity of a pipeline task: its name (runs, statuses, ledger), lease lock and priority."""

    task: str
    lock_name: str
    priority: int


@dataclass(frozen=True)
class RunReport:
    """How a run ended, as recorded in the runs table (run_id None: it could not be recorded)."""

    run_id: int | None
    outcome: str
    deals_written: int
    tokens_spent: int
    error: str | None = None
    detail: dict = field(default_factory=dict)

@dataclass(frozen=True)
class PipelineServices:
    """What runs need and may share within one process (the deal query is read by each run)."""

    settings: Settings
    redis: redis.Redis
    bucket: TokenBucket

    @classmethod
    def from_settings(cls, settings: Settings,
                      redis_client: redis.Redis | None = None) -> PipelineServices:
        client = redis_client or connect(redis_url_for(settings))
        bucket = TokenBucket(client, refill_period_ms=settings.refill_period_ms,
                             urgent_headroom=URGENT_HEADROOM)
        return cls(settings, client, bucket)

class MeteredGate:
    """A TokenGate that forwards to the bucket and remembers what the run needs to report.

    It counts the tokens the server charged (tokensConsumed), keeps the newest envelope (the
    server's refill rate and balance) and knows which request, if any, waits in reserve().
    """

    def __init__(self, bucket: TokenBucket):
        self.bucket = bucket
        self.tokens_spent = 0
        self.last_envelope: TokenEnvelope | None = None
        self.waiting: tuple[float, int, int] | None = None  # (since, cost, priority)

    def reserve(self, cost, *, priority, task, sync, deadline=None):
        self.waiting = (time.monotonic(), cost, priority)
        try:
            return self.bucket.reserve(cost, priority=priority, task=task, sync=sync,
                                       deadline=deadline)
        finally:
            self.waiting = None

    def reconcile(self, reservation, envelope, *, status=None):
        if envelope is not None:
            self.tokens_spent += max(0, envelope.tokens_consumed)
            self._remember(envelope)
        self.bucket.reconcile(reservation, envelope, status=status)

    def sync(self, envelope):
        self._remember(envelope)
        self.bucket.sync(envelope)

    def _remember(self, envelope: TokenEnvelope) -> None:
        last = self.last_envelope
        if last is None or envelope.timestamp_ms >= last.timestamp_ms:
            self.last_envelope = envelope


class TaskRun:
    """The handle a task's work function gets: steps of the pipeline bound to this run."""

    def __init__(self, services: PipelineServices, spec: TaskSpec, *, run_id: int,
                 conn: db.Connection, lock: LeaseLock, deadline: float):
        self.services = services
        self.spec = spec
        self.run_id = run_id
        self.conn = conn
        self.lock = lock
        self.deadline = deadline
        self.gate = MeteredGate(services.bucket)
        self.client = KeepaClient.from_settings(
            services.settings, self.gate, task=spec.task, priority=spec.priority,
            on_response=response_counter(services.redis))
        self.deals_written = 0
        self.detail: dict = {}
        self.status_detail = "starting"
        self.selection: dict = {}
        self._parse_args: dict = {}
        self.fence: int | None = None

    def take_fence(self) -> None:
        """Become the newest writer under the task's lock (db.take_fence); once the lease is
        held, before any write."""
        self.fence = db.take_fence(self.conn, self.spec.lock_name)

    def load_query(self) -> None:
        """Read the deal query (KEEPA_QUERY_PATH) for this run; QueryFileError when invalid."""
        self.selection = load_selection(self.services.settings.query_path)
        self._parse_args = {
            "domain_id": self.services.settings.keepa_domain,
            "price_type": deals.selection_price_type(self.selection),
            "date_range": deals.selection_date_range(self.selection),
        }

    # --- time, lease, progress -------------------------------------------------------------

    def time_left(self) -> float:
        return self.deadline - time.time()

    def past_deadline(self) -> bool:
        return self.time_left() <= 0

    def checkpoint(self) -> None:
        """Raise LeaseLost when the lease is gone: call before every commit."""
        self.lock.check()

    @contextlib.contextmanager
    def write(self) -> Iterator[db.Connection]:
        """A write transaction of this run: after a lease check, and fenced — LeaseLost, nothing
        written, when a newer holder of the lock took the fence (this run slept past its lease
        while the heartbeat could not tell it)."""
        self.checkpoint()
        with db.transaction(self.conn):
            if self.fence is None or not db.holds_fence(self.conn, self.spec.lock_name,
                                                        self.fence):
                raise LeaseLost(f"lease on lock {self.spec.lock_name!r} was taken over while "
                                "this run was paused: its writes are refused (fenced)")
            yield self.conn

    def progress(self, detail: str) -> None:
        self.status_detail = detail

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a counter kept in the run's detail (runs.detail JSON)."""
        self.detail[name] = self.detail.get(name, 0) + amount

    # --- Keepa steps ----------------------------------------------------------------------

    def fetch_deal_page(self, selection: Mapping, page: int) -> tuple[ParsedPage, int]:
        """One /deal page parsed, and the server's clock (unix seconds) when it answered."""
        spent_before = self.gate.tokens_spent
        response = self.client.deals(selection, page=page, deadline=self.deadline)
        self.count("tokens_pages", self.gate.tokens_spent - spent_before)
        parsed = deals.parse_deal_page(response.payload, **self._parse_args)
        if parsed.malformed:
            self.count("malformed_deals", len(parsed.malformed))
            log.warning("%s: page %d has %d malformed deals, first: %s", self.spec.task, page,
                        len(parsed.malformed), parsed.malformed[0])
        self.count("pages")
        return parsed, response.envelope.timestamp_ms // 1000

    def batch_size(self) -> int:
        """ASINs per /product call: what one refill tick pays back, 1..100.

        The rate is the server's, from the latest envelope (a free /token call if none yet).
        """
        envelope = self.gate.last_envelope or self.client.token_status()
        return max(1, min(MAX_ASINS_PER_PRODUCT_CALL, envelope.refill_rate))

    def fetch_products(self, asins: Sequence[str]) -> tuple[dict[str, Mapping], int]:
        """({asin: /product object}, tokens the server charged, retries included).

        An unusable answer for the whole batch (HTTP 200 with an error, a rejected request)
        gives no products rather than blocking the pipeline on it; transport failures and
        token problems propagate (the run ends and resumes from its checkpoint).
        """
        spent_before = self.gate.tokens_spent
        try:
            response = self.client.products(asins, deadline=self.deadline)
        except (BadResponseError, RequestRejectedError) as exc:
            log.warning("%s: /product for %d ASINs unusable, writing them unenriched: %s",
                        self.spec.task, len(asins), exc)
            return {}, self.gate.tokens_spent - spent_before
        products = {p.get("asin"): p for p in response.payload["products"]
                    if isinstance(p, Mapping)}
        return products, self.gate.tokens_spent - spent_before

    # --- SQLite steps ---------------------------------------------------------------------

    def stored_versions(self, asins: Iterable[str]) -> dict[str, tuple[int, int | None]]:
        """{asin: (last_update_at, enriched_at)} of the given ASINs already in the deals table."""
        return db.deal_versions(self.conn, list(asins))

    def load_state(self, name: str):
        """A pipeline_state value (decoded JSON), None when never written."""
        return db.get_state(self.conn, name)

    def commit(self, rows: Sequence[DealRecord], state_name: str, state_value, *,
               server_now: int) -> db.UpsertResult | None:
        """Write rows, their freshness samples and the task's progress state in one transaction
        (self.write: lease-checked, fenced). `server_now` is Keepa's clock when the rows were
        read."""
        with self.write():
            result = None
            if rows:
                result = db.upsert_deals(self.conn, rows, source=self.spec.task)
                db.add_freshness_samples(self.conn, self._lag_samples(rows, result, server_now),
                                         recorded_at=int(time.time()))
            db.set_state(self.conn, state_name, state_value)
        self.deals_written += len(rows)
        if result is not None:
            self.count("inserted", result.inserted)
            self.count("changed", len(result.moved_asins))
        return result

    def save_state(self, name: str, value) -> None:
        """Write one pipeline_state value in its own transaction (hints, not checkpoints)."""
        with self.write():
            db.set_state(self.conn, name, value)

    def commit_enrichment(self, records: Sequence[DealRecord], enriched_for: dict[str, int]
                          ) -> None:
        """Write /product data of stored deals (db.record_enrichment); lease-checked, fenced."""
        with self.write():
            db.record_enrichment(self.conn, records, enriched_for=enriched_for)
        self.deals_written += len(records)

    def _lag_samples(self, rows: Sequence[DealRecord], result: db.UpsertResult,
                     server_now: int) -> list[tuple[str, int]]:
        """("new" | "changed", lag_s) per written deal, lags in server time.

        A deal inserted with a creationDate since the collector started (COLLECTING_SINCE_STATE,
        server time) is new: its lag counts from creationDate. A stored deal whose lastUpdate
        moved is changed: its lag counts from the new lastUpdate. Other inserts (the first
        scan's backlog, a deal back in the query) have no earlier version to measure from.
        """
        collecting_since = db.get_state(self.conn, COLLECTING_SINCE_STATE)
        if collecting_since is None:
            collecting_since = server_now
            db.set_state(self.conn, COLLECTING_SINCE_STATE, server_now)
        latest = {record.asin: record for record in rows}
        samples = [("changed", max(0, server_now - latest[asin].last_update_at))
                   for asin in result.moved_asins]
        for asin in result.new_asins:
            created = latest[asin].deal_created_at
            if created is not None and created >= collecting_since:
                samples.append(("new", max(0, server_now - created)))
        return samples


# --------------------------------------------------------------------------- live status

class _StatusReporter:
    """A daemon thread publishing the run's live status until stopped (Redis errors ignored)."""

    def __init__(self, run: TaskRun):
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"status-{run.spec.task}",
                                        daemon=True)

    def __enter__(self) -> _StatusReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=STATUS_INTERVAL_S * 2)

    def _loop(self) -> None:
        while True:
            self.publish()
            if self._stop.wait(STATUS_INTERVAL_S):
                return

    def publish(self) -> None:
        run = self._run
        waiting = run.gate.waiting
        fields = {"run_id": run.run_id, "progress": run.deals_written,
                  "detail": run.status_detail}
        state = "running"
        if waiting is not None and time.monotonic() - waiting[0] > _WAITING_AFTER_S:
            state = "waiting_tokens"
            fields["eta_s"] = _token_eta_s(run.services.bucket, cost=waiting[1],
                                           priority=waiting[2])
        _publish_status(run.services.redis, run.spec.task, state, **fields)


def _token_eta_s(bucket: TokenBucket, *, cost: int, priority: int) -> float | None:
    """Seconds until the bucket would admit the waiting request (None when unknown)."""
    try:
        eta_ms = bucket.eta_ms(cost, priority)
    except (redis.RedisError, TokenStarvedError):
        return None
    return None if eta_ms is None else round(eta_ms / 1000, 1)


def _publish_status(client: redis.Redis, task: str, state: str, **fields) -> None:
    try:
        heartbeats.set_task_status(client, task, state, **fields)
    except redis.RedisError as exc:
        log.debug("%s: status not published (%s)", task, exc)


# --------------------------------------------------------------------------- the run

def run_pipeline_task(services: PipelineServices, spec: TaskSpec,
                      work: Callable[[TaskRun], bool], *, task_id: str | None = None,
                      slice_s: float | None = None) -> RunReport:
    """Run `work` once under the task's lease; record and publish the outcome. Never raises."""
    settings = services.settings
    revision = heartbeats.code_revision()
    try:
        conn = db.connect(settings.database)
    except (*db.ERRORS, OSError) as exc:
        return _unrecorded(services, spec, f"database error ({type(exc).__name__}: {exc})")
    try:
        db.ensure_schema(conn)
        run_id = db.start_run(conn, spec.task, host=host_name(), pid=os.getpid(),
                              revision=revision)
    except (*db.ERRORS, db.MigrationError) as exc:
        conn.close()
        return _unrecorded(services, spec, f"database error ({type(exc).__name__}: {exc})")
    log.info("%s run %d starting (revision %s, task id %s)", spec.task, run_id, revision,
             task_id)
    lock = LeaseLock(services.redis, spec.lock_name, ttl_s=settings.lock_ttl_s, task_id=task_id)
    deadline = time.time() + (settings.task_slice_s if slice_s is None else slice_s)
    run = TaskRun(services, spec, run_id=run_id, conn=conn, lock=lock, deadline=deadline)
    try:
        with logs.log_context(task=spec.task, run_id=run_id):
            outcome, error = _execute(run, work)
        report = RunReport(run_id, outcome, run.deals_written, run.gate.tokens_spent, error,
                           dict(run.detail))
        _record_end(conn, report)
    finally:
        run.client.close()
        conn.close()
    log.log(logging.WARNING if outcome == "failed" else logging.INFO,
            "%s run %d %s: %d deals written, %d tokens spent%s", spec.task, run_id, outcome,
            report.deals_written, report.tokens_spent, f" ({error})" if error else "")
    if outcome != "skipped":
        _publish_status(services.redis, spec.task, "idle", run_id=run_id,
                        detail=f"last run {outcome}" + (f": {error}" if error else ""))
    return report


def _record_end(conn: db.Connection, report: RunReport) -> None:
    """finish_run; if the database refuses even that, the log keeps the outcome."""
    try:
        db.finish_run(conn, report.run_id, outcome=report.outcome,
                      deals_written=report.deals_written, tokens_spent=report.tokens_spent,
                      error=report.error, detail=report.detail)
    except db.ERRORS as exc:
        log.error("run %d (%s) could not be recorded: %s", report.run_id, report.outcome, exc)


def _unrecorded(services: PipelineServices, spec: TaskSpec, error: str) -> RunReport:
    """A run that could not even be recorded (the database is unusable): log and publish."""
    log.error("%s not run: %s", spec.task, error)
    _publish_status(services.redis, spec.task, "idle", detail=f"not run: {error}")
    return RunReport(None, "failed", 0, 0, error)


def _execute(run: TaskRun, work: Callable[[TaskRun], bool]) -> tuple[str, str | None]:
    """Hold the lease while `work` runs; map how it ended to (outcome, error)."""
    task = run.spec.task
    try:
        with run.lock, _StatusReporter(run):
            run.take_fence()
            run.load_query()
            finished = work(run)
        return ("ok" if finished else "partial"), None
    except LockHeld as exc:
        return "skipped", f"held by {_holder(exc.owner)}"
    except TokenWaitTimeout:
        run.detail["stopped"] = "slice ended while waiting for tokens"
        return "partial", None
    except LeaseLost as exc:
        return "partial", str(exc)
    except (KeepaError, TokenStarvedError, QueryFileError) as exc:
        return "failed", redact(f"{type(exc).__name__}: {exc}")
    except redis.RedisError as exc:
        return "failed", redact(f"Redis unavailable ({type(exc).__name__}: {exc})")
    except db.ERRORS as exc:
        return "failed", f"database error ({type(exc).__name__}: {exc})"
    except Exception as exc:  # recorded and logged once: never a crash loop
        log.exception("%s run %d crashed", task, run.run_id)
        return "failed", redact(f"{type(exc).__name__}: {exc}")


def _holder(owner: dict | None) -> str:
    if not owner:
        return "an unknown holder"
    return f"{owner.get('host')}:{owner.get('pid')} (task {owner.get('task_id')})"


# --------------------------------------------------------------------------- in a worker

@cache
def _services_of_process(pid: int) -> PipelineServices:
    return PipelineServices.from_settings(load_settings())


def process_services() -> PipelineServices:
    """The services of this process, built on first use (after a prefork worker forked)."""
    return _services_of_process(os.getpid())


def local_runner(spec: TaskSpec, work: Callable[[TaskRun], bool]) -> Callable[..., RunReport]:
    """`run(services, *, task_id=None, slice_s=None)`: one run of `work` without Celery (tests
    and benchmarks call it)."""
    def run(services: PipelineServices, *, task_id: str | None = None,
            slice_s: float | None = None) -> RunReport:
        return run_pipeline_task(services, spec, work, task_id=task_id, slice_s=slice_s)
    return run


def celery_task(name: str, spec: TaskSpec, work: Callable[[TaskRun], bool]):
    """Register the Celery task `name`: one run of `work` in a worker, returning the run report
    as a dict; a configuration problem is logged as one line (not a traceback every interval)
    and reported as a failed run."""
    @shared_task(name=name, bind=True, ignore_result=True)
    def run_in_worker(self) -> dict:
        try:
            services = process_services()
        except (ConfigError, RedisUnavailable) as exc:
            log.error("%s not run: %s", spec.task, exc)
            return {"outcome": "failed", "error": str(exc)}
        return asdict(run_pipeline_task(services, spec, work, task_id=self.request.id))
    return run_in_worker
