"""The runner's RedisKeeper: a SIGKILLed private redis-server comes back on its port with its
data (append-only file, fsync every second), reported once when down and once when back."""

from __future__ import annotations

import os
import signal

import pytest
from ops_helpers import in_append_only_file
from support import wait_until

from keepa_deals.ops import redis_keeper
from keepa_deals.ops.redis_keeper import RedisKeeper
from keepa_deals.processes import process_alive
from keepa_deals.redis_server import PrivateRedis, answers, connect, free_port

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path):
    server = PrivateRedis(tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.stop(save=False)


def test_a_killed_private_redis_comes_back_on_its_port_with_its_data(server):
    said: list[tuple[str, bool]] = []
    clock = Clock()
    keeper = RedisKeeper(server, lambda message, loud: said.append((message, loud)), clock=clock)
    keeper.step()
    assert said == [] and not keeper.down, "a running server is left alone"

    connect(server.url).set("kd:probe", "written before the crash")
    wait_until(lambda: in_append_only_file(server.data_dir, b"kd:probe"), 5,
               "the write in the append-only file (fsync every second)")
    os.kill(server.pid(), signal.SIGKILL)
    old_pid = int(server.pidfile.read_text())
    wait_until(lambda: not process_alive(old_pid), 5, "the server to die")

    clock.now += redis_keeper.CHECK_EVERY_S
    keeper.step()
    assert answers(server.url), "restarted on the same port"
    assert server.pid() not in (None, old_pid)
    assert [loud for _, loud in said] == [True, False], said
    assert "down" in said[0][0] and "back" in said[1][0]
    assert connect(server.url).get("kd:probe") == "written before the crash"

    for _ in range(5):  # nothing more to say while it runs
        clock.now += redis_keeper.CHECK_EVERY_S
        keeper.step()
    assert len(said) == 2


def test_checks_are_spaced_and_a_failed_restart_backs_off(server, monkeypatch):
    said: list[str] = []
    clock = Clock()
    keeper = RedisKeeper(server, lambda message, loud: said.append(message), clock=clock)
    server.stop(save=False)
    tries: list[float] = []

    def refuse():
        tries.append(clock.now)
        raise redis_keeper.RedisUnavailable("redis-server failed to start (simulated)")

    monkeypatch.setattr(server, "start", refuse)
    for _ in range(40):  # 40 steps of a quarter second: 10 s
        keeper.step()
        clock.now += 0.25
    assert [t - tries[0] for t in tries] == [0, 2, 6], "back-off 2 s, then 4 s"
    assert len(said) == 2, "one 'down' and one 'restart failed', not one per try"
    assert keeper.down
