"""The stored row of each table, declared once, and its conversions from and to the models.

Each ``*Row`` names its table's columns in order: the store builds its SQL from ``Row._fields``,
the builders here and the wire fast path (``_wire``) fill rows by name, and readers take columns by
name. Building a row validates the model: anything that may not be stored raises
``InvalidArgument`` naming the field.
"""

from __future__ import annotations

import enum
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from wfe_client.errors import InvalidArgument
from wfe_client.jsoncodec import decode_json, json_text
from wfe_client.limits import INT64_MAX, MAX_ID_BYTES, MAX_LOCK_RESOURCES, UINT32_MAX, check_flag
from wfe_client.models import (
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
from wfe_client.timeutil import EPOCH, from_micros, to_micros

from ._cluster_api import LeaseAsk

__all__ = [
    "CommandRow",
    "ErrorRow",
    "EventRow",
    "PageKey",
    "PointerRow",
    "StoredWorkflow",
    "SubscriptionRow",
    "WorkflowRow",
    "check_event_key",
    "check_id",
    "check_unique_pointer_ids",
    "command_from_row",
    "command_row",
    "error_row",
    "event_from_row",
    "event_row",
    "id_list",
    "micros",
    "new_id",
    "new_ids",
    "optional_id",
    "pointer_rows",
    "subscription_from_row",
    "subscription_row",
    "with_id",
    "with_ids",
    "with_workflow_id",
    "workflow_from_rows",
    "workflow_row",
]

E = TypeVar("E", bound=enum.Enum)


class WorkflowRow(NamedTuple):
    """A row of ``workflows``. Instants are epoch microseconds, JSON is text, enums member names."""

    id: str
    name: str
    root_workflow_id: str | None
    workflow_definition_id: str
    version: int
    description: str | None
    reference: str | None
    next_execution: int | None
    status: str
    data: str
    create_time: int
    complete_time: int | None
    revision: int
    """1 after create, one more after every persist (the store sets it; a row to write carries the
    model's, which only the provider's revision check reads)."""


class PointerRow(NamedTuple):
    """A row of ``execution_pointers``: the pointer at ``position`` of workflow ``workflow_id``."""

    workflow_id: str
    position: int
    id: str
    step_id: int
    active: int
    status: str
    sleep_until: int | None
    persistence_data: str | None
    start_time: int | None
    end_time: int | None
    event_name: str | None
    event_key: str | None
    event_published: int
    event_data: str | None
    step_name: str | None
    retry_count: int
    children: str
    context_item: str | None
    predecessor_id: str | None
    outcome: str | None
    scope: str
    extension_attributes: str


class EventRow(NamedTuple):
    """A row of ``events``."""

    id: str
    event_name: str
    event_key: str
    event_data: str
    event_time: int
    is_processed: int


class SubscriptionRow(NamedTuple):
    """The columns of ``event_subscriptions`` a subscription carries (the store adds ``terminated``)."""

    id: str
    workflow_id: str
    step_id: int
    execution_pointer_id: str
    event_name: str
    event_key: str
    subscribe_as_of: int
    subscription_data: str | None
    external_token: str | None
    external_worker_id: str | None
    external_token_expiry: int | None


class CommandRow(NamedTuple):
    """The columns of ``scheduled_commands`` a command carries (the store adds its lease)."""

    command_name: str
    data: str
    execute_time: int


class ErrorRow(NamedTuple):
    """The columns of ``execution_errors`` an error carries (the store adds its rowid)."""

    error_time: int
    workflow_id: str
    execution_pointer_id: str
    message: str


StoredWorkflow = tuple[WorkflowRow, list[PointerRow]]
"""A workflow as stored: its row and its pointers' rows, in position order."""

PageKey = tuple[int, str]
"""Keyset position of a listed item: (its ordering instant or time, its id)."""


def new_id() -> str:
    """A fresh id for a record stored without one (a UUIDv4)."""
    return str(uuid.uuid4())


_UUID_VERSION = bytes(b & 0x0F | 0x40 for b in range(256))  # byte 6: version 4 in the high nibble
_UUID_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))  # byte 8: variant 10xx (RFC 4122)


def new_ids(count: int) -> list[str]:
    """``count`` fresh ids, each a random UUIDv4 as ``new_id`` makes (lower-case, hyphenated).

    One ``os.urandom`` for all of them, the version and variant bits set with two ``translate``
    calls, one ``hex``: a big batch of subscriptions spent ~1 s of the event loop's time in 100,000
    ``str(uuid.uuid4())``."""
    if count <= 0:
        return []
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


