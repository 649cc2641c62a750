"""The one writer: every write job goes through it, and concurrent jobs share one commit.

The writer takes every job that is waiting, runs them in one transaction, each inside its own
savepoint (so one job's failure undoes only that job; a job of one write statement needs none,
SQLite undoing a failed statement itself), commits once, then answers all of them (group commit).

The writer also tells other processes' commits from its own: its connection's ``PRAGMA
data_version`` changes only with commits of other connections (``data_version``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wfe_client.errors import StorageUnavailable, WfeError

from ._connection import ConnectionThread, Job
from ._sqlite_errors import translate

__all__ = ["MAX_BATCH", "GroupCommitWriter"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 256
"""Most write jobs committed together in one transaction."""

_Pending = tuple[Job[Any], asyncio.Future[Any], bool, bool]
"""A job, the future of its caller, whether it runs outside the transaction, and whether it needs
a savepoint of its own in a batch."""


def run_batch(
    conn: sqlite3.Connection, jobs: list[tuple[Job[Any], bool]], watched: bool = False
) -> tuple[list[tuple[bool, Any]], int | None]:
    """Run jobs in one transaction, each in a savepoint; commit once. Runs on the writer's thread.
    A lone job needs no savepoint: its failure rolls the transaction back. Nor does a job given
    with False (``GroupCommitWriter.write``'s ``savepoint``): it writes with one statement at most,
    and SQLite undoes a failed statement by itself (two statements per job saved, ~4 us).

    Returns the outcomes and, when ``watched``, the connection's ``data_version`` as the transaction
    began (else None).
    """
    outcomes: list[tuple[bool, Any]] = []
    execute = conn.execute
    execute("BEGIN IMMEDIATE")
    try:
        version = _data_version(conn) if watched else None
        if len(jobs) == 1:
            try:
                result = jobs[0][0](conn)
            except Exception as error:
                if not conn.in_transaction:
                    raise  # SQLite rolled it back itself (disk full, I/O error): as below
                execute("ROLLBACK")
                return [(False, error)], version
            execute("COMMIT")
            return [(True, result)], version
        for job, savepoint in jobs:
            if savepoint:
                execute("SAVEPOINT job")
            try:
                result = job(conn)
            except Exception as error:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error): every
                    # job of this batch is undone, so every caller gets this error.
                    raise
                if savepoint:
                    execute("ROLLBACK TO job")
                    execute("RELEASE job")
                outcomes.append((False, error))
            else:
                if savepoint:
                    execute("RELEASE job")
                outcomes.append((True, result))
        execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            execute("ROLLBACK")
        raise
    return outcomes, version


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _run_jobs(
    conn: sqlite3.Connection, batch: list[_Pending], watched: bool
) -> tuple[list[tuple[bool, Any]], tuple[list[tuple[bool, Any]], int | None] | Exception | None]:
    """A batch on the writer's thread: the jobs outside the transaction first, each on its own (their
    outcomes), then the others in one group commit (``run_batch``'s answer, its failure, or None
    when there are none)."""
    outside: list[tuple[bool, Any]] = []
    inside: list[tuple[Job[Any], bool]] = []
    for job, _, alone, savepoint in batch:
        if not alone:
            inside.append((job, savepoint))
            continue
        try:
            outside.append((True, job(conn)))
        except Exception as error:  # noqa: BLE001 - the caller gets its own failure
            outside.append((False, error))
    if not inside:
        return outside, None
    try:
        return outside, run_batch(conn, inside, watched)
    except Exception as error:  # noqa: BLE001 - the commit failed: every job of it failed
        return outside, error


class GroupCommitWriter:
    """Runs write jobs on the one writer connection, committing whatever waits together.

    Driven by callbacks on the event loop, not by a task: the first job queued while the writer is
    idle schedules a batch (``call_soon``, so that every caller ready in the same turn of the loop
    joins it); a batch's end answers its callers and starts the next batch with whatever queued
    meanwhile, or leaves the writer idle. (A task waiting on a queue cost two task steps per batch.)
    """

    def __init__(self, connection: ConnectionThread) -> None:
        self.connection = connection
        self._pending: collections.deque[_Pending] = collections.deque()
        self._busy = False
        """A batch is scheduled or running (then a job queued is taken by a later batch)."""
        self._started = False
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        """What ``close`` waits for: the last batch's end."""
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
        self._started = True
        if self._pending:
            self._schedule()

    def write(self, job: Job[T], *, savepoint: bool = True) -> Coroutine[Any, Any, T]:
        """Run ``job`` in the next group commit; its own failure undoes only its own changes.

        ``savepoint=False`` is for a job that writes with one statement at most (it may read before
        it, and raise after it only when that statement changed nothing): SQLite undoes a failed
        statement by itself, so the job needs no savepoint of its own in a batch.
        """
        return self._enqueue(job, False, savepoint)

    def run_outside(self, job: Job[T]) -> Coroutine[Any, Any, T]:
        """Run ``job`` on the writer between group commits, outside any transaction (memory-mode reads)."""
        return self._enqueue(job, True, False)

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
        if self._busy:
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle = idle
            await idle

    async def _enqueue(self, job: Job[T], outside: bool, savepoint: bool) -> T:
        if self._closed:
            raise StorageUnavailable("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future, outside, savepoint))
        if self._started:
            self._schedule()
        return await future

    def _schedule(self) -> None:
        """Start a batch in the next turn of the loop, unless one is scheduled or running (its end
        starts the next one)."""
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._next_batch)

    def _next_batch(self) -> None:
        """Send whatever waits (up to ``MAX_BATCH`` jobs) to the writer's thread, or go idle."""
        pending = self._pending
        if not pending:
            self._busy = False
            idle, self._idle = self._idle, None
            if idle is not None and not idle.done():
                idle.set_result(None)
            return
        batch = [pending.popleft() for _ in range(min(len(pending), MAX_BATCH))]
        watched = self._watched
        running = self.connection.run(functools.partial(_run_jobs, batch=batch, watched=watched))
        running.add_done_callback(functools.partial(self._finish, batch))

    def _finish(self, batch: list[_Pending], running: asyncio.Future[Any]) -> None:
        try:
            self._answer(batch, running)
        finally:
            self._next_batch()

    def _answer(self, batch: list[_Pending], running: asyncio.Future[Any]) -> None:
        """Settle the callers of a batch that ran (``_run_jobs``' answer, or its failure)."""
        failure: BaseException | None = None
        error = running.exception()
        if error is not None:  # the thread failed the batch as a whole (a closed connection)
            failure = translate(error)
            if not isinstance(failure, WfeError):
                LOG.error("write batch of %d failed: %r", len(batch), error)
            for _, future, _, _ in batch:
                _settle(future, False, failure)
            return
        outside, inside = running.result()
        outcomes: list[tuple[bool, Any]] = []
        if isinstance(inside, Exception):
            failure = translate(inside)
            if not isinstance(failure, WfeError):
                LOG.error("write batch of %d failed: %r", len(batch) - len(outside), inside)
        elif inside is not None:
            outcomes, self._version = inside
            self.batches += 1
            self.batched_jobs += len(outcomes)
            if self.on_batch is not None:
                self.on_batch(len(outcomes))
        alone, together = iter(outside), iter(outcomes)
        for _, future, is_outside, _ in batch:
            if is_outside:
                ok, value = next(alone)
            elif failure is not None:
                _settle(future, False, failure)
                continue
            else:
                ok, value = next(together)
            _settle(future, ok, value if ok else translate(value))


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
