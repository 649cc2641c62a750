/**
 * GrpcLifecyclePublisher: lifecycle events (WFE's `LifecyclePublisher`) relayed by a wfe-sqlite
 * server (`LifecycleService`): hosts publish what happens to workflows, any client watches.
 */
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
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

type OpenStream = (signal: AbortSignal, onHeader: () => void) => AsyncIterable<wire.WatchLifecycleEventsResponse>;

/**
 * An open watch over the WatchLifecycleEvents stream: `for await (const event of watch)`.
 * Leaving the loop (break, return, throw) cancels the stream, as do `close()`, `await using`, the
 * `signal` of {@link WatchOptions} and closing the publisher (or the store whose connection it
 * shares); the iteration then ends quietly. The stream has no
 * deadline. A watcher that falls more than 10000 events (or 64 MiB of events) behind is ended
 * by the server (the iteration throws `WatcherFellBehind`); so is every watch when the server
 * shuts down (the iteration ends).
 */
export class LifecycleWatch implements AsyncIterable<LifecycleEvent>, AsyncDisposable {
  readonly #abort = new AbortController();
  readonly #messages: AsyncIterator<wire.WatchLifecycleEventsResponse>;
  readonly #headers: Promise<void>;
  readonly #outer: AbortSignal | undefined;
  readonly #onOuterAbort = () => this.close();
  /** The first read, started at once so that the call (and `started()`) gets going before iteration. */
  #first: Promise<IteratorResult<wire.WatchLifecycleEventsResponse>> | undefined;
  #iterated = false;

  readonly #connectionClosed: () => boolean;

  /**
   * @internal Use {@link GrpcLifecyclePublisher.watch}. `connectionClosed`: whether the
   * connection the stream runs on was closed on purpose (its failure then ends the iteration).
   */
  constructor(open: OpenStream, signal?: AbortSignal, connectionClosed: () => boolean = () => false) {
    this.#connectionClosed = connectionClosed;
    let headersArrived = () => {};
    this.#headers = new Promise<void>((resolve) => (headersArrived = resolve));
    this.#outer = signal;
    if (signal?.aborted) this.#abort.abort();
    signal?.addEventListener("abort", this.#onOuterAbort, { once: true });
    this.#messages = open(this.#abort.signal, () => headersArrived())[Symbol.asyncIterator]();
    this.#first = this.#messages.next();
    this.#first.catch(() => {}); // read (and reported) by the iteration or by started()
  }

  /**
   * Resolves once the server has the watch in place: every event published after that is seen.
   * Rejects with the call's error if the watch could not be opened.
   */
  async started(): Promise<void> {
    const first = this.#first;
    if (first === undefined) return; // already iterating, so already started
    try {
      await Promise.race([this.#headers, first]);
    } catch (error) {
      throw errorFromRpc(error);
    }
  }

  /** Cancels the stream. Idempotent. */
  close(): void {
    this.#outer?.removeEventListener("abort", this.#onOuterAbort);
    this.#abort.abort();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<LifecycleEvent, void, undefined> {
    if (this.#iterated) throw new WfeError("a LifecycleWatch can be iterated only once");
    this.#iterated = true;
    try {
      while (!this.#abort.signal.aborted) {
        const next = this.#first ?? this.#messages.next();
        this.#first = undefined;
        let result: IteratorResult<wire.WatchLifecycleEventsResponse>;
        try {
          result = await next;
        } catch (error) {
          // Cancelled on purpose: the watch, or the connection it runs on, was closed.
          if (this.#abort.signal.aborted || this.#connectionClosed()) return;
          throw errorFromRpc(error);
        }
        if (result.done) return;
        if (result.value.event !== undefined) yield lifecycleEventFromWire(result.value.event);
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

  /** A publisher on the connection of `store` (closing the publisher leaves `store` open). */
  constructor(store: GrpcPersistenceProvider) {
    this.#connection = sharedConnection(store);
    // With several servers: the first that is up, for publishing and watching alike (a server
    // relays events only to its own watchers).
    this.#client = createClient(wire.LifecycleService, this.#connection.firstServerTransport);
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
    this.#connection.checkOpen();
    const request = {
      workflowInstanceId: optionalText(options.workflowInstanceId, "workflowInstanceId") ?? "",
      workflowDefinitionId: optionalText(options.workflowDefinitionId, "workflowDefinitionId") ?? "",
    };
    return new LifecycleWatch(
      (signal, onHeader) => this.#client.watchLifecycleEvents(request, { signal, onHeader, timeoutMs: 0 }),
      options.signal,
      () => this.#connection.closed,
    );
  }

  /** Closes the connection if the publisher opened it (the loops of open watches end quietly). Idempotent. */
  close(): void {
    if (this.#ownsConnection) this.#connection.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}
