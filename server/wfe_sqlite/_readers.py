"""Reads: a pool of read-only connections, and point lookups right on the event loop's thread.

Every read job runs inside one read transaction (a snapshot) and never waits for the writer (WAL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from wfe_client.errors import StorageUnavailable

from ._connection import ConnectionThread, Job, in_snapshot, read_in_snapshot
from ._sqlite_errors import is_busy, translate

__all__ = ["ReadPool"]

T = TypeVar("T")


class ReadPool:
    """Read-only connections, each on its own thread, plus one for point lookups on the loop thread."""

    def __init__(self, readers: list[ConnectionThread], point: sqlite3.Connection) -> None:
        self._readers = readers
        self._idle: asyncio.Queue[ConnectionThread] = asyncio.Queue()
        for reader in readers:
            self._idle.put_nowait(reader)
        self._point: sqlite3.Connection | None = point
        self._point.execute("PRAGMA busy_timeout = 0")
        self._closed = False

    @classmethod
    async def open(cls, connect: Callable[[], sqlite3.Connection], size: int) -> ReadPool:
        """``size`` reader threads and the point-lookup connection, all opened by ``connect``."""
        readers: list[ConnectionThread] = []
        try:
            while len(readers) < max(1, size):
                readers.append(await ConnectionThread.open(connect, f"wfe-sqlite-reader-{len(readers)}"))
            return cls(readers, connect())
        except BaseException:
            for reader in readers:
                await reader.close()
            raise

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` on a free reader, inside one read transaction."""
        if self._closed:
            raise StorageUnavailable("the store is closed")
        reader = await self._idle.get()
        try:
            return await reader.run(in_snapshot(job))
        except sqlite3.Error as error:
            raise translate(error) from error
        finally:
            self._idle.put_nowait(reader)

    async def read_point(self, job: Job[T]) -> T:
        """Run a short ``job`` (an index lookup of one record) right on the event loop's thread.

        A lookup by key costs tens of microseconds, less than handing it to a connection thread and
        back; the connection never waits (busy timeout 0): if SQLite answers BUSY (a WAL reset in
        progress) the job goes to the reader pool like any other read.
        """
        point = self._point
        if point is None:
            return await self.read(job)
        try:
            return read_in_snapshot(point, job)
        except sqlite3.Error as error:
            if point.in_transaction:
                point.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError) and is_busy(error):
                return await self.read(job)
            raise translate(error) from error

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with every statement the readers run."""
        for reader in self._readers:
            await reader.run(lambda conn: conn.set_trace_callback(callback))
        if self._point is not None:
            self._point.set_trace_callback(callback)

    async def close(self) -> None:
        """Close every read connection."""
        self._closed = True
        if self._point is not None:
            self._point.close()
            self._point = None
        for reader in self._readers:
            await reader.close()
        self._readers.clear()
