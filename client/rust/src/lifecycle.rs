//! `GrpcLifecyclePublisher`: WFE's `LifecyclePublisher` on the server's LifecycleService.
//!
//! `publish` hands the event to a background task that sends the events in order
//! (PublishLifecycleEvent), so the host's steps do not wait for a round trip per event; at most
//! [`MAX_UNSENT_EVENTS`] wait to be sent, and an event the server cannot be reached for is
//! dropped with a warning (lifecycle events are relayed live, never stored: a watcher that was
//! not connected misses them anyway). [`GrpcLifecyclePublisher::flush`] waits until everything
//! published so far has been handed to the server.
//!
//! `subscribe` receives the events every host publishes to the server (this one included),
//! through one WatchLifecycleEvents stream per publisher that reconnects by itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wfe_core::WfeError;
use wfe_core::models::LifecycleEvent;
use wfe_core::traits::LifecyclePublisher;

use crate::connect::ConnectOptions;
use crate::convert;
use crate::error::{Subject, error_chain};
use crate::pb;
use crate::pb::lifecycle_service_client::LifecycleServiceClient;
use crate::provider::{GrpcPersistenceProvider, Transport};

type Result<T> = wfe_core::Result<T>;

/// Events published but not yet sent that a publisher keeps; more are refused.
pub const MAX_UNSENT_EVENTS: usize = 10_000;
/// Events a slow subscriber may fall behind before it misses some (`RecvError::Lagged`).
pub const SUBSCRIBER_CAPACITY: usize = 4096;
/// Longest pause between attempts to reopen the watch stream.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// A lifecycle publisher (and subscriber) backed by a wfe-sqlite server.
///
/// ```no_run
/// # async fn demo() -> wfe_core::Result<()> {
/// use wfe_core::traits::LifecyclePublisher;
/// use wfe_grpc::{GrpcLifecyclePublisher, GrpcPersistenceProvider};
/// let store = GrpcPersistenceProvider::connect("127.0.0.1:50051").await?;
/// let lifecycle = GrpcLifecyclePublisher::new(&store);
/// let mut events = lifecycle.subscribe()?; // every host's events, from now on
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct GrpcLifecyclePublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The connection's call helper (deadline, error mapping), for publishing.
    store: GrpcPersistenceProvider,
    client: LifecycleServiceClient<Transport>,
    /// The same connection without a deadline, for the watch stream.
    watch_client: LifecycleServiceClient<Transport>,
    events: broadcast::Sender<LifecycleEvent>,
    /// The sending task's inbox, made on the first publish.
    outbox: Mutex<Option<(mpsc::Sender<Outgoing>, JoinHandle<()>)>>,
    /// The watching task, made on the first subscribe, and whether its stream is open.
    watcher: Mutex<Option<JoinHandle<()>>>,
    watching: watch::Sender<bool>,
}

#[derive(Debug)]
enum Outgoing {
    Event(pb::LifecycleEvent),
    Flush(oneshot::Sender<()>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.watcher.get_mut().unwrap().take() {
            task.abort();
        }
        // The sending task ends by itself once its inbox is closed and drained.
    }
}

