"""The cluster services on the wire (raw stubs): validation, error details, revisions, lifecycle, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    locks_pb2,
    locks_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from wfe_client import GrpcLifecyclePublisher, LifecycleEvent, LifecycleEventType, WatcherFellBehind, WfeError
from wfe_sqlite._lifecycle import MAX_BEHIND, MAX_BEHIND_BYTES, LifecycleHub
from wfe_sqlite.server import RunningServer, ServerConfig

NOW = timestamp_pb2.Timestamp(seconds=1_700_000_000)


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.locks = locks_pb2_grpc.LockServiceStub(channel)
        self.queues = queues_pb2_grpc.QueueServiceStub(channel)
        self.lifecycle = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        self.workflows = workflows_pb2_grpc.WorkflowServiceStub(channel)
        self.events = events_pb2_grpc.EventServiceStub(channel)
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)


@pytest.fixture
async def stubs(running_server: RunningServer) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(running_server.address) as channel:
        yield Stubs(channel)


def _info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo in {error!r}")


async def _refused(
    call: object, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    assert failure.value.code() == code, failure.value
    return _info(failure.value)


def _ms(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(milliseconds=value))
    return duration


# -- locks ------------------------------------------------------------------------------------------


async def test_acquire_lock_answers_token_and_expiry_and_validates(stubs: Stubs) -> None:
    before = datetime.now(UTC)
    taken = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="r", owner="o"))
    assert taken.acquired and taken.fencing_token >= 1
    expires = taken.expire_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=29) < expires < before + timedelta(seconds=32)  # default 30 s
    refused = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="r", owner="p"))
    assert not refused.acquired and refused.fencing_token == 0 and not refused.HasField("expire_time")
    for request, field in [
        (locks_pb2.AcquireLockRequest(owner="o"), "resource"),
        (locks_pb2.AcquireLockRequest(resource="x"), "owner"),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", ttl=_ms(99)), "ttl"),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", ttl=_ms(3_600_001)), "ttl"),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", ttl=duration_pb2.Duration(seconds=-1)), "ttl"),
        (locks_pb2.AcquireLockRequest(resource="x" * 1025, owner="o"), "resource"),
    ]:
        info = await _refused(stubs.locks.AcquireLock(request))
        assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == field
    bounds = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="edge", owner="o", ttl=_ms(100)))
    assert bounds.acquired


async def test_renew_lists_lost_resources_and_release_says_whether_it_freed(stubs: Stubs) -> None:
    await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="mine", owner="a"))
    await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="theirs", owner="b"))
    renewed = await stubs.locks.RenewLocks(
        locks_pb2.RenewLocksRequest(owner="a", resources=["mine", "theirs", "nobody"], ttl=_ms(5000))
    )
    assert list(renewed.lost_resources) == ["theirs", "nobody"]
    too_many = locks_pb2.RenewLocksRequest(owner="a", resources=[f"r{i}" for i in range(10_001)])
    assert (await _refused(stubs.locks.RenewLocks(too_many))).metadata["field"] == "resources"
    assert not (await stubs.locks.ReleaseLock(locks_pb2.ReleaseLockRequest(resource="mine", owner="b"))).released
    assert (await stubs.locks.ReleaseLock(locks_pb2.ReleaseLockRequest(resource="mine", owner="a"))).released
    assert not (await stubs.locks.ReleaseLock(locks_pb2.ReleaseLockRequest(resource="mine", owner="a"))).released


async def test_several_resources_are_leased_all_or_none_and_released_together(stubs: Stubs) -> None:
    both = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="claim.1", owner="a", also_resources=["1"], ttl=_ms(5000))
    )
    assert both.acquired and len(both.also_fencing_tokens) == 1
    assert both.also_fencing_tokens[0] > both.fencing_token >= 1
    # "1" is held by a: b asking for a free resource together with it gets neither.
    refused = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="free", owner="b", also_resources=["1"])
    )
    assert not refused.acquired and list(refused.also_fencing_tokens) == [] and refused.fencing_token == 0
    alone = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="free", owner="b"))
    assert alone.acquired and alone.fencing_token > both.also_fencing_tokens[0]  # nothing of b's try was kept
    released = await stubs.locks.ReleaseLock(
        locks_pb2.ReleaseLockRequest(resource="claim.1", owner="a", also_resources=["1", "free", "none"])
    )
    assert released.released and list(released.also_released) == ["1"]  # "free" is b's, "none" nobody's
    again = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="1", owner="b", also_resources=["claim.1"])
    )
    assert again.acquired
    for request, field in [
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", also_resources=["x"]), "also_resources[0]"),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", also_resources=["y", "y"]), "also_resources[1]"),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", also_resources=[""]), "also_resources[0]"),
        (
            locks_pb2.AcquireLockRequest(resource="x", owner="o", also_resources=[f"r{i}" for i in range(17)]),
            "also_resources",
        ),
        (locks_pb2.AcquireLockRequest(resource="x", owner="o", read_workflow_id="w" * 1025), "read_workflow_id"),
    ]:
        info = await _refused(stubs.locks.AcquireLock(request))
        assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == field
    many = locks_pb2.ReleaseLockRequest(resource="x", owner="o", also_resources=[f"r{i}" for i in range(17)])
    assert (await _refused(stubs.locks.ReleaseLock(many))).metadata["field"] == "also_resources"


async def test_acquire_lock_reads_the_workflow_under_the_new_leases(stubs: Stubs) -> None:
    await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="wl")))
    await stubs.workflows.PersistWorkflow(
        workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="wl", data='{"n":2}'))
    )
    taken = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(
            resource="workflow-execution.wl", owner="a", also_resources=["wl"], read_workflow_id="wl"
        )
    )
    assert taken.acquired and taken.workflow.id == "wl" and taken.workflow.revision == 2
    assert taken.workflow.data == '{"n":2}'
    not_taken = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="wl", owner="b", read_workflow_id="wl")
    )
    assert not not_taken.acquired and not not_taken.HasField("workflow")
    missing = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="other", owner="a", read_workflow_id="no-such-workflow")
    )
    assert missing.acquired and not missing.HasField("workflow")


async def test_a_workflow_persisted_under_both_leases_is_queued_when_they_are_released_together(
    stubs: Stubs,
) -> None:
    """What lets a WFE host skip its QueueWork after the executor's persist: ``server_queues``."""
    created = await stubs.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="wq", next_execution=0))
    )
    assert created.server_queues
    first = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW))
    assert first.id == "wq"  # queued by the create
    taken = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="workflow-execution.wq", owner="a", also_resources=["wq"])
    )
    assert taken.acquired
    persisted = await stubs.workflows.PersistWorkflow(
        workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="wq", next_execution=0), expected_revision=1)
    )
    assert persisted.server_queues
    empty = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW))
    assert empty.id == ""  # leased: not queued yet
    await stubs.locks.ReleaseLock(
        locks_pb2.ReleaseLockRequest(resource="wq", owner="a", also_resources=["workflow-execution.wq"])
    )
    after = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW))
    assert after.id == "wq"
    done = await stubs.workflows.PersistWorkflow(
        workflows_pb2.PersistWorkflowRequest(
            workflow=_workflow(id="wq", status=workflows_pb2.WORKFLOW_STATUS_COMPLETE), expected_revision=2
        )
    )
    assert not done.server_queues
    no_time = await stubs.workflows.PersistWorkflowWithSubscriptions(
        workflows_pb2.PersistWorkflowWithSubscriptionsRequest(workflow=_workflow(id="wq"))
    )
    assert not no_time.server_queues  # RUNNABLE without next_execution: nothing to queue
    later = await stubs.workflows.PersistWorkflowWithSubscriptions(
        workflows_pb2.PersistWorkflowWithSubscriptionsRequest(workflow=_workflow(id="wq", next_execution=2**40))
    )
    assert later.server_queues  # by the due timer


