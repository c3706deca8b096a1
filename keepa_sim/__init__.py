"""A local Keepa API simulator: `python -m keepa_sim --help`.

Exports `DEFAULT_API_KEY` (the key every simulator accepts unless configured otherwise),
`key_label` (how the simulator names a key in its state and logs) and `SimulatorServer`
(the simulator in-process: `SimulatorServer(config).start()`, `.url`, `.stop()`).
"""

from keepa_sim.config import DEFAULT_API_KEY
from keepa_sim.request_log import key_label

__all__ = ["DEFAULT_API_KEY", "SimulatorServer", "key_label"]


def __getattr__(name: str):
    """Import the server only when asked for: importing DEFAULT_API_KEY stays cheap."""
    if name == "SimulatorServer":
        from keepa_sim.server import SimulatorServer

        return SimulatorServer
    raise AttributeError(f"module 'keepa_sim' has no attribute {name!r}")
