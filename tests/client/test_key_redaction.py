"""The Keepa key travels in the URL; it must appear in no exception, repr or log record."""

import logging
import traceback

import pytest

from keepa_deals.keepa_api import KeepaClient, KeepaError, redact, register_secret

pytestmark = pytest.mark.timeout(40)

KEY = "Sk" * 32
EXPIRED = "Ex" * 32
UNKNOWN = "Un" * 32
ASIN = "B000000001"
FAULTS = ("http_5xx", "in_body_error", "malformed_json", "bad_gzip", "reset", "hang")


def only(kind=None, **knobs):
    """Fault settings with every fault off except `kind`, which fires on every paid request."""
    faults = {name: {"p": 0.0} for name in FAULTS}
    faults["forced_429"] = {"windows": []}
    if kind == "forced_429":
        faults["forced_429"] = {"windows": [{"from_s": 0, "to_s": 100_000}]}
    elif kind is not None:
        faults[kind] = {"p": 1.0, "endpoints": ["product", "deal"], **knobs}
    return {"faults": faults}


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception can show: message, repr, args, formatted traceback, and the
    same for any chained exception (even a suppressed context)."""
    texts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc), *map(repr, exc.args),
                  "".join(traceback.format_exception(exc))]
        exc = exc.__cause__ or exc.__context__
    return texts


def test_redact_masks_url_parameters_and_registered_secrets():
    register_secret("short")  # too short to register: only key= parameters are masked
    assert redact("GET /deal?key=abc123&domain=1 failed") == "GET /deal?key=***&domain=1 failed"
    assert redact("short story") == "short story"
    register_secret(KEY)
    assert redact(f"the key {KEY} leaked") == "the key *** leaked"


def test_the_key_appears_in_no_exception_repr_or_log_record(sim_factory, gate, caplog):
    caplog.set_level(logging.DEBUG)
    sim = sim_factory(keys={KEY: {}, EXPIRED: {"status": "expired"}})

    def client(key=KEY, url=sim.url):
        return KeepaClient(url, key, gate, connect_timeout_s=0.5, read_timeout_s=0.3,
                           max_transient_retries=1, max_consecutive_429=2,
                           retry_backoff_s=0.01)

    calls = [
        (only("http_5xx"), lambda: client().products([ASIN])),
        (only("http_5xx", html_body=False), lambda: client().deals({}, page=0)),
        (only("in_body_error"), lambda: client().products([ASIN])),
        (only("malformed_json", mode="truncate"), lambda: client().products([ASIN])),
        (only("malformed_json", mode="garbage"), lambda: client().products([ASIN])),
        (only("bad_gzip"), lambda: client().products([ASIN])),
        (only("reset"), lambda: client().products([ASIN])),
        (only("hang", ms=800), lambda: client().products([ASIN])),
        (only("forced_429"), lambda: client().products([ASIN])),
        (only(), lambda: client(EXPIRED).deals({}, page=0)),
        (only(), lambda: client(UNKNOWN).products([ASIN])),
        (only(), lambda: client(UNKNOWN).token_status()),
        (only(), lambda: client(url=sim.url + "/nowhere").products([ASIN])),
        (only(), lambda: client(url="http://127.0.0.1:9").products([ASIN])),
        (only(), lambda: client(url="http://[::1").products([ASIN])),
        (only(), lambda: client().deals({"dateRange": "4"}, page=0)),
    ]
    texts = []
    for faults, call in calls:
        sim.config(faults)
        with pytest.raises(KeepaError) as info:
            call()
        texts += exception_texts(info.value)
    texts.append(repr(client()))
    texts += [record.getMessage() for record in caplog.records]
    texts += [logging.Formatter().format(record) for record in caplog.records]

    assert len(caplog.records) > len(calls)  # the requests were logged (and at DEBUG by urllib3)
    assert any("key=***" in text for text in texts)  # URLs were there, and masked
    for secret in (KEY, EXPIRED, UNKNOWN):
        leaks = [text for text in texts if secret in text]
        assert leaks == [], leaks[:1]
    gate.assert_balanced()
