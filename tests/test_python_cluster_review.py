"""A user's-eye review of the Python cluster providers: what a host program hits when it uses
``GrpcLockProvider``, ``GrpcQueueProvider``, ``GrpcLifecyclePublisher`` (through a real server
process) and ``SqliteLockProvider`` / ``SqliteQueueProvider`` (on a real SQLite file) at the edges:
callbacks that fail, calls refused, close while calls are in flight, a server frozen with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, start_server_process
from wfe_client import (
    GrpcLifecyclePublisher,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    InvalidArgument,
    LifecycleEvent,
    LifecycleEventType,
    LockProvider,
    QueueProvider,
    QueueType,
    StorageUnavailable,
    WfeError,
)
from wfe_sqlite import SqliteLockProvider, SqliteQueueProvider, open_provider

TTL = timedelta(milliseconds=1500)


@pytest.fixture
def server(server_process: ServerProcess) -> ServerProcess:
    """conftest's server process (SIGKILLed at the end: frozen or not)."""
    return server_process


class Side:
    """Lock and queue providers of one kind on the test's SQLite file: over gRPC through a real
    server process, or in-process."""

    def __init__(self, kind: str, db_url: str, db_path: Path) -> None:
        self.kind = kind
        self.db_url = db_url
        self.db_path = db_path
        self.server: ServerProcess | None = None
        self.store: Any = None
        self.opened: list[Any] = []

    async def start(self) -> None:
        if self.kind == "grpc":
            self.server = start_server_process(self.db_url)
            self.store = await GrpcPersistenceProvider.connect(self.server.address)
        else:
            self.store = await open_provider(self.db_url)

    def locks(self, owner: str | None = None, ttl: timedelta = TTL) -> LockProvider:
        provider: LockProvider
        if self.kind == "grpc":
            provider = GrpcLockProvider(self.store, owner, ttl)
        else:
            provider = SqliteLockProvider(self.store, owner, ttl)
        self.opened.append(provider)
        return provider

    def queue(self) -> QueueProvider:
        provider: QueueProvider = (
            GrpcQueueProvider(self.store) if self.kind == "grpc" else SqliteQueueProvider(self.store)
        )
        self.opened.append(provider)
        return provider

    def lease_owner(self, resource: str) -> str | None:
        with sqlite3.connect(self.db_path, timeout=10) as conn:
            row = conn.execute("SELECT owner FROM locks WHERE resource = ?", (resource,)).fetchone()
        return None if row is None else str(row[0])

    def steal(self, resource: str, owner: str) -> None:
        """Another owner took the lease (as if it had run out and been acquired)."""
        with sqlite3.connect(self.db_path, timeout=10) as conn:
            assert conn.execute("UPDATE locks SET owner = ? WHERE resource = ?", (owner, resource)).rowcount == 1

    async def close(self) -> None:
        for provider in reversed(self.opened):
            await provider.close()
        if self.store is not None:
            await self.store.close()
        if self.server is not None:
            self.server.kill()


@pytest.fixture(params=["grpc", "embedded"])
async def side(request: pytest.FixtureRequest, db_url: str, db_path: Path) -> AsyncIterator[Side]:
    under_test = Side(request.param, db_url, db_path)
    try:
        await under_test.start()
        yield under_test
    finally:
        await under_test.close()


# -- leases lost, callbacks that fail ---------------------------------------------------------------


async def test_on_lost_callback_that_raises_does_not_stop_renewal_nor_break_close(side: Side) -> None:
    # Before: the renewal task called on_lost unguarded; a callback that raised ended the task, so
    # every other held lease stopped being renewed (and ran out under the host), and close() then
    # re-raised the callback's error from the dead task, without releasing anything.
    locks = side.locks()
    reported: list[str] = []
    lost = asyncio.Event()

    def on_lost(resource: str) -> None:
        reported.append(resource)
        lost.set()
        raise RuntimeError("the host's callback failed")

    locks.on_lost = on_lost
    assert await locks.acquire_lock("lost-one")
    assert await locks.acquire_lock("kept-one")
    side.steal("lost-one", "someone-else")
    await asyncio.wait_for(lost.wait(), 10)
    assert reported == ["lost-one"]
    assert locks.held == ["kept-one"]
    # The other lease is still renewed: well past its TTL it is this owner's, not free.
    await asyncio.sleep(TTL.total_seconds() * 2)
    other = side.locks(owner="other")
    assert not await other.acquire_lock("kept-one")
    await locks.close()  # no RuntimeError from the callback, and the lease is released
    assert side.lease_owner("kept-one") in (None, "")  # released (row gone)
    assert await other.acquire_lock("kept-one")


