//! The Rust side of the interop tests (`tests/test_interop.py` at the root of the repository).
//!
//! ```text
//! cargo run --example interop -- write ADDR FIXTURE.json
//! cargo run --example interop -- read ADDR KIND:ID ...
//! ```
//!
//! `write` creates the records of FIXTURE.json (canonical JSON, below) through
//! `GrpcPersistenceProvider` (`create_new_workflow`, `create_event`, `create_event_subscription`).
//! `read` reads the named records back (KIND is `workflow`, `event` or `subscription`) and prints
//! them as canonical JSON on one line: `{"workflows": [...], "workflows_batch": [...],
//! "events": [...], "subscriptions": [...]}` in the order of the arguments (`workflows` one
//! `get_workflow_instance` per id, `workflows_batch` one `get_workflow_instances` call).
//!
//! Canonical JSON, the same in the Python and TypeScript programs: snake_case field names as in
//! WFE, every field present (an absent optional field is `null`), instants as RFC 3339 UTC strings
//! with exactly six fractional digits, enums as their upper-case names, JSON values embedded as
//! JSON. The mapping is written out field by field (not serde's derive), so a field of the models
//! this program does not know about cannot slip through unnoticed: the test compares every field.

use std::collections::HashMap;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use wfe_core::models::{
    Event, EventSubscription, ExecutionPointer, PointerStatus, WorkflowInstance, WorkflowStatus,
};
use wfe_core::traits::{EventRepository, SubscriptionRepository, WorkflowRepository};
use wfe_grpc::GrpcPersistenceProvider;

type Fallible<T> = Result<T, String>;

// ── canonical JSON -> models ────────────────────────────────────────────

fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Fallible<&'a Value> {
    o.get(name)
        .ok_or_else(|| format!("fixture record has no field {name:?}"))
}

fn string(o: &Map<String, Value>, name: &str) -> Fallible<String> {
    field(o, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{name} is not a string"))
}

fn opt_string(o: &Map<String, Value>, name: &str) -> Fallible<Option<String>> {
    match field(o, name)? {
        Value::Null => Ok(None),
        _ => string(o, name).map(Some),
    }
}

fn uint(o: &Map<String, Value>, name: &str) -> Fallible<u64> {
    field(o, name)?
        .as_u64()
        .ok_or_else(|| format!("{name} is not an unsigned integer"))
}

fn boolean(o: &Map<String, Value>, name: &str) -> Fallible<bool> {
    field(o, name)?
        .as_bool()
        .ok_or_else(|| format!("{name} is not a boolean"))
}

fn opt_json(o: &Map<String, Value>, name: &str) -> Fallible<Option<Value>> {
    Ok(match field(o, name)? {
        Value::Null => None,
        v => Some(v.clone()),
    })
}

fn strings(o: &Map<String, Value>, name: &str) -> Fallible<Vec<String>> {
    field(o, name)?
        .as_array()
        .ok_or_else(|| format!("{name} is not a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{name} holds a non-string"))
        })
        .collect()
}

fn parse_instant(text: &str) -> Fallible<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad instant {text:?}: {e}"))
}

fn instant(o: &Map<String, Value>, name: &str) -> Fallible<DateTime<Utc>> {
    parse_instant(&string(o, name)?)
}

fn opt_instant(o: &Map<String, Value>, name: &str) -> Fallible<Option<DateTime<Utc>>> {
    opt_string(o, name)?
        .as_deref()
        .map(parse_instant)
        .transpose()
}

fn object(v: &Value) -> Fallible<&Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| "fixture record is not an object".to_string())
}

fn workflow_status(name: &str) -> Fallible<WorkflowStatus> {
    Ok(match name {
        "RUNNABLE" => WorkflowStatus::Runnable,
        "SUSPENDED" => WorkflowStatus::Suspended,
        "COMPLETE" => WorkflowStatus::Complete,
        "TERMINATED" => WorkflowStatus::Terminated,
        other => return Err(format!("unknown workflow status {other:?}")),
    })
}

fn pointer_status(name: &str) -> Fallible<PointerStatus> {
    Ok(match name {
        "PENDING" => PointerStatus::Pending,
        "RUNNING" => PointerStatus::Running,
        "COMPLETE" => PointerStatus::Complete,
        "SKIPPED" => PointerStatus::Skipped,
        "SLEEPING" => PointerStatus::Sleeping,
        "WAITING_FOR_EVENT" => PointerStatus::WaitingForEvent,
        "FAILED" => PointerStatus::Failed,
        "COMPENSATED" => PointerStatus::Compensated,
        "CANCELLED" => PointerStatus::Cancelled,
        "PENDING_PREDECESSOR" => PointerStatus::PendingPredecessor,
        other => return Err(format!("unknown pointer status {other:?}")),
    })
}

