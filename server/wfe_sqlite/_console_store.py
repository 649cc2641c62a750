"""The reads of the web console that the persistence and visibility APIs do not offer.

Overview counts, the event list and the subscriptions waiting for one event (a workflow with its
subscriptions and errors comes from the visibility store's ``details``). Like every other
storage job these are plain functions of a ``sqlite3.Connection``; ``ConsoleStore`` runs them on
the provider's read pool (never on the event loop) and keeps the overview, a set of full counts,
for a moment so that several open consoles refreshing every few seconds cost one count between them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wfe_client import EventSubscription, WorkflowStatus
from wfe_client._time import from_micros

from ._maintenance import LiveFigures, file_sizes, live_figures
from ._provider import _SUBSCRIPTION_COLUMNS, SqlitePersistenceProvider
from ._rows import subscription_from_row

__all__ = [
    "ConsoleStore",
    "DefinitionCounts",
    "ErrorRow",
    "EventPage",
    "EventRow",
    "Overview",
    "events_page",
    "format_event_cursor",
    "open_subscriptions",
    "overview",
    "parse_event_cursor",
    "recent_errors",
]

OVERVIEW_TTL = 2.0
"""Seconds an overview is reused before the counts are read again."""

MAX_DEFINITIONS = 200
"""Definitions listed on the overview (the ones with most workflows)."""

STATUSES = tuple(status.name for status in WorkflowStatus)


@dataclass(frozen=True)
class DefinitionCounts:
    """Workflows of one definition, by status."""

    definition_id: str
    by_status: dict[str, int]
    total: int


@dataclass(frozen=True)
class ErrorRow:
    """One stored execution error."""

    error_time: datetime
    workflow_id: str
    execution_pointer_id: str
    message: str
    workflow_name: str | None = None
    """Name of the workflow when it still exists (recent errors only)."""


@dataclass(frozen=True)
class Overview:
    """What the store holds, counted in one read snapshot."""

    by_status: dict[str, int]
    """Workflows per status (every status present, zero when none)."""
    definitions: list[DefinitionCounts]
    """Per definition, most workflows first (at most ``MAX_DEFINITIONS``)."""
    definition_count: int
    """How many definitions there are in all."""
    figures: LiveFigures
    events: int
    subscriptions_open: int
    errors: int
    files: dict[str, int]
    """Bytes of the database file, its WAL and shared-memory index."""
    recent_errors: list[ErrorRow]
    read_at: datetime

    @property
    def workflows(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class EventRow:
    """One event, its data still as stored JSON text."""

    id: str
    event_name: str
    event_key: str
    event_data: str
    event_time: datetime
    is_processed: bool


EventCursor = tuple[int, str]
"""Keyset position in the event list: (event_time in microseconds, id) of the last row shown."""


@dataclass(frozen=True)
class EventPage:
    items: list[EventRow]
    next_cursor: EventCursor | None
    """Where the next (older) page starts; None on the last page."""


def overview(conn: sqlite3.Connection, path: str, recent: int = 10) -> Overview:
    """Counts by status and by definition, live figures, sizes and the latest errors (one snapshot)."""
    by_status = dict.fromkeys(STATUSES, 0)
    per_definition: dict[str, dict[str, int]] = {}
    for definition_id, status, count in conn.execute(
        "SELECT workflow_definition_id, status, count(*) FROM workflows GROUP BY workflow_definition_id, status"
    ):
        by_status[status] = by_status.get(status, 0) + count
        per_definition.setdefault(definition_id, dict.fromkeys(STATUSES, 0))[status] = count
    definitions = sorted(
        (DefinitionCounts(d, counts, sum(counts.values())) for d, counts in per_definition.items()),
        key=lambda item: (-item.total, item.definition_id),
    )

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    return Overview(
        by_status=by_status,
        definitions=definitions[:MAX_DEFINITIONS],
        definition_count=len(definitions),
        figures=live_figures(conn),
        events=one("SELECT count(*) FROM events"),
        subscriptions_open=one("SELECT count(*) FROM event_subscriptions WHERE terminated = 0"),
        errors=one("SELECT count(*) FROM execution_errors"),
        files=file_sizes(path),
        recent_errors=recent_errors(conn, recent),
        read_at=from_micros(time.time_ns() // 1000),
    )


def recent_errors(conn: sqlite3.Connection, limit: int) -> list[ErrorRow]:
    """The errors stored last, newest first, with the name of their workflow where it still exists."""
    rows = conn.execute(
        "SELECT e.error_time, e.workflow_id, e.execution_pointer_id, e.message, w.name "
        "FROM execution_errors AS e LEFT JOIN workflows AS w ON w.id = e.workflow_id "
        "ORDER BY e.id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [ErrorRow(from_micros(t), wid, pid, message, name) for t, wid, pid, message, name in rows]


def events_page(
    conn: sqlite3.Connection,
    *,
    processed: bool | None = None,
    event_name: str | None = None,
    event_key: str | None = None,
    before: EventCursor | None = None,
    limit: int = 50,
) -> EventPage:
    """Events newest ``event_time`` first (ties by id), filtered, starting after ``before``.

    ``event_key`` counts only with ``event_name``. Each filter combination has an index: unprocessed
    events ``events_runnable``, a name (and key) ``events_by_name_key``, everything else ``events_by_time``.
    """
    where: list[str] = []
    args: list[Any] = []
    if processed is not None:
        where.append("is_processed = 1" if processed else "is_processed = 0")
    if event_name is not None:
        where.append("event_name = ?")
        args.append(event_name)
        if event_key is not None:
            where.append("event_key = ?")
            args.append(event_key)
    if before is not None:
        where.append("(event_time, id) < (?, ?)")
        args.extend(before)
    sql = "SELECT id, event_name, event_key, event_data, event_time, is_processed FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY event_time DESC, id DESC LIMIT ?"
    rows = conn.execute(sql, (*args, limit + 1)).fetchall()
    items = [EventRow(r[0], r[1], r[2], r[3], from_micros(r[4]), bool(r[5])) for r in rows[:limit]]
    more = len(rows) > limit
    cursor = (rows[limit - 1][4], rows[limit - 1][0]) if more and limit > 0 else None
    return EventPage(items, cursor)


def open_subscriptions(
    conn: sqlite3.Connection, event_name: str, event_key: str, limit: int = 100
) -> list[EventSubscription]:
    """Open subscriptions waiting for ``event_name``/``event_key``, oldest first."""
    rows = conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
        "WHERE event_name = ? AND event_key = ? AND terminated = 0 ORDER BY subscribe_as_of, id LIMIT ?",
        (event_name, event_key, limit),
    ).fetchall()
    return [subscription_from_row(r) for r in rows]


def parse_event_cursor(text: str) -> EventCursor | None:
    """An ``EventCursor`` from its URL form (``format_event_cursor``), or None when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    return None


