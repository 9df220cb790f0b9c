//! Time-driven nodes: rates, samples, throttles and timers.
//!
//! | function | example |
//! |---|---|
//! | `rate(interval, *children)` | `rate(5, index())` |
//! | `percentiles(interval, points, *children)` | `percentiles(10, [0.5, 0.95, 0.99], index())` |
//! | `throttle(n, dt, *children)` | `throttle(5, 3600, email("ops@example.com"))` |
//! | `rollup(n, dt, *children)` | `rollup(3, 600, email("ops@example.com"))` |
//! | `batch(n, dt, *children)` | `batch(100, 1, printer())` |
//! | `coalesce(dt=1, *children)` | `coalesce(5, smap(folds.sum, index()))` |
//! | `fill_in(dt, default, *children)` | `fill_in(60, {"service": "heartbeat", "state": "critical"}, index())` |
//! | `fill_in_last(dt, fields, *children)` | `fill_in_last(60, {"state": "critical"}, index())` |
//! | `ddt(dt=None, *children)` | `ddt(index())` |
//! | `apdex(dt, satisfied, tolerated, *children)` | `apdex(10, "metric < 0.2", "metric < 0.8", index())` |
//!
//! Every node here that keeps a timer sets its [`Alarm`] to the next
//! deadline its state needs and does its work in [`Node::wake`] and on
//! events (so a clock jump of several intervals is caught up in one go).
//! Intervals follow the processing time (`ctx.now()`) unless said
//! otherwise; most begin with the first event after a quiet spell, so an
//! idle node costs nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::entry::Entry;
use super::filter::{predicate, Predicate};
use super::value::{set_field, Args, BuildError, Value};
use super::{
    arcs, emit, emit_list, event_to_json, events_to_json, lock, saved, saved_event, Node, NodeCore,
    NodeError, NodeRef,
};
use crate::event::{Event, EventKey, Number, DEFAULT_TTL};
use crate::streams::context::Context;
use crate::streams::timers::{timed, Alarm};
use crate::{flushes_at, keep_state_in, node_core, wakes_at};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "rate",
        params: "interval, *children",
        summary: "Every `interval` seconds, forward the last event with its metric set to the sum of the interval's metrics divided by `interval`.",
        details: "Processing time (Riemann's `rate`). Reports begin with the first event and come every `interval` seconds: the last event with time = the report's time and metric = the sum of the metrics since the previous report / `interval` (0 when none came). They go on while the report's time is not past the latest event's time + ttl, and stop at an expired event; each report's ttl is the event's minus `interval` for each report made from it before, so reports expire with it (as Riemann's). An event without a ttl counts as ttl 60, where Riemann's would report forever. Events without a metric (or with inf/nan) are not summed but do extend the reports. After a clock jump, at most 10 reports: the first, then the latest.",
        example: "rate(5, index())",
        build: build_rate,
    },
    Entry {
        name: "percentiles",
        params: "interval, points, *children",
        summary: "Every `interval` seconds, forward one list with, for each quantile in `points`, the interval's event at that quantile.",
        details: "Processing time (Riemann's `percentiles`, nearest rank: the event at index min(n-1, floor(n*point)) of the metrics sorted). Each event's service becomes the original service + \" \" + the point (\"api 0.95\") and its time the interval's end. Nothing is forwarded for an interval without events; events without a metric are ignored. `points` is a list of numbers from 0 to 1.",
        example: "percentiles(10, [0.5, 0.95, 0.99], index())",
        build: build_percentiles,
    },
    Entry {
        name: "throttle",
        params: "n, dt, *children",
        summary: "Forward at most `n` events per `dt` seconds; drop the others.",
        details: "Processing time, fixed windows of `dt` starting with the first event after the previous window ended (Riemann's `throttle`). Passing events are not delayed; dropped ones are not errors.",
        example: r#"throttle(5, 3600, email("ops@example.com"))"#,
        build: build_throttle,
    },
    Entry {
        name: "rollup",
        params: "n, dt, *children",
        summary: "Forward the first `n` events per `dt` seconds at once; hold the rest and forward them as one list when the period ends.",
        details: "Processing time (Riemann's `rollup`). A period begins with the first event after a quiet one; the held list, forwarded when the period ends (on the clock, without waiting for an event), counts as one of the next period's `n`. Children that take lists, like `email`, get the held events as one list: one mail. Two differences from Riemann's, whose periods are fixed `dt` windows from when the stream was made: a period starts with its first event, so a quiet node costs nothing; and the first `n` events go out as events, not one-element lists (a list-taking child like `email` still sends one mail each).",
        example: r#"rollup(3, 600, email("ops@example.com"))"#,
        build: build_rollup,
    },
    Entry {
        name: "batch",
        params: "n, dt, *children",
        summary: "Forward events as lists of up to `n`: when `n` are gathered, and at the end of each `dt`-second window that gathered some.",
        details: "Processing time, fixed windows of `dt` seconds aligned to the epoch (Riemann's `batch`, whose windows are aligned to when the stream was made). A list goes out when `n` events are gathered, and what a window gathered after that goes out at the window's end, on the clock, without waiting for an event.",
        example: "batch(100, 1, printer())",
        build: build_batch,
    },
    Entry {
        name: "coalesce",
        params: "dt=1, *children",
        summary: "Remember the latest event per (host, service); every `dt` seconds forward the list of all of them.",
        details: "Processing time (Riemann's `coalesce`, default every second). An expired event (state \"expired\", or time + ttl past) is in the list once, then forgotten; with nothing remembered the node falls quiet until the next event. The list is ordered by host, then service.",
        example: "coalesce(5, smap(folds.sum, index()))",
        build: build_coalesce,
    },
    Entry {
        name: "fill_in",
        params: "dt, default, *children",
        summary: "Forward every event; when none has arrived for `dt` seconds, forward `default` (a dict of fields), again every `dt` seconds until one does.",
        details: "Processing time (Riemann's `fill-in`). Filled-in events have time = now. The timer starts when the node starts, so a stream that never sends is filled in too. After a clock jump, one event is filled in, not one per missed interval.",
        example: r#"fill_in(60, {"service": "heartbeat", "state": "critical"}, index())"#,
        build: build_fill_in,
    },
    Entry {
        name: "fill_in_last",
        params: "dt, fields, *children",
        summary: "Forward every event; when none has arrived for `dt` seconds, forward a copy of the last one with `fields` (a dict) applied, every `dt` seconds until one does.",
        details: "Processing time (Riemann's `fill-in-last`). Filled-in events have time = now. Nothing is filled in before the first event. After a clock jump, one event is filled in, not one per missed interval.",
        example: r#"fill_in_last(60, {"state": "critical"}, index())"#,
        build: build_fill_in_last,
    },
    Entry {
        name: "ddt",
        params: "dt=None, *children",
        summary: "Forward the derivative of the metric: (m2 - m1) / (t2 - t1) between consecutive events, or every `dt` seconds between the newest events of consecutive reports.",
        details: "Event time for the derivative: t is each event's time; events without a metric or a time are not used. Without `dt` (Riemann's `ddt-events`), each event after the first is forwarded with the derivative since the previous one; an event not later than the previous one forwards nothing (one at the same time replaces it; Riemann's would use an older one). With `dt` (Riemann's `ddt` with an interval), reports begin at the first event (which only becomes the baseline) and come every `dt` seconds of processing time: the newest event, with time = the report's time and the derivative since the event of the previous report; an interval without events reports 0. Reports go on while the report's time is not past the latest event's time + ttl (ttl 60 when it has none, where Riemann's reports forever) and stop at an expired event; the next event starts them again.",
        example: "ddt(index())",
        build: build_ddt,
    },
    Entry {
        name: "apdex",
        params: "dt, satisfied, tolerated, *children",
        summary: "Every `dt` seconds, forward the interval's last event with its metric set to (satisfied + tolerated / 2) / total.",
        details: "Processing time (Riemann's `apdex`). `satisfied` and `tolerated` are query strings or predicates; an event matching neither counts in the total only; expired events are ignored. Nothing is forwarded for an interval without events. The forwarded event keeps the last event's fields (as Riemann); name it with `with_` if needed.",
        example: r#"apdex(10, "metric < 0.2", "metric < 0.8", index())"#,
        build: build_apdex,
    },
];

/// At most this many reports per node when the clock jumps many intervals.
const MAX_CATCH_UP: u64 = 10;

