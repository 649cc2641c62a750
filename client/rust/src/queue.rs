//! `GrpcQueueProvider`: WFE's `QueueProvider` on the server's durable queues (QueueService).
//!
//! `dequeue_work` is a bounded long poll: it waits up to [`DEFAULT_DEQUEUE_WAIT`] for an item
//! and returns as soon as one arrives, so a WFE host's consumer loops neither spin on an empty
//! queue nor keep the host from stopping (a pending dequeue is dropped on shutdown; a workflow or
//! event the server handed to a dequeue that was dropped, or to a host that died, is queued again
//! by the server's stranded-work sweep, since it is due and under no lease).
//!
//! Built on a [`GrpcPersistenceProvider`] with [`GrpcQueueProvider::new`], a workflow dequeue
//! also brings the workflow, which answers the host's lookup that follows (it only reads the
//! definition id and version) without a round trip. The executor's own read, after it has taken
//! the workflow's lock, goes to the server (or comes with the lock: [`crate::GrpcLockProvider`]):
//! a copy fetched before the lock may be stale.
//!
//! An event dequeue built the same way brings the event and the subscriptions it matches (when
//! they are at most 1000), which answer the host's `get_event` and `get_subscriptions` that
//! follow it, once each.
//!
//! A `queue_work` right after a write through the same store that the server queues itself
//! (the write's `server_queues`: WFE queues every workflow it creates or persists runnable and
//! every event it creates, and the server does too) returns without a call
//! ([`GrpcQueueProvider::with_server_queued_skip`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wfe_core::models::QueueType;
use wfe_core::traits::QueueProvider;

use crate::cache::WorkflowCache;
use crate::connect::ConnectOptions;
use crate::convert;
use crate::error::Subject;
use crate::pb;
use crate::pb::queue_service_client::QueueServiceClient;
use crate::provider::{GrpcPersistenceProvider, MAX_MESSAGE_BYTES, Transport};

type Result<T> = wfe_core::Result<T>;

/// How long `dequeue_work` waits for an item unless [`GrpcQueueProvider::with_wait`] says
/// otherwise.
pub const DEFAULT_DEQUEUE_WAIT: Duration = Duration::from_secs(1);
/// The longest wait the server accepts.
pub const MAX_DEQUEUE_WAIT: Duration = Duration::from_secs(60);
/// Deadline of a dequeue beyond its wait.
const DEQUEUE_MARGIN: Duration = Duration::from_secs(10);

/// A queue provider backed by the durable queues of a wfe-sqlite server.
///
/// ```no_run
/// # async fn demo() -> wfe_core::Result<()> {
/// use wfe_grpc::{GrpcPersistenceProvider, GrpcQueueProvider};
/// let store = GrpcPersistenceProvider::connect("127.0.0.1:50051").await?;
/// let queue = GrpcQueueProvider::new(&store); // same connection; dequeues bring the workflow
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct GrpcQueueProvider {
    /// The connection's call helper (deadline, error mapping).
    store: GrpcPersistenceProvider,
    client: QueueServiceClient<Transport>,
    wait: Duration,
    /// The persistence provider's cache that dequeued workflows are handed to.
    cache: Option<Arc<WorkflowCache>>,
    /// Whether a `queue_work` the server already does itself is answered without a call.
    skip_server_queued: bool,
}

impl GrpcQueueProvider {
    /// A queue provider on the same connection as `store`, waiting up to
    /// [`DEFAULT_DEQUEUE_WAIT`] per dequeue. Workflow dequeues bring the workflow along for
    /// `store`'s next read of it.
    pub fn new(store: &GrpcPersistenceProvider) -> Self {
        Self {
            store: store.clone(),
            client: QueueServiceClient::new(store.transport())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            wait: DEFAULT_DEQUEUE_WAIT,
            cache: Some(store.cache().clone()),
            skip_server_queued: true,
        }
    }

