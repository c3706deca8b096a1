"""The overview page: deal count, freshness, task verdicts, tokens, locks, backfill, runs."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from keepa_deals.web.status import overview_status

REFRESH_MS = 5000  # app.config["OVERVIEW_REFRESH_MS"] overrides it

bp = Blueprint("overview", __name__)


@bp.get("/")
def index():
    status = overview_status(current_app.extensions["keepa_sources"])
    refresh_ms = current_app.config.get("OVERVIEW_REFRESH_MS", REFRESH_MS)
    return render_template("overview.html", status=status, refresh_ms=refresh_ms)
