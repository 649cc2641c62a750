// Several wfe-sqlite servers (real processes) on one SQLite file, one provider given all their
// addresses: calls are spread over them (counted from each server's Prometheus endpoint), and when
// one is SIGKILLed calls keep succeeding on the others; when one stops gracefully (SIGTERM), no
// call fails.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  GrpcLifecyclePublisher,
  GrpcLockProvider,
  GrpcPersistenceProvider,
  LifecycleEventType,
  MOVE_LINGER_MS,
  newLifecycleEvent,
  newWorkflowInstance,
  WfeError,
  type WorkflowInstance,
} from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

const WORKFLOWS = "wfe.persistence.v1.WorkflowService";

interface Server {
  running: RunningServer;
  metricsUrl: string;
}

async function startWithMetrics(dbPath?: string, extraArgs: string[] = []): Promise<Server> {
  const running = await startServer(["--metrics-listen", "127.0.0.1:0", ...extraArgs], dbPath === undefined ? {} : { dbPath });
  for (let i = 0; i < 200; i++) {
    const match = /metrics on (\S+)/.exec(running.stdout());
    if (match?.[1]) return { running, metricsUrl: match[1] };
    await sleep(25);
  }
  throw new Error(`no "metrics on" line; stdout: ${running.stdout()}`);
}

