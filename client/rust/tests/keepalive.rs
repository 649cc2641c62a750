//! HTTP/2 keepalive against a real `wfe-sqlite serve` process: the adapter pings, so a waiting
//! dequeue (a call with a long deadline) on a frozen server (SIGSTOP: its TCP connection stays
//! up, so nothing else notices) ends with `UNAVAILABLE`, and the lifecycle watch stream (no
//! deadline) ends and is opened again (its subscribers see no error: tonic reports the broken
//! connection under the stream as code Unknown, which the watch only logs); and the server accepts pings at the adapters' rate instead
//! of closing the connection (GOAWAY `too_many_pings`, gRPC core's answer to pings more often than
//! every 5 minutes). The tests ping every second to a server that accepts them every half second:
//! the ratio of the defaults (20 s pings, a server that accepts them down to 10 s).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ServerProcess;
use wfe_core::models::{LifecycleEvent, LifecycleEventType, QueueType};
use wfe_core::traits::{LifecyclePublisher, QueueProvider};
use wfe_grpc::connect::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT};
use wfe_grpc::{
    ConnectOptions, GrpcLifecyclePublisher, GrpcPersistenceProvider, GrpcQueueProvider, reason_of,
};

const ACCEPTING: &[&str] = &["--keepalive-min-interval", "0.5"];

