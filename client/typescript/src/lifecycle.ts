/**
 * GrpcLifecyclePublisher: lifecycle events (WFE's `LifecyclePublisher`) relayed by a wfe-sqlite
 * server (`LifecycleService`): hosts publish what happens to workflows, any client watches.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, createClient, createContextValues, type Client } from "@connectrpc/connect";
import { SERVED_BY } from "./balance.js";
import { optionalText, text, uint32 } from "./convert.js";
import { errorFromRpc, InvalidArgument, WfeError } from "./errors.js";
import * as wire from "./gen/wfe/persistence/v1/lifecycle_pb.js";
import {
  GrpcPersistenceProvider,
  sharedConnection,
  type ConnectOptions,
  type SharedConnection,
} from "./grpc-provider.js";
import { fromTimestamp, PreciseDate, toTimestamp } from "./time.js";

/** What happened to a workflow (WFE's `LifecycleEventType`). */
export const LifecycleEventType = {
  STARTED: "STARTED",
  RESUMED: "RESUMED",
  SUSPENDED: "SUSPENDED",
  COMPLETED: "COMPLETED",
  TERMINATED: "TERMINATED",
  /** A step raised an error; see `message`. */
  ERROR: "ERROR",
  /** See `stepId` and `stepName`. */
  STEP_STARTED: "STEP_STARTED",
  /** See `stepId` and `stepName`. */
  STEP_COMPLETED: "STEP_COMPLETED",
} as const;
export type LifecycleEventType = (typeof LifecycleEventType)[keyof typeof LifecycleEventType];

const WIRE_TYPE: Readonly<Record<LifecycleEventType, wire.LifecycleEventType>> = {
  STARTED: wire.LifecycleEventType.STARTED,
  RESUMED: wire.LifecycleEventType.RESUMED,
  SUSPENDED: wire.LifecycleEventType.SUSPENDED,
  COMPLETED: wire.LifecycleEventType.COMPLETED,
  TERMINATED: wire.LifecycleEventType.TERMINATED,
  ERROR: wire.LifecycleEventType.ERROR,
  STEP_STARTED: wire.LifecycleEventType.STEP_STARTED,
  STEP_COMPLETED: wire.LifecycleEventType.STEP_COMPLETED,
};
const TYPE_OF_WIRE = new Map(
  Object.entries(WIRE_TYPE).map(([name, value]) => [value, name as LifecycleEventType]),
);

/** One thing that happened to a workflow, as hosts publish it and watchers see it. */
export interface LifecycleEvent {
  type: LifecycleEventType;
  workflowInstanceId: string;
  workflowDefinitionId: string;
  /** Version of the workflow definition. */
  version: number;
  /** The workflow's reference; absent when none. */
  reference?: string;
  /** For STEP_STARTED and STEP_COMPLETED: the step's index in the definition. */
  stepId: number;
  /** For STEP_STARTED and STEP_COMPLETED: the step's name; absent when unnamed. */
  stepName?: string;
  /** For ERROR: the error message. */
  message: string;
  /** When it happened. */
  eventTime: Date;
}

/** A lifecycle event of `type` for `workflowInstanceId`, happening now unless `fields.eventTime` says otherwise. */
export function newLifecycleEvent(
  type: LifecycleEventType,
  workflowInstanceId: string,
  fields: Partial<Omit<LifecycleEvent, "type" | "workflowInstanceId">> = {},
): LifecycleEvent {
  return {
    workflowDefinitionId: "",
    version: 0,
    stepId: 0,
    message: "",
    eventTime: new PreciseDate(Date.now()),
    ...fields,
    type,
    workflowInstanceId,
  };
}

