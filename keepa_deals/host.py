"""The name of this host as every process reports it: heartbeats, lease owners, runs.

HOST_NAME (environment or .env) overrides the system's host name: two installations sharing
one machine (or containers that all call themselves "localhost") stay distinguishable on the
dashboard, and a lease owner's pid is only checked on the host that named it.
"""

from __future__ import annotations

import os
import socket
from functools import cache

from keepa_deals.config import ConfigError, load_settings


@cache
def host_name() -> str:
    """HOST_NAME from the settings, else the system's host name (read once per process)."""
    try:
        return load_settings().host_name
    except ConfigError:  # the process reports its configuration error itself
        return os.environ.get("HOST_NAME", "").strip() or socket.gethostname()
