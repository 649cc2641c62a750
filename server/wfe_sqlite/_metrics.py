"""Observability: Prometheus metrics and access logs.

``CallObserver`` is a server interceptor that times every call and records it: in the per-RPC
counters and latency histogram of ``ServerMetrics`` (names as in go-grpc-prometheus, so existing
gRPC dashboards work) and/or as one access-log line on the ``wfe_sqlite.access`` logger. The store
gauges are computed when Prometheus scrapes, by one read job on the server's read pool; the
write-batch histogram is fed by the group-committing writer (``Database.on_batch``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ._config import split_host_port
from ._maintenance import file_sizes
from ._provider import SqlitePersistenceProvider, StoreProvider
from ._status import Context, Continuation, Handler, replace_in

__all__ = ["ACCESS_LOG", "METRICS_PATH", "UNKNOWN_METHOD", "CallObserver", "ServerMetrics"]

LOG = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("wfe_sqlite.access")

METRICS_PATH = "/metrics"
"""The one path the metrics endpoint answers; any other is 404."""

SCRAPE_TIMEOUT = 5.0
"""Seconds a scrape waits for the store's figures."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")
UNKNOWN_METHOD = "unknown"
"""The ``grpc_type``, ``grpc_service`` and ``grpc_method`` labels of every call to a method the server
does not serve: one series however many names clients make up, not one per name."""
_MAX_LOGGED_METHOD = 256
_KINDS = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}

_GAUGES = (
    ("runnable_workflows", "wfe_sqlite_runnable_workflows", "RUNNABLE workflows whose next_execution has come."),
    ("unprocessed_events", "wfe_sqlite_unprocessed_events", "Events not yet marked processed."),
    ("due_commands", "wfe_sqlite_due_commands", "Scheduled commands that are due and held by no live lease."),
    ("claimed_commands", "wfe_sqlite_claimed_commands", "Scheduled commands held by a live lease."),
    ("held_tokens", "wfe_sqlite_held_tokens", "Open subscriptions held by a live external token."),
    ("queued_items", "wfe_sqlite_queued_items", "Items waiting in the work queues."),
    ("held_leases", "wfe_sqlite_held_leases", "Locks held by a live lease."),
)
_FILES = (
    ("database", "wfe_sqlite_database_bytes", "Size of the database file in bytes."),
    ("wal", "wfe_sqlite_wal_bytes", "Size of the write-ahead log in bytes."),
)


