/**
 * Visibility and clean-up: list, full-text search, delete and purge workflows
 * (`wfe.persistence.v1.VisibilityService`), as `GrpcPersistenceProvider` offers them.
 */
import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import * as vis from "./gen/wfe/persistence/v1/visibility_pb.js";
import * as wf from "./gen/wfe/persistence/v1/workflows_pb.js";
import { InvalidArgument, WfeError } from "./errors.js";
import { WorkflowStatus } from "./models.js";
import { fromOptionalTimestamp, fromTimestamp, toOptionalTimestamp, toTimestamp } from "./time.js";

/** Summaries per page or search window unless told otherwise; the server caps at 1000. */
export const DEFAULT_PAGE_SIZE = 100;
/** Largest page or window the server returns. */
export const MAX_PAGE_SIZE = 1000;
/** The statuses {@link VisibilityOperations.purgeWorkflows} deletes unless told otherwise. */
export const PURGED_BY_DEFAULT: readonly WorkflowStatus[] = [WorkflowStatus.COMPLETE, WorkflowStatus.TERMINATED];

/** Deadline of a purge, which deletes batch after batch (as in the Python adapter), in milliseconds. */
export const PURGE_TIMEOUT_MS = 3_600_000;

/** A workflow without its pointers and data, as lists and searches return it. */
export interface WorkflowSummary {
  id: string;
  name: string;
  workflowDefinitionId: string;
  version: number;
  status: WorkflowStatus;
  reference?: string;
  description?: string;
  createTime: Date;
  completeTime?: Date;
  /** Epoch milliseconds; absent means never runnable. */
  nextExecution?: number;
  /** Revision of the stored workflow (1 when created, one more for every persist). */
  revision: number;
}

/** What a list or search is narrowed to; every field given must match. */
export interface WorkflowFilter {
  /** One status or several (any of them); absent or empty: every status. */
  status?: WorkflowStatus | readonly WorkflowStatus[];
  /** Only this workflow definition. */
  definitionId?: string;
  /** Only this exact reference. */
  reference?: string;
  /** Only workflows created at or after this instant. */
  createdAfter?: Date;
  /** Only workflows created before this instant. */
  createdBefore?: Date;
}

export interface ListWorkflowsOptions extends WorkflowFilter {
  /** Summaries per page (default 100, capped at 1000). */
  pageSize?: number;
  /** `nextPageToken` of the previous page, sent with the same filter. */
  pageToken?: string;
}

/** One page of summaries, newest first. */
export interface WorkflowPage {
  items: WorkflowSummary[];
  /** Token of the next page; undefined on the last page. */
  nextPageToken?: string;
}

export interface SearchWorkflowsOptions extends WorkflowFilter {
  /** Matches to skip (default 0). */
  skip?: number;
  /** Matches to return (default 100, capped at 1000). */
  take?: number;
}

/** One window of matches, best first, and how many match in all. */
export interface WorkflowSearchPage {
  items: WorkflowSummary[];
  total: number;
}

export interface PurgeWorkflowsOptions {
  /** Statuses to purge (default COMPLETE and TERMINATED); at least one. */
  statuses?: readonly WorkflowStatus[];
  /** Count what would be deleted, delete nothing (a boolean; anything else is `InvalidArgument`). */
  dryRun?: boolean;
}

/** The visibility operations of a provider (implemented by `GrpcPersistenceProvider`). */
export interface VisibilityOperations {
  /** One page of summaries, newest `createTime` first (ties by id), matching the filter. */
  listWorkflows(options?: ListWorkflowsOptions | null): Promise<WorkflowPage>;
  /**
   * Workflows whose name, reference, description or data contain every word of `text`
   * (`word*` matches a prefix), best match first, with the total. No word: `InvalidArgument`.
   */
  searchWorkflows(text: string, options?: SearchWorkflowsOptions | null): Promise<WorkflowSearchPage>;
  /** Deletes a workflow with its pointers, subscriptions and errors. Missing: `WorkflowNotFound`. */
  deleteWorkflow(id: string): Promise<void>;
  /**
   * Deletes every workflow with one of the statuses whose `completeTime` (or `createTime` when
   * it has none) is before `olderThan`, in small transactions; resolves to how many.
   */
  purgeWorkflows(olderThan: Date, options?: PurgeWorkflowsOptions | null): Promise<number>;
}

/** Runs one call the way the provider runs every call (deadline, error mapping). */
export type CallRunner = <T>(fn: () => Promise<T>) => Promise<T>;

const STATUS_TO_WIRE = new Map<unknown, wf.WorkflowStatus>(
  Object.values(WorkflowStatus).map((name) => [name, wf.WorkflowStatus[name]]),
);

function statusToWire(status: unknown, field: string): wf.WorkflowStatus {
  const value = STATUS_TO_WIRE.get(status);
  if (value === undefined) throw new InvalidArgument(`${field}: not a WorkflowStatus: ${String(status)}`, { field });
  return value;
}

function statusFromWire(value: wf.WorkflowStatus): WorkflowStatus {
  const name = wf.WorkflowStatus[value];
  if (name === undefined || !(name in WorkflowStatus)) throw new WfeError(`server sent an unknown WorkflowStatus ${value}`);
  return name as WorkflowStatus;
}

function statusesToWire(status: WorkflowFilter["status"], field: string): wf.WorkflowStatus[] {
  if (status === undefined) return [];
  const list = typeof status === "string" ? [status] : status;
  if (!Array.isArray(list)) throw new InvalidArgument(`${field}: a WorkflowStatus or an array of them`, { field });
  return [...new Set(list.map((s: unknown, i: number) => statusToWire(s, `${field}[${i}]`)))];
}

