"""``DueTimer``: queues workflows and events at the moment their time comes.

It is armed on the earliest future ``next_execution`` / ``event_time`` it has heard of: writes in
this process report the due times they store, and the cluster re-reads the earliest one from the
database when another process changed the file and after every stranded-work sweep. When it fires
it queues, in one write job, the work that came due since it last fired (see
``_queue_store.queue_newly_due``) and arms itself on the next due time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable

from ._database import Database
from ._logging import RetriedFailure
from ._queue_store import WorkEffects, next_due_micros, queue_newly_due
from ._work_queue import now_micros

__all__ = ["MAX_SLEEP", "DueTimer"]

LOG = logging.getLogger(__name__)

MAX_SLEEP = 60.0
"""Longest single sleep (seconds): a far due time is re-checked on the way (wall-clock jumps)."""
_LATE = 0.001
"""Fire this much after the due instant, so the instant has passed on the database's clock too."""


def _queue_due(conn: sqlite3.Connection, since: int, effects: WorkEffects) -> tuple[int, int | None]:
    """Queue what came due since ``since``: (now, the next due time after now)."""
    now = now_micros()
    queue_newly_due(conn, since, now, effects)
    return now, next_due_micros(conn, now)


class DueTimer:
    """One timer per database, armed on the earliest known future due time."""

    def __init__(self, db: Database, written: Callable[[WorkEffects], None]) -> None:
        self._db = db
        self._written = written
        self._armed_us: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._watermark_us: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False
        self._failure = RetriedFailure(LOG, "due timer job")
        self.fired = 0
        """Times the timer ran its job (for tests)."""

    @property
    def armed_at(self) -> int | None:
        """The due time (epoch microseconds) the timer is armed on, if any."""
        return self._armed_us

    def start(self) -> None:
        """Begin: work due from now on is queued when its time comes (earlier work is the sweep's)."""
        if self._watermark_us is None:
            self._watermark_us = now_micros()

    def offer(self, due_us: int) -> None:
        """A due time was stored: arm the timer on it if it is earlier than the one armed."""
        if self._watermark_us is None or self._closed:
            return
        if self._armed_us is not None and self._armed_us <= due_us:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_us = due_us
        delay = min(MAX_SLEEP, max(0.0, (due_us - now_micros()) / 1e6) + _LATE)
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_us = None
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="wfe-sqlite-due-timer")

    async def _run(self) -> None:
        while not self._closed:
            self._again = False
            effects = WorkEffects()
            try:
                now, upcoming = await self._db.write(
                    functools.partial(_queue_due, since=self._watermark_us or 0, effects=effects)
                )
            except Exception as error:  # noqa: BLE001 - try again shortly; the sweep is the backstop
                self._failure.failed(error, "retrying in 1 s")
                if not self._closed:
                    self.offer(now_micros() + 1_000_000)
                return
            self._failure.succeeded()
            self.fired += 1
            self._watermark_us = now
            self._written(effects)
            if upcoming is not None:
                self.offer(upcoming)
            if not self._again:
                return

    async def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
