//! `GrpcPersistenceProvider`: the call layer. Every RPC of `wfe.persistence.v1` that the adapter
//! makes is in this file; model conversions live in [`crate::convert`], status mapping in
//! [`crate::error`].

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wfe_core::WfeError;
use wfe_core::models::{
    Event, EventSubscription, ExecutionError, ScheduledCommand, WorkflowInstance,
};
use wfe_core::traits::{
    EventRepository, PersistenceProvider, ScheduledCommandRepository, SubscriptionRepository,
    WorkflowRepository,
};

use crate::cache::WorkflowCache;
use crate::convert;
#[cfg(feature = "tls")]
use crate::error::error_chain;
use crate::error::{Subject, from_status, transport};
use crate::pb;
use crate::pb::event_service_client::EventServiceClient;
use crate::pb::execution_error_service_client::ExecutionErrorServiceClient;
use crate::pb::scheduled_command_service_client::ScheduledCommandServiceClient;
use crate::pb::store_service_client::StoreServiceClient;
use crate::pb::subscription_service_client::SubscriptionServiceClient;
use crate::pb::workflow_service_client::WorkflowServiceClient;

type Result<T> = wfe_core::Result<T>;

/// Largest gRPC message the adapter sends or accepts (the server accepts payloads of 16 MiB;
/// a workflow with its pointers may be larger than its data alone).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The server's limit of ids per BatchGetWorkflows request.
pub const MAX_IDS_PER_BATCH_GET: usize = 10_000;
/// Calls one provider has in flight at once; more wait their turn on the client. (The Python
/// server answers CANCELLED when about a thousand calls arrive at once on one connection.)
pub const MAX_IN_FLIGHT_CALLS: usize = 256;
/// Commands claimed per ClaimCommands call in `process_commands`.
pub const COMMANDS_PER_CLAIM: i32 = 100;
/// Lease on claimed commands: an unacknowledged claim is offered again after this.
pub const COMMAND_LEASE: Duration = Duration::from_secs(30);

/// The future a `process_commands` handler returns.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Time allowed for the TCP connect and for the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`GrpcPersistenceProvider::connect_with`] reaches the server: TLS, mutual TLS, a bearer
/// token. `ConnectOptions::default()` is what [`GrpcPersistenceProvider::connect`] uses:
/// plaintext, no token.
///
/// TLS is on when any `tls_*` field or `domain` is set, or the address starts with `https://`;
/// it needs this crate's `tls` feature (rustls). Without `tls_ca_pem` the system's trusted roots
/// verify the server.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>` on every call (the server's `--tokens-file` or
    /// `WFE_SQLITE_TOKENS`). A missing or wrong token fails each call with an error whose
    /// [`reason_of`](crate::reason_of) is `UNAUTHENTICATED`.
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
}

impl ConnectOptions {
    fn wants_tls(&self) -> bool {
        self.tls_ca_pem.is_some()
            || self.tls_cert_pem.is_some()
            || self.tls_key_pem.is_some()
            || self.domain.is_some()
    }
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
            .finish()
    }
}

fn invalid_argument(what: impl std::fmt::Display) -> WfeError {
    WfeError::Persistence(format!("INVALID_ARGUMENT (INVALID_ARGUMENT): {what}"))
}

/// Puts `authorization: Bearer <token>` on every call (nothing without a token).
#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    fn new(token: Option<&str>) -> Result<Self> {
        let Some(token) = token else {
            return Ok(Auth(None));
        };
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            invalid_argument(
                "the token must be printable ASCII (no line breaks or control characters)",
            )
        })?;
        value.set_sensitive(true);
        Ok(Auth(Some(value)))
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Auth(Bearer <redacted>)"
        } else {
            "Auth(None)"
        })
    }
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(feature = "tls")]
fn tls_config(options: &ConnectOptions) -> Result<tonic::transport::ClientTlsConfig> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
    config = match &options.tls_ca_pem {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_native_roots(),
    };
    match (&options.tls_cert_pem, &options.tls_key_pem) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
        (None, None) => {}
        _ => {
            return Err(invalid_argument(
                "tls_cert_pem and tls_key_pem must be given together",
            ));
        }
    }
    if let Some(domain) = &options.domain {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}