class _StoreCollector(Collector):
    """Store gauges, computed at scrape time (on the scraping thread, reading via the read pool)."""

    def __init__(self, provider: StoreProvider, loop: asyncio.AbstractEventLoop) -> None:
        self._provider = provider
        self._loop = loop

    def describe(self) -> Iterator[Metric]:
        for _, name, text in (*_GAUGES, *_FILES):
            yield GaugeMetricFamily(name, text)

    def collect(self) -> Iterator[Metric]:
        try:
            future = asyncio.run_coroutine_threadsafe(self._provider.store.live_figures(), self._loop)
            figures = future.result(SCRAPE_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - a scrape during shutdown or a busy store
            LOG.warning("metrics: store figures unavailable: %s", error)
        else:
            for field, name, text in _GAUGES:
                yield GaugeMetricFamily(name, text, value=getattr(figures, field))
        if not isinstance(self._provider, SqlitePersistenceProvider):
            return  # PostgreSQL: no files of ours to measure
        sizes = file_sizes(self._provider.database.config.path)
        for field, name, text in _FILES:
            yield GaugeMetricFamily(name, text, value=sizes[field])


def _metrics_only(app: Any) -> Any:
    """``app`` (prometheus-client's WSGI app, which answers every path) on ``METRICS_PATH`` only."""

    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {METRICS_PATH}\n".encode()]

    return routed


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request (as prometheus-client's own server)."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _start_wsgi(host: str, port: int, app: Any) -> tuple[Any, threading.Thread]:
    """``app`` served on ``host:port`` (IPv4 or IPv6 as the host resolves) in a daemon thread, as
    prometheus-client's ``start_http_server`` serves its own app."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    httpd: Any = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="wfe-metrics-http", daemon=True)
    thread.start()
    return httpd, thread


class ServerMetrics:
    """The Prometheus registry of one server: call metrics, store gauges, group-commit batch sizes."""

    def __init__(self, provider: StoreProvider, loop: asyncio.AbstractEventLoop) -> None:
        self.registry = CollectorRegistry()
        self.started = Counter("grpc_server_started", "RPCs started on the server.", _LABELS, registry=self.registry)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code.",
            (*_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, in seconds.",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_sizes = Histogram(
            "wfe_sqlite_write_batch_size",
            "Write requests committed together by one group commit of the writer.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(provider, loop))
        # The children of the labelled metrics, by labels (known methods and codes only: bounded),
        # so that a call does not look its labels up again.
        self._per_method: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._per_code: dict[tuple[str, str, str, str], Any] = {}
        if isinstance(provider, SqlitePersistenceProvider):
            provider.database.on_batch = self.batch_sizes.observe
        self._http: Any = None
        self._thread: Any = None

    def serve_http(self, listen: str) -> str:
        """Serve ``/metrics`` (and nothing else: 404) on ``listen`` (HOST:PORT, port 0 picks one) in
        a thread; the real HOST:PORT."""
        host, port = split_host_port(listen)
        try:
            self._http, self._thread = _start_wsgi(host, port, _metrics_only(make_wsgi_app(self.registry)))
        except OSError as error:
            raise OSError(f"cannot serve metrics on {listen}: {error}") from error
        bound = self._http.server_address[1]
        return f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def _method(self, kind: str, service: str, method: str) -> tuple[Any, Any]:
        children = self._per_method.get((kind, service, method))
        if children is None:
            children = (self.started.labels(kind, service, method), self.latency.labels(kind, service, method))
            self._per_method[kind, service, method] = children
        return children

    def call_started(self, kind: str, service: str, method: str) -> None:
        self._method(kind, service, method)[0].inc()

    def call_finished(self, kind: str, service: str, method: str, code: str, seconds: float) -> None:
        handled = self._per_code.get((kind, service, method, code))
        if handled is None:
            handled = self._per_code[kind, service, method, code] = self.handled.labels(kind, service, method, code)
        handled.inc()
        self._method(kind, service, method)[1].observe(seconds)


Behavior = Callable[[Any, Any], Any]


def _code(context: Context, failure: BaseException | None) -> str:
    code = context.code()
    if code is not None:
        return getattr(code, "name", str(code))
    if failure is None:
        return "OK"
    return "CANCELLED" if isinstance(failure, asyncio.CancelledError) else "UNKNOWN"


def _method_kinds(services: Iterable[str]) -> dict[str, str]:
    """``/service/Method`` -> grpc_type label, for every method of the named services."""
    kinds = {}
    pool = descriptor_pool.Default()
    for name in services:
        for method in pool.FindServiceByName(name).methods:
            kinds[f"/{name}/{method.name}"] = _KINDS[method.client_streaming, method.server_streaming]
    return kinds


async def _not_served(requests: Any, context: Context) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")  # grpc's own words


_UNIMPLEMENTED: Handler = grpc.stream_unary_rpc_method_handler(_not_served, lambda _: None, None)
"""The answer to a method the server does not serve, as gRPC gives it: UNIMPLEMENTED. A
request-streaming handler, so the request is not read (see ``_status.refusal``)."""


class CallObserver(grpc.aio.ServerInterceptor):
    """Times every call; counts it in ``metrics`` and writes an access-log line when asked to.

    ``services`` are the full names of the services the server serves: calls to any other method
    are counted under ``UNKNOWN_METHOD``, so made-up method names cannot grow the metrics.
    """

    def __init__(self, metrics: ServerMetrics | None, access_log: bool, services: Iterable[str] = ()) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._kinds = _method_kinds(services)
        # method -> (the handler it was given, the observed one): built once per method.
        self._observed: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:  # a method nobody serves: answered here, so it is counted and logged too
            handler = _UNIMPLEMENTED
        rpc = details.method
        cached = self._observed.get(rpc)
        if cached is not None and cached[0] is handler:
            return cached[1]
        observed = self._observe(handler, rpc)
        if rpc in self._kinds:  # made-up method names are not kept
            self._observed[rpc] = (handler, observed)
        return observed

    def _observe(self, handler: Handler, rpc: str) -> Handler:
        # The label is the method's own kind (a refusal's handler kind may differ from it).
        kind = self._kinds.get(rpc, UNKNOWN_METHOD)
        if handler.unary_unary is not None:
            return replace_in(handler, unary_unary=self._unary(handler.unary_unary, rpc, kind))
        if handler.unary_stream is not None:
            return replace_in(handler, unary_stream=self._streaming(handler.unary_stream, rpc, kind))
        if handler.stream_unary is not None:
            return replace_in(handler, stream_unary=self._unary(handler.stream_unary, rpc, kind))
        assert handler.stream_stream is not None
        return replace_in(handler, stream_stream=self._streaming(handler.stream_stream, rpc, kind))

    def _labels(self, rpc: str, kind: str) -> tuple[str, str, str]:
        if kind == UNKNOWN_METHOD:
            return UNKNOWN_METHOD, UNKNOWN_METHOD, UNKNOWN_METHOD
        service, _, method = rpc.lstrip("/").rpartition("/")
        return kind, service, method

    def _unary(self, behavior: Behavior, rpc: str, kind: str) -> Behavior:
        labels = self._labels(rpc, kind)

        async def observed(request: Any, context: Context) -> Any:
            start = self._start(labels)
            failure: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as error:
                failure = error
                raise
            finally:
                self._finish(rpc, kind, labels, start, context, failure)

        return observed

    def _streaming(self, behavior: Behavior, rpc: str, kind: str) -> Behavior:
        labels = self._labels(rpc, kind)

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            start = self._start(labels)
            failure: BaseException | None = None
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:  # a coroutine that writes its responses with context.write
                    await result
            except BaseException as error:
                failure = error
                raise
            finally:
                self._finish(rpc, kind, labels, start, context, failure)

        return observed

    def _start(self, labels: tuple[str, str, str]) -> float:
        if self._metrics is not None:
            self._metrics.call_started(*labels)
        return time.perf_counter()

    def _finish(
        self,
        rpc: str,
        kind: str,
        labels: tuple[str, str, str],
        start: float,
        context: Context,
        failure: BaseException | None,
    ) -> None:
        seconds = time.perf_counter() - start
        code = _code(context, failure)
        if self._metrics is not None:
            self._metrics.call_finished(*labels, code, seconds)
        if self._access_log:
            if kind == UNKNOWN_METHOD and len(rpc) > _MAX_LOGGED_METHOD:
                rpc = rpc[: _MAX_LOGGED_METHOD - 1] + "\u2026"  # a made-up name, as long as a client likes
            peer = urllib.parse.unquote(context.peer())  # grpc escapes the brackets of IPv6
            ACCESS_LOG.info(
                "%s %s %.2fms %s",
                rpc,
                code,
                seconds * 1000,
                peer,
                extra={"rpc": rpc, "code": code, "duration_ms": round(seconds * 1000, 3), "peer": peer},
            )
