"""``PostgresStore``: the store interface on PostgreSQL (asyncpg pool). The SQL of every operation is here.

Any number of servers may share one database, so every guarantee holds in the database itself:
sequences and compare-and-sets are single statements (``INSERT ... ON CONFLICT ... RETURNING``, a
conditional ``UPDATE`` that PostgreSQL re-checks on the newest row version), command claims lock
rows with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait for each other or get the
same command, and leases and token expiries are compared with the database's clock. Each write is
one statement where it can be (one round trip). Creates and persists of workflows and creates of
events are group-committed across callers (``_postgres_group.GroupWriter``): concurrent ones share one
transaction, each caller answered after its COMMIT; other writes are their own transactions.

Errors: a unique violation becomes the same ``AlreadyExists`` as on SQLite (by constraint name);
a connection that fails or cannot be had becomes ``StorageUnavailable``.

Schema: ordered migrations (``MIGRATIONS``), recorded in ``schema_version``, applied under a
session advisory lock so servers starting together upgrade once (``migrate``). A database without
our schema holding another application's tables under our names is refused untouched
(``refuse_foreign``), and a server's role that cannot write our tables at start-up
(``refuse_read_only``); SQLSTATE 42501 later (privileges taken away) is ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import asyncpg

from wfe_client.errors import (
    EventAlreadyExists,
    EventNotFound,
    InvalidArgument,
    LeaseLost,
    RevisionConflict,
    StorageUnavailable,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    WfeError,
    WorkflowAlreadyExists,
    WorkflowNameTaken,
    WorkflowNotFound,
)
from wfe_client.timeutil import to_micros, utc_now

from ._connection import DatabaseOpenError
from ._paging import cut_page, row_bytes, workflow_bytes
from ._postgres_cluster import PostgresCluster, queue_cte, unleased
from ._postgres_group import GroupWriter, Merge, MergeRefused
from ._postgres_visibility import VISIBILITY_MIGRATION, PostgresVisibility, has_nul, refuse_nul
from ._queue_store import EVENT, WORKFLOW
from ._rows import (
    CommandRow,
    ErrorRow,
    EventRow,
    PageKey,
    PointerRow,
    StoredWorkflow,
    SubscriptionRow,
    WorkflowRow,
    optional_id,
)
from ._store import Claim, LiveFigures, SizedWorkflow, Store

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PostgresConfig",
    "PostgresStore",
    "is_postgres_url",
    "migrate",
    "migrate_url",
    "postgres_stats",
    "redact_url",
    "refuse_foreign",
    "schema_version",
]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
"""The database's clock in epoch microseconds: leases and tokens compare against it on every server."""

MIGRATION_LOCK = 0x5746455F53514C  # "WFE_SQL": the advisory lock key of schema upgrades

MIGRATIONS: list[str] = [
    # 1: the tables of the first release, as on SQLite (integers are BIGINT, JSON is TEXT).
    """
    CREATE TABLE workflows (
        id                      TEXT PRIMARY KEY,
        name                    TEXT NOT NULL,
        root_workflow_id        TEXT,
        workflow_definition_id  TEXT NOT NULL,
        version                 BIGINT NOT NULL,
        description             TEXT,
        reference               TEXT,
        next_execution          BIGINT,
        status                  TEXT NOT NULL,
        data                    TEXT NOT NULL,
        create_time             BIGINT NOT NULL,
        complete_time           BIGINT
    );
    CREATE UNIQUE INDEX workflows_name ON workflows (name) WHERE name <> '';
    CREATE INDEX workflows_runnable ON workflows (next_execution, id)
        WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL;

    CREATE TABLE execution_pointers (
        workflow_id             TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
        position                BIGINT NOT NULL,
        id                      TEXT NOT NULL,
        step_id                 BIGINT NOT NULL,
        active                  BIGINT NOT NULL,
        status                  TEXT NOT NULL,
        sleep_until             BIGINT,
        persistence_data        TEXT,
        start_time              BIGINT,
        end_time                BIGINT,
        event_name              TEXT,
        event_key               TEXT,
        event_published         BIGINT NOT NULL,
        event_data              TEXT,
        step_name               TEXT,
        retry_count             BIGINT NOT NULL,
        children                TEXT NOT NULL,
        context_item            TEXT,
        predecessor_id          TEXT,
        outcome                 TEXT,
        scope                   TEXT NOT NULL,
        extension_attributes    TEXT NOT NULL
    );
    -- Not unique: a persist deletes the old pointers and inserts the new ones in one statement.
    CREATE INDEX execution_pointers_by_workflow ON execution_pointers (workflow_id, position);

    CREATE TABLE events (
        id                      TEXT PRIMARY KEY,
        event_name              TEXT NOT NULL,
        event_key               TEXT NOT NULL,
        event_data              TEXT NOT NULL,
        event_time              BIGINT NOT NULL,
        is_processed            BIGINT NOT NULL
    );
    CREATE INDEX events_runnable ON events (event_time, id) WHERE is_processed = 0;
    CREATE INDEX events_by_name_key ON events (event_name, event_key, event_time, id);

    CREATE TABLE event_subscriptions (
        id                      TEXT PRIMARY KEY,
        workflow_id             TEXT NOT NULL,
        step_id                 BIGINT NOT NULL,
        execution_pointer_id    TEXT NOT NULL,
        event_name              TEXT NOT NULL,
        event_key               TEXT NOT NULL,
        subscribe_as_of         BIGINT NOT NULL,
        subscription_data       TEXT,
        external_token          TEXT,
        external_worker_id      TEXT,
        external_token_expiry   BIGINT,
        terminated              BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX subscriptions_open ON event_subscriptions
        (event_name, event_key, subscribe_as_of, id) WHERE terminated = 0;

    CREATE TABLE scheduled_commands (
        command_name            TEXT NOT NULL,
        data                    TEXT NOT NULL,
        execute_time            BIGINT NOT NULL,
        lease_id                TEXT,
        lease_expiry            BIGINT,
        generation              BIGINT NOT NULL DEFAULT 0,
        claimed_generation      BIGINT,
        PRIMARY KEY (command_name, data)
    );
    CREATE INDEX scheduled_commands_due ON scheduled_commands (execute_time);

    CREATE TABLE execution_errors (
        id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        error_time              BIGINT NOT NULL,
        workflow_id             TEXT NOT NULL,
        execution_pointer_id    TEXT NOT NULL,
        message                 TEXT NOT NULL
    );
    CREATE INDEX execution_errors_by_workflow ON execution_errors (workflow_id, error_time);

    CREATE TABLE definition_sequences (
        definition_id           TEXT PRIMARY KEY,
        value                   BIGINT NOT NULL
    );
    """,
    # 2: the cluster (issue 11), as SQLite's version 2: workflow revisions (existing ones start at 1),
    # leases with one fencing-token counter, the durable work queue (a row waits with a position
    # from ``work_queue_position``, or records the item's last hand-out), and the relay of lifecycle
    # events too large for a notification (``_postgres_cluster``).
    """
    ALTER TABLE workflows ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;

    CREATE TABLE locks (
        resource                TEXT PRIMARY KEY,
        owner                   TEXT NOT NULL,
        fencing_token           BIGINT NOT NULL,
        expire_time             BIGINT NOT NULL
    );
    CREATE INDEX locks_expiry ON locks (expire_time);

    CREATE TABLE counters (
        name                    TEXT PRIMARY KEY,
        value                   BIGINT NOT NULL
    );

    CREATE SEQUENCE work_queue_position;
    CREATE TABLE work_queue (
        queue                   TEXT NOT NULL,
        item_id                 TEXT NOT NULL,
        position                BIGINT,
        queued_at               BIGINT NOT NULL,
        handed_out_at           BIGINT,
        PRIMARY KEY (queue, item_id)
    );
    CREATE INDEX work_queue_waiting ON work_queue (queue, position) WHERE position IS NOT NULL;
    CREATE INDEX work_queue_handed_out ON work_queue (handed_out_at) WHERE position IS NULL;

    CREATE TABLE lifecycle_relay (
        id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        payload                 BYTEA NOT NULL,
        created                 BIGINT NOT NULL
    );
    """,
    # 3: visibility (list, search, delete, purge) and the console (``_postgres_visibility``).
    VISIBILITY_MIGRATION,
    # 4: the planner assumes a workflow holds about 5 pointers (n_distinct = -0.2: distinct workflow
    # ids are a fifth of the rows), whatever ANALYZE samples. It estimates the pointers of a workflow
    # id the plan does not know (a prepared statement's generic plan, which asyncpg's statement cache
    # runs once it costs no more than the first five runs did; the read's correlated subquery; the
    # foreign key's cascade) as rows / n_distinct: once one workflow holds most pointers, ANALYZE
    # counts few distinct ids, and after a few persists of that workflow on a connection, every
    # persist there of more than ``_COMPARE_POINTERS`` scanned the whole table to read the stored
    # pointers (``_STORED``). 5, not more:
    # at 20 a read of 3 pointers was planned as a bitmap scan and a sort instead of the index in
    # order. Analyzed again here: a database upgraded with skewed statistics is fixed now, not at
    # autovacuum's next analyze.
    """
    ALTER TABLE execution_pointers ALTER COLUMN workflow_id SET (n_distinct = -0.2);
    ANALYZE execution_pointers (workflow_id);
    """,
]
"""Migration N+1 is ``MIGRATIONS[N]``: append new ones, never edit a released one."""

