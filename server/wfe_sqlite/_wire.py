"""Straight conversions between workflow rows and ``wfe.persistence.v1`` messages (the hot RPCs).

The model path (message -> dataclass -> row on writes, row -> dataclass -> message on reads)
builds a dataclass per workflow and per pointer, a ``datetime`` per instant, and on reads parses
every stored JSON text only to dump it again. The server has the rows and the messages at hand, so
these go from one to the other directly: reads pass the stored JSON text through (it was written
compact by ``json_text``), writes validate exactly as ``workflow_from_proto`` + ``workflow_row``
do (same ``InvalidArgument``, same field names) and store the same text. ``tests/test_wire.py``
checks both paths against each other on generated messages.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from wfe.persistence.v1 import subscriptions_pb2, workflows_pb2
from wfe_client.conversion import POINTER_STATUS, WORKFLOW_STATUS, timestamp_micros
from wfe_client.errors import InvalidArgument
from wfe_client.jsoncodec import json_text, parse_json
from wfe_client.limits import INT64_MAX

from ._rows import (
    PointerRow,
    StoredWorkflow,
    SubscriptionRow,
    WorkflowRow,
    check_id,
    check_unique_pointer_ids,
    id_list,
    new_ids,
    optional_id,
)

__all__ = [
    "add_workflow_message",
    "new_subscription_rows_from_messages",
    "workflow_message",
    "workflow_rows_from_message",
]

_WorkflowInstance = workflows_pb2.WorkflowInstance
_ExecutionPointer = workflows_pb2.ExecutionPointer
_POINTER_STATUS_NUMBER = POINTER_STATUS.name_to_proto
_WORKFLOW_STATUS_NUMBER = WORKFLOW_STATUS.name_to_proto


# -- rows -> message ---------------------------------------------------------------------------


_US = timedelta(microseconds=1)


def duration_field(
    msg: Any,
    name: str,
    default: timedelta,
    low: timedelta,
    high: timedelta,
    *,
    field: str | None = None,
    between: str | None = None,
) -> timedelta:
    """A Duration field: absent or zero is ``default``; otherwise it must lie in [low, high]
    (``between`` words the bounds in the refusal), compared to the nanosecond and then rounded down
    to the microsecond. Rounding first took 60 s + 1 ns as a wait of 60 s and 1 h + 1 ns as an hour."""
    field = field or name
    if not msg.HasField(name):
        return default
    value = getattr(msg, name)
    if value.seconds == 0 and value.nanos == 0:
        return default
    nanos = value.seconds * 1_000_000_000 + value.nanos
    if value.seconds < 0 or not 0 <= value.nanos <= 999_999_999 or not _ns(low) <= nanos <= _ns(high):
        raise InvalidArgument(f"{field}: must be between {between or f'{low} and {high}'}", field=field)
    return timedelta(microseconds=nanos // 1000)


def _ns(value: timedelta) -> int:
    return value // _US * 1000


def _timestamp(micros: int | None) -> dict[str, int] | None:
    """A Timestamp field's constructor value: a dict is set in place (a Timestamp object would be
    built and then copied); None leaves the field unset."""
    if micros is None:
        return None
    seconds, rest = divmod(micros, 1_000_000)
    return {"seconds": seconds, "nanos": rest * 1000}


def pointer_message(r: PointerRow, new: Callable[..., Any] = _ExecutionPointer) -> workflows_pb2.ExecutionPointer:
    """A pointer message from its row, made by ``new``: the message class, or the ``add`` of a
    repeated field, which builds it in place instead of building it and copying it in.

    One constructor call: upb treats a None keyword as not set, which is what the optional columns'
    NULL means, and takes the stored 0/1 for the bools.
    """
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
        attributes,
    ) = r
    msg: workflows_pb2.ExecutionPointer = new(
        id=pid,
        step_id=step_id,
        active=active,
        status=_POINTER_STATUS_NUMBER[status],
        sleep_until=None if sleep_until is None else _timestamp(sleep_until),
        persistence_data=persistence_data,
        start_time=None if start_time is None else _timestamp(start_time),
        end_time=None if end_time is None else _timestamp(end_time),
        event_name=event_name,
        event_key=event_key,
        event_published=event_published,
        event_data=event_data,
        step_name=step_name,
        retry_count=retry_count,
        children=None if children == "[]" else json.loads(children),
        context_item=context_item,
        predecessor_id=predecessor_id,
        outcome=outcome,
        scope=None if scope == "[]" else json.loads(scope),
    )
    if attributes != "{}":
        msg.extension_attributes.update(
            {k: json_text(v, "execution_pointer.extension_attributes") for k, v in json.loads(attributes).items()}
        )
    return msg


def workflow_message(
    row: WorkflowRow, pointers: Sequence[PointerRow], new: Callable[..., Any] = _WorkflowInstance
) -> workflows_pb2.WorkflowInstance:
    """A workflow message from its row and its pointers' rows, in order, made by ``new`` (the
    message class, or the ``add`` of a repeated field: see ``pointer_message``)."""
    msg: workflows_pb2.WorkflowInstance = new(
        id=row.id,
        name=row.name,
        root_workflow_id=row.root_workflow_id,
        workflow_definition_id=row.workflow_definition_id,
        version=row.version,
        description=row.description,
        reference=row.reference,
        next_execution=row.next_execution,
        status=_WORKFLOW_STATUS_NUMBER[row.status],
        data=row.data,
        create_time=_timestamp(row.create_time),
        complete_time=_timestamp(row.complete_time),
        revision=row.revision,
    )
    add = msg.execution_pointers.add
    for pointer in pointers:
        pointer_message(pointer, add)
    return msg


OFF_LOOP_POINTERS = 1000
"""Above this many execution pointers, a workflow is converted (message to rows, rows to message) on a
worker thread, not on the event loop: ~20-40 us a pointer, so one workflow of 100,000 pointers held
every other call of every client for 2-5 s. Below it the hand-off would cost more than it spares."""


async def workflow_message_off_loop(row: WorkflowRow, pointers: Sequence[PointerRow]) -> workflows_pb2.WorkflowInstance:
    """``workflow_message``, on a worker thread when the workflow has many pointers."""
    if len(pointers) > OFF_LOOP_POINTERS:
        return await asyncio.to_thread(workflow_message, row, pointers)
    return workflow_message(row, pointers)


async def add_workflow_message(workflows: Any, row: WorkflowRow, pointers: Sequence[PointerRow]) -> None:
    """Append the workflow's message to the repeated field ``workflows``: built in place (no copy)
    on the loop, or built on a worker thread and copied in when the workflow has many pointers."""
    if len(pointers) > OFF_LOOP_POINTERS:
        workflows.append(await asyncio.to_thread(workflow_message, row, pointers))
    else:
        workflow_message(row, pointers, workflows.add)


# -- message -> rows ---------------------------------------------------------------------------


def _instant(msg: Any, name: str, field: str) -> int | None:
    return timestamp_micros(getattr(msg, name), f"{field}.{name}") if msg.HasField(name) else None


def _json(msg: Any, name: str, field: str) -> str | None:
    if not msg.HasField(name):
        return None
    path = f"{field}.{name}"
    return json_text(parse_json(getattr(msg, name), path), path)


def _text(msg: Any, name: str) -> str | None:
    return getattr(msg, name) if msg.HasField(name) else None


def pointer_row(workflow_id: str, position: int, p: workflows_pb2.ExecutionPointer, field: str) -> PointerRow:
    """The row of a pointer message, validated as ``pointer_rows`` does."""
    attributes = p.extension_attributes
    return PointerRow(
        workflow_id=workflow_id,
        position=position,
        id=check_id(p.id, field + ".id"),
        step_id=p.step_id,
        active=1 if p.active else 0,
        status=POINTER_STATUS.decode_name(p.status, field + ".status"),
        sleep_until=_instant(p, "sleep_until", field),
        persistence_data=_json(p, "persistence_data", field),
        start_time=_instant(p, "start_time", field),
        end_time=_instant(p, "end_time", field),
        event_name=optional_id(_text(p, "event_name"), field + ".event_name"),
        event_key=optional_id(_text(p, "event_key"), field + ".event_key"),
        event_published=1 if p.event_published else 0,
        event_data=_json(p, "event_data", field),
        step_name=optional_id(_text(p, "step_name"), field + ".step_name"),
        retry_count=p.retry_count,
        children=id_list(list(p.children), field + ".children"),
        context_item=_json(p, "context_item", field),
        predecessor_id=optional_id(_text(p, "predecessor_id"), field + ".predecessor_id"),
        outcome=_json(p, "outcome", field),
        scope=id_list(list(p.scope), field + ".scope"),
        extension_attributes=json_text(
            {k: parse_json(v, f"{field}.extension_attributes[{k!r}]") for k, v in attributes.items()},
            field + ".extension_attributes",
        )
        if attributes
        else "{}",
    )


def workflow_rows_from_message(msg: workflows_pb2.WorkflowInstance, field: str = "workflow") -> StoredWorkflow:
    """The row and pointer rows of a workflow message (the id may be empty: see ``with_workflow_id``).

    The same checks and messages as ``workflow_from_proto`` followed by ``workflow_row`` and
    ``pointer_rows``.
    """
    status = WORKFLOW_STATUS.decode_name(msg.status, f"{field}.status")
    if not msg.HasField("create_time"):
        raise InvalidArgument(f"{field}.create_time: required", field=f"{field}.create_time")
    data = parse_json(msg.data, f"{field}.data")
    create_time = timestamp_micros(msg.create_time, f"{field}.create_time")
    complete_time = _instant(msg, "complete_time", field)
    next_execution = msg.next_execution if msg.HasField("next_execution") else None
    if next_execution is not None and not 0 <= next_execution <= INT64_MAX:
        raise InvalidArgument(
            f"workflow.next_execution: {next_execution} is out of range [0, {INT64_MAX}]",
            field="workflow.next_execution",
        )
    wid = check_id(msg.id, "workflow.id", required=False)
    root = _text(msg, "root_workflow_id")
    row = WorkflowRow(
        id=wid,
        name=check_id(msg.name, "workflow.name", required=False),
        root_workflow_id=None if root is None else check_id(root, "workflow.root_workflow_id", required=False),
        workflow_definition_id=check_id(msg.workflow_definition_id, "workflow.workflow_definition_id"),
        version=msg.version,
        description=_text(msg, "description"),
        reference=_text(msg, "reference"),
        next_execution=next_execution,
        status=status,
        data=json_text(data, "workflow.data"),
        create_time=create_time,
        complete_time=complete_time,
        revision=max(msg.revision, 0),  # ignored on input (the persist requests carry expected_revision)
    )
    pointers = [
        pointer_row(wid, i, p, f"{field}.execution_pointers[{i}]") for i, p in enumerate(msg.execution_pointers)
    ]
    check_unique_pointer_ids([p.id for p in pointers], field)
    return row, pointers


async def workflow_rows_off_loop(msg: workflows_pb2.WorkflowInstance) -> StoredWorkflow:
    """``workflow_rows_from_message``, on a worker thread when the workflow has many pointers."""
    if len(msg.execution_pointers) > OFF_LOOP_POINTERS:
        return await asyncio.to_thread(workflow_rows_from_message, msg)
    return workflow_rows_from_message(msg)


def new_subscription_rows_from_messages(
    messages: Sequence[subscriptions_pb2.EventSubscription],
) -> list[SubscriptionRow]:
    """The rows of the subscriptions of a persist request, each with an id (a fresh one when empty),
    straight from the messages: the checks of ``subscription_from_proto`` + ``subscription_row``
    (then ``with_ids``), without a dataclass and a ``datetime`` per subscription.

    Only a fast path for valid requests: its ``InvalidArgument`` names no field (``subscriptions``)
    and need not be the one the model path raises first (that one checks every message before any
    row, and the servicer checks ``workflow.id`` in between). On ``InvalidArgument`` the caller runs
    the model path, which raises the refusal with its field. ``tests/test_wire.py`` checks that
    both give the same rows.
    """
    f = "subscriptions"
    ids = iter(new_ids(sum(1 for m in messages if not m.id)))
    rows: list[SubscriptionRow] = []
    append = rows.append
    for m in messages:
        if not m.HasField("subscribe_as_of"):
            raise InvalidArgument(f"{f}: subscribe_as_of required", field=f)
        subscribe_as_of = timestamp_micros(m.subscribe_as_of, f)
        data = _subscription_data(m, f) if m.HasField("subscription_data") else None
        expiry = _instant(m, "external_token_expiry", f) if m.HasField("external_token_expiry") else None
        sid = m.id
        # The columns in order, as SubscriptionRow(...) without its Python __new__ frame.
        append(
            _subscription_row(
                (
                    check_id(sid, f, required=False) if sid else next(ids),
                    check_id(m.workflow_id, f),
                    m.step_id,
                    check_id(m.execution_pointer_id, f, required=False),
                    check_id(m.event_name, f, required=False),
                    check_id(m.event_key, f, required=False),
                    subscribe_as_of,
                    data,
                    check_id(m.external_token, f, required=False) if m.HasField("external_token") else None,
                    check_id(m.external_worker_id, f, required=False) if m.HasField("external_worker_id") else None,
                    expiry,
                )
            )
        )
    return rows


def _subscription_data(m: subscriptions_pb2.EventSubscription, field: str) -> str | None:
    """The stored text of a subscription's data: JSON ``null`` is no data (None), as in the model,
    unlike a pointer's optional JSON on this path (see ``pointer_row``)."""
    value = parse_json(m.subscription_data, field)
    return None if value is None else json_text(value, field)


_subscription_row: Callable[[Sequence[Any]], SubscriptionRow] = functools.partial(tuple.__new__, SubscriptionRow)
