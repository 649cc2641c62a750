"""The ``wfe-sqlite`` command line: ``serve``, the maintenance commands ``migrate``, ``backup``,
``check``, ``stats``, and the visibility commands ``list``, ``show``, ``purge`` (``_visibility_cli``).
On PostgreSQL ``backup`` and ``check`` refuse (exit 2) and name the tools to use instead
(``pg_dump``, ``pg_amcheck``).

Exit codes: 0 success; 1 ``check`` found problems or ``show`` found no such workflow; 2 invalid
settings or a database that cannot be used (the message names the setting or the file); 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._config import ConfigError, add_arguments, check, environment_help, resolve
from ._connection import DatabaseOpenError, parse_database_url
from ._logging import configure_logging, status_line
from ._maintenance import backup, integrity_problems, open_existing, store_stats
from ._postgres_store import is_postgres_url, migrate_url, postgres_stats, redact_url
from ._provider import SqlitePersistenceProvider
from ._schema import SCHEMA_VERSION
from ._visibility_cli import VISIBILITY_COMMANDS, add_visibility_commands
from .server import serve

__all__ = ["main"]

_DB_ONLY = ("db",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfe-sqlite", description="The WFE persistence provider on SQLite, served over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve",
        help="serve the persistence API over gRPC",
        description="Serve the persistence API over gRPC until SIGTERM or SIGINT.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(run)

    copy = commands.add_parser(
        "backup",
        help="copy the database consistently while the server runs",
        description="Write a consistent copy of the database (as of one instant) to DEST, online.",
    )
    copy.add_argument("dest", metavar="DEST", help="file to write (must not exist unless --force)")
    copy.add_argument("--force", action="store_true", help="replace DEST if it exists")
    add_arguments(copy, _DB_ONLY)

    verify = commands.add_parser(
        "check",
        help="integrity check of the database (exit 0: sound, 1: problems)",
        description="Run PRAGMA integrity_check and foreign_key_check; exit 0 when sound, 1 otherwise.",
    )
    add_arguments(verify, _DB_ONLY)

    upgrade = commands.add_parser(
        "migrate",
        help="create the schema or upgrade it to this version (servers also do it at start-up)",
        description="Apply the missing schema migrations in order; a database newer than this binary: exit 2.",
    )
    add_arguments(upgrade, _DB_ONLY)

    figures = commands.add_parser(
        "stats",
        help="row counts, runnable workflows, unprocessed events, due commands, file sizes",
        description="Show what the database holds (one consistent snapshot).",
    )
    figures.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(figures, _DB_ONLY)
    add_visibility_commands(commands)
    return parser


def _fail(message: object, code: int = 2, log_format: str = "text") -> int:
    """Print ``wfe-sqlite: message`` (in ``json``, a JSON line of level ERROR) and return ``code``."""
    print(status_line(log_format, f"wfe-sqlite: {message}", __name__, "ERROR"), file=sys.stderr)
    return code


def _serve(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ)
    check(config)  # every invalid setting stops start-up here, before anything is opened
    configure_logging(config.log_level, config.log_format)
    try:
        asyncio.run(serve(config))
    except (DatabaseOpenError, OSError, ValueError) as error:
        return _fail(error, log_format=config.log_format)
    except KeyboardInterrupt:
        return 130
    return 0


_PG_BACKUP = (
    "backup works on SQLite files; for PostgreSQL use pg_dump (e.g. `pg_dump -Fc -f wfe.dump DBNAME`) "
    "or the server's own physical backups (pg_basebackup, WAL archiving)"
)
_PG_CHECK = (
    "check works on SQLite files; for PostgreSQL use pg_amcheck (e.g. `pg_amcheck --heapallindexed DBNAME`), "
    "which checks tables and indexes with the amcheck extension"
)


def _migrate(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if is_postgres_url(config.db):
        try:
            before, after = asyncio.run(migrate_url(config.db))
        except DatabaseOpenError as error:
            return _fail(error)
        where = redact_url(config.db)
    else:

        async def upgrade() -> tuple[int, int]:
            before = 0
            with contextlib.suppress(FileNotFoundError):
                conn, _ = open_existing(config.db)
                with contextlib.closing(conn):
                    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
            provider = await SqlitePersistenceProvider.open(config.db)
            await provider.close()
            return before, max(before, SCHEMA_VERSION)

        try:
            before, after = asyncio.run(upgrade())
        except DatabaseOpenError as error:
            return _fail(error)
        where = config.db
    print(
        f"{where}: schema version {before} -> {after}"
        if before != after
        else f"{where}: schema version {after}, up to date"
    )
    return 0


def _backup(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if is_postgres_url(config.db):
        return _fail(_PG_BACKUP)
    size = backup(config.db, args.dest, overwrite=args.force)
    print(f"backed up {config.db} to {args.dest} ({size} bytes)")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if is_postgres_url(config.db):
        return _fail(_PG_CHECK)
    conn, path = open_existing(config.db)
    with contextlib.closing(conn):
        try:
            problems = integrity_problems(conn)
        except sqlite3.DatabaseError as error:
            problems = [str(error)]
    if problems:
        for problem in problems:
            print(problem)
        print(f"{path}: {len(problems)} problem(s)")
        return 1
    print(f"{path}: ok")
    return 0


def _stats(args: argparse.Namespace) -> int:
    config = resolve(args, os.environ, _DB_ONLY)
    if is_postgres_url(config.db):
        try:
            stats = asyncio.run(postgres_stats(config.db))
        except DatabaseOpenError as error:
            return _fail(error)
    else:
        conn, path = open_existing(config.db, require_schema=True)
        with contextlib.closing(conn):
            stats = store_stats(conn, path)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(_human(stats))
    return 0


def _human(stats: dict[str, Any]) -> str:
    lines = [f"database            {stats['path']} (schema version {stats['schema_version']})", "rows"]
    lines += [f"  {table:<22}{count}" for table, count in stats["tables"].items()]
    lines += [
        f"runnable workflows  {stats['runnable_workflows']}",
        f"unprocessed events  {stats['unprocessed_events']}",
        f"due commands        {stats['due_commands']}",
        f"claimed commands    {stats['claimed_commands']}",
        f"held tokens         {stats['held_tokens']}",
        f"queued items        {stats['queued_items']}",
        f"held leases         {stats['held_leases']}",
        "files (bytes)",
    ]
    lines += [f"  {name:<22}{size}" for name, size in stats["files"].items()]
    return "\n".join(lines)


_COMMANDS = {
    "serve": _serve,
    "migrate": _migrate,
    "backup": _backup,
    "check": _check,
    "stats": _stats,
    **VISIBILITY_COMMANDS,
}


_BROKEN_PIPE = 128 + 13
"""The exit status of a command whose output pipe was closed (what a shell shows for SIGPIPE)."""


def _database_path(args: argparse.Namespace) -> str:
    """The file of the command's ``--db`` (or its configured database), for messages."""
    try:
        return parse_database_url(resolve(args, os.environ, _DB_ONLY).db)
    except Exception:  # noqa: BLE001 - only for a message: the setting as given
        return str(getattr(args, "db", None) or "the database")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away fails here, not at exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe (`| head`): stop quietly, as other command-line tools do,
        # and keep the interpreter's last flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _BROKEN_PIPE
    except ConfigError as error:
        return _fail(error)
    except sqlite3.Error as error:  # SQLite's own messages name no file ('database disk image is malformed')
        return _fail(f"{_database_path(args)}: {error}")
    except (DatabaseOpenError, FileNotFoundError, FileExistsError, ValueError, OSError) as error:
        return _fail(error)


if __name__ == "__main__":
    sys.exit(main())
