// GrpcPersistenceProvider against a live wfe-sqlite server (real process, real SQLite file).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AlreadyExists,
  CommandName,
  epochNanosOf,
  errorFromRpc,
  EventNotFound,
  GrpcLifecyclePublisher,
  GrpcLockProvider,
  GrpcPersistenceProvider,
  GrpcQueueProvider,
  InvalidArgument,
  LeaseLost,
  LosslessNumber,
  newEvent,
  newEventSubscription,
  newExecutionError,
  newExecutionPointer,
  newWorkflowInstance,
  NotFound,
  PointerStatus,
  PreciseDate,
  processEventCommand,
  processWorkflowCommand,
  QueueType,
  SubscriptionNotFound,
  WfeError,
  WorkflowNotFound,
  WorkflowStatus,
  WorkflowAlreadyExists,
  WorkflowNameTaken,
  EventAlreadyExists,
  SubscriptionAlreadyExists,
  type CommandHandler,
  type EventSubscription,
  type ScheduledCommand,
  type WorkflowInstance,
} from "../src/index.js";
import { CommandName as WireCommandName, ScheduledCommandService } from "../src/gen/wfe/persistence/v1/scheduled_commands_pb.js";
import { liveServer, sqliteScalar, startServer } from "./server.js";

const live = liveServer(async (address) => {
  const provider = await GrpcPersistenceProvider.connect(address);
  await provider.ensureStoreExists();
  return provider;
});

/** Replaces every Date by its epoch nanoseconds (Date equality in assert ignores sub-ms precision). */
function norm(value: unknown): unknown {
  if (value instanceof Date) return { instant: epochNanosOf(value) };
  if (value instanceof LosslessNumber) return { lossless: value.toString() };
  if (Array.isArray(value)) return value.map(norm);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, norm(v)]));
  }
  return value;
}

function assertSame(actual: unknown, expected: unknown, message?: string) {
  assert.deepStrictEqual(norm(actual), norm(expected), message);
}

async function assertRejects(promise: Promise<unknown>, cls: abstract new (...args: never[]) => unknown, reason?: string) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    if (reason !== undefined) assert.equal((err as WfeError).reason, reason);
    return true;
  });
}

const micros = (us: bigint) => PreciseDate.fromEpochMicros(us);

/** A command handler that collects what it is given (`pick` of each command) into `into`. */
function collect(into: unknown[], pick: (c: ScheduledCommand) => unknown = (c) => c): CommandHandler {
  return (c) => {
    into.push(pick(c));
    return Promise.resolve();
  };
}
const BASE_US = 1_750_000_000_000_000n; // an instant with room around it, in microseconds
const uniq = (prefix: string) => `${prefix}-${randomUUID()}`;

const BIG_DATA = {
  big: 2n ** 62n,
  bigPlusOne: 2n ** 62n + 1n,
  min64: -(2n ** 63n),
  maxU64: 2n ** 64n - 1n,
  small: 42,
  float: 0.1,
  decimal: 1.25e-7,
  text: "héllo ✓ 日本語 🎉 e\u0301 \u2028",
  nested: { list: [1, "two", null, true, { "ключ": "значение" }] },
};

function fullWorkflow(definition: string): WorkflowInstance {
  const w = newWorkflowInstance(definition, 3, BIG_DATA);
  w.id = "";
  w.createTime = micros(BASE_US + 123_456n);
  w.description = "a description ✓";
  w.reference = "ref-1";
  w.rootWorkflowId = "root-id";
  w.nextExecution = 1_750_000_000_000;
  const p1 = newExecutionPointer(0);
  Object.assign(p1, {
    status: PointerStatus.WAITING_FOR_EVENT,
    sleepUntil: micros(BASE_US + 1n),
    persistenceData: { counter: 2n ** 62n },
    startTime: micros(BASE_US + 2n),
    endTime: micros(BASE_US + 3n),
    eventName: "order-paid",
    eventKey: "order-1",
    eventPublished: true,
    eventData: { paid: 2n ** 62n },
    stepName: "wait",
    retryCount: 4,
    children: ["c1", "c2"],
    contextItem: "item ✓",
    predecessorId: "p0",
    outcome: [1, 2, 3],
    scope: ["s1", "s0"],
    extensionAttributes: { a: { nested: 2n ** 62n }, b: "🎉", c: null },
  });
  const p2 = newExecutionPointer(1);
  p2.status = PointerStatus.PENDING_PREDECESSOR;
  p2.outcome = 0; // falsy but present
  p2.contextItem = ""; // falsy but present
  w.executionPointers = [p1, p2];
  return w;
}

describe("store", () => {
  it("ensureStoreExists is idempotent", async () => {
    await live.client.ensureStoreExists();
    await live.client.ensureStoreExists();
  });

  it("supportsScheduledCommands", () => {
    assert.equal(live.client.supportsScheduledCommands(), true);
  });
});

