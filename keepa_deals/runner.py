"""`python -m keepa_deals.runner`: the whole system in the foreground (what `make run` runs).

1. Redis: REDIS_URL when set (it must answer), else the project's private redis-server under
   VAR_DIR/redis — started here when needed, restarted with its data when it dies (the
   supervised `redis` keeper service, ops/redis_keeper.py), and stopped at the end if started
   here.
2. The Keepa simulator when KEEPA_API_KEY is unset. One token minute lasts
   KEEPA_REFILL_PERIOD_MS (60000 by default: Keepa's real pace); `--sim-minute-ms` sets a faster
   demo clock for simulator and worker alike.
3. The start-up check (every scheduled task registered), the migrations, the revision record,
   then the Celery worker, the beat and the dashboard as child processes whose output appears
   here prefixed with their name. The dashboard URL is printed once it answers.
4. A child that dies is reported loudly and restarted with back-off; one that keeps crashing
   right after starting stops everything (exit 1) instead of looping forever.
5. Ctrl-C or SIGTERM: TERM to every child (a worker finishes its task), KILL after
   --stop-timeout seconds, exit 0.

While it runs, its children have pidfiles under VAR_DIR/run like those of start_celery.sh, so
start_celery.sh refuses to start a second copy and kill_everything_force.sh can stop it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from keepa_deals import logs
from keepa_deals.config import ConfigError, Settings, load_settings, redact_url
from keepa_deals.ops import processes
from keepa_deals.ops.control import OpsError, exclusive, migrate, preflight, record_revision, status
from keepa_deals.ops.logsink import ConsoleSink
from keepa_deals.ops.paths import service_pidfile, supervisor_pidfile
from keepa_deals.ops.pidfile import own_command_line
from keepa_deals.ops.services import (
    Service,
    busy_ports,
    dashboard_url,
    environment,
    services,
    system_redis,
)
from keepa_deals.ops.supervisor import RestartPolicy, State, Supervisor, alert_given_up
from keepa_deals.redis_server import RedisUnavailable, private_redis

_STEP_S = 0.2
_LOUD = "!!! "


class Runner:
    """Starts the services, watches them, and stops everything on request."""

    def __init__(self, settings: Settings, *, stop_timeout_s: float,
                 simulator_args: tuple[str, ...] = ()):
        self.settings = settings
        self.stop_timeout_s = stop_timeout_s
        self.simulator_args = simulator_args
        self.stop_requested = threading.Event()
        self.supervisors: list[tuple[Service, Supervisor]] = []
        self.started_redis = False

    def run(self) -> int:
        """Run until stopped (0) or until a service cannot be kept running (1)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_requested.set())
        try:
            with exclusive(self.settings):
                self._prepare()
                self._start_services()
        except (OpsError, RedisUnavailable) as exc:
            if not self.stop_requested.is_set():  # else: interrupted while starting
                say(f"error: {exc}")
            self._shutdown()
            return 0 if self.stop_requested.is_set() else 1
        code = self._watch()
        self._shutdown()
        return code

    def _prepare(self) -> None:
        running = [s for s in status(self.settings) if s.running]
        if running:
            raise OpsError("already running: " + ", ".join(
                f"{s.name} ({s.describe()})" for s in running)
                + "; stop it first with ./kill_everything_force.sh")
        redis_url, self.started_redis = system_redis(self.settings)
        wanted = services(self.settings, redis_url, simulator_args=self.simulator_args)
        problems = busy_ports(wanted)
        if problems:
            raise OpsError("; ".join(problems))
        started = "started the private server, " if self.started_redis else ""
        say(f"redis: {started}{redact_url(redis_url)}")
        say(preflight())
        migrate(self.settings)
        say(f"database: {self.settings.database_shown}; revision {record_revision(self.settings)}")
        own = own_command_line()
        env = environment(redis_url)
        for service in wanted:
            supervisor_pidfile(self.settings, service.name).write(os.getpid(), own)
            self.supervisors.append((service, Supervisor(
                service.name, service.argv, sink=ConsoleSink(service.name),
                announce=_announce, env=env, policy=RestartPolicy.for_settings(self.settings),
                pidfile=service_pidfile(self.settings, service.name))))

    def _start_services(self) -> None:
        for _, supervisor in self.supervisors:
            supervisor.start()

    def _watch(self) -> int:
        ready: dict[str, int] = {}
        while not self.stop_requested.wait(_STEP_S):
            for service, supervisor in self.supervisors:
                if supervisor.step() is State.GAVE_UP:
                    alert_given_up(self.settings, service.name, supervisor.reason, _announce)
                    say("=" * 78)
                    say(f"{_LOUD}{service.name} cannot be kept running; stopping everything.")
                    say("=" * 78)
                    return 1
                pid = supervisor.pid
                if pid and ready.get(service.name) != pid and service.ready(pid):
                    ready[service.name] = pid
                    say(f"{service.name}: ready — {service.where}")
                    if len(ready) == len(self.supervisors):
                        self._announce_running()
        return 0

    def _announce_running(self) -> None:
        say(f"==> keepa-deals is running: dashboard {dashboard_url(self.settings)}  "
            "(Ctrl-C stops everything)")

    def _shutdown(self) -> None:
        targets = [t for _, s in self.supervisors if (t := s.stop_target()) is not None]
        if targets:
            say(f"stopping {', '.join(t.label for t in targets)} "
                f"(TERM, KILL after {self.stop_timeout_s:g}s)")
            processes.stop(targets, self.stop_timeout_s, say)
        for service, supervisor in self.supervisors:
            supervisor.finish()
            supervisor_pidfile(self.settings, service.name).remove(if_pid=os.getpid())
        if self.started_redis:
            private_redis(self.settings).stop()
            say("redis: private server stopped (its data is kept)")


def say(message: str) -> None:
    """A runner message on stderr (children's output goes to stdout)."""
    shown = logs.json_line(message, process="runner") if logs.is_json() else message
    ConsoleSink.emit(sys.stderr, shown)


def _announce(message: str, loud: bool) -> None:
    say((_LOUD if loud else "") + message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keepa_deals.runner",
        description="Run the whole system in the foreground: Redis (private server unless "
                    "REDIS_URL is set), the Keepa simulator (unless KEEPA_API_KEY is set), "
                    "migrations, Celery worker and beat, and the dashboard. Ctrl-C stops it.")
    parser.add_argument("--sim-minute-ms", type=int, metavar="MS",
                        help="length of a simulated token minute (default: "
                             "KEEPA_REFILL_PERIOD_MS, 60000 = real time); sets both sides")
    parser.add_argument("--sim-config", metavar="FILE.json",
                        help="simulator configuration (see python -m keepa_sim --help)")
    parser.add_argument("--stop-timeout", type=float, default=30, metavar="S",
                        help="seconds between TERM and KILL when stopping (30)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.sim_minute_ms is not None:
            if not settings.uses_simulator:
                raise ConfigError("--sim-minute-ms: only for the simulator, and KEEPA_API_KEY "
                                  "is set (real Keepa refills once a real minute)")
            os.environ["KEEPA_REFILL_PERIOD_MS"] = str(args.sim_minute_ms)
            settings = load_settings()
    except ConfigError as exc:
        say(f"error: {exc}")
        return 2
    logs.configure(settings, "runner")
    simulator_args = ("--config", os.path.abspath(args.sim_config)) if args.sim_config else ()
    return Runner(settings, stop_timeout_s=args.stop_timeout,
                  simulator_args=simulator_args).run()


if __name__ == "__main__":
    sys.exit(main())
