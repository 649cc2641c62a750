/**
 * GrpcLockProvider: distributed locks served by a wfe-sqlite server (`LockService`).
 *
 * A lock is a lease: it belongs to an owner (one id per provider), lives for a time-to-live on the
 * server's clock, is renewed in the background while held, and comes with a fencing token that
 * grows with every acquisition.
 */
import { hostname } from "node:os";
import { randomUUID } from "node:crypto";
import { Code, createClient, type Client } from "@connectrpc/connect";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { kindOf, text } from "./convert.js";
import { InvalidArgument, WfeError } from "./errors.js";
import { LockService } from "./gen/wfe/persistence/v1/locks_pb.js";
import {
  GrpcPersistenceProvider,
  sharedConnection,
  type ConnectOptions,
  type SharedConnection,
} from "./grpc-provider.js";
import { fromTimestamp, toDuration, type PreciseDate } from "./time.js";

/** Time-to-live of a lease unless `LockProviderOptions.ttlMs` says otherwise, in milliseconds. */
export const DEFAULT_LOCK_TTL_MS = 30_000;
/** Shortest time-to-live the server accepts, in milliseconds. */
export const MIN_LOCK_TTL_MS = 100;
/** Longest time-to-live the server accepts, in milliseconds (one hour). */
export const MAX_LOCK_TTL_MS = 3_600_000;
/**
 * Longest `close()` waits for the server to answer its releases, in milliseconds (or the TTL, when
 * shorter): a lease not released by then runs out by itself within its TTL, and a frozen or
 * unreachable server does not hold up a host's shutdown for the whole call deadline.
 */
export const CLOSE_RELEASE_WAIT_MS = 5_000;
/** Resources per RenewLocks request (the contract's limit). */
const RENEW_BATCH = 10_000;

/**
 * The hold a {@link GrpcQueueProvider} leased dequeue takes of a lock provider: leases it took for
 * the provider's owner are adopted (held and renewed from then on), those it frees are forgotten,
 * and closing the provider ends the call while it waits. Not exported from the package.
 */
export const LEASED_DEQUEUE = Symbol("leasedDequeue");

/** @internal A leased dequeue's hold of its lock provider (see {@link LEASED_DEQUEUE}). */
export interface LeasedDequeueHold {
  /** Aborted when the lock provider is closed (or `signal`, the caller's, is aborted). */
  readonly signal: AbortSignal;
  /** Whether the lock provider was closed since the hold was taken. */
  readonly closed: boolean;
  /**
   * Adopts the leases the dequeue took; false when the provider was closed meanwhile (it did not
   * see them: nothing holds or renews them).
   */
  adopt(leases: readonly Lease[]): boolean;
  /**
   * The server refused the call (nothing was done): the leases it was to release are held (and
   * renewed) again, unless the provider was closed or took one of them again meanwhile.
   */
  restore(): void;
  /** The call ended: closing the provider no longer concerns it. */
  end(): void;
}

/** A held lock, as of its acquisition. */
export interface Lease {
  /** The locked resource. */
  readonly resource: string;
  /** The owner holding it (the provider's `owner`). */
  readonly owner: string;
  /**
   * Grows with every acquisition, of any resource, across the whole server (uint64, hence a
   * bigint): a system that remembers the last token it saw can refuse a stale holder.
   */
  readonly fencingToken: bigint;
  /** When the lease runs out unless renewed (server clock, as of the acquisition; renewals extend it). */
  readonly expireTime: PreciseDate;
}

