"""``SqliteLockProvider`` and ``SqliteQueueProvider``: the cluster interfaces in-process on one database.

They work on an open ``SqlitePersistenceProvider`` (its writer, its cluster) and behave as the gRPC
ones do, also across processes that open the same file: leases and queue items live in the
database, each dequeue is one write transaction (SQLite serializes writers across processes), and a
waiting dequeue wakes on this process's commits at once and on other processes' commits within
``WATCH_INTERVAL`` (20 ms: a ``PRAGMA data_version`` check). They take any ``StoreProvider``: on a
``PostgresPersistenceProvider`` the same holds across servers (row locks, LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from wfe_client import LockProvider, QueueProvider
from wfe_client._cluster import check_queue
from wfe_client.errors import WorkflowNotFound
from wfe_client.limits import DEFAULT_LOCK_TTL, check_wait
from wfe_client.models import Lease, LeasedWork, QueueType, WorkflowInstance
from wfe_client.timeutil import from_micros

from ._provider import StoreProvider
from ._rows import check_id, check_lease_resource, lease_ask

__all__ = ["SqliteLockProvider", "SqliteQueueProvider"]

_US = timedelta(microseconds=1)


class SqliteLockProvider(LockProvider):
    """Distributed locks on the database of ``store`` (leases with owner, TTL and fencing tokens)."""

    def __init__(self, store: StoreProvider, owner: str | None = None, ttl: timedelta = DEFAULT_LOCK_TTL) -> None:
        super().__init__(owner, ttl)
        check_id(self.owner, "owner")
        self._cluster = store.cluster

    async def _acquire(self, resource: str) -> Lease | None:
        check_id(resource, "resource")
        lease = await self._cluster.acquire_lock(resource, self.owner, self.ttl // _US)
        if lease is None:
            return None
        token, expire_us = lease
        return Lease(resource, self.owner, token, from_micros(expire_us))

    async def _renew(self, resources: Sequence[str]) -> list[str]:
        return await self._cluster.renew_locks(self.owner, resources, self.ttl // _US)

    async def _release(self, resource: str) -> bool:
        check_lease_resource(resource, "resource")  # also one a leased dequeue took (prefix and id)
        return await self._cluster.release_lock(resource, self.owner)


class SqliteQueueProvider(QueueProvider):
    """The work queues on the database of ``store``, with long-poll dequeue.

    Creating one starts the store's background cluster jobs (due timer, stranded-work sweep every
    ``requeue_interval`` seconds, watch for other processes' commits), as a server does.
    ``close`` ends its waiting dequeues at once (StorageUnavailable, as a call after close raises);
    an item handed to one of them meanwhile goes back to the head of its queue.
    """

    def __init__(self, store: StoreProvider, requeue_interval: float | None = None) -> None:
        self._store = store
        self._cluster = store.cluster
        self._requeue_interval = requeue_interval
        self._ended: asyncio.Future[None] | None = None  # done on close: waiting dequeues end
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started on first use
        self._start()

    def _start(self) -> None:
        self._cluster.start(self._requeue_interval)

    def _ending(self) -> asyncio.Future[None]:
        """What this provider's waiting dequeues end on (done by ``close``)."""
        loop = asyncio.get_running_loop()
        if self._ended is None or self._ended.get_loop() is not loop:
            self._ended = loop.create_future()
        return self._ended

    async def close(self) -> None:
        await super().close()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    async def queue_work(self, id: str, queue: QueueType) -> bool:
        self._check_open()
        self._start()
        return await self._cluster.queue_work(check_queue(queue).name, check_id(id, "id"))

    async def dequeue_work(self, queue: QueueType, wait: timedelta | None = None) -> str | None:
        self._check_open()
        self._start()
        name = check_queue(queue).name
        item = await self._cluster.dequeue_work(name, check_wait(wait).total_seconds(), self._ending())
        if item is None:
            self._check_open()  # ended by close: nothing was taken for it
        return item

    async def dequeue_workflow(self, wait: timedelta | None = None) -> tuple[str, WorkflowInstance | None] | None:
        self._check_open()
        workflow_id = await self.dequeue_work(QueueType.WORKFLOW, wait)
        if workflow_id is None:
            return None
        try:
            return workflow_id, await self._store.get_workflow_instance(workflow_id)
        except WorkflowNotFound:
            return workflow_id, None

    async def _dequeue_leased(
        self,
        queue: QueueType,
        owner: str,
        ttl: timedelta,
        prefixes: Sequence[str],
        wait: timedelta | None,
        release: Sequence[str],
        include_workflow: bool,
    ) -> LeasedWork | None:
        self._check_open()
        ask = lease_ask(owner, ttl // _US, prefixes, release)
        waiting = check_wait(wait).total_seconds()
        self._start()
        handout = await self._cluster.dequeue_leased(queue.name, waiting, ask, self._ending())
        if handout is None:
            self._check_open()  # ended by close: nothing was taken for it
            return None
        leases = tuple(
            Lease(resource, owner, token, from_micros(expire))
            for resource, (token, expire) in zip(handout.resources, handout.leases, strict=True)
        )
        workflow = None
        if include_workflow and queue is QueueType.WORKFLOW:
            try:
                workflow = await self._store.get_workflow_instance(handout.item_id)
            except WorkflowNotFound:
                workflow = None
        return LeasedWork(handout.item_id, leases, workflow)
