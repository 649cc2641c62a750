//! `GrpcLockProvider`: WFE's `DistributedLockProvider` on the server's leases (LockService).
//!
//! Every provider is one owner (a fresh unique id). A lease it takes lives for the provider's
//! time-to-live (default [`DEFAULT_LOCK_TTL`]) on the server's clock and is renewed in the
//! background every third of it for as long as it is held, so a long step keeps its workflow
//! locked; a lease whose owner died (process killed, network gone) is free once the TTL has
//! passed. `stop` releases everything the provider holds, waiting at most
//! [`STOP_RELEASE_WAIT`] (or the TTL) for the server.
//!
//! WFE's two keys in one call: a WFE 1.11 host takes `workflow-execution.{id}` (its execution
//! claim) and, right after, its executor takes `{id}` and reads the workflow. Unless
//! [`GrpcLockProvider::with_claim_coalescing`] turns it off, acquiring a claim key takes both
//! leases in one call (all or none) and brings the workflow read after they were taken: the
//! executor's `acquire_lock(id)` then answers from the lease already held, and its read from that
//! copy (through the [`GrpcPersistenceProvider`] the lock provider was built on). Releasing the
//! claim also releases `{id}` if nobody asked for it; with background release, a release of `{id}`
//! while its claim is held goes with the claim's release (or on its own after
//! 50 ms), one call for both.
//!
//! Leases taken by a dequeue: a [`crate::GrpcQueueProvider`] linked with
//! [`crate::GrpcQueueProvider::with_locks`] takes both leases in its workflow dequeue and hands
//! them to this provider as taken ahead (the claim's `acquire_lock` then needs no call either),
//! and with background release this provider's releases wait up to 50 ms in an outbox for that
//! queue's next workflow dequeue to carry them (see the `queue` module). Leases taken ahead and
//! never asked for are released after [`UNASKED_LEASE_BOUND`], or when the host re-queues the
//! workflow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use wfe_core::traits::DistributedLockProvider;

use crate::connect::ConnectOptions;
use crate::error::Subject;
use crate::pb;
use crate::pb::lock_service_client::LockServiceClient;
use crate::provider::{GrpcPersistenceProvider, Transport};

type Result<T> = wfe_core::Result<T>;

/// Time-to-live of a lease unless [`GrpcLockProvider::with_ttl`] says otherwise.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// The shortest time-to-live the server takes.
pub const MIN_LOCK_TTL: Duration = Duration::from_millis(100);
/// The longest time-to-live the server takes.
pub const MAX_LOCK_TTL: Duration = Duration::from_secs(3600);
/// The server's limit of resources per RenewLocks request.
const MAX_RESOURCES_PER_RENEWAL: usize = 10_000;
/// The lock key a WFE 1.11 host takes around an execution: `workflow-execution.{id}`; its
/// executor then takes `{id}`.
pub const CLAIM_PREFIX: &str = "workflow-execution.";
/// How long the release of a workflow's lease taken with its claim waits to go along with the
/// claim's release (background release only).
const COMPANION_RELEASE_DELAY: Duration = Duration::from_millis(50);
/// How long a release waits in the outbox for the linked queue provider's next workflow dequeue
/// to carry it before it is sent on its own (background release only).
const OUTBOX_DELAY: Duration = Duration::from_millis(50);
/// How long leases a dequeue took ahead for the host stay held when the host does not ask for
/// them (it skipped the workflow); then they are released.
pub const UNASKED_LEASE_BOUND: Duration = Duration::from_secs(2);
/// The server's limit of `release_resources` per DequeueWork request.
const MAX_RELEASES_PER_DEQUEUE: usize = 16;
/// Longest time `stop` waits for the server to release the leases (or the TTL, if shorter),
/// as the Python adapter's `close`: a lease not released by then runs out after its TTL, and a
/// server that does not answer holds a host's shutdown up for seconds, not a call deadline.
pub const STOP_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// A distributed lock provider backed by leases on a wfe-sqlite server.
///
/// ```no_run
/// # async fn demo() -> wfe_core::Result<()> {
/// use std::time::Duration;
/// use wfe_grpc::{GrpcLockProvider, GrpcPersistenceProvider};
/// let store = GrpcPersistenceProvider::connect("127.0.0.1:50051").await?;
/// // Same connection as the store, a fresh owner id, leases of 10 s renewed every ~3.3 s.
/// let locks = GrpcLockProvider::new(&store).with_ttl(Duration::from_secs(10));
/// # Ok(()) }
/// ```
///
/// Not re-entrant (as WFE expects): while this provider holds a lease, acquiring the same
/// resource again returns `false`. Clones share the owner and the leases.
#[derive(Clone, Debug)]
pub struct GrpcLockProvider {
    /// The connection's call helper (deadline, error mapping).
    store: GrpcPersistenceProvider,
    client: LockServiceClient<Transport>,
    owner: String,
    ttl: Duration,
    background_release: bool,
    coalesce_claims: bool,
    state: Arc<State>,
}

