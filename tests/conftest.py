"""Shared fixtures: a fresh store per test behind each provider (SQLite and PostgreSQL), and real
server processes.

PostgreSQL: one throwaway cluster per session (``tests/pgcluster.py``); missing binaries fail the
tests that need it (never a skip). ``pg_url`` gives a test an empty database: the session's shared
one with every table emptied (fast), ``fresh_pg_url`` a newly created database of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from pgcluster import PgCluster, PostgresMissing
from wfe_client import (
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    LockProvider,
    PersistenceProvider,
    QueueProvider,
    WfeError,
)
from wfe_client.models import ExecutionPointer, WorkflowInstance
from wfe_sqlite import SqliteLockProvider, SqliteQueueProvider, StoreProvider, open_provider
from wfe_sqlite.server import RunningServer, ServerConfig

ROOT = Path(__file__).resolve().parent.parent
WFE_SQLITE = Path(sys.executable).parent / "wfe-sqlite"

T = TypeVar("T")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file behind the test's store."""
    return tmp_path / "wfe.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite://{db_path}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's throwaway PostgreSQL (started on first use)."""
    try:
        cluster = PgCluster.start()
    except PostgresMissing as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


_databases = itertools.count(1)


@pytest.fixture
def fresh_pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A newly created, empty PostgreSQL database of the test's own (no schema yet)."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def _shared_pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database("shared")


@pytest.fixture
async def pg_url(_shared_pg_url: str) -> str:
    """The session's shared PostgreSQL database with every table of the store emptied."""
    conn = await asyncpg.connect(_shared_pg_url)
    try:
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_version'"
            )
        ]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    finally:
        await conn.close()
    return _shared_pg_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The test's empty store: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{db_path}"
    url: str = request.getfixturevalue("pg_url")
    return url


Peek = Callable[[str], Awaitable[list[tuple[object, ...]]]]


def small_workflow(name: str = "") -> WorkflowInstance:
    """A workflow of one pointer and tiny data, never runnable: for tests of many concurrent writes."""
    w = WorkflowInstance.new("group", 1, {"n": 1})
    w.name = name
    w.next_execution = None
    w.execution_pointers = [ExecutionPointer.new(0)]
    return w


async def outcomes(calls: list[Callable[[], Awaitable[object]]]) -> list[object]:
    """The result or the error of each call, all made at once."""
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))


@pytest.fixture
def peek(store_url: str, db_path: Path) -> Peek:
    """Run a query on the store's database behind the interface's back; the rows as tuples."""

    async def run(sql: str) -> list[tuple[object, ...]]:
        if store_url.startswith("postgresql://"):
            conn = await asyncpg.connect(store_url)
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()
        import sqlite3

        reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in reader.execute(sql).fetchall()]
        finally:
            reader.close()

    return run


async def text_index_in_step(peek: Peek, store_url: str) -> None:
    """The full-text index matches the workflows table exactly: on SQLite FTS5's own integrity
    check; on PostgreSQL every row's tsvector equals the one computed from its columns now."""
    if store_url.startswith("postgresql://"):
        stale = await peek(
            "SELECT id FROM workflows WHERE search IS DISTINCT FROM "
            "wfe_workflow_search(name, reference, description, data)"
        )
        assert stale == []
        return
    import sqlite3

    conn = sqlite3.connect(store_url.removeprefix("sqlite://"), timeout=10)
    try:
        conn.execute("INSERT INTO workflows_fts (workflows_fts, rank) VALUES ('integrity-check', 1)")
        indexed = conn.execute("SELECT count(*) FROM workflows_fts").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM workflows").fetchone()[0]
        assert indexed == stored
    finally:
        conn.close()


@pytest.fixture
async def running_server(store_url: str) -> AsyncIterator[RunningServer]:
    """An in-process server on 127.0.0.1, port 0, over the test's store (SQLite file or PostgreSQL)."""
    running = await RunningServer.start(ServerConfig(db=store_url, listen="127.0.0.1:0", grace=1.0))
    try:
        yield running
    finally:
        await running.stop(quiet=0)  # the clients are closed: none is calling


