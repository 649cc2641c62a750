"""``make bench-postgres``: the server on PostgreSQL against SQLite and the upstream ``wfe-postgres`` crate.

One run measures ``create``, ``get``, ``persist`` and ``commands`` (bench/workload.py) at 1 and 64
concurrent callers on these targets:

- ``sqlite-1``: one ``wfe-sqlite serve`` on a fresh SQLite file (``synchronous=FULL``);
- ``pg-1``, ``pg-2``, ``pg-4``: 1, 2 and 4 ``wfe-sqlite serve --db postgresql://...`` processes on
  one fresh PostgreSQL database (pool of 10 connections each, the default);
- ``crate-pg``: the upstream ``wfe-postgres`` crate 1.11.4 in-process (bench/rust, its own pool of
  10 connections) on a fresh database of the same PostgreSQL cluster.

PostgreSQL is a throwaway cluster started here (tests/pgcluster.py) with durable settings: ``fsync``
and ``synchronous_commit`` on (checked with ``SHOW`` and printed). Load comes from separate
processes: by default the Rust adapter (bench/rust, ``wfe-grpc``), ``--adapter python`` uses the
Python adapter (``GrpcPersistenceProvider``, bench/client.py). At c=64 there are max(2, servers)
load processes, process i calling server i mod servers; at c=1 one caller on the first server.

Besides ops/s and latency, each figure records the CPU time the server processes, the PostgreSQL
processes and the load processes spent per call (``/proc/PID/stat``), from which the report derives
a CPU-bound model of the same figure on 8 cores (see BENCHMARKS.md for the model and its limits).

``--profile SECONDS`` then samples one PostgreSQL server under c=64 creates with py-spy and reports
where its time goes (the leaf functions with the most samples).

Writes its section of BENCHMARKS.md between the ``bench-postgres:`` markers.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import run as base  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

OPS = ("create", "get", "persist", "commands")
CONCURRENCY = (1, 64)
SERVERS = (1, 2, 4)
CRATE = "crate-pg"
TICKS = os.sysconf("SC_CLK_TCK")
CORES_MODEL = 8


@dataclass
class Figure:
    ops: float
    p50_ms: float
    p99_ms: float
    calls: int
    """Calls completed over all windows (warm-up included): the denominator of the CPU figures."""
    elapsed: float
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds over the same interval: ``server``, ``postgres``, ``load``."""
    wal: dict[str, float] = field(default_factory=dict)
    """PostgreSQL's pg_stat_wal and commit counters over the same interval (empty for SQLite)."""

    def per_sync(self, what: str) -> float:
        """``what`` (a ``wal`` counter, or ``calls``) per WAL flush."""
        syncs = self.wal.get("wal_sync", 0.0)
        value = self.calls if what == "calls" else self.wal.get(what, 0.0)
        return value / syncs if syncs else float("nan")

    def per_call_ms(self, who: str) -> float:
        return 1000.0 * self.cpu.get(who, 0.0) / self.calls if self.calls else float("nan")

    def cores(self, who: str) -> float:
        return self.cpu.get(who, 0.0) / self.elapsed if self.elapsed else float("nan")


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each live process, in seconds."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def _children(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (the postmaster's backends and helpers)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


