"""The lock and queue interfaces a cluster of workflow hosts programs against.

Implemented over gRPC by ``GrpcLockProvider`` / ``GrpcQueueProvider`` and in-process on one
database by ``wfe_sqlite.SqliteLockProvider`` / ``SqliteQueueProvider``; both pass one
conformance suite. The lease bookkeeping (held leases, background renewal, release on close) lives
here once; the implementations supply the three lease operations.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

from .errors import InvalidArgument, StorageUnavailable
from .limits import DEFAULT_LOCK_TTL, MAX_ID_BYTES, MAX_RENEW_RESOURCES, check_lock_ttl
from .models import Lease, LeasedWork, QueueType, WorkflowInstance

__all__ = ["LockProvider", "QueueProvider", "check_queue", "new_owner_id"]

LOG = logging.getLogger(__name__)

Self = TypeVar("Self", bound="LockProvider")
SelfQ = TypeVar("SelfQ", bound="QueueProvider")


def new_owner_id() -> str:
    """A fresh owner id, unique per provider: host name, process id and a UUID."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4()}"


def check_queue(queue: QueueType) -> QueueType:
    """A ``QueueType`` (or its member name), else ``InvalidArgument`` naming ``queue``."""
    if isinstance(queue, str) and queue in QueueType.__members__:
        return QueueType[queue]
    if not isinstance(queue, QueueType):
        raise InvalidArgument(f"queue: expected a QueueType, got {queue!r}", field="queue")
    return queue


