//! Maps gRPC statuses from the wfe-sqlite server to `WfeError`.
//!
//! The server puts a `google.rpc.ErrorInfo` (domain `wfe-sqlite`) in `grpc-status-details-bin`;
//! its `reason` decides the variant. Without one (a proxy, an older server, a transport error)
//! the status code decides, with the subject of the call (workflow, event, subscription) telling
//! which "not found" it is.
//!
//! | reason / code                          | `WfeError`                       |
//! | -------------------------------------- | -------------------------------- |
//! | `WORKFLOW_NOT_FOUND`                   | `WorkflowNotFound(id)`           |
//! | `EVENT_NOT_FOUND`                      | `EventNotFound(id)`              |
//! | `SUBSCRIPTION_NOT_FOUND`               | `SubscriptionNotFound(id)`       |
//! | NOT_FOUND without a reason             | the not-found of the call's subject |
//! | `LEASE_LOST` / FAILED_PRECONDITION on a lease | `LockFailed(command)`     |
//! | `UNAUTHENTICATED` (missing or wrong token) | `Persistence("UNAUTHENTICATED (UNAUTHENTICATED): ...")` |
//! | `REVISION_CONFLICT` (a stale persist, nothing written) | `Persistence("REVISION_CONFLICT (ABORTED): ...")`, see [`is_revision_conflict`] |
//! | anything else (`WORKFLOW_ALREADY_EXISTS`, `WORKFLOW_NAME_TAKEN`, `INVALID_ARGUMENT`, `STORAGE_FULL`, UNAVAILABLE, ...) | `Persistence("REASON (CODE): message")` |
//!
//! `WfeError` has no "already exists" or "invalid argument" variant; the reason is kept at the
//! start of the `Persistence` text, and [`reason_of`] reads it back.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use wfe_core::WfeError;

