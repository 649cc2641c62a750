"""``GrpcPersistenceProvider``: the persistence interface over gRPC (a wfe-sqlite server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    execution_errors_pb2,
    execution_errors_pb2_grpc,
    scheduled_commands_pb2,
    scheduled_commands_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    visibility_pb2,
    visibility_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)

from . import conversion as convert
from . import visibility
from ._opening import Opening
from ._provider import PersistenceProvider
from ._readiness import wait_until_ready
from ._targets import resolve_target
from .errors import (
    ERROR_DOMAIN,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    Unauthenticated,
    WfeError,
    error_for_reason,
)
from .limits import (
    BATCH_GET_IDS,
    CLAIM_BATCH,
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_LEASE,
    LIST_PAGE_SIZE,
    MAX_MESSAGE_BYTES,
    MAX_PAGE_SIZE,
    PURGE_DEADLINE_SECONDS,
    check_claim,
    check_sequence_count,
)
from .models import (
    CommandClaim,
    Event,
    EventSubscription,
    ExecutionError,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowPage,
    WorkflowSearchPage,
    WorkflowStatus,
)

__all__ = ["GrpcPersistenceProvider"]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

NOT_RUN_ATTEMPTS = 3
"""With several servers, most attempts of a call that stopping servers refused without running it."""
NOT_RUN_PAUSE = 0.01
"""Seconds between those attempts (for health checking to hear of the stop)."""

_BY_CODE: dict[grpc.StatusCode, type[WfeError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def _error_from_rpc(error: grpc.aio.AioRpcError) -> WfeError:
    """The WfeError for a failed call: by ErrorInfo reason, else by status code."""
    message = error.details() or error.code().name
    reason = ""
    metadata: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                    reason, metadata = info.reason, dict(info.metadata)
    cls = error_for_reason(reason) if reason else None
    if cls is None:
        cls = _BY_CODE.get(error.code(), WfeError)
        result = cls(message, **metadata)
        if cls is WfeError:
            # No reason from the server (it was not reached, the caller's deadline passed, a proxy
            # answered): the status code is all there is, so it is the reason too, as in the Rust
            # adapter; the base class's INTERNAL would read as a fault of the server.
            result.code = result.reason = error.code().name  # type: ignore[misc]
        return result
    return cls(message, **metadata)


def _text(value: object, field: str) -> str:
    """A string argument, checked before it is sent: protobuf would send None as "" (a different
    question) and raise its own TypeError for other types; the embedded provider's InvalidArgument."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string, got {type(value).__name__}", field=field)
    return value


def _expected_revision(instance: WorkflowInstance, force: bool) -> int:
    revision = instance.revision
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise InvalidArgument("workflow.revision: expected an integer >= 0", field="workflow.revision")
    return 0 if force else revision


KEEPALIVE_INTERVAL = 20.0
"""Seconds between HTTP/2 keepalive pings on each connection (with calls in flight or not)."""

KEEPALIVE_TIMEOUT = 10.0
"""Seconds a keepalive ping waits for its answer before the connection is taken for dead."""


