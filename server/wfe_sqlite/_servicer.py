"""The gRPC servicers: validate the request, call one provider or store operation, convert the answer.

Workflows go straight between messages and rows (``_wire``) and pages straight from the store's
keys; everything else goes through the provider's model API, which validates like the wire does.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import Any

import grpc

from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    execution_errors_pb2,
    execution_errors_pb2_grpc,
    scheduled_commands_pb2,
    scheduled_commands_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from wfe_client.conversion import (
    COMMAND_NAME,
    command_from_proto,
    command_to_proto,
    error_from_proto,
    event_from_proto,
    event_to_proto,
    instant,
    subscription_from_proto,
    subscription_to_proto,
    timestamp,
    timestamp_micros,
)
from wfe_client.errors import InvalidArgument, StreamIdle
from wfe_client.limits import (
    CLAIM_BATCH,
    DEFAULT_LEASE,
    DEFAULT_PAGE_SIZE,
    MAX_BATCH_GET_IDS,
    MAX_CLAIM,
    MAX_ID_BYTES,
    MAX_LEASE,
    MAX_PAGE_SIZE,
    MIN_LEASE,
)
from wfe_client.models import ScheduledCommand

from ._provider import StoreProvider, new_subscription_rows
from ._rows import PageKey, SubscriptionRow, check_event_key, check_id, subscription_from_row, with_workflow_id
from ._status import Context, translate_errors
from ._visibility_servicer import VISIBILITY_SERVICE_NAME, add_visibility_servicer
from ._wire import (
    add_workflow_message,
    duration_field,
    new_subscription_rows_from_messages,
    workflow_message_off_loop,
    workflow_rows_off_loop,
)

__all__ = ["SERVICE_NAMES", "add_servicers"]


PAGE_BYTES = 4 * 1024 * 1024
"""Size budget of one page or stream chunk, well under the message limit."""

SERVICE_NAMES = (
    workflows_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionService"].full_name,
    scheduled_commands_pb2.DESCRIPTOR.services_by_name["ScheduledCommandService"].full_name,
    execution_errors_pb2.DESCRIPTOR.services_by_name["ExecutionErrorService"].full_name,
    execution_errors_pb2.DESCRIPTOR.services_by_name["StoreService"].full_name,
    VISIBILITY_SERVICE_NAME,
)


def _required(value: str, field: str) -> str:
    """A string field that must be given: empty (proto3's unset) is the embedded provider's
    'must not be empty' (``check_id``), so every client sees the same words."""
    if not value:
        raise InvalidArgument(f"{field}: must not be empty", field=field)
    return value


def _expected_revision(request: Any) -> int:
    """The ``expected_revision`` of a persist request (0: no check); negative is INVALID_ARGUMENT."""
    expected: int = request.expected_revision
    if expected < 0:
        raise InvalidArgument("expected_revision: must not be negative", field="expected_revision")
    return expected


_OFF_LOOP_SUBSCRIPTIONS = 1000
"""Above this many subscriptions, a persist converts them on a worker thread: ~3 us each, so 100,000
(~5 MB) held the event loop, and every other call of every client, for ~0.3 s (2.5 s before the
direct conversion). Below it the hand-off to a thread and back would cost more than it spares."""


async def _subscription_rows(
    request: workflows_pb2.PersistWorkflowWithSubscriptionsRequest,
) -> list[SubscriptionRow] | None:
    """The subscription rows of a persist (``new_subscription_rows_from_messages``), or None when
    one is invalid (the caller then raises the model path's refusal)."""
    messages = request.subscriptions
    try:
        if len(messages) > _OFF_LOOP_SUBSCRIPTIONS:
            return await asyncio.to_thread(new_subscription_rows_from_messages, messages)
        return new_subscription_rows_from_messages(messages)
    except InvalidArgument:
        return None


def _required_message(request: Any, name: str) -> Any:
    if not request.HasField(name):
        raise InvalidArgument(f"{name}: required", field=name)
    return getattr(request, name)


def _micros(request: Any, name: str) -> int:
    """Epoch microseconds of the required Timestamp field ``name`` of ``request``."""
    if not request.HasField(name):
        raise InvalidArgument(f"request.{name}: required", field=f"request.{name}")
    return timestamp_micros(getattr(request, name), f"request.{name}")


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size: must not be negative", field="page_size")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _page_of(request: Any) -> tuple[int, PageKey | None, int]:
    """The page a list request asks for: (items at most, the position it starts after, byte budget)."""
    return _page_size(request.page_size), _decode_token(request.page_token), PAGE_BYTES


def _encode_token(key: PageKey) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _next_token(last: PageKey | None, more: bool) -> str:
    """The ``next_page_token`` after a page whose last item has the key ``last``."""
    return _encode_token(last) if more and last is not None else ""


_TOKEN_KEY = re.compile(r"-?[0-9]{1,19}")
_INT64 = range(-(2**63), 2**63)


def _decode_token(token: str) -> PageKey | None:
    """The keyset position in a ``page_token``; anything but a token this server made is INVALID_ARGUMENT."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (ValueError, UnicodeError):
        raw = ""
    number, sep, last = raw.partition(":")
    if not sep or not _TOKEN_KEY.fullmatch(number) or int(number) not in _INT64 or len(last.encode()) > MAX_ID_BYTES:
        raise InvalidArgument("page_token: not a token from a previous response", field="page_token")
    return int(number), last


def _id_page(keys: list[PageKey], more: bool) -> tuple[list[str], str]:
    """The ids of a page of keys, and the token of the page after it."""
    return [key[1] for key in keys], _next_token(keys[-1] if keys else None, more)


def _server_queues(status: str, next_execution: int | None) -> bool:
    """Whether the server queues a workflow stored like this itself (``server_queues`` of the write responses).

    The rules of ``_queue_store``: RUNNABLE with a ``next_execution`` is queued in the write's
    transaction (due, no live lease), by the release or the running out of the last lease on it
    (due, leased), or by the due timer (not yet due).
    """
    return status == "RUNNABLE" and next_execution is not None


class ClientGone(Exception):
    """A server stream's write failed because its call ended under it: nobody is left to answer."""


async def _written(context: Context, message: Any, idle: float) -> bool:
    """Write one message of a server stream; False when the client took nothing for ``idle`` seconds.

    ``context.write`` returns once the message has gone out, which HTTP/2 flow control holds back
    while the client does not read: a stream that is not read holds this one message. A write the
    call ended under (the client cancelled or went away, the server stopped) fails with grpc's
    ExecuteBatchError: that is ``ClientGone``, which the stream ends on quietly; it is no server bug.
    """
    try:
        async with asyncio.timeout(idle):
            await context.write(message)
    except TimeoutError:
        return False
    except Exception as error:  # grpc's failed batch (ExecuteBatchError): the call is over
        raise ClientGone(f"the call ended during a write ({error})") from error
    return True


class _Servicer:
    """What every servicer works on: the provider (models) and its store (rows)."""

    def __init__(self, provider: StoreProvider) -> None:
        self._p = provider
        self._store = provider.store


class WorkflowServicer(_Servicer, workflows_pb2_grpc.WorkflowServiceServicer):
    """``wfe.persistence.v1.WorkflowService``: workflows as rows, straight from and to messages."""

    def __init__(self, provider: StoreProvider, stream_idle: float) -> None:
        super().__init__(provider)
        self._stream_idle = stream_idle

    @translate_errors
    async def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context: Context
    ) -> workflows_pb2.CreateWorkflowResponse:
        row, pointers = with_workflow_id(*await workflow_rows_off_loop(_required_message(request, "workflow")))
        wid, name = await self._store.create_workflow(row, pointers)
        return workflows_pb2.CreateWorkflowResponse(
            id=wid, name=name, revision=1, server_queues=_server_queues(row.status, row.next_execution)
        )

    @translate_errors
    async def PersistWorkflow(
        self, request: workflows_pb2.PersistWorkflowRequest, context: Context
    ) -> workflows_pb2.PersistWorkflowResponse:
        row, pointers = await workflow_rows_off_loop(_required_message(request, "workflow"))
        check_id(row.id, "workflow.id")
        revision = await self._store.persist_workflow(row, pointers, (), _expected_revision(request))
        return workflows_pb2.PersistWorkflowResponse(
            revision=revision, server_queues=_server_queues(row.status, row.next_execution)
        )

    @translate_errors
    async def PersistWorkflowWithSubscriptions(
        self, request: workflows_pb2.PersistWorkflowWithSubscriptionsRequest, context: Context
    ) -> workflows_pb2.PersistWorkflowWithSubscriptionsResponse:
        row, pointers = await workflow_rows_off_loop(_required_message(request, "workflow"))
        rows = await _subscription_rows(request)
        if rows is None:  # one is invalid: the model path raises the refusal (first found, its field)
            subscriptions = [
                subscription_from_proto(s, f"subscriptions[{i}]") for i, s in enumerate(request.subscriptions)
            ]
            check_id(row.id, "workflow.id")
            rows = new_subscription_rows(subscriptions)
        else:
            check_id(row.id, "workflow.id")
        revision = await self._store.persist_workflow(row, pointers, rows, _expected_revision(request))
        return workflows_pb2.PersistWorkflowWithSubscriptionsResponse(
            subscription_ids=[r.id for r in rows],
            revision=revision,
            server_queues=_server_queues(row.status, row.next_execution),
        )

    @translate_errors
    async def GetRunnableWorkflows(
        self, request: workflows_pb2.GetRunnableWorkflowsRequest, context: Context
    ) -> workflows_pb2.GetRunnableWorkflowsResponse:
        keys, more = await self._store.runnable_workflows(
            _micros(request, "as_at") // 1000,
            *_page_of(request),
        )
        ids, token = _id_page(keys, more)
        return workflows_pb2.GetRunnableWorkflowsResponse(workflow_ids=ids, next_page_token=token)

    @translate_errors
    async def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: Context
    ) -> workflows_pb2.GetWorkflowResponse:
        found = await self._store.workflow(check_id(_required(request.id, "id"), "id"))
        return workflows_pb2.GetWorkflowResponse(workflow=await workflow_message_off_loop(*found))

    @translate_errors
    async def GetWorkflowByName(
        self, request: workflows_pb2.GetWorkflowByNameRequest, context: Context
    ) -> workflows_pb2.GetWorkflowByNameResponse:
        found = await self._store.workflow_by_name(check_id(_required(request.name, "name"), "name"))
        return workflows_pb2.GetWorkflowByNameResponse(workflow=await workflow_message_off_loop(*found))

    @translate_errors
    async def BatchGetWorkflows(self, request: workflows_pb2.BatchGetWorkflowsRequest, context: Context) -> None:
        if len(request.ids) > MAX_BATCH_GET_IDS:
            raise InvalidArgument(f"ids: at most {MAX_BATCH_GET_IDS} per request, got {len(request.ids)}", field="ids")
        ids = [check_id(_required(wid, f"ids[{i}]"), f"ids[{i}]") for i, wid in enumerate(request.ids)]
        # Headers first, on their own: a write given up on (below) must not leave them pending, or
        # the status that ends the stream could not be sent (grpc would send them twice).
        await context.send_initial_metadata(())
        chunks = self._workflow_chunks(list(dict.fromkeys(ids)))
        async for response in chunks:
            try:
                written = await _written(context, response, self._stream_idle)
            except ClientGone:
                await chunks.aclose()
                return
            if not written:
                del response
                await chunks.aclose()  # let go of what was read before waiting for the client
                raise StreamIdle(f"the client took no message for {self._stream_idle:g} s; stream ended")

    async def _workflow_chunks(
        self, ids: Sequence[str]
    ) -> AsyncGenerator[workflows_pb2.BatchGetWorkflowsResponse, None]:
        """The workflows among ``ids``, in order, in messages of about ``PAGE_BYTES``.

        The store is read a chunk at a time, only once the previous chunk has been written, and each
        row is let go once it is in the message, so a stream holds about one chunk however many
        workflows it returns. Each workflow is read whole in one read transaction; different chunks
        may see different moments of the store.
        """
        response = workflows_pb2.BatchGetWorkflowsResponse()
        used = 0
        position = 0
        while position < len(ids):
            found, position = await self._store.workflows_from(ids, position, max(PAGE_BYTES - used, 1))
            found.reverse()
            while found:
                row, pointers, size = found.pop()
                if response.workflows and used + size > PAGE_BYTES:
                    yield response
                    response, used = workflows_pb2.BatchGetWorkflowsResponse(), 0
                await add_workflow_message(response.workflows, row, pointers)
                used += size
                del row, pointers
        if response.workflows:
            yield response

    @translate_errors
    async def NextDefinitionSequence(
        self, request: workflows_pb2.NextDefinitionSequenceRequest, context: Context
    ) -> workflows_pb2.NextDefinitionSequenceResponse:
        definition_id = _required(request.definition_id, "definition_id")
        value = await self._p.next_definition_sequence(definition_id, request.count or 1)
        return workflows_pb2.NextDefinitionSequenceResponse(value=value)