/** @internal */
export function lifecycleEventToWire(event: LifecycleEvent): wire.LifecycleEvent {
  if (event === null || typeof event !== "object") throw new InvalidArgument("event is required", { field: "event" });
  const type = Object.hasOwn(WIRE_TYPE, event.type) ? WIRE_TYPE[event.type] : undefined;
  if (type === undefined) {
    throw new InvalidArgument(`event.type: not a LifecycleEventType: ${String(event.type)}`, { field: "event.type" });
  }
  return create(wire.LifecycleEventSchema, {
    eventTime: toTimestamp(event.eventTime, "event.eventTime"),
    workflowInstanceId: text(event.workflowInstanceId, "event.workflowInstanceId"),
    workflowDefinitionId: optionalText(event.workflowDefinitionId, "event.workflowDefinitionId") ?? "",
    version: uint32(event.version ?? 0, "event.version"),
    reference: optionalText(event.reference, "event.reference"),
    type,
    stepId: uint32(event.stepId ?? 0, "event.stepId"),
    stepName: optionalText(event.stepName, "event.stepName"),
    message: optionalText(event.message, "event.message") ?? "",
  });
}

/** @internal */
export function lifecycleEventFromWire(event: wire.LifecycleEvent): LifecycleEvent {
  const type = TYPE_OF_WIRE.get(event.type);
  if (type === undefined) throw new WfeError(`server sent an unknown LifecycleEventType ${event.type}`);
  if (event.eventTime === undefined) throw new WfeError("server sent a lifecycle event without event_time");
  const out: LifecycleEvent = {
    type,
    workflowInstanceId: event.workflowInstanceId,
    workflowDefinitionId: event.workflowDefinitionId,
    version: event.version,
    stepId: event.stepId,
    message: event.message,
    eventTime: fromTimestamp(event.eventTime),
  };
  if (event.reference !== undefined) out.reference = event.reference;
  if (event.stepName !== undefined) out.stepName = event.stepName;
  return out;
}

/** Which events a watch sees: all by default. */
export interface WatchOptions {
  /** Only events of this workflow instance. */
  workflowInstanceId?: string;
  /** Only events of this workflow definition. */
  workflowDefinitionId?: string;
  /** Ends the watch (the iteration ends quietly, as with `close()`). */
  signal?: AbortSignal;
}

/**
 * How often a watch on a later server of a list tries the earlier ones again, in milliseconds (as
 * the Python and Rust adapters' `RETURN_PROBE`; the publishers go back to a server a second after
 * it failed).
 */
export const RETURN_PROBE_MS = 1_000;
/**
 * How long a watch that moved back to an earlier server still reads the stream it left, in
 * milliseconds (as the Python adapter's `MOVE_LINGER`): publishers on the later server that have
 * not moved back yet are not missed.
 */
export const MOVE_LINGER_MS = 2_000;

type Responses = AsyncIterable<wire.WatchLifecycleEventsResponse>;
type Read = Promise<IteratorResult<wire.WatchLifecycleEventsResponse>>;

/**
 * Opens the watch's stream: on the first server of the list that answers when `server` is
 * undefined (`served.index` says which, once it answered), else on server `server` alone.
 */
type OpenStream = (signal: AbortSignal, onHeader: () => void, served: { index?: number }, server?: number) => Responses;

/** One stream of a watch, with its read under way; `until`: left behind by a move, read until then. */
interface WatchStream {
  readonly messages: AsyncIterator<wire.WatchLifecycleEventsResponse>;
  readonly abort: AbortController;
  readonly served: { index?: number };
  read: Read | undefined;
  until?: number;
}

/** What ended one wait of the iteration: a stream's read (its result or error), or nothing (look again). */
type Turn =
  | { stream: WatchStream; result: IteratorResult<wire.WatchLifecycleEventsResponse> }
  | { stream: WatchStream; error: unknown }
  | { stream?: undefined };

/**
 * An open watch over the WatchLifecycleEvents stream: `for await (const event of watch)`.
 * Leaving the loop (break, return, throw) cancels the stream, as do `close()`, `await using`, the
 * `signal` of {@link WatchOptions} and closing the publisher (or the store whose connection it
 * shares); the iteration then ends quietly. The stream has no
 * deadline. A watcher that falls more than 10000 events (or 64 MiB of events) behind is ended
 * by the server (the iteration throws `WatcherFellBehind`); so is every watch when the server
 * shuts down (the iteration ends).
 *
 * With several servers the stream is on the first of the list that answers (where the
 * publishers are). Opened on a later one (an earlier one was down), it moves back to the first
 * earlier server that answers again, as the publishers do: tried every {@link RETURN_PROBE_MS}, a
 * new stream is opened there and, once that server has it in place, the old one is still read for
 * {@link MOVE_LINGER_MS}, then closed. Events published on either server in that time are all
 * seen; their order across the two servers is not defined.
 */
