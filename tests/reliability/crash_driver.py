"""Crash durability driver: concurrent writers against a real server, SIGKILL, restart, verify.

One round: start ``wfe-sqlite serve`` on a file database (or a PostgreSQL database), run
``writers`` concurrent writers (each on its own gRPC channel) doing creates, persists that change
the pointer set, persists with new subscriptions, events (created and marked processed),
subscriptions, token claims and clears, scheduled commands and definition sequences. Every write
whose RPC returned OK is acknowledged and recorded with its content. At a random moment the server
gets SIGKILL; it is restarted on the same database and every acknowledged write is checked:

- a record written once must be there with that content;
- a record written several times must hold its last acknowledged content, or the content of a
  later write that was in flight when the server died (it may or may not have committed);
- a write in flight at the kill may be absent; if present it must be whole (a persist with
  subscriptions is all or nothing: the workflow's generation and the new subscription agree);
- a workflow's pointers always match the generation its data says (no torn writes);
- definition sequence numbers never repeat, also across the restart;
- an acknowledged ``queue_work`` is waiting in its queue after the restart; an acknowledged lease
  (TTL one hour) still holds, and the first fencing token after the restart is larger than any
  token handed out before it;
- ``PRAGMA integrity_check`` is ``ok`` (SQLite; on PostgreSQL the integrity is ``n/a``: its own
  business, ``pg_amcheck``).

Run as a script for the totals: ``python tests/reliability/crash_driver.py --rounds 25``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_support import integrity_check, start_server

from wfe_client import (
    CommandName,
    Event,
    EventSubscription,
    ExecutionPointer,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    NotFound,
    PointerStatus,
    QueueType,
    ScheduledCommand,
    WorkflowInstance,
)

UTC = UTC
SEQ_DEFINITION = "crash-sequence"
ABSENT = "<absent>"


@dataclass
class Record:
    """What the store may hold for one key: the last acknowledged value, and later unknown ones."""

    acked: Any = ABSENT
    acked_writes: int = 0
    in_flight: list[Any] = field(default_factory=list)

    def attempt(self, value: Any) -> None:
        self.in_flight.append(value)

    def ack(self, value: Any) -> None:
        self.acked = value
        self.acked_writes += 1
        self.in_flight.clear()

    def allowed(self) -> list[Any]:
        return [self.acked, *self.in_flight]


@dataclass
class Ledger:
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    sequence_values: list[int] = field(default_factory=list)
    pairs: list[tuple[str, int, str]] = field(default_factory=list)
    """(workflow id, generation, subscription id) of persist-with-subscriptions in flight at the kill."""
    errors_before_kill: list[str] = field(default_factory=list)
    fencing_tokens: list[int] = field(default_factory=list)
    """Fencing tokens of acknowledged acquisitions."""

    def record(self, kind: str, key: str) -> Record:
        return self.records.setdefault((kind, key), Record())


@dataclass
class RoundResult:
    seed: int
    acknowledged: int
    records: int
    lost: int
    in_flight: int
    problems: list[str]
    integrity: str
    kill_after: float
    seconds: float


def pointers_for(wid: str, gen: int) -> list[ExecutionPointer]:
    """The pointer set written with generation ``gen``: its count and names encode ``gen``."""
    pointers = []
    for i in range(1 + gen % 4):
        p = ExecutionPointer.new(i)
        p.id = f"{wid}:{gen}:{i}"
        p.step_name = f"g{gen}"
        p.status = PointerStatus.COMPLETE if i < gen % 4 else PointerStatus.RUNNING
        p.persistence_data = {"gen": gen, "i": i}
        pointers.append(p)
    return pointers


def workflow_for(wid: str, gen: int, create_time: datetime) -> WorkflowInstance:
    w = WorkflowInstance.new("crash-flow", 1, {"gen": gen, "pad": "x" * (gen % 7) * 50})
    w.id = wid
    w.name = f"name-{wid}"
    w.create_time = create_time
    w.next_execution = gen
    w.execution_pointers = pointers_for(wid, gen)
    return w


def check_workflow_shape(w: WorkflowInstance) -> str | None:
    gen = w.data.get("gen") if isinstance(w.data, dict) else None
    if not isinstance(gen, int):
        return f"workflow {w.id}: data without a generation: {w.data!r}"
    expected = [(p.id, p.step_name) for p in pointers_for(w.id, gen)]
    got = [(p.id, p.step_name) for p in w.execution_pointers]
    if got != expected or w.next_execution != gen:
        return f"workflow {w.id}: torn write: data gen {gen}, pointers {got}, next_execution {w.next_execution}"
    return None


class Writer:
    """One concurrent writer with its own channel; owns the records it creates."""

    def __init__(self, index: int, address: str, ledger: Ledger, rng: random.Random, killed: asyncio.Event) -> None:
        self.index = index
        self.address = address
        self.ledger = ledger
        self.rng = rng
        self.killed = killed
        self.count = 0
        self.workflows: dict[str, int] = {}  # acknowledged generation of each workflow this writer created
        self.create_times: dict[str, datetime] = {}
        self.events: list[str] = []
        self.subscriptions: dict[str, str | None] = {}  # acknowledged token of each subscription
        self.leases: list[str] = []  # resources this writer holds (acknowledged)
        self.queue: GrpcQueueProvider
        self.locks: GrpcLockProvider

    def _key(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.index}-{self.count}"

    async def run(self) -> None:
        async with GrpcPersistenceProvider.connect(self.address, timeout=15.0) as store:
            self.queue = GrpcQueueProvider(store)
            # Renewal never runs (the test is over long before a third of the hour): leases are
            # what the store holds, nothing else.
            self.locks = GrpcLockProvider(store, owner=f"crash-writer-{self.index}", ttl=timedelta(hours=1))
            while True:
                op = self.rng.choices(
                    [
                        "create",
                        "persist",
                        "persist_subs",
                        "event",
                        "processed",
                        "subscription",
                        "token",
                        "command",
                        "sequence",
                        "queue",
                        "lock",
                        "unlock",
                    ],
                    weights=[3, 6, 2, 3, 2, 2, 3, 3, 1, 3, 2, 1],
                )[0]
                started_after_kill = self.killed.is_set()
                try:
                    await getattr(self, "op_" + op)(store)
                except Exception as error:  # noqa: BLE001 - after the kill every call fails
                    if not started_after_kill and not self.killed.is_set():
                        self.ledger.errors_before_kill.append(f"writer {self.index} {op}: {error!r}")
                    return

    async def op_create(self, store: GrpcPersistenceProvider) -> None:
        wid = self._key("w")
        now = datetime.now(UTC).replace(microsecond=0)
        rec = self.ledger.record("workflow", wid)
        rec.attempt(0)
        self.create_times[wid] = now
        await store.create_new_workflow(workflow_for(wid, 0, now))
        rec.ack(0)
        self.workflows[wid] = 0

    async def _pick_workflow(self, store: GrpcPersistenceProvider) -> str | None:
        if not self.workflows:
            await self.op_create(store)
            return None
        return self.rng.choice(list(self.workflows))

    async def op_persist(self, store: GrpcPersistenceProvider) -> None:
        wid = await self._pick_workflow(store)
        if wid is None:
            return
        gen = self.workflows[wid] + 1
        rec = self.ledger.record("workflow", wid)
        rec.attempt(gen)
        await store.persist_workflow(workflow_for(wid, gen, self.create_times[wid]))
        rec.ack(gen)
        self.workflows[wid] = gen

    async def op_persist_subs(self, store: GrpcPersistenceProvider) -> None:
        wid = await self._pick_workflow(store)
        if wid is None:
            return
        gen = self.workflows[wid] + 1
        sid = self._key("ps")
        sub = EventSubscription.new(wid, 0, f"{wid}:{gen}:0", "crash.event", sid, datetime.now(UTC))
        sub.id = sid
        sub.subscription_data = {"gen": gen}
        wrec = self.ledger.record("workflow", wid)
        srec = self.ledger.record("subscription", sid)
        wrec.attempt(gen)
        srec.attempt(gen)
        pair = (wid, gen, sid)
        self.ledger.pairs.append(pair)
        await store.persist_workflow_with_subscriptions(workflow_for(wid, gen, self.create_times[wid]), [sub])
        self.ledger.pairs.remove(pair)
        wrec.ack(gen)
        srec.ack(gen)
        self.workflows[wid] = gen

    async def op_event(self, store: GrpcPersistenceProvider) -> None:
        eid = self._key("e")
        data = {"event": eid, "n": self.rng.randrange(2**62), "text": "é" * self.rng.randrange(40)}
        event = Event.new("crash.event", eid, data)
        event.id = eid
        rec = self.ledger.record("event", eid)
        rec.attempt(data)
        await store.create_event(event)
        rec.ack(data)
        self.events.append(eid)

    async def op_processed(self, store: GrpcPersistenceProvider) -> None:
        if not self.events:
            return await self.op_event(store)
        eid = self.events.pop(self.rng.randrange(len(self.events)))
        rec = self.ledger.record("processed", eid)
        rec.attempt(True)
        await store.mark_event_processed(eid)
        rec.ack(True)

    async def op_subscription(self, store: GrpcPersistenceProvider) -> None:
        sid = self._key("s")
        sub = EventSubscription.new("wf-" + sid, 1, "ptr-" + sid, "crash.event", sid, datetime.now(UTC))
        sub.id = sid
        rec = self.ledger.record("subscription", sid)
        rec.attempt(None)
        await store.create_event_subscription(sub)
        rec.ack(None)
        self.subscriptions[sid] = None
        self.ledger.record("token", sid).acked = None

    async def op_token(self, store: GrpcPersistenceProvider) -> None:
        if not self.subscriptions:
            return await self.op_subscription(store)
        sid = self.rng.choice(list(self.subscriptions))
        held = self.subscriptions[sid]
        rec = self.ledger.record("token", sid)
        if held is None:
            token = self._key("t")
            rec.attempt(token)
            won = await store.set_subscription_token(
                sid, token, f"worker-{self.index}", datetime.now(UTC) + timedelta(hours=1)
            )
            if not won:
                self.ledger.errors_before_kill.append(f"token claim on free subscription {sid} refused")
                rec.in_flight.remove(token)
                return
            rec.ack(token)
            self.subscriptions[sid] = token
        else:
            rec.attempt(None)
            await store.clear_subscription_token(sid, held)
            rec.ack(None)
            self.subscriptions[sid] = None

    async def op_command(self, store: GrpcPersistenceProvider) -> None:
        data = self._key("c")
        execute_time = self.rng.randrange(1, 10**12)
        rec = self.ledger.record("command", data)
        rec.attempt(execute_time)
        await store.schedule_command(ScheduledCommand(CommandName.PROCESS_EVENT, data, execute_time))
        rec.ack(execute_time)

    async def op_queue(self, store: GrpcPersistenceProvider) -> None:
        item = self._key("q")
        rec = self.ledger.record("queued", item)
        rec.attempt(True)
        await self.queue.queue_work(item, QueueType.INDEX)
        rec.ack(True)

    async def op_lock(self, store: GrpcPersistenceProvider) -> None:
        resource = self._key("l")
        rec = self.ledger.record("lease", resource)
        rec.attempt(True)
        lease = await self.locks.acquire(resource)
        if lease is None:
            self.ledger.errors_before_kill.append(f"lease on fresh resource {resource} refused")
            rec.in_flight.remove(True)
            return
        rec.ack(True)
        self.ledger.fencing_tokens.append(lease.fencing_token)
        self.leases.append(resource)

    async def op_unlock(self, store: GrpcPersistenceProvider) -> None:
        if not self.leases:
            return await self.op_lock(store)
        resource = self.leases.pop(self.rng.randrange(len(self.leases)))
        rec = self.ledger.record("lease", resource)
        rec.attempt(ABSENT)
        await self.locks.release_lock(resource)
        rec.ack(ABSENT)

    async def op_sequence(self, store: GrpcPersistenceProvider) -> None:
        value = await store.next_definition_sequence(SEQ_DEFINITION)
        self.ledger.sequence_values.append(value)


async def _gather_limited(coros: list[Any], limit: int = 32) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def _stored_state(store: GrpcPersistenceProvider, ledger: Ledger) -> tuple[dict[tuple[str, str], Any], list[str]]:
    """What the restarted server holds for every key of the ledger (ABSENT when missing)."""
    problems: list[str] = []
    stored: dict[tuple[str, str], Any] = {}
    keys = list(ledger.records)
    wids = [k for kind, k in keys if kind == "workflow"]
    found = {w.id: w for w in await store.get_workflow_instances(wids)}
    for wid in wids:
        w = found.get(wid)
        if w is None:
            stored[("workflow", wid)] = ABSENT
            continue
        shape = check_workflow_shape(w)
        if shape:
            problems.append(shape)
        stored[("workflow", wid)] = w.data.get("gen") if isinstance(w.data, dict) else w.data

    async def event(eid: str) -> None:
        try:
            e = await store.get_event(eid)
        except NotFound:
            stored[("event", eid)] = ABSENT
            stored[("processed", eid)] = ABSENT
            return
        stored[("event", eid)] = e.event_data
        stored[("processed", eid)] = True if e.is_processed else ABSENT

    async def subscription(sid: str) -> None:
        try:
            s = await store.get_subscription(sid)
        except NotFound:
            stored[("subscription", sid)] = ABSENT
            stored[("token", sid)] = ABSENT
            return
        data = s.subscription_data.get("gen") if isinstance(s.subscription_data, dict) else s.subscription_data
        stored[("subscription", sid)] = data
        stored[("token", sid)] = s.external_token

    events = {k for kind, k in keys if kind in ("event", "processed")}
    subs = {k for kind, k in keys if kind in ("subscription", "token")}
    await _gather_limited([event(e) for e in events] + [subscription(s) for s in subs])

    # Scheduled commands: claim everything (short lease) and compare execute times.
    commands: dict[str, int] = {}
    far = datetime(9999, 1, 1, tzinfo=UTC)
    while True:
        claim = await store.claim_commands(far, 1000, timedelta(minutes=5), "verifier")
        if not claim.commands:
            break
        for c in claim.commands:
            commands[c.data] = c.execute_time
    for kind, key in keys:
        if kind == "command":
            stored[(kind, key)] = commands.get(key, ABSENT)

    # Queued items: take everything waiting in the INDEX queue (only the writers queue there).
    queue = GrpcQueueProvider(store)
    waiting: set[str] = set()
    while (item := await queue.dequeue_work(QueueType.INDEX)) is not None:
        if item in waiting:
            problems.append(f"queue item {item} handed out twice")
        waiting.add(item)
    for kind, key in keys:
        if kind == "queued":
            stored[(kind, key)] = True if key in waiting else ABSENT

    # Leases: a live one refuses the verifier; the verifier's own leases show the token counter.
    verifier = GrpcLockProvider(store, owner="crash-verifier", ttl=timedelta(hours=1))
    first_token: int | None = None
    for kind, key in keys:
        if kind == "lease":
            lease = await verifier.acquire(key)
            stored[(kind, key)] = ABSENT if lease is not None else True
            if lease is not None and first_token is None:
                first_token = lease.fencing_token
    if first_token is None:
        lease = await verifier.acquire("crash-verifier-probe")
        first_token = lease.fencing_token if lease is not None else None
    if ledger.fencing_tokens and (first_token is None or first_token <= max(ledger.fencing_tokens)):
        before = max(ledger.fencing_tokens)
        problems.append(f"fencing token after the restart {first_token} <= {before} handed out before")
    return stored, problems


DatabaseFactory = Callable[[int], str]
"""A fresh, empty database for a round's seed: its URL (``postgresql://...``)."""


