"""The Keepa HTTP client: every paid request goes through a TokenGate; errors are typed.

Contract (docs/architecture.md, keepa-api.md §1.4 and §4.1):

* A paid call is `gate.reserve(estimate)` → one HTTP request → `gate.reconcile(reservation,
  envelope or None, status=...)`; the reconcile runs in a `finally`, so no reservation leaks.
  `/token` is free and only re-syncs the gate. Nothing else in this module talks to Keepa.
* 429 is a scheduling signal: the gate learns the server balance from the 429 envelope and makes
  the next `reserve` wait; after `max_consecutive_429` in a row → NotEnoughTokensError.
* 5xx, resets, timeouts, non-JSON or truncated bodies, bad gzip are transient: retried with
  jittered exponential back-off and a free /token re-sync (whether the failed request was charged
  is unknown), then TransientError. 400/402/404/405 and in-body errors are final.
* The key travels in the URL (`key=`). It never appears in an exception message, a log record or
  a repr: every text built here goes through `redact()`, `requests` exceptions are never chained,
  and urllib3's debug log lines (which contain the URL) are redacted by a logging filter.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import requests

from keepa_deals.constants import (
    DEAL_PAGE_COST,
    MAX_ASINS_PER_PRODUCT_CALL,
    PRIORITY_BACKFILL,
)
from keepa_deals.envelope import TokenEnvelope

log = logging.getLogger(__name__)

_KEY_IN_TEXT = re.compile(r"(key=)[^&\s'\"<>]+", re.IGNORECASE)
_MIN_REGISTERED_SECRET_LENGTH = 8
_registered_secrets: set[str] = set()

_BACKOFF_CAP_S = 30.0
_OFFER_PAGE_SIZE = 10
_OFFER_PAGE_COST = 6
_TRANSPORT_FAILURES = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

# Deal selection keys whose values Keepa reads as JSON integers (a string "4" is silently
# ignored by the API, FAILURES.md D5) or booleans (keepa-api.md §2.2).
_INT_KEYS = frozenset({"page", "domainId", "dateRange", "sortType", "minRating"})
_INT_LIST_KEYS = frozenset({"includeCategories", "excludeCategories", "warehouseConditions"})
_RANGE_KEYS = frozenset(
    {"currentRange", "deltaRange", "deltaPercentRange", "deltaLastRange", "salesRankRange"}
)
_BOOL_KEYS = frozenset({
    "isRangeEnabled", "isFilterEnabled", "hasReviews", "filterErotic", "singleVariation",
    "isLowest", "isLowest90", "isHighest", "isLowestOffer", "isOutOfStock", "isBackInStock",
    "isRisers", "isPrimeExclusive", "mustHaveAmazonOffer", "mustNotHaveAmazonOffer",
})


# --------------------------------------------------------------------------- secrets

def register_secret(secret: str) -> None:
    """Make `redact()` mask `secret` wherever it appears (keys shorter than 8 are only masked
    as `key=` URL parameters, to keep short test strings from mangling every message)."""
    if secret and len(secret) >= _MIN_REGISTERED_SECRET_LENGTH:
        _registered_secrets.add(secret)


def redact(text: str) -> str:
    """`text` with every `key=...` URL parameter and every registered secret replaced by ***."""
    text = _KEY_IN_TEXT.sub(r"\1***", text)
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message through redact() (urllib3 logs request URLs at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _install_log_redaction() -> None:
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
            logger.addFilter(_RedactingFilter())


_install_log_redaction()


# --------------------------------------------------------------------------- errors

class KeepaError(Exception):
    """Base of every Keepa failure; `.envelope` is the server's token status when one came."""

    def __init__(self, message: str, *, status: int | None = None,
                 envelope: TokenEnvelope | None = None):
        super().__init__(redact(message))
        self.status = status
        self.envelope = envelope


class InvalidKeyError(KeepaError):
    """HTTP 400 invalidParameter with refillRate 0: Keepa does not know the key."""


class PaymentRequiredError(KeepaError):
    """HTTP 402: the key's subscription has lapsed."""