export class LifecycleWatch implements AsyncIterable<LifecycleEvent>, AsyncDisposable {
  readonly #abort = new AbortController();
  readonly #open: OpenStream;
  readonly #servers: number;
  readonly #headers: Promise<void>;
  readonly #outer: AbortSignal | undefined;
  readonly #onOuterAbort = () => this.close();
  /** The stream events are read from, and those a move left behind (read until their `until`). */
  #current: WatchStream;
  #left: WatchStream[] = [];
  /** Ends the iteration's current wait (a move happened). */
  #wake: () => void = () => {};
  #probing = false;
  /** The first read, started at once so that the call (and `started()`) gets going before iteration. */
  #first: Read | undefined;
  #iterated = false;

  readonly #connectionClosed: () => boolean;
  readonly #onClose: (() => void) | undefined;
  readonly #startTimeoutMs: number | undefined;

  /**
   * @internal Use {@link GrpcLifecyclePublisher.watch}. `connectionClosed`: whether the
   * connection the stream runs on was closed on purpose (its failure then ends the iteration).
   * `servers`: how many servers `open` knows (with more than one, the watch moves back).
   * `onClose`: called once the watch is closed (its publisher forgets it). `startTimeoutMs`:
   * how long {@link started} waits for the server (the connection's call deadline).
   */
  constructor(
    open: OpenStream,
    signal?: AbortSignal,
    connectionClosed: () => boolean = () => false,
    servers = 1,
    onClose?: () => void,
    startTimeoutMs?: number,
  ) {
    this.#open = open;
    this.#onClose = onClose;
    this.#startTimeoutMs = startTimeoutMs;
    this.#servers = servers;
    this.#connectionClosed = connectionClosed;
    let headersArrived = () => {};
    this.#headers = new Promise<void>((resolve) => (headersArrived = resolve));
    this.#outer = signal;
    if (signal?.aborted) this.#abort.abort();
    signal?.addEventListener("abort", this.#onOuterAbort, { once: true });
    this.#current = this.#stream(undefined, () => {
      headersArrived();
      this.#startProbing();
    });
    this.#first = this.#current.read; // read (and reported) by the iteration or by started()
  }

  /** Opens a stream (see {@link OpenStream}) and starts its first read. */
  #stream(server: number | undefined, onHeader: () => void): WatchStream {
    const abort = new AbortController();
    if (this.#abort.signal.aborted) abort.abort();
    const served: { index?: number } = server === undefined ? {} : { index: server };
    const messages = this.#open(abort.signal, onHeader, served, server)[Symbol.asyncIterator]();
    const read = messages.next();
    read.catch(() => {}); // looked at by whoever reads it; a stream dropped is not
    return { messages, abort, served, read };
  }

  /**
   * Resolves once the server has the watch in place: every event published after that is seen.
   * Rejects with the call's error if the watch could not be opened, and with a `WfeError` of
   * code DeadlineExceeded, closing the watch, if the server did not put it in place within the
   * connection's `timeoutMs` (a server that takes connections but does not answer).
   */
  async started(): Promise<void> {
    const first = this.#first;
    if (first === undefined) return; // already iterating, so already started
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.#startTimeoutMs;
    const timedOut =
      timeoutMs === undefined
        ? undefined
        : new Promise<"timed out">((resolve) => (timer = setTimeout(() => resolve("timed out"), timeoutMs)));
    try {
      const outcome = await Promise.race([this.#headers, first, ...(timedOut === undefined ? [] : [timedOut])]);
      if (outcome === "timed out") {
        this.close();
        throw new WfeError(`the server did not put the watch in place within ${timeoutMs} ms`, {
          code: Code.DeadlineExceeded,
        });
      }
    } catch (error) {
      throw errorFromRpc(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Cancels the stream. Idempotent. */
  close(): void {
    this.#outer?.removeEventListener("abort", this.#onOuterAbort);
    this.#abort.abort();
    this.#current.abort.abort();
    for (const left of this.#left) left.abort.abort();
    this.#left = [];
    this.#wake();
    this.#onClose?.();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** With several servers, once the stream is in place: looks for an earlier server while on a later one. */
  #startProbing(): void {
    if (this.#servers < 2 || this.#probing) return;
    this.#probing = true;
    void this.#probe();
  }

  async #probe(): Promise<void> {
    const gone = () => this.#abort.signal.aborted || this.#connectionClosed();
    while (!gone() && (this.#current.served.index ?? 0) > 0) {
      try {
        await sleep(RETURN_PROBE_MS, undefined, { signal: this.#abort.signal, ref: false });
      } catch {
        return; // closed
      }
      const at = this.#current.served.index ?? 0;
      for (let index = 0; index < at && !gone(); index++) {
        if (await this.#moveTo(index)) break;
      }
    }
  }

  /**
   * Opens the stream on server `index`; once that server has it in place (within
   * {@link RETURN_PROBE_MS}), reads from it and leaves the current one behind (read for
   * {@link MOVE_LINGER_MS} more). False when that server did not take it.
   */
  async #moveTo(index: number): Promise<boolean> {
    let answered = () => {};
    const headers = new Promise<void>((resolve) => (answered = resolve));
    const stream = this.#stream(index, () => answered());
    const read = stream.read as Read;
    const failed = read.then(
      (result) => result.done,
      () => true,
    );
    let timer: NodeJS.Timeout | undefined;
    const wait = (ms: number) => new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
    let open: boolean;
    try {
      open = (await Promise.race([headers.then(() => true), failed.then((f) => !f), wait(RETURN_PROBE_MS)])) === true;
      clearTimeout(timer);
      // A refusal (a server stopping) may come as empty headers followed at once by its status.
      if (open) open = (await Promise.race([failed.then((f) => !f), wait(50)])) !== false;
    } finally {
      clearTimeout(timer);
    }
    if (!open || this.#abort.signal.aborted || this.#connectionClosed()) {
      stream.abort.abort();
      return false;
    }
    const left = this.#current;
    left.until = Date.now() + MOVE_LINGER_MS;
    this.#left.push(left);
    this.#current = stream;
    // Closed when its time is up, read or not (the server then has one watcher of this watch).
    setTimeout(() => this.#drop(left), MOVE_LINGER_MS).unref();
    this.#wake();
    return true;
  }

  /** Stops reading a stream a move left behind. */
  #drop(stream: WatchStream): void {
    if (stream === this.#current) return;
    this.#left = this.#left.filter((left) => left !== stream);
    stream.abort.abort();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<LifecycleEvent, void, undefined> {
    if (this.#iterated) throw new WfeError("a LifecycleWatch can be iterated only once");
    this.#iterated = true;
    this.#first = undefined;
    try {
      while (!this.#abort.signal.aborted) {
        const now = Date.now();
        for (const left of this.#left) if ((left.until ?? 0) <= now) this.#drop(left);
        const streams = [this.#current, ...this.#left];
        const waits = streams.map((stream): Promise<Turn> => {
          stream.read ??= stream.messages.next();
          return stream.read.then(
            (result) => ({ stream, result }),
            (error: unknown) => ({ stream, error }),
          );
        });
        // A stream left behind is dropped when its time is up (its read then fails).
        if (this.#servers > 1) waits.push(new Promise<Turn>((resolve) => (this.#wake = () => resolve({}))));
        let turn: Turn;
        try {
          turn = await Promise.race(waits);
        } finally {
          this.#wake = () => {};
        }
        const { stream } = turn;
        if (stream === undefined) continue; // a move: read the new stream too
        stream.read = undefined;
        const current = stream === this.#current;
        if ("error" in turn) {
          if (!current) {
            this.#drop(stream); // a stream left behind ended: nothing more from it
            continue;
          }
          // Cancelled on purpose: the watch, or the connection it runs on, was closed.
          if (this.#abort.signal.aborted || this.#connectionClosed()) return;
          throw errorFromRpc(turn.error);
        }
        if (turn.result.done) {
          if (!current) {
            this.#drop(stream);
            continue;
          }
          return;
        }
        if (turn.result.value.event !== undefined) yield lifecycleEventFromWire(turn.result.value.event);
      }
    } finally {
      this.close();
    }
  }
}

/**
 * Publishes lifecycle events to a wfe-sqlite server and watches them. Events are relayed live,
 * not stored: a watch sees what is published while it is open, in the order the server received it.
 */
export class GrpcLifecyclePublisher implements AsyncDisposable {
  readonly #connection: SharedConnection;
  #ownsConnection = false;
  readonly #client: Client<typeof wire.LifecycleService>;
  /** With several servers: a client of each alone (a watch on a later one moves back). */
  readonly #serverClients: readonly Client<typeof wire.LifecycleService>[];
  #closed = false;
  /** Open watches: `close()` ends them (on a shared connection nothing else would). */
  readonly #watches = new Set<LifecycleWatch>();

  /** A publisher on the connection of `store` (closing the publisher leaves `store` open). */
  constructor(store: GrpcPersistenceProvider) {
    this.#connection = sharedConnection(store);
    // With several servers: the first that is up, for publishing and watching alike (a server
    // relays events only to its own watchers).
    this.#client = createClient(wire.LifecycleService, this.#connection.firstServerTransport);
    const servers = this.#connection.serverTransports;
    this.#serverClients = servers.length > 1 ? servers.map((t) => createClient(wire.LifecycleService, t)) : [];
  }

  /** Connects to the server at `address` with a connection of its own, closed by `close()`. */
  static async connect(address: string | readonly string[], options: ConnectOptions | null = {}): Promise<GrpcLifecyclePublisher> {
    const publisher = new GrpcLifecyclePublisher(await GrpcPersistenceProvider.connect(address, options));
    publisher.#ownsConnection = true;
    return publisher;
  }

  /** Relays `event` to every current watcher; resolves how many watchers (on that server) received it. */
  async publish(event: LifecycleEvent): Promise<number> {
    const message = lifecycleEventToWire(event);
    this.#checkOpen();
    const response = await this.#connection.call(() => this.#client.publishLifecycleEvent({ event: message }));
    return response.watchers;
  }

  /**
   * Watches the events published from now on, optionally of one workflow or one definition:
   * `for await (const event of publisher.watch({ workflowInstanceId })) { ... }`. Await
   * `watch.started()` first when an event published right after must be seen. Throws a
   * `WfeError` (code Canceled) when the publisher, or the store whose connection it shares, is
   * closed (as its calls reject then).
   */
  watch(options: WatchOptions | null = {}): LifecycleWatch {
    options ??= {}; // null (from JavaScript): the defaults, as undefined
    // Checked here: a stream is not a call the connection's closed check wraps, and its transport
    // would otherwise open a new connection that nothing closes.
    this.#checkOpen();
    const request = {
      workflowInstanceId: optionalText(options.workflowInstanceId, "workflowInstanceId") ?? "",
      workflowDefinitionId: optionalText(options.workflowDefinitionId, "workflowDefinitionId") ?? "",
    };
    const watch: LifecycleWatch = new LifecycleWatch(
      (signal, onHeader, served, server) => {
        const client = server === undefined ? this.#client : (this.#serverClients[server] ?? this.#client);
        const contextValues = createContextValues().set(SERVED_BY, served);
        return client.watchLifecycleEvents(request, { signal, onHeader, timeoutMs: 0, contextValues });
      },
      options.signal,
      () => this.#connection.closed || this.#closed,
      Math.max(1, this.#serverClients.length),
      () => this.#watches.delete(watch),
      this.#connection.timeoutMs,
    );
    if (!(options.signal?.aborted ?? false)) this.#watches.add(watch); // (else closed already)
    return watch;
  }

  /**
   * Ends the publisher: the loops of its open watches end quietly, later calls are refused (a
   * `WfeError` of code Canceled, 'GrpcLifecyclePublisher is closed'); closes the connection if
   * the publisher opened it (a store it shares stays open). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsConnection) this.#connection.close();
    for (const watch of [...this.#watches]) watch.close();
    this.#watches.clear();
  }

  #checkOpen(): void {
    this.#connection.checkOpen();
    if (this.#closed) throw new WfeError("GrpcLifecyclePublisher is closed", { code: Code.Canceled });
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}
