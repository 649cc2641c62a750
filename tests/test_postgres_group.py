"""Group commit on PostgreSQL (``_postgres_group.GroupWriter``): concurrent writes share transactions,
one item's error fails only its caller, and every answer comes after the batch's COMMIT.

Runs against the session's real throwaway PostgreSQL through the embedded provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from wfe_client import InvalidArgument, RevisionConflict, WorkflowAlreadyExists, WorkflowNameTaken
from wfe_client.errors import EventAlreadyExists
from wfe_client.models import Event, ExecutionPointer, WorkflowInstance
from wfe_sqlite import PostgresPersistenceProvider, open_provider


def _workflow(name: str = "") -> WorkflowInstance:
    w = WorkflowInstance.new("group", 1, {"n": 1})
    w.name = name
    w.next_execution = None
    w.execution_pointers = [ExecutionPointer.new(0)]
    return w


async def _outcomes(calls: list[Callable[[], Awaitable[object]]]) -> list[object]:
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))


@pytest.fixture
async def provider(fresh_pg_url: str) -> AsyncIterator[PostgresPersistenceProvider]:
    """The embedded provider on the test's own fresh PostgreSQL database."""
    opened = await open_provider(fresh_pg_url)
    assert isinstance(opened, PostgresPersistenceProvider)
    try:
        yield opened
    finally:
        await opened.close()


