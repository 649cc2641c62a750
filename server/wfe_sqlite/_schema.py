"""The database schema as an ordered list of migrations; the version is ``PRAGMA user_version``.

Instants are INTEGER microseconds since the Unix epoch (UTC), epoch-millisecond fields are INTEGER
milliseconds, JSON values are TEXT holding JSON, enums are TEXT holding the member name.

A file at version N gets every migration above N, in order, in one transaction when it is opened
(``create_schema``): an older file is upgraded in place, a newer one is refused.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from ._connection import DatabaseOpenError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "create_schema", "ensure_schema"]

LOG = logging.getLogger(__name__)

_BASE = """
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

# Version 2 belongs to the cluster work (revisions, locks, queue).

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
-- The web console's event list, newest first (wfe_sqlite._console_store.events_page).
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


@dataclass(frozen=True)
class Migration:
    """One step of the schema: what it adds, and the function applying it inside a transaction."""

    version: int
    description: str
    steps: tuple[Callable[[sqlite3.Connection], None], ...]

    def apply(self, conn: sqlite3.Connection) -> None:
        for step in self.steps:
            step(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workflows, pointers, events, subscriptions, commands, errors, sequences", (_statements(_BASE),)),
    Migration(
        3,
        "visibility: list and purge indexes, full-text search kept in step by triggers",
        (_statements(_VISIBILITY), _backfill_search),
    ),
    Migration(4, "console: events by time", (_statements(_CONSOLE),)),
)
"""Every migration in order; each runs once on a file whose version is below it."""

SCHEMA_VERSION = MIGRATIONS[-1].version


def create_schema(conn: sqlite3.Connection) -> None:
    """Apply the migrations above the file's version and stamp the new one, in the caller's transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseOpenError(
            f"the database has schema version {version}, newer than this server's {SCHEMA_VERSION}: upgrade wfe-sqlite"
        )
    for migration in MIGRATIONS:
        if migration.version > version:
            if version:
                LOG.info("upgrading the schema to version %d: %s", migration.version, migration.description)
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
