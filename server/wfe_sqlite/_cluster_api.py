"""``ClusterServices``: what the lock, queue and lifecycle services need from a backend.

SQLite implements it in ``_cluster.Cluster`` (one writer, watch of the file for other processes),
PostgreSQL in ``_postgres_cluster.PostgresCluster`` (row locks, ``FOR UPDATE SKIP LOCKED``,
LISTEN/NOTIFY across servers). The servicers, ``SqliteLockProvider``/``SqliteQueueProvider`` and
the server speak only this interface. Instants are epoch microseconds; queues are named by the
``QueueType`` member names; lifecycle events travel as serialized bytes.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Sequence

from ._lifecycle import Watcher

__all__ = ["ClusterServices", "Handout", "LeaseAsk"]


@dataclasses.dataclass(frozen=True)
class LeaseAsk:
    """A dequeue's leases: one per prefix on ``prefix + id`` of the item handed out, for ``owner``,
    all or none; ``release``: resources whose leases ``owner`` holds, freed first (same transaction)."""

    owner: str
    ttl_us: int
    prefixes: tuple[str, ...]
    release: tuple[str, ...] = ()

    def resources(self, item_id: str) -> list[str]:
        return [prefix + item_id for prefix in self.prefixes]

    def without_release(self) -> LeaseAsk:
        return dataclasses.replace(self, release=())


@dataclasses.dataclass(frozen=True)
class Handout:
    """An item handed out by a dequeue, with the (fencing token, expire time) of each lease taken on
    it (in the ask's prefix order; empty when none was asked for)."""

    item_id: str
    leases: tuple[tuple[int, int], ...] = ()
    owner: str = ""
    resources: tuple[str, ...] = ()


class ClusterServices(abc.ABC):
    """Leases, durable work queues with long poll, the background jobs, and lifecycle fan-out."""

    @abc.abstractmethod
    def start(self, requeue_interval: float | None = None) -> None:
        """Start the background parts (due timer, stranded-work sweep, the watch for other
        processes' or servers' changes). Idempotent; needs a running event loop. None: the default
        interval."""

    async def wait_ready(self, within: float) -> bool:
        """Wait (at most ``within`` seconds) until what ``start`` started hears other processes'
        changes; whether it does. Nothing to wait for unless a backend says otherwise."""
        return True

    @abc.abstractmethod
    def stop_waiting(self) -> None:
        """Shutting down: waiting dequeues return None now, lifecycle watches end."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop everything started; end waits and watches."""

    # -- locks -------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire_lock(self, resource: str, owner: str, ttl_us: int) -> tuple[int, int] | None:
        """(fencing token, expire time) when taken; None while a live lease (any owner) holds it."""

    @abc.abstractmethod
    async def acquire_locks(self, resources: Sequence[str], owner: str, ttl_us: int) -> list[tuple[int, int]] | None:
        """Take the leases on all ``resources`` in one transaction, all or none: the (fencing token,
        expire time) of each, in order; None (nothing taken) while a live lease holds any of them."""

    @abc.abstractmethod
    async def release_locks(self, resources: Sequence[str], owner: str) -> list[bool]:
        """Free ``owner``'s leases on ``resources`` in one transaction; for each, whether it held it."""

    @abc.abstractmethod
    async def renew_locks(self, owner: str, resources: Sequence[str], ttl_us: int) -> list[str]:
        """Extend ``owner``'s leases to now + ttl; the resources it no longer holds."""

    @abc.abstractmethod
    async def release_lock(self, resource: str, owner: str) -> bool:
        """Free ``owner``'s lease on ``resource`` (queueing its workflow when due); False when it held none."""

    # -- queues ------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def queue_work(self, queue: str, item_id: str) -> bool:
        """Append ``item_id`` to ``queue``; False when it was already waiting there."""

    @abc.abstractmethod
    async def dequeue_work(
        self, queue: str, wait: float = 0.0, ended: asyncio.Future[None] | None = None
    ) -> str | None:
        """The oldest waiting item of ``queue``, handed to this caller only, waiting up to ``wait``
        seconds for one; None if none came. ``ended`` done (the caller was closed): a wait ends at
        once with None, and nothing is taken for it."""

    @abc.abstractmethod
    async def dequeue_leased(
        self, queue: str, wait: float, ask: LeaseAsk, ended: asyncio.Future[None] | None = None
    ) -> Handout | None:
        """As ``dequeue_work``, with ``ask``'s leases on the item taken in the same transaction (after
        its releases): the oldest waiting item whose leases are all free; others keep their place."""

    # -- lifecycle ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def publish_lifecycle(self, event: bytes, workflow_instance_id: str, workflow_definition_id: str) -> int:
        """Relay ``event`` to every matching watcher (of every server); how many on this server took it."""

    @abc.abstractmethod
    def watch_lifecycle(self, workflow_instance_id: str = "", workflow_definition_id: str = "") -> Watcher[bytes]:
        """A watch of the events published from now on that match the filters (empty: any)."""
