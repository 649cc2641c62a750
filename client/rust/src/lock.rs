//! `GrpcLockProvider`: WFE's `DistributedLockProvider` on the server's leases (LockService).
//!
//! Every provider is one owner (a fresh unique id). A lease it takes lives for the provider's
//! time-to-live (default [`DEFAULT_LOCK_TTL`]) on the server's clock and is renewed in the
//! background every third of it for as long as it is held, so a long step keeps its workflow
//! locked; a lease whose owner died (process killed, network gone) is free once the TTL has
//! passed. `stop` releases everything the provider holds.

use std::collections::HashMap;
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
    state: Arc<State>,
}

/// The leases held (resource -> fencing token), the renewal task, and releases still in flight.
#[derive(Debug, Default)]
struct State {
    held: Mutex<HashMap<String, u64>>,
    renewal: Mutex<Option<JoinHandle<()>>>,
    releasing: Mutex<HashMap<String, JoinHandle<()>>>,
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

    async fn release(&self, resource: String) -> Result<()> {
        let request = pb::ReleaseLockRequest {
            resource,
            owner: self.owner.clone(),
        };
        self.store
            .call(&self.client, Subject::None, |mut c| async move {
                c.release_lock(request).await
            })
            .await?;
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
        let releasing = self.state.releasing.lock().unwrap().remove(resource);
        if let Some(release) = releasing {
            let _ = release.await;
        }
        let request = pb::AcquireLockRequest {
            resource: resource.to_string(),
            owner: self.owner.clone(),
            ttl: Some(crate::convert::duration_to_wire(self.ttl)),
        };
        let response = self
            .store
            .call(&self.client, Subject::None, |mut c| async move {
                c.acquire_lock(request).await
            })
            .await?;
        if response.acquired {
            self.state
                .held
                .lock()
                .unwrap()
                .insert(resource.to_string(), response.fencing_token);
            self.ensure_renewal();
        }
        Ok(response.acquired)
    }

    /// Frees this provider's lease on `resource`; not holding it is not an error.
    async fn release_lock(&self, resource: &str) -> Result<()> {
        self.state.held.lock().unwrap().remove(resource);
        if !self.background_release {
            return self.release(resource.to_string()).await;
        }
        let this = self.clone();
        let name = resource.to_string();
        let release = tokio::spawn(async move {
            if let Err(error) = this.release(name.clone()).await {
                tracing::warn!(resource = %name, %error, "background lease release failed; it runs out after its TTL");
            }
        });
        let mut releasing = self.state.releasing.lock().unwrap();
        if releasing.len() >= 64 {
            releasing.retain(|_, task| !task.is_finished());
        }
        // A release of the same resource still in flight finishes on its own.
        releasing.insert(resource.to_string(), release);
        Ok(())
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
        let held: Vec<String> = self
            .state
            .held
            .lock()
            .unwrap()
            .drain()
            .map(|(r, _)| r)
            .collect();
        let mut releases = JoinSet::new();
        for resource in held {
            let this = self.clone();
            releases.spawn(async move { this.release(resource).await });
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
