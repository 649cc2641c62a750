"""The gRPC servicers: validate the request, call one provider method, convert the answer."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, Optional

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
from wfe_client import InvalidArgument, ScheduledCommand, WfeError
from wfe_client._time import to_micros
from wfe_client._convert import (
    command_from_proto,
    command_name_from_proto,
    command_to_proto,
    error_from_proto,
    event_from_proto,
    event_to_proto,
    instant,
    subscription_from_proto,
    subscription_to_proto,
    timestamp,
    workflow_from_proto,
)

from ._provider import MAX_BATCH_IDS, PageKey, SqlitePersistenceProvider
from ._rows import MAX_ID_BYTES, check_id
from ._status import translate_errors
from ._wire import workflow_message, workflow_rows_from_message

__all__ = ["add_servicers", "SERVICE_NAMES", "StreamIdle"]

Context = grpc.aio.ServicerContext

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
PAGE_BYTES = 4 * 1024 * 1024
"""Size budget of one page or stream chunk, well under the message limit."""
DEFAULT_CLAIM = 100
MAX_CLAIM = 1000
DEFAULT_LEASE = timedelta(seconds=30)
MAX_LEASE = timedelta(hours=1)

SERVICE_NAMES = (
    workflows_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionService"].full_name,
    scheduled_commands_pb2.DESCRIPTOR.services_by_name["ScheduledCommandService"].full_name,
    execution_errors_pb2.DESCRIPTOR.services_by_name["ExecutionErrorService"].full_name,
    execution_errors_pb2.DESCRIPTOR.services_by_name["StoreService"].full_name,
)


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field}: required", field=field)
    return value


def _required_message(request: Any, name: str) -> Any:
    if not request.HasField(name):
        raise InvalidArgument(f"{name}: required", field=name)
    return getattr(request, name)


def _expected_revision(request: Any) -> int:
    if request.expected_revision < 0:
        raise InvalidArgument("expected_revision: must not be negative", field="expected_revision")
    return int(request.expected_revision)


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size: must not be negative", field="page_size")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class StreamIdle(WfeError):
    """A server stream whose client took no message for the stream idle timeout was ended."""

    reason = "STREAM_IDLE"
    code = "DEADLINE_EXCEEDED"


def _encode_token(key: PageKey) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _next_token(key: PageKey, more: bool) -> str:
    return _encode_token(key) if more else ""


_TOKEN_KEY = re.compile(r"-?[0-9]{1,19}")
_INT64 = range(-(2**63), 2**63)


def _decode_token(token: str) -> Optional[PageKey]:
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


async def _written(context: Context, message: Any, idle: float) -> bool:
    """Write one message of a server stream; False when the client took nothing for ``idle`` seconds.

    ``context.write`` returns once the message has gone out, which HTTP/2 flow control holds back
    while the client does not read: a stream that is not read holds this one message.
    """
    try:
        async with asyncio.timeout(idle):
            await context.write(message)
    except TimeoutError:
        return False
    return True


class WorkflowServicer(workflows_pb2_grpc.WorkflowServiceServicer):
    """``wfe.persistence.v1.WorkflowService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider, stream_idle: float) -> None:
        self._p = provider
        self._stream_idle = stream_idle

    @translate_errors
    async def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context: Context
    ) -> workflows_pb2.CreateWorkflowResponse:
        row, pointers = workflow_rows_from_message(_required_message(request, "workflow"))
        wid, name = await self._p.create_workflow_rows(row, pointers)
        return workflows_pb2.CreateWorkflowResponse(id=wid, name=name, revision=1)

    @translate_errors
    async def PersistWorkflow(
        self, request: workflows_pb2.PersistWorkflowRequest, context: Context
    ) -> workflows_pb2.PersistWorkflowResponse:
        row, pointers = workflow_rows_from_message(_required_message(request, "workflow"))
        revision = await self._p.persist_workflow_rows(row, pointers, _expected_revision(request))
        return workflows_pb2.PersistWorkflowResponse(revision=revision)

    @translate_errors
    async def PersistWorkflowWithSubscriptions(
        self, request: workflows_pb2.PersistWorkflowWithSubscriptionsRequest, context: Context
    ) -> workflows_pb2.PersistWorkflowWithSubscriptionsResponse:
        workflow = workflow_from_proto(_required_message(request, "workflow"))
        subscriptions = [
            subscription_from_proto(s, f"subscriptions[{i}]") for i, s in enumerate(request.subscriptions)
        ]
        ids, revision = await self._p.persist_workflow_with_new_subscriptions(
            workflow, subscriptions, _expected_revision(request)
        )
        return workflows_pb2.PersistWorkflowWithSubscriptionsResponse(subscription_ids=ids, revision=revision)

    @translate_errors
    async def GetRunnableWorkflows(
        self, request: workflows_pb2.GetRunnableWorkflowsRequest, context: Context
    ) -> workflows_pb2.GetRunnableWorkflowsResponse:
        rows, more = await self._p.runnable_instances_page(
            instant(request, "as_at", "request"),
            _page_size(request.page_size),
            _decode_token(request.page_token),
            PAGE_BYTES,
        )
        return workflows_pb2.GetRunnableWorkflowsResponse(
            workflow_ids=[wid for _, wid in rows], next_page_token=_next_token(rows[-1], more) if rows else ""
        )

    @translate_errors
    async def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: Context
    ) -> workflows_pb2.GetWorkflowResponse:
        row, pointers = await self._p.workflow_rows(_required(request.id, "id"))
        return workflows_pb2.GetWorkflowResponse(workflow=workflow_message(row, pointers))

    @translate_errors
    async def GetWorkflowByName(
        self, request: workflows_pb2.GetWorkflowByNameRequest, context: Context
    ) -> workflows_pb2.GetWorkflowByNameResponse:
        row, pointers = await self._p.workflow_rows_by_name(_required(request.name, "name"))
        return workflows_pb2.GetWorkflowByNameResponse(workflow=workflow_message(row, pointers))

    @translate_errors
    async def BatchGetWorkflows(self, request: workflows_pb2.BatchGetWorkflowsRequest, context: Context) -> None:
        if len(request.ids) > MAX_BATCH_IDS:
            raise InvalidArgument(f"ids: at most {MAX_BATCH_IDS} per request, got {len(request.ids)}", field="ids")
        for i, wid in enumerate(request.ids):
            check_id(_required(wid, f"ids[{i}]"), f"ids[{i}]")
        # Headers first, on their own: a write given up on (below) must not leave them pending, or
        # the status that ends the stream could not be sent (grpc would send them twice).
        await context.send_initial_metadata(())
        chunks = self._workflow_chunks(list(dict.fromkeys(request.ids)))
        async for response in chunks:
            if not await _written(context, response, self._stream_idle):
                del response
                await chunks.aclose()  # let go of what was read before waiting for the client
                raise StreamIdle(f"the client took no message for {self._stream_idle:g} s; stream ended")

    async def _workflow_chunks(self, ids: Sequence[str]) -> AsyncIterator[workflows_pb2.BatchGetWorkflowsResponse]:
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
            found, position = await self._p.workflows_rows_from(ids, position, max(PAGE_BYTES - used, 1))
            found.reverse()
            while found:
                row, pointers, size = found.pop()
                if response.workflows and used + size > PAGE_BYTES:
                    yield response
                    response, used = workflows_pb2.BatchGetWorkflowsResponse(), 0
                response.workflows.append(workflow_message(row, pointers))
                used += size
                del row, pointers
        if response.workflows:
            yield response

    @translate_errors
    async def NextDefinitionSequence(
        self, request: workflows_pb2.NextDefinitionSequenceRequest, context: Context
    ) -> workflows_pb2.NextDefinitionSequenceResponse:
        value = await self._p.next_definition_sequence(_required(request.definition_id, "definition_id"))
        return workflows_pb2.NextDefinitionSequenceResponse(value=value)


