//! `GrpcLifecyclePublisher`: WFE's `LifecyclePublisher` on the server's LifecycleService.
//!
//! `publish` hands the event to a background task that sends the events in order
//! (PublishLifecycleEvent), so the host's steps do not wait for a round trip per event; at most
//! [`MAX_UNSENT_EVENTS`] wait to be sent, and an event the server cannot be reached for is
//! dropped with a warning (lifecycle events are relayed live, never stored: a watcher that was
//! not connected misses them anyway). [`GrpcLifecyclePublisher::flush`] waits until everything
//! published so far has been handed to the server, at most [`FLUSH_WAIT`] in all, and says how
//! many events were not delivered. A server that does not answer (stopped, a stalled machine)
//! holds each event up for the call deadline (30 s by default): what flush has not seen sent
//! within [`FLUSH_WAIT`] is given up, never sent later; so are the events still unsent
//! [`FLUSH_WAIT`] after the last clone of a publisher is dropped (with a warning).
//!
//! `subscribe` receives the events every host publishes to the server (this one included),
//! through one WatchLifecycleEvents stream per publisher that reconnects by itself; with several
//! servers it is on the first of the list that answers, and moves back to an earlier one as soon
//! as that answers again (tried every [`RETURN_PROBE`]), as the publishers do.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wfe_core::WfeError;
use wfe_core::models::LifecycleEvent;
use wfe_core::traits::LifecyclePublisher;

use crate::balance::Served;
use crate::connect::ConnectOptions;
use crate::convert;
use crate::error::{Subject, error_chain};
use crate::pb;
use crate::pb::lifecycle_service_client::LifecycleServiceClient;
use crate::provider::{GrpcPersistenceProvider, Transport};

type Result<T> = wfe_core::Result<T>;

/// Events published but not yet sent that a publisher keeps; more are refused.
pub const MAX_UNSENT_EVENTS: usize = 10_000;
/// Longest time [`GrpcLifecyclePublisher::flush`] waits, in all, for the events published
/// before it to be handed to the server, and the time the events still unsent when a publisher
/// is dropped get; events not sent by then are given up (as the lock provider's `stop` waits
/// [`crate::lock::STOP_RELEASE_WAIT`] for its releases).
pub const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Events a slow subscriber may fall behind before it misses some (`RecvError::Lagged`).
pub const SUBSCRIBER_CAPACITY: usize = 4096;
/// Longest pause between attempts to reopen the watch stream.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);
/// How often the watching task checks whether anybody still listens (it closes the stream when
/// nobody does).
const UNSUBSCRIBED_CHECK: Duration = Duration::from_secs(1);
/// How often a watch stream on a later server of the list tries the earlier ones (the
/// publishers go back to a server [`crate::balance::DOWN_FOR`] after it failed).
pub const RETURN_PROBE: Duration = Duration::from_secs(1);

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
    /// The sending task's inbox (made on the first publish) and the next event's number.
    outbox: Mutex<Outbox>,
    /// Events queued that the sending task has not taken yet (at most [`MAX_UNSENT_EVENTS`]).
    unsent: Arc<AtomicUsize>,
    /// Events numbered below this are given up by the sending task (a flush that waited
    /// [`FLUSH_WAIT`]). Dropped with the publisher: the sending task then gives the events it
    /// still has [`FLUSH_WAIT`].
    give_up_below: watch::Sender<u64>,
    /// The watching task, made on the first subscribe (emptied by the task when it ends because
    /// nobody listens), and whether its stream is open.
    watcher: Arc<Mutex<Option<JoinHandle<()>>>>,
    watching: watch::Sender<Watching>,
}

/// Where the watch stream stands.
#[derive(Clone, Debug, Default)]
enum Watching {
    #[default]
    Closed,
    Open,
    /// The last attempt to open it failed: the error (`REASON (CODE): message`), and whether
    /// trying again cannot help until something changes (a token, a permission, the server).
    Refused {
        error: String,
        for_good: bool,
    },
}

#[derive(Debug, Default)]
struct Outbox {
    sending: Option<(mpsc::UnboundedSender<Outgoing>, JoinHandle<()>)>,
    /// The number of the next event published: events are numbered in the order they queue.
    next: u64,
}

#[derive(Debug)]
enum Outgoing {
    Event(u64, pb::LifecycleEvent),
    /// A flush: answered with what became of the events queued since the previous one.
    Flush(oneshot::Sender<Delivery>),
}

/// What became of the events queued between two flushes.
#[derive(Debug, Default)]
struct Delivery {
    published: usize,
    /// Not sent within [`FLUSH_WAIT`] of a flush, or of the publisher's drop.
    given_up: usize,
    /// Refused by the server, or it could not be reached.
    failed: usize,
    first_error: Option<WfeError>,
}

