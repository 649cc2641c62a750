"""Visibility and clean-up on SQLite: list, full-text search, delete and purge workflows.

The SQL of these operations lives here. Jobs are plain functions of a ``sqlite3.Connection``
(``SqliteVisibility`` runs them through ``Database``; the ``wfe-sqlite list/show/purge`` commands run
them on a connection of their own). Every list filter has an index (schema version 3): one query
per status on ``workflows_by_status`` or ``workflows_by_definition``, merged newest first, or one
query on ``workflows_by_reference``; search runs on the FTS5 table ``workflows_fts``, which
triggers keep in step with every write; purge selects by ``workflows_by_age``.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

from wfe_client.errors import InvalidArgument, WorkflowNotFound
from wfe_client.models import WorkflowStatus

from ._database import Database
from ._queue_store import WORKFLOW
from ._rows import ErrorRow, PageKey, PointerRow, SubscriptionRow, WorkflowRow
from ._visibility_rows import DetailsRows, FilterRow, SummaryRow, search_terms

__all__ = [
    "PURGE_BATCH",
    "PURGE_BATCH_SECONDS",
    "PURGE_FIRST_BATCH",
    "SUMMARY_COLUMNS",
    "SqliteVisibility",
    "count_purgeable",
    "delete_workflow_job",
    "fts_query",
    "has_work_queue",
    "list_rows",
    "next_batch_size",
    "purge_batch",
    "search_rows",
    "workflow_details_job",
]

SUMMARY_COLUMNS = ", ".join(SummaryRow._fields)
PURGE_BATCH = 500
"""Most workflows one purge transaction deletes."""
PURGE_FIRST_BATCH = 100
"""Workflows the first purge transaction deletes; later ones are sized to ``PURGE_BATCH_SECONDS``."""
PURGE_BATCH_SECONDS = 0.025
"""Writer time one purge transaction aims at (deleting, then committing its pages): a write queued
behind it waits about this long. Measured at 1M workflows, 500 deletions took ~250 ms."""

_ALL_STATUSES = tuple(s.name for s in WorkflowStatus)
_NEWEST_FIRST = "ORDER BY create_time DESC, id DESC"


# -- list --------------------------------------------------------------------------------------


def _window(f: FilterRow, after: PageKey | None) -> tuple[list[str], list[Any]]:
    """The creation-window and keyset conditions (column names unqualified)."""
    terms: list[str] = []
    args: list[Any] = []
    if f.created_after is not None:
        terms.append("create_time >= ?")
        args.append(f.created_after)
    if f.created_before is not None:
        terms.append("create_time < ?")
        args.append(f.created_before)
    if after is not None:
        terms.append("(create_time, id) < (?, ?)")
        args.extend(after)
    return terms, args


def list_rows(conn: sqlite3.Connection, f: FilterRow, limit: int, after: PageKey | None = None) -> list[SummaryRow]:
    """Up to ``limit`` summary rows after ``after``, newest first (ties by id, descending)."""
    window, window_args = _window(f, after)
    if f.reference is not None:
        # Few workflows share a reference: its index gives the order, the rest is checked per row
        # (the unary + keeps SQLite from picking the status or definition index instead).
        terms = ["reference = ?", *window]
        args: list[Any] = [f.reference, *window_args]
        if f.statuses:
            terms.append(f"+status IN ({', '.join('?' * len(f.statuses))})")
            args.extend(f.statuses)
        if f.definition_id is not None:
            terms.append("+workflow_definition_id = ?")
            args.append(f.definition_id)
        rows = conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE {' AND '.join(terms)} {_NEWEST_FIRST} LIMIT ?",
            [*args, limit],
        )
        return [SummaryRow._make(r) for r in rows]
    # One ordered range per status (workflows_by_definition with a definition, else
    # workflows_by_status), merged: never a sort of every matching row.
    prefix = ["workflow_definition_id = ?"] if f.definition_id is not None else []
    prefix_args = [f.definition_id] if f.definition_id is not None else []
    sql = (
        f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE {' AND '.join([*prefix, 'status = ?', *window])} "
        f"{_NEWEST_FIRST} LIMIT ?"
    )
    runs = [
        [SummaryRow._make(r) for r in conn.execute(sql, [*prefix_args, status, *window_args, limit])]
        for status in f.statuses or _ALL_STATUSES
    ]
    if len(runs) == 1:
        return runs[0]
    merged = heapq.merge(*runs, key=lambda row: (row.create_time, row.id), reverse=True)
    return list(itertools.islice(merged, limit))


# -- search ------------------------------------------------------------------------------------


def fts_query(text: object) -> str:
    """The FTS5 query of a user's search text (``search_terms``): every word must match,
    ``word*`` matches a prefix.

    Each whitespace-separated term becomes one quoted FTS5 phrase, so punctuation inside it only
    separates tokens (``order-77`` finds "order" followed by "77") and nothing in the text is FTS5
    syntax.
    """
    return " ".join(
        # A NUL would end the query early (FTS5: "unterminated string"): it separates words, as any control.
        '"' + word.replace('"', '""').replace("\x00", " ") + '"' + ("*" if prefix else "")
        for word, prefix in search_terms(text)
    )


def _search_filter(f: FilterRow) -> tuple[str, list[Any]]:
    """Conditions on ``w``, checked per row (the full-text match drives the query)."""
    terms: list[str] = []
    args: list[Any] = []
    if f.statuses:
        terms.append(f"+w.status IN ({', '.join('?' * len(f.statuses))})")
        args.extend(f.statuses)
    if f.definition_id is not None:
        terms.append("+w.workflow_definition_id = ?")
        args.append(f.definition_id)
    if f.reference is not None:
        terms.append("+w.reference = ?")
        args.append(f.reference)
    if f.created_after is not None:
        terms.append("+w.create_time >= ?")
        args.append(f.created_after)
    if f.created_before is not None:
        terms.append("+w.create_time < ?")
        args.append(f.created_before)
    return "".join(f" AND {t}" for t in terms), args


def search_rows(
    conn: sqlite3.Connection, query: str, f: FilterRow, skip: int, take: int
) -> tuple[list[SummaryRow], int]:
    """Summary rows matching the FTS5 ``query`` (from ``fts_query``) and ``f``, best first; the total."""
    where, args = _search_filter(f)
    columns = ", ".join(f"w.{c}" for c in SummaryRow._fields)
    joined = "FROM workflows_fts f JOIN workflows w ON w.rowid = f.rowid WHERE workflows_fts MATCH ?"
    try:
        rows = [
            SummaryRow._make(r)
            for r in conn.execute(
                f"SELECT {columns} {joined}{where} ORDER BY f.rank, w.create_time DESC, w.id DESC LIMIT ? OFFSET ?",
                [query, *args, take, skip],
            )
        ]
        if len(rows) < take and (rows or skip == 0):
            return rows, skip + len(rows)  # the last window: no need to count
        if where:
            total: int = conn.execute(f"SELECT count(*) {joined}{where}", [query, *args]).fetchone()[0]
        else:
            total = conn.execute("SELECT count(*) FROM workflows_fts WHERE workflows_fts MATCH ?", (query,)).fetchone()[
                0
            ]
    except sqlite3.OperationalError as error:
        if "fts5" in str(error).lower():
            raise InvalidArgument(f"query: cannot be searched for ({error})", field="query") from None
        raise
    return rows, total


# -- delete and purge --------------------------------------------------------------------------


def _delete_ids(conn: sqlite3.Connection, ids: Sequence[str], *, work_queue: bool = True) -> int:
    """Delete these workflows with their subscriptions, errors, scheduled PROCESS_WORKFLOW commands
    and entries in the WORKFLOW queue (waiting, or the record of a hand-out: a waiter's put-back
    must not queue a deleted workflow again); their pointers go by the foreign key's cascade, their
    full text by trigger. Leases on them stay their owners' (a release queues nothing: the
    workflow is gone), and so do items of the other queues (events are not deleted with
    workflows). ``work_queue=False``: the file has no work queue (see ``has_work_queue``)."""
    if not ids:
        return 0
    marks = ", ".join("?" * len(ids))
    deleted: int = conn.execute(f"DELETE FROM workflows WHERE id IN ({marks})", ids).rowcount
    conn.execute(f"DELETE FROM event_subscriptions WHERE workflow_id IN ({marks})", ids)
    conn.execute(f"DELETE FROM execution_errors WHERE workflow_id IN ({marks})", ids)
    conn.execute(f"DELETE FROM scheduled_commands WHERE command_name = 'PROCESS_WORKFLOW' AND data IN ({marks})", ids)
    if work_queue:
        conn.execute(f"DELETE FROM work_queue WHERE queue = '{WORKFLOW}' AND item_id IN ({marks})", ids)
    return deleted


def has_work_queue(conn: sqlite3.Connection) -> bool:
    """Whether the file has the work queue (schema version 2 on). ``wfe-sqlite purge`` also runs on
    older files, which it never upgrades; a server's file always has it."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'work_queue'").fetchone()
    return found is not None


