// Bearer tokens, TLS and mutual TLS against live servers; certificates are made here with openssl.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { GrpcPersistenceProvider, InvalidArgument, newWorkflowInstance, Unauthenticated, WfeError } from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

const TOKEN = "ts-client-test-token";
let dir: string;
const file = (name: string) => join(dir, name);
const pem = (name: string) => readFileSync(file(name), "utf8");

function openssl(...args: string[]) {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, plus a rogue CA's client certificate. */
function makePki() {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (const ca of ["ca", "rogue-ca"]) {
    openssl("req", "-x509", ...ec, "-keyout", `${ca}.key`, "-out", `${ca}.pem`, "-days", "1", "-subj", `/CN=${ca}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  }
  writeFileSync(file("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
  writeFileSync(file("client.ext"), "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");
  const issue = (name: string, ca: string, ext: string) => {
    openssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial",
      "-out", `${name}.pem`, "-days", "1", "-extfile", ext);
  };
  issue("server", "ca", "server.ext");
  issue("client", "ca", "client.ext");
  issue("rogue-client", "rogue-ca", "client.ext");
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "wfe-sqlite-ts-pki-"));
  makePki();
  writeFileSync(file("tokens"), `${TOKEN}\n`);
});

after(() => rmSync(dir, { recursive: true, force: true }));

async function withServer(args: string[], body: (server: RunningServer) => Promise<void>) {
  const server = await startServer(args);
  try {
    await body(server);
  } finally {
    await server.stop();
  }
}

async function works(provider: GrpcPersistenceProvider) {
  try {
    await provider.ensureStoreExists();
    const w = newWorkflowInstance("secure", 1, { n: 2n ** 62n });
    await provider.createNewWorkflow(w);
    const [back] = await provider.getWorkflowInstances([w.id]); // server streaming, too
    assert.equal((back!.data as { n: bigint }).n, 2n ** 62n);
  } finally {
    provider.close();
  }
}

async function rejected(connecting: Promise<GrpcPersistenceProvider>, check?: (e: WfeError) => void) {
  let provider: GrpcPersistenceProvider | undefined;
  try {
    provider = await connecting;
    await provider.ensureStoreExists();
  } catch (e) {
    assert.ok(e instanceof WfeError, `expected a WfeError, got ${String(e)}`);
    check?.(e);
    return;
  } finally {
    provider?.close();
  }
  assert.fail("the call was accepted");
}

describe("bearer tokens", () => {
  it("sends the token on every call; no or a wrong token is Unauthenticated", async () => {
    await withServer(["--tokens-file", file("tokens")], async (server) => {
      await works(await GrpcPersistenceProvider.connect(server.address, { token: TOKEN }));
      const unauthenticated = (e: WfeError) => {
        assert.ok(e instanceof Unauthenticated, `expected Unauthenticated, got ${e.name}: ${e.message}`);
        assert.equal(e.code, Code.Unauthenticated);
      };
      await rejected(GrpcPersistenceProvider.connect(server.address), unauthenticated);
      await rejected(GrpcPersistenceProvider.connect(server.address, { token: "wrong" }), unauthenticated);
    });
  });
});

describe("TLS", () => {
  it("connects with the CA, and fails without TLS or with an untrusted server", async () => {
    await withServer(["--tls-cert", file("server.pem"), "--tls-key", file("server.key")], async (server) => {
      await works(await GrpcPersistenceProvider.connect(server.address, { tls: { ca: pem("ca.pem") } }));
      await works(await GrpcPersistenceProvider.connect(`https://localhost:${server.address.split(":")[1]}`, { tls: { ca: pem("ca.pem") } }));
      await rejected(GrpcPersistenceProvider.connect(server.address));
      await rejected(GrpcPersistenceProvider.connect(server.address, { tls: true }));
      await rejected(GrpcPersistenceProvider.connect(server.address, { tls: { ca: pem("rogue-ca.pem") } }));
    });
  });

  it("takes the PEM contents as bytes too: a Buffer or a plain Uint8Array", async () => {
    const args = ["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem")];
    await withServer(args, async (server) => {
      const buffer = (name: string) => readFileSync(file(name));
      const bytes = (name: string) => new Uint8Array(readFileSync(file(name)));
      assert.ok(!Buffer.isBuffer(bytes("ca.pem")));
      for (const read of [buffer, bytes]) {
        await works(await GrpcPersistenceProvider.connect(server.address, {
          tls: { ca: read("ca.pem"), cert: read("client.pem"), key: read("client.key") },
        }));
      }
    });
  });

  it("mutual TLS: needs a client certificate from the trusted CA", async () => {
    const args = ["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem")];
    await withServer(args, async (server) => {
      const ca = pem("ca.pem");
      await works(await GrpcPersistenceProvider.connect(server.address, {
        tls: { ca, cert: pem("client.pem"), key: pem("client.key") },
      }));
      await rejected(GrpcPersistenceProvider.connect(server.address, { tls: { ca } }));
      await rejected(GrpcPersistenceProvider.connect(server.address, {
        tls: { ca, cert: pem("rogue-client.pem"), key: pem("rogue-client.key") },
      }));
    });
  });

  it("checks tls options", async () => {
    await assert.rejects(GrpcPersistenceProvider.connect("127.0.0.1:1", { tls: { cert: "x" } }), WfeError);
    await assert.rejects(GrpcPersistenceProvider.connect("http://127.0.0.1:1", { tls: true }), WfeError);
  });
});

