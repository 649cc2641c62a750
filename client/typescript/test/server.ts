/**
 * Starts a real wfe-sqlite server for the tests: the binary at $WFE_SQLITE_BIN (default
 * ../../.venv/bin/wfe-sqlite), a fresh SQLite file in a temp directory, port 0. Resolves with the
 * address from its "listening on HOST:PORT" line. `liveServer` does that (and the stop) around a
 * test file's tests, with a client connected to it.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

export function serverBinary(): string {
  return process.env["WFE_SQLITE_BIN"] ?? resolve(PACKAGE_ROOT, "../../.venv/bin/wfe-sqlite");
}

/** The Python of the repository's .venv (`make install`), with the Python client; $WFE_SQLITE_PYTHON overrides it. */
export function pythonBinary(): string {
  return process.env["WFE_SQLITE_PYTHON"] ?? resolve(PACKAGE_ROOT, "../../.venv/bin/python");
}

export interface RunningServer {
  address: string;
  dbPath: string;
  process: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** Everything the server wrote to stdout so far ("listening on ...", "metrics on ..."). */
  stdout(): string;
  /**
   * SIGTERM (or `signal`), wait for exit (SIGKILL after a grace period), remove the temp
   * directory unless the caller gave `dbPath`.
   */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartOptions {
  /** Serve this database file (e.g. the one of a stopped server); the caller then owns its directory. */
  dbPath?: string;
}

/** Starts a server; `extraArgs` are added to `serve` (e.g. --tls-cert FILE). */
export async function startServer(extraArgs: string[] = [], options: StartOptions = {}): Promise<RunningServer> {
  const dbPath = options.dbPath ?? join(mkdtempSync(join(tmpdir(), "wfe-sqlite-ts-")), "test.db");
  const ownDir = options.dbPath === undefined ? dirname(dbPath) : undefined;
  const bin = serverBinary();
  const child = spawn(bin, ["serve", "--db", `sqlite:///${dbPath}`, "--listen", "127.0.0.1:0", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  // "close": the process exited and its stdout and stderr are read to their end ("exit" can come
  // before the last of them is read).
  const closed = new Promise<void>((res) => child.once("close", () => res()));

  let stdout = "";
  const address = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      rej(new Error(`${bin} did not print "listening on" within ${START_TIMEOUT_MS} ms; stderr:\n${stderr}`));
    }, START_TIMEOUT_MS);
    child.once("error", (err) => {
      clearTimeout(timer);
      rej(new Error(`cannot start ${bin}: ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`${bin} exited (${code ?? signal}) before listening; stderr:\n${stderr}`));
    });
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      stdout += chunk;
      const match = /listening on (\S+)/.exec(stdout);
      if (match?.[1]) {
        clearTimeout(timer);
        res(match[1]);
      }
    });
  });

  return {
    address,
    dbPath,
    process: child,
    stderr: () => stderr,
    stdout: () => stdout,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      await Promise.race([closed, new Promise((res) => setTimeout(res, STOP_TIMEOUT_MS).unref())]);
      if (ownDir !== undefined) rmSync(ownDir, { recursive: true, force: true });
      return child.exitCode;
    },
  };
}

/** The server and the client of `liveServer`: set once its `before` hook has run. */
export interface LiveServer<Client> {
  server: RunningServer;
  client: Client;
}

/**
 * Registers `before`/`after` hooks in the calling test file (or describe block): before its tests,
 * starts a server and connects a client to it with `connect`; after them, closes the client and
 * stops the server, which must exit cleanly (code 0) on SIGTERM.
 */
export function liveServer<Client extends { close(): void | Promise<void> }>(
  connect: (address: string) => Promise<Client>,
): LiveServer<Client> {
  const live: Partial<LiveServer<Client>> = {};
  before(async () => {
    live.server = await startServer();
    live.client = await connect(live.server.address);
  });
  after(async () => {
    await live.client?.close();
    const code = await live.server?.stop();
    assert.equal(code, 0, `server did not stop cleanly on SIGTERM (exit ${code}); stderr:\n${live.server?.stderr()}`);
  });
  return live as LiveServer<Client>;
}

/** Runs one SQL query on the server's database file with Python's sqlite3 and returns the first column of the first row. */
export function sqliteScalar(dbPath: string, sql: string): string {
  const script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nprint(c.execute(sys.argv[2]).fetchone()[0])";
  const result = spawnSync("python3", ["-c", script, dbPath, sql], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`sqlite query failed: ${result.stderr}`);
  return result.stdout.trim();
}
