//! Running streams over given events under a virtual clock, outputs
//! captured: what `dmon.testing.run`, `dmon replay` and the shell's
//! `try_stream` share.
//!
//! ```ignore
//! let mut r = Rehearsal::new(roots, 0.0, console);
//! r.feed(event);          // the clock follows event times
//! r.advance_to(60.0);     // windows and rates flush as time passes
//! let outputs = r.take_outputs();
//! ```
//!
//! The roots are copied ([`detached_copy`]) so the rehearsal starts from
//! fresh state and counts nothing into the trees it was given (which may be
//! running live). Time moves as in the server, but exactly: the clock steps
//! through every node's wake-up and the index's expiries on the way to the
//! next event ([`timers::advance`]), so a replay at any speed emits what the
//! event times dictate.

use std::sync::Arc;

use crate::clock::{Clock, VirtualClock};
use crate::console::LineSink;
use crate::event::{Event, Number};
use crate::roots::{Root, RootSet};
use crate::streams::capture::{Capture, Outputs};
use crate::streams::context::Context;
use crate::streams::timers;
use crate::streams::{copy_states, detached_copy, CopiedStats, NodeRef, NodeStats};

pub struct Rehearsal {
    clock: Arc<VirtualClock>,
    roots: RootSet,
    capture: Arc<Capture>,
    /// Each root's copy's counters, by the original nodes' counters.
    copies: Vec<CopiedStats>,
    /// Whether the copies started with their originals' state.
    carried_state: bool,
}

impl Rehearsal {
    /// Rehearses `roots` (fresh copies of them) from virtual time `start`,
    /// keeping every output (see [`Rehearsal::counting`]).
    pub fn new(roots: Vec<Root>, start: f64, console: Arc<dyn LineSink>) -> Self {
        Self::with_capture(roots, start, console, Capture::new(true), false)
    }

    /// As [`Rehearsal::new`], but each copy starts with a copy of the
    /// state its original holds now ([`copy_states`]; the originals are
    /// left as they are): what [`crate::trace`] runs an event through.
    pub fn carrying_state(roots: Vec<Root>, start: f64, console: Arc<dyn LineSink>) -> Self {
        Self::with_capture(roots, start, console, Capture::new(true), true)
    }

    /// As [`Rehearsal::new`], but only counting outputs per node (for
    /// replays of millions of events).
    pub fn counting(roots: Vec<Root>, start: f64, console: Arc<dyn LineSink>) -> Self {
        Self::with_capture(roots, start, console, Capture::new(false), false)
    }

    fn with_capture(
        roots: Vec<Root>,
        start: f64,
        console: Arc<dyn LineSink>,
        capture: Capture,
        carry_state: bool,
    ) -> Self {
        let clock = VirtualClock::starting_at(start);
        let capture = Arc::new(capture);
        let ctx = Arc::new(Context::rehearsal(
            clock.clone(),
            console,
            Arc::clone(&capture),
        ));
        let mut copies = Vec::with_capacity(roots.len());
        let roots = roots
            .into_iter()
            .map(|root| {
                let (node, stats) = detached_copy(&root.node);
                if carry_state {
                    // Before the root set starts the copy: its alarms are
                    // set from the state it holds.
                    copy_states(&*node, &*root.node);
                }
                copies.push(stats);
                Root { node, ..root }
            })
            .collect();
        Rehearsal {
            clock,
            roots: RootSet::new(ctx, roots),
            capture,
            copies,
            carried_state: carry_state,
        }
    }

