"""PostgreSQL: schema versions and migrations, several servers on one database, PostgreSQL going away.

Everything runs against the session's real throwaway PostgreSQL and real ``wfe-sqlite serve``
processes (the conformance and contract suites run on PostgreSQL too, through ``store_url``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from conftest import WFE_SQLITE, ServerProcess, start_server_process
from pgcluster import PgCluster
from wfe_client import (
    GrpcLifecyclePublisher,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    InvalidArgument,
    LifecycleEvent,
    LifecycleEventType,
    QueueType,
    RevisionConflict,
    ScheduledCommand,
    StorageUnavailable,
)
from wfe_client.limits import DEFAULT_DEADLINE_SECONDS
from wfe_client.models import Event, EventSubscription, ExecutionError, ExecutionPointer, WorkflowInstance
from wfe_sqlite import (
    DatabaseOpenError,
    PostgresPersistenceProvider,
    SqliteLockProvider,
    SqliteQueueProvider,
    open_provider,
)
from wfe_sqlite._postgres_cluster import FALLBACK_LOOK, PostgresCluster
from wfe_sqlite._postgres_store import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION, migrate_url, redact_url
from wfe_sqlite._postgres_visibility import DELETE_WORKFLOW
from wfe_sqlite._queue_store import CLAIM_PREFIX
from wfe_sqlite.server import RunningServer, ServerConfig

UTC = UTC


def _workflow(definition: str) -> WorkflowInstance:
    w = WorkflowInstance.new(definition, 1, {"n": 1})
    w.next_execution = None
    w.execution_pointers = [ExecutionPointer.new(0)]
    return w


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WFE_SQLITE), *args], capture_output=True, text=True, timeout=60)


# -- schema versions and migrations --------------------------------------------------------------


async def test_servers_starting_together_migrate_once(fresh_pg_url: str) -> None:
    results = await asyncio.gather(*(migrate_url(fresh_pg_url) for _ in range(6)))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 5
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, SCHEMA_VERSION + 1)
        )
    finally:
        await conn.close()


def test_three_server_processes_start_together_on_an_empty_database(fresh_pg_url: str) -> None:
    processes = [
        subprocess.Popen(
            [str(WFE_SQLITE), "serve", "--db", fresh_pg_url, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("listening on ")
    finally:
        for process in processes:
            process.kill()
            process.wait(30)
    assert _cli("migrate", "--db", fresh_pg_url).stdout.strip().endswith(f"schema version {SCHEMA_VERSION}, up to date")


async def test_a_version_1_database_is_upgraded_and_its_workflows_start_at_revision_1(fresh_pg_url: str) -> None:
    conn = await asyncpg.connect(fresh_pg_url)
    try:  # a database as the first release left it, with one workflow
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        await conn.execute(MIGRATIONS[0])
        await conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        await conn.execute(
            "INSERT INTO workflows (id, name, workflow_definition_id, version, status, data, create_time) "
            "VALUES ('old', 'old-1', 'old', 1, 'RUNNABLE', '{}', 0)"
        )
    finally:
        await conn.close()
    assert await migrate_url(fresh_pg_url) == (1, SCHEMA_VERSION)
    provider = await open_provider(fresh_pg_url)
    try:
        old = await provider.get_workflow_instance("old")
        assert old.revision == 1
        await provider.persist_workflow(old)
        assert old.revision == 2
        old.revision = 1
        with pytest.raises(RevisionConflict):
            await provider.persist_workflow(old)
    finally:
        await provider.close()


async def test_ensure_store_exists_leaves_no_session_lock_on_the_pooled_connection(pg_url: str) -> None:
    """The pool releases connections without a reset query, so the migration's session lock must
    be gone when ensure_store_exists returns, or the next server's start-up would wait forever."""
    provider = await open_provider(pg_url)
    try:
        await asyncio.gather(*(provider.ensure_store_exists() for _ in range(4)))
        held = await provider.get_workflow_instance(await provider.create_new_workflow(_workflow("after")))
        assert held.workflow_definition_id == "after"
        other = await asyncpg.connect(pg_url)
        try:
            assert await asyncio.wait_for(other.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK), 5)
        finally:
            await other.close()
    finally:
        await provider.close()


def test_migrate_command_creates_then_reports_up_to_date(fresh_pg_url: str) -> None:
    first = _cli("migrate", "--db", fresh_pg_url)
    assert first.returncode == 0, first.stderr
    assert f"schema version 0 -> {SCHEMA_VERSION}" in first.stdout
    again = _cli("migrate", "--db", fresh_pg_url)
    assert again.returncode == 0
    assert "up to date" in again.stdout


def test_a_database_newer_than_the_binary_is_refused_with_exit_2(fresh_pg_url: str, pg_cluster: PgCluster) -> None:
    assert _cli("migrate", "--db", fresh_pg_url).returncode == 0
    pg_cluster.psql(
        f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})", fresh_pg_url.rsplit("/", 1)[1]
    )
    served = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", fresh_pg_url, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this server's {SCHEMA_VERSION}" in served.stderr
    assert "listening" not in served.stdout
    migrated = _cli("migrate", "--db", fresh_pg_url)
    assert migrated.returncode == 2
    assert "newer" in migrated.stderr


