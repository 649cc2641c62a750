/**
 * Typed errors.
 *
 * The server answers with a canonical gRPC status code plus a `google.rpc.ErrorInfo` detail
 * (domain `wfe-sqlite`, a machine-readable `reason` named by the contract's `ErrorReason`
 * enum). {@link errorFromRpc} is the one place where a failed call becomes one of the classes
 * below: the reason decides, the status code is only the fallback for an answer without a
 * wfe-sqlite ErrorInfo or with a reason this contract version does not know.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, type ErrorInfo } from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason, ErrorReasonSchema } from "./gen/wfe/persistence/v1/errors_pb.js";

export { ErrorReason };
export type { ErrorInfo };

/** The ErrorInfo domain of this project. */
export const ERROR_DOMAIN = "wfe-sqlite";

export interface WfeErrorOptions {
  /** The gRPC status code (from `@connectrpc/connect`'s `Code`). */
  code?: Code;
  /** The ErrorInfo reason, e.g. `WORKFLOW_NOT_FOUND`. */
  reason?: string;
  /** The ErrorInfo metadata, e.g. `{ field: "workflow.status" }`. */
  metadata?: Record<string, string>;
  /** Offending field, for InvalidArgument raised on the client side. */
  field?: string;
  cause?: unknown;
}

/** Base class of every error this package throws on purpose. */
export class WfeError extends Error {
  /** gRPC status code; `Code.Unknown` when none applies. */
  readonly code: Code;
  /** ErrorInfo reason, when the server gave one. */
  readonly reason: string | undefined;
  /** ErrorInfo metadata (empty when none). */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(message: string, options: WfeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? Code.Unknown;
    this.reason = options.reason;
    this.metadata = { ...(options.metadata ?? {}) };
    if (options.field !== undefined && this.metadata["field"] === undefined) {
      this.metadata = { ...this.metadata, field: options.field };
    }
  }
}

/** Base class of the three "not found" errors. */
export class NotFound extends WfeError {}

/** No workflow has that id (or name). Reason `WORKFLOW_NOT_FOUND`. */
export class WorkflowNotFound extends NotFound {}

/** No event has that id. Reason `EVENT_NOT_FOUND`. */
export class EventNotFound extends NotFound {}

/**
 * No subscription has that id, or (for clearSubscriptionToken) the token does not match.
 * Reason `SUBSCRIPTION_NOT_FOUND`.
 */
export class SubscriptionNotFound extends NotFound {}

/** A duplicate (a subclass per reason; `reason` says which). */
export class AlreadyExists extends WfeError {}

/** A workflow with that id exists. Reason `WORKFLOW_ALREADY_EXISTS`. */
export class WorkflowAlreadyExists extends AlreadyExists {}

/** Another workflow has that name. Reason `WORKFLOW_NAME_TAKEN`. */
export class WorkflowNameTaken extends AlreadyExists {}

/** An event with that id exists. Reason `EVENT_ALREADY_EXISTS`. */
export class EventAlreadyExists extends AlreadyExists {}

/** A subscription with that id exists. Reason `SUBSCRIPTION_ALREADY_EXISTS`. */
export class SubscriptionAlreadyExists extends AlreadyExists {}

/**
 * A malformed request (reason `INVALID_ARGUMENT`); `field` names the offending field when known.
 * Code InvalidArgument also when this client refuses a value before sending it.
 */
export class InvalidArgument extends WfeError {
  constructor(message: string, options: WfeErrorOptions = {}) {
    super(message, { ...options, code: options.code ?? Code.InvalidArgument });
  }

  get field(): string | undefined {
    return this.metadata["field"];
  }
}

/** A command lease no longer holds the command (reason `LEASE_LOST`). */
export class LeaseLost extends WfeError {}

/** The server's disk is full (reason `STORAGE_FULL`). */
export class StorageFull extends WfeError {}

/** The server cannot reach its database (reason `STORAGE_UNAVAILABLE`). */
export class StorageUnavailable extends WfeError {}

/** The server wants a valid bearer token (reason `UNAUTHENTICATED`; see ConnectOptions.token). */
export class Unauthenticated extends WfeError {}

/** The stored workflow's revision is not the expected one; nothing was written (reason `REVISION_CONFLICT`). */
export class RevisionConflict extends WfeError {}

/**
 * The client of a server stream (`getWorkflowInstances`' BatchGetWorkflows) took no message for
 * the server's stream idle timeout, so the server ended the stream (reason `STREAM_IDLE`, code
 * DeadlineExceeded).
 */
export class StreamIdle extends WfeError {}

/**
 * A lifecycle watch fell more than 10000 events (or 64 MiB of events) behind, or was behind while
 * the server's watchers together waited on 256 MiB of events, and the server ended it (reason
 * `WATCHER_FELL_BEHIND`, code ResourceExhausted).
 */
