"""A load process of ``make bench`` (bench/run.py starts it; bench/rust speaks the same protocol).

``client.py --target grpc:HOST:PORT|embedded:URL|raw:PATH --op OP --tasks MAX --windows W
--window-secs S [--setup-due]`` sets up what ``OP`` needs, prints ``ready``, then for each line
``go T0 N`` on stdin runs ``N`` concurrent callers from wall-clock ``T0`` (epoch seconds) for ``W``
windows of ``S`` seconds and prints ``{"windows": [[latency_us, ...], ...]}``; ``quit`` ends it.

``raw:`` is the storage limit: plain ``sqlite3`` on one thread running the SQL the provider runs for
the same work, with the same pragmas; N callers become transactions of N operations (the best a
group commit of N can do), reads one snapshot each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workload


def _install_loop(name: str) -> None:
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _measure_async(call: Any, t0: float, tasks: int, windows: int, width: float) -> list[list[int]]:
    end = t0 + windows * width
    await asyncio.sleep(max(0.0, t0 - time.time()))

    async def caller(task: int) -> list[list[int]]:
        lat: list[list[int]] = [[] for _ in range(windows)]
        n = (task << 32) | ((int(t0) & 0xFFFF) << 16)
        while True:
            start = time.time()
            if start >= end:
                return lat
            await call(task, n)
            n += 1
            done = time.time()
            w = int((done - t0) / width)
            if w < windows and done < end:
                lat[w].append(int((done - start) * 1e6))

    results = await asyncio.gather(*(caller(t) for t in range(tasks)))
    return [[x for r in results for x in r[w]] for w in range(windows)]


async def _provider_main(args: argparse.Namespace) -> None:
    kind, _, where = args.target.partition(":")
    if kind == "grpc":
        from wfe_client import GrpcPersistenceProvider

        provider: Any = await GrpcPersistenceProvider.connect(where)
    else:
        from wfe_sqlite import SqlitePersistenceProvider

        provider = await SqlitePersistenceProvider.open(where, switch_interval=0.0002)  # as the server runs
    prep = await workload.setup(provider, args.op, args.tasks, args.setup_due)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                return
            _, t0, tasks = line.split()

            async def call(task: int, n: int) -> None:
                await workload.one(provider, args.op, prep, task, n)

            windows = await _measure_async(call, float(t0), int(tasks), args.windows, args.window_secs)
            print(json.dumps({"windows": windows}), flush=True)
    finally:
        await provider.close()


def _raw_main(args: argparse.Namespace) -> None:
    import raw

    store = raw.RawStore(args.target.partition(":")[2])
    store.setup(args.op, args.tasks, args.setup_due)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        _, t0, tasks = line.split()
        windows = store.measure(args.op, float(t0), int(tasks), args.windows, args.window_secs)
        print(json.dumps({"windows": windows}), flush=True)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--op", required=True, choices=workload.OPS)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-secs", type=float, default=0.5)
    parser.add_argument("--setup-due", action="store_true")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval (0: leave it)")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.target.startswith("raw:"):
        _raw_main(args)
        return
    _install_loop(args.loop)
    asyncio.run(_provider_main(args))


if __name__ == "__main__":
    main()
