"""Pure conversions between the dataclass models and the ``wfe.persistence.v1`` messages.

Used by both sides: the adapter (model -> request, response -> model) and the server
(request -> model, model -> response). Reading a message validates it: anything malformed raises
``InvalidArgument`` naming the field, so the server answers INVALID_ARGUMENT and never stores it.
The enum codecs and the Timestamp <-> microseconds conversions here are the only ones: the
server's row fast path (``wfe_sqlite._wire``) uses them too.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf import timestamp_pb2

from wfe.persistence.v1 import (
    events_pb2,
    execution_errors_pb2,
    lifecycle_pb2,
    queues_pb2,
    scheduled_commands_pb2,
    subscriptions_pb2,
    visibility_pb2,
    workflows_pb2,
)

from .errors import InvalidArgument
from .jsoncodec import json_text, parse_json
from .limits import INT64_MAX, MAX_TIMESTAMP_SECONDS, UINT32_MAX, check_flag
from .models import (
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    LifecycleEvent,
    LifecycleEventType,
    PointerStatus,
    QueueType,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
    WorkflowSummary,
)
from .timeutil import from_micros, to_micros
from .visibility import PURGED_BY_DEFAULT, WorkflowFilter

__all__ = [
    "COMMAND_NAME",
    "LIFECYCLE_EVENT_TYPE",
    "POINTER_STATUS",
    "QUEUE_TYPE",
    "WORKFLOW_STATUS",
    "ProtoEnum",
    "command_from_proto",
    "command_name_from_proto",
    "command_name_to_proto",
    "command_to_proto",
    "error_from_proto",
    "error_to_proto",
    "event_from_proto",
    "event_to_proto",
    "filter_from_proto",
    "filter_to_proto",
    "instant",
    "lifecycle_event_from_proto",
    "lifecycle_event_to_proto",
    "optional_instant",
    "pointer_from_proto",
    "pointer_to_proto",
    "purge_statuses_from_proto",
    "statuses_from_proto",
    "subscription_from_proto",
    "subscription_to_proto",
    "summary_from_proto",
    "summary_to_proto",
    "timestamp",
    "timestamp_micros",
    "timestamp_of_micros",
    "workflow_from_proto",
    "workflow_to_proto",
]

E = TypeVar("E", bound=enum.Enum)
P = TypeVar("P", bound=int)


class ProtoEnum(Generic[E, P]):
    """One model enum and its proto enum, whose values are the member names with a prefix.

    ``WorkflowStatus.SUSPENDED`` <-> ``WORKFLOW_STATUS_SUSPENDED``; the storage keeps member names,
    so the maps by name serve the row fast path.
    """

    def __init__(self, model: type[E], proto: type[P], prefix: str) -> None:
        self.model = model
        self.kind = model.__name__
        wrapper: Any = proto  # an EnumTypeWrapper: Value(name) is the number of a value name
        self.to_proto: dict[E, P] = {member: wrapper.Value(prefix + member.name) for member in model}
        self.from_proto: dict[int, E] = {number: member for member, number in self.to_proto.items()}
        self.name_to_proto: dict[str, P] = {member.name: number for member, number in self.to_proto.items()}
        self.name_from_proto: dict[int, str] = {number: name for name, number in self.name_to_proto.items()}

    def encode(self, value: Any, field: str) -> P:
        """The proto number of a member (or of a member name, as the embedded provider accepts)."""
        if isinstance(value, str):
            value = self.model.__members__.get(value, value)
        try:
            return self.to_proto[value]
        except (KeyError, TypeError):
            raise InvalidArgument(f"{field}: expected a {self.kind}, got {value!r}", field=field) from None

    def decode(self, value: int, field: str) -> E:
        """The member of a proto number; InvalidArgument naming ``field`` for an unknown one."""
        try:
            return self.from_proto[value]
        except KeyError:
            raise InvalidArgument(f"{field}: {value} is not a valid {self.kind}", field=field) from None

    def decode_name(self, value: int, field: str) -> str:
        """The member name of a proto number (``decode`` without building the member)."""
        try:
            return self.name_from_proto[value]
        except KeyError:
            raise InvalidArgument(f"{field}: {value} is not a valid {self.kind}", field=field) from None


WORKFLOW_STATUS = ProtoEnum(WorkflowStatus, workflows_pb2.WorkflowStatus, "WORKFLOW_STATUS_")
POINTER_STATUS = ProtoEnum(PointerStatus, workflows_pb2.PointerStatus, "POINTER_STATUS_")
COMMAND_NAME = ProtoEnum(CommandName, scheduled_commands_pb2.CommandName, "COMMAND_NAME_")
QUEUE_TYPE = ProtoEnum(QueueType, queues_pb2.QueueType, "QUEUE_TYPE_")
LIFECYCLE_EVENT_TYPE = ProtoEnum(LifecycleEventType, lifecycle_pb2.LifecycleEventType, "LIFECYCLE_EVENT_TYPE_")


def _optional_json(msg: Any, name: str, field: str) -> Any:
    return parse_json(getattr(msg, name), f"{field}.{name}") if msg.HasField(name) else None


def timestamp_of_micros(micros: int) -> timestamp_pb2.Timestamp:
    """The Timestamp ``micros`` microseconds after the epoch."""
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)


def timestamp(value: datetime, field: str = "datetime") -> timestamp_pb2.Timestamp:
    """A Timestamp of an aware datetime (InvalidArgument, a ValueError, for a naive one)."""
    return timestamp_of_micros(to_micros(value, field))


def timestamp_micros(ts: timestamp_pb2.Timestamp, field: str) -> int:
    """Microseconds since the epoch of a Timestamp between 1970 and 9999 (finer digits dropped)."""
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(f"{field}: nanos {ts.nanos} out of range [0, 999999999]", field=field)
    if not 0 <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(f"{field}: {ts.seconds} seconds is outside 1970-01-01..9999-12-31", field=field)
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def instant(msg: Any, name: str, field: str) -> datetime:
    """The required Timestamp field ``name`` of ``msg`` as a UTC datetime (microseconds)."""
    if not msg.HasField(name):
        raise InvalidArgument(f"{field}.{name}: required", field=f"{field}.{name}")
    return from_micros(timestamp_micros(getattr(msg, name), f"{field}.{name}"))


def optional_instant(msg: Any, name: str, field: str) -> datetime | None:
    """``instant`` of an optional field: None when absent."""
    return instant(msg, name, field) if msg.HasField(name) else None


def _required_time(value: Any, field: str) -> datetime:
    """A required datetime: None (or another type) is the embedded provider's error, not a
    Timestamp left out (which the server would report as 'required')."""
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    return value


def _set_time(msg: Any, name: str, value: datetime | None, field: str) -> None:
    if value is not None:
        getattr(msg, name).CopyFrom(timestamp(value, field))


def _optional(msg: Any, name: str) -> str | None:
    return getattr(msg, name) if msg.HasField(name) else None


@contextmanager
def _building(field: str, model: Any) -> Iterator[None]:
    """Turn protobuf's own complaints about a value of ``model`` into InvalidArgument naming its field.

    The message types check types and UTF-8 themselves, and name neither the field nor the value:
    only when one fails is ``model`` searched for the field, and the error is the embedded
    provider's (``_rows``) for it. Integers are checked before (``_integer``), and a naive datetime
    is already an InvalidArgument naming its field.
    """
    try:
        yield
    except InvalidArgument:
        raise
    except (UnicodeError, TypeError, ValueError) as error:
        found = _explain(model, field)
        if found is not None:
            raise found from None
        if isinstance(error, UnicodeError):
            raise InvalidArgument(f"{field}: not valid Unicode text: {error}", field=field) from None
        raise InvalidArgument(f"{field}: {error}", field=field) from None


_OPTIONAL_TEXT = frozenset({"description", "reference"})
"""Text fields the embedded provider reports as 'expected a string or None' (the others are ids)."""
_ID_LISTS = frozenset({"children", "scope"})


_TEXT_FIELDS: dict[type, tuple[str, ...]] = {}


def _no_none_text(model: Any, field: str) -> None:
    """A string field of ``model`` (typed ``str``, not optional) given None: the embedded provider's
    error. Protobuf would take None for 'not set', i.e. "": an id the server then makes up."""
    names = _TEXT_FIELDS.get(type(model))
    if names is None:
        names = _TEXT_FIELDS[type(model)] = tuple(f.name for f in dataclasses.fields(model) if f.type == "str")
    for name in names:
        if getattr(model, name) is None:
            raise InvalidArgument(f"{field}.{name}: expected a string, got NoneType", field=f"{field}.{name}")


def _surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _explain(model: Any, field: str) -> InvalidArgument | None:
    """The embedded provider's error for the first string field of ``model`` protobuf refused (not
    a string, a lone surrogate), or None."""
    for item in dataclasses.fields(model):
        value = getattr(model, item.name)
        name = f"{field}.{item.name}"
        if item.name in _ID_LISTS:
            if not isinstance(value, (list, tuple)):
                return InvalidArgument(f"{name}: expected a list of strings", field=name)
            for i, element in enumerate(value):
                if not isinstance(element, str):
                    return InvalidArgument(
                        f"{name}[{i}]: expected a string, got {type(element).__name__}", field=f"{name}[{i}]"
                    )
                if _surrogate(element):
                    return InvalidArgument(
                        f"{name}[{i}]: not valid Unicode text (lone surrogate)", field=f"{name}[{i}]"
                    )
        elif item.name == "extension_attributes":
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                return InvalidArgument(f"{name}: expected a dict with string keys", field=field)
        elif item.type in ("str", "str | None") and value is not None:
            if not isinstance(value, str):
                if item.name in _OPTIONAL_TEXT:
                    return InvalidArgument(f"{name}: expected a string or None", field=name)
                return InvalidArgument(f"{name}: expected a string, got {type(value).__name__}", field=name)
            if _surrogate(value):
                return InvalidArgument(f"{name}: not valid Unicode text (lone surrogate)", field=name)
    return None


def _integer(value: Any, field: str, high: int) -> int:
    """An integer field of a model in [0, ``high``], checked here so the error names the field and
    the value as the embedded provider's does (protobuf's own names neither); a bool is not one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}: expected an integer, got {type(value).__name__}", field=field)
    if not 0 <= value <= high:
        raise InvalidArgument(f"{field}: {value} is out of range [0, {high}]", field=field)
    return value


