"""The durable work queues with long-poll dequeue (``WorkQueues``) and the cross-process change watch.

A waiting dequeue is a future in its queue's line. One dispatcher per queue serves the line in
order: when told that items may have arrived (a commit in this process queued some, a new waiter
came, or another process changed the file) it takes as many items as there are waiters in one
write job and hands one to each. An item whose waiter left meanwhile goes back to the head of the
queue. Nothing polls the queue tables: this process's commits notify the dispatcher right away;
other processes' commits are noticed by ``PRAGMA data_version`` (a few microseconds, read from the
WAL index) every ``WATCH_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wfe_client.timeutil import to_micros, utc_now

from ._database import Database
from ._queue_store import QUEUES, WorkEffects, dequeue, enqueue, enqueue_front, has_waiting

__all__ = ["WATCH_INTERVAL", "WorkQueues"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_INTERVAL = 0.02
"""Seconds between two looks at ``PRAGMA data_version`` (commits of other processes on the file)."""


def now_micros() -> int:
    return to_micros(utc_now())


def _take(conn: sqlite3.Connection, queue: str, count: int) -> list[str]:
    return dequeue(conn, queue, count, now_micros())


def _settle_none(future: asyncio.Future[str | None]) -> None:
    if not future.done():
        future.set_result(None)


class _Line:
    """The waiting dequeues of one queue, first come first served, and its dispatcher's wake-up."""

    def __init__(self) -> None:
        self.waiters: collections.deque[asyncio.Future[str | None]] = collections.deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def live(self) -> int:
        """Drop waiters that gave up; how many still wait."""
        self.waiters = collections.deque(f for f in self.waiters if not f.done())
        return len(self.waiters)

    def hand(self, items: list[str]) -> list[str]:
        """Give one item to each waiter in order; the items nobody was left to take."""
        for index, item in enumerate(items):
            while self.waiters and self.waiters[0].done():
                self.waiters.popleft()
            if not self.waiters:
                return items[index:]
            self.waiters.popleft().set_result(item)
        return []


class WorkQueues:
    """Queue and dequeue on the durable queues of one database; waiting dequeues are served on commit."""

    def __init__(self, db: Database, written: Callable[[WorkEffects], None]) -> None:
        self._db = db
        self._written = written
        self._lines: dict[str, _Line] = {}
        self._probe: sqlite3.Connection | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._on_change: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- the API ---------------------------------------------------------------------------------

    async def queue(self, queue: str, item_id: str) -> bool:
        """Append ``item_id`` to ``queue``; False when it was already waiting there."""
        effects = WorkEffects()
        queued = await self._db.write(lambda conn: enqueue(conn, queue, item_id, now_micros(), effects))
        self._written(effects)
        return queued

    async def dequeue(self, queue: str, wait: float = 0.0) -> str | None:
        """The oldest waiting item of ``queue``, waiting up to ``wait`` seconds for one; None if none came."""
        if wait <= 0 or self._closed:
            items = await self._db.write(lambda conn: dequeue(conn, queue, 1, now_micros()))
            return items[0] if items else None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        line = self._line(queue)
        line.waiters.append(future)
        timer = loop.call_later(wait, _settle_none, future)
        line.wake.set()  # look now: an item may be waiting already
        try:
            return await future
        except asyncio.CancelledError:
            # The caller went away. If an item was handed to it in the meantime, it goes back.
            item = future.result() if future.done() and not future.cancelled() else None
            if item is not None:
                self._spawn(self._put_back(queue, [item]))
            raise
        finally:
            timer.cancel()

    def notify(self, queue: str) -> None:
        """Items may have arrived in ``queue``: let its dispatcher look (when someone waits)."""
        line = self._lines.get(queue)
        if line is not None and line.waiters:
            line.wake.set()

    def read_now(self, job: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run a short read (an index probe) on the watch connection; None in memory mode or on failure."""
        probe = self._probe_connection()
        if probe is None:
            return None
        try:
            return job(probe)
        except sqlite3.Error as error:
            LOG.debug("probe read failed: %s", error)
            if probe.in_transaction:
                probe.execute("ROLLBACK")
            return None

    def start_watching(self, on_change: Callable[[], None]) -> None:
        """Watch the file for commits of other processes; ``on_change`` is called after each one seen."""
        self._on_change = on_change
        if self._watch_task is None and not self._db.config.in_memory and not self._closed:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="wfe-sqlite-queue-watch")

    def stop_waiting(self) -> None:
        """End every waiting dequeue (they return None) and make later ones return at once."""
        self._closed = True
        for line in self._lines.values():
            for future in line.waiters:
                _settle_none(future)
            line.waiters.clear()

    async def close(self) -> None:
        self.stop_waiting()
        tasks = [t for t in (self._watch_task, *(line.task for line in self._lines.values())) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # -- inside ----------------------------------------------------------------------------------

    def _line(self, queue: str) -> _Line:
        line = self._lines.get(queue)
        if line is None:
            line = self._lines[queue] = _Line()
        if line.task is None or line.task.done():
            line.task = asyncio.get_running_loop().create_task(self._dispatch(queue, line), name=f"wfe-sqlite-{queue}")
        return line

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_back(self, queue: str, items: list[str]) -> None:
        effects = WorkEffects()
        try:
            await self._db.write(lambda conn: enqueue_front(conn, queue, items, effects))
        except Exception as error:  # noqa: BLE001 - the stranded-work job queues them again later
            LOG.warning("could not put %d handed-out items back into the %s queue: %s", len(items), queue, error)
            return
        self._written(effects)

    def _probe_connection(self) -> sqlite3.Connection | None:
        if self._probe is None and not self._db.config.in_memory and not self._closed:
            path = os.path.realpath(self._db.config.path)
            uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
            try:
                self._probe = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                self._probe.execute("PRAGMA busy_timeout = 0")
            except sqlite3.Error as error:
                LOG.warning("cannot open the queue watch connection: %s", error)
                return None
        return self._probe

    def _may_have_items(self, queue: str) -> bool:
        seen = self.read_now(lambda conn: has_waiting(conn, queue))
        return True if seen is None else seen

    async def _dispatch(self, queue: str, line: _Line) -> None:
        while not self._closed:
            await line.wake.wait()
            line.wake.clear()
            while not self._closed:
                count = line.live()
                if not count or not self._may_have_items(queue):
                    break
                try:
                    items = await self._db.write(functools.partial(_take, queue=queue, count=count))
                except Exception as error:  # noqa: BLE001 - keep serving; the waiters time out meanwhile
                    LOG.warning("dequeue from the %s queue failed (retrying): %s", queue, error)
                    await asyncio.sleep(0.1)
                    line.wake.set()
                    break
                leftovers = line.hand(items)
                if leftovers:
                    await self._put_back(queue, leftovers)
                if len(items) < count:
                    break

    async def _watch(self) -> None:
        last: int | None = None
        while not self._closed:
            version = self.read_now(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))
            if version is not None and version != last:
                if last is not None:
                    for queue in QUEUES:
                        self.notify(queue)
                    if self._on_change is not None:
                        try:
                            self._on_change()
                        except Exception:
                            LOG.exception("queue watch callback failed")
                last = version
            await asyncio.sleep(WATCH_INTERVAL)
