//! `GrpcPersistenceProvider`: the call layer. Every RPC of `wfe.persistence.v1` that the adapter
//! makes goes through [`GrpcPersistenceProvider::call`], the one place where the deadline and the
//! mapping of a gRPC status to `WfeError` ([`crate::error`]) are applied. Model conversions live
//! in [`crate::convert`], connection settings in [`crate::connect`].

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wfe_core::WfeError;
use wfe_core::models::{
    Event, EventSubscription, ExecutionError, QueueType, ScheduledCommand, WorkflowInstance,
};
use wfe_core::traits::{
    EventRepository, PersistenceProvider, ScheduledCommandRepository, SubscriptionRepository,
    WorkflowRepository,
};

use crate::balance::Balanced;
use crate::cache::WorkflowCache;
use crate::connect::{CallHeaders, ConnectOptions, DEFAULT_CALL_TIMEOUT};
use crate::convert;
use crate::error::{Subject, from_status, transport};
use crate::pb;
use crate::pb::event_service_client::EventServiceClient;
use crate::pb::execution_error_service_client::ExecutionErrorServiceClient;
use crate::pb::scheduled_command_service_client::ScheduledCommandServiceClient;
use crate::pb::store_service_client::StoreServiceClient;
use crate::pb::subscription_service_client::SubscriptionServiceClient;
use crate::pb::workflow_service_client::WorkflowServiceClient;
use crate::sequence::SequenceBlocks;

type Result<T> = wfe_core::Result<T>;

/// Largest gRPC message the adapter sends or accepts, as in the other adapters and the server
/// (which accepts payloads of 16 MiB; a workflow with its pointers may be larger than its data).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Ids per BatchGetWorkflows request in `get_workflow_instances`, as in the other adapters
/// (the contract allows up to 10,000).
pub const IDS_PER_BATCH_GET: usize = 1_000;
/// Commands claimed per ClaimCommands call in `process_commands`.
pub const COMMANDS_PER_CLAIM: i32 = 100;
/// Lease on claimed commands: an unacknowledged claim is offered again after this.
pub const COMMAND_LEASE: Duration = Duration::from_secs(30);

/// Refuses a request larger than a gRPC message may be ([`MAX_MESSAGE_BYTES`]) before anything
/// is sent, naming its size (tonic would fail it while sending, as INTERNAL "h2 protocol error").
pub(crate) fn within_message_limit(
    request: &impl prost::Message,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let len = request.encoded_len();
    if len > MAX_MESSAGE_BYTES {
        return Err(WfeError::Persistence(format!(
            "RESOURCE_EXHAUSTED (RESOURCE_EXHAUSTED): {}: the request is {len} bytes, more \
             than the {MAX_MESSAGE_BYTES} a message may have; nothing was sent",
            what()
        )));
    }
    Ok(())
}

/// The future a `process_commands` handler returns.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// What the generated clients call through: the channel, with the deadline and the token
/// added to each call.
pub(crate) type Transport = InterceptedService<Balanced, CallHeaders>;

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
    deadline: Duration,
    worker_id: String,
    /// The connection(s) and call headers, for the lock, queue and lifecycle providers built on
    /// this one.
    channel: Balanced,
    headers: CallHeaders,
    /// Revisions read or written, and workflows handed out by dequeues (shared by clones).
    cache: Arc<WorkflowCache>,
    /// Definition numbers reserved in blocks (shared by clones; none unless
    /// [`with_sequence_block`](Self::with_sequence_block)).
    sequences: Arc<SequenceBlocks>,
}

