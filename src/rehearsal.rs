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
//! running live). Time moves as in the server: the tree is ticked every
//! [`TICK_INTERVAL`] of virtual time crossed and the index expires every
//! second, so a replay at any speed emits what the event times dictate.

use std::sync::Arc;

use crate::clock::{Clock, VirtualClock};
use crate::console::LineSink;
use crate::context::Context;
use crate::event::{Event, Number};
use crate::outputs::capture::{Capture, Output};
use crate::pipeline::{Pipeline, Root};
use crate::server::TICK_INTERVAL;
use crate::streams::{detached_copy, CopiedStats, NodeRef, NodeStats};

/// Ticks one jump of the clock runs at most. A gap longer than this many
/// tick intervals (hours of silence in a recording) is crossed with one
/// tick at its end: each tick walks the whole tree, and no node needs
/// thousands of ticks in a row to be right — each tick sees the time.
const MAX_TICKS_PER_JUMP: u32 = 10_000;

pub struct Rehearsal {
    clock: Arc<VirtualClock>,
    pipeline: Pipeline,
    capture: Arc<Capture>,
    /// Each root's copy's counters, by the original nodes' counters.
    copies: Vec<CopiedStats>,
    next_tick: f64,
}

impl Rehearsal {
    /// Rehearses `roots` (fresh copies of them) from virtual time `start`,
    /// keeping every output (see [`Rehearsal::counting`]).
    pub fn new(roots: Vec<Root>, start: f64, console: Arc<dyn LineSink>) -> Self {
        Self::with_capture(roots, start, console, Capture::new(true))
    }

    /// As [`Rehearsal::new`], but only counting outputs per node (for
    /// replays of millions of events).
    pub fn counting(roots: Vec<Root>, start: f64, console: Arc<dyn LineSink>) -> Self {
        Self::with_capture(roots, start, console, Capture::new(false))
    }

    fn with_capture(
        roots: Vec<Root>,
        start: f64,
        console: Arc<dyn LineSink>,
        capture: Capture,
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
                copies.push(stats);
                Root { node, ..root }
            })
            .collect();
        Rehearsal {
            clock,
            pipeline: Pipeline::new(ctx, roots),
            capture,
            copies,
            next_tick: start + TICK_INTERVAL.as_secs_f64(),
        }
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    pub fn ctx(&self) -> &Arc<Context> {
        self.pipeline.context()
    }

    /// The pipeline the roots run in (for its `stats()`).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Runs one event through every root, first moving the clock to its
    /// time when that is later. An event without a time gets the clock's.
    pub fn feed(&mut self, mut event: Event) {
        match event.time {
            Some(t) if t.as_f64() > self.now() => self.advance_to(t.as_f64()),
            Some(_) => {}
            None => event.time = Some(Number::Float(self.now())),
        }
        self.pipeline.process(event);
    }

    /// Moves the clock to `t` (never back), ticking the roots at each tick
    /// interval crossed and expiring the index as the server would.
    pub fn advance_to(&mut self, t: f64) {
        let step = TICK_INTERVAL.as_secs_f64();
        let mut ticks = 0;
        while self.next_tick <= t && ticks < MAX_TICKS_PER_JUMP {
            self.tick_at(self.next_tick);
            self.next_tick += step;
            ticks += 1;
        }
        if self.next_tick <= t {
            // A long silence: one tick at its end, then the usual steps.
            self.tick_at(t);
            self.next_tick = t + step;
        }
        self.clock.advance_to(t);
    }

    fn tick_at(&self, now: f64) {
        self.clock.advance_to(now);
        self.pipeline.tick(now);
    }

    /// The outputs kept so far, in order; forgets them.
    pub fn take_outputs(&self) -> Vec<Output> {
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
    fn outputs_are_captured_in_order_and_mail_is_not_sent() {
        let h = Harness::new();
        let printer = h.build("printer", vals!["p: "], vec![], vec![]);
        let email = h.build("email", vals!["ops@example.com"], vec![], vec![]);
        let tree = h.build("sdo", vec![], vec![], vec![printer, email]);
        let mut r = Rehearsal::new(root("stream", tree), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","time":1}"#));
        r.feed(ev(r#"{"host":"b","time":2}"#));
        let outputs = r.take_outputs();
        let seen: Vec<(&str, Option<&str>)> = outputs
            .iter()
            .map(|o| (o.kind, o.events[0].host.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("printer", Some("a")),
                ("email", Some("a")),
                ("printer", Some("b")),
                ("email", Some("b"))
            ]
        );
        assert_eq!(
            r.counts(),
            [
                (r#"printer("p: ")"#.to_owned(), 2),
                (r#"email("ops@example.com")"#.to_owned(), 2)
            ]
        );
        assert_eq!(r.ctx().mailer.stats().queued.load(Relaxed), 0);
    }

    #[test]
    fn forward_and_graphite_are_captured_and_start_no_sink() {
        let h = Harness::new();
        // Port 1: nothing listens, and nothing may try.
        let forward = h.build("forward", vals!["127.0.0.1", 1], vec![], vec![]);
        let graphite = h.build("graphite", vals!["127.0.0.1", 1], vec![], vec![]);
        let tree = h.build("sdo", vec![], vec![], vec![forward, graphite]);
        let mut r = Rehearsal::new(root("stream", tree), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","metric":1,"time":1}"#));
        let kinds: Vec<&str> = r.take_outputs().iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["forward", "graphite"]);
        assert!(r.ctx().sinks.snapshots().is_empty(), "a sink was started");
    }

    use std::sync::atomic::Ordering::Relaxed;

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
        assert_eq!(outputs[0].events[0].metric.map(|m| m.as_f64()), Some(8.0));
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

    #[test]
    fn a_long_silence_is_crossed_with_bounded_ticks() {
        let h = Harness::new();
        let out = h.build("printer", vals![""], vec![], vec![]);
        let rate = h.build("rate", vals![1], vec![], vec![out]);
        let mut r = Rehearsal::new(root("stream", rate), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","metric":1,"time":0.5}"#));
        // A year later: far more than MAX_TICKS_PER_JUMP intervals.
        r.advance_to(365.0 * 86_400.0);
        assert_eq!(r.now(), 365.0 * 86_400.0);
        let n = r.take_outputs().len();
        assert!(n >= 1 && n <= MAX_TICKS_PER_JUMP as usize + 1, "{n}");
    }
}
