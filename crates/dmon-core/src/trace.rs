//! One event's path through the streams, node by node: "why didn't my
//! alert fire?" (the shell's `trace(event)`, `dmon trace`).
//!
//! The event runs through a [`Rehearsal`]: copies of the trees, counters of
//! their own, outputs captured (nothing printed, mailed, indexed or sent
//! for real). For the live streams that rehearsal is made with
//! [`Rehearsal::carrying_state`]: each copy starts with a copy of its
//! original's state (a window's events, a throttle's count, `by`'s forks),
//! and the originals are left as they are.
//!
//! What each node did is read from its counters, which the copy has to
//! itself: before and after the one event, every node's events in, events
//! out and errors ([`NodeStats`]), and its live fact ([`Node::detail`]:
//! "3 in window", "forks 2"). A node reached is one whose events in grew;
//! a filter's verdict is which of its children got the event (`else_`
//! included); a node that passed nothing on is where the event stopped.
//! The message of a node that raised is kept by
//! [`recording_failures`] (and not logged: the logs are the live
//! streams'). No node is wrapped, so native and Python-backed nodes are
//! traced alike, and paths are those `streams()` shows (`by`'s forks count
//! into their template's path).
//!
//! The live trees are copied node by node while the server goes on: each
//! node's state is copied whole, under its lock, but two nodes may be
//! copied an event apart. The words for each step, and [`Trace`]'s
//! `Display`, are shared by `dmon trace` and the shell, which print the
//! same text.
//!
//! A coroutine's state lives in a Python frame and cannot be copied: in a
//! trace of the live streams it starts afresh, which the trace notes.
//! Python functions are the live ones: one that keeps state of its own (a
//! closure over a counter) sees the traced event.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::codec::json;
use crate::event::{Event, Number};
use crate::rehearsal::Rehearsal;
use crate::streams::filter::When;
use crate::streams::route::By;
use crate::streams::{recording_failures, walk_tree, Node, NodeStats};

/// What a node did with the traced event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A filter whose test held: the event went to its children.
    True,
    /// A filter whose test failed: dropped, or sent to `else_`.
    False,
    /// The node failed on the event (a predicate raised).
    Raised,
    /// Passed on as it came (one event in, one out).
    Passed,
    /// Passed on a different number of events (a window's list).
    Emitted,
    /// Kept in the node's state (a window, `rollup`, `rate`…), nothing out.
    Held,
    /// `throttle` over its limit for the period.
    Throttled,
    /// `by` sent it to the fork of its key.
    Forked,
    /// Passed nothing on (and kept nothing the node says it keeps).
    Stopped,
    /// A leaf reached: an output, captured.
    Output,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::True => "true",
            Verdict::False => "false",
            Verdict::Raised => "raised",
            Verdict::Passed => "passed",
            Verdict::Emitted => "emitted",
            Verdict::Held => "held",
            Verdict::Throttled => "throttled",
            Verdict::Forked => "forked",
            Verdict::Stopped => "stopped",
            Verdict::Output => "output",
        }
    }
}

/// One node the event reached.
#[derive(Clone, Debug)]
pub struct Step {
    /// As `streams()` names it: `alert_stream/by/throttle`.
    pub path: String,
    pub kind: &'static str,
    /// How the node was built: `throttle(1, 60)`.
    pub node: String,
    pub verdict: Verdict,
    /// Events it passed on (a list counts its events).
    pub emitted: u64,
    /// The failure's message, when it raised (with the traceback).
    pub error: Option<String>,
    /// What happened, in words: `forked to by key host=web1 (a new fork)`.
    pub detail: String,
}

/// What reached one output node.
#[derive(Clone, Debug)]
pub struct TracedOutput {
    /// The output node as written, e.g. `printer("hot: ")`.
    pub node: String,
    pub kind: &'static str,
    pub events: Vec<Arc<Event>>,
}

/// An event's path through the streams.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The event as traced (stamped with the clock's time if it had none).
    pub event: Arc<Event>,
    /// The clock's time when it ran.
    pub at: f64,
    /// Every node reached, depth first in each root's tree, roots in order.
    pub steps: Vec<Step>,
    /// The paths of the nodes with children that passed nothing on.
    pub stopped_at: Vec<String>,
    pub outputs: Vec<TracedOutput>,
    /// What the trace could not show as it is live (a coroutine's state).
    pub notes: Vec<String>,
}

