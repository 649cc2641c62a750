"""Shared helpers of the reliability tests and drivers: real server processes, RSS, settings.

Importable both from pytest (``tests/reliability`` is on ``sys.path``) and from the drivers run as
scripts (``python tests/reliability/soak.py``), so it depends on nothing from ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WFE_SQLITE = Path(sys.executable).parent / "wfe-sqlite"


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment (how `make stress` scales the tests up)."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass
class Server:
    """A ``wfe-sqlite serve`` child process on 127.0.0.1 (port 0), stderr to a log file."""

    process: subprocess.Popen[str]
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def sigkill(self) -> None:
        """SIGKILL, the crash: no graceful shutdown, no checkpoint."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.sigkill()
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        """Resident set size of the server process (VmRSS, KiB)."""
        return rss_kib(self.pid)


def start_server(
    db_url: str, log_path: Path, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> Server:
    """Start ``wfe-sqlite serve --db db_url --listen 127.0.0.1:0`` and wait for ``listening on``."""
    with open(log_path, "a") as log:  # the child has its own descriptor of the file
        process = subprocess.Popen(
            [str(WFE_SQLITE), "serve", "--db", db_url, "--listen", "127.0.0.1:0", "--grace", "2", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()  # the server prints this line once it accepts calls
    if not line.startswith("listening on "):
        process.kill()
        process.wait(30)
        raise RuntimeError(f"server did not start (exit {process.returncode}): {line!r}\n{log_path.read_text()}")
    if time.monotonic() > deadline:  # pragma: no cover - diagnostic only
        raise RuntimeError("server took too long to start")
    return Server(process, line.split("listening on ", 1)[1].strip(), log_path)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def integrity_check(path: Path | str) -> str:
    """``PRAGMA integrity_check`` of a database file (opened read-only, after the server stopped)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def status_reason(error: object) -> str | None:
    """The ``google.rpc.ErrorInfo`` reason of a failed gRPC call, or None."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in getattr(error, "trailing_metadata", lambda: ())() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return None
