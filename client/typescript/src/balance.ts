/**
 * Several servers behind one provider: the addresses a caller may give, and a round-robin
 * Transport over one connection per server.
 *
 * `GrpcPersistenceProvider.connect` takes one `host:port` (as before), several (an array, or one
 * comma-separated string), or `dns:///name:port` (the name's addresses, looked up once at
 * connect). Every call goes to the next server in turn, skipping a server whose last call could
 * not reach it (for a second, then it is tried again). A call that never reached its server
 * (connection refused) is sent to the next one; a read-only call (`READ_METHODS`) whose server
 * went away under it (Unavailable, connection reset, HTTP/2 stream cancelled by the other side) is
 * tried again on another within its deadline; a write that failed in flight is not, since it may
 * or may not have been applied: the caller gets the error as it came.
 *
 * A server that is stopping gracefully (SIGTERM) refuses every new call for up to a second while
 * it drains: Unavailable, reason STORAGE_UNAVAILABLE, ErrorInfo metadata `not_run: "true"`
 * (`refusedUnrun`). Such a call was not run (nothing written), so it is treated like one that never
 * reached its server: that server is left out (for a second) and the call, a write too, is sent to
 * the next one within its attempts and deadline. So is a server stream (a lifecycle watch,
 * BatchGetWorkflows) refused unrun or unreachable before it delivered anything (before the
 * server's response headers), and a read-only one (BatchGetWorkflows) whose server went away
 * under it before its headers; one that failed after that is not sent again.
 */
import { promises as dns } from "node:dns";
import { isIP } from "node:net";
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  type ContextValues,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { InvalidArgument, WfeError, errorInfoOf } from "./errors.js";

type HeaderInit = Parameters<Transport["unary"]>[3];

/** Calls that change nothing (EnsureStoreExists: nothing twice), so trying them again is safe. */
export const READ_METHODS: ReadonlySet<string> = new Set([
  "wfe.persistence.v1.WorkflowService/GetWorkflow",
  "wfe.persistence.v1.WorkflowService/GetWorkflowByName",
  "wfe.persistence.v1.WorkflowService/GetRunnableWorkflows",
  "wfe.persistence.v1.WorkflowService/BatchGetWorkflows",
  "wfe.persistence.v1.EventService/GetEvent",
  "wfe.persistence.v1.EventService/GetEvents",
  "wfe.persistence.v1.EventService/GetRunnableEvents",
  "wfe.persistence.v1.SubscriptionService/GetSubscription",
  "wfe.persistence.v1.SubscriptionService/GetSubscriptions",
  "wfe.persistence.v1.SubscriptionService/GetFirstOpenSubscription",
  "wfe.persistence.v1.VisibilityService/ListWorkflows",
  "wfe.persistence.v1.VisibilityService/SearchWorkflows",
  "wfe.persistence.v1.StoreService/EnsureStoreExists",
]);

/**
 * A call's context value the transport fills in: the index in its list of the server that
 * answered a stream (a lifecycle watch on a later server moves back to an earlier one).
 */
export const SERVED_BY = createContextKey<{ index?: number } | undefined>(undefined, { description: "served by" });

/** Attempts of one call at most (one per server, up to this many). */
export const MAX_ATTEMPTS = 3;
/** How long a server that could not be reached is left out, in milliseconds. */
export const DOWN_FOR_MS = 1_000;

/** The addresses in `address`: one, an array, or a comma-separated string; `dns:///` is kept whole. */
export function addressList(address: string | readonly string[]): string[] {
  const parts = typeof address === "string" ? (address.startsWith("dns:") ? [address] : address.split(",")) : [...address];
  if (!parts.every((part) => typeof part === "string")) {
    throw new InvalidArgument("address: every address must be a string", { field: "address" });
  }
  const trimmed = parts.map((part) => part.trim());
  if (trimmed.length === 0 || trimmed.some((part) => part === "")) {
    throw new InvalidArgument(`address: expected host:port, or several separated by commas, got ${JSON.stringify(address)}`, {
      field: "address",
    });
  }
  if (trimmed.length > 1 && trimmed.some((part) => part.startsWith("dns:"))) {
    throw new InvalidArgument("address: a dns:/// name stands alone, not in a list", { field: "address" });
  }
  for (const part of trimmed) {
    // dns:/// is checked when resolved; another scheme is refused by name when connecting.
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(part)?.[1]?.toLowerCase();
    if (part.startsWith("dns:") || (scheme !== undefined && scheme !== "http" && scheme !== "https")) continue;
    checkPort(part, scheme === undefined ? part : part.slice(scheme.length + 3));
  }
  return trimmed;
}

