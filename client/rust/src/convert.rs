//! Conversions between the `wfe_core` models and the wire messages of `wfe.persistence.v1`.
//!
//! Conventions of the contract (see `protos/wfe/persistence/v1/workflows.proto`):
//! - JSON values travel as JSON text in `string` fields (serde_json both ways, exact);
//! - instants travel as `google.protobuf.Timestamp` (the server keeps microseconds);
//! - `next_execution` and `execute_time` are int64 epoch milliseconds;
//! - enums have an `UNSPECIFIED = 0` member that is never valid.
//!
//! Everything here is pure: no I/O, so it is unit tested below without a server.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use wfe_core::WfeError;
use wfe_core::models::{
    CommandName, Event, EventSubscription, ExecutionError, ExecutionPointer, LifecycleEvent,
    LifecycleEventType, PointerStatus, QueueType, ScheduledCommand, WorkflowInstance,
    WorkflowStatus,
};

use crate::pb;

type Result<T> = std::result::Result<T, WfeError>;

fn bad_data(what: impl std::fmt::Display) -> WfeError {
    WfeError::Persistence(format!("malformed data from wfe-sqlite server: {what}"))
}

// ── JSON ────────────────────────────────────────────────────────────────

/// Encodes a JSON value as the JSON text the contract carries.
pub fn json_to_wire(value: &serde_json::Value) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

/// Decodes the JSON text of a wire field.
pub fn json_from_wire(text: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(text)?)
}

fn opt_json_to_wire(value: &Option<serde_json::Value>) -> Result<Option<String>> {
    value.as_ref().map(json_to_wire).transpose()
}

fn opt_json_from_wire(text: &Option<String>) -> Result<Option<serde_json::Value>> {
    text.as_deref().map(json_from_wire).transpose()
}

// ── Instants ────────────────────────────────────────────────────────────

/// Converts an instant to a protobuf Timestamp (nanosecond field as chrono has it; the
/// server truncates to microseconds).
pub fn ts_to_wire(t: &DateTime<Utc>) -> Timestamp {
    // chrono represents a leap second as nanos >= 1e9; protobuf does not allow that.
    let nanos = t.timestamp_subsec_nanos().min(999_999_999);
    Timestamp {
        seconds: t.timestamp(),
        nanos: nanos as i32,
    }
}

/// Converts a protobuf Timestamp to an instant.
pub fn ts_from_wire(t: &Timestamp) -> Result<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(bad_data(format!(
            "timestamp nanos out of range: {}",
            t.nanos
        )));
    }
    DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| bad_data(format!("timestamp out of range: {}s", t.seconds)))
}

fn opt_ts_from_wire(t: &Option<Timestamp>) -> Result<Option<DateTime<Utc>>> {
    t.as_ref().map(ts_from_wire).transpose()
}

fn required_ts(t: &Option<Timestamp>, field: &str) -> Result<DateTime<Utc>> {
    match t {
        Some(t) => ts_from_wire(t),
        None => Err(bad_data(format!("required field `{field}` is missing"))),
    }
}