/** How many calls of `method` the server has answered (any status), from its /metrics. */
async function calls(server: Server, method: string, service = WORKFLOWS): Promise<number> {
  const text = await (await fetch(server.metricsUrl)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (
      line.startsWith("grpc_server_handled_total{") &&
      line.includes(`grpc_service="${service}"`) &&
      line.includes(`grpc_method="${method}"`)
    ) {
      total += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return total;
}

const counts = (servers: Server[], method: string, service = WORKFLOWS) =>
  Promise.all(servers.map((s) => calls(s, method, service)));

/** Waits until `done()` (made true by running tasks or the servers) holds, up to 10 s: a fixed
 * window may hold less on a loaded machine. The caller asserts what it waited for. */
async function waitFor(done: () => boolean): Promise<void> {
  const until = performance.now() + 10_000;
  while (!done() && performance.now() < until) await sleep(20);
}

let servers: Server[] = [];

before(async () => {
  const first = await startWithMetrics();
  // The others serve the first one's file: they share the store.
  servers = [first, await startWithMetrics(first.running.dbPath), await startWithMetrics(first.running.dbPath)];
});

after(async () => {
  // The first server owns the temporary directory: stop it last.
  for (const server of [...servers].reverse()) await server.running.stop("SIGKILL");
});

describe("several servers", () => {
  it("spreads calls round-robin and keeps working when one is SIGKILLed", async () => {
    const store = await GrpcPersistenceProvider.connect(servers.map((s) => s.running.address));
    try {
      const ids: string[] = [];
      for (let n = 0; n < 30; n++) ids.push(await store.createNewWorkflow(newWorkflowInstance("spread", 1, { n })));
      const created = await counts(servers, "CreateWorkflow");
      assert.deepEqual(created, [10, 10, 10], `creates per server: ${created.join(",")}`);
      // Read back through whichever server comes next: they share the file.
      for (const [n, id] of ids.entries()) {
        const workflow: WorkflowInstance = await store.getWorkflowInstance(id);
        assert.deepEqual(workflow.data, { n });
      }
      assert.deepEqual(await counts(servers, "GetWorkflow"), [10, 10, 10]);

      // Reads running while one server is SIGKILLed: none fails.
      let done = 0;
      let stop = false;
      const failures: unknown[] = [];
      const reader = async () => {
        while (!stop) {
          const id = ids[done % ids.length]!;
          try {
            assert.equal((await store.getWorkflowInstance(id)).id, id);
            done++;
          } catch (error) {
            failures.push(error);
          }
        }
      };
      const readers = Array.from({ length: 8 }, reader);
      await sleep(500);
      const beforeKill = done;
      servers[0]!.running.process.kill("SIGKILL");
      await sleep(1_000);
      await waitFor(() => done > beforeKill + 20); // the live servers go on answering
      stop = true;
      await Promise.all(readers);
      assert.deepEqual(failures, []);
      assert.ok(done > beforeKill + 20, `reads after the kill: ${done - beforeKill}`);

      // New calls, writes included, go to the two live servers.
      const live = servers.slice(1);
      const before = await counts(live, "CreateWorkflow");
      const more: string[] = [];
      for (let n = 0; n < 20; n++) more.push(await store.createNewWorkflow(newWorkflowInstance("after", 1, { n })));
      const grown = (await counts(live, "CreateWorkflow")).map((c, i) => c - before[i]!);
      assert.equal(grown[0]! + grown[1]!, 20);
      assert.ok(grown.every((g) => g >= 5), `creates per live server: ${grown.join(",")}`);
      const read = await store.getWorkflowInstances(more);
      assert.deepEqual(read.map((w) => w.id).sort(), [...more].sort());
    } finally {
      store.close();
    }
  });

  it("takes a comma-separated string; one lock has one holder across servers", async () => {
    const live = servers.filter((s) => s.running.process.exitCode === null && s.running.process.signalCode === null);
    const addresses = live.map((s) => s.running.address).join(",");
    const first = await GrpcLockProvider.connect(addresses);
    const second = await GrpcLockProvider.connect(addresses);
    try {
      const before = await counts(live, "AcquireLock", "wfe.persistence.v1.LockService");
      const results = [await first.acquireLock("rr-lock")];
      for (let i = 0; i < 5; i++) results.push(await second.acquireLock("rr-lock"));
      assert.deepEqual(results, [true, false, false, false, false, false]);
      const after = await counts(live, "AcquireLock", "wfe.persistence.v1.LockService");
      assert.equal(after.reduce((a, b) => a + b) - before.reduce((a, b) => a + b), 6);
      assert.ok(after.every((c, i) => c > before[i]!), `acquires per server: ${before.join(",")} -> ${after.join(",")}`);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it("takes a dns:/// name", async () => {
    const live = servers.filter((s) => s.running.process.exitCode === null && s.running.process.signalCode === null);
    const server = live[0]!;
    const port = server.running.address.split(":")[1]!;
    const before = await calls(server, "CreateWorkflow");
    const store = await GrpcPersistenceProvider.connect(`dns:///localhost:${port}`);
    try {
      for (let n = 0; n < 3; n++) await store.createNewWorkflow(newWorkflowInstance("by-name", 1, { n }));
    } finally {
      store.close();
    }
    assert.equal((await calls(server, "CreateWorkflow")) - before, 3);
  });

  it("lifecycle publishers and watchers given one list meet on its first live server", async () => {
    const live = servers.filter((s) => s.running.process.exitCode === null && s.running.process.signalCode === null);
    const addresses = live.map((s) => s.running.address);
    const publisher = await GrpcLifecyclePublisher.connect(addresses);
    const watcher = await GrpcLifecyclePublisher.connect(addresses);
    try {
      const before = await counts(live, "PublishLifecycleEvent", "wfe.persistence.v1.LifecycleService");
      const watch = watcher.watch();
      const seen: string[] = [];
      const reading = (async () => {
        for await (const event of watch) {
          if (event.workflowInstanceId === "probe") continue;
          seen.push(event.workflowInstanceId);
          if (seen.length === 6) break;
        }
      })();
      const timer = setTimeout(() => watch.close(), 5_000);
      // Until the watch is in place, probes; then six events.
      while ((await publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, "probe"))) === 0) await sleep(20);
      for (let n = 0; n < 6; n++) await publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, `ev-${n}`));
      await reading;
      clearTimeout(timer);
      assert.deepEqual(seen, ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"]);
      const after = await counts(live, "PublishLifecycleEvent", "wfe.persistence.v1.LifecycleService");
      const grown = after.map((c, i) => c - before[i]!);
      assert.ok(grown[0]! >= 7 && grown.slice(1).every((g) => g === 0), `publishes per server: ${grown.join(",")}`);
    } finally {
      publisher.close();
      watcher.close();
    }
  });

  it("fails to connect with the first server's reason when none answers", async () => {
    await assert.rejects(GrpcPersistenceProvider.connect(["127.0.0.1:1", "127.0.0.1:2"]), /cannot connect to wfe-sqlite server at 127\.0\.0\.1:1: /);
    await assert.rejects(GrpcPersistenceProvider.connect("a:1,"), /expected host:port, or several separated by commas/);
  });
});

describe("a server stopping gracefully", () => {
  it("fails no call, a write neither: each one it refuses unrun is sent to the other server", async () => {
    const first = await startWithMetrics();
    // The second serves the first's file (the first owns its directory); it logs each call.
    const pair = [first, await startWithMetrics(first.running.dbPath, ["--access-log"])];
    const store = await GrpcPersistenceProvider.connect(pair.map((s) => s.running.address));
    try {
      while ((await counts(pair, "CreateWorkflow")).some((c) => c === 0)) {
        await store.createNewWorkflow(newWorkflowInstance("warm", 1, {}));
      }
      let stop = false;
      let made = 0;
      const failures: string[] = [];
      const creator = async () => {
        while (!stop) {
          try {
            await store.createNewWorkflow(newWorkflowInstance("drain", 1, {}));
            made++;
          } catch (error) {
            failures.push(String(error));
          }
        }
      };
      const creators = Array.from({ length: 8 }, creator);
      await sleep(300);
      // SIGTERM: it drains (refusing new calls unrun) and exits.
      assert.equal(await pair[1]!.running.stop("SIGTERM"), 0);
      const before = made;
      await waitFor(() => made > before + 10); // the other server goes on creating
      stop = true;
      await Promise.all(creators);
      // The stopping server did refuse calls (before the balancer sent them on, 1 to 5 of them
      // failed here per stop: the server is left out after its first refusal).
      const refused = pair[1]!.running.stderr().split("\n").filter((line) => /\/CreateWorkflow UNAVAILABLE /.test(line));
      assert.ok(refused.length > 0, `no call refused by the stopping server; stderr:\n${pair[1]!.running.stderr()}`);
      assert.ok(made > before + 10, `calls after the stop: ${made - before}`);
      assert.deepEqual(failures, [], `${failures.length} calls failed, ${made} made`);
    } finally {
      store.close();
      for (const server of [...pair].reverse()) await server.running.stop("SIGKILL");
    }
  });
});

describe("a server stream its first server did not run", () => {
  it("goes to the next server: a lifecycle watch and a batch read", async () => {
    const first = await startWithMetrics(undefined, ["--access-log"]);
    // The second serves the first's file (the first owns its directory).
    const pair = [first, await startWithMetrics(first.running.dbPath)];
    const [a, b] = pair.map((s) => s.running.address) as [string, string];
    const onB = await GrpcPersistenceProvider.connect(b);
    const id = await onB.createNewWorkflow(newWorkflowInstance("stream-refused", 1, { n: 1 }));
    const publisherOnB = await GrpcLifecyclePublisher.connect(b);
    // Connected to both before the stop; no call made yet, so the first goes to the first server.
    const store = await GrpcPersistenceProvider.connect([a, b]);
    const watcher = await GrpcLifecyclePublisher.connect([a, b]);
    const onA = await GrpcPersistenceProvider.connect(a);
    // Keeps the first server draining (it drains until no call came for 0.1 s, at most 1 s).
    let refusedSeen: () => void = () => {};
    const refused = new Promise<void>((resolve) => (refusedSeen = resolve));
    let hammering = true;
    const hammer = (async () => {
      while (hammering) {
        try {
          await onA.getWorkflowInstance(id);
        } catch (error) {
          if (error instanceof WfeError && /not run/.test(error.message)) refusedSeen();
          await sleep(10);
        }
      }
    })();
    const stopped = first.running.process.kill("SIGTERM");
    assert.ok(stopped);
    try {
      await refused;
      // Both calls reach the draining server first, are refused unrun, and go on to the second.
      const watch = watcher.watch();
      const outcome = (promise: Promise<unknown>) => promise.then(
        () => "ok",
        (error: unknown) => String(error),
      );
      let read: WorkflowInstance[] = [];
      const outcomes = {
        watch: await outcome(watch.started()),
        read: await outcome(store.getWorkflowInstances([id]).then((found) => (read = found))),
      };
      assert.deepEqual(outcomes, { watch: "ok", read: "ok" });
      assert.deepEqual(read.map((w) => w.id), [id]);
      const seen = (async () => {
        for await (const event of watch) return event.workflowInstanceId;
        return undefined;
      })();
      assert.equal(await publisherOnB.publish(newLifecycleEvent(LifecycleEventType.STARTED, "after-refusal")), 1);
      assert.equal(await seen, "after-refusal");
      hammering = false;
      await hammer;
      // A refusal's access-log line is written once its handler has returned, after the client
      // has its status (and then crosses a pipe): look again for a while.
      const logged = (log: string) => /WatchLifecycleEvents UNAVAILABLE/.test(log) && /BatchGetWorkflows UNAVAILABLE/.test(log);
      await waitFor(() => logged(first.running.stderr()));
      const log = first.running.stderr();
      assert.match(log, /WatchLifecycleEvents UNAVAILABLE/, "the watch was refused by the stopping server");
      assert.match(log, /BatchGetWorkflows UNAVAILABLE/, "the batch read was refused by the stopping server");
    } finally {
      hammering = false;
      await hammer;
      for (const client of [store, watcher, onA, onB, publisherOnB]) client.close();
      for (const server of [...pair].reverse()) await server.running.stop("SIGKILL");
    }
  });

  it("a batch read whose server dies before answering goes to the next, as a unary read does", async () => {
    const first = await startServer();
    // The second serves the first's file (the first owns its directory).
    const second = await startServer([], { dbPath: first.dbPath });
    const onSecond = await GrpcPersistenceProvider.connect(second.address);
    const ids = [
      await onSecond.createNewWorkflow(newWorkflowInstance("batch-resent", 1, { n: 1 })),
      await onSecond.createNewWorkflow(newWorkflowInstance("batch-resent", 1, { n: 2 })),
    ];
    // Connected to both; no call made yet, so the first of each goes to the first server.
    const store = await GrpcPersistenceProvider.connect([first.address, second.address]);
    const unaryStore = await GrpcPersistenceProvider.connect([first.address, second.address]);
    try {
      // Frozen: it takes the requests and never answers (no headers); then killed, which resets
      // the connections under the calls.
      first.process.kill("SIGSTOP");
      const outcome = <T>(promise: Promise<T>) => promise.then(
        (value) => value,
        (error: unknown) => String(error),
      );
      const batch = outcome(store.getWorkflowInstances(ids).then((found) => found.map((w) => w.id).sort()));
      const unary = outcome(unaryStore.getWorkflowInstance(ids[0]!).then((w) => w.id));
      await sleep(300);
      first.process.kill("SIGKILL");
      assert.deepEqual({ unary: await unary, batch: await batch }, { unary: ids[0], batch: [...ids].sort() });
    } finally {
      store.close();
      unaryStore.close();
      onSecond.close();
      await second.stop("SIGKILL");
      await first.stop("SIGKILL");
    }
  });

  it("a watch whose first server cannot be reached goes to the next", async () => {
    const [gone, up] = [await startServer(), await startServer()];
    const addresses = [gone.address, up.address];
    await gone.stop("SIGKILL");
    const watcher = await GrpcLifecyclePublisher.connect(addresses);
    const publisherOnUp = await GrpcLifecyclePublisher.connect(up.address);
    try {
      const watch = watcher.watch();
      await watch.started();
      assert.equal(await publisherOnUp.publish(newLifecycleEvent(LifecycleEventType.STARTED, "w")), 1);
      watch.close();
    } finally {
      watcher.close();
      publisherOnUp.close();
      await up.stop("SIGKILL");
    }
  });
});

describe("an open lifecycle watch on a later server", () => {
  it("moves back to the first server when it answers again, still reading the one it left for a moment", async () => {
    const first = await startServer();
    const second = await startServer();
    const port = first.address.slice(first.address.lastIndexOf(":") + 1);
    const watcher = await GrpcLifecyclePublisher.connect([first.address, second.address]);
    const onSecond = await GrpcLifecyclePublisher.connect(second.address);
    let restarted: RunningServer | undefined;
    let onFirst: GrpcLifecyclePublisher | undefined;
    const event = (tag: string) => newLifecycleEvent(LifecycleEventType.STARTED, tag);
    try {
      await first.stop("SIGKILL");
      const watch = watcher.watch(); // the first server is down: on the second
      await watch.started();
      const events = watch[Symbol.asyncIterator]();
      assert.equal(await onSecond.publish(event("on-second")), 1);
      assert.equal((await events.next()).value?.workflowInstanceId, "on-second");

      restarted = await startServer(["--listen", `127.0.0.1:${port}`]);
      onFirst = await GrpcLifecyclePublisher.connect(restarted.address);
      // The watch moves while it is read (it looks for an earlier server every second).
      const reading = events.next();
      const deadline = Date.now() + 3_000;
      let published = 0;
      while (published === 0 && Date.now() < deadline) {
        await sleep(200);
        published = await onFirst.publish(event("on-first"));
      }
      assert.equal(published, 1, "the watch did not move back to the first server");
      assert.equal((await reading).value?.workflowInstanceId, "on-first");
      // The stream left on the second server is still read for a moment (MOVE_LINGER_MS):
      // publishers there that have not moved back yet are not missed; then it is closed.
      assert.equal(await onSecond.publish(event("late-on-second")), 1);
      assert.equal((await events.next()).value?.workflowInstanceId, "late-on-second");
      await sleep(MOVE_LINGER_MS + 500);
      assert.equal(await onSecond.publish(event("after-linger")), 0, "the stream left behind was closed");
      assert.equal(await onFirst.publish(event("still-on-first")), 1);
      assert.equal((await events.next()).value?.workflowInstanceId, "still-on-first");
      watch.close();
      assert.equal((await events.next()).done, true);
    } finally {
      watcher.close();
      onSecond.close();
      onFirst?.close();
      await restarted?.stop("SIGKILL");
      await second.stop("SIGKILL");
    }
  });
});