/** `connecting` fails at once (Unavailable) with a message matching `pattern`. */
async function refusal(connecting: Promise<GrpcPersistenceProvider>, pattern: RegExp) {
  const started = Date.now();
  await assert.rejects(connecting, (e: unknown) => {
    assert.ok(e instanceof WfeError, `expected a WfeError, got ${String(e)}`);
    assert.equal(e.code, Code.Unavailable);
    assert.match(e.message, pattern);
    return true;
  });
  assert.ok(Date.now() - started < 5_000, "at once, not after a deadline");
}

describe("a refused handshake says so", () => {

  it("plaintext against TLS, a client certificate missing or foreign against mutual TLS", async () => {
    const args = ["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem")];
    await withServer(args, async (server) => {
      const at = server.address;
      await refusal(GrpcPersistenceProvider.connect(at),
        new RegExp(`^handshake with the wfe-sqlite server at ${at} failed: it closed the connection; it expects TLS`));
      const ca = pem("ca.pem");
      await refusal(GrpcPersistenceProvider.connect(at, { tls: { ca } }),
        new RegExp(`^TLS handshake with the wfe-sqlite server at ${at} failed: .*it requires a client certificate`));
      await refusal(GrpcPersistenceProvider.connect(at, { tls: { ca, cert: pem("rogue-client.pem"), key: pem("rogue-client.key") } }),
        new RegExp(`^TLS handshake with the wfe-sqlite server at ${at} failed: .*does it accept the client certificate`));
      await refusal(GrpcPersistenceProvider.connect(at, { tls: { ca: pem("rogue-ca.pem") } }),
        new RegExp(`^TLS handshake with the wfe-sqlite server at ${at} failed: .*does not chain to the CA the client trusts`));
    });
  });

  it("TLS against plaintext; nothing listening is not a handshake", async () => {
    await withServer([], async (server) => {
      await refusal(GrpcPersistenceProvider.connect(server.address, { tls: true }),
        /^TLS handshake with the wfe-sqlite server at .* failed: .*does the server serve plaintext\?/);
    });
    await refusal(GrpcPersistenceProvider.connect("127.0.0.1:1"), /^cannot connect to wfe-sqlite server at 127\.0\.0\.1:1: /);
  });
});

describe("several servers", () => {
  it("mutual TLS and a token on every server; the handshake errors name the first server", async () => {
    const args = ["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem"),
      "--tokens-file", file("tokens")];
    const first = await startServer(args);
    const second = await startServer(args, { dbPath: first.dbPath });
    try {
      const both = [first.address, second.address];
      const tls = { ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client.key") };
      const store = await GrpcPersistenceProvider.connect(both, { tls, token: TOKEN });
      try {
        // Six creates, three on each server (round-robin), each read back (through the other).
        for (let n = 0; n < 6; n++) {
          const w = newWorkflowInstance("secure-several", 1, { n });
          await store.createNewWorkflow(w);
          assert.deepEqual((await store.getWorkflowInstance(w.id)).data, { n });
        }
      } finally {
        store.close();
      }
      await rejected(GrpcPersistenceProvider.connect(both, { tls }), (e) => assert.ok(e instanceof Unauthenticated, e.message));
      const at = first.address;
      await refusal(GrpcPersistenceProvider.connect(both),
        new RegExp(`^handshake with the wfe-sqlite server at ${at} failed: it closed the connection; it expects TLS`));
      await refusal(GrpcPersistenceProvider.connect(both.join(","), { tls: { ca: pem("ca.pem") } }),
        new RegExp(`^TLS handshake with the wfe-sqlite server at ${at} failed: .*it requires a client certificate`));
    } finally {
      await second.stop();
      await first.stop();
    }
  });
});

