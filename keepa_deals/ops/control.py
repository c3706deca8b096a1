"""Start, stop and list the services as supervised daemons (start_celery.sh and
kill_everything_force.sh), one start or stop at a time (a file lock under VAR_DIR/run).

Start refuses to run a second copy of a service: a service counts as running while its
supervisor's (or its own) pidfile names a live process with exactly the recorded command line.
Before anything starts, the Celery app must import with every scheduled task registered
(`python -m keepa_deals.celery_app check`), Redis must answer and the database is migrated.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from keepa_deals import db
from keepa_deals.config import PROJECT_ROOT, Settings
from keepa_deals.ops import processes, systemd
from keepa_deals.ops.logsink import rotate_when_larger
from keepa_deals.ops.paths import (
    failed_marker,
    log_dir,
    ops_lock,
    revision_file,
    service_pidfile,
    supervisor_pidfile,
)
from keepa_deals.ops.pidfile import PidFile
from keepa_deals.ops.services import (
    SERVICE_NAMES,
    Service,
    busy_ports,
    environment,
    services,
    system_redis,
)
from keepa_deals.processes import process_alive
from keepa_deals.redis_server import RedisUnavailable

Report = Callable[[str], None]
_LOCK_WAIT_S = 120.0
_POLL_S = 0.25
_LOG_TAIL_LINES = 12
SUPERVISOR_ERR_MAX_BYTES = 1024 * 1024  # a supervisor's own crash output, rotated at its start


class OpsError(RuntimeError):
    """An operation cannot go on; the message says why and what to do."""


class AlreadyRunning(OpsError):
    """Every service already runs: starting a second copy is refused."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    supervisor_pid: int | None
    pid: int | None
    gave_up: str | None

    @property
    def running(self) -> bool:
        return self.supervisor_pid is not None or self.pid is not None

    def describe(self) -> str:
        if self.supervisor_pid and self.pid:
            return f"running (pid {self.pid}, supervisor pid {self.supervisor_pid})"
        if self.supervisor_pid:
            return f"restarting (supervisor pid {self.supervisor_pid}, no live process)"
        if self.pid:
            return f"running WITHOUT its supervisor (pid {self.pid})"
        return f"GAVE UP: {self.gave_up}" if self.gave_up else "not running"


def status(settings: Settings, names=SERVICE_NAMES) -> list[ServiceStatus]:
    """What runs now, for each named service: by its systemd unit when systemd is in charge
    (supervisor pid 1), else by pidfile (exact command line)."""
    if systemd.in_charge():
        return [ServiceStatus(name, 1 if (pid := systemd.main_pid(name)) else None, pid,
                              systemd.failed_reason(name)) for name in names]
    found = []
    for name in names:
        marker = failed_marker(settings, name)
        found.append(ServiceStatus(
            name, supervisor_pidfile(settings, name).live_pid(),
            service_pidfile(settings, name).live_pid(),
            marker.read_text().strip() if marker.is_file() else None))
    return found