def format_event_cursor(cursor: EventCursor) -> str:
    return json.dumps(list(cursor), separators=(",", ":"))


class ConsoleStore:
    """The console's reads on a provider's read pool; the overview is shared for ``OVERVIEW_TTL`` s."""

    def __init__(self, provider: SqlitePersistenceProvider, overview_ttl: float = OVERVIEW_TTL) -> None:
        self.provider = provider
        self._ttl = overview_ttl
        self._overview: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self.provider.database.config.path

    async def overview(self) -> Overview:
        async with self._lock:  # one count at a time; waiters take its result
            cached = self._overview
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
            path = self.path
            result = await self.provider.database.read(lambda conn: overview(conn, path))
            self._overview = (time.monotonic(), result)
            return result

    async def events(
        self,
        *,
        processed: bool | None = None,
        event_name: str | None = None,
        event_key: str | None = None,
        before: EventCursor | None = None,
        limit: int = 50,
    ) -> EventPage:
        return await self.provider.database.read(
            lambda conn: events_page(
                conn, processed=processed, event_name=event_name, event_key=event_key, before=before, limit=limit
            )
        )

    async def open_subscriptions(self, event_name: str, event_key: str) -> list[EventSubscription]:
        return await self.provider.database.read(lambda conn: open_subscriptions(conn, event_name, event_key))
