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
//! Modules: [`connect`] (address, TLS, token, deadline), [`convert`] (models <-> wire
//! messages), [`error`] (gRPC status -> `WfeError`), [`provider`] (the call layer), [`poller`]
//! (hands work stored by other processes to a host).

pub mod connect;
pub mod convert;
pub mod error;
pub mod poller;
pub mod provider;

/// Generated messages and clients of `wfe.persistence.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("wfe.persistence.v1");
}

pub use connect::{ConnectOptions, DEFAULT_CALL_TIMEOUT};
pub use error::{error_reason, reason_of};
pub use pb::ErrorReason;
pub use poller::RunnablePoller;
pub use provider::GrpcPersistenceProvider;