async def test_create_event_says_whether_the_server_queues_it(stubs: Stubs) -> None:
    def event(id: str, processed: bool) -> events_pb2.CreateEventRequest:
        return events_pb2.CreateEventRequest(
            event=events_pb2.Event(
                id=id, event_name="n", event_key="k", event_data="{}", event_time=NOW, is_processed=processed
            )
        )

    assert (await stubs.events.CreateEvent(event("e1", False))).server_queues
    assert not (await stubs.events.CreateEvent(event("e2", True))).server_queues
    dequeued = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT))
    assert dequeued.id == "e1"
    empty = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT))
    assert empty.id == ""


# -- queues -----------------------------------------------------------------------------------------


async def test_queue_requests_are_validated(stubs: Stubs) -> None:
    unspecified = queues_pb2.QueueWorkRequest(id="x")
    assert (await _refused(stubs.queues.QueueWork(unspecified))).metadata["field"] == "queue"
    unknown = queues_pb2.QueueWorkRequest(id="x", queue=99)  # type: ignore[arg-type]
    assert (await _refused(stubs.queues.QueueWork(unknown))).metadata["field"] == "queue"
    no_id = queues_pb2.QueueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT)
    assert (await _refused(stubs.queues.QueueWork(no_id))).metadata["field"] == "id"
    long_wait = queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, wait=_ms(60_001))
    assert (await _refused(stubs.queues.DequeueWork(long_wait))).metadata["field"] == "wait"
    negative = queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, wait=duration_pb2.Duration(seconds=-1))
    assert (await _refused(stubs.queues.DequeueWork(negative))).metadata["field"] == "wait"
    # A wait under a microsecond is within [0, 60 s]: it returns at once (it was INVALID_ARGUMENT).
    tiny = queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, wait=duration_pb2.Duration(nanos=999))
    assert (await stubs.queues.DequeueWork(tiny)).id == ""
    first = await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id="x", queue=queues_pb2.QUEUE_TYPE_EVENT))
    again = await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id="x", queue=queues_pb2.QUEUE_TYPE_EVENT))
    assert first.queued and not again.queued


