//! Maps gRPC statuses from the wfe-sqlite server to `WfeError`.
//!
//! The server puts a `google.rpc.ErrorInfo` (domain `wfe-sqlite`) in `grpc-status-details-bin`;
//! its `reason`, read as the contract's generated [`ErrorReason`], decides the variant. Without
//! one (a proxy, an older server, a transport error), or with a reason this contract version
//! does not know, the status code decides, with the subject of the call (workflow, event,
//! subscription) telling which "not found" it is.
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
//! | a call whose connection failed under it (never made, closed, reset, a keepalive ping not answered), before or during the answer | `Persistence("UNAVAILABLE (UNAVAILABLE): ...")` |
//! | anything else (`WORKFLOW_ALREADY_EXISTS`, `WORKFLOW_NAME_TAKEN`, `INVALID_ARGUMENT`, `STORAGE_FULL`, UNAVAILABLE, ...) | `Persistence("REASON (CODE): message")` |
//!
//! `WfeError` has no "already exists", "unauthenticated" or "conflict" variant; the reason is
//! kept at the start of the `Persistence` text: [`error_reason`] reads it back as an
//! [`ErrorReason`], [`reason_of`] as text (also the status code where there was no reason).

use tonic::{Code, Status};
use tonic_types::StatusExt;
use wfe_core::WfeError;

use crate::pb::ErrorReason;

/// The `google.rpc.ErrorInfo` domain of wfe-sqlite's errors; ErrorInfo of other domains
/// (a proxy's, say) is ignored.
pub const ERROR_DOMAIN: &str = "wfe-sqlite";

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

/// The wfe-sqlite reason `status` carries, when it is one this contract version knows.
fn reason_in(status: &Status) -> Option<ErrorReason> {
    let info = status.get_details_error_info()?;
    if info.domain != ERROR_DOMAIN {
        return None;
    }
    ErrorReason::from_str_name(&info.reason).filter(|r| *r != ErrorReason::Unspecified)
}

pub(crate) fn from_status(status: &Status, subject: Subject<'_>) -> WfeError {
    let reason = reason_in(status);
    match reason {
        Some(ErrorReason::WorkflowNotFound) => return WfeError::WorkflowNotFound(subject.id()),
        Some(ErrorReason::EventNotFound) => return WfeError::EventNotFound(subject.id()),
        Some(ErrorReason::SubscriptionNotFound) => {
            return WfeError::SubscriptionNotFound(subject.id());
        }
        Some(ErrorReason::LeaseLost) => return WfeError::LockFailed(subject.id()),
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
    // A status with a source was made by tonic from a local error, never sent by the server (a
    // server's status, UNKNOWN included, has none). A call the channel gave up on at its deadline
    // (`grpc-timeout`) comes back as CANCELLED "Timeout expired": DEADLINE_EXCEEDED, as in the
    // other gRPC clients. A call the connection failed under comes back as UNKNOWN ("error
    // reading a body from connection": closed, reset, or dropped by a keepalive ping timeout
    // while the answer was coming), CANCELLED ("operation was canceled") or INTERNAL (tonic's
    // "h2 protocol error"), depending on timing and tonic's features: the server never finished
    // answering it, so it is UNAVAILABLE, as in the other gRPC clients and the adapter's other
    // lost connections. The cause is in the sources.
    if let Some(source) = std::error::Error::source(status) {
        let causes = std::iter::successors(Some(source), |e| e.source());
        if reason.is_none() && causes.clone().any(|e| e.is::<tonic::TimeoutExpired>()) {
            status_code = Code::DeadlineExceeded;
        } else if reason.is_none()
            && matches!(
                status_code,
                Code::Unknown | Code::Cancelled | Code::Internal
            )
            && let Some(code) = transport_code(causes)
        {
            status_code = code;
        }
        let chain = error_chain(source);
        // tonic's message is often one link of the chain ("tcp connect error"): say it once.
        if chain.contains(&message) {
            message = chain;
        } else if !message.contains(&chain) {
            message = format!("{message}: {chain}");
        }
    }
    let code = code_name(status_code);
    let label = reason.map_or(code, |r| r.as_str_name());
    WfeError::Persistence(format!("{label} ({code}): {message}"))
}

/// The code of a call that failed with the errors `causes` (a status's sources) below it, when
/// one of them is the connection's: a stream the server reset (RST_STREAM) has the code gRPC's
/// HTTP/2 mapping gives its reason; any other failure of the connection (closed, reset, broken
/// pipe, GOAWAY, a keepalive ping not answered, a connection never made) is UNAVAILABLE.
fn transport_code<'a>(
    causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Option<Code> {
    let mut lost = false;
    for cause in causes {
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.is_reset()
            && h2.is_remote()
        {
            // https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md#errors
            return Some(match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
                Some(h2::Reason::CANCEL) => Code::Cancelled,
                Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
                Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
                _ => Code::Internal,
            });
        }
        lost |= cause.is::<tonic::transport::Error>()
            || cause.is::<hyper::Error>()
            || cause.is::<h2::Error>()
            || cause.is::<std::io::Error>();
    }
    lost.then_some(Code::Unavailable)
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
    let reason = match err {
        WfeError::WorkflowNotFound(_) => ErrorReason::WorkflowNotFound,
        WfeError::EventNotFound(_) => ErrorReason::EventNotFound,
        WfeError::SubscriptionNotFound(_) => ErrorReason::SubscriptionNotFound,
        WfeError::LockFailed(_) => ErrorReason::LeaseLost,
        WfeError::Persistence(text) => return text.split_once(" (").map(|(reason, _)| reason),
        _ => return None,
    };
    Some(reason.as_str_name())
}

