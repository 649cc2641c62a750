/**
 * Typed errors.
 *
 * The server answers with a canonical gRPC status code plus a `google.rpc.ErrorInfo` detail
 * (domain `wfe-sqlite`, a machine-readable `reason`). {@link errorFromRpc} is the one place
 * where a failed call becomes one of the classes below: the reason decides, the status code is
 * only the fallback for an answer without a wfe-sqlite ErrorInfo.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

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

/** A malformed request (reason `INVALID_ARGUMENT`); `field` names the offending field when known. */
export class InvalidArgument extends WfeError {
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

type ErrorClass = new (message: string, options?: WfeErrorOptions) => WfeError;

const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  WORKFLOW_NOT_FOUND: WorkflowNotFound,
  EVENT_NOT_FOUND: EventNotFound,
  SUBSCRIPTION_NOT_FOUND: SubscriptionNotFound,
  WORKFLOW_ALREADY_EXISTS: WorkflowAlreadyExists,
  WORKFLOW_NAME_TAKEN: WorkflowNameTaken,
  EVENT_ALREADY_EXISTS: EventAlreadyExists,
  SUBSCRIPTION_ALREADY_EXISTS: SubscriptionAlreadyExists,
  INVALID_ARGUMENT: InvalidArgument,
  LEASE_LOST: LeaseLost,
  STORAGE_FULL: StorageFull,
  STORAGE_UNAVAILABLE: StorageUnavailable,
  UNAUTHENTICATED: Unauthenticated,
};

/** Fallbacks for answers without a wfe-sqlite ErrorInfo. */
const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.InvalidArgument]: InvalidArgument,
  [Code.Unauthenticated]: Unauthenticated,
};

/** The decoded fields of a `google.rpc.ErrorInfo`. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

const ERROR_INFO_TYPE = "google.rpc.ErrorInfo";

/**
 * Decodes a `google.rpc.ErrorInfo` (reason = 1, domain = 2, metadata = 3 as map<string, string>).
 * The message is three stable fields, so it is read directly with protobuf-es' wire reader
 * rather than by generating all of googleapis for it.
 */
export function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const reader = new BinaryReader(bytes);
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      info.reason = reader.string();
    } else if (fieldNo === 2 && wireType === WireType.LengthDelimited) {
      info.domain = reader.string();
    } else if (fieldNo === 3 && wireType === WireType.LengthDelimited) {
      const entry = new BinaryReader(reader.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [entryField, entryWire] = entry.tag();
        if (entryField === 1 && entryWire === WireType.LengthDelimited) key = entry.string();
        else if (entryField === 2 && entryWire === WireType.LengthDelimited) value = entry.string();
        else entry.skip(entryWire, entryField);
      }
      info.metadata[key] = value;
    } else {
      reader.skip(wireType, fieldNo);
    }
  }
  return info;
}

/** The wfe-sqlite ErrorInfo of a ConnectError, if it carries one. */
export function errorInfoOf(error: ConnectError): ErrorInfo | undefined {
  for (const detail of error.details) {
    if (!("type" in detail) || detail.type !== ERROR_INFO_TYPE) continue;
    const info = decodeErrorInfo(detail.value);
    if (info.domain === ERROR_DOMAIN) return info;
  }
  return undefined;
}

/**
 * Turns whatever a call threw into the matching {@link WfeError} subclass. Errors that are
 * already WfeErrors pass through; anything that is not an RPC error is returned unchanged.
 */
export function errorFromRpc(error: unknown): unknown {
  if (error instanceof WfeError) return error;
  if (!(error instanceof ConnectError)) return error;
  const info = errorInfoOf(error);
  const cls = (info && BY_REASON[info.reason]) ?? BY_CODE[error.code] ?? WfeError;
  return new cls(error.rawMessage || error.message, {
    code: error.code,
    reason: info?.reason,
    metadata: info?.metadata,
    cause: error,
  });
}