class RequestRejectedError(KeepaError):
    """HTTP 400/404/405 (other than an invalid key): the request itself is wrong; not retried."""


class NotEnoughTokensError(KeepaError):
    """Still HTTP 429 after `max_consecutive_429` reserve-and-retry rounds."""


class TransientError(KeepaError):
    """5xx, reset, timeout, non-JSON/truncated body or bad gzip, still failing after retries."""


class BadResponseError(KeepaError):
    """HTTP 200 whose body is unusable: an in-body `error`, a missing or mistyped payload."""


class SelectionError(KeepaError, ValueError):
    """A deal selection value of the wrong type; the message names the key."""


# --------------------------------------------------------------------------- gate protocol

class TokenGate(Protocol):
    """The shared token budget (implemented by tokens.TokenBucket)."""

    def reserve(self, cost: int, *, priority: int, task: str,
                sync: Callable[[], TokenEnvelope], deadline: float | None = None) -> Any:
        """Block (bounded, jittered) until `cost` is granted; past `deadline` raise
        tokens.TokenWaitTimeout. `sync` fetches the free /token envelope."""

    def reconcile(self, reservation: Any, envelope: TokenEnvelope | None, *,
                  status: int | None = None) -> None:
        """Settle a reservation; `envelope` None = no Keepa body (timeout, reset, HTML 5xx)."""

    def sync(self, envelope: TokenEnvelope) -> None:
        """Adopt the server's token status from a free /token call."""


@dataclass(frozen=True)
class KeepaResponse:
    """A successful (HTTP 200) Keepa response: the decoded body and its token envelope."""

    status: int
    payload: dict
    envelope: TokenEnvelope


# --------------------------------------------------------------------------- selections

