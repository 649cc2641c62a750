"""``SqlitePersistenceProvider``: the WFE persistence interface on SQLite, usable in-process.

Every operation is one job on one connection thread: writes go through the group-committing
writer, reads through the read-only pool (see ``_database``). All SQL of the project is here and
in ``_schema``.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Optional

from wfe_client import (
    CommandClaim,
    Event,
    EventAlreadyExists,
    EventNotFound,
    EventSubscription,
    ExecutionError,
    InvalidArgument,
    LeaseLost,
    PersistenceProvider,
    RevisionConflict,
    ScheduledCommand,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    WorkflowAlreadyExists,
    WorkflowInstance,
    WorkflowNameTaken,
    WorkflowNotFound,
)
from wfe_client import CommandName
from wfe_client._provider import CLAIM_BATCH, DEFAULT_LEASE
from wfe_client._time import from_micros, to_micros, utc_now

from ._cluster import Cluster
from ._database import Database, DatabaseConfig, parse_database_url
from ._queue_store import WorkEffects, queue_stored_event, queue_stored_workflow
from ._rows import (
    check_id,
    command_row,
    error_row,
    event_from_row,
    event_row,
    micros,
    pointer_from_row,
    pointer_rows,
    subscription_from_row,
    subscription_row,
    workflow_from_row,
    workflow_row,
)
from ._schema import create_schema, ensure_schema

__all__ = ["SqlitePersistenceProvider", "PageKey", "MAX_BATCH_IDS", "WorkflowRows"]

PageKey = tuple[int, str]
"""Keyset position of a listed item: (its ordering instant or time, its id)."""

MAX_BATCH_IDS = 10_000
"""Most ids one ``get_workflow_instances`` call on the wire may name."""

_CHUNK = 500  # ids per IN (...) query

_WORKFLOW_COLUMNS = (
    "id, name, root_workflow_id, workflow_definition_id, version, description, reference, "
    "next_execution, status, data, create_time, complete_time"
)
_POINTER_COLUMNS = (
    "id, step_id, active, status, sleep_until, persistence_data, start_time, end_time, event_name, "
    "event_key, event_published, event_data, step_name, retry_count, children, context_item, "
    "predecessor_id, outcome, scope, extension_attributes"
)
_SUBSCRIPTION_COLUMNS = (
    "id, workflow_id, step_id, execution_pointer_id, event_name, event_key, subscribe_as_of, "
    "subscription_data, external_token, external_worker_id, external_token_expiry"
)
_READ_WORKFLOW_COLUMNS = _WORKFLOW_COLUMNS + ", revision"
"""The columns a workflow is read with: the written ones plus the revision (13)."""
_INSERT_WORKFLOW = f"INSERT INTO workflows ({_WORKFLOW_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_INSERT_POINTER = (
    f"INSERT INTO execution_pointers (workflow_id, position, {_POINTER_COLUMNS}) "
    f"VALUES ({', '.join('?' * 22)})"
)
_INSERT_SUBSCRIPTION = (
    f"INSERT INTO event_subscriptions ({_SUBSCRIPTION_COLUMNS}) VALUES ({', '.join('?' * 11)})"
)
_UPDATE_WORKFLOW = (
    "UPDATE workflows SET name = ?, root_workflow_id = ?, workflow_definition_id = ?, version = ?, "
    "description = ?, reference = ?, next_execution = ?, status = ?, data = ?, complete_time = ?, "
    "revision = revision + 1 WHERE id = ? AND (? = 0 OR revision = ?) RETURNING revision"
)


def _now_micros() -> int:
    return to_micros(utc_now())


def _name_taken(conn: sqlite3.Connection, name: str) -> bool:
    # "name <> ''" lets SQLite use the partial unique index on non-empty names.
    return conn.execute("SELECT 1 FROM workflows WHERE name = ? AND name <> ''", (name,)).fetchone() is not None


def _next_sequence(conn: sqlite3.Connection, definition_id: str) -> int:
    return conn.execute(
        "INSERT INTO definition_sequences (definition_id, value) VALUES (?, 1) "
        "ON CONFLICT (definition_id) DO UPDATE SET value = value + 1 RETURNING value",
        (definition_id,),
    ).fetchone()[0]


def _replace_pointers(conn: sqlite3.Connection, workflow_id: str, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("DELETE FROM execution_pointers WHERE workflow_id = ?", (workflow_id,))
    if rows:
        conn.executemany(_INSERT_POINTER, rows)


def _update_workflow(
    conn: sqlite3.Connection,
    row: Sequence[Any],
    pointers: list[tuple[Any, ...]],
    expected_revision: int,
    effects: WorkEffects,
) -> int:
    """Replace the workflow and its pointers; its new revision. ``expected_revision`` > 0 must match."""
    (wid, name, root, definition, version, description, reference, next_execution, status, data, _, complete) = row
    try:
        updated = conn.execute(
            _UPDATE_WORKFLOW,
            (name, root, definition, version, description, reference, next_execution, status, data, complete, wid,
             expected_revision, expected_revision),
        ).fetchone()
    except sqlite3.IntegrityError:
        raise WorkflowNameTaken(f"another workflow is named {name!r}", name=name) from None
    if updated is None:
        stored = conn.execute("SELECT revision FROM workflows WHERE id = ?", (wid,)).fetchone()
        if stored is None:
            raise WorkflowNotFound(f"workflow {wid!r} not found", id=wid)
        raise RevisionConflict(
            f"workflow {wid!r} is at revision {stored[0]}, not the expected {expected_revision}; nothing was written",
            id=wid,
            expected=str(expected_revision),
            stored=str(stored[0]),
        )
    _replace_pointers(conn, wid, pointers)
    queue_stored_workflow(conn, wid, status, next_execution, _now_micros(), effects)
    return int(updated[0])


def _expected_revision(instance: WorkflowInstance, force: bool) -> int:
    revision = instance.revision
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise InvalidArgument("workflow.revision: expected an integer >= 0", field="workflow.revision")
    return 0 if force else revision


def _insert_subscriptions(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        try:
            conn.execute(_INSERT_SUBSCRIPTION, row)
        except sqlite3.IntegrityError:
            raise SubscriptionAlreadyExists(f"subscription {row[0]!r} already exists", id=row[0]) from None


WorkflowRows = tuple[tuple[Any, ...], list[tuple[Any, ...]]]
"""A workflow as stored: its ``_READ_WORKFLOW_COLUMNS`` row and its pointers' ``_POINTER_COLUMNS`` rows, in order."""


