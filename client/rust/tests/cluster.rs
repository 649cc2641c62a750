//! The cluster providers and revisions against live wfe-sqlite servers (one server with a fresh
//! SQLite file per test): stale persists refused, leases that exclude other owners, survive long
//! steps by renewal and are freed after their owner process is SIGKILLed, a queue that hands
//! each item out once and wakes a waiting dequeue at once, lifecycle events relayed between
//! publishers, and what a `wfe::WorkflowHost` does when its persist is refused.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::ServerProcess;
use serde_json::json;
use wfe::WorkflowHostBuilder;
use wfe::models::{ExecutionResult, LifecycleEvent, LifecycleEventType, WorkflowStatus};
use wfe::traits::step::{StepBody, StepExecutionContext};
use wfe_core::models::{EventSubscription, ExecutionPointer, QueueType, WorkflowInstance};
use wfe_core::traits::{
    DistributedLockProvider, EventRepository, LifecyclePublisher, PersistenceProvider,
    QueueProvider, SubscriptionRepository, WorkflowRepository,
};
use wfe_grpc::{
    GrpcLifecyclePublisher, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider,
    is_revision_conflict, reason_of,
};

async fn server() -> ServerProcess {
    tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .unwrap()
}

async fn store(server: &ServerProcess) -> GrpcPersistenceProvider {
    GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap()
}

fn workflow() -> WorkflowInstance {
    let mut w = WorkflowInstance::new("cluster-test", 1, json!({"n": 0}));
    w.execution_pointers.push(ExecutionPointer::new(0));
    w
}

// ── Revisions ───────────────────────────────────────────────────────────

#[tokio::test]
async fn a_stale_persist_is_refused_and_writes_nothing() {
    let server = server().await;
    let (a, b, reader) = (
        store(&server).await,
        store(&server).await,
        store(&server).await,
    );
    let id = a.create_new_workflow(&workflow()).await.unwrap();
    assert_eq!(a.known_revision(&id), Some(1));

    let mut seen_by_b = b.get_workflow_instance(&id).await.unwrap();
    assert_eq!(b.known_revision(&id), Some(1));

    let mut by_a = a.get_workflow_instance(&id).await.unwrap();
    by_a.data = json!({"n": 1, "by": "a"});
    a.persist_workflow(&by_a).await.unwrap();
    assert_eq!(a.known_revision(&id), Some(2));

    // B still holds revision 1: its write is refused and nothing is written.
    seen_by_b.data = json!({"n": 1, "by": "b"});
    let err = b.persist_workflow(&seen_by_b).await.unwrap_err();
    assert!(is_revision_conflict(&err), "{err:?}");
    assert_eq!(reason_of(&err), Some("REVISION_CONFLICT"));
    let subscription = EventSubscription::new(&id, 0, "p0", "ev", "key", chrono::Utc::now());
    let err = b
        .persist_workflow_with_subscriptions(&seen_by_b, std::slice::from_ref(&subscription))
        .await
        .unwrap_err();
    assert!(is_revision_conflict(&err), "{err:?}");
    assert!(
        reader.get_subscription(&subscription.id).await.is_err(),
        "the subscription of a refused persist is not stored"
    );
    let stored = reader.get_workflow_instance(&id).await.unwrap();
    assert_eq!(stored.data, json!({"n": 1, "by": "a"}));
    assert_eq!(reader.known_revision(&id), Some(2));
    assert_eq!(
        b.known_revision(&id),
        Some(1),
        "a refused persist changes nothing"
    );

    // After reading again B writes on top of A's state.
    let mut fresh = b.get_workflow_instance(&id).await.unwrap();
    fresh.data["by"] = json!("b after a");
    b.persist_workflow_with_subscriptions(&fresh, std::slice::from_ref(&subscription))
        .await
        .unwrap();
    assert_eq!(b.known_revision(&id), Some(3));
    assert_eq!(
        reader.get_subscription(&subscription.id).await.unwrap().id,
        subscription.id
    );
    // A is now the stale one.
    let err = a.persist_workflow(&by_a).await.unwrap_err();
    assert!(is_revision_conflict(&err), "{err:?}");

    // A provider that never read the workflow knows no revision: it writes unchecked.
    let blind = store(&server).await;
    assert_eq!(blind.known_revision(&id), None);
    let mut overwrite = fresh.clone();
    overwrite.data = json!({"blind": true});
    blind.persist_workflow(&overwrite).await.unwrap();
    assert_eq!(blind.known_revision(&id), Some(4));
}

#[tokio::test]
async fn the_first_read_after_a_dequeue_is_the_dequeued_copy_and_the_next_one_is_fresh() {
    let server = server().await;
    let host_store = store(&server).await;
    let queue = GrpcQueueProvider::new(&host_store);
    let other = store(&server).await;
    let id = other.create_new_workflow(&workflow()).await.unwrap();
    // Created RUNNABLE and due, the server queues it itself; queueing it again keeps one entry.
    queue.queue_work(&id, QueueType::Workflow).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );

    // Someone else writes after the dequeue.
    let mut changed = other.get_workflow_instance(&id).await.unwrap();
    changed.data = json!({"n": 2});
    other.persist_workflow(&changed).await.unwrap();

    // The host's lookup right after the dequeue is answered by the copy it brought (as of the
    // dequeue), once; the next read goes to the server.
    let first = host_store.get_workflow_instance(&id).await.unwrap();
    assert_eq!(first.data, json!({"n": 0}));
    assert_eq!(host_store.known_revision(&id), Some(1));
    // Persisting that copy would overwrite a newer state: refused.
    let err = host_store.persist_workflow(&first).await.unwrap_err();
    assert!(is_revision_conflict(&err), "{err:?}");
    let second = host_store.get_workflow_instance(&id).await.unwrap();
    assert_eq!(second.data, json!({"n": 2}));
    assert_eq!(host_store.known_revision(&id), Some(2));

    // A queue provider not built on the store brings nothing along.
    let plain = GrpcQueueProvider::connect(&server.addr).await.unwrap();
    plain.queue_work(&id, QueueType::Workflow).await.unwrap();
    assert_eq!(
        plain.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );
}

/// A host's store and the event queue built on it, and another client's store with a workflow of
/// its own (its id): what the event tests start from.
struct EventScene {
    server: ServerProcess,
    host_store: GrpcPersistenceProvider,
    queue: GrpcQueueProvider,
    other: GrpcPersistenceProvider,
    id: String,
    /// Before the events the tests create: the `as_of` their subscriptions start from.
    since: chrono::DateTime<chrono::Utc>,
}

async fn event_scene() -> EventScene {
    let server = server().await;
    let host_store = store(&server).await;
    let queue = GrpcQueueProvider::new(&host_store);
    let other = store(&server).await;
    let id = other.create_new_workflow(&workflow()).await.unwrap();
    EventScene {
        server,
        host_store,
        queue,
        other,
        id,
        since: chrono::Utc::now() - chrono::Duration::seconds(5),
    }
}

impl EventScene {
    /// A subscription of the scene's workflow (pointer `pointer`) as of `since` + `later`, stored
    /// by the other client.
    async fn subscribe(
        &self,
        pointer: &str,
        name: &str,
        key: &str,
        later: chrono::Duration,
    ) -> EventSubscription {
        let as_of = self.since + later;
        let mut sub = EventSubscription::new(&self.id, 0, pointer, name, key, as_of);
        sub.id = self.other.create_event_subscription(&sub).await.unwrap();
        sub
    }
}

