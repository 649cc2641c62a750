"""Conformance: the durable work queues (FIFO, dedupe, exactly once, long poll, never stranded)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from conformance_support import event, now, workflow

from conftest import REQUEUE_INTERVAL, ClusterUnderTest, Peek
from wfe_client import (
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    InvalidArgument,
    LockProvider,
    QueueProvider,
    QueueType,
    StorageUnavailable,
    WorkflowStatus,
)
from wfe_sqlite import SqliteLockProvider, SqliteQueueProvider, StoreProvider

WAIT = timedelta(seconds=5)


def epoch_ms() -> int:
    return int(time.time() * 1000)


async def test_first_in_first_out_per_queue_type(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    for item in ("a", "b", "c"):
        assert await q.queue_work(item, QueueType.INDEX) is True
    assert await q.queue_work("z", QueueType.EVENT) is True
    assert [await q.dequeue_work(QueueType.INDEX) for _ in range(4)] == ["a", "b", "c", None]
    assert await q.dequeue_work(QueueType.EVENT) == "z"
    assert await q.dequeue_work(QueueType.EVENT) is None
    assert await q.dequeue_work(QueueType.WORKFLOW) is None


async def test_an_id_waiting_keeps_one_entry_and_its_place(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    assert await q.queue_work("a", QueueType.INDEX) is True
    assert await q.queue_work("b", QueueType.INDEX) is True
    assert await q.queue_work("a", QueueType.INDEX) is False
    assert await q.dequeue_work(QueueType.INDEX) == "a"
    # Handed out: queueing it again makes a new entry, at the end.
    assert await q.queue_work("a", QueueType.INDEX) is True
    assert [await q.dequeue_work(QueueType.INDEX) for _ in range(3)] == ["b", "a", None]


async def test_each_item_goes_to_exactly_one_of_many_concurrent_dequeuers(cluster: ClusterUnderTest) -> None:
    producer = await cluster.queue()
    consumers = [await cluster.queue() for _ in range(8)]
    items = [f"item-{i}" for i in range(300)]
    got: list[str] = []
    produced = asyncio.Event()

    async def consume(q: object) -> None:
        assert hasattr(q, "dequeue_work")
        while True:
            item = await q.dequeue_work(QueueType.INDEX, wait=timedelta(milliseconds=500))  # type: ignore[attr-defined]
            if item is None:
                if produced.is_set():  # not just a pause of the producer (a loaded machine)
                    return
                continue
            got.append(item)

    tasks = [asyncio.create_task(consume(c)) for c in consumers for _ in range(4)]
    for item in items:
        await producer.queue_work(item, QueueType.INDEX)
    produced.set()
    await asyncio.gather(*tasks)
    assert sorted(got) == sorted(items), (len(got), len(set(got)))


async def test_a_waiting_dequeue_returns_as_soon_as_an_item_arrives(cluster: ClusterUnderTest) -> None:
    consumer = await cluster.queue()
    producer = await cluster.queue()
    latencies = []
    for i in range(10):
        waiting = asyncio.create_task(consumer.dequeue_work(QueueType.INDEX, wait=WAIT))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.perf_counter()
        await producer.queue_work(f"x-{i}", QueueType.INDEX)
        assert await waiting == f"x-{i}"
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.1, latencies  # no polling interval in between


async def test_a_wait_with_nothing_arriving_returns_none_after_the_wait(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    started = time.monotonic()
    assert await q.dequeue_work(QueueType.INDEX, wait=timedelta(milliseconds=300)) is None
    assert 0.25 <= time.monotonic() - started < 3


async def test_a_waiter_that_gives_up_loses_no_item(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    gone = asyncio.create_task(q.dequeue_work(QueueType.INDEX, wait=WAIT))
    await asyncio.sleep(0.1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await q.queue_work("kept", QueueType.INDEX)
    assert await q.dequeue_work(QueueType.INDEX, wait=WAIT) == "kept"


@pytest.mark.parametrize("wait", [timedelta(seconds=61), timedelta(seconds=-1)])
async def test_wait_out_of_bounds_is_invalid(cluster: ClusterUnderTest, wait: timedelta) -> None:
    q = await cluster.queue()
    with pytest.raises(InvalidArgument):
        await q.dequeue_work(QueueType.INDEX, wait=wait)


async def test_an_event_created_due_is_queued_by_the_store(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    waiting = asyncio.create_task(q.dequeue_work(QueueType.EVENT, wait=WAIT))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    eid = await cluster.store.create_event(event("paid", "42", time=now()))
    assert await waiting == eid
    assert time.perf_counter() - started < 0.5
    assert await q.dequeue_work(QueueType.EVENT) is None  # once


async def test_a_workflow_stored_runnable_and_due_is_queued_by_the_store(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    w = workflow(next_execution=0)
    await cluster.store.create_new_workflow(w)
    waiting_one = workflow(next_execution=None)  # not runnable: not queued
    suspended = workflow(next_execution=0, status=WorkflowStatus.SUSPENDED)
    await cluster.store.create_new_workflow(waiting_one)
    await cluster.store.create_new_workflow(suspended)
    assert await q.dequeue_work(QueueType.WORKFLOW) == w.id
    assert await q.dequeue_work(QueueType.WORKFLOW) is None
    # A persist that makes one runnable queues it.
    waiting_one.next_execution = 0
    await cluster.store.persist_workflow(waiting_one)
    assert await q.dequeue_work(QueueType.WORKFLOW) == waiting_one.id


async def test_dequeue_workflow_returns_it_with_its_revision(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    w = workflow()
    await cluster.store.create_new_workflow(w)
    got = await q.dequeue_workflow(wait=WAIT)
    assert got is not None
    wid, stored = got
    assert wid == w.id and stored is not None and stored.revision == 1 and stored.data == w.data
    await q.queue_work("no-such-workflow", QueueType.WORKFLOW)
    assert await q.dequeue_workflow() == ("no-such-workflow", None)
    assert await q.dequeue_workflow() is None


async def test_a_leased_workflow_is_queued_when_its_lease_is_released(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    host = await cluster.locks("host")
    w = workflow(next_execution=None)
    await cluster.store.create_new_workflow(w)
    assert await host.acquire_lock(w.id)
    assert await host.acquire_lock("workflow-execution." + w.id)
    w.next_execution = 0
    await cluster.store.persist_workflow(w)  # due, but a host holds it: not queued
    assert await q.dequeue_work(QueueType.WORKFLOW) is None
    await host.release_lock(w.id)  # the claim key still holds it
    assert await q.dequeue_work(QueueType.WORKFLOW) is None
    waiting = asyncio.create_task(q.dequeue_work(QueueType.WORKFLOW, wait=WAIT))
    await asyncio.sleep(0.05)
    await host.release_lock("workflow-execution." + w.id)
    assert await waiting == w.id
    # A release of a workflow that is not due queues nothing.
    done = workflow(next_execution=None)
    await cluster.store.create_new_workflow(done)
    assert await host.acquire_lock(done.id)
    await host.release_lock(done.id)
    assert await q.dequeue_work(QueueType.WORKFLOW) is None


CLAIM = "workflow-execution."


async def test_a_leased_dequeue_hands_out_work_with_the_hosts_leases(cluster: ClusterUnderTest) -> None:
    """One call for a host's dequeue, claim, lock and read; the release goes with the next one."""
    q = await cluster.queue()
    host = await cluster.locks("host", ttl=timedelta(seconds=3))
    other = await cluster.locks("other")
    w = workflow(next_execution=0)
    await cluster.store.create_new_workflow(w)  # due: queued by the store
    work = await q.dequeue_leased(QueueType.WORKFLOW, host, (CLAIM, ""), include_workflow=True)
    assert work is not None and work.id == w.id
    assert work.workflow is not None and work.workflow.revision == 1 and work.workflow.data == w.data
    assert [lease.resource for lease in work.leases] == [CLAIM + w.id, w.id]
    assert work.leases[0].fencing_token < work.leases[1].fencing_token
    assert all(lease.owner == "host" for lease in work.leases)
    # Held by the lock provider like its own: visible, renewed past the TTL, exclusive.
    assert sorted(host.held) == sorted([CLAIM + w.id, w.id])
    assert host.lease(w.id) == work.leases[1]
    await asyncio.sleep(3.5)  # longer than the TTL: kept by renewal
    assert not await other.acquire_lock(w.id) and not await other.acquire_lock(CLAIM + w.id)
    # The step persists under the leases (not queued: leased); the next dequeue frees them, which
    # queues the workflow, and hands it out again in the same call.
    w.next_execution = 0
    await cluster.store.persist_workflow(w)
    again = await q.dequeue_leased(QueueType.WORKFLOW, host, (CLAIM, ""), release=(CLAIM + w.id, w.id))
    assert again is not None and again.id == w.id and again.workflow is None
    assert min(x.fencing_token for x in again.leases) > max(x.fencing_token for x in work.leases)
    await host.release_lock(w.id)
    await host.release_lock(CLAIM + w.id)
    assert host.held == []
    assert await other.acquire_lock(w.id)


