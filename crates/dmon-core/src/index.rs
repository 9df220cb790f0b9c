//! The index: the latest event per `(host, service)`, and expiry.
//!
//! As in Riemann, inserting an event whose state is "expired" deletes its key,
//! and an event lives until `time + ttl` (ttl 60 s when absent). One index is
//! shared by every `index()` node, so it survives stream reloads.
//!
//! Expiry follows deadlines: each key is looked at when its event may have
//! gone stale, not at every sweep.
//!
//! A watcher (the server's feed to its WebSocket and SSE subscribers) sees
//! each event as it is indexed, and each expired event; the index knows
//! only the [`IndexWatcher`] trait, and costs one atomic load per insert
//! while none is set.

use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use hashbrown::hash_table::{Entry, HashTable};

use crate::event::Event;

/// Who watches what the index receives: told each event indexed, and each
/// event expired or deleted (state "expired"), as Riemann's subscriptions
/// send them. It must not block: `insert` runs on the dispatch thread.
pub trait IndexWatcher: Send + Sync {
    /// Whether anyone listens now; when not, expiry makes no copies for it.
    fn listening(&self) -> bool;
    fn indexed(&self, event: &Arc<Event>);
}

#[derive(Default)]
pub struct Index {
    table: Mutex<Table>,
    /// Set once, by the server that feeds subscribers.
    watcher: OnceLock<Arc<dyn IndexWatcher>>,
}

/// The events by key, and when to look at each key again.
///
/// Sized for a million keys: the table holds only the event and the
/// deadline it is queued at (16 bytes a key; the key is the event's own
/// host and service), and the queue at most one entry per key plus one per
/// deadline moved earlier, as (deadline, the key's hash). A key is queued
/// at its event's deadline; a newer event with a later deadline does not
/// queue it again: when the old deadline comes, the key is queued at the
/// new one. So expiry costs the keys due, not the keys held.
#[derive(Default)]
struct Table {
    slots: HashTable<Slot>,
    queue: BinaryHeap<Due>,
    /// foldhash: several times faster than SipHash on short keys, and
    /// seeded per process, so senders cannot aim for collisions.
    hasher: foldhash::fast::RandomState,
}

struct Slot {
    event: Arc<Event>,
    /// The deadline this key is queued at; infinite when not queued (an
    /// event without a time never expires).
    queued_at: f64,
}

/// A key to look at: ordered earliest first (a min-heap).
#[derive(PartialEq)]
struct Due {
    at: f64,
    hash: u64,
}

impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then(other.hash.cmp(&self.hash))
    }
}

fn same_key(a: &Event, host: Option<&str>, service: Option<&str>) -> bool {
    a.host.as_deref() == host && a.service.as_deref() == service
}

impl Table {
    fn hash(&self, host: Option<&str>, service: Option<&str>) -> u64 {
        self.hasher.hash_one((host, service))
    }

    fn hash_of(&self, e: &Event) -> u64 {
        self.hash(e.host.as_deref(), e.service.as_deref())
    }

