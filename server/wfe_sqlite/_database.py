"""A SQLite database as this server uses it: one writer, a read pool, a checkpointer.

Every write job goes through the group-committing writer (``_writer``); read jobs run on
read-only connections that never wait for the writer (``_readers``, WAL); the WAL is checkpointed
in the background on a connection of its own (``_checkpointer``). In memory there is one
connection: the writer, which also runs the reads between its commits. A job is a plain function
of a ``sqlite3.Connection`` that runs whole on the connection's thread (``_connection``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wfe_client.errors import StorageUnavailable

from ._checkpointer import Checkpointer
from ._connection import (
    MEMORY,
    ConnectionThread,
    DatabaseConfig,
    DatabaseOpenError,
    Job,
    connector,
    in_snapshot,
    parse_database_url,
)
from ._readers import ReadPool
from ._writer import GroupCommitWriter

__all__ = ["MEMORY", "Database", "DatabaseConfig", "DatabaseOpenError", "parse_database_url"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


def _truncate_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class Database:
    """The parts of one open database, opened and closed together."""

    def __init__(
        self,
        config: DatabaseConfig,
        writer: GroupCommitWriter,
        readers: ReadPool | None,
        checkpointer: Checkpointer | None,
    ) -> None:
        self.config = config
        self._writer = writer
        self._readers = readers
        self._checkpointer = checkpointer
        self._closed = False

    @classmethod
    async def open(
        cls,
        config: DatabaseConfig,
        prepare: Job[None],
        vet: Callable[[sqlite3.Connection, str], None] | None = None,
    ) -> Database:
        """Open the writer, run ``prepare`` (schema set-up) on it, then the readers and checkpointer.

        ``vet`` runs on the writer's connection before anything is written to the file (see
        ``connector``): the place to refuse a file that is not this server's.
        """
        if 0 < config.switch_interval < sys.getswitchinterval():
            sys.setswitchinterval(config.switch_interval)
        if not config.in_memory:
            _check_file(config.path)
        opened: list[ConnectionThread | ReadPool] = []
        try:
            connection = await ConnectionThread.open(connector(config, writer=True, vet=vet), "wfe-sqlite-writer")
            opened.append(connection)
            await connection.run(prepare)
            readers = checkpointer = None
            if not config.in_memory:
                readers = await ReadPool.open(connector(config, writer=False), config.readers)
                opened.append(readers)
                checkpointing = await ConnectionThread.open(connector(config, writer=True), "wfe-sqlite-checkpointer")
                opened.append(checkpointing)
        except BaseException as error:
            for part in reversed(opened):
                await part.close()
            if isinstance(error, sqlite3.DatabaseError):
                raise DatabaseOpenError(f"{config.path}: cannot open the database: {error}") from error
            raise
        writer = GroupCommitWriter(connection)
        writer.start()
        if not config.in_memory:
            checkpointer = Checkpointer(checkpointing, lambda: writer.batches)
            checkpointer.start()
        return cls(config, writer, readers, checkpointer)

    @property
    def checkpoints(self) -> int:
        """Background WAL checkpoints run so far."""
        return 0 if self._checkpointer is None else self._checkpointer.checkpoints

    @property
    def on_batch(self) -> Callable[[int], None] | None:
        """Called with the size of each committed write batch (for metrics)."""
        return self._writer.on_batch

    @on_batch.setter
    def on_batch(self, callback: Callable[[int], None] | None) -> None:
        self._writer.on_batch = callback

    def write(self, job: Job[T], *, savepoint: bool = True) -> Coroutine[Any, Any, T]:
        """Run ``job`` in the writer's next group commit; its failure undoes only its own changes.
        ``savepoint=False``: the job writes with one statement at most (``GroupCommitWriter.write``).

        Not a coroutine function itself: it hands the writer's coroutine back, one frame less per write.
        """
        return self._writer.write(job, savepoint=savepoint)

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` inside one read transaction (a snapshot), never waiting for writes."""
        if self._readers is None:
            if self._closed:
                raise StorageUnavailable("the store is closed")
            # In memory there is only the writer connection: the read runs there, between group
            # commits and outside them (it is not a write and is not counted as a batch).
            return await self._writer.run_outside(in_snapshot(job))
        return await self._readers.read(job)

    async def data_version(self) -> int:
        """A number that changes when another process commits to the file (not with this one's commits)."""
        return await self._writer.data_version()

    def read_point(self, job: Job[T]) -> Coroutine[Any, Any, T]:
        """Run a short lookup by key, on the event loop's thread when the database is a file.
        (The pool's coroutine handed back as it is: one frame less per read.)"""
        if self._readers is None:
            return self.read(job)
        return self._readers.read_point(job)

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with every SQL statement the writer and readers run (debugging, plan checks)."""
        await self._writer.connection.run(lambda conn: conn.set_trace_callback(callback))
        if self._readers is not None:
            await self._readers.set_trace_callback(callback)

    async def close(self) -> None:
        """Finish queued writes, then close every connection (checkpointing the WAL)."""
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        if self._readers is not None:
            await self._readers.close()
        connection = self._writer.connection
        if not self.config.in_memory:
            try:
                await connection.run(_truncate_wal)
            except sqlite3.Error as error:
                LOG.warning("WAL checkpoint at close failed: %s", error)
        await connection.close()


def _check_file(path: str) -> None:
    """Refuse files this server must not touch, before SQLite sees them."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DatabaseOpenError(f"{path}: directory {directory} does not exist")
    if os.path.exists(path):
        check_existing_file(path, writable=True)
    elif not os.access(directory, os.W_OK):
        raise DatabaseOpenError(f"{path}: cannot create the database (directory {directory} is not writable)")


def check_existing_file(path: str, *, writable: bool) -> None:
    """Refuse an existing ``path`` that is no SQLite database this process may read (and write,
    when ``writable``), with a ``DatabaseOpenError`` naming the file; SQLite's own messages do not."""
    if os.path.isdir(path):
        raise DatabaseOpenError(f"{path}: is a directory, not a database file")
    if not os.access(path, os.R_OK):
        raise DatabaseOpenError(f"{path}: permission denied (cannot read the database file)")
    if writable and not os.access(path, os.W_OK):
        raise DatabaseOpenError(f"{path}: the database file is read-only")
    if os.path.getsize(path) > 0:
        with open(path, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise DatabaseOpenError(f"{path}: not a SQLite database (refusing to touch it)")
