"""Command line: python -m keepa_sim --host 127.0.0.1 --port N [options]; serves until SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from keepa_sim import config as sim_config
from keepa_sim.server import SimulatorServer

_DESCRIPTION = """\
A local Keepa API simulator: /token, /deal (GET selection= or POST JSON), /product, with
Keepa's token bucket, paging, the deal snapshot cache, fault injection and a control API.
It serves until SIGTERM or SIGINT and is ready when GET /_sim/state answers 200.

Time: one simulator clock drives deal data (creationDate, lastUpdate, the 12 h window, date
ranges) and the refill ticks; it runs at wall speed (or frozen, see clock.mode): advance it with
POST /_sim/clock to move the deal universe. --speed N runs the whole simulator clock N times
faster than the wall clock, deal data and token ticks together, so a realistic Keepa day runs in
minutes: with --speed 60 one Keepa minute, and so one refill tick, lasts one wall second; the
token economics (rate per Keepa minute, 60 x rate ceiling, the 120 s deal cache) stay real in
Keepa time. `timestamp` is simulator time (epoch ms); `refillIn` is reported in wall ms
(simulator ms / N, rounded up) because clients sleep in their own time, so a client's refill
period is 60000 / N wall ms (the collector's KEEPA_REFILL_PERIOD_MS). Latencies, hangs and
processingTimeInMs are wall ms. --minute-ms instead shortens only the refill tick and the knobs
given in "token seconds" (sixtieths of a tick): schedule, forced 429 windows, phantom bursts, the
deal cache TTL; deal data keep the clock's pace.
"""

_EPILOG = """\
control API (absent with --no-control):
  GET  /_sim/state            clock, buckets and config (API keys shown as labels)
  POST /_sim/config           merge settings (the structure below)
  POST /_sim/clock            {"freeze": bool, "advance_ms": int, "set_ms": int} (simulator ms)
  POST /_sim/tokens           {"key", "tokens", "refill_rate", "flow_reduction", "status"}
  POST /_sim/reset            {"seed": int (optional)}: buckets, caches, counters, log afresh
  GET  /_sim/requests         ?since_id=N: the request log
  GET|POST /_sim/deals/truth  selection, since (Keepa minute): what /deal would return over
                              all pages now, free of charge (lastUpdate > since)

configuration file (--config FILE.json): a JSON object with the structure below; dotted names
are nested objects, e.g. {"clock": {"mode": "frozen"}, "faults": {"reset": {"p": 0.1}}}.
Command-line options override the file.

"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keepa_sim", description=_DESCRIPTION,
        epilog=_EPILOG + sim_config.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0 = any)")
    parser.add_argument("--config", metavar="FILE.json", help="configuration file (see below)")
    parser.add_argument("--seed", type=int, help="seed of the catalogue and fault draws (seed)")
    parser.add_argument("--minute-ms", type=int, metavar="M",
                        help="refill tick period in simulator ms (clock.minute_ms); below 60000 "
                             "the clock mode 'real' becomes 'scaled'")
    parser.add_argument("--speed", metavar="N",
                        help="simulator clock speed (clock.speed, > 0, default 1): deal data and "
                             "refill ticks run N times faster than the wall clock; refillIn "
                             "stays in wall ms (e.g. 60: a Keepa minute and a refill tick last "
                             "one wall second)")
    parser.add_argument("--refill-rate", type=int, metavar="R",
                        help="refill rate of keys that set none (default_refill_rate, 20)")
    parser.add_argument("--no-control", action="store_true",
                        help="disable the /_sim control API (paths answer 404)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> dict:
    """Defaults < config file < command line; raises ConfigError / OSError with a clear text."""
    overrides: dict = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            try:
                overrides = json.load(handle)
            except json.JSONDecodeError as error:
                raise sim_config.ConfigError(
                    f"{args.config}: not valid JSON ({error.msg}, line {error.lineno})") from None
    config = sim_config.load(overrides)
    command_line: dict = {}
    if args.seed is not None:
        command_line["seed"] = args.seed
    if args.refill_rate is not None:
        command_line["default_refill_rate"] = args.refill_rate
    clock: dict = {}
    if args.minute_ms is not None:
        mode = config["clock"]["mode"]
        clock.update(minute_ms=args.minute_ms,
                     mode="scaled" if mode == "real" and args.minute_ms < 60_000 else mode)
    if args.speed is not None:
        clock["speed"] = _number(args.speed, "clock.speed (--speed)")
    if clock:
        command_line["clock"] = clock
    return sim_config.merge(config, command_line)


def _number(text: str, knob: str) -> int | float:
    """An int or float from the command line; ConfigError naming `knob` otherwise."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise sim_config.ConfigError(f"{knob}: must be a number, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except (sim_config.ConfigError, OSError) as error:
        print(f"keepa_sim: {error}", file=sys.stderr)
        return 2
    try:
        server = SimulatorServer(config, args.host, args.port, control=not args.no_control)
    except OSError as error:
        print(f"keepa_sim: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"keepa_sim: serving on {server.url} (seed {config['seed']}, "
          f"minute {config['clock']['minute_ms']} ms, speed {config['clock']['speed']})",
          flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
