"""Visibility through real processes: ``wfe-sqlite list/show/purge``, ``serve --retention``, and the
schema upgrade that brings full text to an existing file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import WFE_SQLITE, Peek, start_server_process, text_index_in_step
from wfe_client import (
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    PointerStatus,
    ScheduledCommand,
    WorkflowInstance,
    WorkflowStatus,
)
from wfe_sqlite import SqlitePersistenceProvider, open_provider
from wfe_sqlite._schema import MIGRATIONS, SCHEMA_VERSION

UTC = UTC
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WFE_SQLITE), *args], capture_output=True, text=True, timeout=120)


def _workflow(
    n: int,
    status: WorkflowStatus,
    *,
    definition: str = "order",
    finished: datetime | None = None,
    created: datetime | None = None,
) -> WorkflowInstance:
    w = WorkflowInstance.new(definition, 2, {"customer": f"customer-{n}", "city": "Lisbon" if n % 2 else "Porto"})
    w.status = status
    w.reference = f"ref-{n}"
    w.description = f"workflow number {n}"
    w.create_time = created or (LONG_AGO + timedelta(minutes=n))
    w.complete_time = finished
    step = ExecutionPointer.new(0)
    step.status, step.step_name = PointerStatus.WAITING_FOR_EVENT, "wait for payment"
    step.event_name, step.event_key = "paid", str(n)
    w.execution_pointers = [step]
    return w


async def _fill(db_url: str, count: int = 10) -> list[WorkflowInstance]:
    """``count`` workflows: even ones COMPLETE long ago, odd ones RUNNABLE; each with a
    subscription and an error; the first one has a scheduled command."""
    store = await open_provider(db_url)
    made = []
    try:
        for n in range(count):
            finished = LONG_AGO + timedelta(hours=1, minutes=n) if n % 2 == 0 else None
            w = _workflow(
                n,
                WorkflowStatus.COMPLETE if n % 2 == 0 else WorkflowStatus.RUNNABLE,
                finished=finished,
                definition="order" if n < count // 2 else "invoice",
            )
            await store.create_new_workflow(w)
            await store.create_event_subscription(
                EventSubscription.new(w.id, 0, w.execution_pointers[0].id, "paid", str(n), w.create_time)
            )
            await store.persist_errors([ExecutionError.new(w.id, w.execution_pointers[0].id, f"boom {n}")])
            made.append(w)
        await store.schedule_command(ScheduledCommand.process_workflow(made[0].id, 0))
    finally:
        await store.close()
    return made


def _newest_first(workflows: list[WorkflowInstance]) -> list[str]:
    return [w.id for w in sorted(workflows, key=lambda w: (w.create_time, w.id), reverse=True)]


def _fts_in_step(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.execute("INSERT INTO workflows_fts (workflows_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


def _file_count(db_path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        count: int = conn.execute(sql).fetchone()[0]
        return count
    finally:
        conn.close()


async def _count(peek: Peek, sql: str) -> int:
    [(n,)] = await peek(sql)
    assert isinstance(n, int)
    return n


def _quoted(ids: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


# -- list ------------------------------------------------------------------------------------------


async def test_list_command_filters_and_pages(store_url: str) -> None:
    made = await _fill(store_url)
    shown = _cli("list", "--db", store_url, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert [s["id"] for s in listed["workflows"]] == _newest_first(made)
    assert listed["next_page_token"] is None
    first = listed["workflows"][-1]
    assert first == {
        "id": made[0].id,
        "name": made[0].name,
        "workflow_definition_id": "order",
        "version": 2,
        "status": "COMPLETE",
        "reference": "ref-0",
        "description": "workflow number 0",
        "create_time": "2020-01-01T00:00:00Z",
        "complete_time": "2020-01-01T01:00:00Z",
        "next_execution": 0,
        "revision": 1,
    }

    complete_invoices = [
        w for w in made if w.status == WorkflowStatus.COMPLETE and w.workflow_definition_id == "invoice"
    ]
    shown = _cli("list", "--db", store_url, "--json", "--status", "complete", "--definition", "invoice")
    assert [s["id"] for s in json.loads(shown.stdout)["workflows"]] == _newest_first(complete_invoices)
    shown = _cli("list", "--db", store_url, "--json", "--status", "COMPLETE,runnable", "--reference", "ref-3")
    assert [s["id"] for s in json.loads(shown.stdout)["workflows"]] == [made[3].id]
    shown = _cli(
        "list",
        "--db",
        store_url,
        "--json",
        "--created-after",
        "2020-01-01T00:03:00Z",
        "--created-before",
        "2020-01-01T02:05:00+02:00",
    )
    assert [s["id"] for s in json.loads(shown.stdout)["workflows"]] == _newest_first(made[3:5])

    # Pages: the human output ends with the command line continuing it.
    seen: list[str] = []
    args = ["list", "--db", store_url, "--limit", "3"]
    for _ in range(10):
        page = _cli(*args)
        assert page.returncode == 0, page.stderr
        lines = page.stdout.splitlines()
        assert lines[0].split() == [
            "ID",
            "NAME",
            "DEFINITION",
            "VERSION",
            "STATUS",
            "CREATED",
            "COMPLETED",
            "REFERENCE",
        ]
        rows = [line for line in lines[1:] if not line.startswith("more: ")]
        seen += [row.split()[0] for row in rows]
        more = [line for line in lines if line.startswith("more: ")]
        if not more:
            break
        args = ["list", "--db", store_url, "--limit", "3", "--page-token", more[0].split("--page-token ")[1]]
    assert seen == _newest_first(made)


def test_list_and_purge_refuse_bad_arguments(tmp_path: Path, db_url: str) -> None:
    asyncio.run(_fill(db_url, 2))
    for args, message in [
        (["list", "--status", "bogus"], "--status"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--page-token", "not-a-token"], "page_token"),
        (["list", "--created-after", "2020-01-01T00:00:00"], "time zone"),
        (["purge", "--older-than", "30x"], "--older-than"),
        (["purge", "--older-than", "0d"], "--older-than"),
        (["purge", "--older-than", "30d", "--status", "finished"], "--status"),
        (["show"], "ID"),
    ]:
        done = _cli(*args, "--db", db_url)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    missing = _cli("list", "--db", f"sqlite://{tmp_path / 'missing.db'}")
    assert missing.returncode == 2 and "no database file" in missing.stderr
    assert not (tmp_path / "missing.db").exists()


# -- show ------------------------------------------------------------------------------------------


async def test_show_prints_a_workflow_with_pointers_subscriptions_and_errors(store_url: str) -> None:
    made = await _fill(store_url, 2)
    w = made[1]
    shown = _cli("show", w.id, "--db", store_url, "--json")
    assert shown.returncode == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert details["workflow"]["id"] == w.id
    assert details["workflow"]["data"] == w.data
    assert details["workflow"]["status"] == "RUNNABLE"
    pointer = details["workflow"]["execution_pointers"][0]
    assert (pointer["id"], pointer["status"], pointer["event_name"], pointer["step_name"]) == (
        w.execution_pointers[0].id,
        "WAITING_FOR_EVENT",
        "paid",
        "wait for payment",
    )
    assert [(s["event_name"], s["event_key"], s["terminated"]) for s in details["subscriptions"]] == [
        ("paid", "1", False)
    ]
    assert [e["message"] for e in details["errors"]] == ["boom 1"]

    human = _cli("show", w.id, "--db", store_url)
    assert human.returncode == 0, human.stderr
    text = human.stdout
    for expected in (
        f"id            {w.id}",
        "status        RUNNABLE",
        "reference     ref-1",
        '"city": "Lisbon"',
        "WAITING_FOR_EVENT",
        "wait for payment",
        "paid/1",
        "subscriptions (1)",
        "boom 1",
        "errors (1)",
    ):
        assert expected in text, (expected, text)

    missing = _cli("show", "no-such-workflow", "--db", store_url)
    assert missing.returncode == 1 and "no workflow with id 'no-such-workflow'" in missing.stderr


# -- purge -----------------------------------------------------------------------------------------


async def test_purge_command_deletes_finished_workflows_with_everything_theirs(store_url: str, peek: Peek) -> None:
    made = await _fill(store_url)
    complete = [w for w in made if w.status == WorkflowStatus.COMPLETE]
    dry = _cli("purge", "--older-than", "30d", "--dry-run", "--db", store_url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would purge 5 workflows (COMPLETE, TERMINATED)"), dry.stdout
    assert await _count(peek, "SELECT count(*) FROM workflows") == 10

    done = _cli("purge", "--older-than", "30d", "--db", store_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 5 workflows"), done.stdout
    gone = [w.id for w in complete]
    assert await _count(peek, "SELECT count(*) FROM workflows") == 5
    for table, column in (
        ("workflows", "id"),
        ("execution_pointers", "workflow_id"),
        ("event_subscriptions", "workflow_id"),
        ("execution_errors", "workflow_id"),
        ("scheduled_commands", "data"),
    ):
        assert await _count(peek, f"SELECT count(*) FROM {table} WHERE {column} IN ({_quoted(gone)})") == 0, table
    assert await _count(peek, "SELECT count(*) FROM event_subscriptions") == 5
    await text_index_in_step(peek, store_url)
    if store_url.startswith("sqlite://"):
        assert _cli("check", "--db", store_url).returncode == 0

    # An instant works too, and --status picks other statuses.
    runnable = _cli("purge", "--older-than", "2020-01-01T00:04:00Z", "--status", "runnable", "--db", store_url)
    assert runnable.stdout.startswith("purged 2 workflows (RUNNABLE)"), runnable.stdout
    assert await _count(peek, "SELECT count(*) FROM workflows") == 3
    # The runnable ones were queued when created; the purged ones' entries went with them.
    assert await _count(peek, "SELECT count(*) FROM work_queue WHERE queue = 'WORKFLOW'") == 3
    assert await _count(peek, "SELECT count(*) FROM work_queue WHERE item_id NOT IN (SELECT id FROM workflows)") == 0


async def test_purge_command_next_to_a_running_server(store_url: str, peek: Peek) -> None:
    server = start_server_process(store_url)
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            for n in range(1200):
                await store.create_new_workflow(_workflow(n, WorkflowStatus.TERMINATED, finished=LONG_AGO))
            keep = _workflow(5000, WorkflowStatus.TERMINATED, finished=datetime.now(UTC))
            await store.create_new_workflow(keep)

            async def create_meanwhile() -> int:
                created = 0
                while not purge.done():
                    await store.create_new_workflow(_workflow(created, WorkflowStatus.RUNNABLE))
                    created += 1
                    await asyncio.sleep(0)
                return created

            purge = asyncio.ensure_future(asyncio.to_thread(_cli, "purge", "--older-than", "1d", "--db", store_url))
            created = await create_meanwhile()
            done = await purge
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("purged 1200 workflows"), done.stdout
            assert created > 0  # the server kept writing during the purge
            assert (await store.search_workflows("Lisbon", status=WorkflowStatus.TERMINATED)).total == 0
            remaining = await store.list_workflows(status=WorkflowStatus.TERMINATED)
            assert [s.id for s in remaining.items] == [keep.id]
            assert (await store.search_workflows("workflow", status=WorkflowStatus.RUNNABLE, take=1)).total == created
    finally:
        assert server.terminate() == 0
    await text_index_in_step(peek, store_url)


# -- retention -------------------------------------------------------------------------------------


async def test_serve_with_retention_purges_finished_workflows_in_the_background(store_url: str) -> None:
    server = start_server_process(store_url, "--retention", "3s", "--log-level", "INFO")
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            now = datetime.now(UTC)
            old_complete = _workflow(1, WorkflowStatus.COMPLETE, finished=now - timedelta(minutes=5))
            old_terminated = _workflow(2, WorkflowStatus.TERMINATED, created=now - timedelta(hours=1))
            old_running = _workflow(3, WorkflowStatus.RUNNABLE, created=now - timedelta(hours=1))
            old_suspended = _workflow(4, WorkflowStatus.SUSPENDED, created=now - timedelta(hours=1))
            just_finished = _workflow(5, WorkflowStatus.COMPLETE, finished=now + timedelta(seconds=2))
            for w in (old_complete, old_terminated, old_running, old_suspended, just_finished):
                await store.create_new_workflow(w)
            expected_left = {old_running.id, old_suspended.id, just_finished.id}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                left = {s.id for s in (await store.list_workflows()).items}
                if left == expected_left:
                    break
                await asyncio.sleep(0.2)
            assert left == expected_left
            # ... and the workflow that finished just now goes once it is older than 3 s.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and just_finished.id in left:
                left = {s.id for s in (await store.list_workflows()).items}
                await asyncio.sleep(0.2)
            assert left == {old_running.id, old_suspended.id}
            assert time.monotonic() < deadline
    finally:
        assert server.terminate() == 0
    _, stderr = server.process.communicate(timeout=30)
    assert "retention: purging COMPLETE and TERMINATED workflows finished more than 0:00:03 ago" in stderr
    purged = [
        int(line.split("retention: purged ")[1].split()[0])
        for line in stderr.splitlines()
        if "retention: purged " in line
    ]
    assert sum(purged) == 3, stderr


@pytest.mark.parametrize("value", ["30", "0d", "1.5d", "-1h", "forever"])
def test_serve_refuses_an_invalid_retention(tmp_path: Path, value: str) -> None:
    db = tmp_path / "never.db"
    done = _cli("serve", "--db", f"sqlite://{db}", "--listen", "127.0.0.1:0", f"--retention={value}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("wfe-sqlite: invalid setting retention"), done.stderr
    assert not db.exists()


# -- upgrade ---------------------------------------------------------------------------------------


def _version_1_file(path: Path, count: int) -> list[str]:
    """A database as a version-1 server left it: no visibility indexes, no full text."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0].apply(conn)
    conn.execute("PRAGMA user_version = 1")
    ids = []
    for n in range(count):
        wid = str(uuid.uuid4())
        ids.append(wid)
        conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, description, reference, "
            "next_execution, status, data, create_time) VALUES (?, ?, 'legacy', 1, ?, ?, NULL, 'COMPLETE', ?, ?)",
            (wid, f"legacy-{n}", f"migrated item {n}", f"old-{n}", json.dumps({"colour": "teal", "n": n}), n),
        )
    conn.execute("COMMIT")
    conn.close()
    return ids


