"""The asyncio gRPC server: ``build_server`` for tests and embedding, ``serve`` for the command line."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from wfe_client.limits import MAX_MESSAGE_BYTES

from ._cluster_servicer import CLUSTER_SERVICE_NAMES, add_cluster_servicers
from ._config import (
    DEFAULT_DB,
    DEFAULT_LISTEN,
    ConfigError,
    ServerConfig,
    check,
    load_tokens,
    start_up_warnings,
    tokens_source,
)
from ._connection import MEMORY, parse_database_url
from ._draining import DRAIN_LIMIT, DRAIN_QUIET, Drain
from ._logging import status_line
from ._metrics import METRICS_PATH, CallObserver, ServerMetrics
from ._postgres_store import is_postgres_url, redact_url
from ._provider import PostgresPersistenceProvider, SqlitePersistenceProvider, StoreProvider
from ._retention import RetentionPurger
from ._security import TokenAuthInterceptor, server_credentials
from ._servicer import SERVICE_NAMES, add_servicers
from ._status import Context, RejectUndecodable
from .console import Console

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LISTEN",
    "MAX_MESSAGE_BYTES",
    "RunningServer",
    "ServerConfig",
    "build_server",
    "serve",
]

LOG = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0002
"""GIL switch interval of the server process (seconds): see ``DatabaseConfig.switch_interval``."""

DATABASE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database file."""

READY_WAIT = 5.0
"""Seconds a start waits for the cluster services to hear other servers (PostgreSQL's LISTEN)."""

PENDING_CALLS = 100_000
"""Calls that may wait for the server to pick them up before gRPC core cancels new ones."""


