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
//! follow it, once each. When the event matches no subscription (every workflow's completion
//! event, unless a parent waits for it), the server also marks it processed in that call, and
//! the host's `mark_event_processed` that follows is answered without a round trip
//! ([`GrpcQueueProvider::with_unsubscribed_marking`]).
//!
//! A `queue_work` right after a write through the same store that the server queues itself
//! (the write's `server_queues`: WFE queues every workflow it creates or persists runnable and
//! every event it creates, and the server does too) returns without a call
//! ([`GrpcQueueProvider::with_server_queued_skip`]).
//!
//! Linked to the host's lock provider with [`GrpcQueueProvider::with_locks`], a workflow dequeue
//! also takes the two leases the WFE host asks for right after (its execution claim
//! `workflow-execution.{id}` and its executor's lock `{id}`) in the same call, and carries the
//! releases that ended the previous step: a host's step is then two round trips, this dequeue
//! and the persist. In detail:
//!
//! - The server hands out the oldest workflow whose two leases are free (one leased by another
//!   host is passed over and keeps its place), takes both for the lock provider's owner and TTL,
//!   and reads the workflow after that. The lock provider holds them from then on (renewed,
//!   [`crate::GrpcLockProvider::fencing_token`] knows them); the host's `acquire_lock` of the
//!   claim and of the id answer `true` without a call, and the executor's read of the workflow
//!   is answered from the copy read after the leases were taken.
//! - With background release ([`crate::GrpcLockProvider::with_background_release`]), a release
//!   waits up to 50 ms in an outbox for the next workflow dequeue, which frees it first in the
//!   same transaction (`release_resources`); not carried in time, it is sent on its own. The
//!   lock provider's own next acquire of such a resource sends it at once and waits for it,
//!   `stop` sends all of them and waits. A dequeue that fails or is cancelled gives its releases
//!   back to be sent on their own, before the next leased dequeue goes out (leased dequeues of
//!   one lock provider go one at a time), so a release is neither lost nor applied to a lease
//!   taken again since.
//! - Leases taken ahead that the host never asks for are given back: a `queue_work` of such a
//!   workflow (the host re-queues one it cannot execute) releases them before queuing it, and
//!   any not asked for within [`crate::lock::UNASKED_LEASE_BOUND`] (2 s; the host skips a
//!   workflow whose definition it lacks) are released then. A dequeue whose caller went away
//!   (the host stopping) releases what it took at once.
//! - `stop` cancels a leased dequeue still waiting. One cancelled just as the server answered
//!   may leave leases nobody knows of: they run out after the TTL (the workflow waits that long).
//! - A server without leased dequeues ignores the leases: the host's acquires then go to the
//!   server as without the link, and releases are not carried.
//!
//! With [`GrpcQueueProvider::with_prefetch`] as well, a workflow dequeue that found an item sends
//! the next leased dequeue right away, without a wait, while the host runs the step: the host's
//! next `dequeue_work` takes what it found without a round trip of its own (a step is then one
//! round trip the host waits for, the persist), and waits as usual when it found nothing. The
//! item found ahead stays leased to this host meanwhile (at most one per provider); `stop` gives
//! it back. While a step runs longer than the unasked bound (2 s), the item found ahead is given
//! back as above (the server queues it again for any host) and the next `dequeue_work` waits as
//! usual: prefetch is for hosts whose steps are short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use wfe_core::models::QueueType;
use wfe_core::traits::QueueProvider;

use crate::cache::WorkflowCache;
use crate::connect::ConnectOptions;
use crate::convert;
use crate::error::Subject;
use crate::lock::{CLAIM_PREFIX, GrpcLockProvider};
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
    /// The lock provider whose leases workflow dequeues take ([`Self::with_locks`]).
    locks: Option<GrpcLockProvider>,
    /// Whether a workflow dequeue that found an item sends the next one ahead.
    prefetch: bool,
    /// Whether an event dequeue asks the server to mark an event no subscription waits for processed.
    mark_unsubscribed: bool,
    /// Leased dequeues in flight, and the signal that cancels them (`stop`).
    leased: Arc<Leased>,
}

/// The answer of a workflow dequeue sent ahead ([`GrpcQueueProvider::with_prefetch`]).
type Ahead = oneshot::Receiver<Result<Option<String>>>;

#[derive(Debug)]
struct Leased {
    stopping: watch::Sender<bool>,
    in_flight: Mutex<Vec<JoinHandle<()>>>,
    /// The dequeue sent ahead, when one was.
    ahead: Mutex<Option<Ahead>>,
}

impl Default for Leased {
    fn default() -> Self {
        Self {
            stopping: watch::Sender::new(false),
            in_flight: Mutex::default(),
            ahead: Mutex::default(),
        }
    }
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
            locks: None,
            prefetch: false,
            mark_unsubscribed: true,
            leased: Arc::default(),
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

