//! `GrpcLockProvider`: WFE's `DistributedLockProvider` on the server's leases (LockService).
//!
//! Every provider is one owner (a fresh unique id). A lease it takes lives for the provider's
//! time-to-live (default [`DEFAULT_LOCK_TTL`]) on the server's clock and is renewed in the
//! background every third of it for as long as it is held, so a long step keeps its workflow
//! locked; a lease whose owner died (process killed, network gone) is free once the TTL has
//! passed. `stop` releases everything the provider holds.
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::{JoinHandle, JoinSet};
use wfe_core::traits::DistributedLockProvider;

use crate::connect::ConnectOptions;
use crate::error::Subject;
use crate::pb;
use crate::pb::lock_service_client::LockServiceClient;
use crate::provider::{GrpcPersistenceProvider, Transport};

type Result<T> = wfe_core::Result<T>;

/// Time-to-live of a lease unless [`GrpcLockProvider::with_ttl`] says otherwise.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// The server's limit of resources per RenewLocks request.
const MAX_RESOURCES_PER_RENEWAL: usize = 10_000;
/// The lock key a WFE 1.11 host takes around an execution: `workflow-execution.{id}`; its
/// executor then takes `{id}`.
pub const CLAIM_PREFIX: &str = "workflow-execution.";
/// How long the release of a workflow's lease taken with its claim waits to go along with the
/// claim's release (background release only).
const COMPANION_RELEASE_DELAY: Duration = Duration::from_millis(50);

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
/// what claim coalescing keeps track of.
#[derive(Debug, Default)]
struct State {
    held: Mutex<HashMap<String, u64>>,
    renewal: Mutex<Option<JoinHandle<()>>>,
    /// Releases in flight, by resource (a claim's release also frees its companion).
    releasing: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Claim key -> workflow id whose lease was taken with it, until the claim is released.
    companions: Mutex<HashMap<String, String>>,
    /// Workflow ids whose lease was taken with their claim and not asked for yet.
    ahead: Mutex<HashSet<String>>,
    /// Claim key -> its companion, released by the caller, to be freed with the claim.
    deferred: Mutex<HashMap<String, String>>,
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

    /// The time-to-live of the leases this provider takes (the server accepts 100 ms to 1 h).
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
    /// held (or lost: not renewed in time and taken by someone else).
    pub fn fencing_token(&self, resource: &str) -> Option<u64> {
        self.state.held.lock().unwrap().get(resource).copied()
    }

    /// Resources this provider currently holds leases on.
    pub fn held(&self) -> Vec<String> {
        self.state.held.lock().unwrap().keys().cloned().collect()
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

    /// Waits for the releases in flight of `resources` (a companion's goes with its claim's).
    async fn settle_releases(&self, resources: &[&str]) {
        let pending: Vec<JoinHandle<()>> = {
            let mut releasing = self.state.releasing.lock().unwrap();
            let mut keys: Vec<String> = Vec::new();
            for resource in resources {
                keys.push(resource.to_string());
                if self.coalesce_claims {
                    keys.push(format!("{CLAIM_PREFIX}{resource}"));
                }
            }
            keys.iter().filter_map(|k| releasing.remove(k)).collect()
        };
        for release in pending {
            let _ = release.await;
        }
    }

    /// Takes the lease on `resource` taken ahead with its claim, if it is still held.
    fn take_ahead(&self, resource: &str) -> bool {
        let was_ahead = self.state.ahead.lock().unwrap().remove(resource);
        was_ahead && self.state.held.lock().unwrap().contains_key(resource)
    }

    /// Sends a release now, or in the background (then this provider's next acquire of any of
    /// the resources waits for it).
    async fn send_release(&self, resource: String, also: Vec<String>) -> Result<()> {
        if !self.background_release {
            return self.release(resource, also).await;
        }
        let this = self.clone();
        let name = resource.clone();
        let release = tokio::spawn(async move {
            if let Err(error) = this.release(name.clone(), also).await {
                tracing::warn!(resource = %name, %error, "background lease release failed; it runs out after its TTL");
            }
        });
        let mut releasing = self.state.releasing.lock().unwrap();
        if releasing.len() >= 64 {
            releasing.retain(|_, task| !task.is_finished());
        }
        // A release of the same resource still in flight finishes on its own.
        releasing.insert(resource, release);
        Ok(())
    }
}

/// Renews the held leases every third of the TTL until the provider is gone or stopped. A lease
/// the server reports lost (it ran out and someone else took it) is dropped from the held set.
async fn renew(locks: GrpcLockProvider, state: Weak<State>) {
    let every = (locks.ttl / 3).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
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
            let renewed = locks
                .store
                .call_within(every, &locks.client, Subject::None, |mut c| async move {
                    c.renew_locks(request).await
                })
                .await;
            match renewed {
                Ok(response) => {
                    if response.lost_resources.is_empty() {
                        continue;
                    }
                    let tokens: HashMap<&str, u64> =
                        chunk.iter().map(|(r, t)| (r.as_str(), *t)).collect();
                    let mut held = state.held.lock().unwrap();
                    for resource in response.lost_resources {
                        // Only the lease that was renewed: not one taken again since.
                        if held.get(&resource) == tokens.get(resource.as_str()) {
                            held.remove(&resource);
                            tracing::warn!(%resource, owner = %locks.owner, "lease lost: it ran out before it was renewed");
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
        if let (Some(id), Some(_)) = (companion, response.also_fencing_tokens.first()) {
            self.state
                .companions
                .lock()
                .unwrap()
                .insert(resource.to_string(), id.to_string());
            self.state.ahead.lock().unwrap().insert(id.to_string());
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
            let unasked = self.state.ahead.lock().unwrap().remove(&id);
            let mut also = Vec::new();
            if deferred.is_some() || unasked {
                self.state.held.lock().unwrap().remove(&id);
                also.push(id);
            }
            return self.send_release(resource.to_string(), also).await;
        }
        // A companion whose claim is still held: freed with the claim (background release only).
        if self.background_release && self.coalesce_claims {
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

    /// Starts renewing held leases (also started by the first acquire).
    async fn start(&self) -> Result<()> {
        self.ensure_renewal();
        Ok(())
    }

    /// Stops renewing and releases every lease this provider holds. The first failed release
    /// is returned (that lease runs out after its TTL).
    async fn stop(&self) -> Result<()> {
        let task = self.state.renewal.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
        }
        let releasing: Vec<JoinHandle<()>> = self
            .state
            .releasing
            .lock()
            .unwrap()
            .drain()
            .map(|(_, task)| task)
            .collect();
        for release in releasing {
            let _ = release.await;
        }
        self.state.companions.lock().unwrap().clear();
        self.state.ahead.lock().unwrap().clear();
        let mut held: Vec<String> = self
            .state
            .held
            .lock()
            .unwrap()
            .drain()
            .map(|(r, _)| r)
            .collect();
        held.extend(
            self.state
                .deferred
                .lock()
                .unwrap()
                .drain()
                .map(|(_, id)| id),
        );
        let mut releases = JoinSet::new();
        for resource in held {
            let this = self.clone();
            releases.spawn(async move { this.release(resource, Vec::new()).await });
        }
        let mut first_error = None;
        while let Some(result) = releases.join_next().await {
            if let Err(e) = result
                .map_err(|e| wfe_core::WfeError::Other(Box::new(e)))
                .and_then(|r| r)
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
