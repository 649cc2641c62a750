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
