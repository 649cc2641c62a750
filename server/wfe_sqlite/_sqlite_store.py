"""``SqliteStore``: the store interface on SQLite. The SQL of every operation is here.

Every operation is one job on one connection thread: writes go through the group-committing
writer, reads through the read-only pool, lookups by key on the event loop's thread (``Database``).
Column lists and placeholders come from the row types of ``_rows``.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
import time
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

from ._cluster import Cluster
from ._console_store import SqliteConsoleReads
from ._database import Database
from ._maintenance import live_figures
from ._paging import cut_page, workflow_bytes
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
    "WORKFLOW_COLUMNS",
    "SqliteStore",
    "write_persist",
]

_CHUNK = 500
"""Ids per ``IN (...)`` query."""
_POINT_ROWS = 128
"""Keyset pages of at most this many rows are read on the event loop's thread (``SqliteStore._page``)."""


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
_COMPARE_POINTERS = 32
"""Above this many pointers, a persist reads the stored ones and writes only those that differ: an
upsert costs ~3x a row read and compare (100,000 pointers: ~3 s of the single writer against ~1 s),
and a step changes one or two pointers. Below it the extra statement would cost more than it spares."""
_POINTER_VALUES = ", ".join(f"{name} = excluded.{name}" for name in PointerRow._fields[2:])
_UPSERT_POINTER = f"{INSERT_POINTER} ON CONFLICT (workflow_id, position) DO UPDATE SET {_POINTER_VALUES}"
INSERT_EVENT = _insert("events", EventRow)
INSERT_SUBSCRIPTION = _insert("event_subscriptions", SubscriptionRow)
INSERT_ERROR = _insert("execution_errors", ErrorRow)
_MUTABLE = [name for name in WorkflowRow._fields if name not in ("id", "create_time", "revision")]
_SELECT_MUTABLE = f"SELECT {', '.join(_MUTABLE)}, revision FROM workflows WHERE id = ?"
_mutable_values = operator.attrgetter(*_MUTABLE)
"""A row's ``_MUTABLE`` values, in that order (as ``_SELECT_MUTABLE`` reads them)."""


@functools.lru_cache(maxsize=256)
def _update_statement(changed: tuple[int, ...]) -> str:
    """An UPDATE by id of the ``_MUTABLE`` columns at the indexes ``changed`` and of the revision."""
    columns = "".join(f"{_MUTABLE[i]} = ?, " for i in changed)
    return f"UPDATE workflows SET {columns}revision = ? WHERE id = ?"


def write_persist(
    conn: sqlite3.Connection, row: WorkflowRow, pointers: Sequence[PointerRow], expected_revision: int = 0
) -> int:
    """Replace a stored workflow and its pointers with ``row`` and ``pointers`` when its revision is
    ``expected_revision`` (0: any); the new revision. Inside the caller's transaction.

    Writes only what changes: the columns whose values differ (SQLite rewrites the index entries of
    every column an UPDATE sets, changed or not: setting them all wrote three times the pages) and
    the pointers in place by position (deleting and inserting them again also rewrote the primary
    key's index and moved the rows to the end of the table).
    """
    stored = conn.execute(_SELECT_MUTABLE, (row.id,)).fetchone()
    if stored is None:
        raise WorkflowNotFound(f"workflow {row.id!r} not found", id=row.id)
    if expected_revision and stored[-1] != expected_revision:
        raise RevisionConflict(
            f"workflow {row.id!r} is at revision {stored[-1]}, not the expected {expected_revision}; "
            "nothing was written",
            id=row.id,
            expected=str(expected_revision),
            stored=str(stored[-1]),
        )
    revision: int = stored[-1] + 1
    values = _mutable_values(row)
    changed = tuple(i for i, value in enumerate(values) if value != stored[i])
    try:
        conn.execute(_update_statement(changed), [*(values[i] for i in changed), revision, row.id])
    except sqlite3.IntegrityError:
        raise WorkflowNameTaken(f"another workflow is named {row.name!r}", name=row.name) from None
    count = len(pointers)
    if count > _COMPARE_POINTERS:
        stored_pointers = {r[1]: r for r in conn.execute(_POINTERS_OF, (row.id,))}  # by position
        pointers = [p for p in pointers if p != stored_pointers.get(p.position)]
    if pointers:
        conn.executemany(_UPSERT_POINTER, pointers)
    conn.execute("DELETE FROM execution_pointers WHERE workflow_id = ? AND position >= ?", (row.id, count))
    return revision


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
MARK_PROCESSED_IF_UNSUBSCRIBED = (
    "UPDATE events SET is_processed = 1 WHERE id = ? AND NOT EXISTS (SELECT 1 FROM event_subscriptions s "
    "WHERE s.event_name = events.event_name AND s.event_key = events.event_key AND s.terminated = 0 "
    "AND s.subscribe_as_of <= events.event_time) RETURNING 1"
)
"""Mark an event processed when it matches no open subscription (an index probe of ``subscriptions_open``)."""
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
_BY_ID = f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?"
_BY_NAME = f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE name = ? AND name <> ''"
"""Selects of one workflow row; by name it matches the partial unique index on non-empty names."""
_POINTERS_OF = f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id = ? ORDER BY position"
_EVENT_BY_ID = f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"
_SUBSCRIPTION_BY_ID = f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE id = ?"
# Statements are built once, not per call: the connection's statement cache is keyed by the SQL
# text, and a string built anew is hashed anew on every lookup.


