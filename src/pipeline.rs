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
//!
//! dmon's events about itself ([`Work::Own`]) go straight into the index,
//! not through the roots, unless `--self-events-to-streams` says otherwise
//! ([`Pipeline::set_self_events_to_streams`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::context::Context;
use crate::event::Event;
use crate::latency::Histogram;
use crate::memory::{Charge, MemoryBudget};
use crate::recent::Recent;
use crate::stats::{IngestStats, Stats};
use crate::streams::{assign_paths, carry_over, lock, push, snapshot_tree, NodeRef};
use crate::timers::Schedule;

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

/// Sees every event sources deliver (network sources and injected events,
/// not dmon's own instrumentation nor expired events), once per batch,
/// before the roots do: a recording. Runs on the dispatch thread, so it
/// must only hand the events on (a bounded queue), never wait.
pub trait Observer: Send + Sync {
    fn observe(&self, events: &[Arc<Event>]);
}

/// An observer behind a thin pointer, which `ArcSwapOption` needs.
struct Observing(Arc<dyn Observer>);

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
    /// Events from no source, through the roots: benchmarks' (and, at a
    /// cluster gateway, dmon's own sent through the roots).
    Events(Vec<Event>),
    /// dmon's events about itself ([`crate::instrument`]): into the index,
    /// or through the roots with [`Pipeline::set_self_events_to_streams`].
    Own(Vec<Event>),
    /// Events whose sender waits until they have been through every root
    /// (the shell's `inject`, and acknowledged protocols).
    Acked(Vec<Event>, oneshot::Sender<()>),
    /// Time to run the nodes' wake-ups that are due, and to expire the
    /// index when [`EXPIRY_INTERVAL`] has passed (see
    /// `server::TICK_INTERVAL`).
    Tick,
    /// Shutdown: everything queued before this has been processed.
    Stop,
    /// Events holding their permits (from [`Pipeline::reserve`]), released
    /// once processed; `done`, if any, is told then (as with `Acked`).
    Reserved(Vec<Event>, Permits, Option<oneshot::Sender<()>>),
    /// A job for the dispatch thread, between two units of work (a cluster
    /// checkpoint's snapshot and restore): it sees the state every earlier
    /// unit left and no later one, on the thread (and, embedded, with the
    /// lock) nodes expect.
    Call(Box<dyn FnOnce(&Pipeline) + Send>),
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
    /// The events' bytes, charged to the memory budget until processed.
    _memory: Option<Charge>,
}

impl Permits {
    /// These permits also hold `charge` until the events are processed.
    pub fn holding(mut self, charge: Charge) -> Permits {
        self._memory = Some(charge);
        self
    }
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
    /// When the index is next expired, at the earliest (clock seconds, as
    /// f64 bits).
    next_expiry: AtomicU64,
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
    /// What sees received events, if anything: one load per batch when
    /// nothing does.
    observer: ArcSwapOption<Observing>,
    /// The last minutes of received events (off until configured:
    /// `--recent-minutes`).
    pub recent: Recent,
    /// A cluster worker's counters, once one runs (`serve --consume`).
    pub cluster_worker: std::sync::OnceLock<Arc<crate::cluster::consume::WorkerCounters>>,
    /// Whether dmon's own events go through the roots (as Riemann's do)
    /// rather than straight into the index.
    self_events_to_streams: AtomicBool,
}

impl Pipeline {
    /// A pipeline running `roots`: their timers start now.
    pub fn new(ctx: Arc<Context>, roots: Vec<Root>) -> Self {
        name_nodes(&roots);
        for root in &roots {
            root.node.start(&ctx);
        }
        Pipeline {
            ctx,
            roots: ArcSwap::from_pointee(roots),
            ingest: IngestStats::default(),
            processed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            started: Instant::now(),
            dispatching: Mutex::new(()),
            next_expiry: AtomicU64::new(0f64.to_bits()),
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
            observer: ArcSwapOption::empty(),
            recent: Recent::off(),
            cluster_worker: std::sync::OnceLock::new(),
            self_events_to_streams: AtomicBool::new(false),
        }
    }

    /// Sends dmon's events about itself ([`Work::Own`]) through the roots,
    /// as Riemann does, instead of straight into the index (the default:
    /// roots written for the hosts they watch would otherwise alert on,
    /// mail about and forward dmon's own rates). Either way they are
    /// counted as processed.
    pub fn set_self_events_to_streams(&self, on: bool) {
        self.self_events_to_streams.store(on, Ordering::Relaxed);
    }

    /// Whether dmon's own events go through the roots.
    pub fn self_events_to_streams(&self) -> bool {
        self.self_events_to_streams.load(Ordering::Relaxed)
    }

