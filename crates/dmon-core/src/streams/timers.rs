//! Wake-ups at deadlines: how time reaches stream nodes.
//!
//! A node that needs time (a rate's interval end, a window's flush, `by`'s
//! idle forks) holds an [`Alarm`] and sets it to the deadline its state
//! needs; the context's [`Timers`] keep every armed alarm in one queue
//! ordered by deadline and wake only the nodes that are due. A node with
//! nothing pending costs nothing as time passes, however many `by` forks
//! hold one.
//!
//! Two drivers move time, with the same rule: every wake-up runs at its own
//! deadline when it can.
//! - The server's wall clock: the dispatch thread runs what is due on each
//!   of its ticks ([`Timers::run_due`]); a node woken late (a stalled
//!   dispatch) catches up from its state.
//! - A virtual clock (tests, `dmon replay`, `dmon test`, `try_stream`,
//!   `dmon.testing.run`): [`advance`] steps the clock from deadline to
//!   deadline, so what a replay emits does not depend on how far apart its
//!   events are.
//!
//! ```ignore
//! fn handle(&self, ctx: &Context, e: &Arc<Event>) -> Result<(), NodeError> {
//!     let mut s = lock(&self.state);
//!     s.start.get_or_insert(ctx.now());
//!     self.alarm.set(&ctx.timers, s.start.map(|t| t + self.interval));
//!     Ok(())
//! }
//! // Report what ended by `now`, then set the next deadline.
//! fn wake(&self, ctx: &Context, now: f64) {
//!     let out = self.alarm.roll(&ctx.timers, &self.state, |s| self.roll(s, now), |s| self.due(s));
//!     out.iter().for_each(|e| emit(self, ctx, e));
//! }
//! fn alarm(&self) -> Option<&Alarm> { Some(&self.alarm) } // how the queue finds it
//! ```
//!
//! Built with [`timed`], the node's alarm knows the node; [`crate::wakes_at`]
//! writes `alarm`, `start` and `stop` for a node whose state says its next
//! deadline.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{lock, Node, NodeRef};
use crate::clock::VirtualClock;

/// No deadline: an alarm that is not set.
const UNSET: u64 = f64::INFINITY.to_bits();

/// Steps one [`advance`] takes at most before it treats the rest of the
/// jump as a stalled clock (one wake-up at the end, each node catching up
/// from its state): a `fill_in(1)` across a year of silence in a recording
/// must not take minutes.
pub const MAX_STEPS_PER_ADVANCE: usize = 1_000_000;

/// One node's wake-up: the deadline it is set to, if any, and whether the
/// node is still in a running tree. It lives inside its node (a `by` fork's
/// rate touches one cache line, not two, per event) and the node hands it
/// out through [`Node::alarm`].
pub struct Alarm {
    /// The deadline as f64 bits; [`UNSET`] when none is pending.
    armed: AtomicU64,
    /// False once the node left the running streams (a reload dropped or
    /// replaced it): it must not emit into a tree nobody runs.
    live: AtomicBool,
    node: Weak<dyn Node>,
}

impl Alarm {
    /// An alarm that wakes `node` (built with [`timed`]).
    pub fn new(node: Weak<dyn Node>) -> Self {
        Alarm {
            armed: AtomicU64::new(UNSET),
            live: AtomicBool::new(true),
            node,
        }
    }

    /// Asks for a wake-up at `at` (None or not finite: nothing to ask).
    /// An earlier pending deadline stays: the node is woken then and sets
    /// the next one from its state, so setting a later deadline early is
    /// cheap and always right.
    pub fn set(&self, timers: &Timers, at: Option<f64>) {
        let Some(at) = at.filter(|t| t.is_finite()) else {
            return;
        };
        if !self.live.load(Ordering::Relaxed) {
            return;
        }
        let armed = f64::from_bits(self.armed.load(Ordering::Relaxed));
        if at < armed {
            self.armed.store(at.to_bits(), Ordering::Relaxed);
            timers.push(at, Weak::clone(&self.node));
        }
    }

    /// Runs `roll` on a node's state (what has come due by now), then sets
    /// the alarm to the deadline the state needs next (`due`); returns what
    /// rolled out, for the node to emit once the state's lock is let go.
    pub fn roll<S, T>(
        &self,
        timers: &Timers,
        state: &Mutex<S>,
        roll: impl FnOnce(&mut S) -> T,
        due: impl FnOnce(&S) -> Option<f64>,
    ) -> T {
        let mut s = lock(state);
        let out = roll(&mut s);
        self.set(timers, due(&s));
        out
    }

