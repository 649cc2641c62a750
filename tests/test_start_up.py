"""What ``wfe-sqlite`` prints and leaves behind when it starts, fails to start, and serves.

Through real processes: ``--version``; a start that fails (address taken, metrics address taken)
creates no database file; with ``--log-format json`` the lines the command prints itself are JSON
too; gRPC core's own log lines (a client hanging up, a failed TLS handshake) stay out of the log.
"""

from __future__ import annotations

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
