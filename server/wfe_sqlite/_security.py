"""Transport security and authentication: TLS credentials and the bearer-token interceptor.

Every service needs a token when tokens are configured, except ``grpc.health.v1.Health``, which
stays open so load balancers and orchestrators can probe the server without a secret (it tells
nothing but SERVING / NOT_SERVING). Server reflection needs a token like the persistence services.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Optional

import grpc
from grpc_status import rpc_status

from wfe_client.errors import Unauthenticated

from ._config import ServerConfig, read_pem
from ._status import to_status

__all__ = ["server_credentials", "TokenAuthInterceptor", "Unauthenticated", "OPEN_SERVICE_PREFIX"]

LOG = logging.getLogger(__name__)

OPEN_SERVICE_PREFIX = "/grpc.health.v1.Health/"
"""Methods under this prefix are served without a token (health probes)."""


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS credentials from ``tls_cert``/``tls_key``; client certificates required with ``tls_client_ca``."""
    key = read_pem(config, "tls_key")
    chain = read_pem(config, "tls_cert")
    client_ca = read_pem(config, "tls_client_ca") if config.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` naming an accepted token.

    A refused call never reaches a servicer: its request is not even decoded, nothing is read or
    written, and the caller gets UNAUTHENTICATED with ``ErrorInfo{reason: "UNAUTHENTICATED"}``.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)
        if not self._tokens:
            raise ValueError("TokenAuthInterceptor needs at least one token")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Optional[grpc.RpcMethodHandler]]],
        details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler]:
        if details.method.startswith(OPEN_SERVICE_PREFIX):
            return await continuation(details)
        problem = self._problem(details.invocation_metadata or ())
        handler = await continuation(details)
        if problem is None:
            return handler
        LOG.debug("refused %s: %s", details.method, problem)
        return _refusal(handler, problem)

    def _problem(self, metadata: Iterable[Any]) -> Optional[str]:
        """Why the call is refused, or None when it carries an accepted token."""
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return "missing bearer token: send the metadata 'authorization: Bearer <token>'"
        scheme, _, token = str(values[0]).strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "malformed authorization: expected 'Bearer <token>'"
        presented = token.strip().encode()
        accepted = False
        for known in self._tokens:  # compare with every token, in constant time each
            accepted |= hmac.compare_digest(presented, known)
        return None if accepted else "invalid bearer token"


def _refusal(handler: Optional[grpc.RpcMethodHandler], message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""
    status = rpc_status.to_status(to_status(Unauthenticated(message)))

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)

    def ignore(_: bytes) -> None:  # the request of a refused call is never decoded
        return None

    serialize = getattr(handler, "response_serializer", None)
    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, ignore, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, ignore, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, ignore, serialize)
    return grpc.stream_stream_rpc_method_handler(refuse, ignore, serialize)
