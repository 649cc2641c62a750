"""The storage limit: plain ``sqlite3`` running the provider's SQL for the benchmark's work.

Same schema (``wfe_sqlite._schema``), same pragmas (``DatabaseConfig.pragmas``), same statements
(the provider's own SQL text and write functions: a persist is ``write_persist``, a due event is
queued by ``queue_stored_event`` as the provider does), one connection on one thread. Rows are
built once per operation from a template (no model conversion, no validation): what is left is
SQLite's own cost. The JSON data is the workload's own (``workload.payload(n)``, which differs from
call to call, so a persist changes the stored data and the workflow's full-text entry), written
from a text template (``PayloadText``) instead of encoded per call. A run with N callers commits
transactions of N write operations (the best a group commit of N can do); each read is one
snapshot (``BEGIN`` ... ``COMMIT``), as the provider's readers do.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import workload
from wfe_client.jsoncodec import json_text
from wfe_sqlite._connection import DatabaseConfig
from wfe_sqlite._queue_store import WorkEffects, queue_stored_event
from wfe_sqlite._rows import PointerRow, WorkflowRow, event_row, pointer_rows, subscription_row, workflow_row
from wfe_sqlite._schema import ensure_schema
from wfe_sqlite._sqlite_store import (
    CLAIM_COMMANDS,
    INSERT_EVENT,
    INSERT_POINTER,
    INSERT_SUBSCRIPTION,
    INSERT_WORKFLOW,
    POINTER_COLUMNS,
    RUNNABLE_WORKFLOWS,
    SCHEDULE_COMMAND,
    SET_TOKEN,
    WORKFLOW_COLUMNS,
    write_persist,
)


class PayloadText:
    """The JSON text of ``workload.payload(n)`` as the provider stores it, from a template.

    Built from the text of one payload with a marker number, split where the number shows; checked
    at construction against the provider's own encoding of another payload.
    """

    _MARK = 987_654_321

    def __init__(self) -> None:
        text = json_text(workload.payload(self._MARK))
        customer = f'"customer-{self._MARK % 1000}"'
        head, _, tail = text.partition(customer)
        self._head = head.split(str(self._MARK))
        self._tail = tail.split(str(self._MARK))
        probe = 1_234_567
        if self.text(probe) != json_text(workload.payload(probe)):
            raise AssertionError("PayloadText does not give workload.payload's JSON text")

    def text(self, n: int) -> str:
        number = str(n)
        return f'{number.join(self._head)}"customer-{n % 1000}"{number.join(self._tail)}'


def _micros() -> int:
    return int(time.time() * 1e6)


class RawStore:
    """One ``sqlite3`` connection with the server's schema and pragmas."""

    def __init__(self, url: str) -> None:
        path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for name, value in DatabaseConfig(path=path).pragmas(writer=True):
            self.conn.execute(f"PRAGMA {name} = {value}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        ensure_schema(self.conn)
        template = workload.workflow(0)
        self.workflow_row = workflow_row(template)
        self.pointer_rows = pointer_rows(template.id, template.execution_pointers)
        self.event_row = event_row(workload_event())
        self.payload = PayloadText()
        self.ids: list[str] = []
        self.subscriptions: list[str] = []

    def close(self) -> None:
        self.conn.close()

    # -- rows for one operation --------------------------------------------------------------

    def _new_workflow(self, due: bool = False, n: int = 0) -> tuple[WorkflowRow, list[PointerRow]]:
        wid = str(uuid.uuid4())
        row = self.workflow_row._replace(
            id=wid,
            name=f"bench-{wid}",
            next_execution=0 if due else int(time.time() * 1000) + workload.DAY_MS,
            data=self.payload.text(n),
        )
        pointers = [p._replace(workflow_id=wid, id=str(uuid.uuid4())) for p in self.pointer_rows]
        return row, pointers

    def _insert_workflow(self, due: bool = False, n: int = 0) -> str:
        row, pointers = self._new_workflow(due, n)
        self.conn.execute(INSERT_WORKFLOW, row)
        self.conn.executemany(INSERT_POINTER, pointers)
        return row.id

    def _in_transaction(self, job: Callable[[], Any]) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = job()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def setup(self, op: str, tasks: int, setup_due: bool) -> None:
        if op in ("get", "persist", "batch_get"):
            count = workload.BATCH if op == "batch_get" else max(tasks, 16)
            self.ids = self._in_transaction(lambda: [self._insert_workflow() for _ in range(count)])
        elif op == "set_token":

            def subscribe() -> list[str]:
                ids = []
                for i in range(max(tasks, 16)):
                    s = workload.EventSubscription.new(
                        str(uuid.uuid4()), i, str(uuid.uuid4()), "bench.event", f"key-{i}", workload.now()
                    )
                    s.id = str(uuid.uuid4())
                    self.conn.execute(INSERT_SUBSCRIPTION, subscription_row(s))
                    ids.append(s.id)
                return ids

            self.subscriptions = self._in_transaction(subscribe)
        elif op == "runnable" and setup_due:
            have = len(self._runnable())
            self._in_transaction(lambda: [self._insert_workflow(due=True) for _ in range(have, workload.DUE)])

    # -- the operations ----------------------------------------------------------------------

    def _write(self, op: str, task: int, n: int) -> None:
        conn = self.conn
        if op == "create":
            self._insert_workflow(n=n)
        elif op == "persist":
            wid = self.ids[task % len(self.ids)]
            row = self.workflow_row._replace(id=wid, name=f"bench-{wid}", data=self.payload.text(n))
            write_persist(conn, row, [p._replace(workflow_id=wid) for p in self.pointer_rows])
        elif op == "create_event":
            event = self.event_row._replace(id=str(uuid.uuid4()), event_key=f"key-{n}", event_data=self.payload.text(n))
            conn.execute(INSERT_EVENT, event)
            # The provider queues a due event in the same transaction (the work queue of issue 11).
            queue_stored_event(conn, event.id, event.event_time, False, _micros(), WorkEffects())
        elif op == "set_token":
            sid = self.subscriptions[task % len(self.subscriptions)]
            token = str(uuid.uuid4())
            now = _micros()
            conn.execute(SET_TOKEN, (token, "bench-worker", now, sid, now, token))
        elif op == "commands":
            conn.execute(SCHEDULE_COMMAND, ("PROCESS_WORKFLOW", str(uuid.uuid4()), int(time.time() * 1000)))
        else:
            raise ValueError(op)

    def _write_group(self, op: str, tasks: int, n: int) -> None:
        for task in range(tasks):
            self._write(op, task, n + task)

    def _runnable(self) -> list[Any]:
        return self.conn.execute(RUNNABLE_WORKFLOWS, (int(time.time() * 1000), -(2**63), "", 1001)).fetchall()

    def _read(self, op: str, task: int, n: int) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            if op == "get":
                wid = self.ids[(task + n) % len(self.ids)]
                conn.execute(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", (wid,)).fetchone()
                conn.execute(
                    f"SELECT {POINTER_COLUMNS} FROM execution_pointers WHERE workflow_id = ? ORDER BY position",
                    (wid,),
                ).fetchall()
            elif op == "batch_get":
                marks = ", ".join("?" * len(self.ids))
                conn.execute(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id IN ({marks})", self.ids).fetchall()
                conn.execute(
                    f"SELECT {POINTER_COLUMNS} FROM execution_pointers "
                    f"WHERE workflow_id IN ({marks}) ORDER BY workflow_id, position",
                    self.ids,
                ).fetchall()
            elif op == "runnable":
                self._runnable()
            else:
                raise ValueError(op)
        finally:
            conn.execute("COMMIT")

    def _process_commands(self) -> None:
        """Claim the due commands, then delete them (what process_commands does with a no-op handler)."""
        now_ms = int(time.time() * 1000)
        lease = str(uuid.uuid4())

        def claim() -> list[Any]:
            now = _micros()
            return self.conn.execute(CLAIM_COMMANDS, (lease, now + 30_000_000, now_ms, now, 100)).fetchall()

        while rows := self._in_transaction(claim):
            done = [r[:2] for r in rows]
            self._in_transaction(
                functools.partial(
                    self.conn.executemany, "DELETE FROM scheduled_commands WHERE command_name = ? AND data = ?", done
                )
            )

    def measure(self, op: str, t0: float, tasks: int, windows: int, width: float) -> list[list[int]]:
        """Operations in groups of ``tasks`` (one transaction per group for writes) until the end."""
        lat: list[list[int]] = [[] for _ in range(windows)]
        end = t0 + windows * width
        time.sleep(max(0.0, t0 - time.time()))
        n = (int(t0) & 0xFFFF) << 16
        write = op in ("create", "persist", "create_event", "set_token", "commands")
        while True:
            start = time.time()
            if start >= end:
                return lat
            if write:
                self._in_transaction(functools.partial(self._write_group, op, tasks, n))
                if op == "commands":
                    self._process_commands()
                done = time.time()
                w = int((done - t0) / width)
                if w < windows and done < end:
                    lat[w].extend([int((done - start) * 1e6)] * tasks)
            else:
                # N callers' reads one after another: each waits from the group's start.
                for task in range(tasks):
                    self._read(op, task, n + task)
                    done = time.time()
                    w = int((done - t0) / width)
                    if w < windows and done < end:
                        lat[w].append(int((done - start) * 1e6))
            n += tasks


def workload_event() -> Any:
    return workload.Event.new("bench.event", "key-0", workload.payload(0))
