"""Supervision of one service process: restart after a crash with back-off, give up loudly.

`Supervisor` is a small state machine advanced by `step()`: the runner drives one per service
in its foreground loop; `python -m keepa_deals.ops.supervisor NAME` drives one as a daemon
(what start_celery.sh launches), with its own pidfile, the child's pidfile and the child's
output in a rotated log under VAR_DIR. A crash restarts the child after 1, 2, 4 … s; a child
that keeps crashing soon after starting is given up (FAILURES L6: no endless crash loop) once
it crashed `max_crashes` times in a row over at least `patience_s` — long enough for what a
crash leaves behind to clear (a killed beat's lease blocks the next beat for one lock TTL).
The reason goes to the log and to `<name>.failed`.

Each child runs in its own session, so a crash's leftovers (e.g. a worker's pool processes) are
killed with its process group before the next start, and a terminal's Ctrl-C reaches only the
supervisor, which decides the order of the shutdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from keepa_deals import logs
from keepa_deals.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from keepa_deals.ops import processes
from keepa_deals.ops.logsink import RotatingFileSink, Sink, pump, stamped
from keepa_deals.ops.paths import failed_marker, log_dir, service_pidfile, supervisor_pidfile
from keepa_deals.ops.pidfile import PidFile, encode_argv, own_command_line
from keepa_deals.ops.services import services

DAEMON_STOP_TIMEOUT_S = 120.0  # a TERMed child may finish its current task slice
MIN_PATIENCE_S = 60.0
_STEP_S = 0.2

Announce = Callable[[str, bool], None]  # (message, loud)


class State(StrEnum):
    RUNNING = "running"
    BACKOFF = "waiting to restart"
    GAVE_UP = "gave up"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """Restart after first_delay_s, doubling up to max_delay_s. A crash within stable_after_s
    of the start continues a streak (a longer run starts a new one); a streak of at least
    max_crashes crashes that has lasted patience_s is given up."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_crashes: int = 5
    stable_after_s: float = 60.0
    patience_s: float = MIN_PATIENCE_S

    @classmethod
    def for_settings(cls, settings: Settings) -> RestartPolicy:
        """The default policy, patient enough for a dead holder's lease to expire twice."""
        return cls(patience_s=max(MIN_PATIENCE_S, 2 * settings.lock_ttl_s))

    def delay(self, crashes: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** max(0, crashes - 1))


class Supervisor:
    """Keeps one service process running; see the module docstring."""

    def __init__(self, name: str, argv: Sequence[str], *, sink: Sink, announce: Announce,
                 env: Mapping[str, str] | None = None, cwd: Path = PROJECT_ROOT,
                 policy: RestartPolicy = RestartPolicy(), pidfile: PidFile | None = None):
        self.name = name
        self.argv = tuple(argv)
        self.sink = sink
        self.announce = announce
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.policy = policy
        self.pidfile = pidfile
        self.state = State.STOPPED
        self.child: subprocess.Popen | None = None
        self.crashes = 0
        self.reason = ""
        self._streak_began = 0.0
        self._started_at = 0.0
        self._restart_at = 0.0
        self._stopping = False
        self._pumps: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.poll() is None else None

    def start(self) -> None:
        """Start the child now."""
        self._stopping = False
        self._spawn(time.monotonic())

    def step(self, now: float | None = None) -> State:
        """Notice a crash and schedule (or, when due, perform) the restart; returns the state."""
        now = time.monotonic() if now is None else now
        if self.state is State.RUNNING and self.child.poll() is not None:
            self._on_exit(now)
        if self.state is State.BACKOFF and now >= self._restart_at and not self._stopping:
            self._spawn(now)
        return self.state

    def stop_target(self) -> processes.StopTarget | None:
        """Mark the service as stopping (no more restarts) and name the process to stop."""
        self._stopping = True
        if self.state is State.BACKOFF:
            self.state = State.STOPPED
        pid = self.pid
        return None if pid is None else processes.StopTarget(self.name, pid, group=True)

    def finish(self) -> None:
        """After a stop: reap the child, drop its pidfile, flush its last output."""
        if self.child is not None:
            self._reap(self.child)
        if self.state is not State.GAVE_UP:
            self.state = State.STOPPED
        for thread in self._pumps:
            thread.join(timeout=2)

    # ------------------------------------------------------------------ internals

    def _spawn(self, now: float) -> None:
        try:
            child = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self.child = None
            self._crashed(now, f"{self.name} could not be started: {exc.strerror}")
            return
        self.child, self._started_at, self.state = child, now, State.RUNNING
        self._pumps = [t for t in self._pumps if t.is_alive()] + [pump(child.stdout, self.sink)]
        self.announce(f"{self.name}: started (pid {child.pid})", False)
        if self.pidfile is not None:
            try:
                self.pidfile.write(child.pid, encode_argv(self.argv))
            except OSError as exc:  # e.g. the disk is full: the child runs all the same
                self.announce(f"{self.name}: pidfile {self.pidfile.pid_path} not written "
                              f"({exc.strerror}); stop this copy with Ctrl-C or its pid", True)

    def _on_exit(self, now: float) -> None:
        child = self.child
        self._reap(child)
        if self._stopping:
            self.state = State.STOPPED
            return
        how = (f"was killed by {signal.Signals(-child.returncode).name}"
               if child.returncode < 0 else f"exited with code {child.returncode}")
        self._crashed(now, f"{self.name} (pid {child.pid}) {how} after "
                           f"{now - self._started_at:.1f}s")

    def _crashed(self, now: float, what: str) -> None:
        quick = self.child is None or now - self._started_at < self.policy.stable_after_s
        self.crashes = self.crashes + 1 if quick and self.crashes else 1
        if self.crashes == 1:
            self._streak_began = now
        streak_s = now - self._streak_began
        if self.crashes >= self.policy.max_crashes and streak_s >= self.policy.patience_s:
            self.state = State.GAVE_UP
            self.reason = (f"{what}; it crashed {self.crashes} times in a row over "
                           f"{streak_s:.0f}s, each within {self.policy.stable_after_s:g}s of "
                           "starting: giving up. Fix the cause shown in its output above, "
                           "then start it again.")
            self.announce(self.reason, True)
            return
        delay = self.policy.delay(self.crashes)
        self.state, self._restart_at = State.BACKOFF, now + delay
        self.announce(f"{what}; restarting in {delay:g}s (crash {self.crashes} in a row)", True)

    def _reap(self, child: subprocess.Popen) -> None:
        """Wait for the child, kill what is left of its process group, drop its pidfile."""
        if child.poll() is None:
            return
        if processes.group_members(child.pid):
            processes.send(child.pid, signal.SIGKILL, group=True)
        if self.pidfile is not None:
            self.pidfile.remove(if_pid=child.pid)


