"""The one place where exceptions become gRPC status codes with a ``google.rpc.ErrorInfo``."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from wfe_client import ERROR_DOMAIN, InvalidArgument, WfeError

__all__ = ["to_status", "translate_errors", "translate_stream_errors"]

LOG = logging.getLogger(__name__)

R = TypeVar("R")


def to_status(error: WfeError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error: canonical code, message, ErrorInfo detail."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(
        code=code_pb2.Code.Value(error.code), message=error.message, details=[detail]
    )


def _as_wfe_error(error: Exception, method: str) -> WfeError:
    if isinstance(error, WfeError):
        return error
    if isinstance(error, ValueError):
        # Validation raised by shared helpers (for example a naive datetime).
        return InvalidArgument(str(error))
    LOG.exception("internal error in %s", method)
    return WfeError("internal error; see the server log")


async def _abort(context: grpc.aio.ServicerContext, error: WfeError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


def translate_errors(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """Wrap a unary servicer method so every failure reaches the client as a proper status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the boundary: nothing escapes unmapped
            await _abort(context, _as_wfe_error(error, method.__qualname__))
            raise AssertionError("abort returned")  # pragma: no cover

    return wrapper


def translate_stream_errors(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]]:
    """``translate_errors`` for server-streaming methods."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _abort(context, _as_wfe_error(error, method.__qualname__))

    return wrapper
