"""Pure conversions between the visibility models and the ``VisibilityService`` messages.

Like ``_convert``: reading a message validates it (``InvalidArgument`` naming the field).
"""

from __future__ import annotations

from typing import Optional

from wfe.persistence.v1 import visibility_pb2, workflows_pb2

from ._convert import instant, optional_instant, timestamp
from ._errors import InvalidArgument
from ._models import WorkflowStatus
from ._visibility import PURGED_BY_DEFAULT, WorkflowFilter, WorkflowSummary

__all__ = [
    "status_to_proto",
    "statuses_from_proto",
    "filter_to_proto",
    "filter_from_proto",
    "summary_to_proto",
    "summary_from_proto",
    "purge_statuses_from_proto",
]

_STATUS_TO = {s: workflows_pb2.WorkflowStatus.Value(f"WORKFLOW_STATUS_{s.name}") for s in WorkflowStatus}
_STATUS_FROM = {v: k for k, v in _STATUS_TO.items()}


def status_to_proto(status: WorkflowStatus) -> int:
    return _STATUS_TO[status]


def _status_from_proto(value: int, field: str) -> WorkflowStatus:
    try:
        return _STATUS_FROM[value]
    except KeyError:
        raise InvalidArgument(f"{field}: {value} is not a WorkflowStatus", field=field) from None


def statuses_from_proto(values: list[int], field: str) -> tuple[WorkflowStatus, ...]:
    """Distinct statuses of a repeated field; UNSPECIFIED or an unknown number is InvalidArgument."""
    found: list[WorkflowStatus] = []
    for i, value in enumerate(values):
        status = _status_from_proto(value, f"{field}[{i}]")
        if status not in found:
            found.append(status)
    return tuple(found)


def purge_statuses_from_proto(values: list[int]) -> tuple[WorkflowStatus, ...]:
    """The statuses of a PurgeWorkflowsRequest: empty means COMPLETE and TERMINATED."""
    return statuses_from_proto(values, "statuses") or PURGED_BY_DEFAULT


def filter_to_proto(f: WorkflowFilter) -> visibility_pb2.WorkflowFilter:
    msg = visibility_pb2.WorkflowFilter(
        statuses=[_STATUS_TO[s] for s in f.statuses], workflow_definition_id=f.definition_id or ""
    )
    if f.reference is not None:
        msg.reference = f.reference
    if f.created_after is not None:
        msg.created_after.CopyFrom(timestamp(f.created_after, "created_after"))
    if f.created_before is not None:
        msg.created_before.CopyFrom(timestamp(f.created_before, "created_before"))
    return msg


def filter_from_proto(msg: Optional[visibility_pb2.WorkflowFilter], field: str = "filter") -> WorkflowFilter:
    if msg is None:
        return WorkflowFilter()
    return WorkflowFilter(
        statuses=statuses_from_proto(list(msg.statuses), f"{field}.statuses"),
        definition_id=msg.workflow_definition_id or None,
        reference=msg.reference if msg.HasField("reference") else None,
        created_after=optional_instant(msg, "created_after", field),
        created_before=optional_instant(msg, "created_before", field),
    )


def summary_to_proto(s: WorkflowSummary) -> visibility_pb2.WorkflowSummary:
    msg = visibility_pb2.WorkflowSummary(
        id=s.id,
        name=s.name,
        workflow_definition_id=s.workflow_definition_id,
        version=s.version,
        status=_STATUS_TO[s.status],
        create_time=timestamp(s.create_time, "create_time"),
    )
    if s.reference is not None:
        msg.reference = s.reference
    if s.description is not None:
        msg.description = s.description
    if s.complete_time is not None:
        msg.complete_time.CopyFrom(timestamp(s.complete_time, "complete_time"))
    if s.next_execution is not None:
        msg.next_execution = s.next_execution
    return msg


def summary_from_proto(msg: visibility_pb2.WorkflowSummary, field: str = "workflow") -> WorkflowSummary:
    return WorkflowSummary(
        id=msg.id,
        name=msg.name,
        workflow_definition_id=msg.workflow_definition_id,
        version=msg.version,
        status=_status_from_proto(msg.status, f"{field}.status"),
        reference=msg.reference if msg.HasField("reference") else None,
        description=msg.description if msg.HasField("description") else None,
        create_time=instant(msg, "create_time", field),
        complete_time=optional_instant(msg, "complete_time", field),
        next_execution=msg.next_execution if msg.HasField("next_execution") else None,
    )
