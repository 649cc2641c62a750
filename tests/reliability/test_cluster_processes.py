"""The cluster services across real processes: dead lease holders, server restarts, one file shared."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from reliability_support import start_server

from wfe_client import GrpcLockProvider, GrpcQueueProvider, QueueType
from wfe_sqlite import SqlitePersistenceProvider, SqliteQueueProvider

WORKERS = Path(__file__).resolve().parent / "cluster_workers.py"


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return await asyncio.to_thread(process.stdout.readline)


async def test_a_lease_whose_owner_is_sigkilled_is_free_once_its_ttl_has_passed(tmp_path: Path) -> None:
    server = start_server(f"sqlite://{tmp_path / 'wfe.db'}", tmp_path / "server.log")
    holder = _child("hold", server.address, "wf-dead", "1000")
    try:
        line = await _line(holder)
        assert line.startswith("held "), (line, holder.stderr.read() if holder.stderr else "")
        async with GrpcLockProvider.connect(server.address, owner="survivor") as survivor:
            # Alive, the holder renews: the lease holds over several TTLs.
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                assert not await survivor.acquire_lock("wf-dead")
                await asyncio.sleep(0.1)
            holder.kill()
            holder.wait(30)
            killed = time.monotonic()
            while not await survivor.acquire_lock("wf-dead"):
                assert time.monotonic() - killed < 5, "the dead owner's lease never ran out"
                await asyncio.sleep(0.02)
            freed_after = time.monotonic() - killed
            # Its last renewal was at most a third of the TTL before the kill.
            assert 0.5 <= freed_after <= 1.5, freed_after
            lease = survivor.lease("wf-dead")
            assert lease is not None and lease.fencing_token > int(line.split()[1])
    finally:
        holder.kill()
        server.sigkill()


async def test_queue_items_and_leases_survive_a_sigkill_of_the_server(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'wfe.db'}"
    server = start_server(url, tmp_path / "server.log")
    try:
        async with (
            GrpcQueueProvider.connect(server.address) as queue,
            GrpcLockProvider.connect(server.address, owner="before", ttl=timedelta(seconds=3)) as before,
        ):
            for item in ("first", "second"):
                assert await queue.queue_work(item, QueueType.INDEX)
            lease = await before._acquire("held-across")  # no renewal: it lives exactly its TTL
            assert lease is not None
            acquired_at = time.monotonic()
            server.sigkill()
    finally:
        server.sigkill()
    restarted = start_server(url, tmp_path / "server.log")
    try:
        async with (
            GrpcQueueProvider.connect(restarted.address) as queue,
            GrpcLockProvider.connect(restarted.address, owner="after") as after,
        ):
            assert [await queue.dequeue_work(QueueType.INDEX) for _ in range(3)] == ["first", "second", None]
            assert not await after.acquire_lock("held-across")  # still held after the restart
            while not await after.acquire_lock("held-across"):
                await asyncio.sleep(0.05)
                assert time.monotonic() - acquired_at < 8
            assert time.monotonic() - acquired_at >= 2.8  # not before its TTL
            taken = after.lease("held-across")
            assert taken is not None and taken.fencing_token > lease.fencing_token
    finally:
        restarted.sigkill()


async def test_sqlite_queue_providers_in_several_processes_share_one_file(tmp_path: Path) -> None:
    """Each item goes to one consumer process; a waiting consumer in another process wakes promptly."""
    url = f"sqlite://{tmp_path / 'shared.db'}"
    store = await SqlitePersistenceProvider.open(url)
    consumers = [_child("consume", url, "3") for _ in range(3)]
    received: list[tuple[str, float]] = []
    lock = threading.Lock()

    def read(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("got "):
                _, item, at = line.split()
                with lock:
                    received.append((item, float(at)))

    try:
        for process in consumers:
            assert (await _line(process)).strip() == "ready"
        readers = [threading.Thread(target=read, args=(p,), daemon=True) for p in consumers]
        for reader in readers:
            reader.start()
        producer = SqliteQueueProvider(store)
        sent: dict[str, float] = {}
        for i in range(150):
            item = f"item-{i}"
            sent[item] = time.time()
            await producer.queue_work(item, QueueType.INDEX)
            await asyncio.sleep(0.01)
        for process in consumers:
            await asyncio.to_thread(process.wait, 30)
        for reader in readers:
            reader.join(10)
    finally:
        for process in consumers:
            process.kill()
        await store.close()
    items = [item for item, _ in received]
    assert sorted(items) == sorted(sent), (len(items), len(set(items)))
    latencies = sorted(at - sent[item] for item, at in received)
    p50 = statistics.median(latencies)
    assert p50 < 0.1, f"p50 wake-up across processes {p50 * 1000:.1f} ms"
