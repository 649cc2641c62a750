"""Models of the cluster services: queue types, leases, lifecycle events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from ._time import utc_now

__all__ = ["QueueType", "Lease", "LifecycleEventType", "LifecycleEvent"]


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
    reference: Optional[str] = None
    """The workflow's reference, if any."""
    step_id: int = 0
    """For STEP_STARTED and STEP_COMPLETED: the step's index in the definition."""
    step_name: Optional[str] = None
    """For STEP_STARTED and STEP_COMPLETED: the step's name, if any."""
    message: str = ""
    """For ERROR: the error message."""
    event_time: datetime = field(default_factory=utc_now)
    """When it happened."""
