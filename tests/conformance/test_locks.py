"""Conformance: distributed locks (leases, owners, TTL, renewal, fencing tokens) through both providers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from conformance_support import workflow

from conftest import ClusterUnderTest
from wfe_client import InvalidArgument, QueueType, StorageUnavailable

SHORT = timedelta(milliseconds=300)


async def test_acquire_is_exclusive_and_not_reentrant(cluster: ClusterUnderTest) -> None:
    a = await cluster.locks("owner-a")
    b = await cluster.locks("owner-b")
    assert await a.acquire_lock("wf-1") is True
    assert await b.acquire_lock("wf-1") is False
    assert await a.acquire_lock("wf-1") is False  # not re-entrant, as WFE's lock_suite expects
    assert await b.acquire_lock("wf-2") is True  # other resources are independent
    assert a.held == ["wf-1"] and b.held == ["wf-2"]


async def test_release_by_the_wrong_owner_frees_nothing(cluster: ClusterUnderTest) -> None:
    a = await cluster.locks("owner-a")
    b = await cluster.locks("owner-b")
    c = await cluster.locks("owner-c")
    assert await a.acquire_lock("wf-1")
    await b.release_lock("wf-1")  # not held by b: not an error, and nothing happens
    assert await c.acquire_lock("wf-1") is False
    await a.release_lock("wf-1")
    assert await c.acquire_lock("wf-1") is True
    await a.release_lock("never-held")  # releasing what is not held is not an error


async def test_concurrent_acquirers_have_exactly_one_winner(cluster: ClusterUnderTest) -> None:
    providers = [await cluster.locks(f"owner-{i}") for i in range(24)]
    for round_ in range(3):
        results = await asyncio.gather(*(p.acquire_lock(f"contended-{round_}") for p in providers))
        assert sum(results) == 1, results


async def test_fencing_tokens_grow_with_every_acquisition(cluster: ClusterUnderTest) -> None:
    a = await cluster.locks("owner-a")
    b = await cluster.locks("owner-b")
    tokens = []
    for i in range(5):
        for provider, resource in ((a, "x"), (b, f"y-{i}")):
            lease = await provider.acquire(resource)
            assert lease is not None and lease.owner == provider.owner and lease.resource == resource
            assert provider.lease(resource) == lease
            tokens.append(lease.fencing_token)
            await provider.release_lock(resource)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens) and tokens[0] >= 1
    # A refused acquisition takes no token and the next one is still larger.
    z = await a.acquire("z")
    assert z is not None and z.fencing_token > tokens[-1]
    assert await b.acquire("z") is None
    assert b.lease("z") is None
    later = await b.acquire("other")
    assert later is not None and later.fencing_token == z.fencing_token + 1


async def test_a_lease_that_is_not_renewed_runs_out_after_its_ttl(cluster: ClusterUnderTest) -> None:
    dead = await cluster.locks("dead-owner", ttl=SHORT)
    other = await cluster.locks("other")
    # The holder stops renewing (as a killed process does): take the lease without the renewal.
    lease = await dead._acquire("wf-ttl")
    assert lease is not None
    started = time.monotonic()
    assert await other.acquire_lock("wf-ttl") is False
    while not await other.acquire_lock("wf-ttl"):
        assert time.monotonic() - started < 5, "the lease never ran out"
        await asyncio.sleep(0.02)
    waited = time.monotonic() - started
    assert waited >= SHORT.total_seconds() * 0.8, waited  # not before its TTL (clock granularity aside)
    taken = other.lease("wf-ttl")
    assert taken is not None and taken.fencing_token > lease.fencing_token
    # The old holder's renewal finds it lost; its release does not free the new holder's lease.
    assert await dead._renew(["wf-ttl"]) == ["wf-ttl"]
    assert await dead._release("wf-ttl") is False
    assert await (await cluster.locks("third")).acquire_lock("wf-ttl") is False


async def test_renewal_keeps_a_lease_over_several_ttls(cluster: ClusterUnderTest) -> None:
    # Not SHORT: a lease not renewed within its TTL is given up by its holder (reported lost), and
    # under a loaded CI one renewal can take more than two thirds of 300 ms.
    ttl = timedelta(seconds=1)
    holder = await cluster.locks("long-step", ttl=ttl)
    other = await cluster.locks("other")
    assert await holder.acquire_lock("wf-long")
    deadline = time.monotonic() + 4 * ttl.total_seconds()
    while time.monotonic() < deadline:
        assert await other.acquire_lock("wf-long") is False
        await asyncio.sleep(0.05)
    assert holder.held == ["wf-long"]
    await holder.release_lock("wf-long")
    assert await other.acquire_lock("wf-long") is True


async def test_a_lost_lease_is_dropped_and_reported(cluster: ClusterUnderTest) -> None:
    holder = await cluster.locks("holder", ttl=SHORT)
    lost: list[str] = []
    reported = asyncio.Event()

    def on_lost(resource: str) -> None:
        lost.append(resource)
        reported.set()

    holder.on_lost = on_lost
    assert await holder.acquire_lock("wf-lost")
    assert holder._renewer is not None
    holder._renewer.cancel()  # renewal stalls (a long pause, a partition) ...
    await asyncio.sleep(SHORT.total_seconds() * 1.5)
    thief = await cluster.locks("thief")
    assert await thief.acquire_lock("wf-lost")  # ... the lease ran out and another owner took it
    holder._ensure_renewer()  # renewal resumes and finds out
    await asyncio.wait_for(reported.wait(), 3)
    assert lost == ["wf-lost"] and holder.held == []
    assert thief.held == ["wf-lost"]


async def test_an_expired_lease_nobody_took_is_renewed(cluster: ClusterUnderTest) -> None:
    holder = await cluster.locks("holder", ttl=SHORT)
    lease = await holder._acquire("wf-late")
    assert lease is not None
    await asyncio.sleep(SHORT.total_seconds() * 1.5)
    assert await holder._renew(["wf-late"]) == []  # still its own: nobody took it meanwhile
    assert await (await cluster.locks("other")).acquire_lock("wf-late") is False


async def test_close_releases_every_held_lease(cluster: ClusterUnderTest) -> None:
    holder = await cluster.locks("closing")
    other = await cluster.locks("other")
    for resource in ("a", "b", "c"):
        assert await holder.acquire_lock(resource)
    await holder.close()
    for resource in ("a", "b", "c"):
        assert await other.acquire_lock(resource)
    with pytest.raises(StorageUnavailable):
        await holder.acquire_lock("d")


async def test_a_closed_lock_provider_raises_storage_unavailable_and_leaves_the_store_open(
    cluster: ClusterUnderTest,
) -> None:
    # As every call of a closed persistence provider does; before, the embedded provider went on
    # releasing (and acquire raised RuntimeError). The store it was given is not closed.
    holder = await cluster.locks("closed-holder")
    other = await cluster.locks("other")
    queue = await cluster.queue()
    assert await holder.acquire_lock("kept")
    await holder.release_lock("kept")
    assert await other.acquire_lock("kept")
    await holder.close()
    for call in (
        lambda: holder.acquire_lock("b"),
        lambda: holder.acquire("b"),
        lambda: holder.release_lock("kept"),
        lambda: holder.release_lock("never-held"),
        lambda: queue.dequeue_leased(QueueType.INDEX, holder),
    ):
        with pytest.raises(StorageUnavailable, match=r"^the lock provider is closed$"):
            await call()
    assert other.held == ["kept"]
    assert await other.acquire_lock("kept") is False  # still other's: the closed provider released nothing
    assert await other.acquire_lock("b") is True  # the store and the other providers on it go on
    w = workflow()
    await cluster.store.create_new_workflow(w)
    assert (await cluster.store.get_workflow_instance(w.id)).id == w.id
    await holder.close()  # closing again is harmless


async def test_owner_defaults_to_a_fresh_unique_id(cluster: ClusterUnderTest) -> None:
    a = await cluster.locks()
    b = await cluster.locks()
    assert a.owner and b.owner and a.owner != b.owner
    assert a.ttl == timedelta(seconds=30)
    assert await a.acquire_lock("r") and not await b.acquire_lock("r")


@pytest.mark.parametrize("ttl", [timedelta(milliseconds=99), timedelta(hours=1, seconds=1), timedelta(0)])
async def test_ttl_out_of_bounds_is_invalid(cluster: ClusterUnderTest, ttl: timedelta) -> None:
    with pytest.raises(InvalidArgument):
        await cluster.locks("x", ttl=ttl)


async def test_locks_are_async_context_managers(cluster: ClusterUnderTest) -> None:
    other = await cluster.locks("other")
    async with await cluster.locks("scoped") as scoped:
        assert await scoped.acquire_lock("ctx")
        assert not await other.acquire_lock("ctx")
    assert await other.acquire_lock("ctx")


@pytest.mark.parametrize("value", [None, 7, b"wf"], ids=["none", "int", "bytes"])
async def test_a_resource_that_is_not_a_string_is_invalid_argument(cluster: ClusterUnderTest, value: object) -> None:
    # gRPC used to send None as "" ("must not be empty") and let protobuf's TypeError through for an int.
    locks = await cluster.locks("owner-a")
    for call in (locks.acquire_lock, locks.release_lock):
        with pytest.raises(InvalidArgument) as info:
            await call(value)  # type: ignore[arg-type]
        assert str(info.value) == f"resource: expected a string, got {type(value).__name__}"
        assert info.value.metadata.get("field") == "resource"
