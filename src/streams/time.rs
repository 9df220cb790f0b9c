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
//! Every node here that keeps a timer does its work in [`Node::tick`] and on
//! events (so a clock jump of several intervals is caught up in one go),
//! then ticks its children. Intervals follow the processing time
//! (`ctx.now()`) unless said otherwise; most begin with the first event
//! after a quiet spell, so an idle node costs nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::filter::{predicate, Predicate};
use super::registry::Entry;
use super::value::{set_field, Args, BuildError, Value};
use super::{emit, emit_list, lock, Node, NodeCore, NodeError, NodeRef};
use crate::context::Context;
use crate::event::{Event, EventKey, Number, DEFAULT_TTL};
use crate::{keep_state_in, node_core};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "rate",
        params: "interval, *children",
        summary: "Every `interval` seconds, forward the last event with its metric set to the sum of the interval's metrics divided by `interval`.",
        details: "Processing time (Riemann's `rate`). Intervals begin with the first event; each forwarded event has time = the interval's end. Intervals without events report 0 while the last event is alive (its time + ttl, ttl 60 by default), then the node falls quiet until the next event. Events without a metric (or with inf/nan) are ignored. After a clock jump, at most 10 intervals are reported: the first, then the latest.",
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
        details: "Processing time (Riemann's `rollup`). A period begins with the first event after a quiet one; the held list, forwarded when the period ends (on the clock, without waiting for an event), counts as one of the next period's `n`. Children that take lists, like `email`, get the held events as one list: one mail.",
        example: r#"rollup(3, 600, email("ops@example.com"))"#,
        build: build_rollup,
    },
    Entry {
        name: "batch",
        params: "n, dt, *children",
        summary: "Forward events as lists of up to `n`: when `n` are gathered, or `dt` seconds after the first of a list arrived.",
        details: "Processing time (Riemann's `batch`); the `dt` timer runs on the clock, so a partial list goes out when traffic stops.",
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
        summary: "Forward the derivative of the metric: (m2 - m1) / (t2 - t1) between consecutive events, or every `dt` seconds when given.",
        details: "Event time for the derivative: t is each event's time. Without `dt` (Riemann's `ddt-events`), each event after the first is forwarded with the derivative since the previous one; an event not later than the previous one forwards nothing (one at the same time replaces it). With `dt` (Riemann's `ddt` with an interval), every `dt` seconds of processing time that saw events, the interval's last event is forwarded with the derivative since the last event of the previous report. Events without a metric or a time are ignored.",
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

/// How many whole intervals of `dt` since `start` have ended by `now`.
fn ended(start: f64, dt: f64, now: f64) -> u64 {
    // The epsilon absorbs rounding in sums like 0.1 + 0.2.
    ((now - start) / dt + 1e-9).floor().max(0.0) as u64
}

/// For nodes reporting once per interval, intervals beginning with the
/// first event after a quiet one: if the interval that began at `start`
/// has ended by `now`, its end, moving `start` on: to the next interval
/// when this one had events and the next is still running, else to none.
fn close(start: &mut Option<f64>, dt: f64, now: f64, had_events: bool) -> Option<f64> {
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

fn tick_children(node: &dyn Node, ctx: &Context, now: f64) {
    for child in node.children() {
        child.tick(ctx, now);
    }
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

/// Riemann's `expired?`: state "expired", or time + ttl before `now`.
fn is_expired(e: &Event, now: f64) -> bool {
    e.state.as_deref() == Some("expired") || e.deadline().is_some_and(|d| d <= now)
}

// ---------------------------------------------------------------- rate

fn build_rate(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Rate {
        interval,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `rate(interval)`; state: the current interval and its sum, and the last
/// event (which keeps the reports going until it expires).
///
/// `rate(5, index())`
pub struct Rate {
    interval: f64,
    state: Mutex<RateState>,
    core: NodeCore,
}

#[derive(Default)]
struct RateState {
    start: Option<f64>,
    sum: f64,
    seen: bool,
    last: Option<Arc<Event>>,
    expires: f64,
}

impl Rate {
    /// The reports of the intervals ended by `now`.
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
        // Intervals 1..=j are reported: the first if it saw events, then
        // each that ends while the last event is alive.
        let j = if s.seen || end(1) < s.expires {
            let alive = ((s.expires - start) / dt).ceil() - 1.0;
            alive.min(k as f64).max(1.0) as u64
        } else {
            0
        };
        let mut out = Vec::new();
        if j >= 1 {
            out.push(with_metric_and_time(&last, s.sum / dt, end(1)));
            let from = (j + 2).saturating_sub(MAX_CATCH_UP).max(2);
            out.extend((from..=j).map(|i| with_metric_and_time(&last, 0.0, end(i))));
        }
        s.sum = 0.0;
        s.seen = false;
        if j < k {
            s.start = None;
            s.last = None;
        } else {
            s.start = Some(end(k));
        }
        out
    }
}

impl Node for Rate {
    node_core!("rate");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("rate({})", self.interval)
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Rate {
            interval: self.interval,
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
                s.sum += m;
                s.seen = true;
                let t = event.time.map_or(now, Number::as_f64);
                s.expires = t + event.ttl.unwrap_or(DEFAULT_TTL);
                s.last = Some(Arc::clone(event));
            }
            out
        };
        out.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let out = self.roll(&mut lock(&self.state), now);
        out.iter().for_each(|e| emit(self, ctx, e));
        tick_children(self, ctx, now);
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
    Ok(Arc::new(Percentiles {
        interval,
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
    /// Each quantile and how it is written in service names.
    points: Vec<(f64, String)>,
    state: Mutex<SampleState>,
    core: NodeCore,
}

#[derive(Default)]
struct SampleState {
    start: Option<f64>,
    events: Vec<(f64, Arc<Event>)>,
}

impl Percentiles {
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
                e.service = Some(match &e.service {
                    Some(s) => format!("{s} {label}").into(),
                    None => label.into(),
                });
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Percentiles {
            interval: self.interval,
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
            out
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let out = self.roll(&mut lock(&self.state), now);
        emit_list(self, ctx, &out);
        tick_children(self, ctx, now);
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
    Ok(Arc::new(Rollup {
        n,
        dt,
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
    state: Mutex<RollupState>,
    core: NodeCore,
}

#[derive(Default)]
struct RollupState {
    start: Option<f64>,
    sent: usize,
    held: Vec<Arc<Event>>,
}

impl Rollup {
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Rollup {
            n: self.n,
            dt: self.dt,
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
            (held, pass)
        };
        emit_list(self, ctx, &held);
        if pass {
            emit(self, ctx, event);
        }
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let held = self.roll(&mut lock(&self.state), now);
        emit_list(self, ctx, &held);
        tick_children(self, ctx, now);
    }
}

// ---------------------------------------------------------------- batch

fn build_batch(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Batch {
        n,
        dt,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `batch(n, dt)`; state: the list being gathered and when its first
/// event arrived.
///
/// `batch(100, 1, printer())`
pub struct Batch {
    n: usize,
    dt: f64,
    state: Mutex<(Option<f64>, Vec<Arc<Event>>)>,
    core: NodeCore,
}

impl Batch {
    fn overdue(&self, s: &mut (Option<f64>, Vec<Arc<Event>>), now: f64) -> Vec<Arc<Event>> {
        match s.0 {
            Some(first) if ended(first, self.dt, now) > 0 => {
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Batch {
            n: self.n,
            dt: self.dt,
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
            s.0.get_or_insert(now);
            s.1.push(Arc::clone(event));
            let full = if s.1.len() >= self.n {
                s.0 = None;
                std::mem::take(&mut s.1)
            } else {
                Vec::new()
            };
            (due, full)
        };
        emit_list(self, ctx, &due);
        emit_list(self, ctx, &full);
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let due = self.overdue(&mut lock(&self.state), now);
        emit_list(self, ctx, &due);
        tick_children(self, ctx, now);
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
    Ok(Arc::new(Coalesce {
        dt,
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
    state: Mutex<CoalesceState>,
    core: NodeCore,
}

#[derive(Default)]
struct CoalesceState {
    due: Option<f64>,
    latest: BTreeMap<EventKey, Arc<Event>>,
}

impl Coalesce {
    fn roll(&self, s: &mut CoalesceState, now: f64) -> Vec<Arc<Event>> {
        match s.due {
            Some(due) if now >= due => {
                let out: Vec<Arc<Event>> = s.latest.values().cloned().collect();
                s.latest.retain(|_, e| !is_expired(e, now));
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Coalesce {
            dt: self.dt,
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
            out
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let out = self.roll(&mut lock(&self.state), now);
        emit_list(self, ctx, &out);
        tick_children(self, ctx, now);
    }
}

// ---------------------------------------------------------------- fill_in, fill_in_last

/// A dict argument, checked by applying it to an empty event.
fn fields_arg(args: &mut Args, name: &str) -> Result<Vec<(String, Value)>, BuildError> {
    match args.value(name)? {
        Value::Map(fields) => {
            let mut probe = Event::default();
            for (k, v) in &fields {
                set_field(&mut probe, k, v).map_err(|e| args.error(format_args!("`{name}`: {e}")))?;
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
    Ok(Arc::new(FillIn {
        last: false,
        dt,
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
    Ok(Arc::new(FillIn {
        last: true,
        dt,
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
    fields: Vec<(String, Value)>,
    state: Mutex<FillState>,
    core: NodeCore,
}

#[derive(Default)]
struct FillState {
    due: Option<f64>,
    last: Option<Arc<Event>>,
}

impl FillIn {
    fn filler(&self, s: &mut FillState, now: f64) -> Option<Arc<Event>> {
        let Some(due) = s.due else {
            // fill_in's timer starts with the node.
            if !self.last {
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
    fn children(&self) -> &[NodeRef] {
        &self.core.children
    }
    fn stats(&self) -> &super::NodeStats {
        &self.core.stats
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(FillIn {
            last: self.last,
            dt: self.dt,
            fields: self.fields.clone(),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        {
            let mut s = lock(&self.state);
            s.due = Some(ctx.now() + self.dt);
            if self.last {
                s.last = Some(Arc::clone(event));
            }
        }
        emit(self, ctx, event);
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let filler = self.filler(&mut lock(&self.state), now);
        if let Some(e) = filler {
            emit(self, ctx, &e);
        }
        tick_children(self, ctx, now);
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
    Ok(Arc::new(Ddt {
        dt,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `ddt()` and `ddt(dt)`; state: the previous (time, metric), and with
/// `dt` the current interval and its last event.
///
/// `ddt(index())`
pub struct Ddt {
    dt: Option<f64>,
    state: Mutex<DdtState>,
    core: NodeCore,
}

#[derive(Default)]
struct DdtState {
    prev: Option<(f64, f64)>,
    start: Option<f64>,
    last: Option<(f64, f64, Arc<Event>)>,
}

/// The derivative from `prev` to (t, m) as an event like `e`, if t is later.
fn derivative(prev: Option<(f64, f64)>, t: f64, m: f64, e: &Event) -> Option<Arc<Event>> {
    let (t0, m0) = prev?;
    (t > t0).then(|| with_metric_and_time(e, (m - m0) / (t - t0), t))
}

impl Ddt {
    /// With `dt`: the report of the interval ended by `now`.
    fn roll(&self, s: &mut DdtState, now: f64) -> Option<Arc<Event>> {
        let dt = self.dt?;
        let had = s.last.is_some();
        close(&mut s.start, dt, now, had)?;
        let (t, m, e) = s.last.take()?;
        let out = derivative(s.prev, t, m, &e);
        if out.is_some() || s.prev.is_none_or(|(t0, _)| t >= t0) {
            s.prev = Some((t, m));
        }
        out
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Ddt {
            dt: self.dt,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let (Some(m), Some(t)) = (finite_metric(event), event.time.map(Number::as_f64)) else {
            let out = self.roll(&mut lock(&self.state), now);
            out.iter().for_each(|e| emit(self, ctx, e));
            return Ok(());
        };
        let out = {
            let mut s = lock(&self.state);
            if self.dt.is_some() {
                let out = self.roll(&mut s, now);
                s.start.get_or_insert(now);
                s.last = Some((t, m, Arc::clone(event)));
                out
            } else {
                let out = derivative(s.prev, t, m, event);
                if s.prev.is_none_or(|(t0, _)| t >= t0) {
                    s.prev = Some((t, m));
                }
                out
            }
        };
        out.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let out = self.roll(&mut lock(&self.state), now);
        out.iter().for_each(|e| emit(self, ctx, e));
        tick_children(self, ctx, now);
    }
}

// ---------------------------------------------------------------- apdex

fn build_apdex(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let satisfied = predicate(&mut args, "satisfied")?;
    let tolerated = predicate(&mut args, "tolerated")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Apdex {
        dt,
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
    satisfied: Arc<dyn Predicate>,
    tolerated: Arc<dyn Predicate>,
    state: Mutex<ApdexState>,
    core: NodeCore,
}

#[derive(Default)]
struct ApdexState {
    start: Option<f64>,
    /// Satisfied, tolerated, total.
    counts: (u64, u64, u64),
    last: Option<Arc<Event>>,
}

impl Apdex {
    fn roll(&self, s: &mut ApdexState, now: f64) -> Option<Arc<Event>> {
        let had = s.last.is_some();
        close(&mut s.start, self.dt, now, had)?;
        let (sat, tol, total) = std::mem::take(&mut s.counts);
        let last = s.last.take()?;
        let mut e = Event::clone(&last);
        e.metric = Some(Number::Float((sat as f64 + tol as f64 / 2.0) / total as f64));
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
    fn fresh(&self) -> NodeRef {
        Arc::new(Apdex {
            dt: self.dt,
            satisfied: Arc::clone(&self.satisfied),
            tolerated: Arc::clone(&self.tolerated),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let out = self.roll(&mut lock(&self.state), now);
        out.iter().for_each(|e| emit(self, ctx, e));
        if is_expired(event, now) {
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
        Ok(())
    }
    fn tick(&self, ctx: &Context, now: f64) {
        let out = self.roll(&mut lock(&self.state), now);
        out.iter().for_each(|e| emit(self, ctx, e));
        tick_children(self, ctx, now);
    }
}
