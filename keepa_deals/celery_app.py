"""The Celery app: Redis broker, beat schedule, single-beat lease, heartbeats, registration check.

* Broker: the pipeline's Redis (REDIS_URL, else the private server), every broker key under
  `celery:` (kombu global_keyprefix) so broker, locks and bucket never share a namespace. A
  rediss:// URL's TLS options (redis_server.tls_options) are the broker's broker_use_ssl.
* Reliability: acks_late, prefetch 1, soft/hard time limits above the task slice and below the
  broker's visibility timeout; every schedule entry `expires` after one interval, so messages a
  dead worker left behind never pile up.
* Registration: task modules are listed explicitly (`include=`); `python -m
  keepa_deals.celery_app check`, and every worker and beat while loading the task modules,
  verify that each module imports and each scheduled task is registered; they exit non-zero
  naming what is missing (FAILURES L9).
* Exactly one beat: the scheduler takes the lease lock BEAT_LOCK when it starts; a second beat
  exits non-zero naming the holder (L8). The schedule lives in memory (no schedule file to
  corrupt); a restarted beat runs each task one interval after it starts.
* Worker and beat heartbeats (with the code revision) in Redis via keepa_deals.heartbeats.

Start: `celery -A keepa_deals.celery_app worker` and `celery -A keepa_deals.celery_app beat`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading

import redis
from celery import Celery, signals
from celery.beat import Scheduler
from kombu.transport import redis as kombu_redis

from keepa_deals import heartbeats, logs
from keepa_deals.alerting.check import watchdog as alert_watchdog
from keepa_deals.config import ConfigError, Settings, load_settings, redact_url, time_limits
from keepa_deals.constants import BEAT_LOCK, CELERY_KEY_PREFIX
from keepa_deals.host import host_name
from keepa_deals.locks import LeaseLock
from keepa_deals.outage_log import OutageLog
from keepa_deals.redis_server import RedisUnavailable, connect, redis_url_for, tls_options
from keepa_deals.task_runtime import QueryFileError, load_selection

log = logging.getLogger(__name__)

TASK_MODULES = ("keepa_deals.backfiller", "keepa_deals.simple_task", "keepa_deals.janitor_task",
                "keepa_deals.alerting.task")
BACKFILL_TASK = "keepa_deals.backfiller.backfill_deals"
UPSERT_TASK = "keepa_deals.simple_task.update_recent_deals"
JANITOR_TASK = "keepa_deals.janitor.remove_stale_deals"
ALERT_TASK = "keepa_deals.alerting.check_alerts"
REDIS_RETRY_S = 1.0  # beat: the pause between attempts while Redis is away
HOST_QUEUE_PREFIX = "host."


def host_queue(host: str) -> str:
    """The queue only the workers of `host` consume (besides the shared default queue)."""
    return HOST_QUEUE_PREFIX + host


def beat_schedule(settings: Settings) -> dict:
    """The four periodic tasks; each message expires after one interval. The alert check goes
    to the beat host's own queue: its alert state (a file under VAR_DIR) stays on one host
    however many hosts run workers."""
    entries = {
        "backfill-deals": (BACKFILL_TASK, settings.backfill_interval_s),
        "update-recent-deals": (UPSERT_TASK, settings.upsert_interval_s),
        "remove-stale-deals": (JANITOR_TASK, settings.janitor_interval_s),
        "check-alerts": (ALERT_TASK, settings.alerts.check_interval_s),
    }
    schedule = {
        name: {"task": task, "schedule": interval, "options": {"expires": interval}}
        for name, (task, interval) in entries.items()
    }
    schedule["check-alerts"]["options"]["queue"] = host_queue(host_name())
    return schedule


class _ResilientRedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, surviving a broker restart while a task is unacknowledged, and a
    broker whose disk is full.

    With acks_late, a worker that loses Redis collects its connection (the transport forgets
    its client), then closes the channel, which tries to restore the unacked messages through
    that forgotten client: kombu 5.7 raises AttributeError there and the worker dies with
    "Unrecoverable error". Here the attempt raises a connection error instead, which kombu
    ignores while closing; the worker reconnects, and beat sends the periodic tasks again.
    """

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.ConnectionError("broker connection already closed")
        return super()._connparams(asynchronous=asynchronous)

    def _brpop_read(self, **options):
        """A Redis that cannot persist (MISCONF: its disk is full) refuses the queue reads; the
        worker treats that as a lost broker and reconnects with back-off instead of exiting."""
        try:
            return super()._brpop_read(**options)
        except redis.ResponseError as exc:
            if str(exc).startswith("MISCONF"):
                raise redis.ConnectionError(f"Redis refuses writes: {exc}") from exc
            raise


