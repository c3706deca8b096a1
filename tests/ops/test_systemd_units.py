"""systemd units: rendered for this checkout, accepted by `systemd-analyze verify`, with the
restart, give-up, stop and pre-start policies the issue asks for; and start/stop/status going
through systemctl when the units are installed (systemctl itself is a stand-in here: systemd
is not this container's init system)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from keepa_deals.config import load_settings, time_limits
from keepa_deals.ops import control, systemd

pytestmark = pytest.mark.timeout(60)


def settings_with(tmp_path, **env):
    return load_settings({"VAR_DIR": str(tmp_path / "var"), **env}, dotenv_path=os.devnull)


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    settings = settings_with(tmp_path)
    paths = systemd.install(settings, python=sys.executable, unit_dir=tmp_path / "units")
    names = sorted(p.name for p in paths)
    assert names == sorted(["keepa-deals.target", *(systemd.unit_name(n) for n in (
        "redis", "simulator", "worker", "beat", "dashboard"))])
    checked = systemd.verify(paths)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    worker = (tmp_path / "units" / systemd.unit_name("worker")).read_text()
    for line in ("Restart=on-failure", "KillMode=mixed", "StartLimitBurst=5",
                 f"ExecStartPre={sys.executable} -m keepa_deals.ops preflight",
                 f"ExecStartPre={sys.executable} -m keepa_deals.ops migrate",
                 "Requires=keepa-deals-redis.service", "PartOf=keepa-deals.target"):
        assert line in worker.splitlines(), line
    stop_s = int(next(line for line in worker.splitlines()
                      if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert stop_s > time_limits(settings)[1] > settings.task_slice_s


def test_verify_rejects_a_unit_whose_program_is_missing(tmp_path):
    paths = systemd.install(settings_with(tmp_path), python="/nonexistent/python",
                            unit_dir=tmp_path / "units")
    assert systemd.verify(paths).returncode != 0


def test_a_configured_redis_gets_no_unit_and_its_password_stays_in_dotenv(tmp_path):
    settings = settings_with(tmp_path, REDIS_URL="redis://:s3cret@10.0.0.5:6379/0",
                             KEEPA_API_KEY="Ab1" + "c" * 61)
    units = systemd.render(settings, python=sys.executable)
    assert systemd.unit_name("redis") not in units
    assert systemd.unit_name("simulator") not in units, "a real key: no simulator"
    assert not [name for name, text in units.items() if "s3cret" in text]


def test_start_stop_and_status_go_through_systemctl_when_the_units_are_installed(
        tmp_path, monkeypatch):
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n"
                    "case \"$1\" in show) echo 4242 ;; is-failed) echo active ;; esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    (tmp_path / "run-systemd").mkdir()
    monkeypatch.setattr(systemd, "SYSTEMD_RUNNING", tmp_path / "run-systemd")
    monkeypatch.setattr(systemd, "UNIT_DIR", tmp_path / "units")
    settings = settings_with(tmp_path)
    assert not systemd.in_charge(), "not installed yet"
    systemd.install(settings, python=sys.executable, unit_dir=tmp_path / "units")
    assert systemd.in_charge()

    said = []
    control.start(settings, timeout_s=5, report=said.append)
    worker = next(s for s in control.status(settings) if s.name == "worker")
    assert (worker.pid, worker.running, worker.gave_up) == (4242, True, None)
    control.stop(settings, timeout_s=5, report=said.append)
    lines = Path(calls).read_text().splitlines()
    assert lines[0] == "start keepa-deals.target"
    assert "stop keepa-deals.target" in lines
    assert "show --property MainPID --value keepa-deals-worker.service" in lines
