/**
 * GrpcPersistenceProvider: the PersistenceProvider interface over the wfe-sqlite gRPC server.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { EventEmitter } from "node:events";
import type * as http2 from "node:http2";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  commandFromWire,
  commandToWire,
  eventFromWire,
  eventToWire,
  executionErrorToWire,
  expectedRevision,
  revisionFromWire,
  subscriptionFromWire,
  subscriptionToWire,
  wireCommandName,
  workflowFromWire,
  workflowToWire,
} from "./convert.js";
import { errorFromRpc, InvalidArgument, LeaseLost, WfeError } from "./errors.js";
import { addressList, resolveAddresses, RoundRobinTransport, type ServerAddress } from "./balance.js";
import { awaitServerSettings, handshakeError, type HandshakeSide } from "./handshake.js";
import { EventService } from "./gen/wfe/persistence/v1/events_pb.js";
import { ExecutionErrorService, StoreService } from "./gen/wfe/persistence/v1/execution_errors_pb.js";
import { ScheduledCommandService } from "./gen/wfe/persistence/v1/scheduled_commands_pb.js";
import { SubscriptionService } from "./gen/wfe/persistence/v1/subscriptions_pb.js";
import { VisibilityService } from "./gen/wfe/persistence/v1/visibility_pb.js";
import { WorkflowService } from "./gen/wfe/persistence/v1/workflows_pb.js";
import type {
  Event,
  EventSubscription,
  ExecutionError,
  ScheduledCommand,
  WorkflowInstance,
} from "./models.js";
import type { CommandHandler, PersistenceProvider, PersistOptions, ProcessCommandsOptions } from "./provider.js";
import { toTimestamp } from "./time.js";
import { WellFormedTransport } from "./unicode.js";
import {
  visibilityOperations,
  type ListWorkflowsOptions,
  type PurgeWorkflowsOptions,
  type SearchWorkflowsOptions,
  type VisibilityOperations,
  type WorkflowPage,
  type WorkflowSearchPage,
} from "./visibility.js";

/** 64 MiB: the channel's message limit in both directions (as in the Python and Rust adapters). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Deadline of each call, in milliseconds, unless `ConnectOptions.timeoutMs` says otherwise (as in the other adapters). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Milliseconds between HTTP/2 keepalive pings, unless `ConnectOptions.keepaliveIntervalMs` says otherwise (as in the other adapters). */
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 20_000;
/** Milliseconds a keepalive ping waits for its answer, unless `ConnectOptions.keepaliveTimeoutMs` says otherwise. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000;
/** Ids per BatchGetWorkflows request (as in the other adapters; the contract allows up to 10,000). */
export const BATCH_GET_CHUNK = 1_000;
const DEFAULT_LEASE_MS = 30_000;
const DEFAULT_MAX_COMMANDS = 100;
/** Most numbers one `nextDefinitionSequence` call may reserve (the contract's `count` limit). */
const MAX_SEQUENCE_BLOCK = 10_000;

/**
 * TLS settings: PEM contents (not file names), as Node's `tls` takes them: a string, or bytes (a
 * `Buffer` from `readFileSync`, or any `Uint8Array`; typed without Node's `Buffer` so that a
 * project without `@types/node` compiles against these declarations).
 */
export interface TlsOptions {
  /** CA certificate(s) the server's certificate must chain to (default: Node's trusted CAs). */
  ca?: string | Uint8Array;
  /** Client certificate chain, for servers that require one (mutual TLS); needs `key`. */
  cert?: string | Uint8Array;
  /** Private key of `cert`. */
  key?: string | Uint8Array;
  /** Name to verify the server certificate against (default: the address's host). */
  serverName?: string;
}

