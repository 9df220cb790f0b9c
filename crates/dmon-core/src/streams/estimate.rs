//! Estimates: nodes that infer what the events do not say outright — how
//! far a host's clock is off, where a metric is heading, what a metric is
//! between its reports.
//!
//! | function | example |
//! |---|---|
//! | `clock_skew(*children)` | `clock_skew(over(60, email("ops@example.com")))` |
//! | `predict_linear(n, seconds, *children, rebuild=None)` | `by("host", predict_linear(100, 1800, over(0.9, index())))` |
//! | `interpolate_constant(interval, *children)` | `interpolate_constant(10, index())` |

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use smol_str::SmolStr;

use super::entry::Entry;
use super::value::{Args, BuildError};
use super::{emit, lock, Node, NodeCore, NodeError, NodeRef};
use crate::event::{Event, Number};
use crate::streams::context::Context;
use crate::streams::timers::{timed, Alarm};
use crate::{keep_state_in, node_core, wakes_at};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "clock_skew",
        params: "*children",
        summary: "Forward each event with its metric set to how far its time is ahead of the hosts' median clock (negative: behind).",
        details: "Riemann's `clock-skew`. Remembers each host's latest event time and when it arrived (processing time); a host's clock now is that time plus the processing time since. Each event is forwarded with metric = its time − the median of the hosts' clocks now, itself included (the upper median for an even count, as Riemann's `middle`). A host is forgotten once its latest event expired; an expired event is forwarded as it is. An event without a time is forwarded as it is (Riemann fails on it).",
        example: r#"clock_skew(over(60, email("ops@example.com")))"#,
        build: build_clock_skew,
    },
    Entry {
        name: "predict_linear",
        params: "n, seconds, *children, rebuild=None",
        summary: "Fit a line (least squares) to the metric over time of the last `n` events; forward the last event with its metric set to the line's value `seconds` after it.",
        details: "Riemann's `predict-linear`: nothing is forwarded until two events have arrived; event time for the fit (the events' `time`). With `rebuild` (Riemann's optional third number, keyword-only here since positional numbers cannot follow the children), the line is refitted only when `rebuild` seconds of processing time have passed since the last fit (Riemann counts wall-clock milliseconds). Events without a metric or a time are ignored; when all the window's events have the same time there is no line and nothing is forwarded (Riemann divides by zero).",
        example: r#"by("host", predict_linear(100, 1800, over(0.9, index())))"#,
        build: build_predict_linear,
    },
    Entry {
        name: "interpolate_constant",
        params: "interval, *children",
        summary: "From an event on, forward a copy of the latest event every `interval` seconds (time = now) until an expired event arrives, which is forwarded at once.",
        details: "Processing time (Riemann's `interpolate-constant`). The first copy goes out when the first event arrives, then one every `interval` seconds, each of the latest event with its time set to the clock's; an event arriving meanwhile only replaces the latest. An expired event (state \"expired\") is forwarded as it is and stops the copies until the next event. Unlike Riemann, whose copies of an event without a ttl never stop, copies also stop once the latest event expires by its time + ttl (ttl 60 by default), as everywhere in dmon.",
        example: "interpolate_constant(10, index())",
        build: build_interpolate_constant,
    },
];

// ---------------------------------------------------------------- clock_skew

