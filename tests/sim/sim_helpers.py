"""Raw HTTP calls against a simulator from the `sim_factory` fixture, as a client sends them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from support import wait_until

from keepa_deals.redis_server import free_port
from keepa_sim import DEFAULT_API_KEY

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FROZEN_START_MS = 1_795_000_000_000  # 2026-11-18, a fixed simulator time for frozen clocks
FROZEN = {"mode": "frozen", "start_ms": FROZEN_START_MS}
MINUTE_MS = 60_000
# A catalogue small enough to build fast, large enough for several /deal pages.
SMALL = {"n_products": 1500, "domains": [1]}
# NEW price drops against the 90-day average: ~2-3 pages on the SMALL catalogue.
BROAD = {"domainId": 1, "priceTypes": [1], "dateRange": 3}
# The project's production-like query (keepa-api.md §2.2).
PRODUCTION = {"domainId": 1, "priceTypes": [2], "dateRange": 3, "sortType": 4,
              "isRangeEnabled": True, "isFilterEnabled": True,
              "deltaPercentRange": [10, 2147483647], "salesRankRange": [10000, 10000000],
              "currentRange": [2000, 45100], "minRating": 10, "singleVariation": True,
              "warehouseConditions": [2, 3, 4, 5], "includeCategories": [283155]}


def call(sim, path: str, *, key: str | None = None, method: str = "GET", timeout: float = 10,
         json_body=None, headers=None, **params) -> requests.Response:
    """One request with the simulator's key (or `key`), without connection reuse."""
    params = {"key": sim.key if key is None else key, **params}
    return requests.request(method, sim.url + path, params=params, json=json_body,
                            headers=headers, timeout=timeout)


def deal(sim, selection: dict, page: int = 0, **kwargs) -> requests.Response:
    return call(sim, "/deal", selection=json.dumps({**selection, "page": page}), **kwargs)


def products(sim, asins: list[str], **params) -> requests.Response:
    return call(sim, "/product", domain=1, asin=",".join(asins), **params)


def all_pages(sim, selection: dict) -> list[list[dict]]:
    """Every page of a deal query until a short page."""
    pages = []
    while True:
        deals = deal(sim, selection, page=len(pages)).json()["deals"]["dr"]
        pages.append(deals)
        if len(deals) < 150:
            return pages


def tokens_left(sim) -> int:
    return call(sim, "/token").json()["tokensLeft"]


def run_sim(*args: str) -> tuple[subprocess.Popen, str]:
    """`python -m keepa_sim ARGS` on a free port, once it answers: (process, base URL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keepa_sim", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            pytest.fail(f"simulator exited: {process.stderr.read()}")
        try:
            return requests.get(url + "/token", params={"key": DEFAULT_API_KEY}, timeout=1)
        except requests.RequestException:
            return None

    wait_until(ready, 20, "the simulator to answer")
    return process, url