fn pinging() -> ConnectOptions {
    ConnectOptions {
        keepalive_interval: Some(Duration::from_secs(1)),
        keepalive_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

/// The adapter's log lines, captured for one test (a current-thread runtime: every task of the
/// test runs on the thread the subscriber is set for).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Whether the watch stream ended, waiting up to `within` for it.
    async fn watch_ended(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.text().contains("lifecycle watch stream ended") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn event(id: &str) -> LifecycleEvent {
    LifecycleEvent::new(id.to_string(), "def", 1, LifecycleEventType::Started)
}

#[test]
fn the_defaults_find_a_frozen_server_within_a_minute_at_twice_the_servers_accepted_interval() {
    assert!(DEFAULT_KEEPALIVE_INTERVAL + DEFAULT_KEEPALIVE_TIMEOUT <= Duration::from_secs(60));
    assert!(DEFAULT_KEEPALIVE_INTERVAL >= Duration::from_secs(2 * 10)); // server default: 10 s
}

#[tokio::test]
async fn a_frozen_server_ends_a_waiting_dequeue_with_unavailable_and_the_watch_stream() {
    // Before: pings every 30 s, 20 s to answer (tonic's default): the dequeue waited up to 50 s
    // and the watch stream as long before either noticed.
    let log = Log::default();
    let _guard = log.install();
    let server = ServerProcess::start_with(ACCEPTING, &[]);
    let store = GrpcPersistenceProvider::connect_with(&server.addr, pinging())
        .await
        .unwrap();
    let publisher = GrpcLifecyclePublisher::new(&store);
    let mut events = publisher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let queue = GrpcQueueProvider::new(&store).with_wait(Duration::from_secs(60));
    let dequeue = tokio::spawn(async move { queue.dequeue_work(QueueType::Workflow).await });
    tokio::time::sleep(Duration::from_millis(500)).await; // the dequeue waits on the server
    assert!(!dequeue.is_finished());

    server.pause();
    let began = Instant::now();
    let dequeued = tokio::time::timeout(Duration::from_secs(15), dequeue).await;
    let dequeue_took = began.elapsed();
    let ended = log.watch_ended(Duration::from_secs(15)).await;
    let watch_took = began.elapsed();
    server.resume();

    let err = dequeued
        .expect("the dequeue still waits 15 s after the server froze")
        .unwrap()
        .expect_err("a dequeue on a frozen server");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
    assert!(dequeue_took < Duration::from_secs(5), "{dequeue_took:?}");
    assert!(
        ended,
        "the watch stream still open 15 s after the server froze"
    );
    assert!(watch_took < Duration::from_secs(5), "{watch_took:?}");
    // The server answers again: the watch stream is opened again, calls work.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.publish(event("wf-after")).await.unwrap();
        publisher.flush().await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(received) => {
                assert_eq!(received.unwrap().workflow_instance_id, "wf-after");
                break;
            }
            Err(_) => assert!(Instant::now() < until, "the watch was not opened again"),
        }
    }
    let queue = GrpcQueueProvider::new(&store);
    assert_eq!(queue.dequeue_work(QueueType::Workflow).await.unwrap(), None);
}

/// Pings for 6 s with the watch stream open (it sends no data) and calls now and then; whether the
/// server closed the connection under the watch.
async fn closed_while_pinging(server: &ServerProcess, log: &Log) -> bool {
    let publisher = GrpcLifecyclePublisher::connect_with(&server.addr, pinging())
        .await
        .unwrap();
    let mut events = publisher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    if log.watch_ended(Duration::from_secs(6)).await {
        return true;
    }
    publisher.publish(event("wf-pinged")).await.unwrap();
    publisher.flush().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the watch did not relay the event")
        .unwrap();
    assert_eq!(received.workflow_instance_id, "wf-pinged");
    false
}

#[tokio::test]
async fn pings_at_the_accepted_rate_keep_the_watch_stream_open() {
    // Before: gRPC core's defaults (a ping per 5 minutes accepted, 2 strikes) closed the
    // connection with GOAWAY too_many_pings after the fourth ping.
    let log = Log::default();
    let _guard = log.install();
    let server = ServerProcess::start_with(ACCEPTING, &[]);
    assert!(!closed_while_pinging(&server, &log).await, "{}", log.text());
}

#[tokio::test]
async fn pings_more_often_than_the_server_accepts_close_the_connection() {
    // The server still protects itself from a client that pings too often (its default, 10 s).
    let log = Log::default();
    let _guard = log.install();
    let server = ServerProcess::start();
    assert!(closed_while_pinging(&server, &log).await);
}

#[tokio::test]
async fn keepalive_off_and_a_zero_timeout() {
    let server = ServerProcess::start();
    let off = ConnectOptions {
        keepalive_interval: Some(Duration::ZERO),
        ..Default::default()
    };
    GrpcPersistenceProvider::connect_with(&server.addr, off)
        .await
        .unwrap();
    let zero = ConnectOptions {
        keepalive_timeout: Some(Duration::ZERO),
        ..Default::default()
    };
    let Err(err) = GrpcPersistenceProvider::connect_with(&server.addr, zero).await else {
        panic!("a zero keepalive_timeout is refused");
    };
    assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
    assert!(err.to_string().contains("keepalive_timeout"), "{err}");
}

#[tokio::test]
async fn a_keepalive_too_long_to_add_to_an_instant_is_refused_or_works() {
    // "Never give up on a ping" or "ping very rarely" written as Duration::MAX: hyper adds these
    // to an Instant. Whatever the adapter does with them, calls must not fail under them.
    let server = ServerProcess::start_with(ACCEPTING, &[]);
    for (field, options) in [
        (
            "keepalive_timeout",
            ConnectOptions {
                keepalive_interval: Some(Duration::from_secs(1)),
                keepalive_timeout: Some(Duration::MAX),
                ..Default::default()
            },
        ),
        (
            "keepalive_interval",
            ConnectOptions {
                keepalive_interval: Some(Duration::MAX),
                ..Default::default()
            },
        ),
    ] {
        let store = match GrpcPersistenceProvider::connect_with(&server.addr, options).await {
            Ok(store) => store,
            Err(err) => {
                assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
                assert!(err.to_string().contains(field), "{err}");
                continue;
            }
        };
        let queue = GrpcQueueProvider::new(&store);
        let until = Instant::now() + Duration::from_secs(3); // a ping or two due meanwhile
        while Instant::now() < until {
            let answer = queue.dequeue_work(QueueType::Workflow).await;
            assert!(answer.is_ok(), "{field}: {answer:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