# -- leased dequeues -----------------------------------------------------------------------------


async def test_dequeue_leased_that_is_refused_keeps_renewing_the_leases_it_was_to_release(side: Side) -> None:
    # Before: dequeue_leased stopped renewing the leases named in `release` before the call, and a
    # call refused (INVALID_ARGUMENT: nothing was released) left them held on the store but no
    # longer renewed nor listed in `held`: they ran out under the host and another owner took them.
    locks = side.locks()
    queue = side.queue()
    assert await locks.acquire_lock("keep")
    with pytest.raises(InvalidArgument):
        await queue.dequeue_leased(QueueType.WORKFLOW, locks, prefixes=[], release=["keep"])
    assert locks.held == ["keep"]
    await asyncio.sleep(TTL.total_seconds() * 2)
    assert not await side.locks(owner="other").acquire_lock("keep")  # still renewed


async def test_dequeue_leased_with_prefixes_as_one_string_is_refused(side: Side) -> None:
    # Before, over gRPC: prefixes="ab" was sent as list("ab"), one lease per character ("a" + id,
    # "b" + id), and the item was handed out; the in-process provider refuses a string.
    locks = side.locks()
    queue = side.queue()
    await queue.queue_work("wf-9", QueueType.WORKFLOW)
    with pytest.raises(InvalidArgument) as refused:
        await queue.dequeue_leased(QueueType.WORKFLOW, locks, prefixes="ab")
    assert refused.value.metadata.get("field") == "prefixes"
    assert await locks.acquire_lock("keep")
    with pytest.raises(InvalidArgument) as refused:
        await queue.dequeue_leased(QueueType.WORKFLOW, locks, release="keep")
    assert refused.value.metadata.get("field") == "release"
    assert locks.held == ["keep"]
    assert side.lease_owner("awf-9") is None
    assert await queue.dequeue_work(QueueType.WORKFLOW) == "wf-9"  # still queued


# -- close while calls are in flight -------------------------------------------------------------


async def _acquire_while_closing(locks: LockProvider, resource: str, delay: float = 0.0) -> BaseException | bool:
    acquiring = asyncio.ensure_future(locks.acquire_lock(resource))
    await asyncio.sleep(delay)  # the call is on its way
    await locks.close()
    try:
        return await acquiring
    except BaseException as error:  # noqa: BLE001 - the outcome is what is checked
        return error


async def test_acquire_in_flight_when_close_is_called_does_not_keep_the_lease(side: Side) -> None:
    # Before: close() released what it held and returned; an acquire answered after that still
    # returned True and put the lease in `held` of the closed provider: nobody renewed or released
    # it, and the resource stayed locked for the whole TTL (30 s by default).
    locks = side.locks(ttl=timedelta(seconds=30))
    outcome = await _acquire_while_closing(locks, "race")
    assert isinstance(outcome, StorageUnavailable), outcome
    assert locks.held == []
    assert await side.locks(owner="other").acquire_lock("race")  # free at once, not after 30 s


async def test_acquire_in_flight_when_close_is_called_on_its_own_connection(server: ServerProcess) -> None:
    # The provider's own channel: close() closed it under the acquire, which the server may have
    # applied (the lease then stayed for its TTL). close() now waits for it (bounded) and frees it.
    for attempt in range(10):
        locks = await GrpcLockProvider.connect(server.address, ttl=timedelta(seconds=30))
        outcome = await _acquire_while_closing(locks, f"race-{attempt}", attempt * 0.0005)
        assert outcome is True or isinstance(outcome, StorageUnavailable), outcome  # True: answered before close
        async with GrpcLockProvider.connect(server.address, owner="other") as other:
            assert await other.acquire_lock(f"race-{attempt}")


async def test_release_in_flight_when_close_is_called_on_its_own_connection(server: ServerProcess) -> None:
    # Before: close() closed the channel under a release_lock under way; the lease, already gone
    # from `held`, was then neither freed by that call nor by close: locked for its TTL.
    for attempt in range(10):
        locks = await GrpcLockProvider.connect(server.address, ttl=timedelta(seconds=30))
        assert await locks.acquire_lock(f"freed-{attempt}")
        releasing = asyncio.ensure_future(locks.release_lock(f"freed-{attempt}"))
        await asyncio.sleep(attempt * 0.0005)
        await locks.close()
        await releasing  # it completed: close waited for it
        async with GrpcLockProvider.connect(server.address, owner="other") as other:
            assert await other.acquire_lock(f"freed-{attempt}")


