"""A persist stores exactly the pointers sent, writing only those that changed.

Both stores key a workflow's pointers by position and write only the rows that are new, differ or are
gone (SQLite above ``_COMPARE_POINTERS`` pointers, PostgreSQL always): the first test catches a diff
that misses a change (a value set to NULL, a reorder, a removal in the middle), the second that
PostgreSQL no longer rewrites the pointers a persist leaves as they were (their row versions, ``xmin``
and ``ctid``, stay the same).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from wfe_client import (
    ExecutionPointer,
    PersistenceProvider,
    PointerStatus,
    RevisionConflict,
    WorkflowInstance,
    WorkflowStatus,
)
from wfe_sqlite import open_provider


def _pointer(i: int) -> ExecutionPointer:
    return ExecutionPointer(
        id=f"p{i}",
        step_id=i,
        active=True,
        status=PointerStatus.WAITING_FOR_EVENT,
        sleep_until=datetime(2030, 1, 2, 3, 4, 5, i, tzinfo=UTC),
        persistence_data={"i": i},
        start_time=datetime(2024, 1, 1, 0, 0, 0, i, tzinfo=UTC),
        event_name=f"event-{i}",
        event_key="k",
        step_name=f"step {i}",
        children=[f"c{i}"],
        outcome=i,
        scope=["outer"],
    )


def _workflow(count: int) -> WorkflowInstance:
    w = WorkflowInstance.new("pointers", 1, {"n": 1})
    w.next_execution = None
    w.status = WorkflowStatus.RUNNABLE
    w.execution_pointers = [_pointer(i) for i in range(count)]
    return w


def _complete(p: list[ExecutionPointer]) -> None:
    p[1].status = PointerStatus.COMPLETE
    p[1].active = False
    p[1].end_time = datetime(2024, 1, 2, tzinfo=UTC)


def _to_null(p: list[ExecutionPointer]) -> None:
    # A comparison with = rather than IS DISTINCT FROM sees no change from a value to NULL.
    p[2].sleep_until = None
    p[2].event_name = None
    p[2].outcome = None
    p[2].persistence_data = None


def _from_null(p: list[ExecutionPointer]) -> None:
    p[2].event_name = "again"
    p[0].predecessor_id = "p9"


def _remove_middle(p: list[ExecutionPointer]) -> None:
    del p[len(p) // 2]  # every later one moves down a position


_added = itertools.count(100)


def _add(p: list[ExecutionPointer]) -> None:
    p.extend([_pointer(next(_added)), _pointer(next(_added))])


def _swap(p: list[ExecutionPointer]) -> None:
    p[0], p[-1] = p[-1], p[0]


STEPS: list[tuple[str, Callable[[list[ExecutionPointer]], None]]] = [
    ("unchanged", lambda p: None),
    ("one completed", _complete),
    ("values to NULL", _to_null),
    ("NULL to values", _from_null),
    ("removed in the middle", _remove_middle),
    ("removed at the end", lambda p: p.pop()),
    ("added", _add),
    ("swapped", _swap),
    ("reversed", lambda p: p.reverse()),
    ("changed, removed, added and reordered", lambda p: (_complete(p), p.pop(-2), _add(p), p.reverse())),
    ("none", lambda p: p.clear()),
    ("some again", lambda p: p.extend(_pointer(i) for i in range(5))),
    ("none again", lambda p: p.clear()),
    ("many after none", lambda p: p.extend(_pointer(i) for i in range(40))),  # compared with none stored
]


@pytest.mark.parametrize("count", [3, 40])  # either side of the SQLite store's _COMPARE_POINTERS (32)
async def test_a_persist_stores_exactly_the_pointers_sent(provider: PersistenceProvider, count: int) -> None:
    w = _workflow(count)
    await provider.create_new_workflow(w)
    for step, change in STEPS:
        stale = copy.deepcopy(w)
        change(w.execution_pointers)
        await provider.persist_workflow(w)
        stored = await provider.get_workflow_instance(w.id)
        assert stored.execution_pointers == w.execution_pointers, step
        assert stored.revision == w.revision, step

        # A stale persist with other pointers writes none of them.
        stale.execution_pointers[:1] = [_pointer(200), _pointer(201)]
        with pytest.raises(RevisionConflict):
            await provider.persist_workflow(stale)
        assert (await provider.get_workflow_instance(w.id)).execution_pointers == w.execution_pointers, step


async def _versions(conn: asyncpg.Connection, id: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The workflow row's ``xmin`` (the transaction that last wrote it) and its pointers' (id, xmin, ctid)."""
    workflow = await conn.fetchval("SELECT xmin::text FROM workflows WHERE id = $1", id)
    pointers = await conn.fetch(
        "SELECT id, xmin::text, ctid::text FROM execution_pointers WHERE workflow_id = $1 ORDER BY position", id
    )
    return workflow, [(r[0], r[1], r[2]) for r in pointers]


