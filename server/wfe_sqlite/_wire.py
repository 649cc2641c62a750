"""Straight conversions between database rows and ``wfe.persistence.v1`` messages (the hot RPCs).

The model path (message -> dataclass -> row on writes, row -> dataclass -> message on reads)
builds a dataclass per workflow and per pointer, a ``datetime`` per instant, and on reads parses
every stored JSON text only to dump it again. The server has the rows and the messages at hand, so
these go from one to the other directly: reads pass the stored JSON text through (it was written
compact by ``dump_json``), writes validate exactly as ``workflow_from_proto`` + ``workflow_row``
do (same ``InvalidArgument``, same field names) and store the same text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

from google.protobuf import timestamp_pb2

from wfe.persistence.v1 import workflows_pb2
from wfe_client import InvalidArgument, PointerStatus, WorkflowStatus
from wfe_client._convert import _micros, json_text, parse_json

from ._rows import check_id, dump_json

__all__ = ["workflow_message", "workflow_rows_from_message"]

_Timestamp = timestamp_pb2.Timestamp
_WorkflowInstance = workflows_pb2.WorkflowInstance
_ExecutionPointer = workflows_pb2.ExecutionPointer

_WORKFLOW_STATUS_TO = {s.name: workflows_pb2.WorkflowStatus.Value(f"WORKFLOW_STATUS_{s.name}") for s in WorkflowStatus}
_WORKFLOW_STATUS_FROM = {v: k for k, v in _WORKFLOW_STATUS_TO.items()}
_POINTER_STATUS_TO = {s.name: workflows_pb2.PointerStatus.Value(f"POINTER_STATUS_{s.name}") for s in PointerStatus}
_POINTER_STATUS_FROM = {v: k for k, v in _POINTER_STATUS_TO.items()}
_INT64_MAX = 2**63 - 1


def _ts(micros: int) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return _Timestamp(seconds=seconds, nanos=rest * 1000)


# -- rows -> message ---------------------------------------------------------------------------


def _strings(text: str) -> list[str]:
    return [] if text == "[]" else json.loads(text)


def pointer_message(r: Sequence[Any]) -> workflows_pb2.ExecutionPointer:
    """A pointer message from the columns of ``_POINTER_COLUMNS`` (after workflow_id, position)."""
    (pid, step_id, active, status, sleep_until, persistence_data, start_time, end_time, event_name, event_key,
     event_published, event_data, step_name, retry_count, children, context_item, predecessor_id, outcome, scope,
     attributes) = r
    msg = _ExecutionPointer(
        id=pid,
        step_id=step_id,
        active=bool(active),
        status=_POINTER_STATUS_TO[status],
        event_published=bool(event_published),
        retry_count=retry_count,
        children=_strings(children),
        scope=_strings(scope),
    )
    if attributes != "{}":
        msg.extension_attributes.update(
            {k: json_text(v, "execution_pointer.extension_attributes") for k, v in json.loads(attributes).items()}
        )
    if sleep_until is not None:
        msg.sleep_until.CopyFrom(_ts(sleep_until))
    if persistence_data is not None:
        msg.persistence_data = persistence_data
    if start_time is not None:
        msg.start_time.CopyFrom(_ts(start_time))
    if end_time is not None:
        msg.end_time.CopyFrom(_ts(end_time))
    if event_name is not None:
        msg.event_name = event_name
    if event_key is not None:
        msg.event_key = event_key
    if event_data is not None:
        msg.event_data = event_data
    if step_name is not None:
        msg.step_name = step_name
    if context_item is not None:
        msg.context_item = context_item
    if predecessor_id is not None:
        msg.predecessor_id = predecessor_id
    if outcome is not None:
        msg.outcome = outcome
    return msg


def workflow_message(row: Sequence[Any], pointers: Sequence[Sequence[Any]]) -> workflows_pb2.WorkflowInstance:
    """A workflow message from a ``_READ_WORKFLOW_COLUMNS`` row and its pointers' rows, in order."""
    (wid, name, root, definition, version, description, reference, next_execution, status, data, create_time,
     complete_time) = row[:12]
    msg = _WorkflowInstance(
        revision=row[12] if len(row) > 12 else 0,
        id=wid,
        name=name,
        workflow_definition_id=definition,
        version=version,
        execution_pointers=[pointer_message(p) for p in pointers],
        status=_WORKFLOW_STATUS_TO[status],
        data=data,
        create_time=_ts(create_time),
    )
    if root is not None:
        msg.root_workflow_id = root
    if description is not None:
        msg.description = description
    if reference is not None:
        msg.reference = reference
    if next_execution is not None:
        msg.next_execution = next_execution
    if complete_time is not None:
        msg.complete_time.CopyFrom(_ts(complete_time))
    return msg