CLAIM = "workflow-execution."
WFE_PREFIXES = [CLAIM, ""]


def _leased(
    owner: str, *, wait_ms: float = 0, release: tuple[str, ...] = (), **fields: object
) -> queues_pb2.DequeueWorkRequest:
    return queues_pb2.DequeueWorkRequest(
        queue=fields.pop("queue", queues_pb2.QUEUE_TYPE_WORKFLOW),  # type: ignore[arg-type]
        wait=_ms(wait_ms) if wait_ms else None,
        leases=queues_pb2.DequeueLeases(owner=owner, prefixes=fields.pop("prefixes", WFE_PREFIXES)),  # type: ignore[arg-type]
        release_resources=release,
        **fields,  # type: ignore[arg-type]
    )


async def test_a_leased_dequeue_hands_out_the_item_with_the_owners_leases(stubs: Stubs) -> None:
    """One call for a WFE host's dequeue, execution claim, workflow lock and read."""
    # Without next_execution: queued by hand, and not queued again when its leases are released.
    await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="d1")))
    await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id="d1", queue=queues_pb2.QUEUE_TYPE_WORKFLOW))
    before = datetime.now(UTC)
    got = await stubs.queues.DequeueWork(_leased("host-a", include_workflow=True))
    assert got.id == "d1" and got.workflow.id == "d1" and got.workflow.revision == 1
    assert len(got.fencing_tokens) == 2 and 0 < got.fencing_tokens[0] < got.fencing_tokens[1]
    expires = got.lease_expire_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=29) < expires < datetime.now(UTC) + timedelta(seconds=31)  # the default TTL
    for resource in ("d1", CLAIM + "d1"):
        for owner in ("host-b", "host-a"):  # held, also against its owner (not re-entrant)
            taken = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource=resource, owner=owner))
            assert not taken.acquired, (resource, owner)
    # The leases are ordinary leases: renewed and released like any other.
    renewed = await stubs.locks.RenewLocks(
        locks_pb2.RenewLocksRequest(owner="host-a", resources=["d1", CLAIM + "d1"], ttl=_ms(5000))
    )
    assert list(renewed.lost_resources) == []
    # The next dequeue carries the release of both: they are free after it, though it found nothing.
    empty = await stubs.queues.DequeueWork(_leased("host-a", release=(CLAIM + "d1", "d1", "never-held")))
    assert empty.id == "" and list(empty.fencing_tokens) == [] and not empty.HasField("lease_expire_time")
    taken = await stubs.locks.AcquireLock(
        locks_pb2.AcquireLockRequest(resource="d1", owner="host-b", also_resources=[CLAIM + "d1"])
    )
    assert taken.acquired and taken.fencing_token > got.fencing_tokens[1]


async def test_a_leased_dequeue_passes_over_items_held_by_others_and_waits_for_their_release(stubs: Stubs) -> None:
    for item in ("x", "y"):
        await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id=item, queue=queues_pb2.QUEUE_TYPE_INDEX))
    held = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="lease:x", owner="other"))
    assert held.acquired
    index = queues_pb2.QUEUE_TYPE_INDEX
    first = await stubs.queues.DequeueWork(_leased("h", queue=index, prefixes=["lease:"]))
    assert first.id == "y" and len(first.fencing_tokens) == 1  # "x" is held: passed over, keeps its place
    nothing = await stubs.queues.DequeueWork(_leased("h", queue=index, prefixes=["lease:"]))
    assert nothing.id == ""
    waiting = asyncio.ensure_future(
        stubs.queues.DequeueWork(_leased("h", queue=index, prefixes=["lease:"], wait_ms=20_000), timeout=30)
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()
    started = time.monotonic()
    await stubs.locks.ReleaseLock(locks_pb2.ReleaseLockRequest(resource="lease:x", owner="other"))
    second = await waiting
    assert second.id == "x" and len(second.fencing_tokens) == 1
    assert time.monotonic() - started < 5  # woken by the release, not by the end of its wait
    # A plain dequeue is not held up by leases: the queue is empty now.
    plain = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=index))
    assert plain.id == ""


