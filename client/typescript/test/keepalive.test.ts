// HTTP/2 keepalive against a live wfe-sqlite server (real process): the adapter pings, so an open
// lifecycle watch (a stream with no deadline) on a frozen server (SIGSTOP: its TCP connection stays
// up, so nothing else notices) ends with Unavailable; and the server accepts pings at the adapters'
// rate instead of closing the connection (GOAWAY too_many_pings, gRPC core's answer to pings more
// often than every 5 minutes). The tests ping every second to a server that accepts them every half
// second: the ratio of the defaults (20 s pings, a server that accepts them down to 10 s).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import {
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  GrpcLifecyclePublisher,
  GrpcPersistenceProvider,
  InvalidArgument,
  LifecycleEventType,
  newLifecycleEvent,
  WfeError,
  type LifecycleEvent,
  type LifecycleWatch,
} from "../src/index.js";
import { startServer } from "./server.js";

const PING = { keepaliveIntervalMs: 1_000, keepaliveTimeoutMs: 1_000 };
const ACCEPTING = ["--keepalive-min-interval", "0.5"];

/** The watch's first event, or the error it ended with, or "open" when it did neither within `ms`. */
async function firstOf(watch: LifecycleWatch, ms: number): Promise<unknown> {
  const next = watch[Symbol.asyncIterator]().next();
  return Promise.race([
    next.then(
      (result) => (result.done === true ? "ended" : result.value),
      (error: unknown) => error,
    ),
    sleep(ms).then(() => "open"),
  ]);
}

describe("keepalive", () => {
  it("the defaults find a frozen server within a minute, pinging at twice the server's accepted interval", () => {
    assert.ok(DEFAULT_KEEPALIVE_INTERVAL_MS + DEFAULT_KEEPALIVE_TIMEOUT_MS <= 60_000);
    assert.ok(DEFAULT_KEEPALIVE_INTERVAL_MS >= 2 * 10_000); // the server's keepalive_min_interval default
  });

  it("a frozen server ends an open watch with Unavailable; a new watch works once it answers", { timeout: 60_000 }, async () => {
    // Before: no pings; the watch waited for ever.
    const own = await startServer(ACCEPTING);
    const publisher = await GrpcLifecyclePublisher.connect(own.address, PING);
    try {
      const watch = publisher.watch();
      await watch.started();
      own.process.kill("SIGSTOP");
      const began = Date.now();
      let outcome: unknown;
      try {
        outcome = await firstOf(watch, 15_000);
      } finally {
        own.process.kill("SIGCONT");
      }
      const took = Date.now() - began;
      assert.ok(outcome instanceof WfeError && outcome.code === Code.Unavailable, String(outcome));
      assert.ok(took < 5_000, `took ${took} ms`); // one interval, one timeout, a margin
      watch.close();
      const again = publisher.watch();
      await again.started();
      assert.equal(await publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, "wf-after")), 1);
      const event = await firstOf(again, 10_000);
      assert.equal((event as LifecycleEvent).workflowInstanceId, "wf-after");
      again.close();
    } finally {
      own.process.kill("SIGCONT");
      publisher.close();
      await own.stop();
    }
  });

  for (const [name, args, closed] of [
    ["pings at the server's accepted rate keep the watch open", ACCEPTING, false],
    ["pings more often than the server accepts (its default) close the connection", [], true],
  ] as const) {
    it(name, { timeout: 60_000 }, async () => {
      // Before (the first): gRPC core's defaults closed the connection with GOAWAY too_many_pings
      // after the fourth ping (a ping per 5 minutes accepted, 2 strikes).
      const own = await startServer([...args]);
      const publisher = await GrpcLifecyclePublisher.connect(own.address, PING);
      try {
        const watch = publisher.watch();
        await watch.started();
        let settled: unknown = "open";
        const reading = firstOf(watch, 20_000).then((outcome) => (settled = outcome));
        await sleep(6_000);
        if (closed) {
          assert.ok(settled instanceof WfeError, String(settled));
          return;
        }
        assert.equal(settled, "open");
        assert.equal(await publisher.publish(newLifecycleEvent(LifecycleEventType.STARTED, "wf-pinged")), 1);
        const event = await reading;
        assert.equal((event as LifecycleEvent).workflowInstanceId, "wf-pinged", String(event));
        watch.close();
      } finally {
        publisher.close();
        await own.stop();
      }
    });
  }

  it("refuses a bad keepalive setting, naming it", async () => {
    for (const [field, value] of [
      ["keepaliveIntervalMs", -1],
      ["keepaliveIntervalMs", 1.5],
      ["keepaliveTimeoutMs", 0],
    ] as const) {
      await assert.rejects(GrpcPersistenceProvider.connect("127.0.0.1:1", { [field]: value }), (error: unknown) => {
        assert.ok(error instanceof InvalidArgument, String(error));
        assert.equal(error.field, field);
        return true;
      });
    }
  });
});
