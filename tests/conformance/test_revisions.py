"""Conformance: workflow revisions (optimistic concurrency) through both providers."""

from __future__ import annotations

import asyncio
import copy

import pytest
from conformance_support import subscription, workflow

from wfe_client import (
    ExecutionPointer,
    InvalidArgument,
    PersistenceProvider,
    RevisionConflict,
    SubscriptionNotFound,
    WorkflowNotFound,
)


async def test_create_stores_revision_one_and_every_persist_adds_one(provider: PersistenceProvider) -> None:
    w = workflow()
    assert w.revision == 0
    await provider.create_new_workflow(w)
    assert w.revision == 1
    assert (await provider.get_workflow_instance(w.id)).revision == 1
    for expected in (2, 3, 4):
        w.data = {"n": expected}
        await provider.persist_workflow(w)
        assert w.revision == expected
    assert (await provider.get_workflow_instance(w.id)).revision == 4
    assert (await provider.get_workflow_instance_by_name(w.name)).revision == 4
    assert [x.revision for x in await provider.get_workflow_instances([w.id])] == [4]
    await provider.persist_workflow_with_subscriptions(w, [subscription(workflow_id=w.id)])
    assert w.revision == 5
    assert (await provider.get_workflow_instance(w.id)).revision == 5


async def test_a_stale_persist_is_a_conflict_and_writes_nothing(provider: PersistenceProvider) -> None:
    w = workflow(data={"v": "original"})
    await provider.create_new_workflow(w)
    first = await provider.get_workflow_instance(w.id)
    second = await provider.get_workflow_instance(w.id)
    first.data = {"v": "first"}
    await provider.persist_workflow(first)
    second.data = {"v": "stale"}
    second.execution_pointers = [ExecutionPointer.new(7), ExecutionPointer.new(8)]
    second.name = "renamed-by-stale"
    with pytest.raises(RevisionConflict) as info:
        await provider.persist_workflow(second)
    assert info.value.reason == "REVISION_CONFLICT" and info.value.code == "ABORTED"
    assert info.value.metadata.get("id") == w.id
    assert second.revision == 1  # unchanged on failure
    stored = await provider.get_workflow_instance(w.id)
    assert stored.data == {"v": "first"} and stored.revision == 2 and stored.name == w.name
    assert [p.step_id for p in stored.execution_pointers] == [p.step_id for p in first.execution_pointers]


async def test_a_stale_persist_with_subscriptions_writes_no_subscription(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    stale = copy.deepcopy(w)
    await provider.persist_workflow(w)
    sub = subscription(workflow_id=w.id)
    with pytest.raises(RevisionConflict):
        await provider.persist_workflow_with_subscriptions(stale, [sub])
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(sub.id)
    assert (await provider.get_workflow_instance(w.id)).revision == 2


async def test_force_and_revision_zero_skip_the_check(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    stale = copy.deepcopy(w)
    await provider.persist_workflow(w)
    stale.data = {"forced": True}
    await provider.persist_workflow(stale, force=True)
    assert stale.revision == 3
    blind = copy.deepcopy(w)
    blind.revision = 0  # built by hand, never read: no expectation
    blind.data = {"blind": True}
    await provider.persist_workflow(blind)
    assert blind.revision == 4
    assert (await provider.get_workflow_instance(w.id)).data == {"blind": True}
    other = copy.deepcopy(w)
    await provider.persist_workflow_with_subscriptions(other, [subscription(workflow_id=w.id)], force=True)
    assert other.revision == 5


async def test_of_concurrent_persists_at_one_revision_exactly_one_wins(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    copies = [copy.deepcopy(w) for _ in range(12)]
    for i, c in enumerate(copies):
        c.data = {"writer": i}
    results = await asyncio.gather(*(provider.persist_workflow(c) for c in copies), return_exceptions=True)
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, RevisionConflict) for r in results if r is not None)
    stored = await provider.get_workflow_instance(w.id)
    assert stored.data == {"writer": winners[0]} and stored.revision == 2


async def test_unknown_workflow_is_not_found_before_any_revision_check(provider: PersistenceProvider) -> None:
    w = workflow()
    w.revision = 5
    with pytest.raises(WorkflowNotFound):
        await provider.persist_workflow(w)


async def test_a_negative_revision_is_invalid(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    w.revision = -1
    with pytest.raises(InvalidArgument):
        await provider.persist_workflow(w)