async def test_a_release_carried_by_a_dequeue_queues_the_workflow_it_kept_and_hands_it_out(stubs: Stubs) -> None:
    """A WFE step: leased dequeue, persist under the leases (not queued: leased), then the next
    dequeue frees the leases, which queues the workflow again, and hands it out in the same call."""
    await stubs.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="s1", next_execution=0))
    )
    step1 = await stubs.queues.DequeueWork(_leased("host", include_workflow=True))
    assert step1.id == "s1"
    persisted = await stubs.workflows.PersistWorkflow(
        workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="s1", next_execution=0), expected_revision=1)
    )
    assert persisted.server_queues
    step2 = await stubs.queues.DequeueWork(_leased("host", include_workflow=True, release=(CLAIM + "s1", "s1")))
    assert step2.id == "s1" and step2.workflow.revision == 2
    assert min(step2.fencing_tokens) > max(step1.fencing_tokens)
    other = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="s1", owner="someone"))
    assert not other.acquired


async def _waiting(stubs: Stubs, workflow_id: str, subscriptions: list[subscriptions_pb2.EventSubscription]) -> None:
    """A new workflow ``workflow_id`` stored with ``subscriptions``."""
    await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id=workflow_id)))
    await stubs.workflows.PersistWorkflowWithSubscriptions(
        workflows_pb2.PersistWorkflowWithSubscriptionsRequest(
            workflow=_workflow(id=workflow_id), subscriptions=subscriptions
        )
    )


async def _create_event(stubs: Stubs, id: str, name: str, key: str, data: str = "{}") -> None:
    """An event ``id`` at NOW."""
    await stubs.events.CreateEvent(
        events_pb2.CreateEventRequest(
            event=events_pb2.Event(id=id, event_name=name, event_key=key, event_data=data, event_time=NOW)
        )
    )


async def test_an_event_dequeue_can_bring_the_event_and_the_subscriptions_it_matches(stubs: Stubs) -> None:
    """What a WFE host's event consumer reads right after its dequeue, in the same call."""

    def subscription(id: str, key: str, as_of: int) -> subscriptions_pb2.EventSubscription:
        return subscriptions_pb2.EventSubscription(
            id=id,
            workflow_id="waiting",
            execution_pointer_id="p",
            event_name="paid",
            event_key=key,
            subscribe_as_of=timestamp_pb2.Timestamp(seconds=as_of),
        )

    before, after = NOW.seconds - 10, NOW.seconds + 10
    await _waiting(
        stubs,
        "waiting",
        [
            subscription("s-match", "k", before),
            subscription("s-late", "k", after),
            subscription("s-other", "k2", before),
        ],
    )
    await _create_event(stubs, "ev", "paid", "k", '{"a":1}')
    got = await stubs.queues.DequeueWork(
        queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, include_event=True)
    )
    assert got.id == "ev" and got.event.id == "ev" and got.event.event_data == '{"a":1}' and not got.event.is_processed
    assert got.subscriptions_included and [s.id for s in got.subscriptions] == ["s-match"]
    assert got.subscriptions[0].workflow_id == "waiting" and got.subscriptions[0].execution_pointer_id == "p"
    # The same as GetSubscriptions answers.
    asked = await stubs.subscriptions.GetSubscriptions(
        subscriptions_pb2.GetSubscriptionsRequest(event_name="paid", event_key="k", as_of=NOW)
    )
    assert list(asked.subscriptions) == list(got.subscriptions)
    # Not asked for, or another queue: nothing more.
    await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id="ev", queue=queues_pb2.QUEUE_TYPE_EVENT))
    plain = await stubs.queues.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT))
    assert plain.id == "ev" and not plain.HasField("event") and not plain.subscriptions_included
    await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id="gone", queue=queues_pb2.QUEUE_TYPE_EVENT))
    missing = await stubs.queues.DequeueWork(
        queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, include_event=True)
    )
    assert missing.id == "gone" and not missing.HasField("event") and not missing.subscriptions_included