describe("workflows", () => {
  it("creates and reads back every field exactly", async () => {
    const definition = uniq("def");
    const w = fullWorkflow(definition);
    const id = await live.client.createNewWorkflow(w);
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(w.id, id, "generated id is written back");
    assert.equal(w.name, `${definition}-1`, "assigned name is written back");
    const stored = await live.client.getWorkflowInstance(id);
    assertSame(stored, w);
    assert.equal((stored.data as Record<string, unknown>)["big"], 2n ** 62n);
    assert.ok(stored.createTime instanceof PreciseDate);
    assert.equal(stored.createTime.epochMicros, BASE_US + 123_456n);
    assert.equal(stored.completeTime, undefined);
    const byName = await live.client.getWorkflowInstanceByName(w.name);
    assertSame(byName, w);
  });

  it("stores an optional JSON null as absent", async () => {
    const w = newWorkflowInstance(uniq("def"), 1, null);
    const p = newExecutionPointer(0);
    p.eventData = null;
    p.outcome = null;
    w.executionPointers = [p];
    await live.client.createNewWorkflow(w);
    const stored = await live.client.getWorkflowInstance(w.id);
    assert.equal(stored.data, null, "required JSON keeps null");
    assert.ok(!("eventData" in stored.executionPointers[0]!));
    assert.ok(!("outcome" in stored.executionPointers[0]!));
  });

  it("keeps a supplied id and name, and assigns the next free sequence name", async () => {
    const definition = uniq("def");
    const named = newWorkflowInstance(definition, 1, null);
    named.name = `${definition}-2`; // taken before the sequence reaches it
    await live.client.createNewWorkflow(named);
    const a = newWorkflowInstance(definition, 1, null);
    const b = newWorkflowInstance(definition, 1, null);
    const idA = a.id;
    assert.equal(await live.client.createNewWorkflow(a), idA);
    await live.client.createNewWorkflow(b);
    assert.equal(a.name, `${definition}-1`);
    assert.equal(b.name, `${definition}-3`, "skips the taken -2");
  });

  it("rejects a duplicate id and a duplicate name", async () => {
    const w = newWorkflowInstance(uniq("def"), 1, null);
    await live.client.createNewWorkflow(w);
    const sameId = newWorkflowInstance("other", 1, null);
    sameId.id = w.id;
    await assertRejects(live.client.createNewWorkflow(sameId), WorkflowAlreadyExists, "WORKFLOW_ALREADY_EXISTS");
    const sameName = newWorkflowInstance("other", 1, null);
    sameName.name = w.name;
    await assertRejects(live.client.createNewWorkflow(sameName), WorkflowNameTaken, "WORKFLOW_NAME_TAKEN");
  });

  it("reports missing workflows as WorkflowNotFound", async () => {
    await assertRejects(live.client.getWorkflowInstance(uniq("missing")), WorkflowNotFound, "WORKFLOW_NOT_FOUND");
    await assertRejects(live.client.getWorkflowInstanceByName(uniq("missing")), WorkflowNotFound, "WORKFLOW_NOT_FOUND");
    const ghost = newWorkflowInstance("def", 1, null);
    await assertRejects(live.client.persistWorkflow(ghost), WorkflowNotFound, "WORKFLOW_NOT_FOUND");
    await assertRejects(live.client.persistWorkflowWithSubscriptions(ghost, []), WorkflowNotFound);
  });

  it("persistWorkflow replaces fields and pointers but never createTime", async () => {
    const w = fullWorkflow(uniq("def"));
    const id = await live.client.createNewWorkflow(w);
    const originalCreate = w.createTime;
    const updated: WorkflowInstance = {
      ...w,
      status: WorkflowStatus.COMPLETE,
      data: { done: true, n: 2n ** 62n },
      version: 4,
      completeTime: micros(BASE_US + 999_999n),
      createTime: micros(BASE_US + 5_000_000n),
      executionPointers: [{ ...newExecutionPointer(7), status: PointerStatus.COMPLETE, active: false }],
    };
    delete updated.description;
    delete updated.nextExecution;
    await live.client.persistWorkflow(updated);
    const stored = await live.client.getWorkflowInstance(id);
    assertSame(stored, { ...updated, createTime: originalCreate });
    assert.equal(stored.description, undefined);
    assert.equal(stored.nextExecution, undefined);
  });

  it("persistWorkflowWithSubscriptions is all or nothing", async () => {
    const w = newWorkflowInstance(uniq("def"), 1, { step: 0 });
    await live.client.createNewWorkflow(w);
    const s1 = newEventSubscription(w.id, 0, "p0", uniq("evt"), "k", micros(BASE_US));
    s1.id = "";
    const s2 = newEventSubscription(w.id, 1, "p1", s1.eventName, "k", micros(BASE_US + 1n));
    const step1 = { ...w, data: { step: 1 } };
    const ids = await live.client.persistWorkflowWithSubscriptions(step1, [s1, s2]);
    assert.equal(ids.length, 2);
    assert.equal(ids[1], s2.id);
    assert.equal(s1.id, ids[0], "generated id is written back");
    assertSame(await live.client.getSubscription(ids[0]!), s1);
    assert.deepEqual((await live.client.getWorkflowInstance(w.id)).data, { step: 1 });

    // A duplicate subscription id fails the whole call: the workflow keeps step 1.
    const fresh = newEventSubscription(w.id, 2, "p2", s1.eventName, "k", micros(BASE_US));
    const dup = { ...s2 };
    await assertRejects(
      live.client.persistWorkflowWithSubscriptions({ ...step1, data: { step: 2 } }, [fresh, dup]),
      AlreadyExists,
      "SUBSCRIPTION_ALREADY_EXISTS",
    );
    assert.deepEqual((await live.client.getWorkflowInstance(w.id)).data, { step: 1 });
    await assertRejects(live.client.getSubscription(fresh.id), SubscriptionNotFound);
  });

  it("getRunnableInstances filters, orders earliest first and gathers every page", async () => {
    // Early 1970 (the server takes nextExecution >= 0), so only workflows with nextExecution 0
    // (newWorkflowInstance's default) come before ours.
    const t0 = 1_000_000; // epoch ms
    const count = 1_150; // more than one default page (1000)
    const expected: string[] = [];
    const order = [...Array(count).keys()].reverse(); // create latest first
    for (let i = 0; i < order.length; i += 100) {
      await Promise.all(
        order.slice(i, i + 100).map(async (k) => {
          const w = newWorkflowInstance("runnable-def", 1, null);
          w.name = uniq("r");
          w.nextExecution = t0 + k;
          await live.client.createNewWorkflow(w);
          expected[k] = w.id;
        }),
      );
    }
    const notRunnable = [
      { ...newWorkflowInstance("runnable-def", 1, null), nextExecution: t0, status: WorkflowStatus.SUSPENDED },
      { ...newWorkflowInstance("runnable-def", 1, null), nextExecution: t0, status: WorkflowStatus.COMPLETE },
      { ...newWorkflowInstance("runnable-def", 1, null), nextExecution: undefined },
      { ...newWorkflowInstance("runnable-def", 1, null), nextExecution: t0 + count + 10 },
    ];
    for (const w of notRunnable) await live.client.createNewWorkflow(w);

    const asAt = new Date(t0 + count - 1);
    const runnable = await live.client.getRunnableInstances(asAt);
    const ours = new Set(expected);
    assert.deepEqual(
      runnable.filter((id) => ours.has(id) || notRunnable.some((w) => w.id === id)),
      expected,
    );
    assert.ok(runnable.length >= count);
    const firstOurs = runnable.indexOf(expected[0]!);
    assert.deepEqual(runnable.slice(firstOurs), expected, "ours are the latest and come last");
    const later = await live.client.getRunnableInstances(new Date(t0 + count + 10));
    assert.ok(later.includes(notRunnable[3]!.id));
    assert.ok(!later.includes(notRunnable[2]!.id), "no nextExecution: never runnable");
  });

  it("getWorkflowInstances returns the existing ones in one call, across 1000-id chunks", async () => {
    const made: WorkflowInstance[] = [];
    for (let i = 0; i < 3; i++) {
      const w = fullWorkflow(uniq("batch"));
      await live.client.createNewWorkflow(w);
      made.push(w);
    }
    const ids = [
      made[0]!.id,
      ...Array.from({ length: 12_000 }, () => uniq("missing")),
      made[1]!.id,
      made[0]!.id,
      made[2]!.id,
    ];
    const got = await live.client.getWorkflowInstances(ids);
    assert.equal(got.length, 3);
    const byId = new Map(got.map((w) => [w.id, w]));
    for (const w of made) assertSame(byId.get(w.id), w);
    assert.deepEqual(await live.client.getWorkflowInstances([]), []);
    assert.deepEqual(await live.client.getWorkflowInstances([uniq("missing")]), []);
  });

  it("nextDefinitionSequence counts 1, 2, 3 and never repeats under concurrency", async () => {
    const definition = uniq("seq");
    assert.equal(await live.client.nextDefinitionSequence(definition), 1);
    assert.equal(await live.client.nextDefinitionSequence(definition), 2);
    const values = await Promise.all(Array.from({ length: 30 }, () => live.client.nextDefinitionSequence(definition)));
    assert.deepEqual([...values].sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => i + 3));
    assert.equal(await live.client.nextDefinitionSequence(uniq("seq")), 1);
  });

  it("nextDefinitionSequence reserves a block with count, and refuses a count out of range", async () => {
    const definition = uniq("block");
    assert.equal(await live.client.nextDefinitionSequence(definition, 5), 1); // 1..5
    assert.equal(await live.client.nextDefinitionSequence(definition), 6);
    for (const count of [0, -1, 1.5, 10_001, Number.NaN]) {
      await assert.rejects(live.client.nextDefinitionSequence(definition, count), (error: unknown) => {
        assert.ok(error instanceof InvalidArgument, String(error));
        assert.equal(error.field, "count");
        return true;
      });
    }
    assert.equal(await live.client.nextDefinitionSequence(definition, 10_000), 7);
    assert.equal(await live.client.nextDefinitionSequence(definition), 10_007);
  });

  it("accepts 15 MiB workflows and gathers a multi-message BatchGetWorkflows stream", async () => {
    const payload = "x".repeat(15 * 1024 * 1024);
    const big = [1, 2].map((i) => newWorkflowInstance(uniq("big"), i, { payload, n: 2n ** 62n + BigInt(i) }));
    for (const w of big) await live.client.createNewWorkflow(w);
    const stored = await live.client.getWorkflowInstance(big[0]!.id);
    assert.equal((stored.data as { payload: string }).payload.length, payload.length);
    assert.equal((stored.data as { n: bigint }).n, 2n ** 62n + 1n);
    // 30 MiB together: more than one streamed message under any sane size budget.
    const both = await live.client.getWorkflowInstances([big[0]!.id, big[1]!.id]);
    assert.deepEqual(both.map((w) => w.id).sort(), big.map((w) => w.id).sort());
    assert.deepEqual(
      both.map((w) => (w.data as { n: bigint }).n).sort(),
      [2n ** 62n + 1n, 2n ** 62n + 2n],
    );
  });

  it("reports a malformed request as InvalidArgument", async () => {
    const w = newWorkflowInstance("", 1, null); // workflow_definition_id is required
    await assertRejects(live.client.createNewWorkflow(w), InvalidArgument, "INVALID_ARGUMENT");
    const long = newEvent("e", "k", null);
    long.id = "x".repeat(2000); // ids are at most 1024 bytes
    await assertRejects(live.client.createEvent(long), InvalidArgument, "INVALID_ARGUMENT");
  });

  it("rejects bad values before sending them", async () => {
    const w = newWorkflowInstance("def", 1, { bad: Number.NaN });
    await assertRejects(live.client.createNewWorkflow(w), InvalidArgument);
    const s = { ...newWorkflowInstance("def", 1, null), status: "NOPE" as WorkflowStatus };
    await assertRejects(live.client.createNewWorkflow(s), InvalidArgument);
    await assertRejects(live.client.getRunnableInstances(new Date(Number.NaN)), InvalidArgument);
  });

  it("a value refused before sending is InvalidArgument with code InvalidArgument, as the server's refusals", async () => {
    const refused = (e: unknown) => {
      // Before: code Unknown (2) for every InvalidArgument this client raised itself.
      assert.ok(e instanceof InvalidArgument, `expected InvalidArgument, got ${String(e)}`);
      assert.equal(e.code, Code.InvalidArgument, e.message);
      return true;
    };
    await assert.rejects(live.client.createNewWorkflow(newWorkflowInstance("def", 1, { bad: Number.NaN })), refused);
    await assert.rejects(live.client.getRunnableInstances(new Date(Number.NaN)), refused);
    await assert.rejects(GrpcPersistenceProvider.connect(live.server.address, { timeoutMs: 0 }), refused);
    await assert.rejects(live.client.createNewWorkflow(newWorkflowInstance("", 1, null)), refused); // the server's
  });

  it("rejects an out-of-range uint32 (version, stepId, retryCount) as InvalidArgument naming the field", async () => {
    const field = (name: string) => (e: unknown) => {
      // Before: a WfeError of code Internal, "serialize binary: cannot encode field ... invalid uint32".
      assert.ok(e instanceof InvalidArgument, `expected InvalidArgument, got ${String(e)}`);
      assert.equal(e.field, name);
      assert.match(e.message, new RegExp(`^${name.replace(/[.[\]]/g, "\\$&")} must be an integer from 0 to 4294967295, got `));
      return true;
    };
    for (const version of [1.5, -1, 2 ** 32, Number.NaN]) {
      await assert.rejects(live.client.createNewWorkflow(newWorkflowInstance("def", version, null)), field("workflow.version"));
    }
    const w = newWorkflowInstance("def", 1, null);
    w.executionPointers.push(newExecutionPointer(0), { ...newExecutionPointer(-1) });
    await assert.rejects(live.client.createNewWorkflow(w), field("workflow.executionPointers[1].stepId"));
    w.executionPointers[1] = { ...newExecutionPointer(1), retryCount: 0.5 };
    await assert.rejects(live.client.createNewWorkflow(w), field("workflow.executionPointers[1].retryCount"));
    const s = newEventSubscription(uniq("wf"), 2 ** 32, "p", "e", "k", new Date());
    await assert.rejects(live.client.createEventSubscription(s), field("subscription.stepId"));
  });
});

