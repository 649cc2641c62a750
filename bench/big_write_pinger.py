"""Latency of another client's small calls while a big write runs (BENCHMARKS.md, "one very large write").

``python bench/big_write_pinger.py HOST:PORT SECONDS`` creates a workflow of its own, then for
SECONDS reads it and persists it (10 ms apart) and prints the slowest read and write and the median
read. In a process of its own, so that its calls do not share an event loop with the big write's
client-side conversion.
"""

from __future__ import annotations

import asyncio
import sys
import time

from wfe_client import GrpcPersistenceProvider
from wfe_client.models import WorkflowInstance


async def main(address: str, seconds: float) -> None:
    p = await GrpcPersistenceProvider.connect(address)
    wid = await p.create_new_workflow(WorkflowInstance(id="", workflow_definition_id="d", version=1))
    own = await p.get_workflow_instance(wid)
    reads: list[float] = []
    writes: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        await p.get_workflow_instance(wid)
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        await p.persist_workflow(own)
        writes.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)
    reads.sort()
    print(
        f"separate pinger: max read {reads[-1] * 1000:.0f} ms, max write {max(writes) * 1000:.0f} ms, "
        f"p50 read {reads[len(reads) // 2] * 1000:.1f} ms"
    )
    await p.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