    /// With `false`, an event dequeue only brings the event and its subscriptions, and the host's
    /// `mark_event_processed` of an event no subscription waits for is a call of its own. On by
    /// default: the server marks such an event processed in the dequeue (checked in the same
    /// statement; what the WFE host does next with it), which saves that call per event.
    pub fn with_unsubscribed_marking(mut self, yes: bool) -> Self {
        self.mark_unsubscribed = yes;
        self
    }

    /// Dequeues without bringing the workflow along (the host then reads it itself).
    pub fn without_workflow(mut self) -> Self {
        self.cache = None;
        self
    }

    /// Links this queue provider to the host's lock provider: workflow dequeues take the two
    /// leases the WFE host asks for next (its execution claim and its executor's lock) for
    /// `locks`, and carry its background releases (see the module documentation). Give the host
    /// this `locks` (or a clone: clones share the leases). For WFE hosts only: a dequeued
    /// workflow stays leased until the host releases it, re-queues it, or
    /// [`crate::lock::UNASKED_LEASE_BOUND`] passes without the host asking for it.
    pub fn with_locks(mut self, locks: &GrpcLockProvider) -> Self {
        locks.link_queue();
        self.locks = Some(locks.clone());
        self
    }

    /// With [`Self::with_locks`]: a workflow dequeue that found an item sends the next leased
    /// dequeue at once (without a wait), while the host runs the step, and the host's next
    /// `dequeue_work` takes its answer (see the module documentation). One item at most is held
    /// ahead; it stays leased to this host until then. Off by default.
    pub fn with_prefetch(mut self, yes: bool) -> Self {
        self.prefetch = yes;
        self
    }

    /// A leased workflow dequeue; with prefetch, the next one goes ahead once it found an item.
    async fn dequeue_leased_ahead(&self, locks: &GrpcLockProvider) -> Result<Option<String>> {
        // The leases are taken with the lock provider's TTL: refused here, not on the server
        // (where zero would mean its 30 s default).
        locks.check_ttl()?;
        if !self.prefetch {
            return self.dequeue_leased(locks, self.wait).await;
        }
        let ahead = self.leased.ahead.lock().unwrap().take();
        if let Some(ahead) = ahead
            && let Ok(Ok(Some(id))) = ahead.await
            // Still leased: after a step longer than the unasked bound its leases went back,
            // and the server queued it again for whoever comes first.
            && locks.fencing_token(&format!("{CLAIM_PREFIX}{id}")).is_some()
        {
            self.send_ahead(locks);
            return Ok(Some(id));
        }
        // Nothing was found ahead (or that dequeue failed, or its leases went back): wait as usual.
        let found = self.dequeue_leased(locks, self.wait).await?;
        if found.is_some() {
            self.send_ahead(locks);
        }
        Ok(found)
    }

    /// Sends the next leased workflow dequeue, without a wait, for the host's next `dequeue_work`.
    fn send_ahead(&self, locks: &GrpcLockProvider) {
        if *self.leased.stopping.borrow() {
            return;
        }
        let (answer_tx, answer) = oneshot::channel();
        let this = self.clone();
        let locks = locks.clone();
        tokio::spawn(async move {
            let found = this.dequeue_leased(&locks, Duration::ZERO).await;
            if let Err(Ok(Some(id))) = answer_tx.send(found) {
                // Nobody will take it (stopped, or a later dequeue went ahead instead).
                give_back(&locks, &id).await;
            }
        });
        // An earlier answer still waiting is dropped here: its task gives back what it found.
        *self.leased.ahead.lock().unwrap() = Some(answer);
    }

    /// The dequeue call itself.
    async fn send_dequeue(
        &self,
        request: pb::DequeueWorkRequest,
    ) -> Result<pb::DequeueWorkResponse> {
        let mut request = tonic::Request::new(request);
        let deadline = self.wait + DEQUEUE_MARGIN;
        request.set_timeout(deadline);
        self.store
            .call_within(deadline, &self.client, Subject::None, |mut c| async move {
                c.dequeue_work(request).await
            })
            .await
    }

