//! Hands work that other processes stored to a local `WorkflowHost`.
//!
//! The WFE host (crate `wfe` 1.11) learns about work only through its `QueueProvider`:
//! `publish_event` and `start_workflow` on *this* host queue the new id themselves, but an
//! event created by another process (a Python service through its own adapter, another host)
//! only lands in the shared store. `RunnablePoller` closes that gap: it periodically asks the
//! store for runnable events (`get_runnable_events`) and, optionally, runnable workflows
//! (`get_runnable_instances`) and queues their ids. Queueing an id twice is harmless (the host
//! takes a lock per workflow and skips processed events), but the poller remembers what it has
//! queued recently so it does not flood the queue while the host is busy with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::JoinHandle;
use wfe_core::models::QueueType;
use wfe_core::traits::{PersistenceProvider, QueueProvider};

/// Polls the store for runnable events (and optionally workflows) and queues them.
pub struct RunnablePoller {
    persistence: Arc<dyn PersistenceProvider>,
    queue: Arc<dyn QueueProvider>,
    interval: Duration,
    requeue_after: Duration,
    workflows: bool,
}

impl RunnablePoller {
    /// A poller that queues runnable events every `interval`.
    pub fn new(
        persistence: Arc<dyn PersistenceProvider>,
        queue: Arc<dyn QueueProvider>,
        interval: Duration,
    ) -> Self {
        Self {
            persistence,
            queue,
            interval,
            requeue_after: Duration::from_secs(10),
            workflows: false,
        }
    }

    /// Also queue workflows that are runnable (`next_execution` due), e.g. sleeping steps whose
    /// time has come or workflows started by another process.
    pub fn with_workflows(mut self, yes: bool) -> Self {
        self.workflows = yes;
        self
    }

    /// How long an id queued once is not queued again while it is still runnable.
    pub fn requeue_after(mut self, after: Duration) -> Self {
        self.requeue_after = after;
        self
    }

    /// One pass: queues what is runnable now. Returns how many ids were queued.
    pub async fn poll_once(
        &self,
        recent: &mut HashMap<(QueueType, String), Instant>,
    ) -> wfe_core::Result<usize> {
        let now = Utc::now();
        recent.retain(|_, at| at.elapsed() < self.requeue_after);
        let mut queued = 0;
        let mut batches = vec![(
            QueueType::Event,
            self.persistence.get_runnable_events(now).await?,
        )];
        if self.workflows {
            batches.push((
                QueueType::Workflow,
                self.persistence.get_runnable_instances(now).await?,
            ));
        }
        for (kind, ids) in batches {
            for id in ids {
                let key = (kind, id);
                if recent.contains_key(&key) {
                    continue;
                }
                self.queue.queue_work(&key.1, kind).await?;
                recent.insert(key, Instant::now());
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Runs `poll_once` every interval on a Tokio task until the task is aborted. Errors
    /// (server unreachable, ...) are retried on the next tick.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut recent = HashMap::new();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.poll_once(&mut recent).await {
                    eprintln!("wfe-grpc RunnablePoller: {e}");
                }
            }
        })
    }
}