/**
 * InvalidArgument naming `address` unless `hostPort` (its `host:port`, a path after it allowed)
 * has a port from 1 to 65535: without one, the call would go to port 80 (443) and fail there.
 */
function checkPort(address: string, hostPort: string): void {
  const match = /^(\[[^[\]/]+\]|[^:[\]/]+):(\d+)(\/.*)?$/.exec(hostPort);
  const port = match === null ? Number.NaN : Number(match[2]);
  if (!(port >= 1 && port <= 65_535)) {
    throw new InvalidArgument(
      `address: expected host:port with a port from 1 to 65535 (IPv6 in brackets: [::1]:50051), got ${JSON.stringify(address)}`,
      { field: "address" },
    );
  }
}

/** One server to connect to: its `host:port` and the name TLS verifies (a `dns:///` name's). */
export interface ServerAddress {
  address: string;
  serverName?: string;
}

/** `dns:///name:port` (or `dns:name:port`) as one address per IP the name has; anything else as given. */
export async function resolveAddresses(addresses: string[]): Promise<ServerAddress[]> {
  const only = addresses[0];
  if (addresses.length !== 1 || only === undefined || !only.startsWith("dns:")) {
    return addresses.map((address) => ({ address }));
  }
  const hostPort = only.replace(/^dns:(\/\/[^/]*\/)?/, "");
  const match = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(hostPort);
  if (match === null) {
    throw new InvalidArgument(`address ${only}: expected dns:///NAME:PORT`, { field: "address" });
  }
  checkPort(only, hostPort);
  const [, host = "", port = ""] = match;
  if (isIP(host.replace(/^\[|\]$/g, "")) !== 0) return [{ address: hostPort }];
  let found: { address: string; family: number }[];
  try {
    found = await dns.lookup(host, { all: true });
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new WfeError(`cannot resolve ${host} (${only}): ${reason}`, { code: Code.Unavailable, cause });
  }
  return found.map(({ address, family }) => ({
    address: family === 6 ? `[${address}]:${port}` : `${address}:${port}`,
    serverName: host,
  }));
}

function errnoIn(error: unknown, codes: readonly string[]): boolean {
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code !== undefined && codes.includes(code)) return true;
  }
  return false;
}