@pytest.mark.parametrize("count", [3, 200])
async def test_a_postgres_persist_writes_only_the_pointers_that_changed(pg_url: str, count: int) -> None:
    provider = await open_provider(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        w = _workflow(count)
        await provider.create_new_workflow(w)
        _, created = await _versions(conn, w.id)

        await provider.persist_workflow(w)  # nothing changed: no pointer is written
        persist, pointers = await _versions(conn, w.id)
        assert pointers == created
        assert persist not in {xmin for _, xmin, _ in pointers}

        w.execution_pointers[1].status = PointerStatus.COMPLETE  # what a step changes
        await provider.persist_workflow(w)
        persist, pointers = await _versions(conn, w.id)
        written = [pid for pid, xmin, _ in pointers if xmin == persist]
        assert written == ["p1"]
        assert [p for p in pointers if p[0] != "p1"] == [p for p in created if p[0] != "p1"]

        # One removed at the end and one added: the others stay as they were.
        w.execution_pointers[-1] = _pointer(300)
        w.execution_pointers.append(_pointer(301))
        await provider.persist_workflow(w)
        persist, pointers = await _versions(conn, w.id)
        assert [pid for pid, xmin, _ in pointers if xmin == persist] == ["p300", "p301"]
        assert pointers[: count - 1] == [p if p[0] != "p1" else pointers[1] for p in created[: count - 1]]
        assert (await provider.get_workflow_instance(w.id)).execution_pointers == w.execution_pointers
    finally:
        await conn.close()
        await provider.close()


@pytest.mark.parametrize("count", [3, 40])
async def test_concurrent_forced_persists_store_one_of_them_whole(pg_url: str, count: int) -> None:
    """Two servers' stores persist one workflow at once, without a revision check. Each sends all
    its pointers; one puts its mark on pointer 0, the other on pointer 1 and adds a pointer. Whatever
    interleaves, the stored workflow is one of the persists whole (one mark, its count), never the
    pointers of one over those of another: a store that compared against, inserted or deleted by
    pointers it saw before another persist committed would keep some of the other's."""
    first, second = await open_provider(pg_url), await open_provider(pg_url)
    try:
        w = _workflow(count)
        await first.create_new_workflow(w)

        async def persist(provider: PersistenceProvider, mark: int) -> None:
            for k in range(150):
                mine = copy.deepcopy(w)
                mine.execution_pointers[mark].step_name = f"mark {mark} {k}"
                if mark:
                    mine.execution_pointers.append(_pointer(count))
                await provider.persist_workflow(mine, force=True)

        async def marks() -> tuple[int, ...]:
            stored = await first.get_workflow_instance(w.id)
            marked = [i for i, p in enumerate(stored.execution_pointers) if p.step_name != f"step {i}"]
            return (*marked, len(stored.execution_pointers))

        seen: set[tuple[int, ...]] = set()
        writers = asyncio.gather(persist(first, 0), persist(second, 1))
        while not writers.done():
            seen.add(tuple(await marks()))
            await asyncio.sleep(0)
        await writers
        seen.add(tuple(await marks()))
        assert seen <= {(count,), (0, count), (1, count + 1)}  # (count,): none of them yet
    finally:
        await first.close()
        await second.close()