/// What a call was about, for the fallback on status codes and for the error's text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Workflow(&'a str),
    Event(&'a str),
    Subscription(&'a str),
    Command(&'a str),
    None,
}

impl Subject<'_> {
    fn id(&self) -> String {
        match self {
            Subject::Workflow(s)
            | Subject::Event(s)
            | Subject::Subscription(s)
            | Subject::Command(s) => s.to_string(),
            Subject::None => String::new(),
        }
    }
}

pub(crate) fn from_status(status: &Status, subject: Subject<'_>) -> WfeError {
    let reason = status.get_details_error_info().map(|info| info.reason);
    match reason.as_deref() {
        Some("WORKFLOW_NOT_FOUND") => return WfeError::WorkflowNotFound(subject.id()),
        Some("EVENT_NOT_FOUND") => return WfeError::EventNotFound(subject.id()),
        Some("SUBSCRIPTION_NOT_FOUND") => return WfeError::SubscriptionNotFound(subject.id()),
        Some("LEASE_LOST") => return WfeError::LockFailed(subject.id()),
        Some(_) => {}
        None => match (status.code(), subject) {
            (Code::NotFound, Subject::Workflow(id)) => {
                return WfeError::WorkflowNotFound(id.into());
            }
            (Code::NotFound, Subject::Event(id)) => return WfeError::EventNotFound(id.into()),
            (Code::NotFound, Subject::Subscription(id)) => {
                return WfeError::SubscriptionNotFound(id.into());
            }
            (Code::FailedPrecondition, Subject::Command(id)) => {
                return WfeError::LockFailed(id.into());
            }
            _ => {}
        },
    }
    let mut message = status.message().to_string();
    let mut status_code = status.code();
    // A call the connection failed under (e.g. closed after a TLS 1.3 handshake because the
    // server refused the client's certificate) comes back from tonic as UNKNOWN "transport
    // error" or CANCELLED "operation was canceled", depending on timing; the server never
    // answered it, so it is UNAVAILABLE, as in the other gRPC clients. (A CANCELLED the server
    // sends has no source.) The cause is in the sources.
    if let Some(source) = std::error::Error::source(status) {
        let from_transport = std::iter::successors(Some(source), |e| e.source())
            .any(|e| e.is::<tonic::transport::Error>());
        if reason.is_none()
            && from_transport
            && matches!(status_code, Code::Unknown | Code::Cancelled)
        {
            status_code = Code::Unavailable;
        }
        let chain = error_chain(source);
        if chain.starts_with(&message) {
            message = chain;
        } else if !message.contains(&chain) {
            message = format!("{message}: {chain}");
        }
    }
    let code = code_name(status_code);
    let label = reason.unwrap_or_else(|| code.to_string());
    WfeError::Persistence(format!("{label} ({code}): {message}"))
}

/// The canonical upper-case name of a gRPC status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The machine-readable reason of an error produced by this adapter, e.g.
/// `Some("WORKFLOW_ALREADY_EXISTS")`: the reason (or, without one, the upper-case status code)
/// at the start of a `Persistence` text, or the reason behind a typed variant.
pub fn reason_of(err: &WfeError) -> Option<&str> {
    match err {
        WfeError::WorkflowNotFound(_) => Some("WORKFLOW_NOT_FOUND"),
        WfeError::EventNotFound(_) => Some("EVENT_NOT_FOUND"),
        WfeError::SubscriptionNotFound(_) => Some("SUBSCRIPTION_NOT_FOUND"),
        WfeError::LockFailed(_) => Some("LEASE_LOST"),
        WfeError::Persistence(text) => text.split_once(" (").map(|(reason, _)| reason),
        _ => None,
    }
}

/// True when `err` is a persist refused because another process stored the workflow since this
/// one read it (`REVISION_CONFLICT`, gRPC ABORTED): nothing was written, and the stored
/// workflow is the other process's.
pub fn is_revision_conflict(err: &WfeError) -> bool {
    reason_of(err) == Some("REVISION_CONFLICT")
}

pub(crate) fn transport(err: tonic::transport::Error, addr: &str) -> WfeError {
    let text = error_chain(&err);
    WfeError::Persistence(format!(
        "UNAVAILABLE (UNAVAILABLE): cannot connect to {addr}: {text}"
    ))
}

/// An error and its sources, `: `-separated (a TLS failure is only named deep in the chain).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some errors already print their cause; say it once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::{ErrorDetails, StatusExt};

    fn with_reason(code: Code, reason: &str) -> Status {
        Status::with_error_details(
            code,
            "server says",
            ErrorDetails::with_error_info(reason, "wfe-sqlite", HashMap::new()),
        )
    }

    #[test]
    fn reasons_pick_the_variant() {
        let e = from_status(
            &with_reason(Code::NotFound, "WORKFLOW_NOT_FOUND"),
            Subject::Workflow("w1"),
        );
        assert!(matches!(e, WfeError::WorkflowNotFound(ref id) if id == "w1"));
        let e = from_status(
            &with_reason(Code::NotFound, "EVENT_NOT_FOUND"),
            Subject::Event("e1"),
        );
        assert!(matches!(e, WfeError::EventNotFound(ref id) if id == "e1"));
        let e = from_status(
            &with_reason(Code::NotFound, "SUBSCRIPTION_NOT_FOUND"),
            Subject::Subscription("s1"),
        );
        assert!(matches!(e, WfeError::SubscriptionNotFound(ref id) if id == "s1"));
        let e = from_status(
            &with_reason(Code::FailedPrecondition, "LEASE_LOST"),
            Subject::Command("c"),
        );
        assert!(matches!(e, WfeError::LockFailed(_)));
        let e = from_status(
            &with_reason(Code::AlreadyExists, "WORKFLOW_ALREADY_EXISTS"),
            Subject::Workflow("w1"),
        );
        assert!(matches!(e, WfeError::Persistence(_)));
        assert_eq!(reason_of(&e), Some("WORKFLOW_ALREADY_EXISTS"));
        assert!(!is_revision_conflict(&e));
        let e = from_status(
            &with_reason(Code::Aborted, "REVISION_CONFLICT"),
            Subject::Workflow("w1"),
        );
        assert!(
            matches!(e, WfeError::Persistence(ref t) if t.starts_with("REVISION_CONFLICT (ABORTED): ")),
            "{e:?}"
        );
        assert!(is_revision_conflict(&e));
    }

    #[test]
    fn reason_wins_over_the_subject() {
        // A NOT_FOUND for a workflow while persisting subscriptions stays a workflow error.
        let e = from_status(
            &with_reason(Code::NotFound, "WORKFLOW_NOT_FOUND"),
            Subject::Subscription("s"),
        );
        assert!(matches!(e, WfeError::WorkflowNotFound(_)));
    }

    #[test]
    fn without_details_the_code_and_subject_decide() {
        let e = from_status(&Status::not_found("x"), Subject::Event("e9"));
        assert!(matches!(e, WfeError::EventNotFound(ref id) if id == "e9"));
        let e = from_status(&Status::unavailable("down"), Subject::Workflow("w"));
        assert_eq!(reason_of(&e), Some("UNAVAILABLE"));
        let e = from_status(&Status::invalid_argument("bad"), Subject::None);
        assert_eq!(reason_of(&e), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn unauthenticated_is_a_persistence_error_with_its_reason() {
        let e = from_status(
            &with_reason(Code::Unauthenticated, "UNAUTHENTICATED"),
            Subject::Workflow("w1"),
        );
        assert!(
            matches!(e, WfeError::Persistence(ref t) if t.starts_with("UNAUTHENTICATED (UNAUTHENTICATED): ")),
            "{e:?}"
        );
        assert_eq!(reason_of(&e), Some("UNAUTHENTICATED"));
        // From a proxy, without ErrorInfo: the code gives the same reason.
        let e = from_status(&Status::unauthenticated("no token"), Subject::None);
        assert_eq!(reason_of(&e), Some("UNAUTHENTICATED"));
    }
}
