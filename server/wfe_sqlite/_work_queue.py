"""The durable work queues of one SQLite file (``WorkQueues``) and the cross-process change watch.

Waiting dequeues are served by a ``LongPoll`` (its dispatchers hand out items to every waiter of
a queue in one write job). Nothing polls the queue tables: this process's commits notify the
dispatcher right away; other processes' commits are noticed every ``WATCH_INTERVAL`` seconds by the
writer connection's ``PRAGMA data_version``, which changes with other connections' commits only (read
in each group commit under load, between commits when idle), and before a dispatcher takes a write
job it looks on the event loop (an index probe) whether its queue has items at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TypeVar

from wfe_client.timeutil import to_micros, utc_now

from ._cluster_api import Handout, LeaseAsk
from ._database import Database
from ._locks_store import give_back, hand_out
from ._long_poll import LongPoll
from ._queue_store import QUEUES, WorkEffects, enqueue, has_waiting

__all__ = ["WATCH_INTERVAL", "WorkQueues"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_INTERVAL = 0.02
"""Seconds between two looks at the writer's ``PRAGMA data_version`` (other processes' commits)."""


def now_micros() -> int:
    return to_micros(utc_now())


class WorkQueues:
    """Queue and dequeue on the durable queues of one database; waiting dequeues are served on commit."""

    def __init__(self, db: Database, written: Callable[[WorkEffects], None]) -> None:
        self._db = db
        self._written = written
        self._poll = LongPoll(self._take, self._put_back, name="wfe-sqlite", may_have_items=self._may_have_items)
        self._probe: sqlite3.Connection | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._on_change: Callable[[], None] | None = None

    # -- the API ---------------------------------------------------------------------------------

    async def queue(self, queue: str, item_id: str) -> bool:
        """Append ``item_id`` to ``queue``; False when it was already waiting there."""
        effects = WorkEffects()
        queued = await self._db.write(lambda conn: enqueue(conn, queue, item_id, now_micros(), effects))
        self._written(effects)
        return queued

    async def dequeue(self, queue: str, wait: float = 0.0, ended: asyncio.Future[None] | None = None) -> str | None:
        """The oldest waiting item of ``queue``, waiting up to ``wait`` seconds for one (or until
        ``ended`` is done); None if none came."""
        handout = await self._poll.dequeue(queue, wait, None, ended)
        return None if handout is None else handout.item_id

    async def dequeue_leased(
        self, queue: str, wait: float, ask: LeaseAsk, ended: asyncio.Future[None] | None = None
    ) -> Handout | None:
        """The oldest waiting item of ``queue`` whose leases ``ask`` takes, waiting up to ``wait``
        seconds (or until ``ended`` is done)."""
        return await self._poll.dequeue(queue, wait, ask, ended)

    def notify(self, queue: str) -> None:
        """Items may have arrived in ``queue``: let its dispatcher look (when someone waits)."""
        self._poll.notify(queue)

    def leases_freed(self) -> None:
        """Leases were released: waiters passed over for them may be served now."""
        self._poll.notify_all()

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
        if self._watch_task is None and not self._db.config.in_memory and not self._poll.closed:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="wfe-sqlite-queue-watch")

    def stop_waiting(self) -> None:
        """End every waiting dequeue (they return None) and make later ones return at once."""
        self._poll.stop_waiting()

    async def close(self) -> None:
        self._poll.stop_waiting()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self._poll.close()
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # -- inside ----------------------------------------------------------------------------------

    async def _take(self, queue: str, asks: Sequence[LeaseAsk | None]) -> list[Handout | None]:
        effects = WorkEffects()
        results = await self._db.write(lambda conn: hand_out(conn, queue, asks, now_micros(), effects))
        self._written(effects)
        return results

    async def _put_back(self, queue: str, handouts: Sequence[Handout]) -> None:
        effects = WorkEffects()
        await self._db.write(lambda conn: give_back(conn, queue, handouts, effects))
        self._written(effects)
        self.leases_freed()

    def _probe_connection(self) -> sqlite3.Connection | None:
        if self._probe is None and not self._db.config.in_memory and not self._poll.closed:
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

    async def _watch(self) -> None:
        last: int | None = None
        while not self._poll.closed:
            try:
                version: int | None = await self._db.data_version()
            except Exception as error:  # noqa: BLE001 - keep watching; the sweep covers a missed change
                LOG.debug("data_version read failed: %s", error)
                version = None
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
