"""Where operations keep their runtime files, all under VAR_DIR (never committed, never wiped).

  run/<name>.pid, run/<name>.cmdline                       a service process
  run/<name>.supervisor.pid, run/<name>.supervisor.cmdline its supervisor (or the runner)
  run/<name>.failed                                        why its supervisor gave up
  run/ops.lock                                             one start/stop at a time
  log/<name>.log (+ .1 … .5)                               a service's output, rotated
  log/deploy.log                                           deploys and rollbacks
  REVISION                                                 the code revision last started
"""

from __future__ import annotations

from pathlib import Path

from keepa_deals.config import Settings
from keepa_deals.ops.pidfile import PidFile


def run_dir(settings: Settings) -> Path:
    return settings.var_dir / "run"


def log_dir(settings: Settings) -> Path:
    return settings.var_dir / "log"


def revision_file(settings: Settings) -> Path:
    return settings.var_dir / "REVISION"


def service_pidfile(settings: Settings, name: str) -> PidFile:
    return PidFile(run_dir(settings), name)


def supervisor_pidfile(settings: Settings, name: str) -> PidFile:
    return PidFile(run_dir(settings), f"{name}.supervisor")


def failed_marker(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.failed"


def ops_lock(settings: Settings) -> Path:
    return run_dir(settings) / "ops.lock"