async def test_a_leased_dequeue_passes_over_work_held_by_others(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    mine, theirs = await cluster.locks("mine"), await cluster.locks("theirs")
    for item in ("x", "y"):
        await q.queue_work(item, QueueType.INDEX)
    assert await theirs.acquire_lock("x")
    first = await q.dequeue_leased(QueueType.INDEX, mine)
    assert first is not None and first.id == "y"
    waiting = asyncio.create_task(q.dequeue_leased(QueueType.INDEX, mine, wait=WAIT))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await theirs.release_lock("x")
    second = await asyncio.wait_for(waiting, 10)
    assert second is not None and second.id == "x" and mine.lease("x") == second.leases[0]
    assert await q.dequeue_work(QueueType.INDEX) is None


async def test_the_leases_a_dequeue_takes_on_the_longest_id_are_renewed_and_released(cluster: ClusterUnderTest) -> None:
    """A prefix and an id of 1024 bytes name a resource over 1024 bytes: the lock provider renews
    and releases it like any other. Renewing and releasing refused it (and a provider renews all its
    leases in one call: it then kept none of them past the TTL)."""
    q = await cluster.queue()
    host = await cluster.locks("host", ttl=timedelta(seconds=1.5))
    other = await cluster.locks("other")
    item = "i" * 1024
    await q.queue_work(item, QueueType.INDEX)
    work = await q.dequeue_leased(QueueType.INDEX, host, (CLAIM, ""))
    assert work is not None and work.id == item
    await asyncio.sleep(2)  # longer than the TTL: kept by renewal
    await q.queue_work(item, QueueType.INDEX)
    assert await q.dequeue_leased(QueueType.INDEX, other, (CLAIM,)) is None  # still held by host
    await host.release_lock(CLAIM + item)
    assert host.held == [item]
    taken = await q.dequeue_leased(QueueType.INDEX, other, (CLAIM,))
    assert taken is not None and taken.id == item
    await other.release_lock(CLAIM + item)
    await host.release_lock(item)


@pytest.mark.parametrize(
    ("prefixes", "release", "field", "wire_field"),
    [
        ((), (), "prefixes", "leases.prefixes"),
        (tuple(str(i) for i in range(17)), (), "prefixes", "leases.prefixes"),
        (("a", "a"), (), "prefixes[1]", "leases.prefixes[1]"),
        (("p" * 513,), (), "prefixes[0]", "leases.prefixes[0]"),
        (("",), ("",), "release[0]", "release_resources[0]"),
        (("",), tuple(f"r{i}" for i in range(17)), "release", "release_resources"),
    ],
)
async def test_leased_dequeues_are_validated(
    cluster: ClusterUnderTest, prefixes: tuple[str, ...], release: tuple[str, ...], field: str, wire_field: str
) -> None:
    q = await cluster.queue()
    locks = await cluster.locks("o")
    with pytest.raises(InvalidArgument) as refused:
        await q.dequeue_leased(QueueType.INDEX, locks, prefixes, release=release)
    assert refused.value.metadata["field"] == (wire_field if cluster.kind == "grpc" else field)


async def test_work_that_comes_due_later_is_queued_when_its_time_comes(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    due_in = 0.4
    w = workflow(next_execution=epoch_ms() + int(due_in * 1000))
    await cluster.store.create_new_workflow(w)
    later = event("later", "k", time=now() + timedelta(seconds=due_in))
    await cluster.store.create_event(later)
    assert await q.dequeue_work(QueueType.WORKFLOW) is None
    assert await q.dequeue_work(QueueType.EVENT) is None
    started = time.monotonic()
    assert await q.dequeue_work(QueueType.WORKFLOW, wait=WAIT) == w.id
    assert await q.dequeue_work(QueueType.EVENT, wait=WAIT) == later.id
    waited = time.monotonic() - started
    assert due_in * 0.7 < waited < due_in + REQUEUE_INTERVAL, waited


async def test_work_handed_out_and_dropped_is_queued_again(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    w = workflow()
    await cluster.store.create_new_workflow(w)
    eid = await cluster.store.create_event(event(time=now()))
    assert await q.dequeue_work(QueueType.WORKFLOW) == w.id  # the host that took it dies here
    assert await q.dequeue_work(QueueType.EVENT) == eid
    started = time.monotonic()
    assert await q.dequeue_work(QueueType.WORKFLOW, wait=WAIT) == w.id
    assert await q.dequeue_work(QueueType.EVENT, wait=WAIT) == eid
    waited = time.monotonic() - started
    assert REQUEUE_INTERVAL * 0.8 <= waited < REQUEUE_INTERVAL * 5, waited


async def test_work_under_a_live_lease_is_not_queued_again_until_the_lease_runs_out(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    dead = await cluster.locks("dead-host", ttl=timedelta(milliseconds=1500))
    w = workflow()
    await cluster.store.create_new_workflow(w)
    assert await q.dequeue_work(QueueType.WORKFLOW) == w.id
    assert await dead._acquire(w.id) is not None  # taken, then its holder dies (no renewal)
    started = time.monotonic()
    assert await q.dequeue_work(QueueType.WORKFLOW, wait=WAIT) == w.id
    waited = time.monotonic() - started
    assert 1.2 <= waited < 1.5 + REQUEUE_INTERVAL * 3, waited


async def test_processed_events_and_finished_workflows_are_not_queued_again(cluster: ClusterUnderTest) -> None:
    q = await cluster.queue()
    w = workflow()
    await cluster.store.create_new_workflow(w)
    eid = await cluster.store.create_event(event(time=now()))
    assert await q.dequeue_work(QueueType.WORKFLOW) == w.id
    assert await q.dequeue_work(QueueType.EVENT) == eid
    w.status, w.next_execution = WorkflowStatus.COMPLETE, None
    await cluster.store.persist_workflow(w)
    await cluster.store.mark_event_processed(eid)
    assert await q.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=REQUEUE_INTERVAL * 3)) is None
    assert await q.dequeue_work(QueueType.EVENT) is None
    # Marked unprocessed again: it is due work once more.
    await cluster.store.mark_event_unprocessed(eid)
    assert await q.dequeue_work(QueueType.EVENT, wait=WAIT) == eid


async def test_queue_providers_are_async_context_managers(cluster: ClusterUnderTest) -> None:
    async with await cluster.queue() as q:
        assert await q.queue_work("ctx", QueueType.INDEX)
        assert await q.dequeue_work(QueueType.INDEX) == "ctx"


async def test_a_closed_queue_provider_raises_storage_unavailable_and_leaves_the_store_open(
    cluster: ClusterUnderTest,
) -> None:
    # As every call of a closed persistence provider does; before, the embedded provider went on
    # queueing and handing out work after close. The store it was given is not closed.
    closed = await cluster.queue()
    other = await cluster.queue()
    locks = await cluster.locks("queue-closed")
    assert await closed.queue_work("before", QueueType.INDEX)
    await closed.close()
    for call in (
        lambda: closed.queue_work("after", QueueType.INDEX),
        lambda: closed.dequeue_work(QueueType.INDEX),
        lambda: closed.dequeue_work(QueueType.INDEX, wait=WAIT),
        lambda: closed.dequeue_workflow(),
        lambda: closed.dequeue_leased(QueueType.INDEX, locks),
    ):
        with pytest.raises(StorageUnavailable, match=r"^the queue provider is closed$"):
            await call()
    # The item queued before the close is still there, for the other provider on the same store.
    assert await other.dequeue_work(QueueType.INDEX) == "before"
    assert await other.dequeue_work(QueueType.INDEX) is None  # nothing was queued after the close
    w = workflow()
    await cluster.store.create_new_workflow(w)
    assert (await cluster.store.get_workflow_instance(w.id)).id == w.id
    await closed.close()  # closing again is harmless


async def test_close_ends_waiting_dequeues_at_once_and_they_take_nothing(cluster: ClusterUnderTest) -> None:
    # A dequeue already waiting when its provider is closed ends within moments, as one made after
    # close does (StorageUnavailable); before, the embedded one waited out its whole wait. Items
    # queued as the provider closes are either handed to a waiter that got them first or still
    # queued for the next dequeuer: never taken by a dequeue that close ended.
    closing = await cluster.queue()
    other = await cluster.queue()
    locks = await cluster.locks("closing-waiter")
    long = timedelta(seconds=30)
    waits = [
        asyncio.create_task(closing.dequeue_work(QueueType.INDEX, wait=long)),
        asyncio.create_task(closing.dequeue_work(QueueType.INDEX, wait=long)),
        asyncio.create_task(closing.dequeue_workflow(wait=long)),
        asyncio.create_task(closing.dequeue_leased(QueueType.EVENT, locks, wait=long)),
    ]
    await asyncio.sleep(0.5)  # all of them waiting
    assert not any(t.done() for t in waits)
    started = time.monotonic()
    items = [f"racing-{i}" for i in range(20)]
    await asyncio.gather(closing.close(), *(other.queue_work(i, QueueType.INDEX) for i in items))
    _, pending = await asyncio.wait(waits, timeout=5)
    assert not pending, "close() did not end the waiting dequeues"
    assert time.monotonic() - started < 3
    handed: list[str] = []
    for task in waits:
        error = task.exception()
        if error is None:  # served before the close ended it
            result = task.result()
            assert isinstance(result, str)
            handed.append(result)
        else:
            assert isinstance(error, StorageUnavailable), repr(error)
            assert str(error) == "the queue provider is closed"
    left: list[str] = []
    while (item := await other.dequeue_work(QueueType.INDEX)) is not None:
        left.append(item)
    assert sorted(handed + left) == sorted(items)  # each item once: none lost, none twice
    # The closed provider's ended waiters are gone: new work goes to the other providers.
    assert await other.queue_work("after-close", QueueType.EVENT)
    assert await other.dequeue_work(QueueType.EVENT, wait=WAIT) == "after-close"


async def test_close_ends_waiting_dequeues_of_a_provider_sharing_its_store(cluster: ClusterUnderTest) -> None:
    # As above, for a queue provider on a store it shares (gRPC: the GrpcPersistenceProvider's
    # channel, which its close leaves open): before, its waiting dequeues went on waiting.
    if cluster.kind == "grpc":
        assert isinstance(cluster.store, GrpcPersistenceProvider)
        closing: QueueProvider = GrpcQueueProvider(cluster.store)
        locks: LockProvider = GrpcLockProvider(cluster.store, "sharing-waiter")
    else:
        assert isinstance(cluster.store, StoreProvider)
        closing = SqliteQueueProvider(cluster.store)
        locks = SqliteLockProvider(cluster.store, "sharing-waiter")
    other = await cluster.queue()
    long = timedelta(seconds=30)
    waits = [
        asyncio.create_task(closing.dequeue_work(QueueType.INDEX, wait=long)),
        asyncio.create_task(closing.dequeue_workflow(wait=long)),
        asyncio.create_task(closing.dequeue_leased(QueueType.EVENT, locks, wait=long)),
    ]
    await asyncio.sleep(0.5)
    assert not any(t.done() for t in waits)
    await closing.close()
    _, pending = await asyncio.wait(waits, timeout=5)
    assert not pending, "close() did not end the waiting dequeues"
    for task in waits:
        with pytest.raises(StorageUnavailable, match=r"^the queue provider is closed$"):
            task.result()
    # The store goes on: the ended waiters took nothing queued afterwards.
    assert await other.queue_work("after-close", QueueType.INDEX)
    assert await other.dequeue_work(QueueType.INDEX, wait=WAIT) == "after-close"
    w = workflow()
    await cluster.store.create_new_workflow(w)
    assert (await cluster.store.get_workflow_instance(w.id)).id == w.id
    await locks.close()


async def count(peek: Peek, sql: str) -> int:
    [(n,)] = await peek(sql)
    assert isinstance(n, int)
    return n


async def queued_items(cluster: ClusterUnderTest, peek: Peek, store_url: str) -> int:
    """Items waiting in the work queues, as the stats count them (``live_figures``), checked against
    the table."""
    waiting = await count(peek, "SELECT count(*) FROM work_queue WHERE position IS NOT NULL")
    if cluster.kind == "embedded":
        assert isinstance(cluster.store, StoreProvider)
        store = cluster.store.store
    else:
        assert cluster.server is not None
        store = cluster.server.provider.store
    figures = await store.live_figures()
    assert figures.queued_items == waiting
    return waiting


async def test_a_deleted_or_purged_workflow_leaves_the_workflow_queue(
    cluster: ClusterUnderTest, peek: Peek, store_url: str
) -> None:
    """Delete and purge take the workflow's entry in the WORKFLOW queue with it, waiting or handed
    out: no host is handed a deleted id, the queued-items figure stops counting it, and nothing
    queues it again. A host's leases on it stay its own; an entry with the same id in another
    queue stays (events are not deleted with workflows)."""
    q = await cluster.queue()
    host = await cluster.locks("host")
    other = await cluster.locks("other")
    taken = workflow()
    await cluster.store.create_new_workflow(taken)
    work = await q.dequeue_leased(QueueType.WORKFLOW, host, (CLAIM, ""))
    assert work is not None and work.id == taken.id  # a host runs it when it is deleted
    long_ago = now() - timedelta(days=2)
    deleted, purged, kept = workflow(), workflow(), workflow()
    purged.create_time = long_ago
    finished = workflow(status=WorkflowStatus.COMPLETE, next_execution=None)
    finished.complete_time = long_ago
    for w in (deleted, purged, kept, finished):
        await cluster.store.create_new_workflow(w)
    assert await q.queue_work(finished.id, QueueType.WORKFLOW)  # queued by a host just before it completed
    assert await q.queue_work(deleted.id, QueueType.EVENT)
    gone = [deleted.id, purged.id, finished.id, taken.id]
    in_workflow_queue = "SELECT count(*) FROM work_queue WHERE queue = 'WORKFLOW' AND item_id IN ({})".format(
        ", ".join(f"'{i}'" for i in gone)
    )
    assert await count(peek, in_workflow_queue) == 4
    assert await queued_items(cluster, peek, store_url) == 5

    await cluster.store.delete_workflow(deleted.id)
    await cluster.store.delete_workflow(taken.id)
    cutoff = now() - timedelta(days=1)
    assert await cluster.store.purge_workflows(cutoff, statuses=[WorkflowStatus.RUNNABLE]) == 1
    assert await cluster.store.purge_workflows(cutoff) == 1

    assert await count(peek, in_workflow_queue) == 0
    assert await queued_items(cluster, peek, store_url) == 2  # kept, and the EVENT item
    assert await q.dequeue_work(QueueType.WORKFLOW) == kept.id
    assert await q.dequeue_work(QueueType.WORKFLOW) is None
    assert await q.dequeue_work(QueueType.EVENT) == deleted.id
    kept.status, kept.next_execution = WorkflowStatus.COMPLETE, None
    await cluster.store.persist_workflow(kept)
    # The host's leases are still its own until it releases them; releasing them queues nothing.
    assert not await other.acquire_lock(taken.id) and not await other.acquire_lock(CLAIM + taken.id)
    await host.release_lock(CLAIM + taken.id)
    await host.release_lock(taken.id)
    assert await other.acquire_lock(taken.id)
    # The stranded-work sweeps do not bring any of them back.
    assert await q.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=REQUEUE_INTERVAL * 3)) is None
    assert await count(peek, in_workflow_queue) == 0
    assert await queued_items(cluster, peek, store_url) == 0


@pytest.mark.parametrize("value", [None, 7, b"wf"], ids=["none", "int", "bytes"])
async def test_an_id_that_is_not_a_string_is_invalid_argument(cluster: ClusterUnderTest, value: object) -> None:
    # gRPC used to send None as "" ("must not be empty") and let protobuf's TypeError through for an int.
    queue = await cluster.queue()
    with pytest.raises(InvalidArgument) as info:
        await queue.queue_work(value, QueueType.WORKFLOW)  # type: ignore[arg-type]
    assert str(info.value) == f"id: expected a string, got {type(value).__name__}"
    assert info.value.metadata.get("field") == "id"
    assert await queue.dequeue_work(QueueType.WORKFLOW) is None
