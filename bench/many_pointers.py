"""One workflow of very many execution pointers over gRPC (BENCHMARKS.md, "a workflow of many pointers").

``python bench/many_pointers.py COUNT HOST:PORT [SECONDS]`` creates a workflow, then persists it with
COUNT new pointers, reads it back, and persists it again with one pointer changed. During each of
the three calls another process (bench/big_write_pinger.py, for SECONDS, default 12) reads and
persists a small workflow of its own; the script prints how long each big call took and that
process's slowest read and write, which is how long the big call held other clients up.

The server decides the store: on PostgreSQL, start it with ``wfe-sqlite serve --db postgresql://...``
(``python tests/pgcluster.py`` runs a throwaway durable PostgreSQL and prints its URL).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from wfe_client import GrpcPersistenceProvider
from wfe_client.models import ExecutionPointer, WorkflowInstance

T = TypeVar("T")
PINGER = Path(__file__).with_name("big_write_pinger.py")


async def _pinged(label: str, call: Awaitable[T], address: str, seconds: float) -> T:
    pinger = subprocess.Popen([sys.executable, str(PINGER), address, str(seconds)], stdout=subprocess.PIPE, text=True)
    await asyncio.sleep(2)  # the pinger is connected and calling
    started = time.perf_counter()
    result = await call
    took = time.perf_counter() - started
    print(f"{label}: {took:.2f} s | {pinger.communicate()[0].strip()}", flush=True)
    return result


async def main(count: int, address: str, seconds: float) -> None:
    provider = await GrpcPersistenceProvider.connect(address)
    try:
        wid = await provider.create_new_workflow(WorkflowInstance(id="", workflow_definition_id="many", version=1))
        big = await provider.get_workflow_instance(wid)
        big.execution_pointers = [
            ExecutionPointer(id=f"p{i}", step_id=i % 7, active=True, step_name="step", children=[f"c{i}"], scope=["a"])
            for i in range(count)
        ]
        await _pinged(f"persist of {count} new pointers", provider.persist_workflow(big), address, seconds)
        got = await _pinged("get", provider.get_workflow_instance(wid), address, seconds)
        got.execution_pointers[0].active = False
        await _pinged("persist with one pointer changed", provider.persist_workflow(got), address, seconds)
    finally:
        await provider.close()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) == 4 else 12.0))
