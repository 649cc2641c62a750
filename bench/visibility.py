"""Visibility figures: list and search latency on a big store, and a purge while creates run.

``python bench/visibility.py --count 1m [--purge 100k] [--json FILE]``

1. Builds (once, cached in bench/.data/) a database of N workflows with 3 pointers and ~1 KiB of
   data each, as a server before visibility (schema version 2) would have left it (no visibility
   indexes, no full text), then
   upgrades it in place the way a server does at start-up (schema migration 3: indexes, FTS5
   backfill) and reports how long that took. Statuses: the first ``--purge`` workflows are COMPLETE
   or TERMINATED and finished 400 days ago; of the rest (created in the last 30 days) 50% COMPLETE,
   30% RUNNABLE, 10% SUSPENDED, 10% TERMINATED. 20 definitions; reference ``order-{i}``; a customer
   name and a city drawn from 1,728 made-up words (each in ~N/860 workflows), so a one-word search
   matches about a thousand workflows at 1M.
2. Starts ``wfe-sqlite serve`` on a copy and times, one call at a time over gRPC (Python adapter):
   ListWorkflows (page of 100) with a status filter, with definition + status, with no filter, a
   page deep into a status list; SearchWorkflows (window of 20, with its total) for one word, two
   words, a prefix, an exact reference, and a word every workflow has (the worst case: ranking and
   counting all N).
3. Runs creates (16 concurrent callers) for a baseline, then purges the finished old workflows
   with PurgeWorkflows while the creates go on, then creates on for as long again, and reports the
   purge time and the creates' throughput and latency before, during and after (the slowdown is
   measured against the mean of before and after, which the machine's other load moves too).

Prints one JSON object (also written to ``--json``); bench/run.py puts it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload  # noqa: E402
from wfe_client import GrpcPersistenceProvider, WorkflowStatus  # noqa: E402
from wfe_sqlite._rows import pointer_rows, workflow_row  # noqa: E402
from wfe_sqlite._schema import MIGRATIONS, SCHEMA_VERSION  # noqa: E402
from wfe_sqlite._sqlite_store import INSERT_POINTER, INSERT_WORKFLOW  # noqa: E402

WFE_SQLITE = Path(sys.executable).parent / "wfe-sqlite"
DATA = HERE / ".data"
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fi"]
WORDS = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES]
DEFINITIONS = [f"flow-{d}" for d in range(20)]
DAY_US = 86_400_000_000
VISIBILITY_VERSION = 3
"""The schema version that brings the visibility indexes and full text."""
_CHUNK = 20_000


def parse_count(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


def _status(i: int, old: int) -> str:
    if i < old:
        return "TERMINATED" if i % 10 == 0 else "COMPLETE"
    k = i % 20
    return "COMPLETE" if k < 10 else "RUNNABLE" if k < 16 else "SUSPENDED" if k < 18 else "TERMINATED"


def _payload(i: int) -> dict[str, Any]:
    data = workload.payload(i)
    data["customer"] = {"name": WORDS[i % len(WORDS)], "city": WORDS[(i * 7 + 3) % len(WORDS)], "tier": "gold"}
    return data


def build(count: int, old: int) -> tuple[Path, dict[str, float]]:
    """The cached database; building it reports the seconds of the load and of the upgrade."""
    DATA.mkdir(parents=True, exist_ok=True)
    migrations = "-".join(str(m.version) for m in MIGRATIONS)  # a cache per schema, not just per version
    path = DATA / f"visibility-{count}-{old}-m{migrations}.db"
    timing_file = path.with_suffix(".json")
    if path.exists() and timing_file.exists():
        return path, json.loads(timing_file.read_text())
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.time()
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("BEGIN")
    before = [m for m in MIGRATIONS if m.version < VISIBILITY_VERSION]
    for migration in before:
        migration.apply(conn)
    conn.execute(f"PRAGMA user_version = {before[-1].version}")
    conn.execute("COMMIT")
    template = workload.workflow(0)
    wrow = list(workflow_row(template))
    prows = [list(r) for r in pointer_rows(template.id, template.execution_pointers)]
    now_us = int(time.time() * 1e6)
    for start in range(0, count, _CHUNK):
        workflows, pointers = [], []
        for i in range(start, min(count, start + _CHUNK)):
            wid = str(uuid.uuid4())
            row = list(wrow)
            status = _status(i, old)
            if i < old:
                created = now_us - 401 * DAY_US + i * 1000
                completed: int | None = created + DAY_US
            else:
                created = now_us - 30 * DAY_US + (i * 2_592_000_000_000 // count)
                completed = created + 60_000_000 if status in ("COMPLETE", "TERMINATED") else None
            row[0], row[1], row[3] = wid, f"vis-{i}", DEFINITIONS[i % len(DEFINITIONS)]
            row[5] = f"Order {i} for {WORDS[i % len(WORDS)]}"
            row[6] = f"order-{i}"
            row[12] = 1  # revision: stored once
            row[8], row[9], row[10], row[11] = (
                status,
                json.dumps(_payload(i), separators=(",", ":")),
                created,
                completed,
            )
            workflows.append(row)
            for p in prows:
                q = list(p)
                q[0], q[2] = wid, str(uuid.uuid4())
                pointers.append(q)
        conn.execute("BEGIN")
        conn.executemany(INSERT_WORKFLOW, workflows)
        conn.executemany(INSERT_POINTER, pointers)
        conn.execute("COMMIT")
    loaded = time.time()
    print(f"visibility bench: loaded {count:,} workflows in {loaded - started:.0f}s; upgrading the schema", flush=True)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[len(before) :]:
        migration.apply(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")
    upgraded = time.time()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    os.replace(partial, path)
    timings = {
        "load_s": round(loaded - started, 1),
        "upgrade_s": round(upgraded - loaded, 1),
        "size_mb": round(path.stat().st_size / 1e6),
    }
    timing_file.write_text(json.dumps(timings))
    print(
        f"visibility bench: upgrade (indexes + full-text backfill) took {timings['upgrade_s']}s; "
        f"file {timings['size_mb']} MB",
        flush=True,
    )
    return path, timings


class Server:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [str(WFE_SQLITE), "serve", "--db", f"sqlite://{db}", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.address = line.split()[-1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _figure(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
    }


async def _timed(call: Callable[[int], Awaitable[Any]], calls: int, warmup: int = 10) -> dict[str, float]:
    for n in range(warmup):
        await call(n)
    latencies = []
    for n in range(calls):
        started = time.perf_counter()
        await call(n)
        latencies.append(time.perf_counter() - started)
    return _figure(latencies)


async def measure_reads(address: str, count: int, calls: int) -> dict[str, Any]:
    rng = random.Random(7)
    statuses = list(WorkflowStatus)
    figures: dict[str, Any] = {}
    async with GrpcPersistenceProvider.connect(address, timeout=600) as store:

        async def list_status(n: int) -> None:
            page = await store.list_workflows(status=statuses[n % 4], page_size=100)
            assert len(page.items) == 100

        async def list_two_statuses(n: int) -> None:
            await store.list_workflows(status=[WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED], page_size=100)

        async def list_definition(n: int) -> None:
            await store.list_workflows(status=statuses[n % 4], definition_id=DEFINITIONS[n % 20], page_size=100)

        async def list_all(n: int) -> None:
            await store.list_workflows(page_size=100)

        deep = await store.list_workflows(status=WorkflowStatus.COMPLETE, page_size=1000)
        skipped = len(deep.items)
        for _ in range(20):  # up to 21,000 summaries into the list
            if deep.next_page_token is None:
                break
            deep = await store.list_workflows(
                status=WorkflowStatus.COMPLETE, page_size=1000, page_token=deep.next_page_token
            )
            skipped += len(deep.items)
        deep_token = deep.next_page_token

        async def list_deep(n: int) -> None:
            await store.list_workflows(status=WorkflowStatus.COMPLETE, page_size=100, page_token=deep_token)

        figures["list: one status, page of 100"] = await _timed(list_status, calls)
        figures["list: two statuses, page of 100"] = await _timed(list_two_statuses, calls)
        figures["list: definition + status, page of 100"] = await _timed(list_definition, calls)
        figures["list: no filter, page of 100"] = await _timed(list_all, calls)
        if deep_token is not None:
            figures[f"list: one status, a page after {skipped:,}"] = await _timed(list_deep, calls)

        words = [rng.choice(WORDS) for _ in range(calls + 10)]
        indexes = [rng.randrange(count) for _ in range(calls + 10)]
        totals: dict[str, list[int]] = {}

        def searching(label: str, query: Callable[[int], str]) -> Callable[[int], Awaitable[None]]:
            async def call(n: int) -> None:
                found = await store.search_workflows(query(n), take=20)
                totals.setdefault(label, []).append(found.total)

            return call

        searches = {
            "search: one word, window of 20 + total": lambda n: words[n],
            "search: two words": lambda n: (
                f"{WORDS[indexes[n] % len(WORDS)]} {WORDS[(indexes[n] * 7 + 3) % len(WORDS)]}"
            ),
            "search: prefix (4 letters*)": lambda n: words[n][:4] + "*",
            "search: exact reference": lambda n: f"order-{indexes[n]}",
        }
        for label, query in searches.items():
            figures[label] = await _timed(searching(label, query), calls)
            figures[label]["median_total"] = statistics.median(totals[label][-calls:])
        label = "search: a word in every workflow (worst case)"
        figures[label] = await _timed(searching(label, lambda n: "order"), 5, warmup=1)
        figures[label]["median_total"] = statistics.median(totals[label][-5:])
    return figures


async def measure_purge(address: str, old: int, tasks: int, baseline_s: float) -> dict[str, Any]:
    cutoff = datetime.now(UTC) - timedelta(days=365)
    async with GrpcPersistenceProvider.connect(address, timeout=600) as store:
        assert await store.purge_workflows(cutoff, dry_run=True) == old
        phase = {"name": "warmup"}
        samples: dict[str, list[tuple[float, float]]] = {"warmup": [], "baseline": [], "purge": [], "after": []}
        stop = asyncio.Event()

        async def creator(task: int) -> None:
            n = task << 32
            while not stop.is_set():
                started = time.perf_counter()
                await store.create_new_workflow(workload.workflow(n))
                done = time.perf_counter()
                samples[phase["name"]].append((done, done - started))
                n += 1

        creators = [asyncio.create_task(creator(t)) for t in range(tasks)]
        await asyncio.sleep(2)
        phase["name"] = "baseline"
        base_start = time.perf_counter()
        await asyncio.sleep(baseline_s)
        base_end = time.perf_counter()
        phase["name"] = "purge"
        purge_start = time.perf_counter()
        deleted = await store.purge_workflows(cutoff)
        purge_end = time.perf_counter()
        phase["name"] = "after"
        after_start = time.perf_counter()
        await asyncio.sleep(baseline_s)
        after_end = time.perf_counter()
        phase["name"] = "done"
        samples["done"] = []
        stop.set()
        await asyncio.gather(*creators)
        assert await store.purge_workflows(cutoff, dry_run=True) == 0

    def rate(name: str, seconds: float) -> dict[str, float]:
        lat = [latency for _, latency in samples[name]]
        return {"creates_per_s": round(len(lat) / seconds), **_figure(lat)}

    baseline = rate("baseline", base_end - base_start)
    during = rate("purge", purge_end - purge_start)
    afterwards = rate("after", after_end - after_start)
    reference = (baseline["creates_per_s"] + afterwards["creates_per_s"]) / 2
    return {
        "purged": deleted,
        "purge_s": round(purge_end - purge_start, 1),
        "purged_per_s": round(deleted / (purge_end - purge_start)),
        "create_callers": tasks,
        "creates_before": baseline,
        "creates_during": during,
        "creates_after": afterwards,
        "creates_slowdown_pct": round(100 * (1 - during["creates_per_s"] / reference), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", default="1m", help="workflows in the store (10k, 100k, 1m)")
    parser.add_argument("--purge", default="100k", help="finished old workflows among them, purged in part 3")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per read figure")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent create callers during the purge")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of creates before the purge")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-reads", action="store_true", help="only the purge figure")
    args = parser.parse_args()
    count, old = parse_count(args.count), parse_count(args.purge)
    if old > count:
        parser.error("--purge must not exceed --count")
    path, build_figures = build(count, old)
    results: dict[str, Any] = {"count": count, "build": build_figures}
    tmp = Path(tempfile.mkdtemp(prefix="wfe-vis-bench-"))
    try:
        copy = tmp / "vis.db"
        shutil.copyfile(path, copy)
        server = Server(copy)
        try:
            if not args.skip_reads:
                results["reads"] = asyncio.run(measure_reads(server.address, count, args.calls))
            results["purge"] = asyncio.run(measure_purge(server.address, old, args.tasks, args.baseline))
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
