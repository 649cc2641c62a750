"""SQLite connections: database strings, connection settings, and one thread per connection.

A ``ConnectionThread`` owns one ``sqlite3.Connection`` on a thread of its own and runs whole jobs
there: a job is a plain function of the connection, so an operation of many statements costs one
thread hop, not one per statement (the pattern of aiosqlite's ``core.py``, with jobs instead of
statements). Every connection gets its settings from ``DatabaseConfig.pragmas``, validated by name
in one place.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "MEMORY",
    "ConnectionThread",
    "DatabaseConfig",
    "DatabaseOpenError",
    "Job",
    "connector",
    "in_snapshot",
    "parse_database_url",
]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
"""A storage job: runs whole on one connection's thread."""

MEMORY = ":memory:"

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class DatabaseOpenError(Exception):
    """The database cannot be opened or is not one this server may use; nothing was written."""


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the database lives and how connections to it are set up."""

    path: str
    """A file path, or ``":memory:"``."""
    readers: int = 4
    """Read-only connections in file mode (in memory mode everything shares one connection)."""
    busy_timeout_ms: int = 5000
    """How long a connection waits for a lock held by another process."""
    synchronous: str = "FULL"
    """``PRAGMA synchronous``: FULL syncs the WAL on every commit (survives power loss)."""
    max_page_count: int = 0
    """``PRAGMA max_page_count`` of the writer when > 0 (a size cap: writes past it are STORAGE_FULL);
    0 means no cap."""
    switch_interval: float = 0.0
    """``sys.setswitchinterval`` (seconds) once the database is open, when the interpreter's is longer.
    Each statement hands the GIL between the event loop and a connection thread; with CPython's
    default 5 ms a busy event loop keeps the connection thread waiting up to 5 ms per hand-over
    (measured: reads at 64 concurrent callers ran 3x slower). The server sets 0.0002 for its own
    process; the default 0 leaves an embedding application's interpreter alone."""

    @property
    def in_memory(self) -> bool:
        """Whether the database lives in memory (one connection, gone with the process)."""
        return self.path == MEMORY

    def pragmas(self, *, writer: bool) -> list[tuple[str, str]]:
        """The pragmas every connection gets, validated by name and value in one place."""
        synchronous = self.synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {self.synchronous!r}")
        if self.busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be >= 0")
        if self.max_page_count < 0:
            raise ValueError("max_page_count must be >= 0")
        pragmas = [
            ("busy_timeout", str(int(self.busy_timeout_ms))),
            ("foreign_keys", "ON"),
            ("temp_store", "MEMORY"),
        ]
        if writer:
            pragmas.append(("synchronous", synchronous))
            # Checkpoints run on their own connection (``Checkpointer``), not inside the writer's
            # commits: at a million workflows an automatic checkpoint stalled the writer for most
            # of a second (p99 of creates 900 ms -> 100 ms without it).
            pragmas.append(("wal_autocheckpoint", "0"))
            if self.max_page_count > 0:
                pragmas.append(("max_page_count", str(int(self.max_page_count))))
        return pragmas


_MEMORY_FORMS = (MEMORY, "sqlite::memory:", "sqlite://:memory:")


def is_sqlite_url(url: str) -> bool:
    """True for the database strings ``parse_database_url`` reads (it may still refuse a malformed one)."""
    return url in _MEMORY_FORMS or url.startswith("sqlite://")