fn build_clock_skew(mut args: Args) -> Result<NodeRef, BuildError> {
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(ClockSkew {
        hosts: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// Per host, its latest event and when (processing time) it arrived.
type HostClocks = HashMap<Option<SmolStr>, (Arc<Event>, f64)>;

/// `clock_skew()`; state: [`HostClocks`].
///
/// `clock_skew(over(60, email("ops@example.com")))`
pub struct ClockSkew {
    hosts: Mutex<HostClocks>,
    core: NodeCore,
}

impl ClockSkew {
    /// Remembers `event` and gives its skew against the median clock now.
    fn skew(&self, event: &Arc<Event>, time: f64, now: f64) -> f64 {
        let mut hosts = lock(&self.hosts);
        hosts.insert(event.host.clone(), (Arc::clone(event), now));
        hosts.retain(|_, (e, _)| !e.is_expired(now));
        let mut clocks: Vec<f64> = hosts
            .values()
            .filter_map(|(e, seen)| Some(e.time?.as_f64() + (now - seen)))
            .collect();
        clocks.sort_by(f64::total_cmp);
        clocks
            .get(clocks.len() / 2)
            .map_or(0.0, |clock| time - clock)
    }
}

impl Node for ClockSkew {
    node_core!("clock_skew");
    keep_state_in!(hosts);

    fn fresh(&self) -> NodeRef {
        Arc::new(ClockSkew {
            hosts: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} hosts", lock(&self.hosts).len()))
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let hosts: Vec<_> = lock(&self.hosts)
            .values()
            .map(|(e, seen)| serde_json::json!([super::event_to_json(e), seen]))
            .collect();
        Some(serde_json::Value::Array(hosts))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let saved: Vec<(serde_json::Value, f64)> =
            serde_json::from_value(state).map_err(|e| e.to_string())?;
        let mut hosts = HashMap::new();
        for (e, seen) in saved {
            let e = super::event_from_json(e)?;
            hosts.insert(e.host.clone(), (e, seen));
        }
        *lock(&self.hosts) = hosts;
        Ok(())
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let time = event.time.map(Number::as_f64);
        match time {
            Some(t) if !event.is_expired(now) => {
                let mut e = Event::clone(event);
                e.metric = Some(Number::Float(self.skew(event, t, now)));
                emit(self, ctx, &Arc::new(e));
            }
            _ => {
                lock(&self.hosts).remove(&event.host);
                emit(self, ctx, event);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- predict_linear

fn build_predict_linear(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    if n < 2 {
        return Err(args.error("`n` must be at least 2: a line needs two events"));
    }
    let seconds = args.number("seconds")?;
    let rebuild = match args.keyword("rebuild") {
        None | Some(super::Value::None) => None,
        Some(v) => match v.as_f64() {
            Some(r) if r >= 0.0 && r.is_finite() => Some(r),
            _ => return Err(args.error(format_args!("`rebuild` must be a number ≥ 0, not {v}"))),
        },
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(PredictLinear {
        n,
        seconds,
        rebuild,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `predict_linear(n, seconds, rebuild=)`; state: the last `n` (time,
/// metric) points and the line last fitted.
///
/// `by("host", predict_linear(100, 1800, over(0.9, index())))`
pub struct PredictLinear {
    n: usize,
    seconds: f64,
    rebuild: Option<f64>,
    state: Mutex<Trend>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct Trend {
    points: VecDeque<(f64, f64)>,
    /// The line (intercept, slope) and when (processing time) it was fitted.
    line: Option<((f64, f64), f64)>,
}

/// Ordinary least squares through `points`: (intercept, slope); None when
/// every point has the same time.
fn fit(points: &VecDeque<(f64, f64)>) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (x_avg, y_avg) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - x_avg) * (y - y_avg), sxx + (x - x_avg).powi(2))
    });
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((y_avg - slope * x_avg, slope))
}

impl PredictLinear {
    /// Adds a point; the line to predict with, if there is one.
    fn line(&self, s: &mut Trend, point: (f64, f64), now: f64) -> Option<(f64, f64)> {
        s.points.push_back(point);
        while s.points.len() > self.n {
            s.points.pop_front();
        }
        if s.points.len() < 2 {
            return None;
        }
        let fresh = match (s.line, self.rebuild) {
            (Some((line, fitted)), Some(every)) if now - fitted <= every => return Some(line),
            _ => fit(&s.points)?,
        };
        s.line = Some((fresh, now));
        Some(fresh)
    }
}

impl Node for PredictLinear {
    node_core!("predict_linear");
    keep_state_in!(state);

    fn describe(&self) -> String {
        match self.rebuild {
            None => format!("predict_linear({}, {})", self.n, self.seconds),
            Some(r) => format!("predict_linear({}, {}, rebuild={r})", self.n, self.seconds),
        }
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(PredictLinear {
            n: self.n,
            seconds: self.seconds,
            rebuild: self.rebuild,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({"points": s.points, "line": s.line}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let points = serde_json::from_value(state.get("points").cloned().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let line = serde_json::from_value(state.get("line").cloned().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        *lock(&self.state) = Trend { points, line };
        Ok(())
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let (Some(t), Some(m)) = (event.time, event.metric) else {
            return Ok(());
        };
        let t = t.as_f64();
        let line = self.line(&mut lock(&self.state), (t, m.as_f64()), ctx.now());
        if let Some((intercept, slope)) = line {
            let mut e = Event::clone(event);
            e.metric = Some(Number::Float(intercept + (t + self.seconds) * slope));
            emit(self, ctx, &Arc::new(e));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- interpolate_constant

fn build_interpolate_constant(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| InterpolateConstant {
        interval,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `interpolate_constant(interval)`; state: the latest event and when the
/// next copy is due.
///
/// `interpolate_constant(10, index())`
pub struct InterpolateConstant {
    interval: f64,
    alarm: Alarm,
    state: Mutex<Held>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct Held {
    latest: Option<Arc<Event>>,
    next: Option<f64>,
}

impl InterpolateConstant {
    fn due(&self, s: &Held) -> Option<f64> {
        s.next
    }

    /// A copy of the latest event dated `now`, if one is due; stops once
    /// the latest event expired.
    fn copy_due(&self, s: &mut Held, now: f64) -> Option<Arc<Event>> {
        let next = s.next.filter(|t| now >= *t)?;
        let latest = s.latest.clone().filter(|e| !e.is_expired(now));
        let Some(latest) = latest else {
            *s = Held::default();
            return None;
        };
        // The next tick after now, keeping the phase.
        let missed = ((now - next) / self.interval).floor();
        s.next = Some(next + (missed + 1.0) * self.interval);
        Some(dated(&latest, now))
    }
}

fn dated(e: &Event, now: f64) -> Arc<Event> {
    let mut e = e.clone();
    e.time = Some(Number::Float(now));
    Arc::new(e)
}

impl Node for InterpolateConstant {
    node_core!("interpolate_constant");
    keep_state_in!(state);
    wakes_at!(due);

    fn describe(&self) -> String {
        format!("interpolate_constant({})", self.interval)
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| InterpolateConstant {
            interval: self.interval,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let latest = s.latest.as_deref().map(super::event_to_json);
        Some(serde_json::json!({"latest": latest, "next": s.next}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let latest = match state.get("latest") {
            None | Some(serde_json::Value::Null) => None,
            Some(e) => Some(super::event_from_json(e.clone())?),
        };
        let next = state.get("next").and_then(|v| v.as_f64());
        *lock(&self.state) = Held { latest, next };
        Ok(())
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        if event.is_expired(now) {
            *lock(&self.state) = Held::default();
            emit(self, ctx, event);
            return Ok(());
        }
        let first = {
            let mut s = lock(&self.state);
            s.latest = Some(Arc::clone(event));
            let first = s.next.is_none();
            if first {
                s.next = Some(now + self.interval);
                self.alarm.set(&ctx.timers, s.next);
            }
            first
        };
        if first {
            emit(self, ctx, &dated(event, now));
        }
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let copy = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.copy_due(s, now),
            |s| self.due(s),
        );
        if let Some(e) = copy {
            emit(self, ctx, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::carry_over;
    use crate::testing::{ev, Harness};
    use crate::vals;

    #[test]
    fn clock_skew_compares_each_time_to_the_median_host_clock() {
        // Riemann's clock-skew-test, shifted to start at 1000 so the
        // events' times (the hosts' clocks) stay behind the harness clock.
        let h = Harness::at(1000.0);
        let out = h.sink("out");
        let node = h.build("clock_skew", vals![], vec![], vec![out.node()]);
        for (step, (host, t)) in [("foo", 1), ("bar", 3), ("baz", 9), ("foo", 1), ("foo", 100)]
            .into_iter()
            .enumerate()
        {
            h.advance_to(&node, 1000.0 + step as f64);
            h.send(
                &node,
                ev(&format!(r#"{{"host":"{host}","time":{t},"ttl":1e6}}"#)),
            );
        }
        let skews: Vec<f64> = out.metrics().into_iter().map(Option::unwrap).collect();
        assert_eq!(skews, [0.0, 0.0, 5.0, -4.0, 89.0]);
    }

    #[test]
    fn clock_skew_forgets_expired_hosts_and_passes_events_without_time() {
        let h = Harness::at(100.0);
        let out = h.sink("out");
        let node = h.build("clock_skew", vals![], vec![], vec![out.node()]);
        h.send(&node, ev(r#"{"host":"a","time":100,"ttl":5}"#));
        h.advance_to(&node, 110.0);
        // a expired: b is alone, so its skew is 0.
        h.send(&node, ev(r#"{"host":"b","time":50,"ttl":100}"#));
        h.send(&node, ev(r#"{"host":"c","state":"expired"}"#));
        assert_eq!(out.metrics(), [Some(0.0), Some(0.0), None]);
    }

    fn point(t: f64, m: f64) -> Event {
        ev(&format!(r#"{{"metric":{m},"time":{t}}}"#))
    }

    #[test]
    fn predict_linear_extrapolates_the_least_squares_line() {
        // (n, seconds, rebuild, points, predictions): Riemann's predict-linear-test.
        type Case<'a> = (i64, i64, Option<i64>, &'a [(f64, f64)], &'a [f64]);
        let cases: &[Case] = &[
            (10, 600, None, &[(1.0, 1.0)], &[]),
            (
                5,
                60,
                None,
                &[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (5.0, 5.0)],
                &[62.0, 63.0, 64.0, 65.0],
            ),
            (2, 86400, None, &[(0.0, 100.0), (43200.0, 50.0)], &[-50.0]),
            (2, 60, None, &[(0.0, 100.0), (1.0, 100.0)], &[100.0]),
            (
                5,
                60,
                Some(60),
                &[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (5.0, 5.0)],
                &[62.0, 63.0, 64.0, 65.0],
            ),
            (
                2,
                60,
                Some(60),
                &[(0.0, 100.0), (1.0, 100.0), (2.0, 500.0)],
                &[100.0, 100.0],
            ),
            // Refitted once `rebuild` seconds have passed.
            (
                2,
                60,
                Some(1),
                &[(0.0, 100.0), (1.0, 100.0), (3.0, 500.0)],
                &[100.0, 12500.0],
            ),
            // The same time twice: no line.
            (2, 60, None, &[(1.0, 1.0), (1.0, 2.0)], &[]),
        ];
        for (n, s, rebuild, points, expected) in cases {
            let h = Harness::new();
            let out = h.sink("out");
            let named = rebuild.map(|r| vec![("rebuild".to_owned(), r.into())]);
            let node = h.build(
                "predict_linear",
                vals![*n, *s],
                named.unwrap_or_default(),
                vec![out.node()],
            );
            h.send_all(&node, points.iter().map(|(t, m)| point(*t, *m)));
            let got: Vec<f64> = out.metrics().into_iter().map(Option::unwrap).collect();
            assert_eq!(got.len(), expected.len(), "{n} {s} {rebuild:?}: {got:?}");
            for (g, x) in got.iter().zip(expected.iter()) {
                assert!((g - x).abs() < 1e-9, "{n} {s} {rebuild:?}: {got:?}");
            }
        }
    }

    #[test]
    fn interpolate_constant_repeats_the_latest_until_an_expired_event() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("interpolate_constant", vals![10], vec![], vec![out.node()]);
        h.send(&node, ev(r#"{"metric":1,"time":0}"#));
        h.advance_to(&node, 15.0);
        h.send(&node, ev(r#"{"metric":2,"time":15}"#));
        h.advance_to(&node, 30.0);
        h.send(&node, ev(r#"{"metric":3,"state":"expired","time":30}"#));
        h.advance_to(&node, 100.0);
        let got: Vec<(f64, f64)> = out
            .events()
            .iter()
            .map(|e| (e.time.unwrap().as_f64(), e.metric.unwrap().as_f64()))
            .collect();
        assert_eq!(
            got,
            [
                (0.0, 1.0),
                (10.0, 1.0),
                (20.0, 2.0),
                (30.0, 2.0),
                (30.0, 3.0)
            ]
        );
    }

    #[test]
    fn interpolate_constant_stops_once_the_latest_event_expires() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("interpolate_constant", vals![10], vec![], vec![out.node()]);
        h.send(&node, ev(r#"{"metric":1,"time":0,"ttl":25}"#));
        h.advance_to(&node, 100.0);
        assert_eq!(out.metrics(), [Some(1.0), Some(1.0), Some(1.0)]);
        // The next event starts the copies again.
        h.send(&node, ev(r#"{"metric":2,"time":100}"#));
        assert_eq!(out.metrics(), [Some(2.0)]);
    }

    #[test]
    fn reload_keeps_state_and_other_arguments_start_afresh() {
        let h = Harness::new();
        let out = h.sink("out");
        let old = h.build("predict_linear", vals![3, 10], vec![], vec![out.node()]);
        h.send(&old, point(1.0, 1.0));
        let kept = h.build("predict_linear", vals![3, 10], vec![], vec![out.node()]);
        carry_over(&*kept, &*old);
        let changed = h.build("predict_linear", vals![4, 10], vec![], vec![out.node()]);
        carry_over(&*changed, &*kept);
        h.send(&kept, point(2.0, 2.0));
        assert_eq!(out.metrics(), [Some(12.0)]);
        h.send(&changed, point(3.0, 3.0));
        assert!(out.metrics().is_empty());
    }

    #[test]
    fn checkpoints_restore_the_state() {
        let h = Harness::new();
        let out = h.sink("out");
        for (name, args) in [
            ("clock_skew", vals![]),
            ("predict_linear", vals![3, 10]),
            ("interpolate_constant", vals![10]),
        ] {
            let node = h.build(name, args.clone(), vec![], vec![out.node()]);
            h.send(&node, point(h.now(), 1.0));
            let saved = node.save_state().unwrap();
            let copy = h.build(name, args, vec![], vec![out.node()]);
            copy.load_state(saved.clone()).unwrap();
            assert_eq!(copy.save_state().unwrap(), saved, "{name}");
        }
    }
}
