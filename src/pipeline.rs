//! The pipeline: the set of stream roots, and the dispatch loop that feeds
//! them every event.
//!
//! Sources (servers) decode events on their own threads and send them here in
//! batches over a bounded channel, so a full pipeline slows sources instead of
//! growing memory. One dispatch thread processes batches in order; the roots
//! can be swapped atomically at any time, and each event goes through exactly
//! one root set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::context::Context;
use crate::event::Event;
use crate::stats::{IngestStats, Stats};
use crate::streams::{assign_paths, carry_over, lock, push, snapshot_tree, NodeRef};

/// Batches in flight between sources and the dispatch thread.
pub const CHANNEL_CAPACITY: usize = 256;

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
        }
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
        for root in roots.iter() {
            push(&*root.node, &self.ctx, &event);
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the roots' timers at `now`, and expires the index when its
    /// interval has passed.
    pub fn tick(&self, now: f64) {
        for root in self.roots.load().iter() {
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
            Work::Events(events) => events.into_iter().for_each(|e| self.process(e)),
            Work::Acked(events, done) => {
                events.into_iter().for_each(|e| self.process(e));
                let _ = done.send(());
            }
            Work::Tick => self.tick(self.ctx.now()),
            Work::Stop => return false,
        }
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
        let mail = self.ctx.mailer.stats();
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
            processed: self.processed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            indexed: self.ctx.index.len() as u64,
            mails_queued: mail.queued.load(Ordering::Relaxed),
            mails_sent: mail.sent.load(Ordering::Relaxed),
            mail_failures: mail.failures.load(Ordering::Relaxed),
            mails_dropped: mail.dropped.load(Ordering::Relaxed),
            tap_drops: crate::streams::TAP_DROPS.load(Ordering::Relaxed),
            nodes,
        }
    }
}

/// Gives each node of the roots its path, so its logs say where it is.
fn name_nodes(roots: &[Root]) {
    for root in roots {
        assign_paths(&root.path(), &*root.node);
    }
}
