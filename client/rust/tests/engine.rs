//! The WFE engine's own primitives on the server through the adapter, in one process: a
//! `wfe::WorkflowHost` with `GrpcPersistenceProvider` as persistence runs a workflow whose
//! built-in `wait_for` step is resumed by `publish_event`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::ServerProcess;
use serde_json::json;
use wfe::WorkflowHostBuilder;
use wfe::models::{ExecutionResult, PointerStatus, WorkflowStatus};
use wfe::test_support::{InMemoryLockProvider, InMemoryQueueProvider};
use wfe::traits::step::{StepBody, StepExecutionContext};
use wfe::traits::{DistributedLockProvider, PersistenceProvider, QueueProvider};
use wfe_grpc::GrpcPersistenceProvider;

#[derive(Default)]
struct Before;

#[async_trait]
impl StepBody for Before {
    async fn run(&mut self, _: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        Ok(ExecutionResult {
            output_data: Some(json!({ "before": true })),
            ..ExecutionResult::next()
        })
    }
}

#[derive(Default)]
struct After;

#[async_trait]
impl StepBody for After {
    async fn run(&mut self, _: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        Ok(ExecutionResult {
            output_data: Some(json!({ "after": true })),
            ..ExecutionResult::next()
        })
    }
}

/// Runs before -> wait_for(name, key) -> after; publishes the event with `data` once the
/// workflow waits; returns the workflow as stored once it is complete.
async fn run_wait_for(data: serde_json::Value) -> wfe::models::WorkflowInstance {
    let server = tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .unwrap();
    let persistence: Arc<dyn PersistenceProvider> = Arc::new(
        GrpcPersistenceProvider::connect(&server.addr)
            .await
            .unwrap(),
    );
    let queue: Arc<dyn QueueProvider> = Arc::new(InMemoryQueueProvider::new());
    let locks: Arc<dyn DistributedLockProvider> = Arc::new(InMemoryLockProvider::new());
    let host = WorkflowHostBuilder::new()
        .use_persistence(persistence.clone())
        .use_lock_provider(locks)
        .use_queue_provider(queue.clone())
        .build()
        .unwrap();
    host.register_step::<Before>().await;
    host.register_step::<After>().await;
    host.register_workflow::<serde_json::Value>(
        &|b| {
            b.start_with::<Before>()
                .wait_for("approval", "req-1")
                .then::<After>()
                .end_workflow()
        },
        "approve",
        1,
    )
    .await;
    host.start().await.unwrap();
    // wfe 1.11 can lose the wake-up after an event: process_event queues the workflow while it
    // still holds the workflow's lock (terminating the subscription), and an executor that
    // dequeues it in that window skips it. The workflow then stays runnable in the store with
    // nothing queued (seen once under CPU load). The poller, as in production, picks it up.
    let poller = wfe_grpc::RunnablePoller::new(
        persistence.clone(),
        queue.clone(),
        Duration::from_millis(200),
    )
    .with_workflows(true)
    .requeue_after(Duration::from_secs(1))
    .spawn();
    let id = host.start_workflow("approve", 1, json!({})).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = persistence.get_workflow_instance(&id).await.unwrap();
        if w.execution_pointers
            .iter()
            .any(|p| p.status == PointerStatus::WaitingForEvent)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never waited: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.publish_event("approval", "req-1", data).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let w = persistence.get_workflow_instance(&id).await.unwrap();
        if w.status == WorkflowStatus::Complete {
            break w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow did not complete after the event: {w:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    poller.abort();
    host.stop().await;
    done
}

#[tokio::test]
async fn wait_for_step_resumes_on_published_event() {
    let w = run_wait_for(json!({ "approved": true })).await;
    assert_eq!(w.data, json!({ "before": true, "after": true }));
    let wait = w
        .execution_pointers
        .iter()
        .find(|p| p.event_name.as_deref() == Some("approval"))
        .expect("the wait_for pointer");
    assert!(wait.event_published);
    assert_eq!(wait.event_data, Some(json!({ "approved": true })));
    assert!(
        w.execution_pointers
            .iter()
            .all(|p| p.status == PointerStatus::Complete)
    );
}

/// wfe-core's WaitFor step proceeds on `event_data.is_some()`: an event whose data is JSON
/// null must come back from the store as `Some(Null)`, or the step waits again forever.
#[tokio::test]
async fn wait_for_step_resumes_on_event_with_null_data() {
    let w = run_wait_for(json!(null)).await;
    let wait = w
        .execution_pointers
        .iter()
        .find(|p| p.event_name.as_deref() == Some("approval"))
        .expect("the wait_for pointer");
    assert_eq!(wait.event_data, Some(json!(null)));
    assert_eq!(w.data, json!({ "before": true, "after": true }));
}
