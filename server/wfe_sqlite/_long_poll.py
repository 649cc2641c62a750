"""Long-poll dequeues over a durable queue, shared by both backends (``LongPoll``).

A waiting dequeue is a waiter in its queue's line. One dispatcher per queue serves the line in
order: when told that items may have arrived (a commit of this process queued some, a new waiter
came, a lease was released, or another process or server changed the queue), it asks the backend
to hand out items to all waiters at once (``take``: one transaction) and settles each waiter that
got one. A waiter may ask for leases on its item (``LeaseAsk``); the backend then passes over items
someone else holds, and the waiter stays in line until an item it can lease arrives. An item handed
to a waiter that left meanwhile goes back to the head of its queue, its leases freed (``put_back``).

At most ``MAX_WAITING`` dequeues wait at once in one process (all queues together); one more is
refused at once with RESOURCE_EXHAUSTED (``TooManyWaitingDequeues``) instead of holding more memory (about
21 KiB a waiting call in a server process).

The backends supply ``take`` and ``put_back`` (their SQL), and optionally a cheap look whether the
queue may have items (SQLite reads an index on the event loop) and a fallback interval after which
a line with waiters looks even without being told (PostgreSQL, against lost notifications).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from wfe_client.errors import TooManyWaitingDequeues

from ._cluster_api import Handout, LeaseAsk
from ._logging import RetriedFailure

__all__ = ["MAX_WAITING", "LongPoll", "PutBack", "Take"]

LOG = logging.getLogger(__name__)

MAX_WAITING = 10_000
"""Most dequeues waiting at once in one process, all queues together. Measured on a server process:
5,000 waiting ``DequeueWork`` calls took 103 MiB (21 KiB each); without a bound, clients could keep
up to ``max_connections`` x ``max_concurrent_streams`` (10 million) waiting."""


Take = Callable[[str, Sequence[LeaseAsk | None]], Awaitable[list[Handout | None]]]
"""Hand out items of a queue to the asks in order, in one transaction: one result per ask (None:
no item for it). An ask's ``release`` is done first, in the same transaction."""
PutBack = Callable[[str, Sequence[Handout]], Awaitable[None]]
"""Put handed-out items back at the head of their queue, in order, freeing their leases."""


class _Waiter:
    __slots__ = ("ask", "future")

    def __init__(self, future: asyncio.Future[Handout | None], ask: LeaseAsk | None) -> None:
        self.future = future
        self.ask = ask

    def released(self) -> None:
        """Its releases were done (committed): a later take must not repeat them."""
        if self.ask is not None and self.ask.release:
            self.ask = self.ask.without_release()


class _Line:
    """The waiting dequeues of one queue, first come first served, and its dispatcher's wake-up."""

    def __init__(self, queue: str) -> None:
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failure = RetriedFailure(LOG, f"dequeue from the {queue} queue")

    def live(self) -> list[_Waiter]:
        """Drop waiters that gave up; the ones still waiting, in order."""
        self.waiters = collections.deque(w for w in self.waiters if not w.future.done())
        return list(self.waiters)

    def hand(self, waiters: Sequence[_Waiter], results: Sequence[Handout | None]) -> list[Handout]:
        """Settle each waiter that got an item; the items whose waiter left meanwhile."""
        leftovers: list[Handout] = []
        served: set[_Waiter] = set()
        for waiter, result in zip(waiters, results, strict=True):
            waiter.released()
            if result is None:
                continue
            served.add(waiter)
            if waiter.future.done():
                leftovers.append(result)
            else:
                waiter.future.set_result(result)
        if served:
            self.waiters = collections.deque(w for w in self.waiters if w not in served)
        return leftovers


def _settle_none(future: asyncio.Future[Handout | None]) -> None:
    if not future.done():
        future.set_result(None)