describe("events", () => {
  it("creates, reads, and rejects duplicates and missing ids", async () => {
    const e = newEvent(uniq("evt"), "key-1", BIG_DATA, micros(BASE_US + 7n));
    e.id = "";
    const id = await live.client.createEvent(e);
    assert.equal(e.id, id);
    assertSame(await live.client.getEvent(id), e);
    await assertRejects(live.client.createEvent({ ...e }), EventAlreadyExists, "EVENT_ALREADY_EXISTS");
    await assertRejects(live.client.getEvent(uniq("missing")), EventNotFound, "EVENT_NOT_FOUND");
    await assertRejects(live.client.markEventProcessed(uniq("missing")), EventNotFound, "EVENT_NOT_FOUND");
    await assertRejects(live.client.markEventUnprocessed(uniq("missing")), NotFound, "EVENT_NOT_FOUND");
  });

  it("getRunnableEvents lists unprocessed due events, oldest first", async () => {
    // Early 1970 (the server takes instants from 1970 on), before any other test's events.
    const t0 = 1_000_000_000n; // microseconds
    const name = uniq("run");
    const late = newEvent(name, "k", 1, micros(t0 + 20n));
    const early = newEvent(name, "k", 2, micros(t0 + 10n));
    const processed = newEvent(name, "k", 3, micros(t0 + 5n));
    const future = newEvent(name, "k", 4, micros(t0 + 30n));
    for (const e of [late, early, processed, future]) await live.client.createEvent(e);
    await live.client.markEventProcessed(processed.id);
    await live.client.markEventProcessed(processed.id); // idempotent
    assert.equal((await live.client.getEvent(processed.id)).isProcessed, true);

    assert.deepEqual(await live.client.getRunnableEvents(micros(t0 + 20n)), [early.id, late.id]);
    await live.client.markEventUnprocessed(processed.id);
    assert.equal((await live.client.getEvent(processed.id)).isProcessed, false);
    assert.deepEqual(await live.client.getRunnableEvents(micros(t0 + 20n)), [processed.id, early.id, late.id]);
  });

  it("getEvents matches name and key with eventTime <= asOf, across pages", async () => {
    const name = uniq("find");
    const ids: string[] = [];
    for (let i = 0; i < 1_050; i += 50) {
      const batch = Array.from({ length: 50 }, (_, j) => newEvent(name, "k", i + j, micros(BASE_US + BigInt(i + j))));
      await Promise.all(batch.map((e) => live.client.createEvent(e)));
      ids.push(...batch.map((e) => e.id));
    }
    await live.client.createEvent(newEvent(name, "other-key", null, micros(BASE_US)));
    await live.client.createEvent(newEvent(uniq("other"), "k", null, micros(BASE_US)));
    const all = await live.client.getEvents(name, "k", micros(BASE_US + 10_000n));
    assert.deepEqual(all, ids);
    const upTo = await live.client.getEvents(name, "k", micros(BASE_US + 9n));
    assert.deepEqual(upTo, ids.slice(0, 10));
    assert.deepEqual(await live.client.getEvents(name, "k", micros(BASE_US - 1n)), []);
  });

  it("keeps microseconds and truncates nanoseconds", async () => {
    const t = PreciseDate.fromEpochNanos(1_760_000_000_123_456_789n);
    const e = newEvent(uniq("ns"), "k", null, t);
    await live.client.createEvent(e);
    const stored = await live.client.getEvent(e.id);
    assert.equal((stored.eventTime as PreciseDate).epochNanos, 1_760_000_000_123_456_000n);
    assert.equal((stored.eventTime as PreciseDate).toPreciseISOString(), "2025-10-09T08:53:20.123456Z");
  });
});

