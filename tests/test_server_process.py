"""The real ``wfe-sqlite serve`` process: start-up, graceful stop, restart on the same file."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import WFE_SQLITE, start_server_process
from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    PointerStatus,
    ScheduledCommand,
    WorkflowInstance,
)


async def test_sigterm_then_restart_keeps_everything(db_path: Path, db_url: str) -> None:
    server = start_server_process(db_url)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", server.address)
    now = datetime.now(UTC)
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            workflow = WorkflowInstance.new("restart", 3, {"n": 2**62, "text": "grüße ✓"})
            pointer = ExecutionPointer.new(0)
            pointer.status = PointerStatus.WAITING_FOR_EVENT
            pointer.event_name, pointer.event_key = "go", "1"
            workflow.execution_pointers = [pointer]
            await store.create_new_workflow(workflow)
            subscription = EventSubscription.new(workflow.id, 0, pointer.id, "go", "1", now)
            await store.create_event_subscription(subscription)
            assert await store.set_subscription_token(subscription.id, "tok", "w1", now + timedelta(hours=1))
            event = Event.new("go", "1", {"ok": True})
            await store.create_event(event)
            await store.schedule_command(ScheduledCommand.process_workflow(workflow.id, 1234))
            await store.persist_errors([ExecutionError.new(workflow.id, pointer.id, "boom")])
            assert await store.next_definition_sequence("restart") == 2  # create took 1
    finally:
        assert server.terminate() == 0  # graceful exit
    stderr = server.process.stderr.read() if server.process.stderr else ""
    assert "database closed" in stderr

    # The WAL was checkpointed into the main file on the way out.
    wal = Path(str(db_path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0

    again = start_server_process(db_url)
    try:
        async with GrpcPersistenceProvider.connect(again.address) as store:
            assert await store.get_workflow_instance(workflow.id) == workflow
            assert await store.get_workflow_instance_by_name("restart-1") == workflow
            stored = await store.get_subscription(subscription.id)
            assert stored.external_token == "tok"
            assert (await store.get_event(event.id)).event_data == {"ok": True}
            assert await store.next_definition_sequence("restart") == 3  # never repeats across restarts
            handled: list[ScheduledCommand] = []

            async def handler(command: ScheduledCommand) -> None:
                handled.append(command)

            await store.process_commands(datetime.now(UTC), handler)
            assert handled == [ScheduledCommand.process_workflow(workflow.id, 1234)]
    finally:
        again.terminate()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT message FROM execution_errors").fetchall() == [("boom",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_bad_settings_stop_start_up_with_a_message(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_bytes(b"these are my notes, not a database\n")
    cases = [
        (["--db", "mysql://x"], "unsupported database string"),
        (["--db", f"sqlite://{not_a_db}"], "not a SQLite database"),
        (["--db", f"sqlite://{tmp_path}/missing-dir/x.db"], "does not exist"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [str(WFE_SQLITE), "serve", "--listen", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not_a_db.read_bytes() == b"these are my notes, not a database\n"


def test_memory_database_serves(tmp_path: Path) -> None:
    server = start_server_process(":memory:")
    try:
        import asyncio

        async def use() -> str:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                workflow = WorkflowInstance.new("mem", 1, None)
                await store.create_new_workflow(workflow)
                return (await store.get_workflow_instance(workflow.id)).name

        assert asyncio.run(use()) == "mem-1"
    finally:
        assert server.terminate() == 0