/** Options of a {@link GrpcLockProvider}. */
export interface LockProviderOptions {
  /** Owner id of every lease this provider takes (default: a fresh one, see {@link newOwnerId}). */
  owner?: string;
  /** Time-to-live of each lease in milliseconds, 100 to 3600000 (default 30000); renewed every third of it. */
  ttlMs?: number;
  /**
   * Called once with a resource whose lease was lost: a renewal found it taken by another owner,
   * or it was not renewed within its TTL (the renewals failed for that long: a server frozen or
   * unreachable may have let it run out and handed it to another owner). Either way it is no
   * longer held nor renewed; one not renewed in time is also released in the background, best
   * effort. What it throws goes to `onError`.
   */
  onLost?: (resource: string) => void;
  /**
   * Called with errors of background work: a renewal that failed (tried again a third of the
   * TTL later) or a release at `close()` that failed (that lease runs out by itself). What it
   * throws becomes a process warning (it does not end the process, the renewals or `close()`).
   */
  onError?: (error: unknown) => void;
}

/** A fresh owner id, unique per provider: host name, process id and a UUID (as the Python client makes them). */
export function newOwnerId(): string {
  return `${hostname()}:${process.pid}:${randomUUID()}`;
}

/** Longest owner id the server accepts, in UTF-8 bytes. */
const MAX_OWNER_BYTES = 1024;

function checkTtl(ttlMs: number): number {
  if (!Number.isInteger(ttlMs) || ttlMs < MIN_LOCK_TTL_MS || ttlMs > MAX_LOCK_TTL_MS) {
    const got = typeof ttlMs === "number" ? String(ttlMs) : `a ${kindOf(ttlMs)}`;
    throw new InvalidArgument(`ttlMs must be an integer from ${MIN_LOCK_TTL_MS} to ${MAX_LOCK_TTL_MS}, got ${got}`, {
      field: "ttlMs",
    });
  }
  return ttlMs;
}

/** `callback` when absent or a function (a JavaScript caller may pass anything). */
function checkCallback<F>(callback: F | undefined, field: string): F | undefined {
  if (callback !== undefined && callback !== null && typeof callback !== "function") {
    throw new InvalidArgument(`${field}: expected a function, got ${kindOf(callback)}`, { field });
  }
  return callback ?? undefined;
}

/**
 * Distributed locks for the workflow hosts of a cluster (WFE's `DistributedLockProvider`).
 *
 * `acquireLock` is true when the resource was free or its lease had run out, false while a live
 * lease holds it, also one of this same owner (not re-entrant). Held leases are renewed every
 * `ttlMs / 3` until released or the provider is closed; a lease whose owner died is free once its
 * TTL has passed. `close()` (or `await using`) releases what the provider holds.
 *
 * The renewal timer is unref'd: it does not keep a Node process alive on its own.
 */
export class GrpcLockProvider implements AsyncDisposable {
  /** The owner id of every lease this provider takes. */
  readonly owner: string;
  /** Time-to-live of each lease, in milliseconds. */
  readonly ttlMs: number;
  readonly #connection: SharedConnection;
  #ownsConnection = false;
  readonly #client: Client<typeof LockService>;
  readonly #ttl: Duration;
  readonly #onLost: ((resource: string) => void) | undefined;
  readonly #onError: ((error: unknown) => void) | undefined;
  readonly #held = new Map<string, Lease>();
  /**
   * When (`performance.now()`) each held lease runs out unless renewed: the TTL from the moment
   * its last successful acquisition or renewal was sent (the server's TTL starts later).
   */
  readonly #renewBy = new WeakMap<Lease, number>();
  /** Fires at {@link #expiryAt}, the earliest `#renewBy` of a held lease (or later). */
  #expiryTimer: NodeJS.Timeout | undefined;
  #expiryAt = Infinity;
  /** Background releases of leases reported lost: an acquisition of one waits for it. */
  readonly #lapsedReleases = new Map<string, Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  /** Ends the renewal round under way: `close()` does not wait for a server that does not answer it. */
  readonly #renewAbort = new AbortController();
  /**
   * Acquisitions and releases in flight: `close()` waits for them (bounded) before it closes a
   * connection of its own, so that they free what they hold (an acquisition that lands after
   * `close()` frees its lease).
   */
  readonly #inFlight = new Set<Promise<unknown>>();
  #closed = false;
  /** Whether the closing of the connection under the provider was reported (once). */
  #reportedConnectionClosed = false;
  /** Leased dequeues in flight: `close()` aborts them (a waiting one would otherwise wait its whole wait). */
  readonly #dequeues = new Set<AbortController>();

