"""Child processes of the cluster process tests: a lease holder, a long-polling SQLite consumer.

``python cluster_workers.py hold ADDRESS RESOURCE TTL_MS``: take the lease through
``GrpcLockProvider`` (renewed in the background), print ``held TOKEN``, then wait to be killed.

``python cluster_workers.py consume DB_URL SECONDS``: long-poll the INDEX queue of the file through
``SqliteQueueProvider`` (its own store, its own process) and print ``got ITEM EPOCH_SECONDS`` per item
until nothing arrived for ``SECONDS``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

from wfe_client import GrpcLockProvider, QueueType
from wfe_sqlite import SqlitePersistenceProvider, SqliteQueueProvider


async def hold(address: str, resource: str, ttl_ms: int) -> None:
    locks = await GrpcLockProvider.connect(address, ttl=timedelta(milliseconds=ttl_ms))
    lease = await locks.acquire(resource)
    if lease is None:
        print("refused", flush=True)
        return
    print(f"held {lease.fencing_token}", flush=True)
    await asyncio.sleep(3600)


async def consume(db_url: str, idle: float) -> None:
    store = await SqlitePersistenceProvider.open(db_url)
    try:
        queue = SqliteQueueProvider(store)
        print("ready", flush=True)
        while True:
            item = await queue.dequeue_work(QueueType.INDEX, wait=timedelta(seconds=idle))
            if item is None:
                return
            print(f"got {item} {time.time():.6f}", flush=True)
    finally:
        await store.close()


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "hold":
        asyncio.run(hold(args[0], args[1], int(args[2])))
    elif mode == "consume":
        asyncio.run(consume(args[0], float(args[1])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
