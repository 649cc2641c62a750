"""``make bench``: every operation at concurrency 1, 16 and 64 against each target and its limit.

Targets (each a separate process from the load, except the in-process ones by definition):

- ``grpc``: the real server (``wfe-sqlite serve``, fresh file per operation), Python adapter load
  from separate processes; its limit ``echo`` is ``bench/echo.py`` (same services, no store) under
  the same load;
- ``embedded``: ``SqlitePersistenceProvider`` in the load process; its limit ``raw`` is plain
  ``sqlite3`` running the same SQL with the same pragmas (``bench/raw.py``);
- ``rust-grpc``: the Rust adapter (``client/rust``, bench/rust) driving the real server, against
  ``rust-echo`` (the same binary against the echo server); ``rust-crate``: the ``wfe-sqlite``
  crate 1.11.4 in-process, set beside ``raw``.

Each figure is the median of the measured windows (one warm-up window is dropped) of one run;
ratios compare figures of the same run. The small database's figures are taken in ``--rounds``
interleaved rounds: every load process of an operation (target and limit, both adapters) is started
once, then each round measures each concurrency of each in turn, so a target and its limit are
measured seconds apart, not minutes; a figure is the round of median ops/s, a ratio the median of
the rounds' ratios (each round's target over the same round's limit). On a shared machine whose
load moves between minutes, one round each (as before 2026-12-03) let a row's ratio move by a half
from run to run. ``--scale 10k,100k,1m`` repeats the gRPC and embedded figures on databases already
holding that many workflows and events (built once, cached in bench/.data/), each paired with the
same work on a fresh small file in the same interleaved rounds. ``--visibility N`` (default: the
largest scale) adds list, search and purge figures on N workflows (bench/visibility.py). Writes the
tables into BENCHMARKS.md between the ``bench:`` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
WFE_SQLITE = Path(PY).parent / "wfe-sqlite"
RUST_DIR = HERE / "rust"
# The Rust build is shared by every clone on the machine (its crates take minutes to build cold, most
# of it the testcontainers stack that the wfe-sqlite crate pulls in): CARGO_TARGET_DIR if set, else
# a cache directory outside the work tree.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
RUST_TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or _CACHE / "wfe-sqlite" / "bench-target")
RUST_BIN = RUST_TARGET / "release" / "wfe-bench"
DATA = HERE / ".data"

sys.path.insert(0, str(HERE))
import workload  # noqa: E402

CONCURRENCY = (1, 16, 64)
LEAD = 0.25  # seconds between "go" and the start, so every load process starts together


@dataclass
class Figure:
    ops: float
    p50_ms: float
    p99_ms: float

    def text(self) -> str:
        return f"{self.ops:,.0f}/s {self.p50_ms:.2f}/{self.p99_ms:.2f}ms"


@dataclass
class Results:
    figures: dict[tuple[str, str, int], Figure] = field(default_factory=dict)
    """(target, op, concurrency) -> figure."""
    ratios: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    """(target, limit, op, concurrency) -> median of the rounds' target/limit ops/s (interleaved rounds)."""
    rss_mb: dict[str, float] = field(default_factory=dict)
    """Peak RSS (VmHWM) of each server process, by label."""
    visibility: dict[str, Any] | None = None
    """bench/visibility.py's figures (list, search, purge during creates), when run."""


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1000.0