def alert_given_up(settings: Settings, name: str, reason: str, announce: Announce) -> None:
    """Notify the configured alert channels that `name` was given up (never raises)."""
    from keepa_deals.alerting.check import notify_gave_up

    try:
        notify_gave_up(settings, name, reason)
    except Exception as exc:  # noqa: BLE001 - supervision must end cleanly whatever happens
        announce(f"the alert about {name} could not be sent: {type(exc).__name__}", True)


# ---------------------------------------------------------------------- daemon


def main(argv: list[str] | None = None) -> int:
    """Supervise one service as a daemon until SIGTERM/SIGINT (0) or giving up (1)."""
    parser = argparse.ArgumentParser(
        prog="python -m keepa_deals.ops.supervisor",
        description="Run one service (redis keeper, simulator, worker, beat, dashboard), "
                    "restarting it after crashes; its output goes to $VAR_DIR/log/<name>.log "
                    "(rotated).")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings, "supervisor")
    # REDIS_URL is set for every supervised child, the private server's included: list all.
    known = {s.name: s for s in services(settings, settings.redis_url or "",
                                         private_redis_kept=True)}
    if args.name not in known:
        print(f"error: unknown service {args.name!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    sink = RotatingFileSink(log_dir(settings) / f"{args.name}.log")
    own = supervisor_pidfile(settings, args.name)
    own.write(os.getpid(), own_command_line())
    try:
        return _supervise(args.name, known[args.name].argv, sink, settings)
    finally:
        own.remove(if_pid=os.getpid())
        sink.close()


def _supervise(name: str, argv: tuple[str, ...], sink: RotatingFileSink, settings) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def announce(message: str, loud: bool) -> None:
        sink.write(stamped(("!!! " if loud else "") + "supervisor: " + message))

    supervisor = Supervisor(name, argv, sink=sink, announce=announce,
                            policy=RestartPolicy.for_settings(settings),
                            pidfile=service_pidfile(settings, name))
    supervisor.start()
    while not stop.wait(_STEP_S):
        if supervisor.step() is State.GAVE_UP:
            failed_marker(settings, name).write_text(stamped(supervisor.reason) + "\n")
            alert_given_up(settings, name, supervisor.reason, announce)
            supervisor.finish()
            return 1
    target = supervisor.stop_target()
    if target is not None:
        announce(f"stopping {name} (pid {target.pid})", False)
        processes.stop([target], DAEMON_STOP_TIMEOUT_S,
                       report=lambda message: announce(message, False))
    supervisor.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
