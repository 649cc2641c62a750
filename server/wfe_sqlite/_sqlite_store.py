"""``SqliteStore``: the store interface on SQLite. The SQL of every operation is here.

Every operation is one job on one connection thread: writes go through the group-committing
writer, reads through the read-only pool, lookups by key on the event loop's thread (``Database``).
Column lists and placeholders come from the row types of ``_rows``.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from wfe_client.errors import (
    EventAlreadyExists,
    EventNotFound,
    LeaseLost,
    RevisionConflict,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
    WorkflowNotFound,
)
from wfe_client.timeutil import to_micros, utc_now

from ._cluster import Cluster
from ._console_store import SqliteConsoleReads
from ._database import Database
from ._maintenance import live_figures
from ._queue_store import WorkEffects, queue_stored_event, queue_stored_workflow
from ._rows import (
    CommandRow,
    ErrorRow,
    EventRow,
    PageKey,
    PointerRow,
    StoredWorkflow,
    SubscriptionRow,
    WorkflowRow,
)
from ._schema import create_schema
from ._store import Claim, LiveFigures, SizedWorkflow, Store
from ._visibility_store import SqliteVisibility

__all__ = [
    "CLAIM_COMMANDS",
    "INSERT_EVENT",
    "INSERT_POINTER",
    "INSERT_SUBSCRIPTION",
    "INSERT_WORKFLOW",
    "POINTER_COLUMNS",
    "RUNNABLE_WORKFLOWS",
    "SCHEDULE_COMMAND",
    "SET_TOKEN",
    "UPDATE_WORKFLOW",
    "WORKFLOW_COLUMNS",
    "SqliteStore",
    "update_parameters",
]

_CHUNK = 500
"""Ids per ``IN (...)`` query."""


def _columns(row: type[NamedTuple]) -> str:
    return ", ".join(row._fields)


def _insert(table: str, row: type[NamedTuple]) -> str:
    return f"INSERT INTO {table} ({_columns(row)}) VALUES ({', '.join('?' * len(row._fields))})"


WORKFLOW_COLUMNS = _columns(WorkflowRow)
POINTER_COLUMNS = _columns(PointerRow)
EVENT_COLUMNS = _columns(EventRow)
SUBSCRIPTION_COLUMNS = _columns(SubscriptionRow)
INSERT_WORKFLOW = _insert("workflows", WorkflowRow)
INSERT_POINTER = _insert("execution_pointers", PointerRow)
INSERT_EVENT = _insert("events", EventRow)
INSERT_SUBSCRIPTION = _insert("event_subscriptions", SubscriptionRow)
INSERT_ERROR = _insert("execution_errors", ErrorRow)
_MUTABLE = [name for name in WorkflowRow._fields if name not in ("id", "create_time", "revision")]
UPDATE_WORKFLOW = (
    f"UPDATE workflows SET {', '.join(f'{name} = ?' for name in _MUTABLE)}, revision = revision + 1 "
    "WHERE id = ? AND (? = 0 OR revision = ?) RETURNING revision"
)
"""Replaces every mutable column of a workflow and adds one to its revision when the stored
revision is the expected one (0: any): parameters from ``update_parameters``."""


def update_parameters(row: WorkflowRow, expected_revision: int = 0) -> list[object]:
    """The parameters of ``UPDATE_WORKFLOW`` for ``row``."""
    return [*(getattr(row, name) for name in _MUTABLE), row.id, expected_revision, expected_revision]


SCHEDULE_COMMAND = (
    "INSERT INTO scheduled_commands (command_name, data, execute_time) VALUES (?, ?, ?) "
    "ON CONFLICT (command_name, data) DO UPDATE SET "
    "execute_time = min(execute_time, excluded.execute_time), generation = generation + 1"
)
CLAIM_COMMANDS = (
    "UPDATE scheduled_commands SET lease_id = ?, lease_expiry = ?, claimed_generation = generation "
    "WHERE rowid IN (SELECT rowid FROM scheduled_commands WHERE execute_time <= ? "
    "AND (lease_id IS NULL OR lease_expiry <= ?) ORDER BY execute_time LIMIT ?) "
    "RETURNING command_name, data, execute_time"
)
RUNNABLE_WORKFLOWS = (
    # INDEXED BY: without statistics SQLite would rather take an index led by status (the
    # visibility indexes) and sort every runnable workflow than this partial, ordered one.
    "SELECT next_execution, id FROM workflows INDEXED BY workflows_runnable "
    "WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL AND next_execution <= ? "
    "AND (next_execution, id) > (?, ?) ORDER BY next_execution, id LIMIT ?"
)
RUNNABLE_EVENTS = (
    "SELECT event_time, id FROM events WHERE is_processed = 0 AND event_time <= ? "
    "AND (event_time, id) > (?, ?) ORDER BY event_time, id LIMIT ?"
)
EVENTS = (
    "SELECT event_time, id FROM events WHERE event_name = ? AND event_key = ? "
    "AND event_time <= ? AND (event_time, id) > (?, ?) ORDER BY event_time, id LIMIT ?"
)
SUBSCRIPTIONS = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
    "WHERE event_name = ? AND event_key = ? AND terminated = 0 AND subscribe_as_of <= ? "
    "AND (subscribe_as_of, id) > (?, ?) ORDER BY subscribe_as_of, id LIMIT ?"
)
SET_TOKEN = (
    "UPDATE event_subscriptions SET external_token = ?, external_worker_id = ?, "
    "external_token_expiry = ? WHERE id = ? AND (external_token IS NULL "
    "OR external_token_expiry <= ? OR external_token = ?)"
)
_BY_ID = "id = ?"
_BY_NAME = "name = ? AND name <> ''"  # matches the partial unique index on non-empty names


def _now_micros() -> int:
    return to_micros(utc_now())


def _limit(limit: int | None) -> int:
    # One row past the page tells whether more follow.
    return -1 if limit is None else limit + 1


def _row_bytes(row: Sequence[Any]) -> int:
    """About how many bytes a row takes on the wire: its text and blob lengths, 8 per other value."""
    return sum(len(value) if isinstance(value, (str, bytes)) else 8 for value in row)


def _fetch_page(rows: Iterable[Any], limit: int | None, budget: int | None) -> tuple[list[Any], bool]:
    """The rows of a query run with ``LIMIT _limit(limit)``, cut as a page (see ``_store``): (rows, more follow).

    Rows are read one at a time and reading stops at the first one past either bound.
    """
    page: list[Any] = []
    used = 0
    for row in rows:
        if limit is not None and len(page) == limit:
            return page, True
        if budget is not None:
            used += _row_bytes(row)
            if page and used > budget:
                return page, True
        page.append(row)
    return page, False


def _text_columns(row: type[NamedTuple]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values of a row type's text columns (those annotated ``str``), by name."""
    names = [name for name, kind in row.__annotations__.items() if "str" in str(kind)]
    return operator.itemgetter(*(row._fields.index(name) for name in names))


