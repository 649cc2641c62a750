// Text with a lone surrogate, for every client on a connection, against a live wfe-sqlite server.
// protobuf-es sends a lone surrogate as U+FFFD, silently; every call must refuse such text
// (InvalidArgument naming the field, as the Python client does) before anything is sent.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import {
  GrpcLifecyclePublisher,
  GrpcLockProvider,
  GrpcPersistenceProvider,
  GrpcQueueProvider,
  InvalidArgument,
  LifecycleEventType,
  newEventSubscription,
  newExecutionPointer,
  newLifecycleEvent,
  newWorkflowInstance,
  QueueType,
  type ExecutionPointer,
  type JsonValue,
} from "../src/index.js";
import { liveServer } from "./server.js";

const live = liveServer((address) => GrpcPersistenceProvider.connect(address));

const uniq = (prefix: string) => `${prefix}-${randomUUID()}`;

/** A predicate for assert.rejects: InvalidArgument naming `field`, saying why. */
const loneSurrogate = (field: string) => (e: unknown) => {
  assert.ok(e instanceof InvalidArgument, String(e));
  assert.equal(e.field, field);
  assert.equal(e.message, `${field}: not valid Unicode text (lone surrogate)`);
  return true;
};

const EMOJI = "\uD83D\uDE00"; // a well-formed surrogate pair

