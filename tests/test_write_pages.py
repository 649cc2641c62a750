"""A persist writes the pages of what changed, not of every index on ``workflows``.

Every commit appends the pages it changed to the WAL (and every one is fsynced with
``synchronous=FULL``, then copied back by the checkpoint), so the page count of the most frequent
write is worth a test. SQLite rewrites the index entries of every column an UPDATE sets, changed or
not; ``write_persist`` sets only the changed columns and writes pointers in place by position.
Counted here on a plain connection with the server's schema: WAL frames per transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wfe_client import ExecutionPointer, PointerStatus, WorkflowInstance, WorkflowStatus
from wfe_sqlite._rows import pointer_rows, workflow_row
from wfe_sqlite._schema import ensure_schema
from wfe_sqlite._sqlite_store import INSERT_POINTER, INSERT_WORKFLOW, WORKFLOW_COLUMNS, write_persist

PAGE = 4096


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "pages.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    ensure_schema(conn)
    # Enough workflows that the tables and indexes span many pages.
    conn.execute("BEGIN")
    for i in range(3000):
        w = _workflow(i)
        conn.execute(INSERT_WORKFLOW, workflow_row(w)._replace(revision=1))
        conn.executemany(INSERT_POINTER, pointer_rows(w.id, w.execution_pointers))
    conn.execute("COMMIT")
    return conn


def _workflow(i: int) -> WorkflowInstance:
    w = WorkflowInstance.new("pages", 1, {"i": i})
    w.id = f"wf-{i:05d}"
    w.name = f"pages-{i}"
    w.reference = f"ref-{i}"
    w.description = "a workflow"
    w.status = WorkflowStatus.RUNNABLE
    w.create_time = datetime(2026, 1, 1, tzinfo=UTC)
    w.execution_pointers = [ExecutionPointer.new(step) for step in range(3)]
    for p in w.execution_pointers:
        p.id = f"{w.id}-p{p.step_id}"
    return w


def _frames(conn: sqlite3.Connection, w: WorkflowInstance) -> int:
    """WAL frames (pages) written by one transaction persisting ``w``."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("BEGIN IMMEDIATE")
    write_persist(conn, workflow_row(w), pointer_rows(w.id, w.execution_pointers))
    conn.execute("COMMIT")
    wal = Path(conn.execute("PRAGMA database_list").fetchone()[2] + "-wal")
    return (wal.stat().st_size - 32) // (PAGE + 24)


def _stored(conn: sqlite3.Connection, id: str) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    row = conn.execute(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", (id,)).fetchone()
    pointers = conn.execute(
        "SELECT * FROM execution_pointers WHERE workflow_id = ? ORDER BY position", (id,)
    ).fetchall()
    return row, pointers


def test_a_step_persist_writes_the_workflow_and_pointer_pages_only(conn: sqlite3.Connection) -> None:
    w = _workflow(1500)
    w.execution_pointers[0].status = PointerStatus.COMPLETE  # what a step changes
    assert _frames(conn, w) <= 2  # the workflow's table page (revision) and its pointers' page

    w.status = WorkflowStatus.COMPLETE  # the status is in three indexes: they are written now
    assert _frames(conn, w) > 2


def test_what_is_stored_is_the_whole_new_workflow(conn: sqlite3.Connection) -> None:
    w = _workflow(7)
    w.data = {"i": 8}
    w.reference = None
    w.status = WorkflowStatus.SUSPENDED
    w.execution_pointers = [*w.execution_pointers[:1], ExecutionPointer.new(9)]
    conn.execute("BEGIN IMMEDIATE")
    assert write_persist(conn, workflow_row(w), pointer_rows(w.id, w.execution_pointers)) == 2
    conn.execute("COMMIT")
    row, pointers = _stored(conn, w.id)
    expected_row = workflow_row(w)._replace(revision=2)
    assert row == tuple(expected_row)
    assert pointers == [tuple(p) for p in pointer_rows(w.id, w.execution_pointers)]

    # Unchanged: only the revision moves.
    conn.execute("BEGIN IMMEDIATE")
    assert write_persist(conn, workflow_row(w), pointer_rows(w.id, w.execution_pointers), expected_revision=2) == 3
    conn.execute("COMMIT")
    assert _stored(conn, w.id) == (tuple(expected_row._replace(revision=3)), pointers)


def test_a_step_persist_of_a_workflow_of_many_pointers_writes_the_changed_pointer_only(
    conn: sqlite3.Connection,
) -> None:
    w = _workflow(3000)
    w.execution_pointers = [ExecutionPointer.new(step) for step in range(2000)]
    for p in w.execution_pointers:
        p.id = f"{w.id}-p{p.step_id}"
        p.children = [f"child-{p.step_id}-{c}" for c in range(3)]
    conn.execute("BEGIN")
    conn.execute(INSERT_WORKFLOW, workflow_row(w)._replace(revision=1))
    conn.execute("COMMIT")
    assert _frames(conn, w) > 50  # the first persist writes its 2,000 pointers: many pages

    w.execution_pointers[1234].status = PointerStatus.COMPLETE
    # The workflow's page (revision) and the one pointer's page.
    assert _frames(conn, w) <= 2
    assert _stored(conn, w.id)[1] == [tuple(p) for p in pointer_rows(w.id, w.execution_pointers)]

    # Changed, added and removed pointers are all stored as sent.
    w.execution_pointers[7].children = ["other"]
    w.execution_pointers[1999].retry_count = 3
    w.execution_pointers.extend(ExecutionPointer.new(step) for step in range(2000, 2010))
    conn.execute("BEGIN IMMEDIATE")
    write_persist(conn, workflow_row(w), pointer_rows(w.id, w.execution_pointers))
    conn.execute("COMMIT")
    assert _stored(conn, w.id)[1] == [tuple(p) for p in pointer_rows(w.id, w.execution_pointers)]
    del w.execution_pointers[40:]
    w.execution_pointers[3].active = False
    for few in (40, 33, 32, 3):  # either side of the count above which the stored ones are compared
        del w.execution_pointers[few:]
        conn.execute("BEGIN IMMEDIATE")
        write_persist(conn, workflow_row(w), pointer_rows(w.id, w.execution_pointers))
        conn.execute("COMMIT")
        assert _stored(conn, w.id)[1] == [tuple(p) for p in pointer_rows(w.id, w.execution_pointers)]
