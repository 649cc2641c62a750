"""Maintenance queries: live figures for metrics and ``stats``, integrity check, online backup.

The jobs here are plain functions of a ``sqlite3.Connection`` like every other storage job: the
server runs ``live_figures`` on its read pool at scrape time, the ``wfe-sqlite`` maintenance
commands run everything on a connection of their own (``open_existing``), next to a running
server or not (WAL lets them read while the server writes).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from dataclasses import asdict
from typing import Any

from wfe_client.timeutil import to_micros, utc_now

from ._connection import MEMORY, DatabaseOpenError, parse_database_url
from ._database import check_existing_file
from ._schema import refuse_foreign
from ._store import LiveFigures
from ._visibility_store import has_work_queue

__all__ = [
    "TABLES",
    "backup",
    "file_sizes",
    "integrity_problems",
    "live_figures",
    "open_existing",
    "store_stats",
    "table_counts",
]

TABLES = (
    "workflows",
    "execution_pointers",
    "events",
    "event_subscriptions",
    "scheduled_commands",
    "execution_errors",
    "definition_sequences",
)


def live_figures(conn: sqlite3.Connection) -> LiveFigures:
    """The ``LiveFigures`` as of now, from one snapshot (run it inside a read transaction)."""
    now_us = to_micros(utc_now())
    now_ms = now_us // 1000

    def one(sql: str, *args: int) -> int:
        count: int = conn.execute(sql, args).fetchone()[0]
        return count

    return LiveFigures(
        runnable_workflows=one(
            "SELECT count(*) FROM workflows INDEXED BY workflows_runnable WHERE status = 'RUNNABLE' "
            "AND next_execution IS NOT NULL AND next_execution <= ?",
            now_ms,
        ),
        unprocessed_events=one("SELECT count(*) FROM events WHERE is_processed = 0"),
        due_commands=one(
            "SELECT count(*) FROM scheduled_commands WHERE execute_time <= ? "
            "AND (lease_id IS NULL OR lease_expiry <= ?)",
            now_ms,
            now_us,
        ),
        claimed_commands=one(
            "SELECT count(*) FROM scheduled_commands WHERE lease_id IS NOT NULL AND lease_expiry > ?", now_us
        ),
        held_tokens=one(
            "SELECT count(*) FROM event_subscriptions WHERE terminated = 0 "
            "AND external_token IS NOT NULL AND external_token_expiry > ?",
            now_us,
        ),
        **_cluster_figures(conn, now_us),
    )


def _cluster_figures(conn: sqlite3.Connection, now_us: int) -> dict[str, int]:
    """Queued items and held leases; none in a file from before the cluster tables (schema 1)."""
    if not has_work_queue(conn):
        return {}
    queued: int = conn.execute("SELECT count(*) FROM work_queue WHERE position IS NOT NULL").fetchone()[0]
    held: int = conn.execute("SELECT count(*) FROM locks WHERE expire_time > ?", (now_us,)).fetchone()[0]
    return {"queued_items": queued, "held_leases": held}


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table."""
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def file_sizes(path: str) -> dict[str, int]:
    """Bytes of the database file, its WAL and its shared-memory index (0 when absent)."""
    if path == MEMORY:
        return {"database": 0, "wal": 0, "shm": 0}

    def size(name: str) -> int:
        try:
            return os.path.getsize(name)
        except OSError:
            return 0

    return {"database": size(path), "wal": size(path + "-wal"), "shm": size(path + "-shm")}


