"""SQLite connections: database strings, pragmas, one group-committing writer and a reader pool.

Every write job goes through a single writer connection. The writer takes every job that is
waiting, runs them in one transaction, each inside its own savepoint (so one job's failure undoes
only that job), commits once, then answers all of them: concurrent requests share one commit
(group commit). Read jobs run on separate read-only connections and never wait for the writer
(WAL). A job is a plain function of a ``sqlite3.Connection`` that runs whole on the connection's
thread: one thread hop per operation, not one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite

from wfe_client import InvalidArgument, StorageFull, StorageUnavailable, WfeError

__all__ = [
    "DatabaseConfig",
    "Database",
    "DatabaseOpenError",
    "parse_database_url",
    "classify_sqlite_error",
    "MEMORY",
]

LOG = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

MEMORY = ":memory:"
MAX_BATCH = 256
"""Most write jobs committed together in one transaction."""

CHECKPOINT_INTERVAL = 0.5
"""Seconds between background WAL checkpoints (skipped when nothing was written)."""

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


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
    max_page_count: int = field(default_factory=lambda: int(os.environ.get("WFE_SQLITE_MAX_PAGE_COUNT") or 0))
    """``PRAGMA max_page_count`` of the writer when > 0 (a size cap: writes past it are STORAGE_FULL).
    Read from the environment variable ``WFE_SQLITE_MAX_PAGE_COUNT``; 0 (default) means no cap."""
    switch_interval: float = 0.0
    """``sys.setswitchinterval`` (seconds) once the database is open, when the interpreter's is longer.
    Each statement hands the GIL between the event loop and a connection thread; with CPython's
    default 5 ms a busy event loop keeps the connection thread waiting up to 5 ms per hand-over
    (measured: reads at 64 concurrent callers ran 3x slower). The server sets 0.0002 for its own
    process; the default 0 leaves an embedding application's interpreter alone."""

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY

    def pragmas(self, *, writer: bool) -> list[tuple[str, str]]:
        """The pragmas every connection gets, validated by name and value in one place."""
        synchronous = self.synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {self.synchronous!r}")
        if self.busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be >= 0")
        pragmas = [
            ("busy_timeout", str(int(self.busy_timeout_ms))),
            ("foreign_keys", "ON"),
            ("temp_store", "MEMORY"),
        ]
        if writer:
            pragmas.append(("synchronous", synchronous))
            # Checkpoints run on their own connection (Database._checkpoint_loop), not inside the
            # writer's commits: at a million workflows an automatic checkpoint stalled the writer
            # for most of a second (p99 of creates 900 ms -> 100 ms without it).
            pragmas.append(("wal_autocheckpoint", "0"))
        if writer and self.max_page_count > 0:
            pragmas.append(("max_page_count", str(int(self.max_page_count))))
        return pragmas


def parse_database_url(url: str) -> str:
    """The path behind a database string: ``:memory:``, ``sqlite:///abs.db`` or ``sqlite://rel.db``."""
    if url in (MEMORY, "sqlite::memory:", "sqlite://:memory:"):
        return MEMORY
    if not url.startswith("sqlite://"):
        raise ValueError(
            f"unsupported database string {url!r}: use ':memory:', 'sqlite:///abs/path.db' "
            "or 'sqlite://relative/path.db'"
        )
    path = url[len("sqlite://") :]
    path = path.split("?", 1)[0]
    if not path or path == "/":
        raise ValueError(f"database string {url!r} names no file")
    return path


def classify_sqlite_error(error: sqlite3.Error) -> WfeError | None:
    """The documented error kind of a SQLite failure, or None when it is a programming error."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return StorageFull("database or disk is full; nothing was written")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageUnavailable("database is locked by another process; retry later")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PROTOCOL")):
        return StorageUnavailable(f"database I/O failed ({name}); retry later")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StorageUnavailable(f"database file is damaged ({name})")
    if name.startswith("SQLITE_TOOBIG"):
        return InvalidArgument("a value is larger than the database accepts")
    return None


def _translate(error: BaseException) -> BaseException:
    if isinstance(error, sqlite3.Error) and not isinstance(error, sqlite3.IntegrityError):
        kind = classify_sqlite_error(error)
        if kind is not None:
            return kind
    return error


def _connect(path: str, config: DatabaseConfig, *, writer: bool) -> Callable[[], sqlite3.Connection]:
    def connector() -> sqlite3.Connection:
        if path == MEMORY:
            conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        elif writer:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        else:
            uri = "file:" + urllib.parse.quote(os.path.realpath(path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            for name, value in config.pragmas(writer=writer):
                conn.execute(f"PRAGMA {name} = {value}")
            if writer and path != MEMORY:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise DatabaseOpenError(f"{path}: could not switch to WAL journal mode (got {mode})")
        except BaseException:
            conn.close()
            raise
        return conn

    return connector


class _Connection:
    """One aiosqlite connection (one thread) running whole jobs on its thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, connector: Callable[[], sqlite3.Connection]) -> _Connection:
        conn = aiosqlite.Connection(connector, iter_chunk_size=64)
        try:
            await conn
        except BaseException:
            # aiosqlite stops its thread without waiting for it: wait here, or the thread reports
            # to a closed event loop ("Event loop is closed" tracebacks after a failed start-up).
            await asyncio.to_thread(conn._thread.join, 5)
            raise
        return cls(conn)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        # aiosqlite runs functions on its connection thread through ``_execute`` (its own
        # backup() and iterdump() do the same); the job gets the sqlite3 connection itself.
        raw = self._conn._conn
        return await self._conn._execute(job, raw)

    async def close(self) -> None:
        await self._conn.close()


