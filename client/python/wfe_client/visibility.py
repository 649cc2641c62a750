"""Visibility arguments both providers check the same way: the workflow filter, page sizes, windows
and purge statuses of ``list_workflows``, ``search_workflows`` and ``purge_workflows``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidArgument
from .limits import MAX_LIST_PAGE_SIZE, check_flag
from .models import WorkflowStatus
from .timeutil import require_aware

__all__ = [
    "NOT_A_PAGE_TOKEN",
    "PURGED_BY_DEFAULT",
    "StatusFilter",
    "WorkflowFilter",
    "dry_run",
    "page_size",
    "page_token",
    "purge_statuses",
    "query_text",
    "skip_take",
    "workflow_filter",
]

PURGED_BY_DEFAULT = (WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED)
"""The statuses ``purge_workflows`` deletes unless told otherwise."""

StatusFilter = WorkflowStatus | Iterable[WorkflowStatus] | None
"""One status, a collection of them (any of them matches), or None for every status."""


@dataclass(frozen=True)
class WorkflowFilter:
    """A checked filter of a list or search; every field set must match, unset fields match all."""

    statuses: tuple[WorkflowStatus, ...] = ()
    """Any of these (empty: every status)."""
    definition_id: str | None = None
    """Only this workflow definition."""
    reference: str | None = None
    """Only this exact reference."""
    created_after: datetime | None = None
    """Only workflows created at or after this instant."""
    created_before: datetime | None = None
    """Only workflows created before this instant."""


def _statuses(status: object, field: str) -> tuple[WorkflowStatus, ...]:
    if status is None:
        return ()
    if isinstance(status, WorkflowStatus):
        return (status,)
    if isinstance(status, (str, bytes)) or not isinstance(status, Iterable):
        raise InvalidArgument(
            f"{field}: expected a WorkflowStatus or a collection of them, got {status!r}", field=field
        )
    found: list[WorkflowStatus] = []
    for item in status:
        if not isinstance(item, WorkflowStatus):
            raise InvalidArgument(f"{field}: expected WorkflowStatus members, got {item!r}", field=field)
        if item not in found:
            found.append(item)
    return tuple(found)


NOT_A_PAGE_TOKEN = "page_token: not a token from a previous page of a list with these filters"
"""What a list says of a page token it did not hand out."""


def _well_formed(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}: not valid Unicode text (lone surrogate)", field=field) from None
    return value


def _optional_text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string or None, got {type(value).__name__}", field=field)
    return _well_formed(value, field)


def query_text(value: object) -> str:
    """A search's query text: a string of valid Unicode (its length and terms are checked where it is run)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"query: expected a string, got {type(value).__name__}", field="query")
    return _well_formed(value, "query")


def page_token(value: object) -> str | None:
    """A list's page token: None (the first page) or a string; one that cannot be a token the list
    handed out (not valid Unicode) is refused as any other such token."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"page_token: expected a string or None, got {type(value).__name__}", field="page_token")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(NOT_A_PAGE_TOKEN, field="page_token") from None
    return value


def dry_run(value: object) -> bool:
    """A purge's ``dry_run``: True or False only (a purge deletes; a mistyped flag must not)."""
    return check_flag(value, "dry_run")


def _instant(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    return require_aware(value, field)


def workflow_filter(
    status: StatusFilter = None,
    definition_id: str | None = None,
    reference: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> WorkflowFilter:
    """The checked ``WorkflowFilter`` of the keyword arguments of a list or search.

    ``status`` may be one status or a collection; an empty ``definition_id`` means every
    definition. A naive datetime is a ``ValueError``; anything else malformed ``InvalidArgument``.
    """
    return WorkflowFilter(
        statuses=_statuses(status, "status"),
        definition_id=_optional_text(definition_id, "definition_id") or None,
        reference=_optional_text(reference, "reference"),
        created_after=_instant(created_after, "created_after"),
        created_before=_instant(created_before, "created_before"),
    )


def page_size(value: object, field: str = "page_size") -> int:
    """A page or window size: 1 and up, capped to ``MAX_LIST_PAGE_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{field}: must be a positive integer, got {value!r}", field=field)
    return min(value, MAX_LIST_PAGE_SIZE)


def skip_take(skip: object, take: object) -> tuple[int, int]:
    """A checked search window: ``skip`` from 0 (below 2**31), ``take`` from 1, capped."""
    if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip < 2**31:
        raise InvalidArgument(f"skip: must be an integer from 0 to 2**31-1, got {skip!r}", field="skip")
    return skip, page_size(take, "take")


def purge_statuses(statuses: object) -> tuple[WorkflowStatus, ...]:
    """The checked, non-empty statuses of a purge."""
    found = _statuses(statuses, "statuses")
    if not found:
        raise InvalidArgument("statuses: name at least one status to purge", field="statuses")
    return found
