"""Operations through real processes: reflection, graceful shutdown, backup, check, stats."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import WFE_SQLITE, start_server_process
from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    ScheduledCommand,
    WfeError,
    WorkflowInstance,
)
from wfe_client._cluster import CLOSE_RELEASE_WAIT
from wfe_client.timeutil import utc_now
from wfe_sqlite import SqliteLockProvider, SqlitePersistenceProvider
from wfe_sqlite._cluster_servicer import CLUSTER_SERVICE_NAMES
from wfe_sqlite._schema import SCHEMA_VERSION
from wfe_sqlite._servicer import SERVICE_NAMES


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WFE_SQLITE), *args], capture_output=True, text=True, timeout=60)


def test_reflection_lists_and_describes_every_service(db_url: str) -> None:
    server = start_server_process(db_url)
    try:
        with grpc.insecure_channel(server.address) as channel:
            reflected = ProtoReflectionDescriptorDatabase(channel)
            services = set(reflected.get_services())
            assert services == {
                *SERVICE_NAMES,
                *CLUSTER_SERVICE_NAMES,
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            # A generic tool can resolve the rpcs and their messages from the server alone.
            pool = DescriptorPool(reflected)
            workflows = pool.FindServiceByName("wfe.persistence.v1.WorkflowService")
            assert "CreateWorkflow" in {method.name for method in workflows.methods}
            assert workflows.FindMethodByName("CreateWorkflow").input_type.fields_by_name["workflow"]
    finally:
        server.kill()


async def test_sigterm_during_a_slow_call_lets_it_finish(db_path: Path, db_url: str) -> None:
    server = start_server_process(db_url, "--grace", "20")
    # Another process holds the write lock, so the server's next write waits (busy timeout) for it:
    # a call that is genuinely in flight inside the server when SIGTERM arrives.
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        async with (
            GrpcPersistenceProvider.connect(server.address) as store,
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            blocker.execute("BEGIN IMMEDIATE")
            slow = WorkflowInstance.new("slow-flow", 1, {"in": "flight"})
            call = asyncio.create_task(store.create_new_workflow(slow))
            await asyncio.sleep(0.3)
            assert not call.done(), "the write should be waiting for the lock"
            server.process.send_signal(signal.SIGTERM)
            # Health turns NOT_SERVING first (load balancers stop sending), then the watch ends.
            assert (await asyncio.wait_for(watch.read(), 10)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            await asyncio.sleep(0.3)
            assert server.process.poll() is None, "the server must wait for its in-flight call"
            assert not call.done()
            blocker.execute("COMMIT")
            assert await asyncio.wait_for(call, 10) == slow.id
        assert server.process.wait(30) == 0
    finally:
        blocker.close()
        server.kill()
    # The call's write is in the database, which was closed cleanly (WAL checkpointed away).
    assert not Path(f"{db_path}-wal").exists() or Path(f"{db_path}-wal").stat().st_size == 0
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT data FROM workflows WHERE id = ?", (slow.id,)).fetchone() == ('{"in":"flight"}',)


async def test_calls_waiting_in_grpc_when_sigterm_arrives_are_served_or_refused(db_path: Path, db_url: str) -> None:
    # Calls the server has received but not yet handed to its handlers (gRPC core queues them while
    # the event loop is busy; here the process is stopped while they arrive) were CANCELLED by
    # gRPC's shutdown (31 or 32 of the 32). Each must be served or refused with UNAVAILABLE.
    server = start_server_process(db_url)
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            await store.create_new_workflow(WorkflowInstance.new("warm-up", 1, {}))
            server.process.send_signal(signal.SIGSTOP)
            try:
                workflows = [WorkflowInstance.new("queued", 1, {"n": n}) for n in range(32)]
                calls = [asyncio.ensure_future(store.create_new_workflow(w)) for w in workflows]
                await asyncio.sleep(0.5)  # sent: waiting in the server's socket
                assert not any(call.done() for call in calls)
                server.process.send_signal(signal.SIGTERM)
            finally:
                server.process.send_signal(signal.SIGCONT)
            outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert server.process.wait(30) == 0
    finally:
        server.kill()
    acknowledged = {outcome for outcome in outcomes if isinstance(outcome, str)}
    failures = [outcome for outcome in outcomes if not isinstance(outcome, str)]
    assert all(isinstance(error, WfeError) and error.code == "UNAVAILABLE" for error in failures), failures
    assert all(error.reason == "STORAGE_UNAVAILABLE" for error in failures if isinstance(error, WfeError)), failures
    with sqlite3.connect(db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM workflows WHERE workflow_definition_id = 'queued'")}
    assert stored == acknowledged


WRITERS = 16
"""Concurrent writers of the write-load stop test."""


async def test_sigterm_under_write_load_serves_or_refuses_every_call(db_path: Path, db_url: str) -> None:
    # The report's case: writers that call again as soon as they are answered, so gRPC core mostly
    # holds calls it has received and not yet handed to the server. Its shutdown cancelled those
    # (CANCELLED, no access-log line; here in about half the runs). Each call must be served or
    # refused with UNAVAILABLE, and everything acknowledged kept.
    server = start_server_process(db_url)
    acknowledged: list[str] = []
    refused: dict[str, WfeError] = {}
    under_load = asyncio.Event()  # 200 writes acknowledged (or a writer failed before the stop)
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:

            async def write_until_refused(worker: int) -> None:
                while True:
                    workflow = WorkflowInstance.new("load", 1, {"worker": worker})
                    try:
                        acknowledged.append(await store.create_new_workflow(workflow))
                    except WfeError as error:
                        refused[workflow.id] = error
                        under_load.set()
                        return
                    if len(acknowledged) >= 200:
                        under_load.set()

            writers = [asyncio.create_task(write_until_refused(worker)) for worker in range(WRITERS)]
            await asyncio.wait_for(under_load.wait(), 30)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*writers), 30)
        assert server.process.wait(30) == 0
    finally:
        server.kill()
    assert len(acknowledged) >= 200
    assert len(refused) == WRITERS
    # UNAVAILABLE for each: the server's refusal while it stops (nothing written, retry) or, after
    # it stopped, no connection. Never CANCELLED.
    assert sorted({error.code for error in refused.values()}) == ["UNAVAILABLE"], refused
    for error in refused.values():
        if "shutting down" in str(error):
            assert error.reason == "STORAGE_UNAVAILABLE"
            assert error.metadata == {"not_run": "true"}  # a balancer sends it on (errors.proto)
    # Everything acknowledged is stored; nothing refused is.
    with sqlite3.connect(db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM workflows")}
    assert stored == set(acknowledged)


async def test_backup_under_write_load_is_consistent(tmp_path: Path, db_url: str) -> None:
    server = start_server_process(db_url)
    dest = tmp_path / "backup.db"
    written: list[int] = []
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            stop = asyncio.Event()

            async def write_load() -> None:
                while not stop.is_set():
                    workflow = WorkflowInstance.new("load", 1, {"pad": "x" * 2000})
                    workflow.execution_pointers = [ExecutionPointer.new(0), ExecutionPointer.new(1)]
                    await store.create_new_workflow(workflow)
                    written.append(1)

            writers = [asyncio.create_task(write_load()) for _ in range(8)]
            await asyncio.sleep(0.5)
            before = len(written)
            backup = await asyncio.create_subprocess_exec(
                str(WFE_SQLITE),
                "backup",
                str(dest),
                "--db",
                db_url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await backup.communicate()
            during = len(written) - before
            stop.set()
            await asyncio.gather(*writers)
        assert backup.returncode == 0, err.decode()
        assert f"to {dest}" in out.decode()
        assert during > 0, "writes went on while the backup ran"
    finally:
        server.kill()

    checked = _cli("check", "--db", f"sqlite://{dest}")
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stdout + checked.stderr
    assert not Path(f"{dest}-wal").exists(), "the backup is one self-contained file"
    conn = sqlite3.connect(dest)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        workflows = conn.execute("SELECT count(*) FROM workflows").fetchone()[0]
        pointers = conn.execute("SELECT count(*) FROM execution_pointers").fetchone()[0]
    finally:
        conn.close()
    # One instant: every workflow with both its pointers (each was one transaction), none half there.
    assert 0 < workflows <= len(written)
    assert pointers == 2 * workflows

    again = _cli("backup", str(dest), "--db", db_url)
    assert again.returncode == 2 and "already exists" in again.stderr


async def _fill(url: str) -> None:
    """A store with a known content (see ``test_stats_shows_what_the_store_holds``)."""
    store = await SqlitePersistenceProvider.open(url)
    try:
        now = utc_now()
        for next_execution in (0, 0, None):
            workflow = WorkflowInstance.new("flow", 1, {})
            workflow.execution_pointers = [ExecutionPointer.new(0)]
            workflow.next_execution = next_execution
            await store.create_new_workflow(workflow)
        first = await store.create_event(Event.new("paid", "1", {}))
        await store.create_event(Event.new("paid", "2", {}))
        await store.mark_event_processed(first)
        held = await store.create_event_subscription(EventSubscription.new(workflow.id, 0, "p", "paid", "3", now))
        await store.create_event_subscription(EventSubscription.new(workflow.id, 0, "p", "paid", "4", now))
        assert await store.set_subscription_token(held, "token", "worker", now + timedelta(hours=1))
        await store.schedule_command(ScheduledCommand.process_workflow("a", 0))
        await store.schedule_command(ScheduledCommand.process_workflow("b", 1))
        await store.schedule_command(ScheduledCommand.process_event("later", 2**62))
        claim = await store.claim_commands(now, max_commands=1)
        assert len(claim.commands) == 1
        await store.persist_errors([ExecutionError.new(workflow.id, "p", "boom")])
        # A lease that outlives this process (taken without the provider's bookkeeping, so closing
        # does not release it).
        assert await SqliteLockProvider(store, "stats-owner", timedelta(hours=1))._acquire("held-lock") is not None
    finally:
        await store.close()


async def test_stats_shows_what_the_store_holds(db_path: Path, db_url: str) -> None:
    await _fill(db_url)
    shown = _cli("stats", "--json", "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    stats = json.loads(shown.stdout)
    assert stats["tables"] == {
        "workflows": 3,
        "execution_pointers": 3,
        "events": 2,
        "event_subscriptions": 2,
        "scheduled_commands": 3,
        "execution_errors": 1,
        "definition_sequences": 1,
    }
    assert (stats["runnable_workflows"], stats["unprocessed_events"]) == (2, 1)
    assert (stats["due_commands"], stats["claimed_commands"], stats["held_tokens"]) == (1, 1, 1)
    # The two due workflows and both events were queued when stored; nobody dequeued them.
    assert (stats["queued_items"], stats["held_leases"]) == (4, 1)
    assert stats["files"]["database"] == db_path.stat().st_size > 0
    assert stats["schema_version"] == SCHEMA_VERSION

    human = _cli("stats", "--db", db_url)
    assert human.returncode == 0, human.stderr
    lines = [" ".join(line.split()) for line in human.stdout.splitlines()]
    for expected in (
        "workflows 3",
        "runnable workflows 2",
        "unprocessed events 1",
        "due commands 1",
        "claimed commands 1",
        "held tokens 1",
        "queued items 4",
        "held leases 1",
        f"database {db_path.stat().st_size}",
    ):
        assert expected in lines, (expected, human.stdout)


async def test_check_tells_a_sound_database_from_a_damaged_one(tmp_path: Path, db_path: Path, db_url: str) -> None:
    await _fill(db_url)
    sound = _cli("check", "--db", db_url)
    assert (sound.returncode, sound.stdout.strip()) == (0, f"{db_path}: ok"), sound.stderr

    damaged = tmp_path / "damaged.db"
    shutil.copy(db_path, damaged)
    page_size = 4096
    with open(damaged, "r+b") as handle:  # overwrite every page but the first (the header)
        size = damaged.stat().st_size
        for offset in range(page_size, size, page_size):
            handle.seek(offset)
            handle.write(bytes([0x5A]) * page_size)
    broken = _cli("check", "--db", f"sqlite://{damaged}")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "problem" in broken.stdout
    # The other commands name the file (before: 'wfe-sqlite: database disk image is malformed').
    for command in (["stats"], ["list"], ["show", "some-id"], ["backup", str(tmp_path / "copy.db")]):
        result = _cli(*command, "--db", f"sqlite://{damaged}")
        _one_line_refusal(result, f"{damaged}: database disk image is malformed")

    missing = _cli("check", "--db", f"sqlite://{tmp_path / 'missing.db'}")
    assert missing.returncode == 2 and "no database file" in missing.stderr
    assert not (tmp_path / "missing.db").exists()


async def test_backup_refuses_to_replace_the_database_it_copies(tmp_path: Path, db_path: Path, db_url: str) -> None:
    """`backup --force` onto the served file (or its WAL, or a link to it) would leave the server
    writing to an unlinked file: everything acknowledged afterwards lost. It is refused instead."""
    link = tmp_path / "link.db"
    link.symlink_to(db_path)
    server = start_server_process(db_url)
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            before = await store.create_new_workflow(WorkflowInstance.new("flow", 1, {}))
            for dest in (db_path, Path(f"{db_path}-wal"), link, tmp_path / "." / "wfe.db"):
                refused = _cli("backup", str(dest), "--force", "--db", db_url)
                assert refused.returncode == 2, (dest, refused.stdout, refused.stderr)
                assert "is the database's own file" in refused.stderr and "Traceback" not in refused.stderr
            after = await store.create_new_workflow(WorkflowInstance.new("flow", 1, {}))
    finally:
        assert server.terminate() == 0
    listed = _cli("list", "--db", db_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {before, after} <= {w["id"] for w in json.loads(listed.stdout)["workflows"]}


def test_backup_names_a_destination_it_cannot_write(tmp_path: Path, db_url: str) -> None:
    asyncio.run(_fill(db_url))
    empty = _cli("backup", "", "--db", db_url)
    assert empty.returncode == 2 and "destination is an empty path" in empty.stderr, empty.stderr
    nowhere = tmp_path / "no-such-dir" / "b.db"
    missing = _cli("backup", str(nowhere), "--db", db_url)
    assert missing.returncode == 2 and f"directory {nowhere.parent} does not exist" in missing.stderr, missing.stderr
    folder = _cli("backup", str(tmp_path), "--force", "--db", db_url)
    assert folder.returncode == 2 and "is a directory" in folder.stderr, folder.stderr
    assert not list(tmp_path.glob("*.partial-*")), "nothing half-written is left behind"


def test_maintenance_commands_name_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("not a database, just some text\n" * 200)
    content = other.read_bytes()
    for command in (["stats"], ["check"], ["list"], ["show", "some-id"], ["purge", "--older-than", "1d"]):
        result = _cli(*command, "--db", f"sqlite://{other}")
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"{other}: not a SQLite database" in result.stderr, (command, result.stderr)
    assert other.read_bytes() == content


def test_commands_on_an_unreachable_or_malformed_postgresql_url_say_so() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"postgresql://wfe:s3cret@127.0.0.1:{port}/wfe"
    for command in (["list"], ["show", "some-id"], ["purge", "--older-than", "1d"], ["stats"], ["migrate"]):
        result = _cli(*command, "--db", dead)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith("wfe-sqlite: cannot connect to PostgreSQL"), (command, result.stderr)
        assert "Traceback" not in result.stderr and "s3cret" not in result.stderr, (command, result.stderr)
    for port in ("notaport", "0", "65536"):
        for command in (["list"], ["stats"], ["serve"]):
            result = _cli(*command, "--db", f"postgresql://wfe:s3cret@127.0.0.1:{port}/wfe")
            assert result.returncode == 2, (command, port, result.stderr)
            assert f"port '{port}' is not a number from 1 to 65535" in result.stderr, (command, result.stderr)
            assert "s3cret" not in result.stderr
    # An IPv6 host without its closing bracket: asyncpg said only 'Invalid IPv6 URL' (naming nothing).
    for command in (["list"], ["stats"], ["migrate"], ["serve"]):
        result = _cli(*command, "--db", "postgresql://wfe:s3cret@[::1/wfe")
        assert result.returncode == 2, (command, result.stderr)
        assert "invalid setting db: postgresql://wfe:***@[::1/wfe: host '[::1' has no closing ']'" in result.stderr, (
            command,
            result.stderr,
        )


def test_output_to_a_reader_that_went_away_ends_quietly(db_url: str) -> None:
    asyncio.run(_fill(db_url))
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` once it has its lines: every write now fails with EPIPE
    try:
        result = subprocess.run(
            [str(WFE_SQLITE), "list", "--db", db_url], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (128 + signal.SIGPIPE, "")


async def test_closing_a_lock_provider_on_a_server_that_does_not_answer_takes_seconds(db_url: str) -> None:
    """Releasing at close is best effort (a lease runs out by itself): a frozen server costs the
    host's shutdown at most ``CLOSE_RELEASE_WAIT``, not a call deadline per held lease."""
    server = start_server_process(db_url)
    try:
        locks = await GrpcLockProvider.connect(server.address, "frozen-host", timedelta(seconds=30))
        for i in range(5):
            assert await locks.acquire_lock(f"r{i}")
        server.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        await asyncio.wait_for(locks.close(), timeout=4 * CLOSE_RELEASE_WAIT)
        took = time.monotonic() - started
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.kill()
    assert CLOSE_RELEASE_WAIT - 0.5 <= took <= 2 * CLOSE_RELEASE_WAIT, took


