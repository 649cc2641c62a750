// The connection `connect()` opens, before any call has gone over it, is kept from connect-node's
// faults too (see PingingSessionManager). When the server says GOAWAY to that idle connection (a
// graceful stop, SIGTERM), connect-node destroys it; a call started at that moment opens a new
// connection and stops listening to the old one before the old one emits its error ("received
// GOAWAY without any open streams"), an uncaught exception that ended the process. A child
// process (the uncaught error is its own) connects, the server is stopped, and the child makes its
// first call from inside the session's destroy(): the one instant of that window a test can hit
// every time. (A frozen server cannot do it: connect-node sends no ping on a connection before its
// first call, so no ping times out there.)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, it } from "node:test";
import { startServer } from "./server.js";

const INDEX = new URL("../src/index.js", import.meta.url).href;

const CHILD = `
import * as http2 from "node:http2";
const { GrpcPersistenceProvider } = await import(process.env.INDEX);
process.on("uncaughtException", (error) => {
  console.log("uncaught: " + error.message);
  process.exit(3);
});
process.on("unhandledRejection", (error) => {
  console.log("unhandled rejection: " + error);
  process.exit(4);
});
const store = await GrpcPersistenceProvider.connect(process.env.ADDRESS, JSON.parse(process.env.OPTIONS));
// Node's ClientHttp2Session.destroy, made to start the first call as the session is destroyed with an error.
const probe = http2.connect("http://" + process.env.ADDRESS);
probe.on("error", () => {});
const prototype = Object.getPrototypeOf(probe);
probe.destroy();
const destroy = prototype.destroy;
let firstCall;
prototype.destroy = function (...args) {
  const result = destroy.apply(this, args);
  console.log("destroyed: " + args[0]?.message);
  if (firstCall === undefined && args[0] instanceof Error) {
    firstCall = store.getWorkflowInstance("wf-1").then(
      () => "answered",
      (error) => "failed: " + error.code,
    );
  }
  return result;
};
console.log("connected");
await new Promise((resolve) => setTimeout(resolve, 5000));
console.log("first call: " + (firstCall === undefined ? "not made" : await firstCall));
store.close();
process.exit(0);
`;

describe("the connection connect() opens", () => {
  for (const [pings, options] of [
    ["keepalive pings", { timeoutMs: 2000 }],
    ["no keepalive pings", { timeoutMs: 2000, keepaliveIntervalMs: 0 }],
  ] as const) {
    it(`a GOAWAY on it, with the first call at that instant, does not end the process (${pings})`, { timeout: 60_000 }, async () => {
      // Before: the child printed "uncaught: [canceled] received GOAWAY without any open streams"
      // and exited with 3.
      const own = await startServer();
      try {
        const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD], {
          env: { ...process.env, INDEX, ADDRESS: own.address, OPTIONS: JSON.stringify(options) },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let output = "";
        child.stdout.setEncoding("utf8");
        child.stderr.setEncoding("utf8");
        child.stdout.on("data", (chunk: string) => {
          output += chunk;
          if (chunk.includes("connected")) own.process.kill("SIGTERM");
        });
        child.stderr.on("data", (chunk: string) => (output += chunk));
        const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
        assert.equal(code, 0, output);
        assert.match(output, /destroyed: .*received GOAWAY without any open streams/, output);
        assert.match(output, /first call: failed: \d+/, output); // made, on a server that is gone
      } finally {
        await own.stop();
      }
    });
  }
});
