"""Pieces the benchmarks share: private servers, a no-op token gate, table rows.

Importing this module puts the project root on sys.path, so a bench run as
`.venv/bin/python bench/X.py` can import `keepa_deals` and `keepa_sim` after it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from keepa_deals import deals  # noqa: E402
from keepa_deals.constants import DEAL_PAGE_COST  # noqa: E402
from keepa_deals.keepa_api import KeepaClient, KeepaError  # noqa: E402
from keepa_deals.redis_server import PrivateRedis, free_port  # noqa: E402

_SIM_START_TIMEOUT_S = 30


class NoGate:
    """A token gate for naive policies without a shared bucket: every request goes out at once."""

    def reserve(self, cost, **_):
        return None

    def reconcile(self, reservation, envelope, *, status=None):
        pass

    def sync(self, envelope):
        pass


class CheckAndAbort:
    """How the naive collectors reach Keepa (FAILURES T3, T4, T6): no shared bucket; before a
    paid call read /token and give up, sleeping one refill period, when the balance looks too
    low. `page()` is None when it gave up or the call failed."""

    def __init__(self, url: str, key: str, query: dict, *, period_s: float,
                 stop: threading.Event):
        self.client = KeepaClient(url, key, NoGate(), max_consecutive_429=1,
                                  max_transient_retries=1, retry_backoff_s=0.05)
        self.period_s = period_s
        self.stop = stop
        self._query = query
        self._parse = {"domain_id": 1, "price_type": deals.selection_price_type(query),
                       "date_range": deals.selection_date_range(query)}

    def tokens_left(self) -> int | None:
        try:
            return self.client.token_status().tokens_left
        except KeepaError:
            return None

    def afford(self, cost: int) -> bool:
        left = self.tokens_left()
        if left is not None and left >= cost:
            return True
        self.stop.wait(self.period_s)  # "not enough tokens, try again in a minute"
        return False

    def page(self, number: int, sort_type: int) -> deals.ParsedPage | None:
        if not self.afford(DEAL_PAGE_COST):
            return None
        try:
            response = self.client.deals({**self._query, "sortType": sort_type}, page=number)
        except KeepaError:
            return None
        return deals.parse_deal_page(response.payload, **self._parse)

    def wait_until_affordable(self, cost: int) -> bool:
        """Poll /token until `cost` looks affordable; False when told to stop first."""
        while not self.stop.is_set():
            if self.afford(cost):
                return True
        return False


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """The URL of a redis-server on a free port with its data under `workdir`; stopped after."""
    server = PrivateRedis(workdir / "redis", port=free_port())
    url = server.start()
    try:
        yield url
    finally:
        server.stop(save=False)


class SimulatorProcess:
    """`python -m keepa_sim` on a free port with `config`; its output goes to
    `workdir/sim-<name>.log`. Exits the bench with a clear message when it does not answer."""

    def __init__(self, workdir: Path, name: str, config: dict):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config_path = workdir / f"sim-{name}.json"
        config_path.write_text(json.dumps(config))
        log_path = workdir / f"sim-{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keepa_sim", "--host", "127.0.0.1", "--port", str(port),
             "--config", str(config_path)],
            cwd=ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _SIM_START_TIMEOUT_S
        while not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise SystemExit(f"the simulator did not start; see {log_path}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return requests.get(self.url + "/_sim/state", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def state(self) -> dict:
        return requests.get(self.url + "/_sim/state", timeout=10).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def table_row(cells: Sequence[str], widths: Sequence[int], sep: str = "") -> str:
    """One line of a results table: the first cell left-aligned, the others right-aligned, each
    padded to its width and joined by `sep`."""
    first, *rest = cells
    return f"{first:<{widths[0]}}" + "".join(
        f"{sep}{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True))
