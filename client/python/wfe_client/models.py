"""The persistence models of WFE as dataclasses (field names as in WFE's Rust ``wfe-core``), and the
models of the cluster services (queue types, leases, lifecycle events)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .timeutil import utc_now

__all__ = [
    "JSON",
    "CommandClaim",
    "CommandName",
    "Event",
    "EventSubscription",
    "ExecutionError",
    "ExecutionPointer",
    "Lease",
    "LeasedWork",
    "LifecycleEvent",
    "LifecycleEventType",
    "PointerStatus",
    "QueueType",
    "ScheduledCommand",
    "WorkflowInstance",
    "WorkflowPage",
    "WorkflowSearchPage",
    "WorkflowStatus",
    "WorkflowSummary",
]

JSON = Any
"""Any JSON value: dict, list, str, int, float, bool or None."""


def _new_id() -> str:
    return str(uuid.uuid4())


class WorkflowStatus(enum.Enum):
    """Lifecycle state of a workflow instance."""

    RUNNABLE = "RUNNABLE"
    SUSPENDED = "SUSPENDED"
    COMPLETE = "COMPLETE"
    TERMINATED = "TERMINATED"


class PointerStatus(enum.Enum):
    """State of one execution pointer."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    SKIPPED = "SKIPPED"
    SLEEPING = "SLEEPING"
    WAITING_FOR_EVENT = "WAITING_FOR_EVENT"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"
    CANCELLED = "CANCELLED"
    PENDING_PREDECESSOR = "PENDING_PREDECESSOR"


class CommandName(enum.Enum):
    """What a scheduled command asks for."""

    PROCESS_WORKFLOW = "PROCESS_WORKFLOW"
    PROCESS_EVENT = "PROCESS_EVENT"


@dataclass
class ExecutionPointer:
    """Tracks the execution of one step of a workflow."""

    id: str
    """Id, unique within its workflow."""
    step_id: int
    """Index of the step in the workflow definition."""
    active: bool = True
    """Whether the pointer is still being executed."""
    status: PointerStatus = PointerStatus.PENDING
    """State of the step."""
    sleep_until: datetime | None = None
    """When a sleeping step wakes up."""
    persistence_data: JSON | None = None
    """Step persistence data (JSON)."""
    start_time: datetime | None = None
    """When the step started."""
    end_time: datetime | None = None
    """When the step ended."""
    event_name: str | None = None
    """Name of the event the step waits for."""
    event_key: str | None = None
    """Key of the event the step waits for."""
    event_published: bool = False
    """Whether the awaited event has been published."""
    event_data: JSON | None = None
    """Data of the received event (JSON)."""
    step_name: str | None = None
    """Name of the step."""
    retry_count: int = 0
    """How many times the step has been retried."""
    children: list[str] = field(default_factory=list)
    """Ids of child pointers."""
    context_item: JSON | None = None
    """Item of a foreach iteration (JSON)."""
    predecessor_id: str | None = None
    """Id of the preceding pointer."""
    outcome: JSON | None = None
    """Outcome value (JSON)."""
    scope: list[str] = field(default_factory=list)
    """Ids of the enclosing scopes."""
    extension_attributes: dict[str, JSON] = field(default_factory=dict)
    """Extension attributes (JSON values)."""

    @classmethod
    def new(cls, step_id: int) -> ExecutionPointer:
        """A new active, pending pointer for ``step_id`` with a fresh UUID."""
        return cls(id=_new_id(), step_id=step_id)