/// The leases held (resource -> fencing token), the renewal task, releases still in flight, and
/// what claim coalescing and leased dequeues keep track of.
#[derive(Debug, Default)]
struct State {
    held: Mutex<HashMap<String, u64>>,
    /// Held resource -> (fencing token, when that lease runs out unless renewed): the TTL from the
    /// moment its last successful acquisition or renewal was sent (the server's TTL starts later).
    /// An entry whose token is no longer the held one is stale (dropped by the renewal task).
    renew_by: Mutex<HashMap<String, (u64, Instant)>>,
    renewal: Mutex<Option<JoinHandle<()>>>,
    /// Background releases not known to be done (waiting in the outbox, carried by a dequeue in
    /// flight, or sent on their own).
    releasing: Mutex<Vec<Release>>,
    /// Numbers the releases.
    next_release: AtomicU64,
    /// Claim key -> workflow id whose lease was taken with it, until the claim is released.
    companions: Mutex<HashMap<String, String>>,
    /// Leases taken ahead (with a claim, or by a dequeue) and not asked for yet: resource ->
    /// the fencing token of that acquisition.
    ahead: Mutex<HashMap<String, u64>>,
    /// Workflows read by a leased dequeue after it took their leases, for the read that follows
    /// the host's `acquire_lock(id)`.
    ahead_reads: Mutex<HashMap<String, crate::pb::WorkflowInstance>>,
    /// Claim key -> its companion, released by the caller, to be freed with the claim.
    deferred: Mutex<HashMap<String, String>>,
    /// Set once a queue provider is linked ([`crate::GrpcQueueProvider::with_locks`]): background
    /// releases then wait in the outbox for its next workflow dequeue.
    linked: AtomicBool,
    /// Set once the server answered a leased dequeue with fencing tokens: it applies
    /// `release_resources` (an older server ignores both), so releases may travel with dequeues.
    server_leases: AtomicBool,
    /// One leased dequeue at a time (see [`GrpcLockProvider::dequeue_turn`]).
    dequeue_turn: Arc<tokio::sync::Mutex<()>>,
}

/// A background release until it is done.
#[derive(Debug)]
struct Release {
    number: u64,
    /// What it frees (the first is the request's `resource`, the rest its `also_resources`).
    resources: Vec<String>,
    /// Closed once the release is done (or failed and was logged).
    done: watch::Receiver<()>,
    /// Present while the release waits in the outbox: a dequeue that carries it takes this and
    /// sends it where the dequeue's outcome will come; dropping it sends the release at once.
    parcel: Option<oneshot::Sender<oneshot::Receiver<bool>>>,
}

impl Release {
    fn finished(&self) -> bool {
        self.done.has_changed().is_err()
    }
}

/// Waits until a release's `done` closes.
async fn finished(mut done: watch::Receiver<()>) {
    while done.changed().await.is_ok() {}
}

/// Releases taken from the outbox by a dequeue: confirmed when its answer came, or given back
/// to be sent on their own when it failed or was cancelled (dropped).
#[derive(Debug, Default)]
pub(crate) struct CarriedReleases {
    resources: Vec<String>,
    outcomes: Vec<oneshot::Sender<bool>>,
}