def workflow_from_rows(row: tuple[Any, ...], pointers: list[tuple[Any, ...]]) -> WorkflowInstance:
    return workflow_from_row(row, [pointer_from_row(p) for p in pointers])


def _read_workflows(conn: sqlite3.Connection, ids: Sequence[str]) -> list[WorkflowInstance]:
    """The workflows among ``ids`` that exist, in the order of ``ids``, each once."""
    return [workflow_from_rows(*rows) for rows in _read_workflows_rows(conn, ids)]


def _read_workflows_rows(conn: sqlite3.Connection, ids: Sequence[str]) -> list[WorkflowRows]:
    """The stored rows of the workflows among ``ids`` that exist, in the order of ``ids``, each once."""
    unique = list(dict.fromkeys(ids))
    found: dict[str, WorkflowRows] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(f"SELECT {_READ_WORKFLOW_COLUMNS} FROM workflows WHERE id IN ({marks})", chunk).fetchall()
        if not rows:
            continue
        pointers: dict[str, list[Any]] = {row[0]: [] for row in rows}
        present = list(pointers)
        marks = ", ".join("?" * len(present))
        for prow in conn.execute(
            f"SELECT workflow_id, {_POINTER_COLUMNS} FROM execution_pointers "
            f"WHERE workflow_id IN ({marks}) ORDER BY workflow_id, position",
            present,
        ):
            pointers[prow[0]].append(prow[1:])
        for row in rows:
            found[row[0]] = (row, pointers[row[0]])
    return [found[i] for i in unique if i in found]