describe("subscriptions", () => {
  async function workflowId(): Promise<string> {
    const w = newWorkflowInstance(uniq("subdef"), 1, null);
    return live.client.createNewWorkflow(w);
  }

  it("creates, reads, and rejects duplicates and missing ids", async () => {
    const s = newEventSubscription(await workflowId(), 3, "ptr", uniq("evt"), "key", micros(BASE_US + 11n));
    s.id = "";
    s.subscriptionData = { big: 2n ** 62n, text: "✓ 🎉" };
    const id = await live.client.createEventSubscription(s);
    assert.equal(s.id, id);
    assertSame(await live.client.getSubscription(id), s);
    await assertRejects(live.client.createEventSubscription({ ...s }), SubscriptionAlreadyExists, "SUBSCRIPTION_ALREADY_EXISTS");
    await assertRejects(live.client.getSubscription(uniq("missing")), SubscriptionNotFound, "SUBSCRIPTION_NOT_FOUND");
    await assertRejects(live.client.terminateSubscription(uniq("missing")), SubscriptionNotFound, "SUBSCRIPTION_NOT_FOUND");
    const expiry = new Date(Date.now() + 60_000);
    await assertRejects(live.client.setSubscriptionToken(uniq("missing"), "t", "w", expiry), SubscriptionNotFound);
    await assertRejects(live.client.clearSubscriptionToken(uniq("missing"), "t"), SubscriptionNotFound);
  });

  it("getSubscriptions lists open ones with subscribeAsOf <= asOf, oldest first", async () => {
    const wf = await workflowId();
    const name = uniq("evt");
    const mk = (us: bigint, key = "k") => newEventSubscription(wf, 0, "p", name, key, micros(BASE_US + us));
    const later = mk(20n);
    const earlier = mk(10n);
    const terminated = mk(5n);
    const future = mk(50n);
    const otherKey = mk(1n, "other");
    for (const s of [later, earlier, terminated, future, otherKey]) await live.client.createEventSubscription(s);
    await live.client.terminateSubscription(terminated.id);
    await live.client.terminateSubscription(terminated.id); // idempotent
    assertSame(await live.client.getSubscriptions(name, "k", micros(BASE_US + 20n)), [earlier, later]);
    assert.equal((await live.client.getSubscription(terminated.id)).id, terminated.id, "terminated ones stay readable");
  });

  it("getFirstOpenSubscription skips token-held ones and answers undefined when none", async () => {
    const wf = await workflowId();
    const name = uniq("evt");
    const first = newEventSubscription(wf, 0, "p", name, "k", micros(BASE_US + 1n));
    const second = newEventSubscription(wf, 0, "p", name, "k", micros(BASE_US + 2n));
    await live.client.createEventSubscription(first);
    await live.client.createEventSubscription(second);
    const asOf = micros(BASE_US + 100n);
    assert.equal((await live.client.getFirstOpenSubscription(name, "k", asOf))?.id, first.id);
    assert.equal(await live.client.setSubscriptionToken(first.id, "tok", "worker", new Date(Date.now() + 60_000)), true);
    assert.equal((await live.client.getFirstOpenSubscription(name, "k", asOf))?.id, second.id);
    await live.client.terminateSubscription(second.id);
    assert.equal(await live.client.getFirstOpenSubscription(name, "k", asOf), undefined);
    assert.equal(await live.client.getFirstOpenSubscription(uniq("none"), "k", asOf), undefined);
  });

  it("setSubscriptionToken: of 20 concurrent claimers exactly one wins", async () => {
    const s = newEventSubscription(await workflowId(), 0, "p", uniq("evt"), "k", micros(BASE_US));
    await live.client.createEventSubscription(s);
    const expiry = new Date(Date.now() + 60_000);
    const tokens = Array.from({ length: 20 }, (_, i) => `token-${i}`);
    const results = await Promise.all(tokens.map((t, i) => live.client.setSubscriptionToken(s.id, t, `worker-${i}`, expiry)));
    assert.equal(results.filter(Boolean).length, 1);
    const winner = results.indexOf(true);
    const stored = await live.client.getSubscription(s.id);
    assert.equal(stored.externalToken, tokens[winner]);
    assert.equal(stored.externalWorkerId, `worker-${winner}`);
    assert.equal(stored.externalTokenExpiry?.getTime(), expiry.getTime());

    // A loser's token does not clear it; the winner's does, after which a new claim succeeds.
    const loser = tokens[(winner + 1) % tokens.length]!;
    await assertRejects(live.client.clearSubscriptionToken(s.id, loser), SubscriptionNotFound, "SUBSCRIPTION_NOT_FOUND");
    assert.equal(await live.client.setSubscriptionToken(s.id, loser, "w", expiry), false);
    await live.client.clearSubscriptionToken(s.id, tokens[winner]!);
    const cleared = await live.client.getSubscription(s.id);
    assert.equal(cleared.externalToken, undefined);
    assert.equal(cleared.externalWorkerId, undefined);
    assert.equal(cleared.externalTokenExpiry, undefined);
    assert.equal(await live.client.setSubscriptionToken(s.id, loser, "w", expiry), true);
  });

  it("an expired token can be taken over", async () => {
    const s = newEventSubscription(await workflowId(), 0, "p", uniq("evt"), "k", micros(BASE_US));
    await live.client.createEventSubscription(s);
    assert.equal(await live.client.setSubscriptionToken(s.id, "old", "w1", new Date(Date.now() - 1_000)), true);
    assert.equal(await live.client.setSubscriptionToken(s.id, "new", "w2", new Date(Date.now() + 60_000)), true);
    assert.equal((await live.client.getSubscription(s.id)).externalToken, "new");
    assert.equal(await live.client.setSubscriptionToken(s.id, "third", "w3", new Date(Date.now() + 60_000)), false);
  });
});