impl CarriedReleases {
    /// The resources to send as the dequeue's `release_resources`.
    pub(crate) fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The dequeue carrying them was answered: the server freed them.
    pub(crate) fn confirm(self) {
        for outcome in self.outcomes {
            let _ = outcome.send(true);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Leases not released by `stop` run out after their TTL.
        if let Some(task) = self.renewal.get_mut().unwrap().take() {
            task.abort();
        }
    }
}

impl GrpcLockProvider {
    /// A lock provider on the same connection as `store`, with a fresh owner id and
    /// [`DEFAULT_LOCK_TTL`].
    pub fn new(store: &GrpcPersistenceProvider) -> Self {
        Self {
            store: store.clone(),
            client: LockServiceClient::new(store.transport()),
            owner: format!(
                "wfe-grpc-rust/{}/{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ),
            ttl: DEFAULT_LOCK_TTL,
            background_release: false,
            coalesce_claims: true,
            state: Arc::default(),
        }
    }

    /// Connects to a wfe-sqlite server at `addr` (as [`GrpcPersistenceProvider::connect`]).
    pub async fn connect(addr: impl AsRef<str>) -> Result<Self> {
        Ok(Self::new(&GrpcPersistenceProvider::connect(addr).await?))
    }

    /// Connects with TLS and/or a token (as [`GrpcPersistenceProvider::connect_with`]).
    pub async fn connect_with(addr: impl AsRef<str>, options: ConnectOptions) -> Result<Self> {
        Ok(Self::new(
            &GrpcPersistenceProvider::connect_with(addr, options).await?,
        ))
    }

    /// The time-to-live of the leases this provider takes: [`MIN_LOCK_TTL`] (100 ms) to
    /// [`MAX_LOCK_TTL`] (1 h). Another one (zero included, which the contract would read as its
    /// 30 s default) makes `start`, `acquire_lock` and a linked queue's workflow dequeues
    /// `INVALID_ARGUMENT` errors naming `ttl`, as in the Python adapter.
    /// A shorter TTL frees a dead host's work sooner; a longer one tolerates longer pauses
    /// (network, GC, a stalled VM) before a lease is lost. Set it before the first acquire.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Uses `owner` instead of a fresh unique id. It must be unique among all lock users of the
    /// server: two providers with one owner would renew and release each other's leases. Set
    /// it before the first acquire.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// With `true`, `release_lock` returns at once and the release is sent in the background,
    /// which takes a round trip off a WFE host's path per lock (two per step). This provider's
    /// own next `acquire_lock` of the resource and `stop` wait for the release; other owners may
    /// find the lease still held for that round trip (the WFE host then queues the work again).
    /// A release that fails is logged, and the lease runs out after its TTL (it is no longer
    /// renewed). Off by default: `release_lock` returns once the server has freed the lease.
    pub fn with_background_release(mut self, yes: bool) -> Self {
        self.background_release = yes;
        self
    }

    /// With `false`, every `acquire_lock` takes the one lease it names. On by default: acquiring
    /// a WFE execution claim (`workflow-execution.{id}`) also takes the lease on `{id}` and reads
    /// the workflow in the same call, since the WFE host's executor asks for both right after
    /// (see the module documentation). The lease on `{id}` is this provider's from then on; its
    /// first `acquire_lock(id)` answers `true` without a call, a second one `false`.
    pub fn with_claim_coalescing(mut self, yes: bool) -> Self {
        self.coalesce_claims = yes;
        self
    }

    /// The owner id this provider's leases are held under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The time-to-live of this provider's leases.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fencing token of the lease this provider holds on `resource` (it grows with every
    /// acquisition on the server), for systems that can refuse a stale holder; `None` when not
    /// held (or lost: a renewal found it taken by someone else, or it was not renewed within its
    /// TTL, see [`GrpcLockProvider::held`]).
    pub fn fencing_token(&self, resource: &str) -> Option<u64> {
        let held = self.state.held.lock().unwrap();
        let token = held.get(resource).copied()?;
        in_time(&self.state.renew_by.lock().unwrap(), resource, token).then_some(token)
    }

    /// Resources this provider currently holds leases on. A lease not renewed within its TTL (its
    /// renewals failed that long: a server frozen or unreachable may have let it run out and handed
    /// it to another owner) is lost: dropped, logged as a warning, and released in the background,
    /// best effort. Once lost it stays lost, also when a renewal under way then succeeds.
    pub fn held(&self) -> Vec<String> {
        let held = self.state.held.lock().unwrap();
        let renew_by = self.state.renew_by.lock().unwrap();
        held.iter()
            .filter(|(resource, token)| in_time(&renew_by, resource, **token))
            .map(|(resource, _)| resource.clone())
            .collect()
    }

    /// `INVALID_ARGUMENT` naming `ttl` unless the TTL is within [`MIN_LOCK_TTL`]..=[`MAX_LOCK_TTL`]
    /// (zero on the wire would be the server's default, not what this provider renews and
    /// bounds its `stop` by).
    pub(crate) fn check_ttl(&self) -> Result<()> {
        if (MIN_LOCK_TTL..=MAX_LOCK_TTL).contains(&self.ttl) {
            return Ok(());
        }
        Err(crate::connect::invalid_argument(format!(
            "ttl: must be between {MIN_LOCK_TTL:?} and {MAX_LOCK_TTL:?}, got {:?}",
            self.ttl
        )))
    }

    /// The leases `taken` (resource, fencing token) must be renewed by `by`.
    fn must_renew_by(&self, taken: &[(&str, u64)], by: Instant) {
        let mut renew_by = self.state.renew_by.lock().unwrap();
        for (resource, token) in taken {
            renew_by.insert(resource.to_string(), (*token, by));
        }
    }

    /// Starts the renewal task unless it runs.
    fn ensure_renewal(&self) {
        let mut renewal = self.state.renewal.lock().unwrap();
        if renewal.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        *renewal = Some(tokio::spawn(renew(
            self.clone_detached(),
            Arc::downgrade(&self.state),
        )));
    }

    /// This provider's connection and settings without its state (for the renewal task, which
    /// must not keep the state alive).
    fn clone_detached(&self) -> Self {
        Self {
            state: Arc::default(),
            ..self.clone()
        }
    }

    async fn release(&self, resource: String, also_resources: Vec<String>) -> Result<()> {
        let request = pb::ReleaseLockRequest {
            resource,
            owner: self.owner.clone(),
            also_resources,
        };
        self.store
            .call(&self.client, Subject::None, |mut c| async move {
                c.release_lock(request).await
            })
            .await?;
        Ok(())
    }
}

impl GrpcLockProvider {
    /// The workflow id whose lease goes with `resource` when it is a WFE execution claim (not
    /// when this provider holds that lease already: the claim alone is asked for then).
    fn companion_of<'a>(&self, resource: &'a str) -> Option<&'a str> {
        if !self.coalesce_claims {
            return None;
        }
        resource
            .strip_prefix(CLAIM_PREFIX)
            .filter(|id| !id.is_empty() && !self.state.held.lock().unwrap().contains_key(*id))
    }