def server_options(config: ServerConfig | None = None) -> list[tuple[str, int]]:
    config = config or ServerConfig()
    return [
        # Bounds on what peers can open: connections beyond the limit are closed as soon as they are
        # accepted (per listening address); calls beyond the per-connection limit wait in the client.
        ("grpc.max_allowed_incoming_connections", config.max_connections),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        # gRPC core cancels calls that wait to be picked up by the asyncio server once more than
        # 1000 wait (randomly) or 3000 (all): a burst of concurrent calls from a few clients got
        # CANCELLED with nothing logged. Let them queue instead; the event loop drains them.
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        # The adapters send HTTP/2 keepalive pings (default every 20 s, also on a connection with no
        # call) to find a frozen or cut-off server. gRPC core answers pings more frequent than every
        # 5 minutes (2 hours with no call in flight) with GOAWAY too_many_pings after 2 "strikes",
        # which ended an open watch with UNAVAILABLE: accept them down to keepalive_min_interval.
        ("grpc.http2.min_ping_interval_without_data_ms", round(config.keepalive_min_interval * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class HealthServicer(health.aio.HealthServicer):
    """grpc's asyncio health servicer plus ``List`` (which grpcio-health-checking leaves unimplemented:
    each call raised NotImplementedError and logged a traceback)."""

    async def List(self, request: Any, context: Context) -> Any:
        # HealthListRequest/-Response and _server_status: grpcio-health-checking has them, its type
        # stubs (types-grpcio-health-checking) not yet.
        statuses: dict[str, Any] = self._server_status  # type: ignore[attr-defined]
        response: Any = getattr(health_pb2, "HealthListResponse")  # noqa: B009
        return response(statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in statuses.items()})


async def build_server(
    config: ServerConfig,
    provider: StoreProvider,
    metrics: ServerMetrics | None = None,
    drain: Drain | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A gRPC server (not started) serving ``provider``; its bound port and health servicer.

    Calls pass the interceptors in this order: observation (``metrics``, access log), so refused
    calls are counted and logged too, then ``drain`` (which refuses new calls once a stop began),
    then token authentication when tokens are configured.
    Innermost, ``RejectUndecodable`` answers undecodable request bytes with INVALID_ARGUMENT.
    """
    services: tuple[str, ...] = (
        *SERVICE_NAMES,
        *CLUSTER_SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    )
    if config.reflection:
        services = (*services, reflection.SERVICE_NAME)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if metrics is not None or config.access_log:
        interceptors.append(CallObserver(metrics, config.access_log, services))
    if drain is not None:
        interceptors.append(drain)
    tokens = load_tokens(config)
    if (config.tokens or config.tokens_file is not None) and not tokens:
        raise ConfigError("tokens", "tokens are configured but none was loaded; refusing to serve without them")
    health_servicer = HealthServicer()
    if tokens:
        interceptors.append(TokenAuthInterceptor(tokens, health_servicer))
    interceptors.append(RejectUndecodable())  # innermost: wraps only the servicers' own handlers
    server = grpc.aio.server(options=server_options(config), interceptors=interceptors)
    add_servicers(server, provider, config.stream_idle_timeout)
    add_cluster_servicers(server, provider, config.stream_idle_timeout)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection(services, server)
    unavailable = bind_failure(config.listen)
    if unavailable is not None:
        raise OSError(f"cannot listen on {config.listen}: {unavailable}")
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


def bind_failure(listen: str) -> str | None:
    """Why ``listen`` (HOST:PORT) cannot be bound, e.g. ``Address already in use``; None when it can.

    gRPC binds every address the host resolves to and fails only when none binds; its error says
    little and comes after a line of its own on stderr. So the host is resolved here first (one
    that does not resolve is reported as such), and its addresses are tried as gRPC binds them
    (SO_REUSEADDR) and released at once. Port 0 always binds.
    """
    host, _, port = listen.rpartition(":")
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"cannot resolve host {host.strip('[]')!r}: {error.strerror or error}"
    except (OSError, ValueError):
        return None
    if port == "0":
        return None
    reasons: list[str] = []
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                reasons.append(error.strerror or str(error))
            else:
                return None
    return reasons[0] if reasons else None


class RunningServer:
    """A started server with its store; ``stop`` shuts both down gracefully."""

    def __init__(
        self,
        config: ServerConfig,
        provider: StoreProvider,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
        metrics: ServerMetrics | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.server = server
        self.port = port
        self.health = health_servicer
        self.metrics = metrics
        self.drain = drain
        """Refuses new calls while a stop drains (see ``_draining``)."""
        self.metrics_address: str | None = None
        """HOST:PORT of the ``/metrics`` endpoint (the real port), when metrics are on."""
        self.console: Console | None = None
        """The web console, when ``console_listen`` is set."""
        self.purger: RetentionPurger | None = None
        """The background retention purger, when ``config.retention`` is set."""
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

        An invalid config is a ``ConfigError`` (a ``ValueError``) naming the setting. A start that
        fails creates nothing: a database file it created (the address was taken, say) is removed.
        """
        check(config)
        created = _missing_database_file(config.db)
        try:
            return await cls._start(config)
        except BaseException:
            if created is not None:
                _remove_database_files(created)
            raise

    @classmethod
    async def _start(cls, config: ServerConfig) -> RunningServer:
        provider: StoreProvider
        if is_postgres_url(config.db):
            provider = await PostgresPersistenceProvider.open(config.db, pool_size=config.pool_size)
        else:
            provider = await SqlitePersistenceProvider.open(
                config.db,
                readers=config.readers,
                synchronous=config.synchronous,
                switch_interval=SWITCH_INTERVAL,
                max_page_count=config.max_page_count,
            )
        metrics: ServerMetrics | None = None
        try:
            if config.metrics_listen is not None:
                metrics = ServerMetrics(provider, asyncio.get_running_loop())
            drain = Drain()
            server, port, health_servicer = await build_server(config, provider, metrics, drain)
            await server.start()
            running = cls(config, provider, server, port, health_servicer, metrics, drain)
            if metrics is not None and config.metrics_listen is not None:
                try:
                    running.metrics_address = metrics.serve_http(config.metrics_listen)
                except BaseException:
                    await server.stop(0)
                    raise
            if config.console_listen is not None:
                console = Console(provider, load_tokens(config), config.db)
                try:
                    await console.start(config.console_listen)
                except BaseException:
                    await server.stop(0)
                    if metrics is not None:
                        await asyncio.to_thread(metrics.close)
                    raise
                running.console = console
        except BaseException:
            await provider.close()
            raise
        provider.cluster.start(config.requeue_interval)
        if not await provider.cluster.wait_ready(READY_WAIT):
            LOG.warning("not yet notified of other servers' queue items and lifecycle events (still connecting)")
        for name in ("", *SERVICE_NAMES, *CLUSTER_SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if config.retention is not None:
            running.purger = RetentionPurger(provider, config.retention)
            running.purger.start()
        return running

    async def stop(self, grace: float | None = None, *, quiet: float = DRAIN_QUIET) -> None:
        """Health to NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight calls finish within
        the grace (``config.grace`` unless given), then close the database.

        New calls are refused until none has arrived for ``quiet`` seconds (see ``_draining``), and
        only then does gRPC's own stop begin, which cancels the calls it holds but has not handed
        over yet (CANCELLED). ``quiet=0`` suits a caller whose clients are all closed (tests).
        """
        if self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        grace = self.config.grace if grace is None else grace
        if self.drain is not None:
            self.drain.begin()
        await self.health.enter_graceful_shutdown()
        if self.console is not None:
            await self.console.close()
        if self.purger is not None:
            await self.purger.stop()
        self.provider.cluster.stop_waiting()  # long polls and lifecycle watches end now, not after the grace
        if self.drain is not None:
            await self.drain.quiet(quiet, limit=min(DRAIN_LIMIT, grace))
        await self.server.stop(max(grace - (time.monotonic() - began), 0.0))
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        await self.provider.close()


def _missing_database_file(db: str) -> Path | None:
    """The file of a file database that does not exist yet (a start would create it), else None."""
    try:
        path = parse_database_url(db)
    except ValueError:
        return None
    if path == MEMORY or os.path.lexists(path):
        return None
    return Path(path)


def _remove_database_files(path: Path) -> None:
    """Remove a database file a failed start created, with its WAL, shared-memory and journal files."""
    for name in (path, *(path.with_name(path.name + suffix) for suffix in DATABASE_FILE_SUFFIXES)):
        if not os.path.lexists(name):
            continue  # never created (on a read-only file system unlink says EROFS, not ENOENT)
        try:
            name.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            LOG.warning("could not remove %s, created by the failed start: %s", name, error)


async def serve(config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully. Prints ``listening on HOST:PORT``.

    With ``log_format = "json"`` that line (and ``metrics on URL``, ``console on URL``) is a JSON
    object whose ``message`` it is, with the address in ``address`` (the URL in ``url``).
    """
    running = await RunningServer.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announce = functools.partial(status_line, config.log_format, logger=__name__)
    print(announce(f"listening on {running.address}", address=running.address), flush=True)
    if running.metrics_address is not None:
        url = f"http://{running.metrics_address}{METRICS_PATH}"
        print(announce(f"metrics on {url}", url=url), flush=True)
    if running.console is not None:
        print(announce(f"console on {running.console.url}", url=running.console.url), flush=True)
    LOG.info(
        "serving %s on %s (%s; %s)",
        redact_url(config.db),
        running.address,
        "mutual TLS" if config.tls_client_ca else "TLS" if config.tls else "plaintext",
        tokens_source(config),
    )
    for warning in start_up_warnings(config):
        LOG.warning("%s", warning)
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
