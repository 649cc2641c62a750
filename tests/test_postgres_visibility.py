"""PostgreSQL only: visibility with several servers on one database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from wfe_client import WorkflowInstance, WorkflowStatus
from wfe_sqlite import open_provider

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


async def test_servers_purging_together_delete_each_workflow_once(pg_url: str) -> None:
    """Two stores (two servers' pools) purge the same 1,500 workflows at once while a third keeps
    persisting a live workflow: between them every finished workflow goes exactly once, and the
    live one is untouched."""
    stores = [await open_provider(pg_url) for _ in range(3)]
    try:
        first, second, writer = stores

        async def create(n: int) -> None:
            w = WorkflowInstance.new("old", 1, {"n": n, "word": "finished"})
            w.status = WorkflowStatus.COMPLETE if n % 2 else WorkflowStatus.TERMINATED
            w.create_time = LONG_AGO + timedelta(seconds=n)
            w.complete_time = w.create_time
            await first.create_new_workflow(w)

        for start in range(0, 1500, 100):
            await asyncio.gather(*(create(n) for n in range(start, start + 100)))
        live = WorkflowInstance.new("live", 1, {"word": "finished"})
        live.create_time = LONG_AGO
        await writer.create_new_workflow(live)
        done = asyncio.Event()

        async def keep_persisting() -> int:
            count = 0
            while not done.is_set():
                live.data = {"word": "finished", "count": count}
                await writer.persist_workflow(live)
                count += 1
            return count

        persisting = asyncio.ensure_future(keep_persisting())
        purged = await asyncio.gather(*(s.purge_workflows(LONG_AGO + timedelta(days=1)) for s in (first, second)))
        done.set()
        persists = await persisting
        assert sum(purged) == 1500, purged
        assert persists > 0
        assert await first.purge_workflows(LONG_AGO + timedelta(days=1)) == 0
        remaining = await second.list_workflows()
        assert [s.id for s in remaining.items] == [live.id]
        found = await second.search_workflows("finished")
        assert found.total == 1 and found.items[0].id == live.id
        assert (await writer.get_workflow_instance(live.id)).data == live.data
    finally:
        for store in stores:
            await store.close()
