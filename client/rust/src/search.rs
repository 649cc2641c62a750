//! `GrpcSearchIndex`: wfe-core's [`SearchIndex`] answered by the wfe-sqlite server's
//! `VisibilityService`, so a WFE host gets workflow search without OpenSearch.
//!
//! The server indexes every workflow in the same transaction that writes it (SQLite FTS5 over
//! name, reference, description and data), so [`SearchIndex::index_workflow`] has nothing to
//! do: it returns at once. Searching maps the trait's arguments onto `SearchWorkflows`:
//!
//! | `SearchIndex`                         | `VisibilityService`                                  |
//! | ------------------------------------- | ---------------------------------------------------- |
//! | `terms` (words; `word*` for a prefix) | `query`: every word must match                       |
//! | empty `terms`                         | `ListWorkflows` (newest first), the total counted page by page |
//! | `SearchFilter::Status` (repeatable)   | `filter.statuses` (any of them)                      |
//! | `SearchFilter::Reference`             | `filter.reference` (exact); two different ones match nothing |
//! | `SearchFilter::DateRange` on the creation time (`create_time`, `created`, ...) | `created_after` (exclusive, as the trait says) and `created_before` |
//! | `skip`, `take`                        | `skip`, `take` (windows above 1000 in several calls, each workflow once) |
//!
//! A window above 1000 read in several calls: `SearchWorkflows` has an offset window and no
//! page token, so a later call reads again up to 100 (then up to 500) of the matches before its
//! offset and continues after the last workflow the window already holds; workflows ahead of it
//! deleted (or purged) or stored between two calls make it skip or repeat nothing. What an
//! offset contract cannot guarantee: if none of the matches read last is found any more (more
//! than 500 deleted or stored ahead of them between two calls), the call continues at the offset
//! as before; and the order is by rank (bm25) first, so a change that moves matches relative to
//! each other (not the case when all have the same rank) can still make a window miss one. With
//! empty `terms` (`ListWorkflows`), pages continue by the server's page token: nothing deleted
//! or stored between pages shifts the rest.
//!
//! A search's `skip` above `i32::MAX` (2**31-1, what `SearchWorkflows.skip` carries) is an
//! `INVALID_ARGUMENT` error, as in the Python adapter; with empty `terms` the list counts the
//! skip itself, so any `skip` is exact.
//!
//! A `DateRange` on another field is an `INVALID_ARGUMENT` error: the store filters by
//! creation time only.
//!
//! ```no_run
//! # async fn demo() -> wfe_core::Result<()> {
//! use wfe_core::traits::SearchIndex;
//! use wfe_grpc::GrpcSearchIndex;
//!
//! use wfe_grpc::GrpcPersistenceProvider;
//!
//! let store = GrpcPersistenceProvider::connect("127.0.0.1:50051").await?;
//! let search = GrpcSearchIndex::new(&store); // shares the store's connection
//! let found = search.search("order-77", 0, 20, &[]).await?;
//! println!("{} matches", found.total);
//! // WorkflowHostBuilder::new().use_persistence(Arc::new(store)).use_search(Arc::new(search))...
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use wfe_core::WfeError;
use wfe_core::models::WorkflowInstance;
use wfe_core::traits::{Page, SearchFilter, SearchIndex, WorkflowSearchResult};

use crate::connect::invalid_argument;
use crate::convert;
use crate::error::Subject;
use crate::pb;
use crate::pb::visibility_service_client::VisibilityServiceClient;
use crate::provider::{GrpcPersistenceProvider, MAX_MESSAGE_BYTES, Transport};

type Result<T> = wfe_core::Result<T>;

/// Most summaries the server returns per call (larger windows take several calls).
pub const MAX_WINDOW: u64 = 1000;

/// How many of the matches a window read last a later call of it reads again, to continue after
/// the last one it holds (see `search_window`).
const OVERLAP: u64 = 100;

/// How far back a later call reads when none of the last `OVERLAP` is found any more.
const MAX_OVERLAP: u64 = 500;

/// Field names of `SearchFilter::DateRange` that mean the creation time (compared without case,
/// `_` and `-`).
const CREATION_FIELDS: [&str; 5] = [
    "createtime",
    "created",
    "createdat",
    "createdate",
    "createdtime",
];

/// WFE's [`SearchIndex`] over a wfe-sqlite server, on the connection (token, TLS, deadline) of
/// a [`GrpcPersistenceProvider`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcSearchIndex {
    store: GrpcPersistenceProvider,
    visibility: VisibilityServiceClient<Transport>,
}

/// The checked filter of one search.
#[derive(Debug, Default, PartialEq)]
struct Selection {
    filter: pb::WorkflowFilter,
    /// Two different references were asked for: nothing can match.
    impossible: bool,
}

