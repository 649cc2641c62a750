//! Load generator for `make bench` (bench/run.py drives it).
//!
//! `wfe-bench --target grpc:HOST:PORT|crate:sqlite://PATH|crate-pg:postgresql://URL --op OP --tasks MAX --windows W --window-secs S [--setup-due]`
//!
//! Sets up what the operation needs (for up to MAX tasks), prints `ready`, then for each line
//! `go T0 N` on stdin (T0: the wall-clock start, epoch seconds) runs N concurrent tasks until
//! `T0 + W * S` and prints one JSON line `{"windows": [[latency_us, ...], ...]}`: the latencies of
//! the calls that ended in each window. `quit` ends it. The same protocol as bench/client.py, so
//! the orchestrator treats both alike.
//!
//! `crate:` is the upstream `wfe-sqlite` crate in-process; `crate-pg:` the upstream `wfe-postgres`
//! crate in-process (its own pool of 10 connections, tables in schema `wfc`, created by
//! `ensure_store_exists` before set-up).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use tokio::io::AsyncBufReadExt;
use wfe_core::models::{
    Event, EventSubscription, ExecutionPointer, ScheduledCommand, WorkflowInstance,
};
use wfe_core::traits::PersistenceProvider;

type Provider = Arc<dyn PersistenceProvider>;

struct Args {
    target: String,
    op: String,
    tasks: usize,
    windows: usize,
    window_secs: f64,
    setup_due: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        target: String::new(),
        op: String::new(),
        tasks: 1,
        windows: 4,
        window_secs: 0.5,
        setup_due: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--target" => args.target = it.next().expect("--target value"),
            "--op" => args.op = it.next().expect("--op value"),
            "--tasks" => args.tasks = it.next().expect("--tasks value").parse().expect("int"),
            "--windows" => args.windows = it.next().expect("--windows value").parse().expect("int"),
            "--window-secs" => {
                args.window_secs = it
                    .next()
                    .expect("--window-secs value")
                    .parse()
                    .expect("float")
            }
            "--setup-due" => args.setup_due = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// About 1 KiB of JSON, the same shape as bench/workload.py's.
fn payload(n: u64) -> serde_json::Value {
    let items: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"sku": format!("SKU-{n}-{i}"), "qty": i + 1, "price": 12.5 + i as f64}))
        .collect();
    serde_json::json!({
        "order": n,
        "customer": {"id": format!("customer-{}", n % 1000), "email": "someone@example.com", "tier": "gold"},
        "items": items,
        "note": "x".repeat(420),
    })
}

/// A workflow with 3 pointers and ~1 KiB of data, not due for a day unless `due`.
fn workflow(n: u64, due: bool) -> WorkflowInstance {
    let mut w = WorkflowInstance::new("bench-flow", 1, payload(n));
    w.next_execution = Some(if due {
        0
    } else {
        Utc::now().timestamp_millis() + 86_400_000
    });
    for step in 0..3 {
        let mut p = ExecutionPointer::new(step);
        p.step_name = Some(format!("step-{step}"));
        w.execution_pointers.push(p);
    }
    w
}

async fn connect(target: &str) -> Provider {
    if let Some(addr) = target.strip_prefix("grpc:") {
        Arc::new(
            wfe_grpc::GrpcPersistenceProvider::connect(addr)
                .await
                .expect("connect"),
        )
    } else if let Some(url) = target.strip_prefix("crate:") {
        Arc::new(
            wfe_sqlite::SqlitePersistenceProvider::new(url)
                .await
                .expect("open"),
        )
    } else if let Some(url) = target.strip_prefix("crate-pg:") {
        let p = wfe_postgres::PostgresPersistenceProvider::new(url)
            .await
            .expect("connect");
        p.ensure_store_exists().await.expect("migrate");
        Arc::new(p)
    } else {
        panic!("target must be grpc:HOST:PORT, crate:URL or crate-pg:URL")
    }
}

#[derive(Clone)]
struct Prepared {
    workflows: Arc<Vec<WorkflowInstance>>,
    subscriptions: Arc<Vec<String>>,
}

async fn setup(p: &Provider, op: &str, tasks: usize, setup_due: bool) -> Prepared {
    let mut workflows = Vec::new();
    let mut subscriptions = Vec::new();
    match op {
        "get" | "persist" | "batch_get" => {
            let count = if op == "batch_get" {
                100
            } else {
                tasks.max(16)
            };
            for i in 0..count {
                let mut w = workflow(i as u64, false);
                w.name = format!("bench-{}", uuid::Uuid::new_v4());
                p.create_new_workflow(&w).await.expect("create");
                workflows.push(w);
            }
        }
        "set_token" => {
            for i in 0..tasks.max(16) {
                let s = EventSubscription::new(
                    uuid::Uuid::new_v4().to_string(),
                    i,
                    uuid::Uuid::new_v4().to_string(),
                    "bench.event",
                    format!("key-{i}"),
                    Utc::now(),
                );
                subscriptions.push(p.create_event_subscription(&s).await.expect("subscribe"));
            }
        }
        "runnable" if setup_due => {
            let have = p
                .get_runnable_instances(Utc::now())
                .await
                .expect("runnable")
                .len();
            for i in have..100 {
                let mut w = workflow(i as u64, true);
                w.name = format!("due-{}", uuid::Uuid::new_v4());
                p.create_new_workflow(&w).await.expect("create");
            }
        }
        _ => {}
    }
    Prepared {
        workflows: Arc::new(workflows),
        subscriptions: Arc::new(subscriptions),
    }
}