/// A WFE persistence provider that stores everything in a wfe-sqlite server over gRPC.
///
/// Cheap to clone (all clones share one HTTP/2 connection, which reconnects by itself).
#[derive(Clone, Debug)]
pub struct GrpcPersistenceProvider {
    workflows: WorkflowServiceClient<Transport>,
    events: EventServiceClient<Transport>,
    subscriptions: SubscriptionServiceClient<Transport>,
    commands: ScheduledCommandServiceClient<Transport>,
    errors: ExecutionErrorServiceClient<Transport>,
    store: StoreServiceClient<Transport>,
    worker_id: String,
    /// The connection, for the lock, queue and lifecycle providers built on this one.
    channel: Channel,
    auth: Auth,
    /// Revisions read or written, and workflows handed out by dequeues (shared by clones).
    cache: Arc<WorkflowCache>,
}

/// What the generated clients call through: the channel, with the token added to each call.
pub(crate) type Transport = InterceptedService<Channel, Auth>;

impl GrpcPersistenceProvider {
    /// Connects to a wfe-sqlite server at `addr`: `host:port`, or a full `http://host:port` URI.
    /// Plaintext, without a token: [`connect_with`](Self::connect_with) for TLS and tokens.
    /// Fails when the server cannot be reached now.
    pub async fn connect(addr: impl AsRef<str>) -> Result<Self> {
        Self::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects to a wfe-sqlite server at `addr` (`host:port`, `http://...` or `https://...`)
    /// with TLS, mutual TLS and/or a bearer token, as `options` say. Fails when the server
    /// cannot be reached now, or the TLS handshake fails (`UNAVAILABLE`); bad options are
    /// `INVALID_ARGUMENT`. (With TLS 1.3 a server that refuses the client's certificate may
    /// only say so on the first call, which then fails with `UNAVAILABLE`.)
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use wfe_grpc::{ConnectOptions, GrpcPersistenceProvider};
    /// let _store = GrpcPersistenceProvider::connect_with("localhost:50051", ConnectOptions {
    ///     token: Some(std::env::var("WFE_TOKEN")?),
    ///     tls_ca_pem: Some(std::fs::read("ca.crt")?),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(addr: impl AsRef<str>, options: ConnectOptions) -> Result<Self> {
        let addr = addr.as_ref();
        let scheme = addr.split_once("://").map(|(scheme, _)| scheme);
        let tls = options.wants_tls() || scheme.is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let uri = match scheme {
            Some(s) if tls && s.eq_ignore_ascii_case("http") => {
                return Err(invalid_argument(format!(
                    "address {addr:?} says http:// but TLS options are set"
                )));
            }
            Some(_) => addr.to_string(),
            None if tls => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let auth = Auth::new(options.token.as_deref())?;
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid_argument(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .concurrency_limit(MAX_IN_FLIGHT_CALLS)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        #[cfg(feature = "tls")]
        let endpoint = if tls {
            endpoint
                .tls_config(tls_config(&options)?)
                .map_err(|e| invalid_argument(format!("TLS settings: {}", error_chain(&e))))?
        } else {
            endpoint
        };
        #[cfg(not(feature = "tls"))]
        if tls {
            return Err(invalid_argument(
                "TLS needs wfe-grpc's `tls` feature (features = [\"tls\"])",
            ));
        }
        let channel = endpoint.connect().await.map_err(|e| transport(e, addr))?;
        Ok(Self::build(channel, auth))
    }

    /// Builds the provider on a channel the caller configured (TLS, interceptors, ...); no token
    /// is added to its calls.
    pub fn from_channel(channel: Channel) -> Self {
        Self::build(channel, Auth(None))
    }

    fn build(channel: Channel, auth: Auth) -> Self {
        let m = MAX_MESSAGE_BYTES;
        Self {
            workflows: WorkflowServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            events: EventServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            subscriptions: SubscriptionServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
            commands: ScheduledCommandServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
            errors: ExecutionErrorServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            store: StoreServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            worker_id: format!(
                "wfe-grpc-rust/{}/{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ),
            channel,
            auth,
            cache: Arc::default(),
        }
    }

    /// The connection (with the token interceptor) for another service's client.
    pub(crate) fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    /// The revisions and handed-out workflows this provider (and its clones) remember.
    pub(crate) fn cache(&self) -> &Arc<WorkflowCache> {
        &self.cache
    }

    /// The revision of workflow `id` that this provider last read or wrote (and will expect on
    /// the next persist), if it still remembers it.
    pub fn known_revision(&self, id: &str) -> Option<i64> {
        self.cache.revision(id)
    }

    /// The revision expected when persisting `id`: the remembered one, or 0 (no check).
    fn expected_revision(&self, id: &str) -> i64 {
        self.cache.forget_primed(id);
        self.cache.revision(id).unwrap_or(0)
    }

    /// Converts a workflow read from the server and remembers its revision.
    fn read_workflow(&self, w: pb::WorkflowInstance) -> Result<WorkflowInstance> {
        self.cache.remember(&w.id, w.revision);
        convert::workflow_from_wire(w)
    }

    /// The id this provider gives the server when it claims scheduled commands.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    async fn claim_commands(
        &self,
        as_of: &DateTime<Utc>,
    ) -> Result<(String, Vec<ScheduledCommand>)> {
        let response = self
            .commands
            .clone()
            .claim_commands(pb::ClaimCommandsRequest {
                as_of: Some(convert::ts_to_wire(as_of)),
                max_commands: COMMANDS_PER_CLAIM,
                lease_duration: Some(convert::duration_to_wire(COMMAND_LEASE)),
                worker_id: self.worker_id.clone(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::None))?
            .into_inner();
        let commands = response
            .commands
            .into_iter()
            .filter_map(|c| c.command)
            .map(convert::command_from_wire)
            .collect::<Result<Vec<_>>>()?;
        Ok((response.lease_id, commands))
    }

    async fn acknowledge_command(&self, command: &ScheduledCommand, lease_id: &str) -> Result<()> {
        self.commands
            .clone()
            .acknowledge_command(pb::AcknowledgeCommandRequest {
                command_name: convert::command_name_to_wire(&command.command_name) as i32,
                data: command.data.clone(),
                lease_id: lease_id.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Command(&command.data)))?;
        Ok(())
    }

    async fn release_command(&self, command: &ScheduledCommand, lease_id: &str) -> Result<()> {
        self.commands
            .clone()
            .release_command(pb::ReleaseCommandRequest {
                command_name: convert::command_name_to_wire(&command.command_name) as i32,
                data: command.data.clone(),
                lease_id: lease_id.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Command(&command.data)))?;
        Ok(())
    }
}

/// Gathers every page of a paged list RPC. `fetch(page_token)` returns one page and the
/// next token; an empty token ends the list.
async fn collect_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String)>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token.clone()).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        if next == token {
            return Err(WfeError::Persistence(
                "INTERNAL: server returned the same page token twice".into(),
            ));
        }
        token = next;
    }
}