async def _queued(url: str, queue: str) -> set[str]:
    """The ids waiting in the work queue ``queue``, read on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch("SELECT item_id FROM work_queue WHERE queue = $1", queue)}
    finally:
        await conn.close()


async def test_concurrent_creates_share_transactions_and_a_bad_one_fails_alone(
    provider: PostgresPersistenceProvider, fresh_pg_url: str
) -> None:
    existing = _workflow("taken-name")
    await provider.create_new_workflow(existing)
    writes = provider.store.writes
    batches, items = writes.batches, writes.items

    good = [_workflow(f"good-{i}") for i in range(60)] + [_workflow() for _ in range(20)]
    duplicate_id = _workflow("dup-id")
    duplicate_id.id = existing.id
    name_taken = _workflow("taken-name")
    nul = _workflow("nul")
    nul.reference = "a\x00b"  # PostgreSQL text cannot hold it (SQLite can)
    # The bad ones in the middle of the batch: the good ones before and after them must commit.
    instances = [*good[:40], duplicate_id, name_taken, nul, *good[40:]]
    results = await _outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

    failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert sorted(failed) == [40, 41, 42], failed
    assert isinstance(failed[40], WorkflowAlreadyExists)
    assert isinstance(failed[41], WorkflowNameTaken)
    assert isinstance(failed[42], InvalidArgument)
    assert failed[42].metadata.get("field") == "workflow.reference"
    assert writes.items - items == len(instances) - 1, "all but the NUL one, refused before the batch"
    assert writes.batches - batches < len(instances), "no two creates shared a transaction"

    # Every acknowledged create is stored, seen from a connection of its own; the failed are not.
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        stored = {r[0]: r[1] for r in await conn.fetch("SELECT id, name FROM workflows")}
    finally:
        await conn.close()
    assert {w.id: w.name for w in good} == {i: n for i, n in stored.items() if i != existing.id}
    assert len({w.name for w in good}) == len(good)
    assert "nul" not in stored.values() and "dup-id" not in stored.values()


async def test_concurrent_persists_and_events_fail_alone_on_conflicts(provider: PostgresPersistenceProvider) -> None:
    instances = [_workflow(f"p-{i}") for i in range(30)]
    for w in instances:
        await provider.create_new_workflow(w)
    stale = _workflow("p-stale")
    await provider.create_new_workflow(stale)
    stale.revision = 7  # stored: 1
    first = Event.new("ev", "k", {"x": 1})
    await provider.create_event(first)
    again = Event.new("ev", "k", {"x": 2})
    again.id = first.id
    events = [Event.new("ev", f"k{i}", {"i": i}) for i in range(30)]

    calls: list[Callable[[], Awaitable[object]]] = [lambda w=w: provider.persist_workflow(w) for w in instances]  # type: ignore[misc]
    calls.insert(10, lambda: provider.persist_workflow(stale))
    calls.insert(20, lambda: provider.create_event(again))
    calls += [lambda e=e: provider.create_event(e) for e in events]  # type: ignore[misc]
    results = await _outcomes(calls)

    failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert sorted(failed) == [10, 20], failed
    assert isinstance(failed[10], RevisionConflict)
    assert isinstance(failed[20], EventAlreadyExists)
    assert [w.revision for w in instances] == [2] * len(instances)
    for w in instances:
        assert (await provider.get_workflow_instance(w.id)).revision == 2
    for e in events:
        assert (await provider.get_event(e.id)).event_key == e.event_key
    assert (await provider.get_event(first.id)).event_data == {"x": 1}


async def test_concurrent_named_creates_run_as_one_statement_and_store_what_each_sent(
    provider: PostgresPersistenceProvider, fresh_pg_url: str
) -> None:
    writes = provider.store.writes
    await provider.create_new_workflow(_workflow("first"))  # the writer is idle: a batch of its own
    merged = writes.merged

    instances = []
    for i in range(40):
        w = _workflow(f"many-{i}")
        w.data = {"i": i, "big": 2**70}
        w.execution_pointers = [ExecutionPointer.new(step) for step in range(i % 4)]  # 0 to 3 pointers
        for p in w.execution_pointers:
            p.step_name = f"step-{i}-{p.step_id}"
        w.next_execution = 0 if i % 2 else None  # the odd ones are due now: queued for the cluster
        instances.append(w)
    instances[20].data = {"big": "x" * 70_000}  # over _MERGE_BYTES: written by its own statement
    results = await _outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

    assert results == [w.id for w in instances]
    assert writes.merged - merged >= 2, "no creates were run together"
    assert writes.merged - merged <= len(instances) - 1, "the big one was run together with others"
    for w in instances:
        stored = await provider.get_workflow_instance(w.id)
        assert stored.revision == 1 and w.revision == 1
        assert stored == w
    queued = await _queued(fresh_pg_url, "WORKFLOW")
    assert queued == {w.id for w in instances if w.next_execution == 0}


async def test_concurrent_events_run_as_one_statement_one_taken_id_fails_alone_due_ones_queued(
    provider: PostgresPersistenceProvider, fresh_pg_url: str
) -> None:
    writes = provider.store.writes
    first = Event.new("first", "k", {})
    await provider.create_event(first)
    merged = writes.merged

    events = []
    for i in range(40):
        e = Event.new("many", f"k{i}", {"i": i, "big": -(2**70)})
        if i % 3 == 1:
            e.event_time += timedelta(hours=1)  # not due yet
        elif i % 3 == 2:
            e.is_processed = True
        events.append(e)
    results = await _outcomes([lambda e=e: provider.create_event(e) for e in events])  # type: ignore[misc]
    assert results == [e.id for e in events]
    assert writes.merged - merged >= 2, "no events were run together"

    # A taken id among events run together: the statement fails, each is run again alone.
    again = Event.new("again", "k", {})
    again.id = first.id
    more = [Event.new("more", f"k{i}", {"i": i}) for i in range(20)]
    calls: list[Callable[[], Awaitable[object]]] = [lambda e=e: provider.create_event(e) for e in more]  # type: ignore[misc]
    calls.insert(10, lambda: provider.create_event(again))
    results = await _outcomes(calls)
    assert isinstance(results.pop(10), EventAlreadyExists)
    assert results == [e.id for e in more]
    events += more
    for e in events:
        assert await provider.get_event(e.id) == e
    queued = await _queued(fresh_pg_url, "EVENT")
    due = {e.id for i, e in enumerate(events[:40]) if i % 3 == 0} | {e.id for e in more}
    assert {e.id for e in events} & queued == due


async def test_concurrent_persists_run_as_one_statement_and_store_what_each_sent(
    provider: PostgresPersistenceProvider, fresh_pg_url: str
) -> None:
    writes = provider.store.writes
    instances = []
    for i in range(40):
        w = _workflow(f"persist-{i}")
        w.execution_pointers = [ExecutionPointer.new(step) for step in range(3)]
        await provider.create_new_workflow(w)
        instances.append(w)
    merged = writes.merged

    for i, w in enumerate(instances):
        w.data = {"i": i, "big": 2**70}
        w.description = f"changed {i}"
        if i % 4 == 1:  # fewer pointers: the last one goes
            del w.execution_pointers[-1]
        elif i % 4 == 2:  # more pointers
            w.execution_pointers.append(ExecutionPointer.new(9))
        elif i % 4 == 3:  # one pointer changed in place
            w.execution_pointers[1].step_name = f"renamed-{i}"
            w.execution_pointers[1].retry_count = 2
        if i % 2:
            w.next_execution = 0  # due now: queued for the cluster
    results = await _outcomes([lambda w=w: provider.persist_workflow(w) for w in instances])  # type: ignore[misc]

    assert results == [None] * len(instances)
    assert writes.merged - merged >= 2, "no persists were run together"
    for w in instances:
        assert w.revision == 2
        assert await provider.get_workflow_instance(w.id) == w
    queued = await _queued(fresh_pg_url, "WORKFLOW")
    assert queued == {w.id for w in instances if w.next_execution == 0}

    # The same workflow twice among others run together (the second time forced: no expected
    # revision): each is run by its own job, in order.
    twice = instances[5]
    calls: list[Callable[[], Awaitable[object]]] = [lambda w=w: provider.persist_workflow(w) for w in instances]  # type: ignore[misc]
    calls.insert(10, lambda: provider.persist_workflow(twice, force=True))
    results = await _outcomes(calls)
    assert results == [None] * len(calls)
    assert (await provider.get_workflow_instance(twice.id)).revision == 4
    assert {(await provider.get_workflow_instance(w.id)).revision for w in instances if w is not twice} == {3}