async def run_round(
    work_dir: Path,
    seed: int,
    *,
    writers: int = 16,
    min_kill: float = 0.4,
    max_kill: float = 2.0,
    database: DatabaseFactory | None = None,
) -> RoundResult:
    """One crash round in ``work_dir``: on a fresh database file there, or on ``database(seed)``."""
    rng = random.Random(seed)
    started = time.monotonic()
    db = work_dir / f"crash-{seed}.db"
    url = f"sqlite://{db}" if database is None else database(seed)
    log = work_dir / f"crash-{seed}.log"
    ledger = Ledger()
    killed = asyncio.Event()
    server = start_server(url, log)
    problems: list[str] = []
    kill_after = rng.uniform(min_kill, max_kill)
    try:
        tasks = [
            asyncio.create_task(Writer(i, server.address, ledger, random.Random(rng.random()), killed).run())
            for i in range(writers)
        ]
        await asyncio.sleep(kill_after)
        killed.set()
        server.sigkill()  # the crash: mid-flight, no shutdown
        done, pending = await asyncio.wait(tasks, timeout=60)
        if pending:
            problems.append(f"{len(pending)} writers did not notice the crash within 60 s")
            for t in pending:
                t.cancel()
        problems += [f"writer crashed: {t.exception()!r}" for t in done if t.exception() is not None]
    finally:
        server.sigkill()

    problems.extend(ledger.errors_before_kill)
    restarted = start_server(url, log)
    try:
        async with GrpcPersistenceProvider.connect(restarted.address, timeout=30.0) as store:
            stored, shape_problems = await _stored_state(store, ledger)
            problems.extend(shape_problems)
            after_restart = await store.next_definition_sequence(SEQ_DEFINITION)
    finally:
        code = restarted.terminate()
        if code != 0:
            problems.append(f"restarted server exited with {code}")

    acknowledged, in_flight, lost, found = verify(ledger, stored, after_restart)
    problems.extend(found)
    integrity = integrity_check(db) if database is None else "n/a"
    if integrity not in ("ok", "n/a"):
        problems.append(f"integrity_check: {integrity}")
    return RoundResult(
        seed=seed,
        acknowledged=acknowledged,
        records=len(ledger.records),
        lost=lost,
        in_flight=in_flight,
        problems=problems,
        integrity=integrity,
        kill_after=kill_after,
        seconds=time.monotonic() - started,
    )


