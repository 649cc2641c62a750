"""Visibility and clean-up on SQLite: list, full-text search, delete and purge workflows.

The SQL of these operations lives here. Jobs are plain functions of a ``sqlite3.Connection`` (the
provider runs them through ``Database``; the ``wfe-sqlite list/show/purge`` commands run them on a
connection of their own). Every list filter has an index (schema version 3): one query per
status on ``workflows_by_status`` or ``workflows_by_definition``, merged newest first, or one
query on ``workflows_by_reference``; search runs on the FTS5 table ``workflows_fts``, which
triggers keep in step with every write; purge selects by ``workflows_by_age``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import itertools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from wfe_client import (
    EventSubscription,
    ExecutionError,
    InvalidArgument,
    WorkflowInstance,
    WorkflowNotFound,
    WorkflowStatus,
)
from wfe_client._time import from_micros
from wfe_client._visibility import MAX_QUERY_CHARS, WorkflowFilter, WorkflowSummary

from ._database import Database
from ._rows import check_id, micros, subscription_from_row

__all__ = [
    "SUMMARY_COLUMNS",
    "PURGE_BATCH",
    "PURGE_FIRST_BATCH",
    "PURGE_BATCH_SECONDS",
    "next_batch_size",
    "ListKey",
    "VisibilityStore",
    "WorkflowDetails",
    "workflow_details_job",
    "list_rows",
    "search_rows",
    "delete_workflow_job",
    "purge_batch",
    "count_purgeable",
    "fts_query",
    "summary_from_row",
    "encode_page_token",
    "decode_page_token",
]

SUMMARY_COLUMNS = (
    "id, name, workflow_definition_id, version, status, reference, description, "
    "create_time, complete_time, next_execution"
)
PURGE_BATCH = 500
"""Most workflows one purge transaction deletes."""
PURGE_FIRST_BATCH = 100
"""Workflows the first purge transaction deletes; later ones are sized to ``PURGE_BATCH_SECONDS``."""
PURGE_BATCH_SECONDS = 0.025
"""Writer time one purge transaction aims at (deleting, then committing its pages): a write queued
behind it waits about this long. Measured at 1M workflows, 500 deletions took ~250 ms."""
MAX_QUERY_TERMS = 16
"""Most words in one search query."""

ListKey = tuple[int, str]
"""Position of a listed workflow: (create_time in microseconds, id); lists run in descending order."""

_ALL_STATUSES = tuple(s.name for s in WorkflowStatus)
_NEWEST_FIRST = "ORDER BY create_time DESC, id DESC"


def summary_from_row(row: Sequence[Any]) -> WorkflowSummary:
    """A ``WorkflowSummary`` from the columns of ``SUMMARY_COLUMNS``."""
    (wid, name, definition, version, status, reference, description, create_time, complete_time, next_execution) = row
    return WorkflowSummary(
        id=wid,
        name=name,
        workflow_definition_id=definition,
        version=version,
        status=WorkflowStatus[status],
        reference=reference,
        description=description,
        create_time=from_micros(create_time),
        complete_time=None if complete_time is None else from_micros(complete_time),
        next_execution=next_execution,
    )


# -- page tokens -------------------------------------------------------------------------------


def _seal(filter: WorkflowFilter, key: ListKey) -> str:
    """A short digest of a filter and a position: a token only continues the list it came from,
    and a token altered or cut short is refused instead of read as some other position."""
    parts = [
        ",".join(s.name for s in sorted(filter.statuses, key=lambda s: s.name)),
        filter.definition_id or "",
        "\x00" if filter.reference is None else "=" + filter.reference,
        "" if filter.created_after is None else str(micros(filter.created_after, "created_after")),
        "" if filter.created_before is None else str(micros(filter.created_before, "created_before")),
        str(key[0]),
        key[1],
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_page_token(filter: WorkflowFilter, key: ListKey) -> str:
    """The opaque token of the page after ``key`` of the list selected by ``filter``."""
    raw = f"{_seal(filter, key)}:{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_page_token(filter: WorkflowFilter, token: Optional[str]) -> Optional[ListKey]:
    """The position a token continues after; InvalidArgument for a token not from this list."""
    if not token:
        return None
    invalid = InvalidArgument(
        "page_token: not a token from a previous page of a list with these filters", field="page_token"
    )
    if not isinstance(token, str) or len(token) > 4096:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        seal, number, last = raw.split(":", 2)
        key = (int(number), last)
    except (ValueError, UnicodeError):
        raise invalid from None
    if seal != _seal(filter, key):
        raise invalid
    return key


# -- list --------------------------------------------------------------------------------------


def _window(filter: WorkflowFilter, after: Optional[ListKey]) -> tuple[list[str], list[Any]]:
    """The creation-window and keyset conditions (column names unqualified)."""
    terms: list[str] = []
    args: list[Any] = []
    if filter.created_after is not None:
        terms.append("create_time >= ?")
        args.append(micros(filter.created_after, "created_after"))
    if filter.created_before is not None:
        terms.append("create_time < ?")
        args.append(micros(filter.created_before, "created_before"))
    if after is not None:
        terms.append("(create_time, id) < (?, ?)")
        args.extend(after)
    return terms, args


def list_rows(
    conn: sqlite3.Connection, filter: WorkflowFilter, limit: int, after: Optional[ListKey] = None
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` summary rows (``SUMMARY_COLUMNS``) after ``after``, newest first."""
    window, window_args = _window(filter, after)
    statuses = [s.name for s in filter.statuses]
    if filter.reference is not None:
        # Few workflows share a reference: its index gives the order, the rest is checked per row
        # (the unary + keeps SQLite from picking the status or definition index instead).
        terms = ["reference = ?", *window]
        args: list[Any] = [filter.reference, *window_args]
        if statuses:
            terms.append(f"+status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if filter.definition_id is not None:
            terms.append("+workflow_definition_id = ?")
            args.append(filter.definition_id)
        return conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE {' AND '.join(terms)} {_NEWEST_FIRST} LIMIT ?",
            [*args, limit],
        ).fetchall()
    # One ordered range per status (workflows_by_definition with a definition, else
    # workflows_by_status), merged: never a sort of every matching row.
    prefix = ["workflow_definition_id = ?"] if filter.definition_id is not None else []
    prefix_args = [filter.definition_id] if filter.definition_id is not None else []
    sql = (
        f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE {' AND '.join([*prefix, 'status = ?', *window])} "
        f"{_NEWEST_FIRST} LIMIT ?"
    )
    runs = [conn.execute(sql, [*prefix_args, status, *window_args, limit]).fetchall() for status in statuses or _ALL_STATUSES]
    if len(runs) == 1:
        return runs[0]
    merged = heapq.merge(*runs, key=lambda row: (row[7], row[0]), reverse=True)
    return list(itertools.islice(merged, limit))


