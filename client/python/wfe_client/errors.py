"""The exceptions of the persistence interface, one per machine-readable reason.

Every error has a ``reason`` (the ``google.rpc.ErrorInfo`` reason on the wire: the name of a
``wfe.persistence.v1.ErrorReason`` value) and a ``code`` (the name of the canonical gRPC status code
it travels as), so both providers raise the same exception for the same failure and other languages
can tell errors apart.
"""

from __future__ import annotations

from typing import ClassVar

from wfe.persistence.v1 import errors_pb2

__all__ = [
    "ERROR_DOMAIN",
    "AlreadyExists",
    "EventAlreadyExists",
    "EventNotFound",
    "InvalidArgument",
    "LeaseLost",
    "NotFound",
    "RevisionConflict",
    "StorageFull",
    "StorageUnavailable",
    "StreamIdle",
    "SubscriptionAlreadyExists",
    "SubscriptionNotFound",
    "TooManyWaitingDequeues",
    "TooManyWatchers",
    "Unauthenticated",
    "WatcherFellBehind",
    "WfeError",
    "WorkflowAlreadyExists",
    "WorkflowNameTaken",
    "WorkflowNotFound",
    "error_for_reason",
]

ERROR_DOMAIN = "wfe-sqlite"
"""The ``google.rpc.ErrorInfo.domain`` of every error this project raises."""

_REASON = errors_pb2.ErrorReason


def _reason(value: int) -> str:
    """The wire string of an ``ErrorReason`` value (its name)."""
    return _REASON.Name(value)


class WfeError(Exception):
    """Base class of every persistence error."""

    reason: ClassVar[str] = "INTERNAL"
    """The ErrorInfo reason (a generic one on the base classes, which the server never sends)."""
    code: ClassVar[str] = "INTERNAL"
    """Name of the gRPC status code."""

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

    reason = _reason(_REASON.WORKFLOW_NOT_FOUND)


class EventNotFound(NotFound):
    """No event with that id."""

    reason = _reason(_REASON.EVENT_NOT_FOUND)


class SubscriptionNotFound(NotFound):
    """No subscription with that id (or, when clearing a token, none held with that token)."""

    reason = _reason(_REASON.SUBSCRIPTION_NOT_FOUND)


class AlreadyExists(WfeError):
    """A record with that id or unique name already exists."""

    reason = "ALREADY_EXISTS"
    code = "ALREADY_EXISTS"


class WorkflowAlreadyExists(AlreadyExists):
    """A workflow with that id already exists."""

    reason = _reason(_REASON.WORKFLOW_ALREADY_EXISTS)


class WorkflowNameTaken(AlreadyExists):
    """Another workflow already has that name."""

    reason = _reason(_REASON.WORKFLOW_NAME_TAKEN)


class EventAlreadyExists(AlreadyExists):
    """An event with that id already exists."""

    reason = _reason(_REASON.EVENT_ALREADY_EXISTS)


class SubscriptionAlreadyExists(AlreadyExists):
    """A subscription with that id already exists."""

    reason = _reason(_REASON.SUBSCRIPTION_ALREADY_EXISTS)


class InvalidArgument(WfeError, ValueError):
    """The request is malformed; ``metadata['field']`` names the offending field when known."""

    reason = _reason(_REASON.INVALID_ARGUMENT)
    code = "INVALID_ARGUMENT"


class LeaseLost(WfeError):
    """The command lease no longer holds the command (it expired, or was already settled)."""

    reason = _reason(_REASON.LEASE_LOST)
    code = "FAILED_PRECONDITION"


class StorageFull(WfeError):
    """The database could not grow (disk full or size limit); nothing was written."""

    reason = _reason(_REASON.STORAGE_FULL)
    code = "RESOURCE_EXHAUSTED"


class StorageUnavailable(WfeError):
    """The database could not be reached (locked too long, I/O error); retry later."""

    reason = _reason(_REASON.STORAGE_UNAVAILABLE)
    code = "UNAVAILABLE"


class Unauthenticated(WfeError):
    """The server wants a bearer token and the call carried none, or one it does not accept."""

    reason = _reason(_REASON.UNAUTHENTICATED)
    code = "UNAUTHENTICATED"


class RevisionConflict(WfeError):
    """The stored workflow's revision is not the expected one; nothing was written."""

    reason = _reason(_REASON.REVISION_CONFLICT)
    code = "ABORTED"


class StreamIdle(WfeError):
    """The client of a server stream took no message for the server's stream idle timeout; the server
    ended the stream (after the messages it had already sent)."""

    reason = _reason(_REASON.STREAM_IDLE)
    code = "DEADLINE_EXCEEDED"


class WatcherFellBehind(WfeError):
    """A lifecycle watch fell too far behind the published events and was ended by the server."""

    reason = _reason(_REASON.WATCHER_FELL_BEHIND)
    code = "RESOURCE_EXHAUSTED"


class TooManyWaitingDequeues(WfeError):
    """A dequeue that would wait was refused at once: the server process already has 10000 dequeues
    waiting. Nothing was taken for it."""

    reason = _reason(_REASON.TOO_MANY_WAITING_DEQUEUES)
    code = "RESOURCE_EXHAUSTED"


class TooManyWatchers(WfeError):
    """A lifecycle watch was refused: the server process already has 10000 watches open."""

    reason = _reason(_REASON.TOO_MANY_WATCHERS)
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
        Unauthenticated,
        RevisionConflict,
        StreamIdle,
        WatcherFellBehind,
        TooManyWaitingDequeues,
        TooManyWatchers,
        NotFound,
        AlreadyExists,
    )
}


def error_for_reason(reason: str) -> type[WfeError] | None:
    """The exception class for an ``ErrorInfo`` reason, or None if the reason is unknown."""
    return _BY_REASON.get(reason)