async def test_an_event_dequeue_can_mark_an_event_no_subscription_waits_for_processed(stubs: Stubs) -> None:
    """What a WFE host's event consumer does next with an event nobody waits for (every workflow's
    completion event), done in the dequeue; an event that a subscription waits for is left alone."""
    event_queue = queues_pb2.QUEUE_TYPE_EVENT
    await _waiting(
        stubs,
        "waiting",
        [
            subscriptions_pb2.EventSubscription(
                id="s-open", workflow_id="waiting", event_name="paid", event_key="k", subscribe_as_of=NOW
            ),
            # Neither waits for an event "paid"/"k2" at NOW: terminated, or subscribed after it.
            subscriptions_pb2.EventSubscription(
                id="s-done", workflow_id="waiting", event_name="paid", event_key="k2", subscribe_as_of=NOW
            ),
            subscriptions_pb2.EventSubscription(
                workflow_id="waiting",
                event_name="paid",
                event_key="k2",
                subscribe_as_of=timestamp_pb2.Timestamp(seconds=NOW.seconds + 10),
            ),
        ],
    )
    await stubs.subscriptions.TerminateSubscription(subscriptions_pb2.TerminateSubscriptionRequest(id="s-done"))

    async def create(id: str, key: str) -> None:
        await _create_event(stubs, id, "paid", key)

    async def processed(id: str) -> bool:
        got = await stubs.events.GetEvent(events_pb2.GetEventRequest(id=id))
        return got.event.is_processed

    marking = queues_pb2.DequeueWorkRequest(queue=event_queue, include_event=True, mark_processed_if_unsubscribed=True)
    await create("nobody", "k2")
    got = await stubs.queues.DequeueWork(marking)
    assert got.id == "nobody" and got.marked_processed and got.event.is_processed
    assert got.subscriptions_included and len(got.subscriptions) == 0
    assert await processed("nobody")
    assert (await stubs.events.GetRunnableEvents(events_pb2.GetRunnableEventsRequest(as_at=NOW))).event_ids == []

    await create("awaited", "k")
    got = await stubs.queues.DequeueWork(marking)
    assert got.id == "awaited" and not got.marked_processed and not got.event.is_processed
    assert got.subscriptions_included and [s.id for s in got.subscriptions] == ["s-open"]
    assert not await processed("awaited")

    # Without include_event, or not asked for: nothing is marked.
    for index, request in enumerate(
        (
            queues_pb2.DequeueWorkRequest(queue=event_queue, mark_processed_if_unsubscribed=True),
            queues_pb2.DequeueWorkRequest(queue=event_queue, include_event=True),
        )
    ):
        await create(f"left-{index}", "k2")
        got = await stubs.queues.DequeueWork(request)
        assert got.id == f"left-{index}" and not got.marked_processed
        assert not await processed(got.id)


async def test_an_event_with_more_subscriptions_than_a_dequeue_brings_says_so(stubs: Stubs) -> None:
    await _waiting(
        stubs,
        "many",
        [
            subscriptions_pb2.EventSubscription(workflow_id="many", event_name="n", event_key="k", subscribe_as_of=NOW)
            for _ in range(1001)
        ],
    )
    await _create_event(stubs, "e-many", "n", "k", "null")
    got = await stubs.queues.DequeueWork(
        queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, include_event=True)
    )
    assert got.event.id == "e-many" and not got.subscriptions_included and len(got.subscriptions) == 0


async def test_leased_dequeue_requests_are_validated(stubs: Stubs) -> None:
    workflow = queues_pb2.QUEUE_TYPE_WORKFLOW
    release_alone = queues_pb2.DequeueWorkRequest(queue=workflow, release_resources=["r"])
    assert (await _refused(stubs.queues.DequeueWork(release_alone))).metadata["field"] == "release_resources"
    cases: list[tuple[queues_pb2.DequeueLeases, str]] = [
        (queues_pb2.DequeueLeases(prefixes=[""]), "leases.owner"),
        (queues_pb2.DequeueLeases(owner="o"), "leases.prefixes"),
        (queues_pb2.DequeueLeases(owner="o", prefixes=[str(i) for i in range(17)]), "leases.prefixes"),
        (queues_pb2.DequeueLeases(owner="o", prefixes=["a", "b", "a"]), "leases.prefixes[2]"),
        (queues_pb2.DequeueLeases(owner="o", prefixes=["p" * 513]), "leases.prefixes[0]"),
        (queues_pb2.DequeueLeases(owner="o", prefixes=[""], ttl=_ms(99)), "leases.ttl"),
        (queues_pb2.DequeueLeases(owner="o", prefixes=[""], ttl=duration_pb2.Duration(seconds=3601)), "leases.ttl"),
    ]
    for leases, field in cases:
        request = queues_pb2.DequeueWorkRequest(queue=workflow, leases=leases)
        assert (await _refused(stubs.queues.DequeueWork(request))).metadata["field"] == field, field
    too_many = _leased("o", release=tuple(f"r{i}" for i in range(17)))
    assert (await _refused(stubs.queues.DequeueWork(too_many))).metadata["field"] == "release_resources"
    empty_release = _leased("o", release=("",))
    assert (await _refused(stubs.queues.DequeueWork(empty_release))).metadata["field"] == "release_resources[0]"


