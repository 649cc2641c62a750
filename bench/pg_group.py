"""Group commit on PostgreSQL, A/B in one session: creates/s of the embedded store with each create
its own transaction (``group_commit = False``, as before: "batches_in_flight=0") and with the group commit at 1, 2 and 4
batches in flight (``GroupWriter.concurrency``).

One ``PostgresPersistenceProvider`` (the server's store, in process, default pool of 10) on a durable
(fsync on) throwaway cluster; ``--callers`` concurrent callers each create workflows (one pointer,
no name) for ``--seconds``; the modes alternate ``--rounds`` times so both see the same machine
state. Per round: creates/s, creates per committed transaction of the database (pg_stat_database
.xact_commit: every transaction, reads and the cluster services' included) and per WAL flush
(pg_stat_wal.wal_sync, when this PostgreSQL has the column) per create, items per group.

    .venv/bin/python bench/pg_group.py [--callers 64] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgcluster import PgCluster
from wfe_client.models import ExecutionPointer, WorkflowInstance
from wfe_sqlite import PostgresPersistenceProvider, open_provider


async def _counters(conn: asyncpg.Connection) -> tuple[int, int | None]:
    commits = int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    try:
        syncs = await conn.fetchval("SELECT wal_sync FROM pg_stat_wal")
    except asyncpg.PostgresError:
        syncs = None
    return commits, None if syncs is None else int(syncs)


async def _round(provider: PostgresPersistenceProvider, callers: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            w = WorkflowInstance.new("bench", 1, {"n": done, "pad": "x" * 200})
            w.next_execution = None
            w.execution_pointers = [ExecutionPointer.new(0)]
            await provider.create_new_workflow(w)
            done += 1

    await asyncio.gather(*(caller() for _ in range(callers)))
    return done


async def main(callers: int, seconds: float, rounds: int) -> None:
    cluster = PgCluster.start(durable=True)
    try:
        url = cluster.create_database("group")
        provider = await open_provider(url)
        assert isinstance(provider, PostgresPersistenceProvider)
        stats = await asyncpg.connect(url)
        try:
            await _round(provider, callers, 1.0)  # warm the pool and the statement caches
            print(f"callers={callers} seconds={seconds} pool={provider.store.config.pool_size} fsync=on")
            for _ in range(rounds):
                for batches_in_flight in (0, 1, 2, 4):
                    group = batches_in_flight > 0
                    provider.store.group_commit = group
                    writes = provider.store.writes
                    writes.concurrency = max(1, batches_in_flight)
                    batches, items = writes.batches, writes.items
                    await stats.execute("SELECT pg_stat_clear_snapshot()")
                    before = await _counters(stats)
                    started = time.perf_counter()
                    done = await _round(provider, callers, seconds)
                    elapsed = time.perf_counter() - started
                    await asyncio.sleep(0.6)  # let the statistics of the round be reported
                    await stats.execute("SELECT pg_stat_clear_snapshot()")
                    after = await _counters(stats)
                    commits = after[0] - before[0]
                    syncs = "n/a"
                    if before[1] is not None and after[1] is not None:
                        syncs = f"{done / max(1, after[1] - before[1]):.1f}"
                    grouped = (writes.items - items) / max(1, writes.batches - batches) if group else 1.0
                    print(
                        f"batches_in_flight={batches_in_flight} creates={done:6d} creates/s={done / elapsed:8.0f} "
                        f"creates/transaction={done / max(1, commits):5.1f} creates/wal_sync={syncs:>5} "
                        f"items/batch={grouped:5.1f}"
                    )
        finally:
            await stats.close()
            await provider.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.callers, args.seconds, args.rounds))
