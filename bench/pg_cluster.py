"""The cluster services across servers on PostgreSQL: wake-up latency and lock round trips.

Starts its own durable throwaway PostgreSQL and two ``wfe-sqlite serve`` processes on it, then
measures (p50/p99 over ``--samples``):

- wake-up: a ``dequeue_work`` long poll waiting on server A, the item queued through server B;
  from just before the ``queue_work`` call to the dequeue's return (the notification path);
- the same with producer and consumer on one server;
- lock acquire + release round trip on one server, 1 caller.

    .venv/bin/python bench/pg_cluster.py [--samples 200] [--backend postgres|sqlite]

``--backend sqlite`` runs the same on two server processes over one SQLite file, for comparison on
the same machine at the same time (there a waiting server notices another process's commit within
its 20 ms ``PRAGMA data_version`` watch).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import start_server_process
from pgcluster import PgCluster
from wfe_client import GrpcLockProvider, GrpcQueueProvider, QueueType


def _figures(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name}: p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms ({len(ordered)} samples)"


async def _wake(consumer: GrpcQueueProvider, producer: GrpcQueueProvider, samples: int) -> list[float]:
    latencies = []
    for i in range(samples):
        waiting = asyncio.create_task(consumer.dequeue_work(QueueType.INDEX, wait=timedelta(seconds=10)))
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await producer.queue_work(f"item-{i}", QueueType.INDEX)
        got = await waiting
        latencies.append(time.perf_counter() - started)
        assert got == f"item-{i}", got
    return latencies


async def _locks(address: str, samples: int) -> list[float]:
    times = []
    async with await GrpcLockProvider.connect(address, "bench") as locks:
        for i in range(samples):
            started = time.perf_counter()
            assert await locks.acquire_lock(f"r-{i}")
            await locks.release_lock(f"r-{i}")
            times.append(time.perf_counter() - started)
    return times


async def main(samples: int, backend: str) -> None:
    cluster = PgCluster.start(durable=True) if backend == "postgres" else None
    servers = []
    try:
        if cluster is not None:
            url = cluster.create_database("bench")
        else:
            url = f"sqlite://{tempfile.mkdtemp(prefix='wfe-bench-')}/wfe.db"
        servers = [start_server_process(url) for _ in range(2)]
        a, b = (s.address for s in servers)
        consumer = await GrpcQueueProvider.connect(a)
        producer = await GrpcQueueProvider.connect(b)
        same = await GrpcQueueProvider.connect(a)
        try:
            await _wake(consumer, producer, 20)  # warm-up
            print(
                _figures(
                    "wake-up across servers (queue on B, long poll on A)", await _wake(consumer, producer, samples)
                )
            )
            print(_figures("wake-up on one server", await _wake(consumer, same, samples)))
            print(_figures("lock acquire+release, 1 caller", await _locks(a, samples)))
        finally:
            for queue in (consumer, producer, same):
                await queue.close()
    finally:
        for server in servers:
            server.kill()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.samples, arguments.backend))
