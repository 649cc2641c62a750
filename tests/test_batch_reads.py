"""How the SQLite store reads the workflows of a BatchGetWorkflows stream (``SqliteStore.workflows_from``).

A batch of small workflows is read on the event loop's thread, like a point lookup: on a reader
thread every fetched row hands the GIL back and forth with the busy loop, which measured about twice
the server's CPU per batch. The reads there are bounded (rows and bytes); what does not fit is read
by the next call, and a first workflow with more pointers than the bound on the reader pool. Either
way the servicer's loop gets every workflow, whole, in the order asked, as it did from the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wfe_client import ExecutionPointer, WorkflowInstance
from wfe_sqlite import SqlitePersistenceProvider
from wfe_sqlite._sqlite_store import _POINT_BATCH_ROWS, SqliteStore

BUDGET = 4 * 1024 * 1024  # the servicer's PAGE_BYTES


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[SqlitePersistenceProvider]:
    provider = await SqlitePersistenceProvider.open(f"sqlite://{tmp_path}/batch.db")
    yield provider
    await provider.close()


def _pool_reads(store: SqliteStore) -> list[int]:
    """Count the jobs ``store`` hands to its reader pool (into the returned list's one element)."""
    count = [0]
    database: Any = store.database
    read = database.read

    async def counted(job: Any) -> Any:
        count[0] += 1
        return await read(job)

    database.read = counted
    return count


async def _create(provider: SqlitePersistenceProvider, pointers: int) -> WorkflowInstance:
    w = WorkflowInstance.new("batch", 1, {"n": pointers})
    w.execution_pointers = [ExecutionPointer.new(i) for i in range(pointers)]
    await provider.create_new_workflow(w)
    return w


async def _read_all(store: SqliteStore, ids: list[str]) -> tuple[list[Any], list[int]]:
    """Every workflow among ``ids`` as the servicer reads them (call after call), and the rows of each call."""
    found: list[Any] = []
    rows: list[int] = []
    position = 0
    while position < len(ids):
        got, position = await store.workflows_from(ids, position, BUDGET)
        found += got
        rows.append(sum(1 + len(pointers) for _, pointers, _ in got))
    return found, rows


async def test_a_batch_of_small_workflows_is_read_on_the_loop_thread(provider: SqlitePersistenceProvider) -> None:
    created = [await _create(provider, 3) for _ in range(100)]
    ids = [w.id for w in created]
    pool = _pool_reads(provider.store)
    found, rows = await _read_all(provider.store, [*ids, "missing"])
    assert pool == [0]
    assert rows == [400]
    assert [row.id for row, _, _ in found] == ids
    assert [[p.step_id for p in pointers] for _, pointers, _ in found] == [[0, 1, 2]] * 100


async def test_point_reads_stop_at_their_bound_and_the_rest_follows(provider: SqlitePersistenceProvider) -> None:
    big = _POINT_BATCH_ROWS + 50
    sizes = [*[5] * 150, 300, 300, 1, big, 2]
    created = [await _create(provider, n) for n in sizes]
    ids = [w.id for w in created]
    pool = _pool_reads(provider.store)
    found, rows = await _read_all(provider.store, ids)
    assert [row.id for row, _, _ in found] == ids
    assert [[p.position for p in pointers] for _, pointers, _ in found] == [list(range(n)) for n in sizes]
    # Every read on the loop's thread kept to the bound; only the one that starts at the workflow
    # too large for it went to the pool (and read what followed it).
    assert pool == [1]
    assert all(r <= _POINT_BATCH_ROWS for r in rows[:-1])
    assert rows[-1] == 1 + big + 3
    assert len(rows) > 3