R = TypeVar("R", EventRow, SubscriptionRow)


def with_id(row: R) -> R:
    """The row of a record to create: a fresh id when it has none."""
    return row if row.id else row._replace(id=new_id())


def with_ids(rows: list[R]) -> list[R]:
    """``with_id`` of each row, the fresh ids made together (``new_ids``)."""
    missing = sum(1 for row in rows if not row.id)
    if not missing:
        return rows
    ids = iter(new_ids(missing))
    return [row if row.id else row._replace(id=next(ids)) for row in rows]


def with_workflow_id(row: WorkflowRow, pointers: list[PointerRow]) -> StoredWorkflow:
    """The rows of a workflow to create: a fresh id when it has none, given to its pointers too."""
    if row.id:
        return row, pointers
    wid = new_id()
    return row._replace(id=wid), [p._replace(workflow_id=wid) for p in pointers]


# -- validation --------------------------------------------------------------------------------


def micros(value: datetime, field: str) -> int:
    """Epoch microseconds of an aware datetime at or after 1970; InvalidArgument naming ``field``."""
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    try:
        result = to_micros(value, field)
    except ValueError as error:
        raise InvalidArgument(str(error), field=field) from None
    if result < 0:
        raise InvalidArgument(f"{field}: {value.isoformat()} is before 1970-01-01T00:00:00Z", field=field)
    return result


def _optional_micros(value: datetime | None, field: str) -> int | None:
    return None if value is None else micros(value, field)


def check_id(value: Any, field: str, *, required: bool = True, max_bytes: int = MAX_ID_BYTES) -> str:
    """A string of at most ``max_bytes`` bytes (non-empty when required)."""
    if value.__class__ is str and value.isascii() and len(value) <= max_bytes and (value or not required):
        return value  # the common case, in O(1): ASCII is one byte a character and holds no surrogate
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string, got {type(value).__name__}", field=field)
    if required and not value:
        raise InvalidArgument(f"{field}: must not be empty", field=field)
    if len(value) > max_bytes // 4 and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"{field}: longer than {max_bytes} bytes", field=field)
    _check_text(value, field)
    return value


MAX_PREFIX_BYTES = 512
"""Longest lease prefix of a leased dequeue (the resource is the prefix and the item's id)."""

MAX_LEASE_RESOURCE_BYTES = MAX_PREFIX_BYTES + MAX_ID_BYTES
"""Longest resource a lease can be on: a leased dequeue's prefix and item id. A resource named to
renew or release a lease may be this long (one named to acquire, ``MAX_ID_BYTES``): what a dequeue
hands out, its owner can renew and release."""


def check_lease_resource(value: Any, field: str) -> str:
    """A resource named to renew or release a lease: ``check_id`` up to ``MAX_LEASE_RESOURCE_BYTES``."""
    return check_id(value, field, max_bytes=MAX_LEASE_RESOURCE_BYTES)


def lease_ask(
    owner: Any,
    ttl_us: int,
    prefixes: Sequence[Any],
    release: Sequence[Any],
    field: str = "",
    release_field: str = "release",
) -> LeaseAsk:
    """The leases a dequeue asks for (one per prefix, for ``owner``) and the releases it carries,
    checked; error fields are named after ``field`` (``leases.`` on the wire) and ``release_field``."""
    owner = check_id(owner, f"{field}owner")
    if isinstance(prefixes, str) or not 1 <= len(prefixes) <= MAX_LOCK_RESOURCES:
        raise InvalidArgument(f"{field}prefixes: 1 to {MAX_LOCK_RESOURCES} prefixes", field=f"{field}prefixes")
    checked: list[str] = []
    for i, prefix in enumerate(prefixes):
        name = f"{field}prefixes[{i}]"
        checked.append(check_id(prefix, name, required=False))
        if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_BYTES:
            raise InvalidArgument(f"{name}: longer than {MAX_PREFIX_BYTES} bytes", field=name)
        if prefix in checked[:-1]:
            raise InvalidArgument(f"{name}: {prefix!r} is named twice", field=name)
    if isinstance(release, str) or len(release) > MAX_LOCK_RESOURCES:
        raise InvalidArgument(f"{release_field}: at most {MAX_LOCK_RESOURCES}", field=release_field)
    freed = tuple(check_lease_resource(r, f"{release_field}[{i}]") for i, r in enumerate(release))
    return LeaseAsk(owner, ttl_us, tuple(checked), tuple(dict.fromkeys(freed)))