#[tokio::test]
async fn an_event_dequeue_answers_the_hosts_event_and_subscription_reads_that_follow() {
    let scene = event_scene().await;
    let (server, host_store, queue, other) =
        (&scene.server, &scene.host_store, &scene.queue, &scene.other);
    let zero = chrono::Duration::zero();
    let sub = scene.subscribe("p0", "paid", "order-1", zero).await;
    let hour = chrono::Duration::hours(1);
    scene.subscribe("p1", "paid", "order-1", hour).await;
    let event = wfe_core::models::Event::new("paid", "order-1", json!({"amount": 3}));
    let event_id = other.create_event(&event).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Event).await.unwrap(),
        Some(event_id.clone())
    );

    // What a WFE host's event consumer reads right after: both came with the dequeue.
    let (got, subscriptions) = without_the_server(server, async {
        let got = host_store.get_event(&event_id).await.unwrap();
        let subscriptions = host_store
            .get_subscriptions(&got.event_name, &got.event_key, got.event_time)
            .await
            .unwrap();
        (got, subscriptions)
    })
    .await;
    assert_eq!(got.event_data, json!({"amount": 3}));
    assert_eq!(
        subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        vec![sub.id.clone()],
        "only the subscription as of the event's time"
    );
    // Once only: the next reads go to the server (and agree).
    let again = host_store
        .get_subscriptions(&got.event_name, &got.event_key, got.event_time)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    other.mark_event_processed(&event_id).await.unwrap();
    assert!(host_store.get_event(&event_id).await.unwrap().is_processed);
}

#[tokio::test]
async fn an_event_nobody_waits_for_is_marked_processed_by_its_dequeue() {
    let scene = event_scene().await;
    let (server, host_store, queue, other) =
        (&scene.server, &scene.host_store, &scene.queue, &scene.other);
    // A subscription for another key, and one subscribed after the event's time: neither waits.
    let zero = chrono::Duration::zero();
    scene.subscribe("p0", "done", "other", zero).await;
    let hour = chrono::Duration::hours(1);
    scene.subscribe("p1", "done", "w-1", hour).await;
    let event = wfe_core::models::Event::new("done", "w-1", json!({}));
    let event_id = other.create_event(&event).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Event).await.unwrap(),
        Some(event_id.clone())
    );
    // Stored processed by the dequeue itself.
    assert!(other.get_event(&event_id).await.unwrap().is_processed);
    // The event consumer's read, its subscriptions (none) and its mark: no round trip.
    let subscriptions = without_the_server(server, async {
        let got = host_store.get_event(&event_id).await.unwrap();
        let subscriptions = host_store
            .get_subscriptions(&got.event_name, &got.event_key, got.event_time)
            .await
            .unwrap();
        host_store.mark_event_processed(&event_id).await.unwrap();
        subscriptions
    })
    .await;
    assert!(subscriptions.is_empty());
    // Once only: a second mark goes to the server (and succeeds: marking is idempotent).
    host_store.mark_event_processed(&event_id).await.unwrap();

    // Turned off: the dequeue leaves the event as it is, for the host's own mark.
    let unmarking = GrpcQueueProvider::new(host_store).with_unsubscribed_marking(false);
    let second = other
        .create_event(&wfe_core::models::Event::new("done", "w-2", json!({})))
        .await
        .unwrap();
    assert_eq!(
        unmarking.dequeue_work(QueueType::Event).await.unwrap(),
        Some(second.clone())
    );
    assert!(!other.get_event(&second).await.unwrap().is_processed);
}

// ── Locks ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn leases_exclude_other_owners_and_fencing_tokens_grow() {
    let server = server().await;
    let one = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let two = GrpcLockProvider::connect(&server.addr).await.unwrap();
    assert_ne!(one.owner(), two.owner());

    assert!(one.acquire_lock("r").await.unwrap());
    let first_token = one.fencing_token("r").unwrap();
    assert!(!two.acquire_lock("r").await.unwrap());
    assert!(!one.acquire_lock("r").await.unwrap(), "not re-entrant");
    assert_eq!(two.fencing_token("r"), None);

    // Releasing someone else's lease does nothing.
    two.release_lock("r").await.unwrap();
    assert!(!two.acquire_lock("r").await.unwrap());

    one.release_lock("r").await.unwrap();
    assert_eq!(one.fencing_token("r"), None);
    assert!(two.acquire_lock("r").await.unwrap());
    assert!(two.fencing_token("r").unwrap() > first_token);
    assert!(two.acquire_lock("s").await.unwrap());
    assert_eq!(
        two.held().into_iter().collect::<HashSet<_>>(),
        HashSet::from(["r".to_string(), "s".to_string()])
    );

    // stop releases everything the provider holds.
    two.stop().await.unwrap();
    assert!(two.held().is_empty());
    assert!(one.acquire_lock("r").await.unwrap());
    assert!(one.acquire_lock("s").await.unwrap());
}

