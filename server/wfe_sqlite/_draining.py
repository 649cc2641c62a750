"""The draining phase of a graceful stop: calls that arrive once a stop began get UNAVAILABLE.

``grpc.aio.Server.stop`` starts gRPC core's shutdown (``grpc_server_shutdown_and_notify``), which
cancels every call core has received but not yet handed to the asyncio server (the asyncio server
asks core for one call at a time, so calls wait in core's queue while the event loop is busy), and
every call that reaches it afterwards, until its clients have read its GOAWAY. Their clients got
CANCELLED, with no access-log line: under load a few of them on every stop.

So a stop first drains: ``Drain`` (an interceptor) answers every new call but health with
UNAVAILABLE, reason ``STORAGE_UNAVAILABLE`` (not run, nothing written: retry, on another server or
after a restart), which also empties core's queue; calls already in their handlers go on. The
refusal's ErrorInfo metadata ``not_run: "true"`` tells it apart from the other STORAGE_UNAVAILABLE
answers: the Rust and TypeScript balancers send such a call, a write too, to the next server. Once no
call has arrived for ``DRAIN_QUIET`` seconds (at most ``DRAIN_LIMIT``, within the grace),
``server.stop`` follows. A client that calls again at once after each refusal can still meet
gRPC's cancellation after the limit; no call it cancels was run.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from wfe_client.errors import StorageUnavailable

from ._status import Continuation, Handler, refusal

__all__ = ["DRAIN_LIMIT", "DRAIN_QUIET", "STOPPING_MESSAGE", "Drain"]

DRAIN_QUIET = 0.1
"""Seconds without a new call after which a draining server stops (its clients have backed off)."""

DRAIN_LIMIT = 1.0
"""Most seconds a stop drains (clients that keep calling at once must not hold the stop up)."""

STOPPING_MESSAGE = "the server is shutting down; the call was not run (nothing written): retry"

OPEN_PREFIX = "/grpc.health.v1.Health/"
"""Methods answered while draining (health reports NOT_SERVING)."""


class Drain(grpc.aio.ServerInterceptor):
    """Refuses new calls (UNAVAILABLE) once ``begin`` was called; knows when calls last arrived."""

    def __init__(self) -> None:
        self._draining = False
        self._last_call = float("-inf")
        self.refused = 0
        """Calls refused so far (for tests)."""

    def begin(self) -> None:
        """From now on every new call but health gets UNAVAILABLE.

        The quiet counts from now at the earliest: calls core holds have not been intercepted yet
        (their server may have been too busy), so an old last call says nothing about them.
        """
        self._draining = True
        self._last_call = time.monotonic()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        self._last_call = time.monotonic()
        handler = await continuation(details)
        if not self._draining or handler is None or details.method.startswith(OPEN_PREFIX):
            return handler
        self.refused += 1
        return refusal(handler, StorageUnavailable(STOPPING_MESSAGE, not_run="true"))

    async def quiet(self, quiet: float = DRAIN_QUIET, limit: float = DRAIN_LIMIT) -> None:
        """Return once no call has arrived for ``quiet`` seconds since ``begin``, or after ``limit``."""
        deadline = time.monotonic() + limit
        await asyncio.sleep(0)  # calls core handed over already are intercepted first
        while True:
            wait = min(self._last_call + quiet, deadline) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)
