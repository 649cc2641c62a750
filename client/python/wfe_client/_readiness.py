"""Waiting for a new channel to a wfe-sqlite server, and saying why it could not be opened."""

from __future__ import annotations

import asyncio
import re

import grpc

__all__ = ["wait_until_ready"]

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
"""Any method serves to learn why a connection attempt failed: the call never leaves the client."""

_PEER_PREFIX = re.compile(r"^[A-Z_]+: (?:ipv4|ipv6|unix|unix-abstract):\S+: ")
"""The status code and peer gRPC puts before the reason of a failed connection attempt."""

_CLOSED = ("socket closed", "connection reset", "end of tcp stream", "broken pipe")
"""How gRPC describes a server that accepted the connection and closed it without a word."""


async def wait_until_ready(
    channel: grpc.aio.Channel, address: str, seconds: float, *, tls: bool, client_certificate: bool | None
) -> None:
    """Return once ``channel`` is connected; ``ConnectionError`` when it cannot be.

    A server that is not there yet may still come (it is starting): the wait goes on, up to
    ``seconds``, and then says that no server answered. A server that answered but refused
    the connection (a TLS server to a plaintext client, a mutual-TLS server to a client without a
    certificate it accepts, a certificate the client does not trust) will not change its mind: that
    fails at once and says the handshake failed, and why. ``client_certificate`` is whether the
    client presents one (None: not known, the caller built the credentials).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last_error = ""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            last_error = await _last_error(channel, max(deadline - loop.time(), 0.1))
            refusal = _handshake_failure(last_error, address, tls=tls, client_certificate=client_certificate)
            if refusal is not None:
                raise ConnectionError(refusal)
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            because = f" (last error: {last_error})" if last_error else ""
            raise ConnectionError(f"no wfe-sqlite server answered at {address} within {seconds}s{because}") from None
        state = channel.get_state(try_to_connect=True)


async def _last_error(channel: grpc.aio.Channel, seconds: float) -> str:
    """Why the channel's last connection attempt failed, as gRPC says it ("" if it now works)."""
    probe = channel.unary_unary(_HEALTH_CHECK, request_serializer=bytes, response_deserializer=bytes)
    try:
        await probe(b"", timeout=seconds, wait_for_ready=False)
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.UNAVAILABLE:
            return ""  # the server answered the call: connected
        details = (error.details() or "").split("last error: ", 1)[-1]
        return _PEER_PREFIX.sub("", details)  # "UNKNOWN: ipv4:127.0.0.1:50051: Tls handshake failed ..."
    return ""


def _handshake_failure(error: str, address: str, *, tls: bool, client_certificate: bool | None) -> str | None:
    """The message for a connection the server answered and refused, or None for anything else."""
    lowered = error.lower()
    if "handshake" in lowered:
        hint = ""
        if "wrong_version_number" in lowered:
            hint = "; does the server serve plaintext? then connect without TLS"
        elif "certificate_verify_failed" in lowered:
            hint = "; the server's certificate does not chain to the CA the client trusts (tls_ca)"
        return f"TLS handshake with the wfe-sqlite server at {address} failed: {error}{hint}"
    if not any(sign in lowered for sign in _CLOSED):
        return None
    if not tls:
        return (
            f"handshake with the wfe-sqlite server at {address} failed: it closed the connection; "
            "it expects TLS: connect with tls_ca=... (or credentials=...)"
        )
    if client_certificate is False:
        return (
            f"TLS handshake with the wfe-sqlite server at {address} failed: it closed the connection; "
            "it requires a client certificate (mutual TLS): connect with tls_cert=... and tls_key=..."
        )
    return (
        f"TLS handshake with the wfe-sqlite server at {address} failed: it closed the connection; "
        "does it accept the client certificate (one signed by its --tls-client-ca)?"
    )