#[async_trait]
impl WorkflowRepository for GrpcPersistenceProvider {
    async fn create_new_workflow(&self, instance: &WorkflowInstance) -> Result<String> {
        let request = pb::CreateWorkflowRequest {
            workflow: Some(convert::workflow_to_wire(instance)?),
        };
        let response = self
            .workflows
            .clone()
            .create_workflow(request)
            .await
            .map_err(|s| from_status(&s, Subject::Workflow(&instance.id)))?
            .into_inner();
        self.cache.remember(&response.id, response.revision);
        Ok(response.id)
    }

    /// Replaces the stored workflow, expecting the revision this provider last read or wrote
    /// for it: when another process has persisted it since, nothing is written and the error's
    /// [`reason_of`](crate::reason_of) is `REVISION_CONFLICT` (see
    /// [`is_revision_conflict`](crate::is_revision_conflict)).
    async fn persist_workflow(&self, instance: &WorkflowInstance) -> Result<()> {
        let request = pb::PersistWorkflowRequest {
            workflow: Some(convert::workflow_to_wire(instance)?),
            expected_revision: self.expected_revision(&instance.id),
        };
        let response = self
            .workflows
            .clone()
            .persist_workflow(request)
            .await
            .map_err(|s| from_status(&s, Subject::Workflow(&instance.id)))?
            .into_inner();
        self.cache.remember(&instance.id, response.revision);
        Ok(())
    }

    async fn persist_workflow_with_subscriptions(
        &self,
        instance: &WorkflowInstance,
        subscriptions: &[EventSubscription],
    ) -> Result<()> {
        let request = pb::PersistWorkflowWithSubscriptionsRequest {
            workflow: Some(convert::workflow_to_wire(instance)?),
            subscriptions: subscriptions
                .iter()
                .map(convert::subscription_to_wire)
                .collect::<Result<_>>()?,
            expected_revision: self.expected_revision(&instance.id),
        };
        let response = self
            .workflows
            .clone()
            .persist_workflow_with_subscriptions(request)
            .await
            .map_err(|s| from_status(&s, Subject::Workflow(&instance.id)))?
            .into_inner();
        self.cache.remember(&instance.id, response.revision);
        Ok(())
    }