@dataclass
class WorkflowInstance:
    """One run of a workflow definition, with its execution pointers."""

    id: str
    """Unique id; empty means "generate one" on create."""
    workflow_definition_id: str
    """Id of the workflow definition."""
    version: int
    """Version of the workflow definition."""
    name: str = ""
    """Human-friendly unique name; empty means "assign one" on create."""
    root_workflow_id: str | None = None
    """Id of the top-level ancestor workflow; None on a root workflow."""
    description: str | None = None
    """Free text description."""
    reference: str | None = None
    """Caller's own reference."""
    execution_pointers: list[ExecutionPointer] = field(default_factory=list)
    """Every execution pointer of the workflow."""
    next_execution: int | None = 0
    """When the workflow should run next, epoch milliseconds; None means never runnable."""
    status: WorkflowStatus = WorkflowStatus.RUNNABLE
    """Lifecycle state."""
    data: JSON = None
    """Workflow data (JSON)."""
    create_time: datetime = field(default_factory=utc_now)
    """When the workflow was created."""
    complete_time: datetime | None = None
    """When the workflow completed."""
    revision: int = 0
    """Revision of the stored workflow: 1 after create, one more after every persist; 0 = never stored.
    Filled in by create, persist and every read; a persist expects it (see ``persist_workflow``)."""

    @classmethod
    def new(cls, definition_id: str, version: int, data: JSON) -> WorkflowInstance:
        """A new runnable workflow: fresh UUID, empty name, ``next_execution=0``, created now."""
        return cls(id=_new_id(), workflow_definition_id=definition_id, version=version, data=data)


@dataclass
class Event:
    """Something that happened, which waiting workflows may consume."""

    id: str
    """Unique id; empty means "generate one" on create."""
    event_name: str
    """Event name."""
    event_key: str
    """Event key (which instance of the event)."""
    event_data: JSON = None
    """Event data (JSON)."""
    event_time: datetime = field(default_factory=utc_now)
    """When the event happened."""
    is_processed: bool = False
    """Whether the event has been processed."""

    @classmethod
    def new(cls, name: str, key: str, data: JSON) -> Event:
        """A new unprocessed event with a fresh UUID, happening now."""
        return cls(id=_new_id(), event_name=name, event_key=key, event_data=data)


@dataclass
class EventSubscription:
    """A workflow pointer waiting for an event."""

    id: str
    """Unique id; empty means "generate one" on create."""
    workflow_id: str
    """Id of the waiting workflow."""
    step_id: int
    """Step index of the waiting pointer."""
    execution_pointer_id: str
    """Id of the waiting execution pointer."""
    event_name: str
    """Name of the awaited event."""
    event_key: str
    """Key of the awaited event."""
    subscribe_as_of: datetime
    """Only events at or after this instant satisfy the subscription."""
    subscription_data: JSON | None = None
    """Subscription data (JSON)."""
    external_token: str | None = None
    """Processing token held by an external worker."""
    external_worker_id: str | None = None
    """Id of the worker holding the token."""
    external_token_expiry: datetime | None = None
    """When the held token expires."""

    @classmethod
    def new(
        cls,
        workflow_id: str,
        step_id: int,
        execution_pointer_id: str,
        event_name: str,
        event_key: str,
        subscribe_as_of: datetime,
    ) -> EventSubscription:
        """A new subscription with a fresh UUID and no token."""
        return cls(
            id=_new_id(),
            workflow_id=workflow_id,
            step_id=step_id,
            execution_pointer_id=execution_pointer_id,
            event_name=event_name,
            event_key=event_key,
            subscribe_as_of=subscribe_as_of,
        )


@dataclass
class ScheduledCommand:
    """A command due at a time: one per ``(command_name, data)``."""

    command_name: CommandName
    """What to do."""
    data: str
    """The command's argument (a workflow or event id)."""
    execute_time: int
    """When the command is due, epoch milliseconds."""

    @classmethod
    def process_workflow(cls, workflow_id: str, execute_time: int) -> ScheduledCommand:
        """Process workflow ``workflow_id`` at ``execute_time`` (epoch ms)."""
        return cls(CommandName.PROCESS_WORKFLOW, workflow_id, execute_time)

    @classmethod
    def process_event(cls, event_id: str, execute_time: int) -> ScheduledCommand:
        """Process event ``event_id`` at ``execute_time`` (epoch ms)."""
        return cls(CommandName.PROCESS_EVENT, event_id, execute_time)


