// Workflow revisions (optimistic concurrency) against a live wfe-sqlite server.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import {
  GrpcPersistenceProvider,
  InvalidArgument,
  newEventSubscription,
  newExecutionPointer,
  newWorkflowInstance,
  RevisionConflict,
  SubscriptionNotFound,
  WorkflowStatus,
  type WorkflowInstance,
} from "../src/index.js";
import { liveServer, pythonBinary } from "./server.js";

const live = liveServer((address) => GrpcPersistenceProvider.connect(address));

const uniq = (prefix: string) => `${prefix}-${randomUUID()}`;

async function created(data: WorkflowInstance["data"] = { step: 0 }): Promise<WorkflowInstance> {
  const w = newWorkflowInstance(uniq("def"), 1, data);
  w.executionPointers.push(newExecutionPointer(0));
  assert.equal(w.revision, 0, "a new instance was never stored");
  await live.client.createNewWorkflow(w);
  return w;
}

function isConflict(err: unknown): boolean {
  assert.ok(err instanceof RevisionConflict, `expected RevisionConflict, got ${String(err)}`);
  assert.equal(err.code, Code.Aborted);
  assert.equal(err.reason, "REVISION_CONFLICT");
  return true;
}

describe("revisions", () => {
  it("are 1 after create and one more after every persist, filled in by every read", async () => {
    const w = await created();
    assert.equal(w.revision, 1, "create writes the revision back");
    assert.equal((await live.client.getWorkflowInstance(w.id)).revision, 1);
    w.data = { step: 1 };
    await live.client.persistWorkflow(w);
    assert.equal(w.revision, 2, "persist writes the new revision back");
    const subscription = newEventSubscription(w.id, 0, w.executionPointers[0]!.id, uniq("evt"), "k", new Date());
    await live.client.persistWorkflowWithSubscriptions(w, [subscription]);
    assert.equal(w.revision, 3);
    assert.equal((await live.client.getWorkflowInstance(w.id)).revision, 3);
    assert.equal((await live.client.getWorkflowInstanceByName(w.name)).revision, 3);
    assert.deepEqual((await live.client.getWorkflowInstances([w.id])).map((x) => x.revision), [3]);
  });

  it("refuse a stale persist and write nothing", async () => {
    const w = await created();
    const stale = await live.client.getWorkflowInstance(w.id);
    w.data = { step: 1, by: "fresh host" };
    await live.client.persistWorkflow(w);
    assert.equal(w.revision, 2);

    stale.data = { step: 1, by: "stale host" };
    stale.status = WorkflowStatus.COMPLETE;
    await assert.rejects(live.client.persistWorkflow(stale), isConflict);
    assert.equal(stale.revision, 1, "a refused persist leaves the revision as it was");
    const stored = await live.client.getWorkflowInstance(w.id);
    assert.deepEqual(stored.data, { step: 1, by: "fresh host" });
    assert.equal(stored.status, WorkflowStatus.RUNNABLE);
    assert.equal(stored.revision, 2);
  });

  it("refuse a stale persistWorkflowWithSubscriptions and insert no subscription", async () => {
    const w = await created();
    const stale = await live.client.getWorkflowInstance(w.id);
    await live.client.persistWorkflow(w);
    const eventName = uniq("evt");
    const subscription = newEventSubscription(w.id, 0, w.executionPointers[0]!.id, eventName, "k", new Date(0));
    stale.data = { step: "stale" };
    await assert.rejects(live.client.persistWorkflowWithSubscriptions(stale, [subscription]), isConflict);
    await assert.rejects(live.client.getSubscription(subscription.id), SubscriptionNotFound);
    assert.deepEqual(await live.client.getSubscriptions(eventName, "k", new Date()), []);
    const stored = await live.client.getWorkflowInstance(w.id);
    assert.deepEqual(stored.data, { step: 0 });
    assert.equal(stored.revision, 2);
  });

  it("let exactly one of two hosts that read the same revision write", async () => {
    const w = await created();
    const hosts = await Promise.all([0, 1].map(() => GrpcPersistenceProvider.connect(live.server.address)));
    try {
      for (let round = 0; round < 5; round++) {
        const copies = await Promise.all(hosts.map((h) => h.getWorkflowInstance(w.id)));
        copies.forEach((c, i) => (c.data = { round, host: i }));
        const results = await Promise.allSettled(copies.map((c, i) => hosts[i]!.persistWorkflow(c)));
        const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        assert.equal(won.length, 1, `round ${round}: ${results.map((r) => r.status).join(",")}`);
        const lost = results.find((r) => r.status === "rejected");
        assert.ok(lost?.status === "rejected" && isConflict(lost.reason));
        const stored = await live.client.getWorkflowInstance(w.id);
        assert.deepEqual(stored.data, { round, host: won[0] });
        assert.equal(stored.revision, round + 2);
      }
    } finally {
      hosts.forEach((h) => h.close());
    }
  });

  it("are not checked with { force: true } or for an instance that was never read (revision 0)", async () => {
    const w = await created();
    const stale = await live.client.getWorkflowInstance(w.id);
    await live.client.persistWorkflow(w);
    stale.data = { forced: true };
    await live.client.persistWorkflow(stale, { force: true });
    assert.equal(stale.revision, 3, "the forced write is stored as the next revision");
    await live.client.persistWorkflowWithSubscriptions(stale, [], { force: true });
    assert.equal(stale.revision, 4);
    const blind = { ...stale, revision: 0, data: { blind: true } };
    await live.client.persistWorkflow(blind);
    assert.equal(blind.revision, 5);
    assert.deepEqual((await live.client.getWorkflowInstance(w.id)).data, { blind: true });
  });

  it("are the same number for the Python client, which refuses a stale write as TypeScript does", async () => {
    const w = await created({ by: "typescript" });
    const stale = await live.client.getWorkflowInstance(w.id);
    const script = [
      "import asyncio, sys",
      "from wfe_client import GrpcPersistenceProvider",
      "async def main():",
      "    async with GrpcPersistenceProvider.connect(sys.argv[1]) as store:",
      "        w = await store.get_workflow_instance(sys.argv[2])",
      "        seen = w.revision",
      "        w.data = {'by': 'python'}",
      "        await store.persist_workflow(w)",
      "        print(seen, w.revision)",
      "asyncio.run(main())",
    ].join("\n");
    const result = spawnSync(pythonBinary(), ["-c", script, live.server.address, w.id], { encoding: "utf8" });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout.trim(), "1 2", "Python read revision 1 and wrote revision 2");
    stale.data = { by: "stale typescript" };
    await assert.rejects(live.client.persistWorkflow(stale), isConflict);
    const stored = await live.client.getWorkflowInstance(w.id);
    assert.deepEqual(stored.data, { by: "python" });
    assert.equal(stored.revision, 2);
  });

  it("must be an integer >= 0 (checked before sending)", async () => {
    const w = await created();
    for (const revision of [-1, 1.5, Number.NaN]) {
      await assert.rejects(
        live.client.persistWorkflow({ ...w, revision }),
        (err: unknown) => err instanceof InvalidArgument && err.field === "workflow.revision",
      );
    }
    assert.equal((await live.client.getWorkflowInstance(w.id)).revision, 1);
  });
});