def delete_workflow_job(conn: sqlite3.Connection, workflow_id: str) -> None:
    """Delete one workflow (see ``_delete_ids``); WorkflowNotFound when there is none."""
    if _delete_ids(conn, [workflow_id]) == 0:
        raise WorkflowNotFound(f"workflow {workflow_id!r} not found", id=workflow_id)


def _purge_where(statuses: Sequence[str]) -> str:
    return f"status IN ({', '.join('?' * len(statuses))}) AND coalesce(complete_time, create_time) < ?"


def purge_batch(
    conn: sqlite3.Connection,
    statuses: Sequence[str],
    cutoff_us: int,
    batch: int = PURGE_BATCH,
    *,
    work_queue: bool = True,
) -> int:
    """Delete up to ``batch`` workflows with one of ``statuses`` finished (or created) before the
    cutoff (see ``_delete_ids``)."""
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM workflows WHERE {_purge_where(statuses)} LIMIT ?", [*statuses, cutoff_us, batch]
        )
    ]
    return _delete_ids(conn, ids, work_queue=work_queue)


def count_purgeable(conn: sqlite3.Connection, statuses: Sequence[str], cutoff_us: int) -> int:
    """How many workflows a purge with these statuses and cutoff would delete."""
    count: int = conn.execute(
        f"SELECT count(*) FROM workflows WHERE {_purge_where(statuses)}", [*statuses, cutoff_us]
    ).fetchone()[0]
    return count


