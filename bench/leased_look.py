"""What one look of a queue's waiting leased dequeues costs when each waiter needs leases of its own.

A look (``LongPoll``'s take: one transaction, holding every other write of a SQLite server up) hands
items to all waiting dequeues of a queue at once. Waiters that share prefixes (WFE hosts) share the
look's lease checks; waiters whose prefixes differ cannot, and each checks every item it could take.
This queues ITEMS items, holds every waiter's lease on every item (``p{w}:{item}``, owner "holder"),
and times a take for 1 waiter and for WAITERS waiters (best of 3; nothing is handed out).

``python bench/leased_look.py [--waiters 300] [--items 300] [--db sqlite:///path | postgresql://...]``
(default: a SQLite file in a temporary directory). Run with ``PYTHONPATH=server:client/python``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from wfe_sqlite import open_provider
from wfe_sqlite._cluster import Cluster
from wfe_sqlite._cluster_api import LeaseAsk
from wfe_sqlite._long_poll import LongPoll

QUEUE = "INDEX"


async def _best_take(poll: LongPoll, asks: list[LeaseAsk | None]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        results = await poll._take(QUEUE, asks)
        best = min(best, time.perf_counter() - started)
        assert results == [None] * len(asks), "an item was handed out: the set-up is wrong"
    return best


async def main(url: str, waiters: int, items: int) -> None:
    store = await open_provider(url)
    try:
        cluster = store.cluster
        poll = cluster.queues._poll if isinstance(cluster, Cluster) else cluster._poll  # type: ignore[attr-defined]
        names = [f"held-{i:04}" for i in range(items)]
        for name in names:
            await cluster.queue_work(QUEUE, name)
        for waiter in range(waiters):
            for start in range(0, items, 16):
                chunk = [f"p{waiter}:{name}" for name in names[start : start + 16]]
                assert await cluster.acquire_locks(chunk, "holder", 600_000_000) is not None
        asks: list[LeaseAsk | None] = [LeaseAsk(f"waiter-{i}", 30_000_000, (f"p{i}:",)) for i in range(waiters)]
        one, many = await _best_take(poll, asks[:1]), await _best_take(poll, asks)
        backend = "postgresql" if url.startswith("postgres") else "sqlite"
        print(f"{backend}: {items} held items, a take for 1 waiter {one * 1000:.1f} ms,", end=" ")
        print(f"for {waiters} {many * 1000:.1f} ms")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=300)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = args.db or f"sqlite:///{Path(scratch) / 'look.db'}"
        asyncio.run(main(db, args.waiters, args.items))