class EventServicer(events_pb2_grpc.EventServiceServicer):
    """``wfe.persistence.v1.EventService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

    @translate_errors
    async def CreateEvent(
        self, request: events_pb2.CreateEventRequest, context: Context
    ) -> events_pb2.CreateEventResponse:
        eid = await self._p.create_event(event_from_proto(_required_message(request, "event")))
        return events_pb2.CreateEventResponse(id=eid)

    @translate_errors
    async def GetEvent(self, request: events_pb2.GetEventRequest, context: Context) -> events_pb2.GetEventResponse:
        event = await self._p.get_event(_required(request.id, "id"))
        return events_pb2.GetEventResponse(event=event_to_proto(event))

    @translate_errors
    async def GetRunnableEvents(
        self, request: events_pb2.GetRunnableEventsRequest, context: Context
    ) -> events_pb2.GetRunnableEventsResponse:
        rows, more = await self._p.runnable_events_page(
            instant(request, "as_at", "request"),
            _page_size(request.page_size),
            _decode_token(request.page_token),
            PAGE_BYTES,
        )
        return events_pb2.GetRunnableEventsResponse(
            event_ids=[eid for _, eid in rows], next_page_token=_next_token(rows[-1], more) if rows else ""
        )

    @translate_errors
    async def GetEvents(self, request: events_pb2.GetEventsRequest, context: Context) -> events_pb2.GetEventsResponse:
        rows, more = await self._p.events_page(
            request.event_name,
            request.event_key,
            instant(request, "as_of", "request"),
            _page_size(request.page_size),
            _decode_token(request.page_token),
            PAGE_BYTES,
        )
        return events_pb2.GetEventsResponse(
            event_ids=[eid for _, eid in rows], next_page_token=_next_token(rows[-1], more) if rows else ""
        )

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


class SubscriptionServicer(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    """``wfe.persistence.v1.SubscriptionService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

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
        subscriptions, more = await self._p.subscriptions_page(
            request.event_name,
            request.event_key,
            instant(request, "as_of", "request"),
            _page_size(request.page_size),
            _decode_token(request.page_token),
            PAGE_BYTES,
        )
        last = subscriptions[-1] if subscriptions else None
        return subscriptions_pb2.GetSubscriptionsResponse(
            subscriptions=[subscription_to_proto(s) for s in subscriptions],
            next_page_token=_next_token((to_micros(last.subscribe_as_of), last.id), more) if last else "",
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


class ScheduledCommandServicer(scheduled_commands_pb2_grpc.ScheduledCommandServiceServicer):
    """``wfe.persistence.v1.ScheduledCommandService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

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
        count = min(request.max_commands or DEFAULT_CLAIM, MAX_CLAIM)
        lease = DEFAULT_LEASE
        if request.HasField("lease_duration"):
            duration = request.lease_duration
            if duration.seconds or duration.nanos:
                if duration.seconds < 0 or duration.nanos < 0 or duration.seconds > MAX_LEASE.total_seconds():
                    raise InvalidArgument("lease_duration: must be between 1 ms and 1 hour", field="lease_duration")
                lease = timedelta(seconds=duration.seconds, microseconds=duration.nanos // 1000)
                if not timedelta(milliseconds=1) <= lease <= MAX_LEASE:
                    raise InvalidArgument("lease_duration: must be between 1 ms and 1 hour", field="lease_duration")
        claim = await self._p.claim_commands(instant(request, "as_of", "request"), count, lease, request.worker_id)
        return scheduled_commands_pb2.ClaimCommandsResponse(
            commands=[scheduled_commands_pb2.ClaimedCommand(command=command_to_proto(c)) for c in claim.commands],
            lease_id=claim.lease_id,
            lease_expiry=timestamp(claim.lease_expiry),
        )

    def _settled(self, request: Any) -> tuple[ScheduledCommand, str]:
        name = command_name_from_proto(request.command_name, "command_name")
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


class ExecutionErrorServicer(execution_errors_pb2_grpc.ExecutionErrorServiceServicer):
    """``wfe.persistence.v1.ExecutionErrorService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

    @translate_errors
    async def PersistErrors(
        self, request: execution_errors_pb2.PersistErrorsRequest, context: Context
    ) -> execution_errors_pb2.PersistErrorsResponse:
        await self._p.persist_errors([error_from_proto(e, f"errors[{i}]") for i, e in enumerate(request.errors)])
        return execution_errors_pb2.PersistErrorsResponse()


class StoreServicer(execution_errors_pb2_grpc.StoreServiceServicer):
    """``wfe.persistence.v1.StoreService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

    @translate_errors
    async def EnsureStoreExists(
        self, request: execution_errors_pb2.EnsureStoreExistsRequest, context: Context
    ) -> execution_errors_pb2.EnsureStoreExistsResponse:
        await self._p.ensure_store_exists()
        return execution_errors_pb2.EnsureStoreExistsResponse()


def add_servicers(server: grpc.aio.Server, provider: SqlitePersistenceProvider, stream_idle: float) -> None:
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
