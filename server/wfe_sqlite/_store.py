"""The store interface: every storage operation the provider and the server need, on rows.

A store takes rows that are already validated (``_rows``) and returns rows; it holds the SQL (or
whatever its backend speaks) and nothing else. ``SqliteStore`` implements it on SQLite; a second
backend (PostgreSQL) implements the same methods with the same guarantees. Instants are epoch
microseconds, ``next_execution`` and ``execute_time`` epoch milliseconds, as in the rows.

Operations raise the typed errors of ``wfe_client.errors`` (``WorkflowNotFound``,
``WorkflowAlreadyExists``, ``LeaseLost``, ...) with the same messages whatever the backend; a write
that raises leaves nothing written.

Paged reads take ``after``, the ``PageKey`` of the last item already returned, and return items in
key order, at most ``limit`` of them (None: all) and, with a ``budget``, no more bytes (about their
size on the wire) than that unless one item alone is larger; and whether more items follow. They
stop reading at the first item past either bound, so a page costs about its own size.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from ._console_rows import OverviewRows
from ._rows import CommandRow, ErrorRow, EventRow, PageKey, PointerRow, StoredWorkflow, SubscriptionRow, WorkflowRow
from ._visibility_rows import DetailsRows, FilterRow, SummaryRow

__all__ = ["Claim", "LiveFigures", "SizedWorkflow", "Store"]

SizedWorkflow = tuple[WorkflowRow, list[PointerRow], int]
"""A stored workflow, its pointers and about how many bytes they take on the wire."""


@dataclass(frozen=True)
class Claim:
    """Commands leased by one ``claim_commands``."""

    expiry: int
    """When the lease runs out, epoch microseconds (the store's clock)."""
    commands: list[CommandRow]
    """The claimed commands, earliest ``execute_time`` first."""


@dataclass(frozen=True)
class LiveFigures:
    """What the store holds right now that a workflow host still has to act on."""

    runnable_workflows: int
    """RUNNABLE workflows whose ``next_execution`` has come."""
    unprocessed_events: int
    """Events not yet marked processed."""
    due_commands: int
    """Scheduled commands whose ``execute_time`` has come and that no live lease holds."""
    claimed_commands: int
    """Scheduled commands held by a live lease (a processor is working on them)."""
    held_tokens: int
    """Open subscriptions held by a live external token."""
    queued_items: int = 0
    """Items waiting in the work queues (all queue types)."""
    held_leases: int = 0
    """Locks held by a live lease."""


class Store(abc.ABC):
    """The storage operations, on validated rows."""

    # -- workflows -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_workflow(self, row: WorkflowRow, pointers: Sequence[PointerRow]) -> tuple[str, str]:
        """Insert a workflow (with an id) and its pointers at revision 1; (id, name) as stored.

        An empty name becomes ``{workflow_definition_id}-{N}`` with N from the definition's sequence
        (skipping taken names). Raises ``WorkflowAlreadyExists`` or ``WorkflowNameTaken``.
        """

    @abc.abstractmethod
    async def persist_workflow(
        self,
        row: WorkflowRow,
        pointers: Sequence[PointerRow],
        subscriptions: Sequence[SubscriptionRow] = (),
        expected_revision: int = 0,
    ) -> int:
        """Replace the workflow's mutable fields and pointers and insert ``subscriptions`` (each with
        an id), all or nothing; ``create_time`` is kept and the revision grows by one: the new
        revision. When ``expected_revision`` > 0 the stored revision must equal it, else
        ``RevisionConflict`` and nothing is written. Raises ``WorkflowNotFound``,
        ``WorkflowNameTaken``, ``SubscriptionAlreadyExists``."""

    @abc.abstractmethod
    async def runnable_workflows(
        self, as_at_ms: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        """A page of (next_execution, id) of RUNNABLE workflows with ``next_execution <= as_at_ms``."""

    @abc.abstractmethod
    async def workflow(self, id: str) -> StoredWorkflow:
        """The workflow with that id. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def workflow_by_name(self, name: str) -> StoredWorkflow:
        """The workflow with that (non-empty) name. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def workflows(self, ids: Sequence[str]) -> list[StoredWorkflow]:
        """The workflows among ``ids`` that exist, each once, in the order of ``ids``."""

    @abc.abstractmethod
    async def workflows_from(self, ids: Sequence[str], start: int, budget: int) -> tuple[list[SizedWorkflow], int]:
        """The workflows among ``ids[start:]`` that exist, in order, each read whole, until they pass
        ``budget`` bytes: (the workflows with their sizes, the index of the first id not yet read)."""

    @abc.abstractmethod
    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        """1, 2, 3, ... per definition; never repeats. Reserves ``count`` consecutive numbers (1 to
        ``MAX_SEQUENCE_BLOCK``, checked by the caller) and returns the first."""

    # -- events --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_event(self, row: EventRow) -> None:
        """Insert an event (with an id). Raises ``EventAlreadyExists``."""

    @abc.abstractmethod
    async def event(self, id: str) -> EventRow:
        """The event with that id. Raises ``EventNotFound``."""

    @abc.abstractmethod
    async def runnable_events(
        self, as_at_us: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        """A page of (event_time, id) of unprocessed events with ``event_time <= as_at_us``."""

    @abc.abstractmethod
    async def events(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[PageKey], bool]:
        """A page of (event_time, id) of events with that name and key and ``event_time <= as_of_us``."""

    @abc.abstractmethod
    async def set_event_processed(self, id: str, processed: bool) -> None:
        """Set or clear ``is_processed``. Raises ``EventNotFound``."""

    @abc.abstractmethod
    async def mark_processed_if_unsubscribed(self, id: str) -> bool:
        """Set ``is_processed`` when the event exists and matches no open subscription (name, key,
        ``subscribe_as_of`` at or before its ``event_time``), checked in the same statement; whether
        it did."""

    # -- subscriptions -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_subscription(self, row: SubscriptionRow) -> None:
        """Insert a subscription (with an id). Raises ``SubscriptionAlreadyExists``."""

    @abc.abstractmethod
    async def subscription(self, id: str) -> SubscriptionRow:
        """The subscription with that id. Raises ``SubscriptionNotFound``."""

    @abc.abstractmethod
    async def subscriptions(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[SubscriptionRow], bool]:
        """A page of open subscriptions for the event with ``subscribe_as_of <= as_of_us``, by
        (subscribe_as_of, id)."""

    @abc.abstractmethod
    async def terminate_subscription(self, id: str) -> None:
        """Mark a subscription terminated. Raises ``SubscriptionNotFound``."""

    @abc.abstractmethod
    async def first_open_subscription(self, event_name: str, event_key: str, as_of_us: int) -> SubscriptionRow | None:
        """The oldest matching open subscription that no live token holds (store clock), or None."""

    @abc.abstractmethod
    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry_us: int) -> bool:
        """Compare-and-set: True when no live token (store clock) or the same token holds it.
        Raises ``SubscriptionNotFound``."""

    @abc.abstractmethod
    async def clear_subscription_token(self, id: str, token: str) -> None:
        """Clear the token when it matches. Raises ``SubscriptionNotFound`` otherwise."""

    # -- scheduled commands --------------------------------------------------------------------

    @abc.abstractmethod
    async def schedule_command(self, row: CommandRow) -> None:
        """Store a command; one that exists keeps the earlier ``execute_time``."""

    @abc.abstractmethod
    async def claim_commands(self, as_of_ms: int, max_commands: int, lease_id: str, lease_us: int) -> Claim:
        """Lease up to ``max_commands`` due commands that no live lease holds to ``lease_id``."""

    @abc.abstractmethod
    async def acknowledge_command(self, command_name: str, data: str, lease_id: str) -> None:
        """Delete a handled command (keep it, unleased, if it was scheduled again meanwhile).
        Raises ``LeaseLost``."""

    @abc.abstractmethod
    async def release_command(self, command_name: str, data: str, lease_id: str) -> None:
        """Drop the lease of a command so it is offered again. Raises ``LeaseLost``."""

    # -- visibility and clean-up ---------------------------------------------------------------

    @abc.abstractmethod
    async def list_workflows(self, filter: FilterRow, limit: int, after: PageKey | None) -> list[SummaryRow]:
        """Up to ``limit`` summaries matching ``filter`` after the position ``after`` (create_time,
        id), newest ``create_time`` first, ties by id descending."""

    @abc.abstractmethod
    async def search_workflows(
        self, text: str, filter: FilterRow, skip: int, take: int
    ) -> tuple[list[SummaryRow], int]:
        """The window ``skip``/``take`` of the workflows matching every word of the user's ``text``
        (name, reference, description, data) and ``filter``, best match first, then newest; and how
        many match in all. A text with no word: ``InvalidArgument`` (field ``query``)."""

    @abc.abstractmethod
    async def delete_workflow(self, id: str) -> None:
        """Delete a workflow with its pointers, subscriptions, errors and PROCESS_WORKFLOW command,
        in one transaction. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def count_purgeable(self, statuses: Sequence[str], older_than_us: int) -> int:
        """How many workflows ``purge_workflows`` with these arguments would delete now."""

    @abc.abstractmethod
    async def purge_workflows(self, statuses: Sequence[str], older_than_us: int) -> int:
        """Delete, as ``delete_workflow`` does, every workflow with one of ``statuses`` whose
        ``complete_time`` (or ``create_time``) is before ``older_than_us``, in transactions small
        enough that other writes keep flowing; how many."""

    @abc.abstractmethod
    async def workflow_details(self, id: str) -> DetailsRows | None:
        """A workflow with its subscriptions and errors, from one snapshot; None when there is none."""

    # -- the web console's reads -----------------------------------------------------------------

    @abc.abstractmethod
    async def console_overview(self, recent_errors: int) -> OverviewRows:
        """Workflows by definition and status, the live figures, totals, sizes and the
        ``recent_errors`` errors stored last, from one snapshot."""

    @abc.abstractmethod
    async def console_events(
        self,
        processed: bool | None,
        event_name: str | None,
        event_key: str | None,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[EventRow], bool]:
        """Up to ``limit`` events, newest ``event_time`` first (ties by id descending), after the
        position ``after`` (event_time, id), processed or not (None: both), of one name (and key, which
        counts only with a name); and whether more follow."""

    @abc.abstractmethod
    async def open_subscriptions(self, event_name: str, event_key: str, limit: int) -> list[SubscriptionRow]:
        """Up to ``limit`` subscriptions to that event that are not terminated, oldest first."""

    # -- errors, schema, figures, lifecycle ------------------------------------------------------

    @abc.abstractmethod
    async def persist_errors(self, rows: Sequence[ErrorRow]) -> None:
        """Insert every error in one transaction."""

    @abc.abstractmethod
    async def ensure_store_exists(self) -> None:
        """Create missing tables and indexes. Idempotent."""

    @abc.abstractmethod
    async def live_figures(self) -> LiveFigures:
        """The ``LiveFigures`` as of now, from one snapshot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes and release every connection."""
