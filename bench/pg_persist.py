"""A persist that changes one pointer, on PostgreSQL: time, WAL bytes and pointer rows written.

The embedded store (``PostgresStore``, group commit on, one caller) on the database at URL creates a
workflow of COUNT pointers, then persists it ROUNDS times, each time with one pointer changed (a
different one each time, as a step completes). Per persist: the median and 90th percentile of the
call's time, the WAL it wrote (``pg_current_wal_lsn`` before and after, the server idle otherwise)
and the pointer rows it wrote (of the workflow's, those whose ``xmin`` is its transaction). Which code runs is
PYTHONPATH's: run it alternately with the old and the new server module to compare them in one
session (BENCHMARKS.md, "PostgreSQL persist writes only the pointers that change").

    python bench/pg_persist.py URL COUNT [ROUNDS] [LABEL]

``COMPARE_ABOVE=N`` sets the new store's ``_COMPARE_POINTERS`` (above it the stored pointers are read
and compared in Python, below it in the statement): to measure either way at one count.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import asyncpg

from wfe_client.models import ExecutionPointer, WorkflowInstance
from wfe_sqlite import _postgres_store
from wfe_sqlite._postgres_store import PostgresConfig, PostgresStore
from wfe_sqlite._rows import pointer_rows, workflow_row

WRITTEN = (
    "SELECT count(*) FROM execution_pointers p, workflows w WHERE p.workflow_id = $1 AND w.id = $1 AND p.xmin = w.xmin"
)
"""The workflow's pointer rows written by the transaction that last wrote its row (inserted or updated)."""


async def main(url: str, count: int, rounds: int, label: str) -> None:
    if "COMPARE_ABOVE" in os.environ:
        _postgres_store._COMPARE_POINTERS = int(os.environ["COMPARE_ABOVE"])
    store = await PostgresStore.open(PostgresConfig(url))
    probe = await asyncpg.connect(url)
    try:
        w = WorkflowInstance.new("pg-persist", 1, {"n": 1})
        w.next_execution = None  # nothing queued: the persist alone is measured
        w.execution_pointers = [
            ExecutionPointer(id=f"p{i}", step_id=i % 7, active=True, step_name="step", children=[f"c{i}"], scope=["a"])
            for i in range(count)
        ]
        row = workflow_row(w)
        await store.create_workflow(row, pointer_rows(row.id, w.execution_pointers))
        times: list[float] = []
        wal: list[int] = []
        written: list[int] = []
        for i in range(rounds):
            pointer = w.execution_pointers[(i * 7919) % count]
            pointer.retry_count += 1
            pointers = pointer_rows(row.id, w.execution_pointers)  # conversion not timed: the same code
            before_lsn = await probe.fetchval("SELECT pg_current_wal_insert_lsn()")
            started = time.perf_counter()
            await store.persist_workflow(row, pointers)
            times.append(time.perf_counter() - started)
            wal.append(int(await probe.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", before_lsn)))
            written.append(int(await probe.fetchval(WRITTEN, row.id)))
        await probe.execute("DELETE FROM workflows WHERE id = $1", row.id)
    finally:
        await probe.close()
        await store.close()
    ms = sorted(t * 1000 for t in times)
    print(
        f"{label:>4} {count:>6} pointers: persist median {statistics.median(ms):8.2f} ms "
        f"p90 {ms[int(len(ms) * 0.9) - 1]:8.2f} ms | WAL {statistics.median(wal) / 1024:9.1f} KiB "
        f"| pointer rows written {statistics.median(written):g}",
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    asyncio.run(
        main(
            sys.argv[1],
            int(sys.argv[2]),
            int(sys.argv[3]) if len(sys.argv) > 3 else 50,
            sys.argv[4] if len(sys.argv) > 4 else "",
        )
    )