    /// Waits for the background releases of `resources` that are not done yet; one still in the
    /// outbox is sent at once.
    async fn settle_releases(&self, resources: &[&str]) {
        let pending: Vec<watch::Receiver<()>> = {
            let mut releasing = self.state.releasing.lock().unwrap();
            releasing.retain(|r| !r.finished());
            releasing
                .iter_mut()
                .filter(|r| r.resources.iter().any(|x| resources.contains(&x.as_str())))
                .map(|r| {
                    r.parcel.take();
                    r.done.clone()
                })
                .collect()
        };
        for done in pending {
            finished(done).await;
        }
    }

    /// Takes the lease on `resource` taken ahead (with its claim, or by a dequeue), if it is
    /// still held.
    fn take_ahead(&self, resource: &str) -> bool {
        let Some(token) = self.state.ahead.lock().unwrap().remove(resource) else {
            return false;
        };
        // Not one past the time by which it had to be renewed (lost, see `in_time`): the server
        // may have given it to another owner; a call asks it.
        let held = {
            let held = self.state.held.lock().unwrap();
            held.get(resource) == Some(&token)
                && in_time(&self.state.renew_by.lock().unwrap(), resource, token)
        };
        if let Some(workflow) = self.state.ahead_reads.lock().unwrap().remove(resource)
            && held
        {
            // Read by the dequeue after the leases were taken: it answers the executor's read.
            self.store.cache().prime(workflow);
        }
        held
    }

    /// Sends a release now, or in the background (then this provider's next acquire of any of
    /// the resources waits for it). With a linked queue provider a background release first
    /// waits in the outbox for up to 50 ms, for the next workflow dequeue to carry it.
    async fn send_release(&self, resource: String, also: Vec<String>) -> Result<()> {
        if !self.background_release {
            return self.release(resource, also).await;
        }
        let (done_tx, done) = watch::channel(());
        let outbox = self.state.linked.load(Ordering::Acquire)
            && self.state.server_leases.load(Ordering::Acquire);
        let (parcel, parcel_rx) = if outbox {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let number = self.state.next_release.fetch_add(1, Ordering::Relaxed);
        let mut resources = vec![resource];
        resources.extend(also);
        {
            let mut releasing = self.state.releasing.lock().unwrap();
            if releasing.len() >= 64 {
                releasing.retain(|r| !r.finished());
            }
            releasing.push(Release {
                number,
                resources: resources.clone(),
                done,
                parcel,
            });
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _done = done_tx;
            if let Some(parcel) = parcel_rx
                && this.wait_in_outbox(number, parcel).await
            {
                return;
            }
            let mut resources = resources.into_iter();
            let name = resources.next().unwrap_or_default();
            if let Err(error) = this.release(name.clone(), resources.collect()).await {
                tracing::warn!(resource = %name, %error, "background lease release failed; it runs out after its TTL");
            }
        });
        Ok(())
    }

    /// Waits for a dequeue to carry release `number`; true once one did and was answered,
    /// false when the release must go on its own (not carried in time, sent at once on
    /// request, or the dequeue carrying it failed).
    async fn wait_in_outbox(
        &self,
        number: u64,
        mut parcel: oneshot::Receiver<oneshot::Receiver<bool>>,
    ) -> bool {
        let carried = tokio::select! {
            taken = &mut parcel => taken.ok(),
            _ = tokio::time::sleep(OUTBOX_DELAY) => {
                // Out of the outbox, unless a dequeue took it just now.
                let left = self
                    .state
                    .releasing
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .find(|r| r.number == number)
                    .and_then(|r| r.parcel.take())
                    .is_some();
                if left { None } else { parcel.await.ok() }
            }
        };
        match carried {
            Some(outcome) => outcome.await == Ok(true),
            None => false,
        }
    }
}

