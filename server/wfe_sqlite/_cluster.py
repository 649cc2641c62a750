"""``Cluster``: what a cluster of workflow hosts needs besides persistence, on one database.

Leases (``_locks_store``), the durable work queues with long-poll dequeue (``WorkQueues``), the
due timer (``DueTimer``), the stranded-work job (``RequeueJob``) and the lifecycle fan-out
(``LifecycleHub``). ``SqlitePersistenceProvider`` owns one; its writes report what they queued
(``written``) so waiting consumers wake right after the commit. The background parts run once
``start`` is called: by the server, and by ``SqliteQueueProvider``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence

from ._cluster_api import ClusterServices, Handout, LeaseAsk
from ._database import Database
from ._due_timer import DueTimer
from ._lifecycle import LifecycleHub, Watcher
from ._locks_store import acquire, release, renew
from ._queue_store import WorkEffects, next_due_micros
from ._requeue import DEFAULT_REQUEUE_INTERVAL, RequeueJob
from ._work_queue import WorkQueues, now_micros

__all__ = ["DEFAULT_REQUEUE_INTERVAL", "Cluster"]

LOG = logging.getLogger(__name__)


class _Taken(Exception):
    """One of several leases asked for together is held: the job's changes are undone (savepoint)."""


class Cluster(ClusterServices):
    """Locks, queues, timers and lifecycle fan-out over one ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.queues = WorkQueues(db, self.written)
        self.timer = DueTimer(db, self.written)
        self.requeue: RequeueJob | None = None
        self.lifecycle: LifecycleHub[bytes] = LifecycleHub()
        self._closed = False

    @property
    def started(self) -> bool:
        return self.requeue is not None

    def start(self, requeue_interval: float | None = None) -> None:
        """Start the due timer, the stranded-work job and the watch for other processes' commits.

        Idempotent (a later call keeps the first interval). Needs a running event loop.
        """
        if self.requeue is not None or self._closed:
            return
        self.timer.start()
        interval = DEFAULT_REQUEUE_INTERVAL if requeue_interval is None else requeue_interval
        self.requeue = RequeueJob(self._db, self.written, self.timer.offer, interval)
        self.requeue.start()
        self.queues.start_watching(self._changed_elsewhere)
        self._changed_elsewhere()

    def written(self, effects: WorkEffects) -> None:
        """After a commit: wake the consumers of the queues that got items, arm the timer on new due times."""
        for queue in effects.queued:
            self.queues.notify(queue)
        if effects.next_due_us is not None:
            self.timer.offer(effects.next_due_us)

    def _changed_elsewhere(self) -> None:
        upcoming = self.queues.read_now(lambda conn: next_due_micros(conn, now_micros()))
        if upcoming is not None:
            self.timer.offer(upcoming)

    def stop_waiting(self) -> None:
        """Shutting down: waiting dequeues return None now, lifecycle watches end."""
        self.queues.stop_waiting()
        self.lifecycle.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_waiting()
        if self.requeue is not None:
            await self.requeue.close()
        await self.timer.close()
        await self.queues.close()

    # -- locks -----------------------------------------------------------------------------------

    async def acquire_lock(self, resource: str, owner: str, ttl_us: int) -> tuple[int, int] | None:
        """(fencing token, expire time in epoch microseconds) when taken; None while a live lease holds it."""
        return await self._db.write(lambda conn: acquire(conn, resource, owner, ttl_us, now_micros()))

    async def acquire_locks(self, resources: Sequence[str], owner: str, ttl_us: int) -> list[tuple[int, int]] | None:
        """Take the leases on all ``resources`` in one transaction, all or none.

        The (fencing token, expire time) of each, in order; None (nothing taken) while a live lease
        holds any of them.
        """
        wanted = list(resources)

        def job(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            now = now_micros()
            leases = []
            for resource in wanted:
                lease = acquire(conn, resource, owner, ttl_us, now)
                if lease is None:
                    raise _Taken(resource)
                leases.append(lease)
            return leases

        try:
            return await self._db.write(job)
        except _Taken:
            return None

    async def renew_locks(self, owner: str, resources: Sequence[str], ttl_us: int) -> list[str]:
        """Renew ``owner``'s leases; the resources it no longer holds."""
        wanted = list(resources)
        if not wanted:
            return []
        return await self._db.write(lambda conn: renew(conn, owner, wanted, ttl_us, now_micros()))

    async def release_lock(self, resource: str, owner: str) -> bool:
        """Free ``owner``'s lease on ``resource``; False when it held none."""
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> bool:
            return release(conn, resource, owner, now_micros(), effects)

        released = await self._db.write(job)
        self.written(effects)
        if released:
            self.queues.leases_freed()
        return released

    async def release_locks(self, resources: Sequence[str], owner: str) -> list[bool]:
        """Free ``owner``'s leases on ``resources`` in one transaction; for each, whether it held it."""
        wanted = list(resources)
        effects = WorkEffects()

        def job(conn: sqlite3.Connection) -> list[bool]:
            now = now_micros()
            return [release(conn, resource, owner, now, effects) for resource in wanted]

        released = await self._db.write(job)
        self.written(effects)
        if any(released):
            self.queues.leases_freed()
        return released

    # -- queues and lifecycle ----------------------------------------------------------------------

    async def queue_work(self, queue: str, item_id: str) -> bool:
        return await self.queues.queue(queue, item_id)

    async def dequeue_work(
        self, queue: str, wait: float = 0.0, ended: asyncio.Future[None] | None = None
    ) -> str | None:
        return await self.queues.dequeue(queue, wait, ended)

    async def dequeue_leased(
        self, queue: str, wait: float, ask: LeaseAsk, ended: asyncio.Future[None] | None = None
    ) -> Handout | None:
        return await self.queues.dequeue_leased(queue, wait, ask, ended)

    async def publish_lifecycle(self, event: bytes, workflow_instance_id: str, workflow_definition_id: str) -> int:
        return self.lifecycle.publish(event, workflow_instance_id, workflow_definition_id)

    def watch_lifecycle(self, workflow_instance_id: str = "", workflow_definition_id: str = "") -> Watcher[bytes]:
        return self.lifecycle.watch(workflow_instance_id, workflow_definition_id)
