"""The asyncio gRPC server: ``build_server`` for tests and embedding, ``serve`` for the command line."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._provider import SqlitePersistenceProvider
from ._servicer import SERVICE_NAMES, add_servicers

__all__ = ["ServerConfig", "RunningServer", "build_server", "serve", "MAX_MESSAGE_BYTES"]

LOG = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message either way: a 16 MiB payload plus its workflow and JSON escaping fits."""

DEFAULT_DB = "sqlite://wfe.db"
DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(frozen=True)
class ServerConfig:
    """What the server serves and where."""

    db: str = DEFAULT_DB
    """Database string: ``:memory:``, ``sqlite:///abs/path.db`` or ``sqlite://relative/path.db``."""
    listen: str = DEFAULT_LISTEN
    """HOST:PORT to listen on; port 0 picks a free port."""
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    readers: int = 4
    """Read-only SQLite connections (file databases)."""
    synchronous: str = "FULL"
    """``PRAGMA synchronous`` of the writer: FULL (power-loss safe) or NORMAL (process-crash safe)."""
    reflection: bool = True
    """Serve gRPC server reflection."""


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


async def build_server(
    config: ServerConfig, provider: SqlitePersistenceProvider
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A gRPC server (not started) serving ``provider``; its bound port and health servicer."""
    server = grpc.aio.server(options=server_options())
    add_servicers(server, provider)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {config.listen}: {error}") from error
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return server, port, health_servicer


class RunningServer:
    """A started server with its store; ``stop`` shuts both down gracefully."""

    def __init__(
        self,
        config: ServerConfig,
        provider: SqlitePersistenceProvider,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
    ) -> None:
        self.config = config
        self.provider = provider
        self.server = server
        self.port = port
        self.health = health_servicer
        self._stopped = False

    @property
    def host(self) -> str:
        return self.config.listen.rsplit(":", 1)[0]

    @property
    def address(self) -> str:
        """HOST:PORT with the real port."""
        return f"{self.host}:{self.port}"

    @classmethod
    async def start(cls, config: ServerConfig) -> RunningServer:
        """Open the store, bind, start serving and report SERVING on health."""
        provider = await SqlitePersistenceProvider.open(
            config.db, readers=config.readers, synchronous=config.synchronous
        )
        try:
            server, port, health_servicer = await build_server(config, provider)
            await server.start()
        except BaseException:
            await provider.close()
            raise
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return cls(config, provider, server, port, health_servicer)

    async def stop(self, grace: Optional[float] = None) -> None:
        """Health to NOT_SERVING, let in-flight calls finish, then close the database."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace if grace is None else grace)
        await self.provider.close()


async def serve(config: ServerConfig, ready: Optional[asyncio.Event] = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully. Prints ``listening on HOST:PORT``."""
    running = await RunningServer.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {running.address}", flush=True)
    LOG.info("serving %s on %s", config.db, running.address)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        LOG.info("stopping: finishing in-flight calls (grace %.1fs)", config.grace)
    finally:
        await running.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    LOG.info("stopped; database closed")
