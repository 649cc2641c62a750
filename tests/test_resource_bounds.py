"""State a client can make the server keep forever, and memory it can make the server hold, bounded.

Each test drives a real server (in this process, so that a bound can be shortened for the test) on
both backends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2

from conftest import WFE_SQLITE, Peek
from wfe.persistence.v1 import (
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    locks_pb2,
    locks_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)
from wfe_sqlite import _lifecycle, _locks_store, _long_poll
from wfe_sqlite.server import RunningServer, ServerConfig


@pytest.fixture
async def server(store_url: str) -> AsyncIterator[RunningServer]:
    running = await RunningServer.start(
        ServerConfig(db=store_url, listen="127.0.0.1:0", grace=1.0, requeue_interval=0.2)
    )
    try:
        yield running
    finally:
        await running.stop(quiet=0)


def _ttl(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


async def _rows(peek: Peek) -> set[str]:
    return {str(row[0]) for row in await peek("SELECT resource FROM locks")}


async def test_leases_that_ran_out_long_ago_are_deleted(
    monkeypatch: pytest.MonkeyPatch, server: RunningServer, peek: Peek
) -> None:
    """Every unique resource ever locked used to keep its ``locks`` row for good (5,000 locks of
    unique resources with a 100 ms TTL: 5,000 rows, still there 10 s later, on both backends). The
    sweep now deletes leases that ran out more than ``EXPIRED_LEASE_KEEP_US`` ago (shortened here),
    and keeps the live ones and the ones that ran out recently (their owner may still renew them)."""
    monkeypatch.setattr(_locks_store, "EXPIRED_LEASE_KEEP_US", 1_000_000, raising=False)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = locks_pb2_grpc.LockServiceStub(channel)

        async def acquire(resource: str, ttl: float) -> locks_pb2.AcquireLockResponse:
            return await stub.AcquireLock(locks_pb2.AcquireLockRequest(resource=resource, owner="o", ttl=_ttl(ttl)))

        short = [f"unique-{i}" for i in range(200)]
        for response in await asyncio.gather(*(acquire(r, 0.1) for r in short)):
            assert response.acquired
        live = await acquire("live", 60)
        assert live.acquired
        assert await _rows(peek) == {*short, "live"}

        await asyncio.sleep(0.3)  # the short leases ran out, but less than the keep ago
        late = await acquire("late", 0.1)
        assert late.acquired
        await asyncio.sleep(0.2)
        renewed = await stub.RenewLocks(locks_pb2.RenewLocksRequest(owner="o", resources=["late"], ttl=_ttl(1)))
        assert list(renewed.lost_resources) == []  # ran out, nobody took it, not long ago: still its own

        deadline = time.monotonic() + 15
        while await _rows(peek) != {"live", "late"}:
            left = await _rows(peek)
            assert time.monotonic() < deadline, f"{len(left)} lease rows left: {sorted(left)[:5]} ..."
            if "late" not in left:
                pytest.fail("a lease that ran out less than the keep ago was deleted")
            await asyncio.sleep(0.1)

        # Once deleted, a lease is gone: its owner's renewal finds it lost, anyone may take it, and
        # fencing tokens keep growing (they come from one counter, not from the rows).
        while await _rows(peek) != {"live"}:
            assert time.monotonic() < deadline, "the lease that ran out last was never deleted"
            await asyncio.sleep(0.1)
        renewed = await stub.RenewLocks(locks_pb2.RenewLocksRequest(owner="o", resources=["unique-0"], ttl=_ttl(1)))
        assert list(renewed.lost_resources) == ["unique-0"]
        again = await stub.AcquireLock(locks_pb2.AcquireLockRequest(resource="unique-0", owner="p", ttl=_ttl(60)))
        assert again.acquired and again.fencing_token > late.fencing_token
        # The live lease was never touched.
        held = await stub.AcquireLock(locks_pb2.AcquireLockRequest(resource="live", owner="p", ttl=_ttl(1)))
        assert not held.acquired


async def test_waiting_dequeues_beyond_the_bound_are_refused(
    monkeypatch: pytest.MonkeyPatch, server: RunningServer
) -> None:
    """Waiting dequeues used to have no bound but the transport's (up to ``max_connections`` x
    ``max_concurrent_streams``: 10 million), at about 21 KiB each in a server process (5,000 of them
    from one client: +103 MiB). At most ``MAX_WAITING`` (shortened here) wait now, all queues
    together; one more is refused at once with RESOURCE_EXHAUSTED, and a dequeue that does not wait
    is still served."""
    monkeypatch.setattr(_long_poll, "MAX_WAITING", 20, raising=False)
    wait = duration_pb2.Duration(seconds=30)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queues_pb2_grpc.QueueServiceStub(channel)
        plain = queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW, wait=wait)
        leased = queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_EVENT, wait=wait)
        leased.leases.owner = "host"
        leased.leases.prefixes.append("")
        waiting = [stub.DequeueWork(plain) for _ in range(10)] + [stub.DequeueWork(leased) for _ in range(10)]
        try:
            await asyncio.sleep(0.5)
            assert not any(call.done() for call in waiting)
            for request in (plain, leased):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.DequeueWork(request, timeout=5)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert _reason(refused.value) == "TOO_MANY_WAITING_DEQUEUES"
                assert "at most 20" in (refused.value.details() or "")
            # Not waiting: served as before.
            assert (await stub.DequeueWork(queues_pb2.DequeueWorkRequest(queue=queues_pb2.QUEUE_TYPE_INDEX))).id == ""
            # One waiter served: there is room for one more.
            await stub.QueueWork(queues_pb2.QueueWorkRequest(queue=queues_pb2.QUEUE_TYPE_WORKFLOW, id="wf-1"))
            done, _ = await asyncio.wait(
                [asyncio.ensure_future(call) for call in waiting], timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            assert [(await call).id for call in done] == ["wf-1"]
            await asyncio.sleep(0.2)
            late = stub.DequeueWork(plain)
            await asyncio.sleep(0.5)
            assert not late.done()
            waiting.append(late)
        finally:
            for call in waiting:
                call.cancel()


MIB = 1 << 20
BIG = [("grpc.max_receive_message_length", 64 * MIB), ("grpc.max_send_message_length", 64 * MIB)]


def _lifecycle_event(message_bytes: int) -> lifecycle_pb2.LifecycleEvent:
    event = lifecycle_pb2.LifecycleEvent(
        workflow_instance_id="wf", type=lifecycle_pb2.LIFECYCLE_EVENT_TYPE_ERROR, message="x" * message_bytes
    )
    event.event_time.GetCurrentTime()
    return event


async def test_a_lifecycle_event_over_1_mib_is_refused(server: RunningServer) -> None:
    """Lifecycle events were accepted up to the 64 MiB message limit, and every watcher that had not
    read one held its own copies of it (10 unread watchers, 3 events of 30 MiB: a server process
    went from 54 MiB to a peak of 1.27 GB). Now at most 1 MiB encoded: INVALID_ARGUMENT naming
    ``event``; an event just under the bound still reaches its watcher unchanged."""
    async with grpc.aio.insecure_channel(server.address, options=BIG) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        watch = stub.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest())
        await watch.initial_metadata()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PublishLifecycleEvent(lifecycle_pb2.PublishLifecycleEventRequest(event=_lifecycle_event(MIB)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _reason(refused.value) == "INVALID_ARGUMENT"
        assert "at most 1048576" in (refused.value.details() or "")
        fits = _lifecycle_event(MIB - 64)
        assert fits.ByteSize() <= MIB
        sent = await stub.PublishLifecycleEvent(lifecycle_pb2.PublishLifecycleEventRequest(event=fits))
        assert sent.watchers == 1
        received = await watch.read()
        assert received.event == fits
        watch.cancel()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


async def test_unread_watchers_share_each_event(tmp_path: object) -> None:
    """Each watch used to parse every event again and encode it anew, so each watcher that read
    nothing held copies of its own: 100 such watchers and 3 events of 0.99 MiB took a server process
    from 55 to 261 MiB (+207). Watchers now write the published event's encoded bytes as they are:
    +15 MiB measured."""
    process = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", f"sqlite://{tmp_path}/wfe.db", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().split("listening on ")[1].strip()
        channels = [
            grpc.aio.insecure_channel(address, options=[*BIG, ("grpc.use_local_subchannel_pool", 1)]) for _ in range(60)
        ]
        try:
            watches = [
                lifecycle_pb2_grpc.LifecycleServiceStub(c).WatchLifecycleEvents(
                    lifecycle_pb2.WatchLifecycleEventsRequest()
                )
                for c in channels
            ]
            await asyncio.gather(*(w.initial_metadata() for w in watches))
            base = _rss_mib(process.pid)
            async with grpc.aio.insecure_channel(address, options=BIG) as channel:
                stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
                request = lifecycle_pb2.PublishLifecycleEventRequest(event=_lifecycle_event(MIB - 64))
                for _ in range(3):
                    assert (await stub.PublishLifecycleEvent(request)).watchers == len(watches)
            await asyncio.sleep(2)  # every watch's write is waiting on its unread stream
            growth = _rss_mib(process.pid) - base
            assert growth < 60, f"{len(watches)} unread watchers took {growth:.0f} MiB"
            for watch in watches:
                watch.cancel()
        finally:
            for c in channels:
                await c.close()
    finally:
        process.terminate()
        assert process.wait(30) == 0


async def test_watches_beyond_the_bound_are_refused(monkeypatch: pytest.MonkeyPatch, server: RunningServer) -> None:
    """Lifecycle watches had no bound but the transport's (10 million), at about 27 KiB each in a
    server process (4,000 open watches: +108 MiB). At most ``MAX_WATCHERS`` (shortened here) are open
    now; one more is refused with RESOURCE_EXHAUSTED, and once one ends there is room again."""
    monkeypatch.setattr(_lifecycle, "MAX_WATCHERS", 5, raising=False)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        watches = [stub.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest()) for _ in range(5)]
        try:
            await asyncio.gather(*(w.initial_metadata() for w in watches))
            extra = stub.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest(workflow_instance_id="x"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(extra.read(), 5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _reason(refused.value) == "TOO_MANY_WATCHERS"
            assert "at most 5" in (refused.value.details() or "")
            watches.pop().cancel()
            # The server lets go of the cancelled watch once its handler has seen the cancel, a
            # moment after the client cancelled (longer on a loaded machine): until then a new
            # watch is still refused. Try again until one is in place and takes the event.
            event = _lifecycle_event(10)
            deadline = time.monotonic() + 10
            while True:
                again = stub.WatchLifecycleEvents(lifecycle_pb2.WatchLifecycleEventsRequest())
                watches.append(again)
                await again.initial_metadata()
                sent = await stub.PublishLifecycleEvent(lifecycle_pb2.PublishLifecycleEventRequest(event=event))
                if sent.watchers == 5 or time.monotonic() > deadline:
                    break
                assert sent.watchers == 4
                assert await asyncio.wait_for(again.code(), 5) == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
            assert sent.watchers == 5
            assert (await asyncio.wait_for(again.read(), 5)).event == event
        finally:
            for watch in watches:
                watch.cancel()


def test_watchers_of_other_workflows_hold_at_most_the_hub_budget_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each watcher held up to ``MAX_BEHIND_BYTES`` (64 MiB) of events it had not read, so watchers
    that read nothing, each watching another workflow, held that much each. The hub now bounds the
    distinct events its watchers hold together (``MAX_HELD_BYTES``, shortened here): past it, a
    watcher that is behind is ended; one that has read everything still takes the next event, and
    an event many watchers wait for counts once."""
    monkeypatch.setattr(_lifecycle, "MAX_HELD_BYTES", 10 * MIB, raising=False)
    hub: _lifecycle.LifecycleHub[bytes] = _lifecycle.LifecycleHub()
    slow = [hub.watch(workflow_instance_id=f"wf-{i}") for i in range(5)]
    everyone = [hub.watch() for _ in range(3)]  # take every event, read none of them
    for _ in range(4):
        for i in range(5):
            hub.publish(bytes(MIB), f"wf-{i}", "d")  # a distinct 1 MiB event per workflow
    ended = [w for w in slow + everyone if w.fell_behind]
    assert ended, "20 MiB of distinct unread events, and no watcher was ended"
    assert getattr(hub, "held_bytes", 0) <= 10 * MIB
    # A watcher that reads everything is never ended by the budget.
    reader = hub.watch(workflow_instance_id="wf-reader")
    for _ in range(20):
        assert hub.publish(bytes(MIB), "wf-reader", "d") >= 1
        assert asyncio.run(reader.next()) == bytes(MIB)
    assert not reader.fell_behind
    for watcher in [*slow, *everyone, reader]:
        watcher.close()
    assert hub.held_bytes == 0 and hub.watchers == 0