describe("scheduled commands", () => {
  // Commands are due at their executeTime; asOf selects them. Each test uses its own far-apart
  // time window so they do not see each other's commands.
  it("processCommands deletes handled commands and keeps failed ones", async () => {
    const t = 1_000_000_000; // epoch ms (2001)
    const ok1 = processWorkflowCommand(uniq("wf"), t + 1);
    const bad = processEventCommand(uniq("ev"), t + 2);
    const ok2 = processWorkflowCommand(uniq("wf"), t + 3);
    const notDue = processWorkflowCommand(uniq("wf"), t + 1_000_000);
    for (const c of [ok1, bad, ok2, notDue]) await live.client.scheduleCommand(c);

    const seen: ScheduledCommand[] = [];
    const failures: unknown[] = [];
    await live.client.processCommands(
      new Date(t + 10),
      (command) => {
        seen.push(command);
        return command.data === bad.data ? Promise.reject(new Error("handler failed")) : Promise.resolve();
      },
      // A short lease: handled commands left unacknowledged would be offered again below.
      { onHandlerError: (_c, e) => failures.push(e), leaseMs: 300 },
    );
    assert.deepEqual(seen, [ok1, bad, ok2], "every due command once, earliest first");
    assert.equal(failures.length, 1);
    await new Promise((r) => setTimeout(r, 500));

    const again: ScheduledCommand[] = [];
    await live.client.processCommands(new Date(t + 10), collect(again));
    assert.deepEqual(again, [bad], "the failed command is offered again, the handled ones are gone");

    const none: ScheduledCommand[] = [];
    await live.client.processCommands(new Date(t + 10), collect(none));
    assert.deepEqual(none, []);

    const rest: ScheduledCommand[] = [];
    await live.client.processCommands(new Date(t + 1_000_000), collect(rest));
    assert.deepEqual(rest, [notDue]);
  });

  it("scheduling the same command again keeps the earlier executeTime", async () => {
    const t = 1_100_000_000;
    const id = uniq("wf");
    await live.client.scheduleCommand(processWorkflowCommand(id, t + 500));
    await live.client.scheduleCommand(processWorkflowCommand(id, t + 900)); // later: ignored
    await live.client.scheduleCommand(processWorkflowCommand(id, t + 100)); // earlier: kept
    const got: ScheduledCommand[] = [];
    await live.client.processCommands(new Date(t + 100), collect(got));
    assert.deepEqual(got, [{ commandName: CommandName.PROCESS_WORKFLOW, data: id, executeTime: t + 100 }]);
  });

  it("processCommands loops over more than one claim and two processors never share a command", async () => {
    const t = 1_200_000_000;
    const commands = Array.from({ length: 260 }, (_, i) => processEventCommand(uniq("ev"), t + i));
    await Promise.all(commands.map((c) => live.client.scheduleCommand(c)));
    const second = await GrpcPersistenceProvider.connect(live.server.address);
    try {
      const handled: string[] = [];
      const handler = async (c: ScheduledCommand) => {
        handled.push(c.data);
        await new Promise((r) => setImmediate(r));
      };
      await Promise.all([
        live.client.processCommands(new Date(t + 1_000), handler, { maxCommands: 25 }),
        second.processCommands(new Date(t + 1_000), handler, { maxCommands: 25 }),
      ]);
      assert.equal(handled.length, commands.length, "each command handled exactly once");
      assert.deepEqual(new Set(handled), new Set(commands.map((c) => c.data)));
    } finally {
      second.close();
    }
  });

  it("processCommands runs handlers one at a time, in claim order, across claims", async () => {
    const t = 1_300_000_000;
    // More than one claim (100 by default), scheduled out of order.
    const commands = Array.from({ length: 150 }, (_, i) => processWorkflowCommand(uniq(`c${String(i).padStart(3, "0")}`), t + i));
    for (const c of [...commands].reverse()) await live.client.scheduleCommand(c);
    const seen: string[] = [];
    let running = 0;
    let maxRunning = 0;
    await live.client.processCommands(new Date(t + 1_000), async (c) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 2));
      seen.push(c.data);
      running -= 1;
    });
    assert.deepEqual(seen, commands.map((c) => c.data), "claim order: earliest first");
    assert.equal(maxRunning, 1, "one handler at a time");
  });

  it("a failed command stays leased until the call ends, then is released", async () => {
    const t = 1_400_000_000;
    const fails = processWorkflowCommand(uniq("fails"), t + 1);
    const later = processWorkflowCommand(uniq("later"), t + 2);
    for (const c of [fails, later]) await live.client.scheduleCommand(c);
    const other = await GrpcPersistenceProvider.connect(live.server.address);
    try {
      // While the first processor handles `later`, another finds nothing: `fails` is still held.
      const meanwhile: ScheduledCommand[] = [];
      await live.client.processCommands(new Date(t + 10), async (c) => {
        if (c.data === fails.data) throw new Error("refused");
        await other.processCommands(new Date(t + 10), collect(meanwhile));
      });
      assert.deepEqual(meanwhile, []);
      // Released at the end of the call, not after the 30 s lease: offered again at once.
      const after: ScheduledCommand[] = [];
      await other.processCommands(new Date(t + 10), collect(after));
      assert.deepEqual(after, [fails]);
    } finally {
      other.close();
    }
  });

  it("a command scheduled again by its handler is handed over once per call", async () => {
    const t = 1_500_000_000;
    const again = processWorkflowCommand(uniq("again"), t + 1);
    await live.client.scheduleCommand(again);
    const seen: string[] = [];
    const handler = async (c: ScheduledCommand) => {
      seen.push(c.data);
      // Due again at once: the acknowledgement keeps it and the next claim of this call finds it.
      // (Bounded, so a processor that hands it over again fails this test instead of looping.)
      if (seen.length <= 5) await live.client.scheduleCommand(processWorkflowCommand(c.data, t + 1));
    };
    await live.client.processCommands(new Date(t + 10), handler);
    assert.deepEqual(seen, [again.data]);
    await live.client.processCommands(new Date(t + 10), handler);
    assert.deepEqual(seen, [again.data, again.data], "offered again in the next call");
    const drained: string[] = [];
    await live.client.processCommands(new Date(t + 10), collect(drained, (c) => c.data));
    assert.deepEqual(drained, [again.data], "a handler that does not schedule it again ends it");
  });

  it("a command whose short lease ran out during the call is not handed over twice", async () => {
    const t = 1_600_000_000;
    const slow = processWorkflowCommand(uniq("slow"), t + 1);
    const bad = processWorkflowCommand(uniq("bad"), t + 2);
    const next = processWorkflowCommand(uniq("next"), t + 3);
    for (const c of [slow, bad, next]) await live.client.scheduleCommand(c);
    const seen: string[] = [];
    await live.client.processCommands(
      new Date(t + 10),
      async (c) => {
        seen.push(c.data);
        if (c.data === bad.data) throw new Error("refused");
        // The one-command claims' 200 ms lease on `bad` runs out while `next` runs.
        if (c.data === next.data) await new Promise((r) => setTimeout(r, 400));
      },
      { leaseMs: 200, maxCommands: 1 },
    );
    assert.deepEqual(seen, [slow.data, bad.data, next.data]);
    const again: string[] = [];
    await live.client.processCommands(new Date(t + 10), collect(again, (c) => c.data));
    assert.deepEqual(again, [bad.data], "the failed one is released and offered again");
  });

  it("answers LEASE_LOST for an acknowledge without a live lease", async () => {
    const transport = createGrpcTransport({ baseUrl: `http://${live.server.address}` });
    const raw = createClient(ScheduledCommandService, transport);
    const err = await raw
      .acknowledgeCommand({ commandName: WireCommandName.PROCESS_WORKFLOW, data: uniq("none"), leaseId: uniq("lease") })
      .then(
        () => undefined,
        (e: unknown) => errorFromRpc(e),
      );
    assert.ok(err instanceof LeaseLost, `expected LeaseLost, got ${String(err)}`);
    assert.equal(err.reason, "LEASE_LOST");
  });
});

