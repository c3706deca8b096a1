"""The simulator's state, independent of HTTP: config, clock, buckets, catalogues, engines, log.

`reconfigure(overrides)` merges knobs at runtime (ConfigError leaves everything unchanged);
`reset(seed)` restores every bucket, cache, counter and the log (the clock keeps running).
"""

from __future__ import annotations

import threading

from keepa_sim import config as sim_config
from keepa_sim.catalogue import Catalogue
from keepa_sim.clock import SimClock
from keepa_sim.deal_engine import DealEngine
from keepa_sim.faults import Faults
from keepa_sim.products import ProductService
from keepa_sim.request_log import RequestLog
from keepa_sim.token_engine import TokenEngine

_FIXED_AFTER_START = ("minute_ms", "speed", "start_ms")


class Simulator:
    def __init__(self, config: dict):
        self.config = config
        clock = config["clock"]
        self.clock = SimClock(minute_ms=clock["minute_ms"], speed=clock["speed"],
                              frozen=sim_config.is_frozen(config), skew_ms=clock["skew_ms"],
                              start_ms=clock["start_ms"])
        self.stopping = threading.Event()  # set on shutdown: interrupts latency and hangs
        self._catalogue_lock = threading.Lock()
        self._catalogues: dict[int, Catalogue] = {}
        self.tokens = TokenEngine(self.clock, config)
        self.deals = DealEngine(self.clock, self.catalogue, config)
        self.products = ProductService(self.catalogue, config)
        self.faults = Faults(self.clock, config)
        self.log = RequestLog(config["control"]["request_log_size"])

    def catalogue(self, domain: int) -> Catalogue | None:
        """The catalogue of a simulated domain, built on first use; None for other domains."""
        config = self.config
        if domain not in config["catalogue"]["domains"]:
            return None
        with self._catalogue_lock:
            catalogue = self._catalogues.get(domain)
            if catalogue is None:
                catalogue = Catalogue(config["seed"], domain, config["catalogue"]["n_products"])
                self._catalogues[domain] = catalogue
            return catalogue

    def catalogue_sizes(self) -> dict[int, int]:
        with self._catalogue_lock:
            return {domain: len(c.products) for domain, c in self._catalogues.items()}

    def reconfigure(self, overrides: dict) -> dict:
        """Merge knobs into the running simulator; returns the new configuration."""
        new = sim_config.merge(self.config, overrides)
        for name in _FIXED_AFTER_START:
            if new["clock"][name] != self.config["clock"][name]:
                raise sim_config.ConfigError(
                    f"clock.{name}: fixed after start; restart the simulator to change it")
        self._apply(new, reset=False)
        return new

    def reset(self, seed: int | None = None) -> None:
        new = self.config if seed is None else sim_config.merge(self.config, {"seed": seed})
        self._apply(new, reset=True)
        self.log.clear()

    def _apply(self, new: dict, *, reset: bool) -> None:
        old = self.config
        data_changed = (new["seed"] != old["seed"] or new["catalogue"] != old["catalogue"])
        if data_changed:
            with self._catalogue_lock:
                self._catalogues.clear()
        self.config = new
        self.clock.skew_ms = new["clock"]["skew_ms"]
        if new["clock"]["mode"] != old["clock"]["mode"]:
            self.clock.freeze(sim_config.is_frozen(new))
        self.tokens.configure(new, reset=reset)
        self.deals.configure(new, data_changed=data_changed or reset)
        self.products.configure(new)
        self.faults.configure(new, reset=reset)
        self.log.resize(new["control"]["request_log_size"])
