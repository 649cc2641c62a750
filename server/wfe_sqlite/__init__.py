"""wfe-sqlite: the WFE persistence provider on SQLite, in-process and served over gRPC."""

from __future__ import annotations

from ._connection import DatabaseOpenError
from ._provider import PostgresPersistenceProvider, SqlitePersistenceProvider, StoreProvider, open_provider

__all__ = [
    "DatabaseOpenError",
    "PostgresPersistenceProvider",
    "SqlitePersistenceProvider",
    "StoreProvider",
    "__version__",
    "open_provider",
]

__version__ = "0.1.0"
