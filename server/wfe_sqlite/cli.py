"""The ``wfe-sqlite`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from ._database import DatabaseOpenError
from .server import DEFAULT_DB, DEFAULT_LISTEN, ServerConfig, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfe-sqlite", description="The WFE persistence provider on SQLite, served over gRPC."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the persistence API over gRPC")
    run.add_argument("--db", default=DEFAULT_DB, help=f"database string (default {DEFAULT_DB})")
    run.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT, port 0 picks one (default {DEFAULT_LISTEN})")
    run.add_argument("--grace", type=float, default=10.0, help="seconds in-flight calls get on shutdown (default 10)")
    run.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        type=str.upper,
        help="FULL: acknowledged writes survive power loss; NORMAL: they survive a process crash (default FULL)",
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        config = ServerConfig(db=args.db, listen=args.listen, grace=args.grace, synchronous=args.synchronous)
        try:
            asyncio.run(serve(config))
        except (DatabaseOpenError, OSError, ValueError) as error:
            print(f"wfe-sqlite: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