/// What a linked [`crate::GrpcQueueProvider`] asks of the lock provider around a workflow
/// dequeue that takes the host's two leases.
impl GrpcLockProvider {
    /// Marks this provider as linked to a queue provider (its releases may wait in the outbox).
    pub(crate) fn link_queue(&self) {
        self.state.linked.store(true, Ordering::Release);
    }

    /// The leases a workflow dequeue takes for this provider: the WFE host's execution claim
    /// and its executor's lock.
    pub(crate) fn dequeue_leases(&self) -> pb::DequeueLeases {
        pb::DequeueLeases {
            owner: self.owner.clone(),
            ttl: Some(crate::convert::duration_to_wire(self.ttl)),
            prefixes: vec![CLAIM_PREFIX.to_string(), String::new()],
        }
    }

    /// Waits for this provider's turn to send a leased dequeue (one at a time, so that a
    /// release a failed dequeue carried is sent again before the next dequeue could take that
    /// lease again), then for the releases sent on their own before, and takes up to 16
    /// resources' releases from the outbox to carry.
    pub(crate) async fn dequeue_turn(&self) -> (tokio::sync::OwnedMutexGuard<()>, CarriedReleases) {
        let turn = self.state.dequeue_turn.clone().lock_owned().await;
        let sent_alone: Vec<watch::Receiver<()>> = {
            let mut releasing = self.state.releasing.lock().unwrap();
            releasing.retain(|r| !r.finished());
            releasing
                .iter()
                .filter(|r| r.parcel.is_none())
                .map(|r| r.done.clone())
                .collect()
        };
        for done in sent_alone {
            finished(done).await;
        }
        let mut carried = CarriedReleases::default();
        if !self.state.server_leases.load(Ordering::Acquire) {
            return (turn, carried);
        }
        let mut releasing = self.state.releasing.lock().unwrap();
        for release in releasing.iter_mut() {
            if release.parcel.is_none()
                || carried.resources.len() + release.resources.len() > MAX_RELEASES_PER_DEQUEUE
            {
                continue;
            }
            let (outcome, outcome_rx) = oneshot::channel();
            if let Some(parcel) = release.parcel.take()
                && parcel.send(outcome_rx).is_ok()
            {
                carried.resources.extend(release.resources.iter().cloned());
                carried.outcomes.push(outcome);
            }
        }
        (turn, carried)
    }

    /// Records the leases a dequeue took on `id` (fencing tokens in [`Self::dequeue_leases`]
    /// order) as held and taken ahead: the host's `acquire_lock` of the claim and of `id` answer
    /// `true` without a call. `workflow` (read after the leases were taken) answers the read
    /// that follows `acquire_lock(id)`. Leases not asked for within [`UNASKED_LEASE_BOUND`] are
    /// released. False when the answer carried no leases (a server without leased dequeues).
    pub(crate) fn took_with_dequeue(
        &self,
        id: &str,
        tokens: &[u64],
        workflow: Option<pb::WorkflowInstance>,
    ) -> bool {
        let [claim_token, id_token] = tokens else {
            return false;
        };
        self.state.server_leases.store(true, Ordering::Release);
        let claim = format!("{CLAIM_PREFIX}{id}");
        {
            let mut held = self.state.held.lock().unwrap();
            held.insert(claim.clone(), *claim_token);
            held.insert(id.to_string(), *id_token);
        }
        // Taken during a dequeue that may have waited long: the TTL counts from now; the first
        // renewal, a third of it later, bounds them again.
        self.must_renew_by(
            &[(claim.as_str(), *claim_token), (id, *id_token)],
            Instant::now() + self.ttl,
        );
        {
            let mut ahead = self.state.ahead.lock().unwrap();
            ahead.insert(claim.clone(), *claim_token);
            ahead.insert(id.to_string(), *id_token);
        }
        if let Some(workflow) = workflow.filter(|w| w.id == id) {
            let mut reads = self.state.ahead_reads.lock().unwrap();
            if reads.len() >= 64 {
                let ahead = self.state.ahead.lock().unwrap();
                reads.retain(|id, _| ahead.contains_key(id));
            }
            reads.insert(id.to_string(), workflow);
        }
        self.state
            .companions
            .lock()
            .unwrap()
            .insert(claim.clone(), id.to_string());
        self.ensure_renewal();
        let this = self.clone();
        let (id, claim_token) = (id.to_string(), *claim_token);
        tokio::spawn(async move {
            tokio::time::sleep(UNASKED_LEASE_BOUND).await;
            if let Err(error) = this.give_back_if_unasked(&id, Some(claim_token)).await {
                tracing::warn!(workflow = %id, %error, "releasing unasked leases failed; they run out after their TTL");
            }
        });
        true
    }