def check_event_key(event_name: Any, event_key: Any) -> tuple[str, str]:
    """An event's name and key as a lookup takes them: strings of at most ``MAX_ID_BYTES`` bytes."""
    return check_id(event_name, "event_name", required=False), check_id(event_key, "event_key", required=False)


def optional_id(value: Any, field: str) -> str | None:
    """None, or a string of at most ``MAX_ID_BYTES`` bytes (``check_id`` without requiring a value)."""
    return None if value is None else check_id(value, field, required=False)


def id_list(values: Any, field: str) -> str:
    """The JSON text of a list of ids (pointer ``children``, ``scope``), each checked by ``check_id``."""
    if not isinstance(values, (list, tuple)):
        raise InvalidArgument(f"{field}: expected a list of strings", field=field)
    for i, value in enumerate(values):
        check_id(value, f"{field}[{i}]", required=False)
    return _dump_strings(list(values)) if values else "[]"


_STRINGS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Made once: ``json.dumps`` with options builds an encoder per call, which was most of the cost of a
pointer's ``children`` and ``scope`` (an encoder keeps no state between calls: threads may share it)."""


def _dump_strings(values: list[str]) -> str:
    # json_text without its checks: the strings are checked, and a list of them nests one level.
    return _STRINGS_ENCODER.encode(values)


def check_unique_pointer_ids(ids: Sequence[str], field: str = "workflow") -> None:
    """Pointer ids are unique within their workflow: the second use of one is INVALID_ARGUMENT."""
    if len(set(ids)) == len(ids):
        return
    seen: set[str] = set()
    for position, pid in enumerate(ids):
        if pid in seen:
            name = f"{field}.execution_pointers[{position}].id"
            raise InvalidArgument(f"{name}: {pid!r} is the id of an earlier pointer of this workflow", field=name)
        seen.add(pid)


def _check_text(value: str, field: str) -> str:
    if value.isascii():  # O(1), and ASCII holds no lone surrogate
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}: not valid Unicode text (lone surrogate)", field=field) from None
    return value


def _optional_text(value: Any, field: str) -> str | None:
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


def _optional_json(value: Any, field: str) -> str | None:
    return None if value is None else json_text(value, field)


# -- models -> rows ----------------------------------------------------------------------------


def workflow_row(w: WorkflowInstance) -> WorkflowRow:
    """The ``workflows`` row of a workflow (its id may be empty: see ``with_workflow_id``)."""
    if not isinstance(w, WorkflowInstance):
        raise InvalidArgument("expected a WorkflowInstance")
    next_execution = w.next_execution
    if next_execution is not None:
        _int(next_execution, "workflow.next_execution", 0, INT64_MAX)
    root = w.root_workflow_id
    return WorkflowRow(
        id=check_id(w.id, "workflow.id", required=False),
        name=check_id(w.name, "workflow.name", required=False),
        root_workflow_id=None if root is None else check_id(root, "workflow.root_workflow_id", required=False),
        workflow_definition_id=check_id(w.workflow_definition_id, "workflow.workflow_definition_id"),
        version=_int(w.version, "workflow.version", 0, UINT32_MAX),
        description=_optional_text(w.description, "workflow.description"),
        reference=_optional_text(w.reference, "workflow.reference"),
        next_execution=next_execution,
        status=_enum(w.status, WorkflowStatus, "workflow.status"),
        data=json_text(w.data, "workflow.data"),
        create_time=micros(w.create_time, "workflow.create_time"),
        complete_time=_optional_micros(w.complete_time, "workflow.complete_time"),
        revision=_int(w.revision, "workflow.revision", 0, INT64_MAX),
    )