# -- search ------------------------------------------------------------------------------------


def fts_query(text: object) -> str:
    """The FTS5 query of a user's search text: every word must match, ``word*`` matches a prefix.

    Each whitespace-separated term becomes one quoted FTS5 phrase, so punctuation inside it only
    separates tokens (``order-77`` finds "order" followed by "77") and nothing in the text is FTS5
    syntax. A term without letters or digits is left out; a query with no word left is invalid.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"query: expected a string, got {type(text).__name__}", field="query")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"query: longer than {MAX_QUERY_CHARS} characters", field="query")
    check_id(text, "query", required=False)  # valid Unicode text
    phrases = []
    for term in text.split():
        prefix = term.endswith("*")
        word = term.rstrip("*")
        if not any(ch.isalnum() for ch in word):
            continue
        phrases.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    if not phrases:
        raise InvalidArgument("query: no word to search for (letters or digits)", field="query")
    if len(phrases) > MAX_QUERY_TERMS:
        raise InvalidArgument(f"query: more than {MAX_QUERY_TERMS} words", field="query")
    return " ".join(phrases)


def _search_filter(filter: WorkflowFilter) -> tuple[str, list[Any]]:
    """Conditions on ``w`` (per row: the full-text match drives the query)."""
    terms: list[str] = []
    args: list[Any] = []
    if filter.statuses:
        terms.append(f"+w.status IN ({', '.join('?' * len(filter.statuses))})")
        args.extend(s.name for s in filter.statuses)
    if filter.definition_id is not None:
        terms.append("+w.workflow_definition_id = ?")
        args.append(filter.definition_id)
    if filter.reference is not None:
        terms.append("+w.reference = ?")
        args.append(filter.reference)
    if filter.created_after is not None:
        terms.append("+w.create_time >= ?")
        args.append(micros(filter.created_after, "created_after"))
    if filter.created_before is not None:
        terms.append("+w.create_time < ?")
        args.append(micros(filter.created_before, "created_before"))
    return "".join(f" AND {t}" for t in terms), args


def search_rows(
    conn: sqlite3.Connection, query: str, filter: WorkflowFilter, skip: int, take: int
) -> tuple[list[tuple[Any, ...]], int]:
    """Summary rows matching the FTS5 ``query`` (from ``fts_query``) and ``filter``, best first; the total."""
    where, args = _search_filter(filter)
    columns = ", ".join(f"w.{c.strip()}" for c in SUMMARY_COLUMNS.split(","))
    joined = "FROM workflows_fts f JOIN workflows w ON w.rowid = f.rowid WHERE workflows_fts MATCH ?"
    try:
        rows = conn.execute(
            f"SELECT {columns} {joined}{where} ORDER BY f.rank, w.create_time DESC, w.id DESC LIMIT ? OFFSET ?",
            [query, *args, take, skip],
        ).fetchall()
        if not rows and skip == 0:
            return rows, 0
        if len(rows) < take and (rows or skip == 0):
            return rows, skip + len(rows)
        if where:
            total = conn.execute(f"SELECT count(*) {joined}{where}", [query, *args]).fetchone()[0]
        else:
            total = conn.execute(
                "SELECT count(*) FROM workflows_fts WHERE workflows_fts MATCH ?", (query,)
            ).fetchone()[0]
    except sqlite3.OperationalError as error:
        if "fts5" in str(error).lower():
            raise InvalidArgument(f"query: cannot be searched for ({error})", field="query") from None
        raise
    return rows, total


# -- delete and purge --------------------------------------------------------------------------


def _delete_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> int:
    """Delete these workflows with their subscriptions, errors and scheduled PROCESS_WORKFLOW
    commands; their pointers go by the foreign key's cascade, their full text by trigger."""
    if not ids:
        return 0
    marks = ", ".join("?" * len(ids))
    deleted = conn.execute(f"DELETE FROM workflows WHERE id IN ({marks})", ids).rowcount
    conn.execute(f"DELETE FROM event_subscriptions WHERE workflow_id IN ({marks})", ids)
    conn.execute(f"DELETE FROM execution_errors WHERE workflow_id IN ({marks})", ids)
    conn.execute(
        f"DELETE FROM scheduled_commands WHERE command_name = 'PROCESS_WORKFLOW' AND data IN ({marks})", ids
    )
    return deleted


