"""The gRPC servicers of the cluster services: locks, queues, lifecycle (validate, call the cluster, convert)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeAlias

import grpc

from wfe.persistence.v1 import (
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    locks_pb2,
    locks_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)
from wfe_client.conversion import LIFECYCLE_EVENT_TYPE, QUEUE_TYPE, event_to_proto, instant, subscription_to_proto
from wfe_client.errors import EventNotFound, InvalidArgument, StreamIdle, WorkflowNotFound
from wfe_client.limits import (
    DEFAULT_LOCK_TTL,
    MAX_LOCK_RESOURCES,
    MAX_LOCK_TTL,
    MAX_RENEW_RESOURCES,
    MAX_WAIT,
    MIN_LOCK_TTL,
)

from ._cluster_api import Handout, LeaseAsk
from ._provider import StoreProvider
from ._queue_store import EVENT, WORKFLOW
from ._rows import check_id, check_lease_resource, event_from_row, lease_ask, subscription_from_row
from ._servicer import ClientGone, _written
from ._status import translate_errors
from ._wire import duration_field, workflow_message_off_loop

__all__ = ["CLUSTER_SERVICE_NAMES", "add_cluster_servicers"]

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_US = timedelta(microseconds=1)

CLUSTER_SERVICE_NAMES = (
    locks_pb2.DESCRIPTOR.services_by_name["LockService"].full_name,
    queues_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    lifecycle_pb2.DESCRIPTOR.services_by_name["LifecycleService"].full_name,
)


def _queue(value: int, field: str = "queue") -> str:
    """The stored name of a queue (``QueueType`` member name); UNSPECIFIED and unknown values are invalid."""
    return QUEUE_TYPE.decode_name(value, field)


def _resources(request: Any, check: Callable[[Any, str], str] = check_id) -> list[str]:
    """``resource`` and the ``also_resources`` of a lock request, each checked by ``check``: at most
    ``MAX_LOCK_RESOURCES`` more, no repeats."""
    resources = [check(request.resource, "resource")]
    if len(request.also_resources) > MAX_LOCK_RESOURCES:
        raise InvalidArgument(
            f"also_resources: at most {MAX_LOCK_RESOURCES} per request, got {len(request.also_resources)}",
            field="also_resources",
        )
    for i, resource in enumerate(request.also_resources):
        name = f"also_resources[{i}]"
        resources.append(check(resource, name))
        if resources[-1] in resources[:-1]:
            raise InvalidArgument(f"{name}: {resource!r} is named twice", field=name)
    return resources


class LockServicer(locks_pb2_grpc.LockServiceServicer):
    """``wfe.persistence.v1.LockService`` over the provider's cluster."""

    def __init__(self, provider: StoreProvider) -> None:
        self._p = provider
        self._cluster = provider.cluster

    @translate_errors
    async def AcquireLock(
        self, request: locks_pb2.AcquireLockRequest, context: Context
    ) -> locks_pb2.AcquireLockResponse:
        resources = _resources(request)
        owner = check_id(request.owner, "owner")
        ttl = duration_field(request, "ttl", DEFAULT_LOCK_TTL, MIN_LOCK_TTL, MAX_LOCK_TTL)
        read_id = check_id(request.read_workflow_id, "read_workflow_id", required=False)
        if len(resources) == 1:
            lease = await self._cluster.acquire_lock(resources[0], owner, ttl // _US)
            leases = None if lease is None else [lease]
        else:
            leases = await self._cluster.acquire_locks(resources, owner, ttl // _US)
        if leases is None:
            return locks_pb2.AcquireLockResponse(acquired=False)
        token, expire_us = leases[0]
        response = locks_pb2.AcquireLockResponse(
            acquired=True, fencing_token=token, also_fencing_tokens=[t for t, _ in leases[1:]]
        )
        seconds, micros = divmod(expire_us, 1_000_000)
        response.expire_time.seconds, response.expire_time.nanos = seconds, micros * 1000
        if read_id:
            # Read after the commit that took the leases: as fresh as the holder's own read would be.
            try:
                row, pointers = await self._p.store.workflow(read_id)
            except WorkflowNotFound:
                return response
            response.workflow.CopyFrom(await workflow_message_off_loop(row, pointers))
        return response

    @translate_errors
    async def RenewLocks(self, request: locks_pb2.RenewLocksRequest, context: Context) -> locks_pb2.RenewLocksResponse:
        owner = check_id(request.owner, "owner")
        if len(request.resources) > MAX_RENEW_RESOURCES:
            raise InvalidArgument(
                f"resources: at most {MAX_RENEW_RESOURCES} per request, got {len(request.resources)}", field="resources"
            )
        resources = [check_lease_resource(r, f"resources[{i}]") for i, r in enumerate(request.resources)]
        ttl = duration_field(request, "ttl", DEFAULT_LOCK_TTL, MIN_LOCK_TTL, MAX_LOCK_TTL)
        lost = await self._cluster.renew_locks(owner, resources, ttl // _US)
        return locks_pb2.RenewLocksResponse(lost_resources=lost)

    @translate_errors
    async def ReleaseLock(
        self, request: locks_pb2.ReleaseLockRequest, context: Context
    ) -> locks_pb2.ReleaseLockResponse:
        resources = _resources(request, check_lease_resource)
        owner = check_id(request.owner, "owner")
        if len(resources) == 1:
            return locks_pb2.ReleaseLockResponse(released=await self._cluster.release_lock(resources[0], owner))
        released = await self._cluster.release_locks(resources, owner)
        return locks_pb2.ReleaseLockResponse(
            released=released[0],
            also_released=[r for r, freed in zip(resources[1:], released[1:], strict=True) if freed],
        )


INCLUDED_SUBSCRIPTIONS = 1000
"""Most subscriptions a DequeueWork with ``include_event`` brings along (more: the caller asks)."""
INCLUDED_BYTES = 4 * 1024 * 1024
"""Byte budget of those subscriptions."""


def _lease_ask(request: queues_pb2.DequeueWorkRequest) -> LeaseAsk | None:
    """The leases a DequeueWork asks for and the releases it carries, checked; None without ``leases``."""
    if not request.HasField("leases"):
        if request.release_resources:
            raise InvalidArgument("release_resources: needs leases (for its owner)", field="release_resources")
        return None
    leases = request.leases
    ttl = duration_field(leases, "ttl", DEFAULT_LOCK_TTL, MIN_LOCK_TTL, MAX_LOCK_TTL, field="leases.ttl")
    return lease_ask(
        leases.owner, ttl // _US, leases.prefixes, request.release_resources, "leases.", "release_resources"
    )


def _leased_response(handout: Handout) -> queues_pb2.DequeueWorkResponse:
    response = queues_pb2.DequeueWorkResponse(id=handout.item_id, fencing_tokens=[t for t, _ in handout.leases])
    if handout.leases:
        seconds, micros = divmod(min(expire for _, expire in handout.leases), 1_000_000)
        response.lease_expire_time.seconds, response.lease_expire_time.nanos = seconds, micros * 1000
    return response


class QueueServicer(queues_pb2_grpc.QueueServiceServicer):
    """``wfe.persistence.v1.QueueService`` over the provider's cluster."""

    def __init__(self, provider: StoreProvider) -> None:
        self._p = provider
        self._cluster = provider.cluster

    @translate_errors
    async def QueueWork(self, request: queues_pb2.QueueWorkRequest, context: Context) -> queues_pb2.QueueWorkResponse:
        item_id = check_id(request.id, "id")
        queued = await self._cluster.queue_work(_queue(request.queue), item_id)
        return queues_pb2.QueueWorkResponse(queued=queued)

    @translate_errors
    async def DequeueWork(
        self, request: queues_pb2.DequeueWorkRequest, context: Context
    ) -> queues_pb2.DequeueWorkResponse:
        queue = _queue(request.queue)
        # Low bound 0: a wait under a microsecond (rounded to 0) is a valid one that returns at once.
        wait = duration_field(request, "wait", timedelta(0), timedelta(0), MAX_WAIT)
        ask = _lease_ask(request)
        if ask is None:
            item_id = await self._cluster.dequeue_work(queue, wait.total_seconds())
            if item_id is None:
                return queues_pb2.DequeueWorkResponse()
            response = queues_pb2.DequeueWorkResponse(id=item_id)
        else:
            handout = await self._cluster.dequeue_leased(queue, wait.total_seconds(), ask)
            if handout is None:
                return queues_pb2.DequeueWorkResponse()
            item_id = handout.item_id
            response = _leased_response(handout)
        if request.include_workflow and queue == WORKFLOW:
            try:
                row, pointers = await self._p.store.workflow(item_id)
            except WorkflowNotFound:
                return response
            response.workflow.CopyFrom(await workflow_message_off_loop(row, pointers))
        elif request.include_event and queue == EVENT:
            await self._include_event(response, item_id, request.mark_processed_if_unsubscribed)
        return response

    async def _include_event(self, response: queues_pb2.DequeueWorkResponse, event_id: str, mark: bool) -> None:
        """The event and the subscriptions it matches (what a WFE host's event consumer reads next);
        with ``mark``, an event that matches none is marked processed (what the consumer does next)."""
        store = self._p.store
        try:
            event = await store.event(event_id)
        except EventNotFound:
            return
        response.event.CopyFrom(event_to_proto(event_from_row(event)))
        if mark and await store.mark_processed_if_unsubscribed(event_id):
            response.event.is_processed = True
            response.subscriptions_included = True
            response.marked_processed = True
            return
        rows, more = await store.subscriptions(
            event.event_name, event.event_key, event.event_time, INCLUDED_SUBSCRIPTIONS, None, INCLUDED_BYTES
        )
        if not more:
            response.subscriptions_included = True
            response.subscriptions.extend(subscription_to_proto(subscription_from_row(row)) for row in rows)


MAX_LIFECYCLE_EVENT_BYTES = 1024 * 1024
"""Largest lifecycle event accepted (its encoded size). Events are notifications (a step's name, an
error's message), and each watcher that has not read one yet holds its own copy in gRPC's buffers:
before, 10 watchers that read nothing and 3 published events of 30 MiB took a server from 54 MiB to
a peak of 1.27 GB."""


def _event(request: lifecycle_pb2.PublishLifecycleEventRequest) -> lifecycle_pb2.LifecycleEvent:
    if not request.HasField("event"):
        raise InvalidArgument("event: required", field="event")
    event = request.event
    size = event.ByteSize()
    if size > MAX_LIFECYCLE_EVENT_BYTES:
        raise InvalidArgument(
            f"event: {size} bytes encoded, at most {MAX_LIFECYCLE_EVENT_BYTES} (1 MiB)", field="event"
        )
    instant(event, "event_time", "event")
    check_id(event.workflow_instance_id, "event.workflow_instance_id")
    check_id(event.workflow_definition_id, "event.workflow_definition_id", required=False)
    LIFECYCLE_EVENT_TYPE.decode(event.type, "event.type")
    return event


class LifecycleServicer(lifecycle_pb2_grpc.LifecycleServiceServicer):
    """``wfe.persistence.v1.LifecycleService``: relays published events to the watchers of this server."""

    def __init__(self, provider: StoreProvider, stream_idle: float) -> None:
        self._cluster = provider.cluster
        self._stream_idle = stream_idle

    @translate_errors
    async def PublishLifecycleEvent(
        self, request: lifecycle_pb2.PublishLifecycleEventRequest, context: Context
    ) -> lifecycle_pb2.PublishLifecycleEventResponse:
        event = _event(request)
        payload = lifecycle_pb2.WatchLifecycleEventsResponse(event=event).SerializeToString()
        count = await self._cluster.publish_lifecycle(payload, event.workflow_instance_id, event.workflow_definition_id)
        return lifecycle_pb2.PublishLifecycleEventResponse(watchers=count)

    @translate_errors
    async def WatchLifecycleEvents(self, request: lifecycle_pb2.WatchLifecycleEventsRequest, context: Context) -> None:
        check_id(request.workflow_instance_id, "workflow_instance_id", required=False)
        check_id(request.workflow_definition_id, "workflow_definition_id", required=False)
        with self._cluster.watch_lifecycle(request.workflow_instance_id, request.workflow_definition_id) as watcher:
            # Headers now, on their own: the client knows the watch is in place before any event
            # (and a write given up on below must not leave them pending).
            await context.send_initial_metadata(())
            while True:
                payload = await watcher.next()
                if payload is None:
                    return
                # The encoded response itself, shared by every watcher (see ``_response_bytes``).
                try:
                    written = await _written(context, payload, self._stream_idle)
                except ClientGone:
                    return
                if not written:
                    raise StreamIdle(f"the client took no event for {self._stream_idle:g} s; stream ended")


def _response_bytes(response: lifecycle_pb2.WatchLifecycleEventsResponse | bytes) -> bytes:
    """A watch's response on the wire: the published event's encoded response as it is (no parse
    and new encoding per watcher, which held two more copies of each event per watcher)."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def _add_lifecycle_servicer(servicer: LifecycleServicer, server: grpc.aio.Server) -> None:
    """``add_LifecycleServiceServicer_to_server``, with watch responses written as encoded bytes."""
    service = lifecycle_pb2.DESCRIPTOR.services_by_name["LifecycleService"].full_name
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "PublishLifecycleEvent": grpc.unary_unary_rpc_method_handler(
            servicer.PublishLifecycleEvent,
            request_deserializer=lifecycle_pb2.PublishLifecycleEventRequest.FromString,
            response_serializer=lifecycle_pb2.PublishLifecycleEventResponse.SerializeToString,
        ),
        "WatchLifecycleEvents": grpc.unary_stream_rpc_method_handler(
            servicer.WatchLifecycleEvents,
            request_deserializer=lifecycle_pb2.WatchLifecycleEventsRequest.FromString,
            response_serializer=_response_bytes,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def add_cluster_servicers(server: grpc.aio.Server, provider: StoreProvider, stream_idle: float) -> None:
    """Register the lock, queue and lifecycle services of ``provider`` on ``server``."""
    locks_pb2_grpc.add_LockServiceServicer_to_server(LockServicer(provider), server)
    queues_pb2_grpc.add_QueueServiceServicer_to_server(QueueServicer(provider), server)
    _add_lifecycle_servicer(LifecycleServicer(provider, stream_idle), server)