async fn one(p: &Provider, op: &str, prep: &Prepared, task: usize, n: u64) {
    match op {
        "create" => {
            let mut w = workflow(n, false);
            w.name = format!("bench-{}", w.id);
            p.create_new_workflow(&w).await.expect("create");
        }
        "get" => {
            let w = &prep.workflows[(task + n as usize) % prep.workflows.len()];
            p.get_workflow_instance(&w.id).await.expect("get");
        }
        "batch_get" => {
            let ids: Vec<String> = prep.workflows.iter().map(|w| w.id.clone()).collect();
            let got = p.get_workflow_instances(&ids).await.expect("batch get");
            assert_eq!(got.len(), ids.len());
        }
        "persist" => {
            let mut w = prep.workflows[task % prep.workflows.len()].clone();
            w.data["order"] = serde_json::json!(n);
            p.persist_workflow(&w).await.expect("persist");
        }
        "create_event" => {
            let e = Event::new("bench.event", format!("key-{n}"), payload(n));
            p.create_event(&e).await.expect("event");
        }
        "runnable" => {
            p.get_runnable_instances(Utc::now())
                .await
                .expect("runnable");
        }
        "set_token" => {
            let sid = &prep.subscriptions[task % prep.subscriptions.len()];
            let token = uuid::Uuid::new_v4().to_string();
            p.set_subscription_token(sid, &token, "bench-worker", Utc::now())
                .await
                .expect("token");
        }
        "commands" => {
            let c = ScheduledCommand::process_workflow(
                uuid::Uuid::new_v4().to_string(),
                Utc::now().timestamp_millis(),
            );
            p.schedule_command(&c).await.expect("schedule");
            p.process_commands(Utc::now(), &|_c| Box::pin(async { Ok(()) }))
                .await
                .expect("process");
        }
        other => panic!("unknown op {other}"),
    }
}

fn main() {
    let args = parse_args();
    // The gRPC client shares the 2 cores with the server: one worker thread keeps it light.
    // The in-process crate gets the machine, as a Rust user's host would.
    let workers = if args.target.starts_with("grpc:") {
        1
    } else {
        2
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let p = connect(&args.target).await;
    let prep = setup(&p, &args.op, args.tasks, args.setup_due).await;
    println!("ready");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    loop {
        // `go T0 N`: N tasks from wall-clock T0 (epoch seconds); `quit` ends the process.
        let mut line = String::new();
        if stdin.read_line(&mut line).await.expect("stdin") == 0 || line.trim() == "quit" {
            return;
        }
        let mut words = line.split_whitespace().skip(1);
        let t0: f64 = words.next().expect("T0").parse().expect("T0");
        let tasks: usize = words.next().expect("N").parse().expect("N");
        let windows = measure(&p, &prep, &args, t0, tasks).await;
        println!("{}", serde_json::json!({ "windows": windows }));
    }
}

async fn measure(
    p: &Provider,
    prep: &Prepared,
    args: &Args,
    t0: f64,
    tasks: usize,
) -> Vec<Vec<u32>> {
    let end = t0 + args.windows as f64 * args.window_secs;
    let wait = t0 - now_secs();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let op: Arc<str> = Arc::from(args.op.as_str());
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (p, prep, op) = (p.clone(), prep.clone(), op.clone());
        let (windows, window_secs) = (args.windows, args.window_secs);
        handles.push(tokio::spawn(async move {
            let mut lat: Vec<Vec<u32>> = vec![Vec::new(); windows];
            let mut n = ((task as u64) << 32) | (t0 as u64 & 0xffff) << 16;
            loop {
                let start = now_secs();
                if start >= end {
                    break;
                }
                one(&p, &op, &prep, task, n).await;
                n += 1;
                let done = now_secs();
                let w = ((done - t0) / window_secs) as usize;
                if w < windows && done < end {
                    lat[w].push(((done - start) * 1e6) as u32);
                }
            }
            lat
        }));
    }
    let mut all: Vec<Vec<u32>> = vec![Vec::new(); args.windows];
    for h in handles {
        for (w, l) in h.await.expect("task").into_iter().enumerate() {
            all[w].extend(l);
        }
    }
    all
}
