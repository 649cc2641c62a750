"""SQL of the lock service: leases with owners, expiry on the server's clock, fencing tokens.

A lease is a ``locks`` row (resource, owner, fencing token, expire time in epoch microseconds of
the server's clock). A row whose expire time has passed is a free resource: the next acquisition
overwrites it. Fencing tokens come from one counter (``counters.fencing_token``) that only grows,
stored in the same transaction as the lease, so a token is never handed out twice, also across
restarts. Every function runs inside the caller's transaction (the single writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ._queue_store import WorkEffects, queue_after_release

__all__ = ["CHUNK", "acquire", "release", "renew"]

CHUNK = 500
"""Resources per ``IN (...)`` statement."""


def _next_fencing_token(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value").fetchone()[0]
    )


def acquire(conn: sqlite3.Connection, resource: str, owner: str, ttl_us: int, now_us: int) -> tuple[int, int] | None:
    """Take the lease on ``resource`` when it is free or run out: (fencing token, expire time), else None.

    Not re-entrant: a live lease of the same owner also makes it None.
    """
    row = conn.execute("SELECT expire_time FROM locks WHERE resource = ?", (resource,)).fetchone()
    if row is not None and row[0] > now_us:
        return None
    token = _next_fencing_token(conn)
    expire = now_us + ttl_us
    conn.execute(
        "INSERT INTO locks (resource, owner, fencing_token, expire_time) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, fencing_token = excluded.fencing_token, "
        "expire_time = excluded.expire_time",
        (resource, owner, token, expire),
    )
    return token, expire


def renew(conn: sqlite3.Connection, owner: str, resources: Sequence[str], ttl_us: int, now_us: int) -> list[str]:
    """Extend ``owner``'s leases on ``resources`` to now + ttl; the resources it no longer holds.

    A lease that ran out but that nobody took since still belongs to its owner and is renewed.
    """
    unique = list(dict.fromkeys(resources))
    held: set[str] = set()
    expire = now_us + ttl_us
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        marks = ", ".join("?" * len(chunk))
        held.update(
            row[0]
            for row in conn.execute(
                f"UPDATE locks SET expire_time = ? WHERE owner = ? AND resource IN ({marks}) RETURNING resource",
                (expire, owner, *chunk),
            )
        )
    return [resource for resource in unique if resource not in held]


def release(conn: sqlite3.Connection, resource: str, owner: str, now_us: int, effects: WorkEffects) -> bool:
    """Free ``owner``'s lease on ``resource`` (False when it holds none); queue a workflow it kept waiting."""
    cursor = conn.execute("DELETE FROM locks WHERE resource = ? AND owner = ?", (resource, owner))
    if cursor.rowcount == 0:
        return False
    queue_after_release(conn, resource, now_us, effects)
    return True
