"""The control API under /_sim (keepa-api.md §5.7); outside Keepa's namespace, for tests only.

GET  /_sim/state          clock, buckets (by key label), effective config (keys as labels);
                          a bucket's refill_in_ms is wall ms like refillIn, its next_tick_ms
                          and period_ms are simulator ms
POST /_sim/config         merge knobs (same structure as the config file) -> new config
POST /_sim/clock          {freeze: bool, advance_ms: int, set_ms: int} -> clock state
POST /_sim/tokens         {key, tokens, refill_rate, flow_reduction, status} -> the key's bucket
POST /_sim/reset          {seed?} -> buckets, caches, counters and the log start afresh
GET  /_sim/requests       ?since_id=N -> {"requests": [...]} (keys as labels)
GET|POST /_sim/deals/truth  selection (JSON), since (Keepa minute, optional) -> the deals the
                          /deal query would return over all pages right now, free of charge:
                          {"deals": [{asin, lastUpdate, creationDate}], "count",
                           "now_keepa_minute", "deals_minute"}; `since` keeps lastUpdate > since.

Answers are `(status, JSON object)`; bad input gives 400 `{"error": "..."}`.
"""

from __future__ import annotations

import copy
import json

from keepa_sim.config import ConfigError
from keepa_sim.request_log import key_label
from keepa_sim.selection import SelectionError, parse_selection
from keepa_sim.simulator import Simulator

PREFIX = "/_sim"


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def handle(sim: Simulator, method: str, path: str, params: dict[str, str],
           body: bytes) -> tuple[int, dict]:
    route = path[len(PREFIX):].rstrip("/") or "/"
    handlers = {
        "/state": ("GET", _state), "/config": ("POST", _config), "/clock": ("POST", _clock),
        "/tokens": ("POST", _tokens), "/reset": ("POST", _reset),
        "/requests": ("GET", _requests), "/deals/truth": ("GET POST", _truth),
    }
    if route not in handlers:
        return 404, {"error": f"unknown control endpoint {path[:60]}"}
    methods, handler = handlers[route]
    if method not in methods.split():
        return 405, {"error": f"{path} takes {methods}"}
    try:
        document = _json_object(body) if method == "POST" else {}
        return 200, handler(sim, params, document)
    except ControlError as problem:
        return problem.status, {"error": str(problem)}
    except ConfigError as problem:
        return 400, {"error": str(problem)}


def _json_object(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ControlError(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ControlError("body must be a JSON object")
    return document


def _state(sim: Simulator, _params, _document) -> dict:
    return {"clock": sim.clock.state(),
            "buckets": {key_label(k): v for k, v in sim.tokens.describe_all().items()},
            "config": redacted_config(sim.config),
            "catalogues": {str(d): n for d, n in sim.catalogue_sizes().items()},
            "faults_fired": sim.faults.fired(), "requests_logged": len(sim.log)}


def _config(sim: Simulator, _params, document) -> dict:
    return {"config": redacted_config(sim.reconfigure(document))}


def _clock(sim: Simulator, _params, document) -> dict:
    unknown = sorted(set(document) - {"freeze", "advance_ms", "set_ms"})
    if unknown:
        raise ControlError(f"unknown clock command {unknown[0]!r} (freeze, advance_ms, set_ms)")
    for name in ("advance_ms", "set_ms"):
        if name in document and not _is_int(document[name]):
            raise ControlError(f"{name} must be an integer")
    if "freeze" in document and not isinstance(document["freeze"], bool):
        raise ControlError("freeze must be true or false")
    if "set_ms" in document:
        sim.clock.set(document["set_ms"])
    if "advance_ms" in document:
        sim.clock.advance(document["advance_ms"])
    if "freeze" in document:
        sim.clock.freeze(document["freeze"])
    return sim.clock.state()


def _tokens(sim: Simulator, _params, document) -> dict:
    key = document.get("key")
    if not isinstance(key, str) or not sim.tokens.knows(key):
        raise ControlError("key: not one of the simulator's API keys", status=404)
    change = {}
    for name, valid in (("tokens", _is_int), ("refill_rate", lambda v: _is_int(v) and v >= 0),
                        ("flow_reduction", lambda v: _is_number(v) and v >= 0),
                        ("status", lambda v: v in ("active", "expired"))):
        if name in document:
            if not valid(document[name]):
                raise ControlError(f"{name}: invalid value {document[name]!r}")
            change[name] = document[name]
    unknown = sorted(set(document) - {"key", *change})
    if unknown:
        raise ControlError(f"unknown field {unknown[0]!r} (tokens, refill_rate, "
                           "flow_reduction, status)")
    bucket = sim.tokens.set(key, change) if change else sim.tokens.describe(key)
    return {"key": key_label(key), **bucket}


def _reset(sim: Simulator, _params, document) -> dict:
    seed = document.get("seed")
    if seed is not None and not _is_int(seed):
        raise ControlError("seed must be an integer")
    sim.reset(seed)
    return {"reset": True, "seed": sim.config["seed"]}


def _requests(sim: Simulator, params, _document) -> dict:
    since = params.get("since_id", "0")
    if not since.isdigit():
        raise ControlError("since_id must be a non-negative integer")
    return {"requests": sim.log.entries(int(since))}


def _truth(sim: Simulator, params, document) -> dict:
    raw = document.get("selection", params.get("selection"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ControlError(f"selection is not valid JSON: {error.msg}") from None
    if raw is None:
        raise ControlError("selection is required")
    since = document.get("since", params.get("since"))
    if isinstance(since, str) and since.lstrip("-").isdigit():
        since = int(since)
    if since is not None and not _is_int(since):
        raise ControlError("since must be a Keepa minute (integer)")
    try:
        selection = parse_selection(raw, params.get("domain"), sim.config["deals"])
    except SelectionError as error:
        raise ControlError(str(error)) from None
    if sim.catalogue(selection.domain) is None:
        raise ControlError(f"domainId {selection.domain} is not simulated")
    return sim.deals.truth(selection, since)


def redacted_config(config: dict) -> dict:
    """The configuration with every API key replaced by its label."""
    shown = copy.deepcopy(config)
    shown["keys"] = {key_label(k): v for k, v in shown["keys"].items()}
    for section in ("schedule", "phantom_consumers"):
        for entry in shown[section]:
            entry["key"] = key_label(entry["key"])
    return shown


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
