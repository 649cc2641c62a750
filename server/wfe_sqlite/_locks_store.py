"""SQL of the lock service: leases with owners, expiry on the server's clock, fencing tokens.

A lease is a ``locks`` row (resource, owner, fencing token, expire time in epoch microseconds of
the server's clock). A row whose expire time has passed is a free resource: the next acquisition
overwrites it, and its owner may still renew it until then; one that ran out more than
``EXPIRED_LEASE_KEEP_US`` ago is deleted by the stranded-work sweep (``drop_expired``), so that the
table does not keep a row for every resource ever locked. Fencing tokens come from one counter
(``counters.fencing_token``) that only grows, stored in the same transaction as the lease, so a
token is never handed out twice, also across restarts. Every function runs inside the caller's
transaction (the single writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ._cluster_api import Handout, LeaseAsk
from ._queue_store import WorkEffects, dequeue, enqueue_front, queue_after_release

__all__ = [
    "CHUNK",
    "DROP_BATCH",
    "DROP_JOBS",
    "EXPIRED_LEASE_KEEP_US",
    "LOOK_BUDGET",
    "PASS_OVER",
    "acquire",
    "drop_expired",
    "give_back",
    "hand_out",
    "release",
    "renew",
]

CHUNK = 500
"""Resources per ``IN (...)`` statement."""
PASS_OVER = 64
"""Most waiting items a leased dequeue passes over (held by others) besides the ones it hands out."""
LOOK_ITEMS = 16
"""Items whose leases one statement looks up for an ask (most asks take the first item they look at)."""
LOOK_BUDGET = 4096
"""Most resources one take looks up for its leased asks. Past it, the leased asks left get nothing
this take (they stay in line for the next one): waiters that each need different leases on held
items would otherwise cost a take one look per waiter and item, holding every other write up."""


EXPIRED_LEASE_KEEP_US = 10 * 60 * 1_000_000
"""How long a lease that ran out (and that nobody took since) is kept, so that its owner back from a
short partition can still renew it: ten minutes. Then the sweep deletes its row (before, every
resource ever locked kept its row forever: 5,000 locks of unique resources with a 100 ms TTL left
5,000 rows for good, on both backends)."""
DROP_BATCH = 5000
"""Expired lease rows deleted per statement (per write job on SQLite)."""
DROP_JOBS = 20
"""Most statements of ``DROP_BATCH`` expired leases one sweep runs, each in a transaction of its own
(the rest: the next sweep), on both backends."""


def drop_expired(conn: sqlite3.Connection, before_us: int, limit: int = DROP_BATCH) -> int:
    """Delete up to ``limit`` leases that ran out at or before ``before_us`` (oldest first); how many."""
    cursor = conn.execute(
        "DELETE FROM locks WHERE resource IN "
        "(SELECT resource FROM locks WHERE expire_time <= ? ORDER BY expire_time LIMIT ?)",
        (before_us, limit),
    )
    return cursor.rowcount


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

    A lease that ran out but that nobody took since still belongs to its owner and is renewed (until
    the sweep deleted it, ``EXPIRED_LEASE_KEEP_US`` after it ran out).
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


def _look_up(conn: sqlite3.Connection, resources: Sequence[str], now_us: int, held: dict[str, bool]) -> None:
    """Record in ``held`` whether a live lease holds each of ``resources`` (none of them in it yet)."""
    for start in range(0, len(resources), CHUNK):
        chunk = resources[start : start + CHUNK]
        marks = ", ".join("?" * len(chunk))
        live = {
            row[0]
            for row in conn.execute(
                f"SELECT resource FROM locks WHERE resource IN ({marks}) AND expire_time > ?", (*chunk, now_us)
            )
        }
        held.update((resource, resource in live) for resource in chunk)


def _first_free(
    conn: sqlite3.Connection, ask: LeaseAsk, window: Sequence[str], now_us: int, held: dict[str, bool], budget: int
) -> tuple[str | None, int]:
    """The first item of ``window`` whose leases ``ask`` can take, and how many resources were looked
    up; None for the item also when the look would pass ``budget`` (the look is then not made)."""
    looked = 0
    for start in range(0, len(window), LOOK_ITEMS):
        wanted = {item: ask.resources(item) for item in window[start : start + LOOK_ITEMS]}
        unknown = list(dict.fromkeys(r for resources in wanted.values() for r in resources if r not in held))
        if looked + len(unknown) > budget:
            return None, looked + len(unknown)
        looked += len(unknown)
        _look_up(conn, unknown, now_us, held)
        for item, resources in wanted.items():
            if not any(held[resource] for resource in resources):
                return item, looked
    return None, looked


def hand_out(
    conn: sqlite3.Connection, queue: str, asks: Sequence[LeaseAsk | None], now_us: int, effects: WorkEffects
) -> list[Handout | None]:
    """Hand out the oldest waiting items of ``queue`` to ``asks`` in order (None: nothing for it).

    First every ask's releases; then an ask without leases gets the next item, one with leases the
    next item whose leases are all free (taken now, with their fencing tokens); items passed over
    keep their place. At most ``PASS_OVER`` items are looked at beyond one per ask.

    Each resource is looked up once per take (leases only get taken in it, so what was held stays
    held), ``LOOK_ITEMS`` items' resources in one statement, and an ask whose prefixes an earlier
    ask of this take already found nothing for finds nothing either: many waiters on held items cost
    about one look per item, not one per waiter and item (300 waiters on 400 held items held every
    other write up for a fifth of a second per take). Waiters that each need leases of their own
    cannot share looks; ``LOOK_BUDGET`` bounds what they cost a take.
    """
    for ask in asks:
        if ask is not None:
            for resource in ask.release:
                release(conn, resource, ask.owner, now_us, effects)
    if all(ask is None for ask in asks):
        plain: list[Handout | None] = [Handout(item) for item in dequeue(conn, queue, len(asks), now_us)]
        return plain + [None] * (len(asks) - len(plain))
    candidates = [
        row[0]
        for row in conn.execute(
            "SELECT item_id FROM work_queue WHERE queue = ? AND position IS NOT NULL ORDER BY position LIMIT ?",
            (queue, len(asks) + PASS_OVER),
        )
    ]
    used: set[str] = set()
    held: dict[str, bool] = {}  # resource -> a live lease holds it (this take's leases included)
    fruitless: set[tuple[str, ...]] = set()  # prefixes an ask of this take found no item for
    budget = LOOK_BUDGET
    results: list[Handout | None] = []
    for ask in asks:
        if ask is None:
            item = next((item for item in candidates if item not in used), None)
            if item is not None:
                used.add(item)
            results.append(None if item is None else Handout(item))
            continue
        if ask.prefixes in fruitless or budget <= 0:
            results.append(None)
            continue
        item, looked = _first_free(conn, ask, [c for c in candidates if c not in used], now_us, held, budget)
        budget -= looked
        if item is None:
            if budget >= 0:
                fruitless.add(ask.prefixes)
            results.append(None)
            continue
        resources = ask.resources(item)
        leases = [acquire(conn, resource, ask.owner, ask.ttl_us, now_us) for resource in resources]
        held.update(dict.fromkeys(resources, True))
        used.add(item)
        taken = tuple(lease for lease in leases if lease is not None)
        results.append(Handout(item, taken, ask.owner, tuple(resources)))
    if used:
        conn.executemany(
            "UPDATE work_queue SET position = NULL, handed_out_at = ? WHERE queue = ? AND item_id = ?",
            [(now_us, queue, item) for item in used],
        )
    return results


def give_back(conn: sqlite3.Connection, queue: str, handouts: Sequence[Handout], effects: WorkEffects) -> None:
    """Put handed-out items back at the head of ``queue`` (in order) and free the leases taken with them."""
    for handout in handouts:
        for resource, (token, _) in zip(handout.resources, handout.leases, strict=True):
            conn.execute(
                "DELETE FROM locks WHERE resource = ? AND owner = ? AND fencing_token = ?",
                (resource, handout.owner, token),
            )
    enqueue_front(conn, queue, [handout.item_id for handout in handouts], effects)