/** Runs `body` with the port of a TCP server that accepts connections and never says a word (a frozen server). */
async function withSilentServer(body: (address: string) => Promise<void>) {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  try {
    await body(`127.0.0.1:${port}`);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

describe("connect() mistakes and servers that do not answer", () => {
  it("a server that takes the connection but never answers fails connect() at timeoutMs, TLS or not", { timeout: 30_000 }, async () => {
    await withSilentServer(async (at) => {
      for (const [label, tls] of [["plaintext", undefined], ["tls.ca", { ca: pem("ca.pem") }], ["tls: true", true]] as const) {
        const started = Date.now();
        // Unbounded before: with TLS, connect() waited for the TLS handshake for ever.
        const outcome = await Promise.race([
          GrpcPersistenceProvider.connect(at, { tls, timeoutMs: 1_000 }).then(
            (p) => (p.close(), "connected"),
            (e: unknown) => e,
          ),
          new Promise((resolve) => setTimeout(() => resolve("still waiting after 10 s"), 10_000).unref()),
        ]);
        assert.ok(outcome instanceof WfeError, `${label}: expected a WfeError, got ${String(outcome)}`);
        assert.equal(outcome.code, Code.Unavailable);
        assert.match(outcome.message, new RegExp(`^the server at ${at} did not answer the (TLS|HTTP/2) handshake within 1000 ms`));
        const waited = Date.now() - started;
        assert.ok(waited >= 900 && waited < 5_000, `${label}: failed after ${waited} ms`);
      }
    });
  });

  it("TLS files given by name instead of their PEM contents are refused, naming the option", async () => {
    const invalid = (field: string) => (e: unknown) => {
      assert.ok(e instanceof InvalidArgument, `expected InvalidArgument, got ${String(e)}`);
      assert.equal(e.field, field);
      assert.match(e.message, new RegExp(`^${field.replace(".", "\\.")} is not PEM .*readFileSync`));
      return true;
    };
    await assert.rejects(GrpcPersistenceProvider.connect("127.0.0.1:1", { tls: { ca: file("ca.pem") } }), invalid("tls.ca"));
    await assert.rejects(
      GrpcPersistenceProvider.connect("127.0.0.1:1", { tls: { ca: pem("ca.pem"), cert: file("client.pem"), key: file("client.key") } }),
      invalid("tls.cert"),
    );
    await assert.rejects(
      GrpcPersistenceProvider.connect("127.0.0.1:1", { tls: { cert: pem("client.pem"), key: Buffer.from(file("client.key")) } }),
      invalid("tls.key"),
    );
  });

  it("an address with a scheme other than http:// or https:// is refused", async () => {
    for (const address of ["grpc://127.0.0.1:1", "unix:///tmp/wfe.sock"]) {
      await assert.rejects(GrpcPersistenceProvider.connect(address), (e: unknown) => {
        assert.ok(e instanceof InvalidArgument, `${address}: expected InvalidArgument, got ${String(e)}`);
        assert.equal(e.field, "address");
        assert.match(e.message, /expected host:port, http:\/\/host:port or https:\/\/host:port/);
        return true;
      });
    }
  });

  it("a server certificate without the name TLS checks says so, not that the CA is wrong", async () => {
    await withServer(["--tls-cert", file("server.pem"), "--tls-key", file("server.key")], async (server) => {
      const connecting = GrpcPersistenceProvider.connect(server.address, { tls: { ca: pem("ca.pem"), serverName: "wrong.example" } });
      await refusal(connecting, /^TLS handshake with the wfe-sqlite server at .* failed: .*; the server's certificate does not hold the name wrong\.example/);
    });
  });

  it("a dns:/// name that does not resolve is a WfeError (Unavailable) naming it", async () => {
    await assert.rejects(GrpcPersistenceProvider.connect("dns:///no-such-host.invalid:50051"), (e: unknown) => {
      assert.ok(e instanceof WfeError, `expected a WfeError, got ${String(e)}`);
      assert.equal(e.code, Code.Unavailable);
      assert.match(e.message, /^cannot resolve no-such-host\.invalid \(dns:\/\/\/no-such-host\.invalid:50051\): /);
      return true;
    });
  });
});