impl Delivery {
    fn into_result(self) -> Result<()> {
        let lost = self.given_up + self.failed;
        if lost == 0 {
            return Ok(());
        }
        let counts = format!(
            "{lost} of {} lifecycle events published since the previous flush not delivered \
             ({} not sent within {FLUSH_WAIT:?} of the flush, given up; {} failed)",
            self.published, self.given_up, self.failed
        );
        let first = self.first_error.map(|e| match e {
            WfeError::Persistence(text) => text,
            other => other.to_string(),
        });
        Err(WfeError::Persistence(match (self.given_up, first) {
            (0, Some(first)) => format!("{first}; {counts}"),
            (_, Some(first)) => {
                format!("DEADLINE_EXCEEDED (DEADLINE_EXCEEDED): {counts}; first failure: {first}")
            }
            (_, None) => format!("DEADLINE_EXCEEDED (DEADLINE_EXCEEDED): {counts}"),
        }))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.watcher.lock().unwrap().take() {
            task.abort();
        }
        // The sending task ends by itself once its inbox is closed and drained; `give_up_below`
        // dropped tells it to give up what it has not sent within FLUSH_WAIT.
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
                outbox: Mutex::new(Outbox::default()),
                unsent: Arc::new(AtomicUsize::new(0)),
                give_up_below: watch::channel(0).0,
                watcher: Arc::new(Mutex::new(None)),
                watching: watch::channel(Watching::Closed).0,
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

    /// Waits until every event published so far has been handed to the server, or refused, at
    /// most [`FLUSH_WAIT`] in all (a server that does not answer would hold each event up for
    /// the call deadline). The events not sent by then are given up: never sent, even if the
    /// server answers again later (the call in flight is cancelled; it may have reached the
    /// server already).
    ///
    /// `Ok` when every event published since the previous flush (of this publisher or a clone)
    /// reached the server; otherwise an error that counts the events not delivered, given up
    /// or failed: `DEADLINE_EXCEEDED` when some were given up, else the first failure's reason
    /// (e.g. `UNAVAILABLE`).
    pub async fn flush(&self) -> Result<()> {
        let until = Instant::now() + FLUSH_WAIT;
        let (done, mut delivered) = oneshot::channel();
        let through = {
            let mut outbox = self.inner.outbox.lock().unwrap();
            self.sender(&mut outbox)
                .send(Outgoing::Flush(done))
                .map_err(|_| sending_ended())?;
            outbox.next
        };
        let delivery = match tokio::time::timeout_at(until, &mut delivered).await {
            Ok(delivery) => delivery,
            Err(_) => {
                // Everything before this flush is dropped; the answer follows at once.
                self.inner
                    .give_up_below
                    .send_modify(|below| *below = (*below).max(through));
                delivered.await
            }
        };
        delivery.map_err(|_| sending_ended())?.into_result()
    }

    /// Subscribes like [`LifecyclePublisher::subscribe`], then waits (up to `timeout`) until the
    /// watch stream is open on the server, so that no event published afterwards is missed.
    ///
    /// When it does not open in time, the error is the server's last refusal when there was one
    /// (e.g. `UNAUTHENTICATED`), else `UNAVAILABLE`. A refusal that trying again cannot mend
    /// (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`, `INVALID_ARGUMENT`) is returned
    /// at once; the stream is still tried again in the background for `subscribe`'s receivers.
    pub async fn subscribe_connected(
        &self,
        timeout: Duration,
    ) -> Result<broadcast::Receiver<LifecycleEvent>> {
        let receiver = self.subscribe()?;
        let mut watching = self.inner.watching.subscribe();
        let in_time = tokio::time::timeout(
            timeout,
            watching.wait_for(|w| {
                matches!(w, Watching::Open | Watching::Refused { for_good: true, .. })
            }),
        )
        .await
        .is_ok();
        let state = watching.borrow().clone();
        let within = match in_time {
            true => String::new(),
            false => format!(" within {timeout:?}"),
        };
        match state {
            Watching::Open => Ok(receiver),
            Watching::Refused { error, .. } => Err(WfeError::Persistence(format!(
                "{error}; the lifecycle watch stream did not open{within}"
            ))),
            _ => Err(WfeError::Persistence(format!(
                "UNAVAILABLE (UNAVAILABLE): the lifecycle watch stream did not open within {timeout:?}"
            ))),
        }
    }

    /// Queues `event` for the sending task, numbered in publishing order.
    fn queue(&self, event: pb::LifecycleEvent) -> Result<()> {
        let mut outbox = self.inner.outbox.lock().unwrap();
        let sender = self.sender(&mut outbox);
        if self.inner.unsent.load(Ordering::Acquire) >= MAX_UNSENT_EVENTS {
            return Err(WfeError::Persistence(format!(
                "RESOURCE_EXHAUSTED (RESOURCE_EXHAUSTED): lifecycle event not published: \
                 {MAX_UNSENT_EVENTS} events are waiting to be sent"
            )));
        }
        self.inner.unsent.fetch_add(1, Ordering::AcqRel);
        if sender.send(Outgoing::Event(outbox.next, event)).is_err() {
            self.inner.unsent.fetch_sub(1, Ordering::AcqRel);
            return Err(sending_ended());
        }
        outbox.next += 1;
        Ok(())
    }

    /// The sending task's inbox; starts the task when there is none (or it ended).
    fn sender(&self, outbox: &mut Outbox) -> mpsc::UnboundedSender<Outgoing> {
        if let Some((sender, task)) = &outbox.sending
            && !task.is_finished()
        {
            return sender.clone();
        }
        // What an ended task had queued is gone with it.
        self.inner.unsent.store(0, Ordering::Release);
        let (sender, inbox) = mpsc::unbounded_channel();
        let task = tokio::spawn(send_in_order(
            self.inner.store.clone(),
            self.inner.client.clone(),
            inbox,
            self.inner.unsent.clone(),
            self.inner.give_up_below.subscribe(),
        ));
        outbox.sending = Some((sender.clone(), task));
        sender
    }
}

fn sending_ended() -> WfeError {
    WfeError::Persistence(
        "UNAVAILABLE (UNAVAILABLE): the lifecycle publisher's sending task ended (its runtime \
         shut down?); the events it had queued are lost"
            .to_string(),
    )
}

/// Sends published events one after the other, in the order they were published, and answers
/// each flush with what became of the events queued before it. An event numbered below
/// `give_up_below` is given up, the call in flight included; once the publisher is dropped
/// (`give_up_below`'s sender with it), so is every event not sent within [`FLUSH_WAIT`].
async fn send_in_order(
    store: GrpcPersistenceProvider,
    client: LifecycleServiceClient<Transport>,
    mut inbox: mpsc::UnboundedReceiver<Outgoing>,
    unsent: Arc<AtomicUsize>,
    mut give_up_below: watch::Receiver<u64>,
) {
    let mut delivery = Delivery::default();
    // When the publisher was dropped, plus FLUSH_WAIT.
    let mut closing: Option<Instant> = None;
    while let Some(message) = inbox.recv().await {
        let (number, event) = match message {
            Outgoing::Flush(done) => {
                let _ = done.send(std::mem::take(&mut delivery));
                continue;
            }
            Outgoing::Event(number, event) => (number, event),
        };
        unsent.fetch_sub(1, Ordering::AcqRel);
        delivery.published += 1;
        if closing.is_none() && give_up_below.has_changed().is_err() {
            closing = Some(Instant::now() + FLUSH_WAIT);
        }
        if number < *give_up_below.borrow() || closing.is_some_and(|at| Instant::now() >= at) {
            delivery.given_up += 1;
            continue;
        }
        let request = pb::PublishLifecycleEventRequest { event: Some(event) };
        let call = store.call(&client, Subject::None, |mut c| async move {
            c.publish_lifecycle_event(request).await
        });
        tokio::pin!(call);
        let sent = loop {
            tokio::select! {
                sent = &mut call => break Some(sent),
                changed = give_up_below.changed(), if closing.is_none() => match changed {
                    Ok(()) if number < *give_up_below.borrow() => break None,
                    Ok(()) => {}
                    Err(_) => closing = Some(Instant::now() + FLUSH_WAIT),
                },
                () = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)),
                    if closing.is_some() => break None,
            }
        };
        match sent {
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(%error, "lifecycle event not published");
                delivery.failed += 1;
                delivery.first_error.get_or_insert(error);
            }
            None => delivery.given_up += 1,
        }
    }
    // The publisher is gone: whatever was given up since the last flush is nobody's to report.
    if delivery.given_up > 0 {
        tracing::warn!(
            given_up = delivery.given_up,
            "lifecycle events not sent within {FLUSH_WAIT:?} of the publisher's drop (the server \
             did not answer); given up"
        );
    }
}

