"""wfe-sqlite: the WFE persistence provider on SQLite, in-process and served over gRPC."""

from __future__ import annotations

import os

# gRPC's C core logs through absl, and with GRPC_VERBOSITY unset absl prints INFO and above to
# stderr in a format of its own: every client that hangs up left "Got goaway [8] err=UNAVAILABLE"
# in the server's log, every failed TLS handshake a "Handshake failed" line. ERROR keeps gRPC's
# errors and drops that noise. grpc reads the variable once, when it is first imported, so it is
# set here, before this package imports grpc; GRPC_VERBOSITY=INFO (or DEBUG) still shows it all.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from ._connection import DatabaseOpenError
from ._local_cluster import SqliteLockProvider, SqliteQueueProvider
from ._provider import PostgresPersistenceProvider, SqlitePersistenceProvider, StoreProvider, open_provider

__all__ = [
    "DatabaseOpenError",
    "PostgresPersistenceProvider",
    "SqliteLockProvider",
    "SqlitePersistenceProvider",
    "SqliteQueueProvider",
    "StoreProvider",
    "__version__",
    "open_provider",
]

__version__ = "0.1.0"