describe("execution errors", () => {
  it("persistErrors stores more than 10000 errors in one call", async () => {
    const before = Number(sqliteScalar(live.server.dbPath, "SELECT count(*) FROM execution_errors"));
    const id = uniq("wf");
    await live.client.persistErrors(Array.from({ length: 12_000 }, (_, i) => newExecutionError(id, "p0", `e${i}`)));
    const afterCount = Number(sqliteScalar(live.server.dbPath, "SELECT count(*) FROM execution_errors"));
    assert.equal(afterCount - before, 12_000);
  });

  it("persistErrors stores every error", async () => {
    const before = Number(sqliteScalar(live.server.dbPath, "SELECT count(*) FROM execution_errors"));
    const errors = Array.from({ length: 5 }, (_, i) => newExecutionError(uniq("wf"), `p${i}`, `failure ✓ ${i}`));
    await live.client.persistErrors(errors);
    await live.client.persistErrors([]);
    const afterCount = Number(sqliteScalar(live.server.dbPath, "SELECT count(*) FROM execution_errors"));
    assert.equal(afterCount - before, 5);
  });
});

describe("connection", () => {
  it("a call without an answer fails at its deadline", { timeout: 30_000 }, async () => {
    const own = await startServer();
    const p = await GrpcPersistenceProvider.connect(own.address, { timeoutMs: 700 });
    try {
      await p.ensureStoreExists();
      own.process.kill("SIGSTOP");
      const started = Date.now();
      const outcome = await p.getWorkflowInstance("w1").then(
        () => undefined,
        (e: unknown) => e,
      );
      const waited = Date.now() - started;
      own.process.kill("SIGCONT");
      assert.ok(outcome instanceof WfeError, `expected a WfeError, got ${String(outcome)}`);
      assert.equal(outcome.code, Code.DeadlineExceeded, String(outcome));
      assert.ok(waited >= 650 && waited < 3_500, `failed after ${waited} ms`);
      await p.ensureStoreExists(); // the server answers again, and so does the provider
    } finally {
      p.close();
      await own.stop();
    }
  });

  it("refuses a deadline that is not a positive number of milliseconds", async () => {
    await assert.rejects(GrpcPersistenceProvider.connect(live.server.address, { timeoutMs: 0 }), InvalidArgument);
  });

  it("fails to connect to a port nobody listens on", async () => {
    await assert.rejects(GrpcPersistenceProvider.connect("127.0.0.1:1"), WfeError);
  });

  it("closes through await using", async () => {
    let leaked: GrpcPersistenceProvider | undefined;
    {
      await using p = await GrpcPersistenceProvider.connect(live.server.address);
      leaked = p;
      assert.equal(await p.nextDefinitionSequence(uniq("using")), 1);
    }
    await assert.rejects(leaked.ensureStoreExists(), WfeError);
  });

  it("refuses calls once closed", async () => {
    const p = await GrpcPersistenceProvider.connect(live.server.address);
    await p.ensureStoreExists();
    p.close();
    p.close();
    await assert.rejects(p.getWorkflowInstance("x"), WfeError);
  });
});