class EventServicer(_Servicer, events_pb2_grpc.EventServiceServicer):
    """``wfe.persistence.v1.EventService`` over the provider."""

    @translate_errors
    async def CreateEvent(
        self, request: events_pb2.CreateEventRequest, context: Context
    ) -> events_pb2.CreateEventResponse:
        event = event_from_proto(_required_message(request, "event"))
        eid = await self._p.create_event(event)
        # An unprocessed event is queued by the store's write (due) or by the due timer (later).
        return events_pb2.CreateEventResponse(id=eid, server_queues=not event.is_processed)

    @translate_errors
    async def GetEvent(self, request: events_pb2.GetEventRequest, context: Context) -> events_pb2.GetEventResponse:
        event = await self._p.get_event(_required(request.id, "id"))
        return events_pb2.GetEventResponse(event=event_to_proto(event))

    @translate_errors
    async def GetRunnableEvents(
        self, request: events_pb2.GetRunnableEventsRequest, context: Context
    ) -> events_pb2.GetRunnableEventsResponse:
        keys, more = await self._store.runnable_events(_micros(request, "as_at"), *_page_of(request))
        ids, token = _id_page(keys, more)
        return events_pb2.GetRunnableEventsResponse(event_ids=ids, next_page_token=token)

    @translate_errors
    async def GetEvents(self, request: events_pb2.GetEventsRequest, context: Context) -> events_pb2.GetEventsResponse:
        as_of = _micros(request, "as_of")
        name, key = check_event_key(request.event_name, request.event_key)
        keys, more = await self._store.events(name, key, as_of, *_page_of(request))
        ids, token = _id_page(keys, more)
        return events_pb2.GetEventsResponse(event_ids=ids, next_page_token=token)

    @translate_errors
    async def MarkEventProcessed(
        self, request: events_pb2.MarkEventProcessedRequest, context: Context
    ) -> events_pb2.MarkEventProcessedResponse:
        await self._p.mark_event_processed(_required(request.id, "id"))
        return events_pb2.MarkEventProcessedResponse()

    @translate_errors
    async def MarkEventUnprocessed(
        self, request: events_pb2.MarkEventUnprocessedRequest, context: Context
    ) -> events_pb2.MarkEventUnprocessedResponse:
        await self._p.mark_event_unprocessed(_required(request.id, "id"))
        return events_pb2.MarkEventUnprocessedResponse()


