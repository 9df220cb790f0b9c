//! The timer queue on its own (a node that records its wake-ups), and
//! through real nodes: many `by` forks, time stepped and jumped, reloads.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use super::*;
use crate::clock::Clock;
use crate::event::Event;
use crate::roots::{Root, RootSet};
use crate::streams::context::Context;
use crate::streams::{NodeCore, NodeError};
use crate::testing::{ev, Harness};
use crate::{node_core, vals};

/// Wakes at `deadline`, then every `every` seconds after if given,
/// recording the clock at each wake-up.
struct Recorder {
    alarm: Alarm,
    every: Option<f64>,
    woken: Mutex<Vec<f64>>,
    core: NodeCore,
}

impl Recorder {
    fn build(every: Option<f64>) -> NodeRef {
        timed(|alarm| Recorder {
            alarm,
            every,
            woken: Mutex::default(),
            core: NodeCore::new(Vec::new()),
        })
    }

    fn woken(node: &NodeRef) -> Vec<f64> {
        let me = node.as_any().downcast_ref::<Recorder>().unwrap();
        lock(&me.woken).clone()
    }

    fn set(node: &NodeRef, ctx: &Context, at: f64) {
        let me = node.as_any().downcast_ref::<Recorder>().unwrap();
        me.alarm.set(&ctx.timers, Some(at));
    }
}

impl Node for Recorder {
    node_core!("recorder");
    fn handle(&self, _: &Context, _: &Arc<Event>) -> Result<(), NodeError> {
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Recorder::build(self.every)
    }
    fn wake(&self, ctx: &Context, now: f64) {
        assert_eq!(ctx.now(), now, "woken with the clock's time");
        lock(&self.woken).push(now);
        if let Some(every) = self.every {
            self.alarm.set(&ctx.timers, Some(now + every));
        }
    }
    fn stop(&self) {
        self.alarm.stop();
    }
    fn alarm(&self) -> Option<&Alarm> {
        Some(&self.alarm)
    }
}

#[test]
fn only_the_due_are_woken_earliest_first() {
    let h = Harness::new();
    // 10,000 nodes due at 1..=10,000 seconds, set in a scrambled order.
    let nodes: Vec<NodeRef> = (0..10_000).map(|_| Recorder::build(None)).collect();
    for i in 0..10_000usize {
        let j = (i * 7_919) % 10_000;
        Recorder::set(&nodes[j], &h.ctx, (j + 1) as f64);
    }
    assert_eq!(h.ctx.timers.len(), 10_000);
    h.clock.advance_to(2_500.0);
    assert_eq!(h.ctx.run_due_wakeups(2_500.0), 2_500);
    assert_eq!(h.ctx.timers.len(), 7_500, "the others wait, untouched");
    assert!(nodes[..2_500]
        .iter()
        .all(|n| Recorder::woken(n) == [2_500.0]));
    assert!(nodes[2_500..].iter().all(|n| Recorder::woken(n).is_empty()));
    assert_eq!(h.ctx.timers.next_due(), Some(2_501.0));
    // Nothing due: nothing woken, nothing looked at but the earliest.
    assert_eq!(h.ctx.run_due_wakeups(2_500.5), 0);
}

#[test]
fn an_alarm_wakes_once_at_its_earliest_deadline() {
    let h = Harness::new();
    let node = Recorder::build(None);
    Recorder::set(&node, &h.ctx, 10.0);
    Recorder::set(&node, &h.ctx, 20.0); // later: the earlier one stays
    Recorder::set(&node, &h.ctx, 5.0); // earlier: it wins
    assert_eq!(h.ctx.timers.len(), 2, "10's entry is left behind, stale");
    advance(&h.clock, 30.0, &*h.ctx);
    assert_eq!(Recorder::woken(&node), [5.0]);
    assert!(h.ctx.timers.is_empty());
}

#[test]
fn advance_steps_through_each_deadline_with_the_clock_there() {
    let h = Harness::new();
    let node = Recorder::build(Some(1.5));
    Recorder::set(&node, &h.ctx, 1.0);
    advance(&h.clock, 6.0, &*h.ctx);
    assert_eq!(Recorder::woken(&node), [1.0, 2.5, 4.0, 5.5]);
    assert_eq!(h.clock.now(), 6.0);
    assert_eq!(h.ctx.timers.next_due(), Some(7.0));
}

#[test]
fn stopped_or_dropped_nodes_are_never_woken() {
    let h = Harness::new();
    let stopped = Recorder::build(None);
    Recorder::set(&stopped, &h.ctx, 1.0);
    stopped.stop();
    Recorder::set(&stopped, &h.ctx, 2.0); // a stopped alarm takes no deadline
    let dropped = Recorder::build(None);
    Recorder::set(&dropped, &h.ctx, 1.0);
    drop(dropped);
    advance(&h.clock, 10.0, &*h.ctx);
    assert!(Recorder::woken(&stopped).is_empty());
    assert!(h.ctx.timers.is_empty(), "their entries were dropped");
}

