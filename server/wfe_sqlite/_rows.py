"""Conversions between models and database rows, with the validation every write needs."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional, TypeVar

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
from wfe_client._json import json_text as dump_json
from wfe_client._time import from_micros, to_micros

__all__ = [
    "MAX_ID_BYTES",
    "dump_json",
    "micros",
    "optional_micros",
    "workflow_row",
    "pointer_rows",
    "event_row",
    "subscription_row",
    "command_row",
    "error_row",
    "workflow_from_row",
    "pointer_from_row",
    "event_from_row",
    "subscription_from_row",
    "check_id",
]

MAX_ID_BYTES = 1024
"""Longest id, name, key or token accepted, in UTF-8 bytes."""

_UINT32 = 2**32 - 1
_INT64_MAX = 2**63 - 1

E = TypeVar("E", bound=enum.Enum)


def _optional_json(value: Any, field: str) -> Optional[str]:
    return None if value is None else dump_json(value, field)


def micros(value: datetime, field: str) -> int:
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    try:
        result = to_micros(value, field)
    except ValueError as error:
        raise InvalidArgument(str(error), field=field) from None
    if result < 0:
        raise InvalidArgument(f"{field}: {value.isoformat()} is before 1970-01-01T00:00:00Z", field=field)
    return result


def optional_micros(value: Optional[datetime], field: str) -> Optional[int]:
    return None if value is None else micros(value, field)


def _dt(value: Optional[int]) -> Optional[datetime]:
    return None if value is None else from_micros(value)


def check_id(value: Any, field: str, *, required: bool = True) -> str:
    """A string of at most ``MAX_ID_BYTES`` bytes (non-empty when required)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string, got {type(value).__name__}", field=field)
    if required and not value:
        raise InvalidArgument(f"{field}: must not be empty", field=field)
    if len(value) > MAX_ID_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"{field}: longer than {MAX_ID_BYTES} bytes", field=field)
    _check_text(value, field)
    return value


def _check_text(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}: not valid Unicode text (lone surrogate)", field=field) from None
    return value


def _optional_text(value: Any, field: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string or None", field=field)
    return _check_text(value, field)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string, got {type(value).__name__}", field=field)
    return _check_text(value, field)


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}: expected an integer, got {type(value).__name__}", field=field)
    if not low <= value <= high:
        raise InvalidArgument(f"{field}: {value} is out of range [{low}, {high}]", field=field)
    return value


def _enum(value: Any, kind: type[E], field: str) -> str:
    if isinstance(value, kind):
        return value.name
    if isinstance(value, str) and value in kind.__members__:
        return value
    raise InvalidArgument(f"{field}: expected a {kind.__name__}, got {value!r}", field=field)


def _strings(values: Any, field: str) -> str:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"{field}: expected a list of strings", field=field)
    for value in values:
        _check_text(value, field)
    return dump_json(list(values), field)


def workflow_row(w: WorkflowInstance) -> tuple[Any, ...]:
    """(id, name, root_workflow_id, workflow_definition_id, version, description, reference,
    next_execution, status, data, create_time, complete_time)"""
    if not isinstance(w, WorkflowInstance):
        raise InvalidArgument("expected a WorkflowInstance")
    next_execution = w.next_execution
    if next_execution is not None:
        _int(next_execution, "workflow.next_execution", 0, _INT64_MAX)
    return (
        check_id(w.id, "workflow.id", required=False),
        check_id(w.name, "workflow.name", required=False),
        None if w.root_workflow_id is None else check_id(w.root_workflow_id, "workflow.root_workflow_id", required=False),
        check_id(w.workflow_definition_id, "workflow.workflow_definition_id"),
        _int(w.version, "workflow.version", 0, _UINT32),
        _optional_text(w.description, "workflow.description"),
        _optional_text(w.reference, "workflow.reference"),
        next_execution,
        _enum(w.status, WorkflowStatus, "workflow.status"),
        dump_json(w.data, "workflow.data"),
        micros(w.create_time, "workflow.create_time"),
        optional_micros(w.complete_time, "workflow.complete_time"),
    )


def pointer_rows(workflow_id: str, pointers: Sequence[ExecutionPointer]) -> list[tuple[Any, ...]]:
    """One row per pointer, in order: (workflow_id, position, id, ... extension_attributes)."""
    if not isinstance(pointers, (list, tuple)):
        raise InvalidArgument("workflow.execution_pointers: expected a list", field="workflow.execution_pointers")
    rows = []
    for position, p in enumerate(pointers):
        f = f"workflow.execution_pointers[{position}]"
        if not isinstance(p, ExecutionPointer):
            raise InvalidArgument(f"{f}: expected an ExecutionPointer", field=f)
        attrs = p.extension_attributes
        if not isinstance(attrs, dict) or not all(isinstance(k, str) for k in attrs):
            raise InvalidArgument(f"{f}.extension_attributes: expected a dict with string keys", field=f)
        rows.append(
            (
                workflow_id,
                position,
                check_id(p.id, f + ".id"),
                _int(p.step_id, f + ".step_id", 0, _UINT32),
                1 if p.active else 0,
                _enum(p.status, PointerStatus, f + ".status"),
                optional_micros(p.sleep_until, f + ".sleep_until"),
                _optional_json(p.persistence_data, f + ".persistence_data"),
                optional_micros(p.start_time, f + ".start_time"),
                optional_micros(p.end_time, f + ".end_time"),
                _optional_text(p.event_name, f + ".event_name"),
                _optional_text(p.event_key, f + ".event_key"),
                1 if p.event_published else 0,
                _optional_json(p.event_data, f + ".event_data"),
                _optional_text(p.step_name, f + ".step_name"),
                _int(p.retry_count, f + ".retry_count", 0, _UINT32),
                _strings(p.children, f + ".children"),
                _optional_json(p.context_item, f + ".context_item"),
                _optional_text(p.predecessor_id, f + ".predecessor_id"),
                _optional_json(p.outcome, f + ".outcome"),
                _strings(p.scope, f + ".scope"),
                dump_json(attrs, f + ".extension_attributes"),
            )
        )
    return rows


