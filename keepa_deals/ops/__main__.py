"""`python -m keepa_deals.ops COMMAND`: the steps the operations scripts are made of."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keepa_deals.config import ConfigError, load_settings
from keepa_deals.ops import control, gate, systemd
from keepa_deals.processes import process_alive
from keepa_deals.redis_server import private_redis

_EPILOG = """\
exit codes: 0 done; 1 the operation failed or was refused (the reason is on stderr);
2 bad usage or configuration (.env / environment).
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        return args.run(settings, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except control.OpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _start(settings, args) -> int:
    control.start(settings, timeout_s=args.timeout)
    return 0


def _stop(settings, args) -> int:
    return 0 if control.stop(settings, timeout_s=args.timeout) else 1


def _stop_redis(settings, _args) -> int:
    if settings.redis_url:
        print("redis: REDIS_URL is configured: that server is not ours to stop")
        return 0
    server = private_redis(settings)
    pid = server.pid()
    if pid is None:  # pid() only names a live process called redis-server
        print("redis: the private server is not running")
        return 0
    server.stop()
    if process_alive(pid):
        print(f"error: the private redis-server (pid {pid}) is still running", file=sys.stderr)
        return 1
    print(f"redis: private server (pid {pid}) stopped; its data stays in {server.data_dir}")
    return 0


def _status(settings, _args) -> int:
    entries = control.status(settings)
    for entry in entries:
        print(f"{entry.name:<10} {entry.describe()}")
    optional = {"simulator"} | ({"redis"} if settings.redis_url else set())
    wanted = [s for s in entries if s.name not in optional or s.running]
    return 0 if all(s.running for s in wanted) else 1


def _install_units(settings, args) -> int:
    unit_dir = Path(args.dir)
    paths = systemd.install(settings, python=sys.executable, user=args.user, unit_dir=unit_dir)
    for path in paths:
        print(f"wrote {path}")
    print("next: systemctl daemon-reload && systemctl enable --now keepa-deals.target\n"
          "      (stop the pidfile services first: ./kill_everything_force.sh); then\n"
          "      systemctl status 'keepa-deals-*'   journalctl -u 'keepa-deals-*' -f")
    return 0


def _preflight(_settings, _args) -> int:
    print(control.preflight())
    return 0


def _migrate(settings, args) -> int:
    control.migrate(settings, snapshot=Path(args.snapshot) if args.snapshot else None)
    print(f"database {settings.database_shown}: migrated")
    return 0


def _restore(settings, args) -> int:
    control.restore_snapshot(settings, Path(args.snapshot))
    return 0


def _var_dir(settings, _args) -> int:
    print(settings.var_dir)
    return 0


def _revision(settings, _args) -> int:
    print(control.record_revision(settings))
    return 0


def _healthy(settings, args) -> int:
    reason = gate.unhealthy_reason(settings, args.revision)
    if reason:
        print(f"not healthy: {reason}")
        return 1
    print(f"healthy: every service runs revision {args.revision[:12]}")
    return 0


def _gate(settings, args) -> int:
    gate.wait_healthy(settings, revision=args.revision, since=args.since,
                      timeout_s=args.timeout)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keepa_deals.ops", epilog=_EPILOG,
        description="Operations on the services (redis keeper, simulator, worker, beat, "
                    "dashboard) of this "
                    "checkout; pidfiles under $VAR_DIR/run, logs under $VAR_DIR/log.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name, run, text):
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    command("start", _start, "start the services not running, each under its own supervisor; "
            "refuse when all run").add_argument(
        "--timeout", type=float, default=90, help="seconds to wait for readiness (90)")
    command("stop", _stop, "TERM every service (warm shutdown), KILL it after the timeout"
            ).add_argument("--timeout", type=float, default=30,
                           help="seconds between TERM and KILL (30)")
    command("stop-redis", _stop_redis, "stop the private redis-server (it saves its data)")
    command("status", _status, "show what runs (exit 0 when every service runs)")
    install_command = command("install-units", _install_units, "write the systemd units "
                              "(worker, beat, dashboard, Redis, a target grouping them)")
    install_command.add_argument("--dir", default=str(systemd.UNIT_DIR),
                                 help=f"where to write them ({systemd.UNIT_DIR})")
    install_command.add_argument("--user", help="the user the services run as (you)")
    command("preflight", _preflight, "check that the Celery app loads with every scheduled "
            "task registered")
    command("migrate", _migrate, "apply the database migrations").add_argument(
        "--snapshot", metavar="FILE", help="first copy the database here when migrations are "
        "pending (what restore-snapshot puts back after a failed deploy)")
    command("restore-snapshot", _restore, "put the database back as it was at a snapshot "
            "taken by `migrate --snapshot` (all services stopped)").add_argument("snapshot")
    command("var-dir", _var_dir, "print the runtime directory (VAR_DIR)")
    command("revision", _revision, "record the checkout's commit in $VAR_DIR/REVISION")
    command("healthy", _healthy, "exit 0 when every service runs REVISION and /healthz is 200"
            ).add_argument("revision")
    gate_command = command("gate", _gate, "wait until /healthz is 200 and a task run of "
                           "REVISION started after --since stored deals; fail at once when "
                           "one of its runs fails")
    gate_command.add_argument("revision")
    gate_command.add_argument("--since", type=float, required=True, help="unix time")
    gate_command.add_argument("--timeout", type=float, default=300, help="seconds (300)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
