"""Pure conversions between models and messages round-trip every field exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from wfe_client import (
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    InvalidArgument,
    PointerStatus,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
)
from wfe_client import conversion as convert

T0 = datetime(2026, 11, 24, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))


def full_pointer(step: int) -> ExecutionPointer:
    return ExecutionPointer(
        id=f"p{step}",
        step_id=step,
        active=False,
        status=PointerStatus.WAITING_FOR_EVENT,
        sleep_until=T0 + timedelta(microseconds=1),
        persistence_data={"k": [1, 2.5, None, True]},
        start_time=T0,
        end_time=T0 + timedelta(seconds=3),
        event_name="order.paid",
        event_key="42",
        event_published=True,
        event_data={"big": 2**63 - 1, "neg": -(2**63)},
        step_name="pay",
        retry_count=4294967295,
        children=["c1", "c2"],
        context_item="ctx",
        predecessor_id="p0",
        outcome=0,
        scope=["s1", "s2"],
        extension_attributes={"a": {"nested": ["x"]}, "b": None},
    )


def test_workflow_round_trip_every_field() -> None:
    workflow = WorkflowInstance(
        id="w",
        workflow_definition_id="def",
        version=7,
        name="def-1",
        root_workflow_id="root",
        description="desc ✓",
        reference="ref",
        execution_pointers=[full_pointer(0), full_pointer(1), ExecutionPointer.new(2)],
        next_execution=2**62,
        status=WorkflowStatus.SUSPENDED,
        data={"unicode": "日本語 e\u0301 🎉", "n": 2**64 - 1, "f": 0.1},
        create_time=T0,
        complete_time=T0 + timedelta(days=1),
    )
    back = convert.workflow_from_proto(convert.workflow_to_proto(workflow))
    assert back == workflow
    assert back.create_time.tzinfo == UTC and back.create_time == T0


def test_other_models_round_trip() -> None:
    event = Event(id="e", event_name="n", event_key="k", event_data=[{"x": None}], event_time=T0, is_processed=True)
    assert convert.event_from_proto(convert.event_to_proto(event)) == event
    subscription = EventSubscription(
        id="s",
        workflow_id="w",
        step_id=3,
        execution_pointer_id="p",
        event_name="n",
        event_key="k",
        subscribe_as_of=T0,
        subscription_data={"a": 1},
        external_token="t",
        external_worker_id="worker",
        external_token_expiry=T0 + timedelta(minutes=5),
    )
    assert convert.subscription_from_proto(convert.subscription_to_proto(subscription)) == subscription
    bare = EventSubscription.new("w", 0, "p", "n", "k", T0)
    assert convert.subscription_from_proto(convert.subscription_to_proto(bare)) == bare
    for command in (ScheduledCommand.process_workflow("w", 5), ScheduledCommand.process_event("e", 0)):
        assert convert.command_from_proto(convert.command_to_proto(command)) == command
    assert ScheduledCommand.process_event("e", 0).command_name is CommandName.PROCESS_EVENT
    error = ExecutionError(T0, "w", "p", "boom")
    assert convert.error_from_proto(convert.error_to_proto(error), "error") == error


def test_naive_datetimes_and_bad_values_are_refused() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="naive"):
        convert.event_to_proto(Event(id="e", event_name="n", event_key="k", event_time=naive))
    with pytest.raises(InvalidArgument, match=r"workflow\.data"):
        convert.workflow_to_proto(WorkflowInstance.new("d", 1, {"x": float("nan")}))
    with pytest.raises(InvalidArgument, match="status"):
        workflow = WorkflowInstance.new("d", 1, None)
        workflow.status = "RUNNING"  # type: ignore[assignment]
        convert.workflow_to_proto(workflow)
    with pytest.raises(InvalidArgument, match="event_data"):
        convert.parse_json("{'single': 'quotes'}", "event.event_data")