def event_row(e: Event) -> tuple[Any, ...]:
    """(id, event_name, event_key, event_data, event_time, is_processed)"""
    if not isinstance(e, Event):
        raise InvalidArgument("expected an Event")
    return (
        check_id(e.id, "event.id", required=False),
        _text(e.event_name, "event.event_name"),
        _text(e.event_key, "event.event_key"),
        dump_json(e.event_data, "event.event_data"),
        micros(e.event_time, "event.event_time"),
        1 if e.is_processed else 0,
    )


def subscription_row(s: EventSubscription, field: str = "subscription") -> tuple[Any, ...]:
    """(id, workflow_id, step_id, execution_pointer_id, event_name, event_key, subscribe_as_of,
    subscription_data, external_token, external_worker_id, external_token_expiry)"""
    if not isinstance(s, EventSubscription):
        raise InvalidArgument(f"{field}: expected an EventSubscription", field=field)
    return (
        check_id(s.id, field + ".id", required=False),
        _text(s.workflow_id, field + ".workflow_id"),
        _int(s.step_id, field + ".step_id", 0, _UINT32),
        _text(s.execution_pointer_id, field + ".execution_pointer_id"),
        _text(s.event_name, field + ".event_name"),
        _text(s.event_key, field + ".event_key"),
        micros(s.subscribe_as_of, field + ".subscribe_as_of"),
        _optional_json(s.subscription_data, field + ".subscription_data"),
        _optional_text(s.external_token, field + ".external_token"),
        _optional_text(s.external_worker_id, field + ".external_worker_id"),
        optional_micros(s.external_token_expiry, field + ".external_token_expiry"),
    )


def command_row(c: ScheduledCommand) -> tuple[str, str, int]:
    """(command_name, data, execute_time)"""
    if not isinstance(c, ScheduledCommand):
        raise InvalidArgument("expected a ScheduledCommand")
    return (
        _enum(c.command_name, CommandName, "command.command_name"),
        check_id(c.data, "command.data", required=False),
        _int(c.execute_time, "command.execute_time", 0, _INT64_MAX),
    )


def error_row(e: ExecutionError, field: str) -> tuple[Any, ...]:
    """(error_time, workflow_id, execution_pointer_id, message)"""
    if not isinstance(e, ExecutionError):
        raise InvalidArgument(f"{field}: expected an ExecutionError", field=field)
    return (
        micros(e.error_time, field + ".error_time"),
        _text(e.workflow_id, field + ".workflow_id"),
        _text(e.execution_pointer_id, field + ".execution_pointer_id"),
        _text(e.message, field + ".message"),
    )


def _optional_load(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


def pointer_from_row(r: Sequence[Any]) -> ExecutionPointer:
    """A pointer from the columns after (workflow_id, position)."""
    return ExecutionPointer(
        id=r[0],
        step_id=r[1],
        active=bool(r[2]),
        status=PointerStatus[r[3]],
        sleep_until=_dt(r[4]),
        persistence_data=_optional_load(r[5]),
        start_time=_dt(r[6]),
        end_time=_dt(r[7]),
        event_name=r[8],
        event_key=r[9],
        event_published=bool(r[10]),
        event_data=_optional_load(r[11]),
        step_name=r[12],
        retry_count=r[13],
        children=json.loads(r[14]),
        context_item=_optional_load(r[15]),
        predecessor_id=r[16],
        outcome=_optional_load(r[17]),
        scope=json.loads(r[18]),
        extension_attributes=json.loads(r[19]),
    )


def workflow_from_row(r: Sequence[Any], pointers: list[ExecutionPointer]) -> WorkflowInstance:
    return WorkflowInstance(
        id=r[0],
        name=r[1],
        root_workflow_id=r[2],
        workflow_definition_id=r[3],
        version=r[4],
        description=r[5],
        reference=r[6],
        next_execution=r[7],
        status=WorkflowStatus[r[8]],
        data=json.loads(r[9]),
        create_time=from_micros(r[10]),
        complete_time=_dt(r[11]),
        execution_pointers=pointers,
        revision=r[12] if len(r) > 12 else 0,
    )


def event_from_row(r: Sequence[Any]) -> Event:
    return Event(
        id=r[0],
        event_name=r[1],
        event_key=r[2],
        event_data=json.loads(r[3]),
        event_time=from_micros(r[4]),
        is_processed=bool(r[5]),
    )


def subscription_from_row(r: Sequence[Any]) -> EventSubscription:
    return EventSubscription(
        id=r[0],
        workflow_id=r[1],
        step_id=r[2],
        execution_pointer_id=r[3],
        event_name=r[4],
        event_key=r[5],
        subscribe_as_of=from_micros(r[6]),
        subscription_data=_optional_load(r[7]),
        external_token=r[8],
        external_worker_id=r[9],
        external_token_expiry=_dt(r[10]),
    )
