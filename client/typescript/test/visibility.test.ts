// listWorkflows, searchWorkflows, deleteWorkflow and purgeWorkflows against a live wfe-sqlite
// server (real process, a fresh SQLite file).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import {
  GrpcPersistenceProvider,
  InvalidArgument,
  newExecutionError,
  newExecutionPointer,
  newEventSubscription,
  newWorkflowInstance,
  PreciseDate,
  WorkflowNotFound,
  WorkflowStatus,
  type WorkflowInstance,
} from "../src/index.js";
import { liveServer, sqliteScalar } from "./server.js";

const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);
const STATUSES = [WorkflowStatus.RUNNABLE, WorkflowStatus.SUSPENDED, WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED];

const live = liveServer((address) => GrpcPersistenceProvider.connect(address));

async function make(i: number, extra: Partial<WorkflowInstance> = {}): Promise<WorkflowInstance> {
  const w = newWorkflowInstance(i % 2 === 0 ? "order" : "invoice", 1, { city: i % 3 === 0 ? "Lisbon" : "Porto", i });
  w.status = STATUSES[i % 4]!;
  w.reference = `ref-${i}`;
  w.description = `parcel ${i}`;
  w.createTime = new Date(T0 + i * 60_000);
  Object.assign(w, extra);
  await live.client.createNewWorkflow(w);
  return w;
}

function newestFirst(workflows: WorkflowInstance[]): string[] {
  return [...workflows]
    .sort((a, b) => b.createTime.getTime() - a.createTime.getTime() || (a.id < b.id ? 1 : -1))
    .map((w) => w.id);
}