def store_stats(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    """Everything ``wfe-sqlite stats`` shows, read in one snapshot."""
    conn.execute("BEGIN")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = table_counts(conn)
        figures = live_figures(conn)
    finally:
        conn.execute("COMMIT")
    return {
        "path": path,
        "schema_version": version,
        "tables": tables,
        **asdict(figures),
        "files": file_sizes(path),
    }


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check`` report; empty when sound."""
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall() if row[0] != "ok"]
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check").fetchall():
        problems.append(f"{table} row {rowid}: refers to a missing {parent} row")
    return problems


def open_existing(url: str, *, read_only: bool = True, require_schema: bool = False) -> tuple[sqlite3.Connection, str]:
    """A connection of its own to the existing database behind ``url``, and its path.

    Never creates a file: a missing database is ``FileNotFoundError``; a file holding another
    application's tables and no wfe-sqlite schema is ``DatabaseOpenError`` (``refuse_foreign``), as
    is, with ``require_schema`` (the commands that read the tables), a file with no tables yet.
    """
    path = parse_database_url(url)
    if path == MEMORY:
        raise ValueError("an in-memory database lives only inside its server process")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no database file there")
    check_existing_file(path, writable=not read_only)
    mode = "ro" if read_only else "rw"
    uri = "file:" + urllib.parse.quote(os.path.realpath(path)) + f"?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        _refuse_unopenable(conn, path)
        with contextlib.suppress(sqlite3.DatabaseError):  # a damaged schema: the command reports it (check)
            refuse_foreign(conn, path)
            if require_schema and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                raise DatabaseOpenError(
                    f"{path}: no wfe-sqlite schema in this database yet: run wfe-sqlite migrate --db URL "
                    "(or start a server on it) first"
                )
    except BaseException:
        conn.close()
        raise
    return conn, path


def _refuse_unopenable(conn: sqlite3.Connection, path: str) -> None:
    """A file SQLite cannot open (``unable to open database file``, which names neither the file nor
    why): ``DatabaseOpenError`` saying which and why. A damaged file passes, for ``check`` to report."""
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_CANTOPEN:
            return  # damaged, for instance: the command reports it (check)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.access(directory, os.W_OK) and not os.path.exists(path + "-shm"):
            raise DatabaseOpenError(
                f"{path}: cannot open the database: its directory {directory} is read-only, and a database "
                f"in WAL mode needs its shared-memory file {os.path.basename(path)}-shm there "
                "(copy the database to a writable directory)"
            ) from None
        raise DatabaseOpenError(f"{path}: cannot open the database: {error}") from None


_COMPANIONS = ("", "-wal", "-shm", "-journal")
"""The suffixes of a database's own files: the database, its WAL, its shared memory, its journal."""


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through symbolic or hard links); a missing one is no match."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_destination(path: str, dest: str, overwrite: bool) -> None:
    """Refuse a backup destination that cannot take the copy, or that is the database itself.

    Renaming the copy over the live database (or its WAL) would leave a running server writing to
    a file nobody can open any more: every write it acknowledged afterwards would be lost.
    """
    if not dest:
        raise ValueError("backup: the destination is an empty path")
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{dest}: directory {directory} does not exist")
    if os.path.isdir(dest):
        raise IsADirectoryError(f"{dest}: is a directory (give the backup's file name)")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{dest}: cannot write in directory {directory} (read-only or permission denied)")
    for own in (path + suffix for suffix in _COMPANIONS):
        if _same_file(dest, own):
            raise ValueError(f"{dest}: is the database's own file {own}; back up to another file")
    if os.path.exists(dest) and not overwrite:
        raise FileExistsError(f"{dest}: already exists (refusing to overwrite it)")


def backup(url: str, dest: str, *, overwrite: bool = False) -> int:
    """Copy the database behind ``url`` to the file ``dest`` consistently, while it is in use.

    The copy is made from one read snapshot (SQLite's online backup, all pages in one step), so it
    is the database as of one instant, whatever the server commits meanwhile; writers are not
    blocked. It is written next to ``dest``, synced, then renamed into place. Returns its size.
    """
    source, path = open_existing(url)
    try:
        _check_destination(path, dest, overwrite)
    except BaseException:
        source.close()
        raise
    partial = f"{dest}.partial-{os.getpid()}"
    target: sqlite3.Connection | None = None
    try:
        target = sqlite3.connect(partial, isolation_level=None)
        source.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        target.close()
        target = None
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, dest)
        _sync_directory(os.path.dirname(os.path.abspath(dest)))
    except BaseException:
        if target is not None:
            target.close()
        for leftover in (partial, partial + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        raise
    finally:
        source.close()
    return os.path.getsize(dest)


def _sync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
