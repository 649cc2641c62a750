"""How a store tells other processes' commits from its own (the cross-process queue watch).

The watch wakes waiting dequeues when another process commits to the file; the store's own commits
wake them directly, so they must not count as changes (each one cost every dispatcher a look and a
due-time query on the event loop, 50 times a second under load).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wfe_client import ExecutionPointer, WorkflowInstance
from wfe_sqlite import SqlitePersistenceProvider


def _workflow() -> WorkflowInstance:
    workflow = WorkflowInstance.new("watch", 1, {})
    workflow.execution_pointers = [ExecutionPointer.new(0)]
    return workflow


async def test_own_commits_leave_the_version_alone_and_another_connections_change_it(tmp_path: Path) -> None:
    path = tmp_path / "watch.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    try:
        db = provider.database
        first = await db.data_version()
        assert await db.data_version() == first  # read between batches, nothing committed
        for _ in range(5):
            await provider.create_new_workflow(_workflow())
            assert await db.data_version() == first  # read as the batch began: own commits only
        assert await db.data_version() == first

        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("PRAGMA busy_timeout = 5000")
            other.execute("CREATE TABLE IF NOT EXISTS elsewhere (x INTEGER)")
            other.execute("INSERT INTO elsewhere VALUES (1)")
        finally:
            other.close()
        changed = await db.data_version()
        assert changed != first
        # Seen once: the store's next commit and the idle reads after it do not report it again.
        await provider.create_new_workflow(_workflow())
        assert await db.data_version() == changed
        assert await db.data_version() == changed
    finally:
        await provider.close()