def verify(ledger: Ledger, stored: dict[tuple[str, str], Any], after_restart: int) -> tuple[int, int, int, list[str]]:
    """(acknowledged writes, writes in flight, lost records, problems) of what the store holds."""
    problems: list[str] = []
    lost = 0
    acknowledged = 0
    in_flight = 0
    for (kind, key), rec in ledger.records.items():
        acknowledged += rec.acked_writes
        in_flight += len(rec.in_flight)
        value = stored.get((kind, key), ABSENT)
        if value not in rec.allowed():
            if rec.acked is not ABSENT:
                lost += 1
            problems.append(f"{kind} {key}: stored {value!r}, acknowledged {rec.acked!r}, in flight {rec.in_flight!r}")
    for wid, gen, sid in ledger.pairs:  # persist-with-subscriptions in flight: all or nothing
        if (stored.get(("workflow", wid)) == gen) != (stored.get(("subscription", sid)) == gen):
            problems.append(f"persist_workflow_with_subscriptions {wid} gen {gen} half applied")
    values = ledger.sequence_values
    acknowledged += len(values)
    if len(values) != len(set(values)):
        problems.append(f"definition sequence gave a number twice: {sorted(values)}")
    if values and after_restart <= max(values):
        lost += 1
        problems.append(f"definition sequence went back after the restart: {after_restart} <= {max(values)}")
    return acknowledged, in_flight, lost, problems


