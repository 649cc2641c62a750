"""The exceptions of the persistence interface, one per machine-readable reason.

Every error has a ``reason`` (the ``google.rpc.ErrorInfo`` reason on the wire) and a ``code``
(the name of the canonical gRPC status code it travels as), so both providers raise the same
exception for the same failure and other languages can tell errors apart.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERROR_DOMAIN",
    "WfeError",
    "NotFound",
    "WorkflowNotFound",
    "EventNotFound",
    "SubscriptionNotFound",
    "AlreadyExists",
    "WorkflowAlreadyExists",
    "WorkflowNameTaken",
    "EventAlreadyExists",
    "SubscriptionAlreadyExists",
    "InvalidArgument",
    "LeaseLost",
    "StorageFull",
    "StorageUnavailable",
    "RevisionConflict",
    "WatcherFellBehind",
    "error_for_reason",
]

ERROR_DOMAIN = "wfe-sqlite"
"""The ``google.rpc.ErrorInfo.domain`` of every error this project raises."""


class WfeError(Exception):
    """Base class of every persistence error."""

    reason: ClassVar[str] = "INTERNAL"
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str = "", **metadata: str) -> None:
        super().__init__(message or self.reason)
        self.message = message or self.reason
        self.metadata: dict[str, str] = metadata


class NotFound(WfeError):
    """The addressed record does not exist."""

    reason = "NOT_FOUND"
    code = "NOT_FOUND"


class WorkflowNotFound(NotFound):
    """No workflow with that id (or name)."""

    reason = "WORKFLOW_NOT_FOUND"


class EventNotFound(NotFound):
    """No event with that id."""

    reason = "EVENT_NOT_FOUND"


class SubscriptionNotFound(NotFound):
    """No subscription with that id (or, when clearing a token, none held with that token)."""

    reason = "SUBSCRIPTION_NOT_FOUND"


class AlreadyExists(WfeError):
    """A record with that id or unique name already exists."""

    reason = "ALREADY_EXISTS"
    code = "ALREADY_EXISTS"


class WorkflowAlreadyExists(AlreadyExists):
    """A workflow with that id already exists."""

    reason = "WORKFLOW_ALREADY_EXISTS"


class WorkflowNameTaken(AlreadyExists):
    """Another workflow already has that name."""

    reason = "WORKFLOW_NAME_TAKEN"


class EventAlreadyExists(AlreadyExists):
    """An event with that id already exists."""

    reason = "EVENT_ALREADY_EXISTS"


class SubscriptionAlreadyExists(AlreadyExists):
    """A subscription with that id already exists."""

    reason = "SUBSCRIPTION_ALREADY_EXISTS"


class InvalidArgument(WfeError, ValueError):
    """The request is malformed; ``metadata['field']`` names the offending field when known."""

    reason = "INVALID_ARGUMENT"
    code = "INVALID_ARGUMENT"


class LeaseLost(WfeError):
    """The command lease no longer holds the command (it expired, or was already settled)."""

    reason = "LEASE_LOST"
    code = "FAILED_PRECONDITION"


class StorageFull(WfeError):
    """The database could not grow (disk full or size limit); nothing was written."""

    reason = "STORAGE_FULL"
    code = "RESOURCE_EXHAUSTED"


class StorageUnavailable(WfeError):
    """The database could not be reached (locked too long, I/O error); retry later."""

    reason = "STORAGE_UNAVAILABLE"
    code = "UNAVAILABLE"


class RevisionConflict(WfeError):
    """The stored workflow's revision is not the one the persist expected (another host wrote it
    since it was read); nothing was written. ``metadata['id']`` names the workflow,
    ``metadata['expected']`` and ``metadata['stored']`` the revisions when known."""

    reason = "REVISION_CONFLICT"
    code = "ABORTED"


class WatcherFellBehind(WfeError):
    """A lifecycle watch fell too far behind the published events and was ended by the server."""

    reason = "WATCHER_FELL_BEHIND"
    code = "RESOURCE_EXHAUSTED"


_BY_REASON: dict[str, type[WfeError]] = {
    cls.reason: cls
    for cls in (
        WorkflowNotFound,
        EventNotFound,
        SubscriptionNotFound,
        WorkflowAlreadyExists,
        WorkflowNameTaken,
        EventAlreadyExists,
        SubscriptionAlreadyExists,
        InvalidArgument,
        LeaseLost,
        StorageFull,
        StorageUnavailable,
        RevisionConflict,
        WatcherFellBehind,
        NotFound,
        AlreadyExists,
    )
}


def error_for_reason(reason: str) -> type[WfeError] | None:
    """The exception class for an ``ErrorInfo`` reason, or None if the reason is unknown."""
    return _BY_REASON.get(reason)
