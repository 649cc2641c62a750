"""The persistence-provider interface that WFE engine code programs against."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from .errors import LeaseLost
from .limits import CLAIM_BATCH, DEFAULT_LEASE, LIST_PAGE_SIZE
from .models import (
    CommandClaim,
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowPage,
    WorkflowSearchPage,
    WorkflowStatus,
)
from .timeutil import require_aware
from .visibility import PURGED_BY_DEFAULT, StatusFilter

__all__ = ["CommandHandler", "PersistenceProvider"]

LOG = logging.getLogger(__name__)

CommandHandler = Callable[[ScheduledCommand], Awaitable[None]]
"""``async def handler(command: ScheduledCommand) -> None``; raising means "offer it again later"."""


class PersistenceProvider(abc.ABC):
    """Everything a WFE host persists: workflows, events, subscriptions, commands and errors.

    Implemented in-process by ``wfe_sqlite.SqlitePersistenceProvider`` and over gRPC by
    ``wfe_client.GrpcPersistenceProvider``; both behave the same (one conformance suite).
    """

    # -- workflows -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_new_workflow(self, instance: WorkflowInstance) -> str:
        """Insert a workflow and its pointers; return its id (generated when empty).

        An empty name becomes ``{workflow_definition_id}-{N}``; ``instance`` is updated with the
        id and name it was stored under. Raises ``AlreadyExists`` for a duplicate id or name.
        """

    @abc.abstractmethod
    async def persist_workflow(self, instance: WorkflowInstance, force: bool = False) -> None:
        """Replace every mutable field and the pointer set. Raises ``WorkflowNotFound``.

        When ``instance.revision`` > 0 the stored revision must equal it, else ``RevisionConflict``
        and nothing is written (``force=True`` skips the check). Afterwards ``instance.revision``
        is the new revision.
        """

    @abc.abstractmethod
    async def persist_workflow_with_subscriptions(
        self, instance: WorkflowInstance, subscriptions: Sequence[EventSubscription], force: bool = False
    ) -> None:
        """``persist_workflow`` plus inserting ``subscriptions``, all or nothing (also on a revision conflict)."""

    @abc.abstractmethod
    async def get_runnable_instances(self, as_at: datetime) -> list[str]:
        """Ids of RUNNABLE workflows with ``next_execution <= as_at``, earliest first."""

    @abc.abstractmethod
    async def get_workflow_instance(self, id: str) -> WorkflowInstance:
        """The workflow with that id. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def get_workflow_instance_by_name(self, name: str) -> WorkflowInstance:
        """The workflow with that name. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def get_workflow_instances(self, ids: Sequence[str]) -> list[WorkflowInstance]:
        """The workflows among ``ids`` that exist (missing ids are skipped)."""

    @abc.abstractmethod
    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        """1, 2, 3, ... per definition; atomic and never repeated. With ``count`` (1 to
        ``MAX_SEQUENCE_BLOCK``) it reserves that many consecutive numbers and returns the first:
        a caller handing numbers out of the block saves a call per number, but numbers of different
        callers then interleave and any it does not use are never given out."""

    # -- events --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_event(self, event: Event) -> str:
        """Insert an event; return its id. Raises ``AlreadyExists`` for a duplicate id."""

    @abc.abstractmethod
    async def get_event(self, id: str) -> Event:
        """The event with that id. Raises ``EventNotFound``."""

    @abc.abstractmethod
    async def get_runnable_events(self, as_at: datetime) -> list[str]:
        """Ids of unprocessed events with ``event_time <= as_at``, oldest first."""

    @abc.abstractmethod
    async def get_events(self, event_name: str, event_key: str, as_of: datetime) -> list[str]:
        """Ids of events with that name and key and ``event_time <= as_of``, oldest first."""

    @abc.abstractmethod
    async def mark_event_processed(self, id: str) -> None:
        """Set ``is_processed``. Raises ``EventNotFound``."""

    @abc.abstractmethod
    async def mark_event_unprocessed(self, id: str) -> None:
        """Clear ``is_processed``. Raises ``EventNotFound``."""

    # -- subscriptions -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_event_subscription(self, subscription: EventSubscription) -> str:
        """Insert a subscription; return its id. Raises ``AlreadyExists`` for a duplicate id."""

    @abc.abstractmethod
    async def get_subscription(self, id: str) -> EventSubscription:
        """The subscription with that id. Raises ``SubscriptionNotFound``."""

    @abc.abstractmethod
    async def get_subscriptions(self, event_name: str, event_key: str, as_of: datetime) -> list[EventSubscription]:
        """Open (not terminated) subscriptions for the event with ``subscribe_as_of <= as_of``."""

    @abc.abstractmethod
    async def terminate_subscription(self, id: str) -> None:
        """Mark a subscription terminated. Raises ``SubscriptionNotFound``."""

    @abc.abstractmethod
    async def get_first_open_subscription(
        self, event_name: str, event_key: str, as_of: datetime
    ) -> EventSubscription | None:
        """The oldest matching open subscription that no live token holds, or None."""

    @abc.abstractmethod
    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry: datetime) -> bool:
        """Compare-and-set the token: True when free or expired, False while a live token holds it."""

    @abc.abstractmethod
    async def clear_subscription_token(self, id: str, token: str) -> None:
        """Clear the token when it matches. Raises ``SubscriptionNotFound`` otherwise."""

    # -- scheduled commands --------------------------------------------------------------------

    def supports_scheduled_commands(self) -> bool:
        """Always True: both providers store and lease scheduled commands."""
        return True

    @abc.abstractmethod
    async def schedule_command(self, command: ScheduledCommand) -> None:
        """Store a command; re-scheduling keeps the earlier ``execute_time``."""

    @abc.abstractmethod
    async def claim_commands(
        self,
        as_of: datetime,
        max_commands: int = CLAIM_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str = "",
    ) -> CommandClaim:
        """Lease up to ``max_commands`` due commands that no live lease holds, earliest first."""

    @abc.abstractmethod
    async def acknowledge_command(self, command: ScheduledCommand, lease_id: str) -> None:
        """Delete a handled command. Raises ``LeaseLost`` when the lease no longer holds it."""

    @abc.abstractmethod
    async def release_command(self, command: ScheduledCommand, lease_id: str) -> None:
        """Give a command back so it is offered again. Raises ``LeaseLost``."""

    _overlapped_acknowledgements = False
    """Whether ``process_commands`` may run the next handler while an acknowledgement is written:
    only for a provider whose ``acknowledge_command`` queues its write, in call order with every
    other write, before it first waits (the SQLite provider's group-committing writer)."""

    async def process_commands(self, as_of: datetime, handler: CommandHandler) -> None:
        """Hand every command due at ``as_of`` to ``handler``, each to one processor at a time.

        Commands are claimed in batches (``CLAIM_BATCH``) under ``DEFAULT_LEASE``; their handlers
        run one at a time, in claim order. A command whose handler returns is acknowledged
        (deleted); one whose handler raises stays leased until the end of the call, then is
        released, so the next call offers it again. Within one call each (command_name, data)
        reaches the handler at most once: a command offered again during the call (scheduled anew
        by its own handler, say) is skipped and released at the end. The same in every adapter
        (see ``ClaimCommands`` in ``scheduled_commands.proto``).
        """
        require_aware(as_of, "as_of")
        handled: set[tuple[CommandName, str]] = set()
        held: list[tuple[ScheduledCommand, str]] = []  # released at the end
        acks: list[asyncio.Task[None]] = []
        try:
            while True:
                claim = await self.claim_commands(as_of, CLAIM_BATCH, DEFAULT_LEASE)
                if not claim.commands:
                    break
                held.extend((command, claim.lease_id) for command in claim.commands)
                for command in claim.commands:
                    if not await self._handle_one(command, handler, handled):
                        continue
                    if not self._overlapped_acknowledgements:
                        await self._acknowledge(command, claim.lease_id, held)
                        continue
                    # Handed to the store at once (the yield lets the task run until it waits for its
                    # commit, so it is queued before anything the next handler writes); the next
                    # handler runs while it commits. All are settled before the next claim.
                    acks.append(asyncio.ensure_future(self._acknowledge(command, claim.lease_id, held)))
                    await asyncio.sleep(0)
                await self._settle(acks)
        finally:
            try:
                await self._settle(acks)
            finally:
                for command, lease_id in held:
                    with contextlib.suppress(LeaseLost):
                        await self.release_command(command, lease_id)

    @staticmethod
    async def _settle(acks: list[asyncio.Task[None]]) -> None:
        """Wait for every acknowledgement sent; the first failure (other than a lost lease) is raised."""
        if not acks:
            return
        pending = acks[:]
        acks.clear()
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _handle_one(
        self, command: ScheduledCommand, handler: CommandHandler, handled: set[tuple[CommandName, str]]
    ) -> bool:
        """Run the handler for one claimed command; whether it returned (else it is released later)."""
        key = (command.command_name, command.data)
        if key in handled:
            return False
        handled.add(key)
        try:
            await handler(command)
        except Exception as error:  # noqa: BLE001 - a failing handler leaves the command for later
            LOG.warning("handler failed for %s %s: %r", command.command_name.name, command.data, error)
            return False
        return True

    async def _acknowledge(
        self, command: ScheduledCommand, lease_id: str, held: list[tuple[ScheduledCommand, str]]
    ) -> None:
        """Acknowledge a handled command; settled (no longer ``held``) unless the acknowledgement failed."""
        try:
            await self.acknowledge_command(command, lease_id)
        except LeaseLost:
            LOG.warning(
                "lease lost before acknowledging %s %s; it will be offered again",
                command.command_name.name,
                command.data,
            )
        held.remove((command, lease_id))

    # -- errors and store ----------------------------------------------------------------------

    @abc.abstractmethod
    async def persist_errors(self, errors: Sequence[ExecutionError]) -> None:
        """Store every error in one transaction."""

    @abc.abstractmethod
    async def ensure_store_exists(self) -> None:
        """Create tables and indexes when missing. Idempotent."""

    # -- visibility and clean-up ---------------------------------------------------------------

    @abc.abstractmethod
    async def list_workflows(
        self,
        status: StatusFilter = None,
        definition_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = LIST_PAGE_SIZE,
        page_token: str | None = None,
    ) -> WorkflowPage:
        """One page of workflow summaries, newest first, matching every filter given.

        ``status`` is one ``WorkflowStatus`` or a collection (any matches); the creation window
        is ``created_after <= create_time < created_before``. ``page_size`` above 1000 is capped.
        Pass ``page.next_page_token`` with the same filters for the next page (None: last page).
        """

    @abc.abstractmethod
    async def search_workflows(
        self,
        text: str,
        status: StatusFilter = None,
        skip: int = 0,
        take: int = LIST_PAGE_SIZE,
        *,
        definition_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> WorkflowSearchPage:
        """Workflows whose name, reference, description or data contain every word of ``text``.

        Words match whole words, case and accents aside; ``word*`` matches a prefix. Best match
        first, then newest; ``total`` counts every match. A text without words: ``InvalidArgument``.
        """

    @abc.abstractmethod
    async def delete_workflow(self, id: str) -> None:
        """Delete a workflow with its pointers, subscriptions and errors. Raises ``WorkflowNotFound``."""

    @abc.abstractmethod
    async def purge_workflows(
        self,
        older_than: datetime,
        statuses: Sequence[WorkflowStatus] = PURGED_BY_DEFAULT,
        *,
        dry_run: bool = False,
    ) -> int:
        """Delete every workflow with one of ``statuses`` finished before ``older_than``; how many.

        Age is ``complete_time``, or ``create_time`` when there is none. Deletes in small
        transactions so other writes keep flowing. ``dry_run`` only counts.
        """

    # -- lifecycle -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. The provider cannot be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
