"""The SQLite writer's group commit: one job's failure undoes only that job, with or without a savepoint.

A job queued with ``savepoint=False`` (the store's one-statement writes: subscription tokens, the
scheduled commands) runs in the batch without a savepoint of its own; SQLite undoes a failed
statement by itself. Checked here on a real file and the real writer, in one batch with jobs that
keep their savepoints.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from wfe_client.errors import StorageUnavailable
from wfe_sqlite import SqlitePersistenceProvider


async def test_a_failed_job_in_a_batch_undoes_only_itself_with_or_without_a_savepoint(tmp_path: Path) -> None:
    provider = await SqlitePersistenceProvider.open(f"sqlite://{tmp_path / 'batch.db'}")
    try:
        database = provider.database
        await database.write(lambda conn: conn.execute("CREATE TABLE scratch (k INTEGER PRIMARY KEY)"))
        sizes: list[int] = []
        database.on_batch = sizes.append

        def insert(*keys: int) -> Callable[[sqlite3.Connection], None]:
            def job(conn: sqlite3.Connection) -> None:
                # One statement: its rows go in one by one, and a conflict on a later one fails it.
                conn.execute(f"INSERT INTO scratch (k) VALUES {', '.join(['(?)'] * len(keys))}", keys)

            return job

        def insert_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO scratch (k) VALUES (4)")
            raise ValueError("the job's own failure")

        outcomes = await asyncio.gather(
            database.write(insert(1), savepoint=False),
            database.write(insert(2, 3, 1), savepoint=False),  # 2 and 3 go in before 1 conflicts
            database.write(insert_then_fail),
            database.write(insert(5), savepoint=False),
            database.write(insert(6)),
            return_exceptions=True,
        )
        assert sizes == [5]  # one group commit
        assert outcomes[0] is None and outcomes[3] is None and outcomes[4] is None
        assert isinstance(outcomes[1], sqlite3.IntegrityError)
        assert isinstance(outcomes[2], ValueError)
        rows = await database.read(lambda conn: conn.execute("SELECT k FROM scratch ORDER BY k").fetchall())
        assert rows == [(1,), (5,), (6,)]
    finally:
        await provider.close()


async def test_jobs_queued_before_close_are_committed_and_later_ones_refused(tmp_path: Path) -> None:
    provider = await SqlitePersistenceProvider.open(f"sqlite://{tmp_path / 'close.db'}")
    database = provider.database
    await database.write(lambda conn: conn.execute("CREATE TABLE scratch (k INTEGER PRIMARY KEY)"))
    writes = [
        asyncio.ensure_future(database.write(lambda conn, k=k: conn.execute("INSERT INTO scratch VALUES (?)", (k,))))
        for k in range(50)
    ]
    await asyncio.sleep(0)  # every write queued
    await provider.close()
    assert all(w.done() and w.exception() is None for w in writes)
    with pytest.raises(StorageUnavailable, match="closed"):
        await database.write(lambda conn: None)
    conn = sqlite3.connect(tmp_path / "close.db")
    try:
        assert conn.execute("SELECT count(*) FROM scratch").fetchone() == (50,)
    finally:
        conn.close()
