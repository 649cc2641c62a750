"""Pure conversions between the dataclass models and the ``wfe.persistence.v1`` messages.

Used by both sides: the adapter (model -> request, response -> model) and the server
(request -> model, model -> response). Reading a message validates it: anything malformed raises
``InvalidArgument`` naming the field, so the server answers INVALID_ARGUMENT and never stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Optional

from google.protobuf import timestamp_pb2

from wfe.persistence.v1 import (
    events_pb2,
    execution_errors_pb2,
    scheduled_commands_pb2,
    subscriptions_pb2,
    workflows_pb2,
)

from ._errors import InvalidArgument
from ._json import json_text, parse_json
from ._models import (
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    PointerStatus,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
)
from ._time import from_micros, to_micros

__all__ = [
    "json_text",
    "parse_json",
    "timestamp",
    "instant",
    "optional_instant",
    "workflow_to_proto",
    "workflow_from_proto",
    "pointer_to_proto",
    "pointer_from_proto",
    "event_to_proto",
    "event_from_proto",
    "subscription_to_proto",
    "subscription_from_proto",
    "command_to_proto",
    "command_from_proto",
    "command_name_to_proto",
    "command_name_from_proto",
    "error_to_proto",
    "error_from_proto",
]

# The latest instant a Timestamp may hold (9999-12-31T23:59:59.999999Z), in seconds.
_MAX_SECONDS = 253402300799

_WORKFLOW_STATUS_TO = {s: workflows_pb2.WorkflowStatus.Value(f"WORKFLOW_STATUS_{s.name}") for s in WorkflowStatus}
_WORKFLOW_STATUS_FROM = {v: k for k, v in _WORKFLOW_STATUS_TO.items()}
_POINTER_STATUS_TO = {s: workflows_pb2.PointerStatus.Value(f"POINTER_STATUS_{s.name}") for s in PointerStatus}
_POINTER_STATUS_FROM = {v: k for k, v in _POINTER_STATUS_TO.items()}
_COMMAND_NAME_TO = {
    c: scheduled_commands_pb2.CommandName.Value(f"COMMAND_NAME_{c.name}") for c in CommandName
}
_COMMAND_NAME_FROM = {v: k for k, v in _COMMAND_NAME_TO.items()}


def _optional_json(msg: Any, name: str, field: str) -> Any:
    return parse_json(getattr(msg, name), f"{field}.{name}") if msg.HasField(name) else None


def timestamp(value: datetime, field: str = "datetime") -> timestamp_pb2.Timestamp:
    """A Timestamp of an aware datetime (ValueError for a naive one)."""
    micros = to_micros(value, field)
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)


def _micros(ts: timestamp_pb2.Timestamp, field: str) -> int:
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(f"{field}: nanos {ts.nanos} out of range [0, 999999999]", field=field)
    if not 0 <= ts.seconds <= _MAX_SECONDS:
        raise InvalidArgument(
            f"{field}: {ts.seconds} seconds is outside 1970-01-01..9999-12-31", field=field
        )
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def instant(msg: Any, name: str, field: str) -> datetime:
    """The required Timestamp field ``name`` of ``msg`` as a UTC datetime (microseconds)."""
    if not msg.HasField(name):
        raise InvalidArgument(f"{field}.{name}: required", field=f"{field}.{name}")
    return from_micros(_micros(getattr(msg, name), f"{field}.{name}"))


def optional_instant(msg: Any, name: str, field: str) -> Optional[datetime]:
    return instant(msg, name, field) if msg.HasField(name) else None


def _set_time(msg: Any, name: str, value: Optional[datetime], field: str) -> None:
    if value is not None:
        getattr(msg, name).CopyFrom(timestamp(value, field))


def _optional(msg: Any, name: str) -> Optional[str]:
    return getattr(msg, name) if msg.HasField(name) else None


def _to_enum(mapping: dict[Any, int], value: Any, field: str) -> int:
    if isinstance(value, str):  # a member name, as the embedded provider accepts
        value = next((member for member in mapping if member.name == value), value)
    try:
        return mapping[value]
    except (KeyError, TypeError):
        raise InvalidArgument(f"{field}: {value!r} is not a valid value", field=field) from None


@contextmanager
def _building(field: str) -> Iterator[None]:
    """Turn protobuf's own complaints about a model value into InvalidArgument naming the record.

    The message types check ranges (uint32, int64), types and UTF-8 themselves; this gives those
    failures the same exception the embedded provider raises. Naive datetimes stay ValueErrors.
    """
    try:
        yield
    except InvalidArgument:
        raise
    except UnicodeError as error:
        raise InvalidArgument(f"{field}: not valid Unicode text: {error}", field=field) from None
    except (TypeError, ValueError) as error:
        if "naive datetime" in str(error):
            raise
        raise InvalidArgument(f"{field}: {error}", field=field) from None


def _enum(mapping: dict[int, Any], value: int, field: str, kind: str) -> Any:
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgument(f"{field}: {value} is not a valid {kind}", field=field) from None


# -- workflows ---------------------------------------------------------------------------------


def pointer_to_proto(p: ExecutionPointer) -> workflows_pb2.ExecutionPointer:
    with _building("execution_pointer"):
        f = "execution_pointer"
        msg = workflows_pb2.ExecutionPointer(
            id=p.id,
            step_id=p.step_id,
            active=p.active,
            status=_to_enum(_POINTER_STATUS_TO, p.status, f"{f}.status"),
            event_published=p.event_published,
            retry_count=p.retry_count,
            children=p.children,
            scope=p.scope,
            extension_attributes={k: json_text(v, f"{f}.extension_attributes") for k, v in p.extension_attributes.items()},
        )
        for name in ("event_name", "event_key", "step_name", "predecessor_id"):
            value = getattr(p, name)
            if value is not None:
                setattr(msg, name, value)
        for name in ("persistence_data", "event_data", "context_item", "outcome"):
            value = getattr(p, name)
            if value is not None:
                setattr(msg, name, json_text(value, f"{f}.{name}"))
        _set_time(msg, "sleep_until", p.sleep_until, f"{f}.sleep_until")
        _set_time(msg, "start_time", p.start_time, f"{f}.start_time")
        _set_time(msg, "end_time", p.end_time, f"{f}.end_time")
        return msg


def pointer_from_proto(msg: workflows_pb2.ExecutionPointer, field: str) -> ExecutionPointer:
    return ExecutionPointer(
        id=msg.id,
        step_id=msg.step_id,
        active=msg.active,
        status=_enum(_POINTER_STATUS_FROM, msg.status, f"{field}.status", "PointerStatus"),
        sleep_until=optional_instant(msg, "sleep_until", field),
        persistence_data=_optional_json(msg, "persistence_data", field),
        start_time=optional_instant(msg, "start_time", field),
        end_time=optional_instant(msg, "end_time", field),
        event_name=_optional(msg, "event_name"),
        event_key=_optional(msg, "event_key"),
        event_published=msg.event_published,
        event_data=_optional_json(msg, "event_data", field),
        step_name=_optional(msg, "step_name"),
        retry_count=msg.retry_count,
        children=list(msg.children),
        context_item=_optional_json(msg, "context_item", field),
        predecessor_id=_optional(msg, "predecessor_id"),
        outcome=_optional_json(msg, "outcome", field),
        scope=list(msg.scope),
        extension_attributes={
            k: parse_json(v, f"{field}.extension_attributes[{k!r}]") for k, v in msg.extension_attributes.items()
        },
    )


def workflow_to_proto(w: WorkflowInstance) -> workflows_pb2.WorkflowInstance:
    with _building("workflow"):
        msg = workflows_pb2.WorkflowInstance(
            id=w.id,
            name=w.name,
            workflow_definition_id=w.workflow_definition_id,
            version=w.version,
            execution_pointers=[pointer_to_proto(p) for p in w.execution_pointers],
            status=_to_enum(_WORKFLOW_STATUS_TO, w.status, "workflow.status"),
            data=json_text(w.data, "workflow.data"),
            revision=w.revision,
        )
        for name in ("root_workflow_id", "description", "reference", "next_execution"):
            value = getattr(w, name)
            if value is not None:
                setattr(msg, name, value)
        _set_time(msg, "create_time", w.create_time, "workflow.create_time")
        _set_time(msg, "complete_time", w.complete_time, "workflow.complete_time")
        return msg


def workflow_from_proto(msg: workflows_pb2.WorkflowInstance, field: str = "workflow") -> WorkflowInstance:
    return WorkflowInstance(
        id=msg.id,
        name=msg.name,
        root_workflow_id=_optional(msg, "root_workflow_id"),
        workflow_definition_id=msg.workflow_definition_id,
        version=msg.version,
        description=_optional(msg, "description"),
        reference=_optional(msg, "reference"),
        execution_pointers=[
            pointer_from_proto(p, f"{field}.execution_pointers[{i}]") for i, p in enumerate(msg.execution_pointers)
        ],
        next_execution=msg.next_execution if msg.HasField("next_execution") else None,
        status=_enum(_WORKFLOW_STATUS_FROM, msg.status, f"{field}.status", "WorkflowStatus"),
        data=parse_json(msg.data, f"{field}.data"),
        create_time=instant(msg, "create_time", field),
        complete_time=optional_instant(msg, "complete_time", field),
        revision=msg.revision,
    )


# -- events ------------------------------------------------------------------------------------


def event_to_proto(e: Event) -> events_pb2.Event:
    with _building("event"):
        msg = events_pb2.Event(
            id=e.id,
            event_name=e.event_name,
            event_key=e.event_key,
            event_data=json_text(e.event_data, "event.event_data"),
            is_processed=e.is_processed,
        )
        _set_time(msg, "event_time", e.event_time, "event.event_time")
        return msg


def event_from_proto(msg: events_pb2.Event, field: str = "event") -> Event:
    return Event(
        id=msg.id,
        event_name=msg.event_name,
        event_key=msg.event_key,
        event_data=parse_json(msg.event_data, f"{field}.event_data"),
        event_time=instant(msg, "event_time", field),
        is_processed=msg.is_processed,
    )


# -- subscriptions -----------------------------------------------------------------------------


def subscription_to_proto(s: EventSubscription) -> subscriptions_pb2.EventSubscription:
    with _building("subscription"):
        f = "subscription"
        msg = subscriptions_pb2.EventSubscription(
            id=s.id,
            workflow_id=s.workflow_id,
            step_id=s.step_id,
            execution_pointer_id=s.execution_pointer_id,
            event_name=s.event_name,
            event_key=s.event_key,
        )
        _set_time(msg, "subscribe_as_of", s.subscribe_as_of, f"{f}.subscribe_as_of")
        if s.subscription_data is not None:
            msg.subscription_data = json_text(s.subscription_data, f"{f}.subscription_data")
        if s.external_token is not None:
            msg.external_token = s.external_token
        if s.external_worker_id is not None:
            msg.external_worker_id = s.external_worker_id
        _set_time(msg, "external_token_expiry", s.external_token_expiry, f"{f}.external_token_expiry")
        return msg


def subscription_from_proto(
    msg: subscriptions_pb2.EventSubscription, field: str = "subscription"
) -> EventSubscription:
    return EventSubscription(
        id=msg.id,
        workflow_id=msg.workflow_id,
        step_id=msg.step_id,
        execution_pointer_id=msg.execution_pointer_id,
        event_name=msg.event_name,
        event_key=msg.event_key,
        subscribe_as_of=instant(msg, "subscribe_as_of", field),
        subscription_data=_optional_json(msg, "subscription_data", field),
        external_token=_optional(msg, "external_token"),
        external_worker_id=_optional(msg, "external_worker_id"),
        external_token_expiry=optional_instant(msg, "external_token_expiry", field),
    )


# -- scheduled commands ------------------------------------------------------------------------


def command_name_to_proto(name: CommandName) -> int:
    return _to_enum(_COMMAND_NAME_TO, name, "command.command_name")


def command_name_from_proto(value: int, field: str) -> CommandName:
    return _enum(_COMMAND_NAME_FROM, value, field, "CommandName")


def command_to_proto(c: ScheduledCommand) -> scheduled_commands_pb2.ScheduledCommand:
    with _building("command"):
        return scheduled_commands_pb2.ScheduledCommand(
            command_name=_to_enum(_COMMAND_NAME_TO, c.command_name, "command.command_name"), data=c.data, execute_time=c.execute_time
        )


def command_from_proto(msg: scheduled_commands_pb2.ScheduledCommand, field: str = "command") -> ScheduledCommand:
    return ScheduledCommand(
        command_name=command_name_from_proto(msg.command_name, f"{field}.command_name"),
        data=msg.data,
        execute_time=msg.execute_time,
    )


# -- execution errors --------------------------------------------------------------------------


def error_to_proto(e: ExecutionError) -> execution_errors_pb2.ExecutionError:
    with _building("error"):
        msg = execution_errors_pb2.ExecutionError(
            workflow_id=e.workflow_id, execution_pointer_id=e.execution_pointer_id, message=e.message
        )
        _set_time(msg, "error_time", e.error_time, "error.error_time")
        return msg


def error_from_proto(msg: execution_errors_pb2.ExecutionError, field: str) -> ExecutionError:
    return ExecutionError(
        error_time=instant(msg, "error_time", field),
        workflow_id=msg.workflow_id,
        execution_pointer_id=msg.execution_pointer_id,
        message=msg.message,
    )
