"""``GrpcLockProvider``, ``GrpcQueueProvider``, ``GrpcLifecyclePublisher``: the cluster services over gRPC.

Each one either shares the channel of a ``GrpcPersistenceProvider`` (``GrpcLockProvider(store)``) or
opens its own (``await GrpcLockProvider.connect(address, ...)`` / ``async with ...``, with the same
connection options as ``GrpcPersistenceProvider.connect``). Calls go through that provider's one
call helper (deadlines, error mapping).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from wfe.persistence.v1 import (
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    locks_pb2,
    locks_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)

from . import conversion as convert
from ._cluster import LockProvider, QueueProvider, check_queue
from ._grpc_provider import GrpcPersistenceProvider, _error_from_rpc, _text
from ._opening import Opening
from .conversion import QUEUE_TYPE, lifecycle_event_from_proto, lifecycle_event_to_proto
from .errors import StorageUnavailable, WfeError
from .limits import DEFAULT_LOCK_TTL, check_wait
from .models import Lease, LeasedWork, LifecycleEvent, QueueType, WorkflowInstance
from .timeutil import from_micros

__all__ = ["GrpcLifecyclePublisher", "GrpcLockProvider", "GrpcQueueProvider", "LifecycleWatch"]


def _duration(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def _micros(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


RENEW_DEADLINE_FLOOR = 1.0
"""Shortest deadline of a lease renewal, seconds (else a third of the TTL: the next renewal's time)."""


class GrpcLockProvider(LockProvider):
    """Distributed locks served by a wfe-sqlite server (``LockService``)."""

    def __init__(
        self,
        connection: GrpcPersistenceProvider,
        owner: str | None = None,
        ttl: timedelta = DEFAULT_LOCK_TTL,
        *,
        owns_connection: bool = False,
    ) -> None:
        super().__init__(owner, ttl)
        self._connection = connection
        self._owns_connection = owns_connection
        self._stub = locks_pb2_grpc.LockServiceStub(connection._channel)

    @classmethod
    def connect(
        cls, address: str | Sequence[str], owner: str | None = None, ttl: timedelta = DEFAULT_LOCK_TTL, **options: Any
    ) -> Opening[GrpcLockProvider]:
        """Connect to ``address`` (one server or several); ``options`` as for ``GrpcPersistenceProvider.connect``."""

        async def opening() -> GrpcLockProvider:
            connection = await GrpcPersistenceProvider.connect(address, **options)
            try:
                return cls(connection, owner, ttl, owns_connection=True)
            except BaseException:
                await connection.close()
                raise

        return Opening(opening)

    async def _acquire(self, resource: str) -> Lease | None:
        request = locks_pb2.AcquireLockRequest(
            resource=_text(resource, "resource"), owner=self.owner, ttl=_duration(self.ttl)
        )
        response = await self._connection._call(self._stub.AcquireLock, request)
        if not response.acquired:
            return None
        return Lease(resource, self.owner, response.fencing_token, from_micros(_micros(response.expire_time)))

    async def _renew(self, resources: Sequence[str]) -> list[str]:
        request = locks_pb2.RenewLocksRequest(owner=self.owner, resources=list(resources), ttl=_duration(self.ttl))
        # Deadline: the next renewal's time, not the provider's call deadline (a renewal stuck on a
        # server that does not answer would hold the next ones up past the TTL; as the Rust adapter),
        # but at least RENEW_DEADLINE_FLOOR: with a TTL of a few hundred ms a loaded server's late
        # answer still extends the lease, where giving up would lose it.
        timeout = self._connection._timeout
        within = min(max(self.renewal_period, RENEW_DEADLINE_FLOOR), timeout)
        response = await self._connection._call(self._stub.RenewLocks, request, within - timeout)
        return list(response.lost_resources)

    async def _release(self, resource: str) -> bool:
        request = locks_pb2.ReleaseLockRequest(resource=_text(resource, "resource"), owner=self.owner)
        response = await self._connection._call(self._stub.ReleaseLock, request)
        return bool(response.released)

    async def _close_transport(self) -> None:
        if self._owns_connection:
            await self._connection.close()


class GrpcQueueProvider(QueueProvider):
    """The work queues served by a wfe-sqlite server (``QueueService``), with long-poll dequeue."""

    def __init__(self, connection: GrpcPersistenceProvider, *, owns_connection: bool = False) -> None:
        self._connection = connection
        self._owns_connection = owns_connection
        self._stub = queues_pb2_grpc.QueueServiceStub(connection._channel)
        self._calls: set[asyncio.Task[Any]] = set()  # DequeueWork calls in flight, cancelled by close

    @classmethod
    def connect(cls, address: str | Sequence[str], **options: Any) -> Opening[GrpcQueueProvider]:
        """Connect to ``address`` (one server or several); ``options`` as for ``GrpcPersistenceProvider.connect``."""

        async def opening() -> GrpcQueueProvider:
            return cls(await GrpcPersistenceProvider.connect(address, **options), owns_connection=True)

        return Opening(opening)

    async def queue_work(self, id: str, queue: QueueType) -> bool:
        self._check_open()
        request = queues_pb2.QueueWorkRequest(id=_text(id, "id"), queue=QUEUE_TYPE.encode(check_queue(queue), "queue"))
        response = await self._connection._call(self._stub.QueueWork, request)
        return bool(response.queued)

    async def _dequeue(
        self, queue: QueueType, wait: timedelta | None, include_workflow: bool
    ) -> queues_pb2.DequeueWorkResponse:
        self._check_open()
        waiting = check_wait(wait)
        request = queues_pb2.DequeueWorkRequest(
            queue=QUEUE_TYPE.encode(check_queue(queue), "queue"), include_workflow=include_workflow
        )
        if waiting:
            request.wait.CopyFrom(_duration(waiting))
        # The call's deadline covers the wait plus the provider's usual deadline.
        return await self._dequeue_call(request, waiting)

    async def _dequeue_call(
        self, request: queues_pb2.DequeueWorkRequest, waiting: timedelta
    ) -> queues_pb2.DequeueWorkResponse:
        """One DequeueWork call; ended by this provider's ``close`` (the call cancelled, or its own
        connection closed under it): StorageUnavailable('the queue provider is closed'), as a call
        made after close. One that got its answer first returns it."""
        # _call's deadline is the provider's call deadline plus this: the wait, added once.
        call = asyncio.ensure_future(self._connection._call(self._stub.DequeueWork, request, waiting.total_seconds()))
        self._calls.add(call)
        try:
            response: queues_pb2.DequeueWorkResponse = await call
        except StorageUnavailable:
            self._check_open()
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling() == 0:  # close cancelled the call, not the caller its task
                self._check_open()
            raise
        finally:
            self._calls.discard(call)
        return response

    async def dequeue_work(self, queue: QueueType, wait: timedelta | None = None) -> str | None:
        response = await self._dequeue(queue, wait, False)
        return response.id or None

    async def dequeue_workflow(self, wait: timedelta | None = None) -> tuple[str, WorkflowInstance | None] | None:
        response = await self._dequeue(QueueType.WORKFLOW, wait, True)
        if not response.id:
            return None
        workflow = convert.workflow_from_proto(response.workflow) if response.HasField("workflow") else None
        return response.id, workflow

    async def _dequeue_leased(
        self,
        queue: QueueType,
        owner: str,
        ttl: timedelta,
        prefixes: Sequence[str],
        wait: timedelta | None,
        release: Sequence[str],
        include_workflow: bool,
    ) -> LeasedWork | None:
        self._check_open()
        waiting = check_wait(wait)
        request = queues_pb2.DequeueWorkRequest(
            queue=QUEUE_TYPE.encode(queue, "queue"),
            include_workflow=include_workflow,
            leases=queues_pb2.DequeueLeases(owner=owner, ttl=_duration(ttl), prefixes=list(prefixes)),
            release_resources=list(release),
        )
        if waiting:
            request.wait.CopyFrom(_duration(waiting))
        response: queues_pb2.DequeueWorkResponse = await self._dequeue_call(request, waiting)
        if not response.id:
            return None
        expires = from_micros(_micros(response.lease_expire_time))
        leases = tuple(
            Lease(prefix + response.id, owner, token, expires)
            for prefix, token in zip(prefixes, response.fencing_tokens, strict=True)
        )
        workflow = convert.workflow_from_proto(response.workflow) if response.HasField("workflow") else None
        return LeasedWork(response.id, leases, workflow)

    async def close(self) -> None:
        await super().close()
        for call in list(self._calls):
            call.cancel()
        if self._owns_connection:
            await self._connection.close()


class LifecycleWatch:
    """An open watch: ``async for event in watch``; ``await watch.started()``; ``watch.close()``.

    Opened on a later server of a list (an earlier one did not answer), it moves back to the first
    earlier server that answers again, as the publishers do: tried every ``RETURN_PROBE``, a new
    stream is opened there and, once that server has it in place, the old one is still read for
    ``MOVE_LINGER`` (publishers that have not moved back yet), then closed. Events published on
    either server in that time are all seen; their order across the two servers is not defined."""

    def __init__(
        self,
        call: Any,
        servers: _FirstUp | None = None,
        index: int = 0,
        reopen: Any = None,
        *,
        deadline: float | None = None,
        ended: Callable[[], bool] = lambda: False,
    ) -> None:
        self._call = call
        self._closed = False
        # ``started`` waits at most ``deadline`` seconds (the publisher's call deadline) for the
        # server to take the watch; ``ended``: its publisher (or that one's connection) is closed.
        self._deadline = deadline
        self._ended = ended
        # Several servers: where the stream is, how to open one on another, the read under way,
        # and the streams left behind (call, read under way, read until).
        self._servers = servers
        self._index = index
        self._reopen = reopen
        self._reading: asyncio.Future[Any] | None = None
        self._left: list[tuple[Any, asyncio.Future[Any], float]] = []
        self._next_check = time.monotonic() + RETURN_PROBE

    async def started(self) -> None:
        """Wait until the server has the watch in place (events published from now on are seen).

        With several servers, a watch its server could not take (UNAVAILABLE: it died a moment
        ago, its channel still looked connected) is opened on the next one that answers instead."""
        attempts = 1
        while True:
            self._check_not_ended()
            try:
                try:
                    await asyncio.wait_for(self._call.initial_metadata(), self._deadline)
                except TimeoutError:
                    # As a unary call whose deadline passed (a stream has no deadline of its own).
                    self._call.cancel()
                    late = WfeError(f"the server did not take the watch within {self._deadline:g} s")
                    late.code = late.reason = "DEADLINE_EXCEEDED"  # type: ignore[misc]
                    raise late from None
                if self._call.done():  # no headers came: the call failed (raises its error) or ended
                    await self._call.wait_for_connection()
                return
            except grpc.aio.AioRpcError as error:
                self._check_not_ended()
                if (
                    self._servers is None
                    or self._closed
                    or error.code() != grpc.StatusCode.UNAVAILABLE
                    or attempts > len(self._servers.stubs)
                ):
                    raise _error_from_rpc(error) from None
            attempts += 1
            self._call.cancel()
            if self._reading is not None:
                self._reading.cancel()
                self._reading = None
            self._index = await self._servers.ready(RETURN_PROBE * 5)
            self._call = self._reopen(self._index)

    def __aiter__(self) -> AsyncIterator[LifecycleEvent]:
        return self

    def _check_not_ended(self) -> None:
        """Its publisher closed: StorageUnavailable, as its calls after close raise (not a quiet end,
        which reads as the server's, nor a CancelledError in a task nobody cancelled)."""
        if self._ended() and not self._closed:
            raise StorageUnavailable("the lifecycle publisher is closed")

    async def __anext__(self) -> LifecycleEvent:
        self._check_not_ended()
        if self._closed:
            raise StopAsyncIteration
        if self._servers is None:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as error:
                self._check_not_ended()
                if self._closed or error.code() == grpc.StatusCode.CANCELLED:
                    raise StopAsyncIteration from None
                raise _error_from_rpc(error) from None
            except (asyncio.CancelledError, grpc.aio.UsageError):
                task = asyncio.current_task()
                if task is None or task.cancelling() == 0:  # ended by a close, not the caller's task cancelled
                    self._check_not_ended()
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            return self._event(response)
        return await self._next_of_several()

    def _event(self, response: Any) -> LifecycleEvent:
        if response is grpc.aio.EOF:
            self._closed = True
            raise StopAsyncIteration
        return lifecycle_event_from_proto(response.event)

    async def _next_of_several(self) -> LifecycleEvent:
        assert self._servers is not None
        while True:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._call.read())
            now = time.monotonic()
            if self._index > 0 and now >= self._next_check:
                self._next_check = now + RETURN_PROBE
                earlier = self._servers.ready_before(self._index)
                if earlier is not None:
                    await self._move(earlier)
                    continue
            for left in [left for left in self._left if left[2] <= now]:
                self._left.remove(left)
                left[0].cancel()
                left[1].cancel()
            pending = {self._reading, *(left[1] for left in self._left)}
            waits = [left[2] - now for left in self._left]
            if self._index > 0:
                waits.append(max(self._next_check - now, 0.0))
            done, _ = await asyncio.wait(pending, timeout=min(waits, default=None), return_when=asyncio.FIRST_COMPLETED)
            for position, (call, reading, until) in enumerate(self._left):
                if reading in done:
                    if reading.cancelled() or reading.exception() is not None or reading.result() is grpc.aio.EOF:
                        del self._left[position]  # that server's stream ended: nothing more from it
                    else:
                        self._left[position] = (call, asyncio.ensure_future(call.read()), until)
                        return lifecycle_event_from_proto(reading.result().event)
                    break
            if self._reading in done:
                reading, self._reading = self._reading, None
                self._check_not_ended()
                if self._closed or reading.cancelled():
                    raise StopAsyncIteration
                error = reading.exception()
                if isinstance(error, grpc.aio.AioRpcError):
                    if error.code() == grpc.StatusCode.CANCELLED:
                        raise StopAsyncIteration
                    raise _error_from_rpc(error) from None
                if error is not None:
                    raise error
                return self._event(reading.result())

    async def _move(self, index: int) -> None:
        """Open the stream on server ``index``; once it is in place, leave the current one behind."""
        call = self._reopen(index)
        try:
            await asyncio.wait_for(call.initial_metadata(), RETURN_PROBE * 5)
            if call.done():
                call.cancel()
                return  # refused or ended: stay, try again later
        except (grpc.aio.AioRpcError, TimeoutError):
            call.cancel()
            return
        except BaseException:
            call.cancel()
            raise
        assert self._reading is not None
        self._left.append((self._call, self._reading, time.monotonic() + MOVE_LINGER))
        self._call, self._reading, self._index = call, None, index

    def close(self) -> None:
        self._closed = True
        self._cancel_streams()

    def _cancel_streams(self) -> None:
        self._call.cancel()
        if self._reading is not None:
            self._reading.cancel()
        for call, reading, _ in self._left:
            call.cancel()
            reading.cancel()
        self._left.clear()

    async def __aenter__(self) -> LifecycleWatch:
        await self.started()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


