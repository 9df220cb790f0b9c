//! The pipeline: the set of stream roots, and the dispatch loop that feeds
//! them every event.
//!
//! Sources (servers) decode events on their own threads and send them here in
//! batches over a bounded channel. The channel counts batches, and a batch
//! can hold thousands of events, so sources also take one permit per event
//! ([`Pipeline::reserve`]) before sending: at most [`DEFAULT_MAX_IN_FLIGHT`]
//! events (`--max-in-flight`) wait at once, and a full pipeline slows sources
//! instead of growing memory. One dispatch thread processes batches in
//! order; the roots can be swapped atomically at any time, and each event
//! goes through exactly one root set.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::context::Context;
use crate::event::Event;
use crate::latency::Histogram;
use crate::stats::{IngestStats, Stats};
use crate::streams::{assign_paths, carry_over, lock, push, snapshot_tree, NodeRef};

/// Batches in flight between sources and the dispatch thread.
pub const CHANNEL_CAPACITY: usize = 256;

/// Events that may wait in the pipeline at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;

/// Events one datagram may carry, by default; the rest are refused.
pub const DEFAULT_MAX_EVENTS_PER_DATAGRAM: usize = 10_000;

/// An event time further than this past the receive time is replaced by
/// the receive time: a clock that wrong is broken, and `time: 1e308` would
/// otherwise keep the event in the index for ever.
pub const MAX_FUTURE_SECS: f64 = 86_400.0;

/// How often the index is expired, in seconds of the context's clock.
pub const EXPIRY_INTERVAL: f64 = 1.0;

/// A named top-level stream: every event goes to every root.
#[derive(Clone)]
pub struct Root {
    pub name: String,
    pub node: NodeRef,
}

impl Root {
    /// The root node's path: `average_stream/average`; nodes below add
    /// their kinds (`average_stream/average/when`).
    pub fn path(&self) -> String {
        format!("{}/{}", self.name, self.node.kind())
    }
}

/// What the dispatch thread receives.
pub enum Work {
    Events(Vec<Event>),
    /// Events whose sender waits until they have been through every root
    /// (the shell's `inject`, and acknowledged protocols).
    Acked(Vec<Event>, oneshot::Sender<()>),
    /// Time to run the nodes' timers, and to expire the index when
    /// [`EXPIRY_INTERVAL`] has passed (see `server::TICK_INTERVAL`).
    Tick,
    /// Shutdown: everything queued before this has been processed.
    Stop,
    /// Events holding their permits (from [`Pipeline::reserve`]), released
    /// once processed; `done`, if any, is told then (as with `Acked`).
    Reserved(Vec<Event>, Permits, Option<oneshot::Sender<()>>),
}

/// The pipeline's event budget, shared with the [`Permits`] it hands out.
struct Flow {
    permits: Semaphore,
    /// Permits the semaphore was given: the configured limit.
    limit: AtomicU32,
    /// Events reserved or waiting for a reservation, not yet processed.
    queued: AtomicU64,
}

/// Room for a number of events in the pipeline: taken by a source before it
/// sends them ([`Pipeline::reserve`]), sent along in [`Work::Reserved`], and
/// given back when dropped (by the dispatch thread, once they are processed).
pub struct Permits {
    flow: Arc<Flow>,
    permits: u32,
    events: u64,
    /// When the source asked for room: the events' ingest latency runs
    /// from here until they have been through the roots.
    since: Instant,
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.flow.permits.add_permits(self.permits as usize);
        self.flow.queued.fetch_sub(self.events, Ordering::Relaxed);
    }
}

