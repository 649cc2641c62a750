//! `GrpcSearchIndex` against a live wfe-sqlite server: what the store indexed on write is found
//! by terms, filters and windows, with no `index_workflow` call needed.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::ServerProcess;
use serde_json::json;
use wfe_core::models::{WorkflowInstance, WorkflowStatus};
use wfe_core::traits::{SearchFilter, SearchIndex, WorkflowRepository};
use wfe_grpc::{GrpcPersistenceProvider, GrpcSearchIndex, reason_of};

async fn start() -> (ServerProcess, GrpcPersistenceProvider, GrpcSearchIndex) {
    let (server, store) = common::server_and_store().await;
    let search = GrpcSearchIndex::new(&store);
    (server, store, search)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// Stores `n` workflows created a minute apart: status by n % 4, reference `order-{n}`, a
/// customer city in the data.
async fn fill(store: &GrpcPersistenceProvider, n: usize) -> Vec<WorkflowInstance> {
    let statuses = [
        WorkflowStatus::Runnable,
        WorkflowStatus::Suspended,
        WorkflowStatus::Complete,
        WorkflowStatus::Terminated,
    ];
    let mut made = Vec::new();
    for i in 0..n {
        let city = if i % 2 == 0 { "Lisbon" } else { "Porto" };
        let mut w =
            WorkflowInstance::new("shipping", 1, json!({"customer": {"city": city}, "n": i}));
        w.reference = Some(format!("order-{i}"));
        w.description = Some(format!("parcel {i} for delivery"));
        w.status = statuses[i % 4];
        w.create_time = t0() + Duration::minutes(i as i64);
        w.id = store.create_new_workflow(&w).await.unwrap();
        made.push(w);
    }
    made
}

fn ids(page: &wfe_core::traits::Page<wfe_core::traits::WorkflowSearchResult>) -> Vec<String> {
    page.data.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn finds_what_the_store_indexed_on_write() {
    let (_server, store, search) = start().await;
    let made = fill(&store, 6).await;
    // index_workflow is a no-op: the workflow was indexed when it was stored.
    search.index_workflow(&made[3]).await.unwrap();
    search.start().await.unwrap();

    let found = search.search("order-3", 0, 10, &[]).await.unwrap();
    assert_eq!(ids(&found), vec![made[3].id.clone()]);
    assert_eq!(found.total, 1);
    let hit = &found.data[0];
    assert_eq!(hit.workflow_definition_id, "shipping");
    assert_eq!(hit.version, 1);
    assert_eq!(hit.status, WorkflowStatus::Terminated);
    assert_eq!(hit.reference.as_deref(), Some("order-3"));
    assert_eq!(hit.description.as_deref(), Some("parcel 3 for delivery"));

    // Words of the data, every word must match, prefixes with *.
    assert_eq!(search.search("lisbon", 0, 10, &[]).await.unwrap().total, 3);
    assert_eq!(
        search
            .search("lisbon parcel", 0, 10, &[])
            .await
            .unwrap()
            .total,
        3
    );
    assert_eq!(
        search
            .search("lisbon porto", 0, 10, &[])
            .await
            .unwrap()
            .total,
        0
    );
    assert_eq!(search.search("deliv*", 0, 10, &[]).await.unwrap().total, 6);

    // A persisted change is searchable at once.
    let mut w = made[0].clone();
    w.description = Some("rerouted to Faro".into());
    store.persist_workflow(&w).await.unwrap();
    assert_eq!(
        ids(&search.search("faro", 0, 10, &[]).await.unwrap()),
        vec![w.id.clone()]
    );
    search.stop().await.unwrap();
}

#[tokio::test]
async fn filters_and_windows() {
    let (_server, store, search) = start().await;
    let made = fill(&store, 12).await;
    let newest_first = |pick: &dyn Fn(&WorkflowInstance) -> bool| -> Vec<String> {
        let mut chosen: Vec<_> = made.iter().filter(|w| pick(w)).collect();
        chosen.sort_by_key(|w| std::cmp::Reverse(w.create_time));
        chosen.iter().map(|w| w.id.clone()).collect()
    };

    let complete = search
        .search(
            "parcel",
            0,
            100,
            &[SearchFilter::Status(WorkflowStatus::Complete)],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&complete),
        newest_first(&|w| w.status == WorkflowStatus::Complete)
    );
    let two = [
        SearchFilter::Status(WorkflowStatus::Complete),
        SearchFilter::Status(WorkflowStatus::Runnable),
    ];
    let either = search.search("parcel", 0, 100, &two).await.unwrap();
    assert_eq!(either.total, 6);

    let by_ref = search
        .search(
            "parcel",
            0,
            100,
            &[SearchFilter::Reference("order-7".into())],
        )
        .await
        .unwrap();
    assert_eq!(ids(&by_ref), vec![made[7].id.clone()]);
    let contradictory = [
        SearchFilter::Reference("order-7".into()),
        SearchFilter::Reference("order-8".into()),
    ];
    assert_eq!(
        search
            .search("parcel", 0, 100, &contradictory)
            .await
            .unwrap()
            .total,
        0
    );

    // DateRange: `after` excludes its instant, `before` too.
    let window = [SearchFilter::DateRange {
        field: "create_time".into(),
        after: Some(t0() + Duration::minutes(3)),
        before: Some(t0() + Duration::minutes(8)),
    }];
    let in_window = search.search("parcel", 0, 100, &window).await.unwrap();
    let expected = newest_first(&|w| {
        w.create_time > t0() + Duration::minutes(3) && w.create_time < t0() + Duration::minutes(8)
    });
    assert_eq!(ids(&in_window), expected);
    assert_eq!(in_window.total, 4);

    // Windows: skip and take, the total stays the total.
    let all = search.search("parcel", 0, 100, &[]).await.unwrap();
    assert_eq!(all.total, 12);
    let middle = search.search("parcel", 4, 3, &[]).await.unwrap();
    assert_eq!((middle.total, ids(&middle)), (12, ids(&all)[4..7].to_vec()));
    let past = search.search("parcel", 40, 3, &[]).await.unwrap();
    assert_eq!((past.total, past.data.len()), (12, 0));
    let none = search.search("parcel", 0, 0, &[]).await.unwrap();
    assert_eq!((none.total, none.data.len()), (12, 0));

    // Empty terms list everything that matches the filters, newest first, with the total.
    let listed = search
        .search("", 1, 2, &[SearchFilter::Status(WorkflowStatus::Suspended)])
        .await
        .unwrap();
    let suspended = newest_first(&|w| w.status == WorkflowStatus::Suspended);
    assert_eq!((listed.total, ids(&listed)), (3, suspended[1..3].to_vec()));
}

#[tokio::test]
async fn windows_larger_than_one_call() {
    let (_server, store, search) = start().await;
    for i in 0..1203 {
        let mut w = WorkflowInstance::new("bulk", 1, json!({"word": "haystack", "i": i}));
        w.create_time = t0() + Duration::seconds(i);
        store.create_new_workflow(&w).await.unwrap();
    }
    let everything = search.search("haystack", 0, 5000, &[]).await.unwrap();
    assert_eq!((everything.total, everything.data.len()), (1203, 1203));
    let unique: std::collections::HashSet<_> = everything.data.iter().map(|r| &r.id).collect();
    assert_eq!(unique.len(), 1203);
    let tail = search.search("haystack", 1100, 500, &[]).await.unwrap();
    assert_eq!(tail.data.len(), 103);
    let listed = search.search("  ", 1000, 1000, &[]).await.unwrap();
    assert_eq!((listed.total, listed.data.len()), (1203, 203));
}

#[tokio::test]
async fn bad_queries_are_invalid_argument() {
    let (_server, _store, search) = start().await;
    let err = search.search("!!! ???", 0, 10, &[]).await.unwrap_err();
    assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
    let err = search
        .search(
            "word",
            0,
            10,
            &[SearchFilter::DateRange {
                field: "complete_time".into(),
                after: None,
                before: Some(t0()),
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
}

/// A `DateRange` whose `after` is the latest instant chrono holds is refused like any instant
/// past 9999-12-31 (INVALID_ARGUMENT naming `filter.created_after`), not a panic of the
/// exclusive bound's extra microsecond.
#[tokio::test]
async fn latest_after_instant_is_invalid_argument_not_a_panic() {
    let (_server, _store, search) = start().await;
    let filters = [SearchFilter::DateRange {
        field: "create_time".into(),
        after: Some(DateTime::<Utc>::MAX_UTC),
        before: None,
    }];
    let outcome = tokio::spawn(async move { search.search("word", 0, 10, &filters).await }).await;
    let err = outcome.expect("search panicked").unwrap_err();
    assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
    assert!(err.to_string().contains("filter.created_after"), "{err}");
}

/// A window above 1000 is read in several calls; workflows that match and are stored between
/// them shift the later ones down, and the next call repeated what the last one returned. One
/// window holds each workflow once.
#[tokio::test]
async fn a_window_in_several_calls_repeats_nothing_while_workflows_are_stored() {
    let (_server, store, search) = start().await;
    for i in 0..1100 {
        let mut w = WorkflowInstance::new("bulk", 1, json!({"word": "needle", "i": i}));
        w.create_time = t0() + Duration::seconds(i);
        store.create_new_workflow(&w).await.unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let w = WorkflowInstance::new("bulk", 1, json!({"word": "needle", "late": n}));
                store.create_new_workflow(&w).await.unwrap();
                n += 1;
            }
            n
        }
    });
    let mut repeats = Vec::new();
    for _ in 0..5 {
        let window = search.search("needle", 0, 5000, &[]).await.unwrap();
        let unique: std::collections::HashSet<_> = window.data.iter().map(|r| &r.id).collect();
        repeats.push(window.data.len() - unique.len());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stored = writer.await.unwrap();
    assert!(stored > 0, "no workflow stored during the searches");
    assert_eq!(
        repeats,
        vec![0; 5],
        "ids repeated within one window ({stored} stored meanwhile)"
    );
}

/// The store keeps microseconds and drops finer digits of a filter's instant: a `before` with
/// nanoseconds past a microsecond still includes a workflow created at that microsecond (it is
/// before the instant), and an `after` with them excludes it.
#[tokio::test]
async fn date_range_instants_finer_than_a_microsecond() {
    let (_server, store, search) = start().await;
    let at = t0() + Duration::microseconds(7);
    let mut w = WorkflowInstance::new("fine", 1, json!({"word": "grain"}));
    w.create_time = at;
    let id = store.create_new_workflow(&w).await.unwrap();
    let range = |after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>| {
        [SearchFilter::DateRange {
            field: "create_time".into(),
            after,
            before,
        }]
    };
    let half = Duration::nanoseconds(500);
    for terms in ["grain", ""] {
        let before = search
            .search(terms, 0, 10, &range(None, Some(at + half)))
            .await
            .unwrap();
        assert_eq!(ids(&before), vec![id.clone()], "before {terms:?}");
        let not_before = search
            .search(terms, 0, 10, &range(None, Some(at)))
            .await
            .unwrap();
        assert_eq!(not_before.total, 0, "before itself {terms:?}");
        let after = search
            .search(terms, 0, 10, &range(Some(at - half), None))
            .await
            .unwrap();
        assert_eq!(ids(&after), vec![id.clone()], "after {terms:?}");
        let not_after = search
            .search(terms, 0, 10, &range(Some(at + half), None))
            .await
            .unwrap();
        assert_eq!(not_after.total, 0, "after {terms:?}");
    }
}

/// `SearchWorkflows` carries `skip` as an int32: a search skip above `i32::MAX` is refused
/// (INVALID_ARGUMENT naming `skip`, as the Python adapter refuses `skip >= 2**31`), not clamped
/// to `i32::MAX` and answered as if it were that. `i32::MAX` itself is sent as it is. An empty
/// `terms` lists with page tokens and counts the skip itself, so any `u64` skip is exact there.
#[tokio::test]
async fn a_search_skip_above_i32_max_is_refused_not_clamped() {
    let (_server, store, search) = start().await;
    fill(&store, 3).await;
    let too_far = i32::MAX as u64 + 1;
    for skip in [too_far, u64::MAX] {
        let err = search
            .search("parcel", skip, 10, &[])
            .await
            .expect_err("a skip above i32::MAX was answered");
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
        assert!(err.to_string().contains("skip"), "{err}");
    }
    let last = search
        .search("parcel", i32::MAX as u64, 10, &[])
        .await
        .unwrap();
    assert_eq!((last.total, last.data.len()), (3, 0));
    let listed = search.search("", too_far, 10, &[]).await.unwrap();
    assert_eq!((listed.total, listed.data.len()), (3, 0));
}

/// A window above 1000 is read in several calls; workflows ahead of the ones already read that
/// are deleted between two calls shifted the rest up, and an offset continuation skipped as many
/// of them as were deleted. The window is continued after the last workflow it read (and with
/// empty terms by the list's page token), so every workflow that stays is in every window.
#[tokio::test]
async fn a_window_in_several_calls_misses_nothing_while_workflows_are_deleted() {
    let (server, store, search) = start().await;
    let mut visibility = wfe_grpc::pb::visibility_service_client::VisibilityServiceClient::connect(
        format!("http://{}", server.addr),
    )
    .await
    .unwrap();
    let mut made = Vec::new();
    for i in 0..1200 {
        let mut w = WorkflowInstance::new("bulk", 1, json!({"word": "needle", "i": i}));
        w.create_time = t0() + Duration::seconds(i);
        made.push(store.create_new_workflow(&w).await.unwrap());
    }
    // Newest first: the newest 150 are read by the first call of each window; they are deleted
    // one by one while windows are read (each still takes two calls), the 1050 oldest stay.
    let (doomed, staying) = (made[1050..].to_vec(), made[..1050].to_vec());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleter = tokio::spawn({
        let done = done.clone();
        async move {
            for id in doomed.iter().rev() {
                let request = wfe_grpc::pb::DeleteWorkflowRequest { id: id.clone() };
                visibility.delete_workflow(request).await.unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut windows = 0;
    let mut missing = Vec::new();
    while !done.load(std::sync::atomic::Ordering::Relaxed) || windows < 4 {
        let terms = if windows % 2 == 0 { "needle" } else { "" };
        let window = search.search(terms, 0, 5000, &[]).await.unwrap();
        let found: std::collections::HashSet<_> = window.data.iter().map(|r| &r.id).collect();
        assert_eq!(found.len(), window.data.len(), "ids repeated ({terms:?})");
        let missed = staying.iter().filter(|id| !found.contains(id)).count();
        missing.push((terms, missed));
        windows += 1;
    }
    deleter.await.unwrap();
    let missed: Vec<_> = missing.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        missed.is_empty(),
        "workflows never deleted were missed in {} of {windows} windows (terms, how many): {missed:?}",
        missed.len()
    );
}