def _keepalive_options(interval: float | None, timeout: float) -> list[tuple[str, str | int]]:
    """Channel options for keepalive pings every ``interval`` seconds (None: none), each given up
    after ``timeout``: a frozen or cut-off server (its TCP connection never reset) is then found
    within ``interval + timeout`` and every call on the connection ends with UNAVAILABLE, a watch
    or long-poll (which has no or a long deadline) too."""
    if interval is None:
        return []
    for name, value in (("keepalive_interval", interval), ("keepalive_timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
            raise InvalidArgument(f"{name}: expected seconds above 0 (and at most a day), got {value!r}", field=name)
    return [
        ("grpc.keepalive_time_ms", max(1, round(interval * 1000))),
        ("grpc.keepalive_timeout_ms", max(1, round(timeout * 1000))),
        # grpcio 1.85 ends the connection when any ping is unanswered after this (default 1 minute),
        # and not at keepalive_timeout_ms alone: measured, a frozen server went unnoticed for 40 s
        # with keepalive 1 s / 1 s without it, and was found in 2 s with it.
        ("grpc.http2.ping_timeout_ms", max(1, round(timeout * 1000))),
        # Also on a connection with no call: an idle connection to a frozen server would otherwise
        # stay READY, and the next call on it (or the lifecycle publisher's choice of the first
        # ready server) would wait out its whole deadline before anything noticed.
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC core sends at most 2 pings while it sends no data (by default): a watch with no
        # events would stop being checked after the second.
        ("grpc.http2.max_pings_without_data", 0),
    ]


LIFECYCLE_RECONNECT_MS = 1000
"""Longest pause between attempts to reconnect a lifecycle channel to one server of a list."""


def _each_server(target: str) -> list[str]:
    """``ipv4:A,B`` -> ``["ipv4:A", "ipv4:B"]`` (the same for ``ipv6:``); a ``dns:`` target as is."""
    scheme, colon, rest = target.partition(":")
    if not colon or scheme not in ("ipv4", "ipv6"):
        return [target]
    return [f"{scheme}:{one}" for one in rest.split(",")]


class GrpcPersistenceProvider(PersistenceProvider):
    """The persistence interface served by a wfe-sqlite server, over one gRPC channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = DEFAULT_DEADLINE_SECONDS,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._channel = channel
        self._open_pinned: Callable[[], list[grpc.aio.Channel]] | None = None
        self._pinned: list[grpc.aio.Channel] | None = None
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._closed = False
        self._workflows = workflows_pb2_grpc.WorkflowServiceStub(channel)
        self._events = events_pb2_grpc.EventServiceStub(channel)
        self._subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)
        self._commands = scheduled_commands_pb2_grpc.ScheduledCommandServiceStub(channel)
        self._errors = execution_errors_pb2_grpc.ExecutionErrorServiceStub(channel)
        self._store = execution_errors_pb2_grpc.StoreServiceStub(channel)
        self._visibility = visibility_pb2_grpc.VisibilityServiceStub(channel)

    @classmethod
    def connect(
        cls,
        address: str | Sequence[str],
        *,
        timeout: float = DEFAULT_DEADLINE_SECONDS,
        connect_timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        keepalive_interval: float | None = KEEPALIVE_INTERVAL,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> Opening[GrpcPersistenceProvider]:
        """Connect to ``address`` (HOST:PORT); waits until the server answers.

        Several servers: a list of HOST:PORT or one comma-separated string, or a DNS name that
        stands for several (``dns:///NAME:PORT``). Calls are then spread over them with gRPC
        round-robin; a server that dies is left out; a read-only call whose server died under it is
        tried again on another; a write that failed in flight is not (``WfeError``, code
        UNAVAILABLE: it may or may not have been applied). ``connect`` returns once one server
        answers. With TLS every server's certificate must hold the name of the first address.

        A server that is not there (yet) is waited for up to ``connect_timeout`` seconds, then
        ``ConnectionError: no wfe-sqlite server answered``. A server that answers but refuses the
        handshake (it serves TLS and the client does not, it requires a client certificate, the
        client does not trust its certificate) is a ``ConnectionError`` at once, saying so.
        An address without a port (``localhost``, ``dns:///localhost``) is ``InvalidArgument`` at once.

        ``timeout`` is the deadline of each call in seconds; ``credentials`` selects TLS;
        ``token`` is sent as ``authorization: Bearer <token>`` on every call. Or TLS from PEM
        files: ``tls_ca`` (the CA the server certificate must chain to; default: the system's),
        ``tls_cert`` and ``tls_key`` (a client certificate, for servers that require one).

        Each connection sends an HTTP/2 keepalive ping every ``keepalive_interval`` seconds (default
        20; None: no pings), whether calls are in flight or not, and takes the server for dead when
        one is not answered within ``keepalive_timeout`` (default 10): a frozen or cut-off server
        ends every call on that connection, an open lifecycle watch too, with ``WfeError`` code
        UNAVAILABLE within about 30 s, and the connection is made again when the server answers.
        The server must accept pings that often (its ``keepalive_min_interval``, default 10 s).
        """
        keepalive = _keepalive_options(keepalive_interval, keepalive_timeout)
        client_certificate: bool | None = None if credentials is not None else False
        if tls_ca is not None or tls_cert is not None or tls_key is not None:
            if credentials is not None:
                raise ValueError("give either credentials or tls_ca/tls_cert/tls_key, not both")
            if (tls_cert is None) != (tls_key is None):
                raise ValueError("tls_cert and tls_key go together")

            def pem(path: str | None) -> bytes | None:
                if path is None:
                    return None
                with open(path, "rb") as handle:
                    return handle.read()

            credentials = grpc.ssl_channel_credentials(
                root_certificates=pem(tls_ca), private_key=pem(tls_key), certificate_chain=pem(tls_cert)
            )
            client_certificate = tls_cert is not None

        async def opening() -> GrpcPersistenceProvider:
            target = await resolve_target(address)

            def open_channel(policy: str, to: str | None = None) -> grpc.aio.Channel:
                options: list[tuple[str, str | int]] = [
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    *target.options(policy),
                    *keepalive,
                ]
                if to is not None:
                    # One server of the list: a server that died is tried again every second
                    # (gRPC's default backoff grows to 2 minutes), so that the lifecycle
                    # publisher sees the first server ready soon after it answers again.
                    options.append(("grpc.initial_reconnect_backoff_ms", LIFECYCLE_RECONNECT_MS))
                    options.append(("grpc.max_reconnect_backoff_ms", LIFECYCLE_RECONNECT_MS))
                if credentials is None:
                    return grpc.aio.insecure_channel(to or target.target, options=options)
                return grpc.aio.secure_channel(to or target.target, credentials, options=options)

            channel = open_channel("round_robin")
            try:
                await wait_until_ready(
                    channel,
                    target.shown,
                    connect_timeout,
                    tls=credentials is not None,
                    client_certificate=client_certificate,
                )
            except BaseException:
                await channel.close()
                raise
            metadata = [("authorization", f"Bearer {token}")] if token else []
            provider = cls(channel, timeout=timeout, metadata=metadata)
            if target.balanced:
                provider._open_pinned = lambda: [open_channel("pick_first", one) for one in _each_server(target.target)]
            return provider

        return Opening(opening)

    def _pinned_channels(self) -> list[grpc.aio.Channel]:
        """The channels for lifecycle events, in the list's order: with several servers one per
        server (the lifecycle publisher uses the first that is ready, see ``_FirstUp`` in
        ``_grpc_cluster``), so that publishers and watchers given the same list meet on one server
        (a server relays events only to its own watchers); a ``dns:///`` name one pick_first
        channel (the resolver's order); one server: the channel."""
        if self._open_pinned is None:
            return [self._channel]
        if self._pinned is None:
            self._pinned = self._open_pinned()
        return self._pinned

    async def close(self) -> None:
        self._closed = True
        for pinned in self._pinned or ():
            await pinned.close()
        await self._channel.close()

    # -- the one place calls are made -----------------------------------------------------------

    async def _call(self, method: Callable[..., Any], request: Any, extra_seconds: float = 0.0) -> Any:
        """Make one unary call with the provider's deadline (plus ``extra_seconds``, for a call that
        waits on purpose: a long-poll dequeue), metadata and error mapping.

        With several servers, a call a stopping server refused without running it (ErrorInfo
        ``not_run``) is made again, a write too, up to ``NOT_RUN_ATTEMPTS`` times in all within its
        deadline: round-robin sends it to another server (health checking leaves the stopping one
        out as soon as it has heard of the stop)."""
        self._check_open()
        deadline = time.monotonic() + self._timeout + extra_seconds
        attempt = 1
        while True:
            try:
                return await method(request, timeout=deadline - time.monotonic(), metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                self._check_open()
                failure = _error_from_rpc(error)
            except (grpc.aio.UsageError, asyncio.CancelledError):
                self._check_open_after_cancel()
                raise
            if (
                self._open_pinned is None  # one server: the caller decides when to call again
                or attempt >= NOT_RUN_ATTEMPTS
                or failure.metadata.get("not_run") != "true"
                or deadline - time.monotonic() <= NOT_RUN_PAUSE
            ):
                raise failure from None
            attempt += 1
            await asyncio.sleep(NOT_RUN_PAUSE)

    async def _stream(self, method: Callable[..., Any], request: Any) -> list[Any]:
        self._check_open()
        try:
            call = method(request, timeout=self._timeout, metadata=self._metadata)
            return [response async for response in call]
        except grpc.aio.AioRpcError as error:
            self._check_open()
            raise _error_from_rpc(error) from None
        except (grpc.aio.UsageError, asyncio.CancelledError):
            self._check_open_after_cancel()
            raise

    def _check_open(self) -> None:
        """After ``close``: the embedded provider's StorageUnavailable, not gRPC's UsageError."""
        if self._closed:
            raise StorageUnavailable("the store is closed")

    def _check_open_after_cancel(self) -> None:
        """A call that ``close`` cancelled (closing the channel cancels its calls) ends with
        StorageUnavailable, not a CancelledError in a task nobody cancelled; a cancellation of the
        caller's own task stays one."""
        task = asyncio.current_task()
        if task is None or task.cancelling() == 0:
            self._check_open()

    async def _pages(self, method: Callable[..., Any], request: Any, items: str) -> list[Any]:
        collected: list[Any] = []
        request.page_size = MAX_PAGE_SIZE
        while True:
            response = await self._call(method, request)
            collected.extend(getattr(response, items))
            if not response.next_page_token:
                return collected
            request.page_token = response.next_page_token

    # -- workflows -----------------------------------------------------------------------------

    async def create_new_workflow(self, instance: WorkflowInstance) -> str:
        request = workflows_pb2.CreateWorkflowRequest(workflow=convert.workflow_to_proto(instance))
        response: workflows_pb2.CreateWorkflowResponse = await self._call(self._workflows.CreateWorkflow, request)
        instance.id, instance.name, instance.revision = response.id, response.name, response.revision
        return response.id

    async def persist_workflow(self, instance: WorkflowInstance, force: bool = False) -> None:
        request = workflows_pb2.PersistWorkflowRequest(
            workflow=convert.workflow_to_proto(instance), expected_revision=_expected_revision(instance, force)
        )
        response: workflows_pb2.PersistWorkflowResponse = await self._call(self._workflows.PersistWorkflow, request)
        instance.revision = response.revision

    async def persist_workflow_with_subscriptions(
        self, instance: WorkflowInstance, subscriptions: Sequence[EventSubscription], force: bool = False
    ) -> None:
        request = workflows_pb2.PersistWorkflowWithSubscriptionsRequest(
            workflow=convert.workflow_to_proto(instance),
            subscriptions=[
                convert.subscription_to_proto(s, f"subscriptions[{i}]") for i, s in enumerate(subscriptions)
            ],
            expected_revision=_expected_revision(instance, force),
        )
        response: workflows_pb2.PersistWorkflowWithSubscriptionsResponse = await self._call(
            self._workflows.PersistWorkflowWithSubscriptions, request
        )
        for subscription, sid in zip(subscriptions, response.subscription_ids, strict=True):
            subscription.id = sid
        instance.revision = response.revision

    async def get_runnable_instances(self, as_at: datetime) -> list[str]:
        request = workflows_pb2.GetRunnableWorkflowsRequest(as_at=convert.timestamp(as_at, "as_at"))
        return await self._pages(self._workflows.GetRunnableWorkflows, request, "workflow_ids")

    async def get_workflow_instance(self, id: str) -> WorkflowInstance:
        response: workflows_pb2.GetWorkflowResponse = await self._call(
            self._workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(id=_text(id, "id"))
        )
        return convert.workflow_from_proto(response.workflow)

    async def get_workflow_instance_by_name(self, name: str) -> WorkflowInstance:
        response: workflows_pb2.GetWorkflowByNameResponse = await self._call(
            self._workflows.GetWorkflowByName, workflows_pb2.GetWorkflowByNameRequest(name=_text(name, "name"))
        )
        return convert.workflow_from_proto(response.workflow)

    async def get_workflow_instances(self, ids: Sequence[str]) -> list[WorkflowInstance]:
        if isinstance(ids, str):
            raise InvalidArgument("ids: expected a list of ids, got a string", field="ids")
        unique = list(dict.fromkeys([_text(wid, f"ids[{n}]") for n, wid in enumerate(ids)]))
        chunks = [unique[i : i + BATCH_GET_IDS] for i in range(0, len(unique), BATCH_GET_IDS)]
        responses = await asyncio.gather(
            *(
                self._stream(self._workflows.BatchGetWorkflows, workflows_pb2.BatchGetWorkflowsRequest(ids=chunk))
                for chunk in chunks
            )
        )
        return [convert.workflow_from_proto(w) for chunk in responses for response in chunk for w in response.workflows]

    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        request = workflows_pb2.NextDefinitionSequenceRequest(
            definition_id=_text(definition_id, "definition_id"), count=check_sequence_count(count)
        )
        response: workflows_pb2.NextDefinitionSequenceResponse = await self._call(
            self._workflows.NextDefinitionSequence, request
        )
        return response.value

    # -- events --------------------------------------------------------------------------------

    async def create_event(self, event: Event) -> str:
        response: events_pb2.CreateEventResponse = await self._call(
            self._events.CreateEvent, events_pb2.CreateEventRequest(event=convert.event_to_proto(event))
        )
        event.id = response.id
        return response.id

    async def get_event(self, id: str) -> Event:
        response: events_pb2.GetEventResponse = await self._call(
            self._events.GetEvent, events_pb2.GetEventRequest(id=_text(id, "id"))
        )
        return convert.event_from_proto(response.event)

    async def get_runnable_events(self, as_at: datetime) -> list[str]:
        request = events_pb2.GetRunnableEventsRequest(as_at=convert.timestamp(as_at, "as_at"))
        return await self._pages(self._events.GetRunnableEvents, request, "event_ids")

    async def get_events(self, event_name: str, event_key: str, as_of: datetime) -> list[str]:
        request = events_pb2.GetEventsRequest(
            event_name=_text(event_name, "event_name"),
            event_key=_text(event_key, "event_key"),
            as_of=convert.timestamp(as_of, "as_of"),
        )
        return await self._pages(self._events.GetEvents, request, "event_ids")

    async def mark_event_processed(self, id: str) -> None:
        await self._call(self._events.MarkEventProcessed, events_pb2.MarkEventProcessedRequest(id=_text(id, "id")))

    async def mark_event_unprocessed(self, id: str) -> None:
        await self._call(self._events.MarkEventUnprocessed, events_pb2.MarkEventUnprocessedRequest(id=_text(id, "id")))

    # -- subscriptions -------------------------------------------------------------------------

    async def create_event_subscription(self, subscription: EventSubscription) -> str:
        request = subscriptions_pb2.CreateSubscriptionRequest(subscription=convert.subscription_to_proto(subscription))
        response: subscriptions_pb2.CreateSubscriptionResponse = await self._call(
            self._subscriptions.CreateSubscription, request
        )
        subscription.id = response.id
        return response.id

    async def get_subscription(self, id: str) -> EventSubscription:
        response: subscriptions_pb2.GetSubscriptionResponse = await self._call(
            self._subscriptions.GetSubscription, subscriptions_pb2.GetSubscriptionRequest(id=_text(id, "id"))
        )
        return convert.subscription_from_proto(response.subscription)

    async def get_subscriptions(self, event_name: str, event_key: str, as_of: datetime) -> list[EventSubscription]:
        request = subscriptions_pb2.GetSubscriptionsRequest(
            event_name=_text(event_name, "event_name"),
            event_key=_text(event_key, "event_key"),
            as_of=convert.timestamp(as_of, "as_of"),
        )
        messages = await self._pages(self._subscriptions.GetSubscriptions, request, "subscriptions")
        return [convert.subscription_from_proto(m) for m in messages]

    async def terminate_subscription(self, id: str) -> None:
        await self._call(
            self._subscriptions.TerminateSubscription,
            subscriptions_pb2.TerminateSubscriptionRequest(id=_text(id, "id")),
        )

    async def get_first_open_subscription(
        self, event_name: str, event_key: str, as_of: datetime
    ) -> EventSubscription | None:
        request = subscriptions_pb2.GetFirstOpenSubscriptionRequest(
            event_name=_text(event_name, "event_name"),
            event_key=_text(event_key, "event_key"),
            as_of=convert.timestamp(as_of, "as_of"),
        )
        response: subscriptions_pb2.GetFirstOpenSubscriptionResponse = await self._call(
            self._subscriptions.GetFirstOpenSubscription, request
        )
        if not response.HasField("subscription"):
            return None
        return convert.subscription_from_proto(response.subscription)

    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry: datetime) -> bool:
        request = subscriptions_pb2.SetSubscriptionTokenRequest(
            id=_text(id, "id"),
            token=_text(token, "token"),
            worker_id=_text(worker_id, "worker_id"),
            expiry=convert.timestamp(expiry, "expiry"),
        )
        response: subscriptions_pb2.SetSubscriptionTokenResponse = await self._call(
            self._subscriptions.SetSubscriptionToken, request
        )
        return response.acquired

    async def clear_subscription_token(self, id: str, token: str) -> None:
        await self._call(
            self._subscriptions.ClearSubscriptionToken,
            subscriptions_pb2.ClearSubscriptionTokenRequest(id=_text(id, "id"), token=_text(token, "token")),
        )

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, command: ScheduledCommand) -> None:
        await self._call(
            self._commands.ScheduleCommand,
            scheduled_commands_pb2.ScheduleCommandRequest(command=convert.command_to_proto(command)),
        )

    async def claim_commands(
        self,
        as_of: datetime,
        max_commands: int = CLAIM_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str = "",
    ) -> CommandClaim:
        check_claim(max_commands, lease)
        duration = duration_pb2.Duration()
        duration.FromTimedelta(lease)
        request = scheduled_commands_pb2.ClaimCommandsRequest(
            as_of=convert.timestamp(as_of, "as_of"),
            max_commands=max_commands,
            lease_duration=duration,
            worker_id=_text(worker_id, "worker_id"),
        )
        response: scheduled_commands_pb2.ClaimCommandsResponse = await self._call(self._commands.ClaimCommands, request)
        return CommandClaim(
            lease_id=response.lease_id,
            lease_expiry=convert.instant(response, "lease_expiry", "response"),
            commands=[convert.command_from_proto(c.command) for c in response.commands],
        )

    async def acknowledge_command(self, command: ScheduledCommand, lease_id: str) -> None:
        request = scheduled_commands_pb2.AcknowledgeCommandRequest(
            command_name=convert.command_name_to_proto(command.command_name),
            data=command.data,
            lease_id=_text(lease_id, "lease_id"),
        )
        await self._call(self._commands.AcknowledgeCommand, request)

    async def release_command(self, command: ScheduledCommand, lease_id: str) -> None:
        request = scheduled_commands_pb2.ReleaseCommandRequest(
            command_name=convert.command_name_to_proto(command.command_name),
            data=command.data,
            lease_id=_text(lease_id, "lease_id"),
        )
        await self._call(self._commands.ReleaseCommand, request)

    # -- errors and store ----------------------------------------------------------------------

    async def persist_errors(self, errors: Sequence[ExecutionError]) -> None:
        request = execution_errors_pb2.PersistErrorsRequest(
            errors=[convert.error_to_proto(e, f"errors[{i}]") for i, e in enumerate(errors)]
        )
        await self._call(self._errors.PersistErrors, request)

    async def ensure_store_exists(self) -> None:
        await self._call(self._store.EnsureStoreExists, execution_errors_pb2.EnsureStoreExistsRequest())

    # -- visibility and clean-up ---------------------------------------------------------------

    async def list_workflows(
        self,
        status: visibility.StatusFilter = None,
        definition_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = LIST_PAGE_SIZE,
        page_token: str | None = None,
    ) -> WorkflowPage:
        selected = visibility.workflow_filter(status, definition_id, reference, created_after, created_before)
        request = visibility_pb2.ListWorkflowsRequest(
            filter=convert.filter_to_proto(selected),
            page_size=visibility.page_size(page_size),
            page_token=visibility.page_token(page_token) or "",
        )
        response = await self._call(self._visibility.ListWorkflows, request)
        return WorkflowPage(
            [convert.summary_from_proto(m) for m in response.workflows], response.next_page_token or None
        )

    async def search_workflows(
        self,
        text: str,
        status: visibility.StatusFilter = None,
        skip: int = 0,
        take: int = LIST_PAGE_SIZE,
        *,
        definition_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> WorkflowSearchPage:
        selected = visibility.workflow_filter(status, definition_id, reference, created_after, created_before)
        skip, take = visibility.skip_take(skip, take)
        request = visibility_pb2.SearchWorkflowsRequest(
            query=visibility.query_text(text), filter=convert.filter_to_proto(selected), skip=skip, take=take
        )
        response = await self._call(self._visibility.SearchWorkflows, request)
        return WorkflowSearchPage([convert.summary_from_proto(m) for m in response.workflows], response.total)

    async def delete_workflow(self, id: str) -> None:
        if not isinstance(id, str):
            raise InvalidArgument(f"id: expected a string, got {type(id).__name__}", field="id")
        await self._call(self._visibility.DeleteWorkflow, visibility_pb2.DeleteWorkflowRequest(id=id))

    async def purge_workflows(
        self,
        older_than: datetime,
        statuses: Sequence[WorkflowStatus] = visibility.PURGED_BY_DEFAULT,
        *,
        dry_run: bool = False,
    ) -> int:
        if not isinstance(older_than, datetime):
            raise InvalidArgument("older_than: expected a timezone-aware datetime", field="older_than")
        cutoff = convert.timestamp(older_than, "older_than")
        if cutoff.seconds < 0:  # the embedded provider's words (the server's name the wire field and seconds)
            raise InvalidArgument(
                f"older_than: {older_than.isoformat()} is before 1970-01-01T00:00:00Z", field="older_than"
            )
        request = visibility_pb2.PurgeWorkflowsRequest(
            older_than=cutoff,
            statuses=[convert.WORKFLOW_STATUS.to_proto[s] for s in visibility.purge_statuses(statuses)],
            dry_run=visibility.dry_run(dry_run),
        )
        response = await self._call(
            self._visibility.PurgeWorkflows, request, extra_seconds=max(0.0, PURGE_DEADLINE_SECONDS - self._timeout)
        )
        deleted: int = response.deleted
        return deleted
