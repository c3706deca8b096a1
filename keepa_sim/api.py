"""The Keepa endpoints on the wire (keepa-api.md §1–§2): key checks, admission, cost, envelope.

Order of decisions for one request: unknown path → 404; wrong method → 405; unknown key → 400
with all token fields 0; expired key → 402; bad parameters → 400 (a malformed ASIN → 200 with
`error`), all free. `/token` is free and always answered. A paid request then meets the forced
429 windows and the admission rule (balance > 0, else 429 with `tokensConsumed` 0), draws at most
one fault, is computed, waits its latency and is charged at completion (or at admission) unless
its fault says otherwise. Every JSON body starts with the envelope in Keepa's field order.

Times on the wire: `timestamp` is simulator time (epoch ms, + skew); `refillIn` is the wall ms
until the next refill tick (simulator ms / clock.speed, rounded up), since clients sleep in their
own time; `processingTimeInMs` and latencies are wall ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from keepa_sim.clock import keepa_minute
from keepa_sim.faults import Fault, corrupt_gzip, html_error_page, truncated
from keepa_sim.products import MalformedAsin, ProductParamError, parse_request
from keepa_sim.request_log import key_label
from keepa_sim.selection import SelectionError, parse_selection
from keepa_sim.simulator import Simulator

JSON_TYPE = "application/json;charset=UTF-8"
HTML_TYPE = "text/html;charset=UTF-8"
ENDPOINT_METHODS = {"token": ("GET",), "deal": ("GET", "POST"), "product": ("GET",)}
ZERO_TOKENS = {"tokensLeft": 0, "refillIn": 0, "refillRate": 0, "tokenFlowReduction": 0}


@dataclass
class ApiRequest:
    method: str
    path: str
    params: dict[str, str]  # query parameters (first value of each)
    body: bytes = b""


@dataclass
class ApiResponse:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    pre_gzipped: bool = False  # body is already a (broken) gzip stream: send as is
    action: str = "send"  # send | reset (cut the body, reset the connection) | hang
    hang_ms: float = 0.0


class BadRequest(Exception):
    """A request the API refuses; `status` 200 means an in-body error (malformed ASIN)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Work:
    """A parsed paid request: `run()` returns (payload JSON fragment, cost)."""

    run: Callable[[], tuple[str, int]]
    latency_endpoint: str
    log_params: dict


def handle(sim: Simulator, request: ApiRequest) -> ApiResponse:
    call = _Call(sim, request)
    name = call.name
    if name not in ENDPOINT_METHODS:
        return call.error(404, "notFound", f"unknown endpoint /{name[:40]}")
    if request.method not in ENDPOINT_METHODS[name]:
        return call.error(405, "methodNotAllowed", f"/{name} does not accept {request.method}")
    status = sim.tokens.status(call.key)
    if status is None:
        return call.error(400, "invalidParameter", "Invalid API key", zero_tokens=True)
    if status == "expired":
        return call.error(402, "paymentRequired", "The subscription of this API key has expired")
    if name == "token":
        return call.answer(None)
    try:
        work = _prepare(sim, name, request)
    except BadRequest as problem:
        return call.error(problem.status, "invalidParameter", str(problem))
    return call.answer(work)


def _prepare(sim: Simulator, name: str, request: ApiRequest) -> Work:
    if name == "deal":
        return _deal_work(sim, request)
    return _product_work(sim, request)


def _deal_work(sim: Simulator, request: ApiRequest) -> Work:
    text = request.body.decode("utf-8", "replace") if request.body.strip() else \
        request.params.get("selection")
    if not text:
        raise BadRequest("selection is required (selection= or a JSON body)")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequest(f"selection is not valid JSON: {error.msg} at position {error.pos}") \
            from None
    try:
        selection = parse_selection(raw, request.params.get("domain"), sim.config["deals"])
    except SelectionError as error:
        raise BadRequest(str(error)) from None
    if sim.catalogue(selection.domain) is None:
        raise BadRequest(f"domainId {selection.domain} is not simulated (catalogue.domains)")
    key = request.params["key"]

    def run() -> tuple[str, int]:
        page, count = sim.deals.page(key, selection)
        knobs = sim.config["deals"]
        return '"deals":' + page, knobs["page_cost"] if count else knobs["empty_page_cost"]

    return Work(run, "deal", {"selection": raw})


def _product_work(sim: Simulator, request: ApiRequest) -> Work:
    try:
        product_request = parse_request(request.params)
    except MalformedAsin as error:
        raise BadRequest(str(error), status=200) from None
    except ProductParamError as error:
        raise BadRequest(str(error)) from None

    def run() -> tuple[str, int]:
        minute = keepa_minute(sim.clock.now_ms())
        texts, cost = sim.products.answer(product_request, minute)
        return '"products":[' + ",".join(texts) + "]", cost

    latency = "product_offers" if product_request.offers is not None else "product"
    return Work(run, latency, {})