fn selection(filters: &[SearchFilter]) -> Result<Selection> {
    let mut selected = Selection::default();
    let mut after: Option<DateTime<Utc>> = None;
    let mut before: Option<DateTime<Utc>> = None;
    for filter in filters {
        match filter {
            SearchFilter::Status(status) => {
                let wire = convert::workflow_status_to_wire(*status) as i32;
                if !selected.filter.statuses.contains(&wire) {
                    selected.filter.statuses.push(wire);
                }
            }
            SearchFilter::Reference(reference) => match &selected.filter.reference {
                Some(earlier) if earlier != reference => selected.impossible = true,
                _ => selected.filter.reference = Some(reference.clone()),
            },
            SearchFilter::DateRange {
                field,
                before: b,
                after: a,
            } => {
                let name: String = field
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .flat_map(char::to_lowercase)
                    .collect();
                if !CREATION_FIELDS.contains(&name.as_str()) {
                    return Err(invalid_argument(format!(
                        "SearchFilter::DateRange on {field:?}: the store filters by creation time only \
                         (field \"create_time\")"
                    )));
                }
                if let Some(a) = a {
                    after = Some(after.map_or(*a, |x| x.max(*a)));
                }
                if let Some(b) = b {
                    before = Some(before.map_or(*b, |x| x.min(*b)));
                }
            }
        }
    }
    // "after" excludes the instant itself; the store keeps microseconds and `created_after`
    // includes its instant, so the first included one is a microsecond later.
    // The latest instant chrono holds has no next microsecond: it is past 9999-12-31, refused as
    // the server refuses such an instant, not a panic of the addition.
    selected.filter.created_after = match after {
        None => None,
        Some(a) => match a.checked_add_signed(TimeDelta::microseconds(1)) {
            Some(first) => Some(convert::ts_to_wire(&first)),
            None => {
                return Err(invalid_argument(format!(
                    "filter.created_after: {a} is outside 1970-01-01..9999-12-31"
                )));
            }
        },
    };
    // The store drops the digits finer than a microsecond: "before" a sub-microsecond instant
    // still includes its microsecond, so the bound is rounded up to the next one.
    selected.filter.created_before = match before {
        None => None,
        Some(b) => {
            let finer = i64::from(b.timestamp_subsec_nanos() % 1000);
            let up = if finer == 0 {
                Some(b)
            } else {
                b.checked_add_signed(TimeDelta::nanoseconds(1000 - finer))
            };
            match up {
                Some(up) => Some(convert::ts_to_wire(&up)),
                None => {
                    return Err(invalid_argument(format!(
                        "filter.created_before: {b} is outside 1970-01-01..9999-12-31"
                    )));
                }
            }
        }
    };
    Ok(selected)
}

fn result_from_wire(summary: pb::WorkflowSummary) -> Result<WorkflowSearchResult> {
    Ok(WorkflowSearchResult {
        status: convert::workflow_status_from_wire(summary.status)?,
        id: summary.id,
        workflow_definition_id: summary.workflow_definition_id,
        version: summary.version,
        reference: summary.reference,
        description: summary.description,
    })
}