  /** A lock provider on the connection of `store` (closing the lock provider leaves `store` open). */
  constructor(store: GrpcPersistenceProvider, options: LockProviderOptions | null = {}) {
    options ??= {}; // null (from JavaScript): the defaults, as undefined
    if (options.owner !== undefined && (typeof options.owner !== "string" || options.owner === "")) {
      throw new InvalidArgument("owner must be a non-empty string", { field: "owner" });
    }
    if (options.owner !== undefined && Buffer.byteLength(options.owner, "utf8") > MAX_OWNER_BYTES) {
      // Every call would be refused with this: said once, here.
      throw new InvalidArgument(`owner: longer than ${MAX_OWNER_BYTES} bytes`, { field: "owner" });
    }
    this.owner = options.owner ?? newOwnerId();
    this.ttlMs = checkTtl(options.ttlMs ?? DEFAULT_LOCK_TTL_MS);
    this.#ttl = toDuration(this.ttlMs);
    this.#onLost = checkCallback(options.onLost, "onLost");
    this.#onError = checkCallback(options.onError, "onError");
    this.#connection = sharedConnection(store);
    this.#client = createClient(LockService, this.#connection.transport);
  }

  /**
   * Connects to the server at `address` (connection options as for
   * `GrpcPersistenceProvider.connect`) with a connection of its own, closed by `close()`.
   */
  static async connect(
    address: string | readonly string[],
    options: (LockProviderOptions & ConnectOptions) | null = {},
  ): Promise<GrpcLockProvider> {
    const store = await GrpcPersistenceProvider.connect(address, options);
    try {
      const provider = new GrpcLockProvider(store, options);
      provider.#ownsConnection = true;
      return provider;
    } catch (error) {
      store.close();
      throw error;
    }
  }

  /**
   * Takes the lease on `resource`: the {@link Lease} (with its fencing token), or `undefined`
   * while a live lease holds it (also one of this owner).
   */
  async acquire(resource: string): Promise<Lease | undefined> {
    text(resource, "resource");
    this.#checkOpen();
    return this.#track(this.#acquire(resource));
  }