    /// Whether the copies started with their originals' state
    /// ([`Rehearsal::carrying_state`]).
    pub fn carries_state(&self) -> bool {
        self.carried_state
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    pub fn ctx(&self) -> &Arc<Context> {
        self.roots.context()
    }

    /// The copies being rehearsed (for their counters).
    pub fn root_set(&self) -> &RootSet {
        &self.roots
    }

    /// Runs one event through every root, first moving the clock to its
    /// time when that is later. An event without a time gets the clock's.
    pub fn feed(&mut self, mut event: Event) {
        match event.time {
            Some(t) if t.as_f64() > self.now() => self.advance_to(t.as_f64()),
            Some(_) => {}
            None => event.time = Some(Number::Float(self.now())),
        }
        self.roots.process(event);
    }

    /// Moves the clock to `t` (never back), waking each node at its
    /// deadlines on the way and expiring the index as the server would.
    pub fn advance_to(&mut self, t: f64) {
        timers::advance(&self.clock, t, &self.roots);
    }

    /// Ends the rehearsal's time: windows, rates and the like forward what
    /// they hold ([`RootSet::flush_roots`]).
    pub fn flush(&mut self) {
        self.roots.flush_roots();
    }

    /// The outputs kept so far, in order; forgets them.
    pub fn take_outputs(&self) -> Outputs {
        self.capture.take_outputs()
    }

    /// Events per output node, in the order the nodes first output.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.capture.counts()
    }

    /// The rehearsal's counters for the node of the given trees whose
    /// counters are `original` (to watch what that node emits).
    pub fn stats_of(&self, original: &NodeRef) -> Option<&Arc<NodeStats>> {
        self.copies.iter().find_map(|c| c.of(original.stats()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ev, Harness};
    use crate::vals;
    use std::sync::atomic::Ordering::Relaxed;

    struct Discard;
    impl LineSink for Discard {
        fn write_line(&self, _line: &str) {}
    }

    fn root(name: &str, node: NodeRef) -> Vec<Root> {
        vec![Root {
            name: name.into(),
            node,
        }]
    }

    #[test]
    fn time_follows_events_and_windows_flush_on_ticks() {
        let h = Harness::new();
        let out = h.build("printer", vals![""], vec![], vec![]);
        // rate over 5 s, from the first event (t = 1): emits at t = 6.
        let rate = h.build("rate", vals![5], vec![], vec![out]);
        let mut r = Rehearsal::new(root("stream", rate), 0.0, Arc::new(Discard));
        for t in 1..=4 {
            r.feed(ev(&format!(r#"{{"host":"a","metric":10,"time":{t}}}"#)));
        }
        r.advance_to(5.9);
        assert!(r.take_outputs().is_empty(), "nothing before 6 s");
        r.advance_to(6.0);
        let outputs = r.take_outputs();
        assert_eq!(outputs.len(), 1);
        let first = outputs.iter().next().expect("one output");
        assert_eq!(first.events[0].metric.map(|m| m.as_f64()), Some(8.0));
        assert_eq!(r.now(), 6.0);
    }

    #[test]
    fn the_given_tree_keeps_its_state_and_counters() {
        let h = Harness::new();
        let out = h.sink("out");
        let tree = h.build("where", vals!["metric > 1"], vec![], vec![out.node()]);
        let mut r = Rehearsal::new(root("stream", tree.clone()), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","metric":5,"time":1}"#));
        assert_eq!(tree.stats().events_in.load(Relaxed), 0);
        let copy = r.stats_of(&tree).expect("the copy's counters");
        assert_eq!(copy.events_in.load(Relaxed), 1);
    }

    /// A rate reports each interval while its last event lives (ttl 60),
    /// at the interval's end, then falls quiet: a year of silence costs
    /// those reports and nothing more.
    #[test]
    fn a_long_silence_is_stepped_through_at_each_deadline() {
        let h = Harness::new();
        let out = h.build("printer", vals![""], vec![], vec![]);
        let rate = h.build("rate", vals![1], vec![], vec![out]);
        let mut r = Rehearsal::new(root("stream", rate), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","metric":1,"time":0.5}"#));
        r.advance_to(365.0 * 86_400.0);
        assert_eq!(r.now(), 365.0 * 86_400.0);
        let times: Vec<f64> = r
            .take_outputs()
            .iter()
            .map(|o| o.events[0].time.unwrap().as_f64())
            .collect();
        // The last report is at 60.5, when the event expires (Riemann
        // reports while now <= time + ttl).
        let expected: Vec<f64> = (1..=60).map(|i| 0.5 + i as f64).collect();
        assert_eq!(times, expected);
        assert!(r.ctx().timers.is_empty(), "nothing left to wake");
    }
}