class SubscriptionServicer(_Servicer, subscriptions_pb2_grpc.SubscriptionServiceServicer):
    """``wfe.persistence.v1.SubscriptionService`` over the provider."""

    @translate_errors
    async def CreateSubscription(
        self, request: subscriptions_pb2.CreateSubscriptionRequest, context: Context
    ) -> subscriptions_pb2.CreateSubscriptionResponse:
        sid = await self._p.create_event_subscription(
            subscription_from_proto(_required_message(request, "subscription"))
        )
        return subscriptions_pb2.CreateSubscriptionResponse(id=sid)

    @translate_errors
    async def GetSubscription(
        self, request: subscriptions_pb2.GetSubscriptionRequest, context: Context
    ) -> subscriptions_pb2.GetSubscriptionResponse:
        subscription = await self._p.get_subscription(_required(request.id, "id"))
        return subscriptions_pb2.GetSubscriptionResponse(subscription=subscription_to_proto(subscription))

    @translate_errors
    async def GetSubscriptions(
        self, request: subscriptions_pb2.GetSubscriptionsRequest, context: Context
    ) -> subscriptions_pb2.GetSubscriptionsResponse:
        as_of = _micros(request, "as_of")
        name, key = check_event_key(request.event_name, request.event_key)
        rows, more = await self._store.subscriptions(name, key, as_of, *_page_of(request))
        last = (rows[-1].subscribe_as_of, rows[-1].id) if rows else None
        return subscriptions_pb2.GetSubscriptionsResponse(
            subscriptions=[subscription_to_proto(subscription_from_row(row)) for row in rows],
            next_page_token=_next_token(last, more),
        )

    @translate_errors
    async def TerminateSubscription(
        self, request: subscriptions_pb2.TerminateSubscriptionRequest, context: Context
    ) -> subscriptions_pb2.TerminateSubscriptionResponse:
        await self._p.terminate_subscription(_required(request.id, "id"))
        return subscriptions_pb2.TerminateSubscriptionResponse()

    @translate_errors
    async def GetFirstOpenSubscription(
        self, request: subscriptions_pb2.GetFirstOpenSubscriptionRequest, context: Context
    ) -> subscriptions_pb2.GetFirstOpenSubscriptionResponse:
        subscription = await self._p.get_first_open_subscription(
            request.event_name, request.event_key, instant(request, "as_of", "request")
        )
        if subscription is None:
            return subscriptions_pb2.GetFirstOpenSubscriptionResponse()
        return subscriptions_pb2.GetFirstOpenSubscriptionResponse(subscription=subscription_to_proto(subscription))

    @translate_errors
    async def SetSubscriptionToken(
        self, request: subscriptions_pb2.SetSubscriptionTokenRequest, context: Context
    ) -> subscriptions_pb2.SetSubscriptionTokenResponse:
        acquired = await self._p.set_subscription_token(
            _required(request.id, "id"),
            _required(request.token, "token"),
            request.worker_id,
            instant(request, "expiry", "request"),
        )
        return subscriptions_pb2.SetSubscriptionTokenResponse(acquired=acquired)

    @translate_errors
    async def ClearSubscriptionToken(
        self, request: subscriptions_pb2.ClearSubscriptionTokenRequest, context: Context
    ) -> subscriptions_pb2.ClearSubscriptionTokenResponse:
        await self._p.clear_subscription_token(_required(request.id, "id"), _required(request.token, "token"))
        return subscriptions_pb2.ClearSubscriptionTokenResponse()


