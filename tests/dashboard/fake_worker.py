"""A stand-in worker process for the stalled-lease test: heartbeats, a held lease, a live status.

Usage: python fake_worker.py REDIS_URL LOCK_NAME TASK TTL_S
Prints "ready" once it holds the lease, then keeps beating until it is killed.
"""

import sys
import time

from keepa_deals import heartbeats
from keepa_deals.locks import LeaseLock
from keepa_deals.redis_server import connect


def main() -> None:
    url, lock_name, task, ttl_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    client = connect(url)
    with LeaseLock(client, lock_name, ttl_s=ttl_s, task_id="fake-task-id"):
        print("ready", flush=True)
        written = 0
        while True:
            heartbeats.worker_heartbeat(client, "fake-worker")
            heartbeats.beat_heartbeat(client)
            heartbeats.set_task_status(client, task, "running", progress=written,
                                       detail=f"page {written}", run_id=1)
            written += 1
            time.sleep(0.5)


if __name__ == "__main__":
    main()
