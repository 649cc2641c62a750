"""The database schema: an ordered list of migrations, and its version (``PRAGMA user_version``).

Instants are INTEGER microseconds since the Unix epoch (UTC), epoch-millisecond fields are INTEGER
milliseconds, JSON values are TEXT holding JSON, enums are TEXT holding the member name.

A file is at the version of the last migration applied to it. Opening a file applies every later
migration in order, in one transaction (an older file is upgraded in place); a file newer than
this server is refused, and so is a file holding another application's tables (``refuse_foreign``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from ._connection import DatabaseOpenError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "create_schema",
    "ensure_schema",
    "refuse_foreign",
    "refuse_unusable",
]

LOG = logging.getLogger(__name__)

_VERSION_1 = """
CREATE TABLE IF NOT EXISTS workflows (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL,
    root_workflow_id        TEXT,
    workflow_definition_id  TEXT NOT NULL,
    version                 INTEGER NOT NULL,
    description             TEXT,
    reference               TEXT,
    next_execution          INTEGER,
    status                  TEXT NOT NULL,
    data                    TEXT NOT NULL,
    create_time             INTEGER NOT NULL,
    complete_time           INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS workflows_name ON workflows (name) WHERE name <> '';
CREATE INDEX IF NOT EXISTS workflows_runnable ON workflows (next_execution, id)
    WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL;

CREATE TABLE IF NOT EXISTS execution_pointers (
    workflow_id             TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    position                INTEGER NOT NULL,
    id                      TEXT NOT NULL,
    step_id                 INTEGER NOT NULL,
    active                  INTEGER NOT NULL,
    status                  TEXT NOT NULL,
    sleep_until             INTEGER,
    persistence_data        TEXT,
    start_time              INTEGER,
    end_time                INTEGER,
    event_name              TEXT,
    event_key               TEXT,
    event_published         INTEGER NOT NULL,
    event_data              TEXT,
    step_name               TEXT,
    retry_count             INTEGER NOT NULL,
    children                TEXT NOT NULL,
    context_item            TEXT,
    predecessor_id          TEXT,
    outcome                 TEXT,
    scope                   TEXT NOT NULL,
    extension_attributes    TEXT NOT NULL,
    PRIMARY KEY (workflow_id, position)
);

CREATE TABLE IF NOT EXISTS events (
    id                      TEXT PRIMARY KEY,
    event_name              TEXT NOT NULL,
    event_key               TEXT NOT NULL,
    event_data              TEXT NOT NULL,
    event_time              INTEGER NOT NULL,
    is_processed            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_runnable ON events (event_time, id) WHERE is_processed = 0;
CREATE INDEX IF NOT EXISTS events_by_name_key ON events (event_name, event_key, event_time, id);

CREATE TABLE IF NOT EXISTS event_subscriptions (
    id                      TEXT PRIMARY KEY,
    workflow_id             TEXT NOT NULL,
    step_id                 INTEGER NOT NULL,
    execution_pointer_id    TEXT NOT NULL,
    event_name              TEXT NOT NULL,
    event_key               TEXT NOT NULL,
    subscribe_as_of         INTEGER NOT NULL,
    subscription_data       TEXT,
    external_token          TEXT,
    external_worker_id      TEXT,
    external_token_expiry   INTEGER,
    terminated              INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS subscriptions_open ON event_subscriptions
    (event_name, event_key, subscribe_as_of, id) WHERE terminated = 0;

CREATE TABLE IF NOT EXISTS scheduled_commands (
    command_name            TEXT NOT NULL,
    data                    TEXT NOT NULL,
    execute_time            INTEGER NOT NULL,
    lease_id                TEXT,
    lease_expiry            INTEGER,
    generation              INTEGER NOT NULL DEFAULT 0,
    claimed_generation      INTEGER,
    UNIQUE (command_name, data)
);
CREATE INDEX IF NOT EXISTS scheduled_commands_due ON scheduled_commands (execute_time);

CREATE TABLE IF NOT EXISTS execution_errors (
    id                      INTEGER PRIMARY KEY,
    error_time              INTEGER NOT NULL,
    workflow_id             TEXT NOT NULL,
    execution_pointer_id    TEXT NOT NULL,
    message                 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_errors_by_workflow ON execution_errors (workflow_id, error_time);

CREATE TABLE IF NOT EXISTS definition_sequences (
    definition_id           TEXT PRIMARY KEY,
    value                   INTEGER NOT NULL
);
"""


# Version 2: the cluster (issue 11). Workflows carry a revision (existing ones start at 1); leases
# of the lock service with one global fencing-token counter; the durable work queue, whose rows
# are either waiting (``position`` set: FIFO order within the queue) or a record of the last
# hand-out (``position`` NULL, ``handed_out_at`` set) that the stranded-work job looks at.
_VERSION_2_TABLES = """
CREATE TABLE IF NOT EXISTS locks (
    resource                TEXT PRIMARY KEY,
    owner                   TEXT NOT NULL,
    fencing_token           INTEGER NOT NULL,
    expire_time             INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locks_expiry ON locks (expire_time);

CREATE TABLE IF NOT EXISTS counters (
    name                    TEXT PRIMARY KEY,
    value                   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO counters (name, value) VALUES ('fencing_token', 0);

CREATE TABLE IF NOT EXISTS work_queue (
    queue                   TEXT NOT NULL,
    item_id                 TEXT NOT NULL,
    position                INTEGER,
    queued_at               INTEGER NOT NULL,
    handed_out_at           INTEGER,
    PRIMARY KEY (queue, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS work_queue_waiting ON work_queue (queue, position) WHERE position IS NOT NULL;
CREATE INDEX IF NOT EXISTS work_queue_handed_out ON work_queue (handed_out_at) WHERE position IS NULL;
"""


def _run_script(script: str) -> Callable[[sqlite3.Connection], None]:
    def apply(conn: sqlite3.Connection) -> None:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)

    return apply


def _version_2(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(workflows)")}
    if "revision" not in columns:
        conn.execute("ALTER TABLE workflows ADD COLUMN revision INTEGER NOT NULL DEFAULT 1")
    _run_script(_VERSION_2_TABLES)(conn)


# Version 3: visibility (issue 13).
_VISIBILITY = """
-- Behind every filter of ListWorkflows (wfe_sqlite._visibility_store): one status, or one
-- definition and one status, newest first (ties by id); a reference; purge by status and age.
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows (status, create_time, id);
CREATE INDEX IF NOT EXISTS workflows_by_definition ON workflows (workflow_definition_id, status, create_time, id);
CREATE INDEX IF NOT EXISTS workflows_by_reference ON workflows (reference, create_time, id)
    WHERE reference IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflows_by_age ON workflows (status, coalesce(complete_time, create_time));
CREATE INDEX IF NOT EXISTS subscriptions_by_workflow ON event_subscriptions (workflow_id);

-- Full text over name, reference, description and data. An external-content table: it holds only
-- the index and reads the text from workflows (by rowid; workflows has indexes, so VACUUM keeps
-- its rowids). The triggers keep it in step inside the transaction of every write.
CREATE VIRTUAL TABLE IF NOT EXISTS workflows_fts USING fts5(
    name, reference, description, data,
    content = 'workflows', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS workflows_fts_insert AFTER INSERT ON workflows BEGIN
    INSERT INTO workflows_fts (rowid, name, reference, description, data)
    VALUES (new.rowid, new.name, new.reference, new.description, new.data);
END;
CREATE TRIGGER IF NOT EXISTS workflows_fts_delete AFTER DELETE ON workflows BEGIN
    INSERT INTO workflows_fts (workflows_fts, rowid, name, reference, description, data)
    VALUES ('delete', old.rowid, old.name, old.reference, old.description, old.data);
END;
CREATE TRIGGER IF NOT EXISTS workflows_fts_update AFTER UPDATE OF name, reference, description, data ON workflows
WHEN old.name IS NOT new.name OR old.reference IS NOT new.reference
    OR old.description IS NOT new.description OR old.data IS NOT new.data
BEGIN
    INSERT INTO workflows_fts (workflows_fts, rowid, name, reference, description, data)
    VALUES ('delete', old.rowid, old.name, old.reference, old.description, old.data);
    INSERT INTO workflows_fts (rowid, name, reference, description, data)
    VALUES (new.rowid, new.name, new.reference, new.description, new.data);
END;
"""


_CONSOLE = """
-- Version 4: the web console's event list, newest first (wfe_sqlite._console_store).
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time, id);
"""


def _statements(script: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step running each statement of ``script`` (statements end with a line ``;``)."""
    statements = []
    current: list[str] = []
    for line in script.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";") and not _inside_trigger(current):
            statements.append("\n".join(current).strip())
            current = []

    def apply(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return apply


def _inside_trigger(lines: list[str]) -> bool:
    """Whether ``lines`` are an unfinished CREATE TRIGGER (its body holds statements ending in ``;``)."""
    text = "\n".join(lines).strip().upper()
    return text.startswith("CREATE TRIGGER") and not text.endswith("END;")


def _backfill_search(conn: sqlite3.Connection) -> None:
    """Index the workflows a file held before it had full text."""
    count = conn.execute("SELECT count(*) FROM workflows").fetchone()[0]
    if count:
        LOG.info("indexing %d existing workflows for full-text search (once)", count)
    conn.execute("INSERT INTO workflows_fts (workflows_fts) VALUES ('rebuild')")


def _version_3(conn: sqlite3.Connection) -> None:
    _statements(_VISIBILITY)(conn)
    _backfill_search(conn)


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``apply`` brings a file at ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workflows, pointers, events, subscriptions, commands, errors, sequences", _run_script(_VERSION_1)),
    Migration(2, "workflow revisions, locks, fencing-token counter, work queue", _version_2),
    Migration(3, "visibility: list and purge indexes, full-text search kept in step by triggers", _version_3),
    Migration(4, "console: events by time", _statements(_CONSOLE)),
)
"""Every migration, in order; the last one's version is ``SCHEMA_VERSION``."""

SCHEMA_VERSION = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1)), "migrations are numbered 1, 2, ..."


_OBJECTS = (
    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "ORDER BY name"
)
"""The tables and views of a file, without SQLite's own (``sqlite_sequence``, ``sqlite_stat1``)."""


def refuse_foreign(conn: sqlite3.Connection, path: str) -> None:
    """Refuse (``DatabaseOpenError``), reading only, a file at ``path`` holding another application's tables.

    Every wfe-sqlite file has had a ``workflows`` table with ``workflow_definition_id`` since the
    first version (created in the transaction that stamps ``PRAGMA user_version``), and a file
    without tables is new (just created, or empty): both are fine, whatever else they hold. Any
    other file is someone else's data, not to be given our tables. That includes a database of the
    Rust ``wfe-sqlite`` crate (its ``workflows`` has ``definition_id``, times as text, statuses in
    CamelCase): this server has never read that schema and does not convert it.
    """
    names = [row[0] for row in conn.execute(_OBJECTS)]
    if not names:
        return
    columns = {row[1] for row in conn.execute("PRAGMA table_info(workflows)")}
    if "workflow_definition_id" in columns:
        return
    if "definition_id" in columns:
        raise DatabaseOpenError(
            f"{path}: holds the tables of the Rust wfe-sqlite crate (workflows with definition_id), "
            "whose schema this server does not read or convert (refusing to touch it)"
        )
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    raise DatabaseOpenError(
        f"{path}: holds tables of another application ({shown}) and no wfe-sqlite schema (refusing to touch it)"
    )


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise DatabaseOpenError(
            f"the database has schema version {version}, newer than this server's {SCHEMA_VERSION}: upgrade wfe-sqlite"
        )


def refuse_unusable(conn: sqlite3.Connection, path: str) -> None:
    """Refuse, reading only, a file a server must not write to: another application's, or newer than this server.

    The writer runs it before anything is written to the file (``Database.open``'s ``vet``), so a
    refused file keeps its journal mode too.
    """
    refuse_foreign(conn, path)
    _refuse_newer(conn.execute("PRAGMA user_version").fetchone()[0])


def create_schema(conn: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks and stamp the schema version, inside the caller's transaction.

    Idempotent: on a file at ``SCHEMA_VERSION`` it changes nothing.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    _refuse_newer(version)
    for migration in MIGRATIONS:
        if migration.version > version:
            migration.apply(conn)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """``create_schema`` in a transaction of its own. Idempotent."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        create_schema(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
