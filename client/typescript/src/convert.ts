/**
 * @internal Conversions between the model (models.ts) and the generated protobuf-es messages.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import * as events from "./gen/wfe/persistence/v1/events_pb.js";
import * as errs from "./gen/wfe/persistence/v1/execution_errors_pb.js";
import * as cmds from "./gen/wfe/persistence/v1/scheduled_commands_pb.js";
import * as subs from "./gen/wfe/persistence/v1/subscriptions_pb.js";
import * as wf from "./gen/wfe/persistence/v1/workflows_pb.js";
import { InvalidArgument, WfeError } from "./errors.js";
import { parseJson, parseOptionalJson, stringifyJson, stringifyOptionalJson, type JsonValue } from "./json.js";
import {
  CommandName,
  PointerStatus,
  WorkflowStatus,
  type Event,
  type EventSubscription,
  type ExecutionError,
  type ExecutionPointer,
  type ScheduledCommand,
  type WorkflowInstance,
} from "./models.js";
import { fromOptionalTimestamp, fromTimestamp, toOptionalTimestamp, toTimestamp } from "./time.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

function enumMaps<K extends string>(names: readonly K[], pbEnum: Record<string, string | number>, what: string) {
  const toWire = new Map<K, number>();
  const fromWire = new Map<number, K>();
  for (const name of names) {
    const value = pbEnum[name];
    if (typeof value !== "number") throw new Error(`generated enum ${what} lacks ${name}`);
    toWire.set(name, value);
    fromWire.set(value, name);
  }
  return {
    toWire: (name: K, field: string): number => {
      const value = toWire.get(name);
      if (value === undefined) throw new InvalidArgument(`${field}: not a ${what}: ${String(name)}`, { field });
      return value;
    },
    fromWire: (value: number, field: string): K => {
      const name = fromWire.get(value);
      if (name === undefined) throw new WfeError(`server sent an unknown ${what} ${value} in ${field}`);
      return name;
    },
  };
}

const workflowStatus = enumMaps(Object.values(WorkflowStatus), wf.WorkflowStatus, "WorkflowStatus");
const pointerStatus = enumMaps(Object.values(PointerStatus), wf.PointerStatus, "PointerStatus");
const commandName = enumMaps(Object.values(CommandName), cmds.CommandName, "CommandName");

export const wireCommandName = commandName.toWire;

function requireTimestamp(ts: Timestamp | undefined, field: string) {
  if (ts === undefined) throw new WfeError(`server sent no ${field}`);
  return fromTimestamp(ts);
}

function toEpochMillis(value: number | undefined, field: string): bigint | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Number.isSafeInteger(value)) {
    throw new InvalidArgument(`${field} must be an integer number of epoch milliseconds, got ${value}`, { field });
  }
  return BigInt(value);
}

/** What `value` is, for a message: `null`, `array` or its `typeof`. */
/** @internal What `value` is, for messages: 'null', 'array' or its `typeof`. */
export function kindOf(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

/**
 * `value` when it is a string; otherwise InvalidArgument naming `field` ('FIELD: expected a
 * string, got TYPE', as the Python client says it). The types say so already; this is for callers
 * without them (JavaScript, `any`), whose number or object protobuf-es would send as its text.
 */
export function text(value: unknown, field: string): string {
  if (typeof value !== "string") throw new InvalidArgument(`${field}: expected a string, got ${kindOf(value)}`, { field });
  return value;
}

/** {@link text} for an optional field: `undefined` (or `null`) stays absent. */
export function optionalText(value: unknown, field: string): string | undefined {
  return value === undefined || value === null ? undefined : text(value, field);
}

/** `value` as an array of strings (InvalidArgument naming `field`, or `field[i]`, otherwise). */
export function textList(value: unknown, field: string): string[] {
  if (!Array.isArray(value)) {
    throw new InvalidArgument(`${field}: expected an array of strings, got ${kindOf(value)}`, { field });
  }
  return value.map((item: unknown, i) => text(item, `${field}[${i}]`));
}

const MAX_UINT32 = 4_294_967_295;

/**
 * A uint32 field of the contract (version, stepId, retryCount), checked here: protobuf-es would
 * refuse it only while serializing, as an Internal error naming no field of this API. Absent is
 * 0, as protobuf-es makes it.
 */
export function uint32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
    throw new InvalidArgument(`${field} must be an integer from 0 to ${MAX_UINT32}, got ${String(value)}`, { field });
  }
  return value;
}

function fromEpochMillis(value: bigint): number {
  // Epoch milliseconds are numbers in this API; an int64 beyond 2**53 (written by another
  // language) cannot be one exactly, and silently rounding a timer would be worse than failing.
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WfeError(`epoch milliseconds ${value} exceed what a JavaScript number holds exactly`);
  }
  return Number(value);
}

/** A workflow revision from the wire (int64) as the model holds it (a number). */
export function revisionFromWire(value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WfeError(`server sent workflow revision ${value}, not a number this API can hold exactly`);
  }
  return Number(value);
}

