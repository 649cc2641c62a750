/**
 * GrpcQueueProvider: the durable work queues served by a wfe-sqlite server (`QueueService`),
 * with long-poll dequeue.
 */
import { Code, createClient, type Client } from "@connectrpc/connect";
import { kindOf, text, textList, workflowFromWire } from "./convert.js";
import { InvalidArgument, WfeError } from "./errors.js";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { LockService } from "./gen/wfe/persistence/v1/locks_pb.js";
import { QueueService, QueueType as WireQueueType } from "./gen/wfe/persistence/v1/queues_pb.js";
import {
  GrpcPersistenceProvider,
  sharedConnection,
  type ConnectOptions,
  type SharedConnection,
} from "./grpc-provider.js";
import { GrpcLockProvider, LEASED_DEQUEUE, type Lease } from "./locks.js";
import type { WorkflowInstance } from "./models.js";
import { fromTimestamp, toDuration } from "./time.js";

/** The work queues (WFE's `QueueType`). */
export const QueueType = {
  /** Workflow ids to execute. */
  WORKFLOW: "WORKFLOW",
  /** Event ids to deliver to their subscriptions. */
  EVENT: "EVENT",
  /** Workflow ids to (re)index for search. */
  INDEX: "INDEX",
} as const;
export type QueueType = (typeof QueueType)[keyof typeof QueueType];

/** Longest wait of one dequeue, in milliseconds (the contract's limit). */
export const MAX_DEQUEUE_WAIT_MS = 60_000;

const WIRE_QUEUE: Readonly<Record<QueueType, WireQueueType>> = {
  WORKFLOW: WireQueueType.WORKFLOW,
  EVENT: WireQueueType.EVENT,
  INDEX: WireQueueType.INDEX,
};

/** Options of {@link GrpcQueueProvider.dequeueWork} and {@link GrpcQueueProvider.dequeueWorkflow}. */
export interface DequeueOptions {
  /**
   * How long to wait for an item when the queue is empty, in milliseconds, 0 to 60000 (default
   * 0: answer at once). The call returns as soon as an item arrives; its deadline is this wait
   * plus the connection's `timeoutMs`.
   */
  waitMs?: number;
  /** Cancels a waiting dequeue (it then rejects with a `WfeError` of code Canceled). */
  signal?: AbortSignal;
}

/** A dequeued workflow id with the workflow read right after (absent when it no longer exists). */
export interface DequeuedWorkflow {
  id: string;
  workflow?: WorkflowInstance;
}

/** Options of {@link GrpcQueueProvider.dequeueLeased}. */
export interface LeasedDequeueOptions extends DequeueOptions {
  /**
   * One lease per prefix, on `prefix + id` (`""`: the id itself); 1 to 16 distinct prefixes,
   * default `[""]`.
   */
  prefixes?: readonly string[];
  /**
   * Resources whose leases the lock provider holds, freed first in the same transaction (a host's
   * release of its previous item going with its next dequeue); at most 16.
   */
  release?: readonly string[];
  /** Also bring the workflow, read after the leases were taken (WORKFLOW queue). */
  includeWorkflow?: boolean;
}

/** An item a leased dequeue handed out, with the leases taken on it in the same transaction. */
export interface LeasedWork {
  /** The dequeued id. */
  readonly id: string;
  /** One lease per prefix asked for, on `prefix + id`, in that order. */
  readonly leases: readonly Lease[];
  /** With `includeWorkflow`: the workflow read after the leases were taken (absent if it is gone). */
  readonly workflow?: WorkflowInstance;
}

function wireQueue(queue: QueueType): WireQueueType {
  const wire = Object.hasOwn(WIRE_QUEUE, queue) ? WIRE_QUEUE[queue] : undefined;
  if (wire === undefined) throw new InvalidArgument(`queue: not a QueueType: ${String(queue)}`, { field: "queue" });
  return wire;
}

function checkWait(waitMs: number): number {
  if (!Number.isInteger(waitMs) || waitMs < 0 || waitMs > MAX_DEQUEUE_WAIT_MS) {
    const got = typeof waitMs === "number" ? String(waitMs) : `a ${kindOf(waitMs)}`;
    throw new InvalidArgument(`waitMs must be an integer from 0 to ${MAX_DEQUEUE_WAIT_MS}, got ${got}`, {
      field: "waitMs",
    });
  }
  return waitMs;
}

/** Most prefixes (and most releases) of one leased dequeue (the contract's limit). */
const MAX_LEASE_PREFIXES = 16;
/** Longest prefix of a leased dequeue, in UTF-8 bytes (the contract's limit). */
const MAX_PREFIX_BYTES = 512;
/** Longest resource a lease can be on, in UTF-8 bytes (a prefix and an id; the contract's limit). */
const MAX_RELEASE_BYTES = 1536;

