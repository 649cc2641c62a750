"""What ``wfe-sqlite`` prints and leaves behind when it starts, fails to start, and serves.

Through real processes: ``--version``; a start that fails (address taken, metrics address taken)
creates no database file; unusable TLS files and a host that does not resolve are named in one line
of ours, without gRPC's; with ``--log-format json`` the lines the command prints itself are JSON
too; gRPC core's own log lines (a client hanging up, a failed TLS handshake) stay out of the log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import WFE_SQLITE, start_server_process
from test_security import Pki, pki  # noqa: F401  (the module's certificates fixture)
from wfe_sqlite import __version__

ABSL_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ", re.M)
"""A line gRPC core logs through absl: ``I1201 01:00:07.848250    7575 chttp2_transport.cc:1403] ...``."""

OUR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ wfe_sqlite\.[\w.]+: ")
"""A line of the server's own text log."""


def _serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WFE_SQLITE), "serve", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    result = subprocess.run([str(WFE_SQLITE), "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"wfe-sqlite {__version__}\n", "")
    assert __version__ == version("wfe-sqlite-server")


@pytest.mark.parametrize("taken", ["listen", "metrics"])
def test_a_failed_start_creates_no_database_file(tmp_path: Path, taken_port: int, taken: str) -> None:
    address = f"127.0.0.1:{taken_port}"
    args = ["--listen", address] if taken == "listen" else ["--listen", "127.0.0.1:0", "--metrics-listen", address]
    result = _serve("--db", "sqlite://wfe.db", *args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    what = "listen" if taken == "listen" else "serve metrics"
    assert result.stderr.startswith(f"wfe-sqlite: cannot {what} on {address}: "), result.stderr
    assert "in use" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed start left files behind"


def test_a_failed_start_leaves_an_existing_database_alone(tmp_path: Path, taken_port: int) -> None:
    first = _serve("--db", "sqlite://wfe.db", "--listen", f"127.0.0.1:{taken_port}", cwd=tmp_path)
    assert first.returncode == 2 and not (tmp_path / "wfe.db").exists()
    server = start_server_process(f"sqlite://{tmp_path / 'wfe.db'}")
    assert server.terminate() == 0
    before = (tmp_path / "wfe.db").read_bytes()
    again = _serve("--db", "sqlite://wfe.db", "--listen", f"127.0.0.1:{taken_port}", cwd=tmp_path)
    assert again.returncode == 2, again
    assert (tmp_path / "wfe.db").read_bytes() == before


def test_json_log_format_makes_every_line_json(tmp_path: Path, taken_port: int) -> None:
    process = subprocess.Popen(
        [
            str(WFE_SQLITE),
            "serve",
            "--db",
            f"sqlite://{tmp_path / 'wfe.db'}",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        listening, metrics = json.loads(process.stdout.readline()), json.loads(process.stdout.readline())
    finally:
        process.terminate()
        rest, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and rest == ""
    assert set(listening) == {"time", "level", "logger", "message", "address"}, listening
    assert listening["message"] == f"listening on {listening['address']}"
    assert re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", listening["address"]), listening
    assert (listening["level"], listening["logger"]) == ("INFO", "wfe_sqlite.server")
    assert set(metrics) == {"time", "level", "logger", "message", "url"}, metrics
    assert metrics["message"] == f"metrics on {metrics['url']}"
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/metrics", metrics["url"]), metrics
    logged = [json.loads(line) for line in stderr.splitlines()]
    assert [entry["message"].split(" ", 1)[0] for entry in logged] == ["serving", "stopping:", "stopped;"], stderr

    failed = _serve(
        "--db", "sqlite://other.db", "--listen", f"127.0.0.1:{taken_port}", "--log-format", "json", cwd=tmp_path
    )
    assert failed.returncode == 2 and failed.stdout == ""
    [error] = [json.loads(line) for line in failed.stderr.splitlines()]
    assert (error["level"], error["logger"]) == ("ERROR", "wfe_sqlite.cli"), error
    assert error["message"] == f"wfe-sqlite: cannot listen on 127.0.0.1:{taken_port}: Address already in use", error


def _hang_up_with_goaway(address: str) -> None:
    """Open an HTTP/2 connection and leave with GOAWAY CANCEL (8), as Node's HTTP/2 client does on close."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        goaway = struct.pack(">I", 8)[1:] + b"\x07\x00" + struct.pack(">III", 0, 0, 8)
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + goaway)
        connection.recv(1024)


def _plaintext_to_tls(address: str) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        connection.recv(1024)


@pytest.mark.parametrize("verbosity", [None, "INFO"])
def test_grpc_core_lines_stay_out_of_the_server_log(
    pki: Pki,  # noqa: F811  (the fixture)
    tmp_path: Path,
    verbosity: str | None,
) -> None:
    """A client hanging up and a failed handshake print nothing; GRPC_VERBOSITY=INFO shows that they would."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    if verbosity is not None:
        env["GRPC_VERBOSITY"] = verbosity
    servers = [
        (start_server_process(f"sqlite://{tmp_path / 'plain.db'}", env=env), _hang_up_with_goaway),
        (
            start_server_process(
                f"sqlite://{tmp_path / 'tls.db'}",
                "--tls-cert",
                str(pki.server_cert),
                "--tls-key",
                str(pki.server_key),
                env=env,
            ),
            _plaintext_to_tls,
        ),
    ]
    for server, client in servers:
        client(server.address)
    time.sleep(1)  # gRPC core logs from its own threads
    logs = []
    for server, _ in servers:
        assert server.terminate() == 0
        logs.append(server.process.communicate(timeout=30)[1])
    if verbosity is None:
        for log in logs:
            assert not ABSL_LINE.search(log), log
            assert all(OUR_LINE.match(line) for line in log.splitlines()), log
    else:
        assert "Got goaway [8]" in logs[0], logs[0]
        assert "Handshake failed" in logs[1], logs[1]


def _encrypted_copy(key: Path, directory: Path) -> Path:
    """``key`` encrypted with a passphrase (PKCS#8)."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    path = directory / "encrypted.key"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return path


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        pytest.param(
            ["--tls-cert", "{key}", "--tls-key", "{cert}"],
            {},
            "tls_cert: {key} holds a private key, not a certificate; tls_cert and tls_key look swapped "
            "(from --tls-cert)",
            id="swapped",
        ),
        pytest.param(
            ["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
            {},
            "tls_key: the private key in {other_key} does not match the certificate in {cert} (from --tls-key)",
            id="key-of-another-certificate",
        ),
        pytest.param(
            [],
            {"WFE_SQLITE_TLS_CERT": "{cert}", "WFE_SQLITE_TLS_KEY": "{other_key}"},
            "tls_key: the private key in {other_key} does not match the certificate in {cert} "
            "(from WFE_SQLITE_TLS_KEY)",
            id="key-of-another-certificate-from-the-environment",
        ),
        pytest.param(
            ["--tls-cert", "{cert}", "--tls-key", "{cert}"],
            {},
            "tls_key: {cert} holds a certificate, not a private key (from --tls-key)",
            id="certificate-as-key",
        ),
        pytest.param(
            ["--tls-cert", "{cert}", "--tls-key", "{encrypted}"],
            {},
            "tls_key: {encrypted} is an encrypted private key and gRPC takes no passphrase: decrypt it "
            "(openssl pkey -in {encrypted} -out PLAIN.key) and keep the copy private (from --tls-key)",
            id="encrypted-key",
        ),
        pytest.param(
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{key}"],
            {},
            "tls_client_ca: {key} holds a private key, not a certificate (from --tls-client-ca)",
            id="client-ca-is-a-key",
        ),
    ],
)
def test_unusable_tls_files_stop_start_up_naming_the_setting(
    pki: Pki,  # noqa: F811  (the fixture)
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    error: str,
) -> None:
    """Checked before gRPC sees them: exit 2, one line naming the setting, its source and the file, and
    none of gRPC's (it logged ``E1201 ... add_port.cc:56] Unable to create secure server`` and the
    error blamed the listen address)."""
    files = {
        "cert": str(pki.server_cert),
        "key": str(pki.server_key),
        "other_key": str(pki.client_key),
        "encrypted": str(_encrypted_copy(pki.server_key, tmp_path)),
    }
    args = [arg.format(**files) for arg in args]
    env = {name: value.format(**files) for name, value in env.items()}
    result = _serve("--db", "sqlite://wfe.db", "--listen", "127.0.0.1:0", *args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr == f"wfe-sqlite: invalid setting {error.format(**files)}\n"
    assert not ABSL_LINE.search(result.stderr) and "add_port" not in result.stderr
    assert not (tmp_path / "wfe.db").exists(), "nothing was opened"


def test_swapped_tls_files_from_a_config_file(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "wfe.toml").write_text(f'tls_cert = "{pki.server_key}"\ntls_key = "{pki.server_cert}"\n')
    result = _serve("--db", "sqlite://wfe.db", "--listen", "127.0.0.1:0", "--config", "wfe.toml", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr == (
        f"wfe-sqlite: invalid setting tls_cert: {pki.server_key} holds a private key, not a certificate; "
        "tls_cert and tls_key look swapped (from config file wfe.toml)\n"
    )


def test_a_weak_but_matching_key_pair_still_serves(tmp_path: Path) -> None:
    """The check judges the files, not their algorithms: a 1024-bit RSA key, which OpenSSL's default
    security level refuses (``EE_KEY_TOO_SMALL``), is served as gRPC served it before the check."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "weak.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "weak.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    db = f"sqlite://{tmp_path / 'wfe.db'}"
    server = start_server_process(db, "--tls-cert", str(tmp_path / "weak.crt"), "--tls-key", str(tmp_path / "weak.key"))
    assert server.terminate() == 0


@pytest.mark.parametrize("port", ["5000", "0"])
def test_a_host_that_does_not_resolve_is_named(tmp_path: Path, port: str) -> None:
    """Not gRPC's ``add_port.cc:83] Failed to add port`` line and ``Failed to bind to address``."""
    listen = f"nohost.invalid:{port}"
    result = _serve("--db", "sqlite://wfe.db", "--listen", listen, "--insecure", cwd=tmp_path)
    assert result.returncode == 2, result
    [line] = result.stderr.splitlines()
    assert line.startswith(f"wfe-sqlite: cannot listen on {listen}: cannot resolve host 'nohost.invalid': "), line
    assert not ABSL_LINE.search(result.stderr)
    assert not (tmp_path / "wfe.db").exists(), "a failed start left a database file"
