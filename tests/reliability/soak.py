"""Soak: a steady mixed load against a real server process; throughput, errors, server RSS.

``python tests/reliability/soak.py --seconds 600`` (``make soak``) or the 30-second version in
``test_soak.py``. The load: a fixed pool of workflows persisted with changing pointer sets and
read back (one by one, in batches, runnable lists), events created, listed and marked processed,
subscriptions created, claimed, cleared and terminated, commands scheduled and processed,
definition sequences and execution errors. RSS is the server's VmRSS, sampled every second; the
start figure is taken after the warm-up, growth is end versus start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_support import integrity_check, start_server

from wfe_client import (
    CommandName,
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    ScheduledCommand,
    WorkflowInstance,
)

UTC = UTC


@dataclass
class SoakResult:
    seconds: float
    warmup: float
    operations: int
    errors: int
    ops_per_second: float
    rss_start_kib: int
    rss_end_kib: int
    rss_max_kib: int
    rss_growth_percent: float
    db_bytes: int
    integrity: str
    first_errors: list[str]


async def _worker(
    store: GrpcPersistenceProvider,
    ids: list[str],
    rng: random.Random,
    stop: float,
    counts: dict[str, int],
    errors: list[str],
) -> None:
    n = 0
    while time.monotonic() < stop:
        n += 1
        op = rng.choices(
            ["persist", "get", "batch", "runnable", "event", "subscription", "command", "sequence", "errors"],
            weights=[6, 6, 2, 1, 3, 2, 2, 1, 1],
        )[0]
        try:
            now = datetime.now(UTC)
            if op == "persist":
                w = await store.get_workflow_instance(rng.choice(ids))
                gen = w.data["gen"] + 1
                w.data = {"gen": gen, "blob": "x" * rng.randrange(2000)}
                pointers = []
                for i in range(1 + gen % 6):
                    p = ExecutionPointer.new(i)
                    p.step_name = f"g{gen}"
                    pointers.append(p)
                w.execution_pointers = pointers
                w.next_execution = rng.randrange(10**12)
                # Unlocked read-modify-writes race each other here: load, not concurrency control, is
                # measured, so overwrite blindly (with the revision check the loser gets RevisionConflict).
                await store.persist_workflow(w, force=True)
            elif op == "get":
                await store.get_workflow_instance(rng.choice(ids))
            elif op == "batch":
                await store.get_workflow_instances(rng.sample(ids, 20))
            elif op == "runnable":
                await store.get_runnable_instances(now)
            elif op == "event":
                eid = await store.create_event(Event.new("soak", str(n % 50), {"n": n}))
                await store.get_events("soak", str(n % 50), now)
                await store.mark_event_processed(eid)
                await store.get_runnable_events(now)
            elif op == "subscription":
                sub = EventSubscription.new(rng.choice(ids), 0, "p", "soak", str(n % 50), now)
                sid = await store.create_event_subscription(sub)
                token = f"t{n}"
                if await store.set_subscription_token(sid, token, "soak", now + timedelta(minutes=1)):
                    await store.clear_subscription_token(sid, token)
                await store.terminate_subscription(sid)
                await store.get_first_open_subscription("soak", str(n % 50), now)
            elif op == "command":
                await store.schedule_command(
                    ScheduledCommand(CommandName.PROCESS_WORKFLOW, f"c{rng.randrange(10**9)}", 0)
                )

                async def handler(command: ScheduledCommand) -> None:
                    return None

                await store.process_commands(now + timedelta(seconds=1), handler)
            elif op == "sequence":
                await store.next_definition_sequence("soak")
            else:
                await store.persist_errors([ExecutionError.new(rng.choice(ids), "p", f"failure {n}")])
            counts["ops"] += 1
        except Exception as error:  # noqa: BLE001 - counted and reported
            counts["errors"] += 1
            if len(errors) < 10:
                errors.append(f"{op}: {error!r}")


async def run_soak(
    seconds: float,
    work_dir: Path,
    *,
    warmup: float = 10.0,
    concurrency: int = 16,
    channels: int = 4,
    verbose: bool = False,
) -> SoakResult:
    db = work_dir / "soak.db"
    server = start_server(f"sqlite://{db}", work_dir / "soak-server.log")
    try:
        stores = [await GrpcPersistenceProvider.connect(server.address) for _ in range(channels)]
        ids = []
        for _ in range(200):
            w = WorkflowInstance.new("soak-flow", 1, {"gen": 0})
            w.execution_pointers = [ExecutionPointer.new(0)]
            ids.append(await stores[0].create_new_workflow(w))
        counts = {"ops": 0, "errors": 0}
        errors: list[str] = []
        start = time.monotonic()
        stop = start + seconds
        rng = random.Random(7)
        tasks = [
            asyncio.create_task(_worker(stores[i % channels], ids, random.Random(rng.random()), stop, counts, errors))
            for i in range(concurrency)
        ]
        samples: list[tuple[float, int]] = []
        ops_at_warmup = 0
        t_warm = start + warmup
        while time.monotonic() < stop:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            samples.append((now - start, server.rss_kib()))
            if ops_at_warmup == 0 and now >= t_warm:
                ops_at_warmup = counts["ops"]
                t_warm = now
            if verbose and len(samples) % 30 == 0:
                print(
                    f"  t={now - start:5.0f}s ops={counts['ops']} errors={counts['errors']} "
                    f"rss={samples[-1][1] / 1024:.1f} MiB",
                    flush=True,
                )
        await asyncio.gather(*tasks)
        end = time.monotonic()
        for store in stores:
            await store.close()
        measured = [rss for t, rss in samples if t >= warmup]
        rss_start, rss_end = measured[0], measured[-1]
    finally:
        code = server.terminate()
    if code != 0:
        raise RuntimeError(f"server exited with {code}: {server.log()[-3000:]}")
    ops_measured = counts["ops"] - ops_at_warmup
    return SoakResult(
        seconds=round(end - start, 1),
        warmup=warmup,
        operations=counts["ops"],
        errors=counts["errors"],
        ops_per_second=round(ops_measured / max(end - t_warm, 1e-9), 1),
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
        rss_max_kib=max(measured),
        rss_growth_percent=round(100.0 * (rss_end - rss_start) / rss_start, 2),
        db_bytes=db.stat().st_size,
        integrity=integrity_check(db),
        first_errors=errors,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wfe-soak-") as tmp:
        result = asyncio.run(
            run_soak(args.seconds, Path(tmp), warmup=args.warmup, concurrency=args.concurrency, verbose=True)
        )
    print(json.dumps(asdict(result), indent=2))
    print(
        f"soak: {result.seconds:.0f} s, {result.operations} operations, {result.ops_per_second} ops/s after warm-up,"
        f" {result.errors} errors, server RSS {result.rss_start_kib / 1024:.1f} MiB"
        f" -> {result.rss_end_kib / 1024:.1f} MiB "
        f"({result.rss_growth_percent:+.1f}%, max {result.rss_max_kib / 1024:.1f} MiB), integrity {result.integrity}"
    )
    ok = result.errors == 0 and result.rss_growth_percent < 10 and result.integrity == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
