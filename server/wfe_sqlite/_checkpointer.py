"""The background checkpointer: copies the WAL into the database file, off the writer's path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from ._connection import ConnectionThread
from ._logging import RetriedFailure

__all__ = ["CHECKPOINT_INTERVAL", "Checkpointer"]

LOG = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.5
"""Seconds between background WAL checkpoints (skipped when nothing was written)."""


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


class Checkpointer:
    """Runs a PASSIVE checkpoint every ``CHECKPOINT_INTERVAL`` on a connection of its own.

    A PASSIVE checkpoint takes no lock that the writer or readers wait for; once it has copied
    every frame, the writer's next transaction starts the WAL over, so the WAL stays about as large
    as the writes of one interval. ``commits`` tells it whether anything was written since.
    """

    def __init__(self, connection: ConnectionThread, commits: Callable[[], int]) -> None:
        self._connection = connection
        self._commits = commits
        self._task: asyncio.Task[None] | None = None
        self._failure = RetriedFailure(LOG, "background WAL checkpoint")
        self.checkpoints = 0
        """Checkpoints run (for tests and metrics)."""

    def start(self) -> None:
        """Start checkpointing in the background (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="wfe-sqlite-checkpointer")

    async def _loop(self) -> None:
        seen = self._commits()
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            if self._commits() == seen:
                continue
            seen = self._commits()
            try:
                await self._connection.run(_passive_checkpoint)
                self.checkpoints += 1
                self._failure.succeeded()
            except sqlite3.Error as error:
                self._failure.failed(error, "will retry")

    async def close(self) -> None:
        """Stop checkpointing and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._connection.close()
