//! The index: the latest event per `(host, service)`, and expiry.
//!
//! As in Riemann, inserting an event whose state is "expired" deletes its key,
//! and an event lives until `time + ttl` (ttl 60 s when absent). One index is
//! shared by every `index()` node, so it survives stream reloads.
//!
//! Subscribers (the HTTP server's WebSocket and SSE clients) see each event
//! as it is indexed, and each expired event, through a broadcast channel
//! that costs one atomic load per insert while nobody subscribes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

// foldhash: several times faster than SipHash on short keys, and seeded
// per process, so senders cannot aim for collisions.
use foldhash::HashMap;

use crate::event::{Event, EventKey};

/// Events a subscriber may fall behind by before it is dropped: a slow
/// subscriber must never slow the dispatch thread, and a broadcast channel
/// overwrites what its slowest reader has not read yet.
pub const SUBSCRIBER_BACKLOG: usize = 16 * 1024;

pub struct Index {
    events: Mutex<HashMap<EventKey, Arc<Event>>>,
    /// Open [`Subscription`]s: `insert` publishes only when there are some.
    subscribers: Arc<AtomicUsize>,
    published: broadcast::Sender<Arc<Event>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            events: Mutex::default(),
            subscribers: Arc::default(),
            published: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }
}

/// A live feed of what the index receives: each event indexed, and each
/// event expired or deleted (state "expired"), as Riemann's subscriptions
/// send them. Lagging more than [`SUBSCRIBER_BACKLOG`] events behind shows
/// as `RecvError::Lagged`.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<Event>>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, event: &Arc<Event>) {
        let mut events = self.lock();
        if event.state.as_deref() == Some("expired") {
            // Published only when it deleted something: expire() already
            // published the copies it returns, which come back here when
            // the streams index them.
            if events.remove(&event.key()).is_some() {
                drop(events);
                self.publish(event);
            }
        } else {
            events.insert(event.key(), Arc::clone(event));
            drop(events);
            self.publish(event);
        }
    }

    /// Starts a feed of every event indexed from now on.
    pub fn subscribe(&self) -> Subscription {
        // Receiver first, then the count: an insert that sees the count
        // has a receiver to send to.
        let events = self.published.subscribe();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            events,
            count: Arc::clone(&self.subscribers),
        }
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn publish(&self, event: &Arc<Event>) {
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            // Err only when the last subscriber just left.
            let _ = self.published.send(Arc::clone(event));
        }
    }

    /// Removes every event whose deadline is before `now` and returns the
    /// expired copies to re-inject, oldest deadline first.
    pub fn expire(&self, now: f64) -> Vec<Event> {
        let mut gone: Vec<Arc<Event>> = Vec::new();
        self.lock().retain(|_, e| match e.deadline() {
            Some(d) if d < now => {
                gone.push(Arc::clone(e));
                false
            }
            _ => true,
        });
        gone.sort_by(|a, b| {
            a.deadline()
                .partial_cmp(&b.deadline())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let expired: Vec<Event> = gone.iter().map(|e| e.expired_copy(now)).collect();
        if self.subscribers() > 0 {
            for e in &expired {
                self.publish(&Arc::new(e.clone()));
            }
        }
        expired
    }

    pub fn get(&self, host: &str, service: &str) -> Option<Arc<Event>> {
        self.lock()
            .get(&(Some(host.into()), Some(service.into())))
            .cloned()
    }

    /// Every indexed event matching `pred`, sorted by host then service.
    ///
    /// `pred` runs outside the lock, on a snapshot of the index: a slow
    /// query must not hold up `insert`, which the dispatch thread calls for
    /// every event.
    pub fn search(&self, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let mut found = self.snapshot();
        found.retain(|e| pred(e));
        found.sort_by_key(|e| e.key());
        found
    }

    /// Every indexed event, in no order. The lock is held only to copy the
    /// pointers.
    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Arc<Event>>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn subscribers_see_inserts_and_expiry_once() {
        let idx = Index::new();
        idx.insert(&ev("before", 1, None));
        let mut sub = idx.subscribe();
        assert_eq!(idx.subscribers(), 1);
        idx.insert(&ev("a", 100, Some(1.0)));
        let gone = idx.expire(200.0);
        assert_eq!(gone.len(), 2);
        // The streams index the expired copies again: no second publish.
        for e in gone {
            idx.insert(&Arc::new(e));
        }
        let mut seen = Vec::new();
        while let Ok(e) = sub.events.try_recv() {
            seen.push((e.host.clone().unwrap(), e.state.clone()));
        }
        assert_eq!(
            seen,
            [
                ("a".into(), None),
                ("before".into(), Some("expired".into())),
                ("a".into(), Some("expired".into())),
            ]
        );
        drop(sub);
        assert_eq!(idx.subscribers(), 0);
    }

    #[test]
    fn expired_state_deletes() {
        let idx = Index::new();
        idx.insert(&ev("a", 1, None));
        idx.insert(&Arc::new(ev("a", 1, None).expired_copy(2.0)));
        assert!(idx.is_empty());
    }
}