    /// A workflow dequeue that takes `locks`' leases on the item and carries its releases. It
    /// runs in a task of its own, so that what it took is known (or given back) even when the
    /// caller stops waiting for it.
    async fn dequeue_leased(
        &self,
        locks: &GrpcLockProvider,
        wait: Duration,
    ) -> Result<Option<String>> {
        let (answer_tx, answer) = oneshot::channel();
        let this = self.clone();
        let locks = locks.clone();
        let mut stopping = self.leased.stopping.subscribe();
        let task = tokio::spawn(async move {
            let sent = async {
                let (turn, carried) = locks.dequeue_turn().await;
                let request = pb::DequeueWorkRequest {
                    queue: convert::queue_type_to_wire(QueueType::Workflow) as i32,
                    wait: (!wait.is_zero()).then(|| convert::duration_to_wire(wait)),
                    include_workflow: this.cache.is_some(),
                    leases: Some(locks.dequeue_leases()),
                    release_resources: carried.resources().to_vec(),
                    ..Default::default()
                };
                (turn, carried, this.send_dequeue(request).await)
            };
            let (_turn, carried, response) = tokio::select! {
                sent = sent => sent,
                // Cancelled: what it carried goes on its own (`carried` is dropped).
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            let response = match response {
                Ok(response) => {
                    carried.confirm();
                    response
                }
                Err(error) => {
                    drop(carried);
                    let _ = answer_tx.send(Err(error));
                    return;
                }
            };
            if response.id.is_empty() {
                let _ = answer_tx.send(Ok(None));
                return;
            }
            let id = response.id;
            let workflow = response.workflow.filter(|w| w.id == id);
            let leased = locks.took_with_dequeue(&id, &response.fencing_tokens, workflow.clone());
            if let (Some(cache), Some(workflow)) = (&this.cache, workflow) {
                cache.prime(workflow);
            }
            if answer_tx.send(Ok(Some(id.clone()))).is_err() && leased {
                // Nobody waits for it any more: the leases go back at once.
                give_back(&locks, &id).await;
            }
        });
        {
            let mut in_flight = self.leased.in_flight.lock().unwrap();
            in_flight.retain(|task| !task.is_finished());
            in_flight.push(task);
        }
        answer.await.unwrap_or(Ok(None))
    }
}

#[async_trait]
impl QueueProvider for GrpcQueueProvider {
    /// Appends `id`; an id already waiting in that queue keeps its one entry. Right after a write
    /// of `id` through the same store after which the server said it queues `id` itself
    /// (`server_queues`: a workflow stored RUNNABLE with a next execution, an unprocessed event),
    /// this returns at once without a call: the server queues it in that write, when the last
    /// lease on it is released (or runs out), or when it comes due.
    ///
    /// With [`Self::with_locks`], re-queuing a workflow whose leases a dequeue took and the host
    /// did not ask for (it cannot execute it) releases them first.
    async fn queue_work(&self, id: &str, queue: QueueType) -> Result<()> {
        if queue == QueueType::Workflow
            && let Some(locks) = &self.locks
        {
            locks.give_back_if_unasked(id, None).await?;
        }
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
    /// With [`Self::with_locks`], a workflow dequeue takes the host's leases on the item (see
    /// the module documentation).
    async fn dequeue_work(&self, queue: QueueType) -> Result<Option<String>> {
        if queue == QueueType::Workflow
            && let Some(locks) = &self.locks
        {
            return self.dequeue_leased_ahead(locks).await;
        }
        let include_workflow = self.cache.is_some() && queue == QueueType::Workflow;
        let include_event = self.cache.is_some() && queue == QueueType::Event;
        let response = self
            .send_dequeue(pb::DequeueWorkRequest {
                queue: convert::queue_type_to_wire(queue) as i32,
                wait: (!self.wait.is_zero()).then(|| convert::duration_to_wire(self.wait)),
                include_workflow,
                include_event,
                mark_processed_if_unsubscribed: include_event && self.mark_unsubscribed,
                ..Default::default()
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
            cache.prime_event(event, subscriptions, response.marked_processed);
        }
        Ok(Some(response.id))
    }

    /// True unless the wait is zero: a dequeue waits (boundedly) for work.
    fn is_dequeue_blocking(&self) -> bool {
        !self.wait.is_zero()
    }

    async fn start(&self) -> Result<()> {
        self.leased.stopping.send_replace(false);
        Ok(())
    }

    /// Cancels leased dequeues still in flight and waits for them to settle (what they carried
    /// is sent on its own, see the module documentation); gives back an item found ahead.
    async fn stop(&self) -> Result<()> {
        self.leased.stopping.send_replace(true);
        let ahead = self.leased.ahead.lock().unwrap().take();
        if let (Some(ahead), Some(locks)) = (ahead, &self.locks)
            && let Ok(Ok(Some(id))) = ahead.await
        {
            give_back(locks, &id).await;
        }
        let in_flight: Vec<JoinHandle<()>> =
            self.leased.in_flight.lock().unwrap().drain(..).collect();
        for task in in_flight {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Releases the leases a dequeue took on workflow `id` for a host that will not ask for them.
async fn give_back(locks: &GrpcLockProvider, id: &str) {
    if let Err(error) = locks.give_back_if_unasked(id, None).await {
        tracing::warn!(workflow = %id, %error, "releasing the leases of a dequeue nobody takes failed; they run out after their TTL");
    }
}