def test_an_unreachable_database_fails_start_up_with_exit_2(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url("no_such_database")
    served = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", url, "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60
    )
    assert served.returncode == 2
    assert "cannot connect to PostgreSQL" in served.stderr


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("wfe:secret@127.0.0.1:{port}/wfe", "wfe:***@127.0.0.1:{port}/wfe"),
        # libpq and asyncpg also take the password as a query parameter (before: shown as given)
        (
            "wfe@127.0.0.1:{port}/wfe?sslmode=disable&password=secret&sslpassword=secret",
            "wfe@127.0.0.1:{port}/wfe?sslmode=disable&password=***&sslpassword=***",
        ),
    ],
)
def test_a_database_that_never_answers_fails_start_up_naming_it(secret: str, shown: str) -> None:
    """A PostgreSQL that accepts the connection and says nothing (frozen; or another service on
    that port): exit 2 after connect_timeout (5 s), naming the database (without its password)
    and the timeout. Before, the message was "cannot connect to PostgreSQL: " and nothing more."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody answers
        port = silent.getsockname()[1]
        served = subprocess.run(
            [
                str(WFE_SQLITE),
                "serve",
                "--db",
                "postgresql://" + secret.format(port=port),
                "--listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert served.returncode == 2, served
    assert "secret" not in served.stdout + served.stderr
    assert served.stderr.strip() == (
        f"wfe-sqlite: cannot connect to PostgreSQL at postgresql://{shown.format(port=port)}: no answer within 5s"
    ), served.stderr


def _serve_once(url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``wfe-sqlite serve`` on ``url``, expected to refuse to start (a server that starts runs into ``timeout``)."""
    return subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", url, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def _tables(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        )
    finally:
        await conn.close()
    tables: dict[str, list[str]] = {}
    for row in rows:
        tables.setdefault(row["table_name"], []).append(row["column_name"])
    return tables


async def test_a_database_with_another_applications_workflows_table_is_refused_and_left_alone(
    fresh_pg_url: str,
) -> None:
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await conn.execute("CREATE TABLE workflows (foo text); INSERT INTO workflows VALUES ('theirs')")
    finally:
        await conn.close()
    refusal = (
        f"{redact_url(fresh_pg_url)}: schema public holds tables of another application named as wfe-sqlite's "
        "(workflows) and no wfe-sqlite schema (refusing to touch it)"
    )
    for done in (
        _cli("migrate", "--db", fresh_pg_url),
        _serve_once(fresh_pg_url),
        _cli("list", "--db", fresh_pg_url),
        _cli("stats", "--db", fresh_pg_url),
    ):
        assert done.returncode == 2, (done.args, done.stderr)
        assert refusal in done.stderr, (done.args, done.stderr)
        assert "Traceback" not in done.stderr
        assert "run wfe-sqlite migrate" not in done.stderr
        assert "listening" not in done.stdout
    with pytest.raises(DatabaseOpenError, match="refusing to touch it"):
        await migrate_url(fresh_pg_url)
    assert await _tables(fresh_pg_url) == {"workflows": ["foo"]}
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        assert [r[0] for r in await conn.fetch("SELECT foo FROM workflows")] == ["theirs"]
    finally:
        await conn.close()


async def test_a_foreign_schema_version_table_or_index_name_is_refused_too(fresh_pg_url: str) -> None:
    conn = await asyncpg.connect(fresh_pg_url)
    try:  # another application's migration record, and a table whose index takes one of our names
        await conn.execute("CREATE TABLE schema_version (version text); INSERT INTO schema_version VALUES ('v9')")
        await conn.execute("CREATE TABLE customers (id int); CREATE INDEX locks_expiry ON customers (id)")
    finally:
        await conn.close()
    migrated = _cli("migrate", "--db", fresh_pg_url)
    assert migrated.returncode == 2, migrated.stderr
    assert "(locks_expiry (index), schema_version) and no wfe-sqlite schema" in migrated.stderr
    assert "Traceback" not in migrated.stderr
    assert await _tables(fresh_pg_url) == {"customers": ["id"], "schema_version": ["version"]}


async def test_a_database_with_other_tables_under_other_names_is_migrated(fresh_pg_url: str) -> None:
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await conn.execute("CREATE TABLE customers (id int); INSERT INTO customers VALUES (7)")
    finally:
        await conn.close()
    migrated = _cli("migrate", "--db", fresh_pg_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version 0 -> {SCHEMA_VERSION}" in migrated.stdout
    tables = await _tables(fresh_pg_url)
    assert tables["customers"] == ["id"]
    assert {"workflows", "work_queue", "schema_version"} <= set(tables)
    listed = _cli("list", "--db", fresh_pg_url)
    assert listed.returncode == 0, listed.stderr


@pytest.fixture
def reader_url(fresh_pg_url: str, pg_cluster: PgCluster) -> Iterator[str]:
    """``fresh_pg_url`` for a role of its own that may only read (and not create in schema public)."""
    dbname = fresh_pg_url.rsplit("/", 1)[1]
    role = f"reader_{dbname}"
    pg_cluster.psql(f"CREATE ROLE {role} LOGIN", dbname)
    pg_cluster.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", dbname)
    try:
        yield fresh_pg_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
    finally:
        pg_cluster.psql(f"DROP OWNED BY {role}; DROP ROLE {role}", dbname)


async def test_a_role_that_cannot_write_is_refused_at_start_up(
    fresh_pg_url: str, reader_url: str, pg_cluster: PgCluster
) -> None:
    assert reader_url != fresh_pg_url
    role = reader_url.split("//", 1)[1].split("@", 1)[0]
    dbname = fresh_pg_url.rsplit("/", 1)[1]
    creating = _cli("migrate", "--db", reader_url)  # nothing there yet, and it may not create
    assert creating.returncode == 2, creating.stderr
    assert f"{redact_url(reader_url)}: role {role} cannot upgrade the schema to version 1" in creating.stderr
    assert "Traceback" not in creating.stderr
    assert _cli("migrate", "--db", fresh_pg_url).returncode == 0
    pg_cluster.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", dbname)
    served = _serve_once(reader_url, timeout=30)
    assert served.returncode == 2, served.stderr
    assert f"{redact_url(reader_url)}: role {role} cannot write to table " in served.stderr
    assert "it lacks INSERT, UPDATE, DELETE; a server needs SELECT, INSERT, UPDATE, DELETE" in served.stderr
    assert "Traceback" not in served.stderr and "listening" not in served.stdout
    assert _cli("list", "--db", reader_url).returncode == 0  # reading is all list needs
    pg_cluster.psql(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}", dbname)
    served = _serve_once(reader_url, timeout=30)
    assert "role" in served.stderr and "cannot write to sequence work_queue_position" in served.stderr
    pg_cluster.psql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}", dbname)
    server = start_server_process(reader_url)  # granted all it needs: it starts and writes
    try:
        client = await GrpcPersistenceProvider.connect(server.address)
        try:
            assert await client.create_new_workflow(_workflow("granted"))
            pg_cluster.psql(f"REVOKE INSERT ON workflows FROM {role}", dbname)  # taken away while it serves
            with pytest.raises(StorageUnavailable, match="grant the server's role its privileges"):
                await client.create_new_workflow(_workflow("revoked"))
        finally:
            await client.close()
    finally:
        assert server.terminate() == 0


