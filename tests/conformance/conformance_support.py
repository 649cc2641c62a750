"""Builders and constants shared by the conformance tests (no fixtures here: see conftest)."""

from __future__ import annotations

import pathlib
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from wfe_client import (
    Event,
    EventSubscription,
    ExecutionPointer,
    PointerStatus,
    WorkflowInstance,
    WorkflowStatus,
)

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC)
"""A fixed instant in the past, on a millisecond boundary."""
US = timedelta(microseconds=1)


def ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime (floor)."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def at_ms(value: int) -> datetime:
    """The UTC instant ``value`` epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=value)


def now() -> datetime:
    return datetime.now(UTC)


def is_uuid4(value: str) -> bool:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError):
        return False
    return parsed.version == 4 and str(parsed) == value.lower()


def workflow(
    definition: str = "order",
    *,
    name: str = "",
    id: str | None = None,
    next_execution: int | None = 0,
    status: WorkflowStatus = WorkflowStatus.RUNNABLE,
    data: Any = None,
    pointers: list[ExecutionPointer] | None = None,
) -> WorkflowInstance:
    w = WorkflowInstance.new(definition, 1, data if data is not None else {"n": 1})
    if id is not None:
        w.id = id
    w.name = name
    w.next_execution = next_execution
    w.status = status
    w.execution_pointers = pointers if pointers is not None else [ExecutionPointer.new(0)]
    return w


def full_pointer(step_id: int, status: PointerStatus = PointerStatus.WAITING_FOR_EVENT) -> ExecutionPointer:
    """A pointer with every field set to a non-default value."""
    return ExecutionPointer(
        id=f"ptr-{step_id}-{uuid.uuid4()}",
        step_id=step_id,
        active=False,
        status=status,
        sleep_until=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        persistence_data={"counter": 3, "items": [1, "two", None, True, 2.5]},
        start_time=datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        end_time=datetime(2024, 1, 1, 0, 0, 1, 999999, tzinfo=UTC),
        event_name="payment-received",
        event_key="order-42",
        event_published=True,
        event_data={"amount": 12.5, "currency": "EUR"},
        step_name=f"step {step_id}",
        retry_count=7,
        children=["child-a", "child-b", "child-c"],
        context_item={"sku": "X-1", "qty": 2},
        predecessor_id="ptr-prev",
        outcome="approved",
        scope=["scope-outer", "scope-inner"],
        extension_attributes={"retry_policy": {"max": 5, "backoff": [1, 2, 4]}, "flag": True, "none": None},
    )


def full_workflow(definition: str = "full") -> WorkflowInstance:
    """A workflow with every optional field set (and a pointer in every status)."""
    return WorkflowInstance(
        id=str(uuid.uuid4()),
        workflow_definition_id=definition,
        version=4_294_967_295,
        name=f"{definition}-explicit-name",
        root_workflow_id=str(uuid.uuid4()),
        description="a workflow with every field set",
        reference="ref-123",
        execution_pointers=[full_pointer(i, status) for i, status in enumerate(PointerStatus)],
        next_execution=1_710_072_000_123,
        status=WorkflowStatus.SUSPENDED,
        data={"customer": {"id": 9, "tags": ["a", "b"]}, "total": 99.95, "paid": False, "note": None},
        create_time=datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=UTC),
        complete_time=datetime(2024, 3, 11, 8, 30, 0, 654321, tzinfo=UTC),
    )


def event(name: str = "evt", key: str = "k", time: datetime | None = None, data: Any = None, id: str = "") -> Event:
    e = Event.new(name, key, data if data is not None else {"v": 1})
    if id is not None:
        e.id = id or e.id
    if time is not None:
        e.event_time = time
    return e


def subscription(
    name: str = "evt",
    key: str = "k",
    as_of: datetime = T0,
    workflow_id: str = "wf-1",
    step_id: int = 1,
    pointer_id: str = "ptr-1",
) -> EventSubscription:
    return EventSubscription.new(workflow_id, step_id, pointer_id, name, key, as_of)


def read_only(db_path: pathlib.Path) -> sqlite3.Connection:
    """A read-only connection to the store's SQLite file (to look behind the interface)."""
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
