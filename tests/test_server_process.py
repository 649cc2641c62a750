"""The real ``wfe-sqlite serve`` process: start-up, graceful stop, restart on the same file; the files and
database strings ``serve``, ``migrate`` and the maintenance commands refuse."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import WFE_SQLITE, start_server_process
from test_schema_migrations import FOREIGN, file_state, foreign_file
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
from wfe_sqlite import SqlitePersistenceProvider


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


def _wfe_sqlite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WFE_SQLITE), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_another_applications_sqlite_file_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    """A SQLite file holding other tables and no wfe-sqlite schema (the Rust crate's included) is
    refused by migrate and serve: exit 2, a message naming the file and why, the file as it was."""
    path = tmp_path / "theirs.db"
    message = foreign_file(path, kind)
    before = file_state(path)
    for command in (["migrate"], ["serve", "--listen", "127.0.0.1:0"]):
        result = _wfe_sqlite(*command, "--db", f"sqlite://{path}")
        assert (result.returncode, result.stdout) == (2, ""), (command, result)
        assert result.stderr == f"wfe-sqlite: {path}: {message}\n", command
        assert file_state(path) == before, command  # same bytes, journal mode, tables; nothing beside it


def test_the_maintenance_commands_refuse_another_applications_file(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    message = foreign_file(path, "customers")
    before = file_state(path)
    copy = tmp_path / "copy.db"
    for command in (["check"], ["stats"], ["list"], ["backup", str(copy)], ["purge", "--older-than", "1d"]):
        result = _wfe_sqlite(*command, "--db", f"sqlite://{path}")
        assert (result.returncode, result.stdout) == (2, ""), (command, result)
        assert result.stderr == f"wfe-sqlite: {path}: {message}\n", command
        assert file_state(path) == before, command
    assert not copy.exists()


async def test_query_parameters_in_a_sqlite_database_string_are_refused(tmp_path: Path) -> None:
    """``?mode=ro`` (or any parameter, or a fragment) is refused, not dropped: the file would be
    served read-write all the same."""
    path = tmp_path / "wfe.db"
    assert _wfe_sqlite("migrate", "--db", f"sqlite://{path}").returncode == 0
    before = file_state(path)
    for url, what in (
        (f"sqlite://{path}?mode=ro", "query parameters ('?mode=ro')"),
        (f"sqlite://{path}#x", "a fragment ('#x')"),
    ):
        for command in (["migrate"], ["serve", "--listen", "127.0.0.1:0"]):
            result = _wfe_sqlite(*command, "--db", url)
            assert (result.returncode, result.stdout) == (2, ""), (command, result)
            assert result.stderr == (
                f"wfe-sqlite: invalid setting db: database string {url!r} has {what}: a sqlite:// string takes "
                "none, only the path of the file (from --db)\n"
            ), command
        with pytest.raises(ValueError, match="takes none, only the path of the file"):
            await SqlitePersistenceProvider.open(url)
    assert file_state(path) == before