async def test_stats_works_and_check_and_backup_name_the_postgres_tools(fresh_pg_url: str) -> None:
    provider = await PostgresPersistenceProvider.open(fresh_pg_url)
    try:
        await provider.schedule_command(ScheduledCommand.process_workflow("wf-1", 0))
        queue = SqliteQueueProvider(provider)
        for item in ("a", "b"):
            assert await queue.queue_work(item, QueueType.INDEX)
        # A lease that outlives the provider (taken without its bookkeeping, so closing keeps it).
        assert await SqliteLockProvider(provider, "stats-owner", timedelta(hours=1))._acquire("held") is not None
    finally:
        await provider.close()
    stats = _cli("stats", "--json", "--db", fresh_pg_url)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["tables"]["scheduled_commands"], figures["due_commands"]) == (1, 1)
    assert (figures["queued_items"], figures["held_leases"]) == (2, 1)
    check = _cli("check", "--db", fresh_pg_url)
    assert check.returncode == 2
    assert "pg_amcheck" in check.stderr
    backup = _cli("backup", "/tmp/never-written.db", "--db", fresh_pg_url)
    assert backup.returncode == 2
    assert "pg_dump" in backup.stderr


async def test_open_provider_picks_the_backend_by_scheme(fresh_pg_url: str) -> None:
    for url in (fresh_pg_url, fresh_pg_url.replace("postgresql://", "postgres://", 1)):
        provider = await open_provider(url)
        try:
            assert isinstance(provider, PostgresPersistenceProvider)
            assert await provider.next_definition_sequence("scheme") >= 1
        finally:
            await provider.close()


# -- several servers on one database -------------------------------------------------------------


