"""``RequeueJob``: the stranded-work job. Every interval it queues again the work nobody will do.

Each sweep queues, in write jobs of at most ``WRITE_BATCH`` items: work of hand-out records older
than the interval (handed out, never queued again: the consumer died or dropped it), the workflows
of leases that ran out since the last sweep (their holder died holding them), and the stranded work
a scan of due workflows and events found in a read snapshot (in no queue, not handed out within the
interval, under no live lease). It also deletes the leases that ran out more than
``EXPIRED_LEASE_KEEP_US`` ago (``DROP_BATCH`` per write job, at most ``DROP_JOBS`` jobs a sweep).
The scan reads at most ``SCAN_CHUNK`` rows of each kind per sweep
and continues where it stopped; the first sweep after start scans everything (work that came due
while no server ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable

from . import _locks_store
from ._database import Database
from ._locks_store import DROP_BATCH, DROP_JOBS, drop_expired
from ._logging import RetriedFailure
from ._queue_store import (
    Candidate,
    WorkEffects,
    expired_leases,
    next_due_micros,
    requeue_stranded,
    stale_hand_outs,
    stranded_events,
    stranded_workflows,
)
from ._work_queue import now_micros

__all__ = ["DEFAULT_REQUEUE_INTERVAL", "HAND_OUT_BATCH", "SCAN_CHUNK", "RequeueJob"]

LOG = logging.getLogger(__name__)

DEFAULT_REQUEUE_INTERVAL = 2.0
"""Seconds between sweeps, and how long a handed-out item may stay unlocked before it is queued again."""
SCAN_CHUNK = 2000
"""Due workflows (and, separately, events) a sweep looks at, continuing where the last one stopped."""
HAND_OUT_BATCH = 1000
"""Stale hand-out records a sweep settles (the rest wait for the next sweep)."""
WRITE_BATCH = 1000
"""Stranded items checked and queued per write job."""

_START: tuple[int, str] = (-(2**63), "")
Scan = Callable[[sqlite3.Connection, tuple[int, str], int, int, int], tuple[list[Candidate], tuple[int, str] | None]]


def _scan_chunk(
    conn: sqlite3.Connection, scan: Scan, after: tuple[int, str], now: int, interval_us: int
) -> tuple[list[Candidate], tuple[int, str] | None]:
    return scan(conn, after, now, now - interval_us, SCAN_CHUNK)


def _look(
    conn: sqlite3.Connection, since: int, interval_us: int
) -> tuple[int, list[Candidate], list[tuple[str, int]], int | None, int | None]:
    """(now, stale hand-out records, leases that ran out since ``since``, the next due time, the
    time before which expired leases are to be deleted: None when there are none)."""
    now = now_micros()
    # Only leases the lease look above has seen run out (at or before ``since``) are deleted.
    drop_before = min(since, now - _locks_store.EXPIRED_LEASE_KEEP_US)
    old = conn.execute("SELECT 1 FROM locks WHERE expire_time <= ? LIMIT 1", (drop_before,)).fetchone()
    return (
        now,
        stale_hand_outs(conn, now - interval_us, HAND_OUT_BATCH),
        expired_leases(conn, since, now),
        next_due_micros(conn, now),
        None if old is None else drop_before,
    )


def _requeue(
    conn: sqlite3.Connection,
    settle: tuple[list[Candidate], list[tuple[str, int]]],
    batch: list[Candidate],
    interval_us: int,
    effects: WorkEffects,
) -> int:
    now = now_micros()
    return requeue_stranded(conn, now, now - interval_us, settle[0], settle[1], batch, effects)


class RequeueJob:
    """Sweeps for stranded work every ``interval`` seconds until closed."""

    def __init__(
        self,
        db: Database,
        written: Callable[[WorkEffects], None],
        offer_due: Callable[[int], None],
        interval: float = DEFAULT_REQUEUE_INTERVAL,
    ) -> None:
        if not interval > 0:
            raise ValueError("the requeue interval must be > 0 seconds")
        self._db = db
        self._written = written
        self._offer_due = offer_due
        self.interval = interval
        self._lease_watermark_us = 0
        self._cursors: dict[str, tuple[int, str] | None] = {"workflows": None, "events": None}
        self._task: asyncio.Task[None] | None = None
        self._failure = RetriedFailure(LOG, "stranded-work sweep")
        self.sweeps = 0
        """Sweeps completed (for tests and metrics)."""
        self.requeued = 0
        """Items queued again by the sweeps (for tests and metrics)."""
        self.dropped_leases = 0
        """Expired leases deleted by the sweeps (for tests)."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="wfe-sqlite-requeue")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        full = True
        while True:
            try:
                await self.sweep(full=full)
                full = False
                self._failure.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a failed sweep is retried on the next tick
                self._failure.failed(error, f"next try in {self.interval:.1f} s")
            await asyncio.sleep(self.interval)

    async def _scan(self, name: str, scan: Scan, full: bool) -> list[Candidate]:
        found: list[Candidate] = []
        interval_us = int(self.interval * 1e6)
        while True:
            after = self._cursors[name] or _START
            now = now_micros()
            chunk, more = await self._db.read(
                functools.partial(_scan_chunk, scan=scan, after=after, now=now, interval_us=interval_us)
            )
            found.extend(chunk)
            self._cursors[name] = more
            if more is None or not full:
                return found

    async def _drop_expired(self, before_us: int) -> None:
        for _ in range(DROP_JOBS):
            dropped = await self._db.write(functools.partial(drop_expired, before_us=before_us))
            self.dropped_leases += dropped
            if dropped < DROP_BATCH:
                return

    async def sweep(self, full: bool = False) -> int:
        """One sweep (``full``: scan every due item, not one chunk); the number of items queued again.

        What to look at is read on the read pool; the writer is only used when there is something
        (an idle sweep writes nothing).
        """
        candidates = await self._scan("workflows", stranded_workflows, full)
        candidates += await self._scan("events", stranded_events, full)
        interval_us = int(self.interval * 1e6)
        since = self._lease_watermark_us
        seen_at, hand_outs, leases, upcoming, drop_before = await self._db.read(
            functools.partial(_look, since=since, interval_us=interval_us)
        )
        queued = 0
        # Small write jobs, so that other writes keep flowing while a large backlog is queued.
        batches = [candidates[i : i + WRITE_BATCH] for i in range(0, len(candidates), WRITE_BATCH)] or [[]]
        for index, batch in enumerate(batches):
            settle = (hand_outs, leases) if index == 0 else ([], [])
            if not (batch or settle[0] or settle[1]):
                continue
            effects = WorkEffects()
            queued += await self._db.write(
                functools.partial(_requeue, settle=settle, batch=batch, interval_us=interval_us, effects=effects)
            )
            self._written(effects)
        self._lease_watermark_us = seen_at
        if drop_before is not None:
            await self._drop_expired(drop_before)
        self.sweeps += 1
        self.requeued += queued
        if upcoming is not None:
            self._offer_due(upcoming)
        if queued:
            LOG.info("queued %d stranded items again", queued)
        return queued