/** The connection could not be made: the call never reached a server. */
function reachedNoServer(error: unknown): boolean {
  return errnoIn(error, ["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);
}

/**
 * The server or the connection went away under the call (not an answer of the server): gRPC's
 * Unavailable, a connection reset, or an HTTP/2 stream cancelled that this client did not cancel.
 */
function lostServer(error: unknown, signal: AbortSignal | undefined): boolean {
  const code = ConnectError.from(error).code;
  if (code === Code.Unavailable) return true;
  if (errnoIn(error, ["ECONNRESET", "EPIPE"])) return true;
  return code === Code.Canceled && signal?.aborted !== true;
}

/** A server's refusal of a call it did not run (it is stopping): Unavailable with ErrorInfo metadata `not_run: "true"`. */
export function refusedUnrun(error: unknown): boolean {
  if (!(error instanceof ConnectError) || error.code !== Code.Unavailable) return false;
  return errorInfoOf(error)?.metadata["not_run"] === "true";
}

/** A Transport that sends each call to the next of `transports`, as the module comment says. */
export class RoundRobinTransport implements Transport {
  readonly #transports: readonly Transport[];
  readonly #downUntil: number[];
  readonly #defaultTimeoutMs: number;
  #next = 0;

  readonly #inOrder: boolean;

  /**
   * `inOrder`: every call to the first server of the list not left out, instead of the next in
   * turn (lifecycle events: a server relays them only to its own watchers, so publishers and
   * watchers given the same list must meet on one server).
   */
  constructor(transports: readonly Transport[], defaultTimeoutMs: number, options: { inOrder?: boolean } = {}) {
    if (transports.length === 0) throw new Error("RoundRobinTransport needs at least one transport");
    this.#transports = transports;
    this.#downUntil = transports.map(() => 0);
    this.#defaultTimeoutMs = defaultTimeoutMs;
    this.#inOrder = options.inOrder ?? false;
  }

  /** The next server in turn that is not left out (or the next in turn, when all are). */
  #pick(tried: ReadonlySet<number>): number {
    const now = Date.now();
    const count = this.#transports.length;
    if (this.#inOrder) this.#next = 0;
    let fallback = -1;
    for (let step = 0; step < count; step++) {
      const index = (this.#next + step) % count;
      if (tried.has(index)) continue;
      if (fallback < 0) fallback = index;
      if ((this.#downUntil[index] ?? 0) <= now) {
        this.#next = (index + 1) % count;
        return index;
      }
    }
    const index = fallback >= 0 ? fallback : this.#next;
    this.#next = (index + 1) % count;
    return index;
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    const read = READ_METHODS.has(`${method.parent.typeName}/${method.name}`);
    const deadline = Date.now() + (timeoutMs ?? this.#defaultTimeoutMs);
    const tried = new Set<number>();
    for (;;) {
      const index = this.#pick(tried);
      tried.add(index);
      const transport = this.#transports[index] as Transport;
      try {
        const remaining = Math.max(1, deadline - Date.now());
        return await transport.unary(method, signal, remaining, header, input, contextValues);
      } catch (error) {
        const lost = lostServer(error, signal);
        // Refused unrun by a stopping server: like a call that never reached it.
        const unsent = reachedNoServer(error) || refusedUnrun(error);
        if (lost) this.#downUntil[index] = Date.now() + DOWN_FOR_MS;
        const again =
          lost &&
          (read || unsent) &&
          tried.size < Math.min(MAX_ATTEMPTS, this.#transports.length) &&
          Date.now() < deadline &&
          signal?.aborted !== true;
        if (!again) throw error;
      }
    }
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    // A server stream's one request is kept, so that it can be sent again; a client stream's
    // messages are read once, so such a stream is sent once, to the next server.
    const request = method.methodKind === "server_streaming" ? await collect(input) : undefined;
    const read = READ_METHODS.has(`${method.parent.typeName}/${method.name}`);
    const limitMs = timeoutMs ?? this.#defaultTimeoutMs;
    const deadline = limitMs > 0 ? Date.now() + limitMs : undefined;
    const tried = new Set<number>();
    for (;;) {
      const index = this.#pick(tried);
      tried.add(index);
      const transport = this.#transports[index] as Transport;
      try {
        // Resolves once the server has answered with its headers: an error here (refused,
        // unreachable) came before the stream delivered anything.
        const remaining = deadline === undefined ? timeoutMs : Math.max(1, deadline - Date.now());
        const messages = request === undefined ? input : createAsyncIterable(request);
        const response = await transport.stream(method, signal, remaining, header, messages, contextValues);
        const served = contextValues?.get(SERVED_BY);
        if (served !== undefined) served.index = index;
        return response;
      } catch (error) {
        const lost = lostServer(error, signal);
        if (lost) this.#downUntil[index] = Date.now() + DOWN_FOR_MS;
        // Refused unrun by a stopping server, or never reached: nothing was run or delivered. A
        // read (BatchGetWorkflows) whose server went away before its headers is sent again too,
        // as a unary read is: nothing was delivered, and reading again changes nothing.
        const again =
          request !== undefined &&
          lost &&
          (read || reachedNoServer(error) || refusedUnrun(error)) &&
          tried.size < Math.min(MAX_ATTEMPTS, this.#transports.length) &&
          (deadline === undefined || Date.now() < deadline) &&
          signal?.aborted !== true;
        if (!again) throw error;
      }
    }
  }
}

async function collect<T>(input: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const message of input) out.push(message);
  return out;
}
