"""The wire contract through the raw generated stubs: validation, error details, paging, size limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
from wfe_client import Event, GrpcPersistenceProvider, WorkflowInstance
from wfe_sqlite.server import MAX_MESSAGE_BYTES, RunningServer

NOW = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_000)


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.workflows = workflows_pb2_grpc.WorkflowServiceStub(channel)
        self.events = events_pb2_grpc.EventServiceStub(channel)
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)
        self.commands = scheduled_commands_pb2_grpc.ScheduledCommandServiceStub(channel)
        self.errors = execution_errors_pb2_grpc.ExecutionErrorServiceStub(channel)
        self.store = execution_errors_pb2_grpc.StoreServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


@pytest.fixture
async def stubs(running_server: RunningServer) -> AsyncIterator[Stubs]:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(running_server.address, options=options) as channel:
        yield Stubs(channel)


def _workflow(**overrides: object) -> workflows_pb2.WorkflowInstance:
    fields: dict[str, object] = dict(  # noqa: C408 - keyword style, like the overrides
        workflow_definition_id="def",
        version=1,
        status=workflows_pb2.WORKFLOW_STATUS_RUNNABLE,
        data="{}",
        create_time=NOW,
    )
    fields.update(overrides)
    return workflows_pb2.WorkflowInstance(**fields)


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo in {error!r}")


async def _fails(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return caught.value


MALFORMED = [
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(data="{not json"))),
        "workflow.data",
        id="invalid-json",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(data=""))),
        "workflow.data",
        id="empty-json",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(data="NaN"))),
        "workflow.data",
        id="nan-json",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest()),
        "workflow",
        id="missing-workflow",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=_workflow(workflow_definition_id=""))
        ),
        "workflow_definition_id",
        id="missing-definition",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(status=99))),
        "workflow.status",
        id="unknown-status",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(status=0))),
        "workflow.status",
        id="unspecified-status",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(
                workflow=_workflow(execution_pointers=[workflows_pb2.ExecutionPointer(id="p", status=42)])
            )
        ),
        "execution_pointers[0].status",
        id="unknown-pointer-status",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=_workflow(create_time=timestamp_pb2.Timestamp(seconds=-5)))
        ),
        "workflow.create_time",
        id="negative-time",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(
                workflow=_workflow(create_time=timestamp_pb2.Timestamp(seconds=1, nanos=-1))
            )
        ),
        "workflow.create_time",
        id="negative-nanos",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=_workflow(next_execution=-1))
        ),
        "next_execution",
        id="negative-next-execution",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(create_time=None))),
        "create_time",
        id="missing-create-time",
    ),
    pytest.param(
        lambda s: s.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(
                workflow=_workflow(
                    execution_pointers=[
                        workflows_pb2.ExecutionPointer(
                            id="p", status=1, extension_attributes={"k" * 70_000: "not json"}
                        )
                    ]
                )
            )
        ),
        "extension_attributes",
        id="huge-key-in-error-message",  # the message quoting it must still fit the headers
    ),
    pytest.param(lambda s: s.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest()), "id", id="missing-id"),
    pytest.param(
        lambda s: s.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(id="x" * 5000)), "id", id="huge-id"
    ),
    pytest.param(
        lambda s: s.workflows.GetRunnableWorkflows(workflows_pb2.GetRunnableWorkflowsRequest()),
        "as_at",
        id="missing-as-at",
    ),
    pytest.param(
        lambda s: s.workflows.GetRunnableWorkflows(
            workflows_pb2.GetRunnableWorkflowsRequest(as_at=NOW, page_token="%%%not-a-token")
        ),
        "page_token",
        id="bad-page-token",
    ),
    pytest.param(
        lambda s: s.workflows.GetRunnableWorkflows(workflows_pb2.GetRunnableWorkflowsRequest(as_at=NOW, page_size=-1)),
        "page_size",
        id="negative-page-size",
    ),
    pytest.param(
        lambda s: s.events.CreateEvent(
            events_pb2.CreateEventRequest(event=events_pb2.Event(event_name="e", event_key="k", event_data="[1,"))
        ),
        "event.event_data",
        id="event-invalid-json",
    ),
    pytest.param(
        lambda s: s.events.CreateEvent(
            events_pb2.CreateEventRequest(event=events_pb2.Event(event_name="e", event_key="k", event_data="1"))
        ),
        "event_time",
        id="event-missing-time",
    ),
    pytest.param(
        lambda s: s.subscriptions.SetSubscriptionToken(
            subscriptions_pb2.SetSubscriptionTokenRequest(id="s", token="", expiry=NOW)
        ),
        "token",
        id="missing-token",
    ),
    pytest.param(
        lambda s: s.commands.ScheduleCommand(
            scheduled_commands_pb2.ScheduleCommandRequest(
                command=scheduled_commands_pb2.ScheduledCommand(command_name=7, data="w", execute_time=1)
            )
        ),
        "command_name",
        id="unknown-command-name",
    ),
    pytest.param(
        lambda s: s.commands.ScheduleCommand(
            scheduled_commands_pb2.ScheduleCommandRequest(
                command=scheduled_commands_pb2.ScheduledCommand(
                    command_name=scheduled_commands_pb2.COMMAND_NAME_PROCESS_WORKFLOW, data="w", execute_time=-3
                )
            )
        ),
        "execute_time",
        id="negative-execute-time",
    ),
    pytest.param(
        lambda s: s.commands.AcknowledgeCommand(
            scheduled_commands_pb2.AcknowledgeCommandRequest(
                command_name=scheduled_commands_pb2.COMMAND_NAME_PROCESS_WORKFLOW, data="w"
            )
        ),
        "lease_id",
        id="missing-lease",
    ),
    pytest.param(
        lambda s: s.errors.PersistErrors(
            execution_errors_pb2.PersistErrorsRequest(errors=[execution_errors_pb2.ExecutionError(message="m")])
        ),
        "error_time",
        id="error-missing-time",
    ),
]


@pytest.mark.parametrize("call, field", MALFORMED)
async def test_malformed_requests_are_invalid_argument_and_the_server_keeps_serving(
    stubs: Stubs, call: object, field: str
) -> None:
    error = await _fails(call(stubs), grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[operator]
    assert field in (error.details() or ""), error.details()
    info = _error_info(error)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "wfe-sqlite")
    # Nothing leaks: no SQL, no traceback.
    assert "Traceback" not in error.details() and "SELECT" not in error.details()
    # Still serving, with nothing half-written.
    health = await stubs.health.Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    created = await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow()))
    got = await stubs.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(id=created.id))
    assert got.workflow.name == "def-1"  # the rejected create consumed no sequence number and stored nothing


async def test_not_found_and_already_exists_carry_reasons(stubs: Stubs) -> None:
    cases = [
        (
            stubs.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "WORKFLOW_NOT_FOUND",
        ),
        (
            stubs.workflows.GetWorkflowByName(workflows_pb2.GetWorkflowByNameRequest(name="nope")),
            grpc.StatusCode.NOT_FOUND,
            "WORKFLOW_NOT_FOUND",
        ),
        (
            stubs.workflows.PersistWorkflow(workflows_pb2.PersistWorkflowRequest(workflow=_workflow(id="nope"))),
            grpc.StatusCode.NOT_FOUND,
            "WORKFLOW_NOT_FOUND",
        ),
        (stubs.events.GetEvent(events_pb2.GetEventRequest(id="nope")), grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND"),
        (
            stubs.events.MarkEventProcessed(events_pb2.MarkEventProcessedRequest(id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "EVENT_NOT_FOUND",
        ),
        (
            stubs.subscriptions.GetSubscription(subscriptions_pb2.GetSubscriptionRequest(id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "SUBSCRIPTION_NOT_FOUND",
        ),
        (
            stubs.subscriptions.ClearSubscriptionToken(
                subscriptions_pb2.ClearSubscriptionTokenRequest(id="nope", token="t")
            ),
            grpc.StatusCode.NOT_FOUND,
            "SUBSCRIPTION_NOT_FOUND",
        ),
        (
            stubs.commands.ReleaseCommand(
                scheduled_commands_pb2.ReleaseCommandRequest(
                    command_name=scheduled_commands_pb2.COMMAND_NAME_PROCESS_EVENT, data="e", lease_id="l"
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "LEASE_LOST",
        ),
    ]
    for call, code, reason in cases:
        error = await _fails(call, code)
        assert _error_info(error).reason == reason

    await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="w1", name="n1")))
    error = await _fails(
        stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="w1", name="other"))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert _error_info(error).reason == "WORKFLOW_ALREADY_EXISTS"
    error = await _fails(
        stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id="w2", name="n1"))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert _error_info(error).reason == "WORKFLOW_NAME_TAKEN"


async def test_lists_page_and_tokens_chain(stubs: Stubs) -> None:
    base = 1_700_000_000

    def create(i: int) -> object:
        event = events_pb2.Event(
            id=f"e{i:05d}",
            event_name="n",
            event_key="k",
            event_data="null",
            event_time=timestamp_pb2.Timestamp(seconds=base + i),
        )
        return stubs.events.CreateEvent(events_pb2.CreateEventRequest(event=event))

    for start in range(0, 2500, 250):
        await asyncio.gather(*(create(i) for i in range(start, start + 250)))  # type: ignore[arg-type]
    as_at = timestamp_pb2.Timestamp(seconds=base + 10_000)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stubs.events.GetRunnableEvents(
            events_pb2.GetRunnableEventsRequest(as_at=as_at, page_size=1000, page_token=token)
        )
        pages += 1
        assert len(page.event_ids) <= 1000
        seen.extend(page.event_ids)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [f"e{i:05d}" for i in range(2500)]

    # The default page size is 1000, and a filter keeps paging by key.
    first = await stubs.events.GetEvents(events_pb2.GetEventsRequest(event_name="n", event_key="k", as_of=as_at))
    assert len(first.event_ids) == 1000 and first.next_page_token


async def test_batch_get_streams_chunks_under_the_message_limit(stubs: Stubs) -> None:
    blob = json.dumps("x" * (1024 * 1024))
    ids = []
    for i in range(6):
        created = await stubs.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=_workflow(id=f"big{i}", data=blob))
        )
        ids.append(created.id)
    chunks = [
        c
        async for c in stubs.workflows.BatchGetWorkflows(workflows_pb2.BatchGetWorkflowsRequest(ids=[*ids, "missing"]))
    ]
    assert len(chunks) >= 2  # 6 MiB does not come as one message
    assert [w.id for c in chunks for w in c.workflows] == ids
    assert all(c.ByteSize() <= 5 * 1024 * 1024 for c in chunks)
    await _fails(
        stubs.workflows.BatchGetWorkflows(workflows_pb2.BatchGetWorkflowsRequest(ids=["a"] * 10_001)).read(),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_a_16_mib_payload_round_trips_through_the_adapter(running_server: RunningServer) -> None:
    payload = {"blob": "é" * (8 * 1024 * 1024)}  # 16 MiB of UTF-8
    async with GrpcPersistenceProvider.connect(running_server.address) as store:
        workflow = WorkflowInstance.new("big", 1, payload)
        await store.create_new_workflow(workflow)
        assert (await store.get_workflow_instance(workflow.id)).data == payload
        event = Event.new("big", "k", payload)
        await store.create_event(event)
        assert (await store.get_event(event.id)).event_data == payload


async def test_health_reports_every_service(stubs: Stubs) -> None:
    for service in (
        "",
        "wfe.persistence.v1.WorkflowService",
        "wfe.persistence.v1.EventService",
        "wfe.persistence.v1.SubscriptionService",
        "wfe.persistence.v1.ScheduledCommandService",
        "wfe.persistence.v1.ExecutionErrorService",
        "wfe.persistence.v1.StoreService",
    ):
        response = await stubs.health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_a_sequence_block_on_the_wire(stubs: Stubs) -> None:
    """``count`` unset is one number; a block returns its first; above the limit is refused by the
    server itself (the adapters check it too), naming ``count``, with nothing reserved."""
    ask = workflows_pb2.NextDefinitionSequenceRequest
    assert (await stubs.workflows.NextDefinitionSequence(ask(definition_id="wire"))).value == 1
    assert (await stubs.workflows.NextDefinitionSequence(ask(definition_id="wire", count=0))).value == 2
    assert (await stubs.workflows.NextDefinitionSequence(ask(definition_id="wire", count=100))).value == 3
    refused = await _fails(
        stubs.workflows.NextDefinitionSequence(ask(definition_id="wire", count=10_001)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert _error_info(refused).metadata["field"] == "count"
    await _fails(
        stubs.workflows.NextDefinitionSequence(ask(definition_id="wire", count=2**32 - 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert (await stubs.workflows.NextDefinitionSequence(ask(definition_id="wire"))).value == 103


async def test_claim_lease_bounds(stubs: Stubs) -> None:
    from google.protobuf import duration_pb2

    await _fails(
        stubs.commands.ClaimCommands(
            scheduled_commands_pb2.ClaimCommandsRequest(as_of=NOW, lease_duration=duration_pb2.Duration(seconds=7200))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # Not a Duration (nanos past a second): INVALID_ARGUMENT, not a 2 s lease.
    await _fails(
        stubs.commands.ClaimCommands(
            scheduled_commands_pb2.ClaimCommandsRequest(
                as_of=NOW, lease_duration=duration_pb2.Duration(seconds=0, nanos=2_000_000_000)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # A nanosecond past the hour: INVALID_ARGUMENT (it was rounded down to the microsecond, an hour,
    # and taken); the hour itself is a lease.
    past = await _fails(
        stubs.commands.ClaimCommands(
            scheduled_commands_pb2.ClaimCommandsRequest(
                as_of=NOW, lease_duration=duration_pb2.Duration(seconds=3600, nanos=1)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert past.details() == "lease_duration: must be between 1 ms and 1 hour"
    hour = await stubs.commands.ClaimCommands(
        scheduled_commands_pb2.ClaimCommandsRequest(as_of=NOW, lease_duration=duration_pb2.Duration(seconds=3600))
    )
    assert not hour.commands
    claim = await stubs.commands.ClaimCommands(scheduled_commands_pb2.ClaimCommandsRequest(as_of=NOW))
    assert not claim.commands and claim.lease_id == ""
    now = datetime.now(UTC)
    expiry = claim.lease_expiry.ToDatetime(tzinfo=UTC)
    assert now + timedelta(seconds=25) < expiry < now + timedelta(seconds=35)  # the 30 s default lease


async def test_a_burst_of_concurrent_calls_is_served_not_cancelled(stubs: Stubs) -> None:
    """gRPC core cancels calls beyond 1000-3000 waiting ones unless the server raises that limit."""
    created = await stubs.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=_workflow()))

    async def get() -> str:
        try:
            await stubs.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(id=created.id), timeout=120)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error.code().name

    outcomes = await asyncio.gather(*(get() for _ in range(4000)))
    assert {code: outcomes.count(code) for code in set(outcomes)} == {"OK": 4000}
