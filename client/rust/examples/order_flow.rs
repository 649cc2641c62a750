//! The WFE engine itself running on a wfe-sqlite server through `GrpcPersistenceProvider`.
//!
//! ```text
//! cargo run --example order_flow -- 127.0.0.1:50051 [ORDER_ID]
//! ```
//!
//! A `wfe::WorkflowHost` runs an order workflow:
//! reserve stock -> charge payment -> wait for `order.shipped` (key = order id) -> confirm delivery.
//! The example prints `workflow_id=<id>` once the workflow is started, `waiting event=... key=...`
//! once it waits for the event, followed by a command that publishes the event (with the
//! `"tracking"` its data must hold) from another terminal, and `status=Complete` when it has
//! finished, then exits 0.
//! The event is meant to be published by someone else (another process, in any language) into
//! the same store: the server queues it for the host (no poller). The host runs on the server's
//! locks, queue and lifecycle relay as well, so several copies of it can share one server. An event
//! whose data has no `"tracking"` suspends the workflow: the example says so and exits 1. It exits
//! 2 if the workflow has not completed within `ORDER_FLOW_TIMEOUT_SECS` (default 120).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use wfe::WorkflowHostBuilder;
use wfe::models::{ErrorBehavior, ExecutionResult, PointerStatus, WorkflowStatus};
use wfe::traits::step::{StepBody, StepExecutionContext};
use wfe_grpc::{
    GrpcLifecyclePublisher, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider,
};

const DEFINITION: &str = "order-flow";
const SHIPPED: &str = "order.shipped";
/// What `order.shipped`'s data must hold: `{"tracking": "..."}`.
const TRACKING: &str = "tracking";

fn with_output(data: serde_json::Value) -> ExecutionResult {
    ExecutionResult {
        output_data: Some(data),
        ..ExecutionResult::next()
    }
}

