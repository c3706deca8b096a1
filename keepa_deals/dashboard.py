"""The Flask dashboard: app factory `create_app()`; `python -m keepa_deals.dashboard` serves it.

Pages: / (overview, refreshed in place from /api/status), /deals (table, filters, CSV export),
/deals/<asin>. JSON: /api/status, /api/deals, /api/deal-count, /healthz. The database is opened
read-only; Redis or database outages are shown on the pages, never as a crash.

Safe by default: it binds DASHBOARD_HOST (127.0.0.1); any other address requires
DASHBOARD_PASSWORD (HTTP basic auth) or the app refuses to start. Keepa text is escaped by Jinja
autoescaping and a Content-Security-Policy forbids inline scripts; no answer ever contains the
Keepa key or a password (web/scrubber.py replaces one that slipped into a message).
"""

from __future__ import annotations

import logging
import sys

import redis
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from keepa_deals import logs
from keepa_deals.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from keepa_deals.web import api, auth, deals, formatting, metrics, overview
from keepa_deals.web.auth import UnsafeBindError, check_bind
from keepa_deals.web.deal_query import BadParameter
from keepa_deals.web.scrubber import SecretScrubber
from keepa_deals.web.sources import Sources

SERVER_THREADS = 4
_CSP = ("default-src 'self'; img-src 'self' https: data:; script-src 'self'; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'")
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_app(settings: Settings | None = None, *,
               redis_client: redis.Redis | None = None) -> Flask:
    """The dashboard app. Raises UnsafeBindError for a non-loopback host without a password."""
    settings = settings or load_settings()
    check_bind(settings)
    app = Flask(__name__, template_folder=str(PROJECT_ROOT / "templates"),
                static_folder=str(PROJECT_ROOT / "static"))
    app.config.update(DASHBOARD_PASSWORD=settings.dashboard_password)
    app.extensions["keepa_sources"] = Sources(settings, redis_client)
    app.teardown_appcontext(Sources.close)
    app.jinja_env.filters.update(formatting.FILTERS)
    app.jinja_env.globals.update(formatting.GLOBALS)
    for blueprint in (auth.bp, overview.bp, deals.bp, api.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_security_headers)
    scrubber = SecretScrubber(settings)
    app.extensions["keepa_scrubber"] = scrubber
    app.after_request(scrubber.after_request)
    return app


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _bad_parameter(exc: BadParameter):
    if _wants_json():
        return jsonify(error=str(exc)), 400
    return render_template("error.html", status=400, title="Bad request", message=str(exc)), 400


def _http_error(exc: HTTPException):
    if _wants_json():
        return jsonify(error=exc.description), exc.code
    return render_template("error.html", status=exc.code, title=exc.name,
                           message=exc.description), exc.code


def _security_headers(response):
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def main() -> int:
    """Serve the dashboard with waitress on DASHBOARD_HOST:DASHBOARD_PORT (from the settings)."""
    try:
        settings = load_settings()
        logs.configure(settings, "dashboard")
        app = create_app(settings)
    except (ConfigError, UnsafeBindError) as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    from waitress import serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logs.apply_to(logging.getLogger())
    logging.getLogger(__name__).info(
        "dashboard: serving http://%s:%s/ (database %s)", settings.dashboard_host,
        settings.dashboard_port, settings.database_shown)
    serve(app, host=settings.dashboard_host, port=settings.dashboard_port,
          threads=SERVER_THREADS, ident="keepa-deals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