/// The contract reads a zero TTL as absent (the server's 30 s): `with_ttl(Duration::ZERO)` took
/// 30 s leases while the provider believed in 0 (renewals every 10 ms, a `stop` that gave up on
/// releasing at once and left them held). A TTL outside 100 ms..=1 h is refused before anything
/// is taken (INVALID_ARGUMENT naming `ttl`, as the Python adapter) by acquire, start and a leased
/// dequeue alike.
#[tokio::test]
async fn a_ttl_outside_the_bounds_is_refused_zero_included() {
    let server = server().await;
    let store = store(&server).await;
    let id = store.create_new_workflow(&workflow()).await.unwrap();
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(99),
        Duration::from_secs(3601),
        Duration::MAX,
    ] {
        let locks = GrpcLockProvider::new(&store).with_ttl(ttl);
        let err = locks
            .acquire_lock("bounded-ttl")
            .await
            .expect_err(&format!("acquire with ttl {ttl:?} was answered"));
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{ttl:?}: {err}");
        assert!(err.to_string().contains("ttl"), "{err}");
        assert!(locks.held().is_empty(), "{ttl:?}");
        let err = locks.start().await.expect_err("start with a bad ttl");
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{ttl:?}: {err}");
        let queue = GrpcQueueProvider::new(&store)
            .with_locks(&locks)
            .with_wait(Duration::ZERO);
        let err = queue
            .dequeue_work(QueueType::Workflow)
            .await
            .expect_err("leased dequeue with a bad ttl");
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{ttl:?}: {err}");
        locks.stop().await.unwrap();
    }
    // Nothing was taken: another owner gets the lease at once, the workflow is still queued.
    let other = GrpcLockProvider::new(&store);
    assert!(other.acquire_lock("bounded-ttl").await.unwrap());
    let plain = GrpcQueueProvider::new(&store).with_wait(Duration::ZERO);
    assert_eq!(
        plain.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id)
    );
    // The bounds themselves are taken.
    for ttl in [Duration::from_millis(100), Duration::from_secs(3600)] {
        let locks = GrpcLockProvider::new(&store).with_ttl(ttl);
        assert!(locks.acquire_lock(&format!("bound-{ttl:?}")).await.unwrap());
        locks.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_background_release_is_awaited_by_the_next_acquire_and_by_stop() {
    let server = server().await;
    let one = GrpcLockProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_background_release(true);
    let two = GrpcLockProvider::connect(&server.addr).await.unwrap();
    for _ in 0..20 {
        assert!(one.acquire_lock("r").await.unwrap(), "own release not seen");
        one.release_lock("r").await.unwrap();
    }
    for resource in ["r", "s", "t"] {
        assert!(one.acquire_lock(resource).await.unwrap());
    }
    for resource in ["r", "s"] {
        one.release_lock(resource).await.unwrap();
    }
    // stop waits for the releases in flight and releases what is still held ("t").
    one.stop().await.unwrap();
    for resource in ["r", "s", "t"] {
        assert!(two.acquire_lock(resource).await.unwrap(), "{resource}");
    }
}

#[tokio::test]
async fn stop_waits_a_bounded_time_for_a_server_that_does_not_answer() {
    // As the Python adapter's close: a frozen server holds a host's shutdown up for at most
    // STOP_RELEASE_WAIT (5 s, or the TTL), not for a 30 s call deadline; the leases not
    // released run out after their TTL.
    let server = server().await;
    let locks = GrpcLockProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_background_release(true);
    for resource in ["r", "s", "t"] {
        assert!(locks.acquire_lock(resource).await.unwrap());
    }
    server.pause();
    // One release in flight (background) and two leases still held when stop comes.
    locks.release_lock("r").await.unwrap();
    let started = Instant::now();
    let stopped = locks.stop().await;
    let took = started.elapsed();
    server.resume();
    assert!(
        took < wfe_grpc::lock::STOP_RELEASE_WAIT + Duration::from_secs(3),
        "stop took {took:?}"
    );
    let err = stopped.expect_err("the releases did not happen: stop says so");
    assert_eq!(reason_of(&err), Some("DEADLINE_EXCEEDED"), "{err}");
    assert!(err.to_string().contains("run out after"), "{err}");
    assert!(locks.held().is_empty());

    // A short TTL bounds the wait further.
    let locks = GrpcLockProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_ttl(Duration::from_secs(1));
    assert!(locks.acquire_lock("u").await.unwrap());
    server.pause();
    let started = Instant::now();
    let stopped = locks.stop().await;
    let took = started.elapsed();
    server.resume();
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert_eq!(reason_of(&stopped.unwrap_err()), Some("DEADLINE_EXCEEDED"));
}

/// A background release carried by a linked queue's workflow dequeue is confirmed only when that
/// dequeue is answered, and an idle queue's dequeue waits (here 8 s; up to 60 s). `stop` waited
/// for that answer first, then gave the leases still held no time at all: it took 5 s and
/// returned DEADLINE_EXCEEDED with the host's claim and workflow lease still held for their TTL.
/// It now sends the releases in flight again alongside the held leases (the server skips a lease
/// the owner does not hold), so a stop with such a dequeue waiting frees everything at once (the
/// freed workflow is then queued again, and that dequeue, still this owner's, takes it).
#[tokio::test]
async fn stop_frees_every_lease_while_a_waiting_dequeue_carries_a_release() {
    let server = server().await;
    let store = store(&server).await;
    let locks = GrpcLockProvider::new(&store).with_background_release(true);
    let queue = GrpcQueueProvider::new(&store)
        .with_locks(&locks)
        .with_wait(Duration::from_secs(8));
    let id = store.create_new_workflow(&workflow()).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );
    // The host asks for both leases the dequeue took, and takes one more of its own.
    assert!(locks.acquire_lock(&claim_of(&id)).await.unwrap());
    assert!(locks.acquire_lock(&id).await.unwrap());
    assert!(locks.acquire_lock("r").await.unwrap());
    // Its release waits in the outbox; the next dequeue (nothing queued: it waits) carries it.
    locks.release_lock("r").await.unwrap();
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.dequeue_work(QueueType::Workflow).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopped = locks.stop().await;
    let took = started.elapsed();
    stopped.unwrap_or_else(|e| panic!("stop after {took:?}: {e}"));
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    let other = GrpcLockProvider::new(&store);
    assert!(other.acquire_lock("r").await.unwrap());
    // The claim and the workflow lease were freed too: the server queued the workflow again and
    // handed it to the dequeue still waiting (long before its 8 s).
    let again = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the waiting dequeue was not handed the freed workflow");
    assert_eq!(again.unwrap().unwrap(), Some(id));
    queue.stop().await.unwrap();
}

/// Runs `f` while the server is paused (SIGSTOP): it must be answered without a round trip.
async fn without_the_server<T>(
    server: &ServerProcess,
    f: impl std::future::Future<Output = T>,
) -> T {
    server.pause();
    let answered = tokio::time::timeout(Duration::from_secs(3), f).await;
    server.resume();
    answered.expect("answered without a round trip (the server was paused)")
}

#[tokio::test]
async fn a_wfe_claim_takes_the_workflow_lease_and_reads_the_workflow_in_the_same_call() {
    let server = server().await;
    let host_store = store(&server).await;
    let locks = GrpcLockProvider::new(&host_store).with_background_release(true);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let other = store(&server).await;
    let id = other.create_new_workflow(&workflow()).await.unwrap();
    let mut changed = other.get_workflow_instance(&id).await.unwrap();
    changed.data = json!({"n": 5});
    other.persist_workflow(&changed).await.unwrap();

    let claim = format!("workflow-execution.{id}");
    assert!(locks.acquire_lock(&claim).await.unwrap());
    let (claim_token, id_token) = (
        locks.fencing_token(&claim).unwrap(),
        locks.fencing_token(&id).unwrap(),
    );
    assert!(id_token > claim_token, "both leases taken in one call");
    assert!(!other_locks.acquire_lock(&id).await.unwrap());

    // What the executor does next (acquire the id, read the workflow) needs no round trip, and
    // the read is the state after the leases were taken.
    let (acquired, read) = without_the_server(&server, async {
        let acquired = locks.acquire_lock(&id).await.unwrap();
        (
            acquired,
            host_store.get_workflow_instance(&id).await.unwrap(),
        )
    })
    .await;
    assert!(acquired);
    assert_eq!(read.data, json!({"n": 5}));
    assert_eq!(host_store.known_revision(&id), Some(2));
    assert!(!locks.acquire_lock(&id).await.unwrap(), "not re-entrant");
    let again = host_store.get_workflow_instance(&id).await.unwrap();
    assert_eq!(
        again.data,
        json!({"n": 5}),
        "the next read goes to the server"
    );

    // The id's release goes with the claim's; stop waits for releases in flight.
    locks.release_lock(&id).await.unwrap();
    locks.release_lock(&claim).await.unwrap();
    locks.stop().await.unwrap();
    assert!(other_locks.acquire_lock(&claim).await.unwrap());
    assert!(other_locks.acquire_lock(&id).await.unwrap());

    // All or none: while another owner holds the id, the claim is not taken either.
    let mine = GrpcLockProvider::new(&host_store);
    let second = other.create_new_workflow(&workflow()).await.unwrap();
    let second_claim = format!("workflow-execution.{second}");
    assert!(other_locks.acquire_lock(&second).await.unwrap());
    assert!(!mine.acquire_lock(&second_claim).await.unwrap());
    assert!(mine.held().is_empty());
    other_locks.release_lock(&second).await.unwrap();

    // A claim released without anyone asking for its workflow frees that lease too.
    assert!(mine.acquire_lock(&second_claim).await.unwrap());
    mine.release_lock(&second_claim).await.unwrap();
    assert!(mine.held().is_empty());
    assert!(other_locks.acquire_lock(&second).await.unwrap());
    other_locks.release_lock(&second).await.unwrap();

    // Without coalescing a claim is one lease like any other.
    let plain = GrpcLockProvider::new(&host_store).with_claim_coalescing(false);
    assert!(plain.acquire_lock(&second_claim).await.unwrap());
    assert_eq!(plain.held(), vec![second_claim.clone()]);
    assert!(other_locks.acquire_lock(&second).await.unwrap());
}

#[tokio::test]
async fn a_released_workflow_lease_whose_claim_stays_held_is_freed_on_its_own() {
    let server = server().await;
    let host_store = store(&server).await;
    let locks = GrpcLockProvider::new(&host_store).with_background_release(true);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let claim = "workflow-execution.w1";
    assert!(locks.acquire_lock(claim).await.unwrap());
    assert!(locks.acquire_lock("w1").await.unwrap());
    locks.release_lock("w1").await.unwrap();
    assert_eq!(locks.held(), vec![claim.to_string()]);
    let started = Instant::now();
    while !other_locks.acquire_lock("w1").await.unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the workflow lease was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !other_locks.acquire_lock(claim).await.unwrap(),
        "the claim is still held"
    );
    // The claim's release then frees the claim alone.
    locks.release_lock(claim).await.unwrap();
    locks.stop().await.unwrap();
    assert!(other_locks.acquire_lock(claim).await.unwrap());
}

