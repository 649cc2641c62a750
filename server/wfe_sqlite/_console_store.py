"""The web console's own reads on SQLite: overview counts, the event list, the subscriptions
waiting for one event. (A workflow with its subscriptions and errors is ``workflow_details``.)

The SQL of these operations lives here. Jobs are plain functions of a ``sqlite3.Connection``;
``SqliteConsoleReads`` (which ``SqliteStore`` inherits) runs them on the read pool.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ._console_rows import OverviewRows
from ._database import Database
from ._maintenance import file_sizes, live_figures
from ._rows import ErrorRow, EventRow, PageKey, SubscriptionRow

__all__ = ["SqliteConsoleReads", "console_events_job", "open_subscriptions_job", "overview_job"]

_EVENT_COLUMNS = ", ".join(EventRow._fields)
_SUBSCRIPTION_COLUMNS = ", ".join(SubscriptionRow._fields)


def overview_job(conn: sqlite3.Connection, path: str, recent_errors: int) -> OverviewRows:
    """``OverviewRows`` (run it in one read transaction). The counts by definition and status read
    the covering index ``workflows_by_definition``: a pass over every workflow, so callers reuse it."""

    def one(sql: str) -> int:
        count: int = conn.execute(sql).fetchone()[0]
        return count

    counts = [
        (definition, status, count)
        for definition, status, count in conn.execute(
            "SELECT workflow_definition_id, status, count(*) FROM workflows GROUP BY workflow_definition_id, status"
        )
    ]
    errors = [
        (ErrorRow(*row[:4]), row[4])
        for row in conn.execute(
            "SELECT e.error_time, e.workflow_id, e.execution_pointer_id, e.message, w.name "
            "FROM execution_errors AS e LEFT JOIN workflows AS w ON w.id = e.workflow_id "
            "ORDER BY e.id DESC LIMIT ?",
            (recent_errors,),
        )
    ]
    sizes = file_sizes(path)
    return OverviewRows(
        counts=counts,
        figures=live_figures(conn),
        events=one("SELECT count(*) FROM events"),
        open_subscriptions=one("SELECT count(*) FROM event_subscriptions WHERE terminated = 0"),
        errors=one("SELECT count(*) FROM execution_errors"),
        database_bytes=sizes["database"],
        wal_bytes=sizes["wal"],
        recent_errors=errors,
    )


def console_events_job(
    conn: sqlite3.Connection,
    processed: bool | None,
    event_name: str | None,
    event_key: str | None,
    after: PageKey | None,
    limit: int,
) -> tuple[list[EventRow], bool]:
    """Events newest ``event_time`` first (ties by id descending) after the position ``after``, and
    whether more follow. ``event_key`` counts only with ``event_name``. Each filter combination has
    an index: unprocessed ``events_runnable``, a name (and key) ``events_by_name_key``, everything
    else ``events_by_time``."""
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
    if after is not None:
        where.append("(event_time, id) < (?, ?)")
        args.extend(after)
    sql = f"SELECT {_EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY event_time DESC, id DESC LIMIT ?"
    rows = [EventRow(*row) for row in conn.execute(sql, (*args, limit + 1))]
    return rows[:limit], len(rows) > limit


def open_subscriptions_job(
    conn: sqlite3.Connection, event_name: str, event_key: str, limit: int
) -> list[SubscriptionRow]:
    """Open subscriptions to ``event_name``/``event_key``, oldest first (index ``subscriptions_open``)."""
    return [
        SubscriptionRow(*row)
        for row in conn.execute(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
            "WHERE event_name = ? AND event_key = ? AND terminated = 0 ORDER BY subscribe_as_of, id LIMIT ?",
            (event_name, event_key, limit),
        )
    ]


class SqliteConsoleReads:
    """The console reads of ``Store`` on SQLite (``SqliteStore`` inherits them), on the read pool."""

    database: Database

    async def console_overview(self, recent_errors: int) -> OverviewRows:
        path = self.database.config.path
        return await self.database.read(lambda conn: overview_job(conn, path, recent_errors))

    async def console_events(
        self,
        processed: bool | None,
        event_name: str | None,
        event_key: str | None,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[EventRow], bool]:
        return await self.database.read(
            lambda conn: console_events_job(conn, processed, event_name, event_key, after, limit)
        )

    async def open_subscriptions(self, event_name: str, event_key: str, limit: int) -> list[SubscriptionRow]:
        return await self.database.read(lambda conn: open_subscriptions_job(conn, event_name, event_key, limit))
