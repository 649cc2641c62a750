// The public declarations use `AsyncDisposable` and `Symbol.asyncDispose` (`await using`): this
// directive, kept in dist/src/index.d.ts, brings TypeScript's own lib for them into a user's
// project whatever its `lib`, so that it needs neither `@types/node` nor `skipLibCheck`.
/// <reference lib="esnext.disposable" preserve="true" />
export * from "./models.js";
export * from "./errors.js";
export { PreciseDate, epochNanosOf } from "./time.js";
export { LosslessNumber, parseJson, stringifyJson, type JsonValue } from "./json.js";
export type { PersistenceProvider, CommandHandler, PersistOptions, ProcessCommandsOptions } from "./provider.js";
export {
  GrpcPersistenceProvider,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  BATCH_GET_CHUNK,
  type ConnectOptions,
  type TlsOptions,
} from "./grpc-provider.js";
export {
  GrpcLockProvider,
  newOwnerId,
  CLOSE_RELEASE_WAIT_MS,
  DEFAULT_LOCK_TTL_MS,
  MIN_LOCK_TTL_MS,
  MAX_LOCK_TTL_MS,
  type Lease,
  type LockProviderOptions,
} from "./locks.js";
export {
  GrpcQueueProvider,
  QueueType,
  MAX_DEQUEUE_WAIT_MS,
  type DequeueOptions,
  type DequeuedWorkflow,
  type LeasedDequeueOptions,
  type LeasedWork,
} from "./queue.js";
export {
  GrpcLifecyclePublisher,
  LifecycleWatch,
  LifecycleEventType,
  MOVE_LINGER_MS,
  newLifecycleEvent,
  RETURN_PROBE_MS,
  type LifecycleEvent,
  type WatchOptions,
} from "./lifecycle.js";
export {
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
  PURGED_BY_DEFAULT,
  PURGE_TIMEOUT_MS,
  type ListWorkflowsOptions,
  type PurgeWorkflowsOptions,
  type SearchWorkflowsOptions,
  type VisibilityOperations,
  type WorkflowFilter,
  type WorkflowPage,
  type WorkflowSearchPage,
  type WorkflowSummary,
} from "./visibility.js";
export { READ_METHODS, RoundRobinTransport } from "./balance.js";
