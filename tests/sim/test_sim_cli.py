"""The `python -m keepa_sim` command line and the in-process SimulatorServer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sim_helpers import run_sim

from keepa_sim import DEFAULT_API_KEY, SimulatorServer

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=10)


def test_help_documents_every_setting():
    result = subprocess.run([sys.executable, "-m", "keepa_sim", "--help"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=30, check=True)
    for name in ("--config", "--seed", "--minute-ms", "--refill-rate", "--no-control",
                 "clock.mode", "tokens.charge_at", "schedule", "phantom_consumers",
                 "latency.per_endpoint", "faults.http_5xx.codes", "faults.hang.ms",
                 "faults.forced_429.windows", "deals.cache_ttl_s", "deals.string_numbers",
                 "catalogue.n_products", "http.always_gzip", "/_sim/state"):
        assert name in result.stdout


def test_flags_override_the_config_file_and_sigterm_exits_cleanly(tmp_path):
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"seed": 1, "clock": {"minute_ms": 60000}}))
    process, url = run_sim("--config", str(config), "--seed", "9", "--minute-ms", "500",
                           "--refill-rate", "7")
    try:
        state = requests.get(url + "/_sim/state", timeout=5).json()
        assert state["config"]["seed"] == 9
        assert state["config"]["clock"]["mode"] == "scaled"
        envelope = requests.get(url + "/token", params={"key": DEFAULT_API_KEY}, timeout=5).json()
        assert envelope["refillRate"] == 7 and envelope["tokensLeft"] == 420
        assert 0 < envelope["refillIn"] <= 500
    finally:
        assert stop(process) == 0
    assert DEFAULT_API_KEY not in process.stdout.read() + process.stderr.read()


def test_no_control_hides_the_control_api():
    process, url = run_sim("--no-control")
    try:
        hidden = requests.get(url + "/_sim/state", timeout=5)
        assert hidden.status_code == 404
        assert hidden.json()["tokensLeft"] == 0  # a Keepa-style 404 envelope
        assert requests.get(url + "/token", params={"key": DEFAULT_API_KEY},
                            timeout=5).status_code == 200
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize(("content", "complaint"), [
    ('{"tokens": {"charge_at": "never"}}', "tokens.charge_at"),
    ('{"seed": 1,', "not valid JSON"),
    ('{"schedule": [{"at_s": 1, "key": "other", "status": "expired"}]}', "schedule[0].key"),
])
def test_a_bad_config_file_is_a_one_line_error(tmp_path, content, complaint):
    config = tmp_path / "bad.json"
    config.write_text(content)
    result = subprocess.run([sys.executable, "-m", "keepa_sim", "--port", "0", "--config",
                             str(config)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_simulator_server_in_process():
    server = SimulatorServer({"clock": {"mode": "frozen"}}).start()
    try:
        session = requests.Session()  # keep-alive connection, closed by stop()
        assert session.get(server.url + "/token", params={"key": DEFAULT_API_KEY},
                           timeout=5).json()["tokensLeft"] == 1200
    finally:
        server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url + "/token", params={"key": DEFAULT_API_KEY}, timeout=2)
