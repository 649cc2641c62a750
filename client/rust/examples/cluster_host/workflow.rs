//! The 3-step workflow of the cluster proof and benchmark: every step appends
//! `workflow id <TAB> step <TAB> host` to a log file outside the store (one `write` on a file
//! opened for appending, so lines of concurrent processes never interleave, and a line written
//! survives a SIGKILL of its process), then optionally works for a while.
//!
//! Shared by the `cluster_host` example and the in-process peer of `bench/rust`
//! (`#[path]`-included there), so both run exactly the same workflow.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use wfe::WorkflowHost;
use wfe::models::ExecutionResult;
use wfe::traits::step::{StepBody, StepExecutionContext};

/// Definition id and version of the workflow.
pub const DEFINITION: &str = "cluster-3step";
pub const VERSION: u32 = 1;
/// Names of its steps, in order (step ids 0, 1, 2).
pub const STEP_NAMES: [&str; 3] = ["first", "second", "third"];

struct Sink {
    host: String,
    log: File,
    work: Duration,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Where the steps of this process log, under which host name, and how long each step works
/// after logging. Call once, before the host starts.
pub fn init(host: &str, log: &Path, work: Duration) -> std::io::Result<()> {
    let log = File::options().create(true).append(true).open(log)?;
    let sink = Sink {
        host: host.to_string(),
        log,
        work,
    };
    if SINK.set(sink).is_err() {
        return Err(std::io::Error::other("workflow::init called twice"));
    }
    Ok(())
}

async fn run_step(step: usize, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
    let sink = SINK
        .get()
        .ok_or_else(|| wfe::WfeError::StepExecution("workflow::init was not called".into()))?;
    let line = format!("{}\t{}\t{}\n", ctx.workflow.id, step, sink.host);
    (&sink.log)
        .write_all(line.as_bytes())
        .map_err(|e| wfe::WfeError::StepExecution(format!("step log: {e}")))?;
    if !sink.work.is_zero() {
        tokio::time::sleep(sink.work).await;
    }
    Ok(ExecutionResult::next())
}

macro_rules! logged_step {
    ($name:ident, $index:expr) => {
        #[derive(Default)]
        pub struct $name;

        #[async_trait]
        impl StepBody for $name {
            async fn run(
                &mut self,
                ctx: &StepExecutionContext<'_>,
            ) -> wfe::Result<ExecutionResult> {
                run_step($index, ctx).await
            }
        }
    };
}

logged_step!(First, 0);
logged_step!(Second, 1);
logged_step!(Third, 2);

/// Registers the steps and the workflow with `host`.
pub async fn register(host: &WorkflowHost) {
    host.register_step::<First>().await;
    host.register_step::<Second>().await;
    host.register_step::<Third>().await;
    host.register_workflow::<serde_json::Value>(
        &|b| {
            b.start_with::<First>()
                .name(STEP_NAMES[0])
                .then::<Second>()
                .name(STEP_NAMES[1])
                .then::<Third>()
                .name(STEP_NAMES[2])
                .end_workflow()
        },
        DEFINITION,
        VERSION,
    )
    .await;
}