@pytest.fixture
def three_servers(fresh_pg_url: str) -> Iterator[list[ServerProcess]]:
    assert _cli("migrate", "--db", fresh_pg_url).returncode == 0
    servers = [start_server_process(fresh_pg_url) for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


async def test_three_servers_hand_each_command_to_exactly_one_claimer(three_servers: list[ServerProcess]) -> None:
    clients = [await GrpcPersistenceProvider.connect(s.address) for s in three_servers]
    try:
        commands = [ScheduledCommand.process_workflow(f"wf-{i}", 0) for i in range(300)]
        await asyncio.gather(*(clients[i % 3].schedule_command(c) for i, c in enumerate(commands)))
        handled: list[str] = []

        async def claimer(client: GrpcPersistenceProvider) -> None:
            while True:
                claim = await client.claim_commands(datetime.now(UTC), max_commands=7, lease=timedelta(minutes=5))
                if not claim.commands:
                    return
                for command in claim.commands:
                    handled.append(command.data)
                    await client.acknowledge_command(command, claim.lease_id)

        await asyncio.gather(*(claimer(clients[i % 3]) for i in range(12)))
        counts = Counter(handled)
        assert set(counts) == {c.data for c in commands}
        assert [d for d, n in counts.items() if n != 1] == []
        assert (await clients[0].claim_commands(datetime.now(UTC))).commands == []
    finally:
        for client in clients:
            await client.close()


async def test_three_servers_give_each_subscription_token_to_exactly_one(three_servers: list[ServerProcess]) -> None:
    clients = [await GrpcPersistenceProvider.connect(s.address) for s in three_servers]
    try:
        ids = [
            await clients[0].create_event_subscription(
                EventSubscription.new(f"wf-{i}", 1, f"p-{i}", "evt", "k", datetime(2024, 1, 1, tzinfo=UTC))
            )
            for i in range(40)
        ]
        expiry = datetime.now(UTC) + timedelta(minutes=5)
        attempts = [(sid, f"token-{n}", clients[n % 3]) for sid in ids for n in range(9)]
        won = await asyncio.gather(
            *(client.set_subscription_token(sid, token, "worker", expiry) for sid, token, client in attempts)
        )
        winners = Counter(sid for (sid, _, _), ok in zip(attempts, won, strict=True) if ok)
        assert winners == dict.fromkeys(ids, 1)
        for sid in ids:  # the stored token is the winner's
            (winner,) = [t for (s, t, _), ok in zip(attempts, won, strict=True) if ok and s == sid]
            assert (await clients[2].get_subscription(sid)).external_token == winner
    finally:
        for client in clients:
            await client.close()


async def test_three_servers_never_repeat_a_sequence_number(three_servers: list[ServerProcess]) -> None:
    clients = [await GrpcPersistenceProvider.connect(s.address) for s in three_servers]
    try:
        numbers = await asyncio.gather(*(clients[i % 3].next_definition_sequence("race") for i in range(450)))
        assert sorted(numbers) == list(range(1, 451))
        # Unnamed workflows take their names from the same sequence, across servers.
        created = [_workflow("race") for _ in range(60)]
        await asyncio.gather(*(clients[i % 3].create_new_workflow(w) for i, w in enumerate(created)))
        assert sorted(int(w.name.rsplit("-", 1)[1]) for w in created) == list(range(451, 511))
    finally:
        for client in clients:
            await client.close()


async def test_three_servers_race_for_locks_one_holder_and_growing_fencing_tokens(
    three_servers: list[ServerProcess],
) -> None:
    providers = [
        await GrpcLockProvider.connect(three_servers[i % 3].address, f"owner-{i}", timedelta(seconds=30))
        for i in range(12)
    ]
    try:
        tokens: list[int] = []
        for round_ in range(20):
            leases = await asyncio.gather(*(p.acquire(f"contended-{round_ % 4}") for p in providers))
            won = [(p, lease) for p, lease in zip(providers, leases, strict=True) if lease is not None]
            assert len(won) == 1, f"round {round_}: {len(won)} holders"
            holder, lease = won[0]
            tokens.append(lease.fencing_token)
            await holder.release_lock(lease.resource)
        # Every acquisition got a larger token than the one before it, whichever server served it.
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens
    finally:
        for provider in providers:
            await provider.close()


async def test_three_servers_hand_each_queue_item_to_exactly_one_dequeuer(three_servers: list[ServerProcess]) -> None:
    queues = [await GrpcQueueProvider.connect(s.address) for s in three_servers]
    try:
        items = [f"item-{i}" for i in range(300)]
        got: list[str] = []

        async def consume(queue: GrpcQueueProvider) -> None:
            while True:
                item = await queue.dequeue_work(QueueType.INDEX, wait=timedelta(seconds=1))
                if item is None:
                    return
                got.append(item)

        consumers = [asyncio.create_task(consume(queues[i % 3])) for i in range(12)]
        await asyncio.gather(*(queues[i % 3].queue_work(item, QueueType.INDEX) for i, item in enumerate(items)))
        await asyncio.gather(*consumers)
        counts = Counter(got)
        assert set(counts) == set(items)
        assert [item for item, n in counts.items() if n != 1] == []
    finally:
        for queue in queues:
            await queue.close()


async def test_three_servers_let_exactly_one_of_concurrent_persists_with_one_revision_win(
    three_servers: list[ServerProcess],
) -> None:
    clients = [await GrpcPersistenceProvider.connect(s.address) for s in three_servers]
    try:
        for round_ in range(5):
            w = _workflow("revisions")
            await clients[0].create_new_workflow(w)
            writers = [copy.deepcopy(w) for _ in range(15)]
            for n, writer in enumerate(writers):
                writer.data = {"writer": n}
            results = await asyncio.gather(
                *(clients[n % 3].persist_workflow(writer) for n, writer in enumerate(writers)),
                return_exceptions=True,
            )
            winners = [n for n, result in enumerate(results) if result is None]
            assert len(winners) == 1, f"round {round_}: {results}"
            assert all(isinstance(r, RevisionConflict) for n, r in enumerate(results) if n != winners[0]), results
            stored = await clients[1].get_workflow_instance(w.id)
            assert stored.revision == 2 and stored.data == {"writer": winners[0]}
    finally:
        for client in clients:
            await client.close()


async def test_a_long_poll_on_one_server_wakes_promptly_for_an_item_queued_through_another(
    three_servers: list[ServerProcess],
) -> None:
    consumer = await GrpcQueueProvider.connect(three_servers[0].address)
    producer = await GrpcQueueProvider.connect(three_servers[1].address)
    try:
        latencies = []
        for i in range(10):
            waiting = asyncio.create_task(consumer.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=10)))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            started = time.perf_counter()
            await producer.queue_work(f"wf-{i}", QueueType.WORKFLOW)
            assert await waiting == f"wf-{i}"
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        # Woken by the notification, not by a look every FALLBACK_LOOK seconds.
        assert latencies[len(latencies) // 2] < 0.1, latencies
        assert latencies[-1] < FALLBACK_LOOK, latencies
    finally:
        await consumer.close()
        await producer.close()


async def test_lifecycle_events_published_on_one_server_reach_watchers_on_the_others(
    three_servers: list[ServerProcess],
) -> None:
    publishers = [await GrpcLifecyclePublisher.connect(s.address) for s in three_servers]
    try:
        watches = [p.watch() for p in publishers[1:]]
        for watch in watches:
            await watch.started()
        published = [
            LifecycleEvent(LifecycleEventType.STARTED, "wf-1", "def-a", 3),
            LifecycleEvent(LifecycleEventType.ERROR, "wf-1", "def-a", message="x" * 20_000),  # over NOTIFY's limit
            LifecycleEvent(LifecycleEventType.COMPLETED, "wf-1", "def-a"),
        ]
        for event in published:
            assert await publishers[0].publish(event) == 0  # no watcher on the publishing server

        async def take(watch: object, n: int) -> list[LifecycleEvent]:
            got = []
            async for event in watch:  # type: ignore[attr-defined]
                got.append(event)
                if len(got) == n:
                    break
            return got

        for watch in watches:
            assert await asyncio.wait_for(take(watch, 3), 10) == published
            watch.close()
    finally:
        for publisher in publishers:
            await publisher.close()


async def test_a_sleeping_workflow_stored_through_one_server_reaches_a_long_poll_on_another_when_due(
    three_servers: list[ServerProcess],
) -> None:
    async with (
        await GrpcPersistenceProvider.connect(three_servers[0].address) as store,
        await GrpcQueueProvider.connect(three_servers[1].address) as queue,
    ):
        due_in = 0.6
        w = _workflow("sleeper")
        w.next_execution = int(time.time() * 1000) + int(due_in * 1000)
        await store.create_new_workflow(w)
        started = time.monotonic()
        assert await queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=10)) == w.id
        waited = time.monotonic() - started
        # Queued by a due timer when its time came, not by the next sweep (every 2 s by default).
        assert due_in * 0.8 < waited < due_in + 0.5, waited
        assert await queue.dequeue_work(QueueType.WORKFLOW) is None