export class WatcherFellBehind extends WfeError {}

/**
 * A dequeue that would wait was refused at once: the server process already has 10000 dequeues
 * waiting (reason `TOO_MANY_WAITING_DEQUEUES`, code ResourceExhausted). Nothing was taken.
 */
export class TooManyWaitingDequeues extends WfeError {}

/**
 * A lifecycle watch was refused: the server process already has 10000 watches open (reason
 * `TOO_MANY_WATCHERS`, code ResourceExhausted).
 */
export class TooManyWatchers extends WfeError {}

type ErrorClass = new (message: string, options?: WfeErrorOptions) => WfeError;

const BY_REASON: ReadonlyMap<ErrorReason, ErrorClass> = new Map<ErrorReason, ErrorClass>([
  [ErrorReason.WORKFLOW_NOT_FOUND, WorkflowNotFound],
  [ErrorReason.EVENT_NOT_FOUND, EventNotFound],
  [ErrorReason.SUBSCRIPTION_NOT_FOUND, SubscriptionNotFound],
  [ErrorReason.WORKFLOW_ALREADY_EXISTS, WorkflowAlreadyExists],
  [ErrorReason.WORKFLOW_NAME_TAKEN, WorkflowNameTaken],
  [ErrorReason.EVENT_ALREADY_EXISTS, EventAlreadyExists],
  [ErrorReason.SUBSCRIPTION_ALREADY_EXISTS, SubscriptionAlreadyExists],
  [ErrorReason.INVALID_ARGUMENT, InvalidArgument],
  [ErrorReason.LEASE_LOST, LeaseLost],
  [ErrorReason.STORAGE_FULL, StorageFull],
  [ErrorReason.STORAGE_UNAVAILABLE, StorageUnavailable],
  [ErrorReason.UNAUTHENTICATED, Unauthenticated],
  [ErrorReason.REVISION_CONFLICT, RevisionConflict],
  [ErrorReason.STREAM_IDLE, StreamIdle],
  [ErrorReason.WATCHER_FELL_BEHIND, WatcherFellBehind],
  [ErrorReason.TOO_MANY_WAITING_DEQUEUES, TooManyWaitingDequeues],
  [ErrorReason.TOO_MANY_WATCHERS, TooManyWatchers],
]);

/**
 * The contract's {@link ErrorReason} whose wire name is `reason` (e.g. `"WORKFLOW_NOT_FOUND"`),
 * or `undefined` for a reason this contract version does not know.
 */
export function errorReasonOf(reason: string): ErrorReason | undefined {
  const known: ErrorReason | undefined = ErrorReasonSchema.values.find((v) => v.name === reason)?.number;
  return known === ErrorReason.ERROR_REASON_UNSPECIFIED ? undefined : known;
}

/** Fallbacks for answers without a wfe-sqlite ErrorInfo. */
const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.InvalidArgument]: InvalidArgument,
  [Code.Unauthenticated]: Unauthenticated,
};

/**
 * The HTTP/2 stream was closed under the call without an answer and without this client
 * cancelling it (a cancel of this client's fails the call with its own reason first): the
 * connection died (server killed, network gone). Connect reports it as code Canceled, which reads
 * as if the caller had cancelled; gRPC's own clients report a lost connection as Unavailable.
 */
function connectionLost(error: ConnectError): boolean {
  return error.code === Code.Canceled && /^http\/2 stream closed with error code CANCEL\b/.test(error.rawMessage);
}

/** The wfe-sqlite ErrorInfo of a ConnectError, if it carries one. */
export function errorInfoOf(error: ConnectError): ErrorInfo | undefined {
  return error.findDetails(ErrorInfoSchema).find((info) => info.domain === ERROR_DOMAIN);
}

/**
 * Turns whatever a call threw into the matching {@link WfeError} subclass. Errors that are
 * already WfeErrors pass through; anything that is not an RPC error is returned unchanged.
 */
export function errorFromRpc(error: unknown): unknown {
  if (error instanceof WfeError) return error;
  if (!(error instanceof ConnectError)) return error;
  if (connectionLost(error)) {
    return new WfeError(
      "the connection to the server was lost during the call (the server stopped or the network failed); " +
        `a write may or may not have been applied (${error.rawMessage})`,
      { code: Code.Unavailable, cause: error },
    );
  }
  const info = errorInfoOf(error);
  const reason = info === undefined ? undefined : errorReasonOf(info.reason);
  const cls = (reason === undefined ? undefined : BY_REASON.get(reason)) ?? BY_CODE[error.code] ?? WfeError;
  return new cls(error.rawMessage || error.message, {
    code: error.code,
    reason: info?.reason,
    metadata: info?.metadata,
    cause: error,
  });
}
