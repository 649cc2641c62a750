//! How a [`GrpcPersistenceProvider`](crate::GrpcPersistenceProvider) reaches the server: the
//! address, TLS and mutual TLS, the bearer token and the per-call deadline, turned into a tonic
//! [`Endpoint`] and the [`CallHeaders`] every call carries.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Endpoint;
use wfe_core::WfeError;

#[cfg(feature = "tls")]
use crate::error::error_chain;

/// Deadline of each call when [`ConnectOptions::call_timeout`] is not set (as in the Python and
/// TypeScript adapters).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls one provider has in flight at once; more wait their turn on the client (inside their
/// deadline), so one host's burst queues here instead of piling up on the shared server.
pub const MAX_IN_FLIGHT_CALLS: usize = 256;
/// Interval of HTTP/2 keepalive pings when [`ConnectOptions::keepalive_interval`] is not set (as
/// in the Python and TypeScript adapters): twice the server's default `keepalive_min_interval`.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a keepalive ping waits for its answer when [`ConnectOptions::keepalive_timeout`] is
/// not set.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `keepalive_interval` and `keepalive_timeout` accepted.
const MAX_KEEPALIVE: Duration = Duration::from_secs(24 * 60 * 60);
/// Time allowed for the TCP connect and for the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`GrpcPersistenceProvider::connect_with`](crate::GrpcPersistenceProvider::connect_with)
/// reaches the server: TLS, mutual TLS, a bearer token, the per-call deadline.
/// `ConnectOptions::default()` is what [`connect`](crate::GrpcPersistenceProvider::connect) uses:
/// plaintext, no token, [`DEFAULT_CALL_TIMEOUT`].
///
/// TLS is on when any `tls_*` field or `domain` is set, or the address starts with `https://`;
/// it needs this crate's `tls` feature (rustls). Without `tls_ca_pem` the system's trusted roots
/// verify the server.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>` on every call (the server's `--tokens-file` or
    /// `WFE_SQLITE_TOKENS`). A missing or wrong token fails each call with an error whose
    /// [`error_reason`](crate::error_reason) is [`ErrorReason::Unauthenticated`](crate::ErrorReason).
    pub token: Option<String>,
    /// PEM of the CA certificate(s) that the server's certificate must chain to.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// PEM certificate (chain) of this client, for mutual TLS; needs `tls_key_pem`.
    pub tls_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `tls_cert_pem`.
    pub tls_key_pem: Option<Vec<u8>>,
    /// Name the server's certificate must carry, when it is not the host of the address
    /// (e.g. `localhost` while connecting to `127.0.0.1`).
    pub domain: Option<String>,
    /// Deadline of each call, sent to the server as `grpc-timeout` and enforced here: a call
    /// without an answer by then fails with `DEADLINE_EXCEEDED`. `None`: [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Option<Duration>,
    /// Interval of the HTTP/2 keepalive pings on each connection, sent whether calls are in
    /// flight or not. A ping not answered within `keepalive_timeout` closes the connection: the
    /// calls on it fail with `UNAVAILABLE` (a waiting dequeue too) and the lifecycle watch stream
    /// is opened again, so a frozen or cut-off server (whose TCP connection stays up) is found
    /// within about 30 s, and the next call connects again. `None`:
    /// [`DEFAULT_KEEPALIVE_INTERVAL`]; `Some(Duration::ZERO)`: no pings. The server must accept
    /// pings that often (its `keepalive_min_interval`, default 10 s). At most a day.
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive ping waits for its answer. `None`: [`DEFAULT_KEEPALIVE_TIMEOUT`].
    /// Above zero, at most a day.
    pub keepalive_timeout: Option<Duration>,
}

impl ConnectOptions {
    pub(crate) fn wants_tls(&self) -> bool {
        self.tls_ca_pem.is_some()
            || self.tls_cert_pem.is_some()
            || self.tls_key_pem.is_some()
            || self.domain.is_some()
    }

