"""Every log under VAR_DIR stays bounded: rotated by size, the oldest dropped — redis-server's
log (it reopens the file for each line, so the keeper can rotate it under it), the supervisors'
error files (rotated at each start) and the deploy log (rotated by deploy_update.sh)."""

from __future__ import annotations

import pytest
from support import wait_until

from keepa_deals.ops import redis_keeper
from keepa_deals.ops.logsink import rotate_when_larger
from keepa_deals.ops.redis_keeper import RedisKeeper
from keepa_deals.redis_server import PrivateRedis, connect, free_port

pytestmark = pytest.mark.timeout(60)


def test_writing_far_past_the_limit_keeps_the_files_bounded(tmp_path):
    log = tmp_path / "service.err"
    line = b"x" * 99 + b"\n"
    for _ in range(500):  # 50 kB through a 2 kB cap with 2 backups
        with log.open("ab") as handle:
            handle.write(line * 3)
        rotate_when_larger(log, 2_000, backups=2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["service.err", "service.err.1", "service.err.2"]
    assert all((tmp_path / name).stat().st_size <= 2_000 + 300 for name in files)
    assert not rotate_when_larger(tmp_path / "missing.log", 10), "no file: nothing to do"


def test_the_keeper_rotates_redis_log_under_the_running_server(tmp_path, monkeypatch):
    monkeypatch.setattr(redis_keeper, "REDIS_LOG_MAX_BYTES", 4_000)
    server = PrivateRedis(tmp_path / "redis", port=free_port())
    server.start()
    try:
        log = server.data_dir / "redis.log"
        with log.open("a") as handle:
            handle.write("filler line of an old log\n" * 400)
        RedisKeeper(server, lambda *_: None).step()
        assert (server.data_dir / "redis.log.1").stat().st_size > 4_000
        assert not log.exists() or log.stat().st_size < 4_000
        connect(server.url).bgsave()  # redis-server logs it into a new redis.log
        wait_until(lambda: log.exists() and "Background saving" in log.read_text(), 10,
                   "redis-server writing to the new log file")
    finally:
        server.stop(save=False)
