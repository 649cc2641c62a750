"""SQLite failures sorted into the few documented kinds a caller can act on."""

from __future__ import annotations

import sqlite3

from wfe_client.errors import InvalidArgument, StorageFull, StorageUnavailable, WfeError

__all__ = ["classify_sqlite_error", "is_busy", "translate"]


def classify_sqlite_error(error: sqlite3.Error) -> WfeError | None:
    """The documented error kind of a SQLite failure, or None when it is a programming error."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return StorageFull("database or disk is full; nothing was written")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageUnavailable("database is locked by another process; retry later")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PROTOCOL")):
        return StorageUnavailable(f"database I/O failed ({name}); retry later")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StorageUnavailable(f"database file is damaged ({name})")
    if name.startswith("SQLITE_TOOBIG"):
        return InvalidArgument("a value is larger than the database accepts")
    return None


def translate(error: BaseException) -> BaseException:
    """The documented kind of ``error`` when it is a classified SQLite failure, else ``error`` itself."""
    if isinstance(error, sqlite3.Error) and not isinstance(error, sqlite3.IntegrityError):
        kind = classify_sqlite_error(error)
        if kind is not None:
            return kind
    return error


def is_busy(error: sqlite3.Error) -> bool:
    """Whether SQLite answered BUSY or LOCKED (another connection holds a lock)."""
    return (getattr(error, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
