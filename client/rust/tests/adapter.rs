//! Adapter behaviour the engine's suite does not cover, checked against a live wfe-sqlite
//! server (one server with a fresh SQLite file per test): error mapping, exact round trips,
//! paging and chunking, large payloads, the per-call deadline and the claim / acknowledge /
//! release loop of `process_commands`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::ServerProcess;
use serde_json::json;
use wfe_core::WfeError;
use wfe_core::models::{
    CommandName, Event, EventSubscription, ExecutionError, ExecutionPointer, PointerStatus,
    ScheduledCommand, WorkflowInstance, WorkflowStatus,
};
use wfe_core::traits::{
    EventRepository, PersistenceProvider, ScheduledCommandRepository, SubscriptionRepository,
    WorkflowRepository,
};
use wfe_grpc::{ConnectOptions, GrpcPersistenceProvider, reason_of};

async fn start() -> (ServerProcess, GrpcPersistenceProvider) {
    common::server_and_store().await
}

/// An instant with whole microseconds (what the store keeps), so equality is exact.
fn micros(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000).unwrap()
}

fn as_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[tokio::test]
async fn connect_to_a_closed_port_is_an_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = GrpcPersistenceProvider::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}

#[tokio::test]
async fn an_address_with_a_scheme_other_than_http_or_https_is_refused_at_connect() {
    // `grpc://host:port` (or `tcp://`, `unix:`) used to connect, then fail every call with
    // INTERNAL "Error parsing ':scheme' metadata" from the server.
    let (server, _p) = start().await;
    for addr in [
        format!("grpc://{}", server.addr),
        format!("tcp://{}", server.addr),
    ] {
        let err = GrpcPersistenceProvider::connect(&addr).await.unwrap_err();
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{addr}: {err}");
        assert!(err.to_string().contains("http://"), "{addr}: {err}");
    }
    // What the documentation lists still works.
    for addr in [server.addr.clone(), format!("http://{}", server.addr)] {
        let p = GrpcPersistenceProvider::connect(&addr).await.unwrap();
        p.ensure_store_exists().await.unwrap();
    }
}