function checkPrefixes(prefixes: string[]): string[] {
  if (prefixes.length < 1 || prefixes.length > MAX_LEASE_PREFIXES) {
    throw new InvalidArgument(`prefixes: 1 to ${MAX_LEASE_PREFIXES} prefixes, got ${prefixes.length}`, { field: "prefixes" });
  }
  prefixes.forEach((prefix, i) => {
    if (Buffer.byteLength(prefix, "utf8") > MAX_PREFIX_BYTES) {
      throw new InvalidArgument(`prefixes[${i}]: longer than ${MAX_PREFIX_BYTES} bytes`, { field: `prefixes[${i}]` });
    }
    if (prefixes.indexOf(prefix) !== i) {
      throw new InvalidArgument(`prefixes[${i}]: ${JSON.stringify(prefix)} is named twice`, { field: `prefixes[${i}]` });
    }
  });
  return prefixes;
}

function checkRelease(release: string[]): string[] {
  if (release.length > MAX_LEASE_PREFIXES) {
    throw new InvalidArgument(`release: at most ${MAX_LEASE_PREFIXES} resources, got ${release.length}`, { field: "release" });
  }
  release.forEach((resource, i) => {
    if (resource === "") throw new InvalidArgument(`release[${i}]: must not be empty`, { field: `release[${i}]` });
    if (Buffer.byteLength(resource, "utf8") > MAX_RELEASE_BYTES) {
      throw new InvalidArgument(`release[${i}]: longer than ${MAX_RELEASE_BYTES} bytes`, { field: `release[${i}]` });
    }
  });
  return release;
}

/**
 * The work queues of a cluster of workflow hosts (WFE's `QueueProvider`): first in, first out per
 * queue type, each item handed to exactly one dequeuer across processes, stored in the database
 * (an acknowledged `queueWork` survives a restart). Dequeue is blocking with a bounded wait.
 */
export class GrpcQueueProvider implements AsyncDisposable {
  readonly #connection: SharedConnection;
  #ownsConnection = false;
  readonly #client: Client<typeof QueueService>;
  /** Frees the leases of a leased dequeue whose lock provider was closed meanwhile. */
  readonly #locks: Client<typeof LockService>;
  #closed = false;
  /** Dequeues in flight: `close()` ends them (on a shared connection they would wait their whole wait). */
  readonly #calls = new Set<AbortController>();

  /** A queue provider on the connection of `store` (closing the queue provider leaves `store` open). */
  constructor(store: GrpcPersistenceProvider) {
    this.#connection = sharedConnection(store);
    this.#client = createClient(QueueService, this.#connection.transport);
    this.#locks = createClient(LockService, this.#connection.transport);
  }

  /** Connects to the server at `address` with a connection of its own, closed by `close()`. */
  static async connect(address: string | readonly string[], options: ConnectOptions | null = {}): Promise<GrpcQueueProvider> {
    const provider = new GrpcQueueProvider(await GrpcPersistenceProvider.connect(address, options));
    provider.#ownsConnection = true;
    return provider;
  }

  /**
   * Appends `id` to `queue`. Resolves false when the id was already waiting there (it keeps its
   * one entry and its place).
   */
  async queueWork(id: string, queue: QueueType): Promise<boolean> {
    const request = { id: text(id, "id"), queue: wireQueue(queue) };
    this.#checkOpen();
    const response = await this.#connection.call(() => this.#client.queueWork(request));
    return response.queued;
  }

  /**
   * Takes the oldest waiting id of `queue`, or `undefined` when the queue is empty (after waiting
   * up to `options.waitMs` for an item).
   */
  async dequeueWork(queue: QueueType, options: DequeueOptions | null = {}): Promise<string | undefined> {
    const response = await this.#dequeue(queue, options ?? {}, false);
    return response.id === "" ? undefined : response.id;
  }

  /**
   * `dequeueWork(QueueType.WORKFLOW, options)` that also brings the workflow, read by the server
   * right after dequeuing (saves the following `getWorkflowInstance`).
   */
  async dequeueWorkflow(options: DequeueOptions | null = {}): Promise<DequeuedWorkflow | undefined> {
    const response = await this.#dequeue(QueueType.WORKFLOW, options ?? {}, true);
    if (response.id === "") return undefined;
    return response.workflow === undefined
      ? { id: response.id }
      : { id: response.id, workflow: workflowFromWire(response.workflow) };
  }

