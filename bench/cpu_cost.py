"""CPU time per operation: the embedded provider against raw ``sqlite3`` (bench/raw.py), in one process.

``make bench`` measures throughput, which on a shared machine moves with everything else running
(ops/s of one figure moved 3-10x between runs of 2026-12-01 at load averages of 10-20 on 2 cores).
The CPU time a process spends per operation moves much less with the load: it is what the provider
costs, not how much of the machine it got. For reads, which do not wait for the disk, the ratio
raw/embedded of CPU per operation is what the throughput ratio tends to on an idle machine; writes
also wait for fsync (``synchronous=FULL``), which this does not count.

``python bench/cpu_cost.py [--ops get,batch_get,runnable] [--tasks 1,64] [--seconds 1.5] [--rounds 3]``
prints, per operation and callers, the CPU microseconds per operation of each (the median of the
rounds, targets interleaved) and raw/embedded. Run it with ``PYTHONPATH`` set to another checkout's
``server:client/python`` to measure that one's provider (raw is the same SQL in both).

``--grpc`` measures the server process instead: ``wfe-sqlite serve`` (fresh file) and bench/echo.py
under the load of bench/client.py processes (as ``make bench``), CPU time of the server process
(``/proc/PID/stat``) per call, and echo/server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import raw  # noqa: E402
import workload  # noqa: E402


async def _embedded(url: str, op: str, tasks: int, seconds: float) -> tuple[float, int]:
    from wfe_sqlite import SqlitePersistenceProvider

    provider = await SqlitePersistenceProvider.open(url, switch_interval=0.0002)  # as bench/client.py
    try:
        prep = await workload.setup(provider, op, tasks, True)
        for task in range(tasks):  # warm up
            await workload.one(provider, op, prep, task, task)
        count = 0
        end = time.monotonic() + seconds

        async def caller(task: int) -> None:
            nonlocal count
            n = task << 32
            while time.monotonic() < end:
                await workload.one(provider, op, prep, task, n)
                n += 1
                count += 1

        cpu = time.process_time()
        await asyncio.gather(*(caller(t) for t in range(tasks)))
        return time.process_time() - cpu, count
    finally:
        await provider.close()


def _raw(url: str, op: str, tasks: int, seconds: float) -> tuple[float, int]:
    store = raw.RawStore(url)
    try:
        store.setup(op, tasks, True)
        cpu = time.process_time()
        windows = store.measure(op, time.time(), tasks, 1, seconds)
        return time.process_time() - cpu, len(windows[0])
    finally:
        store.close()


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cost(command: list[str], op: str, tasks: int, seconds: float) -> float:
    """CPU microseconds of the server process per call of ``op`` at ``tasks`` callers."""
    import run

    server = run.Server(command)
    try:
        processes = 2 if tasks > 1 else 1
        clients = [
            [sys.executable, str(HERE / "client.py"), "--target", f"grpc:{server.address}", "--op", op]
            + ["--tasks", str(max(1, tasks // processes)), "--windows", "2", "--window-secs", str(seconds / 2)]
            + (["--setup-due"] if op == "runnable" and i == 0 else [])
            for i in range(processes)
        ]
        load = run.Load(clients)
        try:
            cpu = _process_cpu(server.proc.pid)
            figure = load.run(run._split(tasks, processes), 2, seconds / 2)
            used = _process_cpu(server.proc.pid) - cpu
        finally:
            load.close()
        return used / max(figure.ops * seconds, 1) * 1e6
    finally:
        server.stop()


def grpc_main(args: argparse.Namespace) -> None:
    print("| op | c | server CPU us/call | echo CPU us/call | echo/server |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            for tasks in (int(t) for t in args.tasks.split(",")):
                server: list[float] = []
                echo: list[float] = []
                for r in range(args.rounds):
                    serve = [str(Path(sys.executable).parent / "wfe-sqlite"), "serve", "--listen", "127.0.0.1:0"]
                    serve += ["--db", f"sqlite://{tmp}/{op}-{tasks}-{r}.db"]
                    server.append(_server_cost(serve, op, tasks, args.seconds))
                    echo_cmd = [sys.executable, str(HERE / "echo.py"), "--listen", "127.0.0.1:0"]
                    echo.append(_server_cost(echo_cmd, op, tasks, args.seconds))
                a, b = statistics.median(server), statistics.median(echo)
                print(f"| {op} | {tasks} | {a:,.1f} | {b:,.1f} | **{b / a:.2f}** |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default="get,batch_get,runnable")
    parser.add_argument("--tasks", default="1,64")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc", action="store_true", help="the server process against bench/echo.py")
    args = parser.parse_args()
    if args.grpc:
        grpc_main(args)
        return
    print("| op | c | embedded CPU us/op | raw CPU us/op | raw/embedded |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            for tasks in (int(t) for t in args.tasks.split(",")):
                embedded: list[float] = []
                plain: list[float] = []
                for r in range(args.rounds):
                    url = f"sqlite://{tmp}/{op}-{tasks}-{r}"
                    cpu, count = asyncio.run(_embedded(url + "-embedded.db", op, tasks, args.seconds))
                    embedded.append(cpu / max(count, 1) * 1e6)
                    cpu, count = _raw(url + "-raw.db", op, tasks, args.seconds)
                    plain.append(cpu / max(count, 1) * 1e6)
                e, p = statistics.median(embedded), statistics.median(plain)
                print(f"| {op} | {tasks} | {e:,.1f} | {p:,.1f} | **{p / e:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
