"""What the store returns for the web console's own reads. Backend-neutral: any store returns these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._rows import ErrorRow

if TYPE_CHECKING:
    from ._store import LiveFigures

__all__ = ["OverviewRows"]


@dataclass(frozen=True)
class OverviewRows:
    """The console overview's figures, read in one snapshot."""

    counts: list[tuple[str, str, int]]
    """(workflow_definition_id, status, workflows) for every pair that has workflows."""
    figures: LiveFigures
    events: int
    """Events in all."""
    open_subscriptions: int
    """Subscriptions not terminated."""
    errors: int
    """Execution errors in all."""
    database_bytes: int
    """Size of the database (for SQLite: its file)."""
    wal_bytes: int | None
    """Size of the write-ahead log; None where the store has no file of its own for it
    (PostgreSQL: ``database_bytes`` is ``pg_database_size``)."""
    recent_errors: list[tuple[ErrorRow, str | None]]
    """The errors stored last, newest first, each with its workflow's name where it still exists."""
