"""``make serve-postgres``: a throwaway PostgreSQL and two servers on it, all stopped together.

Run as a user would (its own session, Ctrl-C is SIGINT to the whole process group), on this
checkout's virtualenv (``VENV``, with ``-o`` so make installs nothing). Each test starts one
PostgreSQL cluster (a few seconds).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from wfe_client import GrpcPersistenceProvider, WorkflowInstance

VENV = Path(sys.prefix)
READY = re.compile(r"^postgresql ready: postgresql://postgres@127\.0\.0\.1:(\d+)/wfe \(data in (\S+)\)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Make:
    """``make serve-postgres`` in a session of its own; its output, line by line."""

    def __init__(self, listen_1: str, listen_2: str) -> None:
        # As from a terminal: SIGINT at its default. A test run started in the background of a
        # non-interactive shell (a CI runner, `cmd &`) inherits SIGINT ignored, and a shell that
        # starts with SIGINT ignored cannot trap it (POSIX): the recipe's Ctrl-C trap would never
        # run, which is not what a user at a terminal gets.
        self.process = subprocess.Popen(
            [
                "env",
                "--default-signal=INT",
                "make",
                "--no-print-directory",
                "-o",
                str(VENV / ".installed-serve"),
                "serve-postgres",
                f"VENV={VENV}",
                f"PG_LISTEN_1={listen_1}",
                f"PG_LISTEN_2={listen_2}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.pg_port = 0
        self.pg_dir = Path()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _take(self, line: str) -> None:
        self.lines.append(line)
        ready = READY.match(line)
        if ready:
            self.pg_port, self.pg_dir = int(ready[1]), Path(ready[2])

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first line of the output so far or to come that contains ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if pattern in line:
                    return line
            try:
                taken = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))
            assert taken is not None, f"make ended before {pattern!r}:\n" + "\n".join(self.lines)
            self._take(taken)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make serve-postgres still running after {timeout}s:\n" + "\n".join(self.lines))
        while (line := self._queue.get(timeout=10)) is not None:
            self._take(line)
        return code

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to make's process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def assert_all_gone(self) -> None:
        """No process of make's group left (within seconds: the last may still be exiting),
        PostgreSQL down and its directory deleted."""
        deadline = time.monotonic() + 10
        while True:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                left = subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(self.process.pid)], capture_output=True)
                pytest.fail(f"processes left in make's group:\n{left.stdout.decode()}\n" + "\n".join(self.lines))
            time.sleep(0.1)
        assert self.pg_port, "no 'postgresql ready' line:\n" + "\n".join(self.lines)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", self.pg_port), 5):
            pass
        assert not self.pg_dir.exists(), f"{self.pg_dir} left behind"

    def kill(self) -> None:
        """Clean up after a failed test: SIGTERM to the group (the old recipe's trap, pgcluster's handler)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
def ports() -> Iterator[tuple[str, str]]:
    yield f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"


async def test_ctrl_c_stops_both_servers_and_postgresql(ports: tuple[str, str]) -> None:
    make = Make(*ports)
    try:
        pg_port = make.wait_for("postgresql ready: ") and make.pg_port
        for address in ports:
            make.wait_for(
                f"INFO wfe_sqlite.server: serving postgresql://postgres@127.0.0.1:{pg_port}/wfe on {address} "
            )
        async with GrpcPersistenceProvider.connect(",".join(ports)) as store:
            ids = [await store.create_new_workflow(WorkflowInstance.new("pg", 1, {"n": n})) for n in range(4)]
            assert [(await store.get_workflow_instance(i)).data["n"] for i in ids] == [0, 1, 2, 3]
            # One server killed: the other goes on serving (a failover to try), make keeps running.
            found = subprocess.run(["pgrep", "-f", "--", f"serve --db .* --listen {ports[0]}$"], capture_output=True)
            (pid,) = found.stdout.split()
            os.kill(int(pid), signal.SIGKILL)
            for n in range(10):  # reads are sent again to the live server (a write could meet the
                # dead connection before the client noticed, and fail UNAVAILABLE: README)
                assert (await store.get_workflow_instance(ids[n % 4])).data["n"] == n % 4
            assert make.process.poll() is None, "\n".join(make.lines)
        make.interrupt()
        assert make.wait_exit(60) != 0
        make.assert_all_gone()
        assert not [line for line in make.lines if line.startswith("make serve-postgres:")], make.lines
    finally:
        make.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_group_stops_everything(ports: tuple[str, str], signum: signal.Signals) -> None:
    """A supervisor's SIGTERM to the group, or the terminal closing (SIGHUP). Before, SIGTERM to
    the group reached the cluster's process twice (directly and from the trap) and the second
    interrupted its clean-up: the directory was left, half deleted; SIGHUP killed it before any."""
    make = Make(*ports)
    try:
        for address in ports:
            make.wait_for(f" on {address} (plaintext")
        os.killpg(make.process.pid, signum)
        make.wait_exit(60)
        make.assert_all_gone()
    finally:
        make.kill()


def test_ctrl_c_during_start_up_stops_what_started(ports: tuple[str, str]) -> None:
    """Before, the trap was set once both servers were started: a Ctrl-C until then left the
    cluster (its process ignores SIGINT, a background job) and, from migrate on, both servers up."""
    make = Make(*ports)
    try:
        make.wait_for("postgresql ready: ")
        make.interrupt()
        assert make.wait_exit(60) != 0
        make.assert_all_gone()
        assert not [line for line in make.lines if line.startswith("listening on")], make.lines
    finally:
        make.kill()


def test_a_server_that_cannot_start_stops_the_rest(ports: tuple[str, str]) -> None:
    """Before, make went on with one server (and the banner of two) until Ctrl-C."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(ports[1].rsplit(":", 1)[1])))
        taken.listen()
        make = Make(*ports)
        try:
            code = make.wait_exit(90)
        finally:
            make.kill()
    output = "\n".join(make.lines)
    assert code != 0, output
    assert f"cannot listen on {ports[1]}: Address already in use" in output, output
    assert f"make serve-postgres: the server on {ports[1]} could not start (exit 2)" in output, output
    make.assert_all_gone()
