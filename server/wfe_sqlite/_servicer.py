"""The gRPC servicers: validate the request, call one provider method, convert the answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, Optional, TypeVar

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
from wfe_client import InvalidArgument, ScheduledCommand
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
from ._status import translate_errors, translate_stream_errors
from ._wire import workflow_message, workflow_rows_from_message

__all__ = ["add_servicers", "SERVICE_NAMES"]

Context = grpc.aio.ServicerContext
T = TypeVar("T")

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


def _encode_token(key: PageKey) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_token(token: str) -> Optional[PageKey]:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        number, _, last = raw.partition(":")
        return int(number), last
    except (ValueError, UnicodeError):
        raise InvalidArgument("page_token: not a token from a previous response", field="page_token") from None


def _page(
    items: list[T], limit: int, key: Callable[[T], PageKey], size: Callable[[T], int]
) -> tuple[list[T], str]:
    """Cut ``items`` (fetched with ``limit + 1``) to the page size and byte budget; the next token."""
    page: list[T] = []
    used = 0
    for item in items[:limit]:
        used += size(item)
        if page and used > PAGE_BYTES:
            break
        page.append(item)
    more = len(page) < len(items)
    return page, _encode_token(key(page[-1])) if more and page else ""


def _id_page(rows: list[PageKey], limit: int) -> tuple[list[str], str]:
    page, token = _page(rows, limit, key=lambda r: r, size=lambda r: len(r[1]) + 8)
    return [r[1] for r in page], token


class WorkflowServicer(workflows_pb2_grpc.WorkflowServiceServicer):
    """``wfe.persistence.v1.WorkflowService`` over the provider."""

    def __init__(self, provider: SqlitePersistenceProvider) -> None:
        self._p = provider

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
        limit = _page_size(request.page_size)
        rows = await self._p.runnable_instances_page(
            instant(request, "as_at", "request"), limit + 1, _decode_token(request.page_token)
        )
        ids, token = _id_page(rows, limit)
        return workflows_pb2.GetRunnableWorkflowsResponse(workflow_ids=ids, next_page_token=token)

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

    @translate_stream_errors
    async def BatchGetWorkflows(
        self, request: workflows_pb2.BatchGetWorkflowsRequest, context: Context
    ) -> AsyncIterator[workflows_pb2.BatchGetWorkflowsResponse]:
        if len(request.ids) > MAX_BATCH_IDS:
            raise InvalidArgument(f"ids: at most {MAX_BATCH_IDS} per request, got {len(request.ids)}", field="ids")
        for i, wid in enumerate(request.ids):
            _required(wid, f"ids[{i}]")
        workflows = await self._p.workflows_rows(list(request.ids))
        chunk: list[workflows_pb2.WorkflowInstance] = []
        used = 0
        for row, pointers in workflows:
            msg = workflow_message(row, pointers)
            size = msg.ByteSize()
            if chunk and used + size > PAGE_BYTES:
                yield workflows_pb2.BatchGetWorkflowsResponse(workflows=chunk)
                chunk, used = [], 0
            chunk.append(msg)
            used += size
        if chunk:
            yield workflows_pb2.BatchGetWorkflowsResponse(workflows=chunk)

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
        limit = _page_size(request.page_size)
        rows = await self._p.runnable_events_page(
            instant(request, "as_at", "request"), limit + 1, _decode_token(request.page_token)
        )
        ids, token = _id_page(rows, limit)
        return events_pb2.GetRunnableEventsResponse(event_ids=ids, next_page_token=token)

    @translate_errors
    async def GetEvents(self, request: events_pb2.GetEventsRequest, context: Context) -> events_pb2.GetEventsResponse:
        limit = _page_size(request.page_size)
        rows = await self._p.events_page(
            request.event_name,
            request.event_key,
            instant(request, "as_of", "request"),
            limit + 1,
            _decode_token(request.page_token),
        )
        ids, token = _id_page(rows, limit)
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
        limit = _page_size(request.page_size)
        subscriptions = await self._p.subscriptions_page(
            request.event_name,
            request.event_key,
            instant(request, "as_of", "request"),
            limit + 1,
            _decode_token(request.page_token),
        )
        pairs = [(s, subscription_to_proto(s)) for s in subscriptions]
        page, token = _page(
            pairs,
            limit,
            key=lambda pair: (to_micros(pair[0].subscribe_as_of), pair[0].id),
            size=lambda pair: pair[1].ByteSize(),
        )
        return subscriptions_pb2.GetSubscriptionsResponse(
            subscriptions=[message for _, message in page], next_page_token=token
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


def add_servicers(server: grpc.aio.Server, provider: SqlitePersistenceProvider) -> None:
    """Register every ``wfe.persistence.v1`` service of ``provider`` on ``server``."""
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(WorkflowServicer(provider), server)
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(provider), server)
    subscriptions_pb2_grpc.add_SubscriptionServiceServicer_to_server(SubscriptionServicer(provider), server)
    scheduled_commands_pb2_grpc.add_ScheduledCommandServiceServicer_to_server(
        ScheduledCommandServicer(provider), server
    )
    execution_errors_pb2_grpc.add_ExecutionErrorServiceServicer_to_server(ExecutionErrorServicer(provider), server)
    execution_errors_pb2_grpc.add_StoreServiceServicer_to_server(StoreServicer(provider), server)