impl GrpcLifecyclePublisher {
    /// A publisher on the same connection as `store`.
    pub fn new(store: &GrpcPersistenceProvider) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                // With several servers: the first that is up, for publishing and watching
                // alike (a server relays events only to its own watchers).
                client: LifecycleServiceClient::new(store.first_server_transport()),
                watch_client: LifecycleServiceClient::new(store.first_server_streaming_transport()),
                events: broadcast::channel(SUBSCRIBER_CAPACITY).0,
                outbox: Mutex::new(None),
                watcher: Mutex::new(None),
                watching: watch::channel(false).0,
            }),
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

    /// Waits until every event published so far has been handed to the server (or dropped
    /// because the server could not be reached).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.send(Outgoing::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// Subscribes like [`LifecyclePublisher::subscribe`], then waits (up to `timeout`) until the
    /// watch stream is open on the server, so that no event published afterwards is missed.
    pub async fn subscribe_connected(
        &self,
        timeout: Duration,
    ) -> Result<broadcast::Receiver<LifecycleEvent>> {
        let receiver = self.subscribe()?;
        let mut watching = self.inner.watching.subscribe();
        tokio::time::timeout(timeout, watching.wait_for(|open| *open))
            .await
            .map_err(|_| {
                WfeError::Persistence(format!(
                    "UNAVAILABLE (UNAVAILABLE): the lifecycle watch stream did not open within {timeout:?}"
                ))
            })?
            .map_err(|e| WfeError::Other(Box::new(e)))?;
        Ok(receiver)
    }

    fn send(&self, message: Outgoing) -> Result<()> {
        let mut outbox = self.inner.outbox.lock().unwrap();
        let sender = match &*outbox {
            Some((sender, task)) if !task.is_finished() => sender.clone(),
            _ => {
                let (sender, inbox) = mpsc::channel(MAX_UNSENT_EVENTS);
                let task = tokio::spawn(send_in_order(
                    self.inner.store.clone(),
                    self.inner.client.clone(),
                    inbox,
                ));
                *outbox = Some((sender.clone(), task));
                sender
            }
        };
        drop(outbox);
        sender.try_send(message).map_err(|e| {
            WfeError::Persistence(format!(
                "RESOURCE_EXHAUSTED (RESOURCE_EXHAUSTED): lifecycle event not published: {e}"
            ))
        })
    }
}

/// Sends published events one after the other, in the order they were published.
async fn send_in_order(
    store: GrpcPersistenceProvider,
    client: LifecycleServiceClient<Transport>,
    mut inbox: mpsc::Receiver<Outgoing>,
) {
    while let Some(message) = inbox.recv().await {
        match message {
            Outgoing::Flush(done) => {
                let _ = done.send(());
            }
            Outgoing::Event(event) => {
                let request = pb::PublishLifecycleEventRequest { event: Some(event) };
                let sent = store
                    .call(&client, Subject::None, |mut c| async move {
                        c.publish_lifecycle_event(request).await
                    })
                    .await;
                if let Err(error) = sent {
                    tracing::warn!(%error, "lifecycle event not published");
                }
            }
        }
    }
}

/// Keeps one watch stream open and hands its events to the subscribers, until no subscriber is
/// left.
async fn watch_events(
    client: LifecycleServiceClient<Transport>,
    events: broadcast::Sender<LifecycleEvent>,
    watching: watch::Sender<bool>,
) {
    let mut pause = Duration::from_millis(50);
    while events.receiver_count() > 0 {
        match client
            .clone()
            .watch_lifecycle_events(pb::WatchLifecycleEventsRequest::default())
            .await
        {
            Ok(response) => {
                watching.send_replace(true);
                pause = Duration::from_millis(50);
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            let Some(event) = message.event else { continue };
                            match convert::lifecycle_event_from_wire(event) {
                                Ok(event) => {
                                    if events.send(event).is_err() {
                                        // Nobody listens any more.
                                        watching.send_replace(false);
                                        return;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "malformed lifecycle event skipped")
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %error_chain(&status), "lifecycle watch stream ended; reopening");
                            break;
                        }
                    }
                }
                watching.send_replace(false);
            }
            Err(status) => {
                tracing::warn!(error = %error_chain(&status), "cannot open the lifecycle watch stream; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

#[async_trait]
impl LifecyclePublisher for GrpcLifecyclePublisher {
    /// Queues `event` for the server (see the module notes: sent in the background, in order).
    async fn publish(&self, event: LifecycleEvent) -> Result<()> {
        self.send(Outgoing::Event(convert::lifecycle_event_to_wire(&event)?))
    }

    /// Events every host publishes to the server from about now on (this one's included). The
    /// stream opens in the background; [`GrpcLifecyclePublisher::subscribe_connected`] waits
    /// for it. Must be called inside a tokio runtime.
    fn subscribe(&self) -> Result<broadcast::Receiver<LifecycleEvent>> {
        let receiver = self.inner.events.subscribe();
        let mut watcher = self.inner.watcher.lock().unwrap();
        if watcher.as_ref().is_none_or(|task| task.is_finished()) {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|e| WfeError::Other(Box::new(e)))?;
            *watcher = Some(runtime.spawn(watch_events(
                self.inner.watch_client.clone(),
                self.inner.events.clone(),
                self.inner.watching.clone(),
            )));
        }
        Ok(receiver)
    }
}
