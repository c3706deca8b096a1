"""The long-running services of the system, how each is started and how it shows it is ready.

Order (start order; stop goes in reverse): the keeper of the private Redis (only when REDIS_URL
is unset: it restarts a crashed private redis-server), the Keepa simulator (only when
KEEPA_API_KEY is unset and KEEPA_API_URL points at the local simulator port), the Celery worker,
the Celery beat and the dashboard. Every service runs with the same interpreter as the caller
(the project's virtualenv) from the project root, and with REDIS_URL fixed to the one Redis the
system uses.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import redis
import requests

from keepa_deals import heartbeats
from keepa_deals.config import Settings
from keepa_deals.redis_server import (
    RedisUnavailable,
    check,
    connect,
    ensure_redis,
    private_redis,
)

CELERY_APP = "keepa_deals.celery_app"
SERVICE_NAMES = ("redis", "simulator", "worker", "beat", "dashboard")  # every one there can be
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Service:
    """One service: its command line, and `ready(pid)` telling whether that process serves."""

    name: str
    argv: tuple[str, ...]
    ready: Callable[[int], bool] = field(compare=False, repr=False)
    where: str = ""  # what an operator wants to know once it runs (e.g. the dashboard URL)
    port: tuple[str, int] | None = None  # (variable, port) it listens on, at 127.0.0.1


def busy_ports(wanted: list[Service]) -> list[str]:
    """What already listens where these services want to listen (another copy, another app):
    a probe would mistake it for our service, so starting must stop there."""
    busy = []
    for service in wanted:
        if service.port and not _can_bind(service.port[1]):
            variable, port = service.port
            busy.append(f"port {port} ({variable}) for the {service.name} is already in use "
                        "by another process: stop it or set another port")
    return busy


def _can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def system_redis(settings: Settings) -> tuple[str, bool]:
    """(url, started): REDIS_URL when configured, else the private server (started if needed).

    A configured REDIS_URL that does not answer is an error, never a reason to switch to
    another server (a worker on a different Redis would see none of the locks and tokens).
    """
    if settings.redis_url:
        check(settings.redis_url)  # RedisRefused / RedisUnavailable naming the fix
        return settings.redis_url, False
    try:
        return ensure_redis(settings, start=False)[0], False
    except RedisUnavailable:
        return ensure_redis(settings)[0], True


def environment(redis_url: str) -> dict[str, str]:
    """The environment of every service: ours, with the system's Redis and unbuffered output."""
    return {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


def local_simulator_url(settings: Settings) -> str | None:
    """The URL of the simulator this project must run itself, or None (real Keepa, or a
    simulator somebody else runs at the configured KEEPA_API_URL)."""
    url = f"http://127.0.0.1:{settings.keepa_sim_port}"
    return url if settings.uses_simulator and settings.keepa_api_url == url else None


def dashboard_url(settings: Settings) -> str:
    host = settings.dashboard_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{settings.dashboard_port}/"


def services(settings: Settings, redis_url: str, *, python: str | None = None,
             simulator_args: tuple[str, ...] = (),
             private_redis_kept: bool | None = None) -> list[Service]:
    """The services to run for `settings`, in start order. The Redis keeper is among them when
    `private_redis_kept` (default: REDIS_URL unset, so the private server is the system's)."""
    python = python or sys.executable
    quiet = ("--quiet",) if settings.log_format == "json" else ()  # no banner: JSON lines only
    celery = (python, "-m", "celery", "-A", CELERY_APP, *quiet)
    client = _client_factory(redis_url)
    found = []
    if not settings.redis_url if private_redis_kept is None else private_redis_kept:
        server = private_redis(settings)
        found.append(Service(
            "redis", (python, "-m", "keepa_deals.ops.redis_keeper"),
            lambda _pid: server.is_running(),
            f"private Redis under {server.data_dir} (restarted if it dies)"))
    simulator = local_simulator_url(settings)
    if simulator:
        found.append(Service(
            "simulator",
            (python, "-m", "keepa_sim", "--host", "127.0.0.1",
             "--port", str(settings.keepa_sim_port),
             "--minute-ms", str(settings.refill_period_ms), *simulator_args),
            lambda _pid: http_status(simulator + "/_sim/state") == 200,
            f"Keepa simulator at {simulator} (one token minute = {settings.refill_period_ms} ms)",
            ("KEEPA_SIM_PORT", settings.keepa_sim_port)))
    found.append(Service(
        "worker",
        (*celery, "worker", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
         "--without-heartbeat"),
        lambda pid: any(w.get("pid") == pid for w in _quietly(heartbeats.read_workers, client, [])),
        "Celery worker"))
    found.append(Service(
        "beat",
        (*celery, "beat", "--loglevel", "INFO"),
        lambda pid: (_quietly(heartbeats.read_beat, client, None) or {}).get("pid") == pid,
        "Celery beat"))
    dashboard = dashboard_url(settings)
    found.append(Service(
        "dashboard",
        (python, "-m", "keepa_deals.dashboard"),
        lambda _pid: http_status(dashboard + "healthz") is not None,
        f"dashboard at {dashboard}", ("DASHBOARD_PORT", settings.dashboard_port)))
    return found


def _client_factory(redis_url: str) -> Callable[[], redis.Redis]:
    return cache(lambda: connect(redis_url, socket_timeout=_PROBE_TIMEOUT_S))


def _quietly(read, client: Callable[[], redis.Redis], default):
    """read(client), or `default` while Redis does not answer (a probe never raises)."""
    try:
        return read(client())
    except (redis.RedisError, OSError):
        return default


def http_status(url: str) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        return requests.get(url, timeout=_PROBE_TIMEOUT_S).status_code
    except requests.RequestException:
        return None