fn pointer_from(v: &Value) -> Fallible<ExecutionPointer> {
    let o = object(v)?;
    let extension_attributes: HashMap<String, Value> = field(o, "extension_attributes")?
        .as_object()
        .ok_or("extension_attributes is not an object")?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(ExecutionPointer {
        id: string(o, "id")?,
        step_id: usize::try_from(uint(o, "step_id")?).map_err(|e| e.to_string())?,
        active: boolean(o, "active")?,
        status: pointer_status(&string(o, "status")?)?,
        sleep_until: opt_instant(o, "sleep_until")?,
        persistence_data: opt_json(o, "persistence_data")?,
        start_time: opt_instant(o, "start_time")?,
        end_time: opt_instant(o, "end_time")?,
        event_name: opt_string(o, "event_name")?,
        event_key: opt_string(o, "event_key")?,
        event_published: boolean(o, "event_published")?,
        event_data: opt_json(o, "event_data")?,
        step_name: opt_string(o, "step_name")?,
        retry_count: u32::try_from(uint(o, "retry_count")?).map_err(|e| e.to_string())?,
        children: strings(o, "children")?,
        context_item: opt_json(o, "context_item")?,
        predecessor_id: opt_string(o, "predecessor_id")?,
        outcome: opt_json(o, "outcome")?,
        scope: strings(o, "scope")?,
        extension_attributes,
    })
}

fn workflow_from(v: &Value) -> Fallible<WorkflowInstance> {
    let o = object(v)?;
    let next_execution = match field(o, "next_execution")? {
        Value::Null => None,
        n => Some(n.as_i64().ok_or("next_execution is not an int64")?),
    };
    Ok(WorkflowInstance {
        id: string(o, "id")?,
        name: string(o, "name")?,
        root_workflow_id: opt_string(o, "root_workflow_id")?,
        workflow_definition_id: string(o, "workflow_definition_id")?,
        version: u32::try_from(uint(o, "version")?).map_err(|e| e.to_string())?,
        description: opt_string(o, "description")?,
        reference: opt_string(o, "reference")?,
        execution_pointers: field(o, "execution_pointers")?
            .as_array()
            .ok_or("execution_pointers is not a list")?
            .iter()
            .map(pointer_from)
            .collect::<Fallible<_>>()?,
        next_execution,
        status: workflow_status(&string(o, "status")?)?,
        data: field(o, "data")?.clone(),
        create_time: instant(o, "create_time")?,
        complete_time: opt_instant(o, "complete_time")?,
    })
}

fn event_from(v: &Value) -> Fallible<Event> {
    let o = object(v)?;
    Ok(Event {
        id: string(o, "id")?,
        event_name: string(o, "event_name")?,
        event_key: string(o, "event_key")?,
        event_data: field(o, "event_data")?.clone(),
        event_time: instant(o, "event_time")?,
        is_processed: boolean(o, "is_processed")?,
    })
}

fn subscription_from(v: &Value) -> Fallible<EventSubscription> {
    let o = object(v)?;
    Ok(EventSubscription {
        id: string(o, "id")?,
        workflow_id: string(o, "workflow_id")?,
        step_id: usize::try_from(uint(o, "step_id")?).map_err(|e| e.to_string())?,
        execution_pointer_id: string(o, "execution_pointer_id")?,
        event_name: string(o, "event_name")?,
        event_key: string(o, "event_key")?,
        subscribe_as_of: instant(o, "subscribe_as_of")?,
        subscription_data: opt_json(o, "subscription_data")?,
        external_token: opt_string(o, "external_token")?,
        external_worker_id: opt_string(o, "external_worker_id")?,
        external_token_expiry: opt_instant(o, "external_token_expiry")?,
    })
}

// ── models -> canonical JSON ────────────────────────────────────────────

fn render(t: &DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn opt_render(t: &Option<DateTime<Utc>>) -> Value {
    t.as_ref().map_or(Value::Null, render)
}

fn opt_value(v: &Option<Value>) -> Value {
    v.clone().unwrap_or(Value::Null)
}

fn workflow_status_name(s: WorkflowStatus) -> &'static str {
    match s {
        WorkflowStatus::Runnable => "RUNNABLE",
        WorkflowStatus::Suspended => "SUSPENDED",
        WorkflowStatus::Complete => "COMPLETE",
        WorkflowStatus::Terminated => "TERMINATED",
    }
}

fn pointer_status_name(s: PointerStatus) -> &'static str {
    match s {
        PointerStatus::Pending => "PENDING",
        PointerStatus::Running => "RUNNING",
        PointerStatus::Complete => "COMPLETE",
        PointerStatus::Skipped => "SKIPPED",
        PointerStatus::Sleeping => "SLEEPING",
        PointerStatus::WaitingForEvent => "WAITING_FOR_EVENT",
        PointerStatus::Failed => "FAILED",
        PointerStatus::Compensated => "COMPENSATED",
        PointerStatus::Cancelled => "CANCELLED",
        PointerStatus::PendingPredecessor => "PENDING_PREDECESSOR",
    }
}

