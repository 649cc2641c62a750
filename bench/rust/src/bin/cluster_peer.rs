//! The peer of the cluster benchmark: the same 3-step workflow as `client/rust`'s `cluster_host`
//! example, on one `wfe::WorkflowHost` with the upstream `wfe-sqlite` crate in-process and
//! wfe-core's in-memory lock and queue (what a user would pick instead of a server).
//!
//! `cluster_peer sqlite:///PATH --log FILE --start N` prints `ready`, waits for a line on stdin,
//! starts N workflows, prints `started n=N`, and runs until stdin closes or it gets SIGTERM.
//! The same stdout protocol as `cluster_host --wait-go`, so bench/cluster_hosts.py drives both alike.

#[path = "../../../../client/rust/examples/cluster_host/workflow.rs"]
mod workflow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use wfe::WorkflowHostBuilder;
use wfe::test_support::{InMemoryLockProvider, InMemoryQueueProvider};
use wfe_core::traits::PersistenceProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: cluster_peer DB_URL --log FILE --start N")?;
    let (mut log, mut start) = (PathBuf::new(), 0usize);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--log" => log = args.next().ok_or("--log needs a value")?.into(),
            "--start" => start = args.next().ok_or("--start needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    workflow::init("peer", &log, Duration::ZERO)?;
    let persistence: Arc<dyn PersistenceProvider> =
        Arc::new(wfe_sqlite::SqlitePersistenceProvider::new(&url).await?);
    let host = WorkflowHostBuilder::new()
        .use_persistence(persistence)
        .use_lock_provider(Arc::new(InMemoryLockProvider::new()))
        .use_queue_provider(Arc::new(InMemoryQueueProvider::new()))
        .build()?;
    workflow::register(&host).await;
    host.start().await?;
    println!("ready name=peer");

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    stdin.next_line().await?;
    for _ in 0..start {
        host.start_workflow(
            workflow::DEFINITION,
            workflow::VERSION,
            serde_json::json!({}),
        )
        .await?;
    }
    println!("started n={start}");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = async { while let Ok(Some(_)) = stdin.next_line().await {} } => {}
        _ = terminate.recv() => {}
    }
    host.stop().await;
    println!("stopped");
    Ok(())
}