def next_batch_size(size: int, took: float, limit: int = PURGE_BATCH) -> int:
    """The size of the next purge transaction, given that ``size`` took ``took`` seconds: towards
    ``PURGE_BATCH_SECONDS``, at most doubling, from 10 up to ``limit``."""
    target = int(size * PURGE_BATCH_SECONDS / max(took, 1e-4))
    return max(min(10, limit), min(limit, 2 * size, target))


# -- one workflow with everything about it -----------------------------------------------------


def workflow_details_job(conn: sqlite3.Connection, workflow_id: str) -> DetailsRows | None:
    """A workflow, its subscriptions and its errors, or None (run it in one read transaction)."""
    found = conn.execute(
        f"SELECT {', '.join(WorkflowRow._fields)} FROM workflows WHERE id = ?", (workflow_id,)
    ).fetchone()
    if found is None:
        return None
    pointers = [
        PointerRow._make(p)
        for p in conn.execute(
            f"SELECT {', '.join(PointerRow._fields)} FROM execution_pointers WHERE workflow_id = ? ORDER BY position",
            (workflow_id,),
        )
    ]
    subscriptions = [
        (SubscriptionRow._make(r[:-1]), bool(r[-1]))
        for r in conn.execute(
            f"SELECT {', '.join(SubscriptionRow._fields)}, terminated FROM event_subscriptions "
            "WHERE workflow_id = ? ORDER BY subscribe_as_of, id",
            (workflow_id,),
        )
    ]
    errors = [
        ErrorRow._make(r)
        for r in conn.execute(
            f"SELECT {', '.join(ErrorRow._fields)} FROM execution_errors WHERE workflow_id = ? ORDER BY error_time, id",
            (workflow_id,),
        )
    ]
    return DetailsRows((WorkflowRow._make(found), pointers), subscriptions, errors)


# -- the store's visibility operations -----------------------------------------------------------


class SqliteVisibility:
    """The visibility operations of ``Store`` on SQLite (``SqliteStore`` inherits them):
    reads on the read pool, writes through the group-committing writer."""

    database: Database

    async def list_workflows(self, filter: FilterRow, limit: int, after: PageKey | None) -> list[SummaryRow]:
        return await self.database.read(lambda conn: list_rows(conn, filter, limit, after))

    async def search_workflows(
        self, text: str, filter: FilterRow, skip: int, take: int
    ) -> tuple[list[SummaryRow], int]:
        query = fts_query(text)
        return await self.database.read(lambda conn: search_rows(conn, query, filter, skip, take))

    async def delete_workflow(self, id: str) -> None:
        await self.database.write(lambda conn: delete_workflow_job(conn, id))

    async def count_purgeable(self, statuses: Sequence[str], older_than_us: int) -> int:
        return await self.database.read(lambda conn: count_purgeable(conn, statuses, older_than_us))

    async def purge_workflows(self, statuses: Sequence[str], older_than_us: int, batch: int = PURGE_BATCH) -> int:
        """Delete in transactions of about ``PURGE_BATCH_SECONDS`` each (at most ``batch``
        workflows); after each, wait for one commit without it, so writes queued meanwhile never
        wait behind two purge transactions in a row. Cancelled between transactions, what it
        deleted stays deleted."""
        loop = asyncio.get_running_loop()
        size = min(PURGE_FIRST_BATCH, batch)
        total = 0
        while True:
            started = loop.time()
            deleted = await self.database.write(functools.partial(_purge_job, statuses, older_than_us, size))
            total += deleted
            if deleted < size:
                return total
            size = next_batch_size(size, loop.time() - started, batch)
            await self.database.write(_nothing)

    async def workflow_details(self, id: str) -> DetailsRows | None:
        return await self.database.read(lambda conn: workflow_details_job(conn, id))


def _purge_job(statuses: Sequence[str], older_than_us: int, size: int, conn: sqlite3.Connection) -> int:
    return purge_batch(conn, statuses, older_than_us, size)


def _nothing(conn: sqlite3.Connection) -> None:
    """A write job that writes nothing: waiting for it lets the writer commit one group."""