async def test_queued_items_and_held_leases_outlive_a_killed_server(three_servers: list[ServerProcess]) -> None:
    doomed, survivor = three_servers[0], three_servers[1]
    async with (
        await GrpcQueueProvider.connect(doomed.address) as queue,
        await GrpcLockProvider.connect(doomed.address, "holder", timedelta(seconds=30)) as holder,
    ):
        for item in ("a", "b", "c"):
            assert await queue.queue_work(item, QueueType.INDEX)
        held = await holder.acquire("kept")
        assert held is not None
        doomed.kill()  # SIGKILL right after the acknowledgements
    async with (
        await GrpcQueueProvider.connect(survivor.address) as queue,
        await GrpcLockProvider.connect(survivor.address, "other") as other,
    ):
        assert [await queue.dequeue_work(QueueType.INDEX) for _ in range(4)] == ["a", "b", "c", None]
        assert await other.acquire("kept") is None  # the dead server's client still holds it until its TTL
        later = await other.acquire("next")
        assert later is not None and later.fencing_token > held.fencing_token


async def _stranded(url: str, name: str) -> tuple[PostgresPersistenceProvider, str]:
    """A provider on ``url`` and the id of a due RUNNABLE workflow in no queue and under no lease
    (its host took it and died long ago): what the sweep and a lease's release queue again."""
    provider = await PostgresPersistenceProvider.open(url)
    workflow = WorkflowInstance.new(name, 1, {})
    workflow_id = await provider.create_new_workflow(workflow)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM work_queue WHERE item_id = $1", workflow_id)
    finally:
        await conn.close()
    return provider, workflow_id