@pytest.fixture(params=["embedded", "grpc"])
async def provider(request: pytest.FixtureRequest, store_url: str) -> AsyncIterator[PersistenceProvider]:
    """A fresh, empty store (SQLite or PostgreSQL): the embedded provider, or the real server through
    the gRPC adapter."""
    if request.param == "embedded":
        embedded = await open_provider(store_url)
        try:
            yield embedded
        finally:
            await embedded.close()
        return
    running = await RunningServer.start(ServerConfig(db=store_url, listen="127.0.0.1:0", grace=1.0))
    try:
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            yield remote
    finally:
        await running.stop(quiet=0)  # the clients are closed: none is calling


REQUEUE_INTERVAL = 0.5
"""The stranded-work interval of the stores under test (seconds)."""


@dataclass
class ClusterUnderTest:
    """One store and as many lock / queue providers on it as a test asks for (closed at the end)."""

    kind: str
    store: PersistenceProvider
    address: str | None = None
    server: RunningServer | None = None
    opened: list[Any] = field(default_factory=list)

    async def locks(self, owner: str | None = None, ttl: timedelta = timedelta(seconds=30)) -> LockProvider:
        if self.kind == "embedded":
            assert isinstance(self.store, StoreProvider)
            provider: LockProvider = SqliteLockProvider(self.store, owner, ttl)
        else:
            assert self.address is not None
            provider = await GrpcLockProvider.connect(self.address, owner, ttl)
        self.opened.append(provider)
        return provider

    async def queue(self) -> QueueProvider:
        if self.kind == "embedded":
            assert isinstance(self.store, StoreProvider)
            provider: QueueProvider = SqliteQueueProvider(self.store, requeue_interval=REQUEUE_INTERVAL)
        else:
            assert self.address is not None
            provider = await GrpcQueueProvider.connect(self.address)
        self.opened.append(provider)
        return provider

    async def close(self) -> None:
        for provider in reversed(self.opened):
            await provider.close()


@pytest.fixture(params=["embedded", "grpc"])
async def cluster(request: pytest.FixtureRequest, store_url: str) -> AsyncIterator[ClusterUnderTest]:
    """A fresh store (SQLite or PostgreSQL) with its cluster services: in-process, or a real server
    through the gRPC adapters."""
    if request.param == "embedded":
        store = await open_provider(store_url)
        under_test = ClusterUnderTest("embedded", store)
        try:
            yield under_test
        finally:
            await under_test.close()
            await store.close()
        return
    running = await RunningServer.start(
        ServerConfig(db=store_url, listen="127.0.0.1:0", grace=1.0, requeue_interval=REQUEUE_INTERVAL)
    )
    try:
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            under_test = ClusterUnderTest("grpc", remote, running.address, running)
            try:
                yield under_test
            finally:
                await under_test.close()
    finally:
        await running.stop(quiet=0)  # the clients are closed: none is calling


@dataclass
class ServerProcess:
    """A ``wfe-sqlite serve`` child process."""

    process: subprocess.Popen[str]
    address: str

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_server_process(db_url: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``wfe-sqlite serve`` on port 0 and wait for its ``listening on`` line."""
    process = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", db_url, "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.startswith("{"):  # --log-format json: the same line as a JSON object
        line = json.loads(line)["message"]
    if not line.startswith("listening on "):
        process.kill()
        _, err = process.communicate(timeout=30)
        raise RuntimeError(f"server did not start: {line!r} {err}")
    return ServerProcess(process, line.split("listening on ", 1)[1].strip())


async def again_while_unavailable(call: Callable[[], Awaitable[T]], *, seconds: float = 10, detail: str = "") -> T:
    """``call()``, made again every 0.1 s while it fails UNAVAILABLE (its server has just died; the
    message must contain ``detail``), for up to ``seconds``; any other error is raised at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except WfeError as error:
            if error.code != "UNAVAILABLE" or detail not in str(error) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


@pytest.fixture
def server_process(db_url: str) -> Iterator[ServerProcess]:
    """A real ``wfe-sqlite serve`` process over the test's database file."""
    started = start_server_process(db_url)
    try:
        yield started
    finally:
        started.kill()
