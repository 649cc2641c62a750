//! Several servers behind one provider: round-robin over one tonic [`Channel`] per server.
//!
//! [`GrpcPersistenceProvider::connect_with`](crate::GrpcPersistenceProvider::connect_with) takes
//! one `host:port` (as before), several separated by commas (`"10.0.0.1:50051,10.0.0.2:50051"`),
//! or `dns:///name:port` (every address the name has, looked up at connect);
//! [`connect_many`](crate::GrpcPersistenceProvider::connect_many) takes a list. Each call goes
//! to the next server in turn, skipping a server that could not be reached (for a second, then it
//! is tried again). A call that never reached its server (the connection could not be made) is
//! sent to the next one; a read-only call ([`READ_METHODS`]) whose server went away under it is
//! tried again on another, within the call's deadline; a write that failed in flight is not,
//! since it may or may not have been applied: the caller gets the error (`UNAVAILABLE`).
//!
//! A server that is stopping gracefully (SIGTERM) refuses every new call for up to a second while
//! it drains: `UNAVAILABLE`, reason `STORAGE_UNAVAILABLE`, ErrorInfo metadata `not_run: "true"`
//! ([`refused_unrun`]). Such a call was not run (nothing written), so it is treated like one that
//! never reached its server: that server is left out (for a second) and the call, a write too, is
//! sent to the next one. (Before, a host on two servers got every other call refused while one of
//! them drained: hundreds of failed writes per stop with 8 callers.)
//!
//! tonic's own `Channel::balance_list` is not used: its power-of-two-choices balancer keeps
//! picking a dead server (whose reconnecting connection reports itself ready and fails each
//! call), so about one call in N fails while a server is down.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Bytes, Service, StdError, http};
use tonic::transport::Channel;

/// The calls that change nothing (EnsureStoreExists: nothing twice), so trying them again is safe.
pub const READ_METHODS: &[&str] = &[
    "/wfe.persistence.v1.WorkflowService/GetWorkflow",
    "/wfe.persistence.v1.WorkflowService/GetWorkflowByName",
    "/wfe.persistence.v1.WorkflowService/GetRunnableWorkflows",
    "/wfe.persistence.v1.WorkflowService/BatchGetWorkflows",
    "/wfe.persistence.v1.EventService/GetEvent",
    "/wfe.persistence.v1.EventService/GetEvents",
    "/wfe.persistence.v1.EventService/GetRunnableEvents",
    "/wfe.persistence.v1.SubscriptionService/GetSubscription",
    "/wfe.persistence.v1.SubscriptionService/GetSubscriptions",
    "/wfe.persistence.v1.SubscriptionService/GetFirstOpenSubscription",
    "/wfe.persistence.v1.VisibilityService/ListWorkflows",
    "/wfe.persistence.v1.VisibilityService/SearchWorkflows",
    "/wfe.persistence.v1.StoreService/EnsureStoreExists",
];

/// Attempts of one call at most (each on another server).
pub const MAX_ATTEMPTS: usize = 3;
/// How long a server that could not be reached is left out.
pub const DOWN_FOR: Duration = Duration::from_secs(1);

/// The connection(s) a provider's calls go through: one channel, or one per server in turn.
#[derive(Clone, Debug)]
pub struct Balanced {
    inner: Arc<Inner>,
    /// Every call to the first server of the list not left out, instead of the next in turn.
    in_order: bool,
}

#[derive(Debug)]
struct Inner {
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Per channel: left out until this many milliseconds after `epoch` (0: not left out).
    down_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl Balanced {
    /// Calls over `channels` in turn (one channel: straight through).
    pub(crate) fn new(channels: Vec<Channel>) -> Self {
        assert!(!channels.is_empty(), "at least one channel");
        let down_until = channels.iter().map(|_| AtomicU64::new(0)).collect();
        Balanced {
            inner: Arc::new(Inner {
                channels,
                next: AtomicUsize::new(0),
                down_until,
                epoch: Instant::now(),
            }),
            in_order: false,
        }
    }

    /// The same connections, each call to the first server of the list that is not left out:
    /// for lifecycle events, which a server relays only to its own watchers, so publishers and
    /// watchers given the same list meet on one server (the next one when it dies).
    pub(crate) fn first_server(&self) -> Self {
        Balanced {
            inner: Arc::clone(&self.inner),
            in_order: true,
        }
    }

    /// How many servers the calls are spread over.
    pub fn servers(&self) -> usize {
        self.inner.channels.len()
    }

    /// Server `index` of the list alone (straight through, no other server tried).
    pub(crate) fn only(&self, index: usize) -> Self {
        Balanced::new(vec![self.inner.channels[index].clone()])
    }
}

/// Which server of the list answered (an extension of every response through [`Balanced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Served(pub usize);

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn leave_out(&self, index: usize) {
        let until = self.now_ms() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(1000);
        self.down_until[index].store(until, Ordering::Relaxed);
    }

