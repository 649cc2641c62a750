"""A get of one workflow of COUNT pointers on PostgreSQL: the store's read time and how long it held the event loop.

The embedded store (``PostgresStore``) on the database at URL creates a workflow of each COUNT
pointers, then reads it ROUNDS times (``PostgresStore.workflow``, what a get, a dequeue's read and a
batch get run). Per count: the median and worst read, and the longest the event loop went without
running a 1 ms ticker during a read (how long the read held every other call of the server up).
Which code runs is PYTHONPATH's: run it alternately with the old and the new server module to compare
them in one session (BENCHMARKS.md, "a PostgreSQL get of many pointers reads them as rows").

    python bench/pg_read.py URL COUNT[,COUNT...] [ROUNDS] [LABEL]

``ROWS_ABOVE=N`` sets the new store's ``_ROWS_ABOVE`` (above it the pointers are read as rows, up to it
in the workflow's row): to measure either way at one count.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from wfe_client.models import ExecutionPointer, WorkflowInstance
from wfe_sqlite import _postgres_store
from wfe_sqlite._postgres_store import PostgresConfig, PostgresStore
from wfe_sqlite._rows import pointer_rows, workflow_row


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def main(url: str, counts: list[int], rounds: int, label: str) -> None:
    if "ROWS_ABOVE" in os.environ:
        _postgres_store._ROWS_ABOVE = int(os.environ["ROWS_ABOVE"])
    store = await PostgresStore.open(PostgresConfig(url))
    try:
        for count in counts:
            w = WorkflowInstance.new("pg-read", 1, {"n": 1})
            w.next_execution = None
            w.execution_pointers = [
                ExecutionPointer(
                    id=f"p{i}", step_id=i % 7, active=True, step_name="step", children=[f"c{i}"], scope=["a"]
                )
                for i in range(count)
            ]
            row = workflow_row(w)
            await store.create_workflow(row, pointer_rows(row.id, w.execution_pointers))
            await store.workflow(row.id)  # the statements prepared on the connection
            times: list[float] = []
            held: list[float] = []
            for _ in range(rounds):
                gaps: list[float] = []
                stop = asyncio.Event()
                ticker = asyncio.create_task(_ticker(gaps, stop))
                await asyncio.sleep(0.005)
                started = time.perf_counter()
                _, pointers = await store.workflow(row.id)
                times.append(time.perf_counter() - started)
                stop.set()
                await ticker
                held.append(max(gaps))
                assert len(pointers) == count
            await store.run(lambda conn, wid=row.id: conn.execute("DELETE FROM workflows WHERE id = $1", wid))
            ms = sorted(t * 1000 for t in times)
            print(
                f"{label:>4} {count:>7} pointers: get median {statistics.median(ms):9.2f} ms max {ms[-1]:9.2f} ms "
                f"| loop held up to {max(held) * 1000:8.1f} ms",
                flush=True,
            )
    finally:
        await store.close()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    asyncio.run(
        main(
            sys.argv[1],
            [int(c) for c in sys.argv[2].split(",")],
            int(sys.argv[3]) if len(sys.argv) > 3 else 20,
            sys.argv[4] if len(sys.argv) > 4 else "",
        )
    )