@dataclass
class ExecutionError:
    """An error raised while executing a step."""

    error_time: datetime
    """When the error happened."""
    workflow_id: str
    """Id of the workflow."""
    execution_pointer_id: str
    """Id of the execution pointer."""
    message: str
    """The error message."""

    @classmethod
    def new(cls, workflow_id: str, execution_pointer_id: str, message: str) -> ExecutionError:
        """An error happening now."""
        return cls(utc_now(), workflow_id, execution_pointer_id, message)


@dataclass
class CommandClaim:
    """Scheduled commands held by one lease (see ``PersistenceProvider.claim_commands``)."""

    lease_id: str
    """Id of the lease; empty when nothing was claimed."""
    lease_expiry: datetime
    """When the lease runs out (server clock)."""
    commands: list[ScheduledCommand]
    """The claimed commands, earliest first."""


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
    reference: str | None
    """Caller's own reference, or None."""
    description: str | None
    """Description, or None."""
    create_time: datetime
    """When the workflow was created."""
    complete_time: datetime | None
    """When it completed; None while it has not."""
    next_execution: int | None
    """When it should run next, epoch milliseconds; None means never runnable."""
    revision: int = 0
    """Revision of the stored workflow (1 when created, one more for every persist)."""


@dataclass
class WorkflowPage:
    """One page of ``list_workflows``: summaries newest first, and the token of the next page."""

    items: list[WorkflowSummary] = field(default_factory=list)
    """Summaries, newest ``create_time`` first (ties by id, descending)."""
    next_page_token: str | None = None
    """Pass as ``page_token`` (with the same filters) for the next page; None on the last page."""


@dataclass
class WorkflowSearchPage:
    """One window of ``search_workflows``: matches best first, and how many match in all."""

    items: list[WorkflowSummary] = field(default_factory=list)
    """Matches in this window, best match first, then newest."""
    total: int = 0
    """How many workflows match in all (not just this window)."""


class QueueType(enum.Enum):
    """The work queues (WFE's ``QueueType``)."""

    WORKFLOW = "WORKFLOW"
    """Workflow ids to execute."""
    EVENT = "EVENT"
    """Event ids to deliver to their subscriptions."""
    INDEX = "INDEX"
    """Workflow ids to (re)index for search."""


@dataclass(frozen=True)
class Lease:
    """A held lock: who holds which resource, with which fencing token, until when (server clock)."""

    resource: str
    """The locked resource."""
    owner: str
    """The owner holding it."""
    fencing_token: int
    """Grows with every acquisition (of any resource): a system that remembers the last token it
    saw can refuse a stale holder."""
    expire_time: datetime
    """When the lease runs out unless renewed (as of the acquisition; renewals extend it)."""


@dataclass(frozen=True)
class LeasedWork:
    """An item a leased dequeue handed out, with the leases taken on it in the same transaction."""

    id: str
    """The dequeued id."""
    leases: tuple[Lease, ...]
    """One lease per prefix asked for, on ``prefix + id``, in that order."""
    workflow: WorkflowInstance | None = None
    """With ``include_workflow``: the workflow read after the leases were taken (None if it is gone)."""


class LifecycleEventType(enum.Enum):
    """What happened to a workflow (WFE's ``LifecycleEventType``)."""

    STARTED = "STARTED"
    RESUMED = "RESUMED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    STEP_STARTED = "STEP_STARTED"
    STEP_COMPLETED = "STEP_COMPLETED"


@dataclass
class LifecycleEvent:
    """One thing that happened to a workflow, as hosts publish it and watchers see it."""

    type: LifecycleEventType
    """What happened."""
    workflow_instance_id: str
    """Id of the workflow instance."""
    workflow_definition_id: str = ""
    """Id of the workflow definition."""
    version: int = 0
    """Version of the workflow definition."""
    reference: str | None = None
    """The workflow's reference, if any."""
    step_id: int = 0
    """For STEP_STARTED and STEP_COMPLETED: the step's index in the definition."""
    step_name: str | None = None
    """For STEP_STARTED and STEP_COMPLETED: the step's name, if any."""
    message: str = ""
    """For ERROR: the error message."""
    event_time: datetime = field(default_factory=utc_now)
    """When it happened."""