/**
 * The `expected_revision` of a persist: the instance's own revision (0, never stored, means no
 * check), or 0 when `force` skips the check. A revision that is not an integer >= 0 is
 * `InvalidArgument`, forced or not.
 */
export function expectedRevision(w: WorkflowInstance, force: boolean): bigint {
  const revision = w.revision ?? 0;
  if (!Number.isSafeInteger(revision) || revision < 0) {
    throw new InvalidArgument(`workflow.revision must be an integer >= 0, got ${String(revision)}`, {
      field: "workflow.revision",
    });
  }
  return force ? 0n : BigInt(revision);
}

function optionalString(value: string | undefined | null): string | undefined {
  return value === undefined || value === null ? undefined : value;
}

// Workflows

export function pointerToWire(p: ExecutionPointer, field: string): MessageInitShape<typeof wf.ExecutionPointerSchema> {
  const attributes: Record<string, string> = {};
  for (const [key, value] of Object.entries(p.extensionAttributes ?? {})) {
    attributes[key] = stringifyJson(value, `${field}.extensionAttributes.${key}`);
  }
  return {
    id: p.id,
    stepId: uint32(p.stepId ?? 0, `${field}.stepId`),
    active: p.active,
    status: pointerStatus.toWire(p.status, `${field}.status`),
    sleepUntil: toOptionalTimestamp(p.sleepUntil, `${field}.sleepUntil`),
    persistenceData: stringifyOptionalJson(p.persistenceData, `${field}.persistenceData`),
    startTime: toOptionalTimestamp(p.startTime, `${field}.startTime`),
    endTime: toOptionalTimestamp(p.endTime, `${field}.endTime`),
    eventName: optionalString(p.eventName),
    eventKey: optionalString(p.eventKey),
    eventPublished: p.eventPublished,
    eventData: stringifyOptionalJson(p.eventData, `${field}.eventData`),
    stepName: optionalString(p.stepName),
    retryCount: uint32(p.retryCount ?? 0, `${field}.retryCount`),
    children: [...(p.children ?? [])],
    contextItem: stringifyOptionalJson(p.contextItem, `${field}.contextItem`),
    predecessorId: optionalString(p.predecessorId),
    outcome: stringifyOptionalJson(p.outcome, `${field}.outcome`),
    scope: [...(p.scope ?? [])],
    extensionAttributes: attributes,
  };
}

export function pointerFromWire(p: wf.ExecutionPointer): ExecutionPointer {
  const field = `executionPointers[${p.id}]`;
  const extensionAttributes: Record<string, JsonValue> = {};
  for (const [key, value] of Object.entries(p.extensionAttributes)) {
    extensionAttributes[key] = parseJson(value, `${field}.extensionAttributes.${key}`);
  }
  const out: ExecutionPointer = {
    id: p.id,
    stepId: p.stepId,
    active: p.active,
    status: pointerStatus.fromWire(p.status, `${field}.status`),
    eventPublished: p.eventPublished,
    retryCount: p.retryCount,
    children: [...p.children],
    scope: [...p.scope],
    extensionAttributes,
  };
  assignDefined(out, {
    sleepUntil: fromOptionalTimestamp(p.sleepUntil),
    persistenceData: parseOptionalJson(p.persistenceData, `${field}.persistenceData`),
    startTime: fromOptionalTimestamp(p.startTime),
    endTime: fromOptionalTimestamp(p.endTime),
    eventName: p.eventName,
    eventKey: p.eventKey,
    eventData: parseOptionalJson(p.eventData, `${field}.eventData`),
    stepName: p.stepName,
    contextItem: parseOptionalJson(p.contextItem, `${field}.contextItem`),
    predecessorId: p.predecessorId,
    outcome: parseOptionalJson(p.outcome, `${field}.outcome`),
  });
  return out;
}

export function workflowToWire(w: WorkflowInstance): wf.WorkflowInstance {
  if (w === null || typeof w !== "object") throw new InvalidArgument("workflow is required", { field: "workflow" });
  if (!(w.createTime instanceof Date)) {
    throw new InvalidArgument("workflow.createTime is required", { field: "workflow.createTime" });
  }
  return create(wf.WorkflowInstanceSchema, {
    id: w.id ?? "",
    name: w.name ?? "",
    rootWorkflowId: optionalString(w.rootWorkflowId),
    workflowDefinitionId: w.workflowDefinitionId,
    version: uint32(w.version ?? 0, "workflow.version"),
    description: optionalString(w.description),
    reference: optionalString(w.reference),
    executionPointers: (w.executionPointers ?? []).map((p, i) => pointerToWire(p, `workflow.executionPointers[${i}]`)),
    nextExecution: toEpochMillis(w.nextExecution, "workflow.nextExecution"),
    status: workflowStatus.toWire(w.status, "workflow.status"),
    data: stringifyJson(w.data, "workflow.data"),
    createTime: toTimestamp(w.createTime, "workflow.createTime"),
    completeTime: toOptionalTimestamp(w.completeTime, "workflow.completeTime"),
  });
}

