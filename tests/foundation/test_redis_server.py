"""The private redis-server: started when none answers, reused when running, data kept on stop."""

import pytest

from keepa_deals.config import load_settings
from keepa_deals.redis_server import answers, connect, ensure_redis, private_redis

pytestmark = pytest.mark.timeout(60)


def test_private_server_is_started_reused_and_keeps_data(tmp_path):
    settings = load_settings(
        {"VAR_DIR": str(tmp_path / "var"), "REDIS_URL": "redis://127.0.0.1:1/0"},
        dotenv_path=tmp_path / "none",
    )
    url, server = ensure_redis(settings)
    try:
        assert server is not None and answers(url)
        assert (tmp_path / "var" / "redis" / "redis.pid").is_file()
        connect(url).set("kd:probe", "kept")
        again, _ = ensure_redis(settings)
        assert again == url, "a running private server must be reused, not duplicated"
        server.stop()
        assert not answers(url)
        url, server = ensure_redis(settings)
        assert connect(url).get("kd:probe") == "kept", "stop must snapshot, start must reload"
    finally:
        private_redis(settings).stop(save=False)


def test_configured_redis_that_answers_is_used_as_is(tmp_path, redis_server):
    settings = load_settings(
        {"VAR_DIR": str(tmp_path / "var"), "REDIS_URL": redis_server.url},
        dotenv_path=tmp_path / "none",
    )
    url, server = ensure_redis(settings)
    assert url == redis_server.url and server is None
