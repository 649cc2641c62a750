//! `wfe-grpc`: a [`wfe_core::traits::PersistenceProvider`] for the WFE workflow engine that
//! keeps everything in a wfe-sqlite server, over the gRPC contract `wfe.persistence.v1`
//! (`protos/` at the root of this repository; the stubs are generated at build time).
//!
//! ```no_run
//! # async fn demo() -> wfe_core::Result<()> {
//! use std::sync::Arc;
//! use wfe_core::traits::PersistenceProvider;
//! use wfe_grpc::GrpcPersistenceProvider;
//!
//! let persistence: Arc<dyn PersistenceProvider> =
//!     Arc::new(GrpcPersistenceProvider::connect("127.0.0.1:50051").await?);
//! // WorkflowHostBuilder::new().use_persistence(persistence)...
//! # Ok(()) }
//! ```
//!
//! TLS, mutual TLS and bearer tokens: [`GrpcPersistenceProvider::connect_with`] with
//! [`ConnectOptions`] (TLS needs this crate's `tls` feature).
//!
//! A cluster of WFE hosts on one server needs no other service: [`GrpcLockProvider`] (leases
//! with owners, TTL and background renewal), [`GrpcQueueProvider`] (the server's durable queues,
//! long-polled) and [`GrpcLifecyclePublisher`] share the store's connection:
//!
//! ```no_run
//! # async fn demo() -> wfe_core::Result<()> {
//! use std::sync::Arc;
//! use wfe_grpc::{GrpcLifecyclePublisher, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider};
//!
//! let store = GrpcPersistenceProvider::connect("127.0.0.1:50051").await?;
//! let locks = GrpcLockProvider::new(&store).with_background_release(true);
//! // Workflow dequeues take the host's leases and carry its releases (module `queue`).
//! let queue = Arc::new(GrpcQueueProvider::new(&store).with_locks(&locks));
//! let locks = Arc::new(locks);
//! let lifecycle = Arc::new(GrpcLifecyclePublisher::new(&store));
//! let persistence = Arc::new(store);
//! // WorkflowHostBuilder::new().use_persistence(persistence).use_lock_provider(locks)
//! //     .use_queue_provider(queue).use_lifecycle(lifecycle).build()?
//! # Ok(()) }
//! ```
//!
//! Modules: [`connect`] (address, TLS, token, deadline), [`convert`] (models <-> wire
//! messages), [`error`] (gRPC status -> `WfeError`), [`provider`] (the call layer), [`lock`],
//! [`queue`], [`lifecycle`] (the cluster providers),
//! [`cache`] (revisions and dequeued workflows remembered between calls), [`poller`] (hands work
//! stored by other processes to a host whose queue is in-process), [`search`] (wfe-core's
//! `SearchIndex` on the server's full-text search), [`sequence`] (definition numbers handed out
//! of reserved blocks).

pub mod balance;
pub mod cache;
pub mod connect;
pub mod convert;
pub mod error;
pub mod lifecycle;
pub mod lock;
pub mod poller;
pub mod provider;
pub mod queue;
pub mod search;
pub mod sequence;

/// Generated messages and clients of `wfe.persistence.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("wfe.persistence.v1");
}

pub use connect::{ConnectOptions, DEFAULT_CALL_TIMEOUT};
pub use error::{error_reason, is_revision_conflict, reason_of};
pub use lifecycle::GrpcLifecyclePublisher;
pub use lock::GrpcLockProvider;
pub use pb::ErrorReason;
pub use poller::RunnablePoller;
pub use provider::GrpcPersistenceProvider;
pub use queue::GrpcQueueProvider;
pub use search::GrpcSearchIndex;
