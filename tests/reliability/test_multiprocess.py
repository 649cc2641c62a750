"""Concurrency across processes: several client processes against one real server process.

- ``process_commands`` over thousands of commands: exactly once when handlers succeed; with
  handlers failing at random and processors SIGKILLed mid-way, each at least once and none lost;
- token claims on one subscription: exactly one winner per round;
- ``next_definition_sequence`` from many processes: no number twice, no gap;
- concurrent ``persist_workflow`` and reads: never a half-written workflow.

``WFE_MP_SCALE`` (default 1) multiplies the sizes (``make stress`` raises it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mp_workers
import pytest
from reliability_support import Server, env_int, start_server

from wfe_client import CommandName, EventSubscription, GrpcPersistenceProvider, ScheduledCommand, WorkflowInstance

UTC = UTC
SCALE = env_int("WFE_MP_SCALE", 1)
CTX = multiprocessing.get_context("spawn")

pytestmark = pytest.mark.timeout(240 * SCALE)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server(f"sqlite://{tmp_path / 'mp.db'}", tmp_path / "server.log")
    try:
        yield started
    finally:
        code = started.terminate()
        assert code == 0, started.log()


def _join(processes: list[Any], timeout: float) -> None:
    for p in processes:
        p.join(timeout)
    stuck = [p for p in processes if p.is_alive()]
    for p in stuck:
        p.kill()
        p.join(10)
    assert not stuck, f"{len(stuck)} client processes did not finish within {timeout} s"


async def _schedule(address: str, names: list[str]) -> None:
    async with GrpcPersistenceProvider.connect(address) as store:
        semaphore = asyncio.Semaphore(64)

        async def one(data: str) -> None:
            async with semaphore:
                await store.schedule_command(ScheduledCommand(CommandName.PROCESS_WORKFLOW, data, 0))

        await asyncio.gather(*(one(n) for n in names))


async def _remaining_commands(address: str) -> list[str]:
    async with GrpcPersistenceProvider.connect(address) as store:
        claim = await store.claim_commands(datetime(9999, 1, 1, tzinfo=UTC), 1000, timedelta(seconds=1), "check")
        return [c.data for c in claim.commands]


def _handled(paths: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        if path.exists():
            text = path.read_text()
            # A processor killed in the middle of a write leaves at most one partial last line.
            lines = text.split("\n")[:-1]
            counts.update(lines)
    return counts


async def test_process_commands_exactly_once_across_processes(server: Server, tmp_path: Path) -> None:
    names = [f"cmd-{i:05d}" for i in range(3000 * SCALE)]
    await _schedule(server.address, names)
    outs = [tmp_path / f"handled-{i}.txt" for i in range(4)]
    processes = [
        CTX.Process(target=mp_workers.process_commands_worker, args=(server.address, str(o), 0.0, None, i, 1.5))
        for i, o in enumerate(outs)
    ]
    for p in processes:
        p.start()
    _join(processes, 120 * SCALE)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    counts = _handled(outs)
    twice = {n: c for n, c in counts.items() if c > 1}
    assert not twice, f"handled more than once: {list(twice.items())[:10]}"
    missing = set(names) - set(counts)
    assert not missing, f"{len(missing)} commands never handled, e.g. {sorted(missing)[:5]}"
    assert set(counts) == set(names)
    per_process = [sum(1 for _ in o.read_text().splitlines()) for o in outs]
    assert sum(per_process) == len(names)
    assert sum(1 for n in per_process if n) >= 2, f"the work was not shared: {per_process}"
    assert await _remaining_commands(server.address) == []


async def test_process_commands_at_least_once_with_failures_and_kills(server: Server, tmp_path: Path) -> None:
    names = [f"job-{i:05d}" for i in range(2000 * SCALE)]
    await _schedule(server.address, names)
    lease = 2.0
    outs = [tmp_path / f"handled-{i}.txt" for i in range(6)]
    processes = [
        CTX.Process(
            target=mp_workers.process_commands_worker,
            args=(server.address, str(o), 0.3, lease, i, lease + 2.5),
        )
        for i, o in enumerate(outs)
    ]
    for p in processes:
        p.start()
    rng = random.Random()
    victims = processes[:3]
    for victim in victims:  # kill three processors mid-way, while they hold leases
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        victim.kill()
    _join(processes, 180 * SCALE)
    assert [p.exitcode for p in processes[3:]] == [0, 0, 0]
    killed_early = sum(1 for v in victims if v.exitcode != 0)
    counts = _handled(outs)
    missing = set(names) - set(counts)
    assert not missing, f"{len(missing)} commands lost (never handled), e.g. {sorted(missing)[:5]}"
    assert set(counts) <= set(names)
    assert await _remaining_commands(server.address) == []
    print(
        f"{len(names)} commands, {sum(counts.values())} successful handlings, "
        f"{sum(1 for c in counts.values() if c > 1)} handled more than once, {killed_early} processors killed"
    )


async def test_token_claims_one_winner_per_round(server: Server) -> None:
    async with GrpcPersistenceProvider.connect(server.address) as store:
        sub = EventSubscription.new("wf", 0, "ptr", "race", "key", datetime.now(UTC))
        sid = await store.create_event_subscription(sub)
    rounds, workers = 25 * SCALE, 6
    barrier = CTX.Barrier(workers)
    results = CTX.Queue()
    processes = [
        CTX.Process(target=mp_workers.token_worker, args=(server.address, i, sid, rounds, barrier, results))
        for i in range(workers)
    ]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(rounds * workers)]
    _join(processes, 60)
    assert [p.exitcode for p in processes] == [0] * workers
    winners: dict[int, list[int]] = {r: [] for r in range(rounds)}
    for r, index, won in outcomes:
        if won:
            winners[r].append(index)
    bad = {r: w for r, w in winners.items() if len(w) != 1}
    assert not bad, f"rounds without exactly one winner: {bad}"
    assert len({w[0] for w in winners.values()}) > 1 or rounds < 5, "always the same winner: no real race"


async def test_definition_sequence_never_repeats_across_processes(server: Server, tmp_path: Path) -> None:
    workers, calls = 6, 300 * SCALE
    outs = [tmp_path / f"seq-{i}.txt" for i in range(workers)]
    processes = [
        CTX.Process(target=mp_workers.sequence_worker, args=(server.address, "def-mp", calls, 8, str(o))) for o in outs
    ]
    for p in processes:
        p.start()
    _join(processes, 120 * SCALE)
    assert [p.exitcode for p in processes] == [0] * workers
    values = [int(v) for o in outs for v in o.read_text().split()]
    assert len(values) == workers * calls
    repeated = [v for v, c in Counter(values).items() if c > 1]
    assert not repeated, f"numbers given twice: {repeated[:10]}"
    assert sorted(values) == list(range(1, workers * calls + 1))


async def test_readers_never_see_half_written_workflows(server: Server) -> None:
    ids = []
    async with GrpcPersistenceProvider.connect(server.address) as store:
        for i in range(20):
            w = WorkflowInstance.new("mp-flow", 1, {"gen": i})
            w.reference = f"r{i}"
            w.execution_pointers = mp_workers.generation_pointers(i)
            ids.append(await store.create_new_workflow(w))
    seconds = 4.0 * SCALE
    results = CTX.Queue()
    processes = [
        CTX.Process(target=mp_workers.persist_worker, args=(server.address, i, ids, seconds, results)) for i in range(3)
    ] + [CTX.Process(target=mp_workers.read_worker, args=(server.address, i, ids, seconds, results)) for i in range(3)]
    for p in processes:
        p.start()
    reports = [results.get(timeout=120 * SCALE) for _ in processes]
    _join(processes, 60)
    writes = sum(n for kind, _, n, _ in reports if kind == "writer")
    reads = sum(n for kind, _, n, _ in reports if kind == "reader")
    problems = [p for _, _, _, ps in reports for p in ps]
    assert not problems, f"half-written workflows seen: {problems[:10]}"
    assert writes > 100 and reads > 100, (writes, reads)
    async with GrpcPersistenceProvider.connect(server.address) as store:
        final = await store.get_workflow_instances(ids)
    assert len(final) == 20 and all(mp_workers.torn(w) is None for w in final)
    assert sum(w.data["gen"] >= 1_000_000 for w in final) >= 15, "the writers barely touched the workflows"