/// Of reports 1..=`n` after a clock jump, the first of the latest ones
/// made: report 1 and reports `from..=n` make at most [`MAX_CATCH_UP`].
fn latest_reports_from(n: u64) -> u64 {
    (n + 2).saturating_sub(MAX_CATCH_UP).max(2)
}

/// How many whole intervals of `dt` since `start` have ended by `now`.
fn ended(start: f64, dt: f64, now: f64) -> u64 {
    // The epsilon absorbs rounding in sums like 0.1 + 0.2.
    ((now - start) / dt + 1e-9).floor().max(0.0) as u64
}

/// For nodes reporting once per interval, intervals beginning with the
/// first event after a quiet one: if the interval that began at `start`
/// has ended by `now`, its end, moving `start` on: to the next interval
/// when this one had events and the next is still running, else to none.
pub(crate) fn close(start: &mut Option<f64>, dt: f64, now: f64, had_events: bool) -> Option<f64> {
    let s = (*start)?;
    let k = ended(s, dt, now);
    if k == 0 {
        return None;
    }
    let end = s + dt;
    *start = (had_events && k == 1).then_some(end);
    Some(end)
}

/// The first tick after `due` that is strictly later than `now`, keeping
/// the phase of the `dt` period.
fn next_after(due: f64, dt: f64, now: f64) -> f64 {
    due + (ended(due, dt, now) + 1) as f64 * dt
}

fn finite_metric(e: &Event) -> Option<f64> {
    e.metric.map(Number::as_f64).filter(|m| m.is_finite())
}

fn with_metric_and_time(e: &Event, metric: f64, time: f64) -> Arc<Event> {
    let mut e = e.clone();
    e.metric = Some(Number::Float(metric));
    e.time = Some(Number::Float(time));
    Arc::new(e)
}

// ---------------------------------------------------------------- rate

