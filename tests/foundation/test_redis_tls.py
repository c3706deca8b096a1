"""Redis with a password and TLS (rediss://): the settings, every client, the error messages.

A real redis-server with `requirepass` and TLS only (tests/tls_redis.py: certificates made
here with the openssl CLI). Proves: REDIS_TLS_* are folded into the URL that redis-py and kombu
read; the token bucket and a lease lock work over it; the Celery broker speaks verified TLS
even to a bare rediss:// URL; each misconfiguration (no or a wrong password, an untrusted CA,
a name the certificate does not carry, a plain client on the TLS port, a client certificate
wanted) is refused in one line naming the fix, never with the password; the CLI and the
Diagnostics scripts report it that way and never fall back to a private server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from kombu.utils.url import parse_url as kombu_parse_url
from redis.connection import parse_url as redis_parse_url
from tls_redis import ENCODED_PASSWORD, PASSWORD, TlsRedis

from keepa_deals.config import ConfigError, load_settings, redact_url
from keepa_deals.constants import PRIORITY_UPSERTER, TASK_UPSERT
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.locks import LeaseLock
from keepa_deals.redis_server import (
    RedisRefused,
    RedisUnavailable,
    check,
    connect,
    explain,
    tls_options,
)
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(120)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRETS = (PASSWORD, ENCODED_PASSWORD)
WRONG_PASSWORD = "Wrong-Pw-77"
# In a process of its own: importing keepa_deals.celery_app builds the app from the environment.
_BROKER_PROBE = """
import sys, uuid
from keepa_deals.celery_app import app, make_celery
broker = make_celery(app.pipeline_settings, broker_url=sys.argv[1], include=())
with broker.connection_for_write() as connection:
    connection.ensure_connection(max_retries=1)
    with connection.SimpleQueue(f"tls-probe-{uuid.uuid4().hex}") as queue:
        queue.put({"over": "tls"})
        print(queue.get(timeout=10).payload["over"])