def validate_selection(selection: Mapping) -> None:
    """Raise SelectionError unless every integer/boolean-valued key holds a real int/bool.

    Booleans are not integers here and numeric strings are not numbers: Keepa silently ignores
    `"dateRange": "4"` (FAILURES.md D5). `priceTypes` is an int or a one-element list.
    """
    if not isinstance(selection, Mapping):
        raise SelectionError(f"selection: expected a JSON object, got {type(selection).__name__}")
    for key, value in selection.items():
        if key in _INT_KEYS:
            _require_int(key, value)
        elif key == "priceTypes":
            _require_price_types(value)
        elif key in _INT_LIST_KEYS:
            _require_int_list(key, value)
        elif key in _RANGE_KEYS:
            _require_int_list(key, value, length=2)
        elif key in _BOOL_KEYS and not isinstance(value, bool):
            raise SelectionError(f"selection key {key!r}: expected true/false, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int(key: str, value: object) -> None:
    if not _is_int(value):
        raise SelectionError(
            f"selection key {key!r}: expected a JSON integer, got {value!r} "
            f"({type(value).__name__}); Keepa silently ignores non-integers here"
        )


def _require_int_list(key: str, value: object, *, length: int | None = None) -> None:
    if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
        raise SelectionError(f"selection key {key!r}: expected a list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise SelectionError(
            f"selection key {key!r}: expected [min, max] ({length} integers), got {value!r}"
        )


def _require_price_types(value: object) -> None:
    if _is_int(value):
        return
    _require_int_list("priceTypes", value)
    if len(value) != 1:
        raise SelectionError(
            f"selection key 'priceTypes': expected exactly one price type, got {value!r}")


# --------------------------------------------------------------------------- the client

@dataclass(frozen=True)
class _Reply:
    """One HTTP exchange: `status` None when no response arrived; `problem` says why the body
    is unusable (None for a decoded JSON object); `garbled` = not even JSON (truncated, HTML,
    garbage), which on a 200/429 means the transfer failed."""

    status: int | None
    body: dict | None
    envelope: TokenEnvelope | None
    problem: str | None
    garbled: bool = False

    @property
    def is_transient(self) -> bool:
        if self.status is None or self.status >= 500:
            return True
        return self.status in (200, 429) and self.garbled

    @property
    def is_invalid_key(self) -> bool:
        error = _error_object(self.body)
        return (self.status == 400 and error.get("type") == "invalidParameter"
                and self.envelope is not None and self.envelope.refill_rate == 0)


class KeepaClient:
    """Keepa over `requests`; one instance per task (it carries the task name and priority)."""

    def __init__(self, base_url: str, api_key: str, gate: TokenGate, *, domain: int = 1,
                 task: str = "adhoc", priority: int = PRIORITY_BACKFILL,
                 connect_timeout_s: float = 10, read_timeout_s: float = 60,
                 max_transient_retries: int = 4, max_consecutive_429: int = 10,
                 retry_backoff_s: float = 1.0, session: requests.Session | None = None,
                 on_response: Callable[[str, int | None], None] | None = None):
        register_secret(api_key)
        self._on_response = on_response  # (endpoint, HTTP status or None): e.g. a counter
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._gate = gate
        self.domain = domain
        self.task = task
        self.priority = priority
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._max_transient_retries = max_transient_retries
        self._max_consecutive_429 = max_consecutive_429
        self._retry_backoff_s = retry_backoff_s
        self._session = session or requests.Session()
        self._session.headers["Accept-Encoding"] = "gzip"

    @classmethod
    def from_settings(cls, settings, gate: TokenGate, *, task: str, priority: int,
                      on_response: Callable[[str, int | None], None] | None = None
                      ) -> KeepaClient:
        """A client for the configured Keepa URL, key, domain and timeouts."""
        return cls(settings.keepa_api_url, settings.keepa_api_key, gate,
                   domain=settings.keepa_domain, task=task, priority=priority,
                   connect_timeout_s=settings.keepa_connect_timeout_s,
                   read_timeout_s=settings.keepa_read_timeout_s, on_response=on_response)

    def __repr__(self) -> str:
        return (f"KeepaClient(base_url={self.base_url!r}, domain={self.domain}, "
                f"task={self.task!r}, priority={self.priority}, key=***)")

    def close(self) -> None:
        self._session.close()

    # ----------------------------------------------------------------- public calls

    def token_status(self) -> TokenEnvelope:
        """Free `/token`: the server's token status, also handed to `gate.sync()`."""
        envelope = self._raw_token_status()
        self._gate.sync(envelope)
        return envelope

    def deals(self, selection: Mapping, *, page: int,
              deadline: float | None = None) -> KeepaResponse:
        """One `/deal` page (estimated cost 5). `page` overrides any `page` in `selection`;
        `domainId` defaults to the client's domain and must match it. The body's
        `deals.dr` is guaranteed to be a list."""
        _require_int("page", page)
        if page < 0:
            raise SelectionError(f"selection key 'page': must be >= 0, got {page}")
        validate_selection(selection)
        query = {**selection, "page": page}
        query.setdefault("domainId", self.domain)
        if query["domainId"] != self.domain:
            raise SelectionError(
                f"selection key 'domainId': {query['domainId']} differs from the client's "
                f"domain {self.domain} (KEEPA_DOMAIN)"
            )
        try:
            encoded = json.dumps(query, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SelectionError(f"selection: not JSON-serialisable ({exc})") from None
        params = {"domain": self.domain, "selection": encoded}
        return self._paid_call("deal", params, cost=DEAL_PAGE_COST,
                               check=_check_deal_payload, deadline=deadline)

    def products(self, asins: Sequence[str], *, stats: int | None = 90, history: bool = False,
                 offers: int | None = None, update: int | None = None,
                 deadline: float | None = None) -> KeepaResponse:
        """One `/product` call for up to 100 ASINs (estimated 1 token per ASIN, 6 per page of
        10 offers with `offers`). The body's `products` is guaranteed to be a list."""
        if isinstance(asins, str) or not asins or not all(isinstance(a, str) for a in asins):
            raise ValueError("products(): expected a non-empty list of ASIN strings")
        if len(asins) > MAX_ASINS_PER_PRODUCT_CALL:
            raise ValueError(f"products(): at most {MAX_ASINS_PER_PRODUCT_CALL} ASINs per call, "
                             f"got {len(asins)}")
        params: dict[str, object] = {"domain": self.domain, "asin": ",".join(asins),
                                     "history": int(history)}
        for name, value in (("stats", stats), ("offers", offers), ("update", update)):
            if value is not None:
                params[name] = value
        per_asin = 1
        if offers:
            per_asin = _OFFER_PAGE_COST * -(-offers // _OFFER_PAGE_SIZE)
        return self._paid_call("product", params, cost=per_asin * len(asins),
                               check=_check_product_payload, deadline=deadline)

    # ----------------------------------------------------------------- request machinery

    def _paid_call(self, endpoint: str, params: dict, *, cost: int,
                   check: Callable[[dict], str | None], deadline: float | None) -> KeepaResponse:
        throttled = failures = 0
        while True:
            reply = self._reserved_request(endpoint, params, cost, deadline)
            if reply.status == 429:
                throttled, failures = throttled + 1, 0
                if throttled >= self._max_consecutive_429:
                    raise NotEnoughTokensError(
                        f"/{endpoint}: HTTP 429 (not enough tokens) {throttled} times in a row",
                        status=429, envelope=reply.envelope)
                continue
            if reply.is_transient:
                failures, throttled = failures + 1, 0
                if failures > self._max_transient_retries:
                    raise TransientError(
                        f"/{endpoint}: {_describe(reply)} (gave up after {failures} attempts)",
                        status=reply.status, envelope=reply.envelope)
                self._resync_quietly()
                self._back_off(failures)
                continue
            return self._accept(endpoint, reply, check)

    def _reserved_request(self, endpoint: str, params: dict, cost: int,
                          deadline: float | None) -> _Reply:
        reservation = self._gate.reserve(cost, priority=self.priority, task=self.task,
                                         sync=self._raw_token_status, deadline=deadline)
        reply = None
        try:
            reply = self._request(endpoint, params)
        finally:
            if reply is None:
                self._gate.reconcile(reservation, None, status=None)
            else:
                # An invalid key's envelope (all zeros) describes no account: never sync from it.
                envelope = None if reply.is_invalid_key else reply.envelope
                self._gate.reconcile(reservation, envelope, status=reply.status)
        return reply

    def _raw_token_status(self, *, attempts: int | None = None) -> TokenEnvelope:
        """GET /token (free) with transient retries; the gate's `sync` callback."""
        attempts = self._max_transient_retries + 1 if attempts is None else attempts
        for attempt in range(1, attempts + 1):
            reply = self._request("token", {})
            if not reply.is_transient:
                break
            if attempt < attempts:
                self._back_off(attempt)
        else:
            raise TransientError(f"/token: {_describe(reply)} (gave up after {attempts} attempts)",
                                 status=reply.status, envelope=reply.envelope)
        self._raise_for_status("token", reply)
        if reply.envelope is None:
            raise BadResponseError("/token: HTTP 200 without the token fields",
                                   status=reply.status)
        return reply.envelope

    def _resync_quietly(self) -> None:
        """After a failed paid request: one /token re-sync; its own failure is only logged."""
        try:
            self._gate.sync(self._raw_token_status(attempts=1))
        except KeepaError as exc:
            log.warning("keepa /token re-sync failed: %s", exc)

    def _back_off(self, failures: int) -> None:
        delay = min(_BACKOFF_CAP_S, self._retry_backoff_s * 2 ** (failures - 1))
        time.sleep(random.uniform(delay / 2, delay))

    def _request(self, endpoint: str, params: dict) -> _Reply:
        """One GET; never raises for transport or body problems (they become `problem`)."""
        url = f"{self.base_url}/{endpoint}"
        started = time.monotonic()
        failure = unsendable = None
        try:
            response = self._session.get(url, params={"key": self._api_key, **params},
                                         timeout=self._timeout)
        except _TRANSPORT_FAILURES as exc:
            failure = redact(f"{type(exc).__name__}: {exc}")
        except requests.RequestException as exc:  # invalid URL and the like: a setup error
            unsendable = redact(f"{type(exc).__name__}: {exc}")
        # Raised outside the except blocks so that no exception embedding the URL is chained.
        if unsendable is not None:
            raise KeepaError(f"/{endpoint}: request could not be sent ({unsendable})")
        duration_ms = round((time.monotonic() - started) * 1000)
        if self._on_response is not None:
            self._on_response(endpoint, None if failure is not None else response.status_code)
        if failure is not None:
            log.info("keepa /%s failed after %d ms: %s", endpoint, duration_ms, failure)
            return _Reply(None, None, None, failure, garbled=True)
        reply = _decode(response)
        envelope = reply.envelope
        log.info("keepa /%s status=%s cost=%s tokensLeft=%s duration_ms=%d%s", endpoint,
                 reply.status, envelope.tokens_consumed if envelope else "?",
                 envelope.tokens_left if envelope else "?", duration_ms,
                 f" problem={reply.problem}" if reply.problem else "")
        return reply

    def _accept(self, endpoint: str, reply: _Reply, check: Callable[[dict], str | None]
                ) -> KeepaResponse:
        self._raise_for_status(endpoint, reply)
        error = _error_object(reply.body)
        if error:
            raise BadResponseError(f"/{endpoint}: HTTP 200 with an error: {_error_text(error)}",
                                   status=reply.status, envelope=reply.envelope)
        problem = reply.problem or check(reply.body)
        if problem is None and reply.envelope is None:
            problem = "the token fields are missing"
        if problem is not None:
            raise BadResponseError(f"/{endpoint}: unusable HTTP 200 body: {problem}",
                                   status=reply.status, envelope=reply.envelope)
        return KeepaResponse(reply.status, reply.body, reply.envelope)

    @staticmethod
    def _raise_for_status(endpoint: str, reply: _Reply) -> None:
        """Raise the typed error of a final (non-200) status."""
        status, envelope = reply.status, reply.envelope
        if status == 200:
            return
        detail = _error_text(_error_object(reply.body)) or reply.problem or "no details"
        if reply.is_invalid_key:
            raise InvalidKeyError(
                f"/{endpoint}: Keepa rejected the API key (HTTP 400 invalidParameter, refill "
                "rate 0); check KEEPA_API_KEY", status=status, envelope=None)
        if status == 402:
            raise PaymentRequiredError(
                f"/{endpoint}: HTTP 402 payment required: the Keepa subscription of this key has "
                f"lapsed ({detail})", status=status, envelope=envelope)
        raise RequestRejectedError(f"/{endpoint}: HTTP {status} request rejected: {detail}",
                                   status=status, envelope=envelope)


# --------------------------------------------------------------------------- body helpers

def _decode(response: requests.Response) -> _Reply:
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        return _Reply(status, None, None,
                      f"body is not valid JSON ({len(response.content)} bytes, {kind})",
                      garbled=True)
    if not isinstance(body, dict):
        return _Reply(status, None, None, f"body is a JSON {type(body).__name__}, not an object")
    return _Reply(status, body, TokenEnvelope.from_json(body), None)


def _error_object(body: Mapping | None) -> Mapping:
    error = body.get("error") if body else None
    return error if isinstance(error, Mapping) else {}


def _error_text(error: Mapping) -> str:
    parts = [str(error[name]) for name in ("type", "message", "details") if error.get(name)]
    return redact(": ".join(parts))


def _describe(reply: _Reply) -> str:
    if reply.status is None:
        return reply.problem or "no response"
    return f"HTTP {reply.status}" + (f", {reply.problem}" if reply.problem else "")


def _check_deal_payload(body: dict) -> str | None:
    problem = _field_problem(body, "deals", dict, "an object")
    if problem:
        return problem
    dr = body["deals"].get("dr")
    if not isinstance(dr, list):
        return f"'deals.dr' is a {type(dr).__name__}, expected a list"
    return None


def _check_product_payload(body: dict) -> str | None:
    return _field_problem(body, "products", list, "a list")


def _field_problem(body: dict, name: str, kind: type, kind_text: str) -> str | None:
    """Why body[name] is missing or not of `kind` (described as `kind_text`), or None."""
    value = body.get(name)
    if value is None:
        return f"the '{name}' field is missing"
    if not isinstance(value, kind):
        return f"'{name}' is a {type(value).__name__}, expected {kind_text}"
    return None