// ── Leased dequeues (GrpcQueueProvider::with_locks) ─────────────────────

/// A server with a Prometheus endpoint (to count the calls it answered).
async fn server_with_metrics() -> ServerProcess {
    tokio::task::spawn_blocking(|| {
        let server = ServerProcess::start_with(&["--metrics-listen", "127.0.0.1:0"], &[]);
        server.metrics_url();
        server
    })
    .await
    .unwrap()
}

/// A host's lock and queue providers on one store, linked: workflow dequeues take the leases.
fn linked(store: &GrpcPersistenceProvider) -> (GrpcLockProvider, GrpcQueueProvider) {
    let locks = GrpcLockProvider::new(store).with_background_release(true);
    let queue = GrpcQueueProvider::new(store)
        .with_wait(Duration::from_millis(300))
        .with_locks(&locks);
    (locks, queue)
}

fn claim_of(id: &str) -> String {
    format!("workflow-execution.{id}")
}

/// Workflows created by another process, so the server queues them (RUNNABLE and due).
async fn queued_workflows(server: &ServerProcess, n: usize) -> Vec<String> {
    let other = store(server).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(other.create_new_workflow(&workflow()).await.unwrap());
    }
    ids
}

/// Waits until `probe` takes `resource` (and releases it again), up to `within`; the time it took.
async fn until_free(probe: &GrpcLockProvider, resource: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while !probe.acquire_lock(resource).await.unwrap() {
        assert!(
            started.elapsed() < within,
            "{resource} still held after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe.release_lock(resource).await.unwrap();
    started.elapsed()
}

#[tokio::test]
async fn a_leased_dequeue_takes_both_leases_and_the_hosts_acquires_and_read_need_no_call() {
    let server = server_with_metrics().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked(&host_store);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 1).await;
    let id = &ids[0];
    let claim = claim_of(id);

    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );
    // Both leases are this provider's: known, with their fencing tokens, and refused to others.
    let (claim_token, id_token) = (
        locks.fencing_token(&claim).expect("claim lease"),
        locks.fencing_token(id).expect("workflow lease"),
    );
    assert_ne!(claim_token, id_token);
    let mut held = locks.held();
    held.sort();
    let mut expected = vec![claim.clone(), id.clone()];
    expected.sort();
    assert_eq!(held, expected);
    assert!(!other_locks.acquire_lock(&claim).await.unwrap());
    assert!(!other_locks.acquire_lock(id).await.unwrap());

    // What the host does next (look the workflow up, take the claim, the executor takes the id
    // and reads the workflow) is answered without a round trip.
    let (lookup, claimed, locked, read) = without_the_server(&server, async {
        (
            host_store.get_workflow_instance(id).await.unwrap(),
            locks.acquire_lock(&claim).await.unwrap(),
            locks.acquire_lock(id).await.unwrap(),
            host_store.get_workflow_instance(id).await.unwrap(),
        )
    })
    .await;
    assert!(claimed && locked);
    assert_eq!(lookup.id, *id);
    assert_eq!(read.id, *id);
    assert_eq!(host_store.known_revision(id), Some(1));
    assert!(!locks.acquire_lock(id).await.unwrap(), "not re-entrant");
    assert!(!locks.acquire_lock(&claim).await.unwrap(), "not re-entrant");
    assert_eq!(locks.fencing_token(&claim), Some(claim_token));
    assert_eq!(locks.fencing_token(id), Some(id_token));
    assert_eq!(server.handled_calls("LockService", "AcquireLock"), 4);
}

#[tokio::test]
async fn the_release_that_ends_a_step_travels_with_the_next_dequeue() {
    let server = server_with_metrics().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked(&host_store);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 3).await;

    // Three steps as a host runs them: dequeue, acquire both, read, persist (here: done, so
    // that the server does not queue it again), release both, dequeue again.
    let mut dequeued = Vec::new();
    for _ in 0..3 {
        let id = queue
            .dequeue_work(QueueType::Workflow)
            .await
            .unwrap()
            .expect("an item");
        let claim = claim_of(&id);
        assert!(locks.acquire_lock(&claim).await.unwrap());
        assert!(locks.acquire_lock(&id).await.unwrap());
        let mut w = host_store.get_workflow_instance(&id).await.unwrap();
        w.status = WorkflowStatus::Complete;
        host_store.persist_workflow(&w).await.unwrap();
        locks.release_lock(&id).await.unwrap();
        locks.release_lock(&claim).await.unwrap();
        dequeued.push(id);
    }
    assert_eq!(dequeued, ids, "oldest first");
    // The last step's release goes with the next (empty) dequeue.
    assert_eq!(queue.dequeue_work(QueueType::Workflow).await.unwrap(), None);
    assert!(locks.held().is_empty());
    assert_eq!(
        server.handled_calls("LockService", "ReleaseLock"),
        0,
        "no release was sent on its own"
    );
    assert_eq!(server.handled_calls("LockService", "AcquireLock"), 0);
    assert_eq!(server.handled_calls("QueueService", "DequeueWork"), 4);
    for id in &ids {
        assert!(
            other_locks.acquire_lock(&claim_of(id)).await.unwrap(),
            "{id}"
        );
        assert!(other_locks.acquire_lock(id).await.unwrap(), "{id}");
    }
}

#[tokio::test]
async fn a_release_no_dequeue_takes_goes_on_its_own_and_acquire_and_stop_see_it_done() {
    let server = server_with_metrics().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked(&host_store);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 3).await;

    // Not carried within 50 ms: sent on its own.
    let first = queue
        .dequeue_work(QueueType::Workflow)
        .await
        .unwrap()
        .unwrap();
    assert!(locks.acquire_lock(&claim_of(&first)).await.unwrap());
    assert!(locks.acquire_lock(&first).await.unwrap());
    locks.release_lock(&first).await.unwrap();
    locks.release_lock(&claim_of(&first)).await.unwrap();
    let started = Instant::now();
    while server.handled_calls("LockService", "ReleaseLock") == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "sent before its delay"
    );
    assert_eq!(server.handled_calls("LockService", "ReleaseLock"), 1);
    assert!(other_locks.acquire_lock(&claim_of(&first)).await.unwrap());
    assert!(other_locks.acquire_lock(&first).await.unwrap());

    // The provider's own next acquire of a resource whose release waits in the outbox sends
    // it at once and waits for it.
    let second = queue
        .dequeue_work(QueueType::Workflow)
        .await
        .unwrap()
        .unwrap();
    assert!(locks.acquire_lock(&claim_of(&second)).await.unwrap());
    assert!(locks.acquire_lock(&second).await.unwrap());
    locks.release_lock(&second).await.unwrap();
    locks.release_lock(&claim_of(&second)).await.unwrap();
    let started = Instant::now();
    assert!(
        locks.acquire_lock(&second).await.unwrap(),
        "own release not seen"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    locks.release_lock(&second).await.unwrap();

    // stop sends what waits in the outbox and waits for it.
    let third = queue
        .dequeue_work(QueueType::Workflow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third, ids[2]);
    assert!(locks.acquire_lock(&claim_of(&third)).await.unwrap());
    assert!(locks.acquire_lock(&third).await.unwrap());
    locks.release_lock(&third).await.unwrap();
    locks.release_lock(&claim_of(&third)).await.unwrap();
    queue.stop().await.unwrap();
    locks.stop().await.unwrap();
    for resource in [claim_of(&second), second.clone(), claim_of(&third), third] {
        assert!(
            other_locks.acquire_lock(&resource).await.unwrap(),
            "{resource}"
        );
    }
}

