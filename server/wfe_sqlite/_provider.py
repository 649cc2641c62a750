"""``SqlitePersistenceProvider`` and ``PostgresPersistenceProvider``: the WFE persistence interface on
SQLite or PostgreSQL, usable in-process; ``open_provider(url)`` picks one by the URL's scheme.

Both are a ``StoreProvider``: it validates its arguments, turns models into rows (``_rows``), calls one store operation
(``_store``, implemented by ``_sqlite_store`` and ``_postgres_store``) and turns the rows it gets back into models.
It holds no SQL.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from wfe_client import PersistenceProvider
from wfe_client._opening import Opening
from wfe_client.errors import InvalidArgument, WorkflowNotFound
from wfe_client.limits import CLAIM_BATCH, DEFAULT_LEASE, LIST_PAGE_SIZE, check_claim, check_sequence_count
from wfe_client.models import (
    CommandClaim,
    Event,
    EventSubscription,
    ExecutionError,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowPage,
    WorkflowSearchPage,
    WorkflowStatus,
    WorkflowSummary,
)
from wfe_client.timeutil import from_micros
from wfe_client.visibility import (
    PURGED_BY_DEFAULT,
    StatusFilter,
    WorkflowFilter,
    purge_statuses,
    skip_take,
    workflow_filter,
)
from wfe_client.visibility import dry_run as check_dry_run
from wfe_client.visibility import page_size as check_page_size
from wfe_client.visibility import page_token as check_page_token

from ._cluster import Cluster
from ._cluster_api import ClusterServices
from ._connection import DatabaseConfig, parse_database_url
from ._database import Database
from ._postgres_cluster import PostgresCluster
from ._postgres_store import PostgresConfig, PostgresStore, is_postgres_url
from ._rows import (
    SubscriptionRow,
    check_event_key,
    check_id,
    command_from_row,
    command_row,
    error_row,
    event_from_row,
    event_row,
    micros,
    new_id,
    pointer_rows,
    subscription_from_row,
    subscription_row,
    with_id,
    with_ids,
    with_workflow_id,
    workflow_from_rows,
    workflow_row,
)
from ._schema import ensure_schema, refuse_unusable
from ._sqlite_store import SqliteStore
from ._store import Store
from ._visibility_rows import WorkflowDetails, decode_page_token, details_from_rows, encode_page_token, filter_row
from ._visibility_rows import summary_from_row as summary

__all__ = [
    "PostgresPersistenceProvider",
    "SqlitePersistenceProvider",
    "StoreProvider",
    "new_subscription_rows",
    "open_provider",
]


def new_subscription_rows(subscriptions: Sequence[EventSubscription]) -> list[SubscriptionRow]:
    """The rows of subscriptions to insert along with a workflow, each with an id."""
    return with_ids([subscription_row(s, f"subscriptions[{i}]") for i, s in enumerate(subscriptions)])


class StoreProvider(PersistenceProvider):
    """The persistence interface on any ``Store``: validation and conversions, no SQL."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        """The store behind the provider (the server's servicers and metrics use it directly)."""
        return self._store

    @property
    @abc.abstractmethod
    def cluster(self) -> ClusterServices:
        """Locks, queues, timers and lifecycle fan-out on this database (``SqliteLockProvider``,
        ``SqliteQueueProvider`` and the server's cluster services use it)."""

    async def close(self) -> None:
        await self._store.close()

    # -- workflows -----------------------------------------------------------------------------

    async def create_new_workflow(self, instance: WorkflowInstance) -> str:
        row = workflow_row(instance)
        row, pointers = with_workflow_id(row, pointer_rows(row.id, instance.execution_pointers))
        instance.id, instance.name = await self._store.create_workflow(row, pointers)
        instance.revision = 1
        return instance.id

    async def persist_workflow(self, instance: WorkflowInstance, force: bool = False) -> None:
        await self.persist_workflow_with_subscriptions(instance, (), force)

    async def persist_workflow_with_subscriptions(
        self, instance: WorkflowInstance, subscriptions: Sequence[EventSubscription], force: bool = False
    ) -> None:
        row = workflow_row(instance)
        check_id(row.id, "workflow.id")
        pointers = pointer_rows(row.id, instance.execution_pointers)
        rows = new_subscription_rows(subscriptions)
        expected = 0 if force else row.revision
        instance.revision = await self._store.persist_workflow(row, pointers, rows, expected)
        for subscription, stored in zip(subscriptions, rows, strict=True):
            subscription.id = stored.id

    async def get_runnable_instances(self, as_at: datetime) -> list[str]:
        keys, _ = await self._store.runnable_workflows(micros(as_at, "as_at") // 1000, None, None)
        return [wid for _, wid in keys]

    async def get_workflow_instance(self, id: str) -> WorkflowInstance:
        return workflow_from_rows(*await self._store.workflow(check_id(id, "id")))

    async def get_workflow_instance_by_name(self, name: str) -> WorkflowInstance:
        return workflow_from_rows(*await self._store.workflow_by_name(check_id(name, "name")))

    async def get_workflow_instances(self, ids: Sequence[str]) -> list[WorkflowInstance]:
        if isinstance(ids, str):
            raise InvalidArgument("ids: expected a list of ids, got a string", field="ids")
        wanted = [check_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if not wanted:
            return []
        return [workflow_from_rows(*found) for found in await self._store.workflows(wanted)]

    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        return await self._store.next_definition_sequence(
            check_id(definition_id, "definition_id"), check_sequence_count(count)
        )

    # -- events --------------------------------------------------------------------------------

    async def create_event(self, event: Event) -> str:
        row = with_id(event_row(event))
        await self._store.create_event(row)
        event.id = row.id
        return row.id

    async def get_event(self, id: str) -> Event:
        return event_from_row(await self._store.event(check_id(id, "id")))

    async def get_runnable_events(self, as_at: datetime) -> list[str]:
        keys, _ = await self._store.runnable_events(micros(as_at, "as_at"), None, None)
        return [eid for _, eid in keys]

    async def get_events(self, event_name: str, event_key: str, as_of: datetime) -> list[str]:
        check_event_key(event_name, event_key)
        keys, _ = await self._store.events(event_name, event_key, micros(as_of, "as_of"), None, None)
        return [eid for _, eid in keys]

    async def mark_event_processed(self, id: str) -> None:
        await self._store.set_event_processed(check_id(id, "id"), True)

    async def mark_event_unprocessed(self, id: str) -> None:
        await self._store.set_event_processed(check_id(id, "id"), False)

    # -- subscriptions -------------------------------------------------------------------------

    async def create_event_subscription(self, subscription: EventSubscription) -> str:
        row = with_id(subscription_row(subscription))
        await self._store.create_subscription(row)
        subscription.id = row.id
        return row.id

    async def get_subscription(self, id: str) -> EventSubscription:
        return subscription_from_row(await self._store.subscription(check_id(id, "id")))

    async def get_subscriptions(self, event_name: str, event_key: str, as_of: datetime) -> list[EventSubscription]:
        check_event_key(event_name, event_key)
        rows, _ = await self._store.subscriptions(event_name, event_key, micros(as_of, "as_of"), None, None)
        return [subscription_from_row(r) for r in rows]

    async def terminate_subscription(self, id: str) -> None:
        await self._store.terminate_subscription(check_id(id, "id"))

    async def get_first_open_subscription(
        self, event_name: str, event_key: str, as_of: datetime
    ) -> EventSubscription | None:
        check_event_key(event_name, event_key)
        found = await self._store.first_open_subscription(event_name, event_key, micros(as_of, "as_of"))
        return None if found is None else subscription_from_row(found)

    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry: datetime) -> bool:
        check_id(id, "id")
        check_id(token, "token")
        check_id(worker_id, "worker_id", required=False)
        return await self._store.set_subscription_token(id, token, worker_id, micros(expiry, "expiry"))

    async def clear_subscription_token(self, id: str, token: str) -> None:
        await self._store.clear_subscription_token(check_id(id, "id"), check_id(token, "token"))

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, command: ScheduledCommand) -> None:
        await self._store.schedule_command(command_row(command))

    async def claim_commands(
        self,
        as_of: datetime,
        max_commands: int = CLAIM_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str = "",
    ) -> CommandClaim:
        as_of_ms = micros(as_of, "as_of") // 1000
        check_claim(max_commands, lease)
        if not isinstance(worker_id, str):  # not stored: only its type is checked, as the gRPC client does
            raise InvalidArgument(f"worker_id: expected a string, got {type(worker_id).__name__}", field="worker_id")
        lease_id = new_id()
        claim = await self._store.claim_commands(as_of_ms, max_commands, lease_id, lease // timedelta(microseconds=1))
        commands = [command_from_row(row) for row in claim.commands]
        return CommandClaim(lease_id if commands else "", from_micros(claim.expiry), commands)

    async def acknowledge_command(self, command: ScheduledCommand, lease_id: str) -> None:
        row = command_row(command)
        await self._store.acknowledge_command(row.command_name, row.data, check_id(lease_id, "lease_id"))

    async def release_command(self, command: ScheduledCommand, lease_id: str) -> None:
        row = command_row(command)
        await self._store.release_command(row.command_name, row.data, check_id(lease_id, "lease_id"))

    # -- errors and store ----------------------------------------------------------------------

    async def persist_errors(self, errors: Sequence[ExecutionError]) -> None:
        await self._store.persist_errors([error_row(e, f"errors[{i}]") for i, e in enumerate(errors)])

    async def ensure_store_exists(self) -> None:
        await self._store.ensure_store_exists()

    # -- visibility and clean-up ---------------------------------------------------------------

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
        selected = workflow_filter(status, definition_id, reference, created_after, created_before)
        items, token = await self.list_summaries(selected, check_page_size(page_size), check_page_token(page_token))
        return WorkflowPage(items, token)

    async def list_summaries(
        self, selected: WorkflowFilter, size: int, page_token: str | None
    ) -> tuple[list[WorkflowSummary], str | None]:
        """One page of a checked filter and the token of the next page (None on the last one)."""
        rows_filter = filter_row(selected)
        after = decode_page_token(rows_filter, page_token)
        rows = await self._store.list_workflows(rows_filter, size + 1, after)
        page = rows[:size]
        more = len(rows) > size
        return [summary(r) for r in page], encode_page_token(
            rows_filter, (page[-1].create_time, page[-1].id)
        ) if more else None

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
        selected = workflow_filter(status, definition_id, reference, created_after, created_before)
        return await self.search_summaries(text, selected, *skip_take(skip, take))

    async def search_summaries(self, text: str, selected: WorkflowFilter, skip: int, take: int) -> WorkflowSearchPage:
        """One window of the matches of ``text`` with a checked filter, and their total."""
        rows, total = await self._store.search_workflows(text, filter_row(selected), skip, take)
        return WorkflowSearchPage([summary(r) for r in rows], total)

    async def delete_workflow(self, id: str) -> None:
        await self._store.delete_workflow(check_id(id, "id"))

    async def purge_workflows(
        self,
        older_than: datetime,
        statuses: Sequence[WorkflowStatus] = PURGED_BY_DEFAULT,
        *,
        dry_run: bool = False,
    ) -> int:
        names = [s.name for s in purge_statuses(statuses)]
        older_than_us = micros(older_than, "older_than")
        if check_dry_run(dry_run):
            return await self._store.count_purgeable(names, older_than_us)
        return await self._store.purge_workflows(names, older_than_us)

    async def workflow_details(self, id: str) -> WorkflowDetails:
        """One workflow with its subscriptions and errors (not part of the gRPC contract).
        Raises ``WorkflowNotFound``."""
        found = await self._store.workflow_details(check_id(id, "id"))
        if found is None:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)
        return details_from_rows(found)


class SqlitePersistenceProvider(StoreProvider):
    """The persistence interface on a SQLite database (``:memory:`` or a file, WAL mode)."""

    _overlapped_acknowledgements = True  # acknowledge_command queues its write before it first waits

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self._sqlite = store

    @property
    def store(self) -> SqliteStore:
        """The SQLite store behind the provider."""
        return self._sqlite

    @classmethod
    def open(
        cls,
        url: str = ":memory:",
        *,
        readers: int = 4,
        synchronous: str = "FULL",
        switch_interval: float = 0.0,
        max_page_count: int = 0,
    ) -> Opening[SqlitePersistenceProvider]:
        """Open (creating when missing) the database behind ``url`` and set up the schema:
        ``await SqlitePersistenceProvider.open(url)``, or ``async with ... as store`` to close it at the end.

        ``switch_interval`` > 0 lowers the interpreter's GIL switch interval to it (see
        ``DatabaseConfig.switch_interval``): much faster under concurrency, but process-wide.
        ``max_page_count`` > 0 caps the database at that many pages (writes past it: ``StorageFull``).
        A file this server must not use (not SQLite, unreadable or read-only, another application's
        tables, a newer schema): ``DatabaseOpenError``, and the file is left as it was.
        """

        async def opening() -> SqlitePersistenceProvider:
            config = DatabaseConfig(
                path=parse_database_url(url),
                readers=readers,
                synchronous=synchronous,
                switch_interval=switch_interval,
                max_page_count=max_page_count,
            )
            config.pragmas(writer=True)  # validate settings before touching anything
            return cls(SqliteStore(await Database.open(config, ensure_schema, vet=refuse_unusable)))

        return Opening(opening)

    @property
    def cluster(self) -> Cluster:
        """Locks, queues, timers and lifecycle fan-out on this database (``SqliteLockProvider``,
        ``SqliteQueueProvider`` and the server's cluster services use it)."""
        return self._sqlite.cluster

    @property
    def database(self) -> Database:
        """The underlying connections (for maintenance, tests and metrics)."""
        return self._sqlite.database


class PostgresPersistenceProvider(StoreProvider):
    """The persistence interface on a PostgreSQL database shared by any number of processes."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store)
        self._postgres = store

    @property
    def store(self) -> PostgresStore:
        """The PostgreSQL store behind the provider."""
        return self._postgres

    @property
    def cluster(self) -> PostgresCluster:
        """Locks, queues, timers and lifecycle fan-out on this database, across servers."""
        return self._postgres.cluster

    @classmethod
    def open(
        cls, url: str, *, pool_size: int = 10, connect_timeout: float = 5.0, command_timeout: float = 20.0
    ) -> Opening[PostgresPersistenceProvider]:
        """Connect to ``postgresql://user:pass@host:port/dbname`` (or ``postgres://``), upgrading its
        schema when it is older than this binary (``await`` it, or ``async with ... as store``).
        Unreachable, or newer than this binary: ``DatabaseOpenError``."""

        async def opening() -> PostgresPersistenceProvider:
            if not is_postgres_url(url):
                raise ValueError(f"not a PostgreSQL URL (postgresql://... or postgres://...): {url!r}")
            if pool_size < 1:
                raise ValueError(f"pool_size must be at least 1, got {pool_size}")
            return cls(await PostgresStore.open(PostgresConfig(url, pool_size, connect_timeout, command_timeout)))

        return Opening(opening)


async def open_provider(url: str, **settings: Any) -> StoreProvider:
    """The provider for a database string: PostgreSQL for ``postgresql://``/``postgres://`` (settings:
    ``pool_size``, ``connect_timeout``, ``command_timeout``), SQLite otherwise (settings: those of
    ``SqlitePersistenceProvider.open``)."""
    if is_postgres_url(url):
        return await PostgresPersistenceProvider.open(url, **settings)
    return await SqlitePersistenceProvider.open(url, **settings)