export function workflowFromWire(w: wf.WorkflowInstance): WorkflowInstance {
  const out: WorkflowInstance = {
    id: w.id,
    name: w.name,
    workflowDefinitionId: w.workflowDefinitionId,
    version: w.version,
    executionPointers: w.executionPointers.map(pointerFromWire),
    status: workflowStatus.fromWire(w.status, "workflow.status"),
    data: parseJson(w.data, "workflow.data"),
    createTime: requireTimestamp(w.createTime, "workflow.createTime"),
    revision: revisionFromWire(w.revision),
  };
  assignDefined(out, {
    rootWorkflowId: w.rootWorkflowId,
    description: w.description,
    reference: w.reference,
    nextExecution: w.nextExecution === undefined ? undefined : fromEpochMillis(w.nextExecution),
    completeTime: fromOptionalTimestamp(w.completeTime),
  });
  return out;
}

// Events

export function eventToWire(e: Event): events.Event {
  if (e === null || typeof e !== "object") throw new InvalidArgument("event is required", { field: "event" });
  return create(events.EventSchema, {
    id: e.id ?? "",
    eventName: e.eventName,
    eventKey: e.eventKey,
    eventData: stringifyJson(e.eventData, "event.eventData"),
    eventTime: toTimestamp(e.eventTime, "event.eventTime"),
    isProcessed: e.isProcessed ?? false,
  });
}

export function eventFromWire(e: events.Event): Event {
  return {
    id: e.id,
    eventName: e.eventName,
    eventKey: e.eventKey,
    eventData: parseJson(e.eventData, "event.eventData"),
    eventTime: requireTimestamp(e.eventTime, "event.eventTime"),
    isProcessed: e.isProcessed,
  };
}

// Subscriptions

export function subscriptionToWire(s: EventSubscription, field = "subscription"): subs.EventSubscription {
  if (s === null || typeof s !== "object") throw new InvalidArgument(`${field} is required`, { field });
  return create(subs.EventSubscriptionSchema, {
    id: s.id ?? "",
    workflowId: s.workflowId,
    stepId: uint32(s.stepId ?? 0, `${field}.stepId`),
    executionPointerId: s.executionPointerId,
    eventName: s.eventName,
    eventKey: s.eventKey,
    subscribeAsOf: toTimestamp(s.subscribeAsOf, `${field}.subscribeAsOf`),
    subscriptionData: stringifyOptionalJson(s.subscriptionData, `${field}.subscriptionData`),
    externalToken: optionalString(s.externalToken),
    externalWorkerId: optionalString(s.externalWorkerId),
    externalTokenExpiry: toOptionalTimestamp(s.externalTokenExpiry, `${field}.externalTokenExpiry`),
  });
}

export function subscriptionFromWire(s: subs.EventSubscription): EventSubscription {
  const out: EventSubscription = {
    id: s.id,
    workflowId: s.workflowId,
    stepId: s.stepId,
    executionPointerId: s.executionPointerId,
    eventName: s.eventName,
    eventKey: s.eventKey,
    subscribeAsOf: requireTimestamp(s.subscribeAsOf, "subscription.subscribeAsOf"),
  };
  assignDefined(out, {
    subscriptionData: parseOptionalJson(s.subscriptionData, "subscription.subscriptionData"),
    externalToken: s.externalToken,
    externalWorkerId: s.externalWorkerId,
    externalTokenExpiry: fromOptionalTimestamp(s.externalTokenExpiry),
  });
  return out;
}

// Scheduled commands

export function commandToWire(c: ScheduledCommand): cmds.ScheduledCommand {
  if (c === null || typeof c !== "object") throw new InvalidArgument("command is required", { field: "command" });
  return create(cmds.ScheduledCommandSchema, {
    commandName: commandName.toWire(c.commandName, "command.commandName"),
    data: c.data,
    executeTime: toEpochMillis(c.executeTime, "command.executeTime") ?? 0n,
  });
}

export function commandFromWire(c: cmds.ScheduledCommand): ScheduledCommand {
  return {
    commandName: commandName.fromWire(c.commandName, "command.commandName"),
    data: c.data,
    executeTime: fromEpochMillis(c.executeTime),
  };
}

// Execution errors

export function executionErrorToWire(e: ExecutionError, field: string): MessageInitShape<typeof errs.ExecutionErrorSchema> {
  return {
    errorTime: toTimestamp(e.errorTime, `${field}.errorTime`),
    workflowId: e.workflowId,
    executionPointerId: e.executionPointerId,
    message: e.message,
  };
}

/** Sets only the keys whose value is defined, so absent optional fields stay absent (not `key: undefined`). */
function assignDefined<T extends object>(target: T, values: Partial<T>): void {
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined) (target as Record<string, unknown>)[key] = value;
  }
}
