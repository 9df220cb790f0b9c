//! The root set: every named top-level stream, run one event at a time.
//!
//! Every event goes to every root. The set can be swapped at any time
//! between two events (a reload), state moving from the old nodes to the
//! new ones in the same place; time reaches the roots through their
//! timers and the index's expiry ([`RootSet::tick`]). The server's
//! pipeline feeds a root set from its sources on the dispatch thread; a
//! rehearsal (a replay, `dmon.testing`, `try_stream`) feeds one directly
//! under a virtual clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::event::Event;
use crate::streams::context::Context;
use crate::streams::timers::Schedule;
use crate::streams::{assign_paths, carry_over, lock, push, snapshot_tree, NodeRef, NodeSnapshot};

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

pub struct RootSet {
    ctx: Arc<Context>,
    roots: ArcSwap<Vec<Root>>,
    processed: AtomicU64,
    expired: AtomicU64,
    /// Held while one unit of work goes through the roots, and while the
    /// roots are swapped: a reload moves state out of the old nodes only
    /// when no event is inside them, so none is lost or counted twice.
    dispatching: Mutex<()>,
    /// When the index is next expired, at the earliest (clock seconds, as
    /// f64 bits).
    next_expiry: AtomicU64,
    /// Coarse monotonic nanoseconds when the thread running the roots
    /// entered the root it is in (`busy_root`); 0 when idle. Two relaxed
    /// stores per root per event: cheap enough to always know what it is
    /// stuck in.
    busy_since: AtomicU64,
    busy_root: AtomicUsize,
    /// Whether dmon's own events (and their expired copies) go through the
    /// roots, rather than only into the index.
    self_events_to_streams: AtomicBool,
}

impl RootSet {
    /// A root set running `roots`: their timers start now.
    pub fn new(ctx: Arc<Context>, roots: Vec<Root>) -> Self {
        name_nodes(&roots);
        for root in &roots {
            root.node.start(&ctx);
        }
        RootSet {
            ctx,
            roots: ArcSwap::from_pointee(roots),
            processed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            dispatching: Mutex::new(()),
            next_expiry: AtomicU64::new(0f64.to_bits()),
            busy_since: AtomicU64::new(0),
            busy_root: AtomicUsize::new(0),
            self_events_to_streams: AtomicBool::new(false),
        }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub fn roots(&self) -> Arc<Vec<Root>> {
        self.roots.load_full()
    }

    /// Sends dmon's events about itself through the roots, and their
    /// expired copies too, instead of only into the index.
    pub fn set_self_events_to_streams(&self, on: bool) {
        self.self_events_to_streams.store(on, Ordering::Relaxed);
    }

    pub fn self_events_to_streams(&self) -> bool {
        self.self_events_to_streams.load(Ordering::Relaxed)
    }

    /// Events run through the roots (or indexed directly, see
    /// [`RootSet::count_processed`]).
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Events the index expired.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Counts `n` events as processed that did not go through the roots
    /// (dmon's own, indexed directly).
    pub fn count_processed(&self, n: u64) {
        self.processed.fetch_add(n, Ordering::Relaxed);
    }

    /// Held for one unit of work: [`RootSet::swap_roots`] waits for it.
    pub fn dispatching(&self) -> MutexGuard<'_, ()> {
        lock(&self.dispatching)
    }

    /// Replaces the root set between two units of work: events already
    /// being processed finish in the old set, every later one goes through
    /// the new. Nodes whose place and arguments are unchanged take the old
    /// nodes' state (a root is matched by name). Blocks while a unit of
    /// work is in progress; an embedder holding a lock the dispatch thread
    /// needs (Python's GIL) must release it around this call.
    pub fn swap_roots(&self, roots: Vec<Root>) {
        let _quiet = self.dispatching();
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
    /// rates and the like forward what they hold. Call it where nothing
    /// else feeds the roots at the same time.
    pub fn flush_roots(&self) {
        for root in self.roots.load().iter() {
            root.node.flush(&self.ctx);
        }
    }

    /// Runs one event through every root.
    pub fn process(&self, event: Event) {
        self.process_shared(Arc::new(event));
    }

    /// Runs one shared event through every root.
    pub fn process_shared(&self, event: Arc<Event>) {
        let roots = self.roots.load();
        for (i, root) in roots.iter().enumerate() {
            self.enter(i);
            push(&*root.node, &self.ctx, &event);
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that the thread enters root `i` now.
    #[inline]
    fn enter(&self, i: usize) {
        self.busy_root.store(i, Ordering::Relaxed);
        self.busy_since.store(coarse_nanos(), Ordering::Relaxed);
    }

    /// The thread has left the roots.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the thread running the roots has been inside one root, and
    /// its path; `None` when idle.
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

    /// Wakes the nodes due at `now`, and expires the index when its
    /// interval has passed (true then). Costs what is due, not what the
    /// roots hold.
    pub fn tick(&self, now: f64) -> bool {
        self.ctx.run_due_wakeups(now);
        let next = f64::from_bits(self.next_expiry.load(Ordering::Relaxed));
        if now < next {
            return false;
        }
        self.next_expiry
            .store((now + EXPIRY_INTERVAL).to_bits(), Ordering::Relaxed);
        self.expire(now);
        true
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
            if !to_streams && event.is_dmons_own() {
                continue;
            }
            self.process(event.expired_copy(now));
        }
    }

    /// Every node's counters, root by root.
    pub fn node_snapshots(&self) -> Vec<NodeSnapshot> {
        let mut nodes = Vec::new();
        for root in self.roots.load().iter() {
            snapshot_tree(&root.path(), &*root.node, &mut nodes);
        }
        nodes
    }
}

/// A virtual clock steps a root set through its nodes' wake-ups and its
/// index's expiries.
impl Schedule for RootSet {
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