# -- lifecycle watches ---------------------------------------------------------------------------

EVENT = LifecycleEvent(LifecycleEventType.STARTED, "wf-1", "def-a", 1)


async def test_watch_started_on_a_frozen_server_ends_at_the_call_deadline(server: ServerProcess) -> None:
    # Before: started() (and `async with publisher.watch()`) waited for the stream's headers with
    # no bound: on a server frozen with SIGSTOP it never returned, whatever the `timeout` option.
    async with GrpcLifecyclePublisher.connect(server.address, timeout=1.5) as publisher:
        server.process.send_signal(signal.SIGSTOP)
        try:
            watch = publisher.watch()
            began = time.monotonic()
            with pytest.raises(WfeError) as ended:
                await asyncio.wait_for(watch.started(), 20)
            assert time.monotonic() - began < 10
            assert ended.value.code == "DEADLINE_EXCEEDED"
            watch.close()
        finally:
            server.process.send_signal(signal.SIGCONT)
        async with publisher.watch() as events:  # the server answers again: a new watch works
            assert await publisher.publish(EVENT) == 1
            assert (await asyncio.wait_for(anext(events), 10)).workflow_instance_id == "wf-1"


@pytest.mark.parametrize("own", [True, False], ids=["own-connection", "shared-connection"])
async def test_publisher_closed_ends_its_watches_and_refuses_calls(server: ServerProcess, own: bool) -> None:
    # Before: a watch read under way when its publisher closed its own connection ended with a bare
    # CancelledError in a task nobody cancelled; on a shared connection it went on for ever, and
    # publish()/watch() after close() still worked. After close() (as for the lock and queue
    # providers) they raise StorageUnavailable, and so does a watch read under way.
    store = await GrpcPersistenceProvider.connect(server.address)
    try:
        if own:
            publisher = await GrpcLifecyclePublisher.connect(server.address)
        else:
            publisher = GrpcLifecyclePublisher(store)
        watch = publisher.watch()
        await watch.started()

        async def read() -> BaseException | None:
            try:
                async for _ in watch:
                    pass
            except BaseException as error:  # noqa: BLE001 - the outcome is what is checked
                return error
            return None

        reading = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)
        await publisher.close()
        outcome = await asyncio.wait_for(reading, 10)
        assert isinstance(outcome, StorageUnavailable), repr(outcome)
        with pytest.raises(StorageUnavailable):
            await publisher.publish(EVENT)
        with pytest.raises(StorageUnavailable):
            publisher.watch()
        watch.close()
    finally:
        await store.close()


# -- arguments refused where they are given ------------------------------------------------------


@pytest.mark.parametrize(
    "owner", ["o" * 1025, "é" * 513, "bad\ud800"], ids=["1025-bytes", "utf8-1026-bytes", "surrogate"]
)
async def test_lock_owner_the_contract_refuses_is_refused_when_the_provider_is_made(side: Side, owner: str) -> None:
    # Before, over gRPC: the provider was made with it and every acquire_lock then failed with the
    # server's INVALID_ARGUMENT (or protobuf's encoding error for a lone surrogate); the in-process
    # provider refuses it when made. Both now refuse it at once, naming `owner`.
    with pytest.raises(InvalidArgument) as refused:
        side.locks(owner=owner)
    assert refused.value.metadata.get("field") == "owner"
    assert side.locks(owner="o" * 1024).owner == "o" * 1024


# -- renewal when a server does not answer ---------------------------------------------------------


async def test_leases_stay_renewed_while_one_of_two_servers_is_frozen(db_url: str) -> None:
    # Before: a renewal call had the provider's full call deadline (30 s) and the next one waited a
    # whole period after it ended. With two servers and one frozen (SIGSTOP: its connection still
    # looks fine), a renewal sent there held the renewal loop up for 30 s: the lease ran out after
    # its TTL and another owner took it. A renewal now gives up at the next renewal's time (as in the
    # Rust adapter), and the next one goes out on schedule, to the other server.
    first, second = start_server_process(db_url), start_server_process(db_url)
    try:
        ttl = timedelta(seconds=3)
        async with (
            GrpcLockProvider.connect([first.address, second.address], owner="holder", ttl=ttl) as locks,
            GrpcLockProvider.connect(second.address, owner="other") as other,
        ):
            assert await locks.acquire_lock("held")
            first.process.send_signal(signal.SIGSTOP)
            try:
                taken_over = []
                until = time.monotonic() + ttl.total_seconds() * 2.5
                while time.monotonic() < until:
                    if await other.acquire_lock("held"):
                        taken_over.append(round(until - time.monotonic(), 2))
                        break
                    await asyncio.sleep(0.2)
                assert taken_over == []
                assert locks.held == ["held"]
            finally:
                first.process.send_signal(signal.SIGCONT)
    finally:
        first.process.send_signal(signal.SIGCONT)
        first.kill()
        second.kill()


