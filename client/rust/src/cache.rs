//! What a [`GrpcPersistenceProvider`](crate::GrpcPersistenceProvider) remembers about workflows
//! between calls: the revision of each workflow it read or wrote (sent back as
//! `expected_revision` on persist, so a stale write is refused), and the copy of a workflow that
//! a dequeue handed out with its id (so the WFE host's lookup right after the dequeue needs no
//! round trip).
//!
//! A copy of a workflow is also handed out by the lock provider when it takes a WFE execution
//! claim (`workflow-execution.{id}`) together with the workflow's own lease: read by the server
//! after both leases were taken, it answers the executor's read under the lock.
//!
//! Besides, the ids the server said it queues itself (`server_queues` of the write that stored
//! them), so that the WFE host's `queue_work` right after such a write needs no round trip.
//!
//! All are bounded: the revisions keep at most [`MAX_REVISIONS`] workflows (the least recently
//! used go first), the handed-out copies at most [`MAX_PRIMED`], each for [`PRIMED_FOR`] and for
//! one read only, the server-queued ids at most [`MAX_PRIMED`] per kind, each for
//! [`SERVER_QUEUED_FOR`] and for one `queue_work` only.
//!
//! A handed-out copy is as old as the dequeue, which comes before the host takes the workflow's
//! lock; it answers the host's lookup right after the dequeue (which reads only the definition id
//! and version), and the executor's read under the lock then goes to the server. Should another
//! task of the process read the same workflow in that instant, it gets the copy instead; a
//! persist based on it is checked against the stored revision like any other, so a stale copy
//! can never be written back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wfe_core::models::QueueType;

use crate::pb;

/// Workflows whose revision a provider remembers. A workflow whose revision was forgotten is
/// persisted without a check (`expected_revision = 0`), as before revisions existed.
pub const MAX_REVISIONS: usize = 100_000;
/// Copies handed out by dequeues that are kept for the following read.
pub const MAX_PRIMED: usize = 1024;
/// How long a copy handed out by a dequeue may answer the following read.
pub const PRIMED_FOR: Duration = Duration::from_millis(500);

/// How long after a write that the server said it queues itself a `queue_work` of the same id
/// is answered without a round trip (the WFE host's follows at once).
pub const SERVER_QUEUED_FOR: Duration = Duration::from_secs(2);

/// Revisions, handed-out copies and server-queued ids, shared by a provider and the lock and
/// queue providers built on it.
#[derive(Debug, Default)]
pub(crate) struct WorkflowCache {
    revisions: Mutex<Generations>,
    primed: Mutex<HashMap<String, (pb::WorkflowInstance, Instant)>>,
    server_queued: Mutex<HashMap<(QueueType, String), Instant>>,
    events: Mutex<PrimedEvents>,
}

/// Events an event dequeue handed out, and the subscriptions each matched (by event name, key and
/// `as_of` = the event's time, as the WFE host asks for them right after), each for one read.
#[derive(Debug, Default)]
struct PrimedEvents {
    events: HashMap<String, (pb::Event, Instant)>,
    subscriptions: HashMap<SubscriptionQuery, (Vec<pb::EventSubscription>, Instant)>,
    /// Events the server marked processed in their dequeue (they matched no subscription), for
    /// the host's `mark_event_processed` that follows.
    marked: HashMap<String, ((), Instant)>,
}

/// (event name, event key, as_of seconds, as_of nanos).
type SubscriptionQuery = (String, String, i64, i32);

fn bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, (V, Instant)>) {
    if map.len() >= MAX_PRIMED {
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < PRIMED_FOR);
        if map.len() >= MAX_PRIMED {
            map.clear();
        }
    }
}

impl WorkflowCache {
    /// The last revision this process read or wrote for `id`, if it is still remembered.
    pub(crate) fn revision(&self, id: &str) -> Option<i64> {
        self.revisions.lock().unwrap().get(id)
    }

    /// Remembers `revision` for `id` (0, "never stored", is not remembered).
    pub(crate) fn remember(&self, id: &str, revision: i64) {
        if revision > 0 {
            self.revisions.lock().unwrap().insert(id, revision);
        }
    }

    /// Keeps the copy a dequeue handed out for the next read of the same id.
    pub(crate) fn prime(&self, workflow: pb::WorkflowInstance) {
        let mut primed = self.primed.lock().unwrap();
        if primed.len() >= MAX_PRIMED {
            let now = Instant::now();
            primed.retain(|_, (_, at)| now.duration_since(*at) < PRIMED_FOR);
            if primed.len() >= MAX_PRIMED {
                primed.clear();
            }
        }
        primed.insert(workflow.id.clone(), (workflow, Instant::now()));
    }

    /// Takes the copy a dequeue handed out for `id`, if it is fresh enough: it answers one read.
    pub(crate) fn take_primed(&self, id: &str) -> Option<pb::WorkflowInstance> {
        let mut primed = self.primed.lock().unwrap();
        if primed.is_empty() {
            return None;
        }
        let (workflow, at) = primed.remove(id)?;
        (at.elapsed() < PRIMED_FOR).then_some(workflow)
    }

