// GrpcLifecyclePublisher against a live wfe-sqlite server (real process).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import {
  epochNanosOf,
  GrpcLifecyclePublisher,
  GrpcPersistenceProvider,
  InvalidArgument,
  WfeError,
  LifecycleEventType,
  newLifecycleEvent,
  PreciseDate,
  type LifecycleEvent,
  type LifecycleWatch,
} from "../src/index.js";
import { liveServer, startServer } from "./server.js";

const live = liveServer((address) => GrpcLifecyclePublisher.connect(address));

const uniq = (prefix: string) => `${prefix}-${randomUUID()}`;

/** Reads `count` events from a started watch (fails after `timeoutMs`). */
async function take(watch: LifecycleWatch, count: number, timeoutMs = 5_000): Promise<LifecycleEvent[]> {
  const events: LifecycleEvent[] = [];
  if (count === 0) return events;
  const timer = setTimeout(() => watch.close(), timeoutMs);
  try {
    for await (const event of watch) {
      events.push(event);
      if (events.length === count) break;
    }
  } finally {
    clearTimeout(timer);
  }
  assert.equal(events.length, count, `got ${events.length} of ${count} events within ${timeoutMs} ms`);
  return events;
}

/** Publishes until the server counts `expected` watchers, for at most 3 s; the last count. */
async function watchersSettleAt(expected: number): Promise<number> {
  const probe = newLifecycleEvent(LifecycleEventType.STARTED, uniq("probe"));
  const deadline = Date.now() + 3_000;
  let count = await live.client.publish(probe);
  while (count !== expected && Date.now() < deadline) {
    await sleep(20);
    count = await live.client.publish(probe);
  }
  return count;
}

const norm = (e: LifecycleEvent) => ({ ...e, eventTime: epochNanosOf(e.eventTime) });

