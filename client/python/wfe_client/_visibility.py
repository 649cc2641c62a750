"""Visibility models: workflow summaries, pages of them, search results, and the filter both providers check."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Union

from ._errors import InvalidArgument
from ._models import WorkflowStatus
from ._time import require_aware

__all__ = [
    "WorkflowSummary",
    "WorkflowPage",
    "WorkflowSearchPage",
    "WorkflowFilter",
    "StatusFilter",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_QUERY_CHARS",
    "PURGED_BY_DEFAULT",
    "workflow_filter",
    "page_size",
    "skip_take",
    "purge_statuses",
]

DEFAULT_PAGE_SIZE = 100
"""Summaries per page (or search window) when none is given."""
MAX_PAGE_SIZE = 1000
"""Larger pages and windows are capped to this."""
MAX_QUERY_CHARS = 1024
"""Longest search query accepted, in characters."""
PURGED_BY_DEFAULT = (WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED)
"""The statuses ``purge_workflows`` deletes unless told otherwise."""

StatusFilter = Union[WorkflowStatus, Iterable[WorkflowStatus], None]
"""One status, a collection of them (any of them matches), or None for every status."""


@dataclass
class WorkflowSummary:
    """A workflow without its pointers and data, as lists and searches return it."""

    id: str
    """Workflow id."""
    name: str
    """Workflow name."""
    workflow_definition_id: str
    """Id of the workflow definition."""
    version: int
    """Version of the workflow definition."""
    status: WorkflowStatus
    """Lifecycle state."""
    reference: Optional[str]
    """Caller's own reference, or None."""
    description: Optional[str]
    """Description, or None."""
    create_time: datetime
    """When the workflow was created."""
    complete_time: Optional[datetime]
    """When it completed; None while it has not."""
    next_execution: Optional[int]
    """When it should run next, epoch milliseconds; None means never runnable."""


@dataclass
class WorkflowPage:
    """One page of ``list_workflows``: summaries newest first, and the token of the next page."""

    items: list[WorkflowSummary] = field(default_factory=list)
    """Summaries, newest ``create_time`` first (ties by id, descending)."""
    next_page_token: Optional[str] = None
    """Pass as ``page_token`` (with the same filters) for the next page; None on the last page."""


@dataclass
class WorkflowSearchPage:
    """One window of ``search_workflows``: matches best first, and how many match in all."""

    items: list[WorkflowSummary] = field(default_factory=list)
    """Matches in this window, best match first, then newest."""
    total: int = 0
    """How many workflows match in all (not just this window)."""


@dataclass(frozen=True)
class WorkflowFilter:
    """A checked filter of a list or search; every field set must match, unset fields match all."""

    statuses: tuple[WorkflowStatus, ...] = ()
    """Any of these (empty: every status)."""
    definition_id: Optional[str] = None
    """Only this workflow definition."""
    reference: Optional[str] = None
    """Only this exact reference."""
    created_after: Optional[datetime] = None
    """Only workflows created at or after this instant."""
    created_before: Optional[datetime] = None
    """Only workflows created before this instant."""


def _statuses(status: StatusFilter, field: str) -> tuple[WorkflowStatus, ...]:
    if status is None:
        return ()
    if isinstance(status, WorkflowStatus):
        return (status,)
    if isinstance(status, (str, bytes)) or not isinstance(status, Iterable):
        raise InvalidArgument(f"{field}: expected a WorkflowStatus or a collection of them, got {status!r}", field=field)
    found: list[WorkflowStatus] = []
    for item in status:
        if not isinstance(item, WorkflowStatus):
            raise InvalidArgument(f"{field}: expected WorkflowStatus members, got {item!r}", field=field)
        if item not in found:
            found.append(item)
    return tuple(found)


def _optional_text(value: object, field: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string or None, got {type(value).__name__}", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}: not valid Unicode text (lone surrogate)", field=field) from None
    return value


def _instant(value: object, field: str) -> Optional[datetime]:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    return require_aware(value, field)


def workflow_filter(
    status: StatusFilter = None,
    definition_id: Optional[str] = None,
    reference: Optional[str] = None,
    created_after: Optional[datetime] = None,
    created_before: Optional[datetime] = None,
) -> WorkflowFilter:
    """The checked ``WorkflowFilter`` of the keyword arguments of a list or search.

    ``status`` may be one status or a collection; an empty ``definition_id`` means every
    definition. A naive datetime is a ``ValueError``; anything else malformed ``InvalidArgument``.
    """
    definition = _optional_text(definition_id, "definition_id")
    return WorkflowFilter(
        statuses=_statuses(status, "status"),
        definition_id=definition or None,
        reference=_optional_text(reference, "reference"),
        created_after=_instant(created_after, "created_after"),
        created_before=_instant(created_before, "created_before"),
    )


def page_size(value: object, field: str = "page_size") -> int:
    """A page or window size: 1 and up, capped to ``MAX_PAGE_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{field}: must be a positive integer, got {value!r}", field=field)
    return min(value, MAX_PAGE_SIZE)


def skip_take(skip: object, take: object) -> tuple[int, int]:
    """A checked search window: ``skip`` >= 0, ``take`` from 1, capped to ``MAX_PAGE_SIZE``."""
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise InvalidArgument(f"skip: must be an integer >= 0, got {skip!r}", field="skip")
    return skip, page_size(take, "take")


def purge_statuses(statuses: object) -> tuple[WorkflowStatus, ...]:
    """The checked, non-empty statuses of a purge."""
    found = _statuses(statuses, "statuses")  # type: ignore[arg-type]
    if not found:
        raise InvalidArgument("statuses: name at least one status to purge", field="statuses")
    return found