    async fn get_runnable_instances(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        let as_at = convert::ts_to_wire(&as_at);
        collect_pages(|page_token| {
            let mut client = self.workflows.clone();
            let request = pb::GetRunnableWorkflowsRequest {
                as_at: Some(as_at),
                page_size: 0,
                page_token,
            };
            async move {
                let page = client
                    .get_runnable_workflows(request)
                    .await
                    .map_err(|s| from_status(&s, Subject::None))?
                    .into_inner();
                Ok((page.workflow_ids, page.next_page_token))
            }
        })
        .await
    }

    /// Reads the workflow (and remembers its revision). Right after a
    /// [`GrpcQueueProvider`](crate::GrpcQueueProvider) built on this provider dequeued `id`, the
    /// copy that came with the dequeue answers this one read without a round trip.
    async fn get_workflow_instance(&self, id: &str) -> Result<WorkflowInstance> {
        if let Some(w) = self.cache.take_primed(id) {
            return self.read_workflow(w);
        }
        let response = self
            .workflows
            .clone()
            .get_workflow(pb::GetWorkflowRequest { id: id.to_string() })
            .await
            .map_err(|s| from_status(&s, Subject::Workflow(id)))?
            .into_inner();
        match response.workflow {
            Some(w) => self.read_workflow(w),
            None => Err(WfeError::WorkflowNotFound(id.to_string())),
        }
    }

    async fn get_workflow_instance_by_name(&self, name: &str) -> Result<WorkflowInstance> {
        let response = self
            .workflows
            .clone()
            .get_workflow_by_name(pb::GetWorkflowByNameRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Workflow(name)))?
            .into_inner();
        match response.workflow {
            Some(w) => self.read_workflow(w),
            None => Err(WfeError::WorkflowNotFound(name.to_string())),
        }
    }

    async fn get_workflow_instances(&self, ids: &[String]) -> Result<Vec<WorkflowInstance>> {
        // The server returns each id once, in request order; ids repeated across chunks must
        // not come back twice either, so drop repeats before chunking.
        let mut seen = HashSet::new();
        let unique: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect();
        let mut found = Vec::new();
        for chunk in unique.chunks(MAX_IDS_PER_BATCH_GET) {
            let mut stream = self
                .workflows
                .clone()
                .batch_get_workflows(pb::BatchGetWorkflowsRequest {
                    ids: chunk.to_vec(),
                })
                .await
                .map_err(|s| from_status(&s, Subject::None))?
                .into_inner();
            while let Some(message) = stream
                .message()
                .await
                .map_err(|s| from_status(&s, Subject::None))?
            {
                for w in message.workflows {
                    found.push(self.read_workflow(w)?);
                }
            }
        }
        Ok(found)
    }

    async fn next_definition_sequence(&self, definition_id: &str) -> Result<u64> {
        let response = self
            .workflows
            .clone()
            .next_definition_sequence(pb::NextDefinitionSequenceRequest {
                definition_id: definition_id.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::None))?
            .into_inner();
        Ok(response.value)
    }
}

#[async_trait]
impl EventRepository for GrpcPersistenceProvider {
    async fn create_event(&self, event: &Event) -> Result<String> {
        let request = pb::CreateEventRequest {
            event: Some(convert::event_to_wire(event)?),
        };
        let response = self
            .events
            .clone()
            .create_event(request)
            .await
            .map_err(|s| from_status(&s, Subject::Event(&event.id)))?
            .into_inner();
        Ok(response.id)
    }

    async fn get_event(&self, id: &str) -> Result<Event> {
        let response = self
            .events
            .clone()
            .get_event(pb::GetEventRequest { id: id.to_string() })
            .await
            .map_err(|s| from_status(&s, Subject::Event(id)))?
            .into_inner();
        match response.event {
            Some(e) => convert::event_from_wire(e),
            None => Err(WfeError::EventNotFound(id.to_string())),
        }
    }