export interface ConnectOptions {
  /** Message size limit for sending and receiving, in bytes (default 64 MiB). */
  maxMessageBytes?: number;
  /**
   * Deadline of each call, in milliseconds (default 30000): sent to the server as `grpc-timeout`
   * and enforced here; a call without an answer by then fails with code DeadlineExceeded.
   */
  timeoutMs?: number;
  /** Wait for the HTTP/2 connection in `connect()` and fail there if it cannot be made (default true). */
  waitForReady?: boolean;
  /** Sent as `authorization: Bearer <token>` on every call (servers started with --tokens-file). */
  token?: string;
  /**
   * Use TLS (servers started with --tls-cert). `true` trusts Node's default CAs. An `https://`
   * address also turns TLS on.
   */
  tls?: boolean | TlsOptions | null;
  /**
   * Milliseconds between HTTP/2 keepalive pings on each connection (default 20000), whether calls
   * are in flight or not; `0` sends none. A ping not answered within `keepaliveTimeoutMs` (default
   * 10000) closes the connection: calls on it, an open lifecycle watch too, fail with code
   * Unavailable, so a frozen or cut-off server (whose TCP connection stays up) is found within
   * about 30 s, and the next call connects again. The server must accept pings that often (its
   * `keepalive_min_interval`, default 10 s).
   */
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
}

/**
 * The keepalive pings `options` ask for, as connect-node's session manager takes them. Also on an
 * idle connection (`pingIdleConnection`): one to a frozen server would otherwise stay open, and
 * the next call on it, or the lifecycle publisher's pick of the first server that is up, would
 * wait out its whole deadline before anything noticed.
 */
function pingOptionsOf(options: ConnectOptions): ConstructorParameters<typeof Http2SessionManager>[1] {
  const interval = options.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
  const timeout = options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS;
  for (const [field, value, least] of [
    ["keepaliveIntervalMs", interval, 0],
    ["keepaliveTimeoutMs", timeout, 1],
  ] as const) {
    if (!Number.isInteger(value) || value < least || value > 86_400_000) {
      throw new InvalidArgument(`${field} must be an integer from ${least} to 86400000 (a day), got ${value}`, { field });
    }
  }
  if (interval === 0) return undefined; // connect-node's default: no pings
  return { pingIntervalMs: interval, pingTimeoutMs: timeout, pingIdleConnection: true };
}

/**
 * connect-node's session manager (2.1.1) with two of its faults kept from the process, with or
 * without keepalive pings:
 * a session it destroys (a ping timeout, a GOAWAY on an idle connection) emits "error" after the
 * manager may have stopped listening (a call made at that moment opens a new connection and drops
 * the old one's listeners first), and its ping timer can still fire on a session already
 * destroyed, where Node's `ping()` throws (connectrpc/connect-es#1795). Either was an uncaught
 * exception that ended the process. Every session it opens, the one `connect()` opens before any
 * call too, gets a listener for its "error" (each stream still gets its own) and a `ping` that
 * does nothing once the session is destroyed.
 */
class GuardedSessionManager extends Http2SessionManager {
  static readonly #guarded = new WeakSet<http2.Http2Session>();

  static #guard(session: http2.Http2Session): void {
    if (GuardedSessionManager.#guarded.has(session)) return;
    GuardedSessionManager.#guarded.add(session);
    session.on("error", () => {});
    const ping = session.ping.bind(session) as (...pingArgs: unknown[]) => boolean;
    session.ping = (...pingArgs: unknown[]) => (session.destroyed ? false : ping(...pingArgs));
  }

  override async connect(): ReturnType<Http2SessionManager["connect"]> {
    const state = await super.connect();
    // No call has gone over this session yet, so request() has not guarded it; the manager has no
    // public way to name it: its state `s` holds it (`conn`) once connected (2.1.1, pinned).
    const current = (this as unknown as { s?: { t?: unknown; conn?: unknown } }).s;
    if (current?.t === "ready" && current.conn instanceof EventEmitter && "ping" in current.conn) {
      GuardedSessionManager.#guard(current.conn as http2.Http2Session);
    }
    return state;
  }

  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    if (stream.session !== undefined) GuardedSessionManager.#guard(stream.session);
    return stream;
  }
}