  /**
   * The oldest waiting id of `queue` whose leases are all free, with `locks`' leases on it: one per
   * prefix, for `locks.owner` and its TTL, taken in the transaction that hands the item out; `locks`
   * holds them from then on (renewed; freed by `releaseLock` or `close`). Items whose leases another
   * owner holds are passed over and keep their place. `undefined` when nothing came within
   * `options.waitMs`. Closing `locks` ends the call at once if it is still waiting (it takes
   * nothing) and rejects it with a `WfeError` 'GrpcLockProvider is closed' (code Canceled); an
   * item it got as `locks` was closed is given back (its leases freed, the id queued again, at the
   * end) and the call rejects the same way.
   */
  async dequeueLeased(
    queue: QueueType,
    locks: GrpcLockProvider,
    options: LeasedDequeueOptions | null = {},
  ): Promise<LeasedWork | undefined> {
    options ??= {}; // null (from JavaScript): the defaults, as undefined
    if (!(locks instanceof GrpcLockProvider)) {
      throw new InvalidArgument("locks: expected a GrpcLockProvider", { field: "locks" });
    }
    const prefixes = checkPrefixes(textList(options.prefixes ?? [""], "prefixes"));
    const release = checkRelease(textList(options.release ?? [], "release"));
    // Checked before `locks` stops renewing the leases to release: a call refused here leaves them held.
    wireQueue(queue);
    checkWait(options.waitMs ?? 0);
    this.#checkOpen();
    const hold = locks[LEASED_DEQUEUE](release, options.signal);
    let response;
    try {
      response = await this.#dequeue(queue, { ...options, signal: hold.signal }, options.includeWorkflow ?? false, {
        leases: { owner: locks.owner, ttl: toDuration(locks.ttlMs), prefixes },
        releaseResources: release,
      });
    } catch (error) {
      // `locks` was closed while the call waited: it was cancelled, taking nothing.
      if (hold.closed) {
        throw new WfeError("GrpcLockProvider is closed", { code: Code.Canceled, cause: error });
      }
      // Refused by the server: nothing was released, the leases are still this owner's.
      if (error instanceof InvalidArgument) hold.restore();
      throw error;
    } finally {
      hold.end();
    }
    if (response.id === "") return undefined;
    if (response.leaseExpireTime === undefined || response.fencingTokens.length !== prefixes.length) {
      throw new WfeError("server sent no leases with a leased dequeue");
    }
    const expireTime = fromTimestamp(response.leaseExpireTime);
    const leases: Lease[] = prefixes.map((prefix, i) => ({
      resource: prefix + response.id,
      owner: locks.owner,
      fencingToken: response.fencingTokens[i]!,
      expireTime,
    }));
    if (!hold.adopt(leases)) {
      // `locks` was closed while the call was on its way: nothing would renew or free these
      // leases (for their whole TTL), and the caller must not work on the item without them.
      await this.#giveBack(queue, response.id, leases);
      throw new WfeError("GrpcLockProvider is closed", { code: Code.Canceled });
    }
    return response.workflow === undefined
      ? { id: response.id, leases }
      : { id: response.id, leases, workflow: workflowFromWire(response.workflow) };
  }

  /** Frees `leases` and queues `id` again; what fails is left (the leases then run out by themselves). */
  async #giveBack(queue: QueueType, id: string, leases: readonly Lease[]): Promise<void> {
    await Promise.allSettled(
      leases.map((lease) =>
        this.#connection.call(() => this.#locks.releaseLock({ resource: lease.resource, owner: lease.owner })),
      ),
    );
    await this.queueWork(id, queue).catch(() => false);
  }

  /**
   * Ends the provider: waiting dequeues are cancelled and later calls refused (a `WfeError` of
   * code Canceled, 'GrpcQueueProvider is closed'; 'GrpcPersistenceProvider is closed' when the
   * provider opened its connection, which this closes). A store it shares stays open. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsConnection) this.#connection.close();
    for (const call of this.#calls) call.abort();
    this.#calls.clear();
  }

  #checkOpen(): void {
    if (this.#closed) {
      if (this.#ownsConnection) this.#connection.checkOpen();
      throw new WfeError("GrpcQueueProvider is closed", { code: Code.Canceled });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  async #dequeue(
    queue: QueueType,
    options: DequeueOptions,
    includeWorkflow: boolean,
    leased: { leases?: { owner: string; ttl: Duration; prefixes: string[] }; releaseResources?: string[] } = {},
  ) {
    const waitMs = checkWait(options.waitMs ?? 0);
    const request = {
      queue: wireQueue(queue),
      wait: waitMs === 0 ? undefined : toDuration(waitMs),
      includeWorkflow,
      ...leased,
    };
    this.#checkOpen();
    const call = new AbortController();
    const signal = options.signal;
    const onAbort = () => call.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    this.#calls.add(call);
    // The server may hold the call for the whole wait: the deadline covers it plus the usual one.
    const callOptions = { timeoutMs: waitMs + this.#connection.timeoutMs, signal: call.signal };
    try {
      return await this.#connection.call(() => this.#client.dequeueWork(request, callOptions));
    } catch (error) {
      // Ended by close() (a connection of its own says so itself).
      if (this.#closed && !this.#ownsConnection && !(signal?.aborted ?? false)) {
        throw new WfeError("GrpcQueueProvider is closed", { code: Code.Canceled, cause: error });
      }
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#calls.delete(call);
    }
  }
}