def parse_database_url(url: str) -> str:
    """The path behind a database string: ``:memory:``, ``sqlite:///abs.db`` or ``sqlite://rel.db``.

    A ``sqlite://`` string takes no query parameters and no fragment: ``?mode=ro`` would otherwise
    be read as part of the file name or dropped, and the file served read-write all the same.
    """
    if url in _MEMORY_FORMS:
        return MEMORY
    if not is_sqlite_url(url):
        raise ValueError(
            f"unsupported database string {url!r}: use ':memory:', 'sqlite:///abs/path.db' "
            "or 'sqlite://relative/path.db'"
        )
    path = url[len("sqlite://") :]
    cut = min((path.index(mark) for mark in "?#" if mark in path), default=-1)
    if cut >= 0:
        what = "query parameters" if path[cut] == "?" else "a fragment"
        raise ValueError(
            f"database string {url!r} has {what} ({path[cut:]!r}): a sqlite:// string takes none, "
            "only the path of the file"
        )
    if not path or path == "/":
        raise ValueError(f"database string {url!r} names no file")
    return path


def connector(
    config: DatabaseConfig,
    *,
    writer: bool,
    vet: Callable[[sqlite3.Connection, str], None] | None = None,
) -> Callable[[], sqlite3.Connection]:
    """A function that opens one connection to ``config.path`` with its pragmas.

    Writers (the group-committing writer and the checkpointer) open the file read-write and switch
    it to WAL; readers open it read-only. In memory there is one connection, the writer. ``vet``
    (given the connection and ``config.path``) runs after the connection's own settings and before
    anything is written to the file (the WAL switch is a write): it raises ``DatabaseOpenError`` to
    refuse a file not ours to change.
    """
    path = config.path

    def connect() -> sqlite3.Connection:
        if path == MEMORY:
            conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        elif writer:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        else:
            uri = "file:" + urllib.parse.quote(os.path.realpath(path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            for name, value in config.pragmas(writer=writer):
                conn.execute(f"PRAGMA {name} = {value}")  # settings of this connection, not of the file
            if vet is not None:
                vet(conn, path)
            if writer and path != MEMORY:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise DatabaseOpenError(f"{path}: could not switch to WAL journal mode (got {mode})")
        except BaseException:
            conn.close()
            raise
        return conn

    return connect


def read_in_snapshot(conn: sqlite3.Connection, job: Job[T]) -> T:
    """Run ``job`` inside one read transaction: every statement sees the same snapshot."""
    conn.execute("BEGIN")
    try:
        return job(conn)
    finally:
        conn.execute("COMMIT")


def in_snapshot(job: Job[T]) -> Job[T]:
    """``job`` as ``read_in_snapshot`` runs it, for a connection given later."""
    return lambda conn: read_in_snapshot(conn, job)


_Item = tuple[Callable[[], Any], asyncio.Future[Any]]


class ConnectionThread:
    """One SQLite connection on a thread of its own, running whole jobs there in arrival order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, connect: Callable[[], sqlite3.Connection], name: str) -> ConnectionThread:
        """Start the thread and open the connection on it (``connect``'s failure is raised here)."""
        thread = cls(name)
        thread._thread.start()
        try:
            thread._conn = await thread._submit(connect)
        except BaseException:
            await thread._stop()
            raise
        return thread

    def run(self, job: Job[T]) -> asyncio.Future[T]:
        """Run ``job`` with the connection on its thread: a future of its result or its exception.
        (A plain function: a coroutine around the future cost a frame per hand-over.)"""
        conn = self._conn
        if conn is None:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            future.set_exception(sqlite3.ProgrammingError("the connection is closed"))
            return future
        return self._submit(functools.partial(job, conn))

    async def close(self) -> None:
        """Close the connection (after the jobs already queued) and stop the thread."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._submit(conn.close)
        finally:
            await self._stop()

    def _submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((call, future))
        return future

    async def _stop(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            call, future = item
            try:
                result = call()
            except BaseException as error:  # noqa: BLE001 - every failure goes back to its caller
                _report(future, _fail, error)
            else:
                _report(future, _succeed, result)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _report(future: asyncio.Future[Any], settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    # try/except rather than contextlib.suppress: this runs once per job, and the context manager
    # is an object and two calls each time.
    try:
        future.get_loop().call_soon_threadsafe(settle, future, value)
    except RuntimeError:
        return  # a closed event loop: nobody waits for the answer any more