    async fn get_runnable_events(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        let as_at = convert::ts_to_wire(&as_at);
        collect_pages(|page_token| {
            let mut client = self.events.clone();
            let request = pb::GetRunnableEventsRequest {
                as_at: Some(as_at),
                page_size: 0,
                page_token,
            };
            async move {
                let page = client
                    .get_runnable_events(request)
                    .await
                    .map_err(|s| from_status(&s, Subject::None))?
                    .into_inner();
                Ok((page.event_ids, page.next_page_token))
            }
        })
        .await
    }

    async fn get_events(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let as_of = convert::ts_to_wire(&as_of);
        collect_pages(|page_token| {
            let mut client = self.events.clone();
            let request = pb::GetEventsRequest {
                event_name: event_name.to_string(),
                event_key: event_key.to_string(),
                as_of: Some(as_of),
                page_size: 0,
                page_token,
            };
            async move {
                let page = client
                    .get_events(request)
                    .await
                    .map_err(|s| from_status(&s, Subject::None))?
                    .into_inner();
                Ok((page.event_ids, page.next_page_token))
            }
        })
        .await
    }

    async fn mark_event_processed(&self, id: &str) -> Result<()> {
        self.events
            .clone()
            .mark_event_processed(pb::MarkEventProcessedRequest { id: id.to_string() })
            .await
            .map_err(|s| from_status(&s, Subject::Event(id)))?;
        Ok(())
    }

    async fn mark_event_unprocessed(&self, id: &str) -> Result<()> {
        self.events
            .clone()
            .mark_event_unprocessed(pb::MarkEventUnprocessedRequest { id: id.to_string() })
            .await
            .map_err(|s| from_status(&s, Subject::Event(id)))?;
        Ok(())
    }
}

#[async_trait]
impl SubscriptionRepository for GrpcPersistenceProvider {
    async fn create_event_subscription(&self, subscription: &EventSubscription) -> Result<String> {
        let request = pb::CreateSubscriptionRequest {
            subscription: Some(convert::subscription_to_wire(subscription)?),
        };
        let response = self
            .subscriptions
            .clone()
            .create_subscription(request)
            .await
            .map_err(|s| from_status(&s, Subject::Subscription(&subscription.id)))?
            .into_inner();
        Ok(response.id)
    }