@contextlib.contextmanager
def exclusive(settings: Settings, wait_s: float = _LOCK_WAIT_S) -> Iterator[None]:
    """Hold the start/stop lock (an flock, released when this process ends, however)."""
    path = ops_lock(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OpsError(f"another start/stop still holds {path} after "
                                   f"{wait_s:g}s") from None
                time.sleep(_POLL_S)
        yield


def preflight(python: str = sys.executable) -> str:
    """Run the Celery start-up check in a fresh interpreter; its summary, or OpsError."""
    completed = subprocess.run(
        [python, "-m", "keepa_deals.celery_app", "check"], cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines() or ["no output"]
        raise OpsError(f"pre-flight failed: the Celery app does not load cleanly: {lines[-1]}")
    return completed.stdout.strip()


def record_revision(settings: Settings) -> str:
    """Write the checkout's commit to VAR_DIR/REVISION (what the started processes run); without
    a git checkout (e.g. a tarball) the recorded revision is kept as it is."""
    path = revision_file(settings)
    revision = ""
    if (PROJECT_ROOT / ".git").exists():
        completed = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                                   capture_output=True, text=True, timeout=10, check=False)
        revision = completed.stdout.strip() if completed.returncode == 0 else ""
    if not revision:
        return path.read_text().strip() if path.is_file() else "unknown"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(revision + "\n")
    return revision


def migrate(settings: Settings, *, snapshot: Path | None = None,
            report: Report = print) -> None:
    """Apply the database migrations (idempotent). With `snapshot`, a database that has
    migrations pending is first copied there (what a rollback restores); without pending
    migrations no snapshot is taken and a stale one at that path is removed. PostgreSQL is
    never snapshotted here: its migrations run in one transaction, and its backups are the
    server's (docs/deploy.md)."""
    try:
        conn = db.connect(settings.database)
        try:
            if snapshot is not None:
                snapshot.unlink(missing_ok=True)
                current = db.schema_version(conn)
                if 0 < current < db.latest_version():
                    if db.is_postgres(conn):
                        report("PostgreSQL: no snapshot taken; a rollback keeps the migrated "
                               "schema (restore a pg_dump backup to undo it)")
                    else:
                        db.snapshot(conn, snapshot)
                        report(f"database snapshot (schema {current}) saved to {snapshot}")
            db.migrate(conn)
        finally:
            conn.close()
    except (*db.ERRORS, db.MigrationError) as exc:
        raise OpsError(f"database {settings.database_shown}: {exc}") from None


def restore_snapshot(settings: Settings, snapshot: Path, *, report: Report = print) -> None:
    """Put the database back as it was at `snapshot` (taken by migrate); only while no
    service runs, so nothing writes under it."""
    running = [s.name for s in status(settings) if s.pid]
    if running:
        raise OpsError(f"stop the services first ({', '.join(running)} running): the database "
                       "is restored only while nothing writes to it")
    if not snapshot.is_file():
        raise OpsError(f"no database snapshot at {snapshot}")
    try:
        conn = db.connect(settings.database)
        try:
            db.restore(conn, snapshot)
            version = db.schema_version(conn)
        finally:
            conn.close()
    except (*db.ERRORS, db.MigrationError) as exc:
        raise OpsError(f"database {settings.database_shown}: restore failed: {exc}") from None
    report(f"database restored from {snapshot} (schema {version})")


def start(settings: Settings, *, timeout_s: float, report: Report = print) -> None:
    """Start every service that is not running as a supervised daemon and wait until each is
    ready. Raises AlreadyRunning when all of them run, OpsError when one cannot start. With
    systemd in charge: systemctl start keepa-deals.target (its units pre-flight and migrate)."""
    if systemd.in_charge():
        _systemctl_or_fail("start", systemd.TARGET)
        report(f"systemd: started {systemd.TARGET}")
        return
    with exclusive(settings):
        try:
            redis_url, started_redis = system_redis(settings)
        except RedisUnavailable as exc:
            raise OpsError(str(exc)) from None
        wanted = services(settings, redis_url)
        current = {s.name: s for s in status(settings, [s.name for s in wanted])}
        orphans = [s for s in current.values() if s.pid and not s.supervisor_pid]
        if orphans:
            raise OpsError(", ".join(f"{s.name} (pid {s.pid})" for s in orphans)
                           + " running without a supervisor: stop it first with "
                             "./kill_everything_force.sh")
        missing = [s for s in wanted if not current[s.name].running]
        if not missing:
            raise AlreadyRunning("already running: " + "; ".join(
                f"{s.name} {current[s.name].describe()}" for s in wanted)
                + " (stop with ./kill_everything_force.sh)")
        if started_redis:
            report("redis: started the private server (data under VAR_DIR/redis)")
        problems = busy_ports(missing)
        if problems:
            raise OpsError("; ".join(problems))
        report(preflight())
        migrate(settings)
        report(f"revision: {record_revision(settings)}")
        env = environment(redis_url)
        launched = {s.name: (s, _launch_supervisor(settings, s.name, env)) for s in missing}
        for name, status_now in current.items():
            if status_now.running:
                report(f"{name}: already {status_now.describe()}")
        _wait_ready(settings, launched, timeout_s, report)


def stop(settings: Settings, *, timeout_s: float, report: Report = print) -> bool:
    """Stop every service (supervisors get TERM and pass it on), KILL what is left after
    `timeout_s`; remove the pidfiles of what is gone. True when nothing is left running.
    With systemd in charge: systemctl stop keepa-deals.target (its units' own stop timeouts)."""
    if systemd.in_charge():
        _systemctl_or_fail("stop", systemd.TARGET)
        report(f"systemd: stopped {systemd.TARGET}")
        return not any(entry.pid for entry in status(settings))
    with exclusive(settings):
        targets: list[processes.StopTarget] = []
        supervised: dict[int, list[str]] = {}
        for entry in status(settings, tuple(reversed(SERVICE_NAMES))):
            if entry.supervisor_pid:
                supervised.setdefault(entry.supervisor_pid, []).append(entry.name)
            if entry.pid:
                targets.append(processes.StopTarget(
                    entry.name, entry.pid, group=processes.process_group(entry.pid) == entry.pid,
                    term=entry.supervisor_pid is None))
        targets += [processes.StopTarget(f"supervisor of {'+'.join(names)}", pid)
                    for pid, names in supervised.items()]
        if not targets:
            report("nothing is running")
        stopped = processes.stop(targets, timeout_s, report)
        for name in SERVICE_NAMES:
            for pidfile in (supervisor_pidfile(settings, name), service_pidfile(settings, name)):
                _drop_if_stale(pidfile, report)
        return stopped


def _systemctl_or_fail(action: str, unit: str) -> None:
    done = systemd.systemctl(action, unit, timeout_s=_LOCK_WAIT_S * 5)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise OpsError(f"systemctl {action} {unit} failed: {lines[-1]}")


def _drop_if_stale(pidfile: PidFile, report: Report) -> None:
    """Remove a pidfile whose process is gone or is not ours (that process is left alone)."""
    pid = pidfile.recorded_pid()
    if pid is None or pidfile.live_pid() is not None:
        return
    if process_alive(pid):
        report(f"{pidfile.pid_path.name}: pid {pid} now runs something else; left that "
               "process alone and removed the stale pidfile")
    pidfile.remove()


def _launch_supervisor(settings: Settings, name: str, env: dict) -> subprocess.Popen:
    failed_marker(settings, name).unlink(missing_ok=True)
    log_dir(settings).mkdir(parents=True, exist_ok=True)
    error_file = log_dir(settings) / f"{name}.supervisor.err"
    rotate_when_larger(error_file, SUPERVISOR_ERR_MAX_BYTES, backups=1)
    with error_file.open("ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "keepa_deals.ops.supervisor", name], cwd=PROJECT_ROOT,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True)


def _wait_ready(settings: Settings, launched: dict[str, tuple[Service, subprocess.Popen]],
                timeout_s: float, report: Report) -> None:
    pending = dict(launched)
    problems = []
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for name, (service, daemon) in list(pending.items()):
            pid = service_pidfile(settings, name).live_pid()
            if pid and service.ready(pid):
                report(f"{name}: ready (pid {pid}) — {service.where}")
                del pending[name]
            elif daemon.poll() is not None:
                problems.append(f"{name}: {_why_supervisor_ended(settings, name)}")
                del pending[name]
        time.sleep(_POLL_S)
    problems += [f"{name}: not ready after {timeout_s:g}s (still supervised)" for name in pending]
    if problems:
        for problem in problems:
            name = problem.split(":", 1)[0]
            report(f"--- last lines of {log_dir(settings) / name}.log:")
            for line in _tail(log_dir(settings) / f"{name}.log"):
                report(f"    {line}")
        raise OpsError("; ".join(problems) + f" — see {log_dir(settings)}")


def _why_supervisor_ended(settings: Settings, name: str) -> str:
    marker = failed_marker(settings, name)
    if marker.is_file():
        return "gave up: " + marker.read_text().strip()
    errors = _tail(log_dir(settings) / f"{name}.supervisor.err", 1)
    return "its supervisor exited at once" + (f": {errors[-1]}" if errors else "")


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]
