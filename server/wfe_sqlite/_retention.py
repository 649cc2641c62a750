"""The retention purger: deletes finished workflows older than the retention, in the background.

Its own small type beside the store (like the checkpointer beside the writer): it only calls
``purge_workflows``, which deletes in small transactions through the group-committing writer, so
the server's other writes keep flowing while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from wfe_client.errors import WfeError
from wfe_client.timeutil import utc_now
from wfe_client.visibility import PURGED_BY_DEFAULT

from ._provider import StoreProvider

__all__ = ["RetentionPurger", "purge_interval"]

LOG = logging.getLogger(__name__)

SHORTEST_INTERVAL = timedelta(seconds=1)
LONGEST_INTERVAL = timedelta(minutes=10)


def purge_interval(retention: timedelta) -> timedelta:
    """How often to purge: a tenth of the retention, from one second up to ten minutes."""
    return min(max(retention / 10, SHORTEST_INTERVAL), LONGEST_INTERVAL)


class RetentionPurger:
    """Every ``interval``, purge COMPLETE and TERMINATED workflows finished before now - ``retention``."""

    def __init__(
        self,
        provider: StoreProvider,
        retention: timedelta,
        interval: timedelta | None = None,
    ) -> None:
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self.retention = retention
        self.interval = interval if interval is not None else purge_interval(retention)
        self.purged = 0
        """Workflows deleted so far (for tests and logs)."""
        self.runs = 0
        """Purges completed so far."""
        self._provider = provider
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background on the running event loop (the first purge right away)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wfe-sqlite-retention")
            LOG.info(
                "retention: purging %s workflows finished more than %s ago, every %s",
                " and ".join(s.name for s in PURGED_BY_DEFAULT),
                self.retention,
                self.interval,
            )

    async def stop(self) -> None:
        """Stop; a purge in progress stops between two batches (what it deleted stays deleted)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> int:
        """One purge now; how many workflows it deleted."""
        deleted = await self._provider.purge_workflows(utc_now() - self.retention, PURGED_BY_DEFAULT)
        self.purged += deleted
        self.runs += 1
        if deleted:
            LOG.info("retention: purged %d finished workflows older than %s", deleted, self.retention)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.purge_once()
            except WfeError as error:  # the store is busy, full or closing: try again next time
                LOG.warning("retention purge failed (will retry in %s): %s", self.interval, error)
            except Exception:
                LOG.exception("retention purge failed (will retry in %s)", self.interval)
            await asyncio.sleep(self.interval.total_seconds())