impl Trace {
    /// The step at `path`, if the event reached that node.
    pub fn step(&self, path: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.path == path)
    }
}

/// Kinds that keep what they are given in their state: passing nothing on
/// is holding, not dropping.
const HOLDING: &[&str] = &[
    "moving_event_window",
    "fixed_event_window",
    "moving_time_window",
    "fixed_time_window",
    "rollup",
    "batch",
    "coalesce",
    "rate",
    "percentiles",
    "stable",
    "fill_in",
    "fill_in_last",
    "ddt",
    "apdex",
    "average",
];

/// One node's counters and live fact at one moment.
struct Seen {
    events_in: u64,
    events_out: u64,
    errors: u64,
    detail: Option<String>,
}

fn key(stats: &NodeStats) -> usize {
    stats as *const NodeStats as usize
}

/// Every node of the rehearsal's trees, by its counters' address.
fn observe(r: &Rehearsal) -> HashMap<usize, Seen> {
    let mut seen = HashMap::new();
    for root in r.root_set().roots().iter() {
        walk_tree(&root.path(), &*root.node, &mut |_, n| {
            let s = n.stats();
            seen.insert(
                key(s),
                Seen {
                    events_in: s.events_in.load(Ordering::Relaxed),
                    events_out: s.events_out.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                    detail: n.detail(),
                },
            );
        });
    }
    seen
}

/// Runs `event` through the rehearsal's trees and tells what each node did.
/// The clock first moves to the event's time when that is later (what was
/// due on the way is not part of the trace); an event without a time gets
/// the clock's. Outputs kept before are forgotten. Python streams that
/// push (coroutines) must be pointed at the rehearsal's context by the
/// caller, as for any rehearsal.
pub fn trace(r: &mut Rehearsal, mut event: Event) -> Trace {
    match event.time {
        Some(t) if t.as_f64() > r.now() => r.advance_to(t.as_f64()),
        Some(_) => {}
        None => event.time = Some(Number::Float(r.now())),
    }
    let event = Arc::new(event);
    drop(r.take_outputs());
    let before = observe(r);
    let ((), failures) = recording_failures(|| r.root_set().process(Event::clone(&event)));
    let after = observe(r);
    let delta = |stats: &NodeStats| -> (u64, u64, u64) {
        let (b, a) = (before.get(&key(stats)), after.get(&key(stats)));
        match (b, a) {
            (Some(b), Some(a)) => (
                a.events_in - b.events_in,
                a.events_out - b.events_out,
                a.errors - b.errors,
            ),
            _ => (0, 0, 0),
        }
    };
    let mut steps = Vec::new();
    let mut stopped_at = Vec::new();
    let mut notes = Vec::new();
    for root in r.root_set().roots().iter() {
        walk_tree(&root.path(), &*root.node, &mut |path, n| {
            let (events_in, out, errors) = delta(n.stats());
            if events_in == 0 {
                return;
            }
            let error = (errors > 0).then(|| {
                failures
                    .iter()
                    .find(|(k, _)| *k == key(n.stats()))
                    .map_or_else(|| "failed (no message)".to_owned(), |(_, m)| m.clone())
            });
            let (Some(b), Some(a)) = (before.get(&key(n.stats())), after.get(&key(n.stats())))
            else {
                return;
            };
            let (verdict, mut detail) = judge(
                n,
                &event,
                (events_in, out),
                error.as_deref(),
                (b, a),
                &delta,
            );
            if a.detail != b.detail && verdict != Verdict::Forked {
                if let (Some(b), Some(a)) = (&b.detail, &a.detail) {
                    detail.push_str(&format!(" ({b} → {a})"));
                }
            }
            if n.kind() == "coroutine" && r.carries_state() {
                notes.push(format!(
                    "{path}: a coroutine starts afresh in a trace (its state, a Python frame, \
                     cannot be copied)"
                ));
            }
            if !n.children().is_empty() && out == 0 {
                stopped_at.push(path.to_owned());
            }
            steps.push(Step {
                path: path.to_owned(),
                kind: n.kind(),
                node: n.describe(),
                verdict,
                emitted: out,
                error,
                detail,
            });
        });
    }
    let outputs = r
        .take_outputs()
        .iter()
        .map(|o| TracedOutput {
            node: o.node.to_owned(),
            kind: o.kind,
            events: o.events.to_vec(),
        })
        .collect();
    Trace {
        event,
        at: r.now(),
        steps,
        stopped_at,
        outputs,
        notes,
    }
}