  /** `call`, which `close()` waits for while it is in flight. */
  async #track<T>(call: Promise<T>): Promise<T> {
    this.#inFlight.add(call);
    try {
      return await call;
    } finally {
      this.#inFlight.delete(call);
    }
  }

  async #acquire(resource: string): Promise<Lease | undefined> {
    // The release of this owner's lost lease on it, sent earlier, must not free the new one.
    await this.#lapsedReleases.get(resource);
    const sent = performance.now();
    const response = await this.#connection.call(() =>
      this.#client.acquireLock({ resource, owner: this.owner, ttl: this.#ttl }),
    );
    if (!response.acquired) return undefined;
    if (response.expireTime === undefined) throw new WfeError("server sent no expire_time for an acquired lease");
    const lease: Lease = {
      resource,
      owner: this.owner,
      fencingToken: response.fencingToken,
      expireTime: fromTimestamp(response.expireTime),
    };
    if (this.#closed) {
      // close() ran while the acquisition was on its way: it did not see this lease (and waits
      // for this release before it closes a connection of its own).
      try {
        await this.#release(resource);
      } catch (error) {
        this.#reportError(error);
      }
      this.#checkOpen();
    }
    this.#hold(lease, sent + this.ttlMs);
    this.#scheduleRenewal();
    return lease;
  }

  /**
   * For a leased dequeue: throws when closed; forgets `release` (freed by that call). The hold
   * returned gives the call its signal (aborted by `close()` or by the caller's `signal`) and
   * adopts the leases the dequeue took; {@link LeasedDequeueHold.end} when the call has ended.
   */
  [LEASED_DEQUEUE](release: readonly string[], signal?: AbortSignal): LeasedDequeueHold {
    this.#checkOpen();
    const released = new Map<string, Lease>();
    for (const resource of release) {
      const lease = this.#held.get(resource);
      if (lease !== undefined) released.set(resource, lease);
      this.#held.delete(resource);
    }
    const abort = new AbortController();
    const onAbort = () => abort.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    this.#dequeues.add(abort);
    const isClosed = () => this.#closed;
    return {
      signal: abort.signal,
      get closed() {
        return isClosed();
      },
      adopt: (leases) => {
        if (this.#closed) return false;
        // The server took them during a call that may have waited long (a long poll): their TTL is
        // counted from now; the first renewal, a third of it later, bounds them again.
        const renewBy = performance.now() + this.ttlMs;
        for (const lease of leases) this.#hold(lease, renewBy);
        if (leases.length > 0) this.#scheduleRenewal();
        return true;
      },
      restore: () => {
        if (this.#closed) return;
        // Each keeps the time by which it must be renewed (in #renewBy, by lease).
        for (const [resource, lease] of released) if (!this.#held.has(resource)) this.#hold(lease);
        if (this.#held.size > 0) this.#scheduleRenewal();
      },
      end: () => {
        signal?.removeEventListener("abort", onAbort);
        this.#dequeues.delete(abort);
      },
    };
  }

  /** True when the lease on `resource` is now this owner's; false while a live lease holds it. */
  async acquireLock(resource: string): Promise<boolean> {
    return (await this.acquire(resource)) !== undefined;
  }

  /**
   * Frees this owner's lease on `resource` and stops renewing it. Releasing what this owner does
   * not hold is not an error; resolves whether a lease was freed.
   */
  async releaseLock(resource: string): Promise<boolean> {
    text(resource, "resource");
    this.#held.delete(resource);
    if (this.#held.size === 0) this.#stopTimer();
    if (this.#closed) return false; // close() released everything
    return this.#track(this.#release(resource));
  }

  /** The lease this provider holds on `resource`, if any (as of its acquisition). */
  lease(resource: string): Lease | undefined {
    const lease = this.#held.get(resource);
    return lease !== undefined && this.#inTime(lease) ? lease : undefined;
  }

  /** The fencing token of this provider's lease on `resource`, or `undefined` when it holds none. */
  fencingToken(resource: string): bigint | undefined {
    return this.lease(resource)?.fencingToken;
  }

  /** The resources this provider holds leases on. */
  get held(): string[] {
    return [...this.#held].filter(([, lease]) => this.#inTime(lease)).map(([resource]) => resource);
  }

  /**
   * False once the time by which `lease` had to be renewed has passed: it is lost then, before
   * the expiry timer gets to run (an event loop blocked past it runs the timer only afterwards),
   * and its fencing token must not be handed out meanwhile.
   */
  #inTime(lease: Lease): boolean {
    return performance.now() < (this.#renewBy.get(lease) ?? Infinity);
  }

  /**
   * Stops renewing (a renewal under way is cut short) and releases every held lease, waiting at most `CLOSE_RELEASE_WAIT_MS` (or the
   * TTL, when shorter) for the server's answers; a release that fails, or is not answered by then,
   * is reported to `onError` (that lease runs out by itself within its TTL). Then closes the
   * connection if the provider opened it. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // A leased dequeue still waiting would take an item (and leases) nothing would hold: it ends
    // now (Canceled, 'GrpcLockProvider is closed'), as a dequeue does when its own provider closes.
    for (const dequeue of this.#dequeues) dequeue.abort(new WfeError("GrpcLockProvider is closed", { code: Code.Canceled }));
    this.#dequeues.clear();
    this.#stopTimer();
    this.#expireAt(Infinity);
    // A renewal under way is cut short (its leases are released below): waiting for its answer
    // would add up to a third of the TTL (or the call deadline) to the bounded wait that follows.
    this.#renewAbort.abort();
    await this.#renewing;
    if (this.#connection.closed) {
      // The store was closed under the provider: nothing can be released (said once).
      this.#connectionClosedUnder();
      this.#held.clear();
      return;
    }
    const held = [...this.#held.keys()];
    this.#held.clear();
    // Calls in flight: releases, and acquisitions that free what they get (they see it closed).
    const inFlight = [...this.#inFlight];
    const releases = [...held.map((resource) => this.#release(resource)), ...inFlight];
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timed out">((resolve) => {
      timer = setTimeout(() => resolve("timed out"), Math.min(CLOSE_RELEASE_WAIT_MS, this.ttlMs));
    });
    const settled = Promise.allSettled(releases);
    const outcome = await Promise.race([settled, timedOut]);
    clearTimeout(timer);
    if (outcome === "timed out") {
      const waitMs = Math.min(CLOSE_RELEASE_WAIT_MS, this.ttlMs);
      this.#reportError(
        new WfeError(
          `${held.length} lease(s) not released${inFlight.length > 0 ? ` (and ${inFlight.length} acquisition(s) or release(s) in flight not settled)` : ""}: ` +
            `the server did not answer within ${waitMs} ms; ` +
            `they run out by themselves within their TTL (${this.ttlMs} ms)`,
          { code: Code.DeadlineExceeded },
        ),
      );
      void settled; // the calls end at their own deadline (or with the connection, closed below)
    } else {
      for (const result of outcome.slice(0, held.length)) if (result.status === "rejected") this.#reportError(result.reason);
    }
    if (this.#ownsConnection) this.#connection.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Calls `onLost`. It runs from a timer: what it throws goes to `onError` (an unhandled
   * rejection would end the process, and the round's other lost leases would go unreported).
   */
  #reportLost(resource: string): void {
    try {
      this.#onLost?.(resource);
    } catch (error) {
      this.#reportError(error);
    }
  }

  /** Calls `onError`; what it throws becomes a process warning (see {@link #reportLost}). */
  #reportError(error: unknown): void {
    try {
      this.#onError?.(error);
    } catch (thrown) {
      process.emitWarning(`GrpcLockProvider onError threw: ${String(thrown)}`, { detail: String(error) });
    }
  }

  /**
   * The store whose connection the provider shares was closed under it: renewal stops, and
   * `onError` hears of it once (not every third of the TTL from then on).
   */
  #connectionClosedUnder(): void {
    this.#stopTimer();
    if (this.#reportedConnectionClosed || this.#held.size === 0) return;
    this.#reportedConnectionClosed = true;
    this.#reportError(
      new WfeError(
        `GrpcPersistenceProvider is closed: ${this.#held.size} lease(s) no longer renewed; ` +
          `they run out by themselves within their TTL (${this.ttlMs} ms)`,
        { code: Code.Canceled },
      ),
    );
  }

  #checkOpen(): void {
    if (this.#closed) throw new WfeError("GrpcLockProvider is closed", { code: Code.Canceled });
  }

  async #release(resource: string): Promise<boolean> {
    const response = await this.#connection.call(() => this.#client.releaseLock({ resource, owner: this.owner }));
    return response.released;
  }

  /** `lease` is held; it must be renewed by `renewBy` (`performance.now()`), or by the time it had. */
  #hold(lease: Lease, renewBy?: number): void {
    this.#held.set(lease.resource, lease);
    if (renewBy !== undefined) this.#renewBy.set(lease, renewBy);
    const by = this.#renewBy.get(lease) ?? Infinity;
    if (this.#expiryTimer === undefined || by < this.#expiryAt) this.#expireAt(by);
  }

  /** Sets the expiry timer to fire at `at` (`performance.now()`); none for `Infinity` or when closed. */
  #expireAt(at: number): void {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#expiryAt = Infinity;
    if (this.#closed || at === Infinity) return;
    this.#expiryAt = at;
    this.#expiryTimer = setTimeout(() => this.#expire(), Math.max(0, at - performance.now()));
    this.#expiryTimer.unref();
  }

  /**
   * Reports lost the leases not renewed within their TTL (their renewals failed, or did not end,
   * for that long): the server may have let them run out and handed them to another owner. Once
   * reported lost a lease stays lost, also when a renewal under way then succeeds (a frozen server,
   * and nobody took it): each is released in the background, best effort, sent after those
   * renewals, so the server does not keep it for an owner that no longer renews it.
   */
  #expire(): void {
    this.#expiryTimer = undefined;
    const now = performance.now();
    let earliest = Infinity;
    for (const [resource, lease] of [...this.#held]) {
      const by = this.#renewBy.get(lease) ?? Infinity;
      if (by > now) {
        earliest = Math.min(earliest, by);
        continue;
      }
      this.#held.delete(resource);
      this.#reportLost(resource);
      this.#releaseLapsed(resource);
    }
    if (this.#held.size === 0) this.#stopTimer();
    this.#expireAt(earliest);
  }

  /**
   * Releases this owner's lease on `resource`, reported lost, in the background (`close()` waits
   * for it as for a release under way; a failure goes to `onError`, unless closing: as for a
   * renewal). An acquisition of `resource` waits for it first: sent before, it could reach the
   * server after and free the new lease.
   */
  #releaseLapsed(resource: string): void {
    // A store closed under the provider: nothing can be released (said once, see #connectionClosedUnder).
    if (this.#closed || this.#connection.closed || this.#lapsedReleases.has(resource)) return;
    const releasing = this.#track(this.#release(resource)).then(
      () => undefined,
      (error: unknown) => {
        // close() cut it short (it closes the connection after its bounded wait, and says the
        // calls in flight were not settled): not reported again, after close() returned.
        if (!this.#closed && !this.#connection.closed) this.#reportError(error);
      },
    );
    this.#lapsedReleases.set(
      resource,
      releasing.finally(() => this.#lapsedReleases.delete(resource)),
    );
  }

  #stopTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #scheduleRenewal(): void {
    if (this.#timer !== undefined || this.#renewing !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#connection.closed) {
        this.#connectionClosedUnder();
        return;
      }
      this.#renewing = this.#renewHeld().finally(() => {
        this.#renewing = undefined;
        if (this.#connection.closed) this.#connectionClosedUnder();
        else if (this.#held.size > 0) this.#scheduleRenewal();
      });
    }, this.ttlMs / 3);
    this.#timer.unref();
  }

  /** One renewal round over every held lease; never rejects (failures go to `onError`). */
  async #renewHeld(): Promise<void> {
    const renewing = new Map(this.#held);
    const resources = [...renewing.keys()];
    // A renewal later than a third of the TTL is late anyway: give up and try again next round.
    const timeoutMs = Math.max(1, Math.min(this.#connection.timeoutMs, Math.floor(this.ttlMs / 3)));
    for (let start = 0; start < resources.length && !this.#closed; start += RENEW_BATCH) {
      const batch = resources.slice(start, start + RENEW_BATCH);
      let lost: string[];
      const sent = performance.now();
      try {
        const response = await this.#connection.call(() =>
          this.#client.renewLocks(
            { owner: this.owner, resources: batch, ttl: this.#ttl },
            { timeoutMs, signal: this.#renewAbort.signal },
          ),
        );
        lost = response.lostResources;
      } catch (error) {
        if (!this.#closed && !this.#connection.closed) this.#reportError(error);
        continue;
      }
      const lostSet = new Set(lost);
      for (const resource of batch) {
        const lease = renewing.get(resource);
        // Only a lease that is still the one this round renewed: not one released (or reported
        // lost, see #expire) and taken again meanwhile.
        if (lease === undefined || this.#held.get(resource) !== lease) continue;
        if (lostSet.has(resource)) {
          this.#held.delete(resource);
          this.#reportLost(resource);
        } else {
          this.#renewBy.set(lease, sent + this.ttlMs);
        }
      }
    }
  }
}
