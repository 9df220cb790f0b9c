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

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::event::Event;
use crate::index_feed::IndexFeed;
use crate::latency::Histogram;
use crate::memory::{Charge, MemoryBudget};
use crate::recent::Recent;
pub use crate::roots::{Root, RootSet};
use crate::sinks::senders::Senders;
use crate::sinks::SinkStats;
use crate::stats::{ComponentCounters, IngestStats, Stats};
use crate::streams::context::Context;
use crate::streams::timers::Schedule;

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

/// Sees every event sources deliver (network sources and injected events,
/// not dmon's own instrumentation nor expired events), once per batch,
/// before the roots do: a recording. Runs on the dispatch thread, so it
/// must only hand the events on (a bounded queue), never wait.
pub trait Observer: Send + Sync {
    fn observe(&self, events: &[Arc<Event>]);
}

/// An observer behind a thin pointer, which `ArcSwapOption` needs.
struct Observing(Arc<dyn Observer>);

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
    /// index when [`crate::roots::EXPIRY_INTERVAL`] has passed (see
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
    roots: RootSet,
    pub ingest: IngestStats,
    started: Instant,
    flow: Arc<Flow>,
    /// From a source asking for room to its events having been through
    /// the roots (self-instrumentation's `dmon ingest latency`).
    pub ingest_latency: Histogram,
    max_per_datagram: AtomicUsize,
    /// The reserved batch being processed: its size, and `processed` when it
    /// began; what it has left is still queued.
    batch_len: AtomicU64,
    batch_start: AtomicU64,
    /// What sees received events, if anything: one load per batch when
    /// nothing does.
    observer: ArcSwapOption<Observing>,
    /// The last minutes of received events (off until configured:
    /// `--recent-minutes`).
    pub recent: Recent,
    /// The components that keep counters of their own, as they start.
    components: std::sync::Mutex<Vec<Arc<dyn ComponentCounters>>>,
    /// What the index receives, for subscribers.
    index_feed: Arc<IndexFeed>,
    /// What peers can make dmon hold (`--memory-limit`): the outputs'
    /// budget, which their queues draw on too.
    memory: Arc<MemoryBudget>,
}

impl Pipeline {
    /// A pipeline running `roots`: their timers start now.
    pub fn new(ctx: Arc<Context>, roots: Vec<Root>) -> Self {
        let index_feed = Arc::new(IndexFeed::default());
        if !ctx.index.set_watcher(index_feed.clone()) {
            tracing::warn!("a second pipeline on one context: its subscribers see nothing");
        }
        let memory = Senders::of(&ctx)
            .map(|o| Arc::clone(&o.memory))
            .unwrap_or_default();
        Pipeline {
            memory,
            roots: RootSet::new(ctx, roots),
            ingest: IngestStats::default(),
            started: Instant::now(),
            flow: Arc::new(Flow {
                permits: Semaphore::new(DEFAULT_MAX_IN_FLIGHT),
                limit: AtomicU32::new(DEFAULT_MAX_IN_FLIGHT as u32),
                queued: AtomicU64::new(0),
            }),
            ingest_latency: Histogram::default(),
            max_per_datagram: AtomicUsize::new(DEFAULT_MAX_EVENTS_PER_DATAGRAM),
            batch_len: AtomicU64::new(0),
            batch_start: AtomicU64::new(0),
            observer: ArcSwapOption::empty(),
            recent: Recent::off(),
            components: std::sync::Mutex::default(),
            index_feed,
        }
    }

    /// Sends dmon's events about itself ([`Work::Own`]) through the roots,
    /// as Riemann does, instead of straight into the index (the default:
    /// roots written for the hosts they watch would otherwise alert on,
    /// mail about and forward dmon's own rates). Either way they are
    /// counted as processed.
    pub fn set_self_events_to_streams(&self, on: bool) {
        self.roots.set_self_events_to_streams(on);
    }

    /// Whether dmon's own events go through the roots.
    pub fn self_events_to_streams(&self) -> bool {
        self.roots.self_events_to_streams()
    }

    /// Reports `counters` in [`Pipeline::counters`] from now on.
    pub fn add_counters(&self, counters: Arc<dyn ComponentCounters>) {
        crate::streams::lock(&self.components).push(counters);
    }

    /// The roots this pipeline feeds.
    pub fn root_set(&self) -> &RootSet {
        &self.roots
    }

    /// What the index receives, for subscribers (HTTP, `dmon bench`).
    pub fn index_feed(&self) -> &Arc<IndexFeed> {
        &self.index_feed
    }

