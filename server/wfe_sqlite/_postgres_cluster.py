"""``PostgresCluster``: locks, durable work queues, timers and lifecycle fan-out on PostgreSQL, across servers.

Any number of servers share one database, so every guarantee lives in it:

- Leases (``locks``) expire by the database's clock. An acquisition is one statement in a
  transaction that takes the next fencing token from ``counters`` (whose row lock orders
  acquisitions, so tokens grow in commit order) and writes the lease only when none is live; when
  a concurrent acquirer won, the transaction is rolled back and no token is spent.
- Queue items (``work_queue``: waiting with a ``position``, or the record of the last hand-out)
  are claimed with ``FOR UPDATE SKIP LOCKED``: concurrent dequeuers on any server never wait for
  each other or get the same item. Queueing is an upsert that keeps one waiting entry.
- Wake-ups: every statement that queues an item also runs ``pg_notify('wfe_work', queue)``, sent
  at commit. Each server LISTENs on one dedicated connection and serves its waiting dequeues in
  order (one claim for as many waiters as there are), so a long poll on one server returns as soon
  as another server queues an item. After the listener reconnects every waiting queue is looked at
  again; a line with waiters also looks every ``FALLBACK_LOOK`` seconds, a backstop only.
- Never stranded: each server sweeps every ``requeue_interval`` (one sweep at a time across
  servers: a transaction-level advisory lock) and queues due, unleased work that is in no queue
  and was not handed out within the interval (or was handed out before it came due). Each
  re-queue is a compare-and-set on the hand-out record it saw, so sweeps, due timers and
  dequeues on several servers never queue an item twice. A due timer per server fires when the
  earliest known future ``next_execution`` / ``event_time`` comes (writes on this server report
  theirs; every sweep re-reads the earliest from the database).
- Lifecycle: a published event is sent with ``pg_notify('wfe_lifecycle', ...)`` and every server
  hands it to its own matching watchers (events larger than a notification go through the
  ``lifecycle_relay`` table). Events are relayed, not kept: a watcher on a server whose listener
  was reconnecting misses what was published meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from . import _locks_store
from ._cluster_api import ClusterServices, Handout, LeaseAsk
from ._lifecycle import LifecycleHub, Watcher
from ._locks_store import DROP_BATCH, DROP_JOBS, LOOK_BUDGET, PASS_OVER
from ._logging import RetriedFailure
from ._long_poll import LongPoll
from ._postgres_visibility import has_nul, refuse_nul
from ._queue_store import CLAIM_PREFIX, EVENT, QUEUES, WORKFLOW
from ._requeue import DEFAULT_REQUEUE_INTERVAL
from ._work_queue import now_micros

if TYPE_CHECKING:
    from ._postgres_store import PostgresStore

__all__ = [
    "FALLBACK_LOOK",
    "LIFECYCLE_CHANNEL",
    "WORK_CHANNEL",
    "PostgresCluster",
    "queue_cte",
    "unleased",
]

LOG = logging.getLogger(__name__)

NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
WORK_CHANNEL = "wfe_work"
"""Notified with the queue name when an item is queued (payload: the queue)."""
LIFECYCLE_CHANNEL = "wfe_lifecycle"
"""Notified with a published lifecycle event."""
FALLBACK_LOOK = 1.0
"""Seconds after which a queue with waiting dequeues is looked at even without a notification."""
NOTIFY_LIMIT = 7000
"""Largest lifecycle notification payload sent inline (PostgreSQL's limit is 8000 bytes)."""
RELAY_KEEP_US = 60_000_000
"""How long a ``lifecycle_relay`` row is kept for the listeners to read (microseconds)."""
SWEEP_LOCK = 0x5746455F5357  # "WFE_SW": the advisory lock of the stranded-work sweep
SWEEP_LIMIT = 1000
"""Most items of each kind one sweep queues again."""
_MAX_SLEEP = 60.0
CLOSE_WAIT = 5.0
"""Seconds ``close`` waits for the background tasks to end after cancelling them."""

# -- SQL --------------------------------------------------------------------------------------------


def queue_cte(queue: str, source: str, id_column: str, condition: str) -> str:
    """CTEs ``q`` (queue the ids of ``source`` rows meeting ``condition`` in the queue named by the
    SQL expression ``queue``, keeping one waiting entry) and ``n`` (notify the queue's listeners at
    commit), to append after a statement's other CTEs, which must include ``clock`` (``SELECT
    NOW_US AS now``). Select ``(SELECT count(*) FROM n)`` to run them: how many items were queued
    (``q`` has the ``queue`` and ``item_id`` of each)."""
    return (
        f"q AS (INSERT INTO work_queue (queue, item_id, position, queued_at) "
        f"SELECT {queue}, {source}.{id_column}, nextval('work_queue_position'), clock.now FROM {source}, clock "
        f"WHERE {condition} "
        "ON CONFLICT (queue, item_id) DO UPDATE SET position = excluded.position, queued_at = excluded.queued_at "
        "WHERE work_queue.position IS NULL RETURNING queue, item_id), "
        f"n AS (SELECT pg_notify('{WORK_CHANNEL}', queue) FROM q)"
    )


def unleased(workflow_id: str) -> str:
    """SQL: no live lease holds the workflow ``workflow_id`` (an SQL expression), as of ``clock.now``."""
    return (
        f"NOT EXISTS (SELECT 1 FROM locks l WHERE l.resource IN ({workflow_id}, '{CLAIM_PREFIX}' || {workflow_id}) "
        "AND l.expire_time > clock.now)"
    )


_CLOCK = f"clock AS (SELECT {NOW_US} AS now)"

ACQUIRE = (
    f"WITH {_CLOCK}, "
    "live AS (SELECT 1 FROM locks, clock WHERE resource = $1 AND expire_time > clock.now), "
    "token AS (INSERT INTO counters (name, value) SELECT 'fencing_token', 1 WHERE NOT EXISTS (SELECT 1 FROM live) "
    "ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value) "
    "INSERT INTO locks (resource, owner, fencing_token, expire_time) "
    "SELECT $1, $2, token.value, clock.now + $3 FROM token, clock "
    "ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, fencing_token = excluded.fencing_token, "
    "expire_time = excluded.expire_time WHERE locks.expire_time <= excluded.expire_time - $3 "
    "RETURNING fencing_token, expire_time"
)
"""Take the lease on $1 for owner $2 for $3 microseconds when no live lease holds it; run in a
transaction that is rolled back when it returns nothing (a concurrent acquirer won after the
token was taken)."""

RENEW = (
    f"WITH {_CLOCK} UPDATE locks SET expire_time = clock.now + $3 FROM clock "
    "WHERE owner = $1 AND resource = ANY($2::text[]) RETURNING resource"
)

RELEASE = (
    f"WITH {_CLOCK}, "
    "d AS (DELETE FROM locks WHERE resource = $1 AND owner = $2 RETURNING resource), "
    "w AS (SELECT id FROM workflows, clock WHERE id = $3 AND EXISTS (SELECT 1 FROM d) AND status = 'RUNNABLE' "
    "AND next_execution IS NOT NULL AND next_execution <= clock.now / 1000 AND NOT EXISTS "
    f"(SELECT 1 FROM locks l WHERE l.resource IN ($3, '{CLAIM_PREFIX}' || $3) AND l.resource <> $1 "
    "AND l.expire_time > clock.now) FOR SHARE OF workflows), "
    + queue_cte(f"'{WORKFLOW}'", "w", "id", "true")
    + " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM n)"
)
"""Free $2's lease on $1 and queue its workflow $3 when due and no other live lease holds it
(the statement's snapshot still shows the lease it deletes, hence ``l.resource <> $1``). The
workflow's row is share-locked: a delete or persist of it in flight is waited for and the row
looked at as it then is, so a workflow deleted meanwhile is not queued again."""

QUEUE = (
    f"WITH {_CLOCK}, item AS (SELECT $2::text AS id), "
    + queue_cte("$1::text", "item", "id", "true")
    + (" SELECT count(*) FROM n")
)
"""Append item $2 to queue $1 unless it is waiting there; 1 when queued, else 0."""

DEQUEUE = (
    "WITH next AS (SELECT queue, item_id, position FROM work_queue WHERE queue = $1 AND position IS NOT NULL "
    "ORDER BY position LIMIT $2 FOR UPDATE SKIP LOCKED) "
    f"UPDATE work_queue w SET position = NULL, handed_out_at = {NOW_US} FROM next "
    "WHERE w.queue = next.queue AND w.item_id = next.item_id RETURNING w.item_id, next.position"
)
"""Hand out up to $2 of the oldest waiting items of queue $1 that no other transaction is claiming."""

CANDIDATES = (
    "SELECT item_id FROM work_queue WHERE queue = $1 AND position IS NOT NULL "
    "ORDER BY position LIMIT $2 FOR UPDATE SKIP LOCKED"
)
"""The $2 oldest waiting items of queue $1 that no other transaction is claiming (a leased dequeue
chooses among them)."""

LIVE_LEASES = f"SELECT resource FROM locks WHERE resource = ANY($1::text[]) AND expire_time > {NOW_US}"
"""Which of resources $1 a live lease holds (a leased dequeue's look before it tries to take any)."""

HAND_OUT = (
    f"UPDATE work_queue SET position = NULL, handed_out_at = {NOW_US} WHERE queue = $1 AND item_id = ANY($2::text[])"
)

DROP_LEASES = (
    "DELETE FROM locks USING unnest($2::text[], $3::bigint[]) AS t (resource, token) "
    "WHERE locks.resource = t.resource AND locks.owner = $1 AND locks.fencing_token = t.token"
)
"""Free the leases of owner $1 on resources $2 with fencing tokens $3 (taken with items handed out
to a dequeue that left)."""

PUT_BACK = (
    "WITH head AS (SELECT coalesce(min(position), 1) AS first FROM work_queue WHERE queue = $1 "
    "AND position IS NOT NULL), "
    "items AS (SELECT item_id, ord FROM unnest($2::text[]) WITH ORDINALITY AS t (item_id, ord)), "
    "u AS (UPDATE work_queue w SET position = head.first - (cardinality($2::text[]) + 1 - items.ord) "
    "FROM head, items WHERE w.queue = $1 AND w.item_id = items.item_id AND w.position IS NULL RETURNING w.queue), "
    f"n AS (SELECT pg_notify('{WORK_CHANNEL}', queue) FROM u) "
    "SELECT count(*) FROM n"
)
"""Put handed-out items $2 back at the head of queue $1, in that order (their waiter left)."""

_STRANDED_ROW = (
    "q.position IS NULL AND (q.handed_out_at IS NULL OR q.handed_out_at <= clock.now - $1 OR q.handed_out_at < {due})"
)
"""Not waiting, and not handed out within the interval after it came due."""


def _requeue(queue: str, due: str) -> str:
    """Queue again, as a compare-and-set on the hand-out record seen, what ``due`` selects: rows of
    (id, due time, hand-out seen). Parameters: $1 the interval (microseconds), $2 the limit."""
    return (
        f"WITH {_CLOCK}, due AS ({due}), "
        "q AS (INSERT INTO work_queue (queue, item_id, position, queued_at, handed_out_at) "
        f"SELECT '{queue}', due.id, nextval('work_queue_position'), clock.now, due.seen FROM due, clock "
        "ON CONFLICT (queue, item_id) DO UPDATE SET position = excluded.position, queued_at = excluded.queued_at "
        "WHERE work_queue.position IS NULL AND work_queue.handed_out_at IS NOT DISTINCT FROM excluded.handed_out_at "
        "RETURNING queue), "
        f"n AS (SELECT pg_notify('{WORK_CHANNEL}', queue) FROM q) "
        "SELECT count(*) FROM n"
    )


REQUEUE_WORKFLOWS = _requeue(
    WORKFLOW,
    "SELECT w.id, q.handed_out_at AS seen FROM clock, workflows w "
    f"LEFT JOIN work_queue q ON q.queue = '{WORKFLOW}' AND q.item_id = w.id "
    "WHERE w.status = 'RUNNABLE' AND w.next_execution IS NOT NULL AND w.next_execution <= clock.now / 1000 "
    f"AND {_STRANDED_ROW.format(due='w.next_execution * 1000')} AND {unleased('w.id')} "
    "ORDER BY w.next_execution, w.id LIMIT $2 FOR SHARE OF w SKIP LOCKED",
)
"""Due RUNNABLE workflows in no queue, under no live lease, not handed out since they came due
(or within the interval): queued again. Rows another transaction is changing (a persist, a delete)
are skipped, not waited for: without the lock, a workflow whose delete commits while this runs
would be queued again after it is gone; a persisted one is queued by its persist, or the next sweep."""

REQUEUE_EVENTS = _requeue(
    EVENT,
    "SELECT e.id, q.handed_out_at AS seen FROM clock, events e "
    f"LEFT JOIN work_queue q ON q.queue = '{EVENT}' AND q.item_id = e.id "
    "WHERE e.is_processed = 0 AND e.event_time <= clock.now "
    f"AND {_STRANDED_ROW.format(due='e.event_time')} ORDER BY e.event_time, e.id LIMIT $2",
)
"""``REQUEUE_WORKFLOWS`` for due unprocessed events."""

DROP_STALE_HAND_OUTS = (
    f"WITH {_CLOCK} DELETE FROM work_queue USING clock WHERE position IS NULL AND handed_out_at <= clock.now - $1"
)
"""Hand-out records older than the interval whose item was not queued again: nothing to do for them
(finished, or a live lease took over: its release or its running out queues the workflow)."""

NEXT_DUE = (
    f"WITH {_CLOCK} SELECT least("
    "(SELECT min(next_execution) * 1000 FROM workflows, clock WHERE status = 'RUNNABLE' "
    "AND next_execution IS NOT NULL AND next_execution > clock.now / 1000), "
    "(SELECT min(event_time) FROM events, clock WHERE is_processed = 0 AND event_time > clock.now))"
)
"""The earliest future due time (epoch microseconds) of a RUNNABLE workflow or unprocessed event."""

DROP_EXPIRED_LEASES = (
    f"WITH {_CLOCK} DELETE FROM locks USING clock WHERE resource IN "
    f"(SELECT resource FROM locks, clock WHERE expire_time <= clock.now - $1 ORDER BY expire_time LIMIT $2) "
    "AND expire_time <= clock.now - $1"
)
"""Delete up to $2 leases that ran out more than $1 microseconds ago (the condition is repeated so
that a lease renewed or taken again while the statement runs is kept)."""

DROP_OLD_RELAYS = f"DELETE FROM lifecycle_relay WHERE created < {NOW_US} - {RELAY_KEEP_US}"


async def _relayed(conn: asyncpg.Connection, relay_id: int) -> bytes | None:
    """The payload of a large lifecycle event (None once it was deleted)."""
    payload = await conn.fetchval("SELECT payload FROM lifecycle_relay WHERE id = $1", relay_id)
    return None if payload is None else bytes(payload)


class _Rollback(Exception):
    """Leave a transaction without writing anything."""


async def _acquire_all(
    conn: asyncpg.Connection, resources: Sequence[str], owner: str, ttl_us: int, held: set[str] | None = None
) -> list[tuple[int, int]] | None:
    """Take the leases on all ``resources``, in the order given (so their fencing tokens grow in that
    order), in a transaction (a savepoint inside the caller's): the (fencing token, expire time) of
    each, or None with nothing taken while a live lease holds any of them. Every ACQUIRE first takes
    the fencing counter's row, which serialises acquisitions; a deadlock with a renewal or release
    holding one of the rows is answered as "held". ``held``: gets the resource found held, if any."""
    try:
        async with conn.transaction():
            leases = []
            for resource in resources:
                row = await conn.fetchrow(ACQUIRE, resource, owner, ttl_us)
                if row is None:
                    if held is not None:
                        held.add(resource)
                    raise _Rollback
                leases.append((int(row[0]), int(row[1])))
            return leases
    except (_Rollback, asyncpg.DeadlockDetectedError):
        return None


# -- the cluster ------------------------------------------------------------------------------------


class PostgresCluster(ClusterServices):
    """The cluster services of one server process over a PostgreSQL database shared with others."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._poll = LongPoll(self._take, self._put_back, name="wfe-postgres", fallback_look=FALLBACK_LOOK)
        self._hub: LifecycleHub[bytes] = LifecycleHub()
        self._relays: collections.deque[tuple[str, str, str | None, int | None]] = collections.deque()
        self._relaying = False
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interval = DEFAULT_REQUEUE_INTERVAL
        self._closed = False
        self._connected = asyncio.Event()
        self._sweep_failure = RetriedFailure(LOG, "stranded-work sweep")
        self._due_failure = RetriedFailure(LOG, "due timer job")
        self._listen_failure = RetriedFailure(LOG, "opening the LISTEN connection")
        self.sweeps = 0
        """Sweeps completed (for tests)."""
        self.requeued = 0
        """Items queued again by sweeps and the due timer (for tests)."""
        self.dropped_leases = 0
        """Expired leases deleted by this server's sweeps (for tests)."""

    @property
    def started(self) -> bool:
        return self._sweep_task is not None

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (notifications from other servers arrive)."""
        return self._connected.is_set()

    def start(self, requeue_interval: float | None = None) -> None:
        if self._sweep_task is not None or self._closed:
            return
        interval = DEFAULT_REQUEUE_INTERVAL if requeue_interval is None else requeue_interval
        if not interval > 0:
            raise ValueError("the requeue interval must be > 0 seconds")
        self._interval = interval
        loop = asyncio.get_running_loop()
        self._listen_task = loop.create_task(self._listen(), name="wfe-postgres-listen")
        self._sweep_task = loop.create_task(self._sweep_loop(), name="wfe-postgres-requeue")

    async def wait_ready(self, within: float) -> bool:
        """Wait until the LISTEN connection is up, so that a server that says it serves also gets what
        other servers queue and publish from then on; whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), within)
        return self.listening

    def written(self, queued: Iterable[str], due_us: int | None) -> None:
        """After a commit on this server: wake the waiters of the queues that got items (without
        waiting for the notification), arm the timer on a future due time."""
        for queue in queued:
            self._notify(queue)
        if due_us is not None:
            self._offer(due_us)

    def stop_waiting(self) -> None:
        self._poll.stop_waiting()
        self._hub.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_waiting()
        if self._timer is not None:
            self._timer.cancel()
        if self._listener is not None:
            # Cut first: nothing of the listener's (its keepalive, a cancel request) can wait on it.
            self._listener.terminate()
        tasks = [t for t in (self._listen_task, self._sweep_task, self._timer_task) if t is not None]
        for task in tasks:
            task.cancel()
        # Bounded: a cancel can be lost (on Python 3.11 asyncio.wait_for swallows one that lands as
        # its result arrives); a loop that missed it ends on _closed at its next turn.
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            for task in running:
                LOG.warning("%s did not stop within %.0f s of closing; left running", task.get_name(), CLOSE_WAIT)
        await self._poll.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)

    # -- locks -------------------------------------------------------------------------------------

    async def acquire_lock(self, resource: str, owner: str, ttl_us: int) -> tuple[int, int] | None:
        refuse_nul("resource", resource)
        refuse_nul("owner", owner)

        async def job(conn: asyncpg.Connection) -> tuple[int, int] | None:
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(ACQUIRE, resource, owner, ttl_us)
                    if row is None:
                        raise _Rollback
                    return int(row[0]), int(row[1])
            except _Rollback:
                return None

        return await self._store.run(job)

    async def acquire_locks(self, resources: Sequence[str], owner: str, ttl_us: int) -> list[tuple[int, int]] | None:
        wanted = list(resources)
        refuse_nul("resource", *wanted)
        refuse_nul("owner", owner)
        return await self._store.run(lambda conn: _acquire_all(conn, wanted, owner, ttl_us))

    async def release_locks(self, resources: Sequence[str], owner: str) -> list[bool]:
        wanted = list(resources)
        if has_nul(owner):
            return [False] * len(wanted)  # no lease is held by it

        async def job(conn: asyncpg.Connection) -> tuple[dict[str, bool], bool]:
            released: dict[str, bool] = dict.fromkeys((r for r in wanted if has_nul(r)), False)
            queued = False
            async with conn.transaction():
                for resource in sorted(r for r in dict.fromkeys(wanted) if not has_nul(r)):
                    workflow_id = resource[len(CLAIM_PREFIX) :] if resource.startswith(CLAIM_PREFIX) else resource
                    row = await conn.fetchrow(RELEASE, resource, owner, workflow_id)
                    released[resource] = bool(row[0])
                    queued = queued or bool(row[1])
            return released, queued

        released, queued = await self._store.run(job)
        if queued:
            self._notify(WORKFLOW)
        if any(released.values()):
            self._poll.notify_all()  # waiters passed over for these leases
        return [released[resource] for resource in wanted]

    async def renew_locks(self, owner: str, resources: Sequence[str], ttl_us: int) -> list[str]:
        unique = list(dict.fromkeys(resources))
        if not unique or has_nul(owner):
            return unique  # no lease is held by it
        rows = await self._store.run(
            lambda conn: conn.fetch(RENEW, owner, [r for r in unique if not has_nul(r)], ttl_us)
        )
        held = {r[0] for r in rows}
        return [r for r in unique if r not in held]

    async def release_lock(self, resource: str, owner: str) -> bool:
        if has_nul(resource, owner):
            return False  # no lease is held on it, or by it
        workflow_id = resource[len(CLAIM_PREFIX) :] if resource.startswith(CLAIM_PREFIX) else resource
        row = await self._store.run(lambda conn: conn.fetchrow(RELEASE, resource, owner, workflow_id))
        if row[1]:
            self._notify(WORKFLOW)
        if row[0]:
            self._poll.notify_all()  # waiters passed over for this lease
        return bool(row[0])

    # -- queues ------------------------------------------------------------------------------------

    async def queue_work(self, queue: str, item_id: str) -> bool:
        refuse_nul("id", item_id)
        queued = await self._store.run(lambda conn: conn.fetchval(QUEUE, queue, item_id))
        if queued:
            self._notify(queue)
        return bool(queued)

    async def dequeue_work(
        self, queue: str, wait: float = 0.0, ended: asyncio.Future[None] | None = None
    ) -> str | None:
        handout = await self._poll.dequeue(queue, wait, None, ended)
        return None if handout is None else handout.item_id

    async def dequeue_leased(
        self, queue: str, wait: float, ask: LeaseAsk, ended: asyncio.Future[None] | None = None
    ) -> Handout | None:
        refuse_nul("leases.owner", ask.owner)
        refuse_nul("leases.prefixes", *ask.prefixes)
        if has_nul(*ask.release):  # no lease is held on these: nothing to release
            ask = dataclasses.replace(ask, release=tuple(r for r in ask.release if not has_nul(r)))
        return await self._poll.dequeue(queue, wait, ask, ended)

    def _notify(self, queue: str) -> None:
        self._poll.notify(queue)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(self, queue: str, asks: Sequence[LeaseAsk | None]) -> list[Handout | None]:
        if all(ask is None for ask in asks):
            rows = await self._store.run(lambda conn: conn.fetch(DEQUEUE, queue, len(asks)))
            plain: list[Handout | None] = [Handout(r[0]) for r in sorted(rows, key=lambda r: r[1])]
            return plain + [None] * (len(asks) - len(plain))
        results, queued = await self._store.run(functools.partial(self._hand_out, queue=queue, asks=asks))
        if queued:
            self._notify(WORKFLOW)
        return results

    @staticmethod
    async def _hand_out(
        conn: asyncpg.Connection, queue: str, asks: Sequence[LeaseAsk | None]
    ) -> tuple[list[Handout | None], bool]:
        """One transaction: every ask's releases, then the oldest unclaimed items to the asks in
        order, an ask with leases getting the next item whose leases it can take (a savepoint per
        try; one held or in a deadlock is passed over and keeps its place).

        An ask first looks up in one statement which of its items' resources are held, and tries
        only items that look free. A resource found held is not looked up again in this take, and an
        ask whose prefixes an earlier ask of this take found nothing for is given nothing without a
        look (leases only get taken here: passing it over is never wrong, at worst it waits for the
        next look). ``LOOK_BUDGET`` bounds the resources looked up per take: waiters that each need
        leases of their own get nothing this take once it is spent. Before, every waiter tried every
        held item, one savepoint per waiter and item (50 such waiters on 100 items: 1.4 s a take)."""
        queued = False
        results: list[Handout | None] = []
        async with conn.transaction():
            for ask in asks:
                if ask is not None:
                    for resource in sorted(ask.release):
                        workflow_id = resource.removeprefix(CLAIM_PREFIX)
                        row = await conn.fetchrow(RELEASE, resource, ask.owner, workflow_id)
                        queued = queued or bool(row[1])
            candidates = [r[0] for r in await conn.fetch(CANDIDATES, queue, len(asks) + PASS_OVER)]
            used: list[str] = []
            held: dict[str, bool] = {}  # resource -> looked held (this take's leases included)
            fruitless: set[tuple[str, ...]] = set()
            budget = LOOK_BUDGET
            for ask in asks:
                if ask is None:
                    item = next((item for item in candidates if item not in used), None)
                    if item is not None:
                        used.append(item)
                    results.append(None if item is None else Handout(item))
                    continue
                if ask.prefixes in fruitless or budget <= 0:
                    results.append(None)
                    continue
                # One look for the items the budget covers (at least the first), not one try per item.
                wanted: dict[str, list[str]] = {}
                unknown: dict[str, None] = {}
                window = [item for item in candidates if item not in used]
                for item in window:
                    resources = ask.resources(item)
                    fresh = [r for r in resources if r not in held and r not in unknown]
                    if wanted and len(unknown) + len(fresh) > budget:
                        break
                    wanted[item] = resources
                    unknown.update(dict.fromkeys(fresh))
                budget -= len(unknown)
                if unknown:
                    live = {row[0] for row in await conn.fetch(LIVE_LEASES, list(unknown))}
                    held.update((resource, resource in live) for resource in unknown)
                result: Handout | None = None
                for item, resources in wanted.items():
                    if any(held[resource] for resource in resources):
                        continue
                    found: set[str] = set()
                    leases = await _acquire_all(conn, resources, ask.owner, ask.ttl_us, found)
                    if leases is None:  # taken by another server since the look
                        held.update(dict.fromkeys(found, True))
                        continue
                    held.update(dict.fromkeys(resources, True))
                    result = Handout(item, tuple(leases), ask.owner, tuple(resources))
                    used.append(item)
                    break
                if result is None and len(wanted) == len(window):
                    fruitless.add(ask.prefixes)
                results.append(result)
            if used:
                await conn.execute(HAND_OUT, queue, used)
        return results, queued

    async def _put_back(self, queue: str, handouts: Sequence[Handout]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                for handout in handouts:
                    if handout.leases:
                        tokens = [token for token, _ in handout.leases]
                        await conn.execute(DROP_LEASES, handout.owner, list(handout.resources), tokens)
                await conn.fetchval(PUT_BACK, queue, [handout.item_id for handout in handouts])

        await self._store.run(job)
        self._poll.notify_all()

    # -- the listener ------------------------------------------------------------------------------

    def _on_work(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._notify(payload)

    def _on_lifecycle(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            workflow_id, definition_id, inline, relay_id = json.loads(payload)
        except (ValueError, TypeError):
            LOG.warning("ignoring a malformed lifecycle notification")
            return
        if not self._relaying and inline is not None:
            self._hub.publish(base64.b64decode(inline), workflow_id, definition_id)
            return
        # A large event is read from ``lifecycle_relay`` first; the ones after it wait their turn.
        self._relays.append((workflow_id, definition_id, inline, relay_id))
        if not self._relaying:
            self._relaying = True
            self._spawn(self._relay())

    async def _relay(self) -> None:
        """Deliver the queued notifications in order, reading the large events from the relay table."""
        try:
            while self._relays:
                workflow_id, definition_id, inline, relay_id = self._relays.popleft()
                if inline is not None:
                    self._hub.publish(base64.b64decode(inline), workflow_id, definition_id)
                    continue
                if not self._hub.matching(workflow_id, definition_id):
                    continue
                try:
                    event = await self._store.run(functools.partial(_relayed, relay_id=int(relay_id or 0)))
                except Exception as error:  # noqa: BLE001 - relayed, not stored: a lost event is logged
                    LOG.warning("could not read relayed lifecycle event %s: %s", relay_id, error)
                    continue
                if event is not None:
                    self._hub.publish(event, workflow_id, definition_id)
        finally:
            self._relaying = False

    def _lost(self, connection: Any) -> None:
        self._connected.clear()

    async def _listen(self) -> None:
        """Keep one LISTEN connection open; after each (re)connect look at every queue and the due times."""
        while not self._closed:
            try:
                conn = await asyncpg.connect(self._store.config.url, timeout=self._store.config.connect_timeout)
            except Exception as error:  # noqa: BLE001 - PostgreSQL away: try again shortly
                self._listen_failure.failed(error, "retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            self._listen_failure.succeeded()
            self._listener = conn
            try:
                conn.add_termination_listener(self._lost)
                await conn.add_listener(WORK_CHANNEL, self._on_work)
                await conn.add_listener(LIFECYCLE_CHANNEL, self._on_lifecycle)
                self._connected.set()
                for queue in QUEUES:  # notifications may have been missed while not listening
                    self._notify(queue)
                while not (self._closed or conn.is_closed()):
                    await asyncio.sleep(1.0)
                    await self._keepalive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect
                LOG.warning("LISTEN connection lost (reconnecting): %s", error)
            finally:
                self._connected.clear()
                self._listener = None
                if not conn.is_closed():
                    conn.terminate()
            if not self._closed:
                await asyncio.sleep(0.2)

    async def _keepalive(self, conn: asyncpg.Connection) -> None:
        """One round trip on the LISTEN connection: a dead connection shows as closed after it."""
        with contextlib.suppress(Exception):
            await conn.execute("SELECT 1", timeout=self._store.config.connect_timeout)

    # -- stranded work and the due timer -----------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while not self._closed:
            try:
                await self.sweep()
                self._sweep_failure.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a failed sweep is retried on the next tick
                self._sweep_failure.failed(error, f"next try in {self._interval:.1f} s")
            await asyncio.sleep(self._interval)

    async def _requeue(self, conn: asyncpg.Connection) -> int:
        interval_us = int(self._interval * 1e6)
        queued = int(await conn.fetchval(REQUEUE_WORKFLOWS, interval_us, SWEEP_LIMIT))
        return queued + int(await conn.fetchval(REQUEUE_EVENTS, interval_us, SWEEP_LIMIT))

    async def sweep(self) -> int:
        """One sweep across servers (skipped while another server sweeps); items queued again."""

        async def job(conn: asyncpg.Connection) -> tuple[int, int | None, bool]:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK):
                    return 0, await conn.fetchval(NEXT_DUE), False
                queued = await self._requeue(conn)
                await conn.execute(DROP_STALE_HAND_OUTS, int(self._interval * 1e6))
                await conn.execute(DROP_OLD_RELAYS)
                return queued, await conn.fetchval(NEXT_DUE), True

        queued, upcoming, swept = await self._store.run(job)
        if swept:  # the server that swept deletes the leases that ran out long ago
            await self._drop_expired_leases()
        self.sweeps += 1
        self._queued_again(queued)
        if upcoming is not None:
            self._offer(int(upcoming))
        return queued

    async def _drop_expired_leases(self) -> None:
        """Delete the leases that ran out more than ``EXPIRED_LEASE_KEEP_US`` ago, ``DROP_BATCH`` per
        transaction (so that acquisitions of them wait for no long one)."""
        for _ in range(DROP_JOBS):
            status = await self._store.run(
                lambda conn: conn.execute(DROP_EXPIRED_LEASES, _locks_store.EXPIRED_LEASE_KEEP_US, DROP_BATCH)
            )
            dropped = int(status.split()[-1])
            self.dropped_leases += dropped
            if dropped < DROP_BATCH:
                return

    def _queued_again(self, queued: int) -> None:
        if queued:
            self.requeued += queued
            LOG.info("queued %d due or stranded items", queued)
            for queue in (WORKFLOW, EVENT):
                self._notify(queue)

    def _offer(self, due_us: int) -> None:
        """Arm the due timer on ``due_us`` if that is earlier than the time it is armed on."""
        if self._sweep_task is None or self._closed:
            return
        if self._timer_at is not None and self._timer_at <= due_us:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due_us
        delay = min(_MAX_SLEEP, max(0.0, (due_us - now_micros()) / 1e6) + 0.001)
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._timer_task is None or self._timer_task.done():
            self._timer_task = asyncio.get_running_loop().create_task(self._due(), name="wfe-postgres-due-timer")

    async def _due(self) -> None:
        async def job(conn: asyncpg.Connection) -> tuple[int, int | None]:
            async with conn.transaction():
                return await self._requeue(conn), await conn.fetchval(NEXT_DUE)

        try:
            queued, upcoming = await self._store.run(job)
        except Exception as error:  # noqa: BLE001 - try again shortly; the sweep is the backstop
            self._due_failure.failed(error, "retrying in 1 s")
            self._offer(now_micros() + 1_000_000)
            return
        self._due_failure.succeeded()
        self._queued_again(queued)
        if upcoming is not None:
            self._offer(int(upcoming))

    # -- lifecycle ---------------------------------------------------------------------------------

    async def publish_lifecycle(self, event: bytes, workflow_instance_id: str, workflow_definition_id: str) -> int:
        count = self._hub.matching(workflow_instance_id, workflow_definition_id)
        inline = base64.b64encode(event).decode("ascii")
        payload = json.dumps([workflow_instance_id, workflow_definition_id, inline, None])

        async def job(conn: asyncpg.Connection) -> None:
            if len(payload) <= NOTIFY_LIMIT:
                await conn.execute("SELECT pg_notify($1, $2)", LIFECYCLE_CHANNEL, payload)
                return
            async with conn.transaction():
                relay_id = await conn.fetchval(
                    f"INSERT INTO lifecycle_relay (payload, created) VALUES ($1, {NOW_US}) RETURNING id", event
                )
                await conn.execute(
                    "SELECT pg_notify($1, $2)",
                    LIFECYCLE_CHANNEL,
                    json.dumps([workflow_instance_id, workflow_definition_id, None, relay_id]),
                )

        await self._store.run(job)
        if not self.listening:
            # Not listening now (PostgreSQL reconnecting): this server's watchers get it directly.
            self._hub.publish(event, workflow_instance_id, workflow_definition_id)
        return count

    def watch_lifecycle(self, workflow_instance_id: str = "", workflow_definition_id: str = "") -> Watcher[bytes]:
        return self._hub.watch(workflow_instance_id, workflow_definition_id)
