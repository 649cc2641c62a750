"""PostgreSQL reads of workflows with many pointers.

Up to ``_ROWS_ABOVE`` pointers a read takes them in the workflow's row (one statement); above it, it
reads the workflows again and their pointers as rows, in one REPEATABLE READ transaction. The first
test reads workflows either side of the boundary (get, get by name, batch get) and checks they are
what was written (the rows fetched in chunks that span workflows); the second races persists
against reads: every read must be the workflow and the pointers of one revision, never the workflow
of one and the pointers of another (what two statements outside one snapshot would return).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from wfe_client import (
    ExecutionPointer,
    GrpcPersistenceProvider,
    PersistenceProvider,
    PointerStatus,
    WorkflowInstance,
    WorkflowStatus,
)
from wfe_sqlite import _postgres_store, open_provider
from wfe_sqlite.server import RunningServer, ServerConfig

LIMIT = _postgres_store._ROWS_ABOVE


@pytest.fixture(params=["embedded", "grpc"])
async def pg_provider(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[PersistenceProvider]:
    """The embedded provider on PostgreSQL, or an in-process server on it through the gRPC adapter
    (the same ``_postgres_store`` module: a patched ``_ROWS_ABOVE`` applies to both)."""
    if request.param == "embedded":
        embedded = await open_provider(pg_url)
        try:
            yield embedded
        finally:
            await embedded.close()
        return
    running = await RunningServer.start(ServerConfig(db=pg_url, listen="127.0.0.1:0", grace=1.0))
    try:
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            yield remote
    finally:
        await running.stop(quiet=0)


def _pointer(i: int, mark: int = 0) -> ExecutionPointer:
    return ExecutionPointer(
        id=f"p{i}",
        step_id=i,
        active=i % 2 == 0,
        status=PointerStatus.COMPLETE if i % 3 else PointerStatus.WAITING_FOR_EVENT,
        sleep_until=None if i % 2 else datetime(2030, 1, 2, 3, 4, 5, i % 1000, tzinfo=UTC),
        persistence_data={"i": i, "mark": mark},
        start_time=datetime(2024, 1, 1, 0, 0, 0, i % 1000, tzinfo=UTC),
        event_name=f"event-{i}" if i % 5 else None,
        event_key="k",
        step_name=f"step {i}",
        children=[f"c{i}"],
        outcome=i if i % 7 else None,
        scope=["outer", f"s{i}"],
    )


def _workflow(count: int, name: str) -> WorkflowInstance:
    w = WorkflowInstance.new("read", 1, {"mark": 0})
    w.reference = name
    w.next_execution = None
    w.status = WorkflowStatus.RUNNABLE
    w.execution_pointers = [_pointer(i) for i in range(count)]
    return w


async def test_reads_either_side_of_the_rows_threshold_return_what_was_written(
    pg_provider: PersistenceProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_postgres_store, "_ROWS_PER_FETCH", 100)  # a batch's rows in chunks across workflows
    written = {}
    for count in (0, 1, LIMIT, LIMIT + 1, 3 * LIMIT):
        w = _workflow(count, f"r{count}")
        await pg_provider.create_new_workflow(w)
        written[w.id] = w
    for w in written.values():
        got = await pg_provider.get_workflow_instance(w.id)
        assert got == w, len(w.execution_pointers)
        assert await pg_provider.get_workflow_instance_by_name(got.name) == w
    # A batch of small and big ones (and an unknown id): each as written, in the order asked.
    ids = [*reversed(written), "nope"]
    assert await pg_provider.get_workflow_instances(ids) == [written[i] for i in ids[:-1]]
    small = [i for i, w in written.items() if len(w.execution_pointers) <= LIMIT]
    assert await pg_provider.get_workflow_instances(small) == [written[i] for i in small]


async def test_a_read_racing_persists_sees_one_revision_whole(
    pg_provider: PersistenceProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persist k marks the workflow's data and its first and last pointers with k, and has
    ``limit + k % 3`` pointers (either side of the threshold). A read must find one mark throughout
    and that persist's count."""
    limit = 6
    monkeypatch.setattr(_postgres_store, "_ROWS_ABOVE", limit)
    w = _workflow(limit, "race")
    await pg_provider.create_new_workflow(w)
    rounds = 150

    async def persists() -> None:
        for k in range(1, rounds + 1):
            w.data = {"mark": k}
            w.execution_pointers = [_pointer(i, k if i in (0, limit + k % 3 - 1) else 0) for i in range(limit + k % 3)]
            await pg_provider.persist_workflow(w)
            await asyncio.sleep(0)

    seen: set[int] = set()
    big = 0
    writer = asyncio.ensure_future(persists())
    try:
        while not writer.done():
            for got in [
                await pg_provider.get_workflow_instance(w.id),
                *await pg_provider.get_workflow_instances([w.id]),
            ]:
                k = got.data["mark"]
                count = limit + k % 3 if k else limit
                pointers = got.execution_pointers
                assert len(pointers) == count, (k, len(pointers))
                marks = [p.persistence_data["mark"] for p in pointers]
                assert marks == [k if i in (0, count - 1) else 0 for i in range(count)], (k, marks)
                seen.add(k)
                big += count > limit
    finally:
        await writer
    assert big and len(seen) > 10, (big, sorted(seen))  # reads took the rows path, many revisions seen