    /// After a write of `id` that said whether the server queues it itself on `queue`
    /// (`server_queues`): remembers it, or forgets an earlier write's word when it does not.
    pub(crate) fn server_queues(&self, queue: QueueType, id: &str, queues: bool) {
        let mut queued = self.server_queued.lock().unwrap();
        if !queues {
            if !queued.is_empty() {
                queued.remove(&(queue, id.to_string()));
            }
            return;
        }
        if queued.len() >= MAX_PRIMED {
            let now = Instant::now();
            queued.retain(|_, at| now.duration_since(*at) < SERVER_QUEUED_FOR);
            if queued.len() >= MAX_PRIMED {
                queued.clear();
            }
        }
        queued.insert((queue, id.to_string()), Instant::now());
    }

    /// Whether the server said, in the last write of `id` from this process and recently, that it
    /// queues `id` on `queue` itself; true answers one `queue_work` only.
    pub(crate) fn take_server_queued(&self, queue: QueueType, id: &str) -> bool {
        let mut queued = self.server_queued.lock().unwrap();
        if queued.is_empty() {
            return false;
        }
        queued
            .remove(&(queue, id.to_string()))
            .is_some_and(|at| at.elapsed() < SERVER_QUEUED_FOR)
    }

    /// Keeps the event an event dequeue handed out for the next `get_event` of its id, and, when
    /// the server said they are all there, the subscriptions it matched for the next
    /// `get_subscriptions` of its name, key and time; `marked`: the server marked it processed
    /// (for the next `mark_event_processed` of its id).
    pub(crate) fn prime_event(
        &self,
        event: pb::Event,
        subscriptions: Option<Vec<pb::EventSubscription>>,
        marked: bool,
    ) {
        let mut primed = self.events.lock().unwrap();
        let now = Instant::now();
        if marked {
            bounded(&mut primed.marked);
            primed.marked.insert(event.id.clone(), ((), now));
        }
        if let (Some(subscriptions), Some(time)) = (subscriptions, event.event_time) {
            bounded(&mut primed.subscriptions);
            let query = (
                event.event_name.clone(),
                event.event_key.clone(),
                time.seconds,
                time.nanos,
            );
            primed.subscriptions.insert(query, (subscriptions, now));
        }
        bounded(&mut primed.events);
        primed.events.insert(event.id.clone(), (event, now));
    }

    /// Takes the event a dequeue handed out with id `id`, if it is fresh enough (one read).
    pub(crate) fn take_event(&self, id: &str) -> Option<pb::Event> {
        let mut primed = self.events.lock().unwrap();
        if primed.events.is_empty() {
            return None;
        }
        let (event, at) = primed.events.remove(id)?;
        (at.elapsed() < PRIMED_FOR).then_some(event)
    }

    /// Whether a dequeue of the event `id` marked it processed, recently (answers one
    /// `mark_event_processed`).
    pub(crate) fn take_marked_event(&self, id: &str) -> bool {
        let mut primed = self.events.lock().unwrap();
        if primed.marked.is_empty() {
            return false;
        }
        primed
            .marked
            .remove(id)
            .is_some_and(|(_, at)| at.elapsed() < PRIMED_FOR)
    }

    /// Takes the subscriptions a dequeue handed out for an event of this name and key at `as_of`,
    /// if they are fresh enough (one read).
    pub(crate) fn take_subscriptions(
        &self,
        event_name: &str,
        event_key: &str,
        as_of: &prost_types::Timestamp,
    ) -> Option<Vec<pb::EventSubscription>> {
        let mut primed = self.events.lock().unwrap();
        if primed.subscriptions.is_empty() {
            return None;
        }
        let query = (
            event_name.to_string(),
            event_key.to_string(),
            as_of.seconds,
            as_of.nanos,
        );
        let (subscriptions, at) = primed.subscriptions.remove(&query)?;
        (at.elapsed() < PRIMED_FOR).then_some(subscriptions)
    }

    /// Drops a handed-out copy of `id` (this process is writing the workflow).
    pub(crate) fn forget_primed(&self, id: &str) {
        let mut primed = self.primed.lock().unwrap();
        if !primed.is_empty() {
            primed.remove(id);
        }
    }
}

/// A bounded map from workflow id to revision that forgets the least recently used entries:
/// two generations of at most `MAX_REVISIONS / 2` entries each; when the young one is full the
/// old one is dropped and the young one becomes old. A hit in the old generation moves the entry
/// back to the young one.
#[derive(Debug, Default)]
struct Generations {
    young: HashMap<String, i64>,
    old: HashMap<String, i64>,
}

impl Generations {
    const PER_GENERATION: usize = MAX_REVISIONS / 2;

    fn get(&mut self, id: &str) -> Option<i64> {
        if let Some(revision) = self.young.get(id) {
            return Some(*revision);
        }
        let revision = self.old.remove(id)?;
        self.insert(id, revision);
        Some(revision)
    }

