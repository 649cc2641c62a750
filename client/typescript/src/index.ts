export * from "./models.js";
export * from "./errors.js";
export { PreciseDate, epochNanosOf } from "./time.js";
export { LosslessNumber, parseJson, stringifyJson, type JsonValue } from "./json.js";
export type { PersistenceProvider, CommandHandler, ProcessCommandsOptions } from "./provider.js";
export {
  GrpcPersistenceProvider,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_TIMEOUT_MS,
  BATCH_GET_CHUNK,
  type ConnectOptions,
  type TlsOptions,
} from "./grpc-provider.js";
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