def _lease(request: scheduled_commands_pb2.ClaimCommandsRequest) -> timedelta:
    """The lease a claim asks for: ``DEFAULT_LEASE`` when absent or zero."""
    return duration_field(request, "lease_duration", DEFAULT_LEASE, MIN_LEASE, MAX_LEASE, between="1 ms and 1 hour")


class ScheduledCommandServicer(_Servicer, scheduled_commands_pb2_grpc.ScheduledCommandServiceServicer):
    """``wfe.persistence.v1.ScheduledCommandService`` over the provider."""

    @translate_errors
    async def ScheduleCommand(
        self, request: scheduled_commands_pb2.ScheduleCommandRequest, context: Context
    ) -> scheduled_commands_pb2.ScheduleCommandResponse:
        await self._p.schedule_command(command_from_proto(_required_message(request, "command")))
        return scheduled_commands_pb2.ScheduleCommandResponse()

    @translate_errors
    async def ClaimCommands(
        self, request: scheduled_commands_pb2.ClaimCommandsRequest, context: Context
    ) -> scheduled_commands_pb2.ClaimCommandsResponse:
        if request.max_commands < 0:
            raise InvalidArgument("max_commands: must not be negative", field="max_commands")
        count = min(request.max_commands or CLAIM_BATCH, MAX_CLAIM)
        lease = _lease(request)
        claim = await self._p.claim_commands(instant(request, "as_of", "request"), count, lease, request.worker_id)
        return scheduled_commands_pb2.ClaimCommandsResponse(
            commands=[scheduled_commands_pb2.ClaimedCommand(command=command_to_proto(c)) for c in claim.commands],
            lease_id=claim.lease_id,
            lease_expiry=timestamp(claim.lease_expiry),
        )

    def _settled(self, request: Any) -> tuple[ScheduledCommand, str]:
        name = COMMAND_NAME.decode(request.command_name, "command_name")
        return ScheduledCommand(name, request.data, 0), _required(request.lease_id, "lease_id")

    @translate_errors
    async def AcknowledgeCommand(
        self, request: scheduled_commands_pb2.AcknowledgeCommandRequest, context: Context
    ) -> scheduled_commands_pb2.AcknowledgeCommandResponse:
        await self._p.acknowledge_command(*self._settled(request))
        return scheduled_commands_pb2.AcknowledgeCommandResponse()

    @translate_errors
    async def ReleaseCommand(
        self, request: scheduled_commands_pb2.ReleaseCommandRequest, context: Context
    ) -> scheduled_commands_pb2.ReleaseCommandResponse:
        await self._p.release_command(*self._settled(request))
        return scheduled_commands_pb2.ReleaseCommandResponse()


