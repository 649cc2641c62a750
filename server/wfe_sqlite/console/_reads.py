"""What the console shows, read from the provider's store and converted for the pages.

The overview is a set of full counts; ``ConsoleReads`` keeps one for ``OVERVIEW_TTL`` seconds so
that several open consoles refreshing every few seconds cost one count between them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime

from wfe_client.models import Event, EventSubscription, WorkflowStatus
from wfe_client.timeutil import from_micros, utc_now

from .._provider import StoreProvider
from .._rows import event_from_row, subscription_from_row
from .._store import LiveFigures

__all__ = [
    "OVERVIEW_TTL",
    "STATUSES",
    "ConsoleReads",
    "DefinitionCounts",
    "EventCursor",
    "EventPage",
    "Overview",
    "RecentError",
    "format_event_cursor",
    "parse_event_cursor",
]

OVERVIEW_TTL = 2.0
"""Seconds an overview is reused before the counts are read again."""

MAX_DEFINITIONS = 200
"""Definitions listed on the overview (the ones with most workflows)."""

RECENT_ERRORS = 10
"""Errors listed on the overview."""

STATUSES = tuple(status.name for status in WorkflowStatus)


@dataclass(frozen=True)
class DefinitionCounts:
    """Workflows of one definition, by status."""

    definition_id: str
    by_status: dict[str, int]
    total: int


@dataclass(frozen=True)
class RecentError:
    """One execution error with the name of its workflow where it still exists."""

    error_time: datetime
    workflow_id: str
    execution_pointer_id: str
    message: str
    workflow_name: str | None


@dataclass(frozen=True)
class Overview:
    """What the store holds, counted in one snapshot."""

    by_status: dict[str, int]
    """Workflows per status (every status present, zero when none)."""
    definitions: list[DefinitionCounts]
    """Per definition, most workflows first (at most ``MAX_DEFINITIONS``)."""
    definition_count: int
    """How many definitions there are in all."""
    figures: LiveFigures
    events: int
    subscriptions_open: int
    errors: int
    database_bytes: int
    wal_bytes: int | None
    recent_errors: list[RecentError]
    read_at: datetime

    @property
    def workflows(self) -> int:
        return sum(self.by_status.values())


EventCursor = tuple[int, str]
"""Position in the event list: (event_time in epoch microseconds, id) of the last event shown."""


@dataclass(frozen=True)
class EventPage:
    items: list[Event]
    next_cursor: EventCursor | None
    """Where the next (older) page starts; None on the last page."""


def parse_event_cursor(text: str) -> EventCursor | None:
    """An ``EventCursor`` from its URL form (``format_event_cursor``), or None when it is not one."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and -(2**63) <= value[0] < 2**63  # a database integer; SQLite refuses larger ones
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    return None


def format_event_cursor(cursor: EventCursor) -> str:
    return json.dumps(list(cursor), separators=(",", ":"))


class ConsoleReads:
    """The console's reads on a provider's store; the overview is shared for ``overview_ttl`` seconds."""

    def __init__(self, provider: StoreProvider, overview_ttl: float = OVERVIEW_TTL) -> None:
        self.provider = provider
        self._ttl = overview_ttl
        self._overview: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    async def overview(self) -> Overview:
        async with self._lock:  # one count at a time; those waiting take its result
            cached = self._overview
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
            rows = await self.provider.store.console_overview(RECENT_ERRORS)
            by_status = dict.fromkeys(STATUSES, 0)
            per_definition: dict[str, dict[str, int]] = {}
            for definition_id, status, count in rows.counts:
                by_status[status] = by_status.get(status, 0) + count
                per_definition.setdefault(definition_id, dict.fromkeys(STATUSES, 0))[status] = count
            definitions = sorted(
                (DefinitionCounts(d, counts, sum(counts.values())) for d, counts in per_definition.items()),
                key=lambda item: (-item.total, item.definition_id),
            )
            result = Overview(
                by_status=by_status,
                definitions=definitions[:MAX_DEFINITIONS],
                definition_count=len(definitions),
                figures=rows.figures,
                events=rows.events,
                subscriptions_open=rows.open_subscriptions,
                errors=rows.errors,
                database_bytes=rows.database_bytes,
                wal_bytes=rows.wal_bytes,
                recent_errors=[
                    RecentError(from_micros(e.error_time), e.workflow_id, e.execution_pointer_id, e.message, name)
                    for e, name in rows.recent_errors
                ],
                read_at=utc_now(),
            )
            self._overview = (time.monotonic(), result)
            return result

    async def events(
        self,
        *,
        processed: bool | None = None,
        event_name: str | None = None,
        event_key: str | None = None,
        before: EventCursor | None = None,
        limit: int = 50,
    ) -> EventPage:
        """Events newest first, filtered, starting after ``before``; ``event_key`` only with a name."""
        rows, more = await self.provider.store.console_events(processed, event_name, event_key, before, limit)
        cursor = (rows[-1].event_time, rows[-1].id) if more and rows else None
        return EventPage([event_from_row(row) for row in rows], cursor)

    async def open_subscriptions(self, event_name: str, event_key: str, limit: int = 100) -> list[EventSubscription]:
        """Open subscriptions waiting for that event, oldest first."""
        rows = await self.provider.store.open_subscriptions(event_name, event_key, limit)
        return [subscription_from_row(row) for row in rows]
