"""The one writer: every write job goes through it, and concurrent jobs share one commit.

The writer takes every job that is waiting, runs them in one transaction, each inside its own
savepoint (so one job's failure undoes only that job), commits once, then answers all of them
(group commit).

The writer also tells other processes' commits from its own: its connection's ``PRAGMA
data_version`` changes only with commits of other connections (``data_version``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from wfe_client.errors import StorageUnavailable, WfeError

from ._connection import ConnectionThread, Job
from ._sqlite_errors import translate

__all__ = ["MAX_BATCH", "GroupCommitWriter"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 256
"""Most write jobs committed together in one transaction."""

_Pending = tuple[Job[Any], asyncio.Future[Any], bool]
"""A job, the future of its caller, and whether it runs outside the transaction."""


def run_batch(
    conn: sqlite3.Connection, jobs: list[Job[Any]], watched: bool = False
) -> tuple[list[tuple[bool, Any]], int | None]:
    """Run jobs in one transaction, each in a savepoint; commit once. Runs on the writer's thread.
    A lone job needs no savepoint: its failure rolls the transaction back.

    Returns the outcomes and, when ``watched``, the connection's ``data_version`` as the transaction
    began (else None).
    """
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _data_version(conn) if watched else None
        if len(jobs) == 1:
            try:
                result = jobs[0](conn)
            except Exception as error:
                if not conn.in_transaction:
                    raise  # SQLite rolled it back itself (disk full, I/O error): as below
                conn.execute("ROLLBACK")
                return [(False, error)], version
            conn.execute("COMMIT")
            return [(True, result)], version
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                result = job(conn)
            except Exception as error:
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
    return outcomes, version


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


class GroupCommitWriter:
    """Runs write jobs on the one writer connection, committing whatever waits together."""

    def __init__(self, connection: ConnectionThread) -> None:
        self.connection = connection
        self._pending: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        """Transactions committed (for the checkpointer and metrics)."""
        self.batched_jobs = 0
        """Write jobs committed (for metrics)."""
        self.on_batch: Callable[[int], None] | None = None
        """Called with the size of each committed batch (for metrics)."""
        self._version: int | None = None
        """``PRAGMA data_version`` as the last batch began, until ``data_version`` hands it out."""
        self._watched = False
        """Whether anyone reads ``data_version`` (then each batch takes it along)."""

    def start(self) -> None:
        """Start taking jobs (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="wfe-sqlite-writer")

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` in the next group commit; its own failure undoes only its own changes."""
        return await self._enqueue(job, outside=False)

    async def run_outside(self, job: Job[T]) -> T:
        """Run ``job`` on the writer between group commits, outside any transaction (memory-mode reads)."""
        return await self._enqueue(job, outside=True)

    async def data_version(self) -> int:
        """The writer connection's ``PRAGMA data_version``: it changes only when another connection
        (another process) commits, never with this writer's own commits.

        Read as the last batch began when one ran since the previous call (no extra work under
        load); otherwise read now, between batches.
        """
        self._watched = True
        version, self._version = self._version, None
        if version is not None:
            return version
        return await self.run_outside(_data_version)

    async def close(self) -> None:
        """Finish the jobs already queued, then stop taking jobs."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._pending.put_nowait(None)
            await self._task

    async def _enqueue(self, job: Job[T], *, outside: bool) -> T:
        if self._closed:
            raise StorageUnavailable("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((job, future, outside))
        return await future

    async def _loop(self) -> None:
        while True:
            item = await self._pending.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH and not self._pending.empty():
                following = self._pending.get_nowait()
                if following is None:
                    stop = True
                    break
                batch.append(following)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        inside = []
        for job, future, outside in batch:
            if not outside:
                inside.append((job, future))
                continue
            try:
                result = await self.connection.run(job)
            except Exception as error:  # noqa: BLE001 - the caller gets its own failure
                _settle(future, False, translate(error))
            else:
                _settle(future, True, result)
        if not inside:
            return
        jobs = [job for job, _ in inside]
        try:
            watched = self._watched
            outcomes, self._version = await self.connection.run(lambda conn: run_batch(conn, jobs, watched))
        except Exception as error:  # noqa: BLE001 - the commit failed: every job failed
            failure = translate(error)
            if not isinstance(failure, WfeError):
                LOG.error("write batch of %d failed: %r", len(jobs), error)
            for _, future in inside:
                _settle(future, False, failure)
            return
        self.batches += 1
        self.batched_jobs += len(jobs)
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for (_, future), (ok, value) in zip(inside, outcomes, strict=True):
            _settle(future, ok, value if ok else translate(value))


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
