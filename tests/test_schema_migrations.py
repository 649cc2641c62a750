"""Schema migrations: a version-1 file (before revisions and the cluster tables) upgrades in place at open;
a file holding another application's tables (the Rust wfe-sqlite crate's among them) is refused untouched."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from wfe_client import QueueType, RevisionConflict
from wfe_sqlite import DatabaseOpenError, SqlitePersistenceProvider, SqliteQueueProvider
from wfe_sqlite._schema import MIGRATIONS, SCHEMA_VERSION


def _version_1_file(path: Path) -> None:
    """A file as the first release wrote it: the version-1 schema and one due workflow with a pointer."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        MIGRATIONS[0].apply(conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO workflows (id, name, root_workflow_id, workflow_definition_id, version, description, "
            "reference, next_execution, status, data, create_time, complete_time) "
            "VALUES ('old-wf', 'old-1', NULL, 'old', 1, NULL, NULL, 0, 'RUNNABLE', '{\"v\":1}', 1700000000000000, NULL)"
        )
        conn.execute(
            "INSERT INTO execution_pointers (workflow_id, position, id, step_id, active, status, event_published, "
            "retry_count, children, scope, extension_attributes) "
            "VALUES ('old-wf', 0, 'p0', 0, 1, 'PENDING', 0, 0, '[]', '[]', '{}')"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def test_a_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _version_1_file(path)
    assert _user_version(path) == 1
    store = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    try:
        assert _user_version(path) == SCHEMA_VERSION >= 2
        old = await store.get_workflow_instance("old-wf")
        assert old.revision == 1 and old.data == {"v": 1} and [p.id for p in old.execution_pointers] == ["p0"]
        stale = await store.get_workflow_instance("old-wf")
        await store.persist_workflow(old)
        assert old.revision == 2
        with pytest.raises(RevisionConflict):
            await store.persist_workflow(stale)
        # The workflow was due before the upgrade and is in no queue: the first sweep queues it.
        queue = SqliteQueueProvider(store)
        assert await queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=5)) == "old-wf"
    finally:
        await store.close()
    # Opening again changes nothing.
    again = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    try:
        assert (await again.get_workflow_instance("old-wf")).revision == 2
    finally:
        await again.close()
    assert _user_version(path) == SCHEMA_VERSION


async def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = file_state(path)
    with pytest.raises(DatabaseOpenError, match="newer"):
        await SqlitePersistenceProvider.open(f"sqlite://{path}")
    assert _user_version(path) == SCHEMA_VERSION + 1
    assert file_state(path) == before  # not even switched to WAL


# -- another application's file ------------------------------------------------------------------

CRATE_TABLES = (
    # As the Rust wfe-sqlite crate (1.11.4, src/lib.rs create_tables) creates them, abridged: the
    # same table names as ours, other columns (definition_id, times as text), no user_version.
    "CREATE TABLE IF NOT EXISTS workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, root_workflow_id TEXT, "
    "definition_id TEXT NOT NULL, version INTEGER NOT NULL, description TEXT, reference TEXT, status TEXT NOT NULL, "
    "data TEXT NOT NULL, next_execution INTEGER, create_time TEXT NOT NULL, complete_time TEXT)",
    "CREATE TABLE IF NOT EXISTS definition_sequences (definition_id TEXT PRIMARY KEY, next_num INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, event_name TEXT NOT NULL, event_key TEXT NOT NULL, "
    "event_data TEXT NOT NULL, event_time TEXT NOT NULL, is_processed INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS scheduled_commands (id INTEGER PRIMARY KEY AUTOINCREMENT, command_name TEXT NOT NULL, "
    "data TEXT NOT NULL, execute_time INTEGER NOT NULL, UNIQUE(command_name, data))",
    "CREATE INDEX IF NOT EXISTS idx_workflows_status ON workflows(status)",
    "INSERT INTO workflows VALUES ('w1', 'flow-1', NULL, 'flow', 1, NULL, NULL, 'Runnable', '{}', 0, "
    "'2025-01-01T00:00:00Z', NULL)",
)