_BY_ID = "id = ?"
_BY_NAME = "name = ? AND name <> ''"  # matches the partial unique index on non-empty names


def _read_workflow_rows(conn: sqlite3.Connection, where: str, value: str) -> Optional[WorkflowRows]:
    row = conn.execute(f"SELECT {_READ_WORKFLOW_COLUMNS} FROM workflows WHERE {where}", (value,)).fetchone()
    if row is None:
        return None
    pointers = conn.execute(
        f"SELECT {_POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id = ? ORDER BY position",
        (row[0],),
    ).fetchall()
    return row, pointers


def _limit(limit: Optional[int]) -> int:
    return -1 if limit is None else limit


def _after(after: Optional[PageKey]) -> tuple[int, str]:
    # Keyset paging: rows strictly after (key, id). SQLite integers are 64-bit, so the smallest
    # key with an empty id starts before everything.
    return after if after is not None else (-(2**63), "")


class SqlitePersistenceProvider(PersistenceProvider):
    """The persistence interface on a SQLite database (``:memory:`` or a file, WAL mode)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self.cluster = Cluster(database)
        """Locks, queues, the due timer, the stranded-work job and lifecycle fan-out on this database."""

    @classmethod
    async def open(
        cls,
        url: str = ":memory:",
        *,
        readers: int = 4,
        synchronous: str = "FULL",
        switch_interval: float = 0.0,
    ) -> SqlitePersistenceProvider:
        """Open (creating when missing) the database behind ``url`` and set up the schema.

        ``switch_interval`` > 0 lowers the interpreter's GIL switch interval to it (see
        ``DatabaseConfig.switch_interval``): much faster under concurrency, but process-wide.
        """
        config = DatabaseConfig(
            path=parse_database_url(url), readers=readers, synchronous=synchronous, switch_interval=switch_interval
        )
        config.pragmas(writer=True)  # validate settings before touching anything
        return cls(await Database.open(config, ensure_schema))

    @property
    def database(self) -> Database:
        """The underlying connections (for the server's maintenance and metrics)."""
        return self._db

    async def close(self) -> None:
        await self.cluster.close()
        await self._db.close()

    # -- workflows -----------------------------------------------------------------------------

    async def create_new_workflow(self, instance: WorkflowInstance) -> str:
        row = list(workflow_row(instance))
        wid, name = await self.create_workflow_rows(row, pointer_rows(row[0], instance.execution_pointers))
        instance.id, instance.name, instance.revision = wid, name, 1
        return wid

    async def create_workflow_rows(self, row: list[Any], pointers: list[tuple[Any, ...]]) -> tuple[str, str]:
        """``create_new_workflow`` of validated rows (``workflow_row``, ``pointer_rows``): (id, name)."""
        wid = row[0] or str(uuid.uuid4())
        if wid != row[0]:
            row[0] = wid
            pointers = [(wid, *p[1:]) for p in pointers]

        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> tuple[str, str]:
            name = row[1]
            if not name:
                definition = row[3]
                while True:
                    name = f"{definition}-{_next_sequence(conn, definition)}"
                    if not _name_taken(conn, name):
                        break
                row[1] = name
            try:
                conn.execute(_INSERT_WORKFLOW, row)
            except sqlite3.IntegrityError:
                exists = conn.execute("SELECT 1 FROM workflows WHERE id = ?", (wid,)).fetchone()
                if exists:
                    raise WorkflowAlreadyExists(f"workflow {wid!r} already exists", id=wid) from None
                raise WorkflowNameTaken(f"another workflow is named {name!r}", name=name) from None
            if pointers:
                conn.executemany(_INSERT_POINTER, pointers)
            queue_stored_workflow(conn, wid, row[8], row[7], _now_micros(), effects)
            return wid, name

        created = await self._db.write(job)
        self.cluster.written(effects)
        return created

    async def persist_workflow(self, instance: WorkflowInstance, force: bool = False) -> None:
        expected = _expected_revision(instance, force)
        row = workflow_row(instance)
        check_id(row[0], "workflow.id")
        instance.revision = await self.persist_workflow_rows(
            row, pointer_rows(row[0], instance.execution_pointers), expected
        )

    async def persist_workflow_rows(
        self, row: Sequence[Any], pointers: list[tuple[Any, ...]], expected_revision: int = 0
    ) -> int:
        """``persist_workflow`` of validated rows (``workflow_row``, ``pointer_rows``); the new revision."""
        check_id(row[0], "workflow.id")
        frozen = tuple(row)
        effects = WorkEffects()
        revision = await self._db.write(lambda conn: _update_workflow(conn, frozen, pointers, expected_revision, effects))
        self.cluster.written(effects)
        return revision

    async def persist_workflow_with_subscriptions(
        self, instance: WorkflowInstance, subscriptions: Sequence[EventSubscription], force: bool = False
    ) -> None:
        _, instance.revision = await self.persist_workflow_with_new_subscriptions(
            instance, subscriptions, _expected_revision(instance, force)
        )

    async def persist_workflow_with_new_subscriptions(
        self, instance: WorkflowInstance, subscriptions: Sequence[EventSubscription], expected_revision: int
    ) -> tuple[list[str], int]:
        """``persist_workflow_with_subscriptions`` returning the subscriptions' ids and the new revision."""
        row = workflow_row(instance)
        check_id(row[0], "workflow.id")
        pointers = pointer_rows(row[0], instance.execution_pointers)
        subs = []
        for i, subscription in enumerate(subscriptions):
            srow = list(subscription_row(subscription, f"subscriptions[{i}]"))
            srow[0] = srow[0] or str(uuid.uuid4())
            subs.append(tuple(srow))

        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> int:
            revision = _update_workflow(conn, row, pointers, expected_revision, effects)
            _insert_subscriptions(conn, subs)
            return revision

        revision = await self._db.write(job)
        self.cluster.written(effects)
        ids = [s[0] for s in subs]
        for subscription, sid in zip(subscriptions, ids):
            subscription.id = sid
        return ids, revision

    async def get_runnable_instances(self, as_at: datetime) -> list[str]:
        return [wid for _, wid in await self.runnable_instances_page(as_at)]

    async def runnable_instances_page(
        self, as_at: datetime, limit: Optional[int] = None, after: Optional[PageKey] = None
    ) -> list[PageKey]:
        """(next_execution, id) of runnable workflows after ``after``, earliest first."""
        as_at_ms = micros(as_at, "as_at") // 1000
        key, last = _after(after)
        return await self._db.read(
            lambda conn: conn.execute(
                "SELECT next_execution, id FROM workflows "
                "WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL AND next_execution <= ? "
                "AND (next_execution, id) > (?, ?) ORDER BY next_execution, id LIMIT ?",
                (as_at_ms, key, last, _limit(limit)),
            ).fetchall()
        )

    async def get_workflow_instance(self, id: str) -> WorkflowInstance:
        return workflow_from_rows(*await self.workflow_rows(id))

    async def workflow_rows(self, id: str) -> WorkflowRows:
        """``get_workflow_instance`` as stored rows (the server converts them to messages directly)."""
        check_id(id, "id")
        found = await self._db.read_point(lambda conn: _read_workflow_rows(conn, _BY_ID, id))
        if found is None:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)
        return found

    async def get_workflow_instance_by_name(self, name: str) -> WorkflowInstance:
        return workflow_from_rows(*await self.workflow_rows_by_name(name))

    async def workflow_rows_by_name(self, name: str) -> WorkflowRows:
        """``get_workflow_instance_by_name`` as stored rows."""
        check_id(name, "name")
        found = await self._db.read_point(lambda conn: _read_workflow_rows(conn, _BY_NAME, name))
        if found is None:
            raise WorkflowNotFound(f"no workflow named {name!r}", name=name)
        return found

    async def get_workflow_instances(self, ids: Sequence[str]) -> list[WorkflowInstance]:
        return [workflow_from_rows(*rows) for rows in await self.workflows_rows(ids)]

    async def workflows_rows(self, ids: Sequence[str]) -> list[WorkflowRows]:
        """``get_workflow_instances`` as stored rows."""
        if isinstance(ids, str):
            raise InvalidArgument("ids: expected a list of ids, got a string", field="ids")
        wanted = [check_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if not wanted:
            return []
        return await self._db.read(lambda conn: _read_workflows_rows(conn, wanted))

    async def next_definition_sequence(self, definition_id: str) -> int:
        check_id(definition_id, "definition_id")
        return await self._db.write(lambda conn: _next_sequence(conn, definition_id))

    # -- events --------------------------------------------------------------------------------

    async def create_event(self, event: Event) -> str:
        row = list(event_row(event))
        eid = row[0] or str(uuid.uuid4())
        row[0] = eid

        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO events (id, event_name, event_key, event_data, event_time, is_processed) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError:
                raise EventAlreadyExists(f"event {eid!r} already exists", id=eid) from None
            queue_stored_event(conn, eid, row[4], bool(row[5]), _now_micros(), effects)

        await self._db.write(job)
        self.cluster.written(effects)
        event.id = eid
        return eid

    async def get_event(self, id: str) -> Event:
        check_id(id, "id")
        row = await self._db.read_point(
            lambda conn: conn.execute(
                "SELECT id, event_name, event_key, event_data, event_time, is_processed "
                "FROM events WHERE id = ?",
                (id,),
            ).fetchone()
        )
        if row is None:
            raise EventNotFound(f"event {id!r} not found", id=id)
        return event_from_row(row)

    async def get_runnable_events(self, as_at: datetime) -> list[str]:
        return [eid for _, eid in await self.runnable_events_page(as_at)]

    async def runnable_events_page(
        self, as_at: datetime, limit: Optional[int] = None, after: Optional[PageKey] = None
    ) -> list[PageKey]:
        """(event_time, id) of unprocessed due events after ``after``, oldest first."""
        as_at_us = micros(as_at, "as_at")
        key, last = _after(after)
        return await self._db.read(
            lambda conn: conn.execute(
                "SELECT event_time, id FROM events WHERE is_processed = 0 AND event_time <= ? "
                "AND (event_time, id) > (?, ?) ORDER BY event_time, id LIMIT ?",
                (as_at_us, key, last, _limit(limit)),
            ).fetchall()
        )

    async def get_events(self, event_name: str, event_key: str, as_of: datetime) -> list[str]:
        return [eid for _, eid in await self.events_page(event_name, event_key, as_of)]

    async def events_page(
        self,
        event_name: str,
        event_key: str,
        as_of: datetime,
        limit: Optional[int] = None,
        after: Optional[PageKey] = None,
    ) -> list[PageKey]:
        """(event_time, id) of matching events with ``event_time <= as_of`` after ``after``."""
        check_id(event_name, "event_name", required=False)
        check_id(event_key, "event_key", required=False)
        as_of_us = micros(as_of, "as_of")
        key, last = _after(after)
        return await self._db.read(
            lambda conn: conn.execute(
                "SELECT event_time, id FROM events WHERE event_name = ? AND event_key = ? "
                "AND event_time <= ? AND (event_time, id) > (?, ?) ORDER BY event_time, id LIMIT ?",
                (event_name, event_key, as_of_us, key, last, _limit(limit)),
            ).fetchall()
        )

    async def mark_event_processed(self, id: str) -> None:
        await self._set_processed(id, 1)

    async def mark_event_unprocessed(self, id: str) -> None:
        await self._set_processed(id, 0)

    async def _set_processed(self, id: str, value: int) -> None:
        check_id(id, "id")

        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> None:
            updated = conn.execute(
                "UPDATE events SET is_processed = ? WHERE id = ? RETURNING event_time", (value, id)
            ).fetchone()
            if updated is None:
                raise EventNotFound(f"event {id!r} not found", id=id)
            queue_stored_event(conn, id, updated[0], bool(value), _now_micros(), effects)

        await self._db.write(job)
        self.cluster.written(effects)

    # -- subscriptions -------------------------------------------------------------------------

    async def create_event_subscription(self, subscription: EventSubscription) -> str:
        row = list(subscription_row(subscription))
        sid = row[0] or str(uuid.uuid4())
        row[0] = sid
        await self._db.write(lambda conn: _insert_subscriptions(conn, [tuple(row)]))
        subscription.id = sid
        return sid

    async def get_subscription(self, id: str) -> EventSubscription:
        check_id(id, "id")
        row = await self._db.read_point(
            lambda conn: conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE id = ?", (id,)
            ).fetchone()
        )
        if row is None:
            raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
        return subscription_from_row(row)

    async def get_subscriptions(
        self, event_name: str, event_key: str, as_of: datetime
    ) -> list[EventSubscription]:
        return await self.subscriptions_page(event_name, event_key, as_of)

    async def subscriptions_page(
        self,
        event_name: str,
        event_key: str,
        as_of: datetime,
        limit: Optional[int] = None,
        after: Optional[PageKey] = None,
    ) -> list[EventSubscription]:
        """Open matching subscriptions with ``subscribe_as_of <= as_of`` after ``after``, oldest first."""
        check_id(event_name, "event_name", required=False)
        check_id(event_key, "event_key", required=False)
        as_of_us = micros(as_of, "as_of")
        key, last = _after(after)
        rows = await self._db.read(
            lambda conn: conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
                "WHERE event_name = ? AND event_key = ? AND terminated = 0 AND subscribe_as_of <= ? "
                "AND (subscribe_as_of, id) > (?, ?) ORDER BY subscribe_as_of, id LIMIT ?",
                (event_name, event_key, as_of_us, key, last, _limit(limit)),
            ).fetchall()
        )
        return [subscription_from_row(r) for r in rows]

    async def terminate_subscription(self, id: str) -> None:
        check_id(id, "id")

        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute("UPDATE event_subscriptions SET terminated = 1 WHERE id = ?", (id,))
            if cursor.rowcount == 0:
                raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)

        await self._db.write(job)

    async def get_first_open_subscription(
        self, event_name: str, event_key: str, as_of: datetime
    ) -> Optional[EventSubscription]:
        check_id(event_name, "event_name", required=False)
        check_id(event_key, "event_key", required=False)
        as_of_us = micros(as_of, "as_of")
        row = await self._db.read(
            lambda conn: conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
                "WHERE event_name = ? AND event_key = ? AND terminated = 0 AND subscribe_as_of <= ? "
                "AND (external_token IS NULL OR external_token_expiry <= ?) "
                "ORDER BY subscribe_as_of, id LIMIT 1",
                (event_name, event_key, as_of_us, _now_micros()),
            ).fetchone()
        )
        return None if row is None else subscription_from_row(row)

    async def set_subscription_token(
        self, id: str, token: str, worker_id: str, expiry: datetime
    ) -> bool:
        check_id(id, "id")
        check_id(token, "token")
        check_id(worker_id, "worker_id", required=False)
        expiry_us = micros(expiry, "expiry")

        def job(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE event_subscriptions SET external_token = ?, external_worker_id = ?, "
                "external_token_expiry = ? WHERE id = ? AND (external_token IS NULL "
                "OR external_token_expiry <= ? OR external_token = ?)",
                (token, worker_id, expiry_us, id, _now_micros(), token),
            )
            if cursor.rowcount:
                return True
            if conn.execute("SELECT 1 FROM event_subscriptions WHERE id = ?", (id,)).fetchone() is None:
                raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
            return False

        return await self._db.write(job)

    async def clear_subscription_token(self, id: str, token: str) -> None:
        check_id(id, "id")
        check_id(token, "token")

        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE event_subscriptions SET external_token = NULL, external_worker_id = NULL, "
                "external_token_expiry = NULL WHERE id = ? AND external_token = ?",
                (id, token),
            )
            if cursor.rowcount == 0:
                raise SubscriptionNotFound(
                    f"subscription {id!r} not found or not held by that token", id=id
                )

        await self._db.write(job)

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, command: ScheduledCommand) -> None:
        row = command_row(command)
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT INTO scheduled_commands (command_name, data, execute_time) VALUES (?, ?, ?) "
                "ON CONFLICT (command_name, data) DO UPDATE SET "
                "execute_time = min(execute_time, excluded.execute_time), generation = generation + 1",
                row,
            )
        )

    async def claim_commands(
        self,
        as_of: datetime,
        max_commands: int = CLAIM_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str = "",
    ) -> CommandClaim:
        as_of_ms = micros(as_of, "as_of") // 1000
        if isinstance(max_commands, bool) or not isinstance(max_commands, int) or max_commands < 1:
            raise InvalidArgument("max_commands: must be a positive integer", field="max_commands")
        if not isinstance(lease, timedelta) or not timedelta(milliseconds=1) <= lease <= timedelta(hours=1):
            raise InvalidArgument("lease: must be between 1 ms and 1 hour", field="lease")
        lease_id = str(uuid.uuid4())

        def job(conn: sqlite3.Connection) -> tuple[int, list[tuple[str, str, int]]]:
            now = _now_micros()
            expiry = now + lease // timedelta(microseconds=1)
            rows = conn.execute(
                "UPDATE scheduled_commands SET lease_id = ?, lease_expiry = ?, claimed_generation = generation "
                "WHERE rowid IN ("
                "SELECT rowid FROM scheduled_commands WHERE execute_time <= ? "
                "AND (lease_id IS NULL OR lease_expiry <= ?) ORDER BY execute_time LIMIT ?) "
                "RETURNING command_name, data, execute_time",
                (lease_id, expiry, as_of_ms, now, max_commands),
            ).fetchall()
            return expiry, rows

        expiry, rows = await self._db.write(job)
        rows.sort(key=lambda r: r[2])
        commands = [ScheduledCommand(CommandName[name], data, t) for name, data, t in rows]
        return CommandClaim(lease_id if commands else "", from_micros(expiry), commands)

    async def acknowledge_command(self, command: ScheduledCommand, lease_id: str) -> None:
        name, data, _ = command_row(command)
        check_id(lease_id, "lease_id")

        def job(conn: sqlite3.Connection) -> None:
            # A command scheduled again while it was held has a newer generation than the
            # claim saw: keep it (with the earlier execute_time) and only drop the lease.
            row = conn.execute(
                "SELECT generation, claimed_generation FROM scheduled_commands "
                "WHERE command_name = ? AND data = ? AND lease_id = ?",
                (name, data, lease_id),
            ).fetchone()
            if row is None:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {name} {data!r}")
            if row[0] == row[1]:
                conn.execute(
                    "DELETE FROM scheduled_commands WHERE command_name = ? AND data = ?", (name, data)
                )
            else:
                _drop_lease(conn, name, data)

        await self._db.write(job)

    async def release_command(self, command: ScheduledCommand, lease_id: str) -> None:
        name, data, _ = command_row(command)
        check_id(lease_id, "lease_id")

        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
                "WHERE command_name = ? AND data = ? AND lease_id = ?",
                (name, data, lease_id),
            )
            if cursor.rowcount == 0:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {name} {data!r}")

        await self._db.write(job)

    # -- errors and store ----------------------------------------------------------------------

    async def persist_errors(self, errors: Sequence[ExecutionError]) -> None:
        rows = [error_row(e, f"errors[{i}]") for i, e in enumerate(errors)]
        if not rows:
            return
        await self._db.write(
            lambda conn: conn.executemany(
                "INSERT INTO execution_errors (error_time, workflow_id, execution_pointer_id, message) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        )

    async def ensure_store_exists(self) -> None:
        await self._db.write(create_schema)


def _drop_lease(conn: sqlite3.Connection, name: str, data: str) -> None:
    conn.execute(
        "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
        "WHERE command_name = ? AND data = ?",
        (name, data),
    )