function optionalText(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new InvalidArgument(`${field}: expected a string`, { field });
  return value; // a lone surrogate is refused for every call, by the transport (unicode.ts)
}

/**
 * A filter's (or a purge's) instant rounded up to the microsecond: the store drops finer digits,
 * which would turn "at or after T + 0.5 us" into "at or after T" and "before T + 0.5 us" into "before T".
 */
function upToMicros<T extends Timestamp | undefined>(ts: T): T {
  const finer = ts === undefined ? 0 : ts.nanos % 1000;
  if (ts !== undefined && finer !== 0) {
    ts.nanos += 1000 - finer;
    if (ts.nanos >= 1_000_000_000) {
      ts.nanos -= 1_000_000_000;
      ts.seconds += 1n;
    }
  }
  return ts;
}

function filterToWire(filter: WorkflowFilter): vis.WorkflowFilter {
  return create(vis.WorkflowFilterSchema, {
    statuses: statusesToWire(filter.status, "status"),
    workflowDefinitionId: optionalText(filter.definitionId, "definitionId") ?? "",
    reference: optionalText(filter.reference, "reference"),
    createdAfter: upToMicros(toOptionalTimestamp(filter.createdAfter, "createdAfter")),
    createdBefore: upToMicros(toOptionalTimestamp(filter.createdBefore, "createdBefore")),
  });
}

function count(value: number | undefined, fallback: number, min: number, field: string): number {
  const n = value ?? fallback;
  if (!Number.isSafeInteger(n) || n < min || n > 2 ** 31 - 1) {
    throw new InvalidArgument(`${field} must be an integer >= ${min}, got ${String(value)}`, { field });
  }
  return n;
}

/** A page size or take: an integer from 1, any larger one capped to `MAX_PAGE_SIZE` (as Python caps it). */
function size(value: number | undefined, field: string): number {
  const n = value ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(n) || n < 1) {
    throw new InvalidArgument(`${field} must be an integer >= 1, got ${String(value)}`, { field });
  }
  return Math.min(n, MAX_PAGE_SIZE);
}

/** @internal A summary message as the model. */
export function summaryFromWire(s: vis.WorkflowSummary): WorkflowSummary {
  if (s.createTime === undefined) throw new WfeError("server sent a summary without create_time");
  const summary: WorkflowSummary = {
    id: s.id,
    name: s.name,
    workflowDefinitionId: s.workflowDefinitionId,
    version: s.version,
    status: statusFromWire(s.status),
    createTime: fromTimestamp(s.createTime),
    revision: Number(s.revision),
  };
  if (s.reference !== undefined) summary.reference = s.reference;
  if (s.description !== undefined) summary.description = s.description;
  const completeTime = fromOptionalTimestamp(s.completeTime);
  if (completeTime !== undefined) summary.completeTime = completeTime;
  if (s.nextExecution !== undefined) {
    if (s.nextExecution > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new WfeError(`epoch milliseconds ${s.nextExecution} exceed what a JavaScript number holds exactly`);
    }
    summary.nextExecution = Number(s.nextExecution);
  }
  return summary;
}

/** @internal The visibility operations over a VisibilityService client, each through `run`. */
export function visibilityOperations(client: Client<typeof vis.VisibilityService>, run: CallRunner): VisibilityOperations {
  return {
    async listWorkflows(options: ListWorkflowsOptions | null = {}): Promise<WorkflowPage> {
      options ??= {}; // null (from JavaScript): the defaults, as undefined
      const request = {
        filter: filterToWire(options),
        pageSize: size(options.pageSize, "pageSize"),
        pageToken: optionalText(options.pageToken, "pageToken") ?? "",
      };
      const response = await run(() => client.listWorkflows(request));
      const page: WorkflowPage = { items: response.workflows.map(summaryFromWire) };
      if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
      return page;
    },

    async searchWorkflows(text: string, options: SearchWorkflowsOptions | null = {}): Promise<WorkflowSearchPage> {
      options ??= {};
      if (typeof text !== "string") throw new InvalidArgument("query: expected a string", { field: "query" });
      const request = {
        query: text,
        filter: filterToWire(options),
        skip: count(options.skip, 0, 0, "skip"),
        take: size(options.take, "take"),
      };
      const response = await run(() => client.searchWorkflows(request));
      return { items: response.workflows.map(summaryFromWire), total: Number(response.total) };
    },

    async deleteWorkflow(id: string): Promise<void> {
      if (typeof id !== "string") throw new InvalidArgument("id: expected a string", { field: "id" });
      // A lone surrogate (sent as U+FFFD, the delete of another workflow) is refused by the transport (unicode.ts).
      await run(() => client.deleteWorkflow({ id }));
    },

    async purgeWorkflows(olderThan: Date, options: PurgeWorkflowsOptions | null = {}): Promise<number> {
      options ??= {};
      const statuses = statusesToWire(options.statuses ?? PURGED_BY_DEFAULT, "statuses");
      if (statuses.length === 0) {
        throw new InvalidArgument("statuses: name at least one status to purge", { field: "statuses" });
      }
      // Anything but a boolean is refused: an untyped caller's "true" or 1 must not purge for real.
      const dryRun = options.dryRun ?? false;
      if (typeof dryRun !== "boolean") {
        throw new InvalidArgument(`dryRun: expected a boolean, got ${typeof dryRun}`, { field: "dryRun" });
      }
      const request = { olderThan: upToMicros(toTimestamp(olderThan, "olderThan")), statuses, dryRun };
      const response = await run(() => client.purgeWorkflows(request, { timeoutMs: PURGE_TIMEOUT_MS }));
      return Number(response.deleted);
    },
  };
}