    fn insert(&mut self, event: &Arc<Event>) {
        let hash = self.hash_of(event);
        let (host, service) = (event.host.as_deref(), event.service.as_deref());
        let deadline = event.deadline().filter(|d| !d.is_nan());
        let hasher = &self.hasher;
        let entry = self.slots.entry(
            hash,
            |s| same_key(&s.event, host, service),
            |s| hasher.hash_one((s.event.host.as_deref(), s.event.service.as_deref())),
        );
        let queue = match entry {
            Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                slot.event = Arc::clone(event);
                match deadline {
                    Some(d) if d < slot.queued_at => {
                        slot.queued_at = d;
                        Some(d)
                    }
                    _ => None,
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot {
                    event: Arc::clone(event),
                    queued_at: deadline.unwrap_or(f64::INFINITY),
                });
                deadline
            }
        };
        if let Some(at) = queue {
            self.queue.push(Due { at, hash });
        }
    }

    fn remove(&mut self, host: Option<&str>, service: Option<&str>) -> bool {
        let hash = self.hash(host, service);
        match self
            .slots
            .find_entry(hash, |s| same_key(&s.event, host, service))
        {
            Ok(slot) => {
                slot.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the events whose deadline is before `now`, earliest first.
    fn expire(&mut self, now: f64) -> Vec<Arc<Event>> {
        let mut gone = Vec::new();
        while let Some(due) = self.queue.peek() {
            if due.at >= now {
                break;
            }
            let Due { at, hash } = self.queue.pop().expect("peeked");
            // The key this entry was queued for, if it is still queued at
            // `at` (else it was removed, or queued again earlier).
            let Ok(slot) = self
                .slots
                .find_entry(hash, |s| s.queued_at.to_bits() == at.to_bits())
            else {
                continue;
            };
            match slot.get().event.deadline().filter(|d| !d.is_nan()) {
                Some(d) if d < now => gone.push(slot.remove().0.event),
                Some(d) => {
                    slot.into_mut().queued_at = d;
                    self.queue.push(Due { at: d, hash });
                }
                None => slot.into_mut().queued_at = f64::INFINITY,
            }
        }
        if self.queue.capacity() > 1024 && self.queue.len() * 4 < self.queue.capacity() {
            self.queue.shrink_to_fit();
        }
        // A key found through an earlier deadline it was queued at may
        // come before one whose event went stale first.
        gone.sort_by(|a, b| {
            let deadline = |e: &Event| e.deadline().unwrap_or(f64::INFINITY);
            deadline(a).total_cmp(&deadline(b))
        });
        gone
    }
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, event: &Arc<Event>) {
        let mut table = self.lock();
        if event.state.as_deref() == Some("expired") {
            // Published only when it deleted something: expire() already
            // published the copies it returns, which come back here when
            // the streams index them.
            if table.remove(event.host.as_deref(), event.service.as_deref()) {
                drop(table);
                self.publish(event);
            }
        } else {
            table.insert(event);
            drop(table);
            self.publish(event);
        }
    }

    /// Makes `watcher` see every event indexed from now on; false (and
    /// nothing changes) when one is already set.
    pub fn set_watcher(&self, watcher: Arc<dyn IndexWatcher>) -> bool {
        self.watcher.set(watcher).is_ok()
    }

    fn listening(&self) -> Option<&Arc<dyn IndexWatcher>> {
        self.watcher.get().filter(|w| w.listening())
    }

    fn publish(&self, event: &Arc<Event>) {
        if let Some(watcher) = self.listening() {
            watcher.indexed(event);
        }
    }

    /// Removes every event whose deadline is before `now` and returns the
    /// expired copies to re-inject, oldest deadline first. Costs the keys
    /// due, not the keys held.
    pub fn expire(&self, now: f64) -> Vec<Event> {
        self.expire_events(now)
            .iter()
            .map(|e| e.expired_copy(now))
            .collect()
    }

    /// [`Index::expire`], returning the events removed themselves rather
    /// than their expired copies (which subscribers are sent): the caller
    /// can tell where each came from before re-injecting its copy.
    pub fn expire_events(&self, now: f64) -> Vec<Arc<Event>> {
        let gone = self.lock().expire(now);
        if let Some(watcher) = self.listening() {
            for e in &gone {
                watcher.indexed(&Arc::new(e.expired_copy(now)));
            }
        }
        gone
    }

    /// The earliest time an event may be due to expire (expiry at any
    /// later time may find one).
    pub fn next_deadline(&self) -> Option<f64> {
        self.lock().queue.peek().map(|d| d.at)
    }

    pub fn get(&self, host: &str, service: &str) -> Option<Arc<Event>> {
        let table = self.lock();
        let (host, service) = (Some(host), Some(service));
        table
            .slots
            .find(table.hash(host, service), |s| {
                same_key(&s.event, host, service)
            })
            .map(|s| Arc::clone(&s.event))
    }

    /// Every indexed event matching `pred`, sorted by host then service.
    ///
    /// `pred` runs outside the lock, on a snapshot of the index: a slow
    /// query must not hold up `insert`, which the dispatch thread calls for
    /// every event.
    pub fn search(&self, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let mut found = self.snapshot();
        found.retain(|e| pred(e));
        found.sort_by(|a, b| (&a.host, &a.service).cmp(&(&b.host, &b.service)));
        found
    }

    /// Every indexed event, in no order. The lock is held only to copy the
    /// pointers.
    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        self.lock()
            .slots
            .iter()
            .map(|s| Arc::clone(&s.event))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;

    fn ev(host: &str, time: i64, ttl: Option<f64>) -> Arc<Event> {
        Arc::new(Event {
            host: Some(host.into()),
            service: Some("cpu".into()),
            time: Some(Number::Int(time)),
            ttl,
            ..Event::default()
        })
    }

    #[test]
    fn latest_event_per_key_wins() {
        let idx = Index::new();
        idx.insert(&ev("a", 1, None));
        idx.insert(&ev("a", 2, None));
        idx.insert(&ev("b", 1, None));
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get("a", "cpu").unwrap().time, Some(Number::Int(2)));
    }

    #[test]
    fn expire_removes_stale_and_returns_expired_copies() {
        let idx = Index::new();
        idx.insert(&ev("short", 100, Some(1.0)));
        idx.insert(&ev("long", 100, Some(10.0)));
        let gone = idx.expire(102.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].host.as_deref(), Some("short"));
        assert_eq!(gone[0].state.as_deref(), Some("expired"));
        assert_eq!(idx.len(), 1);
        assert!(idx.expire(105.0).is_empty());
    }

    #[test]
    fn search_does_not_hold_the_lock_while_matching() {
        let idx = Index::new();
        idx.insert(&ev("a", 1, None));
        idx.insert(&ev("b", 1, None));
        // Inserting from inside the predicate would deadlock if the lock
        // were held.
        let found = idx.search(|e| {
            idx.insert(&ev("c", 1, None));
            e.host.as_deref() != Some("b")
        });
        assert_eq!(found.len(), 1);
        assert_eq!(idx.len(), 3);
    }

    /// Records what it is told while `on`.
    #[derive(Default)]
    struct Recorder {
        on: std::sync::atomic::AtomicBool,
        seen: Mutex<Vec<(String, Option<String>)>>,
    }

    impl IndexWatcher for Recorder {
        fn listening(&self) -> bool {
            self.on.load(std::sync::atomic::Ordering::Relaxed)
        }
        fn indexed(&self, e: &Arc<Event>) {
            let seen = (
                e.host.as_deref().unwrap().into(),
                e.state.as_deref().map(Into::into),
            );
            self.seen.lock().unwrap().push(seen);
        }
    }

    #[test]
    fn a_watcher_sees_inserts_and_expiry_once_while_listening() {
        let idx = Index::new();
        let watcher = Arc::new(Recorder::default());
        assert!(idx.set_watcher(watcher.clone()));
        assert!(!idx.set_watcher(watcher.clone()), "set once");
        idx.insert(&ev("before", 1, None));
        watcher.on.store(true, std::sync::atomic::Ordering::Relaxed);
        idx.insert(&ev("a", 100, Some(1.0)));
        let gone = idx.expire(200.0);
        assert_eq!(gone.len(), 2);
        // The streams index the expired copies again: no second publish.
        for e in gone {
            idx.insert(&Arc::new(e));
        }
        assert_eq!(
            *watcher.seen.lock().unwrap(),
            [
                ("a".into(), None),
                ("before".into(), Some("expired".into())),
                ("a".into(), Some("expired".into())),
            ]
        );
    }

    #[test]
    fn expired_state_deletes() {
        let idx = Index::new();
        idx.insert(&ev("a", 1, None));
        idx.insert(&Arc::new(ev("a", 1, None).expired_copy(2.0)));
        assert!(idx.is_empty());
    }
}
