"""A cluster of WFE hosts on one server: throughput, round trips, and what in-memory locks cost.

    .venv/bin/python bench/cluster_hosts.py throughput [--workflows 600] [--hosts 1,2,3] [--rounds 3]
        [--host-args=--no-prime]
    .venv/bin/python bench/cluster_hosts.py inmemory   [--workflows 300] [--work-ms 5]

Both run the 3-step workflow of ``client/rust/examples/cluster_host`` (every step appends
``workflow id, step, host`` to a log file outside the store), release builds from bench/rust
(``cluster_host``: ``wfe::WorkflowHost`` on the gRPC adapter; ``cluster_peer``: the same host on
the upstream ``wfe-sqlite`` crate in-process with wfe-core's in-memory lock and queue).

``throughput``: for 1, 2 and 3 host processes on a fresh ``wfe-sqlite serve`` (``GrpcLockProvider``,
``GrpcQueueProvider``, the adapter; no poller), then for the in-process peer: the hosts start the
workflows themselves (split evenly) after a common ``go``; the clock runs from ``go`` until every
step is in the log. Every setup runs ``--rounds`` times, interleaved; prints the median completed
steps per second, the server's RPCs per step (from its Prometheus counters, by method), the core
count and the load average, and the CPU time per step of the server process and of the hosts (the
peer: its one process; from /proc, so it moves less with the machine's load than steps/s).
``make bench`` includes this table (``CLUSTER=0`` leaves it out).

``inmemory``: the setup not to use. Three hosts on one server, each with its own in-memory lock
and queue plus a ``RunnablePoller`` (what the README's example did before the cluster providers):
prints how many steps ran more than once (and how many stale persists the revisions refused, which
without revisions would have overwritten newer state).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WFE_SQLITE = Path(os.environ.get("WFE_SQLITE_BIN") or Path(sys.executable).parent / "wfe-sqlite")
RUST_DIR = HERE / "rust"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
RUST_TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or _CACHE / "wfe-sqlite" / "bench-target")
HOST_BIN = RUST_TARGET / "release" / "cluster_host"
PEER_BIN = RUST_TARGET / "release" / "cluster_peer"
STEPS = 3


def build() -> None:
    print("cluster: building bench/rust (cargo build --release) ...", flush=True)
    subprocess.run(
        [
            "cargo",
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            str(RUST_DIR / "Cargo.toml"),
            "--target-dir",
            str(RUST_TARGET),
            "--bin",
            "cluster_host",
            "--bin",
            "cluster_peer",
        ],
        check=True,
    )


def terminate(process: subprocess.Popen[str]) -> None:
    """SIGTERM unless it has ended, then wait for it (SIGKILL after 30 s)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(process: subprocess.Popen[str]) -> float:
    """User + system CPU time of ``process`` so far (all its threads), from /proc; 0 where there is none."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``wfe-sqlite serve`` on a fresh file, with metrics."""

    def __init__(self, tmp: Path) -> None:
        self.metrics = f"http://127.0.0.1:{free_port()}/metrics"
        self.process = subprocess.Popen(
            [
                str(WFE_SQLITE),
                "serve",
                "--db",
                f"sqlite://{tmp / 'wfe.db'}",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                self.metrics.split("//")[1].split("/")[0],
            ],
            stdout=subprocess.PIPE,
            stderr=(tmp / "server.log").open("w"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.address = line.split("listening on ", 1)[1].strip()

    def calls(self) -> Counter[str]:
        with urllib.request.urlopen(self.metrics, timeout=10) as response:
            text = response.read().decode()
        calls: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{"):
                labels, value = line.rsplit(" ", 1)
                calls[labels.split('grpc_method="', 1)[1].split('"', 1)[0]] += int(float(value))
        return calls

    def stop(self) -> None:
        terminate(self.process)


class Host:
    def __init__(self, args: list[str], stderr: Path) -> None:
        self.stderr = stderr
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True
        )

    def expect(self, prefix: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(prefix):
            raise RuntimeError(f"expected {prefix!r}, got {line!r}; stderr: {self.stderr.read_text()[-2000:]}")
        return line

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        terminate(self.process)


def log_lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()]  # type: ignore[misc]


def cluster_hosts(server: Server, tmp: Path, log: Path, counts: list[int], options: list[str]) -> list[Host]:
    """One ``cluster_host`` process per entry of ``counts`` (named h1, h2, ...) on ``server``: each logs
    its steps to ``log`` and starts that many workflows once it gets ``go``; ``options`` are more of its
    options. Their stderr goes to ``tmp``/h1.stderr, ..."""
    return [
        Host(
            [
                str(HOST_BIN),
                server.address,
                "--name",
                f"h{i + 1}",
                "--log",
                str(log),
                "--start",
                str(count),
                "--wait-go",
                *options,
            ],
            tmp / f"h{i + 1}.stderr",
        )
        for i, count in enumerate(counts)
    ]


def send_go(hosts: list[Host], ready: bool = False) -> float:
    """Waits until every host is ready (unless ``ready``: seen already), then sends each ``go``; the
    monotonic time it did."""
    for host in hosts:
        if not ready:
            host.expect("ready")
    started = time.monotonic()
    for host in hosts:
        host.go()
    return started


def run_hosts(hosts: list[Host], log: Path, steps: int, timeout: float, ready: bool = False) -> float:
    """Sends ``go`` to every host and waits until ``steps`` lines are logged; the seconds it took."""
    started = send_go(hosts, ready)
    while len(log_lines(log)) < steps:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"only {len(log_lines(log))} of {steps} steps within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class Row:
    """One setup's figures over the rounds."""

    name: str
    rates: list[float] = field(default_factory=list)  # completed steps per second, one per round
    calls: Counter[str] = field(default_factory=Counter)  # server RPCs by method, all rounds
    steps: int = 0  # step runs, all rounds
    server_cpu: float = 0.0  # CPU seconds of the server process over the runs, all rounds
    hosts_cpu: float = 0.0  # CPU seconds of the host processes (or the peer) over the runs, all rounds

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def cpu_ms_per_step(self, seconds: float) -> str:
        return f"{seconds / self.steps * 1000:.2f}" if self.steps and seconds else "-"

    @property
    def rpcs_per_step(self) -> float:
        return sum(self.calls.values()) / self.steps if self.steps else 0.0


def run_cluster(n: int, workflows: int, host_args: list[str], timeout: float, row: Row) -> None:
    """One round: ``n`` cluster_host processes on a fresh server run ``workflows`` workflows."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = Server(tmp)
        log = tmp / "steps.log"
        hosts = cluster_hosts(server, tmp, log, split(workflows, n), host_args)
        try:
            before = server.calls()
            for host in hosts:
                host.expect("ready")
            cpu_before = cpu_seconds(server.process), sum(cpu_seconds(h.process) for h in hosts)
            seconds = run_hosts(hosts, log, workflows * STEPS, timeout, ready=True)
            row.server_cpu += cpu_seconds(server.process) - cpu_before[0]
            row.hosts_cpu += sum(cpu_seconds(h.process) for h in hosts) - cpu_before[1]
            time.sleep(0.2)
            calls = server.calls() - before
            ran = len(log_lines(log))
        finally:
            for host in hosts:
                host.stop()
            server.stop()
    row.rates.append(ran / seconds)
    row.calls.update(calls)
    row.steps += ran
    print(
        f"cluster: {row.name}: {ran} steps in {seconds:.2f}s = {ran / seconds:.0f} steps/s, "
        f"{sum(calls.values()) / ran:.2f} RPCs/step",
        flush=True,
    )


def run_peer(workflows: int, timeout: float, row: Row) -> None:
    """One round of the in-process peer."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "steps.log"
        peer = Host(
            [str(PEER_BIN), f"sqlite://{tmp / 'peer.db'}", "--log", str(log), "--start", str(workflows)],
            tmp / "peer.stderr",
        )
        try:
            peer.expect("ready")
            cpu_before = cpu_seconds(peer.process)
            seconds = run_hosts([peer], log, workflows * STEPS, timeout, ready=True)
            row.hosts_cpu += cpu_seconds(peer.process) - cpu_before
            ran = len(log_lines(log))
        finally:
            peer.stop()
    row.rates.append(ran / seconds)
    row.steps += ran
    print(f"cluster: {row.name}: {ran} steps in {seconds:.2f}s = {ran / seconds:.0f} steps/s", flush=True)


def measure(hosts: list[int], workflows: int, rounds: int = 3, host_args: str = "", timeout: float = 600) -> str:
    """Runs every setup ``rounds`` times, interleaved (so a busy moment of the machine hits all of them),
    and returns the markdown report: medians, ranges, RPCs per step."""
    load_before = os.getloadavg()
    rows = [Row(f"{n} host{'s' if n > 1 else ''} on wfe-sqlite serve") for n in hosts]
    peer = Row("1 host, wfe-sqlite crate in-process, in-memory lock and queue")
    for _ in range(rounds):
        for n, row in zip(hosts, rows, strict=True):
            run_cluster(n, workflows, host_args.split(), timeout, row)
        run_peer(workflows, timeout, peer)
    load_after = os.getloadavg()

    lines = [
        f"End-to-end, the 3-step workflow of `client/rust/examples/cluster_host` ({workflows} workflows started "
        f"by the hosts after a common go, until every step is logged); median of {rounds} interleaved rounds "
        f"(min-max). {os.cpu_count()} cores shared by the server, the hosts and the driver; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. Hosts: `GrpcLockProvider` (background release), "
        f"`GrpcQueueProvider` (dequeue brings the workflow; linked with `with_locks`: it takes the host's leases and "
        f"carries its releases; `with_prefetch`: the next dequeue goes ahead while a step runs), the adapter"
        f"{' + ' + host_args if host_args else ''}.",
        "",
        "| setup | steps/s | vs in-process peer | RPCs per step | server CPU ms/step | hosts' CPU ms/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in [*rows, peer]:
        rpcs = f"{row.rpcs_per_step:.2f}" if row.calls else "(in-process)"
        lines.append(
            f"| {row.name} | {row.rate:.0f} ({min(row.rates):.0f}-{max(row.rates):.0f}) | "
            f"{row.rate / peer.rate:.2f}x | {rpcs} | {row.cpu_ms_per_step(row.server_cpu)} | "
            f"{row.cpu_ms_per_step(row.hosts_cpu)} |"
        )
    lines += ["", "RPCs per step by method (all hosts, all rounds):", ""]
    for row in rows:
        per_step = ", ".join(f"{method} {n / row.steps:.2f}" for method, n in row.calls.most_common())
        lines.append(f"- {row.name}: {per_step}")
    return "\n".join(lines)


def throughput(args: argparse.Namespace) -> None:
    print()
    print(measure(args.hosts, args.workflows, args.rounds, args.host_args, args.timeout))


def inmemory(args: argparse.Namespace) -> None:
    from wfe_client import GrpcPersistenceProvider, WorkflowStatus

    workflows = args.workflows
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = Server(tmp)
        log = tmp / "steps.log"
        hosts = cluster_hosts(server, tmp, log, split(workflows, 3), ["--work-ms", str(args.work_ms), "--inmemory"])

        async def all_complete() -> bool:
            ids = sorted({line[0] for line in log_lines(log)})
            if len(ids) < workflows:
                return False
            async with GrpcPersistenceProvider.connect(server.address) as provider:
                found = await provider.get_workflow_instances(ids)
            return all(w.status is WorkflowStatus.COMPLETE for w in found)

        try:
            started = send_go(hosts)
            while not asyncio.run(all_complete()):
                if time.monotonic() - started > args.timeout:
                    raise RuntimeError("not all workflows completed in time")
                time.sleep(0.5)
            seconds = time.monotonic() - started
        finally:
            for host in hosts:
                host.stop()
            server.stop()
        lines = log_lines(log)
        runs = Counter((workflow_id, step) for workflow_id, step, _ in lines)
        repeated = {key: n for key, n in runs.items() if n > 1}
        refused = sum(h.stderr.read_text().count("REVISION_CONFLICT") for h in hosts)
        print(
            f"in-memory locks and queues, 3 hosts, {workflows} workflows x {STEPS} steps "
            f"(work {args.work_ms} ms per step), {seconds:.1f}s:"
        )
        print(
            f"  {len(runs)} distinct steps, {len(lines)} step runs: {len(repeated)} steps ran more than once "
            f"({sum(repeated.values()) - len(repeated)} extra runs, at most {max(repeated.values(), default=1)} "
            f"runs of one step)"
        )
        print(
            f"  stale persists refused by revisions: {refused} (without revisions each would have overwritten "
            f"a newer state)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("throughput", "inmemory"))
    parser.add_argument("--workflows", type=int)
    parser.add_argument("--hosts", default="1,2,3", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--work-ms", type=int, default=5, help="inmemory: work per step")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: rounds per setup (median)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--host-args", default="", help="more cluster_host options, e.g. --no-prime, --sync-release")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    args = parser.parse_args()
    if args.workflows is None:
        args.workflows = 600 if args.mode == "throughput" else 300
    if not args.no_build:
        if shutil.which("cargo") is None:
            sys.exit("cluster: cargo not found")
        build()
    (throughput if args.mode == "throughput" else inmemory)(args)


if __name__ == "__main__":
    main()
