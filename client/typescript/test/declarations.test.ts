// The published type declarations (dist/src/*.d.ts) compile in a user's project under
// `tsc --strict` without skipLibCheck, with nothing installed but this package (and what it
// depends on at run time, as `npm install` would bring): no @types/node needed. And still so in a
// project that has @types/node. Each project is made in a temp directory by copying the
// package's `files` and its production dependencies (package-lock.json, not dev) into its
// node_modules: copies, not links, so that nothing resolves back into this package's own
// node_modules (where @types/node is, as a dev dependency). The repository's TypeScript compiles.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));

const CONSUMER = `
import {
  GrpcLifecyclePublisher, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider,
  LifecycleEventType, QueueType, WfeError, newLifecycleEvent, newWorkflowInstance,
  type ConnectOptions, type PersistenceProvider, type WorkflowInstance,
} from "@wfe-sqlite/client";

const options: ConnectOptions = { timeoutMs: 5_000, tls: { ca: "-----BEGIN CERTIFICATE-----" } };
const provider: PersistenceProvider = await GrpcPersistenceProvider.connect("127.0.0.1:50051", options);
const workflow: WorkflowInstance = newWorkflowInstance("flow", 1, { n: 1n });
const id: string = await provider.createNewWorkflow(workflow);
await using locks = await GrpcLockProvider.connect(["127.0.0.1:50051", "[::1]:50052"]);
const held: boolean = await locks.acquireLock(id);
const queue = await GrpcQueueProvider.connect("127.0.0.1:50051");
const next: string | undefined = await queue.dequeueWork(QueueType.WORKFLOW, { waitMs: 100, signal: AbortSignal.timeout(1_000) });
const lifecycle = await GrpcLifecyclePublisher.connect("127.0.0.1:50051");
await lifecycle.publish(newLifecycleEvent(LifecycleEventType.STARTED, id));
for await (const event of lifecycle.watch({ workflowInstanceId: id })) console.log(event.type);
try {
  await provider.getWorkflowInstance("nope");
} catch (error) {
  if (error instanceof WfeError) console.log(error.code, error.reason, held, next);
}
`;

/** The directories of this package's production dependencies, from package-lock.json. */
function productionDependencies(): string[] {
  const lock = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dev?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, entry]) => path !== "" && entry.dev !== true)
    .map(([path]) => path);
}

/** tsc's output compiling the consumer in a fresh project with these node_modules; status 0 when it compiles. */
function compileConsumer(
  extraPackages: string[],
  extraOptions: Record<string, unknown> = {},
): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), "wfe-sqlite-ts-consumer-"));
  try {
    const installed = join(dir, "node_modules", "@wfe-sqlite", "client");
    cpSync(join(PACKAGE_ROOT, "package.json"), join(installed, "package.json"));
    cpSync(join(PACKAGE_ROOT, "dist", "src"), join(installed, "dist", "src"), { recursive: true });
    for (const path of [...productionDependencies(), ...extraPackages]) {
      cpSync(join(PACKAGE_ROOT, path), join(dir, path), { recursive: true, dereference: true });
    }
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    // A user's strict settings for Node 20; no skipLibCheck; lib and types the defaults unless given.
    const compilerOptions = {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      noEmit: true,
      ...extraOptions,
    };
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["main.ts"] }));
    writeFileSync(join(dir, "main.ts"), CONSUMER);
    const tsc = join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc");
    const result = spawnSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8" });
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("the published type declarations", () => {
  it("compile in a strict project with nothing installed but this package (no @types/node, no skipLibCheck)", () => {
    const dependencies = productionDependencies();
    assert.ok(dependencies.includes("node_modules/@connectrpc/connect"), dependencies.join(", "));
    const { status, output } = compileConsumer([]);
    assert.equal(status, 0, `tsc failed:\n${output}`);
  });

  it("compile in a strict project with @types/node", () => {
    // (Not without the DOM lib: @connectrpc/connect's own declarations use its HeadersInit.)
    const typesNode = ["node_modules/@types/node", "node_modules/undici-types"];
    const { status, output } = compileConsumer(typesNode, { types: ["node"] });
    assert.equal(status, 0, `tsc failed:\n${output}`);
  });
});
