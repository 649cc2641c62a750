// The TypeScript side of the interop tests (tests/test_interop.py at the root of the repository),
// a small program on the compiled package (dist/, `npm run build`):
//
//   node scripts/interop.mjs write ADDR FIXTURE.json
//   node scripts/interop.mjs read ADDR KIND:ID ...
//
// `write` creates the records of FIXTURE.json (canonical JSON, below) through
// GrpcPersistenceProvider (createNewWorkflow, createEvent, createEventSubscription). `read` reads
// the named records back (KIND is workflow, event or subscription) and prints them as canonical
// JSON on one line: {"workflows": [...], "workflows_batch": [...], "events": [...],
// "subscriptions": [...]} in the order of the arguments (`workflows` one getWorkflowInstance per id,
// `workflows_batch` one getWorkflowInstances call).
//
// Canonical JSON, the same in the Python and Rust programs: snake_case field names as in WFE, every
// field present (an absent optional field is null), instants as RFC 3339 UTC strings with exactly
// six fractional digits, enums as their upper-case names, JSON values embedded as JSON. The fixture
// is parsed with the package's own bigint-aware parseJson and printed with its stringifyJson, so
// 64-bit integers stay exact in both directions.
import { readFileSync } from "node:fs";
import { GrpcPersistenceProvider, PreciseDate, parseJson, stringifyJson } from "../dist/src/index.js";

const INSTANT = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})(\d{3})Z$/;

function instant(text) {
  if (text === null) return undefined;
  const m = INSTANT.exec(text);
  if (m === null) throw new Error(`not a canonical instant: ${text}`);
  const millis = Date.parse(`${m[1]}.${m[2]}Z`);
  return new PreciseDate(millis, Number(m[3]) * 1000);
}

function render(date) {
  if (date === undefined || date === null) return null;
  const micros = date instanceof PreciseDate ? date.getMicroseconds() : 0;
  return `${date.toISOString().slice(0, -1)}${String(micros).padStart(3, "0")}Z`;
}

const opt = (value) => (value === null ? undefined : value);
const nul = (value) => (value === undefined ? null : value);
const num = (value) => (typeof value === "bigint" ? Number(value) : value);

function pointerFrom(c) {
  return {
    id: c.id,
    stepId: num(c.step_id),
    active: c.active,
    status: c.status,
    sleepUntil: instant(c.sleep_until),
    persistenceData: opt(c.persistence_data),
    startTime: instant(c.start_time),
    endTime: instant(c.end_time),
    eventName: opt(c.event_name),
    eventKey: opt(c.event_key),
    eventPublished: c.event_published,
    eventData: opt(c.event_data),
    stepName: opt(c.step_name),
    retryCount: num(c.retry_count),
    children: [...c.children],
    contextItem: opt(c.context_item),
    predecessorId: opt(c.predecessor_id),
    outcome: opt(c.outcome),
    scope: [...c.scope],
    extensionAttributes: { ...c.extension_attributes },
  };
}

function workflowFrom(c) {
  return {
    id: c.id,
    name: c.name,
    rootWorkflowId: opt(c.root_workflow_id),
    workflowDefinitionId: c.workflow_definition_id,
    version: num(c.version),
    description: opt(c.description),
    reference: opt(c.reference),
    executionPointers: c.execution_pointers.map(pointerFrom),
    nextExecution: c.next_execution === null ? undefined : num(c.next_execution),
    status: c.status,
    data: c.data,
    createTime: instant(c.create_time),
    completeTime: instant(c.complete_time),
  };
}

function eventFrom(c) {
  return {
    id: c.id,
    eventName: c.event_name,
    eventKey: c.event_key,
    eventData: c.event_data,
    eventTime: instant(c.event_time),
    isProcessed: c.is_processed,
  };
}

function subscriptionFrom(c) {
  return {
    id: c.id,
    workflowId: c.workflow_id,
    stepId: num(c.step_id),
    executionPointerId: c.execution_pointer_id,
    eventName: c.event_name,
    eventKey: c.event_key,
    subscribeAsOf: instant(c.subscribe_as_of),
    subscriptionData: opt(c.subscription_data),
    externalToken: opt(c.external_token),
    externalWorkerId: opt(c.external_worker_id),
    externalTokenExpiry: instant(c.external_token_expiry),
  };
}

