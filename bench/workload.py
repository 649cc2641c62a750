"""The benchmark's work: payloads, workflows and one call of each operation, shared by every client.

Every target does the same thing per operation (bench/rust/src/main.rs mirrors this file):

- ``create``: ``create_new_workflow`` of a workflow with 3 pointers and ~1 KiB of JSON data;
- ``get``: ``get_workflow_instance`` of one of the workflows the client created at set-up;
- ``batch_get``: ``get_workflow_instances`` of 100 ids (its figure counts calls; x100 workflows);
- ``persist``: ``persist_workflow`` of a set-up workflow with changed data;
- ``create_event``: ``create_event`` with ~1 KiB of data;
- ``runnable``: ``get_runnable_instances(now)`` on a store where exactly 100 workflows are due;
- ``set_token``: ``set_subscription_token`` on a set-up subscription (a compare-and-set write);
- ``commands``: ``schedule_command`` of a due command, then ``process_commands(now)`` with a no-op handler.

Workflows the benchmark creates are due a day later, so only the 100 set-up ones are runnable.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from wfe_client import (
    Event,
    EventSubscription,
    ExecutionPointer,
    PersistenceProvider,
    ScheduledCommand,
    WorkflowInstance,
)

OPS = ("create", "get", "batch_get", "persist", "create_event", "runnable", "set_token", "commands")
DUE = 100
BATCH = 100
DAY_MS = 86_400_000


def payload(n: int) -> dict[str, Any]:
    """About 1 KiB of JSON (the same shape as the Rust bench's)."""
    return {
        "order": n,
        "customer": {"id": f"customer-{n % 1000}", "email": "someone@example.com", "tier": "gold"},
        "items": [{"sku": f"SKU-{n}-{i}", "qty": i + 1, "price": 12.5 + i} for i in range(8)],
        "note": "x" * 420,
    }


def workflow(n: int, due: bool = False) -> WorkflowInstance:
    """A workflow with 3 pointers and ~1 KiB of data; not due for a day unless ``due``."""
    w = WorkflowInstance.new("bench-flow", 1, payload(n))
    w.name = f"bench-{w.id}"
    w.next_execution = 0 if due else int(time.time() * 1000) + DAY_MS
    for step in range(3):
        p = ExecutionPointer.new(step)
        p.step_name = f"step-{step}"
        w.execution_pointers.append(p)
    return w


def now() -> datetime:
    return datetime.now(UTC)


class Prepared:
    """What one client set up for an operation."""

    def __init__(self) -> None:
        self.workflows: list[WorkflowInstance] = []
        self.subscriptions: list[str] = []


async def setup(p: PersistenceProvider, op: str, tasks: int, setup_due: bool) -> Prepared:
    prep = Prepared()
    if op in ("get", "persist", "batch_get"):
        for i in range(BATCH if op == "batch_get" else max(tasks, 16)):
            w = workflow(i)
            await p.create_new_workflow(w)
            prep.workflows.append(w)
    elif op == "set_token":
        for i in range(max(tasks, 16)):
            s = EventSubscription.new(str(uuid.uuid4()), i, str(uuid.uuid4()), "bench.event", f"key-{i}", now())
            prep.subscriptions.append(await p.create_event_subscription(s))
    elif op == "runnable" and setup_due:
        have = len(await p.get_runnable_instances(now()))
        for i in range(have, DUE):
            await p.create_new_workflow(workflow(i, due=True))
    return prep


async def _noop(_command: ScheduledCommand) -> None:
    return None


async def one(p: PersistenceProvider, op: str, prep: Prepared, task: int, n: int) -> None:
    """One call (or, for ``commands``, one schedule plus one process) of ``op``."""
    if op == "create":
        await p.create_new_workflow(workflow(n))
    elif op == "get":
        await p.get_workflow_instance(prep.workflows[(task + n) % len(prep.workflows)].id)
    elif op == "batch_get":
        got = await p.get_workflow_instances([w.id for w in prep.workflows])
        assert len(got) == len(prep.workflows)
    elif op == "persist":
        w = prep.workflows[task % len(prep.workflows)]
        w.data["order"] = n
        await p.persist_workflow(w)
    elif op == "create_event":
        await p.create_event(Event.new("bench.event", f"key-{n}", payload(n)))
    elif op == "runnable":
        await p.get_runnable_instances(now())
    elif op == "set_token":
        sid = prep.subscriptions[task % len(prep.subscriptions)]
        await p.set_subscription_token(sid, str(uuid.uuid4()), "bench-worker", now())
    elif op == "commands":
        await p.schedule_command(ScheduledCommand.process_workflow(str(uuid.uuid4()), int(time.time() * 1000)))
        await p.process_commands(now(), _noop)
    else:
        raise ValueError(f"unknown op {op}")
