"""``LifecycleHub``: in-memory fan-out of published lifecycle events to the watchers of this process.

Events are relayed, not stored. Each watcher has its own buffer of at most ``MAX_BEHIND`` events
and ``MAX_BEHIND_BYTES`` of them; a watcher that falls further behind is ended (``WatcherFellBehind``)
instead of holding memory. The watchers of a hub together hold at most ``MAX_HELD_BYTES`` of
distinct events: past it, a watcher that is behind is ended too. At most ``MAX_WATCHERS`` watch at
once; one more is refused (``TooManyWatchers``).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Generic, TypeVar

from wfe_client.errors import TooManyWatchers, WatcherFellBehind

__all__ = [
    "MAX_BEHIND",
    "MAX_BEHIND_BYTES",
    "MAX_HELD_BYTES",
    "MAX_WATCHERS",
    "LifecycleHub",
    "Watcher",
]

E = TypeVar("E")

MAX_BEHIND = 10_000
"""Most events a watcher may have waiting before it is ended."""

MAX_BEHIND_BYTES = 64 * 1024 * 1024
"""Most bytes of events (``bytes`` events: their length) a watcher may have waiting before it is
ended; one event is always taken, whatever its size. Without it a watch that read nothing held
up to 10000 events of up to 64 MiB each."""

MAX_HELD_BYTES = 256 * 1024 * 1024
"""Most bytes of distinct events all watchers of a hub may have waiting together (an event several
watchers wait for counts once). Past it, an event offered to a watcher that has events waiting
ends that watcher (``WatcherFellBehind``); one with none waiting still takes it. Without it,
watchers that read nothing, each watching other workflows, held up to ``MAX_BEHIND_BYTES`` each."""


MAX_WATCHERS = 10_000
"""Most watchers of one hub (one server process) at once. Measured on a server process: 4,000 open
watches took 108 MiB (27 KiB each); without a bound, clients could open up to ``max_connections`` x
``max_concurrent_streams`` (10 million)."""


def _size(event: object) -> int:
    return len(event) if isinstance(event, (bytes, bytearray, str)) else 0


class Watcher(Generic[E]):
    """One watch: the events published since it began that match its filters, in publishing order."""

    def __init__(self, hub: LifecycleHub[E], workflow_instance_id: str, workflow_definition_id: str) -> None:
        self._hub = hub
        self.workflow_instance_id = workflow_instance_id
        self.workflow_definition_id = workflow_definition_id
        self._buffer: collections.deque[E] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.fell_behind = False
        self.ended = False

    def matches(self, workflow_instance_id: str, workflow_definition_id: str) -> bool:
        return (not self.workflow_instance_id or self.workflow_instance_id == workflow_instance_id) and (
            not self.workflow_definition_id or self.workflow_definition_id == workflow_definition_id
        )

    def offer(self, event: E) -> bool:
        if self.ended or self.fell_behind:
            return False
        size = _size(event)
        if len(self._buffer) >= MAX_BEHIND or (
            self._buffer and (self._bytes + size > MAX_BEHIND_BYTES or self._hub._over_budget(event, size))
        ):
            self.fell_behind = True
            self._drop_buffer()
            self._ready.set()
            return False
        self._buffer.append(event)
        self._bytes += size
        self._hub._hold(event, size)
        self._ready.set()
        return True

    def _drop_buffer(self) -> None:
        for event in self._buffer:
            self._hub._let_go(event, _size(event))
        self._buffer.clear()
        self._bytes = 0

    def end(self) -> None:
        self.ended = True
        self._ready.set()

    async def next(self) -> E | None:
        """The next event; None once the hub closed. Raises ``WatcherFellBehind``."""
        while True:
            if self.fell_behind:
                raise WatcherFellBehind(
                    f"the watcher fell more than {MAX_BEHIND} events or {MAX_BEHIND_BYTES >> 20} MiB behind"
                    " and was ended"
                )
            if self._buffer:
                event = self._buffer.popleft()
                size = _size(event)
                self._bytes -= size
                self._hub._let_go(event, size)
                return event
            if self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        self.ended = True
        self._drop_buffer()
        self._hub._watchers.discard(self)

    def __enter__(self) -> Watcher[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LifecycleHub(Generic[E]):
    """Hands each published event to every open watcher whose filters match."""

    def __init__(self) -> None:
        self._watchers: set[Watcher[E]] = set()
        self._closed = False
        self._held: dict[int, list[Any]] = {}  # id(event) -> [event, how many watchers have it waiting]
        self.held_bytes = 0
        """Bytes of the distinct events the watchers have waiting."""

    def _over_budget(self, event: E, size: int) -> bool:
        return size > 0 and id(event) not in self._held and self.held_bytes + size > MAX_HELD_BYTES

    def _hold(self, event: E, size: int) -> None:
        if size:
            entry = self._held.get(id(event))
            if entry is None:
                self._held[id(event)] = [event, 1]
                self.held_bytes += size
            else:
                entry[1] += 1

    def _let_go(self, event: E, size: int) -> None:
        if size:
            entry = self._held[id(event)]
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[id(event)]
                self.held_bytes -= size

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def watch(self, workflow_instance_id: str = "", workflow_definition_id: str = "") -> Watcher[E]:
        if not self._closed and len(self._watchers) >= MAX_WATCHERS:
            raise TooManyWatchers(
                f"{len(self._watchers)} lifecycle watches are open on this server already (at most {MAX_WATCHERS});"
                " try again later",
                watchers=str(len(self._watchers)),
            )
        watcher = Watcher(self, workflow_instance_id, workflow_definition_id)
        if self._closed:
            watcher.end()
        else:
            self._watchers.add(watcher)
        return watcher

    def matching(self, workflow_instance_id: str, workflow_definition_id: str) -> int:
        """How many open watchers, not ended and not fallen behind, would take an event of that
        workflow and definition."""
        return sum(
            not (watcher.ended or watcher.fell_behind) and watcher.matches(workflow_instance_id, workflow_definition_id)
            for watcher in self._watchers
        )

    def publish(self, event: E, workflow_instance_id: str, workflow_definition_id: str) -> int:
        """Hand ``event`` to the matching watchers; how many took it."""
        return sum(
            watcher.offer(event)
            for watcher in list(self._watchers)
            if watcher.matches(workflow_instance_id, workflow_definition_id)
        )

    def close(self) -> None:
        """End every watch (their streams finish) and refuse new ones."""
        self._closed = True
        for watcher in list(self._watchers):
            watcher.end()
        self._watchers.clear()