/// The contract's [`ErrorReason`] of an error produced by this adapter, e.g.
/// `Some(ErrorReason::Unauthenticated)` for a missing token or
/// `Some(ErrorReason::RevisionConflict)` for a stale revision; `None` for errors without one
/// (a transport failure, a status code without a reason).
pub fn error_reason(err: &WfeError) -> Option<ErrorReason> {
    reason_of(err).and_then(ErrorReason::from_str_name)
}

/// True when `err` is a persist refused because another process stored the workflow since this
/// one read it (`REVISION_CONFLICT`, gRPC ABORTED): nothing was written, and the stored
/// workflow is the other process's.
pub fn is_revision_conflict(err: &WfeError) -> bool {
    error_reason(err) == Some(ErrorReason::RevisionConflict)
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

    fn with_info(code: Code, reason: &str, domain: &str) -> Status {
        Status::with_error_details(
            code,
            "server says",
            ErrorDetails::with_error_info(reason, domain, HashMap::new()),
        )
    }

    fn with_reason(code: Code, reason: ErrorReason) -> Status {
        with_info(code, reason.as_str_name(), ERROR_DOMAIN)
    }

    #[test]
    fn reasons_pick_the_variant() {
        let e = from_status(
            &with_reason(Code::NotFound, ErrorReason::WorkflowNotFound),
            Subject::Workflow("w1"),
        );
        assert!(matches!(e, WfeError::WorkflowNotFound(ref id) if id == "w1"));
        let e = from_status(
            &with_reason(Code::NotFound, ErrorReason::EventNotFound),
            Subject::Event("e1"),
        );
        assert!(matches!(e, WfeError::EventNotFound(ref id) if id == "e1"));
        let e = from_status(
            &with_reason(Code::NotFound, ErrorReason::SubscriptionNotFound),
            Subject::Subscription("s1"),
        );
        assert!(matches!(e, WfeError::SubscriptionNotFound(ref id) if id == "s1"));
        let e = from_status(
            &with_reason(Code::FailedPrecondition, ErrorReason::LeaseLost),
            Subject::Command("c"),
        );
        assert!(matches!(e, WfeError::LockFailed(_)));
        assert_eq!(error_reason(&e), Some(ErrorReason::LeaseLost));
        let e = from_status(
            &with_reason(Code::AlreadyExists, ErrorReason::WorkflowAlreadyExists),
            Subject::Workflow("w1"),
        );
        assert!(matches!(e, WfeError::Persistence(_)));
        assert_eq!(reason_of(&e), Some("WORKFLOW_ALREADY_EXISTS"));
        assert_eq!(error_reason(&e), Some(ErrorReason::WorkflowAlreadyExists));
        assert!(!is_revision_conflict(&e));
        let e = from_status(
            &with_reason(Code::Aborted, ErrorReason::RevisionConflict),
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
            &with_reason(Code::NotFound, ErrorReason::WorkflowNotFound),
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
        assert_eq!(error_reason(&e), None);
        let e = from_status(&Status::invalid_argument("bad"), Subject::None);
        assert_eq!(reason_of(&e), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn another_domain_or_an_unknown_reason_falls_back_on_the_code() {
        let e = from_status(
            &with_info(Code::NotFound, "WORKFLOW_NOT_FOUND", "a-proxy"),
            Subject::Event("e1"),
        );
        assert!(matches!(e, WfeError::EventNotFound(ref id) if id == "e1"));
        let e = from_status(
            &with_info(Code::ResourceExhausted, "SOME_FUTURE_REASON", ERROR_DOMAIN),
            Subject::None,
        );
        assert!(
            matches!(e, WfeError::Persistence(ref t) if t.starts_with("RESOURCE_EXHAUSTED (RESOURCE_EXHAUSTED): ")),
            "{e:?}"
        );
        assert_eq!(error_reason(&e), None);
    }

    #[test]
    fn unauthenticated_is_a_persistence_error_with_its_reason() {
        let e = from_status(
            &with_reason(Code::Unauthenticated, ErrorReason::Unauthenticated),
            Subject::Workflow("w1"),
        );
        assert!(
            matches!(e, WfeError::Persistence(ref t) if t.starts_with("UNAUTHENTICATED (UNAUTHENTICATED): ")),
            "{e:?}"
        );
        assert_eq!(reason_of(&e), Some("UNAUTHENTICATED"));
        assert_eq!(error_reason(&e), Some(ErrorReason::Unauthenticated));
        // From a proxy, without ErrorInfo: the code gives the same reason.
        let e = from_status(&Status::unauthenticated("no token"), Subject::None);
        assert_eq!(error_reason(&e), Some(ErrorReason::Unauthenticated));
    }

    #[test]
    fn a_call_the_channel_gave_up_on_is_deadline_exceeded() {
        // What tonic's channel answers when `grpc-timeout` runs out before the server answers.
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status.code(), Code::Cancelled);
        let e = from_status(&status, Subject::Workflow("w1"));
        assert_eq!(reason_of(&e), Some("DEADLINE_EXCEEDED"), "{e}");
    }

    #[test]
    fn a_connection_lost_under_a_call_is_unavailable_and_a_servers_unknown_is_not() {
        // What tonic makes of a body it cannot read: UNKNOWN, with the connection's error below.
        let lost = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = Status::from_error(Box::new(lost));
        assert_eq!(status.code(), Code::Unknown);
        let e = from_status(&status, Subject::Workflow("w1"));
        assert_eq!(reason_of(&e), Some("UNAVAILABLE"), "{e}");
        assert!(e.to_string().contains("broken pipe"), "{e}");
        // An HTTP/2 error of the connection (tonic says INTERNAL or UNKNOWN, by its features).
        let status = Status::from_error(Box::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        let e = from_status(&status, Subject::None);
        assert_eq!(reason_of(&e), Some("UNAVAILABLE"), "{e}");
        // The server's own UNKNOWN (or INTERNAL) has no source: it stays what the server said.
        let e = from_status(&Status::unknown("handler raised"), Subject::None);
        assert_eq!(reason_of(&e), Some("UNKNOWN"), "{e}");
        let e = from_status(&Status::internal("bad message"), Subject::None);
        assert_eq!(reason_of(&e), Some("INTERNAL"), "{e}");
        // A local error that is not the connection's keeps its code.
        let status = Status::from_error(Box::new(Link("not a transport error", None)));
        let e = from_status(&status, Subject::None);
        assert_eq!(reason_of(&e), Some("UNKNOWN"), "{e}");
    }

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);

    impl std::fmt::Display for Link {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Link {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_message_that_is_a_link_of_its_cause_is_said_once() {
        // What a call to a server that is down comes back as: the message is the middle link.
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(Link(
            "transport error",
            Some(Box::new(Link(
                "tcp connect error",
                Some(Box::new(Link("Connection refused (os error 111)", None))),
            ))),
        )));
        let e = from_status(&status, Subject::None);
        assert_eq!(
            e.to_string(),
            "Persistence error: UNAVAILABLE (UNAVAILABLE): transport error: tcp connect error: \
             Connection refused (os error 111)"
        );
        // A message the chain does not hold is kept in front of it.
        let mut status = Status::unavailable("server says");
        status.set_source(std::sync::Arc::new(Link("cause", None)));
        let e = from_status(&status, Subject::None);
        assert_eq!(
            e.to_string(),
            "Persistence error: UNAVAILABLE (UNAVAILABLE): server says: cause"
        );
    }

    #[test]
    fn revision_conflict_keeps_its_reason() {
        let e = from_status(
            &with_reason(Code::Aborted, ErrorReason::RevisionConflict),
            Subject::Workflow("w1"),
        );
        assert!(
            matches!(e, WfeError::Persistence(ref t) if t.starts_with("REVISION_CONFLICT (ABORTED): ")),
            "{e:?}"
        );
        assert_eq!(error_reason(&e), Some(ErrorReason::RevisionConflict));
        // ABORTED without a reason is not a revision conflict.
        let e = from_status(&Status::aborted("busy"), Subject::Workflow("w1"));
        assert_eq!(error_reason(&e), None);
        assert_eq!(reason_of(&e), Some("ABORTED"));
    }
}