RETURN_PROBE = 1.0
"""How often (seconds, at most) a lifecycle publisher given several servers asks the channels of
the servers that are not ready to connect again (as the Rust watch's ``RETURN_PROBE``)."""

SETTLE = 2.0
"""Longest time ``GrpcLifecyclePublisher.connect`` waits for servers earlier in the list than the
first that answered to answer too (they are preferred)."""

MOVE_LINGER = 2.0
"""Seconds a watch that moved back to an earlier server still reads the stream it left (the
publishers on the later server move back within about ``RETURN_PROBE``)."""

_READY = grpc.ChannelConnectivity.READY
_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE


class _FirstUp:
    """The first server of the list that answers: one channel per server, in the list's order.

    Every publish and every new watch goes to the first channel that is READY. While a channel
    before the first READY one is not connected, a task asks it to connect every ``RETURN_PROBE``
    (one connection attempt a second to a server that is down; gRPC's own reconnection stops after
    one attempt, the channel goes idle); while the first server is READY it only looks at the
    channels' states once a second. So once an earlier server answers again, its channel is READY
    within about a second and the next publish or watch goes back to it, as the Rust and TypeScript
    publishers go back to the first server that is not left out. With one channel (one server, or
    a ``dns:///`` name: one pick_first channel) nothing of this is done."""

    def __init__(self, channels: list[grpc.aio.Channel], closed: Callable[[], bool]) -> None:
        self._channels = channels
        self._closed = closed
        self.stubs = [lifecycle_pb2_grpc.LifecycleServiceStub(channel) for channel in channels]
        self._next_probe = 0.0
        self._prober: asyncio.Task[None] | None = None
        self._stopped = False
        if len(channels) > 1:
            self._states()  # every channel starts connecting
            self._start()

    def _start(self) -> None:
        """Start the probing task, when there is a running loop (else on the next publish or watch)."""
        if self._prober is not None or self._stopped or len(self._channels) == 1:
            return
        with contextlib.suppress(RuntimeError):
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        try:
            while True:
                await asyncio.sleep(RETURN_PROBE)
                if self._stopped or self._closed():  # the publisher, or the connection it shares
                    return
                for channel in self._channels:
                    if channel.get_state(try_to_connect=False) is _READY:
                        break
                    channel.get_state(try_to_connect=True)
        except Exception:  # noqa: BLE001  (a closed channel: the connection was closed; nothing to probe)
            return

    def stop(self) -> None:
        self._stopped = True
        if self._prober is not None:
            self._prober.cancel()

    def _states(self, *, connect: bool = False) -> list[grpc.ChannelConnectivity]:
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + RETURN_PROBE
            connect = True
        return [channel.get_state(try_to_connect=connect) for channel in self._channels]

    def now(self) -> int:
        """The first READY channel; when none is, the first that may still connect, else the first."""
        if len(self._channels) == 1:
            return 0
        self._start()
        return self._choose(self._states())

    @staticmethod
    def _choose(states: list[grpc.ChannelConnectivity]) -> int:
        if _READY in states:
            return states.index(_READY)
        return next((index for index, state in enumerate(states) if state is not _FAILED), 0)

    def ready_before(self, index: int) -> int | None:
        """The first READY channel before ``index``, if any (asking idle ones to connect, at most
        once every ``RETURN_PROBE``)."""
        states = self._states()[:index]
        return states.index(_READY) if _READY in states else None

    async def ready(self, seconds: float, *, settle: bool = False) -> int:
        """The first READY channel; when none is, waits (up to ``seconds``) for one to be, as a call
        waits for its channel to connect; then as ``now``. A channel that failed is not waited for.
        ``settle``: also waits while a channel before the first READY one is still connecting (at
        the start, when a later server may answer first)."""
        if len(self._channels) == 1:
            return 0
        self._start()
        deadline = time.monotonic() + seconds

        def waiting(states: list[grpc.ChannelConnectivity]) -> bool:
            if settle:
                first = next((state for state in states if state is not _FAILED), _READY)
                return first is not _READY
            return _READY not in states and not all(state is _FAILED for state in states)

        states = self._states()
        while waiting(states):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changes = [
                asyncio.ensure_future(channel.wait_for_state_change(state))
                for channel, state in zip(self._channels, states, strict=True)
            ]
            try:
                await asyncio.wait(changes, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for change in changes:
                    change.cancel()
            states = self._states(connect=True)
        return self._choose(states)


def _never_sent(failure: WfeError) -> bool:
    """The call failed before it left the client: no connection to its server could be made."""
    return failure.code == "UNAVAILABLE" and str(failure).startswith("failed to connect to all addresses")


class GrpcLifecyclePublisher:
    """Publish lifecycle events to a wfe-sqlite server and watch them (``LifecycleService``).

    With several servers, publishes and new watches go to the first server of the list that
    answers, and back to an earlier one as soon as it answers again (see ``_FirstUp``): publishers
    and watchers given the same list meet there (a server relays events only to its own watchers).
    A watch already open stays on its server until it ends."""

    def __init__(self, connection: GrpcPersistenceProvider, *, owns_connection: bool = False) -> None:
        self._connection = connection
        self._owns_connection = owns_connection
        self._servers = _FirstUp(connection._pinned_channels(), lambda: connection._closed)
        self._closed = False
        self._watches: weakref.WeakSet[LifecycleWatch] = weakref.WeakSet()  # ended by close

    def _check_open(self) -> None:
        """After ``close``: StorageUnavailable, as the lock and queue providers raise."""
        if self._closed:
            raise StorageUnavailable("the lifecycle publisher is closed")
        self._connection._check_open()

    def _ended(self) -> bool:
        return self._closed or self._connection._closed

    @classmethod
    def connect(cls, address: str | Sequence[str], **options: Any) -> Opening[GrpcLifecyclePublisher]:
        """Connect to ``address`` (one server or several); ``options`` as for ``GrpcPersistenceProvider.connect``.

        With several servers it returns once it knows the first that answers (waiting at most
        ``SETTLE`` for earlier servers still connecting), so that a watch opened at once is on it."""

        async def opening() -> GrpcLifecyclePublisher:
            publisher = cls(await GrpcPersistenceProvider.connect(address, **options), owns_connection=True)
            await publisher._servers.ready(min(publisher._connection._timeout, SETTLE), settle=True)
            return publisher

        return Opening(opening)

    async def publish(self, event: LifecycleEvent) -> int:
        """Relay ``event`` to every current watcher; how many (on the server) received it."""
        request = lifecycle_pb2.PublishLifecycleEventRequest(event=lifecycle_event_to_proto(event))
        self._check_open()
        stubs = self._servers.stubs
        attempts = 1
        while True:
            stub = stubs[await self._servers.ready(self._connection._timeout)]
            try:
                response = await self._connection._call(stub.PublishLifecycleEvent, request)
            except WfeError as failure:
                # A server that died a moment ago can still read as connected: the call then
                # failed to connect and was never sent, so it goes to the next server that answers
                # (as a watch does). A call that may have reached a server is not sent again.
                if len(stubs) == 1 or attempts >= len(stubs) or not _never_sent(failure):
                    raise
                attempts += 1
                continue
            return int(response.watchers)

    def watch(
        self, workflow_instance_id: str | None = None, workflow_definition_id: str | None = None
    ) -> LifecycleWatch:
        """Watch the events published from now on (optionally of one workflow or one definition).

        ``async with publisher.watch() as events: async for event in events: ...`` (entering waits
        until the server has the watch in place).
        """
        self._check_open()
        request = lifecycle_pb2.WatchLifecycleEventsRequest(
            workflow_instance_id=_text(workflow_instance_id or "", "workflow_instance_id"),
            workflow_definition_id=_text(workflow_definition_id or "", "workflow_definition_id"),
        )
        metadata = self._connection._metadata

        def open_on(index: int) -> Any:
            return self._servers.stubs[index].WatchLifecycleEvents(request, metadata=metadata)

        index = self._servers.now()
        deadline = self._connection._timeout
        if len(self._servers.stubs) == 1:
            watch = LifecycleWatch(open_on(index), deadline=deadline, ended=self._ended)
        else:
            watch = LifecycleWatch(open_on(index), self._servers, index, open_on, deadline=deadline, ended=self._ended)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """Stop; calls afterwards raise ``StorageUnavailable``, and so do reads of its open watches
        (their streams are cancelled). A connection the publisher was given is not closed."""
        self._closed = True
        for watch in list(self._watches):
            watch._cancel_streams()
        self._servers.stop()
        if self._owns_connection:
            await self._connection.close()