async def _queued(url: str, item_id: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM work_queue WHERE item_id = $1", item_id))
    finally:
        await conn.close()


async def test_a_workflow_being_deleted_is_not_queued_again_by_the_sweep(fresh_pg_url: str) -> None:
    """The sweep reads a workflow a delete is removing (not yet committed): it leaves it alone
    rather than queue an id that is gone a moment later, where a host would be handed it."""
    provider, workflow_id = await _stranded(fresh_pg_url, "swept")
    cluster = provider.cluster
    assert isinstance(cluster, PostgresCluster)
    side = await asyncpg.connect(fresh_pg_url)
    try:
        async with side.transaction():
            assert await side.fetchval(DELETE_WORKFLOW, workflow_id) == 1
            assert await asyncio.wait_for(cluster.sweep(), 10) == 0
        assert await _queued(fresh_pg_url, workflow_id) == 0
        # The same stranded workflow, not being deleted, is queued again: the sweep does run.
        _, other = await _stranded(fresh_pg_url, "swept")
        assert await cluster.sweep() == 1 and await _queued(fresh_pg_url, other) == 1
    finally:
        await side.close()
        await provider.close()


async def test_a_release_waits_for_a_delete_of_its_workflow_and_then_queues_nothing(fresh_pg_url: str) -> None:
    """Releasing a lease queues its workflow when it is due; a delete of that workflow in flight is
    waited for, so the release does not queue the id the delete is removing."""
    provider, workflow_id = await _stranded(fresh_pg_url, "released")
    cluster = provider.cluster
    assert isinstance(cluster, PostgresCluster)
    resource = CLAIM_PREFIX + workflow_id
    assert await cluster.acquire_lock(resource, "host", 30_000_000) is not None
    side = await asyncpg.connect(fresh_pg_url)
    watch = await asyncpg.connect(fresh_pg_url)
    try:
        async with side.transaction():
            assert await side.fetchval(DELETE_WORKFLOW, workflow_id) == 1
            release = asyncio.create_task(cluster.release_lock(resource, "host"))
            for _ in range(500):
                if await watch.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                    break
                assert not release.done(), "the release did not wait for the delete in flight"
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the release never waited for the delete")
        assert await asyncio.wait_for(release, 10) is True
        assert await _queued(fresh_pg_url, workflow_id) == 0
    finally:
        await side.close()
        await watch.close()
        await provider.close()


# -- PostgreSQL going away and coming back -------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of the test's own, to stop and start (the session's stays up for the others)."""
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_write_postgres_rolls_back_to_end_a_deadlock_is_unavailable_not_internal(pg_url: str) -> None:
    """PostgreSQL ends a deadlock by rolling one statement back (SQLSTATE 40P01): for the caller that
    is a write to retry (UNAVAILABLE, STORAGE_UNAVAILABLE, nothing written), not a server bug."""
    running = await RunningServer.start(ServerConfig(db=pg_url, listen="127.0.0.1:0", grace=1.0))
    side = await asyncpg.connect(pg_url)
    watch = await asyncpg.connect(pg_url)
    try:
        async with GrpcPersistenceProvider.connect(running.address) as store:
            workflow = _workflow("deadlock")
            await store.create_new_workflow(workflow)
            async with side.transaction():
                # The persist takes the workflow's row, then waits for its pointer held here (it
                # changes it: a persist writes only the pointers that changed) ...
                await side.execute("SELECT 1 FROM execution_pointers WHERE workflow_id = $1 FOR UPDATE", workflow.id)
                changed = copy.deepcopy(workflow)
                changed.data = {"n": 2}
                changed.execution_pointers[0].active = False
                persist = asyncio.create_task(store.persist_workflow(changed))
                for _ in range(500):
                    if await watch.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the persist never waited for the pointers' lock")
                # ... and this asks for the workflow's row: a cycle, which PostgreSQL breaks by
                # rolling back the statement that waited first (the persist).
                await side.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", workflow.id)
                with pytest.raises(StorageUnavailable, match="40P01"):
                    await asyncio.wait_for(persist, 30)
            stored = await store.get_workflow_instance(workflow.id)
            assert stored.data == {"n": 1} and stored.revision == 1
            await store.persist_workflow(changed)  # the retry goes through
            assert (await store.get_workflow_instance(workflow.id)).data == {"n": 2}
    finally:
        await side.close()
        await watch.close()
        await running.stop()


async def test_postgres_stopped_under_load_is_unavailable_then_recovers(own_cluster: PgCluster) -> None:
    url = own_cluster.create_database("faults")
    running = await RunningServer.start(ServerConfig(db=url, listen="127.0.0.1:0", grace=1.0))
    deadline = 4.0
    try:
        async with GrpcPersistenceProvider.connect(running.address, timeout=deadline) as client:
            acknowledged: list[str] = []
            outcomes: Counter[str] = Counter()
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    w = _workflow("load")
                    started = time.monotonic()
                    try:
                        await client.create_new_workflow(w)
                        acknowledged.append(w.id)
                        outcomes["ok"] += 1
                    except StorageUnavailable:
                        outcomes["unavailable"] += 1
                        await asyncio.sleep(0.05)
                    assert time.monotonic() - started < deadline + 0.5

            workers = [asyncio.create_task(load()) for _ in range(16)]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own_cluster.pause)
            await asyncio.sleep(2.0)
            down = outcomes["unavailable"]
            assert down > 0
            # Straight over the wire: UNAVAILABLE with reason STORAGE_UNAVAILABLE.
            async with grpc.aio.insecure_channel(running.address) as channel:
                from wfe.persistence.v1 import workflows_pb2, workflows_pb2_grpc

                stub = workflows_pb2_grpc.WorkflowServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.GetWorkflow(workflows_pb2.GetWorkflowRequest(id="x"), timeout=deadline)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                details = raised.value.trailing_metadata() or ()
                assert any(
                    b"STORAGE_UNAVAILABLE" in v for k, v in details if k.endswith("-bin") and isinstance(v, bytes)
                )
            await asyncio.to_thread(own_cluster.resume)
            ok_before = outcomes["ok"]
            for _ in range(100):
                await asyncio.sleep(0.1)
                if outcomes["ok"] > ok_before + 50:
                    break
            stop.set()
            await asyncio.gather(*workers)
            assert outcomes["ok"] > ok_before + 50, outcomes  # recovered by itself
            # Nothing acknowledged was lost.
            found = await client.get_workflow_instances(acknowledged)
            assert len(found) == len(acknowledged)
    finally:
        await running.stop()


