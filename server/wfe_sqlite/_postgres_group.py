"""``GroupWriter``: group commit across callers for writes on PostgreSQL.

Concurrent writes are gathered and run in ONE transaction on one pooled connection, so many callers
share one COMMIT (one WAL flush) instead of one each. While a batch is committing the next one
collects; an idle writer starts a batch at once (no timer). Every caller is answered only after the
COMMIT returned: nothing is acknowledged before it is durable.

Items of one kind that come one after another in a batch may be run together, in one statement, by
the ``Merge`` they were submitted with (creates of workflows and of events, persists: a batch of 30
creates took half the time and half of PostgreSQL's CPU per create, as one INSERT of 30 rows instead
of 30 statements). A merge may refuse (``MergeRefused``): then, as for an item's own error, the batch
runs again item by item.

Isolation of items: a batch first runs its items without savepoints (one round trip per item, or per
run of merged items). When
an item fails with an error of its own request (a unique violation, a revision conflict, a NUL
character...), that transaction is rolled back and the batch is run again with each item under a
SAVEPOINT (and each by its own job, none merged), so the failed item fails only its caller and the
others commit. A batch of one runs its
job without a transaction around it, as a lone write did before batching. A connection-level failure
fails the whole batch (``StorageUnavailable`` from the connection context).

Jobs hold no SQL of their own here: they are the storage module's callables on a connection, and
must leave no state behind them but the database's (a batch may run a job twice, the first run
rolled back). A job that answers a failed statement instead of raising must run that statement
under a savepoint of its own (``conn.transaction()``): otherwise the batch's transaction is left
aborted, and PostgreSQL answers its COMMIT by rolling back every item that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import asyncpg

T = TypeVar("T")

Job = Callable[[asyncpg.Connection], Awaitable[T]]
Merge = Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]
"""Runs the parts of several items (see ``GroupWriter.submit``) in one go; one result per part, in
their order, each what the item's own job would have returned."""
ItemError = Callable[[BaseException], "Exception | None"]
"""The error to give the caller when ``error`` belongs to one item's request; None when it is the
connection's (the whole batch fails)."""


class MergeRefused(Exception):
    """Raised by a ``Merge`` whose items must be run each by its own job (one of them would not be
    written as its job would write it): the batch is rolled back and run item by item."""


MAX_BATCH = 256
"""Items per transaction at most."""
CONCURRENCY = 1
"""Batches in flight at once (each on its own connection). 1: the next batch collects while one
commits. bench/pg_group.py at 64 callers measured no gain from 2 or 4 (every caller was in the one
batch already)."""


@dataclasses.dataclass
class _Item(Generic[T]):
    job: Job[T]
    future: asyncio.Future[T]
    merge: Merge | None = None
    part: Any = None


class GroupWriter:
    """Runs submitted jobs in shared transactions (see the module)."""

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
        item_error: ItemError,
        max_batch: int = MAX_BATCH,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._connection = connection
        self._item_error = item_error
        self._max_batch = max_batch
        self.concurrency = concurrency
        """Batches in flight at most (each on its own connection)."""
        self._pending: list[_Item[Any]] = []
        self._draining = 0
        """Drainers running: counted down in the same step as their last look at ``_pending``, so
        an item is never left behind by a drainer about to end."""
        self._drainers: set[asyncio.Task[None]] = set()  # references, so that tasks are not collected
        self.batches = 0
        """Transactions (or lone writes) run: items / batches is the grouping achieved."""
        self.items = 0
        self.merged = 0
        """Items run together with others by their ``Merge`` in transactions that committed."""

    async def submit(self, job: Job[T], merge: Merge | None = None, part: Any = None) -> T:
        """Run ``job`` in the next batch; its result once the batch committed, or its error.

        With ``merge``: when the items next to it in the batch were submitted with the same
        ``merge``, their ``part``s may be run by ``merge`` in one go instead of each by its job.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(job, future, merge, part))
        if self._draining < self.concurrency:
            self._draining += 1
            task = asyncio.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        # A drainer takes what is pending when it runs (callers of the same turn of the loop share its
        # batch), and again after each commit: what collected meanwhile.
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                batch = [item for item in batch if not item.future.done()]  # callers gone before the start
                if batch:
                    try:
                        await self._commit(batch)
                    except BaseException as error:  # a fault of this module: answer, do not strand callers
                        _fail_unanswered(batch, error)
                        raise
        finally:
            self._draining -= 1

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        outcomes: list[tuple[bool, Any]]
        try:
            async with self._connection() as conn:
                if len(batch) == 1:
                    outcomes = [await self._lone(conn, batch[0].job)]
                else:
                    found = await self._transaction(conn, batch, savepoints=False)
                    if found is None:
                        found = await self._transaction(conn, batch, savepoints=True)
                    assert found is not None
                    outcomes = found
        except Exception as error:  # noqa: BLE001 - the connection failed: every caller gets it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self.batches += 1
        self.items += len(batch)
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    async def _lone(self, conn: asyncpg.Connection, job: Job[Any]) -> tuple[bool, Any]:
        try:
            return True, await job(conn)
        except Exception as error:
            mine = self._item_error(error)
            if mine is None:
                raise
            return False, mine

    async def _transaction(
        self, conn: asyncpg.Connection, batch: list[_Item[Any]], *, savepoints: bool
    ) -> list[tuple[bool, Any]] | None:
        """The outcomes of the batch in one committed transaction; None (rolled back) when an item
        failed and ``savepoints`` is off."""
        transaction = conn.transaction()
        await transaction.start()
        outcomes: list[tuple[bool, Any]] = []
        merged = 0
        try:
            start = 0
            while start < len(batch):
                item = batch[start]
                end = start + 1
                if not savepoints and item.merge is not None:
                    while end < len(batch) and batch[end].merge is item.merge:
                        end += 1
                try:
                    if end - start > 1:
                        assert item.merge is not None
                        results = await item.merge(conn, [other.part for other in batch[start:end]])
                        outcomes.extend((True, result) for result in results)
                        merged += end - start
                    elif savepoints:
                        async with conn.transaction():
                            result = await item.job(conn)
                        outcomes.append((True, result))  # only once its savepoint is released
                    else:
                        outcomes.append((True, await item.job(conn)))
                except Exception as error:
                    mine = error if isinstance(error, MergeRefused) else self._item_error(error)
                    if mine is None:
                        raise
                    if not savepoints:
                        await transaction.rollback()
                        return None
                    outcomes.append((False, mine))
                start = end
        except BaseException:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            raise
        await transaction.commit()
        self.merged += merged
        return outcomes


def _fail_unanswered(batch: list[_Item[Any]], error: BaseException) -> None:
    for item in batch:
        if item.future.done():
            continue
        if isinstance(error, Exception):
            item.future.set_exception(error)
        else:
            item.future.cancel()
