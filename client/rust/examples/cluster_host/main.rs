//! One WFE host of a cluster that shares a wfe-sqlite server and nothing else.
//!
//! ```text
//! cargo run --example cluster_host -- 127.0.0.1:50051 --log steps.log [--name h1] [--start 100]
//!     [--ttl-ms 30000] [--work-ms 0] [--wait-go] [--lifecycle] [--sync-release] [--no-prime]
//!     [--no-coalesce] [--no-leased-dequeue] [--no-prefetch] [--no-event-marking]
//!     [--send-all-queues] [--sequence-block N] [--inmemory]
//! ```
//!
//! A `wfe::WorkflowHost` on the adapter (persistence, with revisions), `GrpcLockProvider`
//! (leases renewed in the background, released without waiting for the answer) and
//! `GrpcQueueProvider` (the server's durable queue, long-polled, linked to the lock provider with
//! `GrpcQueueProvider::with_locks`: a workflow dequeue takes the host's two leases and carries
//! the previous step's release, and sends the next dequeue ahead while a step runs
//! (`GrpcQueueProvider::with_prefetch`), so a step is one round trip the host waits for, the
//! persist, while work keeps coming): no poller, no other service.
//! Start as many as you like against one server;
//! each workflow step runs on exactly one of them. It runs the 3-step workflow `cluster-3step`
//! (see `workflow.rs`: every step appends `workflow id, step, host` to the `--log` file).
//!
//! Prints `ready name=NAME` once the host runs, then (after a `go` line on stdin with
//! `--wait-go`) starts `--start` workflows itself and prints `started n=N`. Workflows started
//! elsewhere (another host, Python) run here too. SIGTERM or Ctrl-C stops the host (it releases
//! its leases) and prints `stopped`.
//!
//! `--inmemory` is the setup not to use: each host with its own in-memory locks and queue plus a
//! `RunnablePoller` over the store, as before the server had locks and queues. Hosts then run
//! the same steps at the same time (`bench/cluster_hosts.py inmemory` counts how often).
//! `--lifecycle` also publishes lifecycle events through `GrpcLifecyclePublisher`;
//! `--sync-release` waits for each lease release (`GrpcLockProvider::with_background_release`
//! off: two more round trips on each step's path); `--no-prime` dequeues without the workflow
//! (`GrpcQueueProvider::without_workflow`: one more round trip per step); `--no-coalesce` takes
//! WFE's two lock keys in two calls and reads the workflow in a third
//! (`GrpcLockProvider::with_claim_coalescing(false)`: two more round trips per step);
//! `--no-leased-dequeue` dequeues without taking the leases (no `with_locks`: the claim's
//! acquire and the release are calls of their own, two more round trips per step);
//! `--no-prefetch` sends each workflow dequeue when the host asks for it (one more round trip the
//! host waits for per step);
//! `--no-event-marking` leaves an event no subscription waits for (each workflow's completion
//! event) unmarked by its dequeue (`GrpcQueueProvider::with_unsubscribed_marking(false)`: the
//! host's `mark_event_processed` is then a call of its own, one more per workflow);
//! `--send-all-queues` sends every `queue_work`, also those the server does itself
//! (`GrpcQueueProvider::with_server_queued_skip(false)`: one more round trip per step);
//! `--sequence-block N` hands the workflow numbers WFE asks for before each start out of blocks of
//! N reserved in one call (`GrpcPersistenceProvider::with_sequence_block`: one round trip and one
//! commit fewer per start, except once per block; numbers of different hosts interleave). 0, the
//! default: one call per number.

mod workflow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};
use wfe::WorkflowHostBuilder;
use wfe::test_support::{InMemoryLockProvider, InMemoryQueueProvider};
use wfe::traits::{DistributedLockProvider, PersistenceProvider, QueueProvider};
use wfe_grpc::{
    GrpcLifecyclePublisher, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider,
    RunnablePoller,
};

