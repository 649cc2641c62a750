"""PostgreSQL: every visibility and console query, and the workflow read, has an index behind it.

The statements are the store's own (the builders and constants of ``_postgres_visibility``, with
real parameters), planned by PostgreSQL on a real database with sequential scans priced out
(``enable_seqscan = off``: a table this small is otherwise scanned whatever indexes exist; a query
no index can serve still plans a ``Seq Scan``). Lists must also come out of their indexes in order:
no ``Sort`` node, whatever the number of statuses (but with a reference, which few workflows share).

Pricing sequential scans out hides a plan that wrongly prefers one: the last tests build the case
that made every read of a workflow's pointers scan the table (one workflow holding most of them,
then ANALYZE) and plan with sequential scans allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from wfe_client import ExecutionError, ExecutionPointer, WorkflowInstance, WorkflowStatus
from wfe_sqlite import open_provider
from wfe_sqlite._postgres_store import (
    _READ_POINTERS,
    _STORED,
    MIGRATIONS,
    SCHEMA_VERSION,
    PostgresConfig,
    PostgresStore,
    _read_sql,
    migrate_url,
)
from wfe_sqlite._postgres_visibility import (
    COUNT_PURGEABLE,
    DELETE_WORKFLOW,
    PURGE_BATCH_SQL,
    events_query,
    list_query,
    search_tsquery,
)
from wfe_sqlite._rows import PointerRow, WorkflowRow, workflow_row
from wfe_sqlite._visibility_rows import FilterRow

ALL = ("RUNNABLE", "SUSPENDED", "COMPLETE", "TERMINATED")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(conn: asyncpg.Connection, sql: str, *values: Any) -> list[dict[str, Any]]:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        [(text,)] = await conn.fetch("EXPLAIN (FORMAT JSON) " + sql, *values)
    return list(_nodes(json.loads(text)[0]["Plan"]))


def _scans(nodes: list[dict[str, Any]]) -> set[str]:
    """The indexes the plan reads (and "Seq Scan on T" for a table read whole)."""
    found = set()
    for node in nodes:
        if "Index Name" in node:
            found.add(node["Index Name"])
        if node["Node Type"] == "Seq Scan":
            found.add(f"Seq Scan on {node['Relation Name']}")
    return found


async def test_every_visibility_and_console_query_reads_an_index(pg_url: str) -> None:
    provider = await open_provider(pg_url)
    try:
        for i in range(40):
            w = WorkflowInstance.new(("order", "invoice")[i % 2], 1, {"i": i, "word": "kiwi"})
            w.status = list(WorkflowStatus)[i % 4]
            w.reference = f"ref-{i % 5}"
            w.execution_pointers = [ExecutionPointer.new(0)]
            await provider.create_new_workflow(w)
            await provider.persist_errors([ExecutionError.new(w.id, "p", "boom")])
    finally:
        await provider.close()
    conn = await asyncpg.connect(pg_url)
    try:
        # A store of some size, so that the plans are the ones a real store gets.
        await conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, status, reference, data, "
            "create_time, complete_time) SELECT 'bulk-' || i, 'bulk-' || i, 'def-' || (i % 50), 1, "
            "(ARRAY['RUNNABLE', 'SUSPENDED', 'COMPLETE', 'TERMINATED'])[1 + i % 4], 'ref-' || (i % 5000), "
            "'{\"n\": ' || i || '}', 1000000::bigint * i, CASE WHEN i % 4 >= 2 THEN 1000000::bigint * i + 5 END "
            "FROM generate_series(1, 20000) AS i"
        )
        await conn.execute(
            "INSERT INTO events (id, event_name, event_key, event_data, event_time, is_processed) "
            "SELECT 'event-' || i, 'name-' || (i % 100), 'key-' || (i % 1000), 'null', 1000000::bigint * i, "
            "CASE WHEN i % 20 = 0 THEN 0 ELSE 1 END FROM generate_series(1, 20000) AS i"
        )
        await conn.execute("ANALYZE")
        window = FilterRow((), None, None, 1, 2**60)
        lists = {
            "every status": (FilterRow((), None, None, None, None), "workflows_by_status"),
            "one status": (FilterRow(("COMPLETE",), None, None, None, None), "workflows_by_status"),
            "two statuses": (FilterRow(("COMPLETE", "TERMINATED"), None, None, None, None), "workflows_by_status"),
            "definition": (FilterRow((), "def-4", None, None, None), "workflows_by_definition"),
            "definition and status": (FilterRow(("RUNNABLE",), "def-4", None, None, None), "workflows_by_definition"),
            "reference": (FilterRow(("RUNNABLE",), None, "ref-1", None, None), "workflows_by_reference"),
            "window": (window, "workflows_by_status"),
        }
        for label, (f, index) in lists.items():
            for after in (None, (2**60, "z")):
                # A page far smaller than what matches (a set no bigger than a page is read whole
                # and sorted: the planner rightly prefers that).
                sql, values = list_query(f, 11, after)
                nodes = await _plan(conn, sql, *values)
                scans = _scans(nodes)
                assert index in scans and not any(s.startswith("Seq Scan") for s in scans), (label, after, scans)
                if f.reference is None:  # few workflows share a reference: those may be sorted
                    assert scans == {index}, (label, after, scans)
                    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), (label, sql)

        query = await search_tsquery(conn, "kiwi or*")
        search = await _plan(conn, "SELECT id FROM workflows WHERE search @@ $1::tsquery", query)
        assert _scans(search) == {"workflows_search"}, search

        purge = await _plan(conn, PURGE_BATCH_SQL, ["COMPLETE", "TERMINATED"], 2**60, 100)
        assert "workflows_by_age" in _scans(purge) and not any("Seq Scan" in s for s in _scans(purge)), purge
        count = await _plan(conn, COUNT_PURGEABLE, ["COMPLETE"], 2**60)
        assert _scans(count) == {"workflows_by_age"}, count
        delete = _scans(await _plan(conn, DELETE_WORKFLOW, "some-id"))
        expected = {"workflows_pkey", "subscriptions_by_workflow", "execution_errors_by_workflow", "work_queue_pkey"}
        assert expected <= delete, delete
        assert not any("Seq Scan" in s for s in delete), delete

        events = {
            (None, None, None): "events_by_time",
            (False, None, None): "events_runnable",
            (None, "name-7", None): "events_by_name_key",
            (True, "name-7", "key-7"): "events_by_name_key",
        }
        for (processed, name, key), index in events.items():
            for after in (None, (2**60, "z")):
                sql, values = events_query(processed, name, key, after, 50)
                nodes = await _plan(conn, sql, *values)
                assert _scans(nodes) == {index}, (processed, name, key, _scans(nodes))
    finally:
        await conn.close()


async def test_a_workflow_read_takes_the_workflow_and_its_pointers_from_indexes(pg_url: str) -> None:
    """Gets, batch gets and gets by name: one statement, the workflow by its key (or name), its
    pointers by ``execution_pointers_by_workflow``, in position order without a sort."""
    provider = await open_provider(pg_url)
    await provider.close()  # the schema
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, status, data, create_time) "
            "SELECT 'w-' || i, 'w-' || i, 'def', 1, 'RUNNABLE', '{}', i FROM generate_series(1, 20000) AS i"
        )
        await conn.execute(
            "INSERT INTO execution_pointers (workflow_id, position, id, step_id, active, status, event_published, "
            "retry_count, children, scope, extension_attributes) SELECT 'w-' || (i / 3), i % 3, 'p-' || i, 0, 1, "
            "'PENDING', 0, 0, '[]', '[]', '{}' FROM generate_series(3, 60002) AS i"
        )
        await conn.execute("ANALYZE")
        reads = {
            "id = $1": ("w-7", "workflows_pkey"),
            "id = ANY($1::text[])": (["w-7", "w-9", "w-11"], "workflows_pkey"),
            "name = $1 AND name <> ''": ("w-7", "workflows_name"),
        }
        for where, (value, index) in reads.items():
            nodes = await _plan(conn, _read_sql(where), value)
            assert _scans(nodes) == {index, "execution_pointers_by_workflow"}, (where, _scans(nodes))
            assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), where
        # The pointers of a workflow read as rows (one of more than _ROWS_ABOVE).
        nodes = await _plan(conn, _READ_POINTERS, ["w-7"])
        assert _scans(nodes) == {"execution_pointers_by_workflow"}, _scans(nodes)
    finally:
        await conn.close()


def _pointer(workflow_id: str, position: int) -> PointerRow:
    return PointerRow(
        workflow_id, position, f"p{position}", position % 7, 1, "PENDING", None, None, None, None, None, None,
        0, None, "step", 0, "[]", None, None, None, '["a"]', "{}",
    )  # fmt: skip


async def _create(store: PostgresStore, name: str, count: int) -> tuple[WorkflowRow, list[PointerRow]]:
    w = WorkflowInstance.new("skew", 1, {})
    w.next_execution = None
    row = workflow_row(w)._replace(name=name)
    pointers = [_pointer(row.id, i) for i in range(count)]
    await store.create_workflow(row, pointers)
    return row, pointers


async def _pointer_scans(store: PostgresStore) -> tuple[int, int]:
    """(sequential, index) scans of ``execution_pointers`` so far, the store's own included: a
    PostgreSQL 15 backend keeps its counts until it is idle and a second has passed since it last
    reported them; ``pg_stat_force_next_flush`` has the store's one connection report them before it
    answers that statement."""

    async def read(conn: asyncpg.Connection) -> tuple[int, int]:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        row = await conn.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'execution_pointers'"
        )
        return int(row[0]), int(row[1])

    return await store.run(read)


async def test_a_huge_workflow_does_not_turn_other_workflows_pointers_into_table_scans(fresh_pg_url: str) -> None:
    """One workflow holding most of ``execution_pointers`` (a runaway one) and ANALYZE (autovacuum's)
    having seen it: every other workflow's pointers must still be read and written by index.

    PostgreSQL estimates the pointers of a workflow id the plan does not know (a prepared statement's
    generic plan, the read's correlated subquery, the foreign key's cascade) as rows / distinct ids,
    few here. A prepared statement runs its generic plan once that costs no more than its first five
    runs did: after persists of the huge workflow (each a scan of the table), the persist of another
    workflow scanned the table too. The store's operations run a dozen times each on its one
    connection, and PostgreSQL's own counts of scans of the table must show index scans and no
    sequential one."""
    store = await PostgresStore.open(PostgresConfig(fresh_pg_url, pool_size=1))
    try:
        # Analyzed while the huge one was nearly all there was (3 distinct ids); the rest come later.
        huge, huge_pointers = await _create(store, "huge", 30_000)
        for i in range(2):
            await _create(store, f"early-{i}", 10)
        await store.run(lambda conn: conn.execute("ANALYZE execution_pointers"))
        small = [await _create(store, f"small-{i}", 10) for i in range(24)]
        wide, wide_pointers = await _create(store, "wide", 40)  # persisted by reading the stored pointers
        for i in range(6):  # the huge one persisted first: its statements' generic plans are the ones kept
            await store.persist_workflow(huge, [*huge_pointers[:-1], huge_pointers[-1]._replace(retry_count=i + 1)])
        before = await _pointer_scans(store)
        for i, (row, pointers) in enumerate(small[:12]):
            assert len((await store.workflow(row.id))[1]) == 10
            assert len((await store.workflow_by_name(row.name))[1]) == 10
            assert len(await store.workflows([row.id, wide.id])) == 2
            assert await store.workflow_details(row.id) is not None
            await store.persist_workflow(row, [*pointers[:-1], pointers[-1]._replace(retry_count=1)])
            await store.persist_workflow(wide, [*wide_pointers[:-1], wide_pointers[-1]._replace(retry_count=i + 1)])
            await store.delete_workflow(small[12 + i][0].id)
        seq_scans, index_scans = (after - then for after, then in zip(await _pointer_scans(store), before, strict=True))
    finally:
        await store.close()
    assert index_scans >= 12 * 7, index_scans  # the counts are seen
    assert seq_scans == 0, seq_scans


async def _generic_plan(conn: asyncpg.Connection, sql: str, value: str) -> set[str]:
    """What ``_scans`` finds in the generic plan of ``sql`` (one text parameter): the plan a prepared
    statement keeps once it has run five times, when it costs no more than those runs did."""
    await conn.execute(f"PREPARE generic (text) AS {sql}")
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            [(text,)] = await conn.fetch(f"EXPLAIN (FORMAT JSON) EXECUTE generic ('{value}')")
    finally:
        await conn.execute("DEALLOCATE generic")
    return _scans(list(_nodes(json.loads(text)[0]["Plan"])))


async def test_an_upgraded_database_has_the_pointer_estimate_at_once(fresh_pg_url: str) -> None:
    """A database of schema version 3 whose statistics already saw a huge workflow: the upgrade
    (``migrate``, which ``wfe-sqlite migrate`` and every server's start run) sets the estimate and
    analyzes again, so a generic plan of a workflow's pointers reads them by index at once, not
    after autovacuum's next analyze."""
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version in (1, 2, 3):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        await conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, status, data, create_time) "
            "SELECT 'w-' || i, 'w-' || i, 'def', 1, 'RUNNABLE', '{}', i FROM generate_series(0, 1) AS i"
        )
        await conn.execute(
            "INSERT INTO execution_pointers (workflow_id, position, id, step_id, active, status, event_published, "
            "retry_count, children, scope, extension_attributes) "
            "SELECT CASE WHEN i < 50000 THEN 'w-0' ELSE 'w-1' END, i, 'p-' || i, 0, 1, "
            "'PENDING', 0, 0, '[]', '[]', '{}' FROM generate_series(0, 50009) AS i"
        )
        await conn.execute("ANALYZE")
        assert "Seq Scan on execution_pointers" in await _generic_plan(conn, _STORED, "w-1")
        assert await migrate_url(fresh_pg_url) == (3, SCHEMA_VERSION)
        scans = await _generic_plan(conn, _STORED, "w-1")  # (two workflows: those are read whole)
        assert "execution_pointers_by_workflow" in scans and "Seq Scan on execution_pointers" not in scans, scans
    finally:
        await conn.close()