def delete_workflow_job(conn: sqlite3.Connection, workflow_id: str) -> None:
    """Delete one workflow (see ``_delete_ids``); WorkflowNotFound when there is none."""
    if _delete_ids(conn, [workflow_id]) == 0:
        raise WorkflowNotFound(f"workflow {workflow_id!r} not found", id=workflow_id)


def _purge_where(statuses: Sequence[WorkflowStatus]) -> str:
    return f"status IN ({', '.join('?' * len(statuses))}) AND coalesce(complete_time, create_time) < ?"


def purge_batch(
    conn: sqlite3.Connection, statuses: Sequence[WorkflowStatus], cutoff_us: int, batch: int = PURGE_BATCH
) -> int:
    """Delete up to ``batch`` workflows with one of ``statuses`` finished (or created) before the cutoff."""
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM workflows WHERE {_purge_where(statuses)} LIMIT ?",
            [*(s.name for s in statuses), cutoff_us, batch],
        )
    ]
    return _delete_ids(conn, ids)


def next_batch_size(size: int, took: float, limit: int = PURGE_BATCH) -> int:
    """The size of the next purge transaction, given that ``size`` took ``took`` seconds: towards
    ``PURGE_BATCH_SECONDS``, at most doubling, from 10 up to ``limit``."""
    target = int(size * PURGE_BATCH_SECONDS / max(took, 1e-4))
    return max(min(10, limit), min(limit, 2 * size, target))


def count_purgeable(conn: sqlite3.Connection, statuses: Sequence[WorkflowStatus], cutoff_us: int) -> int:
    """How many workflows a purge with these statuses and cutoff would delete."""
    return conn.execute(
        f"SELECT count(*) FROM workflows WHERE {_purge_where(statuses)}", [*(s.name for s in statuses), cutoff_us]
    ).fetchone()[0]


# -- one workflow with everything about it -----------------------------------------------------


