"""Safe by default: a loopback bind needs nothing; any other bind needs DASHBOARD_PASSWORD.

With a password set, every page and API answer requires HTTP basic auth (any user name, that
password), except /healthz, which monitors and the deploy gate poll and which shows no data.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, request

from keepa_deals.config import Settings

OPEN_ENDPOINTS = frozenset({"api.healthz", "static"})
_LOOPBACK_NAMES = ("localhost",)

bp = Blueprint("auth", __name__)


class UnsafeBindError(RuntimeError):
    """The dashboard would listen beyond this machine without a password."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Raise UnsafeBindError when DASHBOARD_HOST is not loopback and no password is set."""
    if not is_loopback(settings.dashboard_host) and not settings.dashboard_password:
        raise UnsafeBindError(
            f"DASHBOARD_HOST: {settings.dashboard_host!r} is reachable from other machines; "
            "set DASHBOARD_PASSWORD (HTTP basic auth) or bind 127.0.0.1")


@bp.before_app_request
def require_password():
    """Ask for basic auth when a password is configured (constant-time comparison)."""
    password = current_app.config["DASHBOARD_PASSWORD"]
    if not password or request.endpoint in OPEN_ENDPOINTS:
        return None
    given = request.authorization.password if request.authorization else None
    if given is not None and hmac.compare_digest(given.encode(), password.encode()):
        return None
    return Response("Authentication required.\n", 401,
                    {"WWW-Authenticate": 'Basic realm="keepa-deals", charset="UTF-8"'},
                    mimetype="text/plain")