    /// Releases the leases a dequeue took on workflow `id` if the host has not asked for its
    /// claim yet (with `token`: only that acquisition's). True when it released them.
    pub(crate) async fn give_back_if_unasked(&self, id: &str, token: Option<u64>) -> Result<bool> {
        let claim = format!("{CLAIM_PREFIX}{id}");
        {
            let mut ahead = self.state.ahead.lock().unwrap();
            match ahead.get(&claim) {
                Some(t) if token.is_none_or(|token| token == *t) => {
                    ahead.remove(&claim);
                }
                _ => return Ok(false),
            }
        }
        let mut also = Vec::new();
        {
            let mut companions = self.state.companions.lock().unwrap();
            if companions.get(&claim).map(String::as_str) == Some(id) {
                companions.remove(&claim);
                if self.state.ahead.lock().unwrap().remove(id).is_some() {
                    self.state.held.lock().unwrap().remove(id);
                    self.state.ahead_reads.lock().unwrap().remove(id);
                    also.push(id.to_string());
                }
            }
        }
        self.state.held.lock().unwrap().remove(&claim);
        self.release(claim, also).await?;
        Ok(true)
    }
}

/// False once the time by which the lease `token` on `resource` had to be renewed has passed: it
/// is lost then, before the renewal task gets to drop it (a runtime blocked past that time runs
/// the task only afterwards), and its fencing token must not be handed out meanwhile.
fn in_time(renew_by: &HashMap<String, (u64, Instant)>, resource: &str, token: u64) -> bool {
    match renew_by.get(resource) {
        Some((renewed, by)) if *renewed == token => Instant::now() < *by,
        _ => true,
    }
}

/// The earliest time a held lease must be renewed by; stale entries are dropped on the way.
fn earliest_renew_by(state: &State) -> Option<Instant> {
    let held = state.held.lock().unwrap();
    let mut renew_by = state.renew_by.lock().unwrap();
    renew_by.retain(|resource, (token, _)| held.get(resource) == Some(token));
    renew_by.values().map(|(_, by)| *by).min()
}

/// Sleeps until `at`, for ever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drops the leases not renewed within their TTL (their renewals failed, or did not end, for that
/// long: the server may have let them run out and handed them to another owner) and releases
/// each in the background, best effort: once lost a lease stays lost, also when a renewal under
/// way then succeeds (a frozen server, and nobody took it), and the release, sent after those
/// renewals, keeps the server from holding it for an owner that no longer renews it. An
/// `acquire_lock` of the resource waits for that release (sent before, it could reach the server
/// after and free the new lease); `stop` sends it again if it is not done.
fn expire(locks: &GrpcLockProvider, state: &State) {
    let now = Instant::now();
    let mut lapsed = Vec::new();
    {
        let mut held = state.held.lock().unwrap();
        let mut renew_by = state.renew_by.lock().unwrap();
        renew_by.retain(|resource, (token, by)| {
            if held.get(resource) != Some(token) {
                return false;
            }
            if *by > now {
                return true;
            }
            held.remove(resource);
            lapsed.push(resource.clone());
            false
        });
    }
    for resource in lapsed {
        state.ahead.lock().unwrap().remove(&resource);
        tracing::warn!(%resource, owner = %locks.owner, ttl = ?locks.ttl, "lease lost: not renewed within its TTL");
        let (done_tx, done) = watch::channel(());
        {
            let mut releasing = state.releasing.lock().unwrap();
            if releasing.len() >= 64 {
                releasing.retain(|r| !r.finished());
            }
            releasing.push(Release {
                number: state.next_release.fetch_add(1, Ordering::Relaxed),
                resources: vec![resource.clone()],
                done,
                parcel: None,
            });
        }
        let locks = locks.clone();
        tokio::spawn(async move {
            let _done = done_tx;
            if let Err(error) = locks.release(resource.clone(), Vec::new()).await {
                tracing::warn!(%resource, %error, "releasing a lost lease failed; it runs out after its TTL");
            }
        });
    }
}