@dataclass
class WorkflowDetails:
    """A workflow with its subscriptions and execution errors (what ``wfe-sqlite show`` prints)."""

    workflow: WorkflowInstance
    """The workflow with its pointers."""
    subscriptions: list[EventSubscription] = field(default_factory=list)
    """Its event subscriptions, oldest first, terminated ones included."""
    terminated: set[str] = field(default_factory=set)
    """Ids of the terminated ones among ``subscriptions``."""
    errors: list[ExecutionError] = field(default_factory=list)
    """Its execution errors, oldest first."""


def workflow_details_job(conn: sqlite3.Connection, workflow_id: str) -> Optional[WorkflowDetails]:
    """The ``WorkflowDetails`` of one workflow, or None (run it in one read transaction)."""
    # The workflow row readers live with the provider, which imports this module.
    from ._provider import _SUBSCRIPTION_COLUMNS, _read_workflow_rows, workflow_from_rows

    found = _read_workflow_rows(conn, "id = ?", workflow_id)
    if found is None:
        return None
    details = WorkflowDetails(workflow_from_rows(*found))
    for row in conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS}, terminated FROM event_subscriptions WHERE workflow_id = ? "
        "ORDER BY subscribe_as_of, id",
        (workflow_id,),
    ):
        details.subscriptions.append(subscription_from_row(row[:-1]))
        if row[-1]:
            details.terminated.add(row[0])
    details.errors = [
        ExecutionError(from_micros(t), workflow_id, pointer, message)
        for t, pointer, message in conn.execute(
            "SELECT error_time, execution_pointer_id, message FROM execution_errors WHERE workflow_id = ? "
            "ORDER BY error_time, id",
            (workflow_id,),
        )
    ]
    return details


# -- the store ---------------------------------------------------------------------------------


class VisibilityStore:
    """The visibility operations on a ``Database``: reads on the read pool, writes through the writer."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def list(
        self, filter: WorkflowFilter, page_size: int, page_token: Optional[str]
    ) -> tuple[list[WorkflowSummary], Optional[str]]:
        """One page of summaries and the token of the next one (None on the last page)."""
        after = decode_page_token(filter, page_token)
        rows = await self._db.read(lambda conn: list_rows(conn, filter, page_size + 1, after))
        page = rows[:page_size]
        token = encode_page_token(filter, (page[-1][7], page[-1][0])) if len(rows) > page_size else None
        return [summary_from_row(r) for r in page], token

    async def search(
        self, text: object, filter: WorkflowFilter, skip: int, take: int
    ) -> tuple[list[WorkflowSummary], int]:
        """Matches of ``text`` in the window ``skip``/``take``, best first, and their total."""
        query = fts_query(text)
        rows, total = await self._db.read(lambda conn: search_rows(conn, query, filter, skip, take))
        return [summary_from_row(r) for r in rows], total

    async def details(self, workflow_id: str) -> WorkflowDetails:
        """One workflow with its subscriptions and errors; ``WorkflowNotFound`` when there is none."""
        check_id(workflow_id, "id")
        found = await self._db.read(lambda conn: workflow_details_job(conn, workflow_id))
        if found is None:
            raise WorkflowNotFound(f"workflow {workflow_id!r} not found", id=workflow_id)
        return found

    async def delete(self, workflow_id: str) -> None:
        check_id(workflow_id, "id")
        await self._db.write(lambda conn: delete_workflow_job(conn, workflow_id))

    async def purge(
        self,
        older_than: datetime,
        statuses: Sequence[WorkflowStatus],
        *,
        dry_run: bool = False,
        batch: int = PURGE_BATCH,
    ) -> int:
        """Delete (or, with ``dry_run``, count) the workflows to purge, at most ``batch`` per transaction.

        Each transaction is one write job through the group-committing writer, sized to take about
        ``PURGE_BATCH_SECONDS``; after each, the purge waits for one commit without it, so writes
        queued meanwhile never wait behind two purge transactions in a row. Cancelled between
        transactions, it keeps what it deleted.
        """
        cutoff = micros(older_than, "older_than")
        if dry_run:
            return await self._db.read(lambda conn: count_purgeable(conn, statuses, cutoff))
        loop = asyncio.get_running_loop()
        size = min(PURGE_FIRST_BATCH, batch)
        total = 0
        while True:
            started = loop.time()
            deleted = await self._db.write(lambda conn, n=size: purge_batch(conn, statuses, cutoff, n))
            total += deleted
            if deleted < size:
                return total
            size = next_batch_size(size, loop.time() - started, batch)
            await self._db.write(_nothing)


def _nothing(conn: sqlite3.Connection) -> None:
    """A write job that writes nothing: waiting for it lets the writer commit one group."""