SCHEMA_VERSION = len(MIGRATIONS)


def is_postgres_url(url: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` database strings."""
    return url.startswith(POSTGRES_SCHEMES)


def check_postgres_url(url: str) -> str:
    """``url`` if its hosts' ports are numbers 1-65535 (``host``, ``host:port``, ``[v6]:port``, a
    comma-separated list of them, or none), else ``ValueError`` naming the port: asyncpg's own
    message for a bad port is a bare ``int()`` failure."""
    rest = url.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    for host in filter(None, authority.split(",")):
        if host.startswith("[") and "]" not in host:  # asyncpg's own message: a bare 'Invalid IPv6 URL'
            raise ValueError(f"{redact_url(url)}: host {host!r} has no closing ']' (write an IPv6 host as [addr]:port)")
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" not in port:
            continue
        text = port.rpartition(":")[2]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
            raise ValueError(f"{redact_url(url)}: port {text!r} is not a number from 1 to 65535")
    return url


SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""Connection parameters of a PostgreSQL URL's query (libpq's, asyncpg's) that hold a secret."""


def redact_url(url: str) -> str:
    """``url`` with the secrets of a PostgreSQL URL replaced by ``***`` (for logs and messages): the
    password of its user part, and the values of the ``SECRET_PARAMETERS`` of its query."""
    if not is_postgres_url(url):
        return url
    scheme, rest = url.split("://", 1)
    rest, question, query = rest.partition("?")
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    if question:
        query, hash_sign, fragment = query.partition("#")
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***"
            if urllib.parse.unquote_plus(pair.split("=", 1)[0]).strip().lower() in SECRET_PARAMETERS
            else pair
            for pair in query.split("&")
        )
        query += hash_sign + fragment
    return f"{scheme}://{authority}{sep}{path}{question}{query}"


# -- SQL built from the row types ----------------------------------------------------------------

_TEXT_COLUMNS = {
    "id", "name", "root_workflow_id", "workflow_definition_id", "description", "reference", "status", "data",
    "workflow_id", "persistence_data", "event_name", "event_key", "event_data", "step_name", "children",
    "context_item", "predecessor_id", "outcome", "scope", "extension_attributes", "execution_pointer_id",
    "subscription_data", "external_token", "external_worker_id", "message", "command_name",
}  # fmt: skip


def _type(column: str) -> str:
    return "text" if column in _TEXT_COLUMNS else "bigint"


def _columns(row: type[NamedTuple]) -> str:
    return ", ".join(row._fields)


def _placeholders(row: type[NamedTuple], first: int = 1) -> str:
    return ", ".join(f"${first + i}::{_type(name)}" for i, name in enumerate(row._fields))


def _unnest(row: type[NamedTuple], first: int) -> str:
    """``SELECT * FROM unnest($first::t[], ...)``: many rows as one parameter per column."""
    arrays = ", ".join(f"${first + i}::{_type(name)}[]" for i, name in enumerate(row._fields))
    return f"SELECT * FROM unnest({arrays})"


def _arrays(rows: Sequence[NamedTuple], row: type[NamedTuple]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in row._fields]


WORKFLOW_COLUMNS = _columns(WorkflowRow)
POINTER_COLUMNS = _columns(PointerRow)
EVENT_COLUMNS = _columns(EventRow)
SUBSCRIPTION_COLUMNS = _columns(SubscriptionRow)
_W = len(WorkflowRow._fields)
_P = len(PointerRow._fields)
_MUTABLE = [name for name in WorkflowRow._fields if name not in ("id", "create_time", "revision")]
_M = len(_MUTABLE)

_WORKFLOW_WIDTH = len(WorkflowRow._fields)
_ROWS_ABOVE = 256
"""A read takes a workflow's pointers in its row (``ARRAY(ROW(...))``: one statement, one round trip)
up to this many; above it, as rows of their own. asyncpg decodes an array of records in one piece,
on the event loop, and ever slower per record as it grows, rows as they arrive: a get of 10,000
took 190-390 ms one way, 50-100 ms the other, of 100,000 2.0-3.0 s and 0.46 s. Up to 256 the array
was as fast or faster (BENCHMARKS.md, "a PostgreSQL get of many pointers reads them as rows")."""


def _read_sql(where: str) -> str:
    """The workflows ``where`` selects, each with its pointers (a list of tuples) in its last column:
    at most ``_ROWS_ABOVE`` + 1 of them, so that one more says there are more (read then as rows).
    Capped rather than counted: a count in the statement made every small read ~10-30 us slower."""
    return (
        f"SELECT {WORKFLOW_COLUMNS}, ARRAY(SELECT ROW({POINTER_COLUMNS}) FROM execution_pointers "
        f"WHERE workflow_id = workflows.id ORDER BY position LIMIT {_ROWS_ABOVE + 1}) FROM workflows WHERE {where}"
    )


_READ_POINTERS = (
    f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id = ANY($1::text[]) "
    "ORDER BY workflow_id, position"
)
"""The pointers of the workflows $1, as rows (in the transaction that read the workflows)."""


_ROWS_PER_FETCH = 2000
"""Pointer rows a read takes per round trip (a cursor's fetch): asyncpg decodes what it has received
in one piece on the event loop (a fetch of 100,000 rows held it 120-200 ms), and each chunk is
turned into ``PointerRow``s before the next (a few ms). What still holds the loop longest are the
interpreter's full garbage collections (40-105 ms each) that allocating 100,000 rows sets off."""


_INSERT_POINTERS = f"INSERT INTO execution_pointers ({POINTER_COLUMNS}) {_unnest(PointerRow, _W + 1)}"
_CLOCK = f"clock AS (SELECT {NOW_US} AS now)"
_DUE_WORKFLOW = "{0}.status = 'RUNNABLE' AND {0}.next_execution IS NOT NULL AND {0}.next_execution <= clock.now / 1000"
_QUEUE_WORKFLOW = queue_cte(f"'{WORKFLOW}'", "w", "id", f"{_DUE_WORKFLOW.format('w')} AND {unleased('w.id')}")
"""Queue the stored workflow ``w`` when it is RUNNABLE, due and under no live lease."""

CREATE_NAMED = (
    f"WITH {_CLOCK}, w AS (INSERT INTO workflows ({WORKFLOW_COLUMNS}) VALUES ({_placeholders(WorkflowRow)}) "
    f"RETURNING id, name, status, next_execution), p AS ({_INSERT_POINTERS}), {_QUEUE_WORKFLOW} "
    "SELECT name, (SELECT count(*) FROM n) FROM w"
)
"""A workflow and its pointers in one statement, queued when due; parameters: the row, then one array
per pointer column. (name, items queued)."""

CREATE_UNNAMED = (
    f"WITH {_CLOCK}, seq AS (INSERT INTO definition_sequences (definition_id, value) VALUES ($4, 1) "
    "ON CONFLICT (definition_id) DO UPDATE SET value = definition_sequences.value + 1 RETURNING value), "
    f"w AS (INSERT INTO workflows ({WORKFLOW_COLUMNS}) SELECT "
    + ", ".join(
        "COALESCE(NULLIF($2::text, ''), $4::text || '-' || seq.value)" if name == "name" else f"${i + 1}::{_type(name)}"
        for i, name in enumerate(WorkflowRow._fields)
    )
    + f" FROM seq RETURNING id, name, status, next_execution), p AS ({_INSERT_POINTERS}), {_QUEUE_WORKFLOW} "
    "SELECT name, (SELECT count(*) FROM n) FROM w"
)
"""As ``CREATE_NAMED``, the name (parameter 2 is empty) taken from the definition's sequence."""

_CREATED = (
    f"RETURNING id, name, status, next_execution), p AS ({_INSERT_POINTERS}), {_QUEUE_WORKFLOW} "
    "SELECT w.id, w.name, EXISTS (SELECT 1 FROM q WHERE q.item_id = w.id), (SELECT count(*) FROM n) FROM w"
)
CREATE_MANY = f"WITH {_CLOCK}, w AS (INSERT INTO workflows ({WORKFLOW_COLUMNS}) {_unnest(WorkflowRow, 1)} {_CREATED}"
"""``CREATE_NAMED`` of several named workflows in one statement (a group commit's run of creates);
parameters: one array per workflow column, then one per pointer column (every workflow's pointers).
(id, name, whether queued) of each workflow, in no particular order."""

_GENERATED_NAME = (
    "CASE WHEN i.name <> '' THEN i.name ELSE i.workflow_definition_id || '-' || (seq.value - need.n + row_number() "
    "OVER (PARTITION BY i.workflow_definition_id, i.name = '' ORDER BY i.ord)) END"
)
CREATE_MANY_NAMING = (
    f"WITH {_CLOCK}, i AS ({_unnest(WorkflowRow, 1)} WITH ORDINALITY AS i ({', '.join(WorkflowRow._fields)}, ord)), "
    "need AS (SELECT workflow_definition_id AS d, count(*) AS n FROM i WHERE name = '' GROUP BY 1), "
    "seq AS (INSERT INTO definition_sequences (definition_id, value) SELECT d, n FROM need "
    "ON CONFLICT (definition_id) DO UPDATE SET value = definition_sequences.value + excluded.value "
    "RETURNING definition_id, value), "
    f"w AS (INSERT INTO workflows ({WORKFLOW_COLUMNS}) SELECT "
    + ", ".join(_GENERATED_NAME if name == "name" else f"i.{name}" for name in WorkflowRow._fields)
    + " FROM i LEFT JOIN need ON i.name = '' AND need.d = i.workflow_definition_id "
    f"LEFT JOIN seq ON i.name = '' AND seq.definition_id = i.workflow_definition_id {_CREATED}"
)
"""``CREATE_MANY`` when some of the workflows come without a name (``CREATE_UNNAMED``): each takes
its name from its definition's sequence, one update of it per definition, numbered in the order
sent."""

_MERGE_POINTERS = 64
"""A create is run together with others (``CREATE_MANY``) when it has at most this many pointers (a
persist, ``PERSIST_MANY``: at most this many new subscriptions too) ..."""
_MERGE_BYTES = 64 * 1024
"""... and a workflow (``workflow_bytes``) or an event's data (``CREATE_EVENTS``) of at most about
this many bytes: a merged statement of a whole batch (``MAX_BATCH``) stays a few MiB at most."""

_EXPECTED = _M + _P + len(SubscriptionRow._fields) + 2


_POINTER_VALUES = PointerRow._fields[2:]
"""The columns of a pointer past its key (workflow_id, position)."""


def _sent(first: int) -> str:
    """The CTE ``sent``: the pointers sent (one array parameter per column from ``$first``), as rows
    (read by two statements: unnested once)."""
    arrays = ", ".join(f"${first + i}::{_type(name)}[]" for i, name in enumerate(PointerRow._fields))
    return f"sent AS MATERIALIZED (SELECT * FROM unnest({arrays}) AS p ({POINTER_COLUMNS}))"


def _update_changed_pointers(same_workflow: str, written: str) -> str:
    """The CTE ``u``: each stored pointer ``e`` at the position of one in ``sent`` whose values differ,
    updated in place; ``same_workflow`` ties ``e`` to its workflow, ``written`` that the workflow was
    written (``w``)."""
    return (
        "u AS (UPDATE execution_pointers e SET "
        + ", ".join(f"{name} = sent.{name}" for name in _POINTER_VALUES)
        + f" FROM sent WHERE {same_workflow} AND e.position = sent.position AND ("
        + ", ".join(f"e.{name}" for name in _POINTER_VALUES)
        + ") IS DISTINCT FROM ("
        + ", ".join(f"sent.{name}" for name in _POINTER_VALUES)
        + f") AND {written})"
    )


_SENT = _sent(_M + 2)
PERSIST = (
    f"WITH {_CLOCK}, w AS (UPDATE workflows SET "
    + ", ".join(f"{name} = ${i + 2}::{_type(name)}" for i, name in enumerate(_MUTABLE))
    + f", revision = revision + 1 WHERE id = $1 AND (${_EXPECTED}::bigint = 0 OR revision = ${_EXPECTED}) "
    "AND revision = (SELECT seen.revision FROM workflows seen WHERE seen.id = $1) "
    f"RETURNING id, revision, status, next_execution), {_SENT}, "
    f"{_update_changed_pointers('e.workflow_id = $1', 'EXISTS (SELECT 1 FROM w)')}, "
    f"p AS (INSERT INTO execution_pointers ({POINTER_COLUMNS}) SELECT * FROM sent "
    "WHERE NOT EXISTS (SELECT 1 FROM execution_pointers e WHERE e.workflow_id = $1 AND e.position = sent.position) "
    "AND EXISTS (SELECT 1 FROM w)), "
    f"d AS (DELETE FROM execution_pointers WHERE workflow_id = $1 AND position >= ${_EXPECTED + 1} "
    "AND EXISTS (SELECT 1 FROM w)), "
    f"s AS (INSERT INTO event_subscriptions ({SUBSCRIPTION_COLUMNS}) {_unnest(SubscriptionRow, _M + _P + 2)} "
    f"WHERE EXISTS (SELECT 1 FROM w)), {_QUEUE_WORKFLOW} "
    "SELECT (SELECT revision FROM w), (SELECT count(*) FROM n)"
)
"""Replace a workflow's mutable fields and pointers, add one to its revision and add subscriptions, in
one statement, when the stored revision is the expected one (0: any); queue it when due. Parameters
``persist_parameters``; (the new revision or NULL when nothing was written, items queued).

Written only when the revision is still the one of the statement's snapshot (``seen``): every
statement of it reads the pointers as of that snapshot, and a persist that committed while this
one waited for the workflow's row lock would otherwise be mixed into it (pointers it wrote that
this one does not see are neither compared, nor deleted, nor known to be taken). Then nothing is
written and the caller runs it again.

Pointers are keyed by position (0 to count - 1, as ``pointer_rows`` numbers them) and only those
that differ are written: a stored pointer whose values differ from those sent at its position is
updated in place (u: the index entry stays), a position not stored is inserted (p), positions from
the workflow's new count on are deleted (d). The pointers sent may be all of them (compared here) or
only those known to differ (``PostgresStore._persist_compared``)."""

PERSIST_MANY = (
    f"WITH {_CLOCK}, v AS MATERIALIZED (SELECT * FROM unnest($1::text[], "
    + ", ".join(f"${i + 2}::{_type(name)}[]" for i, name in enumerate(_MUTABLE))
    + f", ${_M + 2}::bigint[], ${_M + 3}::bigint[]) AS v (id, {', '.join(_MUTABLE)}, expected, pointer_count)), "
    "w AS (UPDATE workflows SET "
    + ", ".join(f"{name} = v.{name}" for name in _MUTABLE)
    + ", revision = workflows.revision + 1 FROM v WHERE workflows.id = v.id "
    "AND (v.expected = 0 OR workflows.revision = v.expected) "
    "AND workflows.revision = (SELECT seen.revision FROM workflows seen WHERE seen.id = v.id) "
    f"RETURNING workflows.id, workflows.revision, workflows.status, workflows.next_execution), {_sent(_M + 4)}, "
    f"{_update_changed_pointers('e.workflow_id = sent.workflow_id', 'sent.workflow_id IN (SELECT id FROM w)')}, "
    f"p AS (INSERT INTO execution_pointers ({POINTER_COLUMNS}) SELECT * FROM sent WHERE NOT EXISTS "
    "(SELECT 1 FROM execution_pointers e WHERE e.workflow_id = sent.workflow_id AND e.position = sent.position) "
    "AND sent.workflow_id IN (SELECT id FROM w)), "
    "d AS (DELETE FROM execution_pointers e USING v WHERE e.workflow_id = v.id AND e.position >= v.pointer_count "
    "AND v.id IN (SELECT id FROM w)), "
    f"s AS (INSERT INTO event_subscriptions ({SUBSCRIPTION_COLUMNS}) {_unnest(SubscriptionRow, _M + 4 + _P)}), "
    f"{_QUEUE_WORKFLOW} "
    "SELECT w.id, w.revision, EXISTS (SELECT 1 FROM q WHERE q.item_id = w.id), (SELECT count(*) FROM n) FROM w"
)
"""``PERSIST`` of several workflows (distinct ids) in one statement, a group commit's run of them;
parameters: the ids, one array per mutable column, the expected revisions, the pointer counts, one
array per pointer column (every workflow's pointers), then one per subscription column (every
workflow's new subscriptions). (id, new revision, whether queued) of each workflow written, in no
particular order: one missing (a revision not the expected one, no such workflow, a persist that
committed in between) means the others must not be kept either (``_persist_many``), and the
subscriptions are inserted whatever is written for that reason."""

_STORED = (
    f"SELECT w.revision, {', '.join(f'p.{name}' for name in PointerRow._fields)} FROM workflows w "
    "LEFT JOIN execution_pointers p ON p.workflow_id = w.id WHERE w.id = $1"
)
"""A workflow's revision and its pointers, from one snapshot: a row per pointer (one with NULLs for
none, none for no such workflow). Rows, not ``ARRAY(ROW(...))`` as reads take them: asyncpg
decodes 10,000 pointers of an array of records in ~230 ms, as rows in ~45 ms."""
_COMPARE_POINTERS = 32
"""Above this many pointers, a persist reads the stored ones and sends only those that differ (as
on SQLite): the statement unnests and compares every pointer sent (~180 ms of 10,000), reading
them back takes ~45 ms and comparing them ~6 ms; a persist of 10,000 took 250-400 ms one way and
150-190 ms the other. At 16 the extra round trip cost more than it spared (BENCHMARKS.md,
"PostgreSQL persist writes only the pointers that change")."""

_QUEUE_EVENT = queue_cte(f"'{EVENT}'", "e", "id", "e.is_processed = 0 AND e.event_time <= clock.now")
CREATE_EVENT = (
    f"WITH {_CLOCK}, e AS (INSERT INTO events ({EVENT_COLUMNS}) VALUES ({_placeholders(EventRow)}) "
    f"RETURNING id, is_processed, event_time), {_QUEUE_EVENT} SELECT count(*) FROM n"
)
"""Insert an event and queue it when it is due and unprocessed; items queued."""
CREATE_EVENTS = (
    f"WITH {_CLOCK}, e AS (INSERT INTO events ({EVENT_COLUMNS}) {_unnest(EventRow, 1)} "
    f"RETURNING id, is_processed, event_time), {_QUEUE_EVENT} "
    "SELECT e.id, EXISTS (SELECT 1 FROM q WHERE q.item_id = e.id), (SELECT count(*) FROM n) FROM e"
)
"""``CREATE_EVENT`` of several events in one statement (a group commit's run of them); parameters:
one array per event column. (id, whether queued) of each, in no particular order."""
SET_EVENT_PROCESSED = (
    f"WITH {_CLOCK}, e AS (UPDATE events SET is_processed = $2 WHERE id = $1 RETURNING id, is_processed, "
    f"event_time), {_QUEUE_EVENT} SELECT (SELECT event_time FROM e), (SELECT count(*) FROM n)"
)
"""Set or clear ``is_processed`` (queueing the event when it is unprocessed and due): (event_time or
NULL when there is no such event, items queued)."""


def persist_parameters(
    row: WorkflowRow,
    pointers: Sequence[PointerRow],
    subscriptions: Sequence[SubscriptionRow],
    expected_revision: int = 0,
    count: int | None = None,
) -> list[Any]:
    """The parameters of ``PERSIST``: id, the mutable fields, one array per pointer then subscription
    column, the expected revision, the workflow's pointer count (``len(pointers)`` unless ``pointers``
    are only those that changed)."""
    mutable = [getattr(row, name) for name in _MUTABLE]
    return [
        row.id,
        *mutable,
        *_arrays(pointers, PointerRow),
        *_arrays(subscriptions, SubscriptionRow),
        expected_revision,
        len(pointers) if count is None else count,
    ]


def _changed_parameters(
    row: WorkflowRow,
    pointers: Sequence[PointerRow],
    stored: Sequence[Sequence[Any]],
    subscriptions: Sequence[SubscriptionRow],
    revision: int,
) -> list[Any]:
    """The parameters of ``PERSIST`` sending only the ``pointers`` that differ from the ``stored`` ones
    (rows as ``_STORED`` reads them), expecting the stored ``revision``."""
    by_position = {p[2]: tuple(p)[1:] for p in stored}  # a workflow of none: one row, at position None
    changed = [p for p in pointers if by_position.get(p.position) != p]
    return persist_parameters(row, changed, subscriptions, revision, len(pointers))


_INSERT_SUBSCRIPTION = (
    f"INSERT INTO event_subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ({_placeholders(SubscriptionRow)})"
)
_RUNNABLE_WORKFLOWS = (
    "SELECT next_execution, id FROM workflows "
    "WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL AND next_execution <= $1 "
    "AND (next_execution, id) > ($2, $3) ORDER BY next_execution, id LIMIT $4"
)
_RUNNABLE_EVENTS = (
    "SELECT event_time, id FROM events WHERE is_processed = 0 AND event_time <= $1 "
    "AND (event_time, id) > ($2, $3) ORDER BY event_time, id LIMIT $4"
)
_EVENTS = (
    "SELECT event_time, id FROM events WHERE event_name = $1 AND event_key = $2 "
    "AND event_time <= $3 AND (event_time, id) > ($4, $5) ORDER BY event_time, id LIMIT $6"
)
_MARK_PROCESSED_IF_UNSUBSCRIBED = (
    "UPDATE events SET is_processed = 1 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM event_subscriptions s "
    "WHERE s.event_name = events.event_name AND s.event_key = events.event_key AND s.terminated = 0 "
    "AND s.subscribe_as_of <= events.event_time) RETURNING 1"
)
"""Mark an event processed when it matches no open subscription (a probe of ``subscriptions_open``)."""
_SUBSCRIPTIONS = (
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
    "WHERE event_name = $1 AND event_key = $2 AND terminated = 0 AND subscribe_as_of <= $3 "
    "AND (subscribe_as_of, id) > ($4, $5) ORDER BY subscribe_as_of, id LIMIT $6"
)
_CHUNK = 64
"""Ids per query of ``workflows_from``."""

NEXT_SEQUENCE = (
    # Reserves $2 numbers; returns the last of them.
    "INSERT INTO definition_sequences (definition_id, value) VALUES ($1, $2) "
    "ON CONFLICT (definition_id) DO UPDATE SET value = definition_sequences.value + excluded.value RETURNING value"
)
SCHEDULE_COMMAND = (
    "INSERT INTO scheduled_commands (command_name, data, execute_time) VALUES ($1, $2, $3) "
    "ON CONFLICT (command_name, data) DO UPDATE SET "
    "execute_time = LEAST(scheduled_commands.execute_time, excluded.execute_time), "
    "generation = scheduled_commands.generation + 1"
)
CLAIM_COMMANDS = (
    f"WITH clock AS (SELECT {NOW_US} AS now), "
    "due AS (SELECT command_name, data FROM scheduled_commands, clock WHERE execute_time <= $2 "
    "AND (lease_id IS NULL OR lease_expiry <= clock.now) ORDER BY execute_time LIMIT $3 FOR UPDATE SKIP LOCKED) "
    "UPDATE scheduled_commands c SET lease_id = $1, lease_expiry = clock.now + $4, "
    "claimed_generation = c.generation FROM due, clock "
    "WHERE c.command_name = due.command_name AND c.data = due.data "
    "RETURNING c.command_name, c.data, c.execute_time, c.lease_expiry"
)
SET_TOKEN = (
    "UPDATE event_subscriptions SET external_token = $2, external_worker_id = $3, external_token_expiry = $4 "
    f"WHERE id = $1 AND (external_token IS NULL OR external_token_expiry <= {NOW_US} OR external_token = $2) "
    "RETURNING 1"
)


def _limit(limit: int) -> int | None:
    return None if limit < 0 else limit


def _after(after: PageKey | None) -> PageKey:
    return after if after is not None else (-(2**63), "")


def _now_micros() -> int:
    return to_micros(utc_now())


# -- errors ----------------------------------------------------------------------------------------

_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
"""SQLSTATE classes of a database that cannot serve now: connection, resources, operator
intervention (shutdown, cannot connect now), system errors."""


def _sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a PostgreSQL error ("" for any other error)."""
    return str(getattr(error, "sqlstate", "") or "") if isinstance(error, asyncpg.PostgresError) else ""


def _unavailable(error: BaseException) -> StorageUnavailable | None:
    """``StorageUnavailable`` for an error that says the database cannot be reached or used now."""
    if isinstance(error, asyncpg.PostgresError):
        state = _sqlstate(error)
        if state[:2] in _UNAVAILABLE_CLASSES:
            return StorageUnavailable(f"PostgreSQL unavailable ({state}): {error}; retry later")
        return None
    if isinstance(error, TimeoutError):  # carries no text of its own
        return StorageUnavailable("PostgreSQL did not answer in time (connect_timeout, command_timeout); retry later")
    if isinstance(error, (OSError, asyncpg.InterfaceError, ConnectionError)):
        return StorageUnavailable(f"PostgreSQL unreachable: {str(error) or type(error).__name__}; retry later")
    return None


def _rolled_back(error: BaseException) -> StorageUnavailable | None:
    """``StorageUnavailable`` for a statement PostgreSQL rolled back to end a conflict between
    transactions (SQLSTATE class 40: a deadlock, a serialization failure). Nothing of it was written
    and a retry may succeed, as after a busy SQLite file; it is the statement's error, not the
    connection's (the connection stays usable)."""
    state = _sqlstate(error)
    if state[:2] == "40":
        return StorageUnavailable(f"PostgreSQL rolled the write back ({state}: {error}); retry")
    return None


def _denied(error: BaseException) -> StorageUnavailable | None:
    """``StorageUnavailable`` for a statement the role may not run (SQLSTATE 42501, privileges taken
    away after start-up, which refuses a role that cannot write: ``refuse_read_only``): a fault of
    the database's configuration, as a read-only SQLite file is, not INTERNAL."""
    if _sqlstate(error) == "42501":
        return StorageUnavailable(f"PostgreSQL refused the statement ({error}): grant the server's role its privileges")
    return None


def _as_unavailable(error: Exception) -> Exception:
    """``StorageUnavailable`` for connection-level failures (asyncpg's ``InternalClientError``
    included: a connection left mid-protocol by a lost server) and rolled-back statements; any other
    error as it is."""
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        return StorageUnavailable(f"PostgreSQL connection failed: {error}; retry later")
    return _unavailable(error) or _rolled_back(error) or _denied(error) or error


def _refuse_nul(record: str, row: Any) -> None:
    """PostgreSQL text holds no NUL character (SQLite's does): refuse the write naming the field that
    carries one (``record.column``), before any statement (``_cannot_store`` is the fallback for
    values that reach PostgreSQL some other way, and names none)."""
    for name, value in zip(row._fields, row, strict=True):
        if isinstance(value, str) and "\x00" in value:  # the field's name made only for a refusal
            refuse_nul(f"{record}.{name}", value)


_OFF_LOOP_ROWS = 1000
"""Above this many pointer and subscription rows, a write checks them for NUL characters and turns
them into column arrays on a worker thread, not on the event loop (~5-8 us a row: 100,000 held
every other call for 0.5-0.8 s); as the servicer's conversions (``_wire.OFF_LOOP_POINTERS``)."""

_R = TypeVar("_R")


async def _off_loop(rows: int, prepare: Callable[[], _R]) -> _R:
    """``prepare()``, on a worker thread when it handles more than ``_OFF_LOOP_ROWS`` rows."""
    if rows > _OFF_LOOP_ROWS:
        return await asyncio.to_thread(prepare)
    return prepare()


def _refuse_nul_in_workflow(row: WorkflowRow, pointers: Sequence[PointerRow]) -> None:
    _refuse_nul("workflow", row)
    for i, pointer in enumerate(pointers):
        _refuse_nul(f"workflow.execution_pointers[{i}]", pointer)


def _cannot_store(error: BaseException) -> InvalidArgument | None:
    """PostgreSQL text cannot hold NUL characters (SQLite can): the request's error, not the store's.
    Likewise an index entry PostgreSQL cannot hold: keys of up to 1024 bytes each that do not
    compress can be too long together for a btree entry (about 2,700 bytes)."""
    if isinstance(error, (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)):
        return InvalidArgument(f"PostgreSQL cannot store or look up text containing a NUL character (\\u0000): {error}")
    if _sqlstate(error) == "54000":
        index = re.search(r'index "([^"]+)"', str(error))
        field = _INDEX_FIELDS.get(index.group(1)) if index else None
        message = f"PostgreSQL cannot store these values: {error}; shorten the record's ids, names or keys"
        return InvalidArgument(message, field=field) if field else InvalidArgument(message)
    return None


_INDEX_FIELDS = {
    "events_by_name_key": "event",
    "subscriptions_open": "subscription",
}
"""The request field an index entry too long is reported on (the index's keys are its fields)."""


def _item_error(error: BaseException) -> Exception | None:
    """The error of one write's own request (its caller's alone in a group commit); None for a
    connection-level failure, which fails the whole batch."""
    if isinstance(error, StorageUnavailable) or not isinstance(error, Exception):
        return None
    own: Exception = error
    if isinstance(error, WfeError):
        return own
    refused = _cannot_store(error)
    if refused is not None:
        return refused
    if isinstance(error, asyncpg.PostgresError) and _unavailable(error) is None:
        return _rolled_back(error) or _denied(error) or own
    return None


async def _create_many(conn: asyncpg.Connection, parts: list[tuple[WorkflowRow, Sequence[PointerRow]]]) -> list[Any]:
    """``create_workflow``'s job for several workflows at once (``CREATE_MANY``): the (name, items
    queued) of each. Any error (a taken id or name among them, a generated name taken by a workflow
    named so explicitly) fails them all: the group commit then runs each by its own job, which
    tells whose it was (and the numbers the merged statement drew are rolled back with it)."""
    rows = [row for row, _ in parts]
    pointers = [pointer for _, some in parts for pointer in some]
    found = {
        record[0]: (str(record[1]), int(record[2]))
        for record in await conn.fetch(
            CREATE_MANY if all(row.name for row in rows) else CREATE_MANY_NAMING,
            *_arrays(rows, WorkflowRow),
            *_arrays(pointers, PointerRow),
        )
    }
    return [found[row.id] for row in rows]


async def _create_events(conn: asyncpg.Connection, rows: list[EventRow]) -> list[int]:
    """``create_event``'s job for several events at once (``CREATE_EVENTS``): the items queued for
    each. Any error (a taken id) fails them all, as in ``_create_many``."""
    found = {record[0]: record[1] for record in await conn.fetch(CREATE_EVENTS, *_arrays(rows, EventRow))}
    return [int(found[row.id]) for row in rows]


async def _persist_many(
    conn: asyncpg.Connection,
    parts: list[tuple[WorkflowRow, Sequence[PointerRow], int, Sequence[SubscriptionRow]]],
) -> list[tuple[int, int]]:
    """``persist_workflow``'s job for several workflows at once (``PERSIST_MANY``): the (new
    revision, items queued) of each. When one of them was not written, or the same workflow comes
    twice, ``MergeRefused``: the group commit then runs each by its own job, which tells why."""
    rows = [row for row, _, _, _ in parts]
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise MergeRefused("the same workflow twice")
    written = await conn.fetch(
        PERSIST_MANY,
        ids,
        *([getattr(row, name) for row in rows] for name in _MUTABLE),
        [expected for _, _, expected, _ in parts],
        [len(pointers) for _, pointers, _, _ in parts],
        *_arrays([pointer for _, pointers, _, _ in parts for pointer in pointers], PointerRow),
        *_arrays([subscription for _, _, _, some in parts for subscription in some], SubscriptionRow),
    )
    if len(written) != len(parts):
        raise MergeRefused("a workflow was not written")
    found = {record[0]: (int(record[1]), int(record[2])) for record in written}
    return [found[row.id] for row in rows]


def _constraint(error: asyncpg.UniqueViolationError) -> str:
    return str(getattr(error, "constraint_name", "") or "")


class PostgresConfig(NamedTuple):
    """How a ``PostgresStore`` connects."""

    url: str
    """``postgresql://user:pass@host:port/dbname`` (or ``postgres://``), libpq query parameters allowed."""
    pool_size: int = 10
    """Connections in the pool (each server process)."""
    connect_timeout: float = 5.0
    """Seconds to open a connection before the call fails with STORAGE_UNAVAILABLE."""
    command_timeout: float = 20.0
    """Seconds one statement may take before it is cancelled (STORAGE_UNAVAILABLE): below the
    adapters' 30 s call deadline, so a statement held up (PostgreSQL frozen, a lock held) is
    answered UNAVAILABLE before the caller gives up on it with DEADLINE_EXCEEDED."""


# -- schema ----------------------------------------------------------------------------------------


async def schema_version(conn: asyncpg.Connection) -> int:
    """The version recorded in the database; 0 for a database without our ``schema_version`` table
    (one of another application's, without our columns, counts as none: ``refuse_foreign`` names it)."""
    ours = await conn.fetchval(
        "SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = to_regclass('schema_version') "
        "AND NOT attisdropped AND ((attname = 'version' AND atttypid = 'integer'::regtype) "
        "OR (attname = 'applied_at' AND atttypid = 'timestamptz'::regtype))"
    )
    if not ours:
        return 0
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_version")
    return version or 0


_CREATES = re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX|SEQUENCE|FUNCTION)\s+(\w+)", re.IGNORECASE)


def _created_names(kind: str) -> tuple[str, ...]:
    """The names the migrations give objects of ``kind`` (TABLE, INDEX, SEQUENCE, FUNCTION)."""
    return tuple(
        name.lower() for migration in MIGRATIONS for found, name in _CREATES.findall(migration) if found.upper() == kind
    )


OWN_TABLES = ("schema_version", *_created_names("TABLE"))
OWN_SEQUENCES = _created_names("SEQUENCE")
OWN_RELATIONS = (*OWN_TABLES, *_created_names("INDEX"), *OWN_SEQUENCES)
OWN_FUNCTIONS = _created_names("FUNCTION")
"""The names the migrations create: another object of one of them in the schema they create in
(``current_schema()``) makes them fail."""

_RELKINDS = {
    "r": "table",
    "p": "table",
    "i": "index",
    "I": "index",
    "S": "sequence",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "c": "type",
}

_CLASHES = """
SELECT c.relname AS name, c.relkind::text AS kind FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])
UNION ALL
SELECT t.typname, 'type' FROM pg_type t
WHERE t.typnamespace = current_schema()::regnamespace AND t.typname = ANY($1::text[]) AND t.typrelid = 0
UNION ALL
SELECT p.proname || '()', 'function' FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY($2::text[])
ORDER BY 1
"""


async def refuse_foreign(conn: asyncpg.Connection, where: str) -> None:
    """Refuse (``DatabaseOpenError``), reading only, a database without our schema whose current
    schema (the first of ``search_path``, where the migrations create) holds objects of another
    application named as ours. Other tables in it are fine: the migrations only need our names free.

    Run at schema version 0 only (a database of ours holds all these names).
    """
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        return  # nothing to clash with; CREATE TABLE will say no schema is selected
    rows = await conn.fetch(_CLASHES, list(OWN_RELATIONS), list(OWN_FUNCTIONS))
    if not rows:
        return
    kinds = [_RELKINDS.get(row["kind"], row["kind"]) for row in rows]
    names = [
        row["name"] if kind == "table" else f"{row['name']} ({kind})" for row, kind in zip(rows, kinds, strict=True)
    ]
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    raise DatabaseOpenError(
        f"{where}: schema {schema} holds tables of another application named as wfe-sqlite's ({shown}) "
        "and no wfe-sqlite schema (refusing to touch it)"
    )


async def migrate(conn: asyncpg.Connection, where: str = "the database") -> tuple[int, int]:
    """Apply the missing migrations in order, each in its own transaction, under an advisory lock
    (servers starting together wait for the first, then find nothing to do). (before, after).

    A database newer than this binary, or one without our schema holding another application's
    objects under our names (``refuse_foreign``, checked under the lock in the first migration's
    transaction): ``DatabaseOpenError`` (``where`` names the database), nothing written.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        before = await schema_version(conn)
        if before > SCHEMA_VERSION:
            raise DatabaseOpenError(
                f"the database has schema version {before}, newer than this server's {SCHEMA_VERSION}: "
                "upgrade wfe-sqlite"
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            try:
                async with conn.transaction():
                    if version == 1:
                        await refuse_foreign(conn, where)
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                    await conn.execute(MIGRATIONS[version - 1])
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            except asyncpg.InsufficientPrivilegeError as error:
                role = await conn.fetchval("SELECT current_user")
                raise DatabaseOpenError(
                    f"{where}: role {role} cannot upgrade the schema to version {version} ({error}): "
                    "run wfe-sqlite migrate --db URL as a role that may (the schema's owner)"
                ) from error
            LOG.info("schema upgraded to version %d", version)
        return before, max(before, SCHEMA_VERSION)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        except BaseException:
            conn.terminate()  # not back to a pool with the lock held
            raise


_UNWRITABLE = """
SELECT t AS name, array_remove(ARRAY[
    CASE WHEN NOT has_table_privilege(to_regclass(t), 'SELECT') THEN 'SELECT' END,
    CASE WHEN NOT has_table_privilege(to_regclass(t), 'INSERT') THEN 'INSERT' END,
    CASE WHEN NOT has_table_privilege(to_regclass(t), 'UPDATE') THEN 'UPDATE' END,
    CASE WHEN NOT has_table_privilege(to_regclass(t), 'DELETE') THEN 'DELETE' END], NULL) AS missing
FROM unnest($1::text[]) AS tables (t)
WHERE to_regclass(t) IS NOT NULL
UNION ALL
SELECT s, ARRAY['USAGE'] FROM unnest($2::text[]) AS sequences (s)
WHERE to_regclass(s) IS NOT NULL AND NOT has_sequence_privilege(to_regclass(s), 'USAGE')
"""


async def refuse_read_only(conn: asyncpg.Connection, where: str) -> None:
    """Refuse (``DatabaseOpenError``) a role that cannot read and write every table of the store (and
    draw from its sequence): a server on it would start, then fail every write and its background
    work. A configuration fault, reported at start-up as SQLite reports a read-only file."""
    tables = [t for t in OWN_TABLES if t != "schema_version"]  # written by migrations only
    rows = [row for row in await conn.fetch(_UNWRITABLE, tables, list(OWN_SEQUENCES)) if row["missing"]]
    if not rows:
        return
    role = await conn.fetchval("SELECT current_user")
    first = rows[0]
    kind = "sequence" if first["name"] in OWN_SEQUENCES else "table"
    others = f" (and {len(rows) - 1} more of wfe-sqlite's)" if len(rows) > 1 else ""
    raise DatabaseOpenError(
        f"{where}: role {role} cannot write to {kind} {first['name']}{others}: it lacks "
        f"{', '.join(first['missing'])}; a server needs SELECT, INSERT, UPDATE, DELETE on every table "
        "of wfe-sqlite's and USAGE on its sequences (GRANT them, or connect as the schema's owner)"
    )


# -- the store -------------------------------------------------------------------------------------


async def _release_as_is(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: nothing beyond asyncpg's own (it rolls back an
    open transaction and drops listeners).

    asyncpg's default also sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, one
    more round trip per operation, for session state this store never leaves on a pooled
    connection: it sets no setting, opens no cursor, LISTENs on a connection of its own, and takes
    advisory locks per transaction but the migration's, which ``migrate`` releases or cuts the
    connection.
    """


class PostgresStore(PostgresVisibility, Store):
    """The store on a pool of asyncpg connections to one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, config: PostgresConfig) -> None:
        self.pool = pool
        self.config = config
        self._closed = False
        self.group_commit = True
        """Writes of workflows and events share transactions (``GroupWriter``); False runs each alone
        (as before group commit: kept for A/B measurements)."""
        self.writes = GroupWriter(self._connection, _item_error)
        self.cluster = PostgresCluster(self)
        """Locks, queues, the due timer, the stranded-work sweep and lifecycle fan-out on this
        database; the writes below report the work they queue to it."""

    @classmethod
    async def open(cls, config: PostgresConfig) -> PostgresStore:
        """Connect, upgrade the schema when it is older, and open the pool.

        An unreachable database, one newer than this binary, one holding another application's
        tables under our names, or a role that cannot write the store's tables: ``DatabaseOpenError``.
        """
        try:
            conn = await asyncpg.connect(config.url, timeout=config.connect_timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise _cannot_connect(config.url, error, config.connect_timeout) from error
        try:
            await migrate(conn, redact_url(config.url))
            await refuse_read_only(conn, redact_url(config.url))
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            config.url,
            min_size=0,
            max_size=config.pool_size,
            timeout=config.connect_timeout,
            command_timeout=config.command_timeout,
            # Statements are prepared once per connection and cached (asyncpg's default size).
            reset=_release_as_is,
        )
        return cls(pool, config)

    async def close(self) -> None:
        """Close the pool gracefully; connections still busy after ``connect_timeout`` are cut."""
        if not self._closed:
            await self.cluster.close()
            self._closed = True
            try:
                await asyncio.wait_for(self.pool.close(), self.config.connect_timeout)
            except TimeoutError:
                LOG.warning("PostgreSQL pool did not close in %.0fs; terminating it", self.config.connect_timeout)
                self.pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failures to get or use it become ``StorageUnavailable``.

        A connection that failed, or whose operation was cancelled (a call past its deadline),
        is terminated rather than returned: asyncpg can leave such a connection mid-protocol,
        and the next caller would fail on it. The pool opens a new one when needed.
        """
        if self._closed:
            raise StorageUnavailable("the store is closed")
        try:
            conn = await self.pool.acquire(timeout=self.config.connect_timeout)
        except Exception as error:
            mapped: BaseException = _as_unavailable(error)
            if mapped is error:
                raise
            raise mapped from error
        try:
            yield conn
        except WfeError:
            raise
        except BaseException as error:
            refused = _cannot_store(error)
            if refused is not None:
                raise refused from error
            if not isinstance(error, asyncpg.PostgresError) or _unavailable(error) is not None:
                with contextlib.suppress(asyncpg.InterfaceError):  # already detached from the pool
                    conn.terminate()
            mapped = _as_unavailable(error) if isinstance(error, Exception) else error
            if mapped is error:
                raise
            raise mapped from error
        finally:
            with contextlib.suppress(Exception):
                await self.pool.release(conn, timeout=self.config.connect_timeout)

    async def _run(self, job: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._connection() as conn:
            return await job(conn)

    async def run(self, job: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``job`` on a pooled connection (errors mapped as for every operation)."""
        return await self._run(job)

    def _stored(self, row: WorkflowRow, queued: int) -> None:
        """After a workflow was written: wake this server's waiters, arm the due timer on a future time."""
        due = None
        if row.status == "RUNNABLE" and row.next_execution is not None and row.next_execution * 1000 > _now_micros():
            due = row.next_execution * 1000
        self.cluster.written((WORKFLOW,) if queued else (), due)

    def _event_stored(self, event_time: int, processed: bool, queued: int) -> None:
        due = event_time if not processed and event_time > _now_micros() else None
        self.cluster.written((EVENT,) if queued else (), due)

    # -- workflows -----------------------------------------------------------------------------

    async def _write(
        self, job: Callable[[asyncpg.Connection], Awaitable[T]], merge: Merge | None = None, part: Any = None
    ) -> T:
        """Run a one-write ``job`` in the group commit (or alone on a connection when it is off),
        maybe together with writes next to it submitted with the same ``merge`` (``GroupWriter``)."""
        if self.group_commit:
            if self._closed:
                raise StorageUnavailable("the store is closed")
            return await self.writes.submit(job, merge, part)
        return await self._run(job)

    async def create_workflow(self, row: WorkflowRow, pointers: Sequence[PointerRow]) -> tuple[str, str]:
        optional_id(row.reference, "workflow.reference")  # indexed here, so a key (README); not on SQLite

        mergeable = len(pointers) <= _MERGE_POINTERS and workflow_bytes(row, pointers) <= _MERGE_BYTES

        def prepare() -> list[list[Any]] | None:
            _refuse_nul_in_workflow(row, pointers)
            # A create that may run with others (``_create_many``) builds its own arrays only when
            # it runs alone after all.
            return None if mergeable else _arrays(pointers, PointerRow)

        prepared = await _off_loop(len(pointers), prepare)
        row = row._replace(revision=1)

        def arrays() -> list[list[Any]]:
            return _arrays(pointers, PointerRow) if prepared is None else prepared

        async def job(conn: asyncpg.Connection) -> tuple[str, int] | None:
            try:
                # An unnamed create in a group commit's transaction runs under a savepoint, so that
                # a generated name found taken (answered below, not raised) does not leave the
                # batch's transaction aborted: its COMMIT would silently roll back the whole batch.
                answered = not row.name and conn.is_in_transaction()
                async with conn.transaction() if answered else contextlib.nullcontext():
                    created = await conn.fetchrow(CREATE_NAMED if row.name else CREATE_UNNAMED, *row, *arrays())
                return str(created[0]), int(created[1])
            except asyncpg.UniqueViolationError as error:
                constraint = _constraint(error)
                if constraint == "workflows_pkey":
                    raise WorkflowAlreadyExists(f"workflow {row.id!r} already exists", id=row.id) from None
                if row.name:
                    raise WorkflowNameTaken(f"another workflow is named {row.name!r}", name=row.name) from None
                return None

        created = await self._write(job, _create_many if mergeable else None, (row, pointers))
        if created is None:
            # The generated name is taken (a workflow was named like that explicitly): take numbers
            # from the sequence, skipping taken names, in a transaction of its own.
            name, queued = await self._run(lambda conn: self._create_renamed(conn, row, arrays()))
        else:
            name, queued = created
        self._stored(row, queued)
        return row.id, name

    @staticmethod
    async def _create_renamed(conn: asyncpg.Connection, row: WorkflowRow, arrays: list[list[Any]]) -> tuple[str, int]:
        async with conn.transaction():
            while True:
                number = await conn.fetchval(NEXT_SEQUENCE, row.workflow_definition_id, 1)
                name = f"{row.workflow_definition_id}-{number}"
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM workflows WHERE name = $1)", name):
                    break
            try:
                queued = (await conn.fetchrow(CREATE_NAMED, *row._replace(name=name), *arrays))[1]
            except asyncpg.UniqueViolationError as error:
                if _constraint(error) == "workflows_pkey":
                    raise WorkflowAlreadyExists(f"workflow {row.id!r} already exists", id=row.id) from None
                raise WorkflowNameTaken(f"another workflow is named {name!r}", name=name) from None
        return name, int(queued)

    async def persist_workflow(
        self,
        row: WorkflowRow,
        pointers: Sequence[PointerRow],
        subscriptions: Sequence[SubscriptionRow] = (),
        expected_revision: int = 0,
    ) -> int:
        optional_id(row.reference, "workflow.reference")  # indexed here, so a key (README); not on SQLite

        compare = len(pointers) > _COMPARE_POINTERS
        mergeable = (
            not compare
            and len(subscriptions) <= _MERGE_POINTERS
            and workflow_bytes(row, pointers) + sum(map(row_bytes, subscriptions)) <= _MERGE_BYTES
        )

        def prepare() -> list[Any]:
            _refuse_nul_in_workflow(row, pointers)
            for i, subscription in enumerate(subscriptions):
                _refuse_nul(f"subscriptions[{i}]", subscription)
            # None needed when comparing; one that may run with others (``_persist_many``) builds its
            # own only when it runs alone after all.
            return [] if compare or mergeable else persist_parameters(row, pointers, subscriptions, expected_revision)

        arguments = await _off_loop(len(pointers) + len(subscriptions), prepare)

        async def job(conn: asyncpg.Connection) -> tuple[int, int]:
            while True:
                try:
                    if compare:
                        revision, queued = await self._persist_compared(
                            conn, row, pointers, subscriptions, expected_revision
                        )
                    else:
                        revision, queued = await conn.fetchrow(
                            PERSIST, *(arguments or persist_parameters(row, pointers, subscriptions, expected_revision))
                        )
                except asyncpg.UniqueViolationError as error:
                    if _constraint(error) == "event_subscriptions_pkey":
                        detail = str(getattr(error, "detail", "") or "")
                        sid = next((s.id for s in subscriptions if f"({s.id})" in detail), subscriptions[0].id)
                        raise SubscriptionAlreadyExists(f"subscription {sid!r} already exists", id=sid) from None
                    raise WorkflowNameTaken(f"another workflow is named {row.name!r}", name=row.name) from None
                if revision is not None:
                    return int(revision), int(queued)
                stored = await conn.fetchval("SELECT revision FROM workflows WHERE id = $1", row.id)
                if stored is None:
                    raise WorkflowNotFound(f"workflow {row.id!r} not found", id=row.id)
                if expected_revision and stored != expected_revision:
                    raise RevisionConflict(
                        f"workflow {row.id!r} is at revision {stored}, not the expected {expected_revision}; "
                        "nothing was written",
                        id=row.id,
                        expected=str(expected_revision),
                        stored=str(stored),
                    )
                # Another persist committed while this one ran (``PERSIST``): nothing was written.

        revision, queued = await self._write(
            job, _persist_many if mergeable else None, (row, pointers, expected_revision, subscriptions)
        )
        self._stored(row, queued)
        return revision

    @staticmethod
    async def _persist_compared(
        conn: asyncpg.Connection,
        row: WorkflowRow,
        pointers: Sequence[PointerRow],
        subscriptions: Sequence[SubscriptionRow],
        expected_revision: int,
    ) -> tuple[int | None, int]:
        """``PERSIST`` with only the pointers that differ from the stored ones: (the new revision or
        None when nothing was written, items queued).

        The stored pointers are read with the revision, from one snapshot, and the write expects
        that revision: after a persist committed in between (it moves the revision) it writes
        nothing. Nothing is written either when there is no such workflow or its revision is not
        ``expected_revision``.
        """
        stored = await conn.fetch(_STORED, row.id)
        if not stored or (expected_revision and stored[0][0] != expected_revision):
            return None, 0
        prepare = functools.partial(_changed_parameters, row, pointers, stored, subscriptions, stored[0][0])
        written = await conn.fetchrow(PERSIST, *await _off_loop(len(pointers) + len(subscriptions), prepare))
        return written[0], written[1]

    async def _page(
        self, sql: str, parameters: tuple[Any, ...], limit: int | None, after: PageKey | None, budget: int | None
    ) -> tuple[list[Any], bool]:
        """A page of a keyset query whose last parameters are (key, id, LIMIT), cut as on SQLite."""
        key, last = _after(after)
        rows = await self._run(
            lambda conn: conn.fetch(sql, *parameters, key, last, None if limit is None else limit + 1)
        )
        return cut_page((tuple(r) for r in rows), limit, budget)

    async def runnable_workflows(
        self, as_at_ms: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        return await self._page(_RUNNABLE_WORKFLOWS, (as_at_ms,), limit, after, budget)

    async def _read_workflows(self, where: str, value: object) -> list[StoredWorkflow]:
        """The workflows ``where`` selects (``$1``: ``value``) with their pointers, from one snapshot.

        One statement, one round trip, while every workflow has at most ``_ROWS_ABOVE`` pointers.
        When one has more, they are all read again in a read-only REPEATABLE READ transaction (one
        snapshot for its statements, so no persist committing in between is mixed in): the
        workflows, then their pointers as rows, ``_ROWS_PER_FETCH`` at a time."""

        async def job(conn: asyncpg.Connection) -> list[StoredWorkflow]:
            rows = await conn.fetch(_read_sql(where), value)
            if all(len(r[_WORKFLOW_WIDTH]) <= _ROWS_ABOVE for r in rows):
                return [(WorkflowRow(*r[:_WORKFLOW_WIDTH]), [PointerRow(*p) for p in r[_WORKFLOW_WIDTH]]) for r in rows]
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                workflows = await conn.fetch(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE {where}", value)
                by_workflow: dict[str, list[PointerRow]] = {w[0]: [] for w in workflows}
                cursor = await conn.cursor(_READ_POINTERS, list(by_workflow))
                while chunk := await cursor.fetch(_ROWS_PER_FETCH):
                    for p in chunk:
                        by_workflow[p[0]].append(PointerRow(*p))
            return [(WorkflowRow(*w), by_workflow[w[0]]) for w in workflows]

        return await self._run(job)

    async def workflow(self, id: str) -> StoredWorkflow:
        found = [] if has_nul(id) else await self._read_workflows("id = $1", id)
        if not found:
            raise WorkflowNotFound(f"workflow {id!r} not found", id=id)
        return found[0]

    async def workflow_by_name(self, name: str) -> StoredWorkflow:
        found = [] if has_nul(name) else await self._read_workflows("name = $1 AND name <> ''", name)
        if not found:
            raise WorkflowNotFound(f"no workflow named {name!r}", name=name)
        return found[0]

    async def workflows(self, ids: Sequence[str]) -> list[StoredWorkflow]:
        unique = list(dict.fromkeys(ids))
        wanted = [i for i in unique if not has_nul(i)]
        by_id = {
            row.id: (row, pointers) for row, pointers in await self._read_workflows("id = ANY($1::text[])", wanted)
        }
        return [by_id[i] for i in unique if i in by_id]

    async def workflows_from(self, ids: Sequence[str], start: int, budget: int) -> tuple[list[SizedWorkflow], int]:
        found: list[SizedWorkflow] = []
        used = 0
        position = start
        while position < len(ids) and used < budget:
            chunk = list(ids[position : position + _CHUNK])
            wanted = [i for i in chunk if not has_nul(i)]
            by_id = {
                row.id: (row, pointers) for row, pointers in await self._read_workflows("id = ANY($1::text[])", wanted)
            }
            for wid in chunk:
                position += 1
                stored = by_id.get(wid)
                if stored is not None:
                    size = workflow_bytes(*stored)
                    found.append((*stored, size))
                    used += size
                if used >= budget:
                    break
        return found, position

    async def next_definition_sequence(self, definition_id: str, count: int = 1) -> int:
        refuse_nul("definition_id", definition_id)  # stored: a write
        last: int = await self._run(lambda conn: conn.fetchval(NEXT_SEQUENCE, definition_id, count))
        return last - count + 1

    # -- events --------------------------------------------------------------------------------

    async def create_event(self, row: EventRow) -> None:
        _refuse_nul("event", row)

        async def job(conn: asyncpg.Connection) -> int:
            try:
                return int(await conn.fetchval(CREATE_EVENT, *row))
            except asyncpg.UniqueViolationError:
                raise EventAlreadyExists(f"event {row.id!r} already exists", id=row.id) from None

        queued = await self._write(job, _create_events if len(row.event_data) <= _MERGE_BYTES else None, row)
        self._event_stored(row.event_time, bool(row.is_processed), queued)

    async def event(self, id: str) -> EventRow:
        found = (
            None
            if has_nul(id)
            else await self._run(lambda conn: conn.fetchrow(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1", id))
        )
        if found is None:
            raise EventNotFound(f"event {id!r} not found", id=id)
        return EventRow(*found)

    async def runnable_events(
        self, as_at_us: int, limit: int | None, after: PageKey | None, budget: int | None = None
    ) -> tuple[list[PageKey], bool]:
        return await self._page(_RUNNABLE_EVENTS, (as_at_us,), limit, after, budget)

    async def events(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[PageKey], bool]:
        if has_nul(event_name, event_key):
            return [], False
        return await self._page(_EVENTS, (event_name, event_key, as_of_us), limit, after, budget)

    async def set_event_processed(self, id: str, processed: bool) -> None:
        if has_nul(id):
            raise EventNotFound(f"event {id!r} not found", id=id)
        event_time, queued = await self._run(lambda conn: conn.fetchrow(SET_EVENT_PROCESSED, id, int(processed)))
        if event_time is None:
            raise EventNotFound(f"event {id!r} not found", id=id)
        self._event_stored(event_time, processed, queued)

    async def mark_processed_if_unsubscribed(self, id: str) -> bool:
        # Marking processed queues nothing and sets no due time: nothing to tell the cluster.
        if has_nul(id):
            return False
        marked = await self._run(lambda conn: conn.fetchval(_MARK_PROCESSED_IF_UNSUBSCRIBED, id))
        return marked is not None

    # -- subscriptions -------------------------------------------------------------------------

    async def create_subscription(self, row: SubscriptionRow) -> None:
        _refuse_nul("subscription", row)

        async def job(conn: asyncpg.Connection) -> None:
            try:
                await conn.execute(_INSERT_SUBSCRIPTION, *row)
            except asyncpg.UniqueViolationError:
                raise SubscriptionAlreadyExists(f"subscription {row.id!r} already exists", id=row.id) from None

        await self._run(job)

    async def subscription(self, id: str) -> SubscriptionRow:
        found = (
            None
            if has_nul(id)
            else await self._run(
                lambda conn: conn.fetchrow(f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE id = $1", id)
            )
        )
        if found is None:
            raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
        return SubscriptionRow(*found)

    async def subscriptions(
        self,
        event_name: str,
        event_key: str,
        as_of_us: int,
        limit: int | None,
        after: PageKey | None,
        budget: int | None = None,
    ) -> tuple[list[SubscriptionRow], bool]:
        if has_nul(event_name, event_key):
            return [], False
        rows, more = await self._page(_SUBSCRIPTIONS, (event_name, event_key, as_of_us), limit, after, budget)
        return [SubscriptionRow(*r) for r in rows], more

    async def terminate_subscription(self, id: str) -> None:
        found = (
            None
            if has_nul(id)
            else await self._run(
                lambda conn: conn.fetchval(
                    "UPDATE event_subscriptions SET terminated = 1 WHERE id = $1 RETURNING 1", id
                )
            )
        )
        if found is None:
            raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)

    async def first_open_subscription(self, event_name: str, event_key: str, as_of_us: int) -> SubscriptionRow | None:
        if has_nul(event_name, event_key):
            return None
        found = await self._run(
            lambda conn: conn.fetchrow(
                f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions "
                "WHERE event_name = $1 AND event_key = $2 AND terminated = 0 AND subscribe_as_of <= $3 "
                f"AND (external_token IS NULL OR external_token_expiry <= {NOW_US}) "
                "ORDER BY subscribe_as_of, id LIMIT 1",
                event_name,
                event_key,
                as_of_us,
            )
        )
        return None if found is None else SubscriptionRow(*found)

    async def set_subscription_token(self, id: str, token: str, worker_id: str, expiry_us: int) -> bool:
        if has_nul(id):
            raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
        refuse_nul("token", token)  # stored: writes
        refuse_nul("worker_id", worker_id)

        async def job(conn: asyncpg.Connection) -> bool:
            if await conn.fetchval(SET_TOKEN, id, token, worker_id, expiry_us) is not None:
                return True
            if await conn.fetchval("SELECT 1 FROM event_subscriptions WHERE id = $1", id) is None:
                raise SubscriptionNotFound(f"subscription {id!r} not found", id=id)
            return False

        return await self._run(job)

    async def clear_subscription_token(self, id: str, token: str) -> None:
        found = (
            None
            if has_nul(id, token)
            else await self._run(
                lambda conn: conn.fetchval(
                    "UPDATE event_subscriptions SET external_token = NULL, external_worker_id = NULL, "
                    "external_token_expiry = NULL WHERE id = $1 AND external_token = $2 RETURNING 1",
                    id,
                    token,
                )
            )
        )
        if found is None:
            raise SubscriptionNotFound(f"subscription {id!r} not found or not held by that token", id=id)

    # -- scheduled commands --------------------------------------------------------------------

    async def schedule_command(self, row: CommandRow) -> None:
        _refuse_nul("command", row)
        await self._run(lambda conn: conn.execute(SCHEDULE_COMMAND, *row))

    async def claim_commands(self, as_of_ms: int, max_commands: int, lease_id: str, lease_us: int) -> Claim:
        rows = await self._run(lambda conn: conn.fetch(CLAIM_COMMANDS, lease_id, as_of_ms, max_commands, lease_us))
        if not rows:
            return Claim(_now_micros() + lease_us, [])
        commands = sorted((CommandRow(r[0], r[1], r[2]) for r in rows), key=lambda r: r.execute_time)
        return Claim(rows[0][3], commands)

    async def acknowledge_command(self, command_name: str, data: str, lease_id: str) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            # Delete it unless it was scheduled again while held (a newer generation than the
            # claim saw): then keep it, with the earlier execute_time, and only drop the lease.
            deleted = await conn.fetchval(
                "DELETE FROM scheduled_commands WHERE command_name = $1 AND data = $2 AND lease_id = $3 "
                "AND generation = claimed_generation RETURNING 1",
                command_name,
                data,
                lease_id,
            )
            if deleted is None and await conn.fetchval(_RELEASE, command_name, data, lease_id) is None:
                raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")

        if has_nul(command_name, data, lease_id):
            raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")
        await self._run(job)

    async def release_command(self, command_name: str, data: str, lease_id: str) -> None:
        found = (
            None
            if has_nul(command_name, data, lease_id)
            else await self._run(lambda conn: conn.fetchval(_RELEASE, command_name, data, lease_id))
        )
        if found is None:
            raise LeaseLost(f"lease {lease_id!r} no longer holds {command_name} {data!r}")

    # -- errors, schema, figures ---------------------------------------------------------------

    async def persist_errors(self, rows: Sequence[ErrorRow]) -> None:
        if not rows:
            return
        for i, row in enumerate(rows):
            _refuse_nul(f"errors[{i}]", row)
        columns = _columns(ErrorRow)
        await self._run(
            lambda conn: conn.execute(
                f"INSERT INTO execution_errors ({columns}) {_unnest(ErrorRow, 1)}", *_arrays(rows, ErrorRow)
            )
        )

    async def ensure_store_exists(self) -> None:
        await self._run(migrate)

    async def live_figures(self) -> LiveFigures:
        return await self._run(_live_figures)


async def _live_figures(conn: asyncpg.Connection) -> LiveFigures:
    now_us = _now_micros()
    now_ms = now_us // 1000
    row = await conn.fetchrow(
        "SELECT "
        "(SELECT count(*) FROM workflows WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL "
        " AND next_execution <= $1), "
        "(SELECT count(*) FROM events WHERE is_processed = 0), "
        "(SELECT count(*) FROM scheduled_commands WHERE execute_time <= $1 "
        " AND (lease_id IS NULL OR lease_expiry <= $2)), "
        "(SELECT count(*) FROM scheduled_commands WHERE lease_id IS NOT NULL AND lease_expiry > $2), "
        "(SELECT count(*) FROM event_subscriptions WHERE terminated = 0 AND external_token IS NOT NULL "
        " AND external_token_expiry > $2), "
        "(SELECT count(*) FROM work_queue WHERE position IS NOT NULL), "
        "(SELECT count(*) FROM locks WHERE expire_time > $2)",
        now_ms,
        now_us,
    )
    return LiveFigures(*(int(v) for v in row))


_RELEASE = (
    "UPDATE scheduled_commands SET lease_id = NULL, lease_expiry = NULL "
    "WHERE command_name = $1 AND data = $2 AND lease_id = $3 RETURNING 1"
)


# -- maintenance (the command line) -----------------------------------------------------------------

STORE_TABLES = (
    "workflows",
    "execution_pointers",
    "events",
    "event_subscriptions",
    "scheduled_commands",
    "execution_errors",
    "definition_sequences",
)


def _cannot_connect(url: str, error: BaseException, timeout: float) -> DatabaseOpenError:
    """Why ``url`` could not be opened, naming it (without its password). A timeout has no text of
    its own (a server that accepts the connection and never answers, a firewall that drops it)."""
    reason = f"no answer within {timeout:g}s" if isinstance(error, TimeoutError) else str(error) or repr(error)
    return DatabaseOpenError(f"cannot connect to PostgreSQL at {redact_url(url)}: {reason}")


async def _connect_once(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=5.0)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise _cannot_connect(url, error, 5.0) from error


async def migrate_url(url: str) -> tuple[int, int]:
    """``migrate`` on the database behind ``url``: (version before, version after)."""
    conn = await _connect_once(url)
    try:
        return await migrate(conn, redact_url(url))
    finally:
        await conn.close()


async def postgres_stats(url: str) -> dict[str, Any]:
    """What ``wfe-sqlite stats`` shows for a PostgreSQL database, from one snapshot."""
    conn = await _connect_once(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            version = await schema_version(conn)
            if version == 0:
                await refuse_foreign(conn, redact_url(url))
                raise DatabaseOpenError(f"{redact_url(url)}: no wfe-sqlite schema in this database")
            tables = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in STORE_TABLES}
            size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            figures = await _live_figures(conn)
    finally:
        await conn.close()
    return {
        "path": redact_url(url),
        "schema_version": version,
        "tables": tables,
        **dataclasses.asdict(figures),
        "files": {"database": size},
    }