class LongPoll:
    """The lines of waiting dequeues of one backend, each served by its own dispatcher task."""

    def __init__(
        self,
        take: Take,
        put_back: PutBack,
        *,
        name: str,
        may_have_items: Callable[[str], bool] | None = None,
        fallback_look: float | None = None,
    ) -> None:
        self._take = take
        self._put_back_items = put_back
        self._name = name
        self._may_have_items = may_have_items
        self._fallback_look = fallback_look
        self._lines: dict[str, _Line] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.waiting = 0
        """Dequeues waiting now (all queues)."""

    async def dequeue(
        self,
        queue: str,
        wait: float = 0.0,
        ask: LeaseAsk | None = None,
        ended: asyncio.Future[None] | None = None,
    ) -> Handout | None:
        """An item of ``queue`` (leased as ``ask`` says), waiting up to ``wait`` seconds for one; None if none came.

        ``ended`` done (the caller's provider was closed): the wait ends at once with None, as at its
        timeout; an item handed to it meanwhile goes back to the head of its queue, for the next dequeue.
        """
        if ended is not None and ended.done():
            return None
        if wait <= 0 or self.closed:
            return (await self._take(queue, [ask]))[0]
        if self.waiting >= MAX_WAITING:
            raise TooManyWaitingDequeues(
                f"{self.waiting} dequeues are waiting on this server already (at most {MAX_WAITING}); try again later",
                waiting=str(self.waiting),
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Handout | None] = loop.create_future()
        line = self._line(queue)
        line.waiters.append(_Waiter(future, ask))
        timer = loop.call_later(wait, _settle_none, future)

        def end(_: asyncio.Future[None]) -> None:
            _settle_none(future)

        if ended is not None:
            ended.add_done_callback(end)
        line.wake.set()  # look now: an item may be waiting already
        self.waiting += 1
        try:
            return await future
        except asyncio.CancelledError:
            # The caller went away. If an item was handed to it in the meantime, it goes back.
            handout = future.result() if future.done() and not future.cancelled() else None
            if handout is not None:
                self._spawn(self._put_back(queue, [handout]))
            raise
        finally:
            self.waiting -= 1
            timer.cancel()
            if ended is not None:
                ended.remove_done_callback(end)

    def notify(self, queue: str) -> None:
        """Items may have arrived in ``queue`` (or leases were freed): let its dispatcher look."""
        line = self._lines.get(queue)
        if line is not None and line.waiters:
            line.wake.set()

    def notify_all(self) -> None:
        for queue in self._lines:
            self.notify(queue)

    def queues(self) -> list[str]:
        """The queues that have (had) a line."""
        return list(self._lines)

    def stop_waiting(self) -> None:
        """End every waiting dequeue (they return None) and make later ones return at once."""
        self.closed = True
        for line in self._lines.values():
            for waiter in line.waiters:
                _settle_none(waiter.future)
            line.waiters.clear()

    async def close(self) -> None:
        self.stop_waiting()
        tasks = [line.task for line in self._lines.values() if line.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- inside ----------------------------------------------------------------------------------

    def _line(self, queue: str) -> _Line:
        line = self._lines.get(queue)
        if line is None:
            line = self._lines[queue] = _Line(queue)
        if line.task is None or line.task.done():
            line.task = asyncio.get_running_loop().create_task(
                self._dispatch(queue, line), name=f"{self._name}-{queue}"
            )
        return line

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_back(self, queue: str, handouts: Sequence[Handout]) -> None:
        try:
            await self._put_back_items(queue, handouts)
        except Exception as error:  # noqa: BLE001 - the stranded-work sweep queues them again later
            LOG.warning("could not put %d handed-out items back into the %s queue: %s", len(handouts), queue, error)

    def _worth_a_look(self, queue: str, waiters: Sequence[_Waiter]) -> bool:
        if self._may_have_items is None:
            return True
        # A waiter's releases are done in a take even when no item waits.
        return any(w.ask is not None and w.ask.release for w in waiters) or self._may_have_items(queue)

    async def _dispatch(self, queue: str, line: _Line) -> None:
        while not self.closed:
            if self._fallback_look is None:
                await line.wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(line.wake.wait(), self._fallback_look)
            line.wake.clear()
            while not self.closed:
                waiters = line.live()
                if not waiters or not self._worth_a_look(queue, waiters):
                    break
                try:
                    results = await self._take(queue, [w.ask for w in waiters])
                except Exception as error:  # noqa: BLE001 - keep serving; the waiters time out meanwhile
                    line.failure.failed(error, "retrying in 0.1 s")
                    await asyncio.sleep(0.1)
                    line.wake.set()
                    break
                line.failure.succeeded()
                leftovers = line.hand(waiters, results)
                if leftovers:
                    await self._put_back(queue, leftovers)
                if any(result is None for result in results):
                    break  # the queue has nothing more for the waiters left