async def test_a_duration_a_nanosecond_past_its_bound_is_refused_not_rounded_down(stubs: Stubs) -> None:
    """A wait of 60 s + 1 ns is over the 60 s allowed, a TTL of 1 h + 1 ns over the hour: INVALID_ARGUMENT.
    They were rounded down to whole microseconds before the check and taken (a DequeueWork then
    waited its 60 s on an empty queue)."""
    over_an_hour = duration_pb2.Duration(seconds=3600, nanos=1)
    over_a_minute = duration_pb2.Duration(seconds=60, nanos=1)
    workflow = queues_pb2.QUEUE_TYPE_WORKFLOW
    leases = queues_pb2.DequeueLeases(owner="o", prefixes=[""], ttl=over_an_hour)
    cases: list[tuple[Any, Any, str]] = [
        (stubs.locks.AcquireLock, locks_pb2.AcquireLockRequest(resource="r", owner="o", ttl=over_an_hour), "ttl"),
        (stubs.locks.RenewLocks, locks_pb2.RenewLocksRequest(owner="o", resources=["r"], ttl=over_an_hour), "ttl"),
        (stubs.queues.DequeueWork, queues_pb2.DequeueWorkRequest(queue=workflow, wait=over_a_minute), "wait"),
        (stubs.queues.DequeueWork, queues_pb2.DequeueWorkRequest(queue=workflow, leases=leases), "leases.ttl"),
    ]
    for call, request, field in cases:
        info = await _refused(call(request, timeout=5))
        assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == field, field
    # The bounds themselves are taken.
    hour = duration_pb2.Duration(seconds=3600)
    taken = await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="hour", owner="o", ttl=hour))
    assert taken.acquired
    tenth = duration_pb2.Duration(nanos=100_000_000)
    assert (await stubs.locks.AcquireLock(locks_pb2.AcquireLockRequest(resource="r", owner="o", ttl=tenth))).acquired


async def test_the_leases_a_dequeue_takes_on_a_long_id_can_be_renewed_and_released(stubs: Stubs) -> None:
    """A lease prefix (up to 512 bytes) and an id (up to 1024) name a resource of up to 1536 bytes:
    its owner renews and releases it like any other. RenewLocks, ReleaseLock and a dequeue's
    release_resources refused a resource over 1024 bytes (a provider renewing all its leases in one
    call then kept none of them)."""
    index = queues_pb2.QUEUE_TYPE_INDEX
    item, prefixes = "i" * 1024, [CLAIM, "p" * 512]
    resources = [prefix + item for prefix in prefixes]
    await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id=item, queue=index))
    got = await stubs.queues.DequeueWork(_leased("host-a", queue=index, prefixes=prefixes))
    assert got.id == item and len(got.fencing_tokens) == 2
    renewed = await stubs.locks.RenewLocks(
        locks_pb2.RenewLocksRequest(owner="host-a", resources=["short", *resources], ttl=_ms(5000))
    )
    assert list(renewed.lost_resources) == ["short"]
    released = await stubs.locks.ReleaseLock(
        locks_pb2.ReleaseLockRequest(owner="host-a", resource=resources[0], also_resources=resources[1:])
    )
    assert released.released and list(released.also_released) == resources[1:]
    # Taken again, then released by the next dequeue it carries.
    await stubs.queues.QueueWork(queues_pb2.QueueWorkRequest(id=item, queue=index))
    again = await stubs.queues.DequeueWork(_leased("host-a", queue=index, prefixes=prefixes))
    assert again.id == item
    after = await stubs.queues.DequeueWork(_leased("host-a", queue=index, prefixes=prefixes, release=tuple(resources)))
    assert after.id == ""
    gone = await stubs.locks.RenewLocks(locks_pb2.RenewLocksRequest(owner="host-a", resources=resources))
    assert list(gone.lost_resources) == resources
    # Longer than any lease can be: still refused.
    too_long = "r" * 1537
    for call, request, field in [
        (stubs.locks.RenewLocks, locks_pb2.RenewLocksRequest(owner="o", resources=[too_long]), "resources[0]"),
        (stubs.locks.ReleaseLock, locks_pb2.ReleaseLockRequest(owner="o", resource=too_long), "resource"),
        (stubs.queues.DequeueWork, _leased("o", queue=index, release=(too_long,)), "release_resources[0]"),
    ]:
        assert (await _refused(call(request))).metadata["field"] == field, field


async def test_a_waiting_dequeue_ends_at_once_when_the_server_stops(store_url: str) -> None:
    running = await RunningServer.start(ServerConfig(db=store_url, listen="127.0.0.1:0", grace=20.0))
    stopped = False
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stubs = Stubs(channel)
            waiting = asyncio.ensure_future(
                stubs.queues.DequeueWork(
                    queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW, wait=_ms(50_000)), timeout=60
                )
            )
            watch = stubs.lifecycle.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest())
            await watch.initial_metadata()
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await running.stop()
            stopped = True
            assert (await waiting).id == ""
            assert [r async for r in watch] == []
            assert await watch.code() == grpc.StatusCode.OK
            assert time.monotonic() - started < 5  # not the 20 s grace, not the 50 s wait
    finally:
        if not stopped:
            await running.stop()


# -- revisions --------------------------------------------------------------------------------------


def _workflow(**overrides: object) -> workflows_pb2.WorkflowInstance:
    fields: dict[str, object] = {
        "workflow_definition_id": "def",
        "version": 1,
        "status": workflows_pb2.WORKFLOW_STATUS_RUNNABLE,
        "data": "{}",
        "create_time": NOW,
    }
    fields.update(overrides)
    return workflows_pb2.WorkflowInstance(**fields)  # type: ignore[arg-type]