"""
_PROJECT_VARIABLES = ("KEEPA_API_KEY", "KEEPA_API_URL", "REDIS_URL", "REDIS_TLS_CA_FILE",
                      "REDIS_TLS_CERT_REQS", "VAR_DIR", "DATABASE_PATH", "DATABASE_URL",
                      "KEEPA_QUERY_PATH", "DASHBOARD_PASSWORD")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> TlsRedis:
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mutual_tls_redis(tmp_path_factory) -> TlsRedis:
    """A server that also wants a client certificate (Redis's default tls-auth-clients yes)."""
    server = TlsRedis(tmp_path_factory.mktemp("mtls-redis"), client_certificates=True).start()
    yield server
    server.stop()


def settings_of(tmp_path, **env):
    return load_settings({"VAR_DIR": str(tmp_path / "var"), **env}, dotenv_path=os.devnull)


def assert_no_secret(text: str, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text, f"a password is shown: {text.replace(secret, '<HERE>')[:500]}"


# --------------------------------------------------------------------------- settings

def test_tls_settings_are_folded_into_the_url_that_redis_py_and_kombu_read(tmp_path):
    ca_file = tmp_path / "my CA+1.pem"  # a space and a plus: percent-encoded in the query
    ca_file.write_text("PEM")
    base = f"rediss://:{ENCODED_PASSWORD}@redis.example:6380/0"

    settings = settings_of(tmp_path, REDIS_URL=base, REDIS_TLS_CA_FILE=str(ca_file),
                           REDIS_TLS_CERT_REQS="required")

    assert settings.redis_url.startswith(base + "?")
    for parsed in (redis_parse_url(settings.redis_url), kombu_parse_url(settings.redis_url)):
        tls = parsed.get("ssl", parsed)
        assert tls["ssl_ca_certs"] == str(ca_file)
        assert parsed["password"] == PASSWORD
    assert redis_parse_url(settings.redis_url)["ssl_cert_reqs"] == "required"
    assert_no_secret(redact_url(settings.redis_url))
    assert_no_secret(repr(settings))
    # a child process inherits the folded URL beside the same settings: they agree
    again = settings_of(tmp_path, REDIS_URL=settings.redis_url,
                        REDIS_TLS_CA_FILE=str(ca_file), REDIS_TLS_CERT_REQS="required")
    assert again.redis_url == settings.redis_url
    assert settings_of(tmp_path, REDIS_URL=base).redis_url == base


@pytest.mark.parametrize(("env", "expected"), [
    ({"REDIS_URL": "redis://:pw-123456@h:6379/0", "REDIS_TLS_CA_FILE": "{ca}"},
     "REDIS_TLS_CA_FILE: only for a rediss:// REDIS_URL (TLS); REDIS_URL is redis://"),
    ({"REDIS_TLS_CERT_REQS": "none"},
     "REDIS_TLS_CERT_REQS: only for a rediss:// REDIS_URL (TLS); REDIS_URL is unset"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
     "REDIS_TLS_CA_FILE: no readable file at /nonexistent/ca.pem"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0", "REDIS_TLS_CERT_REQS": "maybe"},
     "REDIS_TLS_CERT_REQS: expected one of required, none, got 'maybe'"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0?ssl_ca_certs=/etc/hostname",
      "REDIS_TLS_CA_FILE": "{ca}"},
     "REDIS_TLS_CA_FILE: REDIS_URL sets ssl_ca_certs='/etc/hostname' too; set it in one place"),
    ({"REDIS_URL": "rediss://h:6380/0?password=pw-123456"},
     "REDIS_URL: password must not be in the query"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0?ssl_password=pw-123456"},
     "REDIS_URL: ssl_password must not be in the query"),
    ({"REDIS_URL": "redis://:pw-123456@h:6379/0?ssl_cert_reqs=required"},
     "REDIS_URL: ssl_cert_reqs needs the rediss:// scheme"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0?ssl_cert_reqs=CERT_NONE"},
     "REDIS_URL: ssl_cert_reqs must be one of required, optional, none, got 'CERT_NONE'"),
    ({"REDIS_URL": "rediss://:pw-123456@h:6380/0?ssl_certfile=/nonexistent/client.pem"},
     "REDIS_URL: ssl_certfile names no readable file: /nonexistent/client.pem"),
])
def test_bad_tls_settings_are_one_line_naming_the_variable(tmp_path, env, expected):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("PEM")
    env = {k: v.replace("{ca}", str(ca_file)) for k, v in env.items()}

    with pytest.raises(ConfigError) as raised:
        settings_of(tmp_path, **env)

    message = str(raised.value)
    assert message.startswith(expected), message
    assert "\n" not in message and "pw-123456" not in message


def test_tls_options_verify_the_server_unless_the_url_says_otherwise():
    assert tls_options("redis://127.0.0.1:6379/0") is None
    assert tls_options("unix:///run/redis.sock") is None
    assert tls_options("rediss://:pw@h:6380/0") == {"ssl_cert_reqs": "required"}
    assert tls_options("rediss://h:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none") == {
        "ssl_cert_reqs": "none", "ssl_ca_certs": "/ca.pem"}


# --------------------------------------------------------------------------- clients over TLS

def test_token_bucket_and_lease_lock_work_over_rediss_with_a_password(tls_redis, tmp_path):
    settings = settings_of(tmp_path, REDIS_URL=tls_redis.url(ca=False),
                           REDIS_TLS_CA_FILE=str(tls_redis.ca_file))
    client = connect(settings.redis_url)
    assert client.connection_pool.connection_class is redis.SSLConnection
    name = f"tls-{uuid.uuid4().hex[:8]}"

    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    bucket = TokenBucket(client, refill_period_ms=60_000, name=name)
    reservation = bucket.reserve(
        5, priority=PRIORITY_UPSERTER, task=TASK_UPSERT,
        sync=lambda: TokenEnvelope(timestamp_ms=now_ms, tokens_left=100, refill_in_ms=30_000,
                                   refill_rate=20, tokens_consumed=0))
    bucket.reconcile(reservation, TokenEnvelope(timestamp_ms=now_ms + 1, tokens_left=95,
                                                refill_in_ms=29_999, refill_rate=20,
                                                tokens_consumed=5))
    snapshot = bucket.snapshot()
    assert (snapshot["balance"], snapshot["reserved"]) == (95, 0)

    ttl_s = 0.6
    with LeaseLock(client, name, ttl_s=ttl_s, task_id="tls-test") as lease:
        time.sleep(3 * ttl_s)  # renewed over TLS by its heartbeat thread, never lost
        assert not lease.lost.is_set()
        assert lease.owner()["pid"] == os.getpid()
        assert not LeaseLock(connect(settings.redis_url), name, ttl_s=ttl_s).acquire()
    assert lease.owner() is None, "released by its owner"
    client.delete(*client.keys(f"kd:*{name}*"))


def test_the_broker_speaks_verified_tls_even_to_a_bare_rediss_url(tls_redis, tmp_path):
    """A rediss:// URL without TLS parameters (e.g. given to make_celery directly): kombu, with
    the transport named explicitly, would talk plain TCP; broker_use_ssl makes it TLS with
    the server verified against the default trust store (SSL_CERT_FILE: the test CA)."""
    bare = tls_redis.url(ca=False)
    trusted = _run(tmp_path, tls_redis.url(), "-c", _BROKER_PROBE, bare,
                   SSL_CERT_FILE=str(tls_redis.ca_file))
    untrusted = _run(tmp_path, tls_redis.url(), "-c", _BROKER_PROBE, bare)

    assert trusted.returncode == 0 and trusted.stdout.strip() == "tls", trusted.stderr[-2000:]
    assert untrusted.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, "the server must be verified"
    assert_no_secret(trusted.stdout + trusted.stderr + untrusted.stdout + untrusted.stderr)


# --------------------------------------------------------------------------- refusals

def _misconfigured(case: str, tls_redis: TlsRedis, mutual_tls_redis: TlsRedis) -> str:
    return {
        "no password": tls_redis.url(password=None),
        "wrong password": tls_redis.url(password=WRONG_PASSWORD),
        "untrusted CA": tls_redis.url(ca=False),
        "name not in the certificate": tls_redis.url(host="127.0.0.2"),
        "plain redis:// on the TLS port": tls_redis.url(scheme="redis"),
        "client certificate wanted": mutual_tls_redis.url(),
    }[case]


@pytest.mark.parametrize(("case", "fix"), [
    ("no password", "the server requires a password: put it in REDIS_URL before the host"),
    ("wrong password", "the server refused the password in REDIS_URL"),
    ("untrusted CA", "set REDIS_TLS_CA_FILE to the CA certificate (PEM) that signed it"),
    ("name not in the certificate", "the server's certificate does not name this host"),
    ("plain redis:// on the TLS port", "if that is its tls-port, use rediss://"),
    ("client certificate wanted", "set tls-auth-clients no, or add ssl_certfile and "
                                  "ssl_keyfile to REDIS_URL's query"),
])
def test_each_misconfiguration_is_refused_naming_the_fix_without_the_password(
        tls_redis, mutual_tls_redis, case, fix):
    url = _misconfigured(case, tls_redis, mutual_tls_redis)

    with pytest.raises(RedisRefused) as raised:
        check(url)

    message = str(raised.value)
    assert message.startswith(f"Redis at {redact_url(url)}: ") and fix in message, message
    assert "\n" not in message
    assert_no_secret(message, WRONG_PASSWORD)


def test_an_error_quoting_the_password_is_shown_without_it_in_either_spelling():
    url = f"rediss://:{ENCODED_PASSWORD}@redis.example:6380/0"
    message = explain(redis.ConnectionError(f"echo {PASSWORD} / {ENCODED_PASSWORD}"), url)
    assert message.startswith("Redis at rediss://:***@redis.example:6380/0: ConnectionError: ")
    assert_no_secret(message)


def test_a_client_certificate_in_the_url_query_is_accepted(mutual_tls_redis):
    files = mutual_tls_redis.certificates
    url = (mutual_tls_redis.url() + f"&ssl_certfile={files['client_cert']}"
           f"&ssl_keyfile={files['client_key']}")
    check(url)
    assert connect(url).ping()


def test_rediss_to_a_plain_port_is_unreachable_naming_the_tls_port(redis_server):
    with pytest.raises(RedisUnavailable) as raised:
        check(redis_server.url.replace("redis://", "rediss://"), timeout_s=0.5)
    assert not isinstance(raised.value, RedisRefused)
    assert "rediss:// needs the server's tls-port" in str(raised.value)


# --------------------------------------------------------------------------- CLI, Diagnostics

def _run(tmp_path, redis_url: str, *command: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in _PROJECT_VARIABLES}
    environment.update(REDIS_URL=redis_url, VAR_DIR=str(tmp_path / "var"),
                       DATABASE_PATH=str(tmp_path / "deals.db"), **env)
    return subprocess.run([sys.executable, *command], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_wrong_password_is_one_line_naming_the_fix_and_no_private_server_starts(
        tls_redis, tmp_path):
    url = tls_redis.url(password=WRONG_PASSWORD)
    started = _run(tmp_path, url, "-m", "keepa_deals.redis_server", "start")
    locks = _run(tmp_path, url, "Diagnostics/force_clear_locks.py")
    report = _run(tmp_path, url, "Diagnostics/health_report.py")

    assert started.returncode == 2
    assert not (tmp_path / "var" / "redis" / "redis.pid").exists(), \
        "a refused REDIS_URL must not be replaced by a private server"
    assert locks.returncode == 3
    for result in (started, locks):
        assert result.stdout == ""
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "the server refused the password in REDIS_URL" in result.stderr
    assert report.returncode == 1
    assert report.stdout.startswith("pipeline: NOT HEALTHY — Redis unreachable")
    for result in (started, locks, report):
        assert "Traceback" not in result.stdout + result.stderr
        assert_no_secret(result.stdout + result.stderr, WRONG_PASSWORD)


def test_cli_and_diagnostics_work_over_tls_and_never_print_the_password(tls_redis, tmp_path):
    env = {"REDIS_TLS_CA_FILE": str(tls_redis.ca_file)}
    url = tls_redis.url(ca=False)
    status = _run(tmp_path, url, "-m", "keepa_deals.redis_server", "status", **env)
    shown = _run(tmp_path, url, "-m", "keepa_deals.redis_server", "url", **env)
    locks = _run(tmp_path, url, "Diagnostics/force_clear_locks.py", "--dry-run", **env)
    report = _run(tmp_path, url, "Diagnostics/health_report.py", "--json", **env)

    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == f"redis: answering at {redact_url(tls_redis.url())}"
    assert shown.stdout.strip() == redact_url(tls_redis.url())
    assert locks.returncode == 0, locks.stderr
    assert locks.stdout.startswith("LOCK ")
    assert json.loads(report.stdout)["redis_error"] is None, report.stdout[-2000:]
    for result in (status, shown, locks, report):
        assert_no_secret(result.stdout + result.stderr)