FOREIGN: dict[str, tuple[tuple[str, ...], str]] = {
    "customers": (
        ("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO customers VALUES (1, 'Ada')"),
        "holds tables of another application (customers) and no wfe-sqlite schema (refusing to touch it)",
    ),
    "workflows": (
        ("CREATE TABLE workflows (foo TEXT)", "INSERT INTO workflows VALUES ('theirs')"),
        "holds tables of another application (workflows) and no wfe-sqlite schema (refusing to touch it)",
    ),
    "crate": (
        CRATE_TABLES,
        "holds the tables of the Rust wfe-sqlite crate (workflows with definition_id), "
        "whose schema this server does not read or convert (refusing to touch it)",
    ),
}
"""Files of other applications: the statements that make each, and what the refusal says after the path."""


def foreign_file(path: Path, kind: str) -> str:
    """Write another application's database (``FOREIGN[kind]``); the refusal message expected after the path."""
    statements, message = FOREIGN[kind]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if kind == "crate":
            conn.execute("PRAGMA journal_mode = WAL")  # the crate's files are WAL files
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()
    return message


def file_state(path: Path) -> tuple[bytes, list[str], str, list[str | None]]:
    """The file's bytes, the files beside it, its journal mode and schema, read without changing a thing
    (``immutable``: no lock, no shared-memory file; the journal mode from the header's version bytes).

    An empty ``-wal`` and the ``-shm`` beside a WAL file are left out: any reader of a WAL file
    (the read-only ``wfe-sqlite`` commands too, as on this server's own files) leaves them there.
    """
    data = path.read_bytes()
    beside = sorted(
        p.name
        for p in path.parent.iterdir()
        if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    )
    mode = {(1, 1): "delete", (2, 2): "wal"}[data[18], data[19]]
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        schema = [row[0] for row in conn.execute("SELECT sql FROM sqlite_master ORDER BY name")]
    finally:
        conn.close()
    return data, beside, mode, schema


@pytest.mark.parametrize("kind", sorted(FOREIGN))
async def test_another_applications_file_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.db"
    message = foreign_file(path, kind)
    before = file_state(path)
    with pytest.raises(DatabaseOpenError) as refused:
        await SqlitePersistenceProvider.open(f"sqlite://{path}")
    assert str(refused.value) == f"{path}: {message}"
    assert file_state(path) == before  # same bytes, journal mode and tables: no WAL switch, no schema
    assert before[2] == ("wal" if kind == "crate" else "delete")


async def test_a_file_without_tables_or_with_extra_tables_of_ours_is_used(tmp_path: Path) -> None:
    """Only a file with tables and none of ours is refused: an empty file, a SQLite file with no
    table, and a wfe-sqlite file to which someone added a table of their own all open."""
    empty, tableless, ours = tmp_path / "empty.db", tmp_path / "tableless.db", tmp_path / "ours.db"
    empty.touch()
    conn = sqlite3.connect(tableless)
    conn.execute("CREATE TABLE scratch (x)")
    conn.execute("DROP TABLE scratch")
    conn.close()
    store = await SqlitePersistenceProvider.open(f"sqlite://{ours}")
    await store.close()
    conn = sqlite3.connect(ours)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    for path in (empty, tableless, ours):
        store = await SqlitePersistenceProvider.open(f"sqlite://{path}")
        await store.close()
        assert _user_version(path) == SCHEMA_VERSION, path


async def test_a_large_backlog_of_due_work_in_no_queue_is_queued_once_at_start(tmp_path: Path) -> None:
    """More due workflows than one scan chunk and one write batch: every one is queued, each once."""
    path = tmp_path / "backlog.db"
    _version_1_file(path)
    count = 4500
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO workflows (id, name, root_workflow_id, workflow_definition_id, version, description, "
            "reference, next_execution, status, data, create_time, complete_time) "
            "VALUES (?, ?, NULL, 'old', 1, NULL, NULL, ?, 'RUNNABLE', '{}', 1700000000000000, NULL)",
            [(f"backlog-{i}", f"backlog-{i}", i) for i in range(count)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    store = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    try:
        queue = SqliteQueueProvider(store, requeue_interval=30)  # only the start-up sweep runs here
        got = []
        while (item := await queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=5))) is not None:
            got.append(item)
            if len(got) == count + 1:
                break
        assert sorted(got) == sorted(["old-wf", *(f"backlog-{i}" for i in range(count))])
        assert got[:3] == ["backlog-0", "old-wf", "backlog-1"]  # earliest due first (then by id)
    finally:
        await store.close()