describe("options given as null (JavaScript callers)", () => {
  it("are the defaults, as undefined is, for every call that takes options", async () => {
    const none = null as unknown as undefined; // what a JavaScript caller may pass
    const outcomes: Record<string, string> = {};
    const attempt = async (name: string, fn: () => unknown) => {
      try {
        await fn();
        outcomes[name] = "ok";
      } catch (error) {
        outcomes[name] = String(error);
      }
    };
    const address = live.server.address;
    const store = live.client;
    await attempt("GrpcPersistenceProvider.connect", async () => (await GrpcPersistenceProvider.connect(address, none)).close());
    await attempt("connect tls: null", async () =>
      (await GrpcPersistenceProvider.connect(address, { tls: null as unknown as undefined, timeoutMs: 5_000 })).close(),
    );
    const w = newWorkflowInstance(uniq("null-options"), 1, {});
    await store.createNewWorkflow(w);
    await attempt("persistWorkflow", () => store.persistWorkflow(w, none));
    await attempt("persistWorkflowWithSubscriptions", () => store.persistWorkflowWithSubscriptions(w, [], none));
    await attempt("processCommands", () => store.processCommands(new Date(0), async () => {}, none));
    await attempt("listWorkflows", () => store.listWorkflows(none));
    await attempt("searchWorkflows", () => store.searchWorkflows("null-options", none));
    await attempt("purgeWorkflows", () => store.purgeWorkflows(new Date(0), none));
    await attempt("new GrpcLockProvider", () => new GrpcLockProvider(store, none).close());
    await attempt("GrpcLockProvider.connect", async () => (await GrpcLockProvider.connect(address, none)).close());
    await attempt("GrpcQueueProvider.connect", async () => (await GrpcQueueProvider.connect(address, none)).close());
    const queue = new GrpcQueueProvider(store);
    await attempt("dequeueWork", () => queue.dequeueWork(QueueType.INDEX, none));
    await attempt("dequeueWorkflow", () => queue.dequeueWorkflow(none));
    await attempt("dequeueLeased", async () => {
      await using locks = new GrpcLockProvider(store);
      await queue.dequeueLeased(QueueType.INDEX, locks, none);
    });
    await attempt("GrpcLifecyclePublisher.connect", async () => (await GrpcLifecyclePublisher.connect(address, none)).close());
    await attempt("watch", async () => {
      await using watch = new GrpcLifecyclePublisher(store).watch(none);
      await watch.started();
    });
    assert.deepEqual(
      Object.entries(outcomes).filter(([, outcome]) => outcome !== "ok"),
      [],
    );
  });
});

// Keep the unused-import checker honest about types only used in annotations.
export type { EventSubscription };
