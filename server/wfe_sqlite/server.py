"""The asyncio gRPC server: ``build_server`` for tests and embedding, ``serve`` for the command line."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._cluster_servicer import CLUSTER_SERVICE_NAMES, add_cluster_servicers
from ._config import DEFAULT_DB, DEFAULT_LISTEN, ServerConfig, check, load_tokens
from ._metrics import CallObserver, ServerMetrics
from ._provider import SqlitePersistenceProvider
from ._security import TokenAuthInterceptor, server_credentials
from ._servicer import SERVICE_NAMES, add_servicers
from ._status import RejectUndecodable

__all__ = ["ServerConfig", "RunningServer", "build_server", "serve", "MAX_MESSAGE_BYTES", "DEFAULT_DB", "DEFAULT_LISTEN"]

LOG = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message either way: a 16 MiB payload plus its workflow and JSON escaping fits."""

SWITCH_INTERVAL = 0.0002
"""GIL switch interval of the server process (seconds): see ``DatabaseConfig.switch_interval``."""

PENDING_CALLS = 100_000
"""Calls that may wait for the server to pick them up before gRPC core cancels new ones."""


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        # gRPC core cancels calls that wait to be picked up by the asyncio server once more than
        # 1000 wait (randomly) or 3000 (all): a burst of concurrent calls from a few clients got
        # CANCELLED with nothing logged. Let them queue instead; the event loop drains them.
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
    ]


async def build_server(
    config: ServerConfig, provider: SqlitePersistenceProvider, metrics: Optional[ServerMetrics] = None
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A gRPC server (not started) serving ``provider``; its bound port and health servicer.

    Calls pass the interceptors in this order: observation (``metrics``, access log), so refused
    calls are counted and logged too, then token authentication when tokens are configured.
    Innermost, ``RejectUndecodable`` answers undecodable request bytes with INVALID_ARGUMENT.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if metrics is not None or config.access_log:
        interceptors.append(CallObserver(metrics, config.access_log))
    tokens = load_tokens(config)
    if tokens:
        interceptors.append(TokenAuthInterceptor(tokens))
    interceptors.append(RejectUndecodable())  # innermost: wraps only the servicers' own handlers
    server = grpc.aio.server(options=server_options(), interceptors=interceptors)
    add_servicers(server, provider)
    add_cluster_servicers(server, provider)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                *CLUSTER_SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    try:
        if config.tls:
            port = server.add_secure_port(config.listen, server_credentials(config))
        else:
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
        metrics: Optional[ServerMetrics] = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.server = server
        self.port = port
        self.health = health_servicer
        self.metrics = metrics
        self.metrics_address: Optional[str] = None
        """HOST:PORT of the ``/metrics`` endpoint (the real port), when metrics are on."""
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
        """Check the config, open the store, bind, start serving and report SERVING on health.

        An invalid config is a ``ConfigError`` (a ``ValueError``) naming the setting.
        """
        check(config)
        provider = await SqlitePersistenceProvider.open(
            config.db, readers=config.readers, synchronous=config.synchronous, switch_interval=SWITCH_INTERVAL
        )
        metrics: Optional[ServerMetrics] = None
        try:
            if config.metrics_listen is not None:
                metrics = ServerMetrics(provider, asyncio.get_running_loop())
            server, port, health_servicer = await build_server(config, provider, metrics)
            await server.start()
            running = cls(config, provider, server, port, health_servicer, metrics)
            if metrics is not None and config.metrics_listen is not None:
                try:
                    running.metrics_address = metrics.serve_http(config.metrics_listen)
                except BaseException:
                    await server.stop(0)
                    raise
        except BaseException:
            await provider.close()
            raise
        provider.cluster.start(config.requeue_interval)
        for name in ("", *SERVICE_NAMES, *CLUSTER_SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return running

    async def stop(self, grace: Optional[float] = None) -> None:
        """Health to NOT_SERVING, let in-flight calls finish, then close the database."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.provider.cluster.stop_waiting()  # long polls and lifecycle watches end now, not after the grace
        await self.server.stop(self.config.grace if grace is None else grace)
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        await self.provider.close()


async def serve(config: ServerConfig, ready: Optional[asyncio.Event] = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully. Prints ``listening on HOST:PORT``."""
    running = await RunningServer.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {running.address}", flush=True)
    if running.metrics_address is not None:
        print(f"metrics on http://{running.metrics_address}/metrics", flush=True)
    LOG.info(
        "serving %s on %s (%s%s)",
        config.db,
        running.address,
        "mutual TLS" if config.tls_client_ca else "TLS" if config.tls else "plaintext",
        ", bearer tokens" if load_tokens(config) else "",
    )
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