    /// The per-call deadline these options ask for.
    pub(crate) fn deadline(&self) -> Duration {
        self.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)
    }

    /// The endpoint for `addr` under these options (not connected yet).
    pub(crate) fn endpoint(&self, addr: &str) -> Result<Endpoint, WfeError> {
        let scheme = addr.split_once("://").map(|(scheme, _)| scheme);
        let tls = self.wants_tls() || scheme.is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let uri = match scheme {
            Some(s) if tls && s.eq_ignore_ascii_case("http") => {
                return Err(invalid_argument(format!(
                    "address {addr:?} says http:// but TLS options are set"
                )));
            }
            // Anything else would connect and then fail every call on the server's side.
            Some(s) if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") => {
                return Err(invalid_argument(format!(
                    "address {addr:?}: {s}:// is not supported; expected host:port, \
                     http://host:port or https://host:port (or dns:///name:port)"
                )));
            }
            Some(_) => addr.to_string(),
            None if tls => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        if self.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid_argument("call_timeout must be longer than zero"));
        }
        if self.keepalive_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid_argument(
                "keepalive_timeout must be longer than zero",
            ));
        }
        // hyper adds both to an Instant: one too long to add (Duration::MAX) panics its
        // connection task, and every call on the connection fails. A day at most, as in the
        // Python and TypeScript adapters.
        for (name, value) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if let Some(value) = value
                && value > MAX_KEEPALIVE
            {
                return Err(invalid_argument(format!(
                    "{name} must be at most a day, got {value:?}"
                )));
            }
        }
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid_argument(format!("bad address {addr:?}: {e}")))?;
        // Without one, tonic takes the scheme's (80, 443) and the connect fails confusingly.
        match endpoint.uri().port_u16() {
            None => {
                return Err(no_port(
                    addr,
                    "host:port, http://host:port or https://host:port (e.g. localhost:50051)",
                ));
            }
            Some(0) => return Err(port_zero(addr)),
            Some(_) => {}
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .concurrency_limit(MAX_IN_FLIGHT_CALLS)
            .tcp_nodelay(true);
        let interval = self
            .keepalive_interval
            .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL);
        let endpoint = if interval.is_zero() {
            endpoint
        } else {
            // Also while idle: an idle connection to a frozen server would otherwise look fine,
            // and the next call on it (or the lifecycle publisher's pick of the first server
            // that is up) would wait out its whole deadline before anything noticed.
            endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(self.keepalive_timeout.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT))
                .keep_alive_while_idle(true)
        };
        if !tls {
            return Ok(endpoint);
        }
        #[cfg(feature = "tls")]
        {
            endpoint
                .tls_config(self.tls_config()?)
                .map_err(|e| invalid_argument(format!("TLS settings: {}", error_chain(&e))))
        }
        #[cfg(not(feature = "tls"))]
        {
            Err(invalid_argument(
                "TLS needs wfe-grpc's `tls` feature (features = [\"tls\"])",
            ))
        }
    }

    #[cfg(feature = "tls")]
    fn tls_config(&self) -> Result<tonic::transport::ClientTlsConfig, WfeError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        // A PEM without a certificate would be taken as none: the handshake then fails with
        // "UnknownIssuer" (CA) or the server refuses the client, blaming the other side.
        for (field, pem) in [
            ("tls_ca_pem", &self.tls_ca_pem),
            ("tls_cert_pem", &self.tls_cert_pem),
        ] {
            if let Some(pem) = pem
                && !has_pem_certificate(pem)
            {
                return Err(invalid_argument(format!(
                    "{field} holds no PEM certificate (no -----BEGIN CERTIFICATE----- line)"
                )));
            }
        }
        let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
        config = match &self.tls_ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        match (&self.tls_cert_pem, &self.tls_key_pem) {
            (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
            (None, None) => {}
            _ => {
                return Err(invalid_argument(
                    "tls_cert_pem and tls_key_pem must be given together",
                ));
            }
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// Whether `pem` has a `CERTIFICATE` section (what rustls reads certificates from).
#[cfg(feature = "tls")]
fn has_pem_certificate(pem: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    pem.windows(BEGIN.len()).any(|w| w == BEGIN)
}

impl std::fmt::Debug for ConnectOptions {
    // The token and the private key never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("ConnectOptions")
            .field("token", &redacted(self.token.is_some()))
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(Vec::len))
            .field("tls_cert_pem", &self.tls_cert_pem.as_ref().map(Vec::len))
            .field("tls_key_pem", &redacted(self.tls_key_pem.is_some()))
            .field("domain", &self.domain)
            .field("call_timeout", &self.call_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .finish()
    }
}

/// The refusal of an address without a port; `expected` says what forms would do.
pub(crate) fn no_port(addr: &str, expected: &str) -> WfeError {
    invalid_argument(format!(
        "address {addr:?} has no port: a port is needed, expected {expected}"
    ))
}

pub(crate) fn port_zero(addr: &str) -> WfeError {
    invalid_argument(format!(
        "address {addr:?}: port 0 is not between 1 and 65535"
    ))
}

pub(crate) fn invalid_argument(what: impl std::fmt::Display) -> WfeError {
    WfeError::Persistence(format!("INVALID_ARGUMENT (INVALID_ARGUMENT): {what}"))
}

/// What every call carries: `grpc-timeout` (the deadline, so the server gives up when the
/// client has) and `authorization: Bearer <token>` when there is a token.
#[derive(Clone)]
pub(crate) struct CallHeaders {
    authorization: Option<MetadataValue<Ascii>>,
    /// `None` for streams that stay open (a lifecycle watch).
    deadline: Option<Duration>,
}

impl CallHeaders {
    pub(crate) fn new(token: Option<&str>, deadline: Duration) -> Result<Self, WfeError> {
        let authorization = match token {
            None => None,
            Some(token) => {
                let mut value =
                    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        invalid_argument(
                            "the token must be printable ASCII (no line breaks or control characters)",
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(CallHeaders {
            authorization,
            deadline: Some(deadline),
        })
    }

    /// The same token, no deadline.
    pub(crate) fn without_deadline(&self) -> Self {
        CallHeaders {
            authorization: self.authorization.clone(),
            deadline: None,
        }
    }
}

impl std::fmt::Debug for CallHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let authorization = self.authorization.as_ref().map(|_| "Bearer <redacted>");
        f.debug_struct("CallHeaders")
            .field("authorization", &authorization)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Interceptor for CallHeaders {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        // A request that set its own deadline (a long poll) keeps it.
        if let Some(deadline) = self.deadline
            && !request.metadata().contains_key("grpc-timeout")
        {
            request.set_timeout(deadline);
        }
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
