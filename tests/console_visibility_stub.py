"""TEMPORARY: list_workflows / search_workflows until the visibility branch lands (then deleted)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Optional

from wfe_client import WorkflowStatus
from wfe_client._time import from_micros, to_micros
from wfe_sqlite import SqlitePersistenceProvider


@dataclass
class Summary:
    id: str
    name: str
    workflow_definition_id: str
    version: int
    status: WorkflowStatus
    reference: Optional[str]
    description: Optional[str]
    create_time: Any
    complete_time: Any
    next_execution: Optional[int]


@dataclass
class Page:
    items: list[Summary]
    next_page_token: Optional[str]


@dataclass
class Found:
    items: list[Summary]
    total: int


def _rows(conn: sqlite3.Connection) -> list[Summary]:
    rows = conn.execute(
        "SELECT id, name, workflow_definition_id, version, status, reference, description, create_time, "
        "complete_time, next_execution, data FROM workflows ORDER BY create_time DESC, id DESC"
    ).fetchall()
    return [
        (Summary(r[0], r[1], r[2], r[3], WorkflowStatus[r[4]], r[5], r[6], from_micros(r[7]),
                 None if r[8] is None else from_micros(r[8]), r[9]), r[10])
        for r in rows
    ]


def _statuses(status: Any) -> Optional[set[str]]:
    if status is None:
        return None
    if isinstance(status, WorkflowStatus):
        return {status.name}
    return {s.name for s in status}


def install() -> None:
    async def list_workflows(self, status=None, definition_id=None, reference=None, created_after=None,
                             created_before=None, page_size=100, page_token=None):
        rows = await self.database.read(_rows)
        wanted = _statuses(status)
        out = [s for s, _ in rows if (wanted is None or s.status.name in wanted)
               and (definition_id is None or s.workflow_definition_id == definition_id)
               and (reference is None or s.reference == reference)
               and (created_after is None or s.create_time >= created_after)
               and (created_before is None or s.create_time < created_before)]
        start = int(page_token or 0)
        page = out[start:start + page_size]
        more = start + page_size < len(out)
        return Page(page, str(start + page_size) if more else None)

    async def search_workflows(self, text, status=None, skip=0, take=100, **_: Any):
        rows = await self.database.read(_rows)
        wanted = _statuses(status)
        words = text.lower().split()
        out = [s for s, data in rows if (wanted is None or s.status.name in wanted)
               and all(w in " ".join([s.name, s.reference or "", s.description or "", data]).lower() for w in words)]
        return Found(out[skip:skip + take], len(out))

    SqlitePersistenceProvider.list_workflows = list_workflows  # type: ignore[attr-defined]
    SqlitePersistenceProvider.search_workflows = search_workflows  # type: ignore[attr-defined]


if __name__ == "__main__":
    import sys

    install()
    from wfe_sqlite.cli import main

    sys.exit(main(sys.argv[1:]))