def pointer_rows(workflow_id: str, pointers: Sequence[ExecutionPointer]) -> list[PointerRow]:
    """One row per pointer of workflow ``workflow_id``, in order."""
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
            PointerRow(
                workflow_id=workflow_id,
                position=position,
                id=check_id(p.id, f + ".id"),
                step_id=_int(p.step_id, f + ".step_id", 0, UINT32_MAX),
                active=1 if check_flag(p.active, f + ".active") else 0,
                status=_enum(p.status, PointerStatus, f + ".status"),
                sleep_until=_optional_micros(p.sleep_until, f + ".sleep_until"),
                persistence_data=_optional_json(p.persistence_data, f + ".persistence_data"),
                start_time=_optional_micros(p.start_time, f + ".start_time"),
                end_time=_optional_micros(p.end_time, f + ".end_time"),
                event_name=optional_id(p.event_name, f + ".event_name"),
                event_key=optional_id(p.event_key, f + ".event_key"),
                event_published=1 if check_flag(p.event_published, f + ".event_published") else 0,
                event_data=_optional_json(p.event_data, f + ".event_data"),
                step_name=optional_id(p.step_name, f + ".step_name"),
                retry_count=_int(p.retry_count, f + ".retry_count", 0, UINT32_MAX),
                children=id_list(p.children, f + ".children"),
                context_item=_optional_json(p.context_item, f + ".context_item"),
                predecessor_id=optional_id(p.predecessor_id, f + ".predecessor_id"),
                outcome=_optional_json(p.outcome, f + ".outcome"),
                scope=id_list(p.scope, f + ".scope"),
                extension_attributes=json_text(attrs, f + ".extension_attributes") if attrs else "{}",
            )
        )
    check_unique_pointer_ids([row.id for row in rows])
    return rows


def event_row(e: Event) -> EventRow:
    """The ``events`` row of an event (its id may be empty)."""
    if not isinstance(e, Event):
        raise InvalidArgument("expected an Event")
    return EventRow(
        id=check_id(e.id, "event.id", required=False),
        event_name=check_id(e.event_name, "event.event_name", required=False),
        event_key=check_id(e.event_key, "event.event_key", required=False),
        event_data=json_text(e.event_data, "event.event_data"),
        event_time=micros(e.event_time, "event.event_time"),
        is_processed=1 if check_flag(e.is_processed, "event.is_processed") else 0,
    )


def subscription_row(s: EventSubscription, field: str = "subscription") -> SubscriptionRow:
    """The ``event_subscriptions`` row of a subscription (its id may be empty)."""
    if not isinstance(s, EventSubscription):
        raise InvalidArgument(f"{field}: expected an EventSubscription", field=field)
    return SubscriptionRow(
        id=check_id(s.id, field + ".id", required=False),
        workflow_id=check_id(s.workflow_id, field + ".workflow_id"),
        step_id=_int(s.step_id, field + ".step_id", 0, UINT32_MAX),
        execution_pointer_id=check_id(s.execution_pointer_id, field + ".execution_pointer_id", required=False),
        event_name=check_id(s.event_name, field + ".event_name", required=False),
        event_key=check_id(s.event_key, field + ".event_key", required=False),
        subscribe_as_of=micros(s.subscribe_as_of, field + ".subscribe_as_of"),
        subscription_data=_optional_json(s.subscription_data, field + ".subscription_data"),
        external_token=optional_id(s.external_token, field + ".external_token"),
        external_worker_id=optional_id(s.external_worker_id, field + ".external_worker_id"),
        external_token_expiry=_optional_micros(s.external_token_expiry, field + ".external_token_expiry"),
    )


def command_row(c: ScheduledCommand) -> CommandRow:
    """The ``scheduled_commands`` row of a command."""
    if not isinstance(c, ScheduledCommand):
        raise InvalidArgument("expected a ScheduledCommand")
    return CommandRow(
        command_name=_enum(c.command_name, CommandName, "command.command_name"),
        data=check_id(c.data, "command.data", required=False),
        execute_time=_int(c.execute_time, "command.execute_time", 0, INT64_MAX),
    )


def error_row(e: ExecutionError, field: str) -> ErrorRow:
    """The ``execution_errors`` row of an error."""
    if not isinstance(e, ExecutionError):
        raise InvalidArgument(f"{field}: expected an ExecutionError", field=field)
    return ErrorRow(
        error_time=micros(e.error_time, field + ".error_time"),
        workflow_id=check_id(e.workflow_id, field + ".workflow_id", required=False),
        execution_pointer_id=check_id(e.execution_pointer_id, field + ".execution_pointer_id", required=False),
        message=_text(e.message, field + ".message"),
    )


# -- rows -> models ----------------------------------------------------------------------------


_EPOCH = EPOCH
_MICRO = timedelta(microseconds=1)
_POINTER_STATUS: dict[str, PointerStatus] = dict(PointerStatus.__members__)
_WORKFLOW_STATUS: dict[str, WorkflowStatus] = dict(WorkflowStatus.__members__)