def _one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 and one line on stderr, ``wfe-sqlite: ...`` holding each of ``expected``; no traceback."""
    context = (result.args, result.stdout, result.stderr)
    assert result.returncode == 2, context
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("wfe-sqlite: "), context
    for text in expected:
        assert text in result.stderr, context


_READING_COMMANDS = (["stats"], ["list"], ["show", "some-id"], ["purge", "--older-than", "1d", "--dry-run"])


def test_commands_that_read_the_tables_name_a_database_with_no_schema_yet(tmp_path: Path) -> None:
    # Before, stats, list, show and purge on an empty file (or a SQLite database without tables)
    # said only 'wfe-sqlite: no such table: workflows'. PostgreSQL already named the database.
    empty = tmp_path / "empty.db"
    empty.touch()
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).close()
    for path in (empty, blank):
        before = path.read_bytes()
        for command in (*_READING_COMMANDS, ["purge", "--older-than", "1d"]):
            result = _cli(*command, "--db", f"sqlite://{path}")
            _one_line_refusal(result, f"{path}: no wfe-sqlite schema in this database yet", "wfe-sqlite migrate")
        assert path.read_bytes() == before, "nothing was written"
        assert not list(tmp_path.glob("*-wal")) and not list(tmp_path.glob("*.db-journal"))
    assert _cli("check", "--db", f"sqlite://{empty}").returncode == 0  # an empty database is sound


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nothing can be created in: mode 555, or, for root (whom modes do not stop), a
    read-only bind mount of it."""
    target = tmp_path / "read-only"
    target.mkdir()
    source = tmp_path / "source"
    source.mkdir()
    if os.geteuid() != 0:
        yield source
        return
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount a read-only directory: {mounted.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _make_read_only(directory: Path) -> None:
    if os.geteuid() != 0:
        directory.chmod(0o555)


async def test_commands_name_a_directory_they_cannot_write_in(tmp_path: Path, read_only_dir: Path) -> None:
    # A WAL database in a read-only directory cannot be opened without its -shm file there: every
    # command said 'wfe-sqlite: unable to open database file' (check: exit 1, '1 problem(s)');
    # backup into a read-only directory said the same; serve on a new file there printed four
    # 'could not remove ... Read-only file system' warnings for files it never created.
    source = tmp_path / "source" / "wfe.db"
    await _fill(f"sqlite://{source}")
    assert not source.with_name("wfe.db-shm").exists()
    copy = tmp_path / "copy.db"
    shutil.copy(source, copy)
    _make_read_only(tmp_path / "source")
    try:
        database = read_only_dir / "wfe.db"
        for command in (*_READING_COMMANDS, ["check"], ["migrate"], ["backup", str(tmp_path / "b.db")]):
            result = _cli(*command, "--db", f"sqlite://{database}")
            _one_line_refusal(
                result, f"{database}: cannot open the database", f"directory {read_only_dir} is read-only"
            )
        into = _cli("backup", str(read_only_dir / "b.db"), "--db", f"sqlite://{copy}")
        _one_line_refusal(into, f"cannot write in directory {read_only_dir}")
        fresh = read_only_dir / "new.db"
        served = subprocess.run(
            [str(WFE_SQLITE), "serve", "--db", f"sqlite://{fresh}", "--listen", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        _one_line_refusal(served, f"{fresh}: cannot create the database")
        assert not fresh.exists()
    finally:
        (tmp_path / "source").chmod(0o755)
