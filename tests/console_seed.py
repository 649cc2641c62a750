"""Data for the console tests and screenshots, written through a real store (usually over gRPC).

Several definitions and every workflow status; pointers in many states with times, retries and
event waits; open, held and terminated subscriptions; execution errors; processed and unprocessed
events; due and claimed commands; and one hostile workflow whose every text field is markup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from conftest import ServerProcess, start_server_process
from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    PersistenceProvider,
    PointerStatus,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
)

T = TypeVar("T")

XSS_NAME = "<script>alert(1)</script>"
XSS_DESCRIPTION = "<img src=x onerror=\"document.title='pwned'\">"
XSS_DATA = {"note": "</pre><script>document.title='pwned'</script>", "<b>key</b>": '"quoted" & <i>'}
XSS_ERROR = "<script>alert('error')</script>"
XSS_EVENT_NAME = "<svg onload=alert(3)>"


@dataclass
class Seeded:
    """What was written, for the tests to look for on the pages."""

    now: datetime
    workflows: dict[str, WorkflowInstance] = field(default_factory=dict)
    """By a short label ("order-1", "xss", ...)."""
    by_status: dict[str, int] = field(default_factory=dict)
    by_definition: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    subscriptions: list[EventSubscription] = field(default_factory=list)
    errors: list[ExecutionError] = field(default_factory=list)

    def count(self, workflow: WorkflowInstance) -> None:
        status = workflow.status.name
        self.by_status[status] = self.by_status.get(status, 0) + 1
        per = self.by_definition.setdefault(workflow.workflow_definition_id, {})
        per[status] = per.get(status, 0) + 1


def _pointer(
    step_id: int,
    name: str,
    status: PointerStatus,
    start: datetime | None,
    end: datetime | None = None,
    **fields: object,
) -> ExecutionPointer:
    pointer = ExecutionPointer.new(step_id)
    pointer.step_name = name
    pointer.status = status
    pointer.start_time = start
    pointer.end_time = end
    pointer.active = end is None and status not in (PointerStatus.PENDING,)
    for key, value in fields.items():
        setattr(pointer, key, value)
    return pointer


async def seed(store: PersistenceProvider, orders: int = 14) -> Seeded:
    """Write the test data; ``orders`` order-flow workflows give the list something to page through."""
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = Seeded(now)

    def ago(**span: float) -> datetime:
        return now - timedelta(**span)

    # order-flow: a three-step flow; the newest orders still wait for payment.
    for i in range(1, orders + 1):
        w = WorkflowInstance.new(
            "order-flow", 2, {"order": 1000 + i, "customer": f"customer-{i % 5}", "amount": 20.5 * i}
        )
        w.reference = f"order-{1000 + i}"
        w.description = f"Order {1000 + i} for customer-{i % 5}"
        w.create_time = ago(hours=2 * (orders + 1 - i))
        start = w.create_time
        validate = _pointer(0, "ValidateOrder", PointerStatus.COMPLETE, start, start + timedelta(seconds=2))
        if i % 4 == 0:
            charge = _pointer(
                1,
                "ChargeCard",
                PointerStatus.COMPLETE,
                start + timedelta(seconds=3),
                start + timedelta(minutes=4),
                retry_count=2,
                outcome={"charged": True},
            )
            ship = _pointer(
                2, "Ship", PointerStatus.COMPLETE, start + timedelta(minutes=5), start + timedelta(minutes=30)
            )
            w.status = WorkflowStatus.COMPLETE
            w.complete_time = start + timedelta(minutes=30)
            w.next_execution = None
            w.execution_pointers = [validate, charge, ship]
        elif i % 7 == 0:
            charge = _pointer(
                1,
                "ChargeCard",
                PointerStatus.FAILED,
                start + timedelta(seconds=3),
                start + timedelta(minutes=1),
                retry_count=5,
            )
            w.status = WorkflowStatus.TERMINATED
            w.complete_time = start + timedelta(minutes=1)
            w.next_execution = None
            w.execution_pointers = [validate, charge]
        else:
            wait = _pointer(
                1,
                "WaitForPayment",
                PointerStatus.WAITING_FOR_EVENT,
                start + timedelta(seconds=3),
                event_name="order.paid",
                event_key=str(1000 + i),
            )
            w.execution_pointers = [validate, wait]
            w.next_execution = None if i % 3 else int((now + timedelta(minutes=5)).timestamp() * 1000)
        await store.create_new_workflow(w)
        seeded.workflows[f"order-{i}"] = w
        seeded.count(w)
        if w.status is WorkflowStatus.RUNNABLE:
            sub = EventSubscription.new(w.id, 1, w.execution_pointers[1].id, "order.paid", str(1000 + i), start)
            sub.subscription_data = {"expect": "payment"}
            await store.persist_workflow_with_subscriptions(w, [sub])
            seeded.subscriptions.append(sub)
        if w.status is WorkflowStatus.TERMINATED:
            errors = [
                ExecutionError.new(w.id, w.execution_pointers[1].id, f"card declined (attempt {n})")
                for n in range(1, 4)
            ]
            for n, error in enumerate(errors):
                error.error_time = start + timedelta(seconds=10 * (n + 1))
            await store.persist_errors(errors)
            seeded.errors.extend(errors)

    # invoice-approval: suspended while a person decides; one held by an external worker's token.
    for i in range(1, 4):
        w = WorkflowInstance.new("invoice-approval", 1, {"invoice": f"INV-{i:04}", "lines": [{"sku": "A-1", "qty": i}]})
        w.reference = f"INV-{i:04}"
        w.create_time = ago(minutes=50 * i)
        w.status = WorkflowStatus.SUSPENDED
        w.next_execution = None
        approve = _pointer(
            0,
            "AwaitApproval",
            PointerStatus.WAITING_FOR_EVENT,
            w.create_time,
            event_name="invoice.approved",
            event_key=f"INV-{i:04}",
        )
        w.execution_pointers = [approve]
        await store.create_new_workflow(w)
        sub = EventSubscription.new(w.id, 0, approve.id, "invoice.approved", f"INV-{i:04}", w.create_time)
        await store.persist_workflow_with_subscriptions(w, [sub])
        seeded.subscriptions.append(sub)
        if i == 1:
            assert await store.set_subscription_token(sub.id, "tok-approver", "approver-7", now + timedelta(hours=1))
        if i == 3:
            await store.terminate_subscription(sub.id)
        seeded.workflows[f"invoice-{i}"] = w
        seeded.count(w)

    # nightly-report: a long completed run with a sleeping retry, and one running now.
    for i, status in enumerate((WorkflowStatus.COMPLETE, WorkflowStatus.RUNNABLE)):
        w = WorkflowInstance.new("nightly-report", 3, {"day": (now - timedelta(days=1 - i)).date().isoformat()})
        w.create_time = ago(hours=26 - 24 * i)
        start = w.create_time
        gather = _pointer(0, "Gather", PointerStatus.COMPLETE, start, start + timedelta(minutes=20))
        render = _pointer(
            1,
            "Render",
            PointerStatus.COMPLETE if i == 0 else PointerStatus.SLEEPING,
            start + timedelta(minutes=21),
            start + timedelta(minutes=50) if i == 0 else None,
            retry_count=1 if i else 0,
            sleep_until=None if i == 0 else now + timedelta(minutes=10),
            persistence_data={"page": 7},
        )
        render.predecessor_id = gather.id
        gather.children = [render.id]
        w.execution_pointers = [gather, render]
        w.status = status
        if status is WorkflowStatus.COMPLETE:
            w.complete_time = start + timedelta(minutes=51)
            w.next_execution = None
        else:
            w.next_execution = int((now - timedelta(seconds=30)).timestamp() * 1000)
        await store.create_new_workflow(w)
        seeded.workflows[f"report-{i}"] = w
        seeded.count(w)

    # The hostile one: markup in every text a page shows.
    w = WorkflowInstance.new("user-onboarding", 1, XSS_DATA)
    w.name = XSS_NAME
    w.description = XSS_DESCRIPTION
    w.reference = "<b>ref</b>"
    w.create_time = ago(minutes=3)
    p = _pointer(0, "<i>Welcome</i>", PointerStatus.RUNNING, ago(minutes=2), event_name=XSS_EVENT_NAME, event_key="<k>")
    w.execution_pointers = [p]
    await store.create_new_workflow(w)
    xss_sub = EventSubscription.new(w.id, 0, p.id, XSS_EVENT_NAME, "<k>", ago(minutes=2))
    await store.persist_workflow_with_subscriptions(w, [xss_sub])
    seeded.subscriptions.append(xss_sub)
    xss_error = ExecutionError.new(w.id, p.id, XSS_ERROR)
    await store.persist_errors([xss_error])
    seeded.errors.append(xss_error)
    seeded.workflows["xss"] = w
    seeded.count(w)

    # Events: payments for some orders (processed), one new payment and approvals waiting.
    for i in (4, 8):
        e = Event.new("order.paid", str(1000 + i), {"amount": 20.5 * i})
        e.event_time = ago(hours=2 * (orders + 1 - i)) + timedelta(minutes=3)
        await store.create_event(e)
        await store.mark_event_processed(e.id)
        e.is_processed = True
        seeded.events.append(e)
    for name, key, data in (
        ("order.paid", "1001", {"amount": 20.5}),
        ("invoice.approved", "INV-0002", {"by": "alice"}),
        (XSS_EVENT_NAME, "<k>", {"html": "<script>alert(4)</script>"}),
    ):
        e = Event.new(name, key, data)
        e.event_time = ago(minutes=1)
        await store.create_event(e)
        seeded.events.append(e)

    # Commands: three due; one of them claimed by a processor that has not acknowledged yet.
    for label in ("order-1", "order-2", "report-1"):
        await store.schedule_command(ScheduledCommand.process_workflow(seeded.workflows[label].id, 0))
    claim = await store.claim_commands(now + timedelta(seconds=1), max_commands=1)
    assert len(claim.commands) == 1
    return seeded


# -- a server process with its console ------------------------------------------------------------


def start_console_server(db_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[ServerProcess, str]:
    """``wfe-sqlite serve`` with ``--console-listen 127.0.0.1:0``; the process and the console's URL."""
    server = start_server_process(db_url, "--console-listen", "127.0.0.1:0", *args, env=env)
    assert server.process.stdout is not None
    line = server.process.stdout.readline().strip()
    if not (line.startswith("console on http://127.0.0.1:") and line.endswith("/")):
        server.kill()
        raise AssertionError(f"no console line: {line!r}")
    return server, line.split("console on ", 1)[1].rstrip("/")


async def _coroutine(job: Callable[[], Awaitable[T]]) -> T:
    return await job()


def run_async(job: Callable[[], Awaitable[T]]) -> T:
    """Run ``job()`` on an event loop of its own thread (the browser's sync API owns this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_coroutine(job))).result(120)
