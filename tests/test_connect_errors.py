"""``GrpcPersistenceProvider.connect`` says why it could not connect, through real server processes.

A server that answered and refused the handshake is not "no server answered": a plaintext client
against TLS, a client without a certificate (or with one from another CA) against mutual TLS, a
client that does not trust the server's certificate, a TLS client against plaintext. Those fail at
once, naming the handshake; only an address where nothing answers waits for ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import WFE_SQLITE, ServerProcess, start_server_process
from test_security import Pki, pki  # noqa: F401  (the module's certificates fixture)
from wfe_client import (
    GrpcLifecyclePublisher,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    InvalidArgument,
    LifecycleEvent,
    LifecycleEventType,
    QueueType,
)
from wfe_sqlite import SqlitePersistenceProvider
from wfe_sqlite._cluster_servicer import add_cluster_servicers
from wfe_sqlite._servicer import add_servicers

CONNECT_TIMEOUT = 5.0


@pytest.fixture
def tls_server(pki: Pki, db_url: str) -> Iterator[ServerProcess]:  # noqa: F811
    server = start_server_process(db_url, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    yield server
    server.kill()


@pytest.fixture
def mtls_server(pki: Pki, db_url: str) -> Iterator[ServerProcess]:  # noqa: F811
    server = start_server_process(
        db_url, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)
    )
    yield server
    server.kill()


async def _refusal(address: str, **options: Any) -> tuple[str, float]:
    """The ConnectionError's message and how long connect took to give it."""
    started = time.monotonic()
    with pytest.raises(ConnectionError) as refused:
        async with GrpcPersistenceProvider.connect(address, connect_timeout=CONNECT_TIMEOUT, **options):
            pass
    return str(refused.value), time.monotonic() - started


def _localhost(server: ServerProcess) -> str:
    return f"localhost:{server.address.rsplit(':', 1)[1]}"  # the name the server certificate holds


async def test_plaintext_client_against_tls(tls_server: ServerProcess) -> None:
    message, took = await _refusal(tls_server.address)
    assert message == (
        f"handshake with the wfe-sqlite server at {tls_server.address} failed: it closed the connection; "
        "it expects TLS: connect with tls_ca=... (or credentials=...)"
    )
    assert took < CONNECT_TIMEOUT / 2, took


async def test_client_that_does_not_trust_the_server_certificate(pki: Pki, tls_server: ServerProcess) -> None:  # noqa: F811
    message, took = await _refusal(_localhost(tls_server), tls_ca=str(pki.rogue_ca))
    assert message.startswith(f"TLS handshake with the wfe-sqlite server at {_localhost(tls_server)} failed: "), message
    assert "CERTIFICATE_VERIFY_FAILED" in message, message
    assert message.endswith("; the server's certificate does not chain to the CA the client trusts (tls_ca)")
    assert took < CONNECT_TIMEOUT / 2, took


async def test_client_without_a_certificate_against_mutual_tls(pki: Pki, mtls_server: ServerProcess) -> None:  # noqa: F811
    address = _localhost(mtls_server)
    message, took = await _refusal(address, tls_ca=str(pki.ca))
    assert message == (
        f"TLS handshake with the wfe-sqlite server at {address} failed: it closed the connection; "
        "it requires a client certificate (mutual TLS): connect with tls_cert=... and tls_key=..."
    )
    assert took < CONNECT_TIMEOUT / 2, took
    message, _ = await _refusal(mtls_server.address)
    assert message.startswith(f"handshake with the wfe-sqlite server at {mtls_server.address} failed: "), message
    assert "it expects TLS" in message


async def test_client_certificate_from_another_ca_against_mutual_tls(pki: Pki, mtls_server: ServerProcess) -> None:  # noqa: F811
    address = _localhost(mtls_server)
    message, took = await _refusal(
        address, tls_ca=str(pki.ca), tls_cert=str(pki.rogue_client_cert), tls_key=str(pki.rogue_client_key)
    )
    assert message == (
        f"TLS handshake with the wfe-sqlite server at {address} failed: it closed the connection; "
        "does it accept the client certificate (one signed by its --tls-client-ca)?"
    )
    assert took < CONNECT_TIMEOUT / 2, took


async def test_tls_client_against_plaintext(pki: Pki, server_process: ServerProcess) -> None:  # noqa: F811
    message, took = await _refusal(_localhost(server_process), tls_ca=str(pki.ca))
    assert message.startswith(f"TLS handshake with the wfe-sqlite server at {_localhost(server_process)} failed: ")
    assert message.endswith("; does the server serve plaintext? then connect without TLS"), message
    assert took < CONNECT_TIMEOUT / 2, took


async def test_nothing_listening_is_no_server_answered() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    message, took = await _refusal(address)
    assert message.startswith(f"no wfe-sqlite server answered at {address} within {CONNECT_TIMEOUT}s (last error: ")
    assert "Connection refused" in message, message
    assert took >= CONNECT_TIMEOUT - 0.5, took