_WORKFLOW_TEXT = _text_columns(WorkflowRow)
_POINTER_TEXT = _text_columns(PointerRow)


def _workflow_bytes(row: WorkflowRow, pointers: Sequence[PointerRow]) -> int:
    """About how many bytes a stored workflow takes on the wire: its texts' lengths, 64 per record."""
    size = sum(map(len, filter(None, _WORKFLOW_TEXT(row)))) + 64
    for pointer in pointers:
        size += sum(map(len, filter(None, _POINTER_TEXT(pointer)))) + 64
    return size


def _after(after: PageKey | None) -> PageKey:
    # Keyset paging: rows strictly after (key, id). SQLite integers are 64-bit, so the smallest
    # key with an empty id starts before everything.
    return after if after is not None else (-(2**63), "")


# -- jobs that several operations share ----------------------------------------------------------


def _name_taken(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute(f"SELECT 1 FROM workflows WHERE {_BY_NAME}", (name,)).fetchone() is not None


def _next_sequence(conn: sqlite3.Connection, definition_id: str) -> int:
    value: int = conn.execute(
        "INSERT INTO definition_sequences (definition_id, value) VALUES (?, 1) "
        "ON CONFLICT (definition_id) DO UPDATE SET value = value + 1 RETURNING value",
        (definition_id,),
    ).fetchone()[0]
    return value


def _insert_subscriptions(conn: sqlite3.Connection, rows: Sequence[SubscriptionRow]) -> None:
    for row in rows:
        try:
            conn.execute(INSERT_SUBSCRIPTION, row)
        except sqlite3.IntegrityError:
            raise SubscriptionAlreadyExists(f"subscription {row.id!r} already exists", id=row.id) from None


def _read_workflow(conn: sqlite3.Connection, where: str, value: str) -> StoredWorkflow | None:
    found = conn.execute(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE {where}", (value,)).fetchone()
    if found is None:
        return None
    row = WorkflowRow._make(found)
    pointers = conn.execute(
        f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id = ? ORDER BY position", (row.id,)
    ).fetchall()
    return row, [PointerRow._make(p) for p in pointers]


def _read_workflows(conn: sqlite3.Connection, ids: Sequence[str]) -> list[StoredWorkflow]:
    unique = list(dict.fromkeys(ids))
    found: dict[str, StoredWorkflow] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = [
            WorkflowRow._make(r)
            for r in conn.execute(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id IN ({marks})", chunk)
        ]
        if not rows:
            continue
        pointers: dict[str, list[PointerRow]] = {row.id: [] for row in rows}
        present = list(pointers)
        marks = ", ".join("?" * len(present))
        for p in conn.execute(
            f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id IN ({marks}) "
            "ORDER BY workflow_id, position",
            present,
        ):
            pointer = PointerRow._make(p)
            pointers[pointer.workflow_id].append(pointer)
        for row in rows:
            found[row.id] = (row, pointers[row.id])
    return [found[i] for i in unique if i in found]


def _read_workflows_from(
    conn: sqlite3.Connection, ids: Sequence[str], start: int, budget: int
) -> tuple[list[SizedWorkflow], int]:
    found: list[SizedWorkflow] = []
    used = 0
    position = start
    while position < len(ids) and used < budget:
        stored = _read_workflow(conn, _BY_ID, ids[position])
        position += 1
        if stored is not None:
            size = _workflow_bytes(*stored)
            found.append((*stored, size))
            used += size
    return found, position


class SqliteStore(SqliteVisibility, SqliteConsoleReads, Store):
    """The store on one SQLite ``Database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.cluster = Cluster(database)
        """Locks, queues, the due timer, the stranded-work job and lifecycle fan-out on this database;
        the writes below report the work they queue to it."""

    async def close(self) -> None:
        await self.cluster.close()
        await self.database.close()

    async def _page(
        self, sql: str, parameters: tuple[Any, ...], limit: int | None, after: PageKey | None, budget: int | None
    ) -> tuple[list[Any], bool]:
        """A page of a keyset query whose last parameters are (key, id, LIMIT), cut by ``_fetch_page``."""
        key, last = _after(after)
        return await self.database.read(
            lambda conn: _fetch_page(conn.execute(sql, (*parameters, key, last, _limit(limit))), limit, budget)
        )

    # -- workflows -----------------------------------------------------------------------------

    async def create_workflow(self, row: WorkflowRow, pointers: Sequence[PointerRow]) -> tuple[str, str]:
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> tuple[str, str]:
            name = row.name
            stored = row._replace(revision=1)
            if not name:
                while True:
                    name = f"{row.workflow_definition_id}-{_next_sequence(conn, row.workflow_definition_id)}"
                    if not _name_taken(conn, name):
                        break
                stored = stored._replace(name=name)
            try:
                conn.execute(INSERT_WORKFLOW, stored)
            except sqlite3.IntegrityError:
                if conn.execute("SELECT 1 FROM workflows WHERE id = ?", (row.id,)).fetchone():
                    raise WorkflowAlreadyExists(f"workflow {row.id!r} already exists", id=row.id) from None
                raise WorkflowNameTaken(f"another workflow is named {name!r}", name=name) from None
            if pointers:
                conn.executemany(INSERT_POINTER, pointers)
            queue_stored_workflow(conn, row.id, row.status, row.next_execution, _now_micros(), effects)
            return row.id, name

        created = await self.database.write(job)
        self.cluster.written(effects)
        return created

    async def persist_workflow(
        self,
        row: WorkflowRow,
        pointers: Sequence[PointerRow],
        subscriptions: Sequence[SubscriptionRow] = (),
        expected_revision: int = 0,
    ) -> int:
        values = update_parameters(row, expected_revision)
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> int:
            try:
                updated = conn.execute(UPDATE_WORKFLOW, values).fetchone()
            except sqlite3.IntegrityError:
                raise WorkflowNameTaken(f"another workflow is named {row.name!r}", name=row.name) from None
            if updated is None:
                stored = conn.execute("SELECT revision FROM workflows WHERE id = ?", (row.id,)).fetchone()
                if stored is None:
                    raise WorkflowNotFound(f"workflow {row.id!r} not found", id=row.id)
                raise RevisionConflict(
                    f"workflow {row.id!r} is at revision {stored[0]}, not the expected {expected_revision}; "
                    "nothing was written",
                    id=row.id,
                    expected=str(expected_revision),
                    stored=str(stored[0]),
                )
            conn.execute("DELETE FROM execution_pointers WHERE workflow_id = ?", (row.id,))
            if pointers:
                conn.executemany(INSERT_POINTER, pointers)
            _insert_subscriptions(conn, subscriptions)
            queue_stored_workflow(conn, row.id, row.status, row.next_execution, _now_micros(), effects)
            revision: int = updated[0]
            return revision

        revision = await self.database.write(job)
        self.cluster.written(effects)
        return revision

    async def runnable_workflows(
        self, as_at_ms: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        return await self._page(RUNNABLE_WORKFLOWS, (as_at_ms,), limit, after, budget)

    async def workflow(self, id: str) -> StoredWorkflow:
        found = await self.database.read_point(lambda conn: _read_workflow(conn, _BY_ID, id))
        if found is None:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)
        return found

    async def workflow_by_name(self, name: str) -> StoredWorkflow:
        found = await self.database.read_point(lambda conn: _read_workflow(conn, _BY_NAME, name))
        if found is None:
            raise WorkflowNotFound(f"no workflow named {name!r}", name=name)
        return found

    async def workflows(self, ids: Sequence[str]) -> list[StoredWorkflow]:
        return await self.database.read(lambda conn: _read_workflows(conn, ids))

    async def workflows_from(self, ids: Sequence[str], start: int, budget: int) -> tuple[list[SizedWorkflow], int]:
        return await self.database.read(lambda conn: _read_workflows_from(conn, ids, start, budget))

    async def next_definition_sequence(self, definition_id: str) -> int:
        return await self.database.write(lambda conn: _next_sequence(conn, definition_id))

    # -- events --------------------------------------------------------------------------------

    async def create_event(self, row: EventRow) -> None:
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(INSERT_EVENT, row)
            except sqlite3.IntegrityError:
                raise EventAlreadyExists(f"event {row.id!r} already exists", id=row.id) from None
            queue_stored_event(conn, row.id, row.event_time, bool(row.is_processed), _now_micros(), effects)

        await self.database.write(job)
        self.cluster.written(effects)

    async def event(self, id: str) -> EventRow:
        found = await self.database.read_point(
            lambda conn: conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (id,)).fetchone()
        )
        if found is None:
            raise EventNotFound(f"event {id!r} not found", id=id)
        return EventRow._make(found)

    async def runnable_events(
        self, as_at_us: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        return await self._page(RUNNABLE_EVENTS, (as_at_us,), limit, after, budget)

    async def events(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[PageKey], bool]:
        return await self._page(EVENTS, (event_name, event_key, as_of_us), limit, after, budget)

    async def set_event_processed(self, id: str, processed: bool) -> None:
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> None:
            updated = conn.execute(
                "UPDATE events SET is_processed = ? WHERE id = ? RETURNING event_time", (int(processed), id)
            ).fetchone()
            if updated is None:
                raise EventNotFound(f"event {id!r} not found", id=id)
            queue_stored_event(conn, id, updated[0], processed, _now_micros(), effects)

        await self.database.write(job)
        self.cluster.written(effects)

    # -- subscriptions -------------------------------------------------------------------------

    async def create_subscription(self, row: SubscriptionRow) -> None:
        await self.database.write(lambda conn: _insert_subscriptions(conn, [row]))

    async def subscription(self, id: str) -> SubscriptionRow:
        found = await self.database.read_point(
            lambda conn: conn.execute(
                f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE id = ?", (id,)
            ).fetchone()
        )
        if found is None:
            raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
        return SubscriptionRow._make(found)

    async def subscriptions(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[SubscriptionRow], bool]:
        rows, more = await self._page(SUBSCRIPTIONS, (event_name, event_key, as_of_us), limit, after, budget)
        return [SubscriptionRow._make(r) for r in rows], more

    async def terminate_subscription(self, id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute("UPDATE event_subscriptions SET terminated = 1 WHERE id = ?", (id,))
            if cursor.rowcount == 0:
                raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)

        await self.database.write(job)

    async def first_open_subscription(self, event_name: str, event_key: str, as_of_us: int) -> SubscriptionRow | None:
        found = await self.database.read(
            lambda conn: conn.execute(
                f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
                "WHERE event_name = ? AND event_key = ? AND terminated = 0 AND subscribe_as_of <= ? "
                "AND (external_token IS NULL OR external_token_expiry <= ?) "
                "ORDER BY subscribe_as_of, id LIMIT 1",
                (event_name, event_key, as_of_us, _now_micros()),
            ).fetchone()
        )
        return None if found is None else SubscriptionRow._make(found)

    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry_us: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(SET_TOKEN, (token, worker_id, expiry_us, id, _now_micros(), token))
            if cursor.rowcount:
                return True
            if conn.execute("SELECT 1 FROM event_subscriptions WHERE id = ?", (id,)).fetchone() is None:
                raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
            return False

        return await self.database.write(job)

    async def clear_subscription_token(self, id: str, token: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE event_subscriptions SET external_token = NULL, external_worker_id = NULL, "
                "external_token_expiry = NULL WHERE id = ? AND external_token = ?",
                (id, token),
            )
            if cursor.rowcount == 0:
                raise SubscriptionNotFound(f"subscription {id!r} not found or not held by that token", id=id)

        await self.database.write(job)

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, row: CommandRow) -> None:
        await self.database.write(lambda conn: conn.execute(SCHEDULE_COMMAND, row))

    async def claim_commands(self, as_of_ms: int, max_commands: int, lease_id: str, lease_us: int) -> Claim:
        def job(conn: sqlite3.Connection) -> Claim:
            now = _now_micros()
            expiry = now + lease_us
            rows = conn.execute(CLAIM_COMMANDS, (lease_id, expiry, as_of_ms, now, max_commands)).fetchall()
            commands = sorted((CommandRow._make(r) for r in rows), key=lambda r: r.execute_time)
            return Claim(expiry, commands)

        return await self.database.write(job)

    async def acknowledge_command(self, command_name: str, data: str, lease_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            # A command scheduled again while it was held has a newer generation than the
            # claim saw: keep it (with the earlier execute_time) and only drop the lease.
            found = conn.execute(
                "SELECT generation, claimed_generation FROM scheduled_commands "
                "WHERE command_name = ? AND data = ? AND lease_id = ?",
                (command_name, data, lease_id),
            ).fetchone()
            if found is None:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")
            if found[0] == found[1]:
                conn.execute("DELETE FROM scheduled_commands WHERE command_name = ? AND data = ?", (command_name, data))
            else:
                conn.execute(
                    "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
                    "WHERE command_name = ? AND data = ?",
                    (command_name, data),
                )

        await self.database.write(job)

    async def release_command(self, command_name: str, data: str, lease_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
                "WHERE command_name = ? AND data = ? AND lease_id = ?",
                (command_name, data, lease_id),
            )
            if cursor.rowcount == 0:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")

        await self.database.write(job)

    # -- errors, schema, figures ---------------------------------------------------------------

    async def persist_errors(self, rows: Sequence[ErrorRow]) -> None:
        if rows:
            await self.database.write(lambda conn: conn.executemany(INSERT_ERROR, rows))

    async def ensure_store_exists(self) -> None:
        await self.database.write(create_schema)

    async def live_figures(self) -> LiveFigures:
        return await self.database.read(live_figures)
