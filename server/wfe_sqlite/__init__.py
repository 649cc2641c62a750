"""wfe-sqlite: the WFE persistence provider on SQLite, in-process and served over gRPC."""

from __future__ import annotations

from ._database import DatabaseOpenError
from ._local_cluster import SqliteLockProvider, SqliteQueueProvider
from ._provider import SqlitePersistenceProvider

__all__ = ["SqlitePersistenceProvider", "SqliteLockProvider", "SqliteQueueProvider", "DatabaseOpenError", "__version__"]

__version__ = "0.1.0"
