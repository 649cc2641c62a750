"""``PendingPostgresReads``: the visibility and console operations not yet written for PostgreSQL.

A placeholder base of ``PostgresStore`` so the store can be opened while the PostgreSQL visibility
and console work (schema version 3) is done separately; each operation raises ``NotImplementedError``
naming itself. Delete this module (and the base) once ``PostgresStore`` implements them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._console_rows import OverviewRows
from ._rows import EventRow, PageKey, SubscriptionRow
from ._store import Store
from ._visibility_rows import DetailsRows, FilterRow, SummaryRow

__all__ = ["PendingPostgresReads"]


def _pending(operation: str) -> NotImplementedError:
    return NotImplementedError(f"{operation} is not available on PostgreSQL yet")


class PendingPostgresReads(Store):
    """Visibility and console reads that PostgreSQL does not have yet."""

    async def list_workflows(self, filter: FilterRow, limit: int, after: PageKey | None) -> list[SummaryRow]:
        raise _pending("ListWorkflows")

    async def search_workflows(
        self, text: str, filter: FilterRow, skip: int, take: int
    ) -> tuple[list[SummaryRow], int]:
        raise _pending("SearchWorkflows")

    async def delete_workflow(self, id: str) -> None:
        raise _pending("DeleteWorkflow")

    async def count_purgeable(self, statuses: Sequence[str], older_than_us: int) -> int:
        raise _pending("PurgeWorkflows")

    async def purge_workflows(self, statuses: Sequence[str], older_than_us: int) -> int:
        raise _pending("PurgeWorkflows")

    async def workflow_details(self, id: str) -> DetailsRows | None:
        raise _pending("workflow details")

    async def console_overview(self, recent_errors: int) -> OverviewRows:
        raise _pending("the console")

    async def console_events(
        self,
        processed: bool | None,
        event_name: str | None,
        event_key: str | None,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[EventRow], bool]:
        raise _pending("the console")

    async def open_subscriptions(self, event_name: str, event_key: str, limit: int) -> list[SubscriptionRow]:
        raise _pending("the console")