#[tokio::test]
async fn leases_taken_ahead_and_never_asked_for_are_given_back() {
    let server = server().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked(&host_store);
    let probe = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 2).await;

    // The host skips a workflow (no definition): both leases are released after the bound.
    let skipped = queue
        .dequeue_work(QueueType::Workflow)
        .await
        .unwrap()
        .unwrap();
    let dequeued_at = Instant::now();
    assert!(!probe.acquire_lock(&claim_of(&skipped)).await.unwrap());
    until_free(&probe, &claim_of(&skipped), Duration::from_secs(6)).await;
    let after = dequeued_at.elapsed();
    assert!(
        after >= wfe_grpc::lock::UNASKED_LEASE_BOUND - Duration::from_millis(100),
        "released after {after:?}"
    );
    until_free(&probe, &skipped, Duration::from_secs(1)).await;
    assert!(locks.held().is_empty());

    // The host re-queues one it cannot execute: the leases go back before it is queued again,
    // and another host's leased dequeue gets it.
    let requeued = queue
        .dequeue_work(QueueType::Workflow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(requeued, ids[1]);
    queue
        .queue_work(&requeued, QueueType::Workflow)
        .await
        .unwrap();
    assert!(locks.held().is_empty());
    let other_store = store(&server).await;
    let (other_locks, other_queue) = linked(&other_store);
    let mut got = Vec::new();
    while let Some(id) = other_queue.dequeue_work(QueueType::Workflow).await.unwrap() {
        got.push(id);
    }
    assert!(got.contains(&requeued), "{got:?}");
    assert!(other_locks.fencing_token(&claim_of(&requeued)).is_some());
    // Its own acquire of a lease it gave back goes to the server (and finds it taken).
    assert!(!locks.acquire_lock(&claim_of(&requeued)).await.unwrap());
}

#[tokio::test]
async fn a_leased_dequeue_nobody_waits_for_gives_its_leases_back_and_stop_cancels_one() {
    let server = server().await;
    let host_store = store(&server).await;
    let locks = GrpcLockProvider::new(&host_store).with_background_release(true);
    let queue = GrpcQueueProvider::new(&host_store)
        .with_wait(Duration::from_secs(10))
        .with_locks(&locks);
    let probe = GrpcLockProvider::connect(&server.addr).await.unwrap();

    // The host gives up on a waiting dequeue (as its consumer loop does when it shuts down);
    // the item that arrives after that is not kept leased: it goes back and another host gets it.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        queue.dequeue_work(QueueType::Workflow),
    )
    .await;
    assert!(gave_up.is_err(), "nothing was queued yet");
    let ids = queued_workflows(&server, 1).await;
    let id = &ids[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Well before the 2 s bound for unasked leases.
    until_free(&probe, &claim_of(id), Duration::from_millis(1500)).await;
    until_free(&probe, id, Duration::from_secs(1)).await;
    assert!(locks.held().is_empty(), "{:?}", locks.held());
    let other_store = store(&server).await;
    let (_other_locks, other_queue) = linked(&other_store);
    assert_eq!(
        other_queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );

    // stop ends a waiting leased dequeue at once (it answers None) instead of after its wait.
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.dequeue_work(QueueType::Workflow).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    queue.stop().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    locks.stop().await.unwrap();
}

/// `linked`, with the next workflow dequeue sent ahead.
fn linked_ahead(store: &GrpcPersistenceProvider) -> (GrpcLockProvider, GrpcQueueProvider) {
    let (locks, queue) = linked(store);
    (locks, queue.with_prefetch(true))
}

/// Waits until the server has answered `n` DequeueWork calls (up to 5 s).
async fn until_dequeues(server: &ServerProcess, n: u64) {
    let started = Instant::now();
    while server.handled_calls("QueueService", "DequeueWork") < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} dequeues, expected {n}",
            server.handled_calls("QueueService", "DequeueWork")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `locks` holds a lease on `resource` that a dequeue sent ahead took (up to 5 s).
async fn until_leased_ahead(locks: &GrpcLockProvider, resource: &str) {
    let started = Instant::now();
    while locks.fencing_token(resource).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not leased ahead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_prefetching_queue_answers_the_next_dequeue_with_the_item_it_leased_ahead() {
    let server = server_with_metrics().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked_ahead(&host_store);
    let probe = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 3).await;

    let first = queue.dequeue_work(QueueType::Workflow).await.unwrap();
    assert_eq!(first, Some(ids[0].clone()));
    // The next dequeue went out on its own and leased the second workflow for this host.
    until_dequeues(&server, 2).await;
    until_leased_ahead(&locks, &claim_of(&ids[1])).await;
    assert!(!probe.acquire_lock(&claim_of(&ids[1])).await.unwrap());
    assert!(!probe.acquire_lock(&ids[1]).await.unwrap());

    // The host's next dequeue is that item (oldest first), and the one after goes ahead again.
    let second = queue.dequeue_work(QueueType::Workflow).await.unwrap();
    assert_eq!(second, Some(ids[1].clone()));
    until_dequeues(&server, 3).await;
    // Its leases were taken ahead: the host's claim and lock and its read need no call.
    let (claimed, locked, read) = without_the_server(&server, async {
        (
            locks.acquire_lock(&claim_of(&ids[1])).await.unwrap(),
            locks.acquire_lock(&ids[1]).await.unwrap(),
            host_store.get_workflow_instance(&ids[1]).await.unwrap(),
        )
    })
    .await;
    assert!(claimed && locked);
    assert_eq!(read.id, ids[1]);

    // stop gives back the item found ahead that nobody asked for (long before the 2 s bound).
    until_leased_ahead(&locks, &claim_of(&ids[2])).await;
    queue.stop().await.unwrap();
    assert!(locks.fencing_token(&claim_of(&ids[2])).is_none());
    until_free(&probe, &claim_of(&ids[2]), Duration::from_millis(1000)).await;
    until_free(&probe, &ids[2], Duration::from_millis(1000)).await;
    locks.stop().await.unwrap();
    // The item given back is queued again: another host gets it.
    let other_store = store(&server).await;
    let (_other_locks, other_queue) = linked(&other_store);
    assert_eq!(
        other_queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(ids[2].clone())
    );
}

#[tokio::test]
async fn an_item_found_ahead_whose_leases_went_back_during_a_long_step_is_dequeued_again() {
    let server = server().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked_ahead(&host_store);
    let ids = queued_workflows(&server, 2).await;

    let first = queue.dequeue_work(QueueType::Workflow).await.unwrap();
    assert_eq!(first, Some(ids[0].clone()));
    assert!(locks.acquire_lock(&claim_of(&ids[0])).await.unwrap());
    assert!(locks.acquire_lock(&ids[0]).await.unwrap());
    // The host's step runs past the unasked bound: the second workflow, found ahead, goes back.
    tokio::time::sleep(wfe_grpc::lock::UNASKED_LEASE_BOUND + Duration::from_millis(500)).await;
    assert_eq!(locks.fencing_token(&claim_of(&ids[1])), None);
    // The next dequeue does not hand it out unleased: it dequeues it again, with its leases.
    let second = queue.dequeue_work(QueueType::Workflow).await.unwrap();
    assert_eq!(second, Some(ids[1].clone()));
    assert!(locks.fencing_token(&claim_of(&ids[1])).is_some());
    assert!(locks.fencing_token(&ids[1]).is_some());
    queue.stop().await.unwrap();
    locks.stop().await.unwrap();
}

#[tokio::test]
async fn a_prefetching_queue_that_found_nothing_ahead_waits_as_usual() {
    let server = server().await;
    let host_store = store(&server).await;
    let (locks, queue) = linked_ahead(&host_store);
    let ids = queued_workflows(&server, 1).await;

    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(ids[0].clone())
    );
    // Nothing was queued for the dequeue sent ahead; the host's next dequeue waits for work and
    // returns as soon as some arrives.
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.dequeue_work(QueueType::Workflow).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let more = queued_workflows(&server, 1).await;
    let queued_at = Instant::now();
    let found = waiting.await.unwrap().unwrap();
    assert_eq!(found, Some(more[0].clone()));
    assert!(
        queued_at.elapsed() < Duration::from_millis(250),
        "{:?}",
        queued_at.elapsed()
    );
    queue.stop().await.unwrap();
    locks.stop().await.unwrap();
}