describe("lone surrogates", () => {
  it("acquireLock refuses one and takes no lock on U+FFFD", async () => {
    const locks = new GrpcLockProvider(live.client);
    const other = new GrpcLockProvider(live.client);
    try {
      const name = uniq("lock");
      await assert.rejects(locks.acquireLock(`${name}\uD800`), loneSurrogate("resource"));
      await assert.rejects(locks.acquire(`${name}\uDC00`), loneSurrogate("resource"));
      assert.deepEqual(locks.held, []);
      // Before: the first call took the lock on `${name}\uFFFD`, and this one was refused.
      assert.equal(await other.acquireLock(`${name}\uFFFD`), true);
      assert.equal(await other.releaseLock(`${name}\uFFFD`), true);
      await assert.rejects(locks.releaseLock(`${name}\uD800`), loneSurrogate("resource"));
      // A well-formed pair is text like any other, and not the same as U+FFFD.
      assert.equal(await locks.acquireLock(`${name}${EMOJI}`), true);
      assert.equal(await other.acquireLock(`${name}\uFFFD`), true);
      assert.equal(await other.acquireLock(`${name}${EMOJI}`), false);
      assert.equal(await locks.releaseLock(`${name}${EMOJI}`), true);
      assert.equal(await other.releaseLock(`${name}\uFFFD`), true);
    } finally {
      await locks.close();
      await other.close();
    }
  });

  it("createNewWorkflow refuses one in reference, naming workflow.reference, and stores nothing", async () => {
    const reference = uniq("ref");
    const instance = newWorkflowInstance(uniq("def"), 1, { n: 1 });
    instance.reference = `${reference}\uD800`;
    await assert.rejects(live.client.createNewWorkflow(instance), loneSurrogate("workflow.reference"));
    // Before: stored with the reference `${reference}\uFFFD`.
    assert.deepEqual((await live.client.listWorkflows({ reference: `${reference}\uFFFD` })).items, []);
    assert.deepEqual((await live.client.listWorkflows({ definitionId: instance.workflowDefinitionId })).items, []);

    const good = newWorkflowInstance(instance.workflowDefinitionId, 1, { note: `a ${EMOJI}` });
    good.reference = `${reference}${EMOJI}`;
    const id = await live.client.createNewWorkflow(good);
    const stored = await live.client.getWorkflowInstance(id);
    assert.equal(stored.reference, `${reference}${EMOJI}`);
    assert.deepEqual(stored.data, { note: `a ${EMOJI}` });
    assert.equal((await live.client.listWorkflows({ reference: `${reference}${EMOJI}` })).items.length, 1);
    await live.client.deleteWorkflow(id);
  });

  it("names the field deep in a request: pointers, their lists and maps, subscriptions, a stream's ids", async () => {
    const instance = newWorkflowInstance(uniq("def"), 1);
    const id = await live.client.createNewWorkflow(instance);
    const cases: [string, (p: ExecutionPointer) => void][] = [
      ["workflow.executionPointers[1].eventKey", (p) => (p.eventKey = "k\uD800")],
      ["workflow.executionPointers[1].children[1]", (p) => (p.children = ["c", "\uDC00c"])],
      ["workflow.executionPointers[1].extensionAttributes", (p) => (p.extensionAttributes = { ["\uD800k"]: 1 })],
      ["workflow.executionPointers[1].scope[0]", (p) => (p.scope = ["\uDBFF"])],
    ];
    for (const [field, spoil] of cases) {
      const pointer = newExecutionPointer(0);
      spoil(pointer);
      instance.executionPointers = [newExecutionPointer(0), pointer];
      await assert.rejects(live.client.persistWorkflow(instance), loneSurrogate(field));
    }
    const pointer = newExecutionPointer(0);
    instance.executionPointers = [newExecutionPointer(0), pointer];
    const subscriptions = [
      newEventSubscription(id, 0, pointer.id, "ev", "key", new Date()),
      newEventSubscription(id, 0, pointer.id, "ev", `key\uD800`, new Date()),
    ];
    await assert.rejects(
      live.client.persistWorkflowWithSubscriptions(instance, subscriptions),
      loneSurrogate("subscriptions[1].eventKey"),
    );
    await assert.rejects(live.client.getWorkflowInstances([id, "\uD800"]), loneSurrogate("ids[1]"));
    await assert.rejects(live.client.getEvents("ev", "\uDC00", new Date()), loneSurrogate("eventKey"));
    // Nothing of it was stored; the pair goes through everywhere.
    assert.equal((await live.client.getWorkflowInstance(id)).revision, 1);
    pointer.eventKey = EMOJI;
    pointer.children = [EMOJI];
    pointer.extensionAttributes = { [EMOJI]: EMOJI };
    subscriptions[1]!.eventKey = EMOJI;
    await live.client.persistWorkflowWithSubscriptions(instance, subscriptions);
    const stored = (await live.client.getWorkflowInstances([id]))[0]!;
    assert.equal(stored.executionPointers[1]!.eventKey, EMOJI);
    assert.deepEqual(stored.executionPointers[1]!.children, [EMOJI]);
    assert.deepEqual(stored.executionPointers[1]!.extensionAttributes, { [EMOJI]: EMOJI });
    assert.equal((await live.client.getFirstOpenSubscription("ev", EMOJI, new Date()))?.id, subscriptions[1]!.id);
    await live.client.deleteWorkflow(id);
  });

  it("queueWork refuses one in the id and queues nothing", async () => {
    const queue = new GrpcQueueProvider(live.client);
    const id = uniq("work");
    await assert.rejects(queue.queueWork(`${id}\uD800`, QueueType.INDEX), loneSurrogate("id"));
    // Before: `${id}\uFFFD` was queued.
    assert.equal(await queue.dequeueWork(QueueType.INDEX), undefined);
    assert.equal(await queue.queueWork(`${id}${EMOJI}`, QueueType.INDEX), true);
    assert.equal(await queue.dequeueWork(QueueType.INDEX), `${id}${EMOJI}`);
  });

  it("lifecycle publish and watch refuse one in a text field", async () => {
    const publisher = new GrpcLifecyclePublisher(live.client);
    const event = newLifecycleEvent(LifecycleEventType.ERROR, uniq("wf"), { reference: "r\uD800" });
    await assert.rejects(publisher.publish(event), loneSurrogate("event.reference"));
    await assert.rejects(
      publisher.publish(newLifecycleEvent(LifecycleEventType.ERROR, uniq("wf"), { message: "boom \uDC00" })),
      loneSurrogate("event.message"),
    );
    const watch = publisher.watch({ workflowDefinitionId: "d\uD800" });
    await assert.rejects(watch.started(), loneSurrogate("workflowDefinitionId"));
    watch.close();
    const good = newLifecycleEvent(LifecycleEventType.ERROR, uniq("wf"), { reference: EMOJI, message: `boom ${EMOJI}` });
    assert.equal(await publisher.publish(good), 0);
  });

  it("JSON data with one goes as the escape \\udXXX, which the server refuses as Python's client does", async () => {
    // JSON.stringify writes a lone surrogate as \udXXX (valid JSON, valid UTF-8): not U+FFFD, but
    // the server refuses JSON that escapes one, naming the field as the client's check would.
    for (const data of [{ half: "\uD800" }, { [`k\uDC00`]: 1 }] as JsonValue[]) {
      const instance = newWorkflowInstance(uniq("def"), 1, data);
      await assert.rejects(live.client.createNewWorkflow(instance), loneSurrogate("workflow.data"));
      assert.deepEqual((await live.client.listWorkflows({ definitionId: instance.workflowDefinitionId })).items, []);
    }
  });
});