# -- workflows ---------------------------------------------------------------------------------


def pointer_to_proto(p: ExecutionPointer, field: str = "execution_pointer") -> workflows_pb2.ExecutionPointer:
    """``field``: how errors name the pointer (``workflow.execution_pointers[i]`` in a workflow)."""
    f = field
    if not isinstance(p, ExecutionPointer):
        raise InvalidArgument(f"{f}: expected an ExecutionPointer", field=f)
    for name in _ID_LISTS:  # protobuf would take a string for a list of its characters
        if not isinstance(getattr(p, name), (list, tuple)):
            raise InvalidArgument(f"{f}.{name}: expected a list of strings", field=f"{f}.{name}")
    _no_none_text(p, f)
    with _building(f, p):
        msg = workflows_pb2.ExecutionPointer(
            id=p.id,
            step_id=_integer(p.step_id, f"{f}.step_id", UINT32_MAX),
            active=check_flag(p.active, f"{f}.active"),
            status=POINTER_STATUS.encode(p.status, f"{f}.status"),
            event_published=check_flag(p.event_published, f"{f}.event_published"),
            retry_count=_integer(p.retry_count, f"{f}.retry_count", UINT32_MAX),
            children=p.children,
            scope=p.scope,
            extension_attributes={
                k: json_text(v, f"{f}.extension_attributes") for k, v in p.extension_attributes.items()
            },
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


# Models are built with positional arguments (less than half the cost of keywords), so their field
# order is checked once here: a reordered model fails at import, not silently.
if [f.name for f in dataclasses.fields(ExecutionPointer)] != [
    "id", "step_id", "active", "status", "sleep_until", "persistence_data", "start_time", "end_time",
    "event_name", "event_key", "event_published", "event_data", "step_name", "retry_count", "children",
    "context_item", "predecessor_id", "outcome", "scope", "extension_attributes",
] or [f.name for f in dataclasses.fields(WorkflowInstance)] != [
    "id", "workflow_definition_id", "version", "name", "root_workflow_id", "description", "reference",
    "execution_pointers", "next_execution", "status", "data", "create_time", "complete_time", "revision",
]:  # fmt: skip  # pragma: no cover
    raise ImportError("wfe_client.models changed the order of the fields conversion builds models with")


def _set_fields(msg: Any) -> dict[str, Any]:
    """The fields of ``msg`` that are set (present, or not the default), by name: one call into the
    message instead of one per field (absent ones take their proto defaults below)."""
    return {d.name: v for d, v in msg.ListFields()}


def _micros_instant(value: Any, field: str) -> datetime | None:
    return None if value is None else from_micros(timestamp_micros(value, field))


def _json_value(value: str | None, field: str) -> Any:
    return None if value is None else parse_json(value, field)


def pointer_from_proto(msg: workflows_pb2.ExecutionPointer, field: str) -> ExecutionPointer:
    f = _set_fields(msg)
    get = f.get
    status = POINTER_STATUS.from_proto.get(get("status", 0))
    if status is None:
        status = POINTER_STATUS.decode(get("status", 0), f"{field}.status")
    attributes = get("extension_attributes")
    return ExecutionPointer(
        get("id", ""),
        get("step_id", 0),
        get("active", False),
        status,
        _micros_instant(get("sleep_until"), f"{field}.sleep_until"),
        _json_value(get("persistence_data"), f"{field}.persistence_data"),
        _micros_instant(get("start_time"), f"{field}.start_time"),
        _micros_instant(get("end_time"), f"{field}.end_time"),
        get("event_name"),
        get("event_key"),
        get("event_published", False),
        _json_value(get("event_data"), f"{field}.event_data"),
        get("step_name"),
        get("retry_count", 0),
        list(get("children", ())),
        _json_value(get("context_item"), f"{field}.context_item"),
        get("predecessor_id"),
        _json_value(get("outcome"), f"{field}.outcome"),
        list(get("scope", ())),
        {k: parse_json(v, f"{field}.extension_attributes[{k!r}]") for k, v in attributes.items()} if attributes else {},
    )


def workflow_to_proto(w: WorkflowInstance) -> workflows_pb2.WorkflowInstance:
    if not isinstance(w, WorkflowInstance):
        raise InvalidArgument("expected a WorkflowInstance")
    if not isinstance(w.execution_pointers, (list, tuple)):
        raise InvalidArgument("workflow.execution_pointers: expected a list", field="workflow.execution_pointers")
    _no_none_text(w, "workflow")
    with _building("workflow", w):
        msg = workflows_pb2.WorkflowInstance(
            id=w.id,
            name=w.name,
            workflow_definition_id=w.workflow_definition_id,
            version=_integer(w.version, "workflow.version", UINT32_MAX),
            execution_pointers=[
                pointer_to_proto(p, f"workflow.execution_pointers[{i}]") for i, p in enumerate(w.execution_pointers)
            ],
            status=WORKFLOW_STATUS.encode(w.status, "workflow.status"),
            data=json_text(w.data, "workflow.data"),
            revision=_integer(w.revision, "workflow.revision", INT64_MAX),
        )
        for name in ("root_workflow_id", "description", "reference"):
            value = getattr(w, name)
            if value is not None:
                setattr(msg, name, value)
        if w.next_execution is not None:
            msg.next_execution = _integer(w.next_execution, "workflow.next_execution", INT64_MAX)
        _set_time(msg, "create_time", _required_time(w.create_time, "workflow.create_time"), "workflow.create_time")
        _set_time(msg, "complete_time", w.complete_time, "workflow.complete_time")
        return msg


def workflow_from_proto(msg: workflows_pb2.WorkflowInstance, field: str = "workflow") -> WorkflowInstance:
    # Checked in field order (pointers, status, data, create_time), as every adapter reports the first.
    f = _set_fields(msg)
    get = f.get
    pointers = [
        pointer_from_proto(p, f"{field}.execution_pointers[{i}]") for i, p in enumerate(get("execution_pointers", ()))
    ]
    status = WORKFLOW_STATUS.from_proto.get(get("status", 0))
    if status is None:
        status = WORKFLOW_STATUS.decode(get("status", 0), f"{field}.status")
    data = parse_json(get("data", ""), f"{field}.data")
    if "create_time" not in f:
        raise InvalidArgument(f"{field}.create_time: required", field=f"{field}.create_time")
    return WorkflowInstance(
        get("id", ""),
        get("workflow_definition_id", ""),
        get("version", 0),
        get("name", ""),
        get("root_workflow_id"),
        get("description"),
        get("reference"),
        pointers,
        get("next_execution"),
        status,
        data,
        from_micros(timestamp_micros(f["create_time"], f"{field}.create_time")),
        _micros_instant(get("complete_time"), f"{field}.complete_time"),
        max(get("revision", 0), 0),
    )


# -- events ------------------------------------------------------------------------------------


def event_to_proto(e: Event) -> events_pb2.Event:
    if not isinstance(e, Event):
        raise InvalidArgument("expected an Event")
    _no_none_text(e, "event")
    with _building("event", e):
        return events_pb2.Event(
            id=e.id,
            event_name=e.event_name,
            event_key=e.event_key,
            event_data=json_text(e.event_data, "event.event_data"),
            event_time=timestamp(_required_time(e.event_time, "event.event_time"), "event.event_time"),
            is_processed=check_flag(e.is_processed, "event.is_processed"),
        )


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


def subscription_to_proto(s: EventSubscription, field: str = "subscription") -> subscriptions_pb2.EventSubscription:
    """``field``: how errors name the subscription (``subscriptions[i]`` in a list of them)."""
    f = field
    if not isinstance(s, EventSubscription):
        raise InvalidArgument(f"{f}: expected an EventSubscription", field=f)
    _no_none_text(s, f)
    with _building(f, s):
        msg = subscriptions_pb2.EventSubscription(
            id=s.id,
            workflow_id=s.workflow_id,
            step_id=_integer(s.step_id, f"{f}.step_id", UINT32_MAX),
            execution_pointer_id=s.execution_pointer_id,
            event_name=s.event_name,
            event_key=s.event_key,
        )
        _set_time(
            msg, "subscribe_as_of", _required_time(s.subscribe_as_of, f"{f}.subscribe_as_of"), f"{f}.subscribe_as_of"
        )
        if s.subscription_data is not None:
            msg.subscription_data = json_text(s.subscription_data, f"{f}.subscription_data")
        if s.external_token is not None:
            msg.external_token = s.external_token
        if s.external_worker_id is not None:
            msg.external_worker_id = s.external_worker_id
        _set_time(msg, "external_token_expiry", s.external_token_expiry, f"{f}.external_token_expiry")
        return msg


def subscription_from_proto(msg: subscriptions_pb2.EventSubscription, field: str = "subscription") -> EventSubscription:
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


def command_name_to_proto(name: CommandName) -> scheduled_commands_pb2.CommandName:
    return COMMAND_NAME.encode(name, "command.command_name")


def command_name_from_proto(value: int, field: str) -> CommandName:
    return COMMAND_NAME.decode(value, field)


def command_to_proto(c: ScheduledCommand) -> scheduled_commands_pb2.ScheduledCommand:
    if not isinstance(c, ScheduledCommand):
        raise InvalidArgument("expected a ScheduledCommand")
    _no_none_text(c, "command")
    with _building("command", c):
        return scheduled_commands_pb2.ScheduledCommand(
            command_name=COMMAND_NAME.encode(c.command_name, "command.command_name"),
            data=c.data,
            execute_time=_integer(c.execute_time, "command.execute_time", INT64_MAX),
        )


def command_from_proto(msg: scheduled_commands_pb2.ScheduledCommand, field: str = "command") -> ScheduledCommand:
    return ScheduledCommand(
        command_name=command_name_from_proto(msg.command_name, f"{field}.command_name"),
        data=msg.data,
        execute_time=msg.execute_time,
    )


# -- execution errors --------------------------------------------------------------------------


def error_to_proto(e: ExecutionError, field: str = "error") -> execution_errors_pb2.ExecutionError:
    """``field``: how errors name the record (``errors[i]`` in a list of them)."""
    if not isinstance(e, ExecutionError):
        raise InvalidArgument(f"{field}: expected an ExecutionError", field=field)
    _no_none_text(e, field)
    with _building(field, e):
        msg = execution_errors_pb2.ExecutionError(
            workflow_id=e.workflow_id, execution_pointer_id=e.execution_pointer_id, message=e.message
        )
        _set_time(msg, "error_time", _required_time(e.error_time, f"{field}.error_time"), f"{field}.error_time")
        return msg


def error_from_proto(msg: execution_errors_pb2.ExecutionError, field: str) -> ExecutionError:
    return ExecutionError(
        error_time=instant(msg, "error_time", field),
        workflow_id=msg.workflow_id,
        execution_pointer_id=msg.execution_pointer_id,
        message=msg.message,
    )


# -- visibility --------------------------------------------------------------------------------


def statuses_from_proto(values: Iterable[int], field: str) -> tuple[WorkflowStatus, ...]:
    """Distinct statuses of a repeated field; UNSPECIFIED or an unknown number is InvalidArgument."""
    found: list[WorkflowStatus] = []
    for i, value in enumerate(values):
        status = WORKFLOW_STATUS.decode(value, f"{field}[{i}]")
        if status not in found:
            found.append(status)
    return tuple(found)


def purge_statuses_from_proto(values: Iterable[int]) -> tuple[WorkflowStatus, ...]:
    """The statuses of a PurgeWorkflowsRequest: empty means COMPLETE and TERMINATED."""
    return statuses_from_proto(values, "statuses") or PURGED_BY_DEFAULT


def filter_to_proto(f: WorkflowFilter) -> visibility_pb2.WorkflowFilter:
    msg = visibility_pb2.WorkflowFilter(
        statuses=[WORKFLOW_STATUS.to_proto[s] for s in f.statuses], workflow_definition_id=f.definition_id or ""
    )
    if f.reference is not None:
        msg.reference = f.reference
    _set_time(msg, "created_after", f.created_after, "created_after")
    _set_time(msg, "created_before", f.created_before, "created_before")
    return msg


def filter_from_proto(msg: visibility_pb2.WorkflowFilter, field: str = "filter") -> WorkflowFilter:
    return WorkflowFilter(
        statuses=statuses_from_proto(msg.statuses, f"{field}.statuses"),
        definition_id=msg.workflow_definition_id or None,
        reference=_optional(msg, "reference"),
        created_after=optional_instant(msg, "created_after", field),
        created_before=optional_instant(msg, "created_before", field),
    )


def summary_to_proto(s: WorkflowSummary) -> visibility_pb2.WorkflowSummary:
    msg = visibility_pb2.WorkflowSummary(
        id=s.id,
        name=s.name,
        workflow_definition_id=s.workflow_definition_id,
        version=s.version,
        status=WORKFLOW_STATUS.to_proto[s.status],
        create_time=timestamp(s.create_time, "create_time"),
    )
    if s.reference is not None:
        msg.reference = s.reference
    if s.description is not None:
        msg.description = s.description
    _set_time(msg, "complete_time", s.complete_time, "complete_time")
    if s.next_execution is not None:
        msg.next_execution = s.next_execution
    msg.revision = s.revision
    return msg


def summary_from_proto(msg: visibility_pb2.WorkflowSummary, field: str = "workflow") -> WorkflowSummary:
    return WorkflowSummary(
        id=msg.id,
        name=msg.name,
        workflow_definition_id=msg.workflow_definition_id,
        version=msg.version,
        status=WORKFLOW_STATUS.decode(msg.status, f"{field}.status"),
        reference=_optional(msg, "reference"),
        description=_optional(msg, "description"),
        create_time=instant(msg, "create_time", field),
        complete_time=optional_instant(msg, "complete_time", field),
        next_execution=msg.next_execution if msg.HasField("next_execution") else None,
        revision=msg.revision,
    )


# -- lifecycle events --------------------------------------------------------------------------


def lifecycle_event_to_proto(event: LifecycleEvent) -> lifecycle_pb2.LifecycleEvent:
    if not isinstance(event, LifecycleEvent):
        raise InvalidArgument("expected a LifecycleEvent", field="event")
    with _building("event", event):
        msg = lifecycle_pb2.LifecycleEvent(
            event_time=timestamp(event.event_time, "event.event_time"),
            workflow_instance_id=event.workflow_instance_id,
            workflow_definition_id=event.workflow_definition_id,
            version=event.version,
            type=LIFECYCLE_EVENT_TYPE.encode(event.type, "event.type"),
            step_id=event.step_id,
            message=event.message,
        )
        if event.reference is not None:
            msg.reference = event.reference
        if event.step_name is not None:
            msg.step_name = event.step_name
        return msg


def lifecycle_event_from_proto(msg: lifecycle_pb2.LifecycleEvent, field: str = "event") -> LifecycleEvent:
    return LifecycleEvent(
        type=LIFECYCLE_EVENT_TYPE.decode(msg.type, f"{field}.type"),
        workflow_instance_id=msg.workflow_instance_id,
        workflow_definition_id=msg.workflow_definition_id,
        version=msg.version,
        reference=_optional(msg, "reference"),
        step_id=msg.step_id,
        step_name=_optional(msg, "step_name"),
        message=msg.message,
        event_time=instant(msg, "event_time", field),
    )
