//! wfe-core's own `lock_suite!` and `queue_suite!` (feature `test-support`), unmodified, run
//! through `GrpcLockProvider` (with and without background releases) and `GrpcQueueProvider`
//! (alone, and linked to a lock provider so that workflow dequeues take leases) against live
//! wfe-sqlite server processes.
//!
//! The cases reuse resource names and expect an empty queue, so every case gets its own server
//! with a fresh SQLite file; the provider owns it and kills it when dropped.

mod common;

use async_trait::async_trait;
use common::ServerProcess;
use wfe_core::Result;
use wfe_core::models::QueueType;
use wfe_core::traits::{DistributedLockProvider, QueueProvider};
use wfe_grpc::{GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider};

async fn server() -> ServerProcess {
    tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .expect("server start")
}

/// `GrpcLockProvider` plus the server process it talks to (plain delegation).
pub struct ServerBackedLocks {
    inner: GrpcLockProvider,
    _server: ServerProcess,
}

impl ServerBackedLocks {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    pub async fn start_with(background_release: bool) -> Self {
        let server = server().await;
        let inner = GrpcLockProvider::connect(&server.addr)
            .await
            .expect("connect to wfe-sqlite")
            .with_background_release(background_release);
        Self {
            inner,
            _server: server,
        }
    }
}

#[async_trait]
impl DistributedLockProvider for ServerBackedLocks {
    async fn acquire_lock(&self, resource: &str) -> Result<bool> {
        self.inner.acquire_lock(resource).await
    }
    async fn release_lock(&self, resource: &str) -> Result<()> {
        self.inner.release_lock(resource).await
    }
    async fn start(&self) -> Result<()> {
        self.inner.start().await
    }
    async fn stop(&self) -> Result<()> {
        self.inner.stop().await
    }
}

/// `GrpcQueueProvider` (built on a persistence provider, as a host uses it) plus its server.
pub struct ServerBackedQueue {
    inner: GrpcQueueProvider,
    _server: ServerProcess,
}

impl ServerBackedQueue {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// With `linked`, the queue provider takes a background-releasing lock provider's leases on
    /// every workflow it dequeues (`with_locks`).
    pub async fn start_with(linked: bool) -> Self {
        let server = server().await;
        let store = GrpcPersistenceProvider::connect(&server.addr)
            .await
            .expect("connect to wfe-sqlite");
        let mut inner = GrpcQueueProvider::new(&store);
        if linked {
            inner = inner.with_locks(&GrpcLockProvider::new(&store).with_background_release(true));
        }
        Self {
            inner,
            _server: server,
        }
    }
}

#[async_trait]
impl QueueProvider for ServerBackedQueue {
    async fn queue_work(&self, id: &str, queue: QueueType) -> Result<()> {
        self.inner.queue_work(id, queue).await
    }
    async fn dequeue_work(&self, queue: QueueType) -> Result<Option<String>> {
        self.inner.dequeue_work(queue).await
    }
    fn is_dequeue_blocking(&self) -> bool {
        self.inner.is_dequeue_blocking()
    }
    async fn start(&self) -> Result<()> {
        self.inner.start().await
    }
    async fn stop(&self) -> Result<()> {
        self.inner.stop().await
    }
}

wfe_core::lock_suite!(|| async { ServerBackedLocks::start().await });

/// The same suite with releases sent in the background.
mod background_release {
    use super::*;
    wfe_core::lock_suite!(|| async { ServerBackedLocks::start_with(true).await });
}
wfe_core::queue_suite!(|| async { ServerBackedQueue::start().await });

/// The same suite on a queue provider whose workflow dequeues take leases.
mod leased_dequeue {
    use super::*;
    wfe_core::queue_suite!(|| async { ServerBackedQueue::start_with(true).await });
}