describe("visibility", () => {
  let made: WorkflowInstance[] = [];

  before(async () => {
    made = [];
    for (let i = 0; i < 12; i++) made.push(await make(i));
  });

  it("lists newest first, in pages, with filters", async () => {
    const page = await live.client.listWorkflows({ pageSize: 5 });
    assert.deepEqual(
      page.items.map((s) => s.id),
      newestFirst(made).slice(0, 5),
    );
    assert.ok(page.nextPageToken);
    const seen = [...page.items.map((s) => s.id)];
    let token: string | undefined = page.nextPageToken;
    while (token !== undefined) {
      const next = await live.client.listWorkflows({ pageSize: 5, pageToken: token });
      seen.push(...next.items.map((s) => s.id));
      token = next.nextPageToken;
    }
    assert.deepEqual(seen, newestFirst(made));

    const complete = await live.client.listWorkflows({ status: WorkflowStatus.COMPLETE });
    assert.deepEqual(
      complete.items.map((s) => s.id),
      newestFirst(made.filter((w) => w.status === WorkflowStatus.COMPLETE)),
    );
    const wanted: WorkflowStatus[] = [WorkflowStatus.COMPLETE, WorkflowStatus.RUNNABLE];
    const two = await live.client.listWorkflows({ status: wanted, definitionId: "order" });
    assert.deepEqual(
      two.items.map((s) => s.id),
      newestFirst(made.filter((w) => w.workflowDefinitionId === "order" && wanted.includes(w.status))),
    );
    const window = await live.client.listWorkflows({ createdAfter: new Date(T0 + 3 * 60_000), createdBefore: new Date(T0 + 6 * 60_000) });
    assert.deepEqual(
      window.items.map((s) => s.id),
      newestFirst(made.slice(3, 6)),
    );
    const byRef = await live.client.listWorkflows({ reference: "ref-7" });
    const summary = byRef.items[0]!;
    assert.equal(byRef.items.length, 1);
    assert.equal(summary.id, made[7]!.id);
    assert.equal(summary.name, made[7]!.name);
    assert.equal(summary.workflowDefinitionId, "invoice");
    assert.equal(summary.status, WorkflowStatus.TERMINATED);
    assert.equal(summary.description, "parcel 7");
    assert.equal(summary.createTime.getTime(), T0 + 7 * 60_000);
    assert.equal(summary.completeTime, undefined);
    assert.equal(summary.nextExecution, 0);
    assert.equal(summary.revision, 1);
  });

  it("searches words with a total, a window and filters", async () => {
    const lisbon = made.filter((w) => (w.data as { city: string }).city === "Lisbon");
    const found = await live.client.searchWorkflows("lisbon");
    assert.equal(found.total, lisbon.length);
    assert.deepEqual(
      found.items.map((s) => s.id),
      newestFirst(lisbon),
    );
    const window = await live.client.searchWorkflows("parcel", { skip: 2, take: 3 });
    assert.equal(window.total, 12);
    assert.deepEqual(
      window.items.map((s) => s.id),
      newestFirst(made).slice(2, 5),
    );
    const filtered = await live.client.searchWorkflows("parc*", { status: WorkflowStatus.SUSPENDED });
    assert.equal(filtered.total, 3);
    assert.deepEqual(
      (await live.client.searchWorkflows("ref-11")).items.map((s) => s.id),
      [made[11]!.id],
    );
    await assert.rejects(live.client.searchWorkflows("!!!"), InvalidArgument);
    await assert.rejects(live.client.searchWorkflows(""), InvalidArgument);
  });

  it("refuses bad arguments", async () => {
    await assert.rejects(live.client.listWorkflows({ pageSize: 0 }), InvalidArgument);
    await assert.rejects(live.client.listWorkflows({ pageToken: "forged" }), InvalidArgument);
    await assert.rejects(live.client.listWorkflows({ status: "FINISHED" as WorkflowStatus }), InvalidArgument);
    await assert.rejects(live.client.searchWorkflows("parcel", { skip: -1 }), InvalidArgument);
    await assert.rejects(live.client.purgeWorkflows(new Date(), { statuses: [] }), InvalidArgument);
    await assert.rejects(live.client.purgeWorkflows(new Date("nope")), InvalidArgument);
  });

  it("deletes a workflow with its pointers, subscriptions and errors", async () => {
    const w = await make(100, { executionPointers: [newExecutionPointer(0)] });
    await live.client.createEventSubscription(newEventSubscription(w.id, 0, w.executionPointers[0]!.id, "paid", "1", new Date(T0)));
    await live.client.persistErrors([newExecutionError(w.id, w.executionPointers[0]!.id, "boom")]);
    await live.client.deleteWorkflow(w.id);
    await assert.rejects(live.client.getWorkflowInstance(w.id), WorkflowNotFound);
    await assert.rejects(live.client.deleteWorkflow(w.id), WorkflowNotFound);
    for (const table of ["execution_pointers", "event_subscriptions", "execution_errors"]) {
      assert.equal(sqliteScalar(live.server.dbPath, `SELECT count(*) FROM ${table} WHERE workflow_id = '${w.id}'`), "0", table);
    }
    assert.equal((await live.client.searchWorkflows("ref-100")).total, 0);
  });

  it("purges finished workflows by status and age", async () => {
    const cutoff = new Date(T0 + 60 * 60_000);
    const finishedEarly = await make(200, { status: WorkflowStatus.COMPLETE, completeTime: new Date(T0 + 30 * 60_000) });
    const finishedLate = await make(201, { status: WorkflowStatus.COMPLETE, completeTime: new Date(T0 + 90 * 60_000) });
    const finishing = made.filter((w) => w.status === WorkflowStatus.COMPLETE || w.status === WorkflowStatus.TERMINATED);
    assert.equal(await live.client.purgeWorkflows(cutoff, { dryRun: true }), finishing.length + 1);
    assert.equal(await live.client.purgeWorkflows(cutoff), finishing.length + 1);
    await assert.rejects(live.client.getWorkflowInstance(finishedEarly.id), WorkflowNotFound);
    assert.equal((await live.client.getWorkflowInstance(finishedLate.id)).id, finishedLate.id);
    const left = await live.client.listWorkflows({ status: [WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED] });
    assert.deepEqual(
      left.items.map((s) => s.id),
      [finishedLate.id],
    );
    assert.equal(await live.client.purgeWorkflows(cutoff, { statuses: [WorkflowStatus.SUSPENDED] }), 3);
    assert.equal((await live.client.listWorkflows({ status: WorkflowStatus.SUSPENDED })).items.length, 0);
  });

  it("keeps the meaning of filter instants finer than a microsecond", async () => {
    // The store drops digits finer than a microsecond: createdAfter T+7.5 us took the workflow
    // created at T+7 us, createdBefore T+7.5 us left it out.
    const at = new PreciseDate(T0 + 5, 7000);
    const w = await make(600, { reference: "fine-grain", createTime: at });
    const list = async (window: { createdAfter?: Date; createdBefore?: Date }) =>
      (await live.client.listWorkflows({ reference: "fine-grain", ...window })).items.map((s) => s.id);
    const search = async (window: { createdAfter?: Date; createdBefore?: Date }) =>
      (await live.client.searchWorkflows("parcel", { reference: "fine-grain", ...window })).items.map((s) => s.id);
    for (const find of [list, search]) {
      assert.deepEqual(await find({ createdAfter: new PreciseDate(T0 + 5, 6500) }), [w.id]);
      assert.deepEqual(await find({ createdAfter: new PreciseDate(T0 + 5, 7500) }), []);
      assert.deepEqual(await find({ createdBefore: new PreciseDate(T0 + 5, 7500) }), [w.id]);
      assert.deepEqual(await find({ createdBefore: new PreciseDate(T0 + 5, 7000) }), []);
      assert.deepEqual(await find({ createdAfter: at, createdBefore: new PreciseDate(T0 + 5, 7001) }), [w.id]);
    }
    await live.client.deleteWorkflow(w.id);
  });

  it("purges what finished before an olderThan finer than a microsecond", async () => {
    // The store drops digits finer than a microsecond: olderThan T+7.5 us left out the workflow
    // finished at T+7 us, which is older.
    const w = await make(700, { status: WorkflowStatus.COMPLETE, completeTime: new PreciseDate(T0 + 5, 7000) });
    const count = (olderThan: Date) => live.client.purgeWorkflows(olderThan, { dryRun: true });
    try {
      assert.equal((await count(new PreciseDate(T0 + 5, 7500))) - (await count(new PreciseDate(T0 + 5, 7000))), 1);
    } finally {
      await live.client.deleteWorkflow(w.id);
    }
  });

  it("refuses to delete by an id with a lone surrogate instead of deleting the U+FFFD workflow", async () => {
    const other = await make(500, { id: "\uFFFD" });
    assert.equal(other.id, "\uFFFD");
    await assert.rejects(
      live.client.deleteWorkflow("\uD800"),
      (e: unknown) => e instanceof InvalidArgument && e.field === "id" && /lone surrogate/.test(e.message),
    );
    assert.equal((await live.client.getWorkflowInstance("\uFFFD")).id, "\uFFFD");
    await live.client.deleteWorkflow("\uFFFD");
  });

  it("caps any page size or take past 1000, as documented and as Python does", async () => {
    // Sizes above 2**31 - 1 were refused, though the docs (and Python) say "capped at 1000".
    const all = (await live.client.listWorkflows({ pageSize: 1000 })).items.length;
    for (const size of [1001, 2 ** 31 - 1, 2 ** 31, Number.MAX_SAFE_INTEGER, 1e20]) {
      const page = await live.client.listWorkflows({ pageSize: size });
      assert.equal(page.items.length, all, String(size));
      const found = await live.client.searchWorkflows("parcel", { take: size });
      assert.equal(found.items.length, found.total, String(size));
    }
    for (const size of [0, -1, 1.5, NaN, Infinity]) {
      await assert.rejects(live.client.listWorkflows({ pageSize: size }), (e: unknown) => e instanceof InvalidArgument && e.field === "pageSize");
      await assert.rejects(live.client.searchWorkflows("parcel", { take: size }), (e: unknown) => e instanceof InvalidArgument && e.field === "take");
    }
    await assert.rejects(live.client.searchWorkflows("parcel", { skip: 2 ** 31 }), (e: unknown) => e instanceof InvalidArgument && e.field === "skip");
  });

  it("refuses text with a lone surrogate, as Python does, instead of sending U+FFFD", async () => {
    // protobuf-es encodes a lone surrogate as U+FFFD: the list was of a reference nobody asked for.
    const odd = await make(400, { reference: "\uFFFD" });
    const cases: [string, () => Promise<unknown>][] = [
      ["reference", () => live.client.listWorkflows({ reference: "\uD800" })],
      ["definitionId", () => live.client.listWorkflows({ definitionId: "order\uDC00" })],
      ["pageToken", () => live.client.listWorkflows({ pageToken: "\uD83D" })],
      ["reference", () => live.client.searchWorkflows("parcel", { reference: "\uD800" })],
      ["query", () => live.client.searchWorkflows("parcel \uD800")],
    ];
    for (const [field, call] of cases) {
      await assert.rejects(call(), (e: unknown) => e instanceof InvalidArgument && e.field === field && /lone surrogate/.test(e.message));
    }
    // A well-formed pair is text like any other.
    assert.deepEqual((await live.client.listWorkflows({ reference: "\uD83D\uDE00" })).items, []);
    await live.client.deleteWorkflow(odd.id);
  });

  it("refuses a dryRun that is not a boolean instead of purging for real", async () => {
    // An untyped caller's dryRun: "true" (or 1) was not === true, so the purge deleted.
    const kept = await make(300, { status: WorkflowStatus.COMPLETE, completeTime: new Date(T0) });
    for (const dryRun of ["true", 1]) {
      await assert.rejects(
        live.client.purgeWorkflows(new Date(T0 + 60_000), { dryRun: dryRun as unknown as boolean }),
        (e: unknown) => e instanceof InvalidArgument && e.field === "dryRun",
      );
    }
    assert.equal((await live.client.getWorkflowInstance(kept.id)).id, kept.id);
    assert.equal(await live.client.purgeWorkflows(new Date(T0 + 60_000), { dryRun: false }), 1);
  });
});
