"""Client processes for the multi-process tests: each runs its own event loop and gRPC channel.

Started with ``multiprocessing`` (spawn), so each is a separate interpreter talking to the server
through ``GrpcPersistenceProvider`` exactly as a workflow host would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from wfe_client import ExecutionPointer, GrpcPersistenceProvider, ScheduledCommand, WorkflowInstance

UTC = UTC


class _LeasedProvider(GrpcPersistenceProvider):
    """The adapter with a shorter command lease (so a killed processor's claims come back fast)."""

    lease: timedelta | None = None

    async def claim_commands(
        self, as_of: datetime, max_commands: int = 100, lease: Any = None, worker_id: str = ""
    ) -> Any:
        chosen = self.lease if self.lease is not None else (lease or timedelta(seconds=30))
        return await super().claim_commands(as_of, max_commands, chosen, worker_id)


def process_commands_worker(
    address: str, out_path: str, fail_rate: float, lease_seconds: float | None, seed: int, idle_exit: float
) -> None:
    """Loop ``process_commands`` until nothing was offered for ``idle_exit`` seconds.

    Every successful handling appends the command's data as one line to ``out_path`` (one
    ``write`` of a whole line, O_APPEND) before the handler returns.
    """
    asyncio.run(_process_commands(address, out_path, fail_rate, lease_seconds, seed, idle_exit))


async def _process_commands(
    address: str, out_path: str, fail_rate: float, lease_seconds: float | None, seed: int, idle_exit: float
) -> None:
    logging.getLogger("wfe_client").setLevel(logging.ERROR)  # the failures are on purpose
    rng = random.Random(seed)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    offered = 0

    async def handler(command: ScheduledCommand) -> None:
        nonlocal offered
        offered += 1
        await asyncio.sleep(rng.random() * 0.002)
        if rng.random() < fail_rate:
            raise RuntimeError(f"handler failed for {command.data} (on purpose)")
        os.write(fd, (command.data + "\n").encode())

    async with _LeasedProvider.connect(address, timeout=30.0) as store:
        if lease_seconds is not None:
            store.lease = timedelta(seconds=lease_seconds)  # type: ignore[attr-defined]
        idle_since = time.monotonic()
        while True:
            before = offered
            await store.process_commands(datetime.now(UTC), handler)
            if offered != before:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_exit:
                break
            else:
                await asyncio.sleep(0.1)
    os.close(fd)


def token_worker(address: str, index: int, subscription_id: str, rounds: int, barrier: Any, results: Any) -> None:
    """Each round: everyone claims the one subscription at once; the winner clears it afterwards."""
    asyncio.run(_tokens(address, index, subscription_id, rounds, barrier, results))


async def _tokens(address: str, index: int, sid: str, rounds: int, barrier: Any, results: Any) -> None:
    async with GrpcPersistenceProvider.connect(address, timeout=30.0) as store:
        for r in range(rounds):
            token = f"p{index}-r{r}"
            barrier.wait(60)
            won = await store.set_subscription_token(
                sid, token, f"proc-{index}", datetime.now(UTC) + timedelta(hours=1)
            )
            results.put((r, index, won))
            barrier.wait(60)
            if won:
                await store.clear_subscription_token(sid, token)
            barrier.wait(60)


def sequence_worker(address: str, definition_id: str, calls: int, concurrency: int, out_path: str) -> None:
    """``calls`` next_definition_sequence calls, ``concurrency`` at a time; values to ``out_path``."""
    asyncio.run(_sequences(address, definition_id, calls, concurrency, out_path))


async def _sequences(address: str, definition_id: str, calls: int, concurrency: int, out_path: str) -> None:
    values: list[int] = []
    async with GrpcPersistenceProvider.connect(address, timeout=30.0) as store:
        remaining = calls

        async def runner() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                values.append(await store.next_definition_sequence(definition_id))

        await asyncio.gather(*(runner() for _ in range(concurrency)))
    with open(out_path, "w") as handle:
        handle.write("\n".join(map(str, values)) + "\n")


def generation_pointers(gen: int) -> list[ExecutionPointer]:
    """The pointer set written together with data {"gen": gen}: count and names encode ``gen``."""
    pointers = []
    for i in range(1 + gen % 5):
        p = ExecutionPointer.new(i)
        p.id = f"p{gen}-{i}"
        p.step_name = f"g{gen}-{i}"
        p.persistence_data = {"gen": gen}
        pointers.append(p)
    return pointers


def torn(w: WorkflowInstance) -> str | None:
    """Why ``w`` is not a whole write of one generation, or None."""
    gen = w.data.get("gen") if isinstance(w.data, dict) else None
    if not isinstance(gen, int):
        return f"{w.id}: data {w.data!r}"
    want = [(p.id, p.step_name, p.persistence_data) for p in generation_pointers(gen)]
    got = [(p.id, p.step_name, p.persistence_data) for p in w.execution_pointers]
    if want != got or w.reference != f"r{gen}":
        return (
            f"{w.id}: data gen {gen} but pointers {[p.step_name for p in w.execution_pointers]} reference {w.reference}"
        )
    return None


def persist_worker(address: str, index: int, ids: list[str], seconds: float, results: Any) -> None:
    """Persist random workflows of ``ids`` with new generations for ``seconds``."""
    asyncio.run(_persist(address, index, ids, seconds, results))


async def _persist(address: str, index: int, ids: list[str], seconds: float, results: Any) -> None:
    rng = random.Random(index)
    writes = 0
    async with GrpcPersistenceProvider.connect(address, timeout=30.0) as store:
        originals = {w.id: w for w in await store.get_workflow_instances(ids)}
        deadline = time.monotonic() + seconds

        async def runner() -> None:
            nonlocal writes
            while time.monotonic() < deadline:
                w = originals[rng.choice(ids)]
                gen = (index + 1) * 1_000_000 + writes
                writes += 1
                w.data = {"gen": gen, "by": index}
                w.reference = f"r{gen}"
                w.execution_pointers = generation_pointers(gen)
                await store.persist_workflow(w, force=True)  # blind overwrites on purpose: no revision check

        await asyncio.gather(*(runner() for _ in range(4)))
    results.put(("writer", index, writes, []))


def read_worker(address: str, index: int, ids: list[str], seconds: float, results: Any) -> None:
    """Read the workflows (one by one and in batches) for ``seconds``; report torn reads."""
    asyncio.run(_read(address, index, ids, seconds, results))


async def _read(address: str, index: int, ids: list[str], seconds: float, results: Any) -> None:
    rng = random.Random(1000 + index)
    reads = 0
    problems: list[str] = []
    async with GrpcPersistenceProvider.connect(address, timeout=30.0) as store:
        deadline = time.monotonic() + seconds

        async def runner(batch: bool) -> None:
            nonlocal reads
            while time.monotonic() < deadline:
                if batch:
                    found = await store.get_workflow_instances(ids)
                else:
                    found = [await store.get_workflow_instance(rng.choice(ids))]
                for w in found:
                    reads += 1
                    problem = torn(w)
                    if problem and len(problems) < 20:
                        problems.append(problem)

        await asyncio.gather(runner(True), runner(False), runner(False))
    results.put(("reader", index, reads, problems))