/// A node's verdict on the event, and what it did in words.
fn judge(
    n: &dyn Node,
    event: &Arc<Event>,
    (events_in, out): (u64, u64),
    error: Option<&str>,
    (before, after): (&Seen, &Seen),
    delta: &dyn Fn(&NodeStats) -> (u64, u64, u64),
) -> (Verdict, String) {
    if let Some(error) = error {
        let first = error.lines().next().unwrap_or(error);
        return (Verdict::Raised, format!("raised {first}"));
    }
    let children = n.children();
    if let Some(when) = n.as_any().downcast_ref::<When>() {
        let then = when.passing_children();
        let reached = |c: &Arc<dyn Node>| delta(c.stats()).0 > 0;
        let passed = children[..then].iter().any(reached);
        let to_else = children[then..].iter().any(reached);
        return match (passed, to_else, n.kind()) {
            (true, _, _) => (Verdict::True, "true: passed on".into()),
            (false, true, _) => (Verdict::False, "false: sent to else_".into()),
            (false, false, "not_expired") => (Verdict::False, "false: dropped as expired".into()),
            (false, false, "expired") => (Verdict::False, "false: not expired, dropped".into()),
            (false, false, _) if children.is_empty() => {
                (Verdict::Stopped, "has no children to pass to".into())
            }
            (false, false, _) => (Verdict::False, "false: dropped".into()),
        };
    }
    if let Some(by) = n.as_any().downcast_ref::<By>() {
        let label = by
            .fork_label(event)
            .unwrap_or_else(|e| format!("? ({})", e.0.lines().next().unwrap_or("")));
        let which = if after.detail != before.detail {
            "a new fork"
        } else {
            "its fork existed"
        };
        return (
            Verdict::Forked,
            format!("forked to by key {label} ({which})"),
        );
    }
    if children.is_empty() {
        let what = match n.kind() {
            "printer" => "printed (captured)",
            "index" => "indexed (captured; the live index is untouched)",
            "email" => "would mail (captured; nothing sent)",
            "forward" | "graphite" | "influxdb" | "webhook" => {
                "would send (captured; nothing sent)"
            }
            _ => "reached",
        };
        return (Verdict::Output, what.into());
    }
    match out {
        0 if n.kind() == "throttle" => (
            Verdict::Throttled,
            "throttled: over its limit for the period".into(),
        ),
        0 if HOLDING.contains(&n.kind()) => (Verdict::Held, "held: nothing passed on yet".into()),
        0 => (Verdict::Stopped, "passed nothing on".into()),
        _ if out == events_in => (Verdict::Passed, "passed".into()),
        _ => (
            Verdict::Emitted,
            format!("emitted {}", plural(out, "event")),
        ),
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The trace as the shell and `dmon trace` print it: the event, a line per
/// node reached, where it stopped, and what reached the outputs.
impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "trace of {}", json::encode(&self.event))?;
        let width = self.steps.iter().map(|s| s.path.len()).max().unwrap_or(0);
        for step in &self.steps {
            writeln!(f, "  {:<width$}  {}: {}", step.path, step.node, step.detail)?;
            if let Some(frame) = step.error.as_deref().and_then(last_frame) {
                writeln!(f, "  {:<width$}    {frame}", "")?;
            }
        }
        if self.steps.is_empty() {
            writeln!(f, "  (no streams: nothing reached)")?;
        }
        if self.stopped_at.is_empty() {
            writeln!(f, "stopped nowhere: every branch reached its end")?;
        } else {
            writeln!(f, "stopped at: {}", self.stopped_at.join(", "))?;
        }
        if self.outputs.is_empty() {
            write!(f, "outputs: none reached")?;
        } else {
            write!(f, "outputs (captured, nothing sent):")?;
            for o in &self.outputs {
                let events: Vec<String> = o.events.iter().map(|e| json::encode(e)).collect();
                write!(f, "\n  {} ← {}", o.node, events.join(", "))?;
            }
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// The innermost frame of a Python traceback: where the user's code raised.
fn last_frame(error: &str) -> Option<&str> {
    error
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("File \""))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::LineSink;
    use crate::roots::Root;
    use crate::streams::Value;
    use crate::streams::{NodeRef, NodeSnapshot};
    use crate::testing::{ev, func, Harness};
    use crate::vals;

    struct Discard;
    impl LineSink for Discard {
        fn write_line(&self, _line: &str) {}
    }

    /// A trace of `event` through a copy of the live `tree` (root `name`),
    /// whose clock is the harness's.
    fn trace_live(h: &Harness, name: &str, tree: &NodeRef, event: &str) -> Trace {
        let roots = vec![Root {
            name: name.into(),
            node: Arc::clone(tree),
        }];
        let mut r = Rehearsal::carrying_state(roots, h.now(), Arc::new(Discard));
        trace(&mut r, ev(event))
    }

    fn snapshot(tree: &NodeRef) -> Vec<NodeSnapshot> {
        let mut out = Vec::new();
        crate::streams::snapshot_tree("s", &**tree, &mut out);
        out
    }

    fn verdicts(t: &Trace) -> Vec<(&str, &str)> {
        t.steps
            .iter()
            .map(|s| (s.path.as_str(), s.verdict.as_str()))
            .collect()
    }

    #[test]
    fn by_and_throttle_carry_the_live_state_and_leave_it_alone() {
        let h = Harness::new();
        let out = h.build("printer", vals!["alert: "], vec![], vec![]);
        let throttle = h.build("throttle", vals![1, 60], vec![], vec![out]);
        let by = h.build("by", vals!["host"], vec![], vec![throttle]);
        let tree = h.build("where", vals!["metric > 0.9"], vec![], vec![by]);
        h.send(&tree, ev(r#"{"host":"web1","metric":0.95,"time":1}"#));
        let live = snapshot(&tree);

        // web1's fork has used its one event for the period.
        let t = trace_live(
            &h,
            "alert_stream",
            &tree,
            r#"{"host":"web1","metric":0.97}"#,
        );
        assert_eq!(
            verdicts(&t),
            [
                ("alert_stream/where", "true"),
                ("alert_stream/where/by", "forked"),
                ("alert_stream/where/by/throttle", "throttled"),
            ]
        );
        let by_step = t.step("alert_stream/where/by").unwrap();
        assert_eq!(
            by_step.detail,
            "forked to by key host=web1 (its fork existed)"
        );
        assert_eq!(t.stopped_at, ["alert_stream/where/by/throttle"]);
        assert!(t.outputs.is_empty());

        // web2 has no fork yet: a new one, which lets the event through.
        let t = trace_live(
            &h,
            "alert_stream",
            &tree,
            r#"{"host":"web2","metric":0.97}"#,
        );
        assert_eq!(
            t.step("alert_stream/where/by").unwrap().detail,
            "forked to by key host=web2 (a new fork)"
        );
        assert_eq!(
            t.step("alert_stream/where/by/throttle").unwrap().verdict,
            Verdict::Passed
        );
        assert_eq!(
            t.step("alert_stream/where/by/throttle/printer")
                .unwrap()
                .verdict,
            Verdict::Output
        );
        assert!(t.stopped_at.is_empty());
        let hosts: Vec<_> = t
            .outputs
            .iter()
            .map(|o| o.events[0].host.as_deref())
            .collect();
        assert_eq!(hosts, [Some("web2")]);

        // A value under the threshold stops at the filter.
        let t = trace_live(&h, "alert_stream", &tree, r#"{"host":"web1","metric":0.5}"#);
        assert_eq!(verdicts(&t), [("alert_stream/where", "false")]);
        assert_eq!(t.stopped_at, ["alert_stream/where"]);

        assert_eq!(
            snapshot(&tree),
            live,
            "the live tree's counters and forks changed"
        );
        // And the live throttle still holds its count: web1 is throttled.
        h.send(&tree, ev(r#"{"host":"web1","metric":0.99}"#));
        assert!(h.printed().len() == 1, "only the first web1 event printed");
    }

    #[test]
    fn a_window_shows_what_the_event_changed_and_keeps_its_events() {
        let h = Harness::new();
        let out = h.build("printer", vals![""], vec![], vec![]);
        let window = h.build("moving_event_window", vals![3], vec![], vec![out]);
        let fixed_out = h.build("printer", vals![""], vec![], vec![]);
        let fixed = h.build("fixed_event_window", vals![5], vec![], vec![fixed_out]);
        let tree = h.build("sdo", vec![], vec![], vec![window, fixed]);
        h.send(&tree, ev(r#"{"host":"a","metric":1,"time":1}"#));
        h.send(&tree, ev(r#"{"host":"a","metric":2,"time":2}"#));
        let live = snapshot(&tree);

        let t = trace_live(&h, "s", &tree, r#"{"host":"a","metric":3,"time":3}"#);
        let moving = t.step("s/sdo/moving_event_window").unwrap();
        assert_eq!(moving.verdict, Verdict::Emitted);
        assert_eq!(moving.emitted, 3);
        assert_eq!(
            moving.detail,
            "emitted 3 events (2 in window → 3 in window)"
        );
        let fixed = t.step("s/sdo/fixed_event_window").unwrap();
        assert_eq!(fixed.verdict, Verdict::Held);
        assert_eq!(
            fixed.detail,
            "held: nothing passed on yet (2 in window → 3 in window)"
        );
        assert_eq!(t.stopped_at, ["s/sdo/fixed_event_window"]);
        let metrics: Vec<Vec<f64>> = t
            .outputs
            .iter()
            .map(|o| {
                o.events
                    .iter()
                    .map(|e| e.metric.unwrap().as_f64())
                    .collect()
            })
            .collect();
        // printer takes a list's events one by one.
        assert_eq!(metrics, [vec![1.0], vec![2.0], vec![3.0]]);

        assert_eq!(snapshot(&tree), live, "the live windows changed");
    }

    #[test]
    fn a_raising_predicate_is_shown_with_its_message_and_the_rest_goes_on() {
        let h = Harness::new();
        let boom = func("<lambda> at streams.py:3", |_| {
            Err(crate::streams::NodeError(
                "ZeroDivisionError: division by zero\nTraceback (most recent call last):\n  File \"streams.py\", line 3, in <lambda>".into(),
            ))
        });
        let bad_out = h.build("printer", vals!["bad: "], vec![], vec![]);
        let bad = h.build("when", vec![boom], vec![], vec![bad_out]);
        let good_out = h.build("printer", vals!["good: "], vec![], vec![]);
        let otherwise = h.build("printer", vals!["low: "], vec![], vec![]);
        let good = h.build(
            "where",
            vals!["metric > 5"],
            vec![("else_".into(), Value::Stream(otherwise))],
            vec![good_out],
        );
        let tree = h.build("sdo", vec![], vec![], vec![bad, good]);

        let t = trace_live(&h, "s", &tree, r#"{"host":"a","metric":1}"#);
        assert_eq!(
            verdicts(&t),
            [
                ("s/sdo", "passed"),
                ("s/sdo/when", "raised"),
                ("s/sdo/where", "false"),
                ("s/sdo/where/printer#1", "output"),
            ]
        );
        let raised = t.step("s/sdo/when").unwrap();
        assert_eq!(raised.detail, "raised ZeroDivisionError: division by zero");
        assert!(raised.error.as_deref().unwrap().contains("Traceback"));
        assert_eq!(
            t.step("s/sdo/where").unwrap().detail,
            "false: sent to else_"
        );
        assert_eq!(t.stopped_at, ["s/sdo/when"]);
        let shown = t.to_string();
        assert!(
            shown.contains("File \"streams.py\", line 3, in <lambda>"),
            "{shown}"
        );
        assert_eq!(tree.children()[0].stats().errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn not_expired_says_the_event_was_dropped_as_expired() {
        let h = Harness::at(1000.0);
        let out = h.build("printer", vals![""], vec![], vec![]);
        let tree = h.build("not_expired", vec![], vec![], vec![out]);
        let t = trace_live(&h, "s", &tree, r#"{"host":"a","time":10,"ttl":60}"#);
        assert_eq!(t.steps[0].path, "s/not_expired");
        assert_eq!(t.steps[0].detail, "false: dropped as expired");
        assert_eq!(t.at, 1000.0, "an older event does not move the clock back");
    }
}