#[tokio::test]
async fn an_address_without_a_port_is_refused_at_connect_naming_it() {
    // `localhost` or `http://localhost` used to go to port 80 and fail with UNAVAILABLE
    // "transport error" (or reach whatever listens there).
    fn refused(addr: &str, err: Option<WfeError>) {
        let err = err.unwrap_or_else(|| panic!("{addr}: connected"));
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{addr}: {err}");
        let text = err.to_string();
        assert!(text.contains("port"), "{addr}: {err}");
        assert!(text.contains(&format!("{addr:?}")), "{addr}: {err}");
    }
    let (server, _p) = start().await;
    for addr in [
        "localhost",
        "http://localhost",
        "http://localhost/",
        "127.0.0.1",
        "[::1]",
        "http://[::1]",
        "localhost:",
    ] {
        refused(addr, GrpcPersistenceProvider::connect(addr).await.err());
    }
    refused(
        "localhost",
        wfe_grpc::GrpcLockProvider::connect("localhost").await.err(),
    );
    refused(
        "localhost",
        wfe_grpc::GrpcQueueProvider::connect("localhost")
            .await
            .err(),
    );
    refused(
        "localhost",
        wfe_grpc::GrpcLifecyclePublisher::connect("localhost")
            .await
            .err(),
    );
    // In a list, the address without a port is named, even when another one answers.
    let list = format!("{},localhost", server.addr);
    refused(
        "localhost",
        GrpcPersistenceProvider::connect(&list).await.err(),
    );
    refused(
        "localhost",
        GrpcPersistenceProvider::connect_many(
            [server.addr.as_str(), "localhost"],
            ConnectOptions::default(),
        )
        .await
        .err(),
    );
    refused(
        "dns:///localhost",
        GrpcPersistenceProvider::connect("dns:///localhost")
            .await
            .err(),
    );
    refused(
        "dns:///[::1]",
        GrpcPersistenceProvider::connect("dns:///[::1]").await.err(),
    );
    for addr in ["localhost:0", "http://127.0.0.1:0", "dns:///localhost:0"] {
        let err = GrpcPersistenceProvider::connect(addr).await.err().unwrap();
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{addr}: {err}");
        assert!(err.to_string().contains("port 0"), "{addr}: {err}");
    }

    // A DNS name with its port, and IPv6 in brackets with its port, still connect.
    let port = server.addr.rsplit_once(':').unwrap().1;
    for addr in [
        format!("localhost:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let p = GrpcPersistenceProvider::connect(&addr).await.unwrap();
        p.ensure_store_exists().await.unwrap();
    }
    let v6 =
        tokio::task::spawn_blocking(|| ServerProcess::start_with(&["--listen", "[::1]:0"], &[]))
            .await
            .unwrap();
    assert!(v6.addr.starts_with("[::1]:"), "{}", v6.addr);
    for addr in [v6.addr.clone(), format!("http://{}", v6.addr)] {
        let p = GrpcPersistenceProvider::connect(&addr).await.unwrap();
        p.ensure_store_exists().await.unwrap();
    }
}

#[tokio::test]
async fn workflow_round_trips_every_field_exactly() {
    let (_server, p) = start().await;
    let mut w = WorkflowInstance::new(
        "rt",
        7,
        json!({"big": u64::MAX, "neg": i64::MIN, "f": 0.1, "s": "é\"\n", "a": [null, true, {}]}),
    );
    w.name = "rt-custom".into();
    w.root_workflow_id = Some("root-1".into());
    w.description = Some("desc".into());
    w.reference = Some("ref".into());
    w.next_execution = Some(1_700_000_000_123);
    w.status = WorkflowStatus::Suspended;
    w.create_time = micros(1_700_000_000, 123_456);
    w.complete_time = Some(micros(1_700_000_100, 1));
    let mut p0 = ExecutionPointer::new(0);
    p0.status = PointerStatus::Complete;
    p0.active = false;
    p0.start_time = Some(micros(1_700_000_000, 200_000));
    p0.end_time = Some(micros(1_700_000_001, 0));
    p0.outcome = Some(json!("left"));
    p0.step_name = Some("first".into());
    let mut p1 = ExecutionPointer::new(4_000_000_000);
    p1.status = PointerStatus::WaitingForEvent;
    p1.event_name = Some("evt".into());
    p1.event_key = Some("k".into());
    p1.event_published = true;
    p1.event_data = Some(json!({"n": 9007199254740993_u64}));
    p1.sleep_until = Some(micros(1_800_000_000, 999_999));
    p1.persistence_data = Some(json!([1, 2, 3]));
    p1.context_item = Some(json!(null));
    p1.predecessor_id = Some(p0.id.clone());
    p1.retry_count = 3;
    p1.children = vec!["c1".into(), "c2".into()];
    p1.scope = vec!["inner".into(), "outer".into()];
    p1.extension_attributes =
        HashMap::from([("a".into(), json!(1)), ("b".into(), json!({"x": [1.5]}))]);
    w.execution_pointers = vec![p0, p1];

    let id = p.create_new_workflow(&w).await.unwrap();
    assert_eq!(id, w.id, "a supplied id is kept");
    let back = p.get_workflow_instance(&id).await.unwrap();
    assert_eq!(as_json(&back), as_json(&w));
    // A JSON null in an optional JSON field stays a JSON null (the serde comparison above
    // cannot tell `Some(Null)` from `None`, so check it directly). The engine needs this:
    // wfe-core's WaitFor step proceeds on `event_data.is_some()`, so an event published with
    // null data must come back as `Some(Null)`, not as absent (see tests/engine.rs).
    assert_eq!(back.execution_pointers[1].context_item, Some(json!(null)));
    assert_eq!(
        back.execution_pointers[1].persistence_data,
        Some(json!([1, 2, 3]))
    );
    let by_name = p.get_workflow_instance_by_name("rt-custom").await.unwrap();
    assert_eq!(as_json(&by_name), as_json(&w));

    // persist_workflow replaces the pointer set, never create_time.
    let mut changed = back.clone();
    changed.execution_pointers.truncate(1);
    changed.data = json!({"replaced": true});
    changed.create_time = micros(1, 0);
    changed.next_execution = None;
    p.persist_workflow(&changed).await.unwrap();
    let again = p.get_workflow_instance(&id).await.unwrap();
    assert_eq!(again.execution_pointers.len(), 1);
    assert_eq!(again.data, json!({"replaced": true}));
    assert_eq!(again.next_execution, None);
    assert_eq!(again.create_time, w.create_time);
}

#[tokio::test]
async fn errors_map_to_the_wfe_variants() {
    let (_server, p) = start().await;
    let missing = WorkflowInstance::new("d", 1, json!({}));
    assert!(matches!(
        p.get_workflow_instance("nope").await,
        Err(WfeError::WorkflowNotFound(id)) if id == "nope"
    ));
    assert!(matches!(
        p.get_workflow_instance_by_name("nope").await,
        Err(WfeError::WorkflowNotFound(_))
    ));
    assert!(matches!(
        p.persist_workflow(&missing).await,
        Err(WfeError::WorkflowNotFound(_))
    ));
    assert!(matches!(
        p.get_event("nope").await,
        Err(WfeError::EventNotFound(_))
    ));
    assert!(matches!(
        p.mark_event_processed("nope").await,
        Err(WfeError::EventNotFound(_))
    ));
    assert!(matches!(
        p.mark_event_unprocessed("nope").await,
        Err(WfeError::EventNotFound(_))
    ));
    assert!(matches!(
        p.get_subscription("nope").await,
        Err(WfeError::SubscriptionNotFound(_))
    ));
    assert!(matches!(
        p.terminate_subscription("nope").await,
        Err(WfeError::SubscriptionNotFound(_))
    ));
    assert!(matches!(
        p.set_subscription_token("nope", "t", "w", Utc::now()).await,
        Err(WfeError::SubscriptionNotFound(_))
    ));

    // Clearing with a token that is not the held one is SubscriptionNotFound too.
    let sub = EventSubscription::new("wf", 0, "p", "e", "k", Utc::now());
    let sid = p.create_event_subscription(&sub).await.unwrap();
    assert!(
        p.set_subscription_token(&sid, "mine", "w", Utc::now() + Duration::seconds(60))
            .await
            .unwrap()
    );
    assert!(matches!(
        p.clear_subscription_token(&sid, "not-mine").await,
        Err(WfeError::SubscriptionNotFound(_))
    ));
    p.clear_subscription_token(&sid, "mine").await.unwrap();

    // Duplicates: no WfeError variant, the reason leads the Persistence text.
    let mut w = WorkflowInstance::new("d", 1, json!({}));
    w.name = "taken".into();
    p.create_new_workflow(&w).await.unwrap();
    let dup_id = p.create_new_workflow(&w).await.unwrap_err();
    assert_eq!(
        reason_of(&dup_id),
        Some("WORKFLOW_ALREADY_EXISTS"),
        "{dup_id}"
    );
    let mut other = WorkflowInstance::new("d", 1, json!({}));
    other.name = "taken".into();
    let dup_name = p.create_new_workflow(&other).await.unwrap_err();
    assert_eq!(
        reason_of(&dup_name),
        Some("WORKFLOW_NAME_TAKEN"),
        "{dup_name}"
    );
    let e = Event::new("n", "k", json!(1));
    p.create_event(&e).await.unwrap();
    let dup_event = p.create_event(&e).await.unwrap_err();
    assert_eq!(
        reason_of(&dup_event),
        Some("EVENT_ALREADY_EXISTS"),
        "{dup_event}"
    );
}

#[tokio::test]
async fn definition_numbers_come_from_reserved_blocks() {
    let (server, plain) = start().await;
    let host = GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_sequence_block(5);
    assert_eq!(host.sequence_block(), 5);
    assert_eq!(plain.sequence_block(), 0);
    // One call reserves 1..=5: the provider without blocks gets 6 next.
    assert_eq!(host.next_definition_sequence("blocks").await.unwrap(), 1);
    assert_eq!(plain.next_definition_sequence("blocks").await.unwrap(), 6);
    for n in 2..=5 {
        assert_eq!(host.next_definition_sequence("blocks").await.unwrap(), n);
    }
    // The block is used up: the next call reserves 7..=11.
    assert_eq!(host.next_definition_sequence("blocks").await.unwrap(), 7);
    assert_eq!(plain.next_definition_sequence("blocks").await.unwrap(), 12);
    // A clone shares the blocks; concurrent callers of two hosts never get a number twice.
    let other = GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap()
        .with_sequence_block(3);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let p = if i % 2 == 0 {
            host.clone()
        } else {
            other.clone()
        };
        calls.spawn(async move { p.next_definition_sequence("blocks").await.unwrap() });
    }
    let mut numbers = vec![8, 9, 10, 11]; // the rest of the host's block
    let mut got = Vec::new();
    while let Some(n) = calls.join_next().await {
        got.push(n.unwrap());
    }
    let unique: std::collections::HashSet<u64> = got.iter().copied().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "a number handed out twice: {got:?}"
    );
    assert!(got.iter().all(|n| *n >= 8 && *n != 12), "{got:?}");
    numbers.retain(|n| got.contains(n));
    assert_eq!(
        numbers,
        vec![8, 9, 10, 11],
        "the host's block is used first: {got:?}"
    );
    // Definitions are separate.
    assert_eq!(host.next_definition_sequence("other").await.unwrap(), 1);
    assert_eq!(plain.next_definition_sequence("other").await.unwrap(), 6);
}

