//! wfe-core's own `persistence_suite!` (feature `test-support`), unmodified, run through
//! `GrpcPersistenceProvider` against a live wfe-sqlite server process.
//!
//! Several cases assume an empty store (e.g. `get_runnable_instances_filters_by_time` expects
//! exactly one runnable workflow, `get_workflow_instance_by_name_resolves_human_name` uses a
//! fixed name), so the factory starts one server with a fresh SQLite file per case. The
//! provider it returns owns that server process and kills it when dropped.

mod common;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::ServerProcess;
use wfe_core::Result;
use wfe_core::models::{
    Event, EventSubscription, ExecutionError, ScheduledCommand, WorkflowInstance,
};
use wfe_core::traits::{
    EventRepository, PersistenceProvider, ScheduledCommandRepository, SubscriptionRepository,
    WorkflowRepository,
};
use wfe_grpc::GrpcPersistenceProvider;

/// `GrpcPersistenceProvider` plus the server process it talks to (plain delegation).
pub struct ServerBackedProvider {
    inner: GrpcPersistenceProvider,
    _server: ServerProcess,
}

impl ServerBackedProvider {
    pub async fn start() -> Self {
        let server = tokio::task::spawn_blocking(ServerProcess::start)
            .await
            .expect("server start");
        let inner = GrpcPersistenceProvider::connect(&server.addr)
            .await
            .expect("connect to wfe-sqlite");
        Self {
            inner,
            _server: server,
        }
    }
}

type HandlerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

#[async_trait]
impl WorkflowRepository for ServerBackedProvider {
    async fn create_new_workflow(&self, i: &WorkflowInstance) -> Result<String> {
        self.inner.create_new_workflow(i).await
    }
    async fn persist_workflow(&self, i: &WorkflowInstance) -> Result<()> {
        self.inner.persist_workflow(i).await
    }
    async fn persist_workflow_with_subscriptions(
        &self,
        i: &WorkflowInstance,
        s: &[EventSubscription],
    ) -> Result<()> {
        self.inner.persist_workflow_with_subscriptions(i, s).await
    }
    async fn get_runnable_instances(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.get_runnable_instances(as_at).await
    }
    async fn get_workflow_instance(&self, id: &str) -> Result<WorkflowInstance> {
        self.inner.get_workflow_instance(id).await
    }
    async fn get_workflow_instance_by_name(&self, name: &str) -> Result<WorkflowInstance> {
        self.inner.get_workflow_instance_by_name(name).await
    }
    async fn get_workflow_instances(&self, ids: &[String]) -> Result<Vec<WorkflowInstance>> {
        self.inner.get_workflow_instances(ids).await
    }
    async fn next_definition_sequence(&self, definition_id: &str) -> Result<u64> {
        self.inner.next_definition_sequence(definition_id).await
    }
}

#[async_trait]
impl EventRepository for ServerBackedProvider {
    async fn create_event(&self, e: &Event) -> Result<String> {
        self.inner.create_event(e).await
    }
    async fn get_event(&self, id: &str) -> Result<Event> {
        self.inner.get_event(id).await
    }
    async fn get_runnable_events(&self, as_at: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.get_runnable_events(as_at).await
    }
    async fn get_events(&self, n: &str, k: &str, as_of: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.get_events(n, k, as_of).await
    }
    async fn mark_event_processed(&self, id: &str) -> Result<()> {
        self.inner.mark_event_processed(id).await
    }
    async fn mark_event_unprocessed(&self, id: &str) -> Result<()> {
        self.inner.mark_event_unprocessed(id).await
    }
}

#[async_trait]
impl SubscriptionRepository for ServerBackedProvider {
    async fn create_event_subscription(&self, s: &EventSubscription) -> Result<String> {
        self.inner.create_event_subscription(s).await
    }
    async fn get_subscriptions(
        &self,
        n: &str,
        k: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<EventSubscription>> {
        self.inner.get_subscriptions(n, k, as_of).await
    }
    async fn terminate_subscription(&self, id: &str) -> Result<()> {
        self.inner.terminate_subscription(id).await
    }
    async fn get_subscription(&self, id: &str) -> Result<EventSubscription> {
        self.inner.get_subscription(id).await
    }
    async fn get_first_open_subscription(
        &self,
        n: &str,
        k: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Option<EventSubscription>> {
        self.inner.get_first_open_subscription(n, k, as_of).await
    }
    async fn set_subscription_token(
        &self,
        id: &str,
        token: &str,
        worker: &str,
        expiry: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .set_subscription_token(id, token, worker, expiry)
            .await
    }
    async fn clear_subscription_token(&self, id: &str, token: &str) -> Result<()> {
        self.inner.clear_subscription_token(id, token).await
    }
}

#[async_trait]
impl ScheduledCommandRepository for ServerBackedProvider {
    fn supports_scheduled_commands(&self) -> bool {
        self.inner.supports_scheduled_commands()
    }
    async fn schedule_command(&self, c: &ScheduledCommand) -> Result<()> {
        self.inner.schedule_command(c).await
    }
    async fn process_commands(
        &self,
        as_of: DateTime<Utc>,
        handler: &(dyn Fn(ScheduledCommand) -> HandlerFuture + Send + Sync),
    ) -> Result<()> {
        self.inner.process_commands(as_of, handler).await
    }
}

#[async_trait]
impl PersistenceProvider for ServerBackedProvider {
    async fn persist_errors(&self, errors: &[ExecutionError]) -> Result<()> {
        self.inner.persist_errors(errors).await
    }
    async fn ensure_store_exists(&self) -> Result<()> {
        self.inner.ensure_store_exists().await
    }
}

wfe_core::persistence_suite!(|| async { ServerBackedProvider::start().await });
