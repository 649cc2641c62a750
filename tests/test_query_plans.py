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

    checked = sorted({s for s in statements if _CHECKED.match(s)})
    assert len(checked) > 20, checked  # the workload really ran the provider's queries
    conn = sqlite3.connect(path)
    scans = {}
    for statement in checked:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
        bad = [step for step in plan if step.startswith("SCAN ") and " USING " not in step]
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
