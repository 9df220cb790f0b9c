//! Windows: nodes that gather events and forward them as lists.
//!
//! | function | example |
//! |---|---|
//! | `moving_event_window(n, *children)` | `moving_event_window(5, smap(folds.mean, printer()))` |
//! | `fixed_event_window(n, *children)` | `fixed_event_window(100, smap(folds.maximum, index()))` |
//! | `moving_time_window(dt, *children)` | `moving_time_window(60, smap(folds.mean, index()))` |
//! | `fixed_time_window(dt, *children)` | `fixed_time_window(60, smap(folds.count, index()))` |
//!
//! Every window forwards a list (see [`emit_list`]); a child that does not
//! take lists receives its events one by one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::registry::Entry;
use super::value::{Args, BuildError};
use super::{emit_list, lock, Node, NodeCore, NodeError, NodeRef};
use crate::context::Context;
use crate::event::Event;
use crate::timers::{timed, Alarm};
use crate::{flushes_at, keep_state_in, node_core, wakes_at};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "moving_event_window",
        params: "n, *children",
        summary: "On each event, forward the list of the last `n` events (fewer until `n` have arrived).",
        details: "Riemann's `moving-event-window`. Counts events, so no clock is involved. `n` must be at least 1 (Riemann's accepts 0 and forwards empty windows; a window of nothing is refused as a mistake).",
        example: "moving_event_window(5, smap(folds.mean, printer()))",
        build: build_moving_event_window,
    },
    Entry {
        name: "fixed_event_window",
        params: "n, *children",
        summary: "Every `n` events, forward those `n` as one list (tumbling windows of `n` events).",
        details: "Riemann's `fixed-event-window`. Counts events, so no clock is involved; a partial window waits for its last events however long that takes. `n` must be at least 1 (Riemann's accepts 0 and never forwards; a window of nothing is refused as a mistake).",
        example: "fixed_event_window(100, smap(folds.maximum, index()))",
        build: build_fixed_event_window,
    },
    Entry {
        name: "moving_time_window",
        params: "dt, *children",
        summary: "On each event, forward the list of the events whose time is within `dt` seconds of the newest event time.",
        details: "Event time (Riemann's `moving-time-window`): the window ends at the greatest event time seen and keeps the events with `time > newest - dt`. An event older than that is dropped without forwarding anything; an event without a time is dropped too. `dt` must be greater than 0 (a zero-width window is refused as a mistake; Riemann's accepts it).",
        example: "moving_time_window(60, smap(folds.mean, index()))",
        build: build_moving_time_window,
    },
    Entry {
        name: "fixed_time_window",
        params: "dt, *children",
        summary: "Tumbling windows of `dt` seconds by event time; forward each window's events as one list.",
        details: "Event time, windows aligned to the first event's time (Riemann's `fixed-time-window`). A window is forwarded when an event past its end arrives, and also (unlike Riemann, whose windows wait for a later event forever) once the clock passes its end plus a grace of `dt` seconds, so the last window flushes when traffic stops (event times are expected near the clock's: with much older ones, a window goes out on every tick). Empty windows are not forwarded. A late event, older than the current window, joins the current window (Riemann drops it). An event without a time counts as arriving at the clock's time. `dt` must be greater than 0 (a zero-width window is refused as a mistake; Riemann's accepts it).",
        example: "fixed_time_window(60, smap(folds.count, index()))",
        build: build_fixed_time_window,
    },
];

fn build_moving_event_window(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(EventWindow::new(true, n, children)))
}

fn build_fixed_event_window(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(EventWindow::new(false, n, children)))
}