/// Renews the held leases every third of the TTL until the provider is gone or stopped. A lease
/// the server reports lost (it ran out and someone else took it) is dropped from the held set,
/// and so is one not renewed within its TTL (see [`expire`]).
async fn renew(locks: GrpcLockProvider, state: Weak<State>) {
    let every = (locks.ttl / 3).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        // The state is not kept alive while waiting (dropping the provider ends this task).
        let next = match state.upgrade() {
            Some(state) => earliest_renew_by(&state),
            None => return,
        };
        tokio::select! {
            _ = ticks.tick() => {}
            _ = sleep_until(next) => {
                if let Some(state) = state.upgrade() {
                    expire(&locks, &state);
                }
                continue;
            }
        }
        let Some(state) = state.upgrade() else { return };
        let held: Vec<(String, u64)> = state
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(r, t)| (r.clone(), *t))
            .collect();
        for chunk in held.chunks(MAX_RESOURCES_PER_RENEWAL) {
            let mut request = tonic::Request::new(pb::RenewLocksRequest {
                owner: locks.owner.clone(),
                resources: chunk.iter().map(|(r, _)| r.clone()).collect(),
                ttl: Some(crate::convert::duration_to_wire(locks.ttl)),
            });
            // Late answers are of no use: the next renewal is due by then.
            request.set_timeout(every);
            let sent = Instant::now();
            let call =
                locks
                    .store
                    .call_within(every, &locks.client, Subject::None, |mut c| async move {
                        c.renew_locks(request).await
                    });
            tokio::pin!(call);
            // Leases whose time passes while the call is under way are lost then, not after it.
            let renewed = loop {
                tokio::select! {
                    renewed = &mut call => break renewed,
                    _ = sleep_until(earliest_renew_by(&state)) => expire(&locks, &state),
                }
            };
            match renewed {
                Ok(response) => {
                    let lost: std::collections::HashSet<&str> =
                        response.lost_resources.iter().map(String::as_str).collect();
                    let mut held = state.held.lock().unwrap();
                    let mut renew_by = state.renew_by.lock().unwrap();
                    for (resource, token) in chunk {
                        // Only the lease that was renewed: not one lost or taken again since.
                        if held.get(resource) != Some(token) {
                            continue;
                        }
                        if lost.contains(resource.as_str()) {
                            held.remove(resource);
                            tracing::warn!(%resource, owner = %locks.owner, "lease lost: it ran out before it was renewed");
                        } else {
                            renew_by.insert(resource.clone(), (*token, sent + locks.ttl));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(owner = %locks.owner, %error, "renewing leases failed; retrying");
                }
            }
        }
    }
}

