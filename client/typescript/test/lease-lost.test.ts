// A held lease whose renewals fail for longer than its TTL is reported lost (real server process,
// frozen with SIGSTOP): the server lets it run out and hands it to another owner, so the holder
// must stop believing it holds it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { GrpcLockProvider } from "../src/index.js";
import { startServer } from "./server.js";

const INDEX = new URL("../src/index.js", import.meta.url).href;
const TTL_MS = 1_500;
/** How late after the TTL the report may come (a loaded 2-core machine). */
const MARGIN_MS = 1_000;

/** A lock provider on `address` with the test's TTL; the failed renewals of a frozen server are not errors here. */
function lockProvider(address: string, onLost: (resource: string) => void): Promise<GrpcLockProvider> {
  return GrpcLockProvider.connect(address, { ttlMs: TTL_MS, timeoutMs: 5_000, onLost, onError: () => {} });
}

describe("GrpcLockProvider, a lease not renewed within its TTL", () => {
  it("is reported lost once, no longer held, and another owner takes it", { timeout: 60_000 }, async () => {
    // Before: onLost was called only when a renewal was answered "not held". With the server
    // frozen every renewal failed (onError), nothing was reported lost and `held` listed the
    // lease for ever, while the server let it run out and another owner could take it.
    const own = await startServer();
    const lost: [string, number][] = [];
    const locks = await lockProvider(own.address, (resource) => lost.push([resource, performance.now()]));
    try {
      const lease = await locks.acquire("frozen");
      assert.ok(lease !== undefined);
      await sleep(700); // a renewal or two went through
      own.process.kill("SIGSTOP");
      const stopped = performance.now();
      try {
        while (lost.length === 0 && performance.now() < stopped + TTL_MS + MARGIN_MS) await sleep(20);
        assert.deepEqual(
          lost.map(([resource]) => resource),
          ["frozen"],
        );
        const after = lost[0]![1] - stopped;
        assert.ok(after <= TTL_MS + MARGIN_MS, `reported ${after} ms after SIGSTOP`);
        assert.deepEqual(locks.held, []);
        assert.equal(locks.lease("frozen"), undefined);
        assert.equal(locks.fencingToken("frozen"), undefined);
      } finally {
        own.process.kill("SIGCONT");
      }

      // Another owner takes it once the server answers again (polled: it may still be catching up).
      const other = await GrpcLockProvider.connect(own.address, { owner: "other", ttlMs: TTL_MS });
      try {
        const until = performance.now() + TTL_MS + 3_000;
        let taken = await other.acquire("frozen");
        while (taken === undefined) {
          assert.ok(performance.now() < until, "the lost lease was still held on the server");
          await sleep(50);
          taken = await other.acquire("frozen");
        }
        assert.ok(taken.fencingToken > lease.fencingToken);

        // Renewals queued on the frozen server (answered now) do not make it held again: it stays
        // lost, reported once, and releasing it is not an error (it frees nothing of "other").
        await sleep(TTL_MS);
        assert.deepEqual(locks.held, []);
        assert.equal(lost.length, 1);
        assert.equal(await locks.releaseLock("frozen"), false);
        assert.deepEqual(other.held, ["frozen"]);
      } finally {
        await other.close();
      }
    } finally {
      await locks.close();
      own.process.kill("SIGCONT");
      await own.stop();
    }
  });

  it("stays lost when nobody took it, and is free on the server", { timeout: 60_000 }, async () => {
    // The server keeps a lapsed lease for its owner while nobody takes it (RenewLocks extends it):
    // once reported lost it is released, not kept by an owner that no longer renews it.
    const own = await startServer();
    const lost: string[] = [];
    const locks = await lockProvider(own.address, (resource) => lost.push(resource));
    try {
      assert.ok((await locks.acquire("alone")) !== undefined);
      own.process.kill("SIGSTOP");
      const stopped = performance.now();
      try {
        while (lost.length === 0 && performance.now() < stopped + TTL_MS + MARGIN_MS) await sleep(20);
        assert.deepEqual(lost, ["alone"]);
      } finally {
        own.process.kill("SIGCONT");
      }
      await sleep(TTL_MS); // the queued renewals and the release reach the server
      assert.deepEqual(locks.held, []);
      const other = await GrpcLockProvider.connect(own.address, { owner: "other", ttlMs: TTL_MS });
      try {
        assert.ok((await other.acquire("alone")) !== undefined);
      } finally {
        await other.close();
      }
      // "other" released it at close: taken again, a new lease renewed as usual.
      assert.ok((await locks.acquire("alone")) !== undefined);
      await sleep(TTL_MS * 2);
      assert.deepEqual(locks.held, ["alone"]);
      assert.deepEqual(lost, ["alone"]);
    } finally {
      await locks.close();
      own.process.kill("SIGCONT");
      await own.stop();
    }
  });

  it("is not looked up once past its TTL, before the expiry timer runs", { timeout: 60_000 }, async () => {
    // The event loop blocked for longer than the TTL (a long synchronous step): no renewal went
    // out, the server let the lease run out and handed it to another owner. Before: lease(),
    // fencingToken() and held still gave the old lease until the expiry timer got to run.
    const own = await startServer();
    const lost: string[] = [];
    const locks = await lockProvider(own.address, (resource) => lost.push(resource));
    try {
      const mine = await locks.acquire("paused");
      assert.ok(mine !== undefined);
      const until = performance.now() + TTL_MS + 300;
      while (performance.now() < until); // blocks the loop: neither renewal nor timer runs
      // Another owner (a child process, waited for synchronously: still blocking) takes it.
      const child = spawnSync(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `import { GrpcLockProvider } from ${JSON.stringify(INDEX)};
           const other = await GrpcLockProvider.connect(${JSON.stringify(own.address)}, { owner: "other", ttlMs: ${TTL_MS} });
           const lease = await other.acquire("paused");
           console.log(String(lease?.fencingToken));
           await other.close();`,
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(child.status, 0, child.stderr);
      assert.ok(BigInt(child.stdout.trim()) > mine.fencingToken, `the server did not hand it over: ${child.stdout}`);
      assert.equal(locks.lease("paused"), undefined);
      assert.equal(locks.fencingToken("paused"), undefined);
      assert.deepEqual(locks.held, []);
      await sleep(100); // the expiry timer runs: reported lost once
      assert.deepEqual(lost, ["paused"]);
      assert.equal(locks.fencingToken("paused"), undefined);
    } finally {
      await locks.close();
      await own.stop();
    }
  });

  it("reports nothing to onError after close(), its release cut short by close", { timeout: 60_000 }, async () => {
    // The background release of a lost lease on a frozen server is still in flight when close()
    // gives up waiting (min(5 s, TTL)) and closes the connection under it. Before: that release
    // then failed and went to onError after close() had returned (close() had already said the
    // calls in flight were not settled).
    const own = await startServer();
    const lost: string[] = [];
    const errors: unknown[] = [];
    let closed = false;
    const afterClose: unknown[] = [];
    const locks = await GrpcLockProvider.connect(own.address, {
      ttlMs: TTL_MS,
      timeoutMs: 20_000,
      onLost: (resource) => lost.push(resource),
      onError: (error) => (closed ? afterClose : errors).push(error),
    });
    try {
      assert.ok((await locks.acquire("cut")) !== undefined);
      own.process.kill("SIGSTOP");
      const stopped = performance.now();
      while (lost.length === 0 && performance.now() < stopped + TTL_MS + MARGIN_MS) await sleep(20);
      assert.deepEqual(lost, ["cut"]);
      await locks.close();
      closed = true;
      await sleep(1_000);
      assert.deepEqual(afterClose, []);
    } finally {
      closed = true;
      own.process.kill("SIGCONT");
      await own.stop();
    }
  });
});