    /// dmon's events about itself, indexed as they are: no root sees them,
    /// and so neither does the observer or the recent ring (they were not
    /// received).
    fn index_own(&self, events: Vec<Event>) {
        for e in events {
            self.ctx.index.insert(&Arc::new(e));
            self.processed.fetch_add(1, Ordering::Relaxed);
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
            _memory: None,
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
            _memory: None,
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

    /// What peers can make dmon hold, by bytes (`--memory-limit`): the
    /// context's, which its sinks draw on too.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.ctx.memory
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
        // The old trees' alarms must not fire into trees nobody runs; then
        // the new trees set theirs from the state they took over (a node
        // in both trees is stopped, then started again).
        for root in old.iter() {
            root.node.stop();
        }
        for root in &roots {
            root.node.start(&self.ctx);
        }
        name_nodes(&roots);
        self.roots.store(Arc::new(roots));
    }

    /// Time ends for the roots ([`crate::streams::Node::flush`]): windows,
    /// rates and the like forward what they hold. Call it on the dispatch
    /// thread (a [`Work::Call`]) or where nothing else feeds the roots.
    pub fn flush_roots(&self) {
        for root in self.roots.load().iter() {
            root.node.flush(&self.ctx);
        }
    }

    /// Makes `observer` see every event sources deliver from the next batch
    /// on (`None`: nothing does); returns the previous one. A batch already
    /// in progress may still reach the previous observer.
    pub fn set_observer(&self, observer: Option<Arc<dyn Observer>>) -> Option<Arc<dyn Observer>> {
        self.observer
            .swap(observer.map(|o| Arc::new(Observing(o))))
            .map(|o| Arc::clone(&o.0))
    }

    /// Runs one event through every root.
    pub fn process(&self, event: Event) {
        self.process_shared(Arc::new(event));
    }

    fn process_shared(&self, event: Arc<Event>) {
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

    /// Runs events: an event dated absurdly far ahead of `now` is dated
    /// `now` (see [`MAX_FUTURE_SECS`]). Events `from_source` are shown to
    /// the observer first, as the roots will see them, and enter the
    /// recent-traffic ring when it is on, a batch under one lock (dmon's
    /// own events and the expired ones the index re-injects were not
    /// received: neither enters).
    fn process_received(&self, events: Vec<Event>, now: f64, from_source: bool) {
        let horizon = now + MAX_FUTURE_SECS;
        let observing = if from_source {
            self.observer.load_full()
        } else {
            None
        };
        let recent = from_source && self.recent.is_on();
        if observing.is_none() && !recent {
            for mut e in events {
                e.clamp_future(horizon, now);
                self.process(e);
            }
            return;
        }
        let events: Vec<Arc<Event>> = events
            .into_iter()
            .map(|mut e| {
                e.clamp_future(horizon, now);
                Arc::new(e)
            })
            .collect();
        if let Some(observing) = observing {
            observing.0.observe(&events);
        }
        if recent {
            self.recent.push(now, &events);
        }
        for e in events {
            self.process_shared(e);
        }
    }

    /// Wakes the nodes due at `now`, and expires the index when its
    /// interval has passed. Costs what is due, not what the roots hold.
    pub fn tick(&self, now: f64) {
        self.ctx.timers.run_due(&self.ctx, now);
        let next = f64::from_bits(self.next_expiry.load(Ordering::Relaxed));
        if now >= next {
            self.next_expiry
                .store((now + EXPIRY_INTERVAL).to_bits(), Ordering::Relaxed);
            self.expire(now);
            self.recent.trim(now);
        }
    }

    /// When the index's expiry may next find an event, on the grid of
    /// [`EXPIRY_INTERVAL`]s from the last expiry (as a server's ticks
    /// would expire it): strictly after the earliest deadline.
    fn next_expiry_due(&self) -> Option<f64> {
        let deadline = self.ctx.index.next_deadline()?;
        let next = f64::from_bits(self.next_expiry.load(Ordering::Relaxed));
        let intervals = ((deadline - next) / EXPIRY_INTERVAL).floor() + 1.0;
        Some(next + intervals.max(0.0) * EXPIRY_INTERVAL)
    }

    /// Expires the index at `now`, re-injecting each expired event (but
    /// dmon's own, unless they go through the roots: their expiry is no
    /// more the roots' business than they were).
    pub fn expire(&self, now: f64) {
        let to_streams = self.self_events_to_streams();
        for event in self.ctx.index.expire_events(now) {
            self.expired.fetch_add(1, Ordering::Relaxed);
            if !to_streams && crate::instrument::is_own(&event) {
                continue;
            }
            self.process(event.expired_copy(now));
        }
    }

    /// Processes one message; false on [`Work::Stop`].
    fn handle(&self, work: Work) -> bool {
        let _busy = lock(&self.dispatching);
        match work {
            // Not received: not something a recording should replay.
            Work::Events(events) => self.process_received(events, self.ctx.now(), false),
            Work::Own(events) if self.self_events_to_streams() => {
                self.process_received(events, self.ctx.now(), false)
            }
            Work::Own(events) => self.index_own(events),
            Work::Acked(events, done) => {
                self.process_received(events, self.ctx.now(), true);
                let _ = done.send(());
            }
            Work::Reserved(events, permits, done) => {
                self.batch_start
                    .store(self.processed.load(Ordering::Relaxed), Ordering::Relaxed);
                self.batch_len.store(events.len() as u64, Ordering::Relaxed);
                self.process_received(events, self.ctx.now(), true);
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
            Work::Call(job) => job(self),
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
        let publishing = &crate::cluster::publish::COUNTERS;
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
            http: self.ingest.http.snapshot(self.ctx.index.subscribers()),
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
            recent_events: self.recent.len() as u64,
            recent_bytes: self.recent.bytes() as u64,
            recent_dropped: self.recent.dropped(),
            memory: crate::memory::MemoryStats::of(self.memory(), self.recent.bytes()),
            cluster_queries_answered: crate::cluster::query::ANSWERED.load(Ordering::Relaxed),
            cluster_query_errors: crate::cluster::query::ERRORS.load(Ordering::Relaxed),
            cluster_query_renew_failures: crate::cluster::query::RENEW_FAILURES
                .load(Ordering::Relaxed),
            cluster_published: publishing.published.load(Ordering::Relaxed),
            cluster_publish_batches: publishing.batches.load(Ordering::Relaxed),
            cluster_publish_retries: publishing.retries.load(Ordering::Relaxed),
            cluster_publish_failed: publishing.failed.load(Ordering::Relaxed),
            cluster_publish_waiting: publishing.waiting.load(Ordering::Relaxed),
            nodes: Vec::new(),
            cluster_worker: self.cluster_worker.get().map(|w| w.snapshot()),
            state: crate::state_dir::snapshot(),
        }
    }
}

/// A virtual clock steps a pipeline through its nodes' wake-ups and its
/// index's expiries.
impl Schedule for Pipeline {
    fn next_due(&self) -> Option<f64> {
        match (self.ctx.timers.next_due(), self.next_expiry_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn run_due(&self, now: f64) {
        self.tick(now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use crate::sinks::email::Mailer;
    use crate::testing::{ev, Harness};

    /// Keeps the hosts of what it observes.
    #[derive(Default)]
    struct Hosts(Mutex<Vec<String>>);
    impl Observer for Hosts {
        fn observe(&self, events: &[Arc<Event>]) {
            let mut hosts = lock(&self.0);
            hosts.extend(
                events
                    .iter()
                    .map(|e| e.host.as_deref().unwrap_or("").to_owned()),
            );
        }
    }

    struct Discard;
    impl crate::console::LineSink for Discard {
        fn write_line(&self, _: &str) {}
    }

    #[test]
    fn the_observer_sees_what_sources_deliver_and_nothing_else() {
        let clock = VirtualClock::starting_at(1_000.0);
        let ctx = Arc::new(Context::with_clock(
            clock.clone(),
            Mailer::disabled(),
            Arc::new(Discard),
        ));
        let h = Harness::new();
        let out = h.sink("out");
        let index = h.build("index", vec![], vec![], vec![]);
        let tree = h.build("sdo", vec![], vec![], vec![out.node(), index]);
        let pipeline = Pipeline::new(
            ctx,
            vec![Root {
                name: "stream".into(),
                node: tree,
            }],
        );
        let hosts = Arc::new(Hosts::default());
        assert!(pipeline.set_observer(Some(hosts.clone())).is_none());
        let (done, _) = oneshot::channel();
        // An absurd future time is clamped before the observer sees it.
        pipeline.handle(Work::Acked(
            vec![ev(r#"{"host":"acked","time":1e300,"ttl":1}"#)],
            done,
        ));
        let permits = pipeline.try_reserve(1).unwrap();
        pipeline.handle(Work::Reserved(
            vec![ev(r#"{"host":"reserved","time":1000}"#)],
            permits,
            None,
        ));
        // dmon's own events, and events expiring from the index: not a source's.
        pipeline.handle(Work::Events(vec![ev(r#"{"host":"own","time":1000}"#)]));
        clock.advance_to(1_500.0);
        pipeline.handle(Work::Tick);
        assert_eq!(*lock(&hosts.0), ["acked", "reserved"]);
        let seen = out.events();
        assert_eq!(seen[0].time.map(|t| t.as_f64()), Some(1_000.0));
        assert!(seen.iter().any(|e| e.state.as_deref() == Some("expired")));

        assert!(pipeline.set_observer(None).is_some());
        let (done, _) = oneshot::channel();
        pipeline.handle(Work::Acked(vec![ev(r#"{"host":"after"}"#)], done));
        assert_eq!(lock(&hosts.0).len(), 2, "not observed once removed");
    }

    /// Received events enter the ring once, with the receive time; dmon's
    /// own and the expired copies the index re-injects do not; the tick
    /// ages it.
    #[test]
    fn received_events_enter_the_recent_ring() {
        let h = Harness::at(1000.0);
        let roots = vec![Root {
            name: "index_stream".into(),
            node: Arc::new(crate::streams::index::IndexNode::new()),
        }];
        let pipeline = Pipeline::new(Arc::clone(&h.ctx), roots);
        pipeline.recent.configure(120.0, 1000, usize::MAX);
        let (done, _) = oneshot::channel();
        pipeline.handle(Work::Acked(
            vec![
                ev(r#"{"host":"a","ttl":10,"time":1000}"#),
                ev(r#"{"host":"b","ttl":10,"time":1000}"#),
            ],
            done,
        ));
        // dmon's own events do not enter.
        pipeline.handle(Work::Events(vec![ev(
            r#"{"host":"own","ttl":10,"time":1000}"#,
        )]));
        h.clock.advance_by(30.0);
        pipeline.handle(Work::Tick);
        let stats = pipeline.stats();
        assert_eq!(stats.expired, 3, "all expired and were re-injected");
        assert_eq!(stats.processed, 6);
        let kept = pipeline.recent.since(0.0);
        let hosts: Vec<_> = kept.iter().map(|r| r.event.host.as_deref()).collect();
        assert_eq!(hosts, [Some("a"), Some("b")], "only what was received");
        assert!(kept.iter().all(|r| r.at == 1000.0));
        assert_eq!(stats.recent_events, 2);
        assert_eq!(stats.recent_dropped, 0);

        h.clock.advance_by(91.0);
        pipeline.handle(Work::Tick);
        assert_eq!(pipeline.stats().recent_events, 0, "aged out on the tick");
    }

    /// dmon's events about itself, as the server makes them at `now`.
    fn own_events(now: f64) -> Vec<Event> {
        let mut instrumenter = crate::instrument::Instrumenter::new("box", 1.0);
        let latencies = Histogram::default().snapshot();
        let stats = |uptime_secs| Stats {
            uptime_secs,
            ..Stats::default()
        };
        instrumenter.events(&stats(1.0), &latencies, now - 1.0);
        instrumenter.events(&stats(2.0), &latencies, now)
    }

    /// By default dmon's own events go into the index and through no root,
    /// nor do their expired copies, nor are they a checkpoint's state; with
    /// `--self-events-to-streams` the roots get them as any event (and so
    /// index() indexes them, and expiry re-injects them).
    #[test]
    fn own_events_are_indexed_not_streamed_unless_asked() {
        for to_streams in [false, true] {
            let h = Harness::at(1000.0);
            let out = h.sink("out");
            let roots = vec![
                Root {
                    name: "stream".into(),
                    node: out.node(),
                },
                Root {
                    name: "index_stream".into(),
                    node: Arc::new(crate::streams::index::IndexNode::new()),
                },
            ];
            let pipeline = Pipeline::new(Arc::clone(&h.ctx), roots);
            pipeline.set_self_events_to_streams(to_streams);
            let own = own_events(1000.0);
            let n = own.len();
            assert!(n > 5, "{n}");
            pipeline.handle(Work::Own(own));
            let streamed = if to_streams { n } else { 0 };
            assert_eq!(out.events().len(), streamed, "to streams: {to_streams}");
            assert_eq!(h.ctx.index.len(), n, "indexed either way");
            assert_eq!(pipeline.stats().processed, n as u64, "counted either way");
            let saved = crate::checkpoint::Checkpoint::take(&pipeline, "node");
            assert_eq!(saved.index.len(), streamed, "to streams: {to_streams}");

            // Their ttl is twice the interval: gone 2 s later.
            h.clock.advance_by(3.0);
            pipeline.handle(Work::Tick);
            assert!(h.ctx.index.is_empty());
            assert_eq!(pipeline.stats().expired, n as u64);
            let expired = out
                .events()
                .iter()
                .filter(|e| e.state.as_deref() == Some("expired"))
                .count();
            assert_eq!(expired, streamed, "to streams: {to_streams}");
        }
    }

    #[test]
    fn the_ring_is_off_unless_configured() {
        let h = Harness::at(0.0);
        let pipeline = Pipeline::new(Arc::clone(&h.ctx), Vec::new());
        let (done, _) = oneshot::channel();
        pipeline.handle(Work::Acked(vec![ev(r#"{"host":"a"}"#)], done));
        assert_eq!(pipeline.stats().processed, 1);
        assert_eq!(pipeline.stats().recent_events, 0);
    }
}
