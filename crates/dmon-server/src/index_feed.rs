//! The index's live feed to subscribers (the HTTP server's WebSocket and
//! SSE clients, `dmon bench`): the index's [`IndexWatcher`], publishing
//! into a broadcast channel while anyone subscribes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::event::Event;
use crate::index::IndexWatcher;

/// Events a subscriber may fall behind by before it is dropped: a slow
/// subscriber must never slow the dispatch thread, and a broadcast channel
/// overwrites what its slowest reader has not read yet.
pub const SUBSCRIBER_BACKLOG: usize = 16 * 1024;

pub struct IndexFeed {
    /// Open [`Subscription`]s: events are published only when there are some.
    subscribers: Arc<AtomicUsize>,
    published: broadcast::Sender<Arc<Event>>,
}

impl Default for IndexFeed {
    fn default() -> Self {
        IndexFeed {
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

impl IndexFeed {
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
}

impl IndexWatcher for IndexFeed {
    fn listening(&self) -> bool {
        self.subscribers() > 0
    }

    fn indexed(&self, event: &Arc<Event>) {
        // Err only when the last subscriber just left.
        let _ = self.published.send(Arc::clone(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;

    fn ev(host: &str, time: i64, ttl: Option<f64>) -> Arc<Event> {
        Arc::new(Event {
            host: Some(host.into()),
            time: Some(crate::event::Number::Int(time)),
            ttl,
            ..Event::default()
        })
    }

    #[test]
    fn subscribers_see_inserts_and_expiry_once() {
        let idx = Index::new();
        let feed = Arc::new(IndexFeed::default());
        idx.set_watcher(feed.clone());
        idx.insert(&ev("before", 1, None));
        let mut sub = feed.subscribe();
        assert_eq!(feed.subscribers(), 1);
        idx.insert(&ev("a", 100, Some(1.0)));
        for e in idx.expire(200.0) {
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
        assert_eq!(feed.subscribers(), 0);
    }
}