async def test_an_existing_file_is_upgraded_in_place_and_its_workflows_become_searchable(
    db_path: Path, db_url: str
) -> None:
    ids = _version_1_file(db_path, 30)
    assert _file_count(db_path, "PRAGMA user_version") == 1
    store = await SqlitePersistenceProvider.open(db_url)
    try:
        assert (await store.search_workflows("teal", take=1)).total == 30
        assert [s.id for s in (await store.search_workflows("old-7")).items] == [ids[7]]
        page = await store.list_workflows(status=WorkflowStatus.COMPLETE, definition_id="legacy", page_size=30)
        assert [s.id for s in page.items] == ids[::-1]
        assert await store.purge_workflows(datetime(1971, 1, 1, tzinfo=UTC)) == 30
        assert (await store.search_workflows("teal")).total == 0
    finally:
        await store.close()
    assert _file_count(db_path, "PRAGMA user_version") == SCHEMA_VERSION
    names = set(_names(db_path))
    assert {"workflows_fts", "workflows_by_status", "workflows_by_age", "workflows_fts_insert"} <= names
    _fts_in_step(db_path)


def test_purge_command_on_a_file_from_before_the_work_queue(db_path: Path, db_url: str) -> None:
    """``wfe-sqlite purge`` never upgrades a file: on one from schema version 1 (no work queue) it
    deletes what it deletes on a current one."""
    _version_1_file(db_path, 5)
    done = _cli("purge", "--older-than", "1d", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 5 workflows"), done.stdout
    assert _file_count(db_path, "SELECT count(*) FROM workflows") == 0
    assert _file_count(db_path, "PRAGMA user_version") == 1


def _names(db_path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_schema")]
    finally:
        conn.close()


async def test_full_text_survives_vacuum(db_path: Path, db_url: str) -> None:
    """The index refers to workflows by rowid; VACUUM keeps the rowids of a table with indexes."""
    store = await SqlitePersistenceProvider.open(db_url)
    try:
        made = [_workflow(n, WorkflowStatus.COMPLETE, finished=LONG_AGO) for n in range(40)]
        for w in made:
            await store.create_new_workflow(w)
        for w in made[::3]:
            await store.delete_workflow(w.id)  # holes in the rowids for VACUUM to close up if it renumbered
    finally:
        await store.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("VACUUM")
    conn.close()
    _fts_in_step(db_path)
    store = await SqlitePersistenceProvider.open(db_url)
    try:
        for w in made:
            found = await store.search_workflows(f"ref-{w.reference.split('-')[1]}")
            expected = [] if w in made[::3] else [w.id]
            assert [s.id for s in found.items] == expected, w.reference
    finally:
        await store.close()
