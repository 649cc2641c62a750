/**
 * The WFE persistence-provider interface, in TypeScript.
 *
 * Mirrors the operations of the SPEC (`create_new_workflow` is `createNewWorkflow`, and so on).
 * Every operation returns a Promise except {@link PersistenceProvider.supportsScheduledCommands}.
 * Failures are {@link WfeError} subclasses (see errors.ts).
 */
import type {
  Event,
  EventSubscription,
  ExecutionError,
  ScheduledCommand,
  WorkflowInstance,
} from "./models.js";
import type { VisibilityOperations } from "./visibility.js";

/** Runs one due command. Resolving means success (the command is deleted); throwing means failure. */
export type CommandHandler = (command: ScheduledCommand) => Promise<void>;

/** Optional knobs of {@link PersistenceProvider.processCommands}. */
export interface ProcessCommandsOptions {
  /** Commands claimed per round trip (default 100, the server caps at 1000). */
  maxCommands?: number;
  /** How long a claim holds a command, in milliseconds (default 30000). */
  leaseMs?: number;
  /** Free-form id of this processor, for operators. */
  workerId?: string;
  /** Called with each handler failure (the command is released and offered again later). */
  onHandlerError?: (command: ScheduledCommand, error: unknown) => void;
}

/** Options of {@link PersistenceProvider.persistWorkflow} and `persistWorkflowWithSubscriptions`. */
export interface PersistOptions {
  /**
   * Write whatever revision is stored (no `RevisionConflict` check). Default false: the stored
   * revision must equal `instance.revision` when that is > 0.
   */
  force?: boolean;
}

export interface PersistenceProvider extends VisibilityOperations {
  // Workflows

  /**
   * Inserts the workflow and its pointers atomically and returns its id. An empty `id` is
   * generated and an empty `name` assigned (`{workflowDefinitionId}-{N}`); both are also written
   * back into `instance`, so persisting the same object later keeps them; `instance.revision`
   * becomes 1. Duplicate id or name: `AlreadyExists`.
   */
  createNewWorkflow(instance: WorkflowInstance): Promise<string>;
  /**
   * Replaces every mutable field and the whole pointer set. Unknown id: `WorkflowNotFound`.
   * When `instance.revision` > 0 the stored revision must equal it (unless `options.force`), or
   * the call fails with `RevisionConflict` and writes nothing; on success `instance.revision` is
   * the new revision.
   */
  persistWorkflow(instance: WorkflowInstance, options?: PersistOptions | null): Promise<void>;
  /**
   * `persistWorkflow` plus inserting the subscriptions, all or nothing (a `RevisionConflict`
   * inserts no subscription either). Generated subscription ids are written back into the
   * subscriptions and returned, in order.
   */
  persistWorkflowWithSubscriptions(
    instance: WorkflowInstance,
    subscriptions: EventSubscription[],
    options?: PersistOptions | null,
  ): Promise<string[]>;
  /** Ids of RUNNABLE workflows with `nextExecution <= asAt`, earliest first. */
  getRunnableInstances(asAt: Date): Promise<string[]>;
  /** Missing: `WorkflowNotFound`. The instance carries its stored `revision`. */
  getWorkflowInstance(id: string): Promise<WorkflowInstance>;
  /** Missing: `WorkflowNotFound`. */
  getWorkflowInstanceByName(name: string): Promise<WorkflowInstance>;
  /** The workflows among `ids` that exist; missing ids are skipped. */
  getWorkflowInstances(ids: Iterable<string>): Promise<WorkflowInstance[]>;
  /**
   * 1, 2, 3, ... per definition id; never repeats. With `count` (1 to 10,000) it reserves that many
   * consecutive numbers and returns the first: a caller handing them out of the block saves a call
   * per number, but numbers of different callers then interleave and unused ones are never used.
   */
  nextDefinitionSequence(definitionId: string, count?: number): Promise<number>;

  // Events

  /** Inserts the event and returns its id (an empty id is generated and written back). Duplicate: `AlreadyExists`. */
  createEvent(event: Event): Promise<string>;
  /** Missing: `EventNotFound`. */
  getEvent(id: string): Promise<Event>;
  /** Ids of unprocessed events with `eventTime <= asAt`, oldest first. */
  getRunnableEvents(asAt: Date): Promise<string[]>;
  /** Ids of events with that name and key and `eventTime <= asOf`, oldest first. */
  getEvents(eventName: string, eventKey: string, asOf: Date): Promise<string[]>;
  /** Missing: `EventNotFound`. */
  markEventProcessed(id: string): Promise<void>;
  /** Missing: `EventNotFound`. */
  markEventUnprocessed(id: string): Promise<void>;

  // Subscriptions

  /** Inserts the subscription and returns its id (an empty id is generated and written back). Duplicate: `AlreadyExists`. */
  createEventSubscription(subscription: EventSubscription): Promise<string>;
  /** Missing: `SubscriptionNotFound`. Terminated subscriptions are returned too. */
  getSubscription(id: string): Promise<EventSubscription>;
  /** Open (not terminated) subscriptions for the event with `subscribeAsOf <= asOf`, oldest first. */
  getSubscriptions(eventName: string, eventKey: string, asOf: Date): Promise<EventSubscription[]>;
  /** Missing: `SubscriptionNotFound`. */
  terminateSubscription(id: string): Promise<void>;
  /** The oldest open subscription no live token holds, or `undefined`. */
  getFirstOpenSubscription(eventName: string, eventKey: string, asOf: Date): Promise<EventSubscription | undefined>;
  /**
   * Atomic compare-and-set of the processing token: `true` when it was free (or its holder's
   * expiry has passed), `false` while another live token holds it. Missing: `SubscriptionNotFound`.
   */
  setSubscriptionToken(id: string, token: string, workerId: string, expiry: Date): Promise<boolean>;
  /** Clears the token when it matches; missing subscription or other token: `SubscriptionNotFound`. */
  clearSubscriptionToken(id: string, token: string): Promise<void>;

  // Scheduled commands

  /** Always `true` for this provider. */
  supportsScheduledCommands(): boolean;
  /** Stores the command; scheduling the same (name, data) again keeps the earlier executeTime. */
  scheduleCommand(command: ScheduledCommand): Promise<void>;
  /**
   * Hands every command due at `asOf` to `handler`, one processor at a time per command, one
   * handler at a time in claim order, each command at most once per call. A command whose
   * handler resolves is deleted; one whose handler throws stays and is offered again on a later
   * call. Handler failures do not reject the returned Promise.
   */
  processCommands(asOf: Date, handler: CommandHandler, options?: ProcessCommandsOptions | null): Promise<void>;

  // Errors and store

  /** Stores every error in one transaction. */
  persistErrors(errors: Iterable<ExecutionError>): Promise<void>;
  /** Creates tables and indexes when missing; idempotent. */
  ensureStoreExists(): Promise<void>;
}