fn build_moving_time_window(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(MovingTimeWindow {
        dt,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

fn build_fixed_time_window(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| FixedTimeWindow {
        alarm,
        dt,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `moving_event_window(n)` (moving) and `fixed_event_window(n)`; state:
/// the events of the current window.
///
/// `moving_event_window(5, smap(folds.mean, printer()))`
pub struct EventWindow {
    moving: bool,
    n: usize,
    events: Mutex<VecDeque<Arc<Event>>>,
    core: NodeCore,
}

impl EventWindow {
    fn new(moving: bool, n: usize, children: Vec<NodeRef>) -> Self {
        EventWindow {
            moving,
            n,
            events: Mutex::default(),
            core: NodeCore::new(children),
        }
    }
}

impl Node for EventWindow {
    keep_state_in!(events);

    fn kind(&self) -> &'static str {
        if self.moving {
            "moving_event_window"
        } else {
            "fixed_event_window"
        }
    }
    fn describe(&self) -> String {
        format!("{}({})", self.kind(), self.n)
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        Arc::new(EventWindow {
            moving: self.moving,
            n: self.n,
            events: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} in window", lock(&self.events).len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let out: Vec<Arc<Event>> = {
            let mut events = lock(&self.events);
            events.push_back(Arc::clone(event));
            if self.moving {
                while events.len() > self.n {
                    events.pop_front();
                }
                events.iter().cloned().collect()
            } else if events.len() >= self.n {
                events.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
}

/// A saved window's time (`newest`) and its events' JSON.
fn window_state(state: serde_json::Value) -> Result<(Option<f64>, Vec<serde_json::Value>), String> {
    let newest = state.get("newest").and_then(|v| v.as_f64());
    match state.get("events") {
        Some(serde_json::Value::Array(events)) => Ok((newest, events.clone())),
        _ => Err("no events in the saved window".into()),
    }
}

/// `moving_time_window(dt)`; state: the newest event time and the events
/// within `dt` of it, oldest first.
///
/// `moving_time_window(60, smap(folds.mean, index()))`
pub struct MovingTimeWindow {
    dt: f64,
    state: Mutex<MovingState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct MovingState {
    newest: Option<f64>,
    events: VecDeque<(f64, Arc<Event>)>,
}

impl Node for MovingTimeWindow {
    node_core!("moving_time_window");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("moving_time_window({})", self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let events: Vec<_> = s
            .events
            .iter()
            .map(|(t, e)| serde_json::json!([t, super::event_to_json(e)]))
            .collect();
        Some(serde_json::json!({"newest": s.newest, "events": events}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let (newest, events) = window_state(state)?;
        let mut loaded = VecDeque::new();
        for item in events {
            let (t, e): (f64, serde_json::Value) =
                serde_json::from_value(item).map_err(|e| e.to_string())?;
            loaded.push_back((t, super::event_from_json(e)?));
        }
        *lock(&self.state) = MovingState {
            newest,
            events: loaded,
        };
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(MovingTimeWindow {
            dt: self.dt,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} in window", lock(&self.state).events.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(t) = event.time.map(|t| t.as_f64()) else {
            return Ok(());
        };
        let out: Vec<Arc<Event>> = {
            let mut s = lock(&self.state);
            let newest = s.newest.map_or(t, |n| n.max(t));
            s.newest = Some(newest);
            let horizon = newest - self.dt;
            if t <= horizon {
                return Ok(());
            }
            // Kept sorted by time, so the oldest leave from the front even
            // when events arrive out of order.
            let at = s.events.partition_point(|(u, _)| *u <= t);
            s.events.insert(at, (t, Arc::clone(event)));
            while s.events.front().is_some_and(|(u, _)| *u <= horizon) {
                s.events.pop_front();
            }
            s.events.iter().map(|(_, e)| Arc::clone(e)).collect()
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
}

/// `fixed_time_window(dt)`; state: the current window's start (event time)
/// and its events.
///
/// `fixed_time_window(60, smap(folds.count, index()))`
pub struct FixedTimeWindow {
    dt: f64,
    alarm: Alarm,
    state: Mutex<FixedState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct FixedState {
    start: Option<f64>,
    events: Vec<Arc<Event>>,
}

impl FixedTimeWindow {
    /// The window's end plus a grace of dt for late events, while it holds
    /// any.
    fn due(&self, s: &FixedState) -> Option<f64> {
        s.start
            .filter(|_| !s.events.is_empty())
            .map(|t| t + 2.0 * self.dt)
    }
}

impl Node for FixedTimeWindow {
    node_core!("fixed_time_window");
    keep_state_in!(state);
    wakes_at!(due);
    flushes_at!(due);

    fn describe(&self) -> String {
        format!("fixed_time_window({})", self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let events: Vec<_> = s.events.iter().map(|e| super::event_to_json(e)).collect();
        Some(serde_json::json!({"start": s.start, "events": events}))
    }
    fn load_state(&self, mut state: serde_json::Value) -> Result<(), String> {
        let start = state.get("start").and_then(|v| v.as_f64());
        state["newest"] = start.into();
        let (_, events) = window_state(state)?;
        let events = events
            .into_iter()
            .map(super::event_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        *lock(&self.state) = FixedState { start, events };
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| FixedTimeWindow {
            dt: self.dt,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} in window", lock(&self.state).events.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let t = event.time.map_or_else(|| ctx.now(), |t| t.as_f64());
        let out = {
            let mut s = lock(&self.state);
            let start = *s.start.get_or_insert(t);
            let mut out = Vec::new();
            if t >= start + self.dt {
                out = std::mem::take(&mut s.events);
                // Skip the empty windows in between, keeping the alignment.
                let passed = ((t - start) / self.dt).floor();
                s.start = Some(start + passed * self.dt);
            }
            s.events.push(Arc::clone(event));
            self.alarm.set(ctx, self.due(&s));
            out
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let flush = |s: &mut FixedState| match (s.start, self.due(s)) {
            (Some(start), Some(due)) if now >= due => {
                s.start = Some(start + self.dt);
                std::mem::take(&mut s.events)
            }
            _ => Vec::new(),
        };
        let out = self.alarm.roll(ctx, &self.state, flush, |s| self.due(s));
        emit_list(self, ctx, &out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::carry_over;
    use crate::testing::{ev, Harness, Received};
    use crate::vals;

    fn metrics(lists: Vec<Vec<Arc<Event>>>) -> Vec<Vec<f64>> {
        lists
            .iter()
            .map(|l| l.iter().map(|e| e.metric.unwrap().as_f64()).collect())
            .collect()
    }

    fn at(t: f64, m: f64) -> Event {
        ev(&format!(r#"{{"host":"a","metric":{m},"time":{t}}}"#))
    }

    #[test]
    fn event_windows_moving_and_fixed() {
        let cases: &[(&str, usize, Vec<Vec<f64>>)] = &[
            (
                "moving_event_window",
                5,
                vec![
                    vec![1.0],
                    vec![1.0, 2.0],
                    vec![1.0, 2.0, 3.0],
                    vec![1.0, 2.0, 3.0, 4.0],
                    vec![1.0, 2.0, 3.0, 4.0, 5.0],
                    vec![2.0, 3.0, 4.0, 5.0, 6.0],
                    vec![3.0, 4.0, 5.0, 6.0, 7.0],
                ],
            ),
            (
                "fixed_event_window",
                3,
                vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]],
            ),
        ];
        for (name, n, expected) in cases {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build(name, vals![*n as i64], vec![], vec![out.node()]);
            for m in 1..=7 {
                h.send(&node, ev(&format!(r#"{{"metric":{m}}}"#)));
            }
            // Lists arrive whole.
            let got = out.take();
            assert!(got.iter().all(|r| matches!(r, Received::List(_))), "{name}");
            let lists = got
                .into_iter()
                .map(|r| match r {
                    Received::List(l) => l,
                    Received::Event(e) => vec![e],
                })
                .collect();
            assert_eq!(&metrics(lists), expected, "{name}");
        }
    }

    #[test]
    fn moving_time_window_keeps_events_within_dt_of_the_newest() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("moving_time_window", vals![10], vec![], vec![out.node()]);
        // (time, metric) → the window's metrics after it.
        let steps: &[(f64, f64, Option<Vec<f64>>)] = &[
            (1.0, 1.0, Some(vec![1.0])),
            (5.0, 2.0, Some(vec![1.0, 2.0])),
            (3.0, 3.0, Some(vec![1.0, 3.0, 2.0])), // out of order: sorted by time
            (11.0, 4.0, Some(vec![3.0, 2.0, 4.0])), // 1 is at the horizon: gone
            (0.5, 9.0, None),                      // too old: dropped, nothing sent
            (30.0, 5.0, Some(vec![5.0])),
        ];
        for (t, m, expected) in steps {
            h.send(&node, at(*t, *m));
            let lists = out.lists();
            match expected {
                Some(x) => assert_eq!(metrics(lists), vec![x.clone()], "at {t}"),
                None => assert!(lists.is_empty(), "at {t}: {lists:?}"),
            }
        }
        // An event without a time is dropped.
        h.send(&node, ev(r#"{"metric":1}"#));
        assert!(out.take().is_empty());
    }

    #[test]
    fn fixed_time_window_tumbles_by_event_time_aligned_to_the_first_event() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("fixed_time_window", vals![10], vec![], vec![out.node()]);
        h.send_all(&node, [at(3.0, 1.0), at(5.0, 2.0), at(12.9, 3.0)]);
        assert!(out.take().is_empty());
        // 13 ends [3, 13); the empty windows [13, 23) [23, 33) are skipped.
        h.send(&node, at(13.0, 4.0));
        assert_eq!(metrics(out.lists()), [vec![1.0, 2.0, 3.0]]);
        h.send(&node, at(35.0, 5.0));
        assert_eq!(metrics(out.lists()), [vec![4.0]]);
        // 35 is in [33, 43): a late event joins the current window.
        h.send(&node, at(20.0, 6.0));
        h.send(&node, at(43.0, 7.0));
        assert_eq!(metrics(out.lists()), [vec![5.0, 6.0]]);
    }

    #[test]
    fn fixed_time_window_flushes_when_traffic_stops() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("fixed_time_window", vals![10], vec![], vec![out.node()]);
        h.send_all(&node, [at(0.0, 1.0), at(4.0, 2.0)]);
        // Window [0, 10) and its grace end at 20.
        h.advance_to(&node, 19.9);
        assert!(out.take().is_empty());
        h.advance_to(&node, 20.0);
        assert_eq!(metrics(out.lists()), [vec![1.0, 2.0]]);
        // A jump of many windows flushes nothing more (empty windows).
        h.advance_to(&node, 500.0);
        assert!(out.take().is_empty());
        // Alignment is kept: 505 falls in [500, 510).
        h.send_all(&node, [at(505.0, 3.0), at(510.0, 4.0)]);
        assert_eq!(metrics(out.lists()), [vec![3.0]]);
    }

    #[test]
    fn fixed_time_window_ticks_its_children() {
        let h = Harness::new();
        let out = h.sink("out");
        let batch = h.build("batch", vals![100, 1], vec![], vec![out.node()]);
        let node = h.build("fixed_time_window", vals![10], vec![], vec![batch]);
        h.send(&node, at(0.0, 1.0));
        h.advance_to(&node, 20.0); // the window flushes into batch
        h.advance_to(&node, 21.0); // batch's own timer flushes
        assert_eq!(metrics(out.lists()), [vec![1.0]]);
    }

    #[test]
    fn fresh_instances_are_independent_and_reload_keeps_windows() {
        for name in [
            "moving_event_window",
            "fixed_event_window",
            "moving_time_window",
            "fixed_time_window",
        ] {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build(name, vals![2], vec![], vec![out.node()]);
            h.send(&node, at(1.0, 1.0));
            let fresh = node.fresh();
            h.send(&fresh, at(2.0, 2.0));
            let reloaded = h.build(name, vals![2], vec![], vec![out.node()]);
            carry_over(&*reloaded, &*node);
            let changed = h.build(name, vals![3], vec![], vec![out.node()]);
            carry_over(&*changed, &*reloaded);
            out.take();
            h.send(&reloaded, at(2.5, 3.0));
            let got = metrics(out.lists());
            let expected: Vec<Vec<f64>> = match name {
                "fixed_time_window" => vec![],
                _ => vec![vec![1.0, 3.0]],
            };
            assert_eq!(got, expected, "{name} kept its state over the reload");
            h.send(&changed, at(2.6, 4.0));
            let got = metrics(out.lists());
            let expected: Vec<Vec<f64>> = match name {
                "fixed_event_window" | "fixed_time_window" => vec![],
                _ => vec![vec![4.0]],
            };
            assert_eq!(got, expected, "{name} with other args starts afresh");
        }
    }

    #[test]
    fn bad_arguments_are_explained() {
        let h = Harness::new();
        let cases: &[(&str, Vec<crate::streams::Value>, &str)] = &[
            (
                "moving_event_window",
                vals![0],
                "moving_event_window(n, *children): `n` must be a whole number ≥ 1, not 0",
            ),
            (
                "fixed_event_window",
                vals![2.5],
                "fixed_event_window(n, *children): `n` must be a whole number ≥ 1, not 2.5",
            ),
            (
                "fixed_time_window",
                vals![-1],
                "fixed_time_window(dt, *children): `dt` must be greater than 0, not -1",
            ),
            (
                "moving_time_window",
                vals!["x"],
                "moving_time_window(dt, *children): `dt` must be a number, not \"x\" (str)",
            ),
        ];
        for (name, args, msg) in cases {
            let err = h
                .try_build(name, args.clone(), vec![], vec![])
                .err()
                .unwrap();
            assert_eq!(err.message, *msg);
        }
    }
}