    /// The node left the running streams: it is not woken again (until
    /// [`Alarm::resume`], when a reload puts the same node back).
    pub fn stop(&self) {
        self.live.store(false, Ordering::Relaxed);
        self.armed.store(UNSET, Ordering::Relaxed);
    }

    /// The node is (again) part of the running streams.
    pub fn resume(&self) {
        self.live.store(true, Ordering::Relaxed);
    }
}

/// Builds a node that holds an [`Alarm`] waking itself (the node answers
/// [`Node::alarm`] with it).
pub fn timed<T: Node>(make: impl FnOnce(Alarm) -> T) -> NodeRef {
    Arc::new_cyclic(|me: &Weak<T>| {
        let me: Weak<dyn Node> = me.clone();
        make(Alarm::new(me))
    })
}

/// A queued wake-up. Alarms set to a new deadline leave their old entry
/// behind; it is recognised as stale when popped (the alarm's deadline is
/// no longer the entry's) and dropped.
struct Due {
    at: f64,
    seq: u64,
    node: Weak<dyn Node>,
    /// The `exception_stream` handlers in force when the alarm was set:
    /// the node's failures on waking go to them too.
    error_handlers: Option<Box<[Weak<dyn Node>]>>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed, for a min-heap: the earliest deadline first, and among
    /// equal deadlines the one set first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Every armed alarm of one context, earliest deadline first.
#[derive(Default)]
pub struct Timers {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Due>,
    seq: u64,
}

impl Timers {
    fn push(&self, at: f64, node: Weak<dyn Node>) {
        let error_handlers = crate::streams::error_handlers();
        let mut q = lock(&self.queue);
        q.seq += 1;
        let seq = q.seq;
        q.heap.push(Due {
            at,
            seq,
            node,
            error_handlers,
        });
    }

    /// The earliest queued deadline (possibly of an alarm since set later:
    /// waking at it does nothing).
    pub fn next_due(&self) -> Option<f64> {
        lock(&self.queue).heap.peek().map(|d| d.at)
    }

    /// Queued wake-ups, stale ones included.
    pub fn len(&self) -> usize {
        lock(&self.queue).heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every node whose deadline is at or before `now`, earliest
    /// first, with `wake` (which calls [`Node::wake`] with the context);
    /// returns how many were woken. A node woken
    /// sets its next deadline after `now`; one that sets it at `now` again
    /// is woken again, a bounded number of times.
    pub fn run_due(&self, now: f64, wake: impl Fn(&dyn Node)) -> usize {
        let mut woken = 0;
        // Guards against a node that keeps asking for `now`: each entry
        // queued before this call, plus as many again.
        let mut budget = self.len().saturating_mul(2).saturating_add(16);
        while budget > 0 {
            budget -= 1;
            let due = {
                let mut q = lock(&self.queue);
                match q.heap.peek() {
                    Some(d) if d.at <= now => q.heap.pop(),
                    _ => None,
                }
            };
            let Some(due) = due else { break };
            let Some(node) = due.node.upgrade() else {
                continue;
            };
            let Some(alarm) = node.alarm() else { continue };
            // Stale: the alarm was stopped, or set to another deadline
            // (whose own entry wakes it).
            if alarm.armed.load(Ordering::Relaxed) != due.at.to_bits() {
                continue;
            }
            alarm.armed.store(UNSET, Ordering::Relaxed);
            // Outside the queue's lock: the node sets its next deadline.
            super::with_error_handlers(due.error_handlers.as_deref(), || wake(&*node));
            woken += 1;
        }
        woken
    }
}

/// What a virtual clock moves forward: wake-ups and anything else due at
/// given times (a pipeline's index expiry).
pub trait Schedule {
    /// The earliest time something may be due.
    fn next_due(&self) -> Option<f64>;
    /// Runs what is due at `now`; the clock is already there.
    fn run_due(&self, now: f64);
}

/// Moves `clock` to `to`, stepping through every deadline on the way: the
/// clock is set to each deadline before what is due then runs, exactly as
/// if a server's wall clock had passed it. Past
/// [`MAX_STEPS_PER_ADVANCE`] steps, the clock jumps to `to` and what is
/// still due runs once there.
pub fn advance(clock: &VirtualClock, to: f64, schedule: &dyn Schedule) {
    use crate::clock::Clock;
    let mut steps = 0;
    while let Some(at) = schedule.next_due().filter(|&at| at <= to) {
        if steps == MAX_STEPS_PER_ADVANCE {
            clock.advance_to(to);
            schedule.run_due(to);
            return;
        }
        clock.advance_to(at);
        schedule.run_due(clock.now());
        steps += 1;
    }
    clock.advance_to(to);
}

#[cfg(test)]
mod tests;