# -- message -> rows ---------------------------------------------------------------------------


def _instant(msg: Any, name: str, field: str) -> Optional[int]:
    return _micros(getattr(msg, name), f"{field}.{name}") if msg.HasField(name) else None


def _json(msg: Any, name: str, field: str) -> Optional[str]:
    if not msg.HasField(name):
        return None
    path = f"{field}.{name}"
    return dump_json(parse_json(getattr(msg, name), path), path)


def _text(msg: Any, name: str) -> Optional[str]:
    return getattr(msg, name) if msg.HasField(name) else None


def _pointer_status(value: int, field: str) -> str:
    try:
        return _POINTER_STATUS_FROM[value]
    except KeyError:
        raise InvalidArgument(f"{field}.status: {value} is not a valid PointerStatus", field=f"{field}.status") from None


def pointer_row(workflow_id: str, position: int, p: workflows_pb2.ExecutionPointer, field: str) -> tuple[Any, ...]:
    """The ``execution_pointers`` row of a pointer message, validated as ``pointer_rows`` does."""
    attributes = p.extension_attributes
    return (
        workflow_id,
        position,
        check_id(p.id, field + ".id"),
        p.step_id,
        1 if p.active else 0,
        _pointer_status(p.status, field),
        _instant(p, "sleep_until", field),
        _json(p, "persistence_data", field),
        _instant(p, "start_time", field),
        _instant(p, "end_time", field),
        _text(p, "event_name"),
        _text(p, "event_key"),
        1 if p.event_published else 0,
        _json(p, "event_data", field),
        _text(p, "step_name"),
        p.retry_count,
        dump_json(list(p.children), field + ".children") if p.children else "[]",
        _json(p, "context_item", field),
        _text(p, "predecessor_id"),
        _json(p, "outcome", field),
        dump_json(list(p.scope), field + ".scope") if p.scope else "[]",
        dump_json(
            {k: parse_json(v, f"{field}.extension_attributes[{k!r}]") for k, v in attributes.items()},
            field + ".extension_attributes",
        )
        if attributes
        else "{}",
    )


def workflow_rows_from_message(
    msg: workflows_pb2.WorkflowInstance, field: str = "workflow"
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """The ``workflows`` row (a list: the id may still be filled in) and pointer rows of a message.

    The same checks and messages as ``workflow_from_proto`` followed by ``workflow_row`` and
    ``pointer_rows``; pointer rows carry the message's id (the caller replaces an empty one).
    """
    try:
        status = _WORKFLOW_STATUS_FROM[msg.status]
    except KeyError:
        raise InvalidArgument(
            f"{field}.status: {msg.status} is not a valid WorkflowStatus", field=f"{field}.status"
        ) from None
    if not msg.HasField("create_time"):
        raise InvalidArgument(f"{field}.create_time: required", field=f"{field}.create_time")
    data = parse_json(msg.data, f"{field}.data")
    create_time = _micros(msg.create_time, f"{field}.create_time")
    complete_time = _instant(msg, "complete_time", field)
    next_execution = msg.next_execution if msg.HasField("next_execution") else None
    if next_execution is not None and not 0 <= next_execution <= _INT64_MAX:
        raise InvalidArgument(
            f"workflow.next_execution: {next_execution} is out of range [0, {_INT64_MAX}]",
            field="workflow.next_execution",
        )
    wid = check_id(msg.id, "workflow.id", required=False)
    root = _text(msg, "root_workflow_id")
    row = [
        wid,
        check_id(msg.name, "workflow.name", required=False),
        None if root is None else check_id(root, "workflow.root_workflow_id", required=False),
        check_id(msg.workflow_definition_id, "workflow.workflow_definition_id"),
        msg.version,
        _text(msg, "description"),
        _text(msg, "reference"),
        next_execution,
        status,
        dump_json(data, "workflow.data"),
        create_time,
        complete_time,
    ]
    pointers = [
        pointer_row(wid, i, p, f"{field}.execution_pointers[{i}]") for i, p in enumerate(msg.execution_pointers)
    ]
    return row, pointers