fn pointer_canonical(p: &ExecutionPointer) -> Value {
    let extension_attributes: Map<String, Value> = p
        .extension_attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "id": p.id,
        "step_id": p.step_id,
        "active": p.active,
        "status": pointer_status_name(p.status),
        "sleep_until": opt_render(&p.sleep_until),
        "persistence_data": opt_value(&p.persistence_data),
        "start_time": opt_render(&p.start_time),
        "end_time": opt_render(&p.end_time),
        "event_name": p.event_name,
        "event_key": p.event_key,
        "event_published": p.event_published,
        "event_data": opt_value(&p.event_data),
        "step_name": p.step_name,
        "retry_count": p.retry_count,
        "children": p.children,
        "context_item": opt_value(&p.context_item),
        "predecessor_id": p.predecessor_id,
        "outcome": opt_value(&p.outcome),
        "scope": p.scope,
        "extension_attributes": extension_attributes,
    })
}

fn workflow_canonical(w: &WorkflowInstance) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "root_workflow_id": w.root_workflow_id,
        "workflow_definition_id": w.workflow_definition_id,
        "version": w.version,
        "description": w.description,
        "reference": w.reference,
        "execution_pointers": w.execution_pointers.iter().map(pointer_canonical).collect::<Vec<_>>(),
        "next_execution": w.next_execution,
        "status": workflow_status_name(w.status),
        "data": w.data,
        "create_time": render(&w.create_time),
        "complete_time": opt_render(&w.complete_time),
    })
}

fn event_canonical(e: &Event) -> Value {
    json!({
        "id": e.id,
        "event_name": e.event_name,
        "event_key": e.event_key,
        "event_data": e.event_data,
        "event_time": render(&e.event_time),
        "is_processed": e.is_processed,
    })
}

fn subscription_canonical(s: &EventSubscription) -> Value {
    json!({
        "id": s.id,
        "workflow_id": s.workflow_id,
        "step_id": s.step_id,
        "execution_pointer_id": s.execution_pointer_id,
        "event_name": s.event_name,
        "event_key": s.event_key,
        "subscribe_as_of": render(&s.subscribe_as_of),
        "subscription_data": opt_value(&s.subscription_data),
        "external_token": s.external_token,
        "external_worker_id": s.external_worker_id,
        "external_token_expiry": opt_render(&s.external_token_expiry),
    })
}

// ── the commands ────────────────────────────────────────────────────────

fn list<'a>(fixture: &'a Value, name: &str) -> Fallible<&'a Vec<Value>> {
    fixture[name]
        .as_array()
        .ok_or_else(|| format!("fixture has no list {name:?}"))
}

async fn write(address: &str, fixture_path: &str) -> Fallible<()> {
    let text = std::fs::read_to_string(fixture_path).map_err(|e| format!("{fixture_path}: {e}"))?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| format!("{fixture_path}: {e}"))?;
    let store = GrpcPersistenceProvider::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    for w in list(&fixture, "workflows")? {
        let id = store
            .create_new_workflow(&workflow_from(w)?)
            .await
            .map_err(|e| e.to_string())?;
        println!("workflow {id}");
    }
    for e in list(&fixture, "events")? {
        let id = store
            .create_event(&event_from(e)?)
            .await
            .map_err(|e| e.to_string())?;
        println!("event {id}");
    }
    for s in list(&fixture, "subscriptions")? {
        let id = store
            .create_event_subscription(&subscription_from(s)?)
            .await
            .map_err(|e| e.to_string())?;
        println!("subscription {id}");
    }
    Ok(())
}

async fn read(address: &str, refs: &[String]) -> Fallible<()> {
    let store = GrpcPersistenceProvider::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut workflows, mut events, mut subscriptions) = (Vec::new(), Vec::new(), Vec::new());
    let mut workflow_ids = Vec::new();
    for r in refs {
        let (kind, id) = r
            .split_once(':')
            .ok_or_else(|| format!("not KIND:ID: {r:?}"))?;
        match kind {
            "workflow" => {
                workflow_ids.push(id.to_string());
                let w = store
                    .get_workflow_instance(id)
                    .await
                    .map_err(|e| e.to_string())?;
                workflows.push(workflow_canonical(&w));
            }
            "event" => {
                let e = store.get_event(id).await.map_err(|e| e.to_string())?;
                events.push(event_canonical(&e));
            }
            "subscription" => {
                let s = store
                    .get_subscription(id)
                    .await
                    .map_err(|e| e.to_string())?;
                subscriptions.push(subscription_canonical(&s));
            }
            other => return Err(format!("unknown record kind {other:?}")),
        }
    }
    let batch = store
        .get_workflow_instances(&workflow_ids)
        .await
        .map_err(|e| e.to_string())?;
    let out = json!({
        "workflows": workflows,
        "workflows_batch": batch.iter().map(workflow_canonical).collect::<Vec<_>>(),
        "events": events,
        "subscriptions": subscriptions,
    });
    println!("{out}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, address, fixture] if cmd == "write" => write(address, fixture).await,
        [cmd, address, refs @ ..] if cmd == "read" => read(address, refs).await,
        _ => Err("usage: interop write ADDR FIXTURE.json | read ADDR KIND:ID ...".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("interop: {message}");
            ExitCode::FAILURE
        }
    }
}
