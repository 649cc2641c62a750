"""Client side of wfe-sqlite: models, errors, the ``PersistenceProvider`` interface and its gRPC adapter.

The pieces the server shares with every client are public modules: ``wfe_client.models``,
``wfe_client.errors``, ``wfe_client.conversion`` (models <-> ``wfe.persistence.v1`` messages),
``wfe_client.jsoncodec``, ``wfe_client.timeutil``, ``wfe_client.limits`` and ``wfe_client.visibility``
(the filter and arguments of the list, search and purge operations).
"""

from __future__ import annotations

from ._cluster import LockProvider, QueueProvider
from ._provider import CommandHandler, PersistenceProvider
from .errors import (
    ERROR_DOMAIN,
    AlreadyExists,
    EventAlreadyExists,
    EventNotFound,
    InvalidArgument,
    LeaseLost,
    NotFound,
    RevisionConflict,
    StorageFull,
    StorageUnavailable,
    StreamIdle,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    TooManyWaitingDequeues,
    TooManyWatchers,
    Unauthenticated,
    WatcherFellBehind,
    WfeError,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
    WorkflowNotFound,
)
from .models import (
    CommandClaim,
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    Lease,
    LeasedWork,
    LifecycleEvent,
    LifecycleEventType,
    PointerStatus,
    QueueType,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowPage,
    WorkflowSearchPage,
    WorkflowStatus,
    WorkflowSummary,
)

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
    "GrpcLifecyclePublisher",
    "GrpcLockProvider",
    "GrpcPersistenceProvider",
    "GrpcQueueProvider",
    "InvalidArgument",
    "Lease",
    "LeaseLost",
    "LeasedWork",
    "LifecycleEvent",
    "LifecycleEventType",
    "LockProvider",
    "NotFound",
    "PersistenceProvider",
    "PointerStatus",
    "QueueProvider",
    "QueueType",
    "RevisionConflict",
    "ScheduledCommand",
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
    if name in ("GrpcLockProvider", "GrpcQueueProvider", "GrpcLifecyclePublisher"):
        from . import _grpc_cluster

        return getattr(_grpc_cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