fn order_id(ctx: &StepExecutionContext<'_>) -> wfe::Result<String> {
    ctx.workflow.data["order_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| wfe::WfeError::StepExecution("workflow data has no order_id".into()))
}

#[derive(Default)]
struct ReserveStock;

#[async_trait]
impl StepBody for ReserveStock {
    async fn run(&mut self, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        let items = ctx.workflow.data["items"].as_array().map_or(0, Vec::len);
        Ok(with_output(json!({ "reserved_items": items })))
    }
}

#[derive(Default)]
struct ChargePayment;

#[async_trait]
impl StepBody for ChargePayment {
    async fn run(&mut self, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        let amount = ctx.workflow.data["amount_cents"].as_u64().unwrap_or(0);
        Ok(with_output(json!({
            "charged_cents": amount,
            "charge_id": format!("ch-{}", order_id(ctx)?),
        })))
    }
}

/// Waits for `order.shipped` keyed by the order id; once it has arrived, keeps its tracking number.
/// An event without one fails the step (and, as the definition says, suspends the workflow).
#[derive(Default)]
struct AwaitShipment;

#[async_trait]
impl StepBody for AwaitShipment {
    async fn run(&mut self, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        let pointer = ctx.execution_pointer;
        if !pointer.event_published {
            return Ok(ExecutionResult::wait_for_event(
                SHIPPED,
                order_id(ctx)?,
                chrono::Utc::now(),
            ));
        }
        let Some(tracking) = pointer.event_data.as_ref().and_then(|d| d.get(TRACKING)) else {
            return Err(wfe::WfeError::StepExecution(format!(
                "the {SHIPPED} event has no \"{TRACKING}\" in its data"
            )));
        };
        Ok(with_output(json!({ TRACKING: tracking })))
    }
}

#[derive(Default)]
struct ConfirmDelivery;

#[async_trait]
impl StepBody for ConfirmDelivery {
    async fn run(&mut self, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        if ctx.workflow.data["tracking"].is_null() {
            return Err(wfe::WfeError::StepExecution("no tracking number".into()));
        }
        Ok(with_output(json!({ "delivered": true })))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .or_else(|| std::env::var("WFE_SQLITE_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let order = args.next().unwrap_or_else(|| "order-42".into());
    let timeout = std::env::var("ORDER_FLOW_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120u64);

    // Everything the host needs comes from the server, over one connection.
    let store = GrpcPersistenceProvider::connect(&addr).await?;
    let lifecycle = GrpcLifecyclePublisher::new(&store);
    let host = WorkflowHostBuilder::new()
        .use_lock_provider(Arc::new(GrpcLockProvider::new(&store)))
        .use_queue_provider(Arc::new(GrpcQueueProvider::new(&store)))
        .use_lifecycle(Arc::new(lifecycle.clone()))
        .use_persistence(Arc::new(store))
        .build()?;

    host.register_step::<ReserveStock>().await;
    host.register_step::<ChargePayment>().await;
    host.register_step::<AwaitShipment>().await;
    host.register_step::<ConfirmDelivery>().await;
    host.register_workflow::<serde_json::Value>(
        &|b| {
            b.start_with::<ReserveStock>()
                .name("reserve stock")
                .then::<ChargePayment>()
                .name("charge payment")
                .then::<AwaitShipment>()
                .name("await shipment")
                .on_error(ErrorBehavior::Suspend)
                .then::<ConfirmDelivery>()
                .name("confirm delivery")
                .end_workflow()
        },
        DEFINITION,
        1,
    )
    .await;
    host.start().await?;

    let id = host
        .start_workflow(
            DEFINITION,
            1,
            json!({ "order_id": order, "items": ["book", "lamp"], "amount_cents": 4_250 }),
        )
        .await?;
    println!("workflow_id={id}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut announced_wait = false;
    let outcome = loop {
        let w = host.get_workflow(&id).await?;
        let waiting = w
            .execution_pointers
            .iter()
            .find(|p| p.status == PointerStatus::WaitingForEvent);
        if let (false, Some(p)) = (announced_wait, waiting) {
            let (name, key) = (
                p.event_name.as_deref().unwrap_or(""),
                p.event_key.as_deref().unwrap_or(""),
            );
            println!("waiting event={name} key={key}");
            println!("to publish it, run this in another terminal:");
            println!("  {}", publish_command(&addr, name, key));
            announced_wait = true;
        }
        if matches!(
            w.status,
            WorkflowStatus::Complete | WorkflowStatus::Terminated | WorkflowStatus::Suspended
        ) {
            break Some(w);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    host.stop().await;
    if let Err(e) = lifecycle.flush().await {
        eprintln!("lifecycle events not delivered: {e}");
    }
    match outcome {
        Some(w) => {
            println!("status={:?}", w.status);
            println!("data={}", w.data);
            if w.status == WorkflowStatus::Complete {
                return Ok(());
            }
            if w.status == WorkflowStatus::Suspended {
                eprintln!(
                    "order_flow: the {SHIPPED} event for {order} had no \"{TRACKING}\" in its data, so \
                     the workflow is suspended; run the example again and publish the event with \
                     it, as the command above does"
                );
            }
            std::process::exit(1)
        }
        None => {
            eprintln!("order_flow: workflow {id} did not complete within {timeout} s");
            std::process::exit(2)
        }
    }
}

/// A one-line command that publishes `name`/`key` with a tracking number into the store at `addr`,
/// through the Python client of this repository (in its `.venv`, made by `make serve` or
/// `make install`).
fn publish_command(addr: &str, name: &str, key: &str) -> String {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
    let venv = repository.map(|root| root.join(".venv/bin/python"));
    let python = match venv {
        Some(python) if python.exists() => python.display().to_string(),
        _ => "python3".to_string(),
    };
    format!(
        "{python} -c 'import asyncio, wfe_client as w; run = asyncio.new_event_loop().run_until_complete; \
         store = run(w.GrpcPersistenceProvider.connect(\"{addr}\")); \
         run(store.create_event(w.Event.new(\"{name}\", \"{key}\", {{\"{TRACKING}\": \"TRK-1\"}}))); \
         run(store.close())'"
    )
}