describe("GrpcLifecyclePublisher", () => {
  it("relays published events to a watcher, field for field and in order", async () => {
    await using watch = live.client.watch({ workflowDefinitionId: "relay-def" });
    await watch.started();
    const id = uniq("wf");
    const sent = [
      newLifecycleEvent(LifecycleEventType.STARTED, id, {
        workflowDefinitionId: "relay-def",
        version: 3,
        reference: "order-42",
        eventTime: new PreciseDate(Date.UTC(2024, 1, 29, 12, 0, 0, 123), 456_000),
      }),
      newLifecycleEvent(LifecycleEventType.STEP_STARTED, id, { workflowDefinitionId: "relay-def", version: 3, stepId: 2, stepName: "charge" }),
      newLifecycleEvent(LifecycleEventType.ERROR, id, { workflowDefinitionId: "relay-def", version: 3, message: "card declined ✗" }),
      newLifecycleEvent(LifecycleEventType.COMPLETED, id, { workflowDefinitionId: "relay-def", version: 3 }),
    ];
    for (const event of sent) assert.ok((await live.client.publish(event)) >= 1, "the watch counts as a watcher");
    const received = await take(watch, sent.length);
    assert.deepEqual(received.map(norm), sent.map(norm));
    const time = received[0]!.eventTime;
    assert.ok(time instanceof PreciseDate);
    assert.equal(time.getMicroseconds(), 456);
    assert.equal(received[1]!.reference, undefined, "absent stays absent");
  });

  it("filters by workflow instance and by definition", async () => {
    const [x, y] = [uniq("x"), uniq("y")];
    const [d, e] = [uniq("d"), uniq("e")];
    await using all = live.client.watch();
    await using byInstance = live.client.watch({ workflowInstanceId: x });
    await using byDefinition = live.client.watch({ workflowDefinitionId: d });
    await Promise.all([all.started(), byInstance.started(), byDefinition.started()]);
    const events = [
      newLifecycleEvent(LifecycleEventType.STARTED, x, { workflowDefinitionId: e }),
      newLifecycleEvent(LifecycleEventType.STARTED, y, { workflowDefinitionId: d }),
      newLifecycleEvent(LifecycleEventType.STARTED, y, { workflowDefinitionId: e }),
      newLifecycleEvent(LifecycleEventType.COMPLETED, x, { workflowDefinitionId: d }),
    ];
    for (const event of events) await live.client.publish(event);
    const key = (ev: LifecycleEvent) => `${ev.type}:${ev.workflowInstanceId}:${ev.workflowDefinitionId}`;
    // Events are relayed in order, so the last matching event arriving proves the others were filtered out.
    assert.deepEqual((await take(all, 4)).map(key), events.map(key));
    assert.deepEqual((await take(byInstance, 2)).map(key), [events[0]!, events[3]!].map(key));
    assert.deepEqual((await take(byDefinition, 2)).map(key), [events[1]!, events[3]!].map(key));
  });

  it("cancels the stream when the loop breaks, and on close() or the signal", async () => {
    assert.equal(await watchersSettleAt(0), 0, "no watcher left over from earlier tests");
    const first = live.client.watch();
    await first.started();
    assert.equal(await watchersSettleAt(1), 1);
    for await (const event of first) {
      assert.equal(event.type, LifecycleEventType.STARTED);
      break;
    }
    assert.equal(await watchersSettleAt(0), 0, "break cancelled the stream at the server");

    const second = live.client.watch();
    await second.started();
    assert.equal(await watchersSettleAt(1), 1);
    second.close();
    const ended: LifecycleEvent[] = [];
    for await (const event of second) ended.push(event); // ends quietly
    assert.deepEqual(ended, []);
    assert.equal(await watchersSettleAt(0), 0, "close() cancelled the stream at the server");

    const abort = new AbortController();
    const third = live.client.watch({ signal: abort.signal });
    await third.started();
    let seen = 0;
    let firstSeen = () => {};
    const sawOne = new Promise<void>((resolve) => (firstSeen = resolve));
    const reading = (async () => {
      for await (const event of third) {
        assert.equal(event.type, LifecycleEventType.STARTED);
        seen += 1;
        firstSeen();
      }
    })();
    assert.equal(await watchersSettleAt(1), 1);
    await sawOne;
    abort.abort();
    await reading; // ends quietly
    const afterAbort = seen;
    assert.equal(await watchersSettleAt(0), 0, "the signal cancelled the stream at the server");
    assert.equal(seen, afterAbort, "nothing more is read after the abort");
  });

  it("rejects events the contract does not allow", async () => {
    await assert.rejects(
      live.client.publish({ ...newLifecycleEvent(LifecycleEventType.STARTED, "w"), type: "BOGUS" as LifecycleEventType }),
      (err: unknown) => err instanceof InvalidArgument && err.field === "event.type",
    );
    // uint32 fields out of range: InvalidArgument naming the field (before: code Internal from the serializer).
    await assert.rejects(
      live.client.publish(newLifecycleEvent(LifecycleEventType.STARTED, "w", { version: -1 })),
      (err: unknown) => err instanceof InvalidArgument && err.field === "event.version",
    );
    await assert.rejects(
      live.client.publish(newLifecycleEvent(LifecycleEventType.STEP_STARTED, "w", { stepId: 2 ** 32 })),
      (err: unknown) => err instanceof InvalidArgument && err.field === "event.stepId",
    );
    // Checked by the server: the workflow instance id is required.
    await assert.rejects(live.client.publish(newLifecycleEvent(LifecycleEventType.STARTED, "")), InvalidArgument);
  });

  it("a text field or watch filter that is not a string is InvalidArgument naming it, sending nothing", async () => {
    const invalid = (field: string) => (e: unknown) =>
      e instanceof InvalidArgument && e.field === field && new RegExp(`^${field}: expected a string, got \\w+$`).test(e.message);
    await using watch = live.client.watch();
    await watch.started();
    for (const field of ["workflowInstanceId", "workflowDefinitionId", "reference", "stepName", "message"]) {
      const event = { ...newLifecycleEvent(LifecycleEventType.STARTED, "w"), [field]: 42 };
      await assert.rejects(live.client.publish(event), invalid(`event.${field}`), field);
    }
    for (const field of ["workflowInstanceId", "workflowDefinitionId"]) {
      let opened: LifecycleWatch | undefined;
      assert.throws(() => (opened = live.client.watch({ [field]: 7 })), invalid(field), field);
      opened?.close();
    }
    // Nothing was published: the first event the watch sees is this one.
    const id = uniq("after-bad-input");
    await live.client.publish(newLifecycleEvent(LifecycleEventType.STARTED, id));
    assert.deepEqual((await take(watch, 1)).map((e) => e.workflowInstanceId), [id]);
  });
});

