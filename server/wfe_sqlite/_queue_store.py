"""SQL of the durable work queue and of the never-stranded rule (plain jobs of a ``sqlite3.Connection``).

A ``work_queue`` row is either waiting (``position`` set: first in, first out per queue) or the
record of its last hand-out (``position`` NULL, ``handed_out_at`` set). Queueing an id that is
waiting keeps its one entry; queueing a handed-out id makes it wait again at the end.

Which work is queued without anyone asking (see ``queues.proto``):

- at once, in the transaction that makes it due: a workflow stored RUNNABLE and due while no live
  lease holds it (on its id or on ``workflow-execution.{id}``, the keys a WFE host locks), an event
  created (or marked unprocessed) due, a workflow whose last lease is released while it is due;
- by the due timer, when its time comes: a workflow whose ``next_execution`` or an event whose
  ``event_time`` lay in the future;
- by the stranded-work job: work handed out and then dropped (hand-out records older than the
  interval), work whose lease ran out, and anything else due that is in no queue.

Each function here runs inside the caller's transaction; the ones that queue report it in a
``WorkEffects`` so the caller can wake waiting consumers after the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CLAIM_PREFIX",
    "EVENT",
    "INDEX",
    "QUEUES",
    "WORKFLOW",
    "Candidate",
    "WorkEffects",
    "dequeue",
    "enqueue",
    "enqueue_front",
    "expired_leases",
    "has_waiting",
    "next_due_micros",
    "queue_after_release",
    "queue_newly_due",
    "queue_stored_event",
    "queue_stored_workflow",
    "requeue_stranded",
    "stale_hand_outs",
    "stranded_events",
    "stranded_workflows",
    "waiting_count",
    "workflow_leased",
]

WORKFLOW = "WORKFLOW"
EVENT = "EVENT"
INDEX = "INDEX"
QUEUES = (WORKFLOW, EVENT, INDEX)
"""The queues, by the name stored in ``work_queue.queue`` (the ``QueueType`` member names)."""

CLAIM_PREFIX = "workflow-execution."
"""A WFE 1.11 host locks ``workflow-execution.{id}`` around an execution and the plain id inside it."""

_MS = 1000


@dataclass
class WorkEffects:
    """What a write did to the queues: which got new items, and the earliest future due time it stored."""

    queued: set[str] = field(default_factory=set)
    """Queues that got at least one new waiting item."""
    next_due_us: int | None = None
    """The earliest ``next_execution`` / ``event_time`` in the future that was stored (epoch microseconds)."""

    def due_at(self, micros: int) -> None:
        if self.next_due_us is None or micros < self.next_due_us:
            self.next_due_us = micros

    def merge(self, other: WorkEffects) -> None:
        self.queued |= other.queued
        if other.next_due_us is not None:
            self.due_at(other.next_due_us)


@dataclass(frozen=True)
class Candidate:
    """Work that looked stranded in a read snapshot; ``requeue_stranded`` checks it again before queueing."""

    queue: str
    item_id: str


# -- the queue itself ----------------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, queue: str, item_id: str, now_us: int, effects: WorkEffects) -> bool:
    """Append ``item_id`` to ``queue`` unless it is already waiting there (then False)."""
    row = conn.execute("SELECT position FROM work_queue WHERE queue = ? AND item_id = ?", (queue, item_id)).fetchone()
    if row is not None and row[0] is not None:
        return False
    position = conn.execute(
        "SELECT coalesce(max(position), 0) + 1 FROM work_queue WHERE queue = ? AND position IS NOT NULL", (queue,)
    ).fetchone()[0]
    if row is None:
        conn.execute(
            "INSERT INTO work_queue (queue, item_id, position, queued_at) VALUES (?, ?, ?, ?)",
            (queue, item_id, position, now_us),
        )
    else:
        conn.execute(
            "UPDATE work_queue SET position = ?, queued_at = ? WHERE queue = ? AND item_id = ?",
            (position, now_us, queue, item_id),
        )
    effects.queued.add(queue)
    return True


def enqueue_front(conn: sqlite3.Connection, queue: str, item_ids: Sequence[str], effects: WorkEffects) -> None:
    """Put handed-out items back at the head of ``queue``, in the given order (nobody took them)."""
    first = conn.execute(
        "SELECT coalesce(min(position), 1) FROM work_queue WHERE queue = ? AND position IS NOT NULL", (queue,)
    ).fetchone()[0]
    for offset, item_id in enumerate(reversed(item_ids), start=1):
        conn.execute(
            "UPDATE work_queue SET position = ? WHERE queue = ? AND item_id = ? AND position IS NULL",
            (first - offset, queue, item_id),
        )
    if item_ids:
        effects.queued.add(queue)


def dequeue(conn: sqlite3.Connection, queue: str, count: int, now_us: int) -> list[str]:
    """Hand out the ``count`` oldest waiting items of ``queue`` (fewer when fewer wait), oldest first."""
    items = [
        row[0]
        for row in conn.execute(
            "SELECT item_id FROM work_queue WHERE queue = ? AND position IS NOT NULL ORDER BY position LIMIT ?",
            (queue, count),
        )
    ]
    if items:
        conn.executemany(
            "UPDATE work_queue SET position = NULL, handed_out_at = ? WHERE queue = ? AND item_id = ?",
            [(now_us, queue, item_id) for item_id in items],
        )
    return items


def has_waiting(conn: sqlite3.Connection, queue: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM work_queue WHERE queue = ? AND position IS NOT NULL LIMIT 1", (queue,)).fetchone()
        is not None
    )


def waiting_count(conn: sqlite3.Connection, queue: str) -> int:
    return int(
        conn.execute("SELECT count(*) FROM work_queue WHERE queue = ? AND position IS NOT NULL", (queue,)).fetchone()[0]
    )


# -- the rules -----------------------------------------------------------------------------------


def workflow_leased(conn: sqlite3.Connection, workflow_id: str, now_us: int) -> bool:
    """Whether a live lease holds the workflow (on its id or on its execution claim key)."""
    return (
        conn.execute(
            "SELECT 1 FROM locks WHERE resource IN (?, ?) AND expire_time > ? LIMIT 1",
            (workflow_id, CLAIM_PREFIX + workflow_id, now_us),
        ).fetchone()
        is not None
    )


def _hand_out(conn: sqlite3.Connection, queue: str, item_id: str) -> tuple[bool, int | None]:
    """(waiting, last hand-out time) of an item."""
    row = conn.execute(
        "SELECT position, handed_out_at FROM work_queue WHERE queue = ? AND item_id = ?", (queue, item_id)
    ).fetchone()
    if row is None:
        return False, None
    return row[0] is not None, row[1]


def queue_stored_workflow(
    conn: sqlite3.Connection,
    workflow_id: str,
    status: str,
    next_execution: int | None,
    now_us: int,
    effects: WorkEffects,
) -> None:
    """After a create or persist: queue the workflow if it is RUNNABLE, due and unleased; note a future due time."""
    if status != "RUNNABLE" or next_execution is None:
        return
    if next_execution * _MS > now_us:
        effects.due_at(next_execution * _MS)
    elif not workflow_leased(conn, workflow_id, now_us):
        enqueue(conn, WORKFLOW, workflow_id, now_us, effects)


def queue_stored_event(
    conn: sqlite3.Connection, event_id: str, event_time_us: int, processed: bool, now_us: int, effects: WorkEffects
) -> None:
    """After an event is created or marked unprocessed: queue it if due; note a future due time."""
    if processed:
        return
    if event_time_us > now_us:
        effects.due_at(event_time_us)
    else:
        enqueue(conn, EVENT, event_id, now_us, effects)


def _workflow_due(conn: sqlite3.Connection, workflow_id: str, now_us: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM workflows WHERE id = ? AND status = 'RUNNABLE' AND next_execution IS NOT NULL "
        "AND next_execution <= ?",
        (workflow_id, now_us // _MS),
    ).fetchone()
    return row is not None


def _workflow_of(resource: str) -> str:
    return resource[len(CLAIM_PREFIX) :] if resource.startswith(CLAIM_PREFIX) else resource


def queue_after_release(conn: sqlite3.Connection, resource: str, now_us: int, effects: WorkEffects) -> bool:
    """After the lease on ``resource`` ended: queue its workflow if due and no other live lease holds it."""
    workflow_id = _workflow_of(resource)
    if not workflow_id or not _workflow_due(conn, workflow_id, now_us):
        return False
    if workflow_leased(conn, workflow_id, now_us):
        return False
    return enqueue(conn, WORKFLOW, workflow_id, now_us, effects)


def queue_newly_due(conn: sqlite3.Connection, after_us: int, now_us: int, effects: WorkEffects) -> int:
    """Queue the work that came due in ``(after_us, now_us]``: RUNNABLE workflows and unprocessed events.

    Skips what is waiting already, what was handed out after it came due (a consumer has it) and
    workflows under a live lease (the release queues them).
    """
    queued = 0
    workflows = conn.execute(
        "SELECT id, next_execution FROM workflows INDEXED BY workflows_runnable "
        "WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL "
        "AND next_execution > ? AND next_execution <= ? ORDER BY next_execution, id",
        (after_us // _MS, now_us // _MS),
    ).fetchall()
    for workflow_id, next_execution in workflows:
        waiting, handed_out = _hand_out(conn, WORKFLOW, workflow_id)
        if waiting or (handed_out is not None and handed_out >= next_execution * _MS):
            continue
        if not workflow_leased(conn, workflow_id, now_us):
            queued += enqueue(conn, WORKFLOW, workflow_id, now_us, effects)
    events = conn.execute(
        "SELECT id, event_time FROM events WHERE is_processed = 0 AND event_time > ? AND event_time <= ? "
        "ORDER BY event_time, id",
        (after_us, now_us),
    ).fetchall()
    for event_id, event_time in events:
        waiting, handed_out = _hand_out(conn, EVENT, event_id)
        if waiting or (handed_out is not None and handed_out >= event_time):
            continue
        queued += enqueue(conn, EVENT, event_id, now_us, effects)
    return queued


def next_due_micros(conn: sqlite3.Connection, now_us: int) -> int | None:
    """The earliest future ``next_execution`` of a RUNNABLE workflow or ``event_time`` of an unprocessed event."""
    workflow_ms = conn.execute(
        "SELECT min(next_execution) FROM workflows INDEXED BY workflows_runnable "
        "WHERE status = 'RUNNABLE' AND next_execution IS NOT NULL AND next_execution > ?",
        (now_us // _MS,),
    ).fetchone()[0]
    event_us = conn.execute(
        "SELECT min(event_time) FROM events WHERE is_processed = 0 AND event_time > ?", (now_us,)
    ).fetchone()[0]
    times = [t for t in (None if workflow_ms is None else workflow_ms * _MS, event_us) if t is not None]
    return min(times) if times else None


# -- stranded work -------------------------------------------------------------------------------


def expired_leases(conn: sqlite3.Connection, after_us: int, now_us: int) -> list[tuple[str, int]]:
    """(resource, expire_time) of leases that ran out in ``(after_us, now_us]``."""
    return conn.execute(
        "SELECT resource, expire_time FROM locks WHERE expire_time > ? AND expire_time <= ? ORDER BY expire_time",
        (after_us, now_us),
    ).fetchall()


def stale_hand_outs(conn: sqlite3.Connection, cutoff_us: int, limit: int) -> list[Candidate]:
    """Hand-out records older than ``cutoff_us`` (their item was not queued again since)."""
    return [
        Candidate(queue, item_id)
        for queue, item_id in conn.execute(
            "SELECT queue, item_id FROM work_queue WHERE position IS NULL AND handed_out_at <= ? "
            "ORDER BY handed_out_at LIMIT ?",
            (cutoff_us, limit),
        )
    ]


def stranded_workflows(
    conn: sqlite3.Connection, after: tuple[int, str], now_us: int, cutoff_us: int, limit: int
) -> tuple[list[Candidate], tuple[int, str] | None]:
    """Scan up to ``limit`` due RUNNABLE workflows after the keyset position ``after``.

    Returns the stranded ones among them (in no queue, not handed out since ``cutoff_us``, under no
    live lease) and the position to continue from (None: the scan reached the end).
    """
    rows = conn.execute(
        "WITH chunk AS (SELECT id, next_execution FROM workflows INDEXED BY workflows_runnable "
        "WHERE status = 'RUNNABLE' "
        "AND next_execution IS NOT NULL AND next_execution <= ? AND (next_execution, id) > (?, ?) "
        "ORDER BY next_execution, id LIMIT ?) "
        "SELECT id, next_execution, "
        "NOT EXISTS (SELECT 1 FROM work_queue q WHERE q.queue = 'WORKFLOW' AND q.item_id = chunk.id "
        "AND (q.position IS NOT NULL OR q.handed_out_at > ?)) "
        "AND NOT EXISTS (SELECT 1 FROM locks l WHERE l.resource IN (chunk.id, ? || chunk.id) AND l.expire_time > ?) "
        "FROM chunk ORDER BY next_execution, id",
        (now_us // _MS, after[0], after[1], limit, cutoff_us, CLAIM_PREFIX, now_us),
    ).fetchall()
    found = [Candidate(WORKFLOW, row[0]) for row in rows if row[2]]
    more = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return found, more


def stranded_events(
    conn: sqlite3.Connection, after: tuple[int, str], now_us: int, cutoff_us: int, limit: int
) -> tuple[list[Candidate], tuple[int, str] | None]:
    """``stranded_workflows`` for due unprocessed events (no leases apply)."""
    rows = conn.execute(
        "WITH chunk AS (SELECT id, event_time FROM events WHERE is_processed = 0 AND event_time <= ? "
        "AND (event_time, id) > (?, ?) ORDER BY event_time, id LIMIT ?) "
        "SELECT id, event_time, "
        "NOT EXISTS (SELECT 1 FROM work_queue q WHERE q.queue = 'EVENT' AND q.item_id = chunk.id "
        "AND (q.position IS NOT NULL OR q.handed_out_at > ?)) "
        "FROM chunk ORDER BY event_time, id",
        (now_us, after[0], after[1], limit, cutoff_us),
    ).fetchall()
    found = [Candidate(EVENT, row[0]) for row in rows if row[2]]
    more = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return found, more


def _still_stranded(conn: sqlite3.Connection, candidate: Candidate, now_us: int, cutoff_us: int) -> bool:
    waiting, handed_out = _hand_out(conn, candidate.queue, candidate.item_id)
    if waiting or (handed_out is not None and handed_out > cutoff_us):
        return False
    if candidate.queue == WORKFLOW:
        return _workflow_due(conn, candidate.item_id, now_us) and not workflow_leased(conn, candidate.item_id, now_us)
    if candidate.queue == EVENT:
        row = conn.execute(
            "SELECT 1 FROM events WHERE id = ? AND is_processed = 0 AND event_time <= ?", (candidate.item_id, now_us)
        ).fetchone()
        return row is not None
    return False


def requeue_stranded(
    conn: sqlite3.Connection,
    now_us: int,
    cutoff_us: int,
    hand_outs: Iterable[Candidate],
    leases: Iterable[tuple[str, int]],
    candidates: Iterable[Candidate],
    effects: WorkEffects,
) -> int:
    """Queue again what is stranded; drop hand-out records that no longer matter. The number queued.

    - ``hand_outs`` (stale hand-out records): queued again when still due and stranded; otherwise
      the record is deleted (a live lease on the workflow takes over: its release or its running
      out queues the workflow).
    - ``leases`` (leases that ran out): their workflow is queued when due, unleased, in no queue and
      not handed out since the lease ran out.
    - ``candidates`` (found stranded by a scan in a read snapshot): checked again, then queued.
    """
    queued = 0
    for record in hand_outs:
        if _still_stranded(conn, record, now_us, cutoff_us):
            queued += enqueue(conn, record.queue, record.item_id, now_us, effects)
        else:
            conn.execute(
                "DELETE FROM work_queue WHERE queue = ? AND item_id = ? AND position IS NULL AND handed_out_at <= ?",
                (record.queue, record.item_id, cutoff_us),
            )
    for resource, expire_time in leases:
        workflow_id = _workflow_of(resource)
        if not workflow_id:
            continue
        waiting, handed_out = _hand_out(conn, WORKFLOW, workflow_id)
        if waiting or (handed_out is not None and handed_out >= expire_time):
            continue
        if _workflow_due(conn, workflow_id, now_us) and not workflow_leased(conn, workflow_id, now_us):
            queued += enqueue(conn, WORKFLOW, workflow_id, now_us, effects)
    for candidate in candidates:
        if _still_stranded(conn, candidate, now_us, cutoff_us):
            queued += enqueue(conn, candidate.queue, candidate.item_id, now_us, effects)
    return queued
