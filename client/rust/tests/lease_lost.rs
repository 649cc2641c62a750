//! A held lease whose renewals fail for longer than its TTL is lost (real `wfe-sqlite serve`
//! process, frozen with SIGSTOP): the server lets it run out and hands it to another owner, so
//! the holder must stop listing it as held.

mod common;

use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::json;
use wfe_core::models::{ExecutionPointer, QueueType, WorkflowInstance};
use wfe_core::traits::{DistributedLockProvider, QueueProvider, WorkflowRepository};
use wfe_grpc::{GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider};

const TTL: Duration = Duration::from_millis(1500);
/// How late after the TTL the loss may be seen (a loaded 2-core machine).
const MARGIN: Duration = Duration::from_secs(1);

/// Pauses the server (SIGSTOP) until dropped, also when an assertion fails.
struct Paused<'a>(&'a ServerProcess);

impl<'a> Paused<'a> {
    fn new(server: &'a ServerProcess) -> Self {
        server.pause();
        Self(server)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// A server, a store on it and a lock provider (the test's TTL) holding a lease on `resource`,
/// with its fencing token.
async fn holding(
    resource: &str,
) -> (
    ServerProcess,
    GrpcPersistenceProvider,
    GrpcLockProvider,
    u64,
) {
    let (server, store) = common::server_and_store().await;
    let locks = GrpcLockProvider::new(&store).with_ttl(TTL);
    assert!(locks.acquire_lock(resource).await.unwrap());
    let token = locks.fencing_token(resource).unwrap();
    (server, store, locks, token)
}

/// Another owner takes the lease on `resource` from a runtime of its own on another thread,
/// joined, so a test's runtime blocked on purpose stays blocked; its fencing token. The lease is
/// released again when `then_stop`, else kept (for its TTL).
fn taken_by_another_owner(addr: &str, resource: &str, then_stop: bool) -> u64 {
    let (addr, resource) = (addr.to_string(), resource.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let other = GrpcLockProvider::connect(&addr)
                .await
                .unwrap()
                .with_ttl(TTL);
            assert!(other.acquire_lock(&resource).await.unwrap());
            let taken = other.fencing_token(&resource).unwrap();
            if then_stop {
                other.stop().await.unwrap();
            }
            taken
        })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn a_lease_not_renewed_within_its_ttl_is_no_longer_held_and_another_owner_takes_it() {
    // Before: a lease was dropped only when a renewal was answered "not held". With the server
    // frozen every renewal failed, and `held` and `fencing_token` listed the lease for ever, while
    // the server let it run out and another owner could take it.
    let (server, store, locks, token) = holding("frozen").await;
    tokio::time::sleep(Duration::from_millis(700)).await; // a renewal or two went through
    {
        let _paused = Paused::new(&server);
        let stopped = Instant::now();
        while locks.fencing_token("frozen").is_some() && stopped.elapsed() < TTL + MARGIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = stopped.elapsed();
        assert!(
            locks.fencing_token("frozen").is_none(),
            "still held {after:?} after SIGSTOP"
        );
        assert!(locks.held().is_empty());
    }

    // Another owner takes it once the server answers again (polled: it may still be catching up).
    let other = GrpcLockProvider::new(&store).with_ttl(TTL);
    let until = Instant::now() + TTL + Duration::from_secs(3);
    while !other.acquire_lock("frozen").await.unwrap() {
        assert!(
            Instant::now() < until,
            "the lost lease was still held on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(other.fencing_token("frozen").unwrap() > token);

    // Renewals queued on the frozen server (answered now) do not make it held again; releasing
    // it is not an error and frees nothing of the other owner.
    tokio::time::sleep(TTL).await;
    assert!(locks.held().is_empty());
    locks.release_lock("frozen").await.unwrap();
    assert_eq!(other.held(), vec!["frozen".to_string()]);
    let third = GrpcLockProvider::new(&store).with_ttl(TTL);
    assert!(!third.acquire_lock("frozen").await.unwrap());
    other.stop().await.unwrap();
    locks.stop().await.unwrap();
}

#[tokio::test]
async fn a_lease_lost_while_the_server_was_frozen_stays_lost_and_is_released() {
    // The server keeps a lapsed lease for its owner while nobody takes it (RenewLocks extends it):
    // once lost it is released, not kept by an owner that no longer renews it.
    let (server, store) = common::server_and_store().await;
    let locks = GrpcLockProvider::new(&store).with_ttl(TTL);
    assert!(locks.acquire_lock("alone").await.unwrap());
    {
        let _paused = Paused::new(&server);
        let stopped = Instant::now();
        while !locks.held().is_empty() && stopped.elapsed() < TTL + MARGIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(locks.held().is_empty(), "still held after TTL + margin");
    }
    tokio::time::sleep(TTL).await; // the queued renewals and the release reach the server
    assert!(locks.held().is_empty());
    let other = GrpcLockProvider::new(&store).with_ttl(TTL);
    assert!(other.acquire_lock("alone").await.unwrap());
    other.release_lock("alone").await.unwrap();
    // Taken again afterwards: a new lease, renewed as usual.
    assert!(locks.acquire_lock("alone").await.unwrap());
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(locks.held(), vec!["alone".to_string()]);
    locks.stop().await.unwrap();
}

#[tokio::test]
async fn a_lease_past_its_ttl_is_not_looked_up_before_the_renewal_task_runs() {
    // The runtime blocked for longer than the TTL (a long synchronous step): no renewal went
    // out, the server let the lease run out and handed it to another owner. Before:
    // fencing_token() and held() still gave the old lease until the renewal task got to run.
    let (server, _store, locks, token) = holding("paused").await;
    // Blocks this (current-thread) runtime: neither renewal nor expiry runs.
    std::thread::sleep(TTL + Duration::from_millis(300));
    // Another owner (joined: this runtime stays blocked) takes it.
    let taken = taken_by_another_owner(&server.addr, "paused", true);
    assert!(taken > token, "the server did not hand the lease over");
    assert_eq!(locks.fencing_token("paused"), None);
    assert!(locks.held().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await; // the renewal task drops it
    assert_eq!(locks.fencing_token("paused"), None);
    assert!(locks.held().is_empty());
    locks.stop().await.unwrap();
}

#[tokio::test]
async fn a_lease_a_dequeue_took_ahead_is_not_handed_to_the_host_past_its_ttl() {
    // A leased workflow dequeue takes the claim and workflow leases ahead: the host's acquire_lock
    // of the claim answers true without a call. With the runtime blocked past the TTL the server
    // let them run out and another owner took the claim; the host must not be told it has it.
    let (server, store) = common::server_and_store().await;
    let locks = GrpcLockProvider::new(&store)
        .with_ttl(TTL)
        .with_background_release(true);
    let queue = GrpcQueueProvider::new(&store)
        .with_wait(Duration::from_millis(300))
        .with_locks(&locks);
    let mut workflow = WorkflowInstance::new("lease-lost-test", 1, json!({"n": 0}));
    workflow.execution_pointers.push(ExecutionPointer::new(0));
    let creator = GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap();
    let id = creator.create_new_workflow(&workflow).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );
    let claim = format!("workflow-execution.{id}");
    let token = locks
        .fencing_token(&claim)
        .expect("the dequeue took the claim");
    // Blocks this (current-thread) runtime: neither renewal nor expiry runs.
    std::thread::sleep(TTL + Duration::from_millis(300));
    // Another owner takes the claim and keeps it (for its TTL).
    let taken = taken_by_another_owner(&server.addr, &claim, false);
    assert!(taken > token, "the server did not hand the claim over");
    assert!(
        !locks.acquire_lock(&claim).await.unwrap(),
        "told it holds a claim the server gave to another owner"
    );
    locks.stop().await.unwrap();
}