async def test_revisions_on_the_wire(stubs: Stubs) -> None:
    created = await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="w")))
    assert created.revision == 1
    got = await stubs.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(id="w"))
    assert got.workflow.revision == 1
    # The revision inside the message is ignored on input: only expected_revision is checked.
    persisted = await stubs.workflows.PersistWorkflow(
        workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="w", revision=77), expected_revision=1)
    )
    assert persisted.revision == 2
    stale = workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="w", data='{"stale":1}'), expected_revision=1)
    info = await _refused(stubs.workflows.PersistWorkflow(stale), grpc.StatusCode.ABORTED)
    assert info.reason == "REVISION_CONFLICT" and info.domain == "wfe-sqlite"
    assert (info.metadata["id"], info.metadata["expected"], info.metadata["stored"]) == ("w", "1", "2")
    with_subs = workflows_pb2.PersistWorkflowWithSubscriptionsRequest(workflow=_workflow(id="w"), expected_revision=1)
    assert (
        await _refused(stubs.workflows.PersistWorkflowWithSubscriptions(with_subs), grpc.StatusCode.ABORTED)
    ).reason == ("REVISION_CONFLICT")
    negative = workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="w"), expected_revision=-1)
    assert (await _refused(stubs.workflows.PersistWorkflow(negative))).metadata["field"] == "expected_revision"
    unchecked = await stubs.workflows.PersistWorkflowWithSubscriptions(
        workflows_pb2.PersistWorkflowWithSubscriptionsRequest(workflow=_workflow(id="w", next_execution=0))
    )
    assert unchecked.revision == 3  # and now runnable and due: queued
    dequeued = await stubs.queues.DequeueWork(
        queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW, include_workflow=True)
    )
    assert dequeued.id == "w" and dequeued.workflow.revision == 3 and dequeued.workflow.id == "w"


# -- lifecycle --------------------------------------------------------------------------------------


def _event(
    workflow: str = "wf", definition: str = "def", kind: int = lifecycle_pb2.LIFECYCLE_EVENT_TYPE_STARTED
) -> lifecycle_pb2.LifecycleEvent:
    return lifecycle_pb2.LifecycleEvent(
        event_time=NOW,
        workflow_instance_id=workflow,
        workflow_definition_id=definition,
        type=kind,  # type: ignore[arg-type]
    )


async def test_publish_is_validated(stubs: Stubs) -> None:
    publish = stubs.lifecycle.PublishLifecycleEvent
    assert (await _refused(publish(lifecycle_pb2.PublishLifecycleEventRequest()))).metadata["field"] == "event"
    no_type = lifecycle_pb2.PublishLifecycleEventRequest(event=_event(kind=0))
    assert (await _refused(publish(no_type))).metadata["field"] == "event.type"
    no_time = lifecycle_pb2.PublishLifecycleEventRequest(
        event=lifecycle_pb2.LifecycleEvent(workflow_instance_id="w", type=1)
    )
    assert (await _refused(publish(no_time))).metadata["field"] == "event.event_time"
    no_workflow = lifecycle_pb2.PublishLifecycleEventRequest(event=_event(workflow=""))
    assert (await _refused(publish(no_workflow))).metadata["field"] == "event.workflow_instance_id"
    assert (await publish(lifecycle_pb2.PublishLifecycleEventRequest(event=_event()))).watchers == 0


async def test_watchers_see_what_matches_their_filters_in_order(running_server: RunningServer) -> None:
    async with (
        GrpcLifecyclePublisher.connect(running_server.address) as hub,
        hub.watch() as everything,
        hub.watch(workflow_instance_id="wf-1") as one,
        hub.watch(workflow_definition_id="def-b") as definition,
    ):
        published = [
            LifecycleEvent(LifecycleEventType.STARTED, "wf-1", "def-a", 3, reference="ref"),
            LifecycleEvent(LifecycleEventType.STEP_STARTED, "wf-2", "def-b", step_id=4, step_name="charge"),
            LifecycleEvent(LifecycleEventType.ERROR, "wf-1", "def-a", message="boom"),
            LifecycleEvent(LifecycleEventType.COMPLETED, "wf-2", "def-b"),
        ]
        counts = [await hub.publish(e) for e in published]
        assert counts == [2, 2, 2, 2]

        async def take(watch: object, n: int) -> list[LifecycleEvent]:
            got = []
            async for event in watch:  # type: ignore[attr-defined]
                got.append(event)
                if len(got) == n:
                    break
            return got

        assert await asyncio.wait_for(take(everything, 4), 10) == published
        assert await asyncio.wait_for(take(one, 2), 10) == [published[0], published[2]]
        assert await asyncio.wait_for(take(definition, 2), 10) == [published[1], published[3]]


