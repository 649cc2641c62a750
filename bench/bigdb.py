"""Databases for the scale figures: N workflows (3 pointers, ~1 KiB data each), N events, 100 due.

Built once with plain SQL inserts into a file with the server's schema (``wfe_sqlite._schema``),
journal off while loading, WAL at the end; cached as ``bench/.data/scale-N.db`` (git-ignored).
None of the N workflows is due (next_execution a year ahead) and every event is processed, so
``get_runnable_instances`` finds exactly the 100 due ones among N.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import workload
from wfe_sqlite._provider import _INSERT_POINTER, _INSERT_WORKFLOW
from wfe_sqlite._rows import event_row, pointer_rows, workflow_row
from wfe_sqlite._schema import SCHEMA_VERSION, ensure_schema

_INSERT_EVENT = (
    "INSERT INTO events (id, event_name, event_key, event_data, event_time, is_processed) VALUES (?, ?, ?, ?, ?, ?)"
)
_CHUNK = 20_000
_YEAR_MS = 365 * 86_400_000


def parse_count(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


def build(count: int, directory: Path) -> Path:
    """The cached database with ``count`` workflows and events, building it when missing."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"scale-{count}-v{SCHEMA_VERSION}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.time()
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    ensure_schema(conn)
    template = workload.workflow(0)
    wrow = list(workflow_row(template))
    prows = [list(r) for r in pointer_rows(template.id, template.execution_pointers)]
    erow = list(event_row(workload.Event.new("bench.event", "key", workload.payload(0))))
    erow[5] = 1
    later = int(time.time() * 1000) + _YEAR_MS
    base_us = erow[4]
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        workflows, pointers, events = [], [], []
        for i in range(start, start + n):
            wid = str(uuid.uuid4())
            row = list(wrow)
            row[0], row[1], row[7] = wid, f"scale-{i}", later + i
            workflows.append(row)
            for p in prows:
                q = list(p)
                q[0], q[2] = wid, str(uuid.uuid4())
                pointers.append(q)
            e = list(erow)
            e[0], e[2], e[4] = str(uuid.uuid4()), f"key-{i}", base_us - i
            events.append(e)
        conn.execute("BEGIN")
        conn.executemany(_INSERT_WORKFLOW, workflows)
        conn.executemany(_INSERT_POINTER, pointers)
        conn.executemany(_INSERT_EVENT, events)
        conn.execute("COMMIT")
    conn.execute("BEGIN")
    for i in range(workload.DUE):
        wid = str(uuid.uuid4())
        row = list(wrow)
        row[0], row[1], row[7] = wid, f"due-{i}", i
        conn.execute(_INSERT_WORKFLOW, row)
        conn.executemany(_INSERT_POINTER, [[wid, *p[1:2], str(uuid.uuid4()), *p[3:]] for p in prows])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    os.replace(partial, path)
    print(f"bench: built {path.name} ({count:,} workflows, {path.stat().st_size / 1e6:.0f} MB) "
          f"in {time.time() - started:.0f}s", flush=True)
    return path