#[tokio::test]
async fn empty_ids_and_names_are_assigned_by_the_server() {
    let (_server, p) = start().await;
    let mut w = WorkflowInstance::new("seq-def", 1, json!({}));
    w.id = String::new();
    let id = p.create_new_workflow(&w).await.unwrap();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let stored = p.get_workflow_instance(&id).await.unwrap();
    assert_eq!(stored.name, "seq-def-1");
    assert_eq!(p.next_definition_sequence("seq-def").await.unwrap(), 2);

    let mut e = Event::new("n", "k", json!(null));
    e.id = String::new();
    let eid = p.create_event(&e).await.unwrap();
    assert!(!eid.is_empty());
    assert_eq!(p.get_event(&eid).await.unwrap().event_data, json!(null));
}

#[tokio::test]
async fn events_and_subscriptions_follow_the_query_rules() {
    let (_server, p) = start().await;
    let t0 = micros(1_700_000_000, 0);
    let mut early = Event::new("n", "k", json!(1));
    early.event_time = t0;
    let mut late = Event::new("n", "k", json!(2));
    late.event_time = t0 + Duration::seconds(10);
    let early_id = p.create_event(&early).await.unwrap();
    let late_id = p.create_event(&late).await.unwrap();
    // get_events is `event_time <= as_of` (WFE's direction), oldest first.
    assert_eq!(
        p.get_events("n", "k", t0).await.unwrap(),
        vec![early_id.clone()]
    );
    assert_eq!(
        p.get_events("n", "k", t0 + Duration::seconds(10))
            .await
            .unwrap(),
        vec![early_id.clone(), late_id.clone()]
    );
    assert!(
        p.get_events("n", "other", t0 + Duration::days(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        p.get_runnable_events(t0).await.unwrap(),
        vec![early_id.clone()]
    );
    p.mark_event_processed(&early_id).await.unwrap();
    assert!(p.get_runnable_events(t0).await.unwrap().is_empty());
    assert!(p.get_event(&early_id).await.unwrap().is_processed);

    let mut s1 = EventSubscription::new("wf1", 1, "p1", "n", "k", t0);
    s1.subscription_data = Some(json!({"d": u64::MAX}));
    let s2 = EventSubscription::new("wf2", 2, "p2", "n", "k", t0 + Duration::seconds(5));
    let id1 = p.create_event_subscription(&s1).await.unwrap();
    let id2 = p.create_event_subscription(&s2).await.unwrap();
    let at_t0 = p.get_subscriptions("n", "k", t0).await.unwrap();
    assert_eq!(at_t0.len(), 1);
    assert_eq!(as_json(&at_t0[0]), as_json(&s1));
    let later = t0 + Duration::seconds(5);
    let ids: Vec<_> = p
        .get_subscriptions("n", "k", later)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![id1.clone(), id2.clone()]);

    // First open: the oldest without a live token; an expired token does not hold it.
    let first = p
        .get_first_open_subscription("n", "k", later)
        .await
        .unwrap();
    assert_eq!(first.map(|s| s.id), Some(id1.clone()));
    let expiry = Utc::now() + Duration::seconds(60);
    assert!(
        p.set_subscription_token(&id1, "t1", "w1", expiry)
            .await
            .unwrap()
    );
    assert!(
        !p.set_subscription_token(&id1, "t2", "w2", expiry)
            .await
            .unwrap()
    );
    let held = p.get_subscription(&id1).await.unwrap();
    assert_eq!(held.external_token.as_deref(), Some("t1"));
    assert_eq!(held.external_worker_id.as_deref(), Some("w1"));
    let first = p
        .get_first_open_subscription("n", "k", later)
        .await
        .unwrap();
    assert_eq!(first.map(|s| s.id), Some(id2.clone()));
    let past = Utc::now() - Duration::seconds(1);
    assert!(
        p.set_subscription_token(&id2, "t3", "w3", past)
            .await
            .unwrap()
    );
    assert!(
        p.set_subscription_token(&id2, "t4", "w4", expiry)
            .await
            .unwrap()
    );
    assert!(
        p.get_first_open_subscription("n", "k", later)
            .await
            .unwrap()
            .is_none()
    );

    p.terminate_subscription(&id2).await.unwrap();
    let open: Vec<_> = p
        .get_subscriptions("n", "k", later)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(open, vec![id1]);
}

#[tokio::test]
async fn paged_lists_are_gathered_completely() {
    let (_server, p) = start().await;
    // More than two default pages (1000) of runnable events and workflows.
    const N: usize = 2_100;
    let t0 = micros(1_600_000_000, 0);
    let p = Arc::new(p);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let p = p.clone();
        tasks.spawn(async move {
            let mut e = Event::new("bulk", "k", json!(i));
            e.event_time = t0 + Duration::milliseconds(i as i64);
            let mut w = WorkflowInstance::new("bulk", 1, json!(i));
            w.name = format!("bulk-{i}");
            w.next_execution = Some(1_000 + i as i64);
            (
                p.create_event(&e).await.unwrap(),
                p.create_new_workflow(&w).await.unwrap(),
            )
        });
    }
    let mut event_ids: Vec<String> = Vec::new();
    let mut created = Vec::new();
    while let Some(r) = tasks.join_next().await {
        created.push(r.unwrap());
    }
    // Expected order: by time, i.e. by the index baked into the data.
    let mut with_index = Vec::new();
    for (eid, wid) in &created {
        let e = p.get_event(eid).await.unwrap();
        with_index.push((e.event_data.as_u64().unwrap(), eid.clone(), wid.clone()));
    }
    with_index.sort();
    event_ids.extend(with_index.iter().map(|(_, e, _)| e.clone()));
    let workflow_ids: Vec<_> = with_index.iter().map(|(_, _, w)| w.clone()).collect();

    let runnable_events = p.get_runnable_events(Utc::now()).await.unwrap();
    assert_eq!(runnable_events, event_ids, "all pages, oldest first");
    let matching = p.get_events("bulk", "k", Utc::now()).await.unwrap();
    assert_eq!(matching, event_ids);
    let runnable = p.get_runnable_instances(Utc::now()).await.unwrap();
    assert_eq!(
        runnable, workflow_ids,
        "all pages, earliest next_execution first"
    );

    // get_workflow_instances: more ids than one request carries (1,000), so several requests;
    // missing ids skipped, request order kept, an id repeated in a later chunk returned once.
    let (w0, w1, w2) = (&workflow_ids[0], &workflow_ids[1], &workflow_ids[2]);
    let mut ids = vec![w2.clone(), w0.clone()];
    ids.extend((0..10_000).map(|i| format!("missing-{i}")));
    ids.extend([w1.clone(), w0.clone(), w2.clone()]);
    let found: Vec<_> = p
        .get_workflow_instances(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(found, vec![w2.clone(), w0.clone(), w1.clone()]);
    let all = p.get_workflow_instances(&workflow_ids).await.unwrap();
    assert_eq!(all.len(), N);
}

#[tokio::test]
async fn a_twelve_mebibyte_workflow_round_trips() {
    let (_server, p) = start().await;
    let blob = "x".repeat(12 * 1024 * 1024);
    let w = WorkflowInstance::new("big", 1, json!({ "blob": blob }));
    let id = p.create_new_workflow(&w).await.unwrap();
    let back = p.get_workflow_instance(&id).await.unwrap();
    assert_eq!(back.data["blob"].as_str().map(str::len), Some(blob.len()));
    let batch = p
        .get_workflow_instances(&[id.clone(), id.clone()])
        .await
        .unwrap();
    assert_eq!(batch.len(), 1, "duplicates are returned once");
}

#[tokio::test]
async fn a_write_larger_than_a_message_may_be_is_refused_saying_so() {
    // 65 MiB of data: more than the 64 MiB a gRPC message may have. The Python adapter says
    // "Sent message larger than max (N vs. M)"; this one used to fail after sending with
    // INTERNAL "h2 protocol error: ... unexpected internal error encountered".
    let (_server, p) = start().await;
    let blob = "x".repeat(65 * 1024 * 1024);
    let w = WorkflowInstance::new("huge", 1, json!({ "blob": blob }));
    let err = p.create_new_workflow(&w).await.unwrap_err();
    assert_eq!(reason_of(&err), Some("RESOURCE_EXHAUSTED"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&wfe_grpc::provider::MAX_MESSAGE_BYTES.to_string()),
        "{text}"
    );
    assert!(text.contains("nothing was sent"), "{text}");

    // The same for a persist, an event and a batch of errors; the connection stays usable.
    let mut small = WorkflowInstance::new("huge", 1, json!({}));
    small.id = p.create_new_workflow(&small).await.unwrap();
    let mut big = small.clone();
    big.data = w.data.clone();
    let err = p.persist_workflow(&big).await.unwrap_err();
    assert_eq!(reason_of(&err), Some("RESOURCE_EXHAUSTED"), "{err}");
    let event = Event::new("huge", "k", w.data.clone());
    let err = p.create_event(&event).await.unwrap_err();
    assert_eq!(reason_of(&err), Some("RESOURCE_EXHAUSTED"), "{err}");
    let message = "e".repeat(1024 * 1024);
    let errors: Vec<ExecutionError> = (0..70)
        .map(|_| ExecutionError::new(&small.id, "p", message.clone()))
        .collect();
    let err = p.persist_errors(&errors).await.unwrap_err();
    assert_eq!(reason_of(&err), Some("RESOURCE_EXHAUSTED"), "{err}");
    assert_eq!(
        p.get_workflow_instance(&small.id).await.unwrap().data,
        json!({})
    );
}

#[tokio::test]
async fn persist_with_subscriptions_is_all_or_nothing() {
    let (_server, p) = start().await;
    let w = WorkflowInstance::new("sub", 1, json!({}));
    let id = p.create_new_workflow(&w).await.unwrap();
    let now = Utc::now();
    let existing = EventSubscription::new(&id, 0, "p0", "a", "k", now);
    p.create_event_subscription(&existing).await.unwrap();

    let mut changed = w.clone();
    changed.description = Some("must not stick".into());
    let fresh = EventSubscription::new(&id, 1, "p1", "b", "k", now);
    let err = p
        .persist_workflow_with_subscriptions(&changed, &[fresh, existing.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        reason_of(&err),
        Some("SUBSCRIPTION_ALREADY_EXISTS"),
        "{err}"
    );
    assert_eq!(
        p.get_workflow_instance(&id).await.unwrap().description,
        None
    );
    assert!(p.get_subscriptions("b", "k", now).await.unwrap().is_empty());

    // One request whatever the count (the contract has no per-request cap).
    let errors: Vec<_> = (0..12_000)
        .map(|i| ExecutionError::new(&id, "p0", format!("e{i}")))
        .collect();
    p.persist_errors(&errors).await.unwrap();
    p.persist_errors(&[]).await.unwrap();
}

/// A handler that records what it was offered and fails for the data in `fail`.
fn recording_handler(
    seen: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<Vec<String>>>,
) -> impl Fn(
    ScheduledCommand,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = wfe_core::Result<()>> + Send>>
+ Send
+ Sync {
    move |c: ScheduledCommand| {
        let seen = seen.clone();
        let fail = fail.clone();
        Box::pin(async move {
            seen.lock().unwrap().push(c.data.clone());
            if fail.lock().unwrap().contains(&c.data) {
                Err(WfeError::StepExecution(format!(
                    "handler refuses {}",
                    c.data
                )))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn process_commands_acknowledges_successes_and_keeps_failures_for_the_next_call() {
    let (_server, p) = start().await;
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    p.schedule_command(&ScheduledCommand::process_workflow("ok", now_ms - 2_000))
        .await
        .unwrap();
    p.schedule_command(&ScheduledCommand::process_event("bad", now_ms - 1_000))
        .await
        .unwrap();
    p.schedule_command(&ScheduledCommand::process_workflow(
        "future",
        now_ms + 3_600_000,
    ))
    .await
    .unwrap();
    // Scheduling again keeps the earlier execute_time: "early" stays due.
    p.schedule_command(&ScheduledCommand::process_workflow("early", now_ms - 500))
        .await
        .unwrap();
    p.schedule_command(&ScheduledCommand::process_workflow(
        "early",
        now_ms + 3_600_000,
    ))
    .await
    .unwrap();
    // Same data under the other name is another command.
    p.schedule_command(&ScheduledCommand {
        command_name: CommandName::ProcessEvent,
        data: "ok".into(),
        execute_time: now_ms + 3_600_000,
    })
    .await
    .unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(vec!["bad".to_string()]));
    let handler = recording_handler(seen.clone(), fail.clone());

    p.process_commands(now, &handler).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["ok", "bad", "early"],
        "due commands once each, earliest first; the failure is not retried in the same call"
    );

    seen.lock().unwrap().clear();
    fail.lock().unwrap().clear();
    p.process_commands(now, &handler).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["bad"],
        "only the failed command is offered again"
    );

    seen.lock().unwrap().clear();
    p.process_commands(now, &handler).await.unwrap();
    assert!(
        seen.lock().unwrap().is_empty(),
        "acknowledged commands are gone"
    );

    p.process_commands(now + Duration::hours(2), &handler)
        .await
        .unwrap();
    let mut later = seen.lock().unwrap().clone();
    later.sort();
    assert_eq!(later, vec!["future", "ok"]);
}

#[tokio::test]
async fn concurrent_processors_run_each_command_once() {
    let (_server, p) = start().await;
    let now = Utc::now();
    for i in 0..300 {
        p.schedule_command(&ScheduledCommand::process_workflow(format!("c{i}"), 0))
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(recording_handler(
        seen.clone(),
        Arc::new(Mutex::new(vec![])),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Separate connections, like separate hosts.
        let q = GrpcPersistenceProvider::connect(&_server.addr)
            .await
            .unwrap();
        let h = handler.clone();
        tasks.spawn(async move { q.process_commands(now, h.as_ref()).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let mut all = seen.lock().unwrap().clone();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(total, 300, "every command handled exactly once");
    assert_eq!(all.len(), 300);
}

/// A handler that records the data it was offered, runs for a moment, and counts how many
/// handlers were running at once (the most in `max_running`).
fn timing_handler(
    seen: Arc<Mutex<Vec<String>>>,
    max_running: Arc<AtomicUsize>,
) -> impl Fn(
    ScheduledCommand,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = wfe_core::Result<()>> + Send>>
+ Send
+ Sync {
    let running = Arc::new(AtomicUsize::new(0));
    move |c: ScheduledCommand| {
        let (seen, running, max_running) = (seen.clone(), running.clone(), max_running.clone());
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(StdDuration::from_millis(2)).await;
            seen.lock().unwrap().push(c.data);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn process_commands_runs_handlers_one_at_a_time_in_claim_order() {
    let (_server, p) = start().await;
    // More than one claim (100 per claim), scheduled out of order.
    let n = 150;
    let expected: Vec<String> = (0..n).map(|i| format!("c{i:03}")).collect();
    for i in (0..n).rev() {
        p.schedule_command(&ScheduledCommand::process_workflow(
            format!("c{i:03}"),
            1_000 + i as i64,
        ))
        .await
        .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let max_running = Arc::new(AtomicUsize::new(0));
    let handler = timing_handler(seen.clone(), max_running.clone());
    p.process_commands(Utc::now(), &handler).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "claim order: earliest first"
    );
    assert_eq!(
        max_running.load(Ordering::SeqCst),
        1,
        "one handler at a time"
    );
}

#[tokio::test]
async fn a_failed_command_stays_leased_until_the_call_ends_then_is_released() {
    let (server, p) = start().await;
    let other = Arc::new(
        GrpcPersistenceProvider::connect(&server.addr)
            .await
            .unwrap(),
    );
    let now = Utc::now();
    p.schedule_command(&ScheduledCommand::process_workflow("fails", 1_000))
        .await
        .unwrap();
    p.schedule_command(&ScheduledCommand::process_workflow("later", 2_000))
        .await
        .unwrap();

    // While the first processor handles "later", another processor finds nothing: "fails"
    // is still held by the first one's lease.
    let seen_meanwhile = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let (other, seen_meanwhile) = (other.clone(), seen_meanwhile.clone());
        move |c: ScheduledCommand| {
            let (other, seen_meanwhile) = (other.clone(), seen_meanwhile.clone());
            Box::pin(async move {
                if c.data == "fails" {
                    return Err(WfeError::StepExecution("refused".into()));
                }
                let probe = recording_handler(seen_meanwhile.clone(), Arc::new(Mutex::new(vec![])));
                other.process_commands(now, &probe).await
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = wfe_core::Result<()>> + Send>>
        }
    };
    p.process_commands(now, &handler).await.unwrap();
    assert!(
        seen_meanwhile.lock().unwrap().is_empty(),
        "nothing offered to another processor during the call: {:?}",
        seen_meanwhile.lock().unwrap()
    );

    // Released at the end of the call, not after the 30 s lease: offered again at once.
    let seen_after = Arc::new(Mutex::new(Vec::new()));
    let recorder = recording_handler(seen_after.clone(), Arc::new(Mutex::new(vec![])));
    other.process_commands(now, &recorder).await.unwrap();
    assert_eq!(*seen_after.lock().unwrap(), vec!["fails"]);
}

#[tokio::test]
async fn a_command_scheduled_again_by_its_handler_is_handed_over_once_per_call() {
    let (_server, p) = start().await;
    let p = Arc::new(p);
    p.schedule_command(&ScheduledCommand::process_workflow("again", 1_000))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let (p, seen) = (p.clone(), seen.clone());
        move |c: ScheduledCommand| {
            let (p, seen) = (p.clone(), seen.clone());
            Box::pin(async move {
                let times = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(c.data.clone());
                    seen.len()
                };
                // Due again at once: the acknowledgement keeps it, and the next claim of this
                // same call finds it again. (Bounded, so a processor that hands it over again
                // fails this test instead of looping.)
                if times > 5 {
                    return Ok(());
                }
                p.schedule_command(&ScheduledCommand::process_workflow(c.data, 1_000))
                    .await
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = wfe_core::Result<()>> + Send>>
        }
    };
    for call in 1..=2 {
        tokio::time::timeout(
            StdDuration::from_secs(20),
            p.process_commands(Utc::now(), &handler),
        )
        .await
        .expect("process_commands returns")
        .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["again"; call],
            "once in call {call}, offered again in the next"
        );
    }
}

#[tokio::test]
async fn a_call_without_an_answer_fails_at_its_deadline() {
    let server = tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .unwrap();
    let deadline = StdDuration::from_millis(700);
    let p = GrpcPersistenceProvider::connect_with(
        &server.addr,
        ConnectOptions {
            call_timeout: Some(deadline),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.ensure_store_exists().await.unwrap();

    server.pause();
    let started = Instant::now();
    let outcome = p.get_workflow_instance("w1").await;
    let waited = started.elapsed();
    server.resume();

    let err = outcome.unwrap_err();
    assert_eq!(reason_of(&err), Some("DEADLINE_EXCEEDED"), "{err}");
    assert!(
        waited >= deadline && waited < deadline * 5,
        "failed after {waited:?}"
    );
    // The server answers again, and so does the provider.
    p.ensure_store_exists().await.unwrap();
}