fn build_rate(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Rate {
        interval,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `rate(interval)`; state: the reporting period and its sum, and the last
/// event (the template of the reports, which go on until it expires).
///
/// `rate(5, index())`
pub struct Rate {
    interval: f64,
    alarm: Alarm,
    state: Mutex<RateState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct RateState {
    /// When reporting began: reports are due at `start + k * interval`.
    /// None while quiet.
    start: Option<f64>,
    /// The metrics since the last report.
    sum: f64,
    /// Whether metrics came since the last report (a flush reports them).
    pending: bool,
    last: Option<Arc<Event>>,
    /// Reports made from `last` since it arrived: each takes `interval`
    /// off its ttl.
    reports_from_last: u64,
    /// The latest event's time + ttl: reports stop after it.
    expires: f64,
}

impl Rate {
    /// When the next report is due.
    fn due(&self, s: &RateState) -> Option<f64> {
        s.start.map(|t| t + self.interval)
    }

    /// The reports due by `now`: one at each interval's end while it is
    /// not later than the last event's expiry (Riemann's
    /// `periodically-until-expired`), the first carrying the sum.
    fn roll(&self, s: &mut RateState, now: f64) -> Vec<Arc<Event>> {
        let (Some(start), Some(last)) = (s.start, s.last.clone()) else {
            return Vec::new();
        };
        let dt = self.interval;
        let k = ended(start, dt, now);
        if k == 0 {
            return Vec::new();
        }
        let end = |i: u64| start + i as f64 * dt;
        let alive = ended(start, dt, s.expires).min(k);
        let report = |i: u64, metric: f64| {
            let mut e = (*with_metric_and_time(&last, metric, end(i))).clone();
            // The ttl goes down by the interval at each report, so the
            // reports expire with the event they stand for (Riemann's rate).
            let reports = (s.reports_from_last + i) as f64;
            e.ttl = last.ttl.map(|ttl| ttl - (reports - 1.0) * dt);
            Arc::new(e)
        };
        let mut out = Vec::new();
        if alive >= 1 {
            out.push(report(1, s.sum / dt));
            let from = latest_reports_from(alive);
            out.extend((from..=alive).map(|i| report(i, 0.0)));
            s.sum = 0.0;
            s.pending = false;
            s.reports_from_last += alive;
        }
        s.start = (alive == k).then(|| end(k));
        out
    }
}

impl Node for Rate {
    node_core!("rate");
    keep_state_in!(state);

    /// Reports the current interval now if metrics came in it.
    fn flush(&self, ctx: &Context) {
        let due = {
            let s = lock(&self.state);
            s.pending.then(|| self.due(&s)).flatten()
        };
        super::flush_due(self, ctx, due);
    }

    fn describe(&self) -> String {
        format!("rate({})", self.interval)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({
            "start": s.start,
            "sum": s.sum,
            "pending": s.pending,
            "reports_from_last": s.reports_from_last,
            "last": s.last.as_deref().map(super::event_to_json),
            "expires": s.expires,
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let last = match state.get("last") {
            Some(serde_json::Value::Null) | None => None,
            Some(e) => Some(super::event_from_json(e.clone())?),
        };
        let f = |k: &str| state.get(k).and_then(|v| v.as_f64());
        *lock(&self.state) = RateState {
            start: f("start"),
            sum: f("sum").unwrap_or(0.0),
            pending: state
                .get("pending")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            reports_from_last: state
                .get("reports_from_last")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            last,
            expires: f("expires").unwrap_or(0.0),
        };
        Ok(())
    }
    wakes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Rate {
            interval: self.interval,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let out = {
            let mut s = lock(&self.state);
            let out = self.roll(&mut s, now);
            if let Some(m) = finite_metric(event) {
                s.sum += m;
                s.pending = true;
                s.last = Some(Arc::clone(event));
                s.reports_from_last = 0;
            }
            if s.last.is_some() {
                // Any event extends the reports, and an expired one ends
                // them (Riemann's `periodically-until-expired`).
                let t = event.time.map_or(now, Number::as_f64);
                s.expires = t + event.ttl.unwrap_or(DEFAULT_TTL);
                if event.is_expired(now) {
                    s.start = None;
                } else {
                    s.start.get_or_insert(now);
                }
            }
            self.alarm.set(&ctx.timers, self.due(&s));
            out
        };
        out.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let out = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        out.iter().for_each(|e| emit(self, ctx, e));
    }
}

// ---------------------------------------------------------------- percentiles

fn build_percentiles(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    let points = match args.value("points")? {
        Value::List(items) if !items.is_empty() => items,
        v => {
            return Err(args.type_error(format_args!(
                "`points` must be a non-empty list of quantiles like [0.5, 0.95, 0.99], not {}",
                v.type_name()
            )))
        }
    };
    let mut parsed = Vec::new();
    for p in points {
        match p.as_f64() {
            Some(q) if (0.0..=1.0).contains(&q) => parsed.push((q, p.to_string())),
            _ => {
                return Err(args.error(format_args!(
                    "each of `points` must be a number from 0 to 1, not {p}"
                )))
            }
        }
    }
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Percentiles {
        interval,
        alarm,
        points: parsed,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `percentiles(interval, points)`; state: the current interval and its
/// events.
///
/// `percentiles(10, [0.5, 0.95, 0.99], index())`
pub struct Percentiles {
    interval: f64,
    alarm: Alarm,
    /// Each quantile and how it is written in service names.
    points: Vec<(f64, String)>,
    state: Mutex<SampleState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct SampleState {
    start: Option<f64>,
    events: Vec<(f64, Arc<Event>)>,
}

impl Percentiles {
    fn due(&self, s: &SampleState) -> Option<f64> {
        s.start.map(|t| t + self.interval)
    }

    fn roll(&self, s: &mut SampleState, now: f64) -> Vec<Arc<Event>> {
        let had = !s.events.is_empty();
        let Some(end) = close(&mut s.start, self.interval, now, had) else {
            return Vec::new();
        };
        let mut sample = std::mem::take(&mut s.events);
        sample.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = sample.len();
        if n == 0 {
            return Vec::new();
        }
        self.points
            .iter()
            .map(|(q, label)| {
                let i = ((n as f64 * q).floor() as usize).min(n - 1);
                let mut e = Event::clone(&sample[i].1);
                // Riemann's `(str service " " point)`: " 0.5" without one.
                let service = e.service.as_deref().unwrap_or("");
                e.service = Some(format!("{service} {label}").into());
                e.time = Some(Number::Float(end));
                Arc::new(e)
            })
            .collect()
    }
}

impl Node for Percentiles {
    node_core!("percentiles");
    keep_state_in!(state);

    fn describe(&self) -> String {
        let points: Vec<&str> = self.points.iter().map(|(_, l)| l.as_str()).collect();
        format!("percentiles({}, [{}])", self.interval, points.join(", "))
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let events: Vec<_> = s
            .events
            .iter()
            .map(|(m, e)| serde_json::json!([m, event_to_json(e)]))
            .collect();
        Some(serde_json::json!({"start": s.start, "events": events}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let events: Vec<(f64, Event)> = saved(&state, "events")?;
        *lock(&self.state) = SampleState {
            start: saved(&state, "start")?,
            events: events.into_iter().map(|(m, e)| (m, Arc::new(e))).collect(),
        };
        Ok(())
    }
    wakes_at!(due);
    flushes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Percentiles {
            interval: self.interval,
            alarm,
            points: self.points.clone(),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let out = {
            let mut s = lock(&self.state);
            let out = self.roll(&mut s, now);
            if let Some(m) = finite_metric(event) {
                s.start.get_or_insert(now);
                s.events.push((m, Arc::clone(event)));
            }
            self.alarm.set(&ctx.timers, self.due(&s));
            out
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let out = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        emit_list(self, ctx, &out);
    }
}

// ---------------------------------------------------------------- throttle

fn build_throttle(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Throttle {
        n,
        dt,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `throttle(n, dt)`; state: the current window's start and how many
/// events it let through.
///
/// `throttle(5, 3600, email("ops@example.com"))`
pub struct Throttle {
    n: usize,
    dt: f64,
    state: Mutex<(Option<f64>, usize)>,
    core: NodeCore,
}

impl Node for Throttle {
    node_core!("throttle");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("throttle({}, {})", self.n, self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let (start, sent) = *lock(&self.state);
        Some(serde_json::json!({"start": start, "sent": sent}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = (saved(&state, "start")?, saved(&state, "sent")?);
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Throttle {
            n: self.n,
            dt: self.dt,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let pass = {
            let mut s = lock(&self.state);
            if s.0.is_none_or(|start| ended(start, self.dt, now) > 0) {
                *s = (Some(now), 0);
            }
            s.1 += 1;
            s.1 <= self.n
        };
        if pass {
            emit(self, ctx, event);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- rollup

fn build_rollup(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Rollup {
        n,
        dt,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `rollup(n, dt)`; state: the current period, how many it forwarded, and
/// the events held for its end.
///
/// `rollup(3, 600, email("ops@example.com"))`
pub struct Rollup {
    n: usize,
    dt: f64,
    alarm: Alarm,
    state: Mutex<RollupState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct RollupState {
    start: Option<f64>,
    sent: usize,
    held: Vec<Arc<Event>>,
}

impl Rollup {
    fn due(&self, s: &RollupState) -> Option<f64> {
        s.start.map(|t| t + self.dt)
    }

    fn roll(&self, s: &mut RollupState, now: f64) -> Vec<Arc<Event>> {
        let had = !s.held.is_empty();
        if close(&mut s.start, self.dt, now, had).is_none() {
            return Vec::new();
        }
        // The held list is the next period's first forward.
        s.sent = usize::from(s.start.is_some());
        std::mem::take(&mut s.held)
    }
}

impl Node for Rollup {
    node_core!("rollup");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("rollup({}, {})", self.n, self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({
            "start": s.start,
            "sent": s.sent,
            "held": events_to_json(&s.held),
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = RollupState {
            start: saved(&state, "start")?,
            sent: saved(&state, "sent")?,
            held: arcs(saved(&state, "held")?),
        };
        Ok(())
    }
    wakes_at!(due);
    flushes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Rollup {
            n: self.n,
            dt: self.dt,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} held", lock(&self.state).held.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let (held, pass) = {
            let mut s = lock(&self.state);
            let held = self.roll(&mut s, now);
            s.start.get_or_insert(now);
            let pass = s.sent < self.n;
            if pass {
                s.sent += 1;
            } else {
                s.held.push(Arc::clone(event));
            }
            self.alarm.set(&ctx.timers, self.due(&s));
            (held, pass)
        };
        emit_list(self, ctx, &held);
        if pass {
            emit(self, ctx, event);
        }
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let held = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        emit_list(self, ctx, &held);
    }
}

// ---------------------------------------------------------------- batch

fn build_batch(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Batch {
        n,
        dt,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `batch(n, dt)`; state: the list being gathered and the end of the
/// `dt` window it is gathered in.
///
/// `batch(100, 1, printer())`
pub struct Batch {
    n: usize,
    dt: f64,
    alarm: Alarm,
    state: Mutex<(Option<f64>, Vec<Arc<Event>>)>,
    core: NodeCore,
}

impl Batch {
    fn due(&self, s: &(Option<f64>, Vec<Arc<Event>>)) -> Option<f64> {
        s.0
    }

    /// The list of the window ended by `now`, if any.
    fn overdue(&self, s: &mut (Option<f64>, Vec<Arc<Event>>), now: f64) -> Vec<Arc<Event>> {
        match s.0 {
            Some(end) if now >= end - 1e-9 => {
                s.0 = None;
                std::mem::take(&mut s.1)
            }
            _ => Vec::new(),
        }
    }
}

impl Node for Batch {
    node_core!("batch");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("batch({}, {})", self.n, self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({"end": s.0, "events": events_to_json(&s.1)}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = (saved(&state, "end")?, arcs(saved(&state, "events")?));
        Ok(())
    }
    wakes_at!(due);
    flushes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Batch {
            n: self.n,
            dt: self.dt,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} gathered", lock(&self.state).1.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let (due, full) = {
            let mut s = lock(&self.state);
            let due = self.overdue(&mut s, now);
            // Fixed windows of `dt` since the epoch; a full list goes out
            // at once and the window's end still flushes what follows.
            s.0.get_or_insert_with(|| next_after(0.0, self.dt, now));
            s.1.push(Arc::clone(event));
            let full = if s.1.len() >= self.n {
                std::mem::take(&mut s.1)
            } else {
                Vec::new()
            };
            self.alarm.set(&ctx.timers, self.due(&s));
            (due, full)
        };
        emit_list(self, ctx, &due);
        emit_list(self, ctx, &full);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let due = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.overdue(s, now),
            |s| self.due(s),
        );
        emit_list(self, ctx, &due);
    }
}

// ---------------------------------------------------------------- coalesce

fn build_coalesce(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = match args.opt("dt") {
        None | Some(Value::None) => 1.0,
        Some(v) => {
            let x = v.as_f64().ok_or_else(|| {
                args.type_error(format_args!("`dt` must be a number, not {}", v.type_name()))
            })?;
            if !(x > 0.0 && x.is_finite()) {
                return Err(args.error(format_args!("`dt` must be greater than 0, not {x}")));
            }
            x
        }
    };
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Coalesce {
        dt,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `coalesce(dt)`; state: the latest event per (host, service) and when the
/// next list is due.
///
/// `coalesce(5, smap(folds.sum, index()))`
pub struct Coalesce {
    dt: f64,
    alarm: Alarm,
    state: Mutex<CoalesceState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct CoalesceState {
    due: Option<f64>,
    latest: BTreeMap<EventKey, Arc<Event>>,
}

impl Coalesce {
    fn due(&self, s: &CoalesceState) -> Option<f64> {
        s.due
    }

    fn roll(&self, s: &mut CoalesceState, now: f64) -> Vec<Arc<Event>> {
        match s.due {
            Some(due) if now >= due => {
                let out: Vec<Arc<Event>> = s.latest.values().cloned().collect();
                s.latest.retain(|_, e| !e.is_expired(now));
                s.due = (!s.latest.is_empty()).then(|| next_after(due, self.dt, now));
                out
            }
            _ => Vec::new(),
        }
    }
}

impl Node for Coalesce {
    node_core!("coalesce");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("coalesce({})", self.dt)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({"due": s.due, "latest": events_to_json(s.latest.values())}))
    }
    /// The latest events are keyed again by their (host, service).
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let latest = arcs(saved(&state, "latest")?);
        *lock(&self.state) = CoalesceState {
            due: saved(&state, "due")?,
            latest: latest.into_iter().map(|e| (e.key(), e)).collect(),
        };
        Ok(())
    }
    wakes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Coalesce {
            dt: self.dt,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} remembered", lock(&self.state).latest.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let out = {
            let mut s = lock(&self.state);
            let out = self.roll(&mut s, now);
            s.latest.insert(event.key(), Arc::clone(event));
            s.due.get_or_insert(now + self.dt);
            self.alarm.set(&ctx.timers, s.due);
            out
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let out = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        emit_list(self, ctx, &out);
    }
}

// ---------------------------------------------------------------- fill_in, fill_in_last

/// A dict argument, checked by applying it to an empty event.
fn fields_arg(args: &mut Args, name: &str) -> Result<Vec<(String, Value)>, BuildError> {
    match args.value(name)? {
        Value::Map(fields) => {
            let mut probe = Event::default();
            for (k, v) in &fields {
                set_field(&mut probe, k, v)
                    .map_err(|e| args.error(format_args!("`{name}`: {e}")))?;
            }
            Ok(fields)
        }
        v => Err(args.type_error(format_args!(
            "`{name}` must be a dict of event fields like {{\"state\": \"critical\"}}, not {}",
            v.type_name()
        ))),
    }
}

fn build_fill_in(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let fields = fields_arg(&mut args, "default")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| FillIn {
        last: false,
        dt,
        alarm,
        fields,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

fn build_fill_in_last(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let fields = fields_arg(&mut args, "fields")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| FillIn {
        last: true,
        dt,
        alarm,
        fields,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `fill_in(dt, default)` and `fill_in_last(dt, fields)` (`last`); state:
/// when the next filler is due, and the last event.
///
/// `fill_in_last(60, {"state": "critical"}, index())`
pub struct FillIn {
    last: bool,
    dt: f64,
    alarm: Alarm,
    fields: Vec<(String, Value)>,
    state: Mutex<FillState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct FillState {
    due: Option<f64>,
    last: Option<Arc<Event>>,
    /// An expired event stopped the filler, as Riemann's cancels its
    /// timer; the next live event starts it again.
    cancelled: bool,
}

impl FillIn {
    fn filler(&self, s: &mut FillState, now: f64) -> Option<Arc<Event>> {
        let Some(due) = s.due else {
            // fill_in's timer starts with the node.
            if !self.last && !s.cancelled {
                s.due = Some(now + self.dt);
            }
            return None;
        };
        if now < due {
            return None;
        }
        s.due = Some(next_after(due, self.dt, now));
        let mut e = match (&s.last, self.last) {
            (Some(last), true) => Event::clone(last),
            _ => Event::default(),
        };
        for (k, v) in &self.fields {
            // Checked when built.
            let _ = set_field(&mut e, k, v);
        }
        e.time = Some(Number::Float(now));
        Some(Arc::new(e))
    }
}

impl Node for FillIn {
    keep_state_in!(state);

    fn kind(&self) -> &'static str {
        if self.last {
            "fill_in_last"
        } else {
            "fill_in"
        }
    }
    fn describe(&self) -> String {
        format!(
            "{}({}, {})",
            self.kind(),
            self.dt,
            Value::Map(self.fields.clone())
        )
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({
            "due": s.due,
            "last": s.last.as_deref().map(event_to_json),
            "cancelled": s.cancelled,
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = FillState {
            due: saved(&state, "due")?,
            last: saved_event(&state, "last")?,
            cancelled: saved(&state, "cancelled")?,
        };
        Ok(())
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        timed(|alarm| FillIn {
            last: self.last,
            dt: self.dt,
            alarm,
            fields: self.fields.clone(),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn alarm(&self) -> Option<&Alarm> {
        Some(&self.alarm)
    }
    /// fill_in's timer starts with the node (see [`FillIn::filler`]).
    fn start(&self, ctx: &Context) {
        self.alarm.resume();
        self.wake(ctx, ctx.now());
        super::start_children(self, ctx);
    }
    fn stop(&self) {
        self.alarm.stop();
        super::stop_children(self);
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        {
            let mut s = lock(&self.state);
            let now = ctx.now();
            s.cancelled = event.is_expired(now);
            s.due = (!s.cancelled).then_some(now + self.dt);
            if self.last {
                s.last = Some(Arc::clone(event));
            }
            self.alarm.set(&ctx.timers, s.due);
        }
        emit(self, ctx, event);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let filler = self
            .alarm
            .roll(&ctx.timers, &self.state, |s| self.filler(s, now), |s| s.due);
        if let Some(e) = filler {
            emit(self, ctx, &e);
        }
    }
}

// ---------------------------------------------------------------- ddt

fn build_ddt(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = match args.opt_number("dt")? {
        Some(x) if x <= 0.0 => {
            return Err(args.error(format_args!("`dt` must be greater than 0, not {x}")))
        }
        dt => dt,
    };
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Ddt {
        dt,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `ddt()` and `ddt(dt)`; state: the previous (time, metric), and with
/// `dt` the last three events with metrics (Riemann's `ddt-real`).
///
/// `ddt(index())`
pub struct Ddt {
    dt: Option<f64>,
    alarm: Alarm,
    state: Mutex<DdtState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct DdtState {
    /// Without `dt`: the previous event's (time, metric).
    prev: Option<(f64, f64)>,
    /// With `dt`: when the latest report was due (reports come every `dt`
    /// from the first event on); None while quiet.
    start: Option<f64>,
    /// The newest event since the latest report, and the two events the
    /// latest report was taken between.
    newest: Option<Arc<Event>>,
    current: Option<Arc<Event>>,
    previous: Option<Arc<Event>>,
    /// The latest event's time + ttl: reports stop after it.
    expires: f64,
}

/// The derivative from `prev` to (t, m) as an event like `e`, if t is later.
fn derivative(prev: Option<(f64, f64)>, t: f64, m: f64, e: &Event) -> Option<Arc<Event>> {
    let (t0, m0) = prev?;
    (t > t0).then(|| with_metric_and_time(e, (m - m0) / (t - t0), t))
}

/// An event's (time, metric), when it has both.
fn time_and_metric(e: &Event) -> Option<(f64, f64)> {
    Some((e.time?.as_f64(), finite_metric(e)?))
}

impl Ddt {
    fn due(&self, s: &DdtState) -> Option<f64> {
        Some(s.start? + self.dt?)
    }

    /// A report due at `at`: the newest event becomes the current one (if
    /// none came, the current one stays and is also the previous, so the
    /// report is 0), forwarded with the derivative since the previous.
    fn report(s: &mut DdtState, at: f64) -> Option<Arc<Event>> {
        s.previous = match s.newest.take() {
            Some(newest) => s.current.replace(newest),
            None => s.current.clone(),
        };
        let (t2, m2) = time_and_metric(s.current.as_ref()?)?;
        let (t1, m1) = time_and_metric(s.previous.as_ref()?)?;
        let metric = if t2 == t1 { 0.0 } else { (m2 - m1) / (t2 - t1) };
        Some(with_metric_and_time(s.current.as_ref()?, metric, at))
    }

    /// With `dt`: the reports due by `now`, while the latest event lives.
    fn roll(&self, s: &mut DdtState, now: f64) -> Vec<Arc<Event>> {
        let (Some(dt), Some(start)) = (self.dt, s.start) else {
            return Vec::new();
        };
        let k = ended(start, dt, now);
        let alive = ended(start, dt, s.expires).min(k);
        let end = |i: u64| start + i as f64 * dt;
        // Reports made: the first, then the latest (see MAX_CATCH_UP).
        let from = latest_reports_from(alive);
        let mut out = Vec::new();
        let mut i = 1;
        while i <= alive {
            let report = Self::report(s, end(i));
            if i == 1 || i >= from {
                out.extend(report);
            }
            // From the second report on without events, each is the same
            // 0: the skipped ones change nothing.
            i = if i == 2 { from.max(3) } else { i + 1 };
        }
        if k > 0 {
            s.start = (alive == k).then(|| end(k));
        }
        out
    }

    /// With `dt`: an event joins the reports (a first one starts them with
    /// a report of its own, as Riemann's timer fires at once).
    fn add(&self, s: &mut DdtState, event: &Arc<Event>, now: f64) -> Option<Arc<Event>> {
        if time_and_metric(event).is_some() {
            s.newest = Some(Arc::clone(event));
        }
        if s.newest.is_none() && s.current.is_none() {
            return None;
        }
        let t = event.time.map_or(now, Number::as_f64);
        s.expires = t + event.ttl.unwrap_or(DEFAULT_TTL);
        if event.is_expired(now) {
            s.start = None;
            return None;
        }
        if s.start.is_some() {
            return None;
        }
        s.start = Some(now);
        Self::report(s, now)
    }
}

impl Node for Ddt {
    node_core!("ddt");
    keep_state_in!(state);

    fn describe(&self) -> String {
        match self.dt {
            Some(dt) => format!("ddt({dt})"),
            None => "ddt()".to_owned(),
        }
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let event = |e: &Option<Arc<Event>>| e.as_deref().map(event_to_json);
        Some(serde_json::json!({
            "prev": s.prev,
            "start": s.start,
            "newest": event(&s.newest),
            "current": event(&s.current),
            "previous": event(&s.previous),
            "expires": s.expires,
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let event = |key| saved_event(&state, key);
        *lock(&self.state) = DdtState {
            prev: saved(&state, "prev")?,
            start: saved(&state, "start")?,
            newest: event("newest")?,
            current: event("current")?,
            previous: event("previous")?,
            expires: saved(&state, "expires")?,
        };
        Ok(())
    }
    wakes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Ddt {
            dt: self.dt,
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let out = {
            let mut s = lock(&self.state);
            if self.dt.is_some() {
                let mut out = self.roll(&mut s, now);
                out.extend(self.add(&mut s, event, now));
                self.alarm.set(&ctx.timers, self.due(&s));
                out
            } else {
                let Some((t, m)) = time_and_metric(event) else {
                    return Ok(());
                };
                let out = derivative(s.prev, t, m, event);
                if s.prev.is_none_or(|(t0, _)| t >= t0) {
                    s.prev = Some((t, m));
                }
                out.into_iter().collect()
            }
        };
        out.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let out = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        out.iter().for_each(|e| emit(self, ctx, e));
    }
}

// ---------------------------------------------------------------- apdex

fn build_apdex(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let satisfied = predicate(&mut args, "satisfied")?;
    let tolerated = predicate(&mut args, "tolerated")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Apdex {
        dt,
        alarm,
        satisfied,
        tolerated,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `apdex(dt, satisfied, tolerated)`; state: the current interval's counts
/// and last event.
///
/// `apdex(10, "metric < 0.2", "metric < 0.8", index())`
pub struct Apdex {
    dt: f64,
    alarm: Alarm,
    satisfied: Arc<dyn Predicate>,
    tolerated: Arc<dyn Predicate>,
    state: Mutex<ApdexState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct ApdexState {
    start: Option<f64>,
    /// Satisfied, tolerated, total.
    counts: (u64, u64, u64),
    last: Option<Arc<Event>>,
}

impl Apdex {
    fn due(&self, s: &ApdexState) -> Option<f64> {
        s.start.map(|t| t + self.dt)
    }

    fn roll(&self, s: &mut ApdexState, now: f64) -> Option<Arc<Event>> {
        let had = s.last.is_some();
        close(&mut s.start, self.dt, now, had)?;
        let (sat, tol, total) = std::mem::take(&mut s.counts);
        let last = s.last.take()?;
        let mut e = Event::clone(&last);
        e.metric = Some(Number::Float(
            (sat as f64 + tol as f64 / 2.0) / total as f64,
        ));
        Some(Arc::new(e))
    }
}

impl Node for Apdex {
    node_core!("apdex");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!(
            "apdex({}, {}, {})",
            self.dt,
            self.satisfied.describe(),
            self.tolerated.describe()
        )
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({
            "start": s.start,
            "counts": s.counts,
            "last": s.last.as_deref().map(event_to_json),
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = ApdexState {
            start: saved(&state, "start")?,
            counts: saved(&state, "counts")?,
            last: saved_event(&state, "last")?,
        };
        Ok(())
    }
    wakes_at!(due);
    flushes_at!(due);
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Apdex {
            dt: self.dt,
            alarm,
            satisfied: Arc::clone(&self.satisfied),
            tolerated: Arc::clone(&self.tolerated),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        self.wake(ctx, now);
        if event.is_expired(now) {
            return Ok(());
        }
        // User predicates run without the lock held.
        let sat = self.satisfied.test(event)?;
        let tol = !sat && self.tolerated.test(event)?;
        let mut s = lock(&self.state);
        s.start.get_or_insert(now);
        s.counts.0 += u64::from(sat);
        s.counts.1 += u64::from(tol);
        s.counts.2 += 1;
        s.last = Some(Arc::clone(event));
        self.alarm.set(&ctx.timers, self.due(&s));
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let out = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        out.iter().for_each(|e| emit(self, ctx, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::carry_over;
    use crate::testing::{ev, func, shape, Harness};
    use crate::vals;
    use std::sync::atomic::Ordering;

    fn at(t: f64, host: &str, m: f64) -> Event {
        ev(&format!(
            r#"{{"host":"{host}","service":"api","metric":{m},"time":{t}}}"#
        ))
    }

    /// (time, metric) of each event received.
    fn points(events: Vec<Arc<Event>>) -> Vec<(f64, f64)> {
        events
            .iter()
            .map(|e| {
                (
                    e.time.unwrap().as_f64(),
                    e.metric.map_or(f64::NAN, Number::as_f64),
                )
            })
            .collect()
    }

    fn dict(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn rate_sums_per_interval_and_reports_zero_while_the_last_event_lives() {
        let h = Harness::new();
        let out = h.sink("out");
        let rate = h.build("rate", vals![5], vec![], vec![out.node()]);
        h.send_all(&rate, [at(1.0, "a", 10.0), at(3.0, "a", 5.0)]);
        h.send(&rate, ev(r#"{"host":"a","time":4}"#)); // no metric: ignored
        h.advance_to(&rate, 5.9);
        assert!(out.take().is_empty());
        h.advance_to(&rate, 6.0);
        let got = out.events();
        assert_eq!(points(got.clone()), [(6.0, 3.0)]);
        assert_eq!(got[0].host.as_deref(), Some("a"));
        // Two intervals in one tick: both reported, the empty one as 0.
        h.advance_to(&rate, 16.0);
        assert_eq!(points(out.events()), [(11.0, 0.0), (16.0, 0.0)]);
    }

    #[test]
    fn rate_stops_when_the_last_event_expires_and_restarts_with_the_next() {
        let h = Harness::new();
        let out = h.sink("out");
        let rate = h.build("rate", vals![5], vec![], vec![out.node()]);
        h.send(&rate, ev(r#"{"metric":10,"time":1,"ttl":7}"#));
        h.advance_to(&rate, 6.0);
        assert_eq!(points(out.events()), [(6.0, 2.0)]);
        // The event expired at 8: the interval ending at 11 is not reported.
        h.advance_to(&rate, 100.0);
        assert!(out.take().is_empty());
        h.send(&rate, ev(r#"{"metric":5,"time":102}"#));
        h.advance_to(&rate, 107.0);
        assert_eq!(points(out.events()), [(107.0, 1.0)]);
    }

    #[test]
    fn rate_reports_until_the_event_expires_with_its_ttl_going_down() {
        // Riemann's rate-expiration: (rate 1) over {:time 0 :metric 1 :ttl 3}.
        let h = Harness::new();
        let out = h.sink("out");
        let rate = h.build("rate", vals![1], vec![], vec![out.node()]);
        h.send(&rate, ev(r#"{"metric":1,"time":0,"ttl":3}"#));
        h.advance_to(&rate, 5.0);
        let got: Vec<(f64, f64, Option<f64>)> = out
            .events()
            .iter()
            .map(|e| (e.time.unwrap().as_f64(), e.metric.unwrap().as_f64(), e.ttl))
            .collect();
        assert_eq!(
            got,
            [
                (1.0, 1.0, Some(3.0)),
                (2.0, 0.0, Some(2.0)),
                (3.0, 0.0, Some(1.0))
            ]
        );
        // An expired event ends the reports at once.
        h.send(&rate, ev(r#"{"metric":1,"time":6,"ttl":30}"#));
        h.send(&rate, ev(r#"{"state":"expired","time":6.5}"#));
        h.advance_to(&rate, 20.0);
        assert!(out.take().is_empty());
    }

    #[test]
    fn flush_forwards_what_rates_batches_and_windows_hold_and_nothing_else() {
        let h = Harness::new();
        let out = h.sink("out");
        // by → rate → fixed_time_window: each fork's rate reports its
        // partial interval, which the window below it then forwards.
        let window = h.build("fixed_time_window", vals![60], vec![], vec![out.node()]);
        let rate = h.build("rate", vals![10], vec![], vec![window]);
        let by = h.build("by", vals!["host"], vec![], vec![rate]);
        h.send_all(&by, [at(1.0, "a", 30.0), at(2.0, "b", 50.0)]);
        h.advance_to(&by, 5.0);
        assert!(out.take().is_empty());
        h.flush(&by);
        let lists = out.lists();
        assert_eq!(lists.len(), 2, "one window per fork: {lists:?}");
        let mut got: Vec<(f64, f64)> = lists.iter().flat_map(|l| points(l.clone())).collect();
        got.sort_by(|x, y| x.partial_cmp(y).unwrap());
        // Each report has its interval's end as time, and sum / interval.
        assert_eq!(got, [(11.0, 3.0), (12.0, 5.0)]);
        // A rate whose interval saw nothing, a fill_in and an empty batch
        // have nothing to forward.
        let quiet_out = h.sink("quiet");
        let quiet = h.build("rate", vals![1], vec![], vec![quiet_out.node()]);
        h.send(&quiet, at(5.0, "a", 1.0));
        h.advance_to(&quiet, 6.0);
        quiet_out.take();
        h.flush(&quiet);
        assert!(quiet_out.take().is_empty());
        let batch = h.build("batch", vals![10, 60], vec![], vec![out.node()]);
        h.flush(&batch);
        let fill = h.build(
            "fill_in",
            vec![5.into(), dict(&[("service", "x".into())])],
            vec![],
            vec![out.node()],
        );
        h.flush(&fill);
        assert!(out.take().is_empty());
        h.send(&batch, at(7.0, "c", 1.0));
        h.flush(&batch);
        assert_eq!(shape(out.take()), ["[c]"]);
    }

    #[test]
    fn rate_catches_up_at_most_ten_intervals_the_first_and_the_latest() {
        let h = Harness::new();
        let out = h.sink("out");
        let rate = h.build("rate", vals![1], vec![], vec![out.node()]);
        h.send(&rate, ev(r#"{"metric":5,"time":0,"ttl":1000}"#));
        // A stalled server's clock: stepped, every interval would report.
        h.jump_to(&rate, 100.0);
        let times: Vec<f64> = points(out.events()).iter().map(|p| p.0).collect();
        let mut expected = vec![1.0];
        expected.extend((92..=100).map(f64::from));
        assert_eq!(times, expected);
        // It goes on from there.
        h.advance_to(&rate, 101.0);
        assert_eq!(points(out.events()), [(101.0, 0.0)]);
    }

    #[test]
    fn percentiles_by_nearest_rank_with_the_point_in_the_service() {
        let h = Harness::new();
        let out = h.sink("out");
        let qs = Value::List(vec![
            Value::Int(0),
            Value::Float(0.5),
            Value::Float(0.95),
            Value::Int(1),
        ]);
        let node = h.build("percentiles", vec![10.into(), qs], vec![], vec![out.node()]);
        // 1..=20 shuffled, and one without a metric.
        for m in [
            7, 3, 20, 1, 15, 9, 12, 2, 18, 5, 11, 4, 19, 6, 13, 8, 17, 10, 14, 16,
        ] {
            h.send(&node, ev(&format!(r#"{{"service":"api","metric":{m}}}"#)));
        }
        h.send(&node, ev(r#"{"service":"api"}"#));
        h.advance_to(&node, 10.0);
        let lists = out.lists();
        assert_eq!(lists.len(), 1, "one list per interval");
        let got: Vec<(String, f64, f64)> = lists[0]
            .iter()
            .map(|e| {
                (
                    e.service.as_deref().unwrap().to_owned(),
                    e.metric.unwrap().as_f64(),
                    e.time.unwrap().as_f64(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("api 0".to_owned(), 1.0, 10.0),
                ("api 0.5".to_owned(), 11.0, 10.0),
                ("api 0.95".to_owned(), 20.0, 10.0),
                ("api 1".to_owned(), 20.0, 10.0),
            ]
        );
        // An empty interval sends nothing; the next event starts afresh.
        h.advance_to(&node, 40.0);
        assert!(out.take().is_empty());
        h.send(&node, ev(r#"{"metric":3,"time":45}"#));
        h.advance_to(&node, 55.0);
        let got = out.events();
        assert_eq!(points(got.clone()), [(55.0, 3.0); 4]);
        // Riemann's `(str nil " " 0.5)`.
        assert_eq!(got[1].service.as_deref(), Some(" 0.5"));
    }

    #[test]
    fn throttle_passes_n_per_window_and_reload_keeps_the_budget() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("throttle", vals![2, 10], vec![], vec![out.node()]);
        for (t, host) in [
            (0.0, "a"),
            (1.0, "b"),
            (2.0, "c"),
            (9.9, "d"),
            (10.0, "e"),
            (11.0, "f"),
            (12.0, "g"),
        ] {
            h.send(&node, at(t, host, 1.0));
        }
        assert_eq!(out.hosts(), ["a", "b", "e", "f"]);
        let reloaded = h.build("throttle", vals![2, 10], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        assert!(reloaded.stats().kept_state.load(Ordering::Relaxed));
        h.send(&reloaded, at(13.0, "h", 1.0));
        assert!(
            out.hosts().is_empty(),
            "the budget was spent before the reload"
        );
        let changed = h.build("throttle", vals![3, 10], vec![], vec![out.node()]);
        carry_over(&*changed, &*reloaded);
        assert!(!changed.stats().kept_state.load(Ordering::Relaxed));
        h.send(&changed, at(14.0, "i", 1.0));
        assert_eq!(out.hosts(), ["i"]);
        // A fresh instance has its own budget.
        let fresh = reloaded.fresh();
        h.send(&fresh, at(15.0, "j", 1.0));
        assert_eq!(out.hosts(), ["j"]);
    }

    #[test]
    fn rollup_passes_n_then_sends_the_rest_as_one_list_at_the_period_end() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("rollup", vals![2, 10], vec![], vec![out.node()]);
        for (t, host) in [(0.0, "a"), (1.0, "b"), (2.0, "c"), (3.0, "d")] {
            h.send(&node, at(t, host, 1.0));
        }
        assert_eq!(shape(out.take()), ["a", "b"]);
        // No event needed: the clock ends the period.
        h.advance_to(&node, 10.0);
        assert_eq!(shape(out.take()), ["[c,d]"]);
        // The held list was the new period's first forward.
        for (t, host) in [(11.0, "e"), (12.0, "f")] {
            h.send(&node, at(t, host, 1.0));
        }
        assert_eq!(shape(out.take()), ["e"]);
        h.advance_to(&node, 20.0);
        assert_eq!(shape(out.take()), ["[f]"]);
        // A period with nothing held ends quietly; the next event passes.
        h.advance_to(&node, 45.0);
        h.send(&node, at(46.0, "g", 1.0));
        assert_eq!(shape(out.take()), ["g"]);
    }

    #[test]
    fn batch_sends_full_lists_at_once_and_the_rest_at_each_fixed_window_end() {
        // Riemann's batch-test, "overflowing batches": (batch 2 3) over one
        // event a second gives [a b] [c] [d e] [f].
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("batch", vals![2, 3], vec![], vec![out.node()]);
        for (t, host) in [(0.0, "a"), (1.0, "b"), (2.0, "c"), (3.0, "d"), (4.0, "e")] {
            h.send(&node, at(t, host, 1.0));
        }
        h.send(&node, at(5.0, "f", 1.0));
        assert_eq!(shape(out.take()), ["[a,b]", "[c]", "[d,e]"]);
        h.advance_to(&node, 5.9);
        assert!(out.take().is_empty());
        h.advance_to(&node, 6.0);
        assert_eq!(shape(out.take()), ["[f]"]);
        // An event at 7.5 waits for its window's end at 9, not 7.5 + 3.
        h.send(&node, at(7.5, "g", 1.0));
        h.advance_to(&node, 8.9);
        assert!(out.take().is_empty());
        h.advance_to(&node, 9.0);
        assert_eq!(shape(out.take()), ["[g]"]);
        h.advance_to(&node, 60.0);
        assert!(out.take().is_empty());
    }

    #[test]
    fn coalesce_sends_the_latest_per_host_and_service_and_expired_ones_once() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("coalesce", vals![5], vec![], vec![out.node()]);
        h.send_all(
            &node,
            [at(0.0, "a", 1.0), at(0.0, "b", 2.0), at(0.0, "a", 3.0)],
        );
        h.advance_to(&node, 5.0);
        let lists = out.lists();
        assert_eq!(lists.len(), 1);
        assert_eq!(points(lists[0].clone()), [(0.0, 3.0), (0.0, 2.0)]);
        h.send(
            &node,
            ev(r#"{"host":"b","service":"api","state":"expired","time":6}"#),
        );
        h.advance_to(&node, 10.0);
        assert_eq!(shape(out.take()), ["[a,b]"]);
        h.advance_to(&node, 15.0);
        assert_eq!(shape(out.take()), ["[a]"]);
        // a (time 0, ttl 60) has expired by 100: sent once, then forgotten,
        // and nothing more is sent (a jump: stepped, a list every 5 s).
        h.jump_to(&node, 100.0);
        assert_eq!(shape(out.take()), ["[a]"]);
        h.advance_to(&node, 200.0);
        assert!(out.take().is_empty());
        // The default is every second.
        let every_second = h.build("coalesce", vec![], vec![], vec![out.node()]);
        assert_eq!(every_second.describe(), "coalesce(1)");
    }

    /// Riemann's `expired?` is strict: at its deadline (time 0, ttl 10, at
    /// 10) an event is alive and stays; it goes in the next flush, sent
    /// once more as it leaves.
    #[test]
    fn coalesce_keeps_an_event_at_its_deadline() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("coalesce", vals![5], vec![], vec![out.node()]);
        h.send(
            &node,
            ev(r#"{"host":"a","service":"api","metric":1,"time":0,"ttl":10}"#),
        );
        let mut flushes = Vec::new();
        for t in [5.0, 10.0, 15.0, 20.0] {
            h.advance_to(&node, t);
            flushes.push(shape(out.take()));
        }
        assert_eq!(flushes, [vec!["[a]"], vec!["[a]"], vec!["[a]"], vec![]]);
    }

    #[test]
    fn fill_in_fills_silences_until_an_event_arrives() {
        let h = Harness::new();
        let out = h.sink("out");
        let default = dict(&[("service", "hb".into()), ("state", "critical".into())]);
        let node = h.build(
            "fill_in",
            vec![10.into(), default],
            vec![],
            vec![out.node()],
        );
        // The timer starts with the node (its first tick).
        h.advance_to(&node, 1.0);
        h.advance_to(&node, 10.9);
        assert!(out.take().is_empty());
        h.advance_to(&node, 11.0);
        let got = out.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].state.as_deref(), Some("critical"));
        assert_eq!(got[0].service.as_deref(), Some("hb"));
        assert_eq!(got[0].time.unwrap().as_f64(), 11.0);
        h.advance_to(&node, 21.0);
        assert_eq!(out.events().len(), 1);
        h.send(&node, at(25.0, "a", 1.0));
        assert_eq!(out.hosts(), ["a"]);
        h.advance_to(&node, 34.9);
        assert!(out.take().is_empty());
        h.advance_to(&node, 35.0);
        assert_eq!(out.events().len(), 1);
        // A jump of many intervals fills in once.
        h.jump_to(&node, 100.0);
        assert_eq!(
            points(out.events()).iter().map(|p| p.0).collect::<Vec<_>>(),
            [100.0]
        );
        h.advance_to(&node, 104.0);
        assert!(out.take().is_empty());
        h.advance_to(&node, 105.0);
        assert_eq!(out.events().len(), 1);
        // An expired event is passed on and cancels the filler, as in
        // Riemann; the next live event starts it again.
        h.send(
            &node,
            ev(r#"{"host":"a","service":"api","state":"expired","time":106}"#),
        );
        assert_eq!(out.take().len(), 1);
        h.advance_to(&node, 200.0);
        assert!(out.take().is_empty(), "filled in after an expired event");
        h.send(&node, at(200.0, "a", 1.0));
        assert_eq!(out.hosts(), ["a"]);
        h.advance_to(&node, 210.0);
        let got = out.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].service.as_deref(), Some("hb"));
    }

    #[test]
    fn fill_in_last_copies_the_last_event_with_fields() {
        let h = Harness::new();
        let out = h.sink("out");
        let fields = dict(&[("state", "critical".into())]);
        let node = h.build(
            "fill_in_last",
            vec![10.into(), fields],
            vec![],
            vec![out.node()],
        );
        h.advance_to(&node, 50.0);
        assert!(
            out.take().is_empty(),
            "nothing to copy before the first event"
        );
        h.send(
            &node,
            ev(r#"{"host":"a","state":"ok","metric":3,"time":50}"#),
        );
        assert_eq!(out.hosts(), ["a"]);
        h.advance_to(&node, 60.0);
        let got = out.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].host.as_deref(), Some("a"));
        assert_eq!(got[0].state.as_deref(), Some("critical"));
        assert_eq!(points(got), [(60.0, 3.0)]);
    }

    #[test]
    fn ddt_per_event_pair() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("ddt", vec![], vec![], vec![out.node()]);
        // (time, metric) in → derivative out.
        let steps: &[(f64, f64, Option<f64>)] = &[
            (0.0, 0.0, None),
            (2.0, 10.0, Some(5.0)),
            (2.0, 12.0, None), // same time: replaces the previous one
            (4.0, 16.0, Some(2.0)),
            (3.0, 100.0, None), // older: ignored
            (5.0, 17.0, Some(1.0)),
        ];
        for (t, m, expected) in steps {
            h.send(&node, at(*t, "a", *m));
            let got = points(out.events());
            assert_eq!(
                got,
                expected.map(|d| (*t, d)).into_iter().collect::<Vec<_>>(),
                "at {t}"
            );
        }
        h.send(&node, ev(r#"{"host":"a","time":6}"#));
        assert!(out.take().is_empty(), "no metric: ignored");
    }

    #[test]
    fn ddt_every_dt_reports_from_the_first_event_on_with_zeros_for_quiet_intervals() {
        // Riemann's ddt-interval-test, "emits zeroes when no events arrive
        // in an interval": (ddt 2) over (0, 0) (1, 1) (3, 2).
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("ddt", vals![2], vec![], vec![out.node()]);
        assert_eq!(node.describe(), "ddt(2)");
        h.send(&node, ev(r#"{"metric":0,"time":0,"ttl":7}"#));
        assert!(out.take().is_empty(), "the first report only remembers");
        h.send(&node, ev(r#"{"metric":1,"time":1,"ttl":7}"#));
        h.send(&node, ev(r#"{"metric":2,"time":3,"ttl":7}"#));
        h.advance_to(&node, 6.0);
        assert_eq!(points(out.events()), [(2.0, 1.0), (4.0, 0.5), (6.0, 0.0)]);
        // Reports go on while the latest event lives (3 + 7), then stop.
        h.advance_to(&node, 100.0);
        assert_eq!(points(out.events()), [(8.0, 0.0), (10.0, 0.0)]);
    }

    #[test]
    fn ddt_every_dt_stops_at_an_expired_event_and_restarts_with_the_next() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("ddt", vals![1], vec![], vec![out.node()]);
        h.send_all(&node, [at(0.0, "a", 0.0), at(0.5, "a", 1.0)]);
        h.advance_to(&node, 1.0);
        assert_eq!(points(out.events()), [(1.0, 2.0)]);
        h.send(&node, ev(r#"{"host":"a","state":"expired","time":1.5}"#));
        h.advance_to(&node, 50.0);
        assert!(out.take().is_empty());
        // The next event reports at once, from the last one before.
        h.send(&node, at(50.5, "a", 51.0));
        assert_eq!(points(out.events()), [(50.5, 1.0)]);
    }

    #[test]
    fn apdex_scores_each_interval() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build(
            "apdex",
            vals![10, "metric < 1", "metric < 4"],
            vec![],
            vec![out.node()],
        );
        for (t, host, m) in [
            (0.0, "a", 0.5),
            (1.0, "b", 0.5),
            (2.0, "c", 2.0),
            (3.0, "d", 5.0),
        ] {
            h.send(&node, at(t, host, m));
        }
        h.send(
            &node,
            ev(r#"{"host":"x","metric":0.1,"state":"expired","time":4}"#),
        );
        h.advance_to(&node, 10.0);
        let got = out.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].host.as_deref(), Some("d"));
        assert_eq!(got[0].metric.unwrap().as_f64(), (2.0 + 0.5) / 4.0);
        h.advance_to(&node, 50.0);
        assert!(out.take().is_empty(), "nothing for empty intervals");
    }

    #[test]
    fn apdex_counts_a_failing_predicate_as_an_error() {
        let h = Harness::new();
        let out = h.sink("out");
        let boom = func("boom", |_| Err(NodeError("boom".into())));
        let node = h.build(
            "apdex",
            vec![10.into(), boom, "metric < 4".into()],
            vec![],
            vec![out.node()],
        );
        h.send(&node, at(0.0, "a", 1.0));
        assert_eq!(node.stats().errors.load(Ordering::Relaxed), 1);
        h.advance_to(&node, 10.0);
        assert!(out.take().is_empty());
    }

    /// Each node with its arguments, and an event that gives it state.
    fn stateful() -> Vec<(&'static str, Vec<Value>, Vec<Value>)> {
        vec![
            ("rate", vals![5], vals![6]),
            (
                "percentiles",
                vec![5.into(), Value::List(vals![0.5])],
                vec![5.into(), Value::List(vals![0.9])],
            ),
            ("throttle", vals![1, 5], vals![2, 5]),
            ("rollup", vals![1, 5], vals![1, 6]),
            ("batch", vals![3, 5], vals![4, 5]),
            ("coalesce", vals![5], vals![6]),
            (
                "fill_in",
                vec![5.into(), dict(&[("state", "x".into())])],
                vec![5.into(), dict(&[("state", "y".into())])],
            ),
            (
                "fill_in_last",
                vec![5.into(), dict(&[("state", "x".into())])],
                vec![6.into(), dict(&[("state", "x".into())])],
            ),
            ("ddt", vals![], vals![5]),
            (
                "apdex",
                vals![5, "metric < 1", "metric < 2"],
                vals![5, "metric < 1", "metric < 3"],
            ),
        ]
    }

    #[test]
    fn reload_keeps_state_only_with_the_same_arguments() {
        for (name, same, other) in stateful() {
            let h = Harness::new();
            let out = h.sink("out");
            let old = h.build(name, same.clone(), vec![], vec![out.node()]);
            h.send(&old, at(0.0, "a", 0.5));
            let new = h.build(name, same.clone(), vec![], vec![out.node()]);
            carry_over(&*new, &*old);
            assert!(new.stats().kept_state.load(Ordering::Relaxed), "{name}");
            let changed = h.build(name, other, vec![], vec![out.node()]);
            assert_ne!(changed.describe(), new.describe(), "{name}");
            carry_over(&*changed, &*new);
            assert!(
                !changed.stats().kept_state.load(Ordering::Relaxed),
                "{name}"
            );
        }
    }

    #[test]
    fn reload_keeps_the_rate_bucket_and_fresh_instances_have_their_own() {
        let h = Harness::new();
        let out = h.sink("out");
        let old = h.build("rate", vals![5], vec![], vec![out.node()]);
        h.send(&old, at(1.0, "a", 10.0));
        let fresh = old.fresh();
        h.send(&fresh, at(2.0, "b", 100.0));
        let new = h.build("rate", vals![5], vec![], vec![out.node()]);
        carry_over(&*new, &*old);
        h.send(&new, at(3.0, "a", 5.0));
        h.advance_to(&new, 6.0);
        assert_eq!(points(out.events()), [(6.0, 3.0)]);
        h.advance_to(&fresh, 7.0);
        assert_eq!(points(out.events()), [(7.0, 20.0)]);
    }

    /// Starting a tree starts its children's timers under every timed
    /// node (a fill_in below each fills in from the start).
    #[test]
    fn every_timed_node_starts_its_childrens_timers() {
        for (name, args, _) in stateful() {
            let h = Harness::new();
            let out = h.sink("out");
            let child = h.build(
                "fill_in",
                vec![1.into(), dict(&[("host", "filler".into())])],
                vec![],
                vec![out.node()],
            );
            let node = h.build(name, args, vec![], vec![child]);
            h.advance_to(&node, 1.0);
            h.advance_to(&node, 3.0);
            let times: Vec<f64> = points(out.events()).iter().map(|p| p.0).collect();
            assert_eq!(times, [2.0, 3.0], "{name}");
        }
    }

    #[test]
    fn bad_arguments_are_explained() {
        let h = Harness::new();
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("rate", vals![0], "rate(interval, *children): `interval` must be greater than 0, not 0"),
            (
                "percentiles",
                vec![10.into(), Value::List(vals![0.5, 2])],
                "percentiles(interval, points, *children): each of `points` must be a number from 0 to 1, not 2",
            ),
            (
                "percentiles",
                vals![10, 0.5],
                "percentiles(interval, points, *children): `points` must be a non-empty list of quantiles like [0.5, 0.95, 0.99], not float",
            ),
            ("throttle", vals![0, 1], "throttle(n, dt, *children): `n` must be a whole number ≥ 1, not 0"),
            ("coalesce", vals![-1], "coalesce(dt=1, *children): `dt` must be greater than 0, not -1"),
            (
                "fill_in",
                vals![5, "critical"],
                "fill_in(dt, default, *children): `default` must be a dict of event fields like {\"state\": \"critical\"}, not str",
            ),
            (
                "fill_in_last",
                vec![5.into(), dict(&[("metric", "high".into())])],
                "fill_in_last(dt, fields, *children): `fields`: event field `metric` must be a number, not str",
            ),
            ("ddt", vals![0], "ddt(dt=None, *children): `dt` must be greater than 0, not 0"),
        ];
        for (name, args, msg) in cases {
            let err = h.try_build(name, args, vec![], vec![]).err().unwrap();
            assert_eq!(err.message, msg);
        }
        let err = h
            .try_build("apdex", vals![10, "metric <", "metric < 4"], vec![], vec![])
            .err()
            .unwrap();
        assert!(
            err.message
                .starts_with("apdex(dt, satisfied, tolerated, *children): \"metric <\""),
            "{err}"
        );
    }

    #[test]
    fn stateful_nodes_survive_a_checkpoint() {
        use crate::testing::Step::{AdvanceTo, Send};
        let fields = dict(&[("state", "critical".into())]);
        let median = Value::List(vec![Value::Float(0.5)]);
        let a123 = [
            Send(at(1.0, "a", 1.0)),
            Send(at(2.0, "b", 3.0)),
            Send(at(3.0, "c", 2.0)),
        ];
        #[rustfmt::skip]
        let cases: Vec<crate::testing::RestartCase> = vec![
            // The period began at 1 and let 2 through: d is throttled.
            ("throttle", vals![2, 10], vec![Send(at(4.0, "d", 4.0)), Send(at(12.0, "e", 5.0))], vec!["e"]),
            // The flush of what was held fires after the restart.
            ("rollup", vals![1, 10], vec![AdvanceTo(20.0)], vec!["[b,c]"]),
            ("batch", vals![10, 5], vec![AdvanceTo(6.0)], vec!["[a,b,c]"]),
            ("coalesce", vals![5], vec![AdvanceTo(7.0)], vec!["[a,b,c]"]),
            ("percentiles", vec![10.into(), median], vec![AdvanceTo(12.0)], vec!["[c]"]),
            ("apdex", vals![10, "metric < 2", "metric < 3"], vec![AdvanceTo(12.0)], vec!["c"]),
            ("ddt", vals![], vec![Send(at(5.0, "d", 10.0))], vec!["d"]),
            ("ddt", vals![5], vec![Send(at(5.0, "d", 10.0)), AdvanceTo(12.0)], vec!["d", "d"]),
            ("fill_in_last", vec![5.into(), fields], vec![AdvanceTo(9.0)], vec!["c"]),
        ];
        crate::testing::assert_restarts(&a123, cases);
        let h = Harness::new();
        let apdex = vals![10, "metric < 2", "metric < 3"];
        for (name, args) in [("rollup", vals![1, 10]), ("apdex", apdex)] {
            let node = h.build(name, args, vec![], vec![]);
            assert!(node.load_state(serde_json::json!("x")).is_err(), "{name}");
            let bad = serde_json::json!({"start": "soon", "held": [1]});
            assert!(node.load_state(bad).is_err(), "{name}");
        }
    }
}