/// A watch stream's answer.
type WatchStream = tonic::Streaming<pb::WatchLifecycleEventsResponse>;
/// A watch stream opened on an earlier server, with its index (see [`earlier_server`]).
type Probe = Pin<Box<dyn Future<Output = Option<(usize, WatchStream)>> + Send>>;

/// Keeps one watch stream open and hands its events to the subscribers, until no subscriber is
/// left (checked every [`UNSUBSCRIBED_CHECK`], and when an event finds nobody). With several
/// servers the stream is on the first of the list that answers (where the publishers are); while
/// it is on a later one, every [`RETURN_PROBE`] it tries the earlier ones and moves back to the
/// first that answers, as the publishers do.
async fn watch_events(
    store: GrpcPersistenceProvider,
    client: LifecycleServiceClient<Transport>,
    events: broadcast::Sender<LifecycleEvent>,
    watching: watch::Sender<Watching>,
    slot: Arc<Mutex<Option<JoinHandle<()>>>>,
) {
    // Whether nobody listens any more; then this task gives up its slot, under the lock
    // `subscribe` takes, so that a subscriber arriving now starts a new task.
    let nobody_listens = || {
        let mut slot = slot.lock().unwrap();
        if events.receiver_count() > 0 {
            return false;
        }
        *slot = None;
        watching.send_replace(Watching::Closed);
        true
    };
    let mut pause = Duration::from_millis(50);
    while !nobody_listens() {
        match client
            .clone()
            .watch_lifecycle_events(pb::WatchLifecycleEventsRequest::default())
            .await
        {
            Ok(response) => {
                watching.send_replace(Watching::Open);
                pause = Duration::from_millis(50);
                let mut served = response.extensions().get::<Served>().map_or(0, |s| s.0);
                let mut stream = response.into_inner();
                let mut probe = earlier_server(store.clone(), served);
                let mut check = tokio::time::interval(UNSUBSCRIBED_CHECK);
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(message)) => {
                                let Some(event) = message.event else { continue };
                                match convert::lifecycle_event_from_wire(event) {
                                    Ok(event) => {
                                        if events.send(event).is_err() && nobody_listens() {
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
                        },
                        _ = check.tick() => {
                            if nobody_listens() {
                                return;
                            }
                        }
                        found = &mut probe, if served > 0 => {
                            if let Some((index, opened)) = found {
                                // In place on the earlier server before the old one is closed.
                                tracing::info!(server = index, "lifecycle watch stream moved back to an earlier server");
                                served = index;
                                stream = opened;
                            }
                            probe = earlier_server(store.clone(), served);
                        }
                    }
                }
                watching.send_replace(Watching::Closed);
            }
            Err(status) => {
                tracing::warn!(error = %error_chain(&status), "cannot open the lifecycle watch stream; retrying");
                let error = match crate::error::from_status(&status, Subject::None) {
                    WfeError::Persistence(text) => text,
                    other => other.to_string(),
                };
                let for_good = matches!(
                    status.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::Unimplemented
                        | tonic::Code::InvalidArgument
                );
                watching.send_replace(Watching::Refused { error, for_good });
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

/// After [`RETURN_PROBE`], a watch stream on the first of the servers before `served` in the
/// list that answers, with its index; `None` when none does (each gets [`RETURN_PROBE`]).
fn earlier_server(store: GrpcPersistenceProvider, served: usize) -> Probe {
    Box::pin(async move {
        if served == 0 {
            return None;
        }
        tokio::time::sleep(RETURN_PROBE).await;
        for index in 0..served {
            let mut client = LifecycleServiceClient::new(store.streaming_transport_to(index));
            let opened = tokio::time::timeout(
                RETURN_PROBE,
                client.watch_lifecycle_events(pb::WatchLifecycleEventsRequest::default()),
            )
            .await;
            if let Ok(Ok(response)) = opened {
                return Some((index, response.into_inner()));
            }
        }
        None
    })
}

#[async_trait]
impl LifecyclePublisher for GrpcLifecyclePublisher {
    /// Queues `event` for the server (see the module notes: sent in the background, in order).
    async fn publish(&self, event: LifecycleEvent) -> Result<()> {
        self.queue(convert::lifecycle_event_to_wire(&event)?)
    }

    /// Events every host publishes to the server from about now on (this one's included). The
    /// stream opens in the background; [`GrpcLifecyclePublisher::subscribe_connected`] waits
    /// for it. It closes within a second once every receiver is dropped (the next subscribe
    /// opens another). Must be called inside a tokio runtime.
    fn subscribe(&self) -> Result<broadcast::Receiver<LifecycleEvent>> {
        let receiver = self.inner.events.subscribe();
        let mut watcher = self.inner.watcher.lock().unwrap();
        if watcher.as_ref().is_none_or(|task| task.is_finished()) {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|e| WfeError::Other(Box::new(e)))?;
            // What an ended task saw says nothing about the new one's stream.
            self.inner.watching.send_replace(Watching::Closed);
            *watcher = Some(runtime.spawn(watch_events(
                self.inner.store.clone(),
                self.inner.watch_client.clone(),
                self.inner.events.clone(),
                self.inner.watching.clone(),
                self.inner.watcher.clone(),
            )));
        }
        Ok(receiver)
    }
}