    fn insert(&mut self, id: &str, revision: i64) {
        if let Some(slot) = self.young.get_mut(id) {
            *slot = revision;
            return;
        }
        self.old.remove(id);
        if self.young.len() >= Self::PER_GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(id.to_string(), revision);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_bounded_and_recently_used_ones_stay() {
        let cache = WorkflowCache::default();
        cache.remember("keep", 7);
        for i in 0..(MAX_REVISIONS * 3) {
            cache.remember(&format!("w{i}"), 1);
            if i % 1000 == 0 {
                // Used all along: never forgotten.
                assert_eq!(cache.revision("keep"), Some(7));
            }
        }
        let revisions = cache.revisions.lock().unwrap();
        assert!(revisions.len() <= MAX_REVISIONS, "{}", revisions.len());
        drop(revisions);
        assert_eq!(
            cache.revision("w0"),
            None,
            "the oldest entries are forgotten"
        );
        assert_eq!(
            cache.revision(&format!("w{}", MAX_REVISIONS * 3 - 1)),
            Some(1)
        );
        cache.remember("keep", 8);
        assert_eq!(cache.revision("keep"), Some(8));
        cache.remember("zero", 0);
        assert_eq!(cache.revision("zero"), None);
    }

    #[test]
    fn a_primed_copy_answers_one_read_while_fresh() {
        let cache = WorkflowCache::default();
        let w = pb::WorkflowInstance {
            id: "w1".into(),
            revision: 3,
            ..Default::default()
        };
        cache.prime(w.clone());
        assert_eq!(cache.take_primed("w1").map(|w| w.revision), Some(3));
        assert!(cache.take_primed("w1").is_none(), "one read only");

        cache.prime(w.clone());
        cache.forget_primed("w1");
        assert!(cache.take_primed("w1").is_none());

        cache.prime(w);
        std::thread::sleep(PRIMED_FOR + Duration::from_millis(20));
        assert!(cache.take_primed("w1").is_none(), "too old");

        for i in 0..(MAX_PRIMED * 2) {
            cache.prime(pb::WorkflowInstance {
                id: format!("p{i}"),
                ..Default::default()
            });
        }
        assert!(cache.primed.lock().unwrap().len() <= MAX_PRIMED);
    }

    #[test]
    fn a_primed_event_and_its_subscriptions_answer_one_read_each() {
        let cache = WorkflowCache::default();
        let time = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000,
        };
        let event = pb::Event {
            id: "e1".into(),
            event_name: "n".into(),
            event_key: "k".into(),
            event_time: Some(time),
            ..Default::default()
        };
        let subscription = pb::EventSubscription {
            id: "s1".into(),
            ..Default::default()
        };
        cache.prime_event(event.clone(), Some(vec![subscription]), false);
        assert!(!cache.take_marked_event("e1"), "not marked");
        assert!(cache.take_subscriptions("n", "other", &time).is_none());
        let later = prost_types::Timestamp {
            seconds: time.seconds + 1,
            nanos: time.nanos,
        };
        assert!(
            cache.take_subscriptions("n", "k", &later).is_none(),
            "other time"
        );
        let subscriptions = cache.take_subscriptions("n", "k", &time).unwrap();
        assert_eq!(subscriptions.len(), 1);
        assert!(
            cache.take_subscriptions("n", "k", &time).is_none(),
            "one read"
        );
        assert_eq!(cache.take_event("e1").map(|e| e.id), Some("e1".into()));
        assert!(cache.take_event("e1").is_none(), "one read");

        // Not all subscriptions came along: only the event is kept.
        cache.prime_event(event.clone(), None, false);
        assert!(cache.take_subscriptions("n", "k", &time).is_none());
        std::thread::sleep(PRIMED_FOR + Duration::from_millis(20));
        assert!(cache.take_event("e1").is_none(), "too old");

        // Marked processed by its dequeue: answers one mark, while fresh.
        cache.prime_event(event.clone(), Some(vec![]), true);
        assert!(!cache.take_marked_event("e2"), "other id");
        assert!(cache.take_marked_event("e1"));
        assert!(!cache.take_marked_event("e1"), "one mark");
        cache.prime_event(event.clone(), Some(vec![]), true);
        std::thread::sleep(PRIMED_FOR + Duration::from_millis(20));
        assert!(!cache.take_marked_event("e1"), "too old");
    }

    #[test]
    fn a_server_queued_id_answers_one_queue_work_of_its_queue() {
        let cache = WorkflowCache::default();
        cache.server_queues(QueueType::Workflow, "w1", true);
        assert!(
            !cache.take_server_queued(QueueType::Event, "w1"),
            "other queue"
        );
        assert!(cache.take_server_queued(QueueType::Workflow, "w1"));
        assert!(
            !cache.take_server_queued(QueueType::Workflow, "w1"),
            "one only"
        );

        cache.server_queues(QueueType::Workflow, "w2", true);
        cache.server_queues(QueueType::Workflow, "w2", false);
        assert!(
            !cache.take_server_queued(QueueType::Workflow, "w2"),
            "a later write that the server does not queue wins"
        );

        for i in 0..(MAX_PRIMED * 2) {
            cache.server_queues(QueueType::Event, &format!("e{i}"), true);
        }
        assert!(cache.server_queued.lock().unwrap().len() <= MAX_PRIMED);
    }
}
