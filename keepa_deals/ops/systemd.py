"""systemd units for a server: the services come back after a reboot, restart after a crash
and are given up after repeated failures — systemd's supervision instead of the pidfile
supervisors (which stay for hosts without systemd).

`render(settings, ...)` returns {file name: text}: one unit per service (the private Redis when
REDIS_URL is unset, the simulator when no Keepa key is set, worker, beat, dashboard) and
keepa-deals.target grouping them. The worker runs the pre-flight (task registration) and the
migrations before it starts. Output goes to journald (bounded by its own limits).
`python -m keepa_deals.ops install-units` writes them and says what to run next.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

from keepa_deals.config import PROJECT_ROOT, Settings, time_limits
from keepa_deals.ops.services import CELERY_APP, local_simulator_url
from keepa_deals.redis_server import free_port, private_redis

TARGET = "keepa-deals.target"
UNIT_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # exists only while systemd is the init system
RESTART_SEC = 2
START_LIMIT_BURST = 5  # crashes within START_LIMIT_INTERVAL_S before systemd gives up
START_LIMIT_INTERVAL_S = 300
STOP_MARGIN_S = 30


def unit_name(service: str) -> str:
    return f"keepa-deals-{service}.service"


def render(settings: Settings, *, python: str, user: str | None = None,
           root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The unit files for `settings`, running `python` (the project's virtualenv) as `user`."""
    user = user or getpass.getuser()
    services: dict[str, tuple[str, list[str]]] = {}  # name -> (ExecStart, extra lines)
    redis_url = None  # a configured REDIS_URL is read from .env by each process, never copied
    if not settings.redis_url:
        server = private_redis(settings)
        port = server.port or free_port()
        redis_url = f"redis://127.0.0.1:{port}/0"
        services["redis"] = (f"{python} -m keepa_deals.redis_server run --port {port}", [])
    simulator = local_simulator_url(settings)
    if simulator:
        services["simulator"] = (
            f"{python} -m keepa_sim --host 127.0.0.1 --port {settings.keepa_sim_port} "
            f"--minute-ms {settings.refill_period_ms}", [])
    celery = f"{python} -m celery -A {CELERY_APP}"
    hard_limit = time_limits(settings)[1]
    services["worker"] = (
        f"{celery} worker --loglevel INFO --without-gossip --without-mingle "
        "--without-heartbeat",
        [f"ExecStartPre={python} -m keepa_deals.ops preflight",
         f"ExecStartPre={python} -m keepa_deals.ops migrate",
         # a TERMed worker finishes its task (warm shutdown): up to the hard time limit
         f"TimeoutStopSec={round(hard_limit + STOP_MARGIN_S)}"])
    services["beat"] = (f"{celery} beat --loglevel INFO", [])
    services["dashboard"] = (f"{python} -m keepa_deals.dashboard", [])
    base = [name for name in ("redis", "simulator") if name in services]
    units = {unit_name(name): _service_unit(name, start, extra, user=user, root=root,
                                            redis_url=redis_url,
                                            after=[] if name in base else base)
             for name, (start, extra) in services.items()}
    units[TARGET] = _target_unit(list(units))
    return units


def install(settings: Settings, *, python: str, user: str | None = None,
            unit_dir: Path = UNIT_DIR) -> list[Path]:
    """Write the units into `unit_dir`; the paths written."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(settings, python=python, user=user).items():
        path = unit_dir / name
        path.write_text(text)
        written.append(path)
    return written


def in_charge() -> bool:
    """Whether systemd runs this host and our units are installed: then start, stop, status
    and the deploy gate go through systemctl instead of the pidfile supervisors."""
    return SYSTEMD_RUNNING.is_dir() and (UNIT_DIR / TARGET).is_file()


def systemctl(*arguments: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *arguments], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def main_pid(service: str) -> int | None:
    """The running process of `service`'s unit (systemctl show MainPID), None when stopped."""
    shown = systemctl("show", "--property", "MainPID", "--value", unit_name(service),
                      timeout_s=30)
    pid = shown.stdout.strip()
    return int(pid) if shown.returncode == 0 and pid.isdigit() and pid != "0" else None


def failed_reason(service: str) -> str | None:
    """Why systemd gave the unit up (state failed), None otherwise."""
    shown = systemctl("is-failed", unit_name(service), timeout_s=30)
    if shown.stdout.strip() != "failed":
        return None
    return (f"systemd gave {unit_name(service)} up after repeated failures: see "
            f"journalctl -u {unit_name(service)}")


def verify(paths: list[Path]) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of the unit files (what the tests run)."""
    if shutil.which("systemd-analyze") is None:
        raise FileNotFoundError("systemd-analyze is missing (Debian package systemd)")
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60, check=False)


def _service_unit(name: str, exec_start: str, extra: list[str], *, user: str, root: Path,
                  redis_url: str | None, after: list[str]) -> str:
    dependencies = " ".join(["network-online.target", *(unit_name(n) for n in after)])
    lines = [
        "[Unit]",
        f"Description=keepa-deals {name}",
        f"PartOf={TARGET}",
        "Wants=network-online.target",
        f"After={dependencies}",
        *(f"Requires={unit_name(n)}" for n in after),
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_S}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"WorkingDirectory={root}",
        *([f"Environment=REDIS_URL={redis_url}"] if redis_url else []),
        "Environment=PYTHONUNBUFFERED=1",
        *extra,
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "KillMode=mixed",
        "",
        "[Install]",
        f"WantedBy={TARGET}",
        "",
    ]
    return "\n".join(lines)


def _target_unit(units: list[str]) -> str:
    return "\n".join([
        "[Unit]",
        "Description=keepa-deals: Keepa deal collector (worker, beat, dashboard, Redis)",
        f"Wants={' '.join(units)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
