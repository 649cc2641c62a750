"""Client side of wfe-sqlite: models, errors, the ``PersistenceProvider`` interface and its gRPC adapter."""

from __future__ import annotations

from ._errors import (
    ERROR_DOMAIN,
    AlreadyExists,
    EventAlreadyExists,
    EventNotFound,
    InvalidArgument,
    LeaseLost,
    NotFound,
    StorageFull,
    StorageUnavailable,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    WfeError,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
    WorkflowNotFound,
)
from ._models import (
    CommandClaim,
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
from ._provider import CommandHandler, PersistenceProvider
from ._visibility import WorkflowPage, WorkflowSearchPage, WorkflowSummary

__all__ = [
    "ERROR_DOMAIN",
    "AlreadyExists",
    "CommandClaim",
    "CommandHandler",
    "CommandName",
    "Event",
    "EventAlreadyExists",
    "EventNotFound",
    "EventSubscription",
    "ExecutionError",
    "ExecutionPointer",
    "GrpcPersistenceProvider",
    "InvalidArgument",
    "LeaseLost",
    "NotFound",
    "PersistenceProvider",
    "PointerStatus",
    "ScheduledCommand",
    "StorageFull",
    "StorageUnavailable",
    "SubscriptionAlreadyExists",
    "SubscriptionNotFound",
    "WfeError",
    "WorkflowAlreadyExists",
    "WorkflowInstance",
    "WorkflowNameTaken",
    "WorkflowNotFound",
    "WorkflowPage",
    "WorkflowSearchPage",
    "WorkflowStatus",
    "WorkflowSummary",
]


def __getattr__(name: str) -> object:
    # The gRPC adapter imports grpc and the generated stubs; load it only when asked for, so the
    # embedded provider (which shares these models) does not pay for it.
    if name == "GrpcPersistenceProvider":
        from ._grpc_provider import GrpcPersistenceProvider

        return GrpcPersistenceProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