struct Args {
    addr: String,
    name: String,
    log: PathBuf,
    start: usize,
    ttl: Duration,
    work: Duration,
    wait_go: bool,
    lifecycle: bool,
    sync_release: bool,
    no_prime: bool,
    no_coalesce: bool,
    no_leased_dequeue: bool,
    no_prefetch: bool,
    no_event_marking: bool,
    send_all_queues: bool,
    sequence_block: u32,
    inmemory: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        addr: String::new(),
        name: format!("host-{}", std::process::id()),
        log: PathBuf::new(),
        start: 0,
        ttl: wfe_grpc::lock::DEFAULT_LOCK_TTL,
        work: Duration::ZERO,
        wait_go: false,
        lifecycle: false,
        sync_release: false,
        no_prime: false,
        no_coalesce: false,
        no_leased_dequeue: false,
        no_prefetch: false,
        no_event_marking: false,
        send_all_queues: false,
        sequence_block: 0,
        inmemory: false,
    };
    let number = |flag: &str, value: Option<String>| -> Result<u64, String> {
        value
            .ok_or(format!("{flag} needs a value"))?
            .parse()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => parsed.name = args.next().ok_or("--name needs a value")?,
            "--log" => parsed.log = args.next().ok_or("--log needs a value")?.into(),
            "--start" => parsed.start = number("--start", args.next())? as usize,
            "--ttl-ms" => parsed.ttl = Duration::from_millis(number("--ttl-ms", args.next())?),
            "--work-ms" => parsed.work = Duration::from_millis(number("--work-ms", args.next())?),
            "--wait-go" => parsed.wait_go = true,
            "--lifecycle" => parsed.lifecycle = true,
            "--sync-release" => parsed.sync_release = true,
            "--no-prime" => parsed.no_prime = true,
            "--no-coalesce" => parsed.no_coalesce = true,
            "--no-leased-dequeue" => parsed.no_leased_dequeue = true,
            "--no-prefetch" => parsed.no_prefetch = true,
            "--no-event-marking" => parsed.no_event_marking = true,
            "--send-all-queues" => parsed.send_all_queues = true,
            "--sequence-block" => {
                parsed.sequence_block = u32::try_from(number("--sequence-block", args.next())?)
                    .map_err(|e| format!("--sequence-block: {e}"))?
            }
            "--inmemory" => parsed.inmemory = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            addr if parsed.addr.is_empty() => parsed.addr = addr.to_string(),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    if parsed.addr.is_empty() || parsed.log.as_os_str().is_empty() {
        return Err("usage: cluster_host ADDR --log FILE [options]".into());
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // The host's own warnings and errors (a refused stale persist shows up here).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    workflow::init(&args.name, &args.log, args.work)?;

    let store = GrpcPersistenceProvider::connect(&args.addr)
        .await?
        .with_sequence_block(args.sequence_block);
    let (locks, queue): (Arc<dyn DistributedLockProvider>, Arc<dyn QueueProvider>) =
        if args.inmemory {
            (
                Arc::new(InMemoryLockProvider::new()),
                Arc::new(InMemoryQueueProvider::new()),
            )
        } else {
            let locks = GrpcLockProvider::new(&store)
                .with_ttl(args.ttl)
                .with_background_release(!args.sync_release)
                .with_claim_coalescing(!args.no_coalesce);
            let mut queue = GrpcQueueProvider::new(&store)
                .with_server_queued_skip(!args.send_all_queues)
                .with_unsubscribed_marking(!args.no_event_marking);
            if args.no_prime {
                queue = queue.without_workflow();
            }
            if !args.no_leased_dequeue {
                queue = queue.with_locks(&locks).with_prefetch(!args.no_prefetch);
            }
            (Arc::new(locks), Arc::new(queue))
        };
    let lifecycle = GrpcLifecyclePublisher::new(&store);
    let persistence: Arc<dyn PersistenceProvider> = Arc::new(store);
    let mut builder = WorkflowHostBuilder::new()
        .use_persistence(persistence.clone())
        .use_lock_provider(locks)
        .use_queue_provider(queue.clone());
    if args.lifecycle {
        builder = builder.use_lifecycle(Arc::new(lifecycle.clone()));
    }
    let host = builder.build()?;
    workflow::register(&host).await;
    host.start().await?;
    // Only the in-memory setup needs a poller: its queue knows nothing of other processes.
    let poller = args.inmemory.then(|| {
        RunnablePoller::new(
            persistence.clone(),
            queue.clone(),
            Duration::from_millis(200),
        )
        .with_workflows(true)
        .spawn()
    });
    println!("ready name={}", args.name);

    let mut terminate = signal(SignalKind::terminate())?;
    let starting = async {
        if args.wait_go {
            let mut line = String::new();
            tokio::io::BufReader::new(tokio::io::stdin())
                .read_line(&mut line)
                .await?;
        }
        for _ in 0..args.start {
            host.start_workflow(
                workflow::DEFINITION,
                workflow::VERSION,
                serde_json::json!({}),
            )
            .await?;
        }
        println!("started n={}", args.start);
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(stop);
    tokio::select! {
        started = starting => {
            started?;
            (&mut stop).await;
        }
        _ = &mut stop => {}
    }
    if let Some(poller) = poller {
        poller.abort();
    }
    host.stop().await;
    if let Err(e) = lifecycle.flush().await {
        eprintln!("lifecycle events not delivered: {e}");
    }
    println!("stopped");
    Ok(())
}
