"""Figures of the cluster services, against a real server process (``python bench/cluster.py``).

- wake-up: a consumer process long-polls ``DequeueWork``; a producer process calls ``QueueWork``
  (or ``CreateEvent``, which the server queues itself) once every 20 ms; the latency is from just
  before the producer's call to the consumer holding the id (wall clock, one machine);
- the same through ``SqliteQueueProvider`` in two processes on one file (no server);
- locks: ``AcquireLock`` + ``ReleaseLock`` round trips, each caller on its own resource, at 1 and 64
  concurrent callers (64 = 4 processes x 16 coroutines), for a few seconds each.

Prints p50 / p99 in milliseconds. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from wfe_client import Event, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider, QueueType
from wfe_sqlite import SqlitePersistenceProvider, SqliteQueueProvider

WFE_SQLITE = Path(sys.executable).parent / "wfe-sqlite"


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms  (n={len(values)})"


# -- wake-up ------------------------------------------------------------------------------------------


async def _consume_grpc(address: str, queue: QueueType, count: int, out: Any) -> None:
    async with GrpcPersistenceProvider.connect(address) as store:
        q = GrpcQueueProvider(store)
        out.put("ready")
        got: dict[str, float] = {}
        while len(got) < count:
            item = await q.dequeue_work(queue, wait=timedelta(seconds=10))
            if item is None:
                break
            got.setdefault(item, time.time())  # the first hand-out (the sweep may hand it out again)
            if queue == QueueType.EVENT:
                # As a host does: a processed event is done (else the sweep queues it again after
                # the interval, ahead of newer ones).
                await store.mark_event_processed(item)
        out.put(got)


async def _consume_sqlite(url: str, count: int, out: Any) -> None:
    store = await SqlitePersistenceProvider.open(url)
    try:
        q = SqliteQueueProvider(store)
        out.put("ready")
        got: dict[str, float] = {}
        while len(got) < count:
            item = await q.dequeue_work(QueueType.INDEX, wait=timedelta(seconds=10))
            if item is None:
                break
            got.setdefault(item, time.time())  # the first hand-out (the sweep may hand it out again)
        out.put(got)
    finally:
        await store.close()


def consumer(kind: str, target: str, queue: str, count: int, out: Any) -> None:
    if kind == "grpc":
        asyncio.run(_consume_grpc(target, QueueType[queue], count, out))
    else:
        asyncio.run(_consume_sqlite(target, count, out))


async def _produce(kind: str, target: str, how: str, count: int) -> dict[str, float]:
    sent: dict[str, float] = {}
    if kind == "sqlite":
        store = await SqlitePersistenceProvider.open(target)
        try:
            q = SqliteQueueProvider(store)
            for i in range(count):
                item = f"x-{i}"
                sent[item] = time.time()
                await q.queue_work(item, QueueType.INDEX)
                await asyncio.sleep(0.02)
        finally:
            await store.close()
        return sent
    async with GrpcPersistenceProvider.connect(target) as store:
        q = GrpcQueueProvider(store)
        for i in range(count):
            if how == "queue_work":
                item = f"x-{i}"
                sent[item] = time.time()
                await q.queue_work(item, QueueType.INDEX)
            else:
                event = Event.new("bench.wake", str(i), {"i": i})
                sent[event.id] = time.time()
                await store.create_event(event)
            await asyncio.sleep(0.02)
    return sent


def wake_up(kind: str, target: str, how: str, count: int) -> list[float]:
    out: Any = mp.Queue()
    queue = "EVENT" if how == "create_event" else "INDEX"
    process = mp.Process(target=consumer, args=(kind, target, queue, count, out))
    process.start()
    assert out.get(timeout=60) == "ready"
    time.sleep(0.3)
    sent = asyncio.run(_produce(kind, target, how, count))
    got: dict[str, float] = out.get(timeout=120)
    process.join(30)
    return [got[item] - at for item, at in sent.items() if item in got]


# -- locks --------------------------------------------------------------------------------------------


async def _lock_load(address: str, callers: int, seconds: float, tag: str) -> list[float]:
    async with GrpcPersistenceProvider.connect(address) as store:
        locks = GrpcLockProvider(store, owner=f"bench-{tag}")
        latencies: list[float] = []
        start = time.monotonic() + 0.5
        stop = start + seconds

        async def caller(n: int) -> None:
            resource = f"bench-{tag}-{n}"
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            while time.monotonic() < stop:
                began = time.perf_counter()
                assert await locks.acquire_lock(resource)
                await locks.release_lock(resource)
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(caller(n) for n in range(callers)))
        await locks.close()
        return latencies


def lock_worker(address: str, callers: int, seconds: float, tag: str, out: Any) -> None:
    out.put(asyncio.run(_lock_load(address, callers, seconds, tag)))


def locks(address: str, callers: int, seconds: float) -> tuple[list[float], float]:
    processes = 1 if callers == 1 else 4
    out: Any = mp.Queue()
    workers = [
        mp.Process(target=lock_worker, args=(address, callers // processes, seconds, f"{callers}-{i}", out))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    for _ in workers:
        latencies.extend(out.get(timeout=seconds + 120))
    for worker in workers:
        worker.join(30)
    return latencies, len(latencies) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300, help="wake-ups measured per kind")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of lock load per concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wfe-cluster-bench-") as tmp:
        server = subprocess.Popen(
            [str(WFE_SQLITE), "serve", "--db", f"sqlite://{tmp}/bench.db", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            address = server.stdout.readline().split("listening on ", 1)[1].strip()
            print(f"cores: {os.cpu_count()}; server {address}; wall-clock latencies between processes")
            for how in ("queue_work", "create_event"):
                figures = _percentiles(wake_up("grpc", address, how, args.count))
                print(f"wake-up {how:>12} -> waiting DequeueWork (gRPC):   {figures}")
            shared = f"sqlite://{tmp}/shared.db"
            print(
                f"wake-up   queue_work -> waiting dequeue (SqliteQueueProvider, 2 processes): "
                f"{_percentiles(wake_up('sqlite', shared, 'queue_work', args.count))}"
            )
            for callers in (1, 64):
                latencies, rate = locks(address, callers, args.seconds)
                print(f"lock acquire+release, {callers:>2} callers: {_percentiles(latencies)}  {rate:.0f}/s")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
