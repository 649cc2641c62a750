"""One very large write over gRPC (BENCHMARKS.md, "one very large write").

``python bench/big_write.py COUNT HOST:PORT`` persists a workflow with COUNT new subscriptions (empty
ids: the server makes them) in one ``persist_workflow_with_subscriptions`` and prints how long it took
from the call to the reply, and the slowest read and persist of another workflow that this process
sent meanwhile (those share this process's event loop with the big call's own conversion: for other
clients' latency run bench/big_write_pinger.py in a process of its own).
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from wfe_client import GrpcPersistenceProvider
from wfe_client.models import EventSubscription, WorkflowInstance


async def main(count: int, address: str) -> None:
    provider = await GrpcPersistenceProvider.connect(address)
    try:
        now = datetime.now(UTC)
        big = await provider.get_workflow_instance(
            await provider.create_new_workflow(WorkflowInstance(id="", workflow_definition_id="big", version=1))
        )
        other_id = await provider.create_new_workflow(WorkflowInstance(id="", workflow_definition_id="d", version=1))
        subscriptions = [
            EventSubscription(
                id="",
                workflow_id=big.id,
                step_id=1,
                execution_pointer_id="p",
                event_name="e",
                event_key=f"k{i}",
                subscribe_as_of=now,
            )
            for i in range(count)
        ]
        reads: list[float] = []
        writes: list[float] = []
        done = asyncio.Event()

        async def other_calls() -> None:
            other = await provider.get_workflow_instance(other_id)
            while not done.is_set():
                started = time.perf_counter()
                await provider.get_workflow_instance(other_id)
                reads.append(time.perf_counter() - started)
                started = time.perf_counter()
                await provider.persist_workflow(other)
                writes.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        pinging = asyncio.create_task(other_calls())
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        await provider.persist_workflow_with_subscriptions(big, subscriptions)
        took = time.perf_counter() - started
        await asyncio.sleep(0.3)
        done.set()
        await pinging
        print(
            f"big write of {count} subscriptions {took:.2f} s; this process's slowest read "
            f"{max(reads) * 1000:.0f} ms, slowest persist {max(writes) * 1000:.0f} ms"
        )
    finally:
        await provider.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