def _json(text: str) -> Any:
    """The JSON value of stored text, as ``json.loads`` gives it (``decode_json``: msgspec where it
    gives the same value, ``json`` for the rest)."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return decode_json(text)


def _instant(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MICRO


def _load(text: str | None) -> Any:
    return None if text is None else _json(text)


# Models are built with positional arguments (less than half the cost of keywords): the order of
# their fields is checked here, once, so that a reordered model fails at import, not silently.
_POINTER_FIELDS = [
    "id",
    "step_id",
    "active",
    "status",
    "sleep_until",
    "persistence_data",
    "start_time",
    "end_time",
    "event_name",
    "event_key",
    "event_published",
    "event_data",
    "step_name",
    "retry_count",
    "children",
    "context_item",
    "predecessor_id",
    "outcome",
    "scope",
    "extension_attributes",
]
_WORKFLOW_FIELDS = [
    "id",
    "workflow_definition_id",
    "version",
    "name",
    "root_workflow_id",
    "description",
    "reference",
    "execution_pointers",
    "next_execution",
    "status",
    "data",
    "create_time",
    "complete_time",
    "revision",
]
if [f.name for f in fields(ExecutionPointer)] != _POINTER_FIELDS or [
    f.name for f in fields(WorkflowInstance)
] != _WORKFLOW_FIELDS:  # pragma: no cover - guards the positional construction below
    raise ImportError("wfe_client.models changed the order of the fields _rows builds models with")


def _pointer_from_row(r: PointerRow) -> ExecutionPointer:
    (
        _,
        _,
        pid,
        step_id,
        active,
        status,
        sleep_until,
        persistence_data,
        start_time,
        end_time,
        event_name,
        event_key,
        event_published,
        event_data,
        step_name,
        retry_count,
        children,
        context_item,
        predecessor_id,
        outcome,
        scope,
        extension_attributes,
    ) = r
    return ExecutionPointer(
        pid,
        step_id,
        bool(active),
        _POINTER_STATUS[status],
        None if sleep_until is None else _EPOCH + sleep_until * _MICRO,
        None if persistence_data is None else _json(persistence_data),
        None if start_time is None else _EPOCH + start_time * _MICRO,
        None if end_time is None else _EPOCH + end_time * _MICRO,
        event_name,
        event_key,
        bool(event_published),
        None if event_data is None else _json(event_data),
        step_name,
        retry_count,
        _json(children),
        None if context_item is None else _json(context_item),
        predecessor_id,
        None if outcome is None else _json(outcome),
        _json(scope),
        _json(extension_attributes),
    )


def workflow_from_rows(r: WorkflowRow, pointers: Sequence[PointerRow]) -> WorkflowInstance:
    """The workflow stored as ``r`` with its pointers' rows."""
    complete_time = r.complete_time
    return WorkflowInstance(
        r.id,
        r.workflow_definition_id,
        r.version,
        r.name,
        r.root_workflow_id,
        r.description,
        r.reference,
        [_pointer_from_row(p) for p in pointers],
        r.next_execution,
        _WORKFLOW_STATUS[r.status],
        _json(r.data),
        _EPOCH + r.create_time * _MICRO,
        None if complete_time is None else _EPOCH + complete_time * _MICRO,
        r.revision,
    )


def event_from_row(r: EventRow) -> Event:
    """The event stored as ``r``."""
    return Event(
        id=r.id,
        event_name=r.event_name,
        event_key=r.event_key,
        event_data=_json(r.event_data),
        event_time=from_micros(r.event_time),
        is_processed=bool(r.is_processed),
    )


def subscription_from_row(r: SubscriptionRow) -> EventSubscription:
    """The subscription stored as ``r``."""
    return EventSubscription(
        id=r.id,
        workflow_id=r.workflow_id,
        step_id=r.step_id,
        execution_pointer_id=r.execution_pointer_id,
        event_name=r.event_name,
        event_key=r.event_key,
        subscribe_as_of=from_micros(r.subscribe_as_of),
        subscription_data=_load(r.subscription_data),
        external_token=r.external_token,
        external_worker_id=r.external_worker_id,
        external_token_expiry=_instant(r.external_token_expiry),
    )


def command_from_row(r: CommandRow) -> ScheduledCommand:
    """The command stored as ``r``."""
    return ScheduledCommand(CommandName[r.command_name], r.data, r.execute_time)
