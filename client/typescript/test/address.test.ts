// The addresses every connect takes (provider, locks, queue, lifecycle; one or several): an
// address without a port is refused at connect, naming it, instead of going to port 80 (443) and
// failing to connect there; bracketed IPv6 and DNS names with ports reach real servers.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import {
  GrpcLifecyclePublisher,
  GrpcLockProvider,
  GrpcPersistenceProvider,
  GrpcQueueProvider,
  InvalidArgument,
  QueueType,
} from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

type Connect = (address: string | readonly string[]) => Promise<{ close(): void | Promise<void> }>;

const CONNECTS: [string, Connect][] = [
  ["GrpcPersistenceProvider", (address) => GrpcPersistenceProvider.connect(address)],
  ["GrpcLockProvider", (address) => GrpcLockProvider.connect(address)],
  ["GrpcQueueProvider", (address) => GrpcQueueProvider.connect(address)],
  ["GrpcLifecyclePublisher", (address) => GrpcLifecyclePublisher.connect(address)],
];

let v4: RunningServer;
let v6: RunningServer;

before(async () => {
  v4 = await startServer();
  // A later --listen wins: this one serves on the IPv6 loopback, the first one's file (one store).
  v6 = await startServer(["--listen", "[::1]:0"], { dbPath: v4.dbPath });
});

after(async () => {
  await v6?.stop();
  await v4?.stop();
});

const portOf = (server: RunningServer) => server.address.slice(server.address.lastIndexOf(":") + 1);

describe("an address without a port", () => {
  const bad = [
    "localhost",
    "http://localhost",
    "https://localhost",
    "http://localhost/",
    "127.0.0.1",
    "[::1]",
    "localhost:",
    "localhost:http",
    "localhost:0",
    "localhost:65536",
    "dns:///localhost:0",
  ];

  it("is InvalidArgument at every connect, naming the address", async () => {
    for (const [name, connect] of CONNECTS) {
      for (const address of bad) {
        const started = Date.now();
        await assert.rejects(connect(address), (e: unknown) => {
          assert.ok(e instanceof InvalidArgument, `${name}(${address}): expected InvalidArgument, got ${String(e)}`);
          assert.equal(e.code, Code.InvalidArgument);
          assert.equal(e.field, "address");
          assert.ok(e.message.includes(JSON.stringify(address)), `${name}(${address}): ${e.message}`);
          return true;
        });
        assert.ok(Date.now() - started < 1_000, `${name}(${address}): refused at once`);
      }
    }
  });

  it("is InvalidArgument in a list of addresses, naming it", async () => {
    const good = v4.address;
    for (const [name, connect] of CONNECTS) {
      for (const address of [[good, "localhost"], `${good},http://localhost`, ["[::1]", good]] as const) {
        await assert.rejects(connect(address), (e: unknown) => {
          assert.ok(e instanceof InvalidArgument, `${name}(${String(address)}): expected InvalidArgument, got ${String(e)}`);
          assert.match(e.message, /"(localhost|http:\/\/localhost|\[::1\])"/);
          return true;
        });
      }
    }
  });
});

describe("an address with a port", () => {
  it("reaches the server: host:port, a DNS name, http://, [::1], dns:///, lists", async () => {
    const port4 = portOf(v4);
    const port6 = portOf(v6);
    assert.match(v6.address, /^\[::1\]:\d+$/);
    const addresses: (string | string[])[] = [
      v4.address,
      `localhost:${port4}`,
      `http://localhost:${port4}`,
      `http://127.0.0.1:${port4}/`,
      `[::1]:${port6}`,
      `http://[::1]:${port6}`,
      `dns:///localhost:${port4}`,
      [v4.address, `[::1]:${port6}`],
      `localhost:${port4}, [::1]:${port6}`,
    ];
    for (const [, connect] of CONNECTS) {
      for (const address of addresses) {
        const client = await connect(address);
        try {
          if (client instanceof GrpcQueueProvider) {
            assert.equal(await client.dequeueWork(QueueType.INDEX), undefined);
          } else if (client instanceof GrpcPersistenceProvider) {
            await client.ensureStoreExists();
          } else if (client instanceof GrpcLockProvider) {
            const resource = `address-${JSON.stringify(address)}`;
            assert.equal(await client.acquireLock(resource), true);
            await client.releaseLock(resource);
          }
        } finally {
          await client.close();
        }
      }
    }
  });
});