def _check_owner(owner: object) -> None:
    """A lock owner the contract takes (a non-empty string of at most 1024 UTF-8 bytes), else
    ``InvalidArgument`` naming ``owner`` when the provider is made, not at each acquire."""
    if not isinstance(owner, str) or not owner:
        raise InvalidArgument("owner: expected a non-empty string or None", field="owner")
    try:
        size = len(owner.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("owner: not valid Unicode text (lone surrogate)", field="owner") from None
    if size > MAX_ID_BYTES:
        raise InvalidArgument(f"owner: longer than {MAX_ID_BYTES} bytes", field="owner")


CLOSE_RELEASE_WAIT = 5.0
"""Most seconds ``LockProvider.close`` waits for the releases of the leases it still holds."""


class LockProvider(abc.ABC):
    """Distributed locks: leases with an owner and a time-to-live, renewed in the background while held.

    ``acquire_lock`` is True when the resource was free or its lease had run out, False while a
    live lease holds it, also one of this same owner (not re-entrant). Held leases are renewed
    every ``ttl / 3`` until released or the provider is closed; closing releases them. A lease
    whose renewal finds it taken by another owner is dropped and reported to ``on_lost``; so is one
    not renewed in time (its renewals failed for a TTL: the server may have let it run out and
    handed it to another owner), which is then released in the background, best effort.
    """

    def __init__(self, owner: str | None = None, ttl: timedelta = DEFAULT_LOCK_TTL) -> None:
        if owner is not None:
            _check_owner(owner)
        self.owner: str = owner or new_owner_id()
        """The owner id of every lease this provider takes."""
        self.ttl: timedelta = check_lock_ttl(ttl)
        """Time-to-live of each lease; renewed every third of it."""
        self.on_lost: Callable[[str], None] | None = None
        """Called with a resource whose lease was lost: a renewal found it taken by another owner,
        or it was not renewed within its TTL (the renewals failed: server frozen or unreachable)."""
        self._held: dict[str, Lease] = {}
        # Per held resource, when (loop clock) its lease runs out unless renewed: the TTL from the
        # moment the last successful acquire or renewal was sent (the server's TTL starts later).
        self._renew_by: dict[str, float] = {}
        self._expiry: asyncio.TimerHandle | None = None  # fires at the earliest of _renew_by
        self._lapsed_releases: dict[str, asyncio.Future[None]] = {}  # an acquire of one waits for it
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight: set[asyncio.Future[None]] = set()  # acquires and releases: close waits for them

    # -- the three operations an implementation supplies ----------------------------------------

    @abc.abstractmethod
    async def _acquire(self, resource: str) -> Lease | None:
        """Take the lease for ``self.owner`` with ``self.ttl``; None while a live lease holds it."""

    @abc.abstractmethod
    async def _renew(self, resources: Sequence[str]) -> list[str]:
        """Renew ``self.owner``'s leases by ``self.ttl``; the resources it no longer holds."""

    @abc.abstractmethod
    async def _release(self, resource: str) -> bool:
        """Free ``self.owner``'s lease on ``resource``; False when it held none."""

    async def _close_transport(self) -> None:
        """Release what the provider owns besides leases (a channel)."""
        return None

    def _check_open(self) -> None:
        """After ``close``: StorageUnavailable, as every call of a closed persistence provider raises
        (the store itself, which the provider may share, stays open)."""
        if self._closed:
            raise StorageUnavailable("the lock provider is closed")

    # -- the interface ---------------------------------------------------------------------------

    async def acquire(self, resource: str) -> Lease | None:
        """Take the lease on ``resource``: the ``Lease`` (with its fencing token), or None while it is held."""
        self._check_open()
        releasing = self._lapsed_releases.get(resource)
        if releasing is not None:
            # The release of this owner's lapsed lease on it, sent earlier, must not free the new one.
            await asyncio.wait([releasing])
        async with self._call_in_flight():
            sent = asyncio.get_running_loop().time()
            lease = await self._acquire(resource)
            if self._closed:
                # close() began while the call was on its way and did not see this lease: freed
                # here (close waits for that, bounded), not left locked for the TTL.
                if lease is not None:
                    await self._release_quietly(resource, "after close")
                raise StorageUnavailable("the lock provider is closed")
        if lease is not None:
            self._hold(lease, sent + self.ttl.total_seconds())
        return lease

    async def acquire_lock(self, resource: str) -> bool:
        """True when the lease on ``resource`` is now this owner's; False while a live lease holds it."""
        return await self.acquire(resource) is not None

    async def release_lock(self, resource: str) -> None:
        """Free this owner's lease on ``resource``; releasing what is not held is not an error."""
        self._check_open()
        self._drop(resource)
        async with self._call_in_flight():
            await self._release(resource)

    @contextlib.asynccontextmanager
    async def _call_in_flight(self) -> AsyncIterator[None]:
        """An acquire or release under way: ``close`` waits for it (bounded) before it releases what
        is held and closes the transport (closing a channel under it would leave its outcome unknown,
        a lease possibly taken or not freed for its TTL)."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight.add(ended)
        try:
            yield
        finally:
            self._in_flight.discard(ended)
            ended.set_result(None)

    def _adopt(self, leases: Sequence[Lease] | Sequence[tuple[Lease, float]]) -> None:
        """Leases taken for this owner by someone else's call (a leased dequeue): held from now on.
        Their TTL is counted from now: the server took them at some point of a call that may have
        waited long (a long poll); the first renewal, a third of the TTL later, bounds them again.
        ``(lease, renew_by)`` pairs (from ``_forget``) keep the time by which they must be renewed."""
        if self._closed:
            return
        renew_by = asyncio.get_running_loop().time() + self.ttl.total_seconds()
        for item in leases:
            lease, by = item if isinstance(item, tuple) else (item, renew_by)
            self._hold(lease, by)

    def _forget(self, resources: Sequence[str]) -> list[tuple[Lease, float]]:
        """Leases being freed by someone else's call (a leased dequeue's release): no longer renewed.
        The leases that were held, with the time by which they must be renewed (for ``_adopt`` when
        that call was refused)."""
        forgotten = []
        for resource in resources:
            if isinstance(resource, str) and resource in self._held:
                forgotten.append((self._held[resource], self._renew_by[resource]))
                self._drop(resource)
        return forgotten

    def _hold(self, lease: Lease, renew_by: float) -> None:
        """``lease`` is held, and must be renewed by ``renew_by`` (loop clock)."""
        self._held[lease.resource] = lease
        self._renew_by[lease.resource] = renew_by
        self._ensure_renewer()
        if self._expiry is None or renew_by < self._expiry.when():
            self._watch_expiry()

    def _drop(self, resource: str) -> Lease | None:
        """No longer held (nor renewed)."""
        self._renew_by.pop(resource, None)
        return self._held.pop(resource, None)

    def lease(self, resource: str) -> Lease | None:
        """The lease this provider holds on ``resource`` (its fencing token), if any."""
        return self._held.get(resource) if self._in_time(resource) else None

    @property
    def held(self) -> list[str]:
        """The resources this provider holds leases on."""
        return [resource for resource in self._held if self._in_time(resource)]

    def _in_time(self, resource: str) -> bool:
        """False once the time by which ``resource``'s lease had to be renewed has passed: it is
        lost then, before ``_expire`` gets to run (a loop blocked past it runs due timers only
        after the code it resumes), and its fencing token must not be handed out meanwhile."""
        by = self._renew_by.get(resource)
        if by is None:
            return True
        try:
            return asyncio.get_running_loop().time() < by
        except RuntimeError:  # no running loop (a look from outside it): the timer's view stands
            return True

    async def close(self) -> None:
        """Stop renewing and release every held lease (best effort), then close the transport.

        Acquires and releases under way are waited for too, in the same time (at most
        ``CLOSE_RELEASE_WAIT``, or the TTL if shorter); a lease such an acquire takes is freed, and
        the acquire raises ``StorageUnavailable``, as every call after close does."""
        if self._closed:
            return
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        held, self._held, self._renew_by = list(self._held), {}, {}
        if held or self._in_flight or self._lapsed_releases:
            await self._release_at_close(held)
        await self._close_transport()

    async def _release_at_close(self, held: Sequence[str]) -> None:
        """Release ``held`` all at once, waiting at most ``CLOSE_RELEASE_WAIT`` (or the TTL, if
        shorter) for them and for the acquires and releases under way: a lease not released runs
        out by itself, and a server that does not answer must not hold a host's shutdown up for a
        call deadline per lease."""

        releases = [asyncio.ensure_future(self._release_quietly(resource, "at close")) for resource in held]
        # Releases of lost leases too (one just created has not entered _in_flight yet).
        under_way: list[asyncio.Future[None]] = [*releases, *self._in_flight, *self._lapsed_releases.values()]
        _, waiting = await asyncio.wait(under_way, timeout=min(CLOSE_RELEASE_WAIT, self.ttl.total_seconds()))
        pending = [task for task in releases if task in waiting]  # the callers' own calls are theirs
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            LOG.warning(
                "%d of %d leases not released at close within %gs; they run out after the TTL (%gs)",
                len(pending),
                len(held),
                min(CLOSE_RELEASE_WAIT, self.ttl.total_seconds()),
                self.ttl.total_seconds(),
            )

    async def _release_quietly(self, resource: str, when: str) -> None:
        try:
            await self._release(resource)
        except Exception as error:  # noqa: BLE001 - the lease runs out by itself
            LOG.warning("could not release the lease on %r %s: %s", resource, when, error)

    async def __aenter__(self: Self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- renewal ---------------------------------------------------------------------------------

    @property
    def renewal_period(self) -> float:
        """Seconds between renewals (a third of the TTL); a renewal's answer later than that is of no
        use (the next one is due), so a remote implementation gives its call that deadline."""
        return self.ttl.total_seconds() / 3

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="wfe-lock-renewal")

    async def _renew_loop(self) -> None:
        period = self.renewal_period
        loop = asyncio.get_running_loop()
        due = loop.time() + period
        while self._held and not self._closed:
            # Every period from the start of the last renewal, not from its end: a renewal that
            # gave up (an implementation bounds it by the period) is followed at once by the next.
            await asyncio.sleep(max(due - loop.time(), 0.0))
            due = loop.time() + period
            renewing = dict(self._held)
            if not renewing:
                return
            resources = list(renewing)
            for start in range(0, len(resources), MAX_RENEW_RESOURCES):
                batch = resources[start : start + MAX_RENEW_RESOURCES]
                sent = loop.time()
                try:
                    lost = set(await self._renew(batch))
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - try again next period; the lease may still hold
                    LOG.warning("renewing %d leases failed (retrying in %.2f s): %s", len(batch), period, error)
                    continue
                for resource in batch:
                    # Only a lease that is still the one this round renewed: not one released (or
                    # reported lost, see _expire) and taken again meanwhile.
                    if self._held.get(resource) is not renewing[resource]:
                        continue
                    if resource in lost:
                        self._drop(resource)
                        LOG.warning("lost the lease on %r (it ran out and another owner took it)", resource)
                        self._report_lost(resource)
                    else:
                        self._renew_by[resource] = sent + self.ttl.total_seconds()

    def _watch_expiry(self) -> None:
        """Call ``_expire`` when the first held lease must have been renewed."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._renew_by and not self._closed:
            self._expiry = asyncio.get_running_loop().call_at(min(self._renew_by.values()), self._expire)

    def _expire(self) -> None:
        """Reports lost the leases not renewed within their TTL (the renewals failed, or did not
        end, for that long): the server may have let them run out and handed them to another owner.
        Once reported lost a lease stays lost, also when a renewal under way then succeeds (a frozen
        server, and nobody took it): each is released in the background, best effort, sent after
        those renewals, so the server does not keep it for an owner that no longer renews it."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        for resource in [resource for resource, by in self._renew_by.items() if by <= now]:
            self._drop(resource)
            LOG.warning("lost the lease on %r: not renewed within its TTL (%gs)", resource, self.ttl.total_seconds())
            self._report_lost(resource)
            self._release_lapsed(resource)
        self._watch_expiry()

    def _release_lapsed(self, resource: str) -> None:
        """Release this owner's lease on ``resource``, reported lost, in the background (best effort;
        ``close`` waits for it as for a release under way; an acquire of ``resource`` waits for it
        first: sent before, it could reach the server after and free the new lease)."""
        if self._closed or resource in self._lapsed_releases:
            return

        async def release() -> None:
            try:
                async with self._call_in_flight():
                    await self._release_quietly(resource, "after it was lost")
            finally:
                self._lapsed_releases.pop(resource, None)

        self._lapsed_releases[resource] = asyncio.ensure_future(release())

    def _report_lost(self, resource: str) -> None:
        """Tell ``on_lost``; a callback that raises is logged: it must not end the renewal of the
        other leases (nor make ``close`` raise its error)."""
        if self.on_lost is None:
            return
        try:
            self.on_lost(resource)
        except Exception:
            LOG.exception("on_lost(%r) raised; the other leases are still renewed", resource)


class QueueProvider(abc.ABC):
    """The work queues: FIFO per queue type, each item handed to one dequeuer, long-poll dequeue.

    After ``close`` every call raises ``StorageUnavailable`` (implementations call ``_check_open``)."""

    _closed: bool = False

    @abc.abstractmethod
    async def queue_work(self, id: str, queue: QueueType) -> bool:
        """Append ``id`` to ``queue``; False when it was already waiting there (it keeps its one entry)."""

    @abc.abstractmethod
    async def dequeue_work(self, queue: QueueType, wait: timedelta | None = None) -> str | None:
        """The oldest waiting id of ``queue``, or None. With ``wait`` (up to 60 s), wait that long for one."""

    @abc.abstractmethod
    async def dequeue_workflow(self, wait: timedelta | None = None) -> tuple[str, WorkflowInstance | None] | None:
        """``dequeue_work(QueueType.WORKFLOW, wait)`` with the workflow read right after (None if it is gone)."""

    async def dequeue_leased(
        self,
        queue: QueueType,
        locks: LockProvider,
        prefixes: Sequence[str] = ("",),
        wait: timedelta | None = None,
        *,
        release: Sequence[str] = (),
        include_workflow: bool = False,
    ) -> LeasedWork | None:
        """The oldest waiting id of ``queue`` whose leases are all free, with ``locks``' leases on it.

        One lease per prefix, on ``prefix + id`` (``""``: the id itself), for ``locks.owner`` with
        ``locks.ttl``, taken in the transaction that hands the item out; ``locks`` holds them from
        then on (renewed; freed by ``release_lock`` or ``close``). Items whose leases another owner
        holds are passed over and keep their place. ``release``: resources whose leases ``locks``
        holds, freed first in the same transaction (a host's release of its previous item going
        with its next dequeue). ``wait`` as for ``dequeue_work``; None when nothing came.
        """
        self._check_open()
        locks._check_open()
        # One string is a sequence of characters: list("ab") would lease "a" + id and "b" + id.
        for value, field in ((prefixes, "prefixes"), (release, "release")):
            if isinstance(value, str):
                raise InvalidArgument(f"{field}: expected a sequence of strings, got one string", field=field)
        queue = check_queue(queue)
        # Not renewed from now on (a renewal racing the release would report them lost) ...
        released = locks._forget(release)
        try:
            work = await self._dequeue_leased(queue, locks.owner, locks.ttl, prefixes, wait, release, include_workflow)
        except InvalidArgument:
            locks._adopt(released)  # ... unless the call was refused: nothing was released
            raise
        if work is not None and locks._closed:
            # ``locks`` was closed while the call waited: it would neither renew these leases nor
            # let them be released (its calls raise now). Freed here (over its transport: when that
            # is closed too they run out after the TTL); the item, under no lease, is queued again
            # by the stranded-work sweep.
            await asyncio.gather(*(locks._release_quietly(lease.resource, "after close") for lease in work.leases))
            raise StorageUnavailable("the lock provider is closed")
        if work is not None:
            locks._adopt(work.leases)
        return work

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
        """``dequeue_leased`` of an implementation (validation included)."""
        raise NotImplementedError(f"{type(self).__name__} does not hand out leased work")

    def _check_open(self) -> None:
        """After ``close``: StorageUnavailable, as every call of a closed persistence provider raises
        (the store itself, which the provider may share, stays open)."""
        if self._closed:
            raise StorageUnavailable("the queue provider is closed")

    async def close(self) -> None:
        """Release what the provider holds (waiting calls end); calls made afterwards raise
        ``StorageUnavailable``. A store the provider was given is not closed."""
        self._closed = True

    async def __aenter__(self: SelfQ) -> SelfQ:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