/// Converts a chrono duration (lease length) to a protobuf Duration.
pub fn duration_to_wire(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

// ── Enums ───────────────────────────────────────────────────────────────

pub fn workflow_status_to_wire(s: WorkflowStatus) -> pb::WorkflowStatus {
    match s {
        WorkflowStatus::Runnable => pb::WorkflowStatus::Runnable,
        WorkflowStatus::Suspended => pb::WorkflowStatus::Suspended,
        WorkflowStatus::Complete => pb::WorkflowStatus::Complete,
        WorkflowStatus::Terminated => pb::WorkflowStatus::Terminated,
    }
}

pub fn workflow_status_from_wire(v: i32) -> Result<WorkflowStatus> {
    match pb::WorkflowStatus::try_from(v) {
        Ok(pb::WorkflowStatus::Runnable) => Ok(WorkflowStatus::Runnable),
        Ok(pb::WorkflowStatus::Suspended) => Ok(WorkflowStatus::Suspended),
        Ok(pb::WorkflowStatus::Complete) => Ok(WorkflowStatus::Complete),
        Ok(pb::WorkflowStatus::Terminated) => Ok(WorkflowStatus::Terminated),
        Ok(pb::WorkflowStatus::Unspecified) | Err(_) => {
            Err(bad_data(format!("workflow status {v}")))
        }
    }
}

pub fn pointer_status_to_wire(s: PointerStatus) -> pb::PointerStatus {
    match s {
        PointerStatus::Pending => pb::PointerStatus::Pending,
        PointerStatus::Running => pb::PointerStatus::Running,
        PointerStatus::Complete => pb::PointerStatus::Complete,
        PointerStatus::Skipped => pb::PointerStatus::Skipped,
        PointerStatus::Sleeping => pb::PointerStatus::Sleeping,
        PointerStatus::WaitingForEvent => pb::PointerStatus::WaitingForEvent,
        PointerStatus::Failed => pb::PointerStatus::Failed,
        PointerStatus::Compensated => pb::PointerStatus::Compensated,
        PointerStatus::Cancelled => pb::PointerStatus::Cancelled,
        PointerStatus::PendingPredecessor => pb::PointerStatus::PendingPredecessor,
    }
}

pub fn pointer_status_from_wire(v: i32) -> Result<PointerStatus> {
    Ok(match pb::PointerStatus::try_from(v) {
        Ok(pb::PointerStatus::Pending) => PointerStatus::Pending,
        Ok(pb::PointerStatus::Running) => PointerStatus::Running,
        Ok(pb::PointerStatus::Complete) => PointerStatus::Complete,
        Ok(pb::PointerStatus::Skipped) => PointerStatus::Skipped,
        Ok(pb::PointerStatus::Sleeping) => PointerStatus::Sleeping,
        Ok(pb::PointerStatus::WaitingForEvent) => PointerStatus::WaitingForEvent,
        Ok(pb::PointerStatus::Failed) => PointerStatus::Failed,
        Ok(pb::PointerStatus::Compensated) => PointerStatus::Compensated,
        Ok(pb::PointerStatus::Cancelled) => PointerStatus::Cancelled,
        Ok(pb::PointerStatus::PendingPredecessor) => PointerStatus::PendingPredecessor,
        Ok(pb::PointerStatus::Unspecified) | Err(_) => {
            return Err(bad_data(format!("pointer status {v}")));
        }
    })
}

pub fn command_name_to_wire(c: &CommandName) -> pb::CommandName {
    match c {
        CommandName::ProcessWorkflow => pb::CommandName::ProcessWorkflow,
        CommandName::ProcessEvent => pb::CommandName::ProcessEvent,
    }
}

pub fn command_name_from_wire(v: i32) -> Result<CommandName> {
    match pb::CommandName::try_from(v) {
        Ok(pb::CommandName::ProcessWorkflow) => Ok(CommandName::ProcessWorkflow),
        Ok(pb::CommandName::ProcessEvent) => Ok(CommandName::ProcessEvent),
        Ok(pb::CommandName::Unspecified) | Err(_) => Err(bad_data(format!("command name {v}"))),
    }
}

// ── Step ids ────────────────────────────────────────────────────────────

fn step_id_to_wire(step_id: usize) -> Result<u32> {
    u32::try_from(step_id).map_err(|_| {
        WfeError::Persistence(format!("step_id {step_id} does not fit the wire's uint32"))
    })
}

// ── Workflows ───────────────────────────────────────────────────────────

pub fn pointer_to_wire(p: &ExecutionPointer) -> Result<pb::ExecutionPointer> {
    let extension_attributes = p
        .extension_attributes
        .iter()
        .map(|(k, v)| Ok((k.clone(), json_to_wire(v)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(pb::ExecutionPointer {
        id: p.id.clone(),
        step_id: step_id_to_wire(p.step_id)?,
        active: p.active,
        status: pointer_status_to_wire(p.status) as i32,
        sleep_until: p.sleep_until.as_ref().map(ts_to_wire),
        persistence_data: opt_json_to_wire(&p.persistence_data)?,
        start_time: p.start_time.as_ref().map(ts_to_wire),
        end_time: p.end_time.as_ref().map(ts_to_wire),
        event_name: p.event_name.clone(),
        event_key: p.event_key.clone(),
        event_published: p.event_published,
        event_data: opt_json_to_wire(&p.event_data)?,
        step_name: p.step_name.clone(),
        retry_count: p.retry_count,
        children: p.children.clone(),
        context_item: opt_json_to_wire(&p.context_item)?,
        predecessor_id: p.predecessor_id.clone(),
        outcome: opt_json_to_wire(&p.outcome)?,
        scope: p.scope.clone(),
        extension_attributes,
    })
}

pub fn pointer_from_wire(p: pb::ExecutionPointer) -> Result<ExecutionPointer> {
    let extension_attributes = p
        .extension_attributes
        .iter()
        .map(|(k, v)| Ok((k.clone(), json_from_wire(v)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(ExecutionPointer {
        status: pointer_status_from_wire(p.status)?,
        sleep_until: opt_ts_from_wire(&p.sleep_until)?,
        persistence_data: opt_json_from_wire(&p.persistence_data)?,
        start_time: opt_ts_from_wire(&p.start_time)?,
        end_time: opt_ts_from_wire(&p.end_time)?,
        event_data: opt_json_from_wire(&p.event_data)?,
        context_item: opt_json_from_wire(&p.context_item)?,
        outcome: opt_json_from_wire(&p.outcome)?,
        extension_attributes,
        id: p.id,
        step_id: p.step_id as usize,
        active: p.active,
        event_name: p.event_name,
        event_key: p.event_key,
        event_published: p.event_published,
        step_name: p.step_name,
        retry_count: p.retry_count,
        children: p.children,
        predecessor_id: p.predecessor_id,
        scope: p.scope,
    })
}

pub fn workflow_to_wire(w: &WorkflowInstance) -> Result<pb::WorkflowInstance> {
    Ok(pb::WorkflowInstance {
        // Ignored on input: the persist requests carry the revision they expect.
        revision: 0,
        id: w.id.clone(),
        name: w.name.clone(),
        root_workflow_id: w.root_workflow_id.clone(),
        workflow_definition_id: w.workflow_definition_id.clone(),
        version: w.version,
        description: w.description.clone(),
        reference: w.reference.clone(),
        execution_pointers: w
            .execution_pointers
            .iter()
            .map(pointer_to_wire)
            .collect::<Result<_>>()?,
        next_execution: w.next_execution,
        status: workflow_status_to_wire(w.status) as i32,
        data: json_to_wire(&w.data)?,
        create_time: Some(ts_to_wire(&w.create_time)),
        complete_time: w.complete_time.as_ref().map(ts_to_wire),
    })
}

pub fn workflow_from_wire(w: pb::WorkflowInstance) -> Result<WorkflowInstance> {
    Ok(WorkflowInstance {
        status: workflow_status_from_wire(w.status)?,
        data: json_from_wire(&w.data)?,
        create_time: required_ts(&w.create_time, "create_time")?,
        complete_time: opt_ts_from_wire(&w.complete_time)?,
        execution_pointers: w
            .execution_pointers
            .into_iter()
            .map(pointer_from_wire)
            .collect::<Result<_>>()?,
        id: w.id,
        name: w.name,
        root_workflow_id: w.root_workflow_id,
        workflow_definition_id: w.workflow_definition_id,
        version: w.version,
        description: w.description,
        reference: w.reference,
        next_execution: w.next_execution,
    })
}

// ── Queues and lifecycle events ─────────────────────────────────────────

pub fn queue_type_to_wire(q: QueueType) -> pb::QueueType {
    match q {
        QueueType::Workflow => pb::QueueType::Workflow,
        QueueType::Event => pb::QueueType::Event,
        QueueType::Index => pb::QueueType::Index,
    }
}

pub fn lifecycle_event_to_wire(e: &LifecycleEvent) -> Result<pb::LifecycleEvent> {
    use pb::LifecycleEventType as T;
    let mut wire = pb::LifecycleEvent {
        event_time: Some(ts_to_wire(&e.event_time_utc)),
        workflow_instance_id: e.workflow_instance_id.clone(),
        workflow_definition_id: e.workflow_definition_id.clone(),
        version: e.version,
        reference: e.reference.clone(),
        ..Default::default()
    };
    let kind = match &e.event_type {
        LifecycleEventType::Started => T::Started,
        LifecycleEventType::Resumed => T::Resumed,
        LifecycleEventType::Suspended => T::Suspended,
        LifecycleEventType::Completed => T::Completed,
        LifecycleEventType::Terminated => T::Terminated,
        LifecycleEventType::Error { message } => {
            wire.message = message.clone();
            T::Error
        }
        LifecycleEventType::StepStarted { step_id, step_name }
        | LifecycleEventType::StepCompleted { step_id, step_name } => {
            wire.step_id = step_id_to_wire(*step_id)?;
            wire.step_name = step_name.clone();
            if matches!(e.event_type, LifecycleEventType::StepStarted { .. }) {
                T::StepStarted
            } else {
                T::StepCompleted
            }
        }
    };
    wire.r#type = kind as i32;
    Ok(wire)
}

pub fn lifecycle_event_from_wire(e: pb::LifecycleEvent) -> Result<LifecycleEvent> {
    use pb::LifecycleEventType as T;
    let step_id = e.step_id as usize;
    let event_type = match T::try_from(e.r#type) {
        Ok(T::Started) => LifecycleEventType::Started,
        Ok(T::Resumed) => LifecycleEventType::Resumed,
        Ok(T::Suspended) => LifecycleEventType::Suspended,
        Ok(T::Completed) => LifecycleEventType::Completed,
        Ok(T::Terminated) => LifecycleEventType::Terminated,
        Ok(T::Error) => LifecycleEventType::Error { message: e.message },
        Ok(T::StepStarted) => LifecycleEventType::StepStarted {
            step_id,
            step_name: e.step_name,
        },
        Ok(T::StepCompleted) => LifecycleEventType::StepCompleted {
            step_id,
            step_name: e.step_name,
        },
        Ok(T::Unspecified) | Err(_) => {
            return Err(bad_data(format!("lifecycle event type {}", e.r#type)));
        }
    };
    Ok(LifecycleEvent {
        event_time_utc: required_ts(&e.event_time, "event_time")?,
        workflow_instance_id: e.workflow_instance_id,
        workflow_definition_id: e.workflow_definition_id,
        version: e.version,
        reference: e.reference,
        event_type,
    })
}

// ── Events ──────────────────────────────────────────────────────────────

pub fn event_to_wire(e: &Event) -> Result<pb::Event> {
    Ok(pb::Event {
        id: e.id.clone(),
        event_name: e.event_name.clone(),
        event_key: e.event_key.clone(),
        event_data: json_to_wire(&e.event_data)?,
        event_time: Some(ts_to_wire(&e.event_time)),
        is_processed: e.is_processed,
    })
}

pub fn event_from_wire(e: pb::Event) -> Result<Event> {
    Ok(Event {
        event_data: json_from_wire(&e.event_data)?,
        event_time: required_ts(&e.event_time, "event_time")?,
        id: e.id,
        event_name: e.event_name,
        event_key: e.event_key,
        is_processed: e.is_processed,
    })
}

// ── Subscriptions ───────────────────────────────────────────────────────

pub fn subscription_to_wire(s: &EventSubscription) -> Result<pb::EventSubscription> {
    Ok(pb::EventSubscription {
        id: s.id.clone(),
        workflow_id: s.workflow_id.clone(),
        step_id: step_id_to_wire(s.step_id)?,
        execution_pointer_id: s.execution_pointer_id.clone(),
        event_name: s.event_name.clone(),
        event_key: s.event_key.clone(),
        subscribe_as_of: Some(ts_to_wire(&s.subscribe_as_of)),
        subscription_data: opt_json_to_wire(&s.subscription_data)?,
        external_token: s.external_token.clone(),
        external_worker_id: s.external_worker_id.clone(),
        external_token_expiry: s.external_token_expiry.as_ref().map(ts_to_wire),
    })
}

pub fn subscription_from_wire(s: pb::EventSubscription) -> Result<EventSubscription> {
    Ok(EventSubscription {
        subscribe_as_of: required_ts(&s.subscribe_as_of, "subscribe_as_of")?,
        subscription_data: opt_json_from_wire(&s.subscription_data)?,
        external_token_expiry: opt_ts_from_wire(&s.external_token_expiry)?,
        id: s.id,
        workflow_id: s.workflow_id,
        step_id: s.step_id as usize,
        execution_pointer_id: s.execution_pointer_id,
        event_name: s.event_name,
        event_key: s.event_key,
        external_token: s.external_token,
        external_worker_id: s.external_worker_id,
    })
}

// ── Scheduled commands and errors ───────────────────────────────────────

pub fn command_to_wire(c: &ScheduledCommand) -> pb::ScheduledCommand {
    pb::ScheduledCommand {
        command_name: command_name_to_wire(&c.command_name) as i32,
        data: c.data.clone(),
        execute_time: c.execute_time,
    }
}

pub fn command_from_wire(c: pb::ScheduledCommand) -> Result<ScheduledCommand> {
    Ok(ScheduledCommand {
        command_name: command_name_from_wire(c.command_name)?,
        data: c.data,
        execute_time: c.execute_time,
    })
}

pub fn execution_error_to_wire(e: &ExecutionError) -> pb::ExecutionError {
    pb::ExecutionError {
        error_time: Some(ts_to_wire(&e.error_time)),
        workflow_id: e.workflow_id.clone(),
        execution_pointer_id: e.execution_pointer_id.clone(),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn json_round_trips_exactly_including_64_bit_integers() {
        for v in [
            json!(null),
            json!(true),
            json!("text with \"quotes\" and ünïcode"),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(0.1),
            json!(1.0e300),
            json!([1, "a", null, {"k": [2.5]}]),
            json!({"nested": {"x": 9007199254740993_u64}}),
        ] {
            let text = json_to_wire(&v).unwrap();
            assert_eq!(json_from_wire(&text).unwrap(), v, "{text}");
        }
    }

    #[test]
    fn invalid_json_from_the_wire_is_a_serialization_error() {
        assert!(matches!(
            json_from_wire("{not json"),
            Err(WfeError::Serialization(_))
        ));
    }

    #[test]
    fn timestamps_round_trip_and_keep_sub_second_precision() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap();
        let w = ts_to_wire(&t);
        assert_eq!((w.seconds, w.nanos), (1_700_000_000, 123_456_000));
        assert_eq!(ts_from_wire(&w).unwrap(), t);
        // Before the epoch: protobuf keeps nanos positive, seconds negative.
        let t = Utc.timestamp_opt(-1, 500_000_000).unwrap();
        assert_eq!(ts_from_wire(&ts_to_wire(&t)).unwrap(), t);
        assert!(
            ts_from_wire(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
    }

    #[test]
    fn enum_members_map_one_to_one_and_unspecified_is_rejected() {
        for s in [
            WorkflowStatus::Runnable,
            WorkflowStatus::Suspended,
            WorkflowStatus::Complete,
            WorkflowStatus::Terminated,
        ] {
            assert_eq!(
                workflow_status_from_wire(workflow_status_to_wire(s) as i32).unwrap(),
                s
            );
        }
        for s in [
            PointerStatus::Pending,
            PointerStatus::Running,
            PointerStatus::Complete,
            PointerStatus::Skipped,
            PointerStatus::Sleeping,
            PointerStatus::WaitingForEvent,
            PointerStatus::Failed,
            PointerStatus::Compensated,
            PointerStatus::Cancelled,
            PointerStatus::PendingPredecessor,
        ] {
            assert_eq!(
                pointer_status_from_wire(pointer_status_to_wire(s) as i32).unwrap(),
                s
            );
        }
        assert!(workflow_status_from_wire(0).is_err());
        assert!(pointer_status_from_wire(0).is_err());
        assert!(command_name_from_wire(0).is_err());
        assert!(command_name_from_wire(99).is_err());
    }

    #[test]
    fn workflow_with_pointer_round_trips() {
        let mut w = WorkflowInstance::new("def", 3, json!({"a": [1, 2]}));
        w.name = "def-1".into();
        w.root_workflow_id = Some("root".into());
        w.reference = Some("ref".into());
        w.next_execution = None;
        w.complete_time = Some(Utc.timestamp_opt(1_700_000_001, 5_000).unwrap());
        let mut p = ExecutionPointer::new(7);
        p.status = PointerStatus::WaitingForEvent;
        p.event_name = Some("e".into());
        p.event_data = Some(json!(null));
        p.outcome = Some(json!(42));
        p.sleep_until = Some(Utc::now());
        p.extension_attributes
            .insert("k".into(), json!({"v": u64::MAX}));
        w.execution_pointers.push(p);

        let back = workflow_from_wire(workflow_to_wire(&w).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&w).unwrap()
        );
    }

    #[test]
    fn missing_required_instant_is_an_error_not_a_guess() {
        let mut wire = workflow_to_wire(&WorkflowInstance::new("d", 1, json!({}))).unwrap();
        wire.create_time = None;
        assert!(workflow_from_wire(wire).is_err());
    }

    #[test]
    fn subscription_and_event_round_trip() {
        let mut s = EventSubscription::new("wf", 2, "p", "n", "k", Utc::now());
        s.subscription_data = Some(json!({"x": 1}));
        s.external_token = Some("t".into());
        s.external_token_expiry = Some(Utc::now());
        let back = subscription_from_wire(subscription_to_wire(&s).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&s).unwrap()
        );

        let e = Event::new("n", "k", json!([1, 2, 3]));
        let back = event_from_wire(event_to_wire(&e).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&e).unwrap()
        );
    }

    #[test]
    fn step_id_that_does_not_fit_uint32_is_refused() {
        let p = ExecutionPointer::new(usize::MAX);
        assert!(pointer_to_wire(&p).is_err());
    }

    #[test]
    fn every_lifecycle_event_type_round_trips() {
        let types = [
            LifecycleEventType::Started,
            LifecycleEventType::Resumed,
            LifecycleEventType::Suspended,
            LifecycleEventType::Completed,
            LifecycleEventType::Terminated,
            LifecycleEventType::Error {
                message: "boom".into(),
            },
            LifecycleEventType::StepStarted {
                step_id: 3,
                step_name: Some("charge".into()),
            },
            LifecycleEventType::StepCompleted {
                step_id: 4,
                step_name: None,
            },
        ];
        let mut wire_types = std::collections::HashSet::new();
        for t in types {
            let mut e = LifecycleEvent::new("wf-1", "def", 2, t);
            e.reference = Some("ref".into());
            e.event_time_utc = Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap();
            let wire = lifecycle_event_to_wire(&e).unwrap();
            wire_types.insert(wire.r#type);
            let back = lifecycle_event_from_wire(wire).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&e).unwrap()
            );
        }
        assert_eq!(wire_types.len(), 8, "each type has its own wire value");
        let unspecified = pb::LifecycleEvent {
            event_time: Some(ts_to_wire(&Utc::now())),
            ..Default::default()
        };
        assert!(lifecycle_event_from_wire(unspecified).is_err());
    }
}
