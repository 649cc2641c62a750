"""The real WFE engine (Rust crate ``wfe``) runs on the server through the Rust adapter, while
Python code publishes the event it waits for through the Python adapter.

A ``wfe-sqlite serve`` process and the ``order_flow`` example of client/rust (a
``wfe::WorkflowHost`` whose persistence is ``wfe_grpc::GrpcPersistenceProvider``) run as real
processes. The example's binary is ``$WFE_ORDER_FLOW_BIN`` if set, otherwise it is built here
with ``cargo build --locked --example order_flow`` (a no-op when client/rust/run-tests.sh
already built it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wfe_client import Event, GrpcPersistenceProvider, PointerStatus, WorkflowStatus

if TYPE_CHECKING:
    from conftest import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "client" / "rust"
SHIPPED = "order.shipped"


@pytest.fixture(scope="module")
def order_flow_bin() -> Path:
    configured = os.environ.get("WFE_ORDER_FLOW_BIN")
    if configured:
        path = Path(configured)
        assert path.is_file(), f"WFE_ORDER_FLOW_BIN={configured} does not exist"
        return path
    build = subprocess.run(
        ["cargo", "build", "--locked", "--example", "order_flow"],
        cwd=CRATE,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, f"cargo build failed:\n{build.stderr[-4000:]}"
    # Where cargo put it: $CARGO_TARGET_DIR (relative to the crate, as cargo reads it) or target/.
    path = CRATE / (os.environ.get("CARGO_TARGET_DIR") or "target") / "debug" / "examples" / "order_flow"
    assert path.is_file(), path
    return path


class Lines:
    """Reads a child's stdout on a thread so the test can wait for lines with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line starting with {prefix!r} within {timeout}s; saw {self.seen}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stdout closed before {prefix!r}; saw {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line


# Generous: on a fresh machine the fixture compiles the Rust example first (minutes on 2 cores).
@pytest.mark.timeout(1800)
async def test_rust_workflow_host_completes_on_event_published_from_python(
    server_process: ServerProcess, order_flow_bin: Path
) -> None:
    order_id = "order-py-7"
    example = subprocess.Popen(
        [str(order_flow_bin), server_process.address, order_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ORDER_FLOW_TIMEOUT_SECS": "90"},
    )
    try:
        lines = Lines(example)
        workflow_id = (await asyncio.to_thread(lines.wait_for, "workflow_id=", 60)).split("=", 1)[1]

        async with GrpcPersistenceProvider.connect(server_process.address) as provider:
            # Wait, through the Python adapter, until the Rust host has parked the workflow on
            # the event: the waiting pointer and its subscription are stored.
            deadline = time.monotonic() + 60
            while True:
                workflow = await provider.get_workflow_instance(workflow_id)
                waiting = [p for p in workflow.execution_pointers if p.status is PointerStatus.WAITING_FOR_EVENT]
                if waiting:
                    break
                assert workflow.status is WorkflowStatus.RUNNABLE, workflow.status
                assert time.monotonic() < deadline, f"never waited for the event: {workflow}"
                await asyncio.sleep(0.1)
            assert waiting[0].event_name == SHIPPED
            assert waiting[0].event_key == order_id
            assert waiting[0].event_published is False
            assert workflow.status is WorkflowStatus.RUNNABLE
            subscriptions = await provider.get_subscriptions(SHIPPED, order_id, datetime.now(UTC))
            assert [s.workflow_id for s in subscriptions] == [workflow_id]

            # Publish the event from Python.
            payload = {"tracking": "TRK-123", "carrier": "post", "weight_grams": 2**63 - 1}
            event_id = await provider.create_event(Event.new(SHIPPED, order_id, payload))

            returncode = await asyncio.to_thread(example.wait, 120)
            stdout_rest = "\n".join(lines.seen)
            stderr = example.stderr.read() if example.stderr else ""
            assert returncode == 0, f"order_flow exited {returncode}\nstdout:\n{stdout_rest}\nstderr:\n{stderr[-4000:]}"

            # The final state, read back through the Python adapter.
            final = await provider.get_workflow_instance(workflow_id)
            assert final.status is WorkflowStatus.COMPLETE
            assert final.complete_time is not None
            assert final.name == "order-flow-1"
            assert final.workflow_definition_id == "order-flow"
            pointers = sorted(final.execution_pointers, key=lambda p: p.step_id)
            assert [p.step_id for p in pointers] == [0, 1, 2, 3]
            assert [p.step_name for p in pointers] == [
                "reserve stock",
                "charge payment",
                "await shipment",
                "confirm delivery",
            ]
            assert all(p.status is PointerStatus.COMPLETE for p in pointers), [p.status for p in pointers]
            assert not any(p.active for p in pointers)
            wait_pointer = pointers[2]
            assert wait_pointer.event_name == SHIPPED
            assert wait_pointer.event_key == order_id
            assert wait_pointer.event_published is True
            assert wait_pointer.event_data == payload
            # Each pointer after the first points to its predecessor.
            for before, after in itertools.pairwise(pointers):
                assert after.predecessor_id == before.id
            assert final.data == {
                "order_id": order_id,
                "items": ["book", "lamp"],
                "amount_cents": 4250,
                "reserved_items": 2,
                "charged_cents": 4250,
                "charge_id": f"ch-{order_id}",
                "tracking": "TRK-123",
                "delivered": True,
            }

            event = await provider.get_event(event_id)
            assert event.is_processed is True
            assert await provider.get_subscriptions(SHIPPED, order_id, event.event_time) == []
    finally:
        if example.poll() is None:
            example.kill()
            example.wait(30)