/// 10,000 `by` forks each holding a rate: each is woken at its own
/// interval ends while its last event lives, then never again; a key that
/// keeps sending keeps only its own timer going.
#[test]
fn many_forks_cost_only_while_they_have_something_due() {
    let h = Harness::new();
    let out = h.sink("out");
    let rate = h.build("rate", vals![5], vec![], vec![out.node()]);
    let by = h.build("by", vals!["host"], vec![], vec![rate]);
    for i in 0..10_000 {
        h.send(
            &by,
            ev(&format!(r#"{{"host":"h{i}","metric":5,"ttl":12}}"#)),
        );
    }
    // A rate per fork, and by's idle sweep.
    assert_eq!(h.ctx.timers.len(), 10_001);
    h.advance_to(&by, 4.9);
    assert!(out.take().is_empty(), "nothing due before 5 s");
    h.advance_to(&by, 5.0);
    let first = out.events();
    assert_eq!(first.len(), 10_000);
    assert!(first
        .iter()
        .all(|e| e.metric.map(|m| m.as_f64()) == Some(1.0)));
    // Reports of 0 while the last event lives (ttl 12), then quiet.
    h.advance_to(&by, 60.0);
    assert_eq!(out.take().len(), 10_000, "one more interval each (5-10 s)");
    assert_eq!(h.ctx.timers.len(), 1, "only by's idle sweep is left");
    // One key sends again: one timer.
    h.send(&by, ev(r#"{"host":"h7","metric":10}"#));
    assert_eq!(h.ctx.timers.len(), 2);
    h.advance_to(&by, 65.0);
    assert_eq!(out.metrics(), [Some(2.0)]);
}

/// A clock that jumps (a stalled server) wakes each due node once, at the
/// time it jumped to; the node catches up from its state (rate: the
/// first interval, then the latest ones, at most 10 reports).
#[test]
fn a_jump_wakes_each_due_node_once_and_it_catches_up() {
    let h = Harness::new();
    let out = h.sink("out");
    let rate = h.build("rate", vals![1], vec![], vec![out.node()]);
    h.send(&rate, ev(r#"{"host":"a","metric":3,"ttl":1000}"#));
    h.jump_to(&rate, 100.0);
    let times: Vec<f64> = out
        .events()
        .iter()
        .map(|e| e.time.unwrap().as_f64())
        .collect();
    let mut expected = vec![1.0];
    expected.extend((92..=100).map(f64::from));
    assert_eq!(times, expected);
    assert_eq!(h.ctx.timers.next_due(), Some(101.0));
}

/// A reload moves a rate's state, pending interval included, to the new
/// tree: the new node reports at the old deadline, the old one never.
#[test]
fn a_reload_keeps_pending_timers_in_the_new_tree() {
    let h = Harness::new();
    let build = |h: &Harness| {
        let out = h.sink("out");
        let rate = h.build("rate", vals![5], vec![], vec![out.node()]);
        (h.build("by", vals!["host"], vec![], vec![rate]), out)
    };
    let (old, old_out) = build(&h);
    let pipeline = RootSet::new(
        Arc::clone(&h.ctx),
        vec![Root {
            name: "stream".into(),
            node: Arc::clone(&old),
        }],
    );
    h.clock.advance_to(1.0);
    pipeline.process(ev(r#"{"host":"a","metric":10}"#));
    pipeline.process(ev(r#"{"host":"b","metric":20}"#));
    let (new, new_out) = build(&h);
    pipeline.swap_roots(vec![Root {
        name: "stream".into(),
        node: Arc::clone(&new),
    }]);
    assert!(new.stats().kept_state.load(Relaxed));
    advance(&h.clock, 6.0, &pipeline);
    assert!(old_out.take().is_empty(), "the old tree is never woken");
    let mut got = new_out.metrics();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, [Some(2.0), Some(4.0)], "reported at 6 s, as due");
    // The old tree stays stopped even when a stale entry comes due.
    advance(&h.clock, 100.0, &pipeline);
    assert!(old_out.take().is_empty());
    drop(old);
}

/// The index's expiry is on the same driver: a replay's virtual clock
/// expires an event on the first whole second after its deadline, with
/// nothing else woken in between.
#[test]
fn the_index_expires_at_deadlines_under_a_virtual_clock() {
    let h = Harness::at(100.0);
    let index = h.build("index", vec![], vec![], vec![]);
    let out = h.sink("out");
    let root = h.build("sdo", vec![], vec![], vec![index, out.node()]);
    let pipeline = RootSet::new(
        Arc::clone(&h.ctx),
        vec![Root {
            name: "stream".into(),
            node: root,
        }],
    );
    pipeline.process(ev(r#"{"host":"a","time":100,"ttl":2.5}"#));
    pipeline.process(ev(r#"{"host":"b","time":100,"ttl":30}"#));
    out.take();
    advance(&h.clock, 103.0, &pipeline);
    let expired = out.events();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].host.as_deref(), Some("a"));
    assert_eq!(expired[0].state.as_deref(), Some("expired"));
    assert_eq!(expired[0].time.map(|t| t.as_f64()), Some(103.0));
    assert_eq!(h.ctx.index.len(), 1);
    advance(&h.clock, 1_000.0, &pipeline);
    assert!(h.ctx.index.is_empty());
    assert_eq!(out.events()[0].time.map(|t| t.as_f64()), Some(131.0));
}