function baseUrlOf(address: string, tls: boolean): string {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(address)?.[1]?.toLowerCase();
  if (scheme !== undefined && address.slice(scheme.length + 1).startsWith("//")) {
    if (scheme !== "http" && scheme !== "https") {
      throw new InvalidArgument(
        `address: expected host:port, http://host:port or https://host:port, got ${address} (scheme ${scheme}: is not supported)`,
        { field: "address" },
      );
    }
    if (tls && scheme !== "https") {
      throw new InvalidArgument(`tls is set but the address is not https: ${address}`, { field: "address" });
    }
    return address;
  }
  return `${tls ? "https" : "http"}://${address}`;
}

/**
 * `value` as PEM text, or InvalidArgument: a file name given instead of the file's contents (as
 * the Python client's `tls_ca=` takes) would otherwise fail the handshake with no useful reason.
 */
function checkPem(value: string | Uint8Array | undefined, field: string): void {
  if (value === undefined) return;
  const text = typeof value === "string" ? value : value instanceof Uint8Array ? bytesOf(value).toString("latin1") : undefined;
  if (text === undefined || !text.includes("-----BEGIN ")) {
    const shown = typeof text === "string" && text.length <= 200 && !/[\r\n]/.test(text) ? `: ${JSON.stringify(text)}` : "";
    throw new InvalidArgument(
      `${field} is not PEM (no "-----BEGIN" line)${shown}; give the file's contents, e.g. readFileSync("ca.crt"), not its name`,
      { field },
    );
  }
}

/** `bytes` as a Buffer over the same memory (Node's `tls` options are typed as Buffers). */
function bytesOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function pemOf(value: string | Uint8Array): string | Buffer {
  return typeof value === "string" ? value : bytesOf(value);
}

function sessionOptionsOf(tls: boolean | TlsOptions | undefined): http2.SecureClientSessionOptions {
  if (tls === undefined || typeof tls === "boolean") return {};
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new InvalidArgument("tls.cert and tls.key go together", { field: "tls" });
  }
  checkPem(tls.ca, "tls.ca");
  checkPem(tls.cert, "tls.cert");
  checkPem(tls.key, "tls.key");
  const options: http2.SecureClientSessionOptions = {};
  if (tls.ca !== undefined) options.ca = pemOf(tls.ca);
  if (tls.cert !== undefined) options.cert = pemOf(tls.cert);
  if (tls.key !== undefined) options.key = pemOf(tls.key);
  if (tls.serverName !== undefined) options.servername = tls.serverName;
  return options;
}

function bearer(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (request) => {
    request.header.set("authorization", value);
    return next(request);
  };
}

/**
 * @internal What the lock, queue and lifecycle providers use of the persistence provider whose
 * connection they share: its transport, its call deadline, and its one call helper (closed check,
 * error mapping).
 */
export interface SharedConnection {
  readonly transport: Transport;
  /** With several servers: calls to the first of the list that is up (for lifecycle events). */
  readonly firstServerTransport: Transport;
  /** Calls to one server of the list alone, by its index (one entry with a single server). */
  readonly serverTransports: readonly Transport[];
  /** The provider's deadline per call, in milliseconds. */
  readonly timeoutMs: number;
  call<T>(fn: () => Promise<T>): Promise<T>;
  /** Throws what a call on the closed provider rejects with (for streams, which `call` cannot wrap). */
  checkOpen(): void;
  /** Whether the provider was closed (its calls in flight then fail with the connection). */
  readonly closed: boolean;
  close(): void;
}

let connectionOf: ((provider: GrpcPersistenceProvider) => SharedConnection) | undefined;

/** @internal The connection of `provider`, for the providers that share it. */
export function sharedConnection(provider: GrpcPersistenceProvider): SharedConnection {
  if (connectionOf === undefined) throw new Error("GrpcPersistenceProvider is not initialised");
  if (!(provider instanceof GrpcPersistenceProvider)) {
    throw new InvalidArgument("store: expected a GrpcPersistenceProvider", { field: "store" });
  }
  return connectionOf(provider);
}

/** One server of a provider: its HTTP/2 connection and the transport over it. */
interface Endpoint {
  address: string;
  baseUrl: string;
  sessionOptions: http2.SecureClientSessionOptions;
  session: Http2SessionManager;
  transport: Transport;
}

