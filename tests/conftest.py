"""Shared fixtures: a fresh store per test behind each provider, and real server processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from wfe_client import (
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    LockProvider,
    PersistenceProvider,
    QueueProvider,
)
from wfe_sqlite import SqliteLockProvider, SqlitePersistenceProvider, SqliteQueueProvider
from wfe_sqlite.server import RunningServer, ServerConfig

ROOT = Path(__file__).resolve().parent.parent
WFE_SQLITE = Path(sys.executable).parent / "wfe-sqlite"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file behind the test's store."""
    return tmp_path / "wfe.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite://{db_path}"


@pytest.fixture
async def running_server(db_url: str) -> AsyncIterator[RunningServer]:
    """An in-process server on 127.0.0.1, port 0, over the test's database file."""
    running = await RunningServer.start(ServerConfig(db=db_url, listen="127.0.0.1:0", grace=1.0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(params=["embedded", "grpc"])
async def provider(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[PersistenceProvider]:
    """A fresh, empty store: the embedded provider, or the real server through the gRPC adapter."""
    if request.param == "embedded":
        embedded = await SqlitePersistenceProvider.open(db_url)
        try:
            yield embedded
        finally:
            await embedded.close()
        return
    running = await RunningServer.start(ServerConfig(db=db_url, listen="127.0.0.1:0", grace=1.0))
    try:
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            yield remote
    finally:
        await running.stop()


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
            assert isinstance(self.store, SqlitePersistenceProvider)
            provider: LockProvider = SqliteLockProvider(self.store, owner, ttl)
        else:
            assert self.address is not None
            provider = await GrpcLockProvider.connect(self.address, owner, ttl)
        self.opened.append(provider)
        return provider

    async def queue(self) -> QueueProvider:
        if self.kind == "embedded":
            assert isinstance(self.store, SqlitePersistenceProvider)
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
async def cluster(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[ClusterUnderTest]:
    """A fresh store with its cluster services: in-process, or a real server through the gRPC adapters."""
    if request.param == "embedded":
        store = await SqlitePersistenceProvider.open(db_url)
        under_test = ClusterUnderTest("embedded", store)
        try:
            yield under_test
        finally:
            await under_test.close()
            await store.close()
        return
    running = await RunningServer.start(
        ServerConfig(db=db_url, listen="127.0.0.1:0", grace=1.0, requeue_interval=REQUEUE_INTERVAL)
    )
    try:
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            under_test = ClusterUnderTest("grpc", remote, running.address, running)
            try:
                yield under_test
            finally:
                await under_test.close()
    finally:
        await running.stop()


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


@pytest.fixture
def server_process(db_url: str) -> Iterator[ServerProcess]:
    """A real ``wfe-sqlite serve`` process over the test's database file."""
    started = start_server_process(db_url)
    try:
        yield started
    finally:
        started.kill()