    /// dmon's events about itself, indexed as they are: no root sees them,
    /// and so neither does the observer or the recent ring (they were not
    /// received).
    fn index_own(&self, events: Vec<Event>) {
        for e in events {
            self.context().index.insert(&Arc::new(e));
            self.roots.count_processed(1);
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
            .roots
            .processed()
            .saturating_sub(self.batch_start.load(Ordering::Relaxed))
            .min(batch);
        queued.saturating_sub(done)
    }

    /// How long the dispatch thread has been inside one root, and its path;
    /// `None` when idle.
    pub fn busy(&self) -> Option<(f64, String)> {
        self.roots.busy()
    }

    pub fn context(&self) -> &Arc<Context> {
        self.roots.context()
    }

    /// What peers can make dmon hold, by bytes (`--memory-limit`): the
    /// context's, which its sinks draw on too.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    pub fn roots(&self) -> Arc<Vec<Root>> {
        self.roots.roots()
    }

    /// See [`RootSet::swap_roots`].
    pub fn swap_roots(&self, roots: Vec<Root>) {
        self.roots.swap_roots(roots);
    }

    /// See [`RootSet::flush_roots`]; call it on the dispatch thread (a
    /// [`Work::Call`]) or where nothing else feeds the roots.
    pub fn flush_roots(&self) {
        self.roots.flush_roots();
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
        self.roots.process(event);
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
                self.roots.process(e);
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
            self.roots.process_shared(e);
        }
    }

    /// Wakes the nodes due at `now`, and expires the index when its
    /// interval has passed, trimming the recent-events ring then too.
    pub fn tick(&self, now: f64) {
        if self.roots.tick(now) {
            self.recent.trim(now);
        }
    }

    /// Processes one message; false on [`Work::Stop`].
    fn handle(&self, work: Work) -> bool {
        let _busy = self.roots.dispatching();
        let now = self.context().now();
        match work {
            // Not received: not something a recording should replay.
            Work::Events(events) => self.process_received(events, now, false),
            Work::Own(events) if self.self_events_to_streams() => {
                self.process_received(events, now, false)
            }
            Work::Own(events) => self.index_own(events),
            Work::Acked(events, done) => {
                self.process_received(events, now, true);
                let _ = done.send(());
            }
            Work::Reserved(events, permits, done) => {
                self.batch_start
                    .store(self.roots.processed(), Ordering::Relaxed);
                self.batch_len.store(events.len() as u64, Ordering::Relaxed);
                self.process_received(events, now, true);
                self.ingest_latency
                    .record(permits.since.elapsed(), permits.events);
                // Permits first: the batch is no longer queued.
                drop(permits);
                self.batch_len.store(0, Ordering::Relaxed);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Work::Tick => self.tick(now),
            Work::Call(job) => job(self),
            Work::Stop => return false,
        }
        self.roots.idle();
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
        Stats {
            nodes: self.roots.node_snapshots(),
            ..self.counters()
        }
    }

    /// Every counter but the nodes', which a node stuck in a lock could
    /// hold up.
    pub fn counters(&self) -> Stats {
        let outputs = Senders::of(self.context());
        let mail = outputs.and_then(|o| o.mail_stats());
        let mail_count = |count: fn(&SinkStats) -> &AtomicU64| {
            mail.map_or(0, |m| count(m).load(Ordering::Relaxed))
        };
        let busy = self.busy();
        let mut stats = Stats {
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
            http: self.ingest.http.snapshot(self.index_feed.subscribers()),
            refused: self.ingest.refused.load(Ordering::Relaxed),
            kernel_drops: self.ingest.kernel_drops.load(Ordering::Relaxed),
            queued: self.queued(),
            unprocessed: 0,
            dispatch_busy_secs: busy.as_ref().map_or(0.0, |b| b.0),
            dispatch_busy_in: busy.map(|b| b.1),
            processed: self.roots.processed(),
            expired: self.roots.expired(),
            indexed: self.context().index.len() as u64,
            mails_queued: mail_count(|m| &m.queued),
            mails_sent: mail_count(|m| &m.sent),
            mail_failures: mail_count(|m| &m.failed),
            mails_dropped: mail_count(|m| &m.dropped),
            sinks: outputs.map(Senders::snapshots).unwrap_or_default(),
            tap_drops: crate::streams::TAP_DROPS.load(Ordering::Relaxed),
            recent_events: self.recent.len() as u64,
            recent_bytes: self.recent.bytes() as u64,
            recent_dropped: self.recent.dropped(),
            memory: crate::memory::MemoryStats::of(self.memory(), self.recent.bytes()),
            nodes: Vec::new(),
            ..Stats::default()
        };
        for component in crate::streams::lock(&self.components).iter() {
            stats.add(component.report());
        }
        stats
    }
}

/// A virtual clock steps a pipeline as it does its root set, trimming the
/// recent-events ring on the way.
impl Schedule for Pipeline {
    fn next_due(&self) -> Option<f64> {
        self.roots.next_due()
    }
    fn run_due(&self, now: f64) {
        self.tick(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use crate::streams::lock;
    use crate::testing::{ev, Harness};
    use std::sync::Mutex;

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
        let ctx = Arc::new(Context::with_clock(clock.clone(), Arc::new(Discard)));
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
