"""Simulator settings: one table of knobs gives the defaults, the validation and the --help text.

A configuration is a plain nested dict with the structure of keepa-api.md §5.6 (JSON). Build one
with `load(overrides)`; change a running one with `merge(config, overrides)`. Both validate every
value and raise `ConfigError("path.to.knob: what is wrong")` — nothing is applied on error.

Time units: "token seconds" (schedule `at_s`, forced 429 windows, phantom bursts, the deal cache
TTL) are seconds of the refill clock, so 60 token seconds = one refill tick = `clock.minute_ms` of
simulator time. Everything derived from Keepa minutes (deal `lastUpdate`, the 12 h window, date
ranges) follows the same simulator clock, which runs at `clock.speed` × wall speed unless frozen.
Latencies and hangs are wall ms, and so is the reported `refillIn` (clients sleep in wall time).
"""

from __future__ import annotations

import copy
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_API_KEY = "KeepaSimulatorDefaultKey" + "0" * 39 + "1"  # 64 letters and digits

KEEPA_ENDPOINTS = ("token", "deal", "product")
DOMAINS = (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12)
_KEY_FIELDS = ("refill_rate", "initial_tokens", "status", "flow_reduction")
_SCHEDULE_ACTIONS = ("refill_rate", "flow_reduction", "status", "tokens")
_MALFORMED_MODES = ("truncate", "html", "garbage")
MAX_SPEED = 10_000  # clock.speed: about a Keepa week per wall minute


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting."""


@dataclass(frozen=True)
class Knob:
    path: str
    default: object
    help: str
    check: Callable[[object], object]  # returns the normalised value or raises ValueError


# --- value checks -------------------------------------------------------------------------------

def _int(low=None, high=None, *, nullable=False):
    def check(value):
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be in [{low}, {high}], got {value}")
        return value
    return check


def _number(low=None, high=None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be in [{low}, {high}], got {value}")
        return value
    return check


def _positive(high):
    def check(value):
        _number()(value)
        if not 0 < value <= high:  # also refuses NaN
            raise ValueError(f"must be a number > 0 and <= {high}, got {value}")
        return value
    return check


def _probability(value):
    return _number(0, 1)(value)


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _choice(*options):
    def check(value):
        if value not in options:
            raise ValueError(f"must be one of {', '.join(map(str, options))}; got {value!r}")
        return value
    return check


def _mapping(value, what):
    if not isinstance(value, dict):
        raise ValueError(f"must be an object ({what}), got {value!r}")
    return value


def _list(value, what):
    if not isinstance(value, list):
        raise ValueError(f"must be a list ({what}), got {value!r}")
    return value


def _endpoints(value):
    if value is None:
        return None
    for name in _list(value, "endpoint names"):
        if name not in KEEPA_ENDPOINTS:
            raise ValueError(f"unknown endpoint {name!r}; use {', '.join(KEEPA_ENDPOINTS)}")
    return list(value)


def _fields(entry, allowed, where):
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _key_settings(entry, where):
    _mapping(entry, "refill_rate, initial_tokens, status, flow_reduction")
    _fields(entry, _KEY_FIELDS, where)
    checks = {"refill_rate": _int(0, 100_000), "initial_tokens": _int(nullable=True),
              "status": _choice("active", "expired"), "flow_reduction": _number(0)}
    for name, value in entry.items():
        try:
            checks[name](value)
        except ValueError as error:
            raise ValueError(f"{where}.{name}: {error}") from None
    return dict(entry)


def _keys(value):
    for key, entry in _mapping(value, "API key -> settings").items():
        if not key:
            raise ValueError("an API key must not be empty")
        value[key] = _key_settings(entry, "[key]")
    return dict(value)


def _field(entry, name, check, where, *, required=False):
    if name not in entry:
        if required:
            raise ValueError(f"{where}: needs {name}")
        return None
    try:
        return check(entry[name])
    except ValueError as error:
        raise ValueError(f"{where}.{name}: {error}") from None


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _schedule(value):
    events = []
    for n, event in enumerate(_list(value, "timed events")):
        where = f"[{n}]"
        _mapping(event, "at_s, key and one action")
        _fields(event, ("at_s", "key", *_SCHEDULE_ACTIONS), where)
        _field(event, "at_s", _number(0), where, required=True)
        _field(event, "key", _text, where, required=True)
        if not any(action in event for action in _SCHEDULE_ACTIONS):
            raise ValueError(f"{where}: needs one of {', '.join(_SCHEDULE_ACTIONS)}")
        _key_settings({k: v for k, v in event.items() if k in _KEY_FIELDS}, where)
        _field(event, "tokens", _int(), where)
        events.append(dict(event))
    return events


def _phantoms(value):
    phantoms = []
    for n, entry in enumerate(_list(value, "phantom consumers")):
        where = f"[{n}]"
        _mapping(entry, "key, tokens_per_min, burst_every_s, burst_tokens")
        _fields(entry, ("key", "tokens_per_min", "burst_every_s", "burst_tokens"), where)
        _field(entry, "key", _text, where, required=True)
        _field(entry, "tokens_per_min", _int(0), where)
        _field(entry, "burst_every_s", _number(0), where)
        _field(entry, "burst_tokens", _int(0), where)
        phantoms.append({"tokens_per_min": 0, "burst_every_s": 0, "burst_tokens": 0, **entry})
    return phantoms


def _windows(value):
    for n, window in enumerate(_list(value, "[{from_s, to_s}]")):
        where = f"[{n}]"
        _mapping(window, "from_s, to_s")
        _fields(window, ("from_s", "to_s"), where)
        start = _field(window, "from_s", _number(0), where, required=True)
        end = _field(window, "to_s", _number(0), where, required=True)
        if end < start:
            raise ValueError(f"{where}: to_s {end} is before from_s {start}")
    return [dict(w) for w in value]


def _status_weights(value):
    weights = {}
    for code, weight in _mapping(value, "HTTP status -> weight").items():
        if not str(code).isdigit() or not 500 <= int(code) <= 599:
            raise ValueError(f"{code!r} is not a 5xx status code")
        weights[str(code)] = _number(0)(weight)
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("needs at least one code with a positive weight")
    return weights


def _malformed_modes(value):
    modes = [value] if isinstance(value, str) else _list(value, "modes")
    for mode in modes:
        _choice(*_MALFORMED_MODES)(mode)
    if not modes:
        raise ValueError("needs at least one mode")
    return list(modes)


def _per_endpoint(value):
    for name, ms in _mapping(value, "endpoint -> ms").items():
        if name not in (*KEEPA_ENDPOINTS, "product_offers"):
            raise ValueError(f"unknown endpoint {name!r}")
        _number(0)(ms)
    return dict(value)


def _domains(value):
    for domain in _list(value, "domain ids"):
        _choice(*DOMAINS)(domain)
    return list(value)


def _fault(name, help_text, *, charge, extra=()):
    return [
        Knob(f"faults.{name}.p", 0.0, f"probability per request: {help_text}", _probability),
        Knob(f"faults.{name}.endpoints", None,
             "limit to these endpoints (token, deal, product); null = all", _endpoints),
        Knob(f"faults.{name}.times", None,
             "fire at most this many times (counted from when it was set); null = no limit",
             _int(0, nullable=True)),
        Knob(f"faults.{name}.charge", charge,
             "charge the request's cost although the client gets no usable answer", _bool),
        *extra,
    ]


KNOBS: tuple[Knob, ...] = (
    Knob("seed", 42, "seed of the catalogue, the deal stream and fault draws", _int()),
    Knob("default_refill_rate", 20, "refill rate (tokens/minute) of keys that set none "
         "(--refill-rate)", _int(0, 100_000)),
    Knob("keys", {DEFAULT_API_KEY: {}},
         "API keys: {key: {refill_rate, initial_tokens (default 60 x rate), status: "
         "active|expired, flow_reduction}}; a config file's keys replace the default key, "
         "/_sim/config adds or updates keys", _keys),
    Knob("clock.mode", "real", "real (runs at clock.speed), scaled (same, minute_ms < 60000) or "
         "frozen (moves only by /_sim/clock)", _choice("real", "scaled", "frozen")),
    Knob("clock.minute_ms", 60_000, "length of one refill tick in simulator ms (--minute-ms); "
         "fixed after start", _int(1, 3_600_000)),
    Knob("clock.speed", 1, "simulator ms per wall ms (--speed): deal data and refill ticks run "
         "this many times faster than the wall clock; refillIn is reported in wall ms; fixed "
         "after start", _positive(MAX_SPEED)),
    Knob("clock.skew_ms", 0, "added to every reported `timestamp` (server clock error)", _int()),
    Knob("clock.start_ms", None, "simulator time at start (epoch ms); null = the wall clock",
         _int(0, nullable=True)),
    Knob("tokens.charge_at", "completion", "charge the cost at completion (after latency, so "
         "parallel requests overshoot) or at admission", _choice("completion", "admission")),
    Knob("tokens.error_on_429", False, "add error {type: notEnoughTokens} to 429 bodies", _bool),
    Knob("tokens.clip_on_rate_change", "next_tick", "when a rate cut leaves the balance above "
         "60 x rate: clip at the next tick, immediately, or never",
         _choice("next_tick", "immediate", "never")),
    Knob("tokens.flow_reduction_apply", "five_minute_boundary", "when a new tokenFlowReduction "
         "takes effect", _choice("five_minute_boundary", "immediate")),
    Knob("schedule", [], "timed changes [{at_s (token seconds after the schedule was set), key, "
         "refill_rate | flow_reduction | status | tokens}]", _schedule),
    Knob("phantom_consumers", [], "other clients draining a key: [{key, tokens_per_min (spent "
         "each tick while the balance is positive), burst_every_s, burst_tokens}]", _phantoms),
    Knob("latency.base_ms", 0, "added latency per request (real ms)", _number(0)),
    Knob("latency.jitter_ms", 0, "uniform extra latency 0..jitter_ms", _number(0)),
    Knob("latency.per_endpoint", {}, "base latency per endpoint, replacing base_ms: "
         "{token|deal|product|product_offers: ms}", _per_endpoint),
    Knob("latency.slow_tail.p", 0.0, "probability of a slow request", _probability),
    Knob("latency.slow_tail.ms", 15_000, "latency of a slow request", _number(0)),
    Knob("latency.latency_scale", 1.0, "multiplies every latency", _number(0)),
    *_fault("http_5xx", "answer 5xx", charge=False, extra=(
        Knob("faults.http_5xx.codes", {"500": 0.5, "502": 0.3, "503": 0.2},
             "weights of the 5xx codes", _status_weights),
        Knob("faults.http_5xx.html_body", True, "HTML body (else a JSON envelope with error)",
             _bool),
    )),
    *_fault("in_body_error", "HTTP 200 with an `error` object and no payload", charge=False,
            extra=(Knob("faults.in_body_error.type", "invalidParameter", "error.type", _text),)),
    *_fault("malformed_json", "HTTP 200 with a broken body", charge=True, extra=(
        Knob("faults.malformed_json.mode", list(_MALFORMED_MODES),
             "truncate (cut JSON), html (an HTML page), garbage (random bytes); one is drawn",
             _malformed_modes),
    )),
    *_fault("bad_gzip", "Content-Encoding gzip with a corrupt stream", charge=True),
    *_fault("reset", "send part of the body, then reset the connection", charge=True),
    *_fault("hang", "accept the request, answer nothing for `ms`, then close", charge=True, extra=(
        Knob("faults.hang.ms", 120_000, "how long a hung request stays silent (real ms)",
             _number(0)),
    )),
    Knob("faults.forced_429.windows", [], "[{from_s, to_s}] token seconds after being set: every "
         "paid request gets 429 (the envelope shows the real balance)", _windows),
    Knob("faults.stale_deals.lag_min", 0, "deals are computed this many Keepa minutes in the past",
         _int(0)),
    Knob("deals.cache_ttl_s", 120, "lifetime of a deal snapshot (token seconds) per key + "
         "selection without page", _number(0)),
    Knob("deals.max_results", 10_000, "cap on the deals of one query", _int(0)),
    Knob("deals.page_cost", 5, "tokens per /deal page", _int(0)),
    Knob("deals.empty_page_cost", 5, "tokens per /deal page without deals", _int(0)),
    Knob("deals.deal_age_field", "creationDate", "sortType 1 sorts by this field, newest first",
         _choice("creationDate", "lastUpdate")),
    Knob("deals.delta_sign", "negative_for_drop", "sign of delta/deltaPercent/deltaLast for a "
         "price drop", _choice("negative_for_drop", "positive_for_drop")),
    Knob("deals.date_range_4", "union", "dateRange 4: union of 0..3, or reject with 400",
         _choice("union", "reject")),
    Knob("deals.switch_default", "if_present", "isRangeEnabled/isFilterEnabled when absent: on "
         "if a gated option is present, always on, always off", _choice("if_present", "on", "off")),
    Knob("deals.string_numbers", "default", "dateRange/sortType/priceTypes sent as strings: "
         "coerce, fall back to the default silently, or reject with 400",
         _choice("coerce", "default", "reject")),
    Knob("deals.strict", False, "400 for unknown selection fields and >1 priceTypes", _bool),
    Knob("catalogue.n_products", 5000, "products per domain", _int(1, 200_000)),
    Knob("catalogue.domains", list(DOMAINS), "domain ids with a catalogue", _domains),
    Knob("catalogue.history_days", 90, "length of product csv histories (days)", _int(1, 3650)),
    Knob("http.always_gzip", False, "gzip every JSON body, even without Accept-Encoding: gzip",
         _bool),
    Knob("control.request_log_size", 10_000, "entries kept for GET /_sim/requests", _int(0)),
)

_BY_PATH = {knob.path: knob for knob in KNOBS}
_SECTIONS = {".".join(knob.path.split(".")[:n]) for knob in KNOBS
             for n in range(1, knob.path.count(".") + 1)}


def defaults() -> dict:
    """The complete default configuration (a fresh copy)."""
    config: dict = {}
    for knob in KNOBS:
        *parents, leaf = knob.path.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = copy.deepcopy(knob.default)
    return config


def load(overrides: dict | None = None) -> dict:
    """Defaults with `overrides` (a config file's content) applied; `keys` replaces the default."""
    return merge(defaults(), overrides or {}, add_keys=False)


def merge(config: dict, overrides: dict, *, add_keys: bool = True) -> dict:
    """A new config: `config` with `overrides` merged in (objects merge, lists/values replace).

    With add_keys, `keys` entries are merged into the existing keys instead of replacing them.
    """
    if not isinstance(overrides, dict):
        raise ConfigError(f"configuration must be a JSON object, got {type(overrides).__name__}")
    merged = copy.deepcopy(config)
    _merge_into(merged, copy.deepcopy(overrides), "", add_keys)
    _check_consistency(merged)
    return merged


def _merge_into(node: dict, overrides: dict, prefix: str, add_keys: bool) -> None:
    for name, given in overrides.items():
        path = f"{prefix}{name}"
        knob = _BY_PATH.get(path)
        if knob is not None:
            try:
                value = knob.check(given)
            except ValueError as error:
                raise ConfigError(f"{path}: {error}") from None
            if path == "keys" and add_keys:
                for key, entry in value.items():
                    node["keys"].setdefault(key, {}).update(entry)
            else:
                node[name] = value
        elif path in _SECTIONS:
            if not isinstance(given, dict):
                raise ConfigError(f"{path}: must be an object, got {given!r}")
            _merge_into(node[name], given, path + ".", add_keys)
        else:
            raise ConfigError(f"{path}: unknown setting (see python -m keepa_sim --help)")


def _check_consistency(config: dict) -> None:
    keys = config["keys"]
    if not keys:
        raise ConfigError("keys: at least one API key is needed")
    for section in ("schedule", "phantom_consumers"):
        for n, entry in enumerate(config[section]):
            if entry["key"] not in keys:
                raise ConfigError(f"{section}[{n}].key: not one of the configured keys")


def key_settings(config: dict, key: str) -> dict:
    """A key's settings with the defaults filled in."""
    entry = config["keys"][key]
    rate = entry.get("refill_rate", config["default_refill_rate"])
    initial = entry.get("initial_tokens")
    return {"refill_rate": rate, "initial_tokens": 60 * rate if initial is None else initial,
            "status": entry.get("status", "active"),
            "flow_reduction": float(entry.get("flow_reduction", 0.0))}


def is_frozen(config: dict) -> bool:
    return config["clock"]["mode"] == "frozen"


def help_text(width: int = 100) -> str:
    """Every knob with its JSON default and meaning, for --help."""
    lines = []
    for knob in KNOBS:
        default = ("{keepa_sim.DEFAULT_API_KEY: {}}" if knob.path == "keys"
                   else json.dumps(knob.default))
        lines.append(f"  {knob.path} = {default}")
        lines.extend(textwrap.wrap(knob.help, width, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))
    return "\n".join(lines)
