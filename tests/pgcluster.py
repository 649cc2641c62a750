"""A throwaway PostgreSQL cluster for tests, benchmarks and trying the server out.

``PgCluster.start()`` runs ``initdb`` and ``pg_ctl`` from the machine's PostgreSQL binaries
(``/usr/lib/postgresql/<major>/bin``, or ``$WFE_PG_BIN``) on a free port, with its data and unix
socket in a temporary directory. ``initdb`` refuses to run as root, so as root both run through
``runuser -u postgres`` on a directory owned by postgres. Trust authentication on 127.0.0.1 only.

As a script (``make serve-postgres``): ``python tests/pgcluster.py [--dir DIR]`` starts a cluster,
prints its URL and keeps it running until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "PostgresMissing", "find_bin_dir"]

SUPERUSER = "postgres"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The directory of ``initdb``/``pg_ctl``: ``$WFE_PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin``."""
    override = os.environ.get("WFE_PG_BIN")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    raise PostgresMissing(
        "PostgreSQL server binaries not found (no initdb under /usr/lib/postgresql/*/bin or $WFE_PG_BIN): "
        "install them with `apt-get install postgresql` (the Makefile's `make postgres-binaries` does it)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgCluster:
    """One PostgreSQL server process over a data directory in ``root``."""

    def __init__(self, root: Path, port: int, bin_dir: Path) -> None:
        self.root = root
        self.port = port
        self.bin_dir = bin_dir
        self.data = root / "data"
        self._as_root = os.geteuid() == 0

    @classmethod
    def start(cls, root: Path | None = None, *, durable: bool = False) -> PgCluster:
        """initdb + start. ``durable=False`` turns fsync off (tests: faster, and nothing here
        survives a machine crash anyway); benchmarks pass ``durable=True``."""
        bin_dir = find_bin_dir()
        root = Path(tempfile.mkdtemp(prefix="wfe-pg-")) if root is None else root
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, SUPERUSER, SUPERUSER)
        cluster = cls(root, _free_port(), bin_dir)
        try:
            cluster._run("initdb", "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
            settings = [
                "listen_addresses = '127.0.0.1'",
                f"port = {cluster.port}",
                f"unix_socket_directories = '{root}'",
                "max_connections = 300",
                "shared_buffers = 128MB",
                f"fsync = {'on' if durable else 'off'}",
                "log_min_messages = warning",
            ]
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.write("\n" + "\n".join(settings) + "\n")
            cluster.resume()
        except BaseException:  # a failure, or SIGTERM (SystemExit) mid-start: leave nothing behind
            cluster.stop()
            raise
        return cluster

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.root
        ) as process:
            try:
                out, err = process.communicate(timeout=timeout)
            except BaseException:
                # SIGTERM, not subprocess.run's SIGKILL: runuser passes it on to the tool, which a
                # SIGKILL of runuser would leave running (an initdb writing into a removed directory).
                process.terminate()
                process.wait()
                raise
        if process.returncode != 0:
            raise RuntimeError(f"{tool} failed ({process.returncode}): {out}{err}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def resume(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def pause(self) -> None:
        """Stop the server (fast shutdown: running transactions are rolled back)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser; its output (tuples only, unaligned)."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(dbname),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(RuntimeError):  # not running
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL until interrupted.")
    parser.add_argument("--dir", type=Path, help="directory for the cluster (default: a new temporary one)")
    parser.add_argument("--url-file", type=Path, help="write the database URL to this file once ready")
    parser.add_argument("--dbname", default="wfe")
    args = parser.parse_args()

    # Stop and clean up on SIGTERM (make serve-postgres stops it so) and SIGHUP too, also mid-start:
    # start() removes what it had made when SystemExit interrupts it. Once: a second signal (one to
    # the process group, then make's trap) must not interrupt the clean-up.
    def stop_once(signum: int, frame: object) -> None:
        for ignored in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(ignored, signal.SIG_IGN)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_once)
    signal.signal(signal.SIGHUP, stop_once)  # its terminal closed
    try:
        cluster = PgCluster.start(args.dir, durable=True)
    except PostgresMissing as error:
        print(error, file=sys.stderr)
        return 2
    try:
        url = cluster.create_database(args.dbname)
        if args.url_file:
            args.url_file.write_text(url + "\n")
        print(f"postgresql ready: {url} (data in {cluster.root})", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        for ignored in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the clean-up runs to its end
            signal.signal(ignored, signal.SIG_IGN)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