async def test_an_outage_of_postgres_is_logged_in_a_few_lines_and_its_end_once(
    own_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The background jobs retry every fraction of a second while PostgreSQL is away; the log gets
    each job's failure once per distinct message (and a reminder a minute), not a line per try,
    and one line per job when it works again."""
    url = own_cluster.create_database("outage_log")
    running = await RunningServer.start(ServerConfig(db=url, listen="127.0.0.1:0", grace=1.0, requeue_interval=0.1))
    try:
        cluster = running.provider.cluster
        assert isinstance(cluster, PostgresCluster)
        caplog.set_level(logging.INFO, logger="wfe_sqlite")
        await asyncio.to_thread(own_cluster.pause)
        sweeps_before = cluster.sweeps
        await asyncio.sleep(3.0)  # some 30 sweeps and 3 LISTEN connects fail meanwhile
        assert cluster.sweeps == sweeps_before  # the sweeps did fail
        await asyncio.to_thread(own_cluster.resume)
        for _ in range(150):
            if cluster.sweeps > sweeps_before and cluster.listening:
                break
            await asyncio.sleep(0.1)
        assert cluster.sweeps > sweeps_before and cluster.listening
        await asyncio.sleep(0.3)
    finally:
        await running.stop()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("wfe_sqlite")]
    failed = [m for m in lines if m.startswith("stranded-work sweep failed")]
    assert 1 <= len(failed) <= 4, failed  # distinct messages only (PostgreSQL shutting down, then refusing)
    assert not [m for m in lines if m.startswith("stranded-work sweep still failing")]  # within the minute
    again = [m for m in lines if m.startswith("stranded-work sweep works again")]
    assert len(again) == 1 and re.search(r"after (\d+) failed tries", again[0]), lines
    assert int(re.search(r"after (\d+) failed tries", again[0]).group(1)) >= 10  # type: ignore[union-attr]
    assert len([m for m in lines if m.startswith("opening the LISTEN connection failed")]) <= 2, lines
    assert len([m for m in lines if m.startswith("opening the LISTEN connection works again")]) == 1, lines


async def test_the_cluster_services_come_back_with_postgres(own_cluster: PgCluster) -> None:
    url = own_cluster.create_database("cluster_faults")
    a = await RunningServer.start(ServerConfig(db=url, listen="127.0.0.1:0", grace=1.0, requeue_interval=0.5))
    b = await RunningServer.start(ServerConfig(db=url, listen="127.0.0.1:0", grace=1.0, requeue_interval=0.5))
    try:
        async with (
            await GrpcQueueProvider.connect(a.address) as consumer,
            await GrpcQueueProvider.connect(b.address) as producer,
            await GrpcLockProvider.connect(b.address, "holder") as locks,
        ):
            await asyncio.to_thread(own_cluster.pause)
            with pytest.raises(StorageUnavailable):
                await producer.queue_work("while-down", QueueType.INDEX)
            # A long poll that began while PostgreSQL was down is served once it is back.
            waiting = asyncio.create_task(consumer.dequeue_work(QueueType.INDEX, wait=timedelta(seconds=30)))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(own_cluster.resume)
            cluster_a = a.provider.cluster
            assert isinstance(cluster_a, PostgresCluster)
            assert await cluster_a.wait_ready(15), "server A's LISTEN connection did not come back"
            await asyncio.sleep(0.2)
            assert not waiting.done()
            for _ in range(50):  # B's pool may still hand out a connection that died with PostgreSQL
                try:
                    await producer.queue_work("after", QueueType.INDEX)
                    break
                except StorageUnavailable:
                    await asyncio.sleep(0.1)
            started = time.perf_counter()
            assert await asyncio.wait_for(waiting, 10) == "after"
            assert time.perf_counter() - started < FALLBACK_LOOK
            assert await locks.acquire_lock("after-restart")
    finally:
        await a.stop()
        await b.stop()


def _awaiting(task: asyncio.Task[None]) -> list[str]:
    """The names of the coroutines a task is suspended in, outermost first."""
    names = []
    coroutine: object = task.get_coro()
    while coroutine is not None and hasattr(coroutine, "cr_code"):
        names.append(coroutine.cr_code.co_name)  # type: ignore[attr-defined]
        coroutine = coroutine.cr_await  # type: ignore[attr-defined]
    return names


async def test_closing_ends_promptly_whenever_the_listener_keepalive_answers(pg_url: str) -> None:
    """The server's stop must not hang on the LISTEN connection's keepalive. A close that lands
    while its reply arrives (the event loop busy with something large meanwhile) hung the session
    with a cancel swallowed by asyncio.wait_for on Python 3.11; each step of that window is tried."""
    for turns in range(8):
        provider = await open_provider(pg_url)
        cluster = provider.cluster
        assert isinstance(cluster, PostgresCluster)
        cluster.start(0.5)
        assert await cluster.wait_ready(10)
        listener = cluster._listen_task
        assert listener is not None
        deadline = time.monotonic() + 5
        while "_keepalive" not in _awaiting(listener):
            assert time.monotonic() < deadline, "the keepalive was never seen in flight"
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the query goes out ...
        await asyncio.sleep(0)
        time.sleep(0.02)  # ... and its answer arrives while the loop is busy
        for _ in range(turns):
            await asyncio.sleep(0)
        closing = asyncio.ensure_future(provider.close())
        done, _ = await asyncio.wait([closing], timeout=3)
        assert done, f"close hung with the keepalive answered {turns} loop turns before it"
        assert listener.done()


async def test_a_statement_past_the_command_timeout_is_unavailable_with_a_message(pg_url: str) -> None:
    """asyncpg's timeout carries no text: the caller still gets a message that says what happened."""
    provider = await PostgresPersistenceProvider.open(pg_url, command_timeout=0.5)
    side = await asyncpg.connect(pg_url)
    try:
        async with side.transaction():
            await side.execute("LOCK TABLE workflows IN ACCESS EXCLUSIVE MODE")  # the read waits behind it
            with pytest.raises(StorageUnavailable) as failed:
                await provider.get_workflow_instance("held-up")
    finally:
        await side.close()
        await provider.close()
    assert failed.value.message == (
        "PostgreSQL did not answer in time (connect_timeout, command_timeout); retry later"
    ), failed.value.message


async def test_a_nul_character_postgresql_cannot_store_is_refused_naming_its_field(pg_url: str) -> None:
    """SQLite keeps a NUL in text, PostgreSQL cannot: the refusal says which field carries it."""
    provider = await PostgresPersistenceProvider.open(pg_url)

    def described(text: str) -> WorkflowInstance:
        w = _workflow("nul")
        w.description = text
        return w

    def stepped(name: str) -> WorkflowInstance:
        w = _workflow("nul")
        w.execution_pointers[0].step_name = name
        return w

    now = datetime.now(UTC)
    attempts = [
        (lambda: provider.create_new_workflow(described("a\x00b")), "workflow.description"),
        (lambda: provider.create_new_workflow(stepped("\x00")), "workflow.execution_pointers[0].step_name"),
        (lambda: provider.create_event(Event.new("paid\x00", "k", {})), "event.event_name"),
        (
            lambda: provider.create_event_subscription(EventSubscription.new("wf", 0, "p", "paid", "k\x00", now)),
            "subscription.event_key",
        ),
        (lambda: provider.schedule_command(ScheduledCommand.process_workflow("wf\x00", 0)), "command.data"),
        (lambda: provider.persist_errors([ExecutionError.new("wf", "p", "boom\x00")]), "errors[0].message"),
        (lambda: provider.next_definition_sequence("order\x00"), "definition_id"),
    ]
    try:
        stored = _workflow("nul")
        await provider.create_new_workflow(stored)
        held = EventSubscription.new(stored.id, 0, "p", "paid", "k", now)
        await provider.create_event_subscription(held)
        later = now + timedelta(minutes=5)
        attempts.append((lambda: provider.set_subscription_token(held.id, "t\x00", "w", later), "token"))
        attempts.append((lambda: provider.set_subscription_token(held.id, "t", "w\x00", later), "worker_id"))
        clean = copy.deepcopy(stored)
        subscriptions = [EventSubscription.new(stored.id, 0, "p", "paid", f"k{i}", now) for i in range(3)]
        subscriptions[1].external_worker_id = "w\x00"
        attempts.append(
            (
                lambda: provider.persist_workflow_with_subscriptions(clean, subscriptions),
                "subscriptions[1].external_worker_id",
            )
        )
        stored.description = "x\x00"
        attempts.append((lambda: provider.persist_workflow(stored), "workflow.description"))
        # Above 1,000 rows the checks run on a worker thread (_OFF_LOOP_ROWS): the same refusals.
        many = _workflow("nul")
        many.execution_pointers = [ExecutionPointer.new(i) for i in range(1500)]
        many.execution_pointers[1234].step_name = "s\x00"
        attempts.append((lambda: provider.create_new_workflow(many), "workflow.execution_pointers[1234].step_name"))
        crowd = [EventSubscription.new(stored.id, 0, "p", "paid", f"k{i}", now) for i in range(1500)]
        crowd[1400].event_key = "k\x00"
        attempts.append(
            (lambda: provider.persist_workflow_with_subscriptions(clean, crowd), "subscriptions[1400].event_key")
        )
        for attempt, field in attempts:
            with pytest.raises(InvalidArgument) as refused:
                await attempt()
            assert refused.value.metadata.get("field") == field, (field, refused.value.message)
            assert "NUL character" in refused.value.message
    finally:
        await provider.close()


async def test_a_nul_character_in_a_lock_or_queue_call_is_refused_and_does_not_hold_up_other_dequeues(
    fresh_pg_url: str,
) -> None:
    """Owners, resources and queued ids are stored, so one holding a NUL is refused naming its
    field; a lookup by one (a release, a renewal) finds no lease. A waiting dequeue whose leases
    name such an owner is refused at once: before, it joined the queue's line, every look for the
    line failed on it, and the other hosts waiting there got nothing until it gave up."""
    running = await RunningServer.start(ServerConfig(db=fresh_pg_url, listen="127.0.0.1:0", grace=1.0))
    try:
        async with (
            await GrpcQueueProvider.connect(running.address) as queue,
            await GrpcLockProvider.connect(running.address, "host") as host,
            await GrpcLockProvider.connect(running.address, "bad\x00owner") as bad,
        ):
            waiting = asyncio.create_task(queue.dequeue_leased(QueueType.INDEX, host, wait=timedelta(seconds=20)))
            await asyncio.sleep(0.2)
            poisoned = asyncio.create_task(queue.dequeue_leased(QueueType.INDEX, bad, wait=timedelta(seconds=10)))
            with pytest.raises(InvalidArgument) as refused:
                await asyncio.wait_for(poisoned, 5)
            assert refused.value.metadata.get("field") == "leases.owner", refused.value.message
            assert await queue.queue_work("item", QueueType.INDEX)
            got = await asyncio.wait_for(waiting, 5)
            assert got is not None and got.id == "item"
            for attempt, field in (
                (lambda: queue.queue_work("a\x00b", QueueType.INDEX), "id"),
                (lambda: host.acquire_lock("r\x00"), "resource"),
                (lambda: bad.acquire_lock("r"), "owner"),
            ):
                with pytest.raises(InvalidArgument) as refused:
                    await attempt()
                assert refused.value.metadata.get("field") == field, (field, refused.value.message)
                assert "NUL character" in refused.value.message
            await host.release_lock("r\x00")  # held by nobody: nothing to release, no error
            await bad.release_lock("r")
    finally:
        await running.stop()


async def test_a_held_up_statement_is_answered_before_the_callers_deadline(pg_url: str) -> None:
    """The server cancels a statement before the adapters give up on the call, so a caller whose
    statement is held up (PostgreSQL frozen, a lock held) gets UNAVAILABLE, not DEADLINE_EXCEEDED."""
    provider = await PostgresPersistenceProvider.open(pg_url)
    try:
        assert provider.store.config.command_timeout < DEFAULT_DEADLINE_SECONDS
    finally:
        await provider.close()