async def run_rounds(
    rounds: int,
    seed: int,
    work_dir: Path,
    *,
    writers: int = 16,
    verbose: bool = True,
    database: DatabaseFactory | None = None,
) -> list[RoundResult]:
    results = []
    for r in range(rounds):
        result = await run_round(work_dir, seed + r, writers=writers, database=database)
        results.append(result)
        if verbose:
            print(
                f"round {r + 1}/{rounds} seed {result.seed}: killed after {result.kill_after:.2f}s, "
                f"{result.acknowledged} acknowledged writes on {result.records} records checked, "
                f"{result.in_flight} in flight at the kill, lost {result.lost}, integrity {result.integrity}, "
                f"{len(result.problems)} problems ({result.seconds:.1f}s)",
                flush=True,
            )
            for problem in result.problems[:10]:
                print("   ", problem, flush=True)
    return results


def summary(results: list[RoundResult]) -> str:
    return (
        f"crash rounds: {len(results)}, acknowledged writes checked: {sum(r.acknowledged for r in results)}, "
        f"records checked: {sum(r.records for r in results)}, lost: {sum(r.lost for r in results)}, "
        f"other problems: {sum(len(r.problems) for r in results)}, "
        f"integrity ok: {sum(r.integrity == 'ok' for r in results)}/{len(results)}"
        f"{'' if all(r.integrity != 'n/a' for r in results) else ' (n/a on PostgreSQL)'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wfe-crash-") as tmp:
        results = asyncio.run(run_rounds(args.rounds, args.seed, Path(tmp), writers=args.writers))
    print(summary(results), flush=True)
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