#[async_trait]
impl DistributedLockProvider for GrpcLockProvider {
    /// Takes the lease on `resource` when it is free or its lease ran out; `false` while a live
    /// lease holds it (also one of this provider).
    async fn acquire_lock(&self, resource: &str) -> Result<bool> {
        self.check_ttl()?;
        if self.take_ahead(resource) {
            return Ok(true);
        }
        let companion = self.companion_of(resource);
        let mut settle = vec![resource];
        settle.extend(companion);
        self.settle_releases(&settle).await;
        let request = pb::AcquireLockRequest {
            resource: resource.to_string(),
            owner: self.owner.clone(),
            ttl: Some(crate::convert::duration_to_wire(self.ttl)),
            also_resources: companion.map(str::to_string).into_iter().collect(),
            read_workflow_id: companion.unwrap_or_default().to_string(),
        };
        let sent = Instant::now();
        let response = self
            .store
            .call(&self.client, Subject::None, |mut c| async move {
                c.acquire_lock(request).await
            })
            .await?;
        if !response.acquired {
            return Ok(false);
        }
        {
            let mut held = self.state.held.lock().unwrap();
            held.insert(resource.to_string(), response.fencing_token);
            if let (Some(id), Some(token)) = (companion, response.also_fencing_tokens.first()) {
                held.insert(id.to_string(), *token);
            }
        }
        let mut taken = vec![(resource, response.fencing_token)];
        if let (Some(id), Some(token)) = (companion, response.also_fencing_tokens.first()) {
            taken.push((id, *token));
        }
        self.must_renew_by(&taken, sent + self.ttl);
        if let (Some(id), Some(_)) = (companion, response.also_fencing_tokens.first()) {
            self.state
                .companions
                .lock()
                .unwrap()
                .insert(resource.to_string(), id.to_string());
            if let Some(token) = response.also_fencing_tokens.first() {
                self.state
                    .ahead
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), *token);
            }
            if let Some(workflow) = response.workflow
                && workflow.id == id
            {
                self.store.cache().prime(workflow);
            }
        }
        self.ensure_renewal();
        Ok(true)
    }

    /// Frees this provider's lease on `resource`; not holding it is not an error.
    async fn release_lock(&self, resource: &str) -> Result<()> {
        self.state.held.lock().unwrap().remove(resource);
        self.state.ahead.lock().unwrap().remove(resource);
        // A claim: its companion goes with it when nobody asked for it, or its release waits.
        let companion = self.state.companions.lock().unwrap().remove(resource);
        if let Some(id) = companion {
            let deferred = self.state.deferred.lock().unwrap().remove(resource);
            let unasked = self.state.ahead.lock().unwrap().remove(&id).is_some();
            self.state.ahead_reads.lock().unwrap().remove(&id);
            let mut also = Vec::new();
            if deferred.is_some() || unasked {
                self.state.held.lock().unwrap().remove(&id);
                also.push(id);
            }
            return self.send_release(resource.to_string(), also).await;
        }
        // A companion whose claim is still held: freed with the claim (background release only).
        if self.background_release {
            let claim = format!("{CLAIM_PREFIX}{resource}");
            let paired = self
                .state
                .companions
                .lock()
                .unwrap()
                .get(&claim)
                .map(String::as_str)
                == Some(resource);
            if paired && self.state.held.lock().unwrap().contains_key(&claim) {
                self.state
                    .deferred
                    .lock()
                    .unwrap()
                    .insert(claim.clone(), resource.to_string());
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(COMPANION_RELEASE_DELAY).await;
                    // Still waiting: the claim was not released in time; freed on its own.
                    let still = this.state.deferred.lock().unwrap().remove(&claim);
                    if let Some(id) = still {
                        let _ = this.send_release(id, Vec::new()).await;
                    }
                });
                return Ok(());
            }
        }
        self.send_release(resource.to_string(), Vec::new()).await
    }

    /// Starts renewing held leases (also started by the first acquire). `INVALID_ARGUMENT` for a
    /// TTL outside 100 ms..=1 h.
    async fn start(&self) -> Result<()> {
        self.check_ttl()?;
        self.ensure_renewal();
        Ok(())
    }

    /// Stops renewing and releases every lease this provider holds, waiting at most
    /// [`STOP_RELEASE_WAIT`] (or the TTL, if shorter) for the server, releases in flight
    /// included (sent again, all at once: one carried by a linked queue's waiting dequeue is
    /// not waited for). The first failed release is returned, or `DEADLINE_EXCEEDED` when some were
    /// not done in time; a lease not released runs out after its TTL.
    async fn stop(&self) -> Result<()> {
        let task = self.state.renewal.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
        }
        let bound = STOP_RELEASE_WAIT.min(self.ttl);
        let until = tokio::time::Instant::now() + bound;
        // Releases not done yet are sent again, alongside the leases still held, not awaited
        // first: one carried by a linked queue's dequeue is confirmed only when that dequeue is
        // answered, which an idle queue's long poll puts off for its whole wait (up to 60 s),
        // and awaiting it left no time for the rest. The server skips a lease this owner does
        // not hold; stop frees every lease of this owner anyway. (Dropping a parcel sends a
        // release still in the outbox at once as well.)
        let mut resources: Vec<String> = Vec::new();
        for mut release in self.state.releasing.lock().unwrap().drain(..) {
            release.parcel.take();
            if !release.finished() {
                resources.append(&mut release.resources);
            }
        }
        self.state.companions.lock().unwrap().clear();
        self.state.ahead.lock().unwrap().clear();
        self.state.ahead_reads.lock().unwrap().clear();
        resources.extend(self.state.held.lock().unwrap().drain().map(|(r, _)| r));
        self.state.renew_by.lock().unwrap().clear();
        resources.extend(
            self.state
                .deferred
                .lock()
                .unwrap()
                .drain()
                .map(|(_, id)| id),
        );
        let mut unique = std::collections::HashSet::new();
        resources.retain(|r| unique.insert(r.clone()));
        let total = resources.len();
        let mut late = 0;
        let mut releases = JoinSet::new();
        for resource in resources {
            let this = self.clone();
            releases.spawn(async move { this.release(resource, Vec::new()).await });
        }
        let mut first_error = None;
        loop {
            match tokio::time::timeout_at(until, releases.join_next()).await {
                Ok(None) => break,
                Ok(Some(result)) => {
                    if let Err(e) = result
                        .map_err(|e| wfe_core::WfeError::Other(Box::new(e)))
                        .and_then(|r| r)
                    {
                        first_error.get_or_insert(e);
                    }
                }
                Err(_) => {
                    // Not answered in time: given up (dropping the set aborts them).
                    late += releases.len();
                    break;
                }
            }
        }
        if late > 0 {
            let ttl = self.ttl;
            tracing::warn!(owner = %self.owner, late, total, "leases not released at stop within {bound:?}; they run out after their TTL ({ttl:?})");
            first_error.get_or_insert_with(|| {
                wfe_core::WfeError::Persistence(format!(
                    "DEADLINE_EXCEEDED (DEADLINE_EXCEEDED): {late} of {total} lease releases \
                     not done within {bound:?} of stop; those leases run out after their TTL \
                     ({ttl:?})"
                ))
            });
        }
        first_error.map_or(Ok(()), Err)
    }
}