class ResilientRedisTransport(kombu_redis.Transport):
    """The Redis transport with _ResilientRedisChannel (used by worker and beat)."""

    Channel = _ResilientRedisChannel


def make_celery(settings: Settings, *, broker_url: str,
                include: tuple[str, ...] = TASK_MODULES) -> Celery:
    """A configured Celery app (the module-level `app` is make_celery(load_settings(), ...))."""
    soft, hard, visibility = time_limits(settings)
    app = Celery("keepa_deals", include=list(include))
    app.conf.update(
        broker_url=broker_url,
        # rediss://: TLS with the URL's options, the server verified (kombu would otherwise use
        # plain TCP with this transport, or no verification with its own)
        broker_use_ssl=tls_options(broker_url),
        broker_transport="keepa_deals.celery_app:ResilientRedisTransport",
        broker_transport_options={"global_keyprefix": CELERY_KEY_PREFIX,
                                  "visibility_timeout": visibility},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for Redis however long it is away
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # a task whose broker connection drops finishes its slice; it stops itself at its next
        # checkpoint if its lease went with the broker
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=soft,
        task_time_limit=hard,
        worker_concurrency=len(TASK_MODULES),
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="keepa_deals.celery_app:LeasedScheduler",
        beat_max_loop_interval=min(heartbeats.HEARTBEAT_INTERVAL_S, settings.lock_ttl_s / 3),
    )
    app.pipeline_settings = settings
    return app


def registration_problems(celery_app: Celery) -> list[str]:
    """What would make scheduled messages be dropped: a task module that cannot be imported,
    or a scheduled task name that no module registers (checked as a worker loads them)."""
    problems = []
    for module in celery_app.conf.include:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure drops the module's tasks
            problems.append(f"task module {module} cannot be imported "
                            f"({type(exc).__name__}: {exc})")
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    problems += [f"scheduled task {name} is not registered by any task module"
                 for name in sorted(scheduled) if name not in celery_app.tasks]
    return problems


def _registration_problem(celery_app: Celery) -> str | None:
    problems = registration_problems(celery_app)
    if not problems:
        return None
    return ("; ".join(problems) + f" (task modules: {', '.join(celery_app.conf.include)}; "
            "their messages would be dropped)")


# --------------------------------------------------------------------------- beat

class LeasedScheduler(Scheduler):
    """The in-memory beat scheduler, run only while holding the BEAT_LOCK lease.

    The lease is renewed on every tick (beat_max_loop_interval < lock TTL / 3). A lease lost
    while Redis was away is taken again if free; if another beat holds it, this one stops.
    """

    def __init__(self, app, *args, lazy: bool = False, **kwargs):
        settings = app.pipeline_settings
        self._redis = connect(app.conf.broker_url)
        self._lease = LeaseLock(self._redis, BEAT_LOCK, ttl_s=settings.lock_ttl_s,
                                task_id=f"beat@{host_name()}")
        self._holding = False
        self._outage = OutageLog(log, "beat: Redis")
        if not lazy:
            self._take_lease()
            log.info("beat holds lease %r (revision %s)", BEAT_LOCK, heartbeats.code_revision())
        super().__init__(app, *args, lazy=lazy, **kwargs)

    def _take_lease(self) -> None:
        if not self._lease.acquire():
            owner = self._lease.owner() or {}
            message = (f"another celery beat is running: lease {BEAT_LOCK!r} is held by pid "
                       f"{owner.get('pid')} on {owner.get('host')} ({owner.get('task_id')}); "
                       "exactly one beat may run")
            print(f"error: {message}", file=sys.stderr)
            log.critical(message)
            raise SystemExit(1)
        self._holding = True

    def tick(self, *args, **kwargs):
        """Renew the lease and the heartbeat, then send due tasks. While Redis is away nothing
        can be sent: wait REDIS_RETRY_S between attempts and log the outage once."""
        try:
            if not self._lease.renew():
                log.warning("beat lease %r was lost; taking it again", BEAT_LOCK)
                self._take_lease()
            heartbeats.beat_heartbeat(self._redis)
        except redis.RedisError as exc:
            self._outage.failed(exc)
            return REDIS_RETRY_S
        self._outage.ok()
        return super().tick(*args, **kwargs)

    def close(self) -> None:
        super().close()
        if self._holding:
            with contextlib.suppress(redis.RedisError):  # else it expires within one TTL
                self._lease.release()


