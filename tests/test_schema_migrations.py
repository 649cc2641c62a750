"""Schema migrations: a version-1 file (before revisions and the cluster tables) upgrades in place at open."""

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
    with pytest.raises(DatabaseOpenError, match="newer"):
        await SqlitePersistenceProvider.open(f"sqlite://{path}")
    assert _user_version(path) == SCHEMA_VERSION + 1


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