describe("a closed publisher", () => {
  it("watch() on it throws (Canceled) and opens no stream; a store it shares, closed, too", async () => {
    assert.equal(await watchersSettleAt(0), 0, "no watcher left over from earlier tests");
    const own = await GrpcLifecyclePublisher.connect(live.server.address);
    own.close();
    const store = await GrpcPersistenceProvider.connect(live.server.address);
    const shared = new GrpcLifecyclePublisher(store);
    store.close();
    for (const [label, publisher] of [["own connection", own], ["shared store", shared]] as const) {
      let opened: LifecycleWatch | undefined;
      let error: unknown;
      try {
        opened = publisher.watch();
        await opened.started();
      } catch (e) {
        error = e;
      }
      const watchers = await watchersSettleAt(0);
      opened?.close(); // (the old code opened a live watch on a new connection here)
      assert.equal(opened, undefined, `${label}: watch() returned a watch`);
      assert.ok(error instanceof WfeError && error.code === Code.Canceled && /closed/.test(error.message), `${label}: ${String(error)}`);
      assert.equal(watchers, 0, `${label}: no stream opened`);
    }
  });

  it("ends the loop of an open watch quietly, as closing the watch does; a store it shares, closed, too", async () => {
    const own = await GrpcLifecyclePublisher.connect(live.server.address);
    const store = await GrpcPersistenceProvider.connect(live.server.address);
    const shared = new GrpcLifecyclePublisher(store);
    for (const [label, publisher, close] of [
      ["own connection", own, () => own.close()],
      ["shared store", shared, () => store.close()],
    ] as const) {
      const watch = publisher.watch();
      await watch.started();
      const seen: string[] = [];
      const reading = (async () => {
        for await (const event of watch) seen.push(event.workflowInstanceId);
      })();
      assert.equal(await live.client.publish(newLifecycleEvent(LifecycleEventType.STARTED, label)), 1);
      while (seen.length === 0) await sleep(10);
      close();
      await assert.doesNotReject(reading, `${label}: the loop ended with an error`);
      assert.deepEqual(seen, [label]);
    }
  });

  it("close() of a publisher sharing a store ends its open watches quietly and refuses later calls (Canceled); the store goes on", async () => {
    const store = await GrpcPersistenceProvider.connect(live.server.address);
    try {
      const publisher = new GrpcLifecyclePublisher(store);
      const watch = publisher.watch();
      await watch.started();
      const seen: string[] = [];
      const reading = (async () => {
        for await (const event of watch) seen.push(event.workflowInstanceId);
      })();
      const id = uniq("before-close");
      assert.equal(await live.client.publish(newLifecycleEvent(LifecycleEventType.STARTED, id)), 1);
      while (seen.length === 0) await sleep(10);
      publisher.close();
      const ended = await Promise.race([reading.then(() => "ended"), sleep(2_000).then(() => "still reading 2 s after close()")]);
      assert.equal(ended, "ended");
      assert.deepEqual(seen, [id]);
      assert.equal(await watchersSettleAt(0), 0, "its stream is closed");
      const closed = (e: unknown) => e instanceof WfeError && e.code === Code.Canceled && e.message === "GrpcLifecyclePublisher is closed";
      assert.throws(() => publisher.watch(), closed);
      await assert.rejects(publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, uniq("late"))), closed);
      // The store goes on.
      const other = new GrpcLifecyclePublisher(store);
      assert.equal(await other.publish(newLifecycleEvent(LifecycleEventType.STARTED, uniq("after"))), 0);
    } finally {
      store.close();
    }
  });
});

describe("a watch on a server that does not answer", () => {
  it("started() rejects (DeadlineExceeded) within the connection's timeoutMs and closes the watch", { timeout: 60_000 }, async () => {
    const own = await startServer();
    const publisher = await GrpcLifecyclePublisher.connect(own.address, { timeoutMs: 2_000 });
    try {
      assert.equal(await publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, uniq("warm"))), 0);
      own.process.kill("SIGSTOP"); // frozen: takes the stream, never answers
      const watch = publisher.watch();
      const started = Date.now();
      const outcome = await Promise.race([
        watch.started().then(() => "resolved", (e: unknown) => e),
        sleep(6_000).then(() => "still pending after 6 s"),
      ]);
      assert.ok(outcome instanceof WfeError && outcome.code === Code.DeadlineExceeded, String(outcome));
      assert.ok(Date.now() - started < 3_500, `took ${Date.now() - started} ms`);
      const events: LifecycleEvent[] = [];
      for await (const event of watch) events.push(event); // closed: ends at once
      assert.deepEqual(events, []);
    } finally {
      own.process.kill("SIGCONT");
      publisher.close();
      await own.stop();
    }
  });
});