# --------------------------------------------------------------------------- worker

class _WorkerHeartbeat:
    """A daemon thread in the worker's main process refreshing its heartbeat key, and the
    alert watchdog: it checks health itself when beat's alert checks stopped."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(log, "worker heartbeat: Redis")

    def start(self, url: str, hostname: str, settings: Settings) -> None:
        client = connect(url)
        self._thread = threading.Thread(target=self._loop, args=(client, hostname, settings),
                                        name="worker-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, client: redis.Redis, hostname: str, settings: Settings) -> None:
        while True:
            try:
                heartbeats.worker_heartbeat(client, hostname)
                self._outage.ok()
            except redis.RedisError as exc:
                self._outage.failed(exc)
            try:
                alert_watchdog(settings)
            except Exception:  # the heartbeat must outlive any alert problem
                log.exception("alert watchdog failed")
            if self._stop.wait(heartbeats.HEARTBEAT_INTERVAL_S):
                return


_worker_heartbeat = _WorkerHeartbeat()


@signals.import_modules.connect
def _check_registration_on_start(sender=None, **_):
    """Worker and beat load the task modules through here: refuse to start, naming what is
    missing, rather than run with tasks whose messages would be dropped."""
    problem = _registration_problem(sender)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(1)


@signals.celeryd_after_setup.connect
def _consume_the_host_queue(sender=None, instance=None, **_):
    """Every worker also consumes its host's queue (HOST_NAME), where beat's alert checks go."""
    instance.app.amqp.queues.select_add(host_queue(host_name()))


@signals.worker_ready.connect
def _start_worker_heartbeat(sender=None, **_):
    app_of_worker = sender.app
    log.info("worker %s ready (revision %s, broker %s)", sender.hostname,
             heartbeats.code_revision(), redact_url(app_of_worker.conf.broker_url))
    _worker_heartbeat.start(app_of_worker.conf.broker_url, sender.hostname,
                            app_of_worker.pipeline_settings)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger=None, **_):
    """LOG_FORMAT=json: Celery's handlers write one JSON object per line (keepa_deals.logs)."""
    logs.apply_to(logger)


def _process_role() -> str:
    """worker, beat or celery: what this Celery process is, for its log lines."""
    return next((arg for arg in sys.argv[1:] if arg in ("worker", "beat")), "celery")


@signals.worker_shutdown.connect
def _stop_worker_heartbeat(**_):
    _worker_heartbeat.stop()


# --------------------------------------------------------------------------- the app

def _build_app() -> Celery:
    """The app of this process; a bad configuration ends it with a one-line error."""
    try:
        settings = load_settings()
        logs.configure(settings, _process_role())
        load_selection(settings.query_path)
        return make_celery(settings, broker_url=redis_url_for(settings))
    except (ConfigError, QueryFileError, RedisUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = _build_app()


def main(argv: list[str] | None = None, celery_app: Celery | None = None) -> int:
    """`python -m keepa_deals.celery_app check`: exit 1 naming unregistered scheduled tasks."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["check"]:
        print("usage: python -m keepa_deals.celery_app check", file=sys.stderr)
        return 2
    target = celery_app or app
    problem = _registration_problem(target)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    schedule = target.conf.beat_schedule
    print(f"ok: {len(schedule)} scheduled tasks registered: "
          + ", ".join(sorted(entry['task'] for entry in schedule.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