export class GrpcPersistenceProvider implements PersistenceProvider {
  /** The address(es) as given (several joined with commas). */
  readonly address: string;
  readonly #endpoints: readonly Endpoint[];
  readonly #transport: Transport;
  readonly #firstServerTransport: Transport;
  readonly #serverTransports: readonly Transport[];
  readonly #timeoutMs: number;
  readonly #workflows: Client<typeof WorkflowService>;
  readonly #events: Client<typeof EventService>;
  readonly #subscriptions: Client<typeof SubscriptionService>;
  readonly #commands: Client<typeof ScheduledCommandService>;
  readonly #errors: Client<typeof ExecutionErrorService>;
  readonly #store: Client<typeof StoreService>;
  readonly #side: HandshakeSide;
  readonly #visibility: VisibilityOperations;
  #closed = false;

  private constructor(address: string, servers: readonly ServerAddress[], options: ConnectOptions) {
    this.address = address;
    const tls = options.tls ?? undefined; // null (from JavaScript): no TLS, as undefined
    const useTls = tls !== undefined && tls !== false;
    const maxBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
      throw new InvalidArgument(`timeoutMs must be a positive integer, got ${timeoutMs}`, { field: "timeoutMs" });
    }
    const pings = pingOptionsOf(options);
    const sessionOptions = sessionOptionsOf(tls);
    const endpoints = servers.map((server): Endpoint => {
      const baseUrl = baseUrlOf(server.address, useTls);
      const own =
        server.serverName !== undefined && sessionOptions.servername === undefined
          ? { ...sessionOptions, servername: server.serverName }
          : sessionOptions;
      const session = new GuardedSessionManager(baseUrl, pings, own);
      const transport = createGrpcTransport({
        baseUrl,
        sessionManager: session,
        readMaxBytes: maxBytes,
        writeMaxBytes: maxBytes,
        interceptors: options.token === undefined ? [] : [bearer(options.token)],
        defaultTimeoutMs: timeoutMs,
      });
      return { address: server.address, baseUrl, sessionOptions: own, session, transport };
    });
    const first = endpoints[0] as Endpoint;
    this.#endpoints = endpoints;
    this.#side = {
      tls: first.baseUrl.startsWith("https:"),
      clientCertificate: typeof tls === "object" && tls.cert !== undefined,
    };
    this.#timeoutMs = timeoutMs;
    const transports = endpoints.map((e) => e.transport);
    // Every request of every client on this connection (locks, queue, lifecycle too) is checked
    // once, before it is sent, for text protobuf-es would send changed (a lone surrogate).
    const transport = new WellFormedTransport(
      endpoints.length === 1 ? first.transport : new RoundRobinTransport(transports, timeoutMs),
    );
    this.#transport = transport;
    this.#firstServerTransport = new WellFormedTransport(
      endpoints.length === 1 ? first.transport : new RoundRobinTransport(transports, timeoutMs, { inOrder: true }),
    );
    this.#serverTransports = transports.map((t) => new WellFormedTransport(t));
    this.#workflows = createClient(WorkflowService, transport);
    this.#events = createClient(EventService, transport);
    this.#subscriptions = createClient(SubscriptionService, transport);
    this.#commands = createClient(ScheduledCommandService, transport);
    this.#errors = createClient(ExecutionErrorService, transport);
    this.#store = createClient(StoreService, transport);
    this.#visibility = visibilityOperations(createClient(VisibilityService, transport), (fn) => this.#call(fn));
  }

  /**
   * Connects to a wfe-sqlite server at `address` (`host:port`, or a `http://` / `https://` URL)
   * over HTTP/2, plaintext unless `tls` is set or the URL is https. Resolves once the connection
   * is up and the server has answered the HTTP/2 handshake (unless `waitForReady: false`); a
   * server that cannot be reached is a `WfeError` with code Unavailable, and so is one that
   * refused the handshake (a TLS server to a plaintext client, a mutual-TLS server to a client
   * without the certificate it wants, a certificate this client does not trust), saying so.
   *
   * Several servers: an array of addresses, one comma-separated string, or `dns:///name:port`
   * (every address the name has, looked up now). Calls go round-robin over them; a server that
   * dies is left out; a read-only call whose server died under it is tried again on another; a
   * write that failed in flight is not (code Unavailable: it may or may not have been applied).
   * `connect()` resolves once one server has answered, and fails (with the first server's
   * reason) when none does. With TLS every server's certificate must hold the name TLS checks
   * (each address's host, the `dns:///` name, or `tls.serverName`).
   */
  static async connect(address: string | readonly string[], options: ConnectOptions | null = {}): Promise<GrpcPersistenceProvider> {
    options ??= {}; // null (from JavaScript): the defaults, as undefined
    const addresses = addressList(address);
    const servers = await resolveAddresses(addresses);
    if (servers.length === 0) {
      throw new WfeError(`no address found for ${addresses.join(",")}`, { code: Code.Unavailable });
    }
    const provider = new GrpcPersistenceProvider(addresses.join(","), servers, options);
    if (options.waitForReady ?? true) {
      const attempts = provider.#endpoints.map((endpoint) => provider.#ready(endpoint));
      try {
        await Promise.any(attempts);
      } catch (error) {
        provider.close();
        throw error instanceof AggregateError ? (error.errors[0] as Error) : error;
      }
    }
    return provider;
  }

  /** Resolves once `endpoint`'s server has answered the HTTP/2 handshake; why not, otherwise. */
  async #ready(endpoint: Endpoint): Promise<void> {
    // Bounded by timeoutMs as a whole: a server that takes the TCP connection and then says
    // nothing (stopped, hung) would otherwise keep a TLS client waiting for its handshake for ever.
    const deadline = Date.now() + this.#timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#timeoutMs);
    });
    let state: Awaited<ReturnType<Http2SessionManager["connect"]>> | "timeout";
    try {
      state = await Promise.race([endpoint.session.connect(), timedOut]);
    } finally {
      clearTimeout(timer);
    }
    if (state === "timeout") {
      const what = this.#side.tls ? "TLS" : "HTTP/2";
      throw new WfeError(`the server at ${endpoint.address} did not answer the ${what} handshake within ${this.#timeoutMs} ms`, {
        code: Code.Unavailable,
      });
    }
    if (state === "error") {
      const cause = endpoint.session.error();
      if (this.#side.tls && cause instanceof Error && cause.cause instanceof Error) {
        throw handshakeError(endpoint.address, this.#side, cause.cause);
      }
      const reason = cause instanceof Error ? cause.message : String(cause);
      throw new WfeError(`cannot connect to wfe-sqlite server at ${endpoint.address}: ${reason}`, {
        code: Code.Unavailable,
        cause,
      });
    }
    const remaining = Math.max(1, deadline - Date.now());
    await awaitServerSettings(
      endpoint.baseUrl,
      endpoint.address,
      this.#side,
      endpoint.sessionOptions,
      remaining,
      this.#timeoutMs,
    );
  }

  static {
    connectionOf = (provider) => ({
      transport: provider.#transport,
      firstServerTransport: provider.#firstServerTransport,
      serverTransports: provider.#serverTransports,
      timeoutMs: provider.#timeoutMs,
      call: (fn) => provider.#call(fn),
      checkOpen: () => provider.#checkOpen(),
      get closed() {
        return provider.#closed;
      },
      close: () => provider.close(),
    });
  }

  /** Closes the connection; calls still in flight are cancelled. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const endpoint of this.#endpoints) endpoint.session.abort();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #checkOpen(): void {
    if (this.#closed) throw new WfeError("GrpcPersistenceProvider is closed", { code: Code.Canceled });
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    this.#checkOpen();
    try {
      return await fn();
    } catch (error) {
      // close() aborts the connection under the calls in flight (Connect: Canceled, 'connection
      // aborted'): they fail as calls after close() do, saying why.
      if (this.#closed && error instanceof ConnectError && error.code === Code.Canceled) {
        throw new WfeError("GrpcPersistenceProvider is closed", { code: Code.Canceled, cause: error });
      }
      throw errorFromRpc(error);
    }
  }

  /** Follows `next_page_token` until it is empty, gathering every page's items. */
  async #paged<T>(fetch: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>): Promise<T[]> {
    const all: T[] = [];
    let pageToken = "";
    const seen = new Set<string>();
    for (;;) {
      const page = await this.#call(() => fetch(pageToken));
      all.push(...page.items);
      if (page.nextPageToken === "") return all;
      if (seen.has(page.nextPageToken)) throw new WfeError(`server repeated page token ${page.nextPageToken}`);
      seen.add(page.nextPageToken);
      pageToken = page.nextPageToken;
    }
  }

  // Workflows

  async createNewWorkflow(instance: WorkflowInstance): Promise<string> {
    const workflow = workflowToWire(instance);
    const response = await this.#call(() => this.#workflows.createWorkflow({ workflow }));
    instance.id = response.id;
    instance.name = response.name;
    instance.revision = revisionFromWire(response.revision);
    return response.id;
  }

  async persistWorkflow(instance: WorkflowInstance, options: PersistOptions | null = {}): Promise<void> {
    options ??= {};
    const workflow = workflowToWire(instance);
    const expected = expectedRevision(instance, options.force ?? false);
    const response = await this.#call(() =>
      this.#workflows.persistWorkflow({ workflow, expectedRevision: expected }),
    );
    instance.revision = revisionFromWire(response.revision);
  }

  async persistWorkflowWithSubscriptions(
    instance: WorkflowInstance,
    subscriptions: EventSubscription[],
    options: PersistOptions | null = {},
  ): Promise<string[]> {
    options ??= {};
    const workflow = workflowToWire(instance);
    const expected = expectedRevision(instance, options.force ?? false);
    const wireSubs = subscriptions.map((s, i) => subscriptionToWire(s, `subscriptions[${i}]`));
    const response = await this.#call(() =>
      this.#workflows.persistWorkflowWithSubscriptions({
        workflow,
        subscriptions: wireSubs,
        expectedRevision: expected,
      }),
    );
    if (response.subscriptionIds.length === subscriptions.length) {
      subscriptions.forEach((s, i) => (s.id = response.subscriptionIds[i] ?? s.id));
    }
    instance.revision = revisionFromWire(response.revision);
    return response.subscriptionIds;
  }

  async getRunnableInstances(asAt: Date): Promise<string[]> {
    const ts = toTimestamp(asAt, "asAt");
    return this.#paged(async (pageToken) => {
      const r = await this.#workflows.getRunnableWorkflows({ asAt: ts, pageToken });
      return { items: r.workflowIds, nextPageToken: r.nextPageToken };
    });
  }

  async getWorkflowInstance(id: string): Promise<WorkflowInstance> {
    const response = await this.#call(() => this.#workflows.getWorkflow({ id }));
    if (!response.workflow) throw new WfeError("server sent no workflow");
    return workflowFromWire(response.workflow);
  }

  async getWorkflowInstanceByName(name: string): Promise<WorkflowInstance> {
    const response = await this.#call(() => this.#workflows.getWorkflowByName({ name }));
    if (!response.workflow) throw new WfeError("server sent no workflow");
    return workflowFromWire(response.workflow);
  }

  async getWorkflowInstances(ids: Iterable<string>): Promise<WorkflowInstance[]> {
    const unique = [...new Set(ids)];
    const result: WorkflowInstance[] = [];
    for (let start = 0; start < unique.length; start += BATCH_GET_CHUNK) {
      const chunk = unique.slice(start, start + BATCH_GET_CHUNK);
      await this.#call(async () => {
        for await (const message of this.#workflows.batchGetWorkflows({ ids: chunk })) {
          for (const w of message.workflows) result.push(workflowFromWire(w));
        }
      });
    }
    return result;
  }

  async nextDefinitionSequence(definitionId: string, count = 1): Promise<number> {
    if (!Number.isInteger(count) || count < 1 || count > MAX_SEQUENCE_BLOCK) {
      throw new InvalidArgument(`count: must be an integer from 1 to ${MAX_SEQUENCE_BLOCK}, got ${count}`, {
        field: "count",
      });
    }
    const response = await this.#call(() => this.#workflows.nextDefinitionSequence({ definitionId, count }));
    return Number(response.value);
  }

  // Events

  async createEvent(event: Event): Promise<string> {
    const wire = eventToWire(event);
    const response = await this.#call(() => this.#events.createEvent({ event: wire }));
    event.id = response.id;
    return response.id;
  }

  async getEvent(id: string): Promise<Event> {
    const response = await this.#call(() => this.#events.getEvent({ id }));
    if (!response.event) throw new WfeError("server sent no event");
    return eventFromWire(response.event);
  }

  async getRunnableEvents(asAt: Date): Promise<string[]> {
    const ts = toTimestamp(asAt, "asAt");
    return this.#paged(async (pageToken) => {
      const r = await this.#events.getRunnableEvents({ asAt: ts, pageToken });
      return { items: r.eventIds, nextPageToken: r.nextPageToken };
    });
  }

  async getEvents(eventName: string, eventKey: string, asOf: Date): Promise<string[]> {
    const ts = toTimestamp(asOf, "asOf");
    return this.#paged(async (pageToken) => {
      const r = await this.#events.getEvents({ eventName, eventKey, asOf: ts, pageToken });
      return { items: r.eventIds, nextPageToken: r.nextPageToken };
    });
  }

  async markEventProcessed(id: string): Promise<void> {
    await this.#call(() => this.#events.markEventProcessed({ id }));
  }

  async markEventUnprocessed(id: string): Promise<void> {
    await this.#call(() => this.#events.markEventUnprocessed({ id }));
  }

  // Subscriptions

  async createEventSubscription(subscription: EventSubscription): Promise<string> {
    const wire = subscriptionToWire(subscription);
    const response = await this.#call(() => this.#subscriptions.createSubscription({ subscription: wire }));
    subscription.id = response.id;
    return response.id;
  }

  async getSubscription(id: string): Promise<EventSubscription> {
    const response = await this.#call(() => this.#subscriptions.getSubscription({ id }));
    if (!response.subscription) throw new WfeError("server sent no subscription");
    return subscriptionFromWire(response.subscription);
  }

  async getSubscriptions(eventName: string, eventKey: string, asOf: Date): Promise<EventSubscription[]> {
    const ts = toTimestamp(asOf, "asOf");
    const wire = await this.#paged(async (pageToken) => {
      const r = await this.#subscriptions.getSubscriptions({ eventName, eventKey, asOf: ts, pageToken });
      return { items: r.subscriptions, nextPageToken: r.nextPageToken };
    });
    return wire.map(subscriptionFromWire);
  }

  async terminateSubscription(id: string): Promise<void> {
    await this.#call(() => this.#subscriptions.terminateSubscription({ id }));
  }

  async getFirstOpenSubscription(eventName: string, eventKey: string, asOf: Date): Promise<EventSubscription | undefined> {
    const ts = toTimestamp(asOf, "asOf");
    const response = await this.#call(() =>
      this.#subscriptions.getFirstOpenSubscription({ eventName, eventKey, asOf: ts }),
    );
    return response.subscription === undefined ? undefined : subscriptionFromWire(response.subscription);
  }

  async setSubscriptionToken(id: string, token: string, workerId: string, expiry: Date): Promise<boolean> {
    const ts = toTimestamp(expiry, "expiry");
    const response = await this.#call(() =>
      this.#subscriptions.setSubscriptionToken({ id, token, workerId, expiry: ts }),
    );
    return response.acquired;
  }

  async clearSubscriptionToken(id: string, token: string): Promise<void> {
    await this.#call(() => this.#subscriptions.clearSubscriptionToken({ id, token }));
  }

  // Scheduled commands

  supportsScheduledCommands(): boolean {
    return true;
  }

  async scheduleCommand(command: ScheduledCommand): Promise<void> {
    const wire = commandToWire(command);
    await this.#call(() => this.#commands.scheduleCommand({ command: wire }));
  }

  /**
   * Claims due commands in batches (default 100) under a lease (default 30 s) and runs `handler`
   * on them one at a time, in claim order (earliest executeTime first). A command whose handler
   * resolves is acknowledged (deleted). One whose handler throws stays held by its lease until
   * the end of the call, then is released, so the next call offers it again. Within one call
   * each (commandName, data) is handed to the handler at most once: a command claimed again
   * (scheduled again by a handler, or its lease ran out meanwhile) is released at the end too,
   * and a claim that brings nothing new ends the call. A LEASE_LOST answer on acknowledge or
   * release means the command is free again or another processor holds it now; it is not an
   * error of this call.
   */
  async processCommands(asOf: Date, handler: CommandHandler, options: ProcessCommandsOptions | null = {}): Promise<void> {
    options ??= {};
    const ts = toTimestamp(asOf, "asOf");
    const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    if (!Number.isInteger(leaseMs) || leaseMs < 1) {
      throw new InvalidArgument(`leaseMs must be a positive integer, got ${leaseMs}`, { field: "leaseMs" });
    }
    const leaseDuration = create(DurationSchema, {
      seconds: BigInt(Math.floor(leaseMs / 1000)),
      nanos: (leaseMs % 1000) * 1_000_000,
    });
    const maxCommands = options.maxCommands ?? DEFAULT_MAX_COMMANDS;
    const workerId = options.workerId ?? "";
    // Commands whose handler failed, and commands claimed again in this call after their first
    // turn; all are released at the end.
    const toRelease: { command: ScheduledCommand; leaseId: string }[] = [];
    const seen = new Set<string>();
    try {
      for (;;) {
        const claim = await this.#call(() =>
          this.#commands.claimCommands({ asOf: ts, maxCommands, leaseDuration, workerId }),
        );
        let fresh = 0;
        for (const claimed of claim.commands) {
          if (!claimed.command) continue;
          const command = commandFromWire(claimed.command);
          const key = `${command.commandName}\u0000${command.data}`;
          if (seen.has(key)) {
            toRelease.push({ command, leaseId: claim.leaseId });
            continue;
          }
          seen.add(key);
          fresh += 1;
          let ok = false;
          try {
            await handler(command);
            ok = true;
          } catch (error) {
            toRelease.push({ command, leaseId: claim.leaseId });
            options.onHandlerError?.(command, error);
          }
          if (ok) await this.#settle("acknowledge", command, claim.leaseId);
        }
        if (fresh === 0) break;
      }
    } finally {
      for (const { command, leaseId } of toRelease) {
        await this.#settle("release", command, leaseId);
      }
    }
  }

  async #settle(action: "acknowledge" | "release", command: ScheduledCommand, leaseId: string): Promise<void> {
    const request = { commandName: wireCommandName(command.commandName, "commandName"), data: command.data, leaseId };
    try {
      if (action === "acknowledge") await this.#call(() => this.#commands.acknowledgeCommand(request));
      else await this.#call(() => this.#commands.releaseCommand(request));
    } catch (error) {
      if (!(error instanceof LeaseLost)) throw error;
    }
  }

  // Errors and store

  async persistErrors(errors: Iterable<ExecutionError>): Promise<void> {
    // One request, one transaction: all or nothing (only the message limit bounds it).
    const wire = [...errors].map((e, i) => executionErrorToWire(e, `errors[${i}]`));
    await this.#call(() => this.#errors.persistErrors({ errors: wire }));
  }

  async ensureStoreExists(): Promise<void> {
    await this.#call(() => this.#store.ensureStoreExists({}));
  }

  // Visibility and clean-up (visibility.ts)

  listWorkflows(options?: ListWorkflowsOptions | null): Promise<WorkflowPage> {
    return this.#visibility.listWorkflows(options);
  }

  searchWorkflows(text: string, options?: SearchWorkflowsOptions | null): Promise<WorkflowSearchPage> {
    return this.#visibility.searchWorkflows(text, options);
  }

  deleteWorkflow(id: string): Promise<void> {
    return this.#visibility.deleteWorkflow(id);
  }

  purgeWorkflows(olderThan: Date, options?: PurgeWorkflowsOptions | null): Promise<number> {
    return this.#visibility.purgeWorkflows(olderThan, options);
  }
}