class ExecutionErrorServicer(_Servicer, execution_errors_pb2_grpc.ExecutionErrorServiceServicer):
    """``wfe.persistence.v1.ExecutionErrorService`` over the provider."""

    @translate_errors
    async def PersistErrors(
        self, request: execution_errors_pb2.PersistErrorsRequest, context: Context
    ) -> execution_errors_pb2.PersistErrorsResponse:
        await self._p.persist_errors([error_from_proto(e, f"errors[{i}]") for i, e in enumerate(request.errors)])
        return execution_errors_pb2.PersistErrorsResponse()


class StoreServicer(_Servicer, execution_errors_pb2_grpc.StoreServiceServicer):
    """``wfe.persistence.v1.StoreService`` over the provider."""

    @translate_errors
    async def EnsureStoreExists(
        self, request: execution_errors_pb2.EnsureStoreExistsRequest, context: Context
    ) -> execution_errors_pb2.EnsureStoreExistsResponse:
        await self._p.ensure_store_exists()
        return execution_errors_pb2.EnsureStoreExistsResponse()


def add_servicers(server: grpc.aio.Server, provider: StoreProvider, stream_idle: float) -> None:
    """Register every ``wfe.persistence.v1`` service of ``provider`` on ``server``.

    ``stream_idle``: seconds a server stream waits for its client to take a message before it is
    ended with DEADLINE_EXCEEDED (reason ``STREAM_IDLE``).
    """
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(WorkflowServicer(provider, stream_idle), server)
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(provider), server)
    subscriptions_pb2_grpc.add_SubscriptionServiceServicer_to_server(SubscriptionServicer(provider), server)
    scheduled_commands_pb2_grpc.add_ScheduledCommandServiceServicer_to_server(
        ScheduledCommandServicer(provider), server
    )
    execution_errors_pb2_grpc.add_ExecutionErrorServiceServicer_to_server(ExecutionErrorServicer(provider), server)
    execution_errors_pb2_grpc.add_StoreServiceServicer_to_server(StoreServicer(provider), server)
    add_visibility_servicer(server, provider)
