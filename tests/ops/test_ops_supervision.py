"""Supervision building blocks with real processes: restart with back-off, giving up, stopping
TERM-then-KILL, exact pidfile identity, bounded logs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from support import wait_until

from keepa_deals.ops import processes
from keepa_deals.ops.logsink import MAX_LINE_BYTES, RotatingFileSink, pump
from keepa_deals.ops.pidfile import PidFile, encode_argv
from keepa_deals.ops.supervisor import RestartPolicy, State, Supervisor
from keepa_deals.processes import process_alive

pytestmark = pytest.mark.timeout(60)

FAST = RestartPolicy(first_delay_s=0.1, max_delay_s=1.0, max_crashes=3, stable_after_s=30,
                     patience_s=0)


class Recorder:
    def __init__(self):
        self.lines: list[str] = []
        self.events: list[tuple[str, bool]] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def announce(self, message: str, loud: bool) -> None:
        self.events.append((message, loud))


def drive(supervisor: Supervisor, until, timeout: float):
    return wait_until(lambda: until(supervisor.step()), timeout, f"supervisor state {until}", 0.02)


def test_a_crashing_child_is_restarted_with_backoff_then_given_up_loudly(tmp_path):
    recorder = Recorder()
    argv = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
    pidfile = PidFile(tmp_path, "crasher")
    supervisor = Supervisor("crasher", argv, sink=recorder, announce=recorder.announce,
                            policy=FAST, pidfile=pidfile)
    began = time.monotonic()
    supervisor.start()
    drive(supervisor, lambda state: state is State.GAVE_UP, 20)
    supervisor.finish()

    assert time.monotonic() - began >= 0.1 + 0.2, "restarts must wait 0.1s, then 0.2s"
    assert recorder.lines.count("boom") == 3, "three starts, then no more"
    loud = [message for message, is_loud in recorder.events if is_loud]
    assert "restarting in 0.1s" in loud[0] and "exited with code 3" in loud[0]
    assert "restarting in 0.2s" in loud[1]
    assert "giving up" in loud[2] and "3 times in a row" in loud[2]
    assert "giving up" in supervisor.reason
    assert not pidfile.pid_path.exists(), "a dead child's pidfile must be removed"


def test_giving_up_waits_until_the_streak_lasted_the_patience_window():
    """A killed beat's lease blocks the next beat for one TTL: the supervisor must outlast it."""
    recorder = Recorder()
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.1, max_crashes=2,
                           stable_after_s=30, patience_s=1.0)
    supervisor = Supervisor("blocked", [sys.executable, "-c", "raise SystemExit(1)"],
                            sink=recorder, announce=recorder.announce, policy=policy)
    began = time.monotonic()
    supervisor.start()
    drive(supervisor, lambda state: state is State.GAVE_UP, 20)
    assert time.monotonic() - began >= 1.0
    assert supervisor.crashes > policy.max_crashes


def test_a_child_that_ran_long_enough_starts_a_fresh_crash_count(tmp_path):
    recorder = Recorder()
    argv = [sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(1)"]
    policy = RestartPolicy(first_delay_s=0.05, max_crashes=2, stable_after_s=0.2, patience_s=0)
    supervisor = Supervisor("flaky", argv, sink=recorder, announce=recorder.announce,
                            policy=policy)
    supervisor.start()
    wait_until(lambda: supervisor.step() is State.GAVE_UP or len(recorder.events) >= 8, 20,
               "four crashes")
    assert supervisor.state is not State.GAVE_UP, "crashes after a stable run must not add up"
    assert supervisor.crashes == 1
    supervisor.stop_target()
    supervisor.finish()


def test_stop_kills_a_process_group_that_ignores_term(tmp_path):
    recorder = Recorder()
    ignores_term = ("import signal, subprocess, sys, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                    "print('up', flush=True)\n"
                    "time.sleep(60)\n")
    supervisor = Supervisor("stubborn", [sys.executable, "-c", ignores_term], sink=recorder,
                            announce=recorder.announce, policy=FAST)
    supervisor.start()
    wait_until(lambda: "up" in recorder.lines, 10, "the child to start")
    target = supervisor.stop_target()
    grandchildren = [p for p in processes.group_members(target.pid) if p != target.pid]
    assert grandchildren, "the child's own child must be in its process group"
    reports: list[str] = []
    began = time.monotonic()
    assert processes.stop([target], timeout_s=0.5, report=reports.append)
    supervisor.finish()
    assert time.monotonic() - began < 5
    assert any("sending KILL" in line for line in reports)
    assert not any(process_alive(pid) for pid in [target.pid, *grandchildren])
    assert supervisor.step() is State.STOPPED, "a stopped service is not restarted"


def test_a_well_behaved_child_stops_on_term_without_kill():
    recorder = Recorder()
    supervisor = Supervisor("polite", ["sleep", "60"], sink=recorder,
                            announce=recorder.announce, policy=FAST)
    supervisor.start()
    reports: list[str] = []
    assert processes.stop([supervisor.stop_target()], timeout_s=10, report=reports.append)
    supervisor.finish()
    assert reports and "stopped" in reports[0] and not any("KILL" in r for r in reports)


def test_pidfile_counts_only_the_exact_command_line(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("")
    worker = subprocess.Popen(["sleep", "60"])
    tail = subprocess.Popen(["tail", "-f", str(log)])
    zombie = subprocess.Popen(["true"])
    try:
        pidfile = PidFile(tmp_path, "worker")
        pidfile.write(worker.pid, encode_argv(["sleep", "60"]))
        assert pidfile.live_pid() == worker.pid

        pidfile.write(tail.pid, encode_argv(["sleep", "60"]))  # e.g. a reused pid
        assert pidfile.live_pid() is None, "`tail -f worker.log` must not pass for the worker"

        wait_until(lambda: not process_alive(zombie.pid), 5, "the zombie to exit")
        pidfile.write(zombie.pid, encode_argv(["true"]))
        assert pidfile.live_pid() is None, "a zombie is not a running process"

        pidfile.write(worker.pid, encode_argv(["sleep", "600"]))
        assert pidfile.live_pid() is None, "a different command line is another process"
    finally:
        for process in (worker, tail, zombie):
            process.kill()
            process.wait()


def test_rotated_log_stays_within_its_size_cap(tmp_path):
    sink = RotatingFileSink(tmp_path / "worker.log", max_bytes=10_000, backups=2)
    for index in range(2_000):
        sink.write(f"line {index:05d} " + "x" * 90)
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["worker.log", "worker.log.1", "worker.log.2"]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 3 * 10_000
    assert "line 01999" in (tmp_path / "worker.log").read_text(), "the newest lines are kept"


def test_pump_splits_an_endless_line_into_bounded_pieces():
    recorder = Recorder()
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stdout.write('y' * {3 * MAX_LINE_BYTES})"],
        stdout=subprocess.PIPE)
    pump(child.stdout, recorder).join(timeout=10)
    child.wait()
    assert len(recorder.lines) == 3
    assert all(len(line) <= MAX_LINE_BYTES for line in recorder.lines)


def test_stopping_a_process_that_vanished_meanwhile_is_not_an_error():
    child = subprocess.Popen(["true"])
    child.wait()
    reports: list[str] = []
    began = time.monotonic()
    assert processes.stop([processes.StopTarget("gone", child.pid, group=True)], 5,
                          reports.append)
    assert time.monotonic() - began < 1 and "stopped" in reports[0]