async def test_a_watcher_that_falls_behind_is_ended(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wfe_sqlite._lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "MAX_BEHIND", 100)  # the contract's 10000, scaled down for the test
    async with GrpcLifecyclePublisher.connect(running_server.address) as hub:
        watch = hub.watch()
        await watch.started()
        # The watcher reads nothing: once the transport's windows are full the server's write
        # blocks, its buffer for this watcher fills, and the watcher is ended.
        big = "x" * 64_000
        counts = []
        for i in range(2000):
            counts.append(await hub.publish(LifecycleEvent(LifecycleEventType.ERROR, f"wf-{i}", message=big)))
            if counts[-1] == 0:
                break
        assert counts[0] == 1 and counts[-1] == 0, "the watcher was never ended"
        assert len(counts) > 100
        received = 0
        with pytest.raises(WatcherFellBehind):
            async for _ in watch:
                received += 1
        assert received < len(counts) - 100  # what was buffered beyond the window is gone, not delivered


async def test_a_watcher_is_ended_once_its_unsent_events_pass_the_byte_budget(stubs: Stubs) -> None:
    """An unread watch holds at most ``MAX_BEHIND_BYTES`` of events, however large each is.

    Before, only the count (10000) bounded it: one watch that read nothing and a publisher of
    1 MiB events took the server from 74 MB to 457 MB in 400 events (10 GB at 10000).
    """
    watch = stubs.lifecycle.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest())
    await watch.initial_metadata()  # in place; from here on nothing is read
    event = _event()
    event.message = "x" * ((1 << 20) - 4096)  # within MAX_LIFECYCLE_EVENT_BYTES
    request = lifecycle_pb2.PublishLifecycleEventRequest(event=event)
    counts = []
    for _ in range(3 * MAX_BEHIND_BYTES >> 20):
        counts.append((await stubs.lifecycle.PublishLifecycleEvent(request)).watchers)
        if counts[-1] == 0:
            break
    assert counts[0] == 1 and counts[-1] == 0, f"the watcher was never ended ({len(counts)} MiB published)"
    assert len(counts) <= (MAX_BEHIND_BYTES >> 20) + 32  # the budget, plus what the transport took
    watch.cancel()


async def test_a_stream_cancelled_while_its_write_waits_ends_quietly(
    stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that cancels a server stream whose write is held by flow control (it read nothing)
    is no server bug: before, both streams logged ``internal error`` with grpc's ExecuteBatchError."""
    blob = '"' + "x" * (1 << 20) + '"'
    ids = []
    for i in range(24):
        workflow = workflows_pb2.WorkflowInstance(
            id=f"big-{i}", workflow_definition_id="d", status=1, data=blob, create_time=NOW
        )
        ids.append((await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow))).id)
    batch = stubs.workflows.BatchGetWorkflows(workflows_pb2.BatchGetWorkflowsRequest(ids=ids))
    watch = stubs.lifecycle.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest())
    await asyncio.gather(batch.initial_metadata(), watch.initial_metadata())
    event = _event()
    event.message = "x" * ((1 << 20) - 4096)  # within MAX_LIFECYCLE_EVENT_BYTES
    for _ in range(24):
        await stubs.lifecycle.PublishLifecycleEvent(lifecycle_pb2.PublishLifecycleEventRequest(event=event))
    await asyncio.sleep(0.5)  # both servers' writes now wait for the client's window
    batch.cancel()
    watch.cancel()
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()], caplog.text[-3000:]


async def test_entering_a_watch_whose_server_is_gone_raises_its_error(store_url: str) -> None:
    """Entering a watch waits for the server to have it in place: a call that failed before that
    raises (UNAVAILABLE), it does not enter a watch that will never see an event."""
    running = await RunningServer.start(ServerConfig(db=store_url, listen="127.0.0.1:0", grace=1.0))
    async with GrpcLifecyclePublisher.connect(running.address) as hub:
        await running.stop()
        with pytest.raises(WfeError) as failure:
            async with hub.watch():
                pass
        assert failure.value.code == "UNAVAILABLE"


def test_the_hub_bounds_each_watcher_and_counts_who_took_an_event() -> None:
    hub: LifecycleHub[int] = LifecycleHub()
    slow = hub.watch()
    picky = hub.watch(workflow_instance_id="only-this")
    assert hub.publish(1, "other", "d") == 1
    assert hub.publish(2, "only-this", "d") == 2
    for n in range(MAX_BEHIND - 2):
        hub.publish(n, "other", "d")
    assert hub.publish(0, "other", "d") == 0  # the 10001st waiting event ends the slow watcher
    assert slow.fell_behind and not picky.fell_behind
    with pytest.raises(WatcherFellBehind):
        asyncio.run(slow.next())
    picky.close()
    assert hub.watchers == 1