    async fn get_subscriptions(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<EventSubscription>> {
        let as_of = convert::ts_to_wire(&as_of);
        let wire = collect_pages(|page_token| {
            let mut client = self.subscriptions.clone();
            let request = pb::GetSubscriptionsRequest {
                event_name: event_name.to_string(),
                event_key: event_key.to_string(),
                as_of: Some(as_of),
                page_size: 0,
                page_token,
            };
            async move {
                let page = client
                    .get_subscriptions(request)
                    .await
                    .map_err(|s| from_status(&s, Subject::None))?
                    .into_inner();
                Ok((page.subscriptions, page.next_page_token))
            }
        })
        .await?;
        wire.into_iter()
            .map(convert::subscription_from_wire)
            .collect()
    }

    async fn terminate_subscription(&self, subscription_id: &str) -> Result<()> {
        self.subscriptions
            .clone()
            .terminate_subscription(pb::TerminateSubscriptionRequest {
                id: subscription_id.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Subscription(subscription_id)))?;
        Ok(())
    }

    async fn get_subscription(&self, subscription_id: &str) -> Result<EventSubscription> {
        let response = self
            .subscriptions
            .clone()
            .get_subscription(pb::GetSubscriptionRequest {
                id: subscription_id.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Subscription(subscription_id)))?
            .into_inner();
        match response.subscription {
            Some(s) => convert::subscription_from_wire(s),
            None => Err(WfeError::SubscriptionNotFound(subscription_id.to_string())),
        }
    }

    async fn get_first_open_subscription(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Option<EventSubscription>> {
        let response = self
            .subscriptions
            .clone()
            .get_first_open_subscription(pb::GetFirstOpenSubscriptionRequest {
                event_name: event_name.to_string(),
                event_key: event_key.to_string(),
                as_of: Some(convert::ts_to_wire(&as_of)),
            })
            .await
            .map_err(|s| from_status(&s, Subject::None))?
            .into_inner();
        response
            .subscription
            .map(convert::subscription_from_wire)
            .transpose()
    }

    async fn set_subscription_token(
        &self,
        subscription_id: &str,
        token: &str,
        worker_id: &str,
        expiry: DateTime<Utc>,
    ) -> Result<bool> {
        let response = self
            .subscriptions
            .clone()
            .set_subscription_token(pb::SetSubscriptionTokenRequest {
                id: subscription_id.to_string(),
                token: token.to_string(),
                worker_id: worker_id.to_string(),
                expiry: Some(convert::ts_to_wire(&expiry)),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Subscription(subscription_id)))?
            .into_inner();
        Ok(response.acquired)
    }

    async fn clear_subscription_token(&self, subscription_id: &str, token: &str) -> Result<()> {
        self.subscriptions
            .clone()
            .clear_subscription_token(pb::ClearSubscriptionTokenRequest {
                id: subscription_id.to_string(),
                token: token.to_string(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Subscription(subscription_id)))?;
        Ok(())
    }
}

#[async_trait]
impl ScheduledCommandRepository for GrpcPersistenceProvider {
    fn supports_scheduled_commands(&self) -> bool {
        true
    }

    async fn schedule_command(&self, command: &ScheduledCommand) -> Result<()> {
        self.commands
            .clone()
            .schedule_command(pb::ScheduleCommandRequest {
                command: Some(convert::command_to_wire(command)),
            })
            .await
            .map_err(|s| from_status(&s, Subject::Command(&command.data)))?;
        Ok(())
    }

    /// Claims due commands in batches under a lease, runs `handler` locally on each, and
    /// acknowledges (deletes) the ones that succeed. A command whose handler fails stays held
    /// by its lease until every due command has been offered, then is released: it is not
    /// retried within this call, and is offered again on the next one. Handler failures are
    /// not errors of this call (the command simply stays scheduled); an error is returned only
    /// when talking to the server fails.
    async fn process_commands(
        &self,
        as_of: DateTime<Utc>,
        handler: &(dyn Fn(ScheduledCommand) -> HandlerFuture + Send + Sync),
    ) -> Result<()> {
        let mut failed: Vec<(ScheduledCommand, String)> = Vec::new();
        let mut failed_keys: HashSet<(i32, String)> = HashSet::new();
        let mut first_error: Option<WfeError> = None;

        'claiming: loop {
            let (lease_id, claimed) = match self.claim_commands(&as_of).await {
                Ok(claim) => claim,
                Err(e) => {
                    first_error = Some(e);
                    break 'claiming;
                }
            };
            if claimed.is_empty() {
                break;
            }
            for command in claimed {
                let key = (
                    convert::command_name_to_wire(&command.command_name) as i32,
                    command.data.clone(),
                );
                // Offered again in this call (its first lease ran out while we were busy):
                // it already failed here, so it only waits for the release below.
                if failed_keys.contains(&key) {
                    failed.push((command, lease_id.clone()));
                    continue;
                }
                match handler(command.clone()).await {
                    Ok(()) => match self.acknowledge_command(&command, &lease_id).await {
                        Ok(()) => {}
                        // The lease ran out and another processor took the command over: it
                        // will run it again (at-least-once); nothing for us to undo.
                        Err(WfeError::LockFailed(_)) => {}
                        Err(e) => {
                            first_error = Some(e);
                            failed.push((command, lease_id.clone()));
                            break 'claiming;
                        }
                    },
                    Err(_) => {
                        failed_keys.insert(key);
                        failed.push((command, lease_id.clone()));
                    }
                }
            }
        }

        for (command, lease_id) in &failed {
            match self.release_command(command, lease_id).await {
                // Lost lease: the command is already free (or another processor has it).
                Ok(()) | Err(WfeError::LockFailed(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PersistenceProvider for GrpcPersistenceProvider {
    async fn persist_errors(&self, errors: &[ExecutionError]) -> Result<()> {
        // One request, one transaction: all or nothing (only the message limit bounds it).
        if errors.is_empty() {
            return Ok(());
        }
        self.errors
            .clone()
            .persist_errors(pb::PersistErrorsRequest {
                errors: errors
                    .iter()
                    .map(convert::execution_error_to_wire)
                    .collect(),
            })
            .await
            .map_err(|s| from_status(&s, Subject::None))?;
        Ok(())
    }

    async fn ensure_store_exists(&self) -> Result<()> {
        self.store
            .clone()
            .ensure_store_exists(pb::EnsureStoreExistsRequest {})
            .await
            .map_err(|s| from_status(&s, Subject::None))?;
        Ok(())
    }
}
