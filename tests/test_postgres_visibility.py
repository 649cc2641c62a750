"""PostgreSQL only: visibility with several servers on one database, and the schema upgrade that brings it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from wfe_client import WorkflowInstance, WorkflowStatus
from wfe_sqlite import open_provider
from wfe_sqlite._postgres_store import MIGRATIONS, SCHEMA_VERSION

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


async def test_a_version_2_database_is_upgraded_and_its_workflows_become_searchable(fresh_pg_url: str) -> None:
    """Migration 3 on a database that already holds workflows: the indexes are built and every
    workflow's full text is filled in; later writes keep it in step."""
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version in (1, 2):
            async with conn.transaction():
                await conn.execute(MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        await conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, status, reference, description, data, "
            "create_time) SELECT 'old-' || i, 'old-' || i, 'legacy', 1, 'RUNNABLE', 'ref-' || i, 'Crème brûlée', "
            '\'{"city": "Lisbon", "n": \' || i || \'}\', i FROM generate_series(1, 30) AS i'
        )
    finally:
        await conn.close()
    provider = await open_provider(fresh_pg_url)
    try:
        assert (await provider.search_workflows("lisbon creme", take=100)).total == 30
        assert [s.id for s in (await provider.search_workflows("ref-7")).items] == ["old-7"]
        page = await provider.list_workflows(definition_id="legacy", status=WorkflowStatus.RUNNABLE, page_size=5)
        assert [s.id for s in page.items] == [f"old-{i}" for i in range(30, 25, -1)]
        old = await provider.get_workflow_instance("old-3")
        old.description = "now a tarte tatin"
        await provider.persist_workflow(old)
        assert [s.id for s in (await provider.search_workflows("tatin")).items] == ["old-3"]
        assert (await provider.search_workflows("creme", take=100)).total == 29
    finally:
        await provider.close()
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION >= 3
    finally:
        await conn.close()
