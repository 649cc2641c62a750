"""A small workflow host for the cluster proofs: no poller, just the server's queue, locks and revisions.

``python cluster_host.py ADDRESS HOST_NAME STEP_LOG [--ttl-ms N] [--step-seconds S] [--stall-from K]``

Loop: dequeue a workflow id (long poll) -> take the lease on the id -> read the workflow -> if it is
runnable and due, run its next step: append ``workflow_id step host`` to STEP_LOG (outside the
store: the step's external side effect), wait ``--step-seconds``, then persist the workflow one
step further with the revision it was read at -> release the lease. Three steps, then COMPLETE.
With ``--stall-from K`` the host's K-th step (and any later one) waits until the host is killed,
holding its lease (renewed): a SIGKILL after its K-th ``holding`` line lands mid-step, however late.
A workflow that another host holds is skipped: its holder's release queues it again when it is
still due. Prints ``holding ID STEP`` before each step's wait and ``persisted ID STEP REVISION``
after each persist (or ``conflict ID STEP``). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta

from wfe_client import (
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    PointerStatus,
    QueueType,
    RevisionConflict,
    WfeError,
    WorkflowStatus,
)
from wfe_client.timeutil import utc_now

STEPS = 3


def log_step(path: str, line: str) -> None:
    """Append one line with one write on an O_APPEND descriptor (whole lines, also across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


STALL_SECONDS = 3600.0


async def run_step(
    store: GrpcPersistenceProvider, workflow_id: str, host: str, step_log: str, step_seconds: float
) -> bool:
    """Run the workflow's next step if it is due; whether one ran."""
    workflow = await store.get_workflow_instance(workflow_id)
    now_ms = int(utc_now().timestamp() * 1000)
    if (
        workflow.status != WorkflowStatus.RUNNABLE
        or workflow.next_execution is None
        or workflow.next_execution > now_ms
    ):
        return False
    step = int(workflow.data["step"])
    log_step(step_log, f"{workflow_id} {step} {host}")
    print(f"holding {workflow_id} {step}", flush=True)
    if step_seconds:
        await asyncio.sleep(step_seconds)
    pointer = workflow.execution_pointers[step]
    pointer.status, pointer.active, pointer.end_time = PointerStatus.COMPLETE, False, utc_now()
    workflow.data = {**workflow.data, "step": step + 1, f"by_{step}": host}
    if step + 1 == STEPS:
        workflow.status, workflow.next_execution, workflow.complete_time = WorkflowStatus.COMPLETE, None, utc_now()
    else:
        workflow.execution_pointers[step + 1].active = True
        workflow.next_execution = 0
    try:
        await store.persist_workflow(workflow)  # expects the revision it was read at
    except RevisionConflict:
        print(f"conflict {workflow_id} {step}", flush=True)
        return True
    print(f"persisted {workflow_id} {step} {workflow.revision}", flush=True)
    return True


async def serve(
    address: str, host: str, step_log: str, ttl: timedelta, step_seconds: float, stall_from: int | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with GrpcPersistenceProvider.connect(address) as store:
        queue = GrpcQueueProvider(store)
        async with GrpcLockProvider(store, owner=host, ttl=ttl) as locks:
            print("ready", flush=True)
            steps = 0
            while not stop.is_set():
                try:
                    workflow_id = await queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(milliseconds=500))
                    if workflow_id is None or not await locks.acquire_lock(workflow_id):
                        continue
                    try:
                        stall = stall_from is not None and steps + 1 >= stall_from
                        if await run_step(store, workflow_id, host, step_log, STALL_SECONDS if stall else step_seconds):
                            steps += 1
                    finally:
                        await locks.release_lock(workflow_id)
                except WfeError as error:
                    print(f"error {error!r}", flush=True)
                    await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("host")
    parser.add_argument("step_log")
    parser.add_argument("--ttl-ms", type=int, default=2000)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--stall-from", type=int, default=None)
    args = parser.parse_args()
    ttl = timedelta(milliseconds=args.ttl_ms)
    asyncio.run(serve(args.address, args.host, args.step_log, ttl, args.step_seconds, args.stall_from))


if __name__ == "__main__":
    main()
