"""The ``wfe-sqlite list``, ``show`` and ``purge`` commands: visibility on the database itself.

Like ``stats`` and ``check`` they open the file on a connection of their own, next to a running
server or not (WAL: reads never wait; a purge takes the write lock one small batch at a time). On
PostgreSQL (``--db postgresql://...``) they run the store's own operations on one connection of
their own; they never upgrade the schema (a server does).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import json
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from wfe_client.limits import MAX_LIST_PAGE_SIZE
from wfe_client.models import WorkflowStatus
from wfe_client.timeutil import to_micros, utc_now
from wfe_client.visibility import PURGED_BY_DEFAULT, WorkflowFilter

from ._config import add_arguments, parse_duration, resolve
from ._maintenance import open_existing
from ._postgres_store import MIGRATIONS as POSTGRES_MIGRATIONS
from ._postgres_store import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from ._postgres_store import PostgresConfig, PostgresStore, is_postgres_url, redact_url, refuse_foreign
from ._postgres_store import _connect_once as asyncpg_connect
from ._postgres_store import schema_version as postgres_schema_version
from ._postgres_visibility import VISIBILITY_MIGRATION
from ._schema import SCHEMA_VERSION
from ._visibility_rows import (
    WorkflowDetails,
    decode_page_token,
    details_from_rows,
    encode_page_token,
    filter_row,
    summary_from_row,
)
from ._visibility_store import (
    PURGE_FIRST_BATCH,
    count_purgeable,
    has_work_queue,
    list_rows,
    next_batch_size,
    purge_batch,
    workflow_details_job,
)

__all__ = ["VISIBILITY_COMMANDS", "add_visibility_commands"]

_DB_ONLY = ("db",)
T = TypeVar("T")
POSTGRES_VISIBILITY_VERSION = POSTGRES_MIGRATIONS.index(VISIBILITY_MIGRATION) + 1
"""The PostgreSQL schema version that brings visibility."""


def _statuses(values: list[str] | None) -> tuple[WorkflowStatus, ...]:
    found: list[WorkflowStatus] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip().upper()
            if not name:
                continue
            if name not in WorkflowStatus.__members__:
                raise ValueError(f"--status: {name!r} is not one of {', '.join(WorkflowStatus.__members__)}")
            if WorkflowStatus[name] not in found:
                found.append(WorkflowStatus[name])
    return tuple(found)


def _instant(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not an ISO 8601 instant (2024-05-01T00:00:00Z)") from None
    if value.tzinfo is None:
        raise ValueError(f"{option}: {text!r} has no time zone (add Z or +HH:MM)")
    return value


def _age_limit(text: str) -> datetime:
    """``--older-than``: a duration before now (``30d``) or an instant (``2024-05-01T00:00:00Z``)."""
    try:
        return utc_now() - parse_duration(text)
    except ValueError:
        pass
    try:
        return _instant(text, "--older-than")
    except ValueError:
        raise ValueError(
            f"--older-than: {text!r} is neither a duration (30d, 12h, 90m) nor an ISO 8601 instant with a time zone"
        ) from None


def add_visibility_commands(commands: Any) -> None:
    """Add ``list``, ``show`` and ``purge`` to the ``wfe-sqlite`` sub-commands."""
    listing = commands.add_parser(
        "list",
        help="list workflows, newest first, by status, definition, reference or creation time",
        description="List workflow summaries newest first, from the database file.",
    )
    listing.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help="RUNNABLE, SUSPENDED, COMPLETE or TERMINATED; repeat or comma-separate for several",
    )
    listing.add_argument("--definition", metavar="ID", help="only this workflow definition")
    listing.add_argument("--reference", metavar="REF", help="only this exact reference")
    listing.add_argument("--created-after", metavar="INSTANT", help="ISO 8601, e.g. 2024-05-01T00:00:00Z (inclusive)")
    listing.add_argument("--created-before", metavar="INSTANT", help="ISO 8601 (exclusive)")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help=f"at most N (1..{MAX_LIST_PAGE_SIZE}; default 50)"
    )
    listing.add_argument("--page-token", metavar="TOKEN", help="continue a previous list (printed at its end)")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(listing, _DB_ONLY)

    show = commands.add_parser(
        "show",
        help="one workflow with its pointers, subscriptions and errors",
        description="Show one workflow: its fields, data, pointers, subscriptions and execution errors.",
    )
    show.add_argument("id", metavar="ID", help="workflow id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(show, _DB_ONLY)

    purge = commands.add_parser(
        "purge",
        help="delete finished workflows older than an age (with pointers, subscriptions, errors)",
        description=(
            "Delete workflows with the given statuses (default COMPLETE and TERMINATED) whose complete_time "
            "(or create_time when they have none) is before the limit, in small transactions that leave "
            "a running server room to write."
        ),
    )
    purge.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="a duration before now (30d, 12h, 90m) or an ISO 8601 instant",
    )
    purge.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help="statuses to purge (default COMPLETE,TERMINATED); repeat or comma-separate",
    )
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    add_arguments(purge, _DB_ONLY)


# -- list ----------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if not 1 <= args.limit <= MAX_LIST_PAGE_SIZE:
        raise ValueError(f"--limit: must be from 1 to {MAX_LIST_PAGE_SIZE}, got {args.limit}")
    selected = WorkflowFilter(
        statuses=_statuses(args.status),
        definition_id=args.definition or None,
        reference=args.reference,
        created_after=None if args.created_after is None else _instant(args.created_after, "--created-after"),
        created_before=None if args.created_before is None else _instant(args.created_before, "--created-before"),
    )
    rows_filter = filter_row(selected)
    after = decode_page_token(rows_filter, args.page_token)
    if is_postgres_url(config.db):
        rows = _on_postgres(config.db, lambda store: store.list_workflows(rows_filter, args.limit + 1, after))
    else:
        conn, _ = open_existing(config.db, require_schema=True)
        try:
            conn.execute("BEGIN")
            rows = list_rows(conn, rows_filter, args.limit + 1, after)
            conn.execute("COMMIT")
        finally:
            conn.close()
    page = rows[: args.limit]
    token = encode_page_token(rows_filter, (page[-1].create_time, page[-1].id)) if len(rows) > args.limit else None
    summaries = [summary_from_row(row) for row in page]
    if args.json:
        print(json.dumps({"workflows": [_jsonable(s) for s in summaries], "next_page_token": token}, indent=2))
        return 0
    table = [("ID", "NAME", "DEFINITION", "VERSION", "STATUS", "CREATED", "COMPLETED", "REFERENCE")]
    table.extend(
        (
            s.id,
            s.name,
            s.workflow_definition_id,
            str(s.version),
            s.status.name,
            _time(s.create_time),
            _time(s.complete_time),
            s.reference or "-",
        )
        for s in summaries
    )
    print(_columns(table))
    if token is not None:
        print(f"more: wfe-sqlite list ... --page-token {token}")
    return 0


# -- show ----------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if is_postgres_url(config.db):
        found = _on_postgres(config.db, lambda store: store.workflow_details(args.id))
    else:
        conn, _ = open_existing(config.db, require_schema=True)
        try:
            conn.execute("BEGIN")
            found = workflow_details_job(conn, args.id)
            conn.execute("COMMIT")
        finally:
            conn.close()
    if found is None:
        print(f"wfe-sqlite: no workflow with id {args.id!r}", file=sys.stderr)
        return 1
    details = details_from_rows(found)
    if args.json:
        print(json.dumps(_details_json(details), indent=2, ensure_ascii=False))
    else:
        print(_details_text(details))
    return 0


def _details_json(details: WorkflowDetails) -> dict[str, Any]:
    subscriptions = []
    for subscription in details.subscriptions:
        item = _jsonable(subscription)
        item["terminated"] = subscription.id in details.terminated
        subscriptions.append(item)
    return {
        "workflow": _jsonable(details.workflow),
        "subscriptions": subscriptions,
        "errors": [_jsonable(e) for e in details.errors],
    }


def _details_text(details: WorkflowDetails) -> str:
    w = details.workflow
    next_run = (
        "never"
        if w.next_execution is None
        else (f"{_time(datetime.fromtimestamp(w.next_execution / 1000, tz=UTC))} ({w.next_execution} ms)")
    )
    lines = [
        f"id            {w.id}",
        f"name          {w.name}",
        f"definition    {w.workflow_definition_id} v{w.version}",
        f"status        {w.status.name}",
        f"reference     {w.reference if w.reference is not None else '-'}",
        f"description   {w.description if w.description is not None else '-'}",
        f"root          {w.root_workflow_id or '-'}",
        f"created       {_time(w.create_time)}",
        f"completed     {_time(w.complete_time)}",
        f"next run      {next_run}",
        "data",
        *("  " + line for line in json.dumps(w.data, indent=2, ensure_ascii=False).splitlines()),
        f"pointers ({len(w.execution_pointers)})",
    ]
    table = [("STEP", "NAME", "STATUS", "ACTIVE", "RETRIES", "START", "END", "EVENT")]
    for p in w.execution_pointers:
        event = (
            "-"
            if p.event_name is None
            else f"{p.event_name}/{p.event_key or ''}" + (" (published)" if p.event_published else "")
        )
        table.append(
            (
                str(p.step_id),
                p.step_name or "-",
                p.status.name,
                "yes" if p.active else "no",
                str(p.retry_count),
                _time(p.start_time),
                _time(p.end_time),
                event,
            )
        )
    lines += ["  " + line for line in _columns(table).splitlines()]
    lines.append(f"subscriptions ({len(details.subscriptions)})")
    for s in details.subscriptions:
        state = "terminated" if s.id in details.terminated else "open"
        token = (
            f", token held by {s.external_worker_id or '?'} until {_time(s.external_token_expiry)}"
            if s.external_token
            else ""
        )
        lines.append(f"  {s.id}  {s.event_name}/{s.event_key} as of {_time(s.subscribe_as_of)}  {state}{token}")
    lines.append(f"errors ({len(details.errors)})")
    for e in details.errors:
        lines.append(f"  {_time(e.error_time)}  pointer {e.execution_pointer_id}: {e.message}")
    return "\n".join(lines)


# -- purge ---------------------------------------------------------------------------------------


def _purge(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    older_than = _age_limit(args.older_than)
    statuses = _statuses(args.status) or PURGED_BY_DEFAULT
    cutoff = to_micros(older_than)
    names = ", ".join(s.name for s in statuses)
    status_names = [s.name for s in statuses]
    if is_postgres_url(config.db):
        if args.dry_run:
            count = _on_postgres(config.db, lambda store: store.count_purgeable(status_names, cutoff))
            print(f"would purge {count} workflows ({names}) finished before {_time(older_than)}")
            return 0
        deleted = _on_postgres(config.db, lambda store: store.purge_workflows(status_names, cutoff))
        print(f"purged {deleted} workflows ({names}) finished before {_time(older_than)}")
        return 0
    conn, path = open_existing(config.db, read_only=args.dry_run, require_schema=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(f"{path}: schema version {version} is newer than this wfe-sqlite's {SCHEMA_VERSION}")
        if args.dry_run:
            count = count_purgeable(conn, status_names, cutoff)
            print(f"would purge {count} workflows ({names}) finished before {_time(older_than)}")
            return 0
        conn.execute("PRAGMA foreign_keys = ON")  # pointers go with their workflow (cascade)
        work_queue = has_work_queue(conn)  # not in a file from before the cluster tables (schema 1)
        deleted = _in_batches(conn, lambda c, n: purge_batch(c, status_names, cutoff, n, work_queue=work_queue))
    finally:
        conn.close()
    print(f"purged {deleted} workflows ({names}) finished before {_time(older_than)}")
    return 0


def _on_postgres(url: str, operation: Callable[[PostgresStore], Awaitable[T]]) -> T:
    """Run one store operation on the PostgreSQL database behind ``url`` (no schema upgrade: a
    database without the visibility schema, newer than this binary, or without our schema and
    holding another application's tables under our names, is refused)."""

    async def run() -> T:
        conn = await asyncpg_connect(url)
        try:
            version = await postgres_schema_version(conn)
            if version == 0:
                await refuse_foreign(conn, redact_url(url))  # another application's: not ours to migrate
        finally:
            await conn.close()
        if version > POSTGRES_SCHEMA_VERSION:
            raise ValueError(
                f"{redact_url(url)}: schema version {version} is newer than this wfe-sqlite's {POSTGRES_SCHEMA_VERSION}"
            )
        if version < POSTGRES_VISIBILITY_VERSION:
            raise ValueError(
                f"{redact_url(url)}: schema version {version} has no visibility yet: "
                "run wfe-sqlite migrate --db URL (or start a server on it) first"
            )
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        store = PostgresStore(pool, PostgresConfig(url, pool_size=1))
        try:
            return await operation(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _in_batches(conn: sqlite3.Connection, batch: Callable[[sqlite3.Connection, int], int]) -> int:
    """Run ``batch(conn, size)`` in write transactions of their own until one deletes less than
    ``size``. A server may share the file: each transaction is sized to take about
    ``PURGE_BATCH_SECONDS``, and the write lock is left free for as long as it was held."""
    total = 0
    size = PURGE_FIRST_BATCH
    while True:
        started = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = batch(conn, size)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        total += deleted
        if deleted < size:
            return total
        took = time.monotonic() - started
        size = next_batch_size(size, took)
        time.sleep(min(took, 1.0))


# -- output --------------------------------------------------------------------------------------


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat().replace("+00:00", "Z")


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


VISIBILITY_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"list": _list, "show": _show, "purge": _purge}
"""The handlers of the commands ``add_visibility_commands`` adds, by name."""