async def test_a_waiting_dequeue_on_a_frozen_server_ends_at_its_wait_plus_the_call_deadline(
    server: ServerProcess,
) -> None:
    # Before: the wait was added to the call deadline twice over (wait + deadline handed to a call
    # helper that adds the deadline again): wait 1 s, timeout 2 s ended after 5 s, not 3 s; with
    # the defaults a 60 s wait could hang 120 s instead of 90 s.
    async with GrpcQueueProvider.connect(server.address, timeout=2.0) as queue:
        server.process.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(WfeError) as ended:
                await queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=1))
            took = time.monotonic() - began
        finally:
            server.process.send_signal(signal.SIGCONT)
    assert ended.value.code == "DEADLINE_EXCEEDED"
    assert 2.9 <= took < 4.2, took


async def test_close_on_a_frozen_server_with_an_acquire_under_way_takes_one_bound(server: ServerProcess) -> None:
    # close() waits for acquires under way and for the releases of held leases at most
    # min(CLOSE_RELEASE_WAIT, TTL) in all (both at once), not that bound once for each.
    locks = await GrpcLockProvider.connect(server.address, ttl=timedelta(seconds=2))
    try:
        assert await locks.acquire_lock("held")
        server.process.send_signal(signal.SIGSTOP)
        acquiring = asyncio.ensure_future(locks.acquire_lock("under-way"))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await locks.close()
        took = time.monotonic() - began
        with pytest.raises(StorageUnavailable):
            await acquiring
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert 1.9 <= took < 3.0, took


async def test_leased_dequeue_answered_after_its_lock_provider_closed_does_not_keep_the_leases(side: Side) -> None:
    # Before: a dequeue_leased waiting when its lock provider was closed still returned the item
    # with leases that closed provider no longer renewed nor could release (release_lock raises
    # after close): the item stayed locked for the TTL. Now its leases are freed and the dequeue
    # raises StorageUnavailable, as the lock provider's calls after close do (the item, under no
    # lease, is queued again by the stranded-work sweep).
    locks = side.locks(ttl=timedelta(seconds=30))
    queue = side.queue()
    waiting = asyncio.ensure_future(
        queue.dequeue_leased(QueueType.WORKFLOW, locks, prefixes=("lease.",), wait=timedelta(seconds=10))
    )
    await asyncio.sleep(0.3)
    await locks.close()
    await side.queue().queue_work("wf-late", QueueType.WORKFLOW)
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(waiting, 15)
    assert await side.locks(owner="other").acquire_lock("lease.wf-late")


@pytest.mark.parametrize("field", ["workflow_instance_id", "workflow_definition_id"])
async def test_watch_filter_that_is_not_a_string_is_invalid_argument(server: ServerProcess, field: str) -> None:
    # Before: protobuf's own TypeError; every other id the adapter sends is InvalidArgument naming it.
    async with GrpcLifecyclePublisher.connect(server.address) as publisher:
        with pytest.raises(InvalidArgument) as refused:
            publisher.watch(**{field: 42})  # type: ignore[arg-type]
        assert refused.value.metadata.get("field") == field
        async with publisher.watch(**{field: "x"}) as events:  # a string works
            assert events is not None


async def test_publisher_closed_ends_its_watches_over_several_servers(db_url: str) -> None:
    # The same with a list of servers (the watch reads through its several-servers path).
    first, second = start_server_process(db_url), start_server_process(db_url)
    try:
        publisher = await GrpcLifecyclePublisher.connect([first.address, second.address])
        watch = publisher.watch()
        await watch.started()
        reading = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.2)
        await publisher.close()
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(reading, 10)
        with pytest.raises(StorageUnavailable):
            publisher.watch()
    finally:
        first.kill()
        second.kill()