class Probe:
    """CPU of named groups of processes between two points in time."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    def snapshot(self, groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
        groups = dict(groups, postgres=[self.postmaster, *_children(self.postmaster)])
        return {name: _cpu_seconds(pids) for name, pids in groups.items()}

    @staticmethod
    def delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        # A process that appeared in between counts from zero; one that ended is lost (rare: pools
        # keep their connections, so the backends live through a figure).
        return {
            name: sum(seconds - before.get(name, {}).get(pid, 0.0) for pid, seconds in now.items())
            for name, now in after.items()
        }


class Bench:
    def __init__(self, args: argparse.Namespace, cluster: PgCluster) -> None:
        self.args = args
        self.cluster = cluster
        self.tmp = Path(tempfile.mkdtemp(prefix="wfe-bench-pg-"))
        self.rounds: dict[tuple[str, str, int], list[Figure]] = {}
        """Every round's figure of each (target, op, concurrency)."""
        pid_file = cluster.data / "postmaster.pid"
        self.probe = Probe(int(pid_file.read_text().split()[0]))
        self.databases = 0

    def database(self) -> tuple[str, str]:
        self.databases += 1
        name = f"bench{self.databases}"
        return name, self.cluster.create_database(name)

    def load_command(self, target: str, op: str, tasks: int, windows: int = 0) -> list[str]:
        common = ["--op", op, "--tasks", str(tasks), "--windows", str(windows or self.args.windows)]
        common += ["--window-secs", str(self.args.window)]
        if target.startswith("grpc:") and self.args.adapter == "python":
            return [base.PY, str(HERE / "client.py"), "--target", target, *common]
        return [str(base.RUST_BIN), "--target", target, *common]

    def measure(self, label: str, op: str, commands: list[list[str]], servers: list[base.Server]) -> None:
        load = base.Load(commands)
        try:
            for c in CONCURRENCY:
                fig = self._run(load, base._split(c, len(commands)), servers)
                self.rounds.setdefault((label, op, c), []).append(fig)
                print(
                    f"  {label:<9} {op:<9} c={c:<3} {fig.ops:9,.0f}/s p50 {fig.p50_ms:7.2f} p99 {fig.p99_ms:7.2f} ms"
                    f"  cpu ms/call server {fig.per_call_ms('server'):.3f} postgres {fig.per_call_ms('postgres'):.3f}"
                    f" load {fig.per_call_ms('load'):.3f}",
                    flush=True,
                )
        finally:
            load.close()

    def _run(self, load: base.Load, split: list[int], servers: list[base.Server]) -> Figure:
        windows, width = self.args.windows, self.args.window
        groups = {"server": [s.proc.pid for s in servers], "load": [p.pid for p in load.procs]}
        wal_before = self.wal_counters()
        before, started = self.probe.snapshot(groups), time.time()
        t0 = time.time() + base.LEAD
        for p, n in zip(load.procs, split, strict=True):
            p.stdin.write(f"go {t0:.6f} {n}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        per_window: list[list[int]] = [[] for _ in range(windows)]
        for p in load.procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"load process {p.args} died")
            for w, lat in enumerate(json.loads(line)["windows"]):
                per_window[w].extend(lat)
        after, ended = self.probe.snapshot(groups), time.time()
        wal_after = self.wal_counters()
        kept = per_window[1:]
        flat = [x for w in kept for x in w]
        return Figure(
            ops=statistics.median(len(w) / width for w in kept),
            p50_ms=base._percentile(flat, 0.50),
            p99_ms=base._percentile(flat, 0.99),
            calls=sum(len(w) for w in per_window),
            elapsed=ended - started,
            cpu=Probe.delta(before, after),
            wal={k: wal_after[k] - wal_before[k] for k in wal_after},
        )

    def wal_counters(self) -> dict[str, float]:
        """WAL flushes (``wal_sync``), their time in ms and the commits of the whole cluster so far.

        A backend publishes its counters when it exits, otherwise up to 10 s late once idle
        (PostgreSQL 15's PGSTAT_IDLE_INTERVAL); so the (idle) client backends are terminated
        first, and the pools of the servers and of the crate open new connections on the next call,
        in the warm-up window that the figure drops.
        """
        self.cluster.psql(
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        line = self.cluster.psql(
            "SELECT w.wal_sync, w.wal_sync_time, (SELECT sum(xact_commit) FROM pg_stat_database) FROM pg_stat_wal w"
        )
        syncs, sync_ms, commits = (float(x) for x in line.split("|"))
        return {"wal_sync": syncs, "wal_sync_time": sync_ms, "commits": commits}

    def serve(self, db: str, count: int) -> list[base.Server]:
        servers: list[base.Server] = []
        command = [str(base.WFE_SQLITE), "serve", "--db", db, "--listen", "127.0.0.1:0"]
        try:
            for _ in range(count):
                servers.append(base.Server(command))  # noqa: PERF401 (the ones started are stopped on failure)
        except BaseException:
            for s in servers:
                s.stop()
            raise
        return servers

    def grpc_load(self, servers: list[base.Server], op: str, windows: int = 0) -> list[list[str]]:
        processes = max(2, len(servers))
        tasks = max(CONCURRENCY) // processes
        return [
            self.load_command(f"grpc:{servers[i % len(servers)].address}", op, tasks, windows) for i in range(processes)
        ]

    def figures(self) -> dict[tuple[str, str, int], Figure]:
        """Each key's round with the median ops/s (the lower middle one of an even count)."""
        return {k: sorted(v, key=lambda f: f.ops)[(len(v) - 1) // 2] for k, v in self.rounds.items()}

    def run(self) -> None:
        # Rounds interleave the targets (op by op), so a stretch of heavy load from elsewhere on the
        # machine hits one round of every target rather than all rounds of one.
        for op in self.args.ops:
            for r in range(self.args.rounds):
                print(f"[{op}, round {r + 1} of {self.args.rounds}]", flush=True)
                self.run_round(op)

    def run_round(self, op: str) -> None:
        targets = self.args.targets
        if "sqlite-1" in targets:
            servers = self.serve(f"sqlite://{self.tmp / (op + '.db')}", 1)
            try:
                self.measure("sqlite-1", op, self.grpc_load(servers, op), servers)
            finally:
                for s in servers:
                    s.stop()
        for count in SERVERS:
            if f"pg-{count}" not in targets:
                continue
            name, url = self.database()
            servers = self.serve(url, count)
            try:
                self.measure(f"pg-{count}", op, self.grpc_load(servers, op), servers)
            finally:
                for s in servers:
                    s.stop()
            self.cluster.drop_database(name)
        if CRATE not in targets:
            return
        name, url = self.database()
        self.measure(CRATE, op, [self.load_command(f"crate-pg:{url}", op, max(CONCURRENCY))], [])
        self.cluster.drop_database(name)

    def profile(self, seconds: float) -> dict[str, list[tuple[str, float]]]:
        """py-spy on one PostgreSQL server under c=64 creates: the leaf frames with the most samples."""
        name, url = self.database()
        servers = self.serve(url, 1)
        out = self.tmp / "profile.txt"
        # The load runs one window longer than the profile on each side; py-spy covers the middle.
        load = base.Load(self.grpc_load(servers, "create", int(seconds / self.args.window) + 3))
        try:
            t0 = time.time() + base.LEAD
            for p, n in zip(load.procs, base._split(max(CONCURRENCY), len(load.procs)), strict=True):
                p.stdin.write(f"go {t0:.6f} {n}\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            spy = Path(base.PY).parent / "py-spy"
            time.sleep(max(0.0, t0 - time.time()) + self.args.window)
            subprocess.run(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(servers[0].proc.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p in load.procs:
                p.stdout.readline()  # type: ignore[union-attr]
        finally:
            load.close()
            for s in servers:
                s.stop()
            self.cluster.drop_database(name)
        return summarise(out.read_text())

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def summarise(collapsed: str, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the share of samples per leaf frame (self time), per function
    of the server's own code, asyncpg and grpc including what it calls (inclusive), and main thread
    against the others."""
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaves[frames[-1]] += n
        total += n
        threads["other threads" if frames[0].startswith("Thread._bootstrap") else "main thread"] += n
        seen = set()
        for frame in frames:
            name, _, where = frame.partition(" (")
            module = where.split(":")[0]
            if module.startswith(("wfe_sqlite/", "asyncpg/", "grpc/")):
                key = f"{module}: {name}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += n
    if not total:
        return {}

    def share(counter: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(what, 100.0 * n / total) for what, n in counter.most_common(k)]

    return {"leaf": share(leaves, top), "inclusive": share(inclusive, top), "threads": share(threads, 2)}


# -- report --------------------------------------------------------------------------------------

TARGETS = ("sqlite-1", *(f"pg-{n}" for n in SERVERS), CRATE)


def model_8(label: str, fig: Figure) -> float:
    """The CPU-bound ceiling on 8 cores: each Python server process is one event loop (about one
    core), and the server and PostgreSQL CPU per call share the 8 cores; load elsewhere."""
    server = fig.per_call_ms("server") / 1000.0
    postgres = fig.per_call_ms("postgres") / 1000.0
    if label == CRATE:
        # In-process: the crate's CPU is the load process's, on a 2-worker runtime here.
        server = fig.per_call_ms("load") / 1000.0
        return CORES_MODEL / (server + postgres) if server + postgres else float("nan")
    count = 1 if label == "sqlite-1" else int(label.split("-")[1])
    if not server:
        return float("nan")
    ceilings = [count / server]
    ceilings.append(CORES_MODEL / (server + postgres))
    return min(ceilings)


def _spread(fig: Figure | None, all_rounds: list[Figure]) -> str:
    if fig is None:
        return "-"
    if len(all_rounds) < 2:
        return f"{fig.ops:,.0f}"
    return f"{fig.ops:,.0f} ({min(f.ops for f in all_rounds):,.0f}-{max(f.ops for f in all_rounds):,.0f})"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None or x != x else f"{x:,.{digits}f}"


def report(
    figures: dict[tuple[str, str, int], Figure],
    rounds: dict[tuple[str, str, int], list[Figure]],
    args: argparse.Namespace,
    settings: dict[str, str],
    elapsed: float,
    profile: dict[str, list[tuple[str, float]]],
) -> str:
    adapter = "Rust adapter (bench/rust, wfe-grpc)" if args.adapter == "rust" else "Python adapter (wfe_client)"
    lines = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {base.machine()}, "
        f"PostgreSQL {settings['server_version']} "
        f"(fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}, "
        f"wal_sync_method={settings['wal_sync_method']}); {args.windows - 1} windows of {args.window}s per figure "
        f"(median), {args.rounds} rounds interleaved (the median round kept; "
        f"the lowest and highest round's ops/s in brackets); "
        f"load: {adapter}, max(2, servers) processes at c=64; whole run {elapsed:.0f}s; "
        f"machine load average (1 min) {args.loadavg[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other work on the machine competes for the 2 cores and the disk).",
        "",
        "| op | c | " + " | ".join(f"{t} ops/s" for t in TARGETS) + " | pg-1 / crate | best pg-N / crate |",
        "|---|---:|" + "---:|" * (len(TARGETS) + 2),
    ]
    for op in OPS:
        for c in CONCURRENCY:
            row = [figures.get((t, op, c)) for t in TARGETS]
            if all(f is None for f in row):
                continue
            crate = figures.get((CRATE, op, c))
            pg = [figures.get((f"pg-{n}", op, c)) for n in SERVERS]
            best = max((f.ops for f in pg if f is not None), default=0.0)
            one = pg[0]
            cells = [_spread(f, rounds.get((t, op, c), [])) for t, f in zip(TARGETS, row, strict=True)]
            r1 = "-" if one is None or crate is None or not crate.ops else f"**{one.ops / crate.ops:.2f}**"
            rb = "-" if crate is None or not crate.ops else f"{best / crate.ops:.2f}"
            lines.append(f"| {op} | {c} | " + " | ".join(cells) + f" | {r1} | {rb} |")
    lines.append("")
    one, crate = figures.get(("pg-1", "create", 64)), figures.get((CRATE, "create", 64))
    if one is not None and crate is not None and crate.ops:
        ratio = one.ops / crate.ops
        verdict = "met" if ratio >= 1.0 else "NOT met"
        lines += [
            f"Target (creates at c=64, one server on PostgreSQL >= 1x the in-process crate): "
            f"{one.ops:,.0f} vs {crate.ops:,.0f} ops/s = **{ratio:.2f}x: {verdict}** in this run.",
            "",
        ]
    lines += [
        "Latency and CPU per call (CPU: utime+stime from /proc over the figure's whole run, divided by the calls "
        "completed; `server` = the wfe-sqlite processes, `postgres` = the postmaster and its children, `load` = the "
        "load processes, which for crate-pg is the crate itself). `calls / WAL flush`: calls completed per "
        "`pg_stat_wal.wal_sync` (PostgreSQL's group commit at work; reads flush nothing), `ms / WAL flush`: "
        "`wal_sync_time` per flush (track_wal_io_timing on). `8-core model`: the CPU-bound ceiling described "
        "above the markers, not a measurement.",
        "",
        "| op | c | target | ops/s | p50 ms | p99 ms | server cores | server ms/call | postgres cores "
        "| postgres ms/call | load ms/call | calls / WAL flush | ms / WAL flush | 8-core model ops/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op in OPS:
        for c in CONCURRENCY:
            for t in TARGETS:
                f = figures.get((t, op, c))
                if f is None:
                    continue
                model = model_8(t, f) if c > 1 else float("nan")
                wal = t != "sqlite-1" and op != "get"  # PostgreSQL's flushes, for the writes
                lines.append(
                    f"| {op} | {c} | {t} | {f.ops:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | {f.cores('server'):.2f} "
                    f"| {f.per_call_ms('server'):.3f} | {f.cores('postgres'):.2f} | {f.per_call_ms('postgres'):.3f} "
                    f"| {f.per_call_ms('load'):.3f} | {_num(f.per_sync('calls') if wal else None, 1)} "
                    f"| {_num(f.per_sync('wal_sync_time') if wal else None, 2)} | {_num(model)} |"
                )
    lines.append("")
    if profile:
        lines += [
            f"py-spy on the pg-1 server under c=64 creates ({args.profile:.0f}s at 200 Hz, `--nonblocking`, "
            "samples of running threads; "
            + ", ".join(f"{what} {share:.0f}%" for what, share in profile["threads"])
            + "). Leaf frames (self time; a Python frame as leaf means time in C under it) and the server's, "
            "asyncpg's and grpc's functions including what they call:",
            "",
            "| share | leaf frame | share | function (inclusive) |",
            "|---:|---|---:|---|",
        ]
        leaf, incl = profile["leaf"], profile["inclusive"]
        for i in range(max(len(leaf), len(incl))):
            a = f"{leaf[i][1]:.1f}% | `{leaf[i][0]}`" if i < len(leaf) else " | "
            b = f"{incl[i][1]:.1f}% | `{incl[i][0]}`" if i < len(incl) else " | "
            lines.append(f"| {a} | {b} |")
        lines.append("")
    return "\n".join(lines)


BEGIN, END = "<!-- bench-postgres:begin -->", "<!-- bench-postgres:end -->"


def write_section(text: str, path: Path) -> None:
    old = path.read_text()
    if BEGIN not in old:
        old = old.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else "\n"
    path.write_text(head + BEGIN + "\n" + text + "\n" + END + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--windows", type=int, default=4, help="windows per figure, the first is warm-up")
    parser.add_argument("--window", type=float, default=0.6, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure, interleaved; the median is kept")
    parser.add_argument("--targets", default=",".join(TARGETS), help="a subset of " + ",".join(TARGETS))
    parser.add_argument("--adapter", default="rust", choices=["rust", "python"], help="gRPC load generator")
    parser.add_argument("--profile", type=float, default=5.0, help="seconds of py-spy under c=64 creates (0: none)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.ops = [o for o in args.ops.split(",") if o]
    unknown = set(args.ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}: choose from {OPS}")
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}: choose from {TARGETS}")
    started, args.loadavg = time.time(), os.getloadavg()
    needs_rust = args.adapter == "rust" or CRATE in args.targets
    if needs_rust and not base.build_rust():
        sys.exit("bench-postgres: the Rust build is needed (the wfe-postgres crate is the peer)")
    cluster = PgCluster.start(durable=True)
    try:
        settings = {
            s: cluster.psql(f"SHOW {s}") for s in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
        print(f"bench-postgres: PostgreSQL on port {cluster.port}: {settings}", flush=True)
        # Time each WAL flush (pg_stat_wal.wal_sync_time): how many commits share one fsync, and its cost.
        cluster.psql("ALTER SYSTEM SET track_wal_io_timing = on")
        cluster.psql("SELECT pg_reload_conf()")
        if settings["fsync"] != "on" or settings["synchronous_commit"] != "on":
            sys.exit("bench-postgres: PostgreSQL is not durable (fsync and synchronous_commit must be on)")
        bench = Bench(args, cluster)
        try:
            bench.run()
            profile = bench.profile(args.profile) if args.profile > 0 else {}
        finally:
            bench.close()
    finally:
        cluster.stop()
    text = report(bench.figures(), bench.rounds, args, settings, time.time() - started, profile)
    print()
    print(text)
    if not args.no_write:
        write_section(text, Path(args.out))
        print(f"bench-postgres: wrote {args.out}")


if __name__ == "__main__":
    main()
