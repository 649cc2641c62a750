"""Group commit on PostgreSQL (``_postgres_group.GroupWriter``): concurrent writes share transactions,
one item's error fails only its caller, and every answer comes after the batch's COMMIT.

Runs against the session's real throwaway PostgreSQL through the embedded provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from conftest import outcomes, small_workflow
from wfe_client import (
    InvalidArgument,
    RevisionConflict,
    SubscriptionAlreadyExists,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
)
from wfe_client.errors import EventAlreadyExists
from wfe_client.models import Event, EventSubscription, ExecutionPointer, WorkflowInstance
from wfe_sqlite import PostgresPersistenceProvider, open_provider


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
    existing = small_workflow("taken-name")
    await provider.create_new_workflow(existing)
    writes = provider.store.writes
    batches, items = writes.batches, writes.items

    good = [small_workflow(f"good-{i}") for i in range(60)] + [small_workflow() for _ in range(20)]
    duplicate_id = small_workflow("dup-id")
    duplicate_id.id = existing.id
    name_taken = small_workflow("taken-name")
    nul = small_workflow("nul")
    nul.reference = "a\x00b"  # PostgreSQL text cannot hold it (SQLite can)
    # The bad ones in the middle of the batch: the good ones before and after them must commit.
    instances = [*good[:40], duplicate_id, name_taken, nul, *good[40:]]
    results = await outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

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
    instances = [small_workflow(f"p-{i}") for i in range(30)]
    for w in instances:
        await provider.create_new_workflow(w)
    stale = small_workflow("p-stale")
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
    results = await outcomes(calls)

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
    await provider.create_new_workflow(small_workflow("first"))  # the writer is idle: a batch of its own
    merged = writes.merged

    instances = []
    for i in range(40):
        w = small_workflow(f"many-{i}")
        w.data = {"i": i, "big": 2**70}
        w.execution_pointers = [ExecutionPointer.new(step) for step in range(i % 4)]  # 0 to 3 pointers
        for p in w.execution_pointers:
            p.step_name = f"step-{i}-{p.step_id}"
        w.next_execution = 0 if i % 2 else None  # the odd ones are due now: queued for the cluster
        instances.append(w)
    instances[20].data = {"big": "x" * 70_000}  # over _MERGE_BYTES: written by its own statement
    results = await outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

    assert results == [w.id for w in instances]
    assert writes.merged - merged >= 2, "no creates were run together"
    assert writes.merged - merged <= len(instances) - 1, "the big one was run together with others"
    for w in instances:
        stored = await provider.get_workflow_instance(w.id)
        assert stored.revision == 1 and w.revision == 1
        assert stored == w
    queued = await _queued(fresh_pg_url, "WORKFLOW")
    assert queued == {w.id for w in instances if w.next_execution == 0}


@pytest.mark.parametrize("last", [True, False])
async def test_a_generated_name_taken_in_a_batch_loses_no_other_write(
    provider: PostgresPersistenceProvider, fresh_pg_url: str, last: bool
) -> None:
    """An unnamed create whose generated name is taken (a workflow was named so explicitly) answers
    by taking the next number. In a batch its failed insert used to be swallowed inside the batch's
    transaction, and the COMMIT of the aborted transaction rolled back every write of the batch
    before it after they were acknowledged; those after it were refused with
    ``InFailedSQLTransactionError`` though nothing was wrong with them."""
    await provider.create_new_workflow(small_workflow("clash-1"))
    await provider.create_new_workflow(small_workflow("first"))  # the writer is idle: a batch of its own
    unnamed = small_workflow()
    unnamed.workflow_definition_id = "clash"
    others = [small_workflow(f"other-{i}") for i in range(10)]
    instances = [*others, unnamed] if last else [*others[:5], unnamed, *others[5:]]
    results = await outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

    assert results == [w.id for w in instances]
    assert unnamed.name == "clash-2"
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        stored = {r[0]: r[1] for r in await conn.fetch("SELECT id, name FROM workflows")}
    finally:
        await conn.close()
    assert {w.id: w.name for w in instances}.items() <= stored.items(), "an acknowledged create is not stored"


async def test_concurrent_unnamed_creates_run_as_one_statement_and_number_their_names_in_order(
    provider: PostgresPersistenceProvider,
) -> None:
    writes = provider.store.writes
    assert await provider.next_definition_sequence("seq-b") == 1  # "seq-b" has a sequence already, "seq-a" none
    await provider.create_new_workflow(small_workflow("first"))  # the writer is idle: a batch of its own
    merged = writes.merged

    instances = []
    for i in range(45):
        w = small_workflow(f"named-{i}" if i % 3 == 0 else "")  # named ones among them
        w.workflow_definition_id = "seq-a" if i % 3 == 1 else "seq-b"
        instances.append(w)
    sent = [(w.id, w.workflow_definition_id, w.name) for w in instances]
    results = await outcomes([lambda w=w: provider.create_new_workflow(w) for w in instances])  # type: ignore[misc]

    assert results == [w.id for w in instances]
    assert writes.merged - merged >= 2, "no unnamed creates were run together"
    for (wid, definition, name), w in zip(sent, instances, strict=True):
        assert w.name == (name or w.name) and w.workflow_definition_id == definition
        assert await provider.get_workflow_instance(wid) == w
    for definition, first in (("seq-a", 1), ("seq-b", 2)):
        unnamed = [
            w
            for w, (_, _, name) in zip(instances, sent, strict=True)
            if not name and w.workflow_definition_id == definition
        ]
        # Each takes the next number of its definition, in the order the calls were made (they are
        # queued in that order and a merged statement numbers them in it); none drawn twice or lost.
        assert [w.name for w in unnamed] == [f"{definition}-{n}" for n in range(first, first + 15)]
        assert await provider.next_definition_sequence(definition) == first + 15

    # A generated name taken by a workflow named so explicitly: the merged statement fails, each
    # create runs again alone, and the one that drew the taken number takes the next free one.
    await provider.create_new_workflow(small_workflow("seq-a-17"))
    more = [small_workflow() for _ in range(10)]
    for w in more:
        w.workflow_definition_id = "seq-a"
    results = await outcomes([lambda w=w: provider.create_new_workflow(w) for w in more])  # type: ignore[misc]
    assert results == [w.id for w in more]
    names = [w.name for w in more]
    assert len(set(names)) == 10 and "seq-a-17" not in names, names
    assert all(name.startswith("seq-a-") and int(name.removeprefix("seq-a-")) > 16 for name in names), names
    for w in more:
        assert await provider.get_workflow_instance(w.id) == w


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
    results = await outcomes([lambda e=e: provider.create_event(e) for e in events])  # type: ignore[misc]
    assert results == [e.id for e in events]
    assert writes.merged - merged >= 2, "no events were run together"

    # A taken id among events run together: the statement fails, each is run again alone.
    again = Event.new("again", "k", {})
    again.id = first.id
    more = [Event.new("more", f"k{i}", {"i": i}) for i in range(20)]
    calls: list[Callable[[], Awaitable[object]]] = [lambda e=e: provider.create_event(e) for e in more]  # type: ignore[misc]
    calls.insert(10, lambda: provider.create_event(again))
    results = await outcomes(calls)
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
        w = small_workflow(f"persist-{i}")
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
    results = await outcomes([lambda w=w: provider.persist_workflow(w) for w in instances])  # type: ignore[misc]

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
    results = await outcomes(calls)
    assert results == [None] * len(calls)
    assert (await provider.get_workflow_instance(twice.id)).revision == 4
    assert {(await provider.get_workflow_instance(w.id)).revision for w in instances if w is not twice} == {3}


async def test_a_fault_in_the_group_writer_fails_its_callers_instead_of_leaving_them_waiting(
    provider: PostgresPersistenceProvider,
) -> None:
    """A batch whose answers do not match its items (here a faulty merge, one result for five) used
    to end the writer's task with the callers' futures never answered: they waited forever."""
    writes = provider.store.writes

    async def job(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT 1"))

    async def faulty(conn: asyncpg.Connection, parts: list[object]) -> list[int]:
        return [1]

    calls = [lambda: writes.submit(job, faulty, None) for _ in range(5)]
    results = await asyncio.wait_for(outcomes(calls), timeout=10)  # type: ignore[arg-type]
    # The answers settled before the fault stand; every other caller gets the fault.
    assert isinstance(results[-1], ValueError), results
    assert all(r == 1 or isinstance(r, ValueError) for r in results), results
    assert await writes.submit(job) == 1, "the writer goes on after it"


async def test_concurrent_persists_with_subscriptions_run_as_one_statement_a_taken_subscription_fails_alone(
    provider: PostgresPersistenceProvider,
) -> None:
    writes = provider.store.writes
    instances = []
    for i in range(30):
        w = small_workflow(f"waits-{i}")
        await provider.create_new_workflow(w)
        instances.append(w)
    merged = writes.merged

    def subscription(w: WorkflowInstance, key: str) -> EventSubscription:
        s = EventSubscription.new(w.id, 0, w.execution_pointers[0].id, "approval", key, datetime.now(UTC))
        s.subscription_data = {"big": 2**70, "key": key}
        return s

    sent = {w.id: [subscription(w, f"{w.name}-{n}") for n in range(i % 3)] for i, w in enumerate(instances)}
    for w in instances:
        w.data = {"waiting": len(sent[w.id])}
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda w=w: provider.persist_workflow_with_subscriptions(w, sent[w.id])  # type: ignore[misc]
        for w in instances
    ]
    assert await outcomes(calls) == [None] * len(instances)
    assert writes.merged - merged >= 2, "no persists with subscriptions were run together"
    for w in instances:
        assert w.revision == 2 and await provider.get_workflow_instance(w.id) == w
        for s in sent[w.id]:
            assert await provider.get_subscription(s.id) == s

    # A subscription id taken already, among others run together: that persist fails alone and
    # writes nothing; the others are written with their subscriptions.
    taken = next(s for subscriptions in sent.values() for s in subscriptions)
    again = {w.id: [subscription(w, f"{w.name}-again")] for w in instances}
    again[instances[7].id][0].id = taken.id
    before = await provider.get_workflow_instance(instances[7].id)
    calls = [
        lambda w=w: provider.persist_workflow_with_subscriptions(w, again[w.id])  # type: ignore[misc]
        for w in instances
    ]
    results = await outcomes(calls)
    assert isinstance(results.pop(7), SubscriptionAlreadyExists)
    assert results == [None] * (len(instances) - 1)
    assert await provider.get_workflow_instance(instances[7].id) == before
    assert await provider.get_subscription(taken.id) == taken
    for i, w in enumerate(instances):
        if i != 7:
            assert (await provider.get_workflow_instance(w.id)).revision == 3
            assert await provider.get_subscription(again[w.id][0].id) == again[w.id][0]
