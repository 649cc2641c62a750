"""The one place where exceptions become gRPC status codes with a ``google.rpc.ErrorInfo``."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from wfe_client.errors import ERROR_DOMAIN, InvalidArgument, WfeError

__all__ = [
    "Context",
    "Continuation",
    "Handler",
    "RejectUndecodable",
    "refusal",
    "replace_in",
    "to_status",
    "translate_errors",
]

LOG = logging.getLogger(__name__)

R = TypeVar("R")

Context = grpc.aio.ServicerContext[Any, Any]
"""The context of a servicer call (any request and response type)."""

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # generic in the type stubs only
    Handler = grpc.RpcMethodHandler
"""A method handler, as server interceptors get and return them."""

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
"""What a server interceptor calls for the handler it wraps."""


def replace_in(handler: Handler, **parts: Any) -> Handler:
    """``handler`` with some of its parts replaced (grpc's handlers are named tuples)."""
    replaced: Handler = handler._replace(**parts)  # type: ignore[attr-defined]
    return replaced


MAX_MESSAGE_CHARS = 512
"""Longest error message sent; longer ones (quoting a huge input) are cut."""
MAX_METADATA_CHARS = 256
"""Longest ErrorInfo metadata value sent."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def to_status(error: WfeError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error: canonical code, message, ErrorInfo detail.

    Message and metadata are bounded: they travel in response headers, which clients refuse past
    16 KiB (a message quoting a huge request field came back as RESOURCE_EXHAUSTED instead).
    """
    metadata = {key: _cut(str(value), MAX_METADATA_CHARS) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(
        code=code_pb2.Code.Value(error.code), message=_cut(error.message, MAX_MESSAGE_CHARS), details=[detail]
    )


def refusal(handler: Handler | None, error: WfeError) -> Handler:
    """A handler that aborts with ``error`` before receiving any of the request (a refused call).

    It is a request-streaming handler whatever the method is: grpc receives the one message of a
    unary request whole (up to the 64 MiB message limit) before it calls a unary handler, but hands
    a request stream to the handler unread. Answering at once leaves the request body unread;
    HTTP/2 flow control stops the client after a window, and the body is dropped with the call.
    (Measured: 32 concurrent 60 MiB unauthenticated calls took the server from 48 MiB to a peak of
    1.1 GB as unary refusals; this way the peak is about 20 MiB above where it started.)
    """
    status = rpc_status.to_status(to_status(error))

    async def refuse(requests: Any, context: Context) -> Any:
        await context.abort_with_status(status)

    def ignore(_: bytes) -> None:  # never called: the refusal reads no request message
        return None

    serialize = getattr(handler, "response_serializer", None)
    if handler is not None and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, ignore, serialize)
    return grpc.stream_unary_rpc_method_handler(refuse, ignore, serialize)


def _as_wfe_error(error: Exception, method: str) -> WfeError:
    """The error to answer with: a ``WfeError`` as it is; anything else is a server bug (INTERNAL).

    Only validation raises ``InvalidArgument``; a stray ``ValueError`` (or any other exception) is
    not the client's fault, so it is logged with its traceback and answered INTERNAL.
    """
    if isinstance(error, WfeError):
        return error
    LOG.error("internal error in %s", method, exc_info=error)
    return WfeError("internal error; see the server log")


async def _abort(context: Context, error: WfeError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


def translate_errors(
    method: Callable[[Any, Any, Context], Awaitable[R]],
) -> Callable[[Any, Any, Context], Awaitable[R]]:
    """Wrap a unary servicer method so every failure reaches the client as a proper status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the boundary: nothing escapes unmapped
            await _abort(context, _as_wfe_error(error, method.__qualname__))
            raise AssertionError("abort returned") from None  # pragma: no cover

    return wrapper


class _Undecodable:
    """What a request deserializer returns for bytes that are not a message of its type."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class RejectUndecodable(grpc.aio.ServerInterceptor):
    """Undecodable request bytes get INVALID_ARGUMENT with an ErrorInfo, not grpc's own UNKNOWN.

    grpc answers a request whose bytes fail to parse with UNKNOWN ("Unexpected DecodeError");
    this interceptor gives every unary-request handler a deserializer that cannot raise and turns
    such a request into INVALID_ARGUMENT. Wrapped handlers are cached per method.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        wrapped = _tolerant(handler, method)
        if wrapped is not handler:
            self._handlers[method] = wrapped
        return wrapped


def _tolerant(handler: Any, method: str) -> Any:
    if handler is None or handler.request_streaming or handler.request_deserializer is None:
        return handler
    deserialize = handler.request_deserializer

    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # noqa: BLE001 - any parse failure is the client's malformed request
            return _Undecodable(error)

    def refusal(request: _Undecodable) -> WfeError:
        return InvalidArgument(f"request: not a valid {method} request message ({request.error})", field="request")

    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request: Any, context: Context) -> Any:
            if isinstance(request, _Undecodable):
                await _abort(context, refusal(request))
            return await inner(request, context)

        return replace_in(handler, request_deserializer=safe, unary_unary=unary)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _abort(context, refusal(request))
            responses = inner_stream(request, context)
            if inspect.isasyncgen(responses):
                async for item in responses:
                    yield item
            else:  # a coroutine that writes with context.write (grpc's health Watch)
                await responses

        return replace_in(handler, request_deserializer=safe, unary_stream=stream)
    return handler