impl GrpcPersistenceProvider {
    /// Connects to a wfe-sqlite server at `addr`: `host:port`, or a full `http://host:port` URI.
    /// Plaintext, without a token: [`connect_with`](Self::connect_with) for TLS and tokens.
    /// Fails when the server cannot be reached now.
    pub async fn connect(addr: impl AsRef<str>) -> Result<Self> {
        Self::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects to a wfe-sqlite server at `addr` (`host:port`, `http://host:port` or
    /// `https://host:port`; any other scheme, or an address without a port, is
    /// `INVALID_ARGUMENT` naming the address)
    /// with TLS, mutual TLS, a bearer token and/or another per-call deadline, as `options` say.
    /// Fails when the server cannot be reached now, or the TLS handshake fails (`UNAVAILABLE`);
    /// bad options are `INVALID_ARGUMENT`. (With TLS 1.3 a server that refuses the client's
    /// certificate may only say so on the first call, which then fails with `UNAVAILABLE`.)
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
    ///
    /// Several servers: `addr` may list them separated by commas (`"10.0.0.1:50051,10.0.0.2:50051"`)
    /// or be `dns:///name:port` (every address the name has, looked up now); see
    /// [`connect_many`](Self::connect_many) and [`crate::balance`] for how calls are spread.
    pub async fn connect_with(addr: impl AsRef<str>, options: ConnectOptions) -> Result<Self> {
        let addr = addr.as_ref();
        if addr.starts_with("dns:") {
            let (servers, name) = crate::balance::resolve_dns(addr).await?;
            let mut options = options;
            if options.wants_tls() && options.domain.is_none() {
                options.domain = Some(name);
            }
            return Self::connect_many(servers, options).await;
        }
        Self::connect_many(addr.split(','), options).await
    }

    /// Connects to several wfe-sqlite servers sharing one store (e.g. on one PostgreSQL
    /// database, or one SQLite file on one machine) and spreads the calls over them, round-robin
    /// ([`crate::balance`]): a server that dies is left out, a read whose server died under it is
    /// tried again on another, a write that failed in flight is not (`UNAVAILABLE`: it may or may
    /// not have been applied); a server stopping gracefully is left out at its first refusal, and
    /// the calls it refuses while it drains (not run) go to another, writes too. Returns once one server answers; fails, with the first address's
    /// reason, when none does. `options` apply to every server (with TLS each certificate must
    /// hold the address's host, or `options.domain`). One address: the same as
    /// [`connect_with`](Self::connect_with).
    pub async fn connect_many<I, S>(addrs: I, options: ConnectOptions) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let addrs: Vec<String> = addrs
            .into_iter()
            .map(|a| a.as_ref().trim().to_string())
            .collect();
        if addrs.is_empty() || addrs.iter().any(String::is_empty) {
            return Err(crate::connect::invalid_argument(format!(
                "address: expected host:port, or several separated by commas, got {addrs:?}"
            )));
        }
        let endpoints = addrs
            .iter()
            .map(|addr| options.endpoint(addr))
            .collect::<Result<Vec<_>>>()?;
        let headers = CallHeaders::new(options.token.as_deref(), options.deadline())?;
        if let [endpoint] = endpoints.as_slice() {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| transport(e, &addrs[0]))?;
            return Ok(Self::build(
                Balanced::new(vec![channel]),
                headers,
                options.deadline(),
            ));
        }
        // Connect to all at once; the first that answers will do, the others connect when used.
        let mut connecting = tokio::task::JoinSet::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let endpoint = endpoint.clone();
            connecting.spawn(async move { (index, endpoint.connect().await) });
        }
        let mut errors: Vec<Option<WfeError>> = addrs.iter().map(|_| None).collect();
        let mut connected = None;
        while let Some(joined) = connecting.join_next().await {
            let Ok((index, result)) = joined else {
                continue;
            };
            match result {
                Ok(channel) => {
                    connected = Some((index, channel));
                    break;
                }
                Err(e) => errors[index] = Some(transport(e, &addrs[index])),
            }
        }
        let Some((first, channel)) = connected else {
            return Err(errors.into_iter().flatten().next().unwrap_or_else(|| {
                WfeError::Persistence(format!(
                    "UNAVAILABLE (UNAVAILABLE): cannot connect to {addrs:?}"
                ))
            }));
        };
        let mut channel = Some(channel);
        let channels = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| match index == first {
                true => channel.take().expect("taken once"),
                false => endpoint.connect_lazy(),
            })
            .collect();
        Ok(Self::build(
            Balanced::new(channels),
            headers,
            options.deadline(),
        ))
    }

    /// Builds the provider on a channel the caller configured (TLS, interceptors, ...); its
    /// calls carry no token and have the [`DEFAULT_CALL_TIMEOUT`] deadline.
    pub fn from_channel(channel: Channel) -> Self {
        let headers =
            CallHeaders::new(None, DEFAULT_CALL_TIMEOUT).expect("no token: nothing to validate");
        Self::build(Balanced::new(vec![channel]), headers, DEFAULT_CALL_TIMEOUT)
    }

    fn build(channel: Balanced, headers: CallHeaders, deadline: Duration) -> Self {
        let m = MAX_MESSAGE_BYTES;
        let with = || InterceptedService::new(channel.clone(), headers.clone());
        Self {
            workflows: WorkflowServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            events: EventServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            subscriptions: SubscriptionServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            commands: ScheduledCommandServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            errors: ExecutionErrorServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            store: StoreServiceClient::new(with())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            deadline,
            worker_id: format!(
                "wfe-grpc-rust/{}/{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ),
            channel,
            headers,
            cache: Arc::default(),
            sequences: Arc::default(),
        }
    }

    /// Hands out definition numbers (`next_definition_sequence`, which a WFE host calls before
    /// every workflow it starts without a name) from blocks of `size` that one call reserves
    /// ([`crate::sequence`]): a start costs one round trip and one commit instead of two, except
    /// once per block. Names stay unique across hosts, but numbers of different hosts interleave
    /// and a host's unused numbers are never used (gaps after a restart). 0 or 1: every number is
    /// a call (the default); at most [`MAX_SEQUENCE_BLOCK`](crate::sequence::MAX_SEQUENCE_BLOCK).
    /// Applies to this provider and the clones made from it afterwards.
    pub fn with_sequence_block(mut self, size: u32) -> Self {
        self.sequences = Arc::new(SequenceBlocks::new(size));
        self
    }

    /// The block size of [`with_sequence_block`](Self::with_sequence_block) (0 or 1: none).
    pub fn sequence_block(&self) -> u32 {
        self.sequences.size()
    }

    /// The connection with this provider's call headers, for another service's client.
    pub(crate) fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.headers.clone())
    }

    /// [`transport`](Self::transport) to the first live server of the list (lifecycle events).
    pub(crate) fn first_server_transport(&self) -> Transport {
        InterceptedService::new(self.channel.first_server(), self.headers.clone())
    }

    /// The same with this provider's token but no deadline, for streams that stay open (a
    /// lifecycle watch).
    pub(crate) fn first_server_streaming_transport(&self) -> Transport {
        InterceptedService::new(self.channel.first_server(), self.headers.without_deadline())
    }

    /// [`first_server_streaming_transport`](Self::first_server_streaming_transport) to server
    /// `index` of the list alone.
    pub(crate) fn streaming_transport_to(&self, index: usize) -> Transport {
        InterceptedService::new(self.channel.only(index), self.headers.without_deadline())
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

    /// The one place calls are made: runs `rpc` on a clone of `client` within the per-call
    /// deadline and turns a failed status into the `WfeError` for `subject`. A streaming call
    /// reads its whole stream inside `rpc`, so the deadline covers it.
    pub(crate) async fn call<C, T, F, Fut>(
        &self,
        client: &C,
        subject: Subject<'_>,
        rpc: F,
    ) -> Result<T>
    where
        C: Clone,
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_within(self.deadline, client, subject, rpc).await
    }

    /// [`call`](Self::call) with another deadline (a long poll waits longer than a call takes);
    /// the request must carry the same deadline (`Request::set_timeout`) for the server.
    pub(crate) async fn call_within<C, T, F, Fut>(
        &self,
        deadline: Duration,
        client: &C,
        subject: Subject<'_>,
        rpc: F,
    ) -> Result<T>
    where
        C: Clone,
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let status = match tokio::time::timeout(deadline, rpc(client.clone())).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => {
                Status::deadline_exceeded(format!("no answer from the server within {deadline:?}"))
            }
        };
        Err(from_status(&status, subject))
    }

    /// Every item of a paged list RPC, each page through [`call`](Self::call):
    /// `request(page_token)` builds a page's request, `rpc` sends it, `items` splits the answer
    /// into its items and the next page token (empty on the last page).
    async fn pages<C, Req, Resp, T, F, Fut>(
        &self,
        client: &C,
        request: impl Fn(String) -> Req,
        rpc: F,
        items: impl Fn(Resp) -> (Vec<T>, String),
    ) -> Result<Vec<T>>
    where
        C: Clone,
        F: Fn(C, Req) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page_request = request(token.clone());
            let page = self
                .call(client, Subject::None, |c| rpc(c, page_request))
                .await?;
            let (page_items, next) = items(page);
            all.extend(page_items);
            if next.is_empty() {
                return Ok(all);
            }
            if next == token {
                return Err(WfeError::Persistence(
                    "INTERNAL (INTERNAL): server returned the same page token twice".into(),
                ));
            }
            token = next;
        }
    }

    async fn claim_commands(
        &self,
        as_of: &DateTime<Utc>,
    ) -> Result<(String, Vec<ScheduledCommand>)> {
        let request = pb::ClaimCommandsRequest {
            as_of: Some(convert::ts_to_wire(as_of)),
            max_commands: COMMANDS_PER_CLAIM,
            lease_duration: Some(convert::duration_to_wire(COMMAND_LEASE)),
            worker_id: self.worker_id.clone(),
        };
        let response = self
            .call(&self.commands, Subject::None, |mut c| async move {
                c.claim_commands(request).await
            })
            .await?;
        let commands = response
            .commands
            .into_iter()
            .filter_map(|c| c.command)
            .map(convert::command_from_wire)
            .collect::<Result<Vec<_>>>()?;
        Ok((response.lease_id, commands))
    }

    /// Acknowledges (`true`) or releases (`false`) a claimed command. A lost lease is not an
    /// error here: the command is free again, or another processor holds it now.
    async fn settle_command(
        &self,
        command: &ScheduledCommand,
        lease_id: &str,
        succeeded: bool,
    ) -> Result<()> {
        let command_name = convert::command_name_to_wire(&command.command_name) as i32;
        let (data, lease_id) = (command.data.clone(), lease_id.to_string());
        let subject = Subject::Command(&command.data);
        let settled = if succeeded {
            let request = pb::AcknowledgeCommandRequest {
                command_name,
                data,
                lease_id,
            };
            self.call(&self.commands, subject, |mut c| async move {
                c.acknowledge_command(request).await
            })
            .await
            .map(drop)
        } else {
            let request = pb::ReleaseCommandRequest {
                command_name,
                data,
                lease_id,
            };
            self.call(&self.commands, subject, |mut c| async move {
                c.release_command(request).await
            })
            .await
            .map(drop)
        };
        match settled {
            Err(WfeError::LockFailed(_)) => Ok(()),
            other => other,
        }
    }

    /// The claim loop of `process_commands`; commands to release at the end go to `held`.
    async fn run_due_commands(
        &self,
        as_of: &DateTime<Utc>,
        handler: &(dyn Fn(ScheduledCommand) -> HandlerFuture + Send + Sync),
        held: &mut Vec<(ScheduledCommand, String)>,
    ) -> Result<()> {
        // (command name, data) of every command handed to the handler in this call.
        let mut offered: HashSet<(i32, String)> = HashSet::new();
        loop {
            let (lease_id, claimed) = self.claim_commands(as_of).await?;
            let mut fresh = false;
            let mut claimed = claimed.into_iter();
            while let Some(command) = claimed.next() {
                let key = (
                    convert::command_name_to_wire(&command.command_name) as i32,
                    command.data.clone(),
                );
                // Offered again in this call (scheduled again by a handler, or its lease ran
                // out while a handler was busy): it waits for the next call.
                if !offered.insert(key) {
                    held.push((command, lease_id.clone()));
                    continue;
                }
                fresh = true;
                if handler(command.clone()).await.is_err() {
                    held.push((command, lease_id.clone()));
                } else if let Err(e) = self.settle_command(&command, &lease_id, true).await {
                    held.push((command, lease_id.clone()));
                    held.extend(claimed.map(|rest| (rest, lease_id.clone())));
                    return Err(e);
                }
            }
            // A claim that brings nothing new ends the call (also when it is empty).
            if !fresh {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl WorkflowRepository for GrpcPersistenceProvider {
    async fn create_new_workflow(&self, instance: &WorkflowInstance) -> Result<String> {
        let request = pb::CreateWorkflowRequest {
            workflow: Some(convert::workflow_to_wire(instance)?),
        };
        within_message_limit(&request, || format!("workflow {:?}", instance.id))?;
        let response = self
            .call(
                &self.workflows,
                Subject::Workflow(&instance.id),
                |mut c| async move { c.create_workflow(request).await },
            )
            .await?;
        self.cache.remember(&response.id, response.revision);
        self.cache
            .server_queues(QueueType::Workflow, &response.id, response.server_queues);
        Ok(response.id)
    }

    /// Replaces the stored workflow, expecting the revision this provider last read or wrote
    /// for it: when another process has persisted it since, nothing is written and the error is
    /// `REVISION_CONFLICT` ([`is_revision_conflict`](crate::is_revision_conflict)).
    async fn persist_workflow(&self, instance: &WorkflowInstance) -> Result<()> {
        let request = pb::PersistWorkflowRequest {
            workflow: Some(convert::workflow_to_wire(instance)?),
            expected_revision: self.expected_revision(&instance.id),
        };
        within_message_limit(&request, || format!("workflow {:?}", instance.id))?;
        let response = self
            .call(
                &self.workflows,
                Subject::Workflow(&instance.id),
                |mut c| async move { c.persist_workflow(request).await },
            )
            .await?;
        self.cache.remember(&instance.id, response.revision);
        self.cache
            .server_queues(QueueType::Workflow, &instance.id, response.server_queues);
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
        within_message_limit(&request, || format!("workflow {:?}", instance.id))?;
        let response = self
            .call(
                &self.workflows,
                Subject::Workflow(&instance.id),
                |mut c| async move { c.persist_workflow_with_subscriptions(request).await },
            )
            .await?;
        self.cache.remember(&instance.id, response.revision);
        self.cache
            .server_queues(QueueType::Workflow, &instance.id, response.server_queues);
        Ok(())
    }

    async fn get_runnable_instances(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        let as_at = Some(convert::ts_to_wire(&as_at));
        self.pages(
            &self.workflows,
            |page_token| pb::GetRunnableWorkflowsRequest {
                as_at,
                page_size: 0,
                page_token,
            },
            |mut c, r| async move { c.get_runnable_workflows(r).await },
            |page| (page.workflow_ids, page.next_page_token),
        )
        .await
    }

    /// Reads the workflow (and remembers its revision). Right after a
    /// [`GrpcQueueProvider`](crate::GrpcQueueProvider) built on this provider dequeued `id`, the
    /// copy that came with the dequeue answers this one read without a round trip.
    async fn get_workflow_instance(&self, id: &str) -> Result<WorkflowInstance> {
        if let Some(w) = self.cache.take_primed(id) {
            return self.read_workflow(w);
        }
        let request = pb::GetWorkflowRequest { id: id.to_string() };
        let response = self
            .call(&self.workflows, Subject::Workflow(id), |mut c| async move {
                c.get_workflow(request).await
            })
            .await?;
        match response.workflow {
            Some(w) => self.read_workflow(w),
            None => Err(WfeError::WorkflowNotFound(id.to_string())),
        }
    }

    async fn get_workflow_instance_by_name(&self, name: &str) -> Result<WorkflowInstance> {
        let request = pb::GetWorkflowByNameRequest {
            name: name.to_string(),
        };
        let response = self
            .call(
                &self.workflows,
                Subject::Workflow(name),
                |mut c| async move { c.get_workflow_by_name(request).await },
            )
            .await?;
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
        for chunk in unique.chunks(IDS_PER_BATCH_GET) {
            let request = pb::BatchGetWorkflowsRequest {
                ids: chunk.to_vec(),
            };
            let wire = self
                .call(&self.workflows, Subject::None, |mut c| async move {
                    let mut stream = c.batch_get_workflows(request).await?.into_inner();
                    let mut workflows = Vec::new();
                    while let Some(message) = stream.message().await? {
                        workflows.extend(message.workflows);
                    }
                    Ok(tonic::Response::new(workflows))
                })
                .await?;
            for w in wire {
                found.push(self.read_workflow(w)?);
            }
        }
        Ok(found)
    }

    async fn next_definition_sequence(&self, definition_id: &str) -> Result<u64> {
        self.sequences
            .next(definition_id, |count| async move {
                let request = pb::NextDefinitionSequenceRequest {
                    definition_id: definition_id.to_string(),
                    count,
                };
                let response = self
                    .call(&self.workflows, Subject::None, |mut c| async move {
                        c.next_definition_sequence(request).await
                    })
                    .await?;
                Ok(response.value)
            })
            .await
    }
}

#[async_trait]
impl EventRepository for GrpcPersistenceProvider {
    async fn create_event(&self, event: &Event) -> Result<String> {
        let request = pb::CreateEventRequest {
            event: Some(convert::event_to_wire(event)?),
        };
        within_message_limit(&request, || {
            format!(
                "event {:?} ({:?}, {:?})",
                event.id, event.event_name, event.event_key
            )
        })?;
        let response = self
            .call(
                &self.events,
                Subject::Event(&event.id),
                |mut c| async move { c.create_event(request).await },
            )
            .await?;
        self.cache
            .server_queues(QueueType::Event, &response.id, response.server_queues);
        Ok(response.id)
    }

    async fn get_event(&self, id: &str) -> Result<Event> {
        if let Some(event) = self.cache.take_event(id) {
            return convert::event_from_wire(event);
        }
        let request = pb::GetEventRequest { id: id.to_string() };
        let response = self
            .call(&self.events, Subject::Event(id), |mut c| async move {
                c.get_event(request).await
            })
            .await?;
        match response.event {
            Some(e) => convert::event_from_wire(e),
            None => Err(WfeError::EventNotFound(id.to_string())),
        }
    }

    async fn get_runnable_events(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        let as_at = Some(convert::ts_to_wire(&as_at));
        self.pages(
            &self.events,
            |page_token| pb::GetRunnableEventsRequest {
                as_at,
                page_size: 0,
                page_token,
            },
            |mut c, r| async move { c.get_runnable_events(r).await },
            |page| (page.event_ids, page.next_page_token),
        )
        .await
    }

    async fn get_events(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let as_of = Some(convert::ts_to_wire(&as_of));
        self.pages(
            &self.events,
            |page_token| pb::GetEventsRequest {
                event_name: event_name.to_string(),
                event_key: event_key.to_string(),
                as_of,
                page_size: 0,
                page_token,
            },
            |mut c, r| async move { c.get_events(r).await },
            |page| (page.event_ids, page.next_page_token),
        )
        .await
    }

    async fn mark_event_processed(&self, id: &str) -> Result<()> {
        // The event dequeue that handed it out marked it already (it matched no subscription).
        if self.cache.take_marked_event(id) {
            return Ok(());
        }
        let request = pb::MarkEventProcessedRequest { id: id.to_string() };
        self.call(&self.events, Subject::Event(id), |mut c| async move {
            c.mark_event_processed(request).await
        })
        .await?;
        Ok(())
    }

    async fn mark_event_unprocessed(&self, id: &str) -> Result<()> {
        let request = pb::MarkEventUnprocessedRequest { id: id.to_string() };
        self.call(&self.events, Subject::Event(id), |mut c| async move {
            c.mark_event_unprocessed(request).await
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl SubscriptionRepository for GrpcPersistenceProvider {
    async fn create_event_subscription(&self, subscription: &EventSubscription) -> Result<String> {
        let request = pb::CreateSubscriptionRequest {
            subscription: Some(convert::subscription_to_wire(subscription)?),
        };
        within_message_limit(&request, || format!("subscription {:?}", subscription.id))?;
        let subject = Subject::Subscription(&subscription.id);
        let response = self
            .call(&self.subscriptions, subject, |mut c| async move {
                c.create_subscription(request).await
            })
            .await?;
        Ok(response.id)
    }

    async fn get_subscriptions(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<EventSubscription>> {
        let as_of = Some(convert::ts_to_wire(&as_of));
        let primed = as_of
            .as_ref()
            .and_then(|t| self.cache.take_subscriptions(event_name, event_key, t));
        if let Some(wire) = primed {
            return wire
                .into_iter()
                .map(convert::subscription_from_wire)
                .collect();
        }
        let wire = self
            .pages(
                &self.subscriptions,
                |page_token| pb::GetSubscriptionsRequest {
                    event_name: event_name.to_string(),
                    event_key: event_key.to_string(),
                    as_of,
                    page_size: 0,
                    page_token,
                },
                |mut c, r| async move { c.get_subscriptions(r).await },
                |page| (page.subscriptions, page.next_page_token),
            )
            .await?;
        wire.into_iter()
            .map(convert::subscription_from_wire)
            .collect()
    }

    async fn terminate_subscription(&self, subscription_id: &str) -> Result<()> {
        let request = pb::TerminateSubscriptionRequest {
            id: subscription_id.to_string(),
        };
        let subject = Subject::Subscription(subscription_id);
        self.call(&self.subscriptions, subject, |mut c| async move {
            c.terminate_subscription(request).await
        })
        .await?;
        Ok(())
    }

    async fn get_subscription(&self, subscription_id: &str) -> Result<EventSubscription> {
        let request = pb::GetSubscriptionRequest {
            id: subscription_id.to_string(),
        };
        let subject = Subject::Subscription(subscription_id);
        let response = self
            .call(&self.subscriptions, subject, |mut c| async move {
                c.get_subscription(request).await
            })
            .await?;
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
        let request = pb::GetFirstOpenSubscriptionRequest {
            event_name: event_name.to_string(),
            event_key: event_key.to_string(),
            as_of: Some(convert::ts_to_wire(&as_of)),
        };
        let response = self
            .call(&self.subscriptions, Subject::None, |mut c| async move {
                c.get_first_open_subscription(request).await
            })
            .await?;
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
        let request = pb::SetSubscriptionTokenRequest {
            id: subscription_id.to_string(),
            token: token.to_string(),
            worker_id: worker_id.to_string(),
            expiry: Some(convert::ts_to_wire(&expiry)),
        };
        let subject = Subject::Subscription(subscription_id);
        let response = self
            .call(&self.subscriptions, subject, |mut c| async move {
                c.set_subscription_token(request).await
            })
            .await?;
        Ok(response.acquired)
    }

    async fn clear_subscription_token(&self, subscription_id: &str, token: &str) -> Result<()> {
        let request = pb::ClearSubscriptionTokenRequest {
            id: subscription_id.to_string(),
            token: token.to_string(),
        };
        let subject = Subject::Subscription(subscription_id);
        self.call(&self.subscriptions, subject, |mut c| async move {
            c.clear_subscription_token(request).await
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ScheduledCommandRepository for GrpcPersistenceProvider {
    fn supports_scheduled_commands(&self) -> bool {
        true
    }

    async fn schedule_command(&self, command: &ScheduledCommand) -> Result<()> {
        let request = pb::ScheduleCommandRequest {
            command: Some(convert::command_to_wire(command)),
        };
        within_message_limit(&request, || "scheduled command".to_string())?;
        let subject = Subject::Command(&command.data);
        self.call(&self.commands, subject, |mut c| async move {
            c.schedule_command(request).await
        })
        .await?;
        Ok(())
    }

    /// Claims due commands in batches of up to [`COMMANDS_PER_CLAIM`] under a
    /// [`COMMAND_LEASE`] lease and runs `handler` on them one at a time, in claim order
    /// (earliest `execute_time` first). A command whose handler succeeds is acknowledged
    /// (deleted). One whose handler fails stays held by its lease until the end of the call,
    /// then is released, so the next call offers it again. Within one call each
    /// (command name, data) is handed to the handler at most once: a command claimed again
    /// (scheduled again by a handler, or its lease ran out meanwhile) is released at the end
    /// too. Handler failures are not errors of this call; an error is returned only when
    /// talking to the server fails.
    async fn process_commands(
        &self,
        as_of: DateTime<Utc>,
        handler: &(dyn Fn(ScheduledCommand) -> HandlerFuture + Send + Sync),
    ) -> Result<()> {
        let mut held: Vec<(ScheduledCommand, String)> = Vec::new();
        let outcome = self.run_due_commands(&as_of, handler, &mut held).await;
        let mut first_error = outcome.err();
        for (command, lease_id) in &held {
            if let Err(e) = self.settle_command(command, lease_id, false).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl PersistenceProvider for GrpcPersistenceProvider {
    async fn persist_errors(&self, errors: &[ExecutionError]) -> Result<()> {
        // One request, one transaction: all or nothing (only the message limit bounds it).
        if errors.is_empty() {
            return Ok(());
        }
        let request = pb::PersistErrorsRequest {
            errors: errors
                .iter()
                .map(convert::execution_error_to_wire)
                .collect(),
        };
        within_message_limit(&request, || format!("{} execution errors", errors.len()))?;
        self.call(&self.errors, Subject::None, |mut c| async move {
            c.persist_errors(request).await
        })
        .await?;
        Ok(())
    }

    async fn ensure_store_exists(&self) -> Result<()> {
        self.call(&self.store, Subject::None, |mut c| async move {
            c.ensure_store_exists(pb::EnsureStoreExistsRequest {}).await
        })
        .await?;
        Ok(())
    }
}
