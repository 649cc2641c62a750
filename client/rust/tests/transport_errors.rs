//! A connection lost in the middle of a server stream (`BatchGetWorkflows`, read by
//! `get_workflow_instances`) is `UNAVAILABLE`, as a connection lost before the answer is: tonic
//! reports a body it cannot read as code Unknown ("error reading a body from connection"), which
//! the adapter passed on as `UNKNOWN`, an error a caller would not retry.
//!
//! A real `wfe-sqlite serve` process answers through a TCP relay in the test, so that the
//! connection is cut at a known point: after 256 KiB of the server's bytes, well into a stream of
//! about 8 MiB (its headers are long through). There the relay either stops relaying (a frozen
//! server or a partition: only the client's keepalive pings notice) or, once the server has been
//! SIGKILLed, closes the connection.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use wfe_core::models::WorkflowInstance;
use wfe_core::traits::WorkflowRepository;
use wfe_grpc::{ConnectOptions, GrpcPersistenceProvider, reason_of};

/// Server bytes relayed before the relay holds the connection.
const CUT_AFTER: usize = 256 * 1024;

/// A TCP relay to `upstream` that, on the connection that first carries `CUT_AFTER` bytes from
/// the server, stops relaying them, says so on `held`, and on `close` closes that connection.
struct Relay {
    addr: String,
    held: Arc<Notify>,
    close: Arc<Notify>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (held, close) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (held_tx, close_rx) = (held.clone(), close.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, held_tx.clone(), close_rx.clone()));
            }
        });
        Relay { addr, held, close }
    }
}

async fn relay(client: TcpStream, server: TcpStream, held: Arc<Notify>, close: Arc<Notify>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut relayed = 0;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        relayed += n;
        if relayed >= CUT_AFTER {
            held.notify_one();
            close.notified().await;
            break;
        }
    }
    // Dropping both halves closes the client's connection.
    upstream.abort();
}

/// A server with `count` workflows of about 400 KiB each (two 4 MiB messages of
/// `BatchGetWorkflows`), and their ids.
async fn server_with_big_workflows(count: usize) -> (ServerProcess, Vec<String>) {
    let server = ServerProcess::start_with(&["--keepalive-min-interval", "0.5"], &[]);
    let store = GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let w = WorkflowInstance::new("big", 1, json!({ "blob": "x".repeat(400 * 1024), "i": i }));
        ids.push(store.create_new_workflow(&w).await.unwrap());
    }
    (server, ids)
}

fn pinging() -> ConnectOptions {
    ConnectOptions {
        keepalive_interval: Some(Duration::from_secs(1)),
        keepalive_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stream_cut_off_midway_by_a_frozen_connection_is_unavailable() {
    // Before: `UNKNOWN (UNKNOWN): error reading a body from connection: ...`.
    let (server, ids) = server_with_big_workflows(20).await;
    let relay = Relay::start(server.addr.clone()).await;
    let store = GrpcPersistenceProvider::connect_with(&relay.addr, pinging())
        .await
        .unwrap();
    let began = Instant::now();
    let read = tokio::spawn(async move { store.get_workflow_instances(&ids).await });
    tokio::time::timeout(Duration::from_secs(10), relay.held.notified())
        .await
        .expect("the stream never carried 256 KiB");
    let err = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the read still waits 15 s after its connection froze")
        .unwrap()
        .expect_err("a read whose connection froze");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_stream_whose_server_is_killed_midway_is_unavailable() {
    // Before: `UNKNOWN (UNKNOWN): error reading a body from connection: ...`.
    let (mut server, ids) = server_with_big_workflows(20).await;
    let relay = Relay::start(server.addr.clone()).await;
    let store = GrpcPersistenceProvider::connect(&relay.addr).await.unwrap();
    let read = tokio::spawn(async move { store.get_workflow_instances(&ids).await });
    tokio::time::timeout(Duration::from_secs(10), relay.held.notified())
        .await
        .expect("the stream never carried 256 KiB");
    server.kill();
    relay.close.notify_one();
    let err = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the read still waits 15 s after its server was killed")
        .unwrap()
        .expect_err("a read whose server was killed");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}