class Load:
    """Load processes for one (target, op), driven window by window through stdin/stdout."""

    def __init__(self, commands: list[list[str]], env: dict[str, str] | None = None) -> None:
        self.procs = [
            subprocess.Popen(c, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
            for c in commands
        ]
        for p in self.procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready":
                self.close()
                raise RuntimeError(f"load process {p.args} failed to start: {line!r}")

    def run(self, split: list[int], windows: int, width: float) -> Figure:
        t0 = time.time() + LEAD
        for p, n in zip(self.procs, split, strict=True):
            p.stdin.write(f"go {t0:.6f} {n}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        per_window: list[list[int]] = [[] for _ in range(windows)]
        for p in self.procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"load process {p.args} died")
            for w, lat in enumerate(json.loads(line)["windows"]):
                per_window[w].extend(lat)
        kept = per_window[1:]
        ops = statistics.median(len(w) / width for w in kept)
        flat = [x for w in kept for x in w]
        return Figure(ops, _percentile(flat, 0.50), _percentile(flat, 0.99))

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write("quit\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


class Server:
    """A server process printing ``listening on HOST:PORT``."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"{command} did not start: {line!r}")
        self.address = line.split()[-1]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _split(concurrency: int, processes: int) -> list[int]:
    return [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="wfe-bench-"))
        self.results = Results()
        self.loop = ["--loop", args.loop]
        self.rust = args.rust

    def db(self, name: str) -> Path:
        return self.tmp / f"{name}.db"

    def _py_client(self, target: str, op: str, tasks: int, setup_due: bool) -> list[str]:
        cmd = [PY, str(HERE / "client.py"), "--target", target, "--op", op, "--tasks", str(tasks)]
        cmd += ["--windows", str(self.args.windows), "--window-secs", str(self.args.window)]
        if not target.startswith("raw:"):
            cmd += self.loop
        return cmd + (["--setup-due"] if setup_due else [])

    def _rust_client(self, target: str, op: str, tasks: int, setup_due: bool) -> list[str]:
        cmd = [str(RUST_BIN), "--target", target, "--op", op, "--tasks", str(tasks)]
        cmd += ["--windows", str(self.args.windows), "--window-secs", str(self.args.window)]
        return cmd + (["--setup-due"] if setup_due else [])

    def measure(self, label: str, op: str, commands: list[list[str]], concurrency: tuple[int, ...]) -> None:
        load = Load(commands)
        try:
            for c in concurrency:
                fig = load.run(_split(c, len(commands)), self.args.windows, self.args.window)
                self.results.figures[(label, op, c)] = fig
                print(f"  {label:<12} {op:<13} c={c:<3} {fig.text()}", flush=True)
        finally:
            load.close()

    def interleave(
        self,
        op: str,
        loads: dict[str, Load],
        concurrency: tuple[int, ...],
        pairs: list[tuple[str, str]] | None = None,
    ) -> None:
        """``--rounds`` rounds over ``loads`` (label -> started load): each round measures every
        concurrency of every label in turn. Keeps the figure of the median round by ops/s and, for
        each (target, limit) of ``pairs`` (default: PAIRS) present, the median of the per-round ratios."""
        rounds: dict[tuple[str, int], list[Figure]] = {}
        for r in range(self.args.rounds):
            for c in concurrency:
                for label, load in loads.items():
                    fig = load.run(_split(c, len(load.procs)), self.args.windows, self.args.window)
                    rounds.setdefault((label, c), []).append(fig)
                    print(f"  {label:<12} {op:<13} c={c:<3} round {r + 1}: {fig.text()}", flush=True)
        for (label, c), figs in rounds.items():
            self.results.figures[(label, op, c)] = sorted(figs, key=lambda fig: fig.ops)[len(figs) // 2]
        for target, limit in pairs if pairs is not None else [(t, lim) for t, lim, _ in PAIRS]:
            for c in concurrency:
                a, b = rounds.get((target, c)), rounds.get((limit, c))
                if a and b:
                    ratios = [x.ops / y.ops for x, y in zip(a, b, strict=True) if y.ops]
                    if ratios:
                        self.results.ratios[(target, limit, op, c)] = statistics.median(ratios)

    def server(self, db_url: str) -> Server:
        # --loop applies to the load processes and the echo server; the CLI has no loop option yet.
        return Server([str(WFE_SQLITE), "serve", "--db", db_url, "--listen", "127.0.0.1:0"])

    def grpc_clients(self, address: str, op: str, concurrency: tuple[int, ...], rust: bool = False) -> list[list[str]]:
        due = op == "runnable"
        top = max(concurrency)
        if rust:
            return [self._rust_client(f"grpc:{address}", op, top, due)]
        processes = self.args.processes if top > 1 else 1
        return [
            self._py_client(f"grpc:{address}", op, max(1, top // processes), due and i == 0) for i in range(processes)
        ]

    def run_small(self) -> None:
        echo = Server([PY, str(HERE / "echo.py"), "--listen", "127.0.0.1:0", *self.loop])
        try:
            for op in self.args.ops:
                conc = CONCURRENCY
                due = op == "runnable"
                print(f"[{op}]", flush=True)
                if "embedded" in self.args.paths:
                    self.run_embedded(op, conc, due)
                if "grpc" not in self.args.paths:
                    continue
                server = self.server(f"sqlite://{self.db('grpc-' + op)}")
                loads: dict[str, Load] = {}
                try:
                    loads["grpc"] = Load(self.grpc_clients(server.address, op, conc))
                    loads["echo"] = Load(self.grpc_clients(echo.address, op, conc))
                    if self.rust:
                        loads["rust-grpc"] = Load(self.grpc_clients(server.address, op, conc, rust=True))
                        loads["rust-echo"] = Load(self.grpc_clients(echo.address, op, conc, rust=True))
                    self.interleave(op, loads, conc)
                    self.results.rss_mb[f"small/{op}"] = server.rss_mb()
                finally:
                    for load in loads.values():
                        load.close()
                    server.stop()
        finally:
            echo.stop()

    def run_embedded(self, op: str, conc: tuple[int, ...], due: bool) -> None:
        """The in-process figures of ``op``: the provider, raw sqlite3 and (with Rust) the crate."""
        url = f"sqlite://{self.db('embedded-' + op)}"
        raw_url = f"sqlite://{self.db('raw-' + op)}"
        loads: dict[str, Load] = {}
        try:
            loads["embedded"] = Load([self._py_client(f"embedded:{url}", op, max(conc), due)])
            loads["raw"] = Load([self._py_client(f"raw:{raw_url}", op, max(conc), due)])
            if self.rust:
                crate = f"sqlite://{self.db('crate-' + op)}?mode=rwc"
                loads["rust-crate"] = Load([self._rust_client(f"crate:{crate}", op, max(conc), due)])
            self.interleave(op, loads, conc)
        finally:
            for load in loads.values():
                load.close()

    def run_scale(self, scale: str) -> None:
        import bigdb

        count = bigdb.parse_count(scale)
        base = bigdb.build(count, DATA)
        print(f"[scale {scale}: {count:,} workflows and events, cached in {base}]", flush=True)
        for op in self.args.ops:
            if op == "batch_get":
                continue
            conc = (1, 64) if op == "runnable" else (64,)
            due = op == "runnable"
            path = self.db(f"scale-{scale}")
            shutil.copyfile(base, path)
            # Each figure at scale is paired with the same work on a fresh small file, measured in
            # the same rounds (seconds apart), not with the small figures taken minutes before.
            small = self.db(f"scale-{scale}-small-{op}")
            servers = [self.server(f"sqlite://{path}"), self.server(f"sqlite://{small}")]
            loads: dict[str, Load] = {}
            try:
                loads[f"grpc@{scale}"] = Load(self.grpc_clients(servers[0].address, op, conc))
                loads[f"grpc-small-{scale}"] = Load(self.grpc_clients(servers[1].address, op, conc))
                self.interleave(op, loads, conc, [(f"grpc@{scale}", f"grpc-small-{scale}")])
                self.results.rss_mb[f"{scale}/{op}"] = servers[0].rss_mb()
            finally:
                for load in loads.values():
                    load.close()
                for server in servers:
                    server.stop()
            loads = {}
            try:
                loads[f"embedded@{scale}"] = Load([self._py_client(f"embedded:sqlite://{path}", op, 64, due)])
                loads[f"embedded-small-{scale}"] = Load(
                    [self._py_client(f"embedded:sqlite://{small}-embedded", op, 64, due)]
                )
                self.interleave(op, loads, conc, [(f"embedded@{scale}", f"embedded-small-{scale}")])
            finally:
                for load in loads.values():
                    load.close()
            for db in (path, small, Path(f"{small}-embedded")):
                for suffix in ("", "-wal", "-shm"):
                    Path(str(db) + suffix).unlink(missing_ok=True)

    def run_visibility(self, scale: str) -> None:
        """List and search latency on a store of ``scale`` workflows, and a purge of a tenth of
        them while creates run (bench/visibility.py, its own server process)."""
        import bigdb

        count = bigdb.parse_count(scale)
        out = self.tmp / "visibility.json"
        print(f"[visibility: {count:,} workflows, purge {count // 10:,}]", flush=True)
        subprocess.run(
            [PY, str(HERE / "visibility.py"), "--count", str(count), "--purge", str(count // 10), "--json", str(out)],
            cwd=ROOT,
            check=True,
        )
        self.results.visibility = json.loads(out.read_text())

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def build_rust() -> bool:
    """Build the Rust load generator (release, target dir bench/.target); False when it cannot be built."""
    cargo = shutil.which("cargo")
    if cargo is None:
        print("bench: cargo not found: skipping the Rust figures (install Rust to get them)", flush=True)
        return False
    print("bench: building bench/rust (cargo build --release) ...", flush=True)
    started = time.time()
    done = subprocess.run(
        [
            cargo,
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            str(RUST_DIR / "Cargo.toml"),
            "--target-dir",
            str(RUST_TARGET),
        ],
        cwd=ROOT,
    )
    if done.returncode != 0:
        print(
            "bench: cargo build of bench/rust FAILED: skipping the Rust figures (run with RUST=0 to skip the build)",
            flush=True,
        )
        return False
    print(f"bench: built in {time.time() - started:.0f}s", flush=True)
    return True


# -- report --------------------------------------------------------------------------------------

PAIRS = (
    ("grpc", "echo", "gRPC server vs echo (Python adapter load)"),
    ("embedded", "raw", "embedded provider vs raw sqlite3"),
    ("rust-grpc", "rust-echo", "Rust adapter: server vs echo"),
    ("rust-crate", "raw", "wfe-sqlite crate 1.11.4 in-process vs raw sqlite3"),
)


def _cell(fig: Figure | None) -> str:
    return "-" if fig is None else f"{fig.ops:,.0f} | {fig.p50_ms:.2f} | {fig.p99_ms:.2f}"


def _ratio(a: Figure | None, b: Figure | None, paired: float | None = None) -> str:
    if paired is not None:
        return f"**{paired:.2f}**"
    return "-" if a is None or b is None or not b.ops else f"**{a.ops / b.ops:.2f}**"


def report(results: Results, args: argparse.Namespace, elapsed: float) -> str:
    f = results.figures
    ops = [op for op in workload.OPS if op in args.ops]
    lines = []
    for target, limit, title in PAIRS:
        if not any(k[0] == target for k in f):
            continue
        lines += [
            f"### {title}",
            "",
            f"| op | c | {target} ops/s | p50 ms | p99 ms | {limit} ops/s | p50 ms | p99 ms | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for op in ops:
            for c in CONCURRENCY:
                a, b = f.get((target, op, c)), f.get((limit, op, c))
                if a is None and b is None:
                    continue
                paired = results.ratios.get((target, limit, op, c))
                lines.append(f"| {op} | {c} | {_cell(a)} | {_cell(b)} | {_ratio(a, b, paired)} |")
        lines.append("")
    scales = sorted({k[0].split("@")[1] for k in f if "@" in k[0]}, key=lambda s: f"{len(s):02}{s}")
    if scales:
        lines += [
            "### Scale: the same work on a database already holding N workflows and N events",
            "",
            "Ratio: figure at scale / the same work on a fresh small file, measured in the same interleaved "
            "rounds (the median of the rounds' ratios; c=64 unless noted).",
            "",
            "| op | c | "
            + " | ".join(f"grpc@{s} ops/s (ratio) | p50 ms" for s in scales)
            + " | "
            + " | ".join(f"embedded@{s} ops/s (ratio)" for s in scales)
            + " |",
            "|---|---:|" + "---:|---:|" * len(scales) + "---:|" * len(scales),
        ]
        for op in ops:
            for c in CONCURRENCY:
                if not any((f"grpc@{s}", op, c) in f for s in scales):
                    continue
                row = [op, str(c)]
                for s in scales:
                    a, small = f.get((f"grpc@{s}", op, c)), f.get((f"grpc-small-{s}", op, c))
                    paired = results.ratios.get((f"grpc@{s}", f"grpc-small-{s}", op, c))
                    row.append("-" if a is None else f"{a.ops:,.0f} ({_ratio(a, small, paired)})")
                    row.append("-" if a is None else f"{a.p50_ms:.2f}")
                for s in scales:
                    a, small = f.get((f"embedded@{s}", op, c)), f.get((f"embedded-small-{s}", op, c))
                    paired = results.ratios.get((f"embedded@{s}", f"embedded-small-{s}", op, c))
                    row.append("-" if a is None else f"{a.ops:,.0f} ({_ratio(a, small, paired)})")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if results.visibility is not None:
        lines += visibility_report(results.visibility)
    if results.rss_mb:
        peak: dict[str, float] = {}
        for key, mb in results.rss_mb.items():
            scale = key.split("/")[0]
            peak[scale] = max(peak.get(scale, 0.0), mb)
        lines += ["Server peak RSS (VmHWM, MB): " + ", ".join(f"{s}: {mb:.0f}" for s, mb in peak.items()), ""]
    header = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
        f"{args.windows - 1} windows of {args.window}s per figure (median) in {args.rounds} interleaved rounds "
        "(the median round's figures, the median of the rounds' ratios), "
        f"event loop {args.loop}, "
        f"{args.processes} Python load processes at c>1, whole run {elapsed:.0f}s.",
        "",
    ]
    return "\n".join(header + lines)


def visibility_report(v: dict[str, Any]) -> list[str]:
    """The tables of bench/visibility.py's figures."""
    build, purge = v["build"], v["purge"]
    lines = [
        f"### Visibility on {v['count']:,} workflows (bench/visibility.py)",
        "",
        f"Upgrade in place of a file from before visibility (its indexes + full-text backfill): "
        f"{build['upgrade_s']} s; file {build['size_mb']} MB. One call at a time over gRPC.",
        "",
        "| call | p50 ms | p99 ms | matches (median) |",
        "|---|---:|---:|---:|",
    ]
    for label, fig in v["reads"].items():
        lines.append(f"| {label} | {fig['p50_ms']:.2f} | {fig['p99_ms']:.2f} | {fig.get('median_total', '-')} |")
    before, during, later = purge["creates_before"], purge["creates_during"], purge["creates_after"]
    lines += [
        "",
        f"Purge of {purge['purged']:,} finished workflows (PurgeWorkflows, transactions of ~25 ms) while "
        f"{purge['create_callers']} callers create workflows: {purge['purge_s']} s "
        f"({purge['purged_per_s']:,}/s).",
        "",
        "| creates | per s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| before the purge | {before['creates_per_s']:,} | {before['p50_ms']:.2f} | {before['p99_ms']:.2f} |",
        f"| during the purge | {during['creates_per_s']:,} | {during['p50_ms']:.2f} | {during['p99_ms']:.2f} |",
        f"| after the purge | {later['creates_per_s']:,} | {later['p50_ms']:.2f} | {later['p99_ms']:.2f} |",
        "",
        f"Creates during the purge: {purge['creates_slowdown_pct']}% slower than the mean of before and after "
        "(negative: faster).",
        "",
    ]
    return lines


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import grpc

    return (
        f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_benchmarks(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in old:
        old += "\n" + BEGIN + "\n" + END + "\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    path.write_text(head + BEGIN + "\n" + text + "\n" + END + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(workload.OPS))
    parser.add_argument("--windows", type=int, default=3, help="windows per figure, the first is warm-up")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the small database's figures (median kept)"
    )
    parser.add_argument("--window", type=float, default=0.4, help="seconds per window")
    parser.add_argument(
        "--paths",
        default="grpc,embedded",
        help="which figures of the small database: grpc (server, echo, Rust adapter), embedded (provider, raw, crate)",
    )
    parser.add_argument("--processes", type=int, default=2, help="Python load processes at c > 1")
    parser.add_argument(
        "--scale",
        default=os.environ.get("SCALE", "10k,100k"),
        help="comma-separated: 10k, 100k, 1m; empty for none (env SCALE)",
    )
    parser.add_argument(
        "--rust",
        type=int,
        default=int(os.environ.get("RUST", "1") or 1),
        help="1: build and run the Rust figures, 0: skip them (env RUST)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=int(os.environ.get("CLUSTER", "1") or 1),
        help="1: with the Rust figures, also WFE hosts on the server (bench/cluster_hosts.py); 0: skip (env CLUSTER)",
    )
    parser.add_argument(
        "--visibility",
        default=os.environ.get("VISIBILITY"),
        help="workflows for the visibility figures (10k, 100k, 1m; default the largest --scale; empty for none) "
        "(env VISIBILITY)",
    )
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.ops = [o for o in args.ops.split(",") if o]
    args.paths = [p for p in args.paths.split(",") if p]
    started = time.time()
    args.rust = bool(args.rust) and build_rust()
    bench = Bench(args)
    try:
        bench.run_small()
        scales = [s for s in args.scale.split(",") if s]
        for scale in scales:
            bench.run_scale(scale)
        visibility = args.visibility
        if visibility is None and scales:
            import bigdb

            visibility = max(scales, key=bigdb.parse_count)
        if visibility:
            bench.run_visibility(visibility)
    finally:
        bench.close()
    text = report(bench.results, args, time.time() - started)
    if args.rust and args.cluster:
        import cluster_hosts  # bench/cluster_hosts.py, next to this file

        text += (
            "\n### A cluster of WFE hosts on one server (bench/cluster_hosts.py)\n\n"
            + cluster_hosts.measure([1, 2, 3], 600)
            + "\n"
        )
    print()
    print(text)
    if not args.no_write:
        write_benchmarks(text, Path(args.out))
        print(f"bench: wrote {args.out}")


if __name__ == "__main__":
    main()
