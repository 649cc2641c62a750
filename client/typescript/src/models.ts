/**
 * The WFE persistence model, with camelCase fields.
 *
 * - Instants are `Date`s; the ones this package returns are {@link PreciseDate}s that keep the
 *   stored microseconds (see time.ts).
 * - `nextExecution` and `executeTime` are epoch milliseconds as `number`.
 * - JSON fields are parsed values ({@link JsonValue}); see json.ts for numbers. An optional JSON
 *   field is `undefined` when absent; setting it to `null` also stores "absent" (as in WFE).
 */
import { randomUUID } from "node:crypto";
import type { JsonValue } from "./json.js";
import { PreciseDate } from "./time.js";

/** Lifecycle state of a workflow instance. */
export const WorkflowStatus = {
  RUNNABLE: "RUNNABLE",
  SUSPENDED: "SUSPENDED",
  COMPLETE: "COMPLETE",
  TERMINATED: "TERMINATED",
} as const;
export type WorkflowStatus = (typeof WorkflowStatus)[keyof typeof WorkflowStatus];

/** State of one execution pointer. */
export const PointerStatus = {
  PENDING: "PENDING",
  RUNNING: "RUNNING",
  COMPLETE: "COMPLETE",
  SKIPPED: "SKIPPED",
  SLEEPING: "SLEEPING",
  WAITING_FOR_EVENT: "WAITING_FOR_EVENT",
  FAILED: "FAILED",
  COMPENSATED: "COMPENSATED",
  CANCELLED: "CANCELLED",
  PENDING_PREDECESSOR: "PENDING_PREDECESSOR",
} as const;
export type PointerStatus = (typeof PointerStatus)[keyof typeof PointerStatus];

/** What a scheduled command asks for. */
export const CommandName = {
  PROCESS_WORKFLOW: "PROCESS_WORKFLOW",
  PROCESS_EVENT: "PROCESS_EVENT",
} as const;
export type CommandName = (typeof CommandName)[keyof typeof CommandName];

/** Tracks the execution of one step of a workflow. */
export interface ExecutionPointer {
  id: string;
  stepId: number;
  active: boolean;
  status: PointerStatus;
  sleepUntil?: Date;
  persistenceData?: JsonValue;
  startTime?: Date;
  endTime?: Date;
  eventName?: string;
  eventKey?: string;
  eventPublished: boolean;
  eventData?: JsonValue;
  stepName?: string;
  retryCount: number;
  children: string[];
  contextItem?: JsonValue;
  predecessorId?: string;
  outcome?: JsonValue;
  scope: string[];
  extensionAttributes: Record<string, JsonValue>;
}

/** One run of a workflow definition. */
export interface WorkflowInstance {
  /** Empty on create means "generate a UUIDv4". */
  id: string;
  /** Unique when non-empty; empty on create means "assign `{definition}-{N}`". */
  name: string;
  rootWorkflowId?: string;
  workflowDefinitionId: string;
  version: number;
  description?: string;
  reference?: string;
  executionPointers: ExecutionPointer[];
  /** Epoch milliseconds; absent means never runnable. */
  nextExecution?: number;
  status: WorkflowStatus;
  data: JsonValue;
  createTime: Date;
  completeTime?: Date;
  /**
   * Revision of the stored workflow: 1 after create, one more after every persist; 0 means never
   * stored. Create, persist and every read fill it in; persist sends it as the revision it expects
   * (see `PersistOptions.force`).
   */
  revision: number;
}

/** Something that happened, which waiting workflows may consume. */
export interface Event {
  /** Empty on create means "generate a UUIDv4". */
  id: string;
  eventName: string;
  eventKey: string;
  eventData: JsonValue;
  eventTime: Date;
  isProcessed: boolean;
}

/** A workflow pointer waiting for an event. */
export interface EventSubscription {
  /** Empty on create means "generate a UUIDv4". */
  id: string;
  workflowId: string;
  stepId: number;
  executionPointerId: string;
  eventName: string;
  eventKey: string;
  subscribeAsOf: Date;
  subscriptionData?: JsonValue;
  externalToken?: string;
  externalWorkerId?: string;
  externalTokenExpiry?: Date;
}

/** A deferred "process this workflow / event" timer. */
export interface ScheduledCommand {
  commandName: CommandName;
  /** The workflow or event id. */
  data: string;
  /** When the command is due, epoch milliseconds. */
  executeTime: number;
}

/** An error raised while executing a step. */
export interface ExecutionError {
  errorTime: Date;
  workflowId: string;
  executionPointerId: string;
  message: string;
}

function now(): PreciseDate {
  return new PreciseDate(Date.now());
}

/** A new workflow: new UUID, empty name (assigned on create), `nextExecution` 0, RUNNABLE, created now. */
export function newWorkflowInstance(workflowDefinitionId: string, version: number, data: JsonValue = null): WorkflowInstance {
  return {
    id: randomUUID(),
    name: "",
    workflowDefinitionId,
    version,
    executionPointers: [],
    nextExecution: 0,
    status: WorkflowStatus.RUNNABLE,
    data,
    createTime: now(),
    revision: 0,
  };
}

/** A new active, PENDING pointer with a new UUID. */
export function newExecutionPointer(stepId: number): ExecutionPointer {
  return {
    id: randomUUID(),
    stepId,
    active: true,
    status: PointerStatus.PENDING,
    eventPublished: false,
    retryCount: 0,
    children: [],
    scope: [],
    extensionAttributes: {},
  };
}

/** A new unprocessed event with a new UUID, happening now unless `eventTime` is given. */
export function newEvent(eventName: string, eventKey: string, eventData: JsonValue = null, eventTime: Date = now()): Event {
  return { id: randomUUID(), eventName, eventKey, eventData, eventTime, isProcessed: false };
}

/** A new subscription with a new UUID. */
export function newEventSubscription(
  workflowId: string,
  stepId: number,
  executionPointerId: string,
  eventName: string,
  eventKey: string,
  subscribeAsOf: Date,
): EventSubscription {
  return { id: randomUUID(), workflowId, stepId, executionPointerId, eventName, eventKey, subscribeAsOf };
}

/** A new execution error, happening now. */
export function newExecutionError(workflowId: string, executionPointerId: string, message: string): ExecutionError {
  return { errorTime: now(), workflowId, executionPointerId, message };
}

/** A command to process the workflow `workflowId` at `executeTime` (epoch ms). */
export function processWorkflowCommand(workflowId: string, executeTime: number): ScheduledCommand {
  return { commandName: CommandName.PROCESS_WORKFLOW, data: workflowId, executeTime };
}

/** A command to process the event `eventId` at `executeTime` (epoch ms). */
export function processEventCommand(eventId: string, executeTime: number): ScheduledCommand {
  return { commandName: CommandName.PROCESS_EVENT, data: eventId, executeTime };
}
