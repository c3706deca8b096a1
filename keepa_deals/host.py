"""The name of this host as every process reports it: heartbeats, lease owners, runs.

HOST_NAME overrides the system's host name: two installations sharing one machine (or
containers that all call themselves "localhost") stay distinguishable on the dashboard, and a
lease owner's pid is only checked on the host that named it.
"""

from __future__ import annotations

import os
import socket


def host_name() -> str:
    """HOST_NAME from the environment, else the system's host name."""
    return os.environ.get("HOST_NAME", "").strip() or socket.gethostname()
