"""The WAL is checkpointed in the background, so it stays small without stalling the writer."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from wfe_client import ExecutionPointer, WorkflowInstance
from wfe_sqlite import SqlitePersistenceProvider
from wfe_sqlite._checkpointer import CHECKPOINT_INTERVAL


async def test_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    wal = Path(f"{path}-wal")
    blob = "x" * 4096
    written = 0
    largest_wal = 0
    try:
        for round_ in range(10):
            workflows = []
            for i in range(100):
                workflow = WorkflowInstance.new("wal", 1, {"round": round_, "i": i, "blob": blob})
                workflow.execution_pointers = [ExecutionPointer.new(0)]
                workflows.append(workflow)
            await asyncio.gather(*(provider.create_new_workflow(w) for w in workflows))
            written += 100 * len(blob)
            largest_wal = max(largest_wal, wal.stat().st_size)
            await asyncio.sleep(CHECKPOINT_INTERVAL * 1.5)
        assert provider.database.checkpoints >= 5
    finally:
        await provider.close()
    # About 4 MB went through the WAL; it never held much more than two rounds (0.4 MB each).
    assert written > 4_000_000
    assert largest_wal < 2_000_000, largest_wal
    # Everything is in the database file after the close (WAL checkpointed and removed).
    assert not wal.exists() or os.path.getsize(wal) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM workflows").fetchone() == (1000,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
