//! The recent-traffic ring: the events received in the last few minutes,
//! with their receive times, so a candidate stream can be tried on real
//! traffic before it goes live (the shell's `try_stream`).
//!
//! Bounded twice: by age (`--recent-minutes`) and by count
//! (`--recent-max-events`), so memory stays bounded whatever the rate; when
//! the count is reached the oldest events go first, and are counted as
//! dropped. The pipeline pushes each batch under one lock, not each event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::streams::lock;

/// Minutes of traffic kept, by default.
pub const DEFAULT_MINUTES: f64 = 5.0;

/// Most events kept, by default, whatever the rate.
pub const DEFAULT_MAX_EVENTS: usize = 1_000_000;

/// An event as it was received, and when (the pipeline clock's seconds).
#[derive(Clone, Debug)]
pub struct Received {
    pub at: f64,
    pub event: Arc<Event>,
}

/// The ring. Off (keeping nothing) until [`Recent::configure`]d.
#[derive(Debug, Default)]
pub struct Recent {
    on: AtomicBool,
    /// Seconds kept, as f64 bits.
    window: AtomicU64,
    max_events: AtomicUsize,
    events: Mutex<VecDeque<Received>>,
    /// Events pushed out by the count cap before their time was up.
    dropped: AtomicU64,
}

impl Recent {
    /// A ring that keeps nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Keeps `window_secs` of traffic, at most `max_events` events; a
    /// window of 0 (or a cap of 0) turns the ring off and empties it.
    pub fn configure(&self, window_secs: f64, max_events: usize) {
        let on = window_secs > 0.0 && window_secs.is_finite() && max_events > 0;
        self.window.store(
            if on { window_secs } else { 0.0 }.to_bits(),
            Ordering::Relaxed,
        );
        self.max_events.store(max_events, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
        let mut events = lock(&self.events);
        if on {
            self.shrink_to_cap(&mut events, max_events);
        } else {
            *events = VecDeque::new();
        }
    }

    /// Whether the ring keeps anything (one relaxed load: the pipeline asks
    /// before each batch).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Seconds of traffic kept; 0 when off.
    pub fn window_secs(&self) -> f64 {
        f64::from_bits(self.window.load(Ordering::Relaxed))
    }

    pub fn max_events(&self) -> usize {
        self.max_events.load(Ordering::Relaxed)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events pushed out by the count cap so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Adds a batch received at `now`, then forgets what is older than the
    /// window and what is beyond the cap (oldest first).
    pub fn push(&self, now: f64, batch: &[Arc<Event>]) {
        if !self.is_on() || batch.is_empty() {
            return;
        }
        let max = self.max_events();
        // Of a batch larger than the whole cap, only its last `max` events
        // could stay: the others are dropped without entering.
        let skip = batch.len().saturating_sub(max);
        let mut events = lock(&self.events);
        if skip > 0 {
            self.dropped.fetch_add(skip as u64, Ordering::Relaxed);
        }
        self.forget_before(&mut events, now - self.window_secs());
        self.shrink_to_cap(&mut events, max - (batch.len() - skip));
        events.extend(batch[skip..].iter().map(|e| Received {
            at: now,
            event: Arc::clone(e),
        }));
    }

    /// Forgets what is older than the window at `now` (on the pipeline's
    /// tick, so a quiet server does not hold old events).
    pub fn trim(&self, now: f64) {
        if !self.is_on() {
            return;
        }
        let mut events = lock(&self.events);
        self.forget_before(&mut events, now - self.window_secs());
    }

    /// The events received at `since` or later, oldest first.
    pub fn since(&self, since: f64) -> Vec<Received> {
        let events = lock(&self.events);
        // Receive times only go back if the wall clock does: filter rather
        // than search, so such events are not missed.
        events.iter().filter(|r| r.at >= since).cloned().collect()
    }

    fn forget_before(&self, events: &mut VecDeque<Received>, oldest: f64) {
        while events.front().is_some_and(|r| r.at < oldest) {
            events.pop_front();
        }
    }

    /// Drops the oldest events until at most `keep` remain, counting them.
    fn shrink_to_cap(&self, events: &mut VecDeque<Received>, keep: usize) {
        let over = events.len().saturating_sub(keep);
        if over > 0 {
            events.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, VirtualClock};
    use crate::testing::ev;

    fn batch(hosts: &[&str]) -> Vec<Arc<Event>> {
        hosts
            .iter()
            .map(|h| Arc::new(ev(&format!(r#"{{"host":"{h}"}}"#))))
            .collect()
    }

    fn hosts(got: &[Received]) -> Vec<String> {
        got.iter()
            .map(|r| r.event.host.as_deref().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn off_keeps_nothing() {
        let ring = Recent::off();
        ring.push(1.0, &batch(&["a"]));
        assert!(!ring.is_on());
        assert_eq!(ring.len(), 0);
        assert!(ring.since(0.0).is_empty());
    }

    #[test]
    fn keeps_the_window_by_receive_time() {
        let clock = VirtualClock::starting_at(1000.0);
        let ring = Recent::off();
        ring.configure(60.0, 100);
        ring.push(clock.now(), &batch(&["a", "b"]));
        clock.advance_by(30.0);
        ring.push(clock.now(), &batch(&["c"]));
        assert_eq!(hosts(&ring.since(0.0)), ["a", "b", "c"]);
        // Only what came at or after a time.
        assert_eq!(hosts(&ring.since(1030.0)), ["c"]);
        assert_eq!(ring.since(1030.0)[0].at, 1030.0);

        // 61 s after a and b: they age out on the next push.
        clock.advance_by(31.0);
        ring.push(clock.now(), &batch(&["d"]));
        assert_eq!(hosts(&ring.since(0.0)), ["c", "d"]);
        // Aging out is not a drop.
        assert_eq!(ring.dropped(), 0);

        // And on a tick, with no traffic.
        clock.advance_by(60.0);
        ring.trim(clock.now());
        assert_eq!(hosts(&ring.since(0.0)), ["d"]);
        clock.advance_by(1.0);
        ring.trim(clock.now());
        assert!(ring.is_empty());
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        let ring = Recent::off();
        ring.configure(300.0, 3);
        ring.push(1.0, &batch(&["a", "b"]));
        ring.push(2.0, &batch(&["c", "d"]));
        assert_eq!(hosts(&ring.since(0.0)), ["b", "c", "d"]);
        assert_eq!(ring.dropped(), 1);
        // A batch larger than the cap: only its last events stay.
        ring.push(3.0, &batch(&["e", "f", "g", "h", "i"]));
        assert_eq!(hosts(&ring.since(0.0)), ["g", "h", "i"]);
        assert_eq!(ring.dropped(), 1 + 3 + 2);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn reconfiguring_applies_the_new_bounds() {
        let ring = Recent::off();
        ring.configure(300.0, 10);
        ring.push(1.0, &batch(&["a", "b", "c", "d"]));
        ring.configure(300.0, 2);
        assert_eq!(hosts(&ring.since(0.0)), ["c", "d"]);
        assert_eq!(ring.dropped(), 2);
        ring.configure(0.0, 2);
        assert!(!ring.is_on());
        assert!(ring.is_empty());
        ring.push(2.0, &batch(&["e"]));
        assert!(ring.is_empty());
    }
}