def _now_micros() -> int:
    # to_micros(utc_now()) without the datetime: the same clock, floored to the microsecond as
    # datetime.now floors it (once per write job; the datetime and its checks cost ~1.5 us).
    return time.time_ns() // 1000


def _limit(limit: int | None) -> int:
    # One row past the page tells whether more follow.
    return -1 if limit is None else limit + 1


def _fetch_page(rows: sqlite3.Cursor, limit: int | None, budget: int | None) -> tuple[list[Any], bool]:
    """The rows of a query run with ``LIMIT _limit(limit)``, cut as a page (see ``_store``): (rows, more follow).

    Without a byte budget the rows come in one call; with one, ``cut_page`` reads them one at a time.
    """
    if budget is None:
        if limit is None:
            return rows.fetchall(), False
        page = rows.fetchmany(limit + 1)
        return (page[:limit], True) if len(page) > limit else (page, False)
    return cut_page(rows, limit, budget)


_workflow_bytes = workflow_bytes


def _after(after: PageKey | None) -> PageKey:
    # Keyset paging: rows strictly after (key, id). SQLite integers are 64-bit, so the smallest
    # key with an empty id starts before everything.
    return after if after is not None else (-(2**63), "")


# -- jobs that several operations share ----------------------------------------------------------


def _name_taken(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM workflows WHERE name = ? AND name <> ''", (name,)).fetchone() is not None


def _next_sequence(conn: sqlite3.Connection, definition_id: str, count: int = 1) -> int:
    """Reserve the next ``count`` numbers of ``definition_id``; the first of them."""
    last: int = conn.execute(
        "INSERT INTO definition_sequences (definition_id, value) VALUES (?, ?) "
        "ON CONFLICT (definition_id) DO UPDATE SET value = value + excluded.value RETURNING value",
        (definition_id, count),
    ).fetchone()[0]
    return last - count + 1


def _insert_subscriptions(conn: sqlite3.Connection, rows: Sequence[SubscriptionRow]) -> None:
    """Insert the rows in one ``executemany`` (a statement per row from Python cost ~30 us each:
    ~3 s of the writer's time for 100,000). When it fails, its rows are undone and inserted one by
    one, which raises the error of the first row that fails (``SubscriptionAlreadyExists`` naming
    it, whether its id is stored already or repeated earlier in the batch), as before."""
    if len(rows) <= 1:
        _insert_subscriptions_one_by_one(conn, rows)
        return
    conn.execute("SAVEPOINT subscriptions")
    try:
        conn.executemany(INSERT_SUBSCRIPTION, rows)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO subscriptions")
        conn.execute("RELEASE subscriptions")
        _insert_subscriptions_one_by_one(conn, rows)
        return
    except BaseException:
        conn.execute("ROLLBACK TO subscriptions")
        conn.execute("RELEASE subscriptions")
        raise
    conn.execute("RELEASE subscriptions")


def _insert_subscriptions_one_by_one(conn: sqlite3.Connection, rows: Sequence[SubscriptionRow]) -> None:
    for row in rows:
        try:
            conn.execute(INSERT_SUBSCRIPTION, row)
        except sqlite3.IntegrityError:
            raise SubscriptionAlreadyExists(f"subscription {row.id!r} already exists", id=row.id) from None


_workflow_row: Callable[[Sequence[Any]], WorkflowRow] = functools.partial(tuple.__new__, WorkflowRow)
_pointer_row: Callable[[Sequence[Any]], PointerRow] = functools.partial(tuple.__new__, PointerRow)
"""Rows of the SELECTs below (their columns are the row type's) as row tuples: ``_make`` without
its Python frame and length check."""


_POINT_POINTERS = 256
"""A workflow read on the event loop's thread (``read_point``) reads at most this many pointers there
(~2 ms); one with more is read again on a reader thread, so that one workflow of 100,000 pointers
does not hold every other call for the ~0.5-1 s it takes to read."""


class _TooManyPointers(Exception):
    """A point read found more than ``_POINT_POINTERS`` pointers (the read is run on a reader thread)."""


def _read_workflow(conn: sqlite3.Connection, select: str, value: str, most: int | None = None) -> StoredWorkflow | None:
    found = conn.execute(select, (value,)).fetchone()
    if found is None:
        return None
    row = _workflow_row(found)
    cursor = conn.execute(_POINTERS_OF, (row.id,))
    if most is None:
        return row, list(map(_pointer_row, cursor))
    pointers = cursor.fetchmany(most + 1)
    if len(pointers) > most:
        raise _TooManyPointers
    return row, list(map(_pointer_row, pointers))


@functools.lru_cache(maxsize=128)
def _workflows_in(count: int) -> tuple[str, str]:
    """The selects of ``count`` workflows and of their pointers by id (built once per count)."""
    marks = ", ".join("?" * count)
    return (
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id IN ({marks})",
        f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id IN ({marks}) "
        "ORDER BY workflow_id, position",
    )


def _read_workflows(conn: sqlite3.Connection, ids: Sequence[str], most: int | None = None) -> list[StoredWorkflow]:
    """The stored workflows among ``ids``, in their order; ``most`` bounds the pointer rows of each
    query (``_TooManyPointers`` past it: see ``_read_workflows_from``)."""
    unique = list(dict.fromkeys(ids))
    found: dict[str, StoredWorkflow] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        rows = list(map(_workflow_row, conn.execute(_workflows_in(len(chunk))[0], chunk)))
        if not rows:
            continue
        pointers: dict[str, list[PointerRow]] = {row.id: [] for row in rows}
        present = list(pointers)
        cursor = conn.execute(_workflows_in(len(present))[1], present)
        fetched: Iterable[Any] = cursor
        if most is not None:
            fetched = bounded = cursor.fetchmany(most + 1)
            if len(bounded) > most:
                raise _TooManyPointers
        for pointer in map(_pointer_row, fetched):
            pointers[pointer[0]].append(pointer)
        for row in rows:
            found[row.id] = (row, pointers[row.id])
    return [found[i] for i in unique if i in found]


_FROM_CHUNK = 32
"""Most workflows one ``_read_workflows_from`` query reads together."""

_POINT_BATCH_ROWS = 512
"""A ``workflows_from`` read on the event loop's thread stops at about this many rows (workflows and
pointers: ~1.5 ms), like ``_POINT_POINTERS`` for one workflow."""

_POINT_BATCH_BYTES = 1024 * 1024
"""... and at about this many bytes."""


def _read_workflows_from(
    conn: sqlite3.Connection, ids: Sequence[str], start: int, budget: int, most_rows: int | None = None
) -> tuple[list[SizedWorkflow], int]:
    # Several ids per query (two statements for a chunk instead of two per workflow), as many as
    # the remaining budget is likely to hold: the first chunk is one workflow, the following ones
    # as many of the largest seen so far as fit (at most _FROM_CHUNK), so a chunk of large
    # workflows stays about one budget in memory, as the one-at-a-time reading did. With
    # ``most_rows`` (a read on the loop's thread) chunks are also sized by the most pointers seen
    # and a chunk whose pointers would pass the rows left is not read: what was read before it is
    # returned, or ``_TooManyPointers`` raised when that is nothing.
    found: list[SizedWorkflow] = []
    used = 0
    rows = 0
    position = start
    largest = 0
    widest = 0
    while position < len(ids) and used < budget:
        count = 1 if not largest else max(1, min(_FROM_CHUNK, (budget - used) // largest + 1))
        most = None
        if most_rows is not None:
            if rows >= most_rows:
                break
            if largest:
                count = max(1, min(count, (most_rows - rows) // (widest + 1)))
            most = most_rows - rows
        chunk = ids[position : position + count]
        try:
            stored = {row.id: (row, pointers) for row, pointers in _read_workflows(conn, chunk, most)}
        except _TooManyPointers:
            if found:
                break
            raise
        for wid in chunk:
            position += 1
            one = stored.get(wid)
            if one is None:
                continue
            size = _workflow_bytes(*one)
            largest = max(largest, size)
            widest = max(widest, len(one[1]))
            rows += 1 + len(one[1])
            found.append((*one, size))
            used += size
            if used >= budget:
                break
    return found, position


class SqliteStore(SqliteVisibility, SqliteConsoleReads, Store):
    """The store on one SQLite ``Database``.

    A write job whose only write is one statement (the subscription tokens, the scheduled commands'
    schedule, claim, acknowledgement and release) is queued with ``savepoint=False``: SQLite undoes a
    failed statement by itself, so in a group commit it needs no savepoint of its own. A job that
    writes twice (a create, a persist, an event and its queue entry) keeps its savepoint.
    """

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

        def run(conn: sqlite3.Connection, rows: int | None) -> tuple[list[Any], bool]:
            return _fetch_page(conn.execute(sql, (*parameters, key, last, _limit(rows))), rows, budget)

        # A short answer (the common one: a few due workflows or events) is read right on the event
        # loop's thread, like a point lookup, saving two thread hand-overs; one that fills the probe
        # may be long, so it is read again, whole, on the reader pool.
        probe = _POINT_ROWS if limit is None else min(limit, _POINT_ROWS)
        page, more = await self.database.read_point(lambda conn: run(conn, probe))
        if len(page) < probe or probe == limit:
            return page, more
        return await self.database.read(lambda conn: run(conn, limit))

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
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> int:
            revision = write_persist(conn, row, pointers, expected_revision)
            _insert_subscriptions(conn, subscriptions)
            queue_stored_workflow(conn, row.id, row.status, row.next_execution, _now_micros(), effects)
            return revision

        revision = await self.database.write(job)
        self.cluster.written(effects)
        return revision

    async def runnable_workflows(
        self, as_at_ms: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        return await self._page(RUNNABLE_WORKFLOWS, (as_at_ms,), limit, after, budget)

    async def _read_one(self, select: str, value: str) -> StoredWorkflow | None:
        try:
            return await self.database.read_point(lambda conn: _read_workflow(conn, select, value, _POINT_POINTERS))
        except _TooManyPointers:
            return await self.database.read(lambda conn: _read_workflow(conn, select, value))

    async def workflow(self, id: str) -> StoredWorkflow:
        found = await self._read_one(_BY_ID, id)
        if found is None:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)
        return found

    async def workflow_by_name(self, name: str) -> StoredWorkflow:
        found = await self._read_one(_BY_NAME, name)
        if found is None:
            raise WorkflowNotFound(f"no workflow named {name!r}", name=name)
        return found

    async def workflows(self, ids: Sequence[str]) -> list[StoredWorkflow]:
        if len(ids) <= _POINT_ROWS:
            # Two indexed queries of at most _POINT_ROWS keys each: on the loop's thread, like a
            # point lookup (a hand-over to a reader thread and back cost more than the read).
            return await self.database.read_point(lambda conn: _read_workflows(conn, ids))
        return await self.database.read(lambda conn: _read_workflows(conn, ids))

    async def workflows_from(self, ids: Sequence[str], start: int, budget: int) -> tuple[list[SizedWorkflow], int]:
        # A few small workflows (the common batch) are read on the loop's thread, like a point
        # lookup: on a reader thread every row fetched hands the GIL back and forth with the busy
        # loop (server CPU per batch of 100 of the bench's workflows measured ~2x that of this).
        # The rows and bytes read there are bounded; more are read by the next call, and a first
        # workflow with too many pointers on the reader pool.
        point_budget = min(budget, _POINT_BATCH_BYTES)
        try:
            return await self.database.read_point(
                lambda conn: _read_workflows_from(conn, ids, start, point_budget, _POINT_BATCH_ROWS)
            )
        except _TooManyPointers:
            return await self.database.read(lambda conn: _read_workflows_from(conn, ids, start, budget))

    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        return await self.database.write(lambda conn: _next_sequence(conn, definition_id, count))

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
        found = await self.database.read_point(lambda conn: conn.execute(_EVENT_BY_ID, (id,)).fetchone())
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

    async def mark_processed_if_unsubscribed(self, id: str) -> bool:
        # Marking processed queues nothing and sets no due time: no effects to report.
        return await self.database.write(
            lambda conn: conn.execute(MARK_PROCESSED_IF_UNSUBSCRIBED, (id,)).fetchone() is not None,
            savepoint=False,
        )

    # -- subscriptions -------------------------------------------------------------------------

    async def create_subscription(self, row: SubscriptionRow) -> None:
        await self.database.write(lambda conn: _insert_subscriptions(conn, [row]))

    async def subscription(self, id: str) -> SubscriptionRow:
        found = await self.database.read_point(lambda conn: conn.execute(_SUBSCRIPTION_BY_ID, (id,)).fetchone())
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

        await self.database.write(job, savepoint=False)

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

        return await self.database.write(job, savepoint=False)

    async def clear_subscription_token(self, id: str, token: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE event_subscriptions SET external_token = NULL, external_worker_id = NULL, "
                "external_token_expiry = NULL WHERE id = ? AND external_token = ?",
                (id, token),
            )
            if cursor.rowcount == 0:
                raise SubscriptionNotFound(f"subscription {id!r} not found or not held by that token", id=id)

        await self.database.write(job, savepoint=False)

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, row: CommandRow) -> None:
        await self.database.write(lambda conn: conn.execute(SCHEDULE_COMMAND, row), savepoint=False)

    async def claim_commands(self, as_of_ms: int, max_commands: int, lease_id: str, lease_us: int) -> Claim:
        def job(conn: sqlite3.Connection) -> Claim:
            now = _now_micros()
            expiry = now + lease_us
            rows = conn.execute(CLAIM_COMMANDS, (lease_id, expiry, as_of_ms, now, max_commands)).fetchall()
            commands = sorted((CommandRow._make(r) for r in rows), key=lambda r: r.execute_time)
            return Claim(expiry, commands)

        return await self.database.write(job, savepoint=False)

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

        await self.database.write(job, savepoint=False)

    async def release_command(self, command_name: str, data: str, lease_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
                "WHERE command_name = ? AND data = ? AND lease_id = ?",
                (command_name, data, lease_id),
            )
            if cursor.rowcount == 0:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")

        await self.database.write(job, savepoint=False)

    # -- errors, schema, figures ---------------------------------------------------------------

    async def persist_errors(self, rows: Sequence[ErrorRow]) -> None:
        if rows:
            await self.database.write(lambda conn: conn.executemany(INSERT_ERROR, rows))

    async def ensure_store_exists(self) -> None:
        await self.database.write(create_schema)

    async def live_figures(self) -> LiveFigures:
        return await self.database.read(live_figures)