#[tokio::test]
async fn a_workflow_leased_by_another_owner_is_passed_over_and_keeps_its_place() {
    let server = server().await;
    let host_store = store(&server).await;
    let (_locks, queue) = linked(&host_store);
    let other_locks = GrpcLockProvider::connect(&server.addr).await.unwrap();
    let ids = queued_workflows(&server, 2).await;
    assert!(other_locks.acquire_lock(&ids[0]).await.unwrap());
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(ids[1].clone())
    );
    other_locks.release_lock(&ids[0]).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(ids[0].clone())
    );
}

/// A WFE host on the linked providers: its acquires never reach the server, and the releases
/// mostly travel with its dequeues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wfe_host_on_a_linked_queue_takes_its_leases_with_its_dequeues() {
    let server = server_with_metrics().await;
    let host = cluster_host(&server.addr, Duration::from_secs(10)).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            host.start_workflow("three-quick", 1, json!({}))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let done = wait_complete(&host, id, Duration::from_secs(60)).await;
        assert_eq!(done.execution_pointers.len(), 3);
    }
    host.stop().await;
    let acquires = server.handled_calls("LockService", "AcquireLock");
    let releases = server.handled_calls("LockService", "ReleaseLock");
    let dequeues = server.handled_calls("QueueService", "DequeueWork");
    eprintln!("30 steps: {acquires} AcquireLock, {releases} ReleaseLock, {dequeues} DequeueWork");
    assert_eq!(acquires, 0, "every acquire answered by a dequeue's leases");
    assert!(
        releases < 15,
        "{releases} releases sent on their own for 30 steps"
    );
    let probe = GrpcLockProvider::connect(&server.addr).await.unwrap();
    for id in &ids {
        assert!(probe.acquire_lock(&claim_of(id)).await.unwrap(), "{id}");
        assert!(probe.acquire_lock(id).await.unwrap(), "{id}");
    }
}

#[tokio::test]
async fn a_queue_work_the_server_does_itself_after_a_write_needs_no_call() {
    let server = server().await;
    let host_store = store(&server).await;
    let queue = GrpcQueueProvider::new(&host_store);
    let locks = GrpcLockProvider::new(&host_store);

    // Created RUNNABLE and due: the server queued it in the create.
    let id = host_store.create_new_workflow(&workflow()).await.unwrap();
    without_the_server(&server, queue.queue_work(&id, QueueType::Workflow))
        .await
        .unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );
    // One queue_work per write: the next one is sent (and queues it again).
    queue.queue_work(&id, QueueType::Workflow).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );

    // Persisted runnable under the host's leases: the server queues it when they are released.
    let claim = format!("workflow-execution.{id}");
    assert!(locks.acquire_lock(&claim).await.unwrap());
    assert!(locks.acquire_lock(&id).await.unwrap());
    let mut w = host_store.get_workflow_instance(&id).await.unwrap();
    w.data = json!({"n": 1});
    host_store.persist_workflow(&w).await.unwrap();
    without_the_server(&server, queue.queue_work(&id, QueueType::Workflow))
        .await
        .unwrap();
    let nothing = GrpcQueueProvider::new(&host_store).with_wait(Duration::ZERO);
    assert_eq!(
        nothing.dequeue_work(QueueType::Workflow).await.unwrap(),
        None
    );
    locks.release_lock(&id).await.unwrap();
    locks.release_lock(&claim).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );

    // Stored COMPLETE: the server does not queue it, so queue_work is sent.
    w.status = WorkflowStatus::Complete;
    w.next_execution = None;
    host_store.persist_workflow(&w).await.unwrap();
    queue.queue_work(&id, QueueType::Workflow).await.unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Workflow).await.unwrap(),
        Some(id.clone())
    );

    // An event created unprocessed: queued by the server in the create, once.
    let event = wfe_core::models::Event::new("n", "k", json!({}));
    let event_id = host_store.create_event(&event).await.unwrap();
    without_the_server(&server, queue.queue_work(&event_id, QueueType::Event))
        .await
        .unwrap();
    assert_eq!(
        queue.dequeue_work(QueueType::Event).await.unwrap(),
        Some(event_id)
    );
    assert_eq!(nothing.dequeue_work(QueueType::Event).await.unwrap(), None);

    // Switched off: every queue_work is sent.
    let sending = GrpcQueueProvider::new(&host_store).with_server_queued_skip(false);
    let id2 = host_store.create_new_workflow(&workflow()).await.unwrap();
    server.pause();
    let sent = tokio::time::timeout(
        Duration::from_millis(500),
        sending.queue_work(&id2, QueueType::Workflow),
    )
    .await;
    server.resume();
    assert!(sent.is_err(), "sent to the (paused) server");
}