impl GrpcSearchIndex {
    /// The search index of the server `store` talks to, sharing its connection and settings.
    pub fn new(store: &GrpcPersistenceProvider) -> Self {
        Self {
            store: store.clone(),
            visibility: VisibilityServiceClient::new(store.transport())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    async fn search_window(
        &self,
        query: &str,
        filter: &pb::WorkflowFilter,
        skip: u64,
        take: u64,
    ) -> Result<Page<WorkflowSearchResult>> {
        // SearchWorkflows has an offset window and no page token. Continuing a window at the
        // offset after what it read would skip one match for each one ahead of it deleted
        // between two calls, and repeat one for each one stored. So a later call reads again up
        // to OVERLAP of the matches before that offset, finds the last workflow the window
        // already holds, and continues after it (each id kept once); when none of them is in
        // the answer, it reads further back (up to MAX_OVERLAP) before it falls back on the
        // offset.
        let mut data = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Where the matches after the last one read begin (corrected by each answer).
        let mut next = skip;
        let mut overlap: u64 = 0;
        loop {
            let want = (take - data.len() as u64).clamp(1, MAX_WINDOW - overlap);
            let from = next - overlap;
            let asked = overlap + want;
            let request = pb::SearchWorkflowsRequest {
                query: query.to_string(),
                filter: Some(filter.clone()),
                // `skip` itself was checked; a later call of a window reaching past match
                // 2**31-1 cannot be sent either (never clamped: that would repeat matches).
                skip: i32::try_from(from).map_err(|_| {
                    invalid_argument(format!(
                        "skip: the window from {skip} reaches past match 2147483647 (2**31-1), \
                         which SearchWorkflows cannot address"
                    ))
                })?,
                take: asked as i32,
            };
            let response = self
                .store
                .call(&self.visibility, Subject::None, |mut c| async move {
                    c.search_workflows(request).await
                })
                .await?;
            let total = u64::try_from(response.total).unwrap_or(0);
            let got = response.workflows.len() as u64;
            // The first call starts at `skip`; a later one after the last match it holds.
            let resume = if data.is_empty() {
                Some(0)
            } else {
                response
                    .workflows
                    .iter()
                    .rposition(|s| seen.contains(&s.id))
                    .map(|i| i + 1)
            };
            let resume = match resume {
                Some(i) => i,
                // None of the matches read again is in the answer (deleted, or moved by more
                // than the overlap): read further back, then fall back on the offset.
                None if overlap < MAX_OVERLAP.min(next) => {
                    overlap = (overlap * 2).clamp(OVERLAP, MAX_OVERLAP).min(next);
                    continue;
                }
                None => overlap.min(got) as usize,
            };
            if take > 0 {
                for summary in response.workflows.into_iter().skip(resume) {
                    if data.len() as u64 >= take {
                        break;
                    }
                    if seen.insert(summary.id.clone()) {
                        data.push(result_from_wire(summary)?);
                    }
                }
            }
            next = from + got;
            if data.len() as u64 >= take || got < asked || next >= total {
                return Ok(Page { data, total });
            }
            overlap = OVERLAP.min(next);
        }
    }

    async fn list_window(
        &self,
        filter: &pb::WorkflowFilter,
        skip: u64,
        take: u64,
    ) -> Result<Page<WorkflowSearchResult>> {
        // ListWorkflows has no total: read every page, keep the window, count the rest.
        let mut data = Vec::new();
        let mut seen: u64 = 0;
        let mut token = String::new();
        loop {
            let request = pb::ListWorkflowsRequest {
                filter: Some(filter.clone()),
                page_size: MAX_WINDOW as i32,
                page_token: token.clone(),
            };
            let response = self
                .store
                .call(&self.visibility, Subject::None, |mut c| async move {
                    c.list_workflows(request).await
                })
                .await?;
            for summary in response.workflows {
                if seen >= skip && (seen - skip) < take {
                    data.push(result_from_wire(summary)?);
                }
                seen += 1;
            }
            if response.next_page_token.is_empty() {
                return Ok(Page { data, total: seen });
            }
            if response.next_page_token == token {
                return Err(WfeError::Persistence(
                    "INTERNAL (INTERNAL): server returned the same page token twice".into(),
                ));
            }
            token = response.next_page_token;
        }
    }
}

#[async_trait]
impl SearchIndex for GrpcSearchIndex {
    /// Nothing to do: the server indexes each workflow in the transaction that stores it.
    async fn index_workflow(&self, _instance: &WorkflowInstance) -> Result<()> {
        Ok(())
    }

    async fn search(
        &self,
        terms: &str,
        skip: u64,
        take: u64,
        filters: &[SearchFilter],
    ) -> Result<Page<WorkflowSearchResult>> {
        let searching = !terms.trim().is_empty();
        // SearchWorkflows carries `skip` as an int32 (as the Python adapter, refuse what it
        // cannot carry rather than clamp it); a list counts the skip here, any u64 is exact.
        if searching && i32::try_from(skip).is_err() {
            return Err(invalid_argument(format!(
                "skip: must be from 0 to 2147483647 (2**31-1) for a search, got {skip}"
            )));
        }
        let selected = selection(filters)?;
        if selected.impossible {
            return Ok(Page {
                data: Vec::new(),
                total: 0,
            });
        }
        if !searching {
            self.list_window(&selected.filter, skip, take).await
        } else {
            self.search_window(terms, &selected.filter, skip, take)
                .await
        }
    }

    /// Nothing to start: the connection is open.
    async fn start(&self) -> Result<()> {
        Ok(())
    }

    /// Nothing to stop: the connection closes when the last clone is dropped.
    async fn stop(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use wfe_core::models::WorkflowStatus;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn filters_become_one_wire_filter() {
        let s = selection(&[
            SearchFilter::Status(WorkflowStatus::Complete),
            SearchFilter::Status(WorkflowStatus::Terminated),
            SearchFilter::Status(WorkflowStatus::Complete),
            SearchFilter::Reference("order-77".into()),
            SearchFilter::DateRange {
                field: "create_time".into(),
                after: Some(at(100)),
                before: Some(at(500)),
            },
            SearchFilter::DateRange {
                field: "CreateTime".into(),
                after: Some(at(200)),
                before: Some(at(900)),
            },
        ])
        .unwrap();
        assert!(!s.impossible);
        assert_eq!(
            s.filter.statuses,
            vec![
                pb::WorkflowStatus::Complete as i32,
                pb::WorkflowStatus::Terminated as i32
            ]
        );
        assert_eq!(s.filter.reference.as_deref(), Some("order-77"));
        let after = s.filter.created_after.unwrap();
        assert_eq!((after.seconds, after.nanos), (200, 1000));
        assert_eq!(s.filter.created_before.unwrap().seconds, 500);
    }

    #[test]
    fn two_references_match_nothing_and_other_date_fields_are_refused() {
        let s = selection(&[
            SearchFilter::Reference("a".into()),
            SearchFilter::Reference("b".into()),
        ])
        .unwrap();
        assert!(s.impossible);
        let err = selection(&[SearchFilter::DateRange {
            field: "complete_time".into(),
            after: None,
            before: Some(at(1)),
        }])
        .unwrap_err();
        assert_eq!(crate::reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
        assert_eq!(selection(&[]).unwrap(), Selection::default());
    }
}
