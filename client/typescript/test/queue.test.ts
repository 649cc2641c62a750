// GrpcQueueProvider against a live wfe-sqlite server (real process, real SQLite file).
//
// The server itself queues runnable workflows and due events (the never-stranded rule), so the
// tests on the WORKFLOW queue stay in one place, and the others use the EVENT and INDEX queues of
// a server on which no event is ever created.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import {
  GrpcLockProvider,
  GrpcPersistenceProvider,
  GrpcQueueProvider,
  InvalidArgument,
  newWorkflowInstance,
  QueueType,
  WfeError,
} from "../src/index.js";
import { liveServer, startServer } from "./server.js";

const live = liveServer((address) => GrpcQueueProvider.connect(address));

const uniq = (prefix: string) => `${prefix}-${randomUUID()}`;

async function drain(q: GrpcQueueProvider, type: QueueType): Promise<string[]> {
  const out: string[] = [];
  for (let id = await q.dequeueWork(type); id !== undefined; id = await q.dequeueWork(type)) out.push(id);
  return out;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

describe("GrpcQueueProvider", () => {
  it("hands items out first in, first out, per queue", async () => {
    const events = Array.from({ length: 20 }, (_, i) => uniq(`e${i}`));
    const index = Array.from({ length: 5 }, (_, i) => uniq(`i${i}`));
    for (let i = 0; i < events.length; i++) {
      assert.equal(await live.client.queueWork(events[i]!, QueueType.EVENT), true);
      if (i < index.length) assert.equal(await live.client.queueWork(index[i]!, QueueType.INDEX), true);
    }
    assert.deepEqual(await drain(live.client, QueueType.INDEX), index);
    assert.deepEqual(await drain(live.client, QueueType.EVENT), events);
    assert.equal(await live.client.dequeueWork(QueueType.EVENT), undefined, "empty: undefined at once");
  });

  it("keeps one entry, in its first place, for an id queued while it waits", async () => {
    const [a, b] = [uniq("a"), uniq("b")];
    assert.equal(await live.client.queueWork(a, QueueType.EVENT), true);
    assert.equal(await live.client.queueWork(b, QueueType.EVENT), true);
    assert.equal(await live.client.queueWork(a, QueueType.EVENT), false, "already waiting");
    assert.equal(await live.client.queueWork(a, QueueType.INDEX), true, "another queue is another entry");
    assert.deepEqual(await drain(live.client, QueueType.EVENT), [a, b]);
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [a]);
    assert.equal(await live.client.queueWork(a, QueueType.EVENT), true, "dequeued, so it can be queued again");
    assert.deepEqual(await drain(live.client, QueueType.EVENT), [a]);
  });

  it("hands each item to exactly one of many concurrent dequeuers", async () => {
    const consumers = await Promise.all(Array.from({ length: 6 }, () => GrpcQueueProvider.connect(live.server.address)));
    try {
      const ids = Array.from({ length: 300 }, (_, i) => uniq(`x${i}`));
      // Producing and consuming at once: consumers wait (long poll) while the producer queues.
      let producing = true;
      const taken = consumers.map(async (c) => {
        const mine: string[] = [];
        for (;;) {
          const id = await c.dequeueWork(QueueType.EVENT, { waitMs: producing ? 500 : 0 });
          if (id !== undefined) mine.push(id);
          else if (!producing) return mine;
        }
      });
      for (let i = 0; i < ids.length; i += 30) {
        await Promise.all(ids.slice(i, i + 30).map((id) => live.client.queueWork(id, QueueType.EVENT)));
      }
      producing = false;
      const perConsumer = await Promise.all(taken);
      const all = perConsumer.flat();
      assert.equal(all.length, ids.length, "no item handed out twice, none lost");
      assert.deepEqual(new Set(all), new Set(ids));
      assert.ok(perConsumer.filter((m) => m.length > 0).length > 1, "the work was shared");
    } finally {
      consumers.forEach((c) => c.close());
    }
  });

  it("wakes a waiting dequeue as soon as another client queues an item", async (t) => {
    await using consumer = await GrpcQueueProvider.connect(live.server.address);
    const latencies: number[] = [];
    for (let round = 0; round < 20; round++) {
      const id = uniq("wake");
      const waiting = consumer.dequeueWork(QueueType.INDEX, { waitMs: 10_000 });
      await sleep(100); // the dequeue is waiting at the server
      const queuedAt = performance.now();
      await live.client.queueWork(id, QueueType.INDEX);
      assert.equal(await waiting, id);
      latencies.push(performance.now() - queuedAt);
    }
    latencies.sort((a, b) => a - b);
    const [p50, max] = [percentile(latencies, 50), latencies[latencies.length - 1]!];
    t.diagnostic(`queueWork -> waiting dequeueWork, 20 rounds: p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
    assert.ok(max < 1_000, `slowest wake-up ${max.toFixed(1)} ms`);
  });

  it("waits the whole wait on an empty live.client, with a deadline longer than the wait", async () => {
    // The connection's deadline (300 ms) is shorter than the wait: the dequeue must still be allowed to wait.
    await using consumer = await GrpcQueueProvider.connect(live.server.address, { timeoutMs: 300 });
    const started = performance.now();
    assert.equal(await consumer.dequeueWork(QueueType.INDEX, { waitMs: 800 }), undefined);
    const waited = performance.now() - started;
    assert.ok(waited >= 750, `returned after ${waited.toFixed(0)} ms of an 800 ms wait`);
    assert.ok(waited < 800 + 2_000, `returned after ${waited.toFixed(0)} ms of an 800 ms wait`);
  });

  it("cancels a waiting dequeue through its signal", async () => {
    const abort = new AbortController();
    const started = performance.now();
    const waiting = live.client.dequeueWork(QueueType.INDEX, { waitMs: 30_000, signal: abort.signal });
    setTimeout(() => abort.abort(), 100);
    await assert.rejects(waiting, (e: unknown) => e instanceof WfeError && e.code === Code.Canceled);
    assert.ok(performance.now() - started < 5_000);
    // The cancelled call took nothing: an item queued now goes to the next dequeue.
    const id = uniq("after-cancel");
    await live.client.queueWork(id, QueueType.INDEX);
    assert.equal(await live.client.dequeueWork(QueueType.INDEX), id);
  });

  it("a dequeue waiting when its provider is closed rejects (Canceled) saying the provider is closed; on a store closed under it too", async () => {
    const closedError = (e: unknown) =>
      e instanceof WfeError && e.code === Code.Canceled && e.message === "GrpcPersistenceProvider is closed";
    const own = await GrpcQueueProvider.connect(live.server.address);
    const waiting = own.dequeueWork(QueueType.INDEX, { waitMs: 10_000 });
    await sleep(300); // the dequeue is waiting on the server
    const started = performance.now();
    own.close();
    await assert.rejects(waiting, closedError);
    assert.ok(performance.now() - started < 2_000, "at once");
    // The same for a call of a provider sharing a store that is closed under it.
    const store = await GrpcPersistenceProvider.connect(live.server.address);
    const queue = new GrpcQueueProvider(store);
    const waitingShared = queue.dequeueWork(QueueType.INDEX, { waitMs: 10_000 });
    await sleep(300);
    store.close();
    await assert.rejects(waitingShared, closedError);
  });

  it("close() of a provider sharing a store ends its waiting dequeues at once (Canceled) and refuses later calls; the store goes on", async () => {
    const closedError = (e: unknown) =>
      e instanceof WfeError && e.code === Code.Canceled && e.message === "GrpcQueueProvider is closed";
    const store = await GrpcPersistenceProvider.connect(live.server.address);
    try {
      const queue = new GrpcQueueProvider(store);
      const locks = new GrpcLockProvider(store);
      const waits = [
        queue.dequeueWork(QueueType.INDEX, { waitMs: 10_000 }),
        queue.dequeueWorkflow({ waitMs: 10_000 }),
        queue.dequeueLeased(QueueType.EVENT, locks, { waitMs: 10_000 }),
      ];
      const outcomes = waits.map((w) => w.then((v) => `resolved with ${JSON.stringify(v)}`, (e: unknown) => e));
      await sleep(300); // waiting on the server
      const started = performance.now();
      queue.close();
      const ended = await Promise.race([Promise.all(outcomes), sleep(2_000).then(() => "still waiting 2 s after close()")]);
      assert.ok(Array.isArray(ended), String(ended));
      for (const outcome of ended) assert.ok(closedError(outcome), String(outcome));
      assert.ok(performance.now() - started < 2_000, "at once");
      await assert.rejects(queue.queueWork(uniq("late"), QueueType.INDEX), closedError);
      await assert.rejects(queue.dequeueWork(QueueType.INDEX), closedError);
      // The store goes on; the ended waiters took nothing queued afterwards.
      const id = uniq("after-queue-closed");
      assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
      assert.deepEqual(await drain(live.client, QueueType.INDEX), [id]);
      await locks.close();
    } finally {
      store.close();
    }
  });

  it("rejects bad arguments", async () => {
    await assert.rejects(live.client.dequeueWork(QueueType.INDEX, { waitMs: 60_001 }), InvalidArgument);
    await assert.rejects(live.client.dequeueWork(QueueType.INDEX, { waitMs: -1 }), InvalidArgument);
    await assert.rejects(
      live.client.dequeueWork(QueueType.INDEX, { waitMs: "10" as unknown as number }),
      (e: unknown) => e instanceof InvalidArgument && e.field === "waitMs" && /got a string/.test(e.message),
    );
    await assert.rejects(live.client.queueWork("x", "BOGUS" as QueueType), InvalidArgument);
    await assert.rejects(live.client.queueWork("", QueueType.INDEX), (e: unknown) => e instanceof InvalidArgument && e.code === Code.InvalidArgument);
  });

  it("dequeueWorkflow brings the workflow; the server queues a runnable workflow by itself", async () => {
    await using store = await GrpcPersistenceProvider.connect(live.server.address);
    const ghost = uniq("no-such-workflow");
    await live.client.queueWork(ghost, QueueType.WORKFLOW);
    assert.deepEqual(await live.client.dequeueWorkflow(), { id: ghost });

    // Created RUNNABLE and due: queued by the server, a waiting host learns of it without polling.
    const waiting = live.client.dequeueWorkflow({ waitMs: 10_000 });
    await sleep(100);
    const w = newWorkflowInstance(uniq("def"), 1, { n: 1 });
    await store.createNewWorkflow(w);
    const got = await waiting;
    assert.equal(got?.id, w.id);
    assert.equal(got.workflow?.revision, 1);
    assert.deepEqual(got.workflow?.data, { n: 1 });
  });
});

describe("GrpcQueueProvider durability", () => {
  it("keeps acknowledged items across a restart and a kill -9", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wfe-sqlite-ts-queue-"));
    const dbPath = join(dir, "queue.db");
    let running = await startServer([], { dbPath });
    try {
      const ids = Array.from({ length: 10 }, (_, i) => uniq(`durable${i}`));
      for (const [signal, batch] of [["SIGTERM", ids.slice(0, 5)], ["SIGKILL", ids.slice(5)]] as const) {
        {
          await using q = await GrpcQueueProvider.connect(running.address);
          for (const id of batch) assert.equal(await q.queueWork(id, QueueType.EVENT), true);
        }
        await running.stop(signal);
        running = await startServer([], { dbPath });
      }
      await using q = await GrpcQueueProvider.connect(running.address);
      assert.deepEqual(await drain(q, QueueType.EVENT), ids);
    } finally {
      await running.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("GrpcQueueProvider, server killed", () => {
  it("a server killed during a waiting dequeue is Unavailable, not Canceled", async () => {
    const own = await startServer();
    try {
      await using q = await GrpcQueueProvider.connect(own.address);
      const waiting = q.dequeueWork(QueueType.INDEX, { waitMs: 20_000 }).then(
        () => "an answer",
        (e: unknown) => e,
      );
      await sleep(300); // the dequeue is waiting on the server
      own.process.kill("SIGKILL");
      const outcome = await waiting;
      // Before: code Canceled ("http/2 stream closed with error code CANCEL"), as if this client had cancelled.
      assert.ok(outcome instanceof WfeError, `expected a WfeError, got ${String(outcome)}`);
      assert.equal(outcome.code, Code.Unavailable, `${outcome.name}: ${outcome.message}`);
      assert.match(outcome.message, /connection to the server was lost during the call/);
    } finally {
      await own.stop();
    }
  });
});

describe("GrpcQueueProvider.dequeueLeased", () => {
  it("takes the item with the lock provider's leases, passes over one leased elsewhere, carries releases", async () => {
    const address = live.server.address;
    await using locks = await GrpcLockProvider.connect(address, { ttlMs: 10_000 });
    await using other = await GrpcLockProvider.connect(address);
    const [a, b] = [uniq("la"), uniq("lb")];
    assert.equal(await live.client.queueWork(a, QueueType.INDEX), true);
    assert.equal(await live.client.queueWork(b, QueueType.INDEX), true);
    assert.equal(await other.acquireLock(`claim.${a}`), true);

    // a's claim is another owner's: a is passed over (and keeps its place), b is handed out.
    const first = await live.client.dequeueLeased(QueueType.INDEX, locks, { prefixes: ["claim.", ""] });
    assert.equal(first?.id, b);
    assert.deepEqual(
      first.leases.map((l) => l.resource),
      [`claim.${b}`, b],
    );
    assert.ok(first.leases[0]!.fencingToken < first.leases[1]!.fencingToken);
    for (const lease of first.leases) {
      assert.equal(lease.owner, locks.owner);
      assert.equal(locks.fencingToken(lease.resource), lease.fencingToken, "held by the lock provider");
      assert.equal(await other.acquireLock(lease.resource), false);
    }

    assert.equal(await other.releaseLock(`claim.${a}`), true);
    // b's releases go with the next dequeue, which now gets a.
    const second = await live.client.dequeueLeased(QueueType.INDEX, locks, {
      prefixes: ["claim.", ""],
      release: [`claim.${b}`, b],
    });
    assert.equal(second?.id, a);
    assert.deepEqual(locks.held.sort(), [`claim.${a}`, a].sort());
    assert.equal(await other.acquireLock(`claim.${b}`), true, "released by the dequeue");
    assert.equal(await other.acquireLock(b), true);

    // Nothing left: undefined, and a release still happens.
    assert.equal(await live.client.dequeueLeased(QueueType.INDEX, locks, { release: [a] }), undefined);
    assert.deepEqual(locks.held, [`claim.${a}`]);
    assert.equal(await other.acquireLock(a), true);
  });

  it("rejects bad prefixes and releases with InvalidArgument, taking nothing", async () => {
    await using locks = await GrpcLockProvider.connect(live.server.address);
    const id = uniq("bad");
    assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
    for (const options of [
      { prefixes: [] },
      { prefixes: ["p.", "p."] },
      { release: Array.from({ length: 17 }, (_, i) => `r${i}`) },
    ]) {
      await assert.rejects(live.client.dequeueLeased(QueueType.INDEX, locks, options), InvalidArgument);
    }
    assert.deepEqual(locks.held, []);
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [id], "still queued");
    await locks.close();
    await assert.rejects(live.client.dequeueLeased(QueueType.INDEX, locks), WfeError);
  });

  it("a leased dequeue refused (a bad wait, prefixes or releases) keeps the leases it was to release held and renewed", async () => {
    // A TTL that a renewal delayed by load does not outlast (300 ms could lose the lease on CI).
    const ttl = 1_500;
    await using locks = await GrpcLockProvider.connect(live.server.address, { ttlMs: ttl });
    await using other = await GrpcLockProvider.connect(live.server.address);
    const id = uniq("refused");
    assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
    const kept = uniq("kept");
    const acquiredAt = Date.now();
    assert.equal(await locks.acquireLock(kept), true);
    for (const options of [
      { waitMs: -5 },
      { waitMs: 60_001 },
      { prefixes: [] },
      { prefixes: ["p.", "p."] },
      { prefixes: ["x".repeat(513)] },
      { release: [kept, ...Array.from({ length: 16 }, (_, i) => `r${i}`)] },
    ]) {
      const label = JSON.stringify(options).slice(0, 80);
      await assert.rejects(live.client.dequeueLeased(QueueType.INDEX, locks, { ...options, release: options.release ?? [kept] }), InvalidArgument, label);
      assert.deepEqual(locks.held, [kept], `${label}: still held`);
    }
    await sleep(Math.max(0, acquiredAt + 3 * ttl - Date.now())); // three TTLs: the lease lives only if it is still renewed
    assert.deepEqual(locks.held, [kept]);
    assert.equal(await other.acquireLock(kept), false, "still renewed");
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [id], "nothing dequeued");
  });

  it("a leased dequeue waiting when its lock provider closes leaves the item and its leases free, and rejects (Canceled)", async () => {
    const locks = await GrpcLockProvider.connect(live.server.address, { ttlMs: 60_000 });
    const waiting = live.client.dequeueLeased(QueueType.INDEX, locks, { waitMs: 10_000, prefixes: ["", "p."] });
    waiting.catch(() => {}); // it rejects during close(): asserted below
    await sleep(300);
    await locks.close(); // e.g. a host shutting down its lock provider first
    const id = uniq("closed-meanwhile");
    assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
    await assert.rejects(waiting, (e: unknown) => e instanceof WfeError && e.code === Code.Canceled && /GrpcLockProvider is closed/.test(e.message));
    await using other = await GrpcLockProvider.connect(live.server.address);
    assert.equal(await other.acquireLock(id), true, "its lease is free (not left for its 60 s TTL)");
    assert.equal(await other.acquireLock(`p.${id}`), true, "every lease of it");
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [id], "still queued");
  });

  it("a leased dequeue waiting when its lock provider is closed ends at once (Canceled), and takes nothing that comes later", async () => {
    const locks = await GrpcLockProvider.connect(live.server.address, { ttlMs: 60_000 });
    const waiting = live.client.dequeueLeased(QueueType.INDEX, locks, { waitMs: 10_000, prefixes: ["", "p."] });
    const outcome = waiting.then(
      (work) => `resolved with ${work?.id ?? "nothing"}`,
      (error: unknown) => error,
    );
    await sleep(300); // the dequeue is waiting on the server
    const started = performance.now();
    await locks.close();
    const ended = await Promise.race([outcome, sleep(2_000).then(() => "still waiting 2 s after close()")]);
    assert.ok(
      ended instanceof WfeError && ended.code === Code.Canceled && ended.message === "GrpcLockProvider is closed",
      String(ended),
    );
    assert.ok(performance.now() - started < 2_000, "at once");
    // The ended call took nothing: an item queued now is free, its leases too, for the next dequeue.
    const id = uniq("after-locks-closed");
    assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
    await using other = await GrpcLockProvider.connect(live.server.address);
    assert.equal(await other.acquireLock(id), true);
    assert.equal(await other.acquireLock(`p.${id}`), true);
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [id], "still queued");
  });

  it("an id, prefix or release that is not a string, prefixes or releases given as one string, or no lock provider, is InvalidArgument naming it, taking nothing", async () => {
    const invalid = (field: string) => (e: unknown) =>
      e instanceof InvalidArgument && e.field === field && e.message.startsWith(`${field}: expected `);
    await assert.rejects(live.client.queueWork(42 as unknown as string, QueueType.INDEX), invalid("id"));
    assert.equal(await live.client.dequeueWork(QueueType.INDEX), undefined, "42 was not queued");
    await using locks = await GrpcLockProvider.connect(live.server.address);
    const id = uniq("typed");
    assert.equal(await live.client.queueWork(id, QueueType.INDEX), true);
    const cases: [object, string][] = [
      [{ prefixes: "p." }, "prefixes"],
      [{ prefixes: [1] }, "prefixes[0]"],
      [{ prefixes: ["p.", null] }, "prefixes[1]"],
      [{ release: "r" }, "release"],
      [{ release: [{}] }, "release[0]"],
    ];
    for (const [options, field] of cases) {
      await assert.rejects(live.client.dequeueLeased(QueueType.INDEX, locks, options), invalid(field), field);
    }
    await assert.rejects(live.client.dequeueLeased(QueueType.INDEX, undefined as unknown as GrpcLockProvider), invalid("locks"));
    assert.deepEqual(locks.held, []);
    assert.deepEqual(await drain(live.client, QueueType.INDEX), [id], "still queued");
  });
});