pub struct Pipeline {
    ctx: Arc<Context>,
    roots: ArcSwap<Vec<Root>>,
    pub ingest: IngestStats,
    processed: AtomicU64,
    expired: AtomicU64,
    started: Instant,
    /// Held while one unit of work goes through the roots, and while the
    /// roots are swapped: a reload moves state out of the old nodes only
    /// when no event is inside them, so none is lost or counted twice.
    dispatching: Mutex<()>,
    /// When the index was last expired (clock seconds, as f64 bits).
    last_expiry: AtomicU64,
    flow: Arc<Flow>,
    /// From a source asking for room to its events having been through
    /// the roots (self-instrumentation's `dmon ingest latency`).
    pub ingest_latency: Histogram,
    max_per_datagram: AtomicUsize,
    /// The reserved batch being processed: its size, and `processed` when it
    /// began; what it has left is still queued.
    batch_len: AtomicU64,
    batch_start: AtomicU64,
    /// Coarse monotonic nanoseconds when the dispatch thread entered the
    /// root it is in (`busy_root`); 0 when idle. Two relaxed stores per
    /// root per event: cheap enough to always know what it is stuck in.
    busy_since: AtomicU64,
    busy_root: AtomicUsize,
}

impl Pipeline {
    pub fn new(ctx: Arc<Context>, roots: Vec<Root>) -> Self {
        name_nodes(&roots);
        Pipeline {
            ctx,
            roots: ArcSwap::from_pointee(roots),
            ingest: IngestStats::default(),
            processed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            started: Instant::now(),
            dispatching: Mutex::new(()),
            last_expiry: AtomicU64::new(0f64.to_bits()),
            flow: Arc::new(Flow {
                permits: Semaphore::new(DEFAULT_MAX_IN_FLIGHT),
                limit: AtomicU32::new(DEFAULT_MAX_IN_FLIGHT as u32),
                queued: AtomicU64::new(0),
            }),
            ingest_latency: Histogram::default(),
            max_per_datagram: AtomicUsize::new(DEFAULT_MAX_EVENTS_PER_DATAGRAM),
            batch_len: AtomicU64::new(0),
            batch_start: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            busy_root: AtomicUsize::new(0),
        }
    }

    /// Sets the limits; call before sources start. `max_in_flight` is
    /// events waiting in the pipeline at once (at least 1);
    /// `max_per_datagram`, events one datagram may carry.
    pub fn set_limits(&self, max_in_flight: usize, max_per_datagram: usize) {
        let new = max_in_flight.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        let old = self.flow.limit.swap(new, Ordering::Relaxed);
        if new > old {
            self.flow.permits.add_permits((new - old) as usize);
        } else {
            self.flow.permits.forget_permits((old - new) as usize);
        }
        self.max_per_datagram
            .store(max_per_datagram, Ordering::Relaxed);
    }

    /// Events one datagram may carry (`--max-datagram-events`).
    pub fn max_per_datagram(&self) -> usize {
        self.max_per_datagram.load(Ordering::Relaxed)
    }

    /// Events that may wait in the pipeline at once (`--max-in-flight`).
    pub fn max_in_flight(&self) -> usize {
        self.flow.limit.load(Ordering::Relaxed) as usize
    }

    /// Room for `n` events, if there is room now.
    pub fn try_reserve(&self, n: usize) -> Option<Permits> {
        let want = self.permits_for(n);
        let permit = self.flow.permits.try_acquire_many(want).ok()?;
        permit.forget();
        self.flow.queued.fetch_add(n as u64, Ordering::Relaxed);
        Some(Permits {
            flow: Arc::clone(&self.flow),
            permits: want,
            events: n as u64,
            since: Instant::now(),
        })
    }

    /// Room for `n` events, waiting until the dispatch thread has made it.
    /// The events count as queued while waiting (so a forced stop counts
    /// them as unprocessed); dropping the future gives everything back. A
    /// batch larger than the whole limit waits for all of it.
    pub async fn reserve(&self, n: usize) -> Permits {
        self.flow.queued.fetch_add(n as u64, Ordering::Relaxed);
        let mut held = Permits {
            flow: Arc::clone(&self.flow),
            permits: 0,
            events: n as u64,
            since: Instant::now(),
        };
        let want = self.permits_for(n);
        // The semaphore is never closed.
        if let Ok(permit) = self.flow.permits.acquire_many(want).await {
            permit.forget();
            held.permits = want;
        }
        held
    }