function pointerCanonical(p) {
  return {
    id: p.id,
    step_id: p.stepId,
    active: p.active,
    status: p.status,
    sleep_until: render(p.sleepUntil),
    persistence_data: nul(p.persistenceData),
    start_time: render(p.startTime),
    end_time: render(p.endTime),
    event_name: nul(p.eventName),
    event_key: nul(p.eventKey),
    event_published: p.eventPublished,
    event_data: nul(p.eventData),
    step_name: nul(p.stepName),
    retry_count: p.retryCount,
    children: [...p.children],
    context_item: nul(p.contextItem),
    predecessor_id: nul(p.predecessorId),
    outcome: nul(p.outcome),
    scope: [...p.scope],
    extension_attributes: { ...p.extensionAttributes },
  };
}

function workflowCanonical(w) {
  return {
    id: w.id,
    name: w.name,
    root_workflow_id: nul(w.rootWorkflowId),
    workflow_definition_id: w.workflowDefinitionId,
    version: w.version,
    description: nul(w.description),
    reference: nul(w.reference),
    execution_pointers: w.executionPointers.map(pointerCanonical),
    next_execution: nul(w.nextExecution),
    status: w.status,
    data: w.data,
    create_time: render(w.createTime),
    complete_time: render(w.completeTime),
  };
}

function eventCanonical(e) {
  return {
    id: e.id,
    event_name: e.eventName,
    event_key: e.eventKey,
    event_data: e.eventData,
    event_time: render(e.eventTime),
    is_processed: e.isProcessed,
  };
}

function subscriptionCanonical(s) {
  return {
    id: s.id,
    workflow_id: s.workflowId,
    step_id: s.stepId,
    execution_pointer_id: s.executionPointerId,
    event_name: s.eventName,
    event_key: s.eventKey,
    subscribe_as_of: render(s.subscribeAsOf),
    subscription_data: nul(s.subscriptionData),
    external_token: nul(s.externalToken),
    external_worker_id: nul(s.externalWorkerId),
    external_token_expiry: render(s.externalTokenExpiry),
  };
}

async function write(address, fixturePath) {
  const fixture = parseJson(readFileSync(fixturePath, "utf8"), fixturePath);
  const store = await GrpcPersistenceProvider.connect(address);
  try {
    for (const w of fixture.workflows) console.log("workflow", await store.createNewWorkflow(workflowFrom(w)));
    for (const e of fixture.events) console.log("event", await store.createEvent(eventFrom(e)));
    for (const s of fixture.subscriptions) {
      console.log("subscription", await store.createEventSubscription(subscriptionFrom(s)));
    }
  } finally {
    store.close();
  }
}

async function read(address, refs) {
  const out = { workflows: [], workflows_batch: [], events: [], subscriptions: [] };
  const workflowIds = [];
  const store = await GrpcPersistenceProvider.connect(address);
  try {
    for (const ref of refs) {
      const at = ref.indexOf(":");
      const [kind, id] = at < 0 ? [ref, ""] : [ref.slice(0, at), ref.slice(at + 1)];
      if (kind === "workflow") {
        workflowIds.push(id);
        out.workflows.push(workflowCanonical(await store.getWorkflowInstance(id)));
      } else if (kind === "event") {
        out.events.push(eventCanonical(await store.getEvent(id)));
      } else if (kind === "subscription") {
        out.subscriptions.push(subscriptionCanonical(await store.getSubscription(id)));
      } else {
        throw new Error(`unknown record kind in ${ref}`);
      }
    }
    out.workflows_batch = (await store.getWorkflowInstances(workflowIds)).map(workflowCanonical);
  } finally {
    store.close();
  }
  process.stdout.write(`${stringifyJson(out)}\n`);
}

const [command, address, ...rest] = process.argv.slice(2);
if (command === "write" && address !== undefined && rest.length === 1) {
  await write(address, rest[0]);
} else if (command === "read" && address !== undefined) {
  await read(address, rest);
} else {
  console.error("usage: interop.mjs write ADDR FIXTURE.json | read ADDR KIND:ID ...");
  process.exit(2);
}