    /// Connects to a wfe-sqlite server at `addr` (as [`GrpcPersistenceProvider::connect`]);
    /// dequeues do not bring the workflow (there is no store to hand it to).
    pub async fn connect(addr: impl AsRef<str>) -> Result<Self> {
        Ok(Self::new(&GrpcPersistenceProvider::connect(addr).await?).without_workflow())
    }

    /// Connects with TLS and/or a token (as [`GrpcPersistenceProvider::connect_with`]).
    pub async fn connect_with(addr: impl AsRef<str>, options: ConnectOptions) -> Result<Self> {
        Ok(
            Self::new(&GrpcPersistenceProvider::connect_with(addr, options).await?)
                .without_workflow(),
        )
    }

    /// How long `dequeue_work` waits for an item (at most [`MAX_DEQUEUE_WAIT`]). Zero returns at
    /// once, and `is_dequeue_blocking` is then false. Longer waits make fewer calls on an idle
    /// queue; a host's `stop` does not wait for them either way.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(MAX_DEQUEUE_WAIT);
        self
    }

    /// With `false`, every `queue_work` is sent, also right after a write the server said it
    /// queues itself (on by default: a WFE host queues every workflow and event it stores, and
    /// the server already does; each skipped call is a round trip per step).
    pub fn with_server_queued_skip(mut self, yes: bool) -> Self {
        self.skip_server_queued = yes;
        self
    }

    /// Dequeues without bringing the workflow along (the host then reads it itself).
    pub fn without_workflow(mut self) -> Self {
        self.cache = None;
        self
    }
}

#[async_trait]
impl QueueProvider for GrpcQueueProvider {
    /// Appends `id`; an id already waiting in that queue keeps its one entry. Right after a write
    /// of `id` through the same store after which the server said it queues `id` itself
    /// (`server_queues`: a workflow stored RUNNABLE with a next execution, an unprocessed event),
    /// this returns at once without a call: the server queues it in that write, when the last
    /// lease on it is released (or runs out), or when it comes due.
    async fn queue_work(&self, id: &str, queue: QueueType) -> Result<()> {
        if self.skip_server_queued && self.store.cache().take_server_queued(queue, id) {
            return Ok(());
        }
        let request = pb::QueueWorkRequest {
            id: id.to_string(),
            queue: convert::queue_type_to_wire(queue) as i32,
        };
        self.store
            .call(&self.client, Subject::None, |mut c| async move {
                c.queue_work(request).await
            })
            .await?;
        Ok(())
    }

    /// Takes the oldest waiting id, waiting up to the provider's wait for one to arrive.
    async fn dequeue_work(&self, queue: QueueType) -> Result<Option<String>> {
        let include_workflow = self.cache.is_some() && queue == QueueType::Workflow;
        let include_event = self.cache.is_some() && queue == QueueType::Event;
        let mut request = tonic::Request::new(pb::DequeueWorkRequest {
            queue: convert::queue_type_to_wire(queue) as i32,
            wait: (!self.wait.is_zero()).then(|| convert::duration_to_wire(self.wait)),
            include_workflow,
            include_event,
            ..Default::default()
        });
        let deadline = self.wait + DEQUEUE_MARGIN;
        request.set_timeout(deadline);
        let response = self
            .store
            .call_within(deadline, &self.client, Subject::None, |mut c| async move {
                c.dequeue_work(request).await
            })
            .await?;
        if response.id.is_empty() {
            return Ok(None);
        }
        if let (Some(cache), Some(workflow)) = (&self.cache, response.workflow)
            && workflow.id == response.id
        {
            cache.prime(workflow);
        }
        if let (Some(cache), Some(event)) = (&self.cache, response.event)
            && event.id == response.id
        {
            let subscriptions = response
                .subscriptions_included
                .then_some(response.subscriptions);
            cache.prime_event(event, subscriptions);
        }
        Ok(Some(response.id))
    }

    /// True unless the wait is zero: a dequeue waits (boundedly) for work.
    fn is_dequeue_blocking(&self) -> bool {
        !self.wait.is_zero()
    }

    async fn start(&self) -> Result<()> {
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        Ok(())
    }
}
