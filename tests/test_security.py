"""Security through real ``wfe-sqlite serve`` processes: TLS, mutual TLS, bearer tokens, loopback rule.

The certificates are made here: a CA, a server certificate for 127.0.0.1/localhost, a client
certificate from the same CA, and a second ("rogue") CA with a client certificate of its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from conftest import WFE_SQLITE, ServerProcess, start_server_process
from wfe_client import GrpcPersistenceProvider, WfeError, WorkflowInstance
from wfe_client.timeutil import utc_now
from wfe_sqlite._servicer import SERVICE_NAMES

TOKEN = "s3cret-token-for-tests"


# -- certificates ------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: Any, *, ca: bool, usage: Any = None
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage == "server":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif usage == "client":
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _authority(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, key, _name(name), key, ca=True)
    path, _ = _write(directory, name, cert, key)
    return path, cert, key


def _leaf(
    directory: Path, name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, usage: str
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(directory, name, _certificate(name, key, ca.subject, ca_key, ca=False, usage=usage), key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = _authority(directory, "test-ca")
    server_cert, server_key = _leaf(directory, "server", ca_cert, ca_key, "server")
    client_cert, client_key = _leaf(directory, "client", ca_cert, ca_key, "client")
    rogue_ca, rogue_cert, rogue_key = _authority(directory, "rogue-ca")
    rogue_client_cert, rogue_client_key = _leaf(directory, "rogue-client", rogue_cert, rogue_key, "client")
    return Pki(ca, server_cert, server_key, client_cert, client_key, rogue_ca, rogue_client_cert, rogue_client_key)


@contextmanager
def _started(db_url: str, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    process = start_server_process(db_url, *args, env=env)
    try:
        yield process
    finally:
        process.kill()


async def _round_trip(address: str, **connect: Any) -> None:
    """A write and a read through the Python adapter."""
    async with GrpcPersistenceProvider.connect(address, connect_timeout=30, **connect) as store:
        workflow = WorkflowInstance.new("secure-flow", 1, {"n": 1})
        await store.create_new_workflow(workflow)
        assert (await store.get_workflow_instance(workflow.id)).data == {"n": 1}


def _pem(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


async def _refused(
    address: str, *, tls: bool = True, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> None:
    """A client the server must refuse at the TLS handshake: its first call fails UNAVAILABLE.

    The call is a health check (open without a token) that does not wait for the channel to be
    ready, so a failed handshake fails it at once.
    """
    if tls:
        credentials = grpc.ssl_channel_credentials(_pem(ca), _pem(key), _pem(cert))
        channel = grpc.aio.secure_channel(address, credentials)
    else:
        channel = grpc.aio.insecure_channel(address)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value


# -- TLS ---------------------------------------------------------------------------------------


async def test_tls_serves_clients_that_trust_its_ca(pki: Pki, db_url: str) -> None:
    with _started(db_url, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)) as server:
        await _round_trip(server.address, tls_ca=str(pki.ca))
        # The same through a hand-made channel credential, with a host name instead of the IP.
        port = server.address.rsplit(":", 1)[1]
        await _round_trip(
            f"localhost:{port}", credentials=grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        )
        await _refused(server.address, tls=False)  # plaintext
        await _refused(server.address, ca=pki.rogue_ca)  # does not trust the server's CA


async def test_mutual_tls_requires_a_client_certificate_from_its_ca(pki: Pki, db_url: str) -> None:
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)]
    with _started(db_url, *args) as server:
        await _round_trip(
            server.address, tls_ca=str(pki.ca), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
        )
        await _refused(server.address, ca=pki.ca)  # no client certificate
        # A certificate from another CA.
        await _refused(server.address, ca=pki.ca, cert=pki.rogue_client_cert, key=pki.rogue_client_key)
        await _refused(server.address, tls=False)  # plaintext


# -- bearer tokens -----------------------------------------------------------------------------


def _every_method() -> list[tuple[str, Any, Any]]:
    """(path, request class, kind) of every method of the persistence services and reflection."""
    pool = descriptor_pool.Default()
    methods = []
    for service_name in (*SERVICE_NAMES, "grpc.reflection.v1alpha.ServerReflection"):
        service = pool.FindServiceByName(service_name)
        for method in service.methods:
            request = message_factory.GetMessageClass(method.input_type)
            kind = ("stream" if method.client_streaming else "unary", "stream" if method.server_streaming else "unary")
            methods.append((f"/{service_name}/{method.name}", request, kind))
    return methods


async def _invoke(channel: grpc.aio.Channel, path: str, request: Any, kind: tuple[str, str], token: str | None) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    if kind == ("unary", "unary"):
        await channel.unary_unary(path, request_serializer=request.SerializeToString)(
            request, metadata=metadata, timeout=30
        )
    elif kind == ("unary", "stream"):
        async for _ in channel.unary_stream(path, request_serializer=request.SerializeToString)(
            request, metadata=metadata, timeout=30
        ):
            pass
    else:
        # A refused stream is closed before it reads: sending into it would race with the close
        # (the client then reports its own INTERNAL write failure), so send only when accepted.
        requests = iter([request]) if token == TOKEN else iter(())
        call = channel.stream_stream(path, request_serializer=request.SerializeToString)(
            requests, metadata=metadata, timeout=30
        )
        async for _ in call:
            pass


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details in {error}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError(f"no ErrorInfo in {status}")


async def test_every_service_but_health_needs_a_valid_token(tmp_path: Path, db_path: Path, db_url: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\n\nother-token\n{TOKEN}\n")
    methods = _every_method()
    assert {path.split("/")[1] for path, _, _ in methods} == {
        *SERVICE_NAMES,
        "grpc.reflection.v1alpha.ServerReflection",
    }
    with _started(db_url, "--tokens-file", str(tokens)) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            for path, request_class, kind in methods:
                for token in (None, "wrong-token", ""):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await _invoke(channel, path, request_class(), kind, token)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (path, token, refused.value)
                    assert _reason(refused.value) == "UNAUTHENTICATED", path
                # With the token the call reaches the service (whatever it then makes of an empty request).
                try:
                    await _invoke(channel, path, request_class(), kind, TOKEN)
                except grpc.aio.AioRpcError as error:
                    assert error.code() != grpc.StatusCode.UNAUTHENTICATED, path
            # Health stays open for probes.
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # Refused writes wrote nothing, though the requests were valid.
        async with GrpcPersistenceProvider.connect(server.address, token="wrong-token") as intruder:
            with pytest.raises(WfeError) as refused_write:
                await intruder.create_new_workflow(WorkflowInstance.new("intruder", 1, {}))
            assert refused_write.value.code == "UNAUTHENTICATED"
            with pytest.raises(WfeError):
                await intruder.next_definition_sequence("seq")
        async with GrpcPersistenceProvider.connect(server.address, token=TOKEN) as store:
            assert await store.next_definition_sequence("seq") == 1
            await _round_trip(server.address, token="other-token")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT name FROM workflows").fetchall() == [("secure-flow-1",)]


async def test_tokens_from_the_environment(db_url: str) -> None:
    with _started(db_url, env={"WFE_SQLITE_TOKENS": f"first-token, {TOKEN}"}) as server:
        await _round_trip(server.address, token=TOKEN)
        await _round_trip(server.address, token="first-token")
        async with GrpcPersistenceProvider.connect(server.address) as anonymous:
            with pytest.raises(WfeError) as refused:
                await anonymous.get_runnable_instances(utc_now())
            assert refused.value.code == "UNAUTHENTICATED"


async def test_tokens_over_tls(pki: Pki, db_url: str) -> None:
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    with _started(db_url, *args, env={"WFE_SQLITE_TOKENS": TOKEN}) as server:
        await _round_trip(server.address, tls_ca=str(pki.ca), token=TOKEN)
        async with GrpcPersistenceProvider.connect(server.address, tls_ca=str(pki.ca), token="nope") as store:
            with pytest.raises(WfeError) as refused:
                await store.get_runnable_instances(utc_now())
            assert refused.value.code == "UNAUTHENTICATED"


# -- where it listens --------------------------------------------------------------------------


def test_a_non_loopback_address_needs_protection_or_insecure(tmp_path: Path) -> None:
    db = f"sqlite://{tmp_path / 'wfe.db'}"
    refused = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", db, "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2, refused.stderr
    assert "invalid setting listen" in refused.stderr and "--insecure" in refused.stderr
    assert not (tmp_path / "wfe.db").exists(), "refused before touching the database"
    with _started(db, "--listen", "0.0.0.0:0", "--insecure") as server:
        assert server.address.startswith("0.0.0.0:")
    with _started(db, "--listen", "0.0.0.0:0", env={"WFE_SQLITE_TOKENS": TOKEN}) as server:
        assert server.address.startswith("0.0.0.0:")


def test_reflection_needs_the_token_too(tmp_path: Path, db_url: str) -> None:
    with _started(db_url, env={"WFE_SQLITE_TOKENS": TOKEN}) as server, grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ServerReflectionInfo(iter(()), timeout=30))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = list(
            stub.ServerReflectionInfo(iter([request]), timeout=30, metadata=(("authorization", f"Bearer {TOKEN}"),))
        )
        listed = {service.name for service in replies[0].list_services_response.service}
        assert set(SERVICE_NAMES) <= listed