#[tokio::test]
async fn a_lease_is_renewed_while_held_and_runs_out_once_nobody_renews_it() {
    let server = server().await;
    // Renewed every 500 ms: a loaded machine may stall one for a while.
    let ttl = Duration::from_millis(1500);
    let holder = GrpcLockProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_ttl(ttl);
    let other = GrpcLockProvider::connect(&server.addr).await.unwrap();
    assert!(holder.acquire_lock("long").await.unwrap());
    let until = Instant::now() + ttl * 3;
    let mut tries = 0;
    while Instant::now() < until {
        assert!(
            !other.acquire_lock("long").await.unwrap(),
            "taken while renewed"
        );
        tries += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tries >= 10, "{tries}");
    // Dropped without stop: renewal ends, the lease runs out after its TTL.
    drop(holder);
    let dropped = Instant::now();
    while !other.acquire_lock("long").await.unwrap() {
        assert!(
            dropped.elapsed() < ttl + Duration::from_secs(3),
            "never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child side of `a_lease_is_freed_after_its_owner_process_is_killed`: run as a separate
/// process (this test binary again), it takes a lease, says so, and keeps renewing it until it
/// is killed. Does nothing when run without its environment.
#[tokio::test]
#[ignore = "helper process of a_lease_is_freed_after_its_owner_process_is_killed"]
async fn lock_holder_child() {
    let Ok(addr) = std::env::var("WFE_LOCK_HOLDER_ADDR") else {
        return;
    };
    let ttl: u64 = std::env::var("WFE_LOCK_HOLDER_TTL_MS")
        .unwrap()
        .parse()
        .unwrap();
    let locks = GrpcLockProvider::connect(&addr)
        .await
        .unwrap()
        .with_ttl(Duration::from_millis(ttl));
    assert!(locks.acquire_lock("killed-owner").await.unwrap());
    println!(
        "acquired token={}",
        locks.fencing_token("killed-owner").unwrap()
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test]
async fn a_lease_is_freed_after_its_owner_process_is_killed() {
    let server = server().await;
    let ttl = Duration::from_millis(1500);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["lock_holder_child", "--exact", "--ignored", "--nocapture"])
        .env("WFE_LOCK_HOLDER_ADDR", &server.addr)
        .env("WFE_LOCK_HOLDER_TTL_MS", ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acquired = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.starts_with("acquired"))
    });
    let acquired = tokio::time::timeout(Duration::from_secs(60), acquired).await;
    assert!(
        matches!(acquired, Ok(Ok(true))),
        "the child never took its lease"
    );

    let other = GrpcLockProvider::connect(&server.addr).await.unwrap();
    // Kept by the child's renewal for three TTLs.
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        assert!(!other.acquire_lock("killed-owner").await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    child.kill().unwrap(); // SIGKILL: no release, no more renewals
    child.wait().unwrap();
    let killed = Instant::now();
    while !other.acquire_lock("killed-owner").await.unwrap() {
        assert!(
            killed.elapsed() < ttl + Duration::from_secs(3),
            "lease of a killed owner never freed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let freed_after = killed.elapsed();
    // It ran out (renewed at most a third of the TTL before the kill), it was not released.
    assert!(
        freed_after >= ttl / 3,
        "freed {freed_after:?} after the kill: sooner than the TTL allows"
    );
}

// ── Queue ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn each_queued_item_is_handed_to_exactly_one_consumer() {
    let server = server().await;
    let producer = GrpcQueueProvider::connect(&server.addr).await.unwrap();
    let ids: Vec<String> = (0..200).map(|i| format!("item-{i}")).collect();
    for id in &ids {
        producer.queue_work(id, QueueType::Index).await.unwrap();
    }
    // Queueing an id that is waiting keeps its one entry.
    producer
        .queue_work("item-0", QueueType::Index)
        .await
        .unwrap();

    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let consumer = GrpcQueueProvider::connect(&server.addr)
            .await
            .unwrap()
            .with_wait(Duration::from_millis(200));
        consumers.spawn(async move {
            let mut got = Vec::new();
            while let Some(id) = consumer.dequeue_work(QueueType::Index).await.unwrap() {
                got.push(id);
            }
            got
        });
    }
    let mut all = Vec::new();
    while let Some(got) = consumers.join_next().await {
        all.extend(got.unwrap());
    }
    assert_eq!(all.len(), ids.len(), "every item once, none twice");
    assert_eq!(
        all.into_iter().collect::<HashSet<_>>(),
        ids.into_iter().collect::<HashSet<_>>()
    );
}

#[tokio::test]
async fn a_waiting_dequeue_returns_when_work_arrives_and_gives_up_after_its_wait() {
    let server = server().await;
    let waiting = GrpcQueueProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_wait(Duration::from_secs(10));
    assert!(waiting.is_dequeue_blocking());
    let producer = GrpcQueueProvider::connect(&server.addr).await.unwrap();

    let dequeue = tokio::spawn(async move {
        let got = waiting.dequeue_work(QueueType::Event).await.unwrap();
        (got, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued_at = Instant::now();
    producer.queue_work("ev-1", QueueType::Event).await.unwrap();
    let (got, returned_at) = dequeue.await.unwrap();
    assert_eq!(got.as_deref(), Some("ev-1"));
    let latency = returned_at.duration_since(queued_at);
    assert!(
        latency < Duration::from_millis(500),
        "woke after {latency:?}"
    );

    let short = producer.clone().with_wait(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(short.dequeue_work(QueueType::Event).await.unwrap(), None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let at_once = producer.clone().with_wait(Duration::ZERO);
    assert!(!at_once.is_dequeue_blocking());
    let started = Instant::now();
    assert_eq!(at_once.dequeue_work(QueueType::Event).await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_millis(250));
}

// ── Lifecycle ───────────────────────────────────────────────────────────

#[tokio::test]
async fn lifecycle_events_reach_every_subscriber_in_order() {
    let server = server().await;
    let publisher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let watcher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let mut events = watcher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let mut own = publisher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();

    let sent: Vec<LifecycleEvent> = (0..50)
        .map(|i| {
            let kind = match i % 3 {
                0 => LifecycleEventType::StepStarted {
                    step_id: i,
                    step_name: Some(format!("step {i}")),
                },
                1 => LifecycleEventType::Error {
                    message: format!("boom {i}"),
                },
                _ => LifecycleEventType::Completed,
            };
            let mut e = LifecycleEvent::new(format!("wf-{i}"), "def", 3, kind);
            e.reference = (i % 2 == 0).then(|| format!("ref-{i}"));
            e
        })
        .collect();
    for e in &sent {
        publisher.publish(e.clone()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for receiver in [&mut events, &mut own] {
        for expected in &sent {
            let got = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .expect("event not relayed")
                .unwrap();
            assert_eq!(got.workflow_instance_id, expected.workflow_instance_id);
            assert_eq!(got.event_type, expected.event_type);
            assert_eq!(got.reference, expected.reference);
            assert_eq!(got.version, 3);
            // The server keeps microseconds.
            assert_eq!(
                got.event_time_utc.timestamp_micros(),
                expected.event_time_utc.timestamp_micros()
            );
        }
    }
}

/// Events published while the server is paused (SIGSTOP): each would wait its whole call
/// deadline (30 s).
fn numbered(n: usize, prefix: &str) -> Vec<LifecycleEvent> {
    (0..n)
        .map(|i| {
            LifecycleEvent::new(
                format!("{prefix}-{i}"),
                "def",
                1,
                LifecycleEventType::Started,
            )
        })
        .collect()
}

#[tokio::test]
async fn flush_waits_a_bounded_time_for_a_server_that_does_not_answer() {
    // Three events and a frozen server: flush used to wait a call deadline (30 s) for each,
    // 90 s in all; it gives up after lifecycle::FLUSH_WAIT (5 s) in all and says how many
    // events were not delivered.
    let server = server().await;
    let publisher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let watcher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let mut events = watcher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    publisher
        .publish(numbered(1, "before").remove(0))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    server.pause();
    for e in numbered(3, "paused") {
        publisher.publish(e).await.unwrap();
    }
    let started = Instant::now();
    let flushed = tokio::time::timeout(Duration::from_secs(20), publisher.flush()).await;
    let took = started.elapsed();
    server.resume();
    let flushed = flushed.unwrap_or_else(|_| panic!("flush still waiting after {took:?}"));
    assert!(
        took < wfe_grpc::lifecycle::FLUSH_WAIT + Duration::from_secs(2),
        "flush took {took:?}"
    );
    let err = flushed.expect_err("the events were not sent: flush says so");
    assert_eq!(reason_of(&err), Some("DEADLINE_EXCEEDED"), "{err}");
    assert!(err.to_string().contains("3 of 3 lifecycle events"), "{err}");

    // Given up means not sent later (the call in flight may have reached the server before it
    // froze); the publisher works on.
    publisher
        .publish(numbered(1, "after").remove(0))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let mut got = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("event not relayed")
            .unwrap();
        got.push(e.workflow_instance_id);
        if got.last().unwrap() == "after-0" {
            break;
        }
    }
    assert_eq!(got[0], "before-0");
    assert!(got.len() <= 3, "given-up events were sent: {got:?}");
}

#[tokio::test]
async fn a_dropped_publisher_gives_up_its_unsent_events_after_a_bounded_time() {
    // Dropped with events queued for a frozen server, a publisher's sending task used to go on
    // for a call deadline (30 s) per event, and deliver them whenever the server came back;
    // it gives up after lifecycle::FLUSH_WAIT (5 s) in all: nothing arrives after that.
    let server = server().await;
    let watcher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let mut events = watcher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let publisher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    publisher
        .publish(numbered(1, "before").remove(0))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("event not relayed")
        .unwrap();
    assert_eq!(first.workflow_instance_id, "before-0");
    server.pause();
    for e in numbered(3, "paused") {
        publisher.publish(e).await.unwrap();
    }
    drop(publisher);
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.resume();
    let mut late = Vec::new();
    while let Ok(got) = tokio::time::timeout(Duration::from_secs(3), events.recv()).await {
        late.push(got.unwrap().workflow_instance_id);
    }
    // The call in flight when it gave up may have reached the server before it froze.
    assert!(
        late.len() <= 1,
        "delivered after the publisher gave them up: {late:?}"
    );
}

#[tokio::test]
async fn dropping_every_subscription_closes_the_watch_stream() {
    // The watch stream used to stay open, relayed to by the server, until an event came to
    // find nobody listening: on a quiet system, for as long as the publisher lived.
    let server = tokio::task::spawn_blocking(|| ServerProcess::start_with(&["--access-log"], &[]))
        .await
        .unwrap();
    let watches_ended = || {
        server
            .stderr()
            .lines()
            .filter(|line| line.contains("/WatchLifecycleEvents "))
            .count()
    };
    let watcher = GrpcLifecyclePublisher::connect(&server.addr).await.unwrap();
    let first = watcher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let second = watcher.subscribe().unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        watches_ended(),
        0,
        "one subscriber is left: the stream stays"
    );
    drop(second);
    let until = Instant::now() + Duration::from_secs(5);
    while watches_ended() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        watches_ended(),
        1,
        "the watch stream is still open: {}",
        server.stderr()
    );

    // Subscribing again opens a new one, which relays as before.
    let mut events = watcher
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    watcher
        .publish(numbered(1, "again").remove(0))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("event not relayed")
        .unwrap();
    assert_eq!(got.workflow_instance_id, "again-0");
}

// ── A WorkflowHost on the cluster providers ─────────────────────────────

static LONG_STEP_RUNS: AtomicUsize = AtomicUsize::new(0);
static LONG_STEP_RUNNING: AtomicBool = AtomicBool::new(false);
/// Over three TTLs of the test below. Its TTL is 3 s, not 1.5 s: with 1.5 s a fresh-clone CI run
/// (the Rust tests beside each other's servers on 2 cores) once saw the step run twice, with no log
/// of why. The likely cause: renewals go every third of the TTL, each given that third to answer, so
/// a stall of over a TTL lets the lease run out, the server queues the workflow again and the other
/// host runs the step too (the README's TTL trade-off). 3 s leaves more room for a loaded machine.
const LONG_STEP: Duration = Duration::from_secs(10);

#[derive(Default)]
struct LongStep;

#[async_trait]
impl StepBody for LongStep {
    async fn run(&mut self, _ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        LONG_STEP_RUNS.fetch_add(1, Ordering::SeqCst);
        LONG_STEP_RUNNING.store(true, Ordering::SeqCst);
        tokio::time::sleep(LONG_STEP).await;
        LONG_STEP_RUNNING.store(false, Ordering::SeqCst);
        Ok(ExecutionResult::next())
    }
}

#[derive(Default)]
struct Quick;

#[async_trait]
impl StepBody for Quick {
    async fn run(&mut self, _ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        Ok(ExecutionResult::next())
    }
}

/// A host on the three cluster providers of a fresh connection (the queue linked to the locks,
/// releases in the background, as `cluster_host` runs them).
async fn cluster_host(addr: &str, ttl: Duration) -> wfe::WorkflowHost {
    let store = GrpcPersistenceProvider::connect(addr).await.unwrap();
    let locks = GrpcLockProvider::new(&store)
        .with_ttl(ttl)
        .with_background_release(true);
    let queue = GrpcQueueProvider::new(&store).with_locks(&locks);
    let host = WorkflowHostBuilder::new()
        .use_lock_provider(Arc::new(locks))
        .use_queue_provider(Arc::new(queue))
        .use_lifecycle(Arc::new(GrpcLifecyclePublisher::new(&store)))
        .use_persistence(Arc::new(store) as Arc<dyn PersistenceProvider>)
        .build()
        .unwrap();
    host.register_step::<LongStep>().await;
    host.register_step::<Interloped>().await;
    host.register_step::<Quick>().await;
    host.register_workflow::<serde_json::Value>(
        &|b| {
            b.start_with::<Quick>()
                .name("one")
                .then::<Quick>()
                .name("two")
                .then::<Quick>()
                .name("three")
                .end_workflow()
        },
        "three-quick",
        1,
    )
    .await;
    host.register_workflow::<serde_json::Value>(
        &|b| b.start_with::<LongStep>().name("long").end_workflow(),
        "long-step",
        1,
    )
    .await;
    host.register_workflow::<serde_json::Value>(
        &|b| {
            b.start_with::<Interloped>()
                .name("interloped")
                .end_workflow()
        },
        "interloped",
        1,
    )
    .await;
    host.start().await.unwrap();
    host
}

async fn wait_complete(host: &wfe::WorkflowHost, id: &str, within: Duration) -> WorkflowInstance {
    let deadline = Instant::now() + within;
    loop {
        let w = host.get_workflow(id).await.unwrap();
        if w.status == WorkflowStatus::Complete {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "not complete within {within:?}: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_step_keeps_its_workflow_locked_for_several_ttls_and_runs_once() {
    let server = server().await;
    let ttl = Duration::from_millis(3000);
    // Two hosts on the same server: the second must never run the step the first is running.
    let first = cluster_host(&server.addr, ttl).await;
    let second = cluster_host(&server.addr, ttl).await;
    let probe = GrpcLockProvider::connect(&server.addr).await.unwrap();

    let id = first
        .start_workflow("long-step", 1, json!({}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !LONG_STEP_RUNNING.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While the step runs (over three TTLs), its workflow's lease is held by the running host.
    let mut probes = 0;
    while LONG_STEP_RUNNING.load(Ordering::SeqCst) {
        let taken = probe.acquire_lock(&id).await.unwrap();
        let still_running = LONG_STEP_RUNNING.load(Ordering::SeqCst);
        if taken {
            probe.release_lock(&id).await.unwrap();
        }
        assert!(
            !(taken && still_running),
            "lease taken while the step was running"
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probes >= 20, "{probes}");
    let done = wait_complete(&first, &id, Duration::from_secs(30)).await;
    assert_eq!(done.execution_pointers.len(), 1);
    assert_eq!(
        LONG_STEP_RUNS.load(Ordering::SeqCst),
        1,
        "ran more than once"
    );
    // Released afterwards (the release may still be on its way: it can wait to go with the
    // host's next dequeue).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe.acquire_lock(&id).await.unwrap() {
        assert!(Instant::now() < deadline, "the lease was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await;
    second.stop().await;
}

static INTERLOPED_RUNS: AtomicUsize = AtomicUsize::new(0);
/// Another writer, as a host that took the workflow over after this one's lease ran out.
static INTERLOPER: OnceLock<GrpcPersistenceProvider> = OnceLock::new();

#[derive(Default)]
struct Interloped;

#[async_trait]
impl StepBody for Interloped {
    async fn run(&mut self, ctx: &StepExecutionContext<'_>) -> wfe::Result<ExecutionResult> {
        if INTERLOPED_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
            let other = INTERLOPER.get().unwrap();
            let mut w = other.get_workflow_instance(&ctx.workflow.id).await?;
            w.data["interloper"] = json!(true);
            other.persist_workflow(&w).await?;
        }
        Ok(ExecutionResult {
            output_data: Some(json!({"step_ran": true})),
            ..ExecutionResult::next()
        })
    }
}

/// What the WFE host does when its persist is refused: `execute` fails with the
/// REVISION_CONFLICT error, the host logs it and releases its locks; nothing it computed is
/// stored and it does not queue the workflow again. The stored (newer) state stays, and the
/// server queues the still runnable workflow again (stranded work), so the step runs once more
/// on the stored state and the workflow completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_persist_is_refused_keeps_the_newer_state_and_runs_the_step_again() {
    let server = server().await;
    INTERLOPER
        .set(store(&server).await)
        .unwrap_or_else(|_| panic!("set twice"));
    let host = cluster_host(&server.addr, Duration::from_secs(5)).await;
    let id = host
        .start_workflow("interloped", 1, json!({}))
        .await
        .unwrap();
    let done = wait_complete(&host, &id, Duration::from_secs(60)).await;
    assert_eq!(INTERLOPED_RUNS.load(Ordering::SeqCst), 2);
    // The interloper's write was not overwritten by the refused persist.
    assert_eq!(done.data, json!({"interloper": true, "step_ran": true}));
    assert_eq!(done.execution_pointers.len(), 1);
    host.stop().await;
}