async def test_a_server_that_starts_late_is_waited_for(db_url: str) -> None:
    """Refused connections are retried until connect_timeout: a client may start before its server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def late_server() -> ServerProcess:
        await asyncio.sleep(1.5)
        return await asyncio.to_thread(_start_on, db_url, port)

    starting = asyncio.create_task(late_server())
    try:
        async with GrpcPersistenceProvider.connect(f"127.0.0.1:{port}", connect_timeout=20) as store:
            assert await store.next_definition_sequence("late") == 1
    finally:
        (await starting).kill()


def _start_on(db_url: str, port: int) -> ServerProcess:
    process = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", db_url, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on "), (line, process.stderr.read() if process.stderr else "")
    return ServerProcess(process, f"127.0.0.1:{port}")


_CONNECTS: dict[str, Any] = {
    "GrpcPersistenceProvider": GrpcPersistenceProvider.connect,
    "GrpcLockProvider": GrpcLockProvider.connect,
    "GrpcQueueProvider": GrpcQueueProvider.connect,
    "GrpcLifecyclePublisher": GrpcLifecyclePublisher.connect,
}


@pytest.mark.parametrize(
    ("address", "named", "example"),
    [
        ("localhost", "localhost", "localhost:50051"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1:50051"),
        ("localhost:", "localhost:", "localhost:50051"),
        ("dns:///localhost", "dns:///localhost", "dns:///localhost:50051"),
        ("dns:localhost", "dns:localhost", "dns:localhost:50051"),
        ("[::1]", "[::1]", "[::1]:50051"),
        ("::1", "::1", "[::1]:50051"),
        ("ipv4:127.0.0.1", "ipv4:127.0.0.1", "ipv4:127.0.0.1:50051"),
        (["127.0.0.1:1", "localhost"], "localhost", "localhost:50051"),
        ("127.0.0.1:1,localhost", "localhost", "localhost:50051"),
    ],
)
@pytest.mark.parametrize("connector", list(_CONNECTS))
async def test_an_address_without_a_port_is_invalid_argument(
    connector: str, address: Any, named: str, example: str
) -> None:
    """gRPC would take a port-less address to its default port (443) and the connect would wait for
    a server that is not there, then say none answered: refused at once instead, naming it."""
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as refused:
        async with _CONNECTS[connector](address, connect_timeout=2):
            pass
    assert str(refused.value) == f"address {named!r} has no port: a port is needed, as in {example!r}"
    assert refused.value.metadata == {"field": "address"}
    assert time.monotonic() - started < 1


async def _served_by(address: str, connector: str) -> None:
    async with _CONNECTS[connector](address, connect_timeout=CONNECT_TIMEOUT) as connected:
        if isinstance(connected, GrpcPersistenceProvider):
            assert await connected.next_definition_sequence("ported") >= 1
        elif isinstance(connected, GrpcLockProvider):
            assert await connected.acquire_lock(f"ported-{uuid.uuid4()}")
        elif isinstance(connected, GrpcQueueProvider):
            assert await connected.queue_work(str(uuid.uuid4()), QueueType.EVENT)
        else:
            assert await connected.publish(LifecycleEvent(LifecycleEventType.STARTED, "w", "d")) == 0


@pytest.mark.parametrize("connector", list(_CONNECTS))
async def test_addresses_with_ports_still_connect(db_url: str, connector: str) -> None:
    """A name, an IPv4 literal, a ``dns:`` and an ``ipv4:`` target with their ports, and an IPv6
    literal in brackets, against real server processes (one on 127.0.0.1, one on [::1])."""
    v4 = start_server_process(db_url)
    v6 = start_server_process(db_url, "--listen", "[::1]:0")
    try:
        port, port6 = v4.address.rsplit(":", 1)[1], v6.address.rsplit(":", 1)[1]
        assert v6.address == f"[::1]:{port6}"
        for address in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"dns:///localhost:{port}",
            f"ipv4:127.0.0.1:{port}",
            f"[::1]:{port6}",
            f"ipv6:[::1]:{port6}",
        ):
            await _served_by(address, connector)
    finally:
        v4.kill()
        v6.kill()


async def test_a_unix_socket_target_still_connects(db_url: str, tmp_path: Path) -> None:
    """``unix:PATH`` has no port and needs none: the wfe-sqlite services on a gRPC server that
    listens on a Unix socket (the server command listens on TCP only)."""
    store = await SqlitePersistenceProvider.open(db_url)
    server = grpc.aio.server()
    add_servicers(server, store, 60.0)
    add_cluster_servicers(server, store, 60.0)
    socket_path = tmp_path / "wfe.sock"
    assert server.add_insecure_port(f"unix:{socket_path}") == 1
    await server.start()
    try:
        for connector in _CONNECTS:
            await _served_by(f"unix:{socket_path}", connector)
    finally:
        await server.stop(None)
        await store.close()
