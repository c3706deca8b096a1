"""Fault injection (keepa-api.md §5.6): latency, broken answers and forced 429 windows.

`Faults.draw(endpoint)` decides at most one fault per admitted request, in the order hang, reset,
http_5xx, in_body_error, malformed_json, bad_gzip; each fires with its probability `p`, only on
its `endpoints`, at most `times` times (counted from when its knobs were last set). Draws come
from a `random.Random` seeded with the config seed, so a fixed request sequence replays
exactly. The body helpers produce what infrastructure failures look like on the wire.
"""

from __future__ import annotations

import gzip
import random
import threading
from dataclasses import dataclass

from keepa_sim.clock import SimClock

FAULT_ORDER = ("hang", "reset", "http_5xx", "in_body_error", "malformed_json", "bad_gzip")
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Time-out"}


@dataclass(frozen=True)
class Fault:
    kind: str
    charge: bool
    status: int = 200  # the HTTP status of a 5xx fault
    html: bool = False  # 5xx with an HTML body
    mode: str = ""  # malformed_json mode
    hang_ms: float = 0.0
    error_type: str = ""  # in_body_error type


class Faults:
    def __init__(self, clock: SimClock, config: dict):
        self.clock = clock
        self._lock = threading.Lock()
        self._config: dict = {}
        self._fired: dict[str, int] = {}
        self._windows: list[tuple[int, int]] = []
        self._rng = random.Random()
        self.configure(config, reset=True)

    def configure(self, config: dict, *, reset: bool = False) -> None:
        """Apply knobs; counters restart for faults whose knobs changed (or all on reset)."""
        with self._lock:
            old = self._config.get("faults", {})
            faults = config["faults"]
            for kind in FAULT_ORDER:
                if reset or faults[kind] != old.get(kind):
                    self._fired[kind] = 0
            if reset or faults["forced_429"] != old.get("forced_429"):
                now = self.clock.now_ms()
                self._windows = [(now + self.clock.token_seconds_ms(w["from_s"]),
                                  now + self.clock.token_seconds_ms(w["to_s"]))
                                 for w in faults["forced_429"]["windows"]]
            if reset or config["seed"] != self._config.get("seed"):
                self._rng = random.Random(config["seed"])
            self._config = config

    def forced_429(self) -> bool:
        now = self.clock.now_ms()
        return any(start <= now < end for start, end in self._windows)

    def latency_ms(self, endpoint: str) -> float:
        knobs = self._config["latency"]
        with self._lock:
            base = knobs["per_endpoint"].get(endpoint, knobs["base_ms"])
            delay = base + self._rng.random() * knobs["jitter_ms"]
            if knobs["slow_tail"]["p"] and self._rng.random() < knobs["slow_tail"]["p"]:
                delay += knobs["slow_tail"]["ms"]
        return delay * knobs["latency_scale"]

    def draw(self, endpoint: str) -> Fault | None:
        faults = self._config["faults"]
        with self._lock:
            for kind in FAULT_ORDER:
                knobs = faults[kind]
                if not knobs["p"] or (knobs["endpoints"] and endpoint not in knobs["endpoints"]):
                    continue
                if knobs["times"] is not None and self._fired[kind] >= knobs["times"]:
                    continue
                if self._rng.random() >= knobs["p"]:
                    continue
                self._fired[kind] += 1
                return self._fault(kind, knobs)
        return None

    def _fault(self, kind: str, knobs: dict) -> Fault:
        if kind == "http_5xx":
            codes = list(knobs["codes"])
            status = int(self._rng.choices(codes, weights=[knobs["codes"][c] for c in codes])[0])
            return Fault(kind, knobs["charge"], status=status, html=knobs["html_body"])
        if kind == "malformed_json":
            return Fault(kind, knobs["charge"], mode=self._rng.choice(knobs["mode"]))
        if kind == "hang":
            return Fault(kind, knobs["charge"], hang_ms=knobs["ms"])
        if kind == "in_body_error":
            return Fault(kind, knobs["charge"], error_type=knobs["type"])
        return Fault(kind, knobs["charge"])

    def fired(self) -> dict[str, int]:
        with self._lock:
            return dict(self._fired)

    def random_bytes(self, count: int) -> bytes:
        with self._lock:
            return self._rng.randbytes(count)


def html_error_page(status: int) -> bytes:
    """What a proxy in front of the API answers on an infrastructure failure."""
    title = f"{status} {_REASONS.get(status, 'Server Error')}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}"
            f"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()


def truncated(body: bytes) -> bytes:
    """A JSON body cut in the middle (the Content-Length announces the cut length)."""
    return body[: max(1, len(body) // 2)]


def corrupt_gzip(body: bytes) -> bytes:
    """A stream with a valid gzip header whose deflate data are garbage."""
    packed = gzip.compress(body, compresslevel=1, mtime=0)
    return packed[:10] + bytes(b ^ 0x5A for b in packed[10:])
