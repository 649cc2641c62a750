"""Conformance: workflow operations (create, persist, get, runnable, definition sequences)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

import pytest
from conformance_support import T0, UTC, at_ms, full_pointer, is_uuid4, ms, subscription, workflow

from wfe_client import (
    AlreadyExists,
    EventSubscription,
    ExecutionPointer,
    InvalidArgument,
    PersistenceProvider,
    PointerStatus,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
    WorkflowNotFound,
    WorkflowStatus,
)
from wfe_client.limits import MAX_ID_BYTES

# -- create ---------------------------------------------------------------------------------------


async def test_create_keeps_supplied_id(provider: PersistenceProvider) -> None:
    w = workflow(id="my-own-id", name="explicit")
    assert await provider.create_new_workflow(w) == "my-own-id"
    assert w.id == "my-own-id"
    got = await provider.get_workflow_instance("my-own-id")
    assert got.id == "my-own-id"
    assert got.name == "explicit"
    assert got.workflow_definition_id == "order"


async def test_create_generates_uuid4_for_empty_id(provider: PersistenceProvider) -> None:
    w = workflow(id="")
    wid = await provider.create_new_workflow(w)
    assert is_uuid4(wid), wid
    assert w.id == wid
    assert (await provider.get_workflow_instance(wid)).id == wid
    other = workflow(id="")
    assert await provider.create_new_workflow(other) != wid


async def test_create_duplicate_id_is_already_exists(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow(id="dup", name="first", data={"v": "first"}))
    with pytest.raises(WorkflowAlreadyExists) as info:
        await provider.create_new_workflow(workflow(id="dup", name="second", data={"v": "second"}))
    assert isinstance(info.value, AlreadyExists)
    got = await provider.get_workflow_instance("dup")
    assert got.name == "first"
    assert got.data == {"v": "first"}
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name("second")


async def test_create_duplicate_id_with_empty_name_is_already_exists(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow(id="dup2"))
    with pytest.raises(WorkflowAlreadyExists):
        await provider.create_new_workflow(workflow(id="dup2"))


async def test_create_duplicate_name_is_already_exists(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow(id="a", name="shared-name"))
    with pytest.raises(WorkflowNameTaken) as info:
        await provider.create_new_workflow(workflow(id="b", name="shared-name"))
    assert isinstance(info.value, AlreadyExists)
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance("b")
    assert (await provider.get_workflow_instance_by_name("shared-name")).id == "a"


async def test_create_empty_name_assigned_from_definition_sequence(provider: PersistenceProvider) -> None:
    first, second = workflow("invoice"), workflow("invoice")
    await provider.create_new_workflow(first)
    await provider.create_new_workflow(second)
    assert first.name == "invoice-1"
    assert second.name == "invoice-2"
    assert (await provider.get_workflow_instance(first.id)).name == "invoice-1"
    assert (await provider.get_workflow_instance_by_name("invoice-2")).id == second.id
    # The assignment used the definition's sequence: the next number is 3.
    assert await provider.next_definition_sequence("invoice") == 3


async def test_next_definition_sequence_reserves_blocks(provider: PersistenceProvider) -> None:
    """``count`` reserves consecutive numbers: the first is returned, the next call starts after
    the block, concurrent blocks never overlap, and an unnamed create numbers after them all."""
    assert await provider.next_definition_sequence("block", count=5) == 1  # 1..5
    assert await provider.next_definition_sequence("block") == 6
    firsts = await asyncio.gather(*(provider.next_definition_sequence("block", count=3) for _ in range(10)))
    numbers = sorted(n for first in firsts for n in range(first, first + 3))
    assert numbers == list(range(7, 37)), "ten blocks of 3, none overlapping, none missing"
    w = workflow("block")
    await provider.create_new_workflow(w)
    assert w.name == "block-37"
    assert await provider.next_definition_sequence("block", count=10_000) == 38  # the largest block
    assert await provider.next_definition_sequence("block") == 10_038


@pytest.mark.parametrize("count", [0, -1, 10_001, 2**40, True, "3", None])
async def test_next_definition_sequence_count_out_of_range(provider: PersistenceProvider, count: object) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await provider.next_definition_sequence("refused", count=count)  # type: ignore[arg-type]
    assert refused.value.metadata["field"] == "count"
    assert await provider.next_definition_sequence("refused") == 1, "a refused call reserved nothing"


async def test_create_empty_name_skips_taken_names(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow("d", id="explicit", name="d-1"))
    w = workflow("d", id="generated")
    await provider.create_new_workflow(w)
    assert w.name == "d-2"
    assert (await provider.get_workflow_instance_by_name("d-2")).id == "generated"
    assert (await provider.get_workflow_instance_by_name("d-1")).id == "explicit"


async def test_create_empty_name_skips_several_taken_names(provider: PersistenceProvider) -> None:
    for n in (1, 2, 3):
        await provider.create_new_workflow(workflow("s", name=f"s-{n}"))
    w = workflow("s")
    await provider.create_new_workflow(w)
    assert w.name == "s-4"


async def test_create_sequence_consumed_by_explicit_calls(provider: PersistenceProvider) -> None:
    assert await provider.next_definition_sequence("q") == 1
    assert await provider.next_definition_sequence("q") == 2
    w = workflow("q")
    await provider.create_new_workflow(w)
    assert w.name == "q-3"


async def test_create_stores_pointers_in_order(provider: PersistenceProvider) -> None:
    pointers = [ExecutionPointer.new(step) for step in (5, 0, 3, 1)]
    w = workflow(pointers=pointers)
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert [p.id for p in got.execution_pointers] == [p.id for p in pointers]
    assert [p.step_id for p in got.execution_pointers] == [5, 0, 3, 1]


async def test_create_without_pointers(provider: PersistenceProvider) -> None:
    w = workflow(pointers=[])
    await provider.create_new_workflow(w)
    assert (await provider.get_workflow_instance(w.id)).execution_pointers == []


async def test_parallel_creates(provider: PersistenceProvider) -> None:
    instances = [workflow("par", data={"i": i}) for i in range(30)]
    ids = await asyncio.gather(*(provider.create_new_workflow(w) for w in instances))
    assert len(set(ids)) == 30
    assert ids == [w.id for w in instances]
    assert sorted(w.name for w in instances) == sorted(f"par-{n}" for n in range(1, 31))
    got = await provider.get_workflow_instances(ids)
    assert sorted((w.id, w.data["i"], w.name) for w in got) == sorted((w.id, w.data["i"], w.name) for w in instances)
    for w in instances:
        assert (await provider.get_workflow_instance(w.id)).data == {"i": w.data["i"]}


async def test_parallel_creates_with_empty_ids(provider: PersistenceProvider) -> None:
    instances = [workflow("par", id="", name=f"n{i}") for i in range(30)]
    ids = await asyncio.gather(*(provider.create_new_workflow(w) for w in instances))
    assert len(set(ids)) == 30 and all(is_uuid4(i) for i in ids)
    assert len(await provider.get_workflow_instances(ids)) == 30


# -- persist --------------------------------------------------------------------------------------


async def test_persist_replaces_every_mutable_field(provider: PersistenceProvider) -> None:
    w = workflow("p", name="before", pointers=[ExecutionPointer.new(0)])
    w.description = "old"
    w.reference = "old-ref"
    await provider.create_new_workflow(w)
    created = await provider.get_workflow_instance(w.id)

    w.name = "after"
    w.version = 2
    w.root_workflow_id = "root-1"
    w.description = "new"
    w.reference = "new-ref"
    w.next_execution = 1_234_567
    w.status = WorkflowStatus.COMPLETE
    w.data = {"replaced": [1, 2, 3]}
    w.complete_time = datetime(2025, 5, 6, 7, 8, 9, 101112, tzinfo=UTC)
    w.create_time = datetime(1999, 1, 1, tzinfo=UTC)  # must be ignored
    w.execution_pointers = [full_pointer(0, PointerStatus.COMPLETE)]
    await provider.persist_workflow(w)

    got = await provider.get_workflow_instance(w.id)
    assert got.name == "after"
    assert got.version == 2
    assert got.root_workflow_id == "root-1"
    assert got.description == "new"
    assert got.reference == "new-ref"
    assert got.next_execution == 1_234_567
    assert got.status is WorkflowStatus.COMPLETE
    assert got.data == {"replaced": [1, 2, 3]}
    assert got.complete_time == datetime(2025, 5, 6, 7, 8, 9, 101112, tzinfo=UTC)
    assert got.create_time == created.create_time
    assert got.execution_pointers == w.execution_pointers
    assert (await provider.get_workflow_instance_by_name("after")).id == w.id
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name("before")


async def test_persist_can_clear_optional_fields(provider: PersistenceProvider) -> None:
    w = workflow("p")
    w.description, w.reference, w.root_workflow_id = "d", "r", "root"
    w.complete_time = T0
    await provider.create_new_workflow(w)
    w.description = w.reference = w.root_workflow_id = None
    w.complete_time = None
    w.next_execution = None
    await provider.persist_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert (got.description, got.reference, got.root_workflow_id) == (None, None, None)
    assert got.complete_time is None
    assert got.next_execution is None


async def test_persist_replaces_pointer_set_fewer_and_more(provider: PersistenceProvider) -> None:
    a, b, c = ExecutionPointer.new(0), ExecutionPointer.new(1), ExecutionPointer.new(2)
    w = workflow(pointers=[a, b, c])
    await provider.create_new_workflow(w)

    b.status = PointerStatus.RUNNING
    w.execution_pointers = [b]
    await provider.persist_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert [p.id for p in got.execution_pointers] == [b.id]
    assert got.execution_pointers[0].status is PointerStatus.RUNNING

    d, e = ExecutionPointer.new(3), ExecutionPointer.new(4)
    w.execution_pointers = [e, b, d, a]
    await provider.persist_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert [p.id for p in got.execution_pointers] == [e.id, b.id, d.id, a.id]
    assert [p.step_id for p in got.execution_pointers] == [4, 1, 3, 0]

    w.execution_pointers = []
    await provider.persist_workflow(w)
    assert (await provider.get_workflow_instance(w.id)).execution_pointers == []


async def test_persist_create_time_never_changes(provider: PersistenceProvider) -> None:
    w = workflow()
    w.create_time = datetime(2020, 2, 2, 2, 2, 2, 222222, tzinfo=UTC)
    await provider.create_new_workflow(w)
    w.create_time = datetime(2021, 1, 1, tzinfo=UTC)
    await provider.persist_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert got.create_time == datetime(2020, 2, 2, 2, 2, 2, 222222, tzinfo=UTC)


async def test_persist_unknown_id_is_workflow_not_found(provider: PersistenceProvider) -> None:
    with pytest.raises(WorkflowNotFound):
        await provider.persist_workflow(workflow(id="nope", name="ghost"))
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance("nope")
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name("ghost")


async def test_persist_rename_to_taken_name_is_already_exists(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow(id="one", name="taken"))
    w = workflow(id="two", name="mine", data={"v": 1})
    await provider.create_new_workflow(w)
    w.name = "taken"
    w.data = {"v": 2}
    with pytest.raises(WorkflowNameTaken):
        await provider.persist_workflow(w)
    got = await provider.get_workflow_instance("two")
    assert got.name == "mine"
    assert got.data == {"v": 1}


async def test_persist_with_subscriptions_stores_both(provider: PersistenceProvider) -> None:
    w = workflow(pointers=[ExecutionPointer.new(0)])
    await provider.create_new_workflow(w)
    pointer = w.execution_pointers[0]
    pointer.status = PointerStatus.WAITING_FOR_EVENT
    pointer.event_name, pointer.event_key = "approved", "order-1"
    w.status = WorkflowStatus.RUNNABLE
    w.next_execution = None
    s1 = subscription("approved", "order-1", T0, w.id, 0, pointer.id)
    s2 = subscription("approved", "order-1", T0 + timedelta(seconds=1), w.id, 0, pointer.id)
    s2.subscription_data = {"x": 1}
    await provider.persist_workflow_with_subscriptions(w, [s1, s2])

    got = await provider.get_workflow_instance(w.id)
    assert got.execution_pointers[0].status is PointerStatus.WAITING_FOR_EVENT
    assert got.next_execution is None
    assert await provider.get_subscription(s1.id) == s1
    assert await provider.get_subscription(s2.id) == s2
    listed = await provider.get_subscriptions("approved", "order-1", T0 + timedelta(hours=1))
    assert [s.id for s in listed] == [s1.id, s2.id]


async def test_persist_with_no_subscriptions(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    w.data = {"updated": True}
    await provider.persist_workflow_with_subscriptions(w, [])
    assert (await provider.get_workflow_instance(w.id)).data == {"updated": True}


async def test_persist_with_subscriptions_is_all_or_nothing(provider: PersistenceProvider) -> None:
    w = workflow(data={"state": "original"}, pointers=[ExecutionPointer.new(0)])
    await provider.create_new_workflow(w)
    original = await provider.get_workflow_instance(w.id)
    existing = subscription("e", "k", T0, w.id)
    await provider.create_event_subscription(existing)

    w.data = {"state": "changed"}
    w.status = WorkflowStatus.SUSPENDED
    w.execution_pointers = [ExecutionPointer.new(7), ExecutionPointer.new(8)]
    fresh = subscription("e", "k", T0, w.id)
    clash = subscription("e", "k", T0, w.id)
    clash.id = existing.id
    with pytest.raises(AlreadyExists) as info:
        await provider.persist_workflow_with_subscriptions(w, [fresh, clash])
    assert isinstance(info.value, SubscriptionAlreadyExists)

    assert await provider.get_workflow_instance(w.id) == original
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(fresh.id)
    assert [s.id for s in await provider.get_subscriptions("e", "k", T0)] == [existing.id]


async def test_persist_with_subscriptions_duplicate_within_call(provider: PersistenceProvider) -> None:
    w = workflow(data={"state": "original"})
    await provider.create_new_workflow(w)
    original = await provider.get_workflow_instance(w.id)
    a = subscription("e2", "k", T0, w.id)
    b = subscription("e2", "k", T0, w.id)
    b.id = a.id
    w.data = {"state": "changed"}
    with pytest.raises(AlreadyExists):
        await provider.persist_workflow_with_subscriptions(w, [a, b])
    assert await provider.get_workflow_instance(w.id) == original
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(a.id)


BIG = 1500  # above the server's _OFF_LOOP_SUBSCRIPTIONS: converted on a worker thread over gRPC


def _big_batch(workflow_id: str, name: str) -> list[EventSubscription]:
    subs = [subscription(name, f"k{i}", T0, workflow_id) for i in range(BIG)]
    for s in subs:
        s.id = ""  # fresh ids from the server
    return subs


async def test_persist_with_many_subscriptions_duplicates_are_the_same_error(provider: PersistenceProvider) -> None:
    """A big batch is inserted at once (executemany on SQLite): the refusal still names the first
    subscription that clashes, whether with a stored one or one earlier in the batch, and the whole
    persist is undone."""
    w = workflow(data={"state": "original"})
    await provider.create_new_workflow(w)
    original = await provider.get_workflow_instance(w.id)
    stored = subscription("big-e", "stored", T0, w.id)
    await provider.create_event_subscription(stored)
    w.data = {"state": "changed"}

    within = _big_batch(w.id, "big-e")
    within[700].id = "dup-within"
    within[1200].id = "dup-within"
    within[1400].id = stored.id  # later than the first clash: not the one named
    with pytest.raises(SubscriptionAlreadyExists) as info:
        await provider.persist_workflow_with_subscriptions(w, within)
    assert info.value.message == "subscription 'dup-within' already exists"
    assert info.value.metadata.get("id") == "dup-within"

    against = _big_batch(w.id, "big-e")
    against[1300].id = stored.id
    against[1450].id = against[1460].id = "dup-later"
    with pytest.raises(SubscriptionAlreadyExists) as info:
        await provider.persist_workflow_with_subscriptions(w, against)
    assert info.value.message == f"subscription {stored.id!r} already exists"
    assert info.value.metadata.get("id") == stored.id

    assert await provider.get_workflow_instance(w.id) == original
    assert [s.id for s in await provider.get_subscriptions("big-e", "k5", T0)] == []
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription("dup-within")


async def test_persist_with_many_subscriptions_invalid_field_is_named(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    subs = _big_batch(w.id, "big-f")
    subs[1250].event_name = "n" * (MAX_ID_BYTES + 1)
    subs[1300].workflow_id = ""  # later: not the one named
    with pytest.raises(InvalidArgument) as info:
        await provider.persist_workflow_with_subscriptions(w, subs)
    assert info.value.metadata.get("field") == "subscriptions[1250].event_name"
    assert info.value.message == f"subscriptions[1250].event_name: longer than {MAX_ID_BYTES} bytes"
    assert await provider.get_subscriptions("big-f", "k0", T0) == []


async def test_persist_with_many_subscriptions_gives_fresh_uuid4_ids(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    subs = _big_batch(w.id, "big-g")
    subs[3].id = "given"
    await provider.persist_workflow_with_subscriptions(w, subs)
    ids = [s.id for s in subs]
    assert ids[3] == "given"
    fresh = ids[:3] + ids[4:]
    assert all(is_uuid4(i) for i in fresh)
    assert len(set(ids)) == BIG
    for i in (0, 3, 777, BIG - 1):
        got = await provider.get_subscription(ids[i])
        assert got.event_key == f"k{i}" and got.workflow_id == w.id


async def test_persist_with_subscriptions_unknown_workflow(provider: PersistenceProvider) -> None:
    s = subscription("e3", "k", T0, "ghost")
    with pytest.raises(WorkflowNotFound):
        await provider.persist_workflow_with_subscriptions(workflow(id="ghost"), [s])
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(s.id)
    assert await provider.get_subscriptions("e3", "k", T0) == []


MANY_POINTERS = 1500  # above the server's OFF_LOOP_POINTERS (converted on a worker thread over gRPC) and
# above the SQLite store's _COMPARE_POINTERS (only the pointers that differ are written)


async def test_a_workflow_of_many_pointers_round_trips_through_every_read(provider: PersistenceProvider) -> None:
    w = workflow(name="many-pointers", pointers=[full_pointer(i) for i in range(MANY_POINTERS)])
    await provider.create_new_workflow(w)
    assert await provider.get_workflow_instance(w.id) == w

    w.execution_pointers[5].status = PointerStatus.COMPLETE
    w.execution_pointers[MANY_POINTERS - 1].children = ["changed"]
    w.execution_pointers.extend(full_pointer(i) for i in range(MANY_POINTERS, MANY_POINTERS + 3))
    del w.execution_pointers[2:4]  # the later ones move up a position
    await provider.persist_workflow(w)
    assert await provider.get_workflow_instance(w.id) == w
    assert await provider.get_workflow_instance_by_name("many-pointers") == w
    assert await provider.get_workflow_instances([w.id]) == [w]

    del w.execution_pointers[10:]
    await provider.persist_workflow(w)
    assert await provider.get_workflow_instance(w.id) == w


async def test_a_workflow_of_many_pointers_invalid_field_is_named(provider: PersistenceProvider) -> None:
    w = workflow(pointers=[full_pointer(i) for i in range(MANY_POINTERS)])
    await provider.create_new_workflow(w)
    original = await provider.get_workflow_instance(w.id)
    w.execution_pointers[1234].step_name = "n" * (MAX_ID_BYTES + 1)
    with pytest.raises(InvalidArgument) as info:
        await provider.persist_workflow(w)
    field = "workflow.execution_pointers[1234].step_name"
    assert info.value.metadata.get("field") == field
    assert info.value.message == f"{field}: longer than {MAX_ID_BYTES} bytes"
    assert await provider.get_workflow_instance(w.id) == original


# -- reads ----------------------------------------------------------------------------------------


async def test_get_workflow_instance_missing(provider: PersistenceProvider) -> None:
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance("missing")


async def test_get_workflow_instance_by_name(provider: PersistenceProvider) -> None:
    w = workflow(name="by-name")
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance_by_name("by-name")
    assert got == await provider.get_workflow_instance(w.id)
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name("by-nam")
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name(w.id)  # an id is not a name


async def test_get_workflow_instances_skips_missing(provider: PersistenceProvider) -> None:
    a, b, c = workflow(data={"w": "a"}), workflow(data={"w": "b"}), workflow(data={"w": "c"})
    for w in (a, b, c):
        await provider.create_new_workflow(w)
    got = await provider.get_workflow_instances(["missing-1", c.id, a.id, "missing-2"])
    assert sorted(w.id for w in got) == sorted([a.id, c.id])
    by_id = {w.id: w for w in got}
    assert by_id[a.id].data == {"w": "a"}
    assert by_id[c.id] == await provider.get_workflow_instance(c.id)
    assert await provider.get_workflow_instances([]) == []
    assert await provider.get_workflow_instances(["nope"]) == []


async def test_get_workflow_instances_many(provider: PersistenceProvider) -> None:
    instances = [workflow("many", data={"i": i}) for i in range(600)]
    await asyncio.gather(*(provider.create_new_workflow(w) for w in instances))
    # 1,300 ids: more than one request's worth for a batching adapter, missing ids and repeats mixed in.
    wanted = [w.id for w in instances] + [f"missing-{i}" for i in range(600)] + [w.id for w in instances[:100]]
    got = await provider.get_workflow_instances(wanted)
    assert len(got) == 600  # each existing workflow once
    assert {w.id: w.data["i"] for w in got} == {w.id: w.data["i"] for w in instances}
    assert all(len(w.execution_pointers) == 1 for w in got)


# -- runnable -------------------------------------------------------------------------------------


async def test_runnable_instances_due_only_earliest_first(provider: PersistenceProvider) -> None:
    base = ms(T0)
    late = workflow(id="late", next_execution=base + 3000)
    early = workflow(id="early", next_execution=base + 1000)
    mid = workflow(id="mid", next_execution=base + 2000)
    future = workflow(id="future", next_execution=base + 10_000)
    never = workflow(id="never", next_execution=None)
    for w in (late, early, mid, future, never):
        await provider.create_new_workflow(w)
    assert await provider.get_runnable_instances(at_ms(base + 5000)) == ["early", "mid", "late"]
    assert await provider.get_runnable_instances(at_ms(base + 1000)) == ["early"]
    assert await provider.get_runnable_instances(at_ms(base + 999)) == []
    assert "never" not in await provider.get_runnable_instances(datetime(9999, 1, 1, tzinfo=UTC))


async def test_runnable_instances_exclude_non_runnable_status(provider: PersistenceProvider) -> None:
    for status in WorkflowStatus:
        await provider.create_new_workflow(workflow(id=status.name, status=status, next_execution=0))
    assert await provider.get_runnable_instances(T0) == ["RUNNABLE"]


async def test_runnable_instances_follow_persist(provider: PersistenceProvider) -> None:
    w = workflow(next_execution=ms(T0))
    await provider.create_new_workflow(w)
    assert await provider.get_runnable_instances(T0) == [w.id]
    w.status = WorkflowStatus.SUSPENDED
    await provider.persist_workflow(w)
    assert await provider.get_runnable_instances(T0) == []
    w.status = WorkflowStatus.RUNNABLE
    w.next_execution = None
    await provider.persist_workflow(w)
    assert await provider.get_runnable_instances(T0) == []
    w.next_execution = ms(T0) - 1
    await provider.persist_workflow(w)
    assert await provider.get_runnable_instances(T0) == [w.id]


async def test_runnable_instances_many(provider: PersistenceProvider) -> None:
    base = ms(T0)
    instances = [workflow("bulk", next_execution=base - i) for i in range(300)]
    await asyncio.gather(*(provider.create_new_workflow(w) for w in instances))
    got = await provider.get_runnable_instances(T0)
    assert got == [w.id for w in reversed(instances)]


@pytest.mark.parametrize("count", [127, 128, 129])
async def test_runnable_instances_around_a_short_page(provider: PersistenceProvider, count: int) -> None:
    """Answers just under, at and just over the length the SQLite store reads on the loop thread
    (a longer one is read again on the reader pool): each complete and in order."""
    base = ms(T0)
    instances = [workflow("edge", next_execution=base - i) for i in range(count)]
    await asyncio.gather(*(provider.create_new_workflow(w) for w in instances))
    assert await provider.get_runnable_instances(T0) == [w.id for w in reversed(instances)]


async def test_empty_store_has_nothing_runnable(provider: PersistenceProvider) -> None:
    assert await provider.get_runnable_instances(datetime(9999, 1, 1, tzinfo=UTC)) == []


# -- definition sequences -------------------------------------------------------------------------


async def test_next_definition_sequence_counts_per_definition(provider: PersistenceProvider) -> None:
    assert [await provider.next_definition_sequence("alpha") for _ in range(3)] == [1, 2, 3]
    assert await provider.next_definition_sequence("beta") == 1
    assert await provider.next_definition_sequence("alpha") == 4
    assert await provider.next_definition_sequence("beta") == 2
    assert await provider.next_definition_sequence("Alpha") == 1  # case-sensitive ids


async def test_next_definition_sequence_concurrent(provider: PersistenceProvider) -> None:
    numbers = await asyncio.gather(*(provider.next_definition_sequence("conc") for _ in range(50)))
    assert sorted(numbers) == list(range(1, 51))
    assert await provider.next_definition_sequence("conc") == 51


async def test_workflow_round_trips_as_equal_dataclass(provider: PersistenceProvider) -> None:
    w = workflow(name="eq", pointers=[ExecutionPointer.new(0), ExecutionPointer.new(1)])
    expected = dataclasses.replace(w, execution_pointers=list(w.execution_pointers), revision=1)
    await provider.create_new_workflow(w)
    assert await provider.get_workflow_instance(w.id) == expected