def _run_batch(
    conn: sqlite3.Connection, jobs: list[Job[Any]]
) -> list[tuple[bool, Any]]:
    """Run jobs in one transaction, each in a savepoint; commit once. Runs on the writer thread."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                result = job(conn)
            except Exception as error:  # noqa: BLE001 - every failure goes back to its caller
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error): every
                    # job of this batch is undone, so every caller gets this error.
                    raise
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, error))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


class Database:
    """The writer connection, the reader pool, and the group-commit loop between them."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._writer: _Connection | None = None
        self._readers: list[_Connection] = []
        self._point: sqlite3.Connection | None = None
        self._idle: asyncio.Queue[_Connection] | None = None
        self._pending: asyncio.Queue[tuple[Job[Any], asyncio.Future[Any]] | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._checkpointer: _Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._closed = False
        self.checkpoints = 0
        """Background WAL checkpoints run (for tests and metrics)."""
        self.batches = 0
        """Transactions committed by the writer (for metrics)."""
        self.batched_jobs = 0
        """Write jobs committed by the writer (for metrics)."""
        self.on_batch: Callable[[int], None] | None = None
        """Called with the size of each committed batch (for metrics)."""

    @classmethod
    async def open(cls, config: DatabaseConfig, prepare: Job[None]) -> Database:
        """Open the writer, run ``prepare`` (schema set-up) on it, then open the readers."""
        database = cls(config)
        if 0 < config.switch_interval < sys.getswitchinterval():
            sys.setswitchinterval(config.switch_interval)
        path = config.path
        if not config.in_memory:
            _check_file(path)
        try:
            database._writer = await _Connection.open(_connect(path, config, writer=True))
            await database._writer.run(prepare)
            if not config.in_memory:
                for _ in range(max(1, config.readers)):
                    database._readers.append(
                        await _Connection.open(_connect(path, config, writer=False))
                    )
                database._idle = asyncio.Queue()
                for reader in database._readers:
                    database._idle.put_nowait(reader)
                database._point = _connect(path, config, writer=False)()
                database._point.execute("PRAGMA busy_timeout = 0")
                database._checkpointer = await _Connection.open(_connect(path, config, writer=True))
        except sqlite3.DatabaseError as error:
            await database._close_connections()
            raise DatabaseOpenError(f"{path}: cannot open the database: {error}") from error
        except BaseException:
            await database._close_connections()
            raise
        loop = asyncio.get_running_loop()
        database._writer_task = loop.create_task(database._write_loop(), name="wfe-sqlite-writer")
        if database._checkpointer is not None:
            database._checkpoint_task = loop.create_task(database._checkpoint_loop(), name="wfe-sqlite-checkpointer")
        return database

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file in the background, off the writer's path.

        A PASSIVE checkpoint takes no lock that the writer or readers wait for; once it has copied
        every frame, the writer's next transaction starts the WAL over, so the WAL stays about as
        large as the writes of one interval.
        """
        assert self._checkpointer is not None
        seen = self.batches
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            if self.batches == seen:
                continue
            seen = self.batches
            try:
                await self._checkpointer.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                self.checkpoints += 1
            except sqlite3.Error as error:
                LOG.warning("background WAL checkpoint failed (will retry): %s", error)

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` in the next group commit; its own failure undoes only its own changes."""
        if self._closed:
            raise StorageUnavailable("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((job, future))
        return await future

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` on a read-only connection, inside one read transaction (a snapshot)."""
        if self._closed:
            raise StorageUnavailable("the store is closed")
        if self._idle is None:
            # In memory there is only the writer connection: run the read there, between group
            # commits and outside them (it is not a write and is not counted as a batch).
            return await self.write(_Outside(_snapshot(job)))  # type: ignore[arg-type]
        reader = await self._idle.get()
        try:
            return await reader.run(_snapshot(job))
        except sqlite3.Error as error:
            raise _translate(error) from error
        finally:
            self._idle.put_nowait(reader)

    async def read_point(self, job: Job[T]) -> T:
        """Run a short ``job`` (an index lookup of one record) right on the event loop thread.

        A lookup by key costs tens of microseconds, less than handing it to a connection thread and
        back; the connection never waits (busy timeout 0): if SQLite answers BUSY (a WAL reset in
        progress) the job goes to the reader pool like any other read.
        """
        point = self._point
        if point is None or self._closed:
            return await self.read(job)
        try:
            return _snapshot(job)(point)
        except sqlite3.OperationalError as error:
            if point.in_transaction:
                point.execute("ROLLBACK")
            if (getattr(error, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                return await self.read(job)
            raise _translate(error) from error
        except sqlite3.Error as error:
            if point.in_transaction:
                point.execute("ROLLBACK")
            raise _translate(error) from error

    async def set_trace_callback(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with every SQL statement any connection runs (debugging, plan checks)."""
        connections = [c for c in (self._writer, *self._readers) if c is not None]
        for connection in connections:
            await connection.run(lambda conn: conn.set_trace_callback(callback))
        if self._point is not None:
            self._point.set_trace_callback(callback)

    async def _write_loop(self) -> None:
        assert self._writer is not None
        while True:
            item = await self._pending.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH and not self._pending.empty():
                nxt = self._pending.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[tuple[Job[Any], asyncio.Future[Any]]]) -> None:
        assert self._writer is not None
        outside = [entry for entry in batch if isinstance(entry[0], _Outside)]
        inside = [entry for entry in batch if not isinstance(entry[0], _Outside)]
        for job, future in outside:
            try:
                result = await self._writer.run(job.job)  # type: ignore[attr-defined]
            except BaseException as error:  # noqa: BLE001
                _settle(future, False, _translate(error))
            else:
                _settle(future, True, result)
        if not inside:
            return
        jobs = [job for job, _ in inside]
        try:
            outcomes = await self._writer.run(lambda conn: _run_batch(conn, jobs))
        except BaseException as error:  # noqa: BLE001 - the commit failed: every job failed
            failure = _translate(error)
            if not isinstance(failure, WfeError):
                LOG.error("write batch of %d failed: %r", len(jobs), error)
            for _, future in inside:
                _settle(future, False, failure)
            return
        self.batches += 1
        self.batched_jobs += len(jobs)
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for (_, future), (ok, value) in zip(inside, outcomes):
            _settle(future, ok, value if ok else _translate(value))

    async def close(self) -> None:
        """Finish queued writes, then close every connection (checkpointing the WAL)."""
        if self._closed:
            return
        self._closed = True
        if self._writer_task is not None:
            self._pending.put_nowait(None)
            await self._writer_task
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        if self._point is not None:
            self._point.close()
            self._point = None
        for reader in self._readers:
            await reader.close()
        self._readers.clear()
        if self._writer is not None:
            if not self.config.in_memory:
                try:
                    await self._writer.run(
                        lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    )
                except sqlite3.Error as error:
                    LOG.warning("WAL checkpoint at close failed: %s", error)
            await self._writer.close()
            self._writer = None


class _Outside:
    """A write-loop job that runs on the writer outside any transaction (memory-mode reads)."""

    def __init__(self, job: Job[Any]) -> None:
        self.job = job

    def __call__(self, conn: sqlite3.Connection) -> Any:  # pragma: no cover - never batched
        return self.job(conn)


def _snapshot(job: Job[T]) -> Job[T]:
    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return job(conn)
        finally:
            conn.execute("COMMIT")

    return run


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _check_file(path: str) -> None:
    """Refuse files this server must not touch, before SQLite sees them."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DatabaseOpenError(f"{path}: directory {directory} does not exist")
    if os.path.exists(path):
        if os.path.isdir(path):
            raise DatabaseOpenError(f"{path}: is a directory, not a database file")
        if not os.access(path, os.R_OK):
            raise DatabaseOpenError(f"{path}: permission denied (cannot read the database file)")
        if not os.access(path, os.W_OK):
            raise DatabaseOpenError(f"{path}: the database file is read-only")
        size = os.path.getsize(path)
        if size > 0:
            with open(path, "rb") as handle:
                header = handle.read(16)
            if header != b"SQLite format 3\x00":
                raise DatabaseOpenError(f"{path}: not a SQLite database (refusing to touch it)")
    elif not os.access(directory, os.W_OK):
        raise DatabaseOpenError(f"{path}: cannot create the database (directory {directory} is not writable)")
