"""Every query the store runs is backed by an index: no statement plans a full table scan.

The statements are not copied from the code: the test records every SQL statement the real provider
runs (with its parameters bound) while it exercises every operation, then asks SQLite for the plan
of each one on the same database, without ANALYZE statistics (as a server runs it).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
)
from wfe_sqlite import SqlitePersistenceProvider

_FTS_SHADOW = re.compile(r"'main'\.'workflows_fts_\w+'")
_CHECKED = re.compile(r"^\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", re.IGNORECASE)


async def _exercise(p: SqlitePersistenceProvider) -> None:
    now = datetime.now(UTC)
    ids = []
    for i in range(50):
        w = WorkflowInstance.new("plan", 1, {"i": i})
        w.execution_pointers = [ExecutionPointer.new(0), ExecutionPointer.new(1)]
        w.status = WorkflowStatus.RUNNABLE if i % 2 else WorkflowStatus.COMPLETE
        ids.append(await p.create_new_workflow(w))
    w = await p.get_workflow_instance(ids[0])
    w.execution_pointers.append(ExecutionPointer.new(2))
    await p.persist_workflow(w)
    sub = EventSubscription.new(ids[0], 0, w.execution_pointers[0].id, "evt", "k", now)
    await p.persist_workflow_with_subscriptions(w, [sub])
    await p.get_workflow_instance_by_name(w.name)
    await p.get_workflow_instances(ids[:20])
    await p.get_runnable_instances(now)
    await p.next_definition_sequence("plan")
    for i in range(30):
        await p.create_event(Event.new("evt", f"k{i % 3}", {"i": i}))
    event_ids = await p.get_runnable_events(now + timedelta(seconds=1))
    await p.get_event(event_ids[0])
    await p.get_events("evt", "k1", now + timedelta(seconds=1))
    await p.mark_event_processed(event_ids[0])
    await p.mark_event_unprocessed(event_ids[0])
    for i in range(30):
        await p.create_event_subscription(EventSubscription.new(ids[i], 0, "ptr", "evt", f"k{i % 3}", now))
    await p.get_subscription(sub.id)
    await p.get_subscriptions("evt", "k", now)
    await p.get_first_open_subscription("evt", "k", now)
    assert await p.set_subscription_token(sub.id, "tok", "worker", now + timedelta(minutes=1))
    await p.clear_subscription_token(sub.id, "tok")
    await p.terminate_subscription(sub.id)
    for i in range(30):
        await p.schedule_command(ScheduledCommand.process_workflow(ids[i], i))
    await p.schedule_command(ScheduledCommand.process_workflow(ids[0], 0))

    async def ok(command: ScheduledCommand) -> None:
        if command.data == ids[1]:
            raise RuntimeError("fail once")

    await p.process_commands(now, ok)
    await p.persist_errors([ExecutionError.new(ids[0], "ptr", "boom")])
    await _exercise_visibility(p, ids)


async def _exercise_visibility(p: SqlitePersistenceProvider, ids: list[str]) -> None:
    """Every filter of list and search, paged; delete; purge (dry run and for real)."""
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    for w in await p.get_workflow_instances(ids[:10]):
        w.reference = "ref-" + str(w.data["i"] % 2)
        w.description = "an order to plan"
        await p.persist_workflow(w)
    filters: list[dict[str, Any]] = [
        {},
        {"status": WorkflowStatus.RUNNABLE},
        {"status": [WorkflowStatus.RUNNABLE, WorkflowStatus.COMPLETE]},
        {"definition_id": "plan"},
        {"definition_id": "plan", "status": WorkflowStatus.COMPLETE},
        {"reference": "ref-1"},
        {"reference": "ref-1", "status": WorkflowStatus.COMPLETE, "definition_id": "plan"},
        {"created_after": now - hour, "created_before": now + hour},
        {"status": WorkflowStatus.COMPLETE, "created_after": now - hour, "created_before": now + hour},
        {"definition_id": "plan", "created_after": now - hour},
    ]
    for selected in filters:
        page = await p.list_workflows(page_size=3, **selected)
        await p.list_workflows(page_size=3, page_token=page.next_page_token, **selected)
        await p.search_workflows("order", take=2, **_search_filter(selected))
        await p.search_workflows("plan*", skip=3, take=2, **_search_filter(selected))
    await p.delete_workflow(ids[2])
    older_than = now + hour
    await p.purge_workflows(older_than, dry_run=True)
    await p.purge_workflows(older_than, statuses=[WorkflowStatus.COMPLETE])


def _search_filter(selected: dict[str, Any]) -> dict[str, Any]:
    return {("status" if k == "status" else k): v for k, v in selected.items()}


def _fts_match(step: str) -> bool:
    """A full-text lookup: FTS5 answers MATCH from its index (idxStr ``M...``), not by a scan."""
    return bool(re.match(r"^SCAN \w+ VIRTUAL TABLE INDEX \d+:M", step))


async def test_no_statement_scans_a_table(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    statements: list[str] = []
    try:
        await provider.database.set_trace_callback(statements.append)
        await _exercise(provider)
        await provider.database.set_trace_callback(None)
    finally:
        await provider.close()

    # FTS5 reads and writes its own shadow tables ('main'.'workflows_fts_data', ..._config: a few
    # rows) by key; those statements are its internals, not queries of this project.
    checked = sorted({s for s in statements if _CHECKED.match(s) and not _FTS_SHADOW.search(s)})
    assert any("workflows_fts MATCH" in s for s in checked), "the searches ran"
    assert len(checked) > 20, checked  # the workload really ran the provider's queries
    conn = sqlite3.connect(path)
    scans = {}
    for statement in checked:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
        bad = [step for step in plan if step.startswith("SCAN ") and " USING " not in step and not _fts_match(step)]
        if bad:
            scans[statement] = bad
    conn.close()
    assert not scans, "statements scanning a whole table:\n" + "\n".join(f"{k}\n  -> {v}" for k, v in scans.items())


async def test_runnable_queries_use_their_indexes(tmp_path: Path) -> None:
    """The hot lookups name the index built for them."""
    path = tmp_path / "plans.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    statements: list[str] = []
    try:
        await provider.database.set_trace_callback(statements.append)
        now = datetime.now(UTC)
        await provider.get_runnable_instances(now)
        await provider.get_runnable_events(now)
        await provider.get_subscriptions("e", "k", now)
        await provider.get_events("e", "k", now)
        await provider.database.set_trace_callback(None)
    finally:
        await provider.close()
    conn = sqlite3.connect(path)
    plans = {
        s: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + s))
        for s in statements
        if s.lstrip().upper().startswith("SELECT")
    }
    conn.close()
    expected = ["workflows_runnable", "events_runnable", "subscriptions_open", "events_by_name_key"]
    for index in expected:
        assert any(index in plan for plan in plans.values()), (index, plans)


async def test_lists_read_in_index_order_without_sorting(tmp_path: Path) -> None:
    """Every list query walks an index in the order of the page: no sort of all matching rows."""
    path = tmp_path / "plans.db"
    provider = await SqlitePersistenceProvider.open(f"sqlite://{path}")
    statements: list[str] = []
    try:
        await provider.database.set_trace_callback(statements.append)
        await _exercise(provider)
        await provider.database.set_trace_callback(None)
    finally:
        await provider.close()
    lists = {s for s in statements if s.startswith("SELECT id, name, workflow_definition_id") and "ORDER BY" in s}
    assert len(lists) >= 10, lists
    conn = sqlite3.connect(path)
    sorted_lists = {}
    for statement in lists:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement))
        if "TEMP B-TREE" in plan or "workflows_by_" not in plan:
            sorted_lists[statement] = plan
    purges = [s for s in statements if "coalesce(complete_time, create_time) <" in s]
    assert purges
    for statement in purges:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement))
        assert "workflows_by_age" in plan, (statement, plan)
    conn.close()
    assert not sorted_lists, "\n".join(f"{k}\n  -> {v}" for k, v in sorted_lists.items())


def test_work_queue_sweeps_keep_the_runnable_index(tmp_path: Path) -> None:
    """The cluster's sweeps over due workflows walk ``workflows_runnable`` in order.

    Without statistics SQLite prefers an equality on ``status`` to a range, and the visibility
    indexes (schema version 3) lead with ``status``: without ``INDEXED BY`` these queries read
    every RUNNABLE workflow and sorted them, on each sweep.
    """
    from wfe_sqlite._queue_store import WorkEffects, next_due_micros, queue_newly_due, stranded_workflows
    from wfe_sqlite._schema import ensure_schema

    conn = sqlite3.connect(tmp_path / "plans.db", isolation_level=None)
    ensure_schema(conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    conn.execute("BEGIN IMMEDIATE")
    queue_newly_due(conn, now_us - 10_000_000, now_us, WorkEffects())
    next_due_micros(conn, now_us)
    stranded_workflows(conn, (0, ""), now_us, now_us, 100)
    conn.execute("ROLLBACK")
    conn.set_trace_callback(None)
    sweeps = [s for s in statements if "FROM workflows" in s and "status = 'RUNNABLE'" in s and "WHERE id = " not in s]
    assert len(sweeps) == 3, statements
    for statement in sweeps:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement))
        assert "workflows_runnable" in plan and "workflows_by_" not in plan, (statement, plan)
    conn.close()
