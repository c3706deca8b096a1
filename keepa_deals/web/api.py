"""JSON API: /api/status, /api/deals, /api/deal-count, and /healthz (200 only while deals flow)."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from keepa_deals import db
from keepa_deals.health import one_line
from keepa_deals.web.deal_query import DealQuery
from keepa_deals.web.deals import deal_page
from keepa_deals.web.sources import SOURCE_ERRORS, Sources
from keepa_deals.web.status import current_health, overview_status

bp = Blueprint("api", __name__)


def sources() -> Sources:
    return current_app.extensions["keepa_sources"]


@bp.get("/api/status")
def status():
    """Everything the overview shows."""
    return jsonify(overview_status(sources()))


@bp.get("/api/deals")
def deals():
    """One page of deals with the same parameters as /deals."""
    query = DealQuery.parse(request.args)
    try:
        page = deal_page(query, sources())
    except SOURCE_ERRORS as exc:
        return jsonify(error=f"database unavailable: {one_line(exc)}"), 503
    return jsonify(query=query.args(), **page)


@bp.get("/api/deal-count")
def deal_count():
    """The deal count (db.deal_count: every row of the deals table)."""
    try:
        count = db.deal_count(sources().db())
    except SOURCE_ERRORS as exc:
        return jsonify(error=f"database unavailable: {one_line(exc)}"), 503
    return jsonify(deal_count=count, generated_at=time.time())


@bp.get("/healthz")
def healthz():
    """200 while deals are flowing (see health.overall), else 503 with the reason."""
    health = current_health(sources())
    return jsonify(ok=health.ok, reason=health.reason), 200 if health.ok else 503