    /// The next server in turn not tried yet and not left out (or just the next not tried).
    fn pick(&self, tried: &[usize], in_order: bool) -> usize {
        let count = self.channels.len();
        let start = match in_order {
            true => 0,
            false => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let now = self.now_ms();
        let mut fallback = None;
        for step in 0..count {
            let index = (start + step) % count;
            if tried.contains(&index) {
                continue;
            }
            if self.down_until[index].load(Ordering::Relaxed) <= now {
                return index;
            }
            fallback.get_or_insert(index);
        }
        fallback.unwrap_or(start % count)
    }
}

/// Whether `error` says the connection could not be made (the request never left).
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = cause {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Whether `response` is a server's refusal of a call it did not run (it is stopping): a
/// Trailers-Only answer `UNAVAILABLE` whose wfe-sqlite ErrorInfo has metadata `not_run: "true"`.
pub fn refused_unrun<B>(response: &http::Response<B>) -> bool {
    use tonic_types::StatusExt;
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return false;
    };
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    status.get_details_error_info().is_some_and(|info| {
        info.domain == crate::error::ERROR_DOMAIN
            && info.metadata.get("not_run").map(String::as_str) == Some("true")
    })
}

/// A request body of bytes already read, to send again.
struct Replay(Option<Bytes>);

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The whole request body (a unary or server-streaming request: one message).
async fn read_body(mut body: Body) -> Result<Bytes, StdError> {
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(bytes))
}

async fn send(
    mut channel: Channel,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, tonic::transport::Error> {
    poll_fn(|cx| channel.poll_ready(cx)).await?;
    channel.call(request).await
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its own channel's readiness once it has picked one.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let in_order = self.in_order;
        Box::pin(async move {
            if inner.channels.len() == 1 {
                let mut response = send(inner.channels[0].clone(), request).await?;
                response.extensions_mut().insert(Served(0));
                return Ok(response);
            }
            let read = READ_METHODS.contains(&request.uri().path());
            let (parts, body) = request.into_parts();
            let bytes = read_body(body).await?;
            let attempts = MAX_ATTEMPTS.min(inner.channels.len());
            let mut tried = Vec::with_capacity(attempts);
            loop {
                let index = inner.pick(&tried, in_order);
                tried.push(index);
                let attempt = http::Request::from_parts(
                    parts.clone(),
                    Body::new(Replay(Some(bytes.clone()))),
                );
                match send(inner.channels[index].clone(), attempt).await {
                    Ok(response) if refused_unrun(&response) && tried.len() < attempts => {
                        // Not run: like a call that never reached its server.
                        inner.leave_out(index);
                        tracing::debug!(
                            server = index,
                            "call refused unrun (server stopping); trying the next server"
                        );
                    }
                    Ok(mut response) => {
                        if refused_unrun(&response) {
                            inner.leave_out(index);
                        }
                        response.extensions_mut().insert(Served(index));
                        return Ok(response);
                    }
                    Err(error) => {
                        inner.leave_out(index);
                        let again = read || never_sent(&error);
                        if !again || tried.len() >= attempts {
                            return Err(error.into());
                        }
                        tracing::debug!(server = index, %error, "call failed; trying the next server");
                    }
                }
            }
        })
    }
}

/// `dns:///name:port` (or `dns:name:port`): `ip:port` for every address the name has, and the name.
pub(crate) async fn resolve_dns(target: &str) -> Result<(Vec<String>, String), wfe_core::WfeError> {
    let rest = target.trim_start_matches("dns:");
    // dns:///name:port, dns://authority/name:port (the resolver's authority is not used), dns:name:port
    let host_port = match rest.strip_prefix("//") {
        Some(after) => after.split_once('/').map_or(after, |(_, path)| path),
        None => rest,
    };
    let Some((host, port)) = host_port
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
    else {
        return Err(crate::connect::no_port(
            target,
            "dns:///NAME:PORT (e.g. dns:///wfe.internal:50051)",
        ));
    };
    if port.parse::<u16>() == Ok(0) {
        return Err(crate::connect::port_zero(target));
    }
    let found = tokio::net::lookup_host(host_port).await.map_err(|e| {
        wfe_core::WfeError::Persistence(format!(
            "UNAVAILABLE (UNAVAILABLE): cannot resolve {host:?} in {target:?}: {e}"
        ))
    })?;
    let servers: Vec<String> = found.map(|a| a.to_string()).collect();
    if servers.is_empty() {
        return Err(wfe_core::WfeError::Persistence(format!(
            "UNAVAILABLE (UNAVAILABLE): {host:?} in {target:?} has no address"
        )));
    }
    Ok((servers, host.trim_matches(['[', ']']).to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::{Code, Status};
    use tonic_types::{ErrorDetails, StatusExt};

    use super::{http, refused_unrun};

    fn answer(code: Code, domain: &str, metadata: &[(&str, &str)]) -> http::Response<()> {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Status::with_error_details(
            code,
            "the server is shutting down",
            ErrorDetails::with_error_info("STORAGE_UNAVAILABLE", domain, metadata),
        )
        .into_http()
    }

    #[test]
    fn only_an_unavailable_marked_not_run_is_a_refusal_unrun() {
        let not_run = [("not_run", "true")];
        assert!(refused_unrun(&answer(
            Code::Unavailable,
            "wfe-sqlite",
            &not_run
        )));
        // The database unreachable: the call may have run.
        assert!(!refused_unrun(&answer(
            Code::Unavailable,
            "wfe-sqlite",
            &[]
        )));
        assert!(!refused_unrun(&answer(
            Code::Unavailable,
            "proxy",
            &not_run
        )));
        assert!(!refused_unrun(&answer(
            Code::Internal,
            "wfe-sqlite",
            &not_run
        )));
        assert!(!refused_unrun(&answer(
            Code::Unavailable,
            "wfe-sqlite",
            &[("not_run", "false")]
        )));
        assert!(!refused_unrun(&http::Response::new(())));
    }
}