    fn permits_for(&self, n: usize) -> u32 {
        n.min(self.max_in_flight()).max(1) as u32
    }

    /// Events received but not yet processed: reserved (or waiting for a
    /// reservation) and not yet through the roots.
    pub fn queued(&self) -> u64 {
        let queued = self.flow.queued.load(Ordering::Relaxed);
        let batch = self.batch_len.load(Ordering::Relaxed);
        let done = self
            .processed
            .load(Ordering::Relaxed)
            .saturating_sub(self.batch_start.load(Ordering::Relaxed))
            .min(batch);
        queued.saturating_sub(done)
    }

    /// How long the dispatch thread has been inside one root, and its path;
    /// `None` when idle.
    pub fn busy(&self) -> Option<(f64, String)> {
        let since = self.busy_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let secs = coarse_nanos().saturating_sub(since) as f64 / 1e9;
        let roots = self.roots.load();
        let path = roots
            .get(self.busy_root.load(Ordering::Relaxed))
            .map(|r| r.path())
            .unwrap_or_default();
        Some((secs, path))
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub fn roots(&self) -> Arc<Vec<Root>> {
        self.roots.load_full()
    }

    /// Replaces the root set between two units of work: events already
    /// being processed finish in the old set, every later one goes through
    /// the new. Nodes whose place and arguments are unchanged take the old
    /// nodes' state (a root is matched by name). Blocks while a unit of
    /// work is in progress; an embedder holding a lock the dispatch thread
    /// needs (Python's GIL) must release it around this call.
    pub fn swap_roots(&self, roots: Vec<Root>) {
        let _quiet = lock(&self.dispatching);
        let old = self.roots.load();
        for root in &roots {
            if let Some(previous) = old.iter().find(|r| r.name == root.name) {
                carry_over(&*root.node, &*previous.node);
            }
        }
        name_nodes(&roots);
        self.roots.store(Arc::new(roots));
    }

    /// Runs one event through every root.
    pub fn process(&self, event: Event) {
        let event = Arc::new(event);
        let roots = self.roots.load();
        for (i, root) in roots.iter().enumerate() {
            self.enter(i);
            push(&*root.node, &self.ctx, &event);
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that the dispatch thread enters root `i` now.
    #[inline]
    fn enter(&self, i: usize) {
        self.busy_root.store(i, Ordering::Relaxed);
        self.busy_since.store(coarse_nanos(), Ordering::Relaxed);
    }

    /// Runs events from a source: an event dated absurdly far ahead of
    /// `now` is dated `now` (see [`MAX_FUTURE_SECS`]).
    fn process_received(&self, events: Vec<Event>, now: f64) {
        let horizon = now + MAX_FUTURE_SECS;
        for mut e in events {
            e.clamp_future(horizon, now);
            self.process(e);
        }
    }

    /// Runs the roots' timers at `now`, and expires the index when its
    /// interval has passed.
    pub fn tick(&self, now: f64) {
        for (i, root) in self.roots.load().iter().enumerate() {
            self.enter(i);
            root.node.tick(&self.ctx, now);
        }
        let last = f64::from_bits(self.last_expiry.load(Ordering::Relaxed));
        if now - last >= EXPIRY_INTERVAL {
            self.last_expiry.store(now.to_bits(), Ordering::Relaxed);
            self.expire(now);
        }
    }

    /// Expires the index at `now`, re-injecting each expired event.
    pub fn expire(&self, now: f64) {
        for event in self.ctx.index.expire(now) {
            self.expired.fetch_add(1, Ordering::Relaxed);
            self.process(event);
        }
    }

    /// Processes one message; false on [`Work::Stop`].
    fn handle(&self, work: Work) -> bool {
        let _busy = lock(&self.dispatching);
        match work {
            Work::Events(events) => self.process_received(events, self.ctx.now()),
            Work::Acked(events, done) => {
                self.process_received(events, self.ctx.now());
                let _ = done.send(());
            }
            Work::Reserved(events, permits, done) => {
                self.batch_start
                    .store(self.processed.load(Ordering::Relaxed), Ordering::Relaxed);
                self.batch_len.store(events.len() as u64, Ordering::Relaxed);
                self.process_received(events, self.ctx.now());
                self.ingest_latency
                    .record(permits.since.elapsed(), permits.events);
                // Permits first: the batch is no longer queued.
                drop(permits);
                self.batch_len.store(0, Ordering::Relaxed);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Work::Tick => self.tick(self.ctx.now()),
            Work::Stop => return false,
        }
        self.busy_since.store(0, Ordering::Relaxed);
        true
    }

    /// The dispatch loop: runs until [`Work::Stop`], or until every sender is
    /// gone and the channel is drained. `wait` blocks for the next message;
    /// embedders that hold a lock while processing (Python's GIL) release it
    /// there: once per batch, so one acquisition serves a whole batch and
    /// other Python threads (the shell) get their turn between batches.
    pub fn run_dispatch<W>(&self, mut rx: mpsc::Receiver<Work>, wait: W)
    where
        W: Fn(&mut mpsc::Receiver<Work>) -> Option<Work>,
    {
        while let Some(work) = wait(&mut rx) {
            if !self.handle(work) {
                return;
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let mut nodes = Vec::new();
        for root in self.roots.load().iter() {
            snapshot_tree(&root.path(), &*root.node, &mut nodes);
        }
        Stats {
            nodes,
            ..self.counters()
        }
    }

    /// Every counter but the nodes', which a node stuck in a lock could
    /// hold up.
    pub fn counters(&self) -> Stats {
        let mail = self.ctx.mailer.stats();
        let busy = self.busy();
        Stats {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            datagrams: self.ingest.datagrams.load(Ordering::Relaxed),
            bad_datagrams: self.ingest.bad_datagrams.load(Ordering::Relaxed),
            events: self.ingest.events.load(Ordering::Relaxed),
            bad_events: self.ingest.bad_events.load(Ordering::Relaxed),
            messages: self.ingest.messages.load(Ordering::Relaxed),
            bad_messages: self.ingest.bad_messages.load(Ordering::Relaxed),
            connections: self.ingest.connections.load(Ordering::Relaxed),
            queries: self.ingest.queries.load(Ordering::Relaxed),
            pipeline_full: self.ingest.pipeline_full.load(Ordering::Relaxed),
            tcp: self.ingest.tcp.snapshot(),
            refused: self.ingest.refused.load(Ordering::Relaxed),
            kernel_drops: self.ingest.kernel_drops.load(Ordering::Relaxed),
            queued: self.queued(),
            unprocessed: 0,
            dispatch_busy_secs: busy.as_ref().map_or(0.0, |b| b.0),
            dispatch_busy_in: busy.map(|b| b.1),
            processed: self.processed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            indexed: self.ctx.index.len() as u64,
            mails_queued: mail.queued.load(Ordering::Relaxed),
            mails_sent: mail.sent.load(Ordering::Relaxed),
            mail_failures: mail.failed.load(Ordering::Relaxed),
            mails_dropped: mail.dropped.load(Ordering::Relaxed),
            sinks: self.ctx.sink_snapshots(),
            tap_drops: crate::streams::TAP_DROPS.load(Ordering::Relaxed),
            nodes: Vec::new(),
        }
    }
}

/// A monotonic clock read in a few nanoseconds (CLOCK_MONOTONIC_COARSE:
/// a few milliseconds' resolution is plenty to see a stuck node); never 0.
fn coarse_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
        .max(1)
}

/// Gives each node of the roots its path, so its logs say where it is.
fn name_nodes(roots: &[Root]) {
    for root in roots {
        assign_paths(&root.path(), &*root.node);
    }
}
