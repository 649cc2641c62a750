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
from wfe_sqlite._rows import event_row, pointer_rows, workflow_row
from wfe_sqlite._schema import SCHEMA_VERSION, ensure_schema
from wfe_sqlite._sqlite_store import INSERT_EVENT, INSERT_POINTER, INSERT_WORKFLOW

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
    wrow = workflow_row(template)._replace(revision=1)
    prows = pointer_rows(template.id, template.execution_pointers)
    erow = event_row(workload.Event.new("bench.event", "key", workload.payload(0)))._replace(is_processed=1)
    later = int(time.time() * 1000) + _YEAR_MS
    base_us = erow.event_time
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        workflows, pointers, events = [], [], []
        for i in range(start, start + n):
            wid = str(uuid.uuid4())
            workflows.append(wrow._replace(id=wid, name=f"scale-{i}", next_execution=later + i))
            pointers.extend(p._replace(workflow_id=wid, id=str(uuid.uuid4())) for p in prows)
            events.append(erow._replace(id=str(uuid.uuid4()), event_key=f"key-{i}", event_time=base_us - i))
        conn.execute("BEGIN")
        conn.executemany(INSERT_WORKFLOW, workflows)
        conn.executemany(INSERT_POINTER, pointers)
        conn.executemany(INSERT_EVENT, events)
        conn.execute("COMMIT")
    conn.execute("BEGIN")
    for i in range(workload.DUE):
        wid = str(uuid.uuid4())
        conn.execute(INSERT_WORKFLOW, wrow._replace(id=wid, name=f"due-{i}", next_execution=i))
        conn.executemany(INSERT_POINTER, [p._replace(workflow_id=wid, id=str(uuid.uuid4())) for p in prows])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    os.replace(partial, path)
    print(
        f"bench: built {path.name} ({count:,} workflows, {path.stat().st_size / 1e6:.0f} MB) "
        f"in {time.time() - started:.0f}s",
        flush=True,
    )
    return path