class _Call:
    """One request's bookkeeping: envelope, logging, charging."""

    def __init__(self, sim: Simulator, request: ApiRequest):
        self.sim = sim
        self.request = request
        self.started = time.perf_counter()
        self.name = request.path.strip("/")
        self.key = request.params.get("key")

    def answer(self, work: Work | None) -> ApiResponse:
        sim, key = self.sim, self.key
        if work is not None:
            if sim.faults.forced_429():
                return self._not_enough_tokens(sim.tokens.token_fields(key), work)
            admitted, fields = sim.tokens.admit(key)
            if not admitted:
                return self._not_enough_tokens(fields, work)
        fault = sim.faults.draw(self.name)
        payload, cost = work.run() if work else (None, 0)
        charge = cost if fault is None or fault.charge else 0
        at_admission = sim.config["tokens"]["charge_at"] == "admission"
        before = None
        if at_admission and charge:
            before, fields = sim.tokens.charge(key, charge)
        delay_ms = sim.faults.latency_ms(work.latency_endpoint if work else self.name)
        if delay_ms:
            sim.stopping.wait(delay_ms / 1000)
        if not at_admission and charge:
            before, fields = sim.tokens.charge(key, charge)
        if before is None:
            fields = sim.tokens.token_fields(key)
            before = fields["tokensLeft"]
        if fault is not None and fault.kind == "in_body_error":
            body = self._body(fields, charge, error=_error(fault.error_type,
                                                           "Simulated in-body error"))
        else:
            body = self._body(fields, charge, payload=payload)
        response = self._deliver(ApiResponse(200, body), fault)
        self._log(response.status, cost=charge, before=before, after=fields["tokensLeft"],
                  fault=fault, extra=work.log_params if work else {})
        return response

    def _not_enough_tokens(self, fields: dict, work: Work) -> ApiResponse:
        error = (_error("notEnoughTokens", "Not enough tokens")
                 if self.sim.config["tokens"]["error_on_429"] else None)
        self._log(429, cost=0, before=fields["tokensLeft"], after=fields["tokensLeft"], fault=None,
                  extra=work.log_params)
        return ApiResponse(429, self._body(fields, 0, error=error))

    def error(self, status: int, error_type: str, message: str, *,
              zero_tokens: bool = False) -> ApiResponse:
        known = not zero_tokens and self.key is not None and self.sim.tokens.knows(self.key)
        fields = self.sim.tokens.token_fields(self.key) if known else ZERO_TOKENS
        self._log(status, cost=0, before=fields["tokensLeft"], after=fields["tokensLeft"],
                  fault=None, extra={})
        return ApiResponse(status, self._body(fields, 0, error=_error(error_type, message)))

    def _body(self, fields: dict, consumed: int, *, payload: str | None = None,
              error: dict | None = None) -> bytes:
        envelope = {"timestamp": self.sim.clock.timestamp_ms(), **fields,
                    "tokensConsumed": consumed,
                    "processingTimeInMs": int((time.perf_counter() - self.started) * 1000)}
        if error is not None:
            envelope["error"] = error
        text = json.dumps(envelope, separators=(",", ":"))
        if payload is not None:
            text = text[:-1] + "," + payload + "}"
        return text.encode()

    def _log(self, status: int, *, cost: int, before: int, after: int, fault: Fault | None,
             extra: dict) -> None:
        now = self.sim.clock.now_ms()
        params = {k: v for k, v in self.request.params.items() if k != "key"}
        self.sim.log.add({
            "time_ms": now, "keepa_minute": keepa_minute(now), "key": key_label(self.key),
            "method": self.request.method, "path": "/" + self.name, "params": params, **extra,
            "status": status, "cost": cost, "balance_before": before, "balance_after": after,
            "fault": fault.kind if fault else None})


    def _deliver(self, response: ApiResponse, fault: Fault | None) -> ApiResponse:
        """The response as the fault delivers it (unchanged without a fault)."""
        if fault is None or fault.kind == "in_body_error":
            return response
        if fault.kind == "http_5xx":
            if fault.html:
                return ApiResponse(fault.status, html_error_page(fault.status), HTML_TYPE)
            fields = self.sim.tokens.token_fields(self.key)
            return ApiResponse(fault.status, self._body(
                fields, 0, error=_error("internalServerError", "Simulated server failure")))
        if fault.kind == "malformed_json":
            body = {"truncate": lambda: truncated(response.body),
                    "html": lambda: html_error_page(502),
                    "garbage": lambda: self.sim.faults.random_bytes(64)}[fault.mode]()
            return ApiResponse(200, body)
        if fault.kind == "bad_gzip":
            return ApiResponse(200, corrupt_gzip(response.body), pre_gzipped=True)
        if fault.kind == "reset":
            return ApiResponse(200, response.body, action="reset")
        return ApiResponse(200, b"", action="hang", hang_ms=fault.hang_ms)


def _error(error_type: str, message: str) -> dict:
    return {"type": error_type, "message": message, "details": None}
