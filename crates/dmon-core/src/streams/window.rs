//! Windows: nodes that gather events and forward them as lists.
//!
//! | function | example |
//! |---|---|
//! | `moving_event_window(n, *children)` | `moving_event_window(5, smap(folds.mean, printer()))` |
//! | `fixed_event_window(n, *children)` | `fixed_event_window(100, smap(folds.maximum, index()))` |
//! | `moving_time_window(dt, *children)` | `moving_time_window(60, smap(folds.mean, index()))` |
//! | `fixed_time_window(dt, *children)` | `fixed_time_window(60, smap(folds.count, index()))` |
//! | `fixed_offset_time_window(dt, *children, offset=0)` | `fixed_offset_time_window(60, smap(folds.count, index()))` |
//! | `fold_interval(interval, field, fold, *children)` | `fold_interval(10, "metric", max, index())` |
//! | `fold_interval_metric(interval, fold, *children)` | `fold_interval_metric(10, folds.mean, index())` |
//! | `top(k, f, *children, demote=None)` | `top(10, "metric", index())` |
//!
//! Every window forwards a list (see [`emit_list`]); a child that does not
//! take lists receives its events one by one. `fold_interval` folds each
//! interval's events into one event; `top` routes each event by whether it
//! is among the `k` largest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::entry::Entry;
use super::filter::FieldRef;
use super::folds::NativeFold;
use super::value::{field, set_field, Args, BuildError, Function, Value};
use super::{emit, emit_list, emit_to, lock, Node, NodeCore, NodeError, NodeRef};
use crate::event::{Event, EventKey};
use crate::streams::context::Context;
use crate::streams::timers::{timed, Alarm};
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
    Entry {
        name: "fixed_offset_time_window",
        params: "dt, *children, offset=0",
        summary: "Tumbling windows of `dt` seconds by event time, aligned to the epoch (plus `offset`): [0, dt), [dt, 2dt), …; forward each window's events as one list.",
        details: "Riemann's `fixed-offset-time-window`, whose windows are aligned to the epoch; `offset` (dmon's addition, 0 in Riemann) shifts them: with dt=3600 and offset=1800, hours begin at half past. Otherwise exactly `fixed_time_window`, with its differences from Riemann: the last window also flushes once the clock passes its end plus a grace of `dt`; empty windows are not forwarded (Riemann forwards an empty list for each window skipped); a late event joins the current window (Riemann drops it); an event without a time counts as arriving at the clock's time.",
        example: "fixed_offset_time_window(60, smap(folds.count, index()))",
        build: build_fixed_offset_time_window,
    },
    Entry {
        name: "fold_interval",
        params: "interval, field, fold, *children",
        summary: "Every `interval` seconds, forward the interval's last event with `field` set to `fold` of the list of the interval's values of `field`.",
        details: "Processing time (Riemann's `fold-interval`): intervals begin with the first event after a quiet one and follow each other while events come; events without the field, and expired events, are ignored. `fold` is a function of a list of values (`sum`, `max`, `lambda ms: ...`), or, for field \"metric\", a fold of `dmon.folds`, which runs natively on the interval's events and whose result is forwarded as it is (`folds.mean` gives the last event with the mean metric). Unlike Riemann, an interval without events forwards nothing (Riemann folds an empty list), and an expired event does not throw away the interval's events so far (one expiring event should not lose the others').",
        example: "fold_interval(10, \"metric\", max, index())",
        build: build_fold_interval,
    },
    Entry {
        name: "fold_interval_metric",
        params: "interval, fold, *children",
        summary: "`fold_interval(interval, \"metric\", fold, …)`: every `interval` seconds, forward the last event with the fold of the interval's metrics.",
        details: "Riemann's `fold-interval-metric`; see `fold_interval`. With a fold of `dmon.folds` it works as `smap(fold)` after tumbling windows of processing time, without building the lists.",
        example: "fold_interval_metric(10, folds.mean, index())",
        build: build_fold_interval_metric,
    },
    Entry {
        name: "top",
        params: "k, f, *children, demote=None",
        summary: "Keep the `k` (host, service) events with the largest `f(event)`: forward those to the children, and expired copies of the others (which go to `demote` as they are).",
        details: "Riemann's `top`, `f` a field name (\"metric\") or a function of the event. An event in the top `k` goes to the children, and an expired copy (host, service, state \"expired\", time now) to `demote`; an event outside goes to `demote`, and an expired copy to the children; an expired event leaves the top set and goes to both as it is; an event whose `f` is None leaves it too, as one outside. With `demote` given, an event pushed out of the top set by a larger one is also sent, expired, to the children and, as it is, to `demote` (Riemann's 4-argument form); without it, children learn that only when its (host, service) comes again (Riemann's 3-argument form). Riemann's form with a bottom stream but no demotion has no equivalent. As in Riemann, the smallest member is found again only when it leaves, so among equal values which one is pushed out follows arrival order.",
        example: "top(10, \"metric\", index())",
        build: build_top,
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

fn build_fixed_time_window(args: Args) -> Result<NodeRef, BuildError> {
    fixed_time_window(args, None)
}

fn build_fixed_offset_time_window(mut args: Args) -> Result<NodeRef, BuildError> {
    let offset = args.keyword("offset").unwrap_or(Value::Int(0));
    let offset = match offset.as_f64() {
        Some(x) if x.is_finite() => x,
        _ => return Err(args.type_error(format_args!("`offset` must be a number, not {offset}"))),
    };
    fixed_time_window(args, Some(offset))
}

/// Both fixed time windows: aligned to the first event, or to the epoch
/// plus `offset`.
fn fixed_time_window(mut args: Args, offset: Option<f64>) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| FixedTimeWindow {
        alarm,
        dt,
        offset,
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
    fn save_state(&self) -> Option<serde_json::Value> {
        let events: Vec<_> = lock(&self.events)
            .iter()
            .map(|e| super::event_to_json(e))
            .collect();
        Some(serde_json::json!({ "events": events }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let (_, saved) = window_state(state)?;
        let events = saved
            .into_iter()
            .map(super::event_from_json)
            .collect::<Result<VecDeque<_>, _>>()?;
        *lock(&self.events) = events;
        Ok(())
    }
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

/// `fixed_time_window(dt)` and `fixed_offset_time_window(dt, offset=)`;
/// state: the current window's start (event time) and its events.
///
/// `fixed_time_window(60, smap(folds.count, index()))`
pub struct FixedTimeWindow {
    dt: f64,
    /// Windows begin at `offset + k·dt` (`fixed_offset_time_window`);
    /// None: with the first event (`fixed_time_window`).
    offset: Option<f64>,
    alarm: Alarm,
    state: Mutex<FixedState>,
    core: NodeCore,
}

/// An interval's start and its events (fixed windows, `fold_interval`).
#[derive(Default, Clone)]
struct FixedState {
    start: Option<f64>,
    events: Vec<Arc<Event>>,
}

impl FixedState {
    fn save(&self) -> serde_json::Value {
        let events: Vec<_> = self
            .events
            .iter()
            .map(|e| super::event_to_json(e))
            .collect();
        serde_json::json!({"start": self.start, "events": events})
    }

    fn load(mut state: serde_json::Value) -> Result<Self, String> {
        let start = state.get("start").and_then(|v| v.as_f64());
        state["newest"] = start.into();
        let (_, events) = window_state(state)?;
        let events = events
            .into_iter()
            .map(super::event_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FixedState { start, events })
    }
}

impl FixedTimeWindow {
    /// The window's end plus a grace of dt for late events, while it holds
    /// any.
    fn due(&self, s: &FixedState) -> Option<f64> {
        s.start
            .filter(|_| !s.events.is_empty())
            .map(|t| t + 2.0 * self.dt)
    }

    /// The start of the first window, the one holding time `t`.
    fn first_start(&self, t: f64) -> f64 {
        match self.offset {
            None => t,
            Some(offset) => t - (t - offset).rem_euclid(self.dt),
        }
    }
}

impl Node for FixedTimeWindow {
    node_core!();
    keep_state_in!(state);
    wakes_at!(due);
    flushes_at!(due);

    fn kind(&self) -> &'static str {
        match self.offset {
            None => "fixed_time_window",
            Some(_) => "fixed_offset_time_window",
        }
    }
    fn describe(&self) -> String {
        match self.offset {
            None => format!("fixed_time_window({})", self.dt),
            Some(offset) => format!("fixed_offset_time_window({}, offset={offset})", self.dt),
        }
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(lock(&self.state).save())
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = FixedState::load(state)?;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| FixedTimeWindow {
            dt: self.dt,
            offset: self.offset,
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
            let start = *s.start.get_or_insert_with(|| self.first_start(t));
            let mut out = Vec::new();
            if t >= start + self.dt {
                out = std::mem::take(&mut s.events);
                // Skip the empty windows in between, keeping the alignment.
                let passed = ((t - start) / self.dt).floor();
                s.start = Some(start + passed * self.dt);
            }
            s.events.push(Arc::clone(event));
            self.alarm.set(&ctx.timers, self.due(&s));
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
        let out = self
            .alarm
            .roll(&ctx.timers, &self.state, flush, |s| self.due(s));
        emit_list(self, ctx, &out);
    }
}

fn build_fold_interval(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    let field = args.string("field")?;
    fold_interval(args, "fold_interval", interval, field)
}

fn build_fold_interval_metric(mut args: Args) -> Result<NodeRef, BuildError> {
    let interval = args.positive("interval")?;
    fold_interval(args, "fold_interval_metric", interval, "metric".into())
}

fn fold_interval(
    mut args: Args,
    kind: &'static str,
    interval: f64,
    field: String,
) -> Result<NodeRef, BuildError> {
    let fold = args.function("fold")?;
    if fold.as_any().is::<NativeFold>() && field != "metric" {
        return Err(args.error(format_args!(
            "the folds of dmon.folds fold metrics, not `{field}`; give a function of a list of values (like max)"
        )));
    }
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| FoldInterval {
        kind,
        interval,
        field,
        fold,
        alarm,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `fold_interval(interval, field, fold)` and `fold_interval_metric`;
/// state: the current interval's start (processing time) and its events.
///
/// `fold_interval(10, "metric", max, index())`
pub struct FoldInterval {
    kind: &'static str,
    interval: f64,
    field: String,
    fold: Arc<dyn Function>,
    alarm: Alarm,
    state: Mutex<FixedState>,
    core: NodeCore,
}

impl FoldInterval {
    /// The interval's end, while it holds events.
    fn due(&self, s: &FixedState) -> Option<f64> {
        s.start
            .filter(|_| !s.events.is_empty())
            .map(|t| t + self.interval)
    }

    /// The events of the interval that has ended by `now`, if any. The
    /// next interval follows it while events come (Riemann's periodic
    /// switch), else begins with the next event.
    fn roll(&self, s: &mut FixedState, now: f64) -> Vec<Arc<Event>> {
        let had_events = !s.events.is_empty();
        match super::time::close(&mut s.start, self.interval, now, had_events) {
            Some(_) => std::mem::take(&mut s.events),
            None => Vec::new(),
        }
    }

    /// Riemann's fold: the last event with `field` set to `fold` of the
    /// values; a native fold runs on the events themselves.
    fn fold(&self, events: &[Arc<Event>], now: f64) -> Result<Vec<Arc<Event>>, NodeError> {
        let Some(last) = events.last() else {
            return Ok(Vec::new());
        };
        if self.fold.as_any().is::<NativeFold>() {
            let folded = self.fold.call_at(&[Value::events(events)], now)?;
            return folded.into_events().map_err(NodeError);
        }
        let values = events.iter().map(|e| field(e, &self.field)).collect();
        let folded = self.fold.call(&[Value::List(values)])?;
        let mut e = Event::clone(last);
        set_field(&mut e, &self.field, &folded).map_err(NodeError)?;
        Ok(vec![Arc::new(e)])
    }

    fn emit_folded(&self, ctx: &Context, events: &[Arc<Event>]) {
        match self.fold(events, ctx.now()) {
            Ok(out) => out.iter().for_each(|e| emit(self, ctx, e)),
            Err(err) => super::node_failed(self, ctx, &err, events),
        }
    }
}

impl Node for FoldInterval {
    node_core!();
    keep_state_in!(state);
    wakes_at!(due);
    flushes_at!(due);

    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        let fold = self.fold.describe();
        match self.kind {
            "fold_interval" => {
                format!("fold_interval({}, {:?}, {fold})", self.interval, self.field)
            }
            kind => format!("{kind}({}, {fold})", self.interval),
        }
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(lock(&self.state).save())
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = FixedState::load(state)?;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| FoldInterval {
            kind: self.kind,
            interval: self.interval,
            field: self.field.clone(),
            fold: Arc::clone(&self.fold),
            alarm,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} in interval", lock(&self.state).events.len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let ended = {
            let mut s = lock(&self.state);
            let ended = self.roll(&mut s, now);
            let has_field = !matches!(field(event, &self.field), Value::None);
            if has_field && !event.is_expired(now) {
                s.start.get_or_insert(now);
                s.events.push(Arc::clone(event));
            }
            self.alarm.set(&ctx.timers, self.due(&s));
            ended
        };
        // User folds run without the lock held.
        self.emit_folded(ctx, &ended);
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let ended = self.alarm.roll(
            &ctx.timers,
            &self.state,
            |s| self.roll(s, now),
            |s| self.due(s),
        );
        self.emit_folded(ctx, &ended);
    }
}

fn build_top(mut args: Args) -> Result<NodeRef, BuildError> {
    let k = args.count("k")?;
    let by = FieldRef::from_args(&mut args, "f")?;
    let demote = args.stream_keyword("demote")?;
    let mut children = args.children();
    args.finish()?;
    let top_children = children.len();
    children.extend(demote);
    Ok(Arc::new(Top {
        k,
        by,
        top_children,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// What `top` ranks `e` by: `f`'s number, None to leave the top.
fn rank(by: &FieldRef, e: &Arc<Event>) -> Result<Option<f64>, NodeError> {
    match by.get(e)? {
        Value::None => Ok(None),
        v => v.as_f64().map(Some).ok_or_else(|| {
            NodeError(format!(
                "top: `f` must give a number or None, not {}",
                v.type_name()
            ))
        }),
    }
}

/// `top(k, f, demote=)`; state: the top set.
///
/// `top(10, "metric", index())`
pub struct Top {
    k: usize,
    by: FieldRef,
    /// How many of the children take the top events; a `demote` child
    /// comes after them.
    top_children: usize,
    state: Mutex<TopState>,
    core: NodeCore,
}

/// Riemann's `[smallest top]`: the members by (host, service), in arrival
/// order, and which of them is taken for the smallest.
#[derive(Default, Clone)]
struct TopState {
    members: Vec<(EventKey, f64, Arc<Event>)>,
    smallest: Option<EventKey>,
}

impl TopState {
    fn value_of(&self, key: &EventKey) -> Option<f64> {
        self.members.iter().find(|m| &m.0 == key).map(|m| m.1)
    }

    fn remove(&mut self, key: &EventKey) -> Option<Arc<Event>> {
        let i = self.members.iter().position(|m| &m.0 == key)?;
        Some(self.members.remove(i).2)
    }

    /// The first member with the smallest value.
    fn scan(&self) -> Option<EventKey> {
        self.members
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|m| m.0.clone())
    }

    /// Riemann's `top-update`: takes `event` in or out of the set; returns
    /// the member it pushed out, if any.
    fn update(
        &mut self,
        k: usize,
        key: EventKey,
        value: Option<f64>,
        event: &Arc<Event>,
    ) -> Option<Arc<Event>> {
        let Some(value) = value else {
            self.remove(&key);
            if self
                .smallest
                .as_ref()
                .and_then(|s| self.value_of(s))
                .is_none()
            {
                self.smallest = self.scan();
            }
            return None;
        };
        let smallest_value = self.smallest.as_ref().and_then(|s| self.value_of(s));
        let member = self.members.iter().position(|m| m.0 == key);
        match (smallest_value, member) {
            (None, _) => {
                self.members.retain(|m| m.0 != key);
                self.members.push((key.clone(), value, Arc::clone(event)));
                self.smallest = Some(key);
                return None;
            }
            (Some(least), None) if value <= least && self.members.len() >= k => return None,
            (_, Some(i)) => self.members[i] = (key, value, Arc::clone(event)),
            (_, None) => self.members.push((key, value, Arc::clone(event))),
        }
        let out = match self.smallest.clone() {
            Some(s) if self.members.len() > k => self.remove(&s),
            _ => None,
        };
        let least = self.smallest.as_ref().and_then(|s| self.value_of(s));
        if least.is_none_or(|least| value < least) {
            self.smallest = self.scan();
        }
        out
    }
}

impl Top {
    fn send(&self, ctx: &Context, to_top: &Arc<Event>, to_demote: &Arc<Event>) {
        let (top, demote) = self.core.children.split_at(self.top_children);
        for child in demote {
            emit_to(self, &**child, ctx, to_demote);
        }
        for child in top {
            emit_to(self, &**child, ctx, to_top);
        }
    }
}

impl Node for Top {
    node_core!("top");
    keep_state_in!(state);

    fn describe(&self) -> String {
        let demote = if self.top_children < self.core.children.len() {
            ", demote=…"
        } else {
            ""
        };
        format!("top({}, {}{demote})", self.k, self.by.describe())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Top {
            k: self.k,
            by: self.by.clone(),
            top_children: self.top_children,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} in the top", lock(&self.state).members.len()))
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let members: Vec<_> = s
            .members
            .iter()
            .map(|(_, v, e)| serde_json::json!([v, super::event_to_json(e)]))
            .collect();
        let smallest = s
            .members
            .iter()
            .position(|m| Some(&m.0) == s.smallest.as_ref());
        Some(serde_json::json!({"members": members, "smallest": smallest}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let saved: Vec<(f64, serde_json::Value)> =
            serde_json::from_value(state.get("members").cloned().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        let mut members = Vec::new();
        for (v, e) in saved {
            let e = super::event_from_json(e)?;
            members.push((e.key(), v, e));
        }
        let smallest = state
            .get("smallest")
            .and_then(|i| i.as_u64())
            .and_then(|i| members.get(i as usize))
            .map(|m| m.0.clone());
        *lock(&self.state) = TopState { members, smallest };
        Ok(())
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let now = ctx.now();
        let expired = event.is_expired(now);
        // User functions run without the lock held.
        let value = if expired {
            None
        } else {
            rank(&self.by, event)?
        };
        let key = event.key();
        let (pushed_out, in_top) = {
            let mut s = lock(&self.state);
            let out = s.update(self.k, key.clone(), value, event);
            (out, s.value_of(&key).is_some())
        };
        let has_demote = self.top_children < self.core.children.len();
        // Riemann demotes only when the event itself made it into the top.
        if let Some(out) = pushed_out.filter(|_| has_demote && in_top) {
            self.send(ctx, &Arc::new(out.expired_copy(now)), &out);
        }
        let expired_copy = || Arc::new(event.expired_copy(now));
        match (expired, in_top) {
            (true, _) => self.send(ctx, event, event),
            (false, true) => self.send(ctx, event, &expired_copy()),
            (false, false) => self.send(ctx, &expired_copy(), event),
        }
        Ok(())
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
    fn fixed_offset_time_window_aligns_windows_to_the_epoch_plus_offset() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build(
            "fixed_offset_time_window",
            vals![10],
            vec![],
            vec![out.node()],
        );
        // 7 is in [0, 10), not the start of a window of its own.
        h.send_all(&node, [at(7.0, 1.0), at(9.0, 2.0), at(10.0, 3.0)]);
        assert_eq!(metrics(out.lists()), [vec![1.0, 2.0]]);
        let shifted = h.build(
            "fixed_offset_time_window",
            vals![10],
            vec![("offset".into(), 5.into())],
            vec![out.node()],
        );
        // Windows [5, 15), [15, 25).
        h.send_all(
            &shifted,
            [
                at(12.0, 1.0),
                at(14.0, 2.0),
                at(15.0, 3.0),
                at(24.0, 4.0),
                at(25.0, 5.0),
            ],
        );
        assert_eq!(metrics(out.lists()), [vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(shifted.describe(), "fixed_offset_time_window(10, offset=5)");
    }

    fn metric(m: f64) -> Event {
        ev(&format!(r#"{{"host":"a","metric":{m}}}"#))
    }

    #[test]
    fn fold_interval_folds_each_interval_of_processing_time() {
        let h = Harness::new();
        let out = h.sink("out");
        let sum = crate::testing::func("sum", |args| match args {
            [Value::List(values)] => {
                Ok(Value::Float(values.iter().filter_map(Value::as_f64).sum()))
            }
            _ => Err(NodeError("not a list".into())),
        });
        let mut args = vals![1, "metric"];
        args.push(sum);
        let node = h.build("fold_interval", args, vec![], vec![out.node()]);
        // Riemann's fold-interval-test.
        for (t, m) in [
            (0.0, 2.0),
            (0.1, 4.0),
            (0.3, 2.0),
            (0.6, 4.0),
            (1.6, 100.0),
            (1.7, 100.0),
        ] {
            h.advance_to(&node, t);
            h.send(&node, metric(m));
        }
        h.advance_to(&node, 2.7);
        assert_eq!(out.metrics(), [Some(12.0), Some(200.0)]);
        // A quiet interval forwards nothing; the next event starts anew.
        h.advance_to(&node, 10.5);
        h.send(&node, metric(1.0));
        h.send(&node, ev(r#"{"host":"a"}"#)); // no metric: ignored
        h.advance_to(&node, 11.4);
        assert!(out.metrics().is_empty());
        h.advance_to(&node, 11.5);
        assert_eq!(out.metrics(), [Some(1.0)]);
    }

    #[test]
    fn fold_interval_metric_runs_native_folds_on_the_events() {
        let h = Harness::new();
        let out = h.sink("out");
        let mean = Value::Function(Arc::new(NativeFold(
            crate::streams::folds::find("mean").unwrap(),
        )));
        let node = h.build(
            "fold_interval_metric",
            vec![5.into(), mean.clone()],
            vec![],
            vec![out.node()],
        );
        h.send_all(&node, [metric(1.0), metric(2.0), metric(6.0)]);
        h.advance_to(&node, 5.0);
        assert_eq!(out.metrics(), [Some(3.0)]);
        assert_eq!(node.describe(), "fold_interval_metric(5, folds.mean)");
        let err = h
            .try_build(
                "fold_interval",
                vec![5.into(), "ttl".into(), mean],
                vec![],
                vec![],
            )
            .err()
            .unwrap();
        assert!(
            err.message.contains("fold metrics, not `ttl`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn fold_interval_counts_a_failing_fold_as_an_error() {
        let h = Harness::new();
        let out = h.sink("out");
        let broken = crate::testing::func("broken", |_| Err(NodeError("boom".into())));
        let node = h.build(
            "fold_interval_metric",
            vec![1.into(), broken],
            vec![],
            vec![out.node()],
        );
        h.send(&node, metric(1.0));
        h.advance_to(&node, 1.0);
        assert!(out.metrics().is_empty());
        assert_eq!(
            node.stats()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    fn svc(service: &str, m: Option<f64>) -> Event {
        match m {
            Some(m) => ev(&format!(r#"{{"service":"{service}","metric":{m}}}"#)),
            None => ev(&format!(r#"{{"service":"{service}"}}"#)),
        }
    }

    /// "service metric" of each event, "service expired" for expired copies.
    fn shown(events: Vec<Arc<Event>>) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let s = e.service.as_deref().unwrap_or("");
                match (e.state.as_deref(), e.metric) {
                    (Some("expired"), _) => format!("{s} expired"),
                    (_, Some(m)) => format!("{s} {}", m.as_f64()),
                    (_, None) => format!("{s} -"),
                }
            })
            .collect()
    }

    #[test]
    fn top_keeps_the_k_largest_and_expires_the_others() {
        // Riemann's top-test "Ring" and "Ignoring smaller events".
        type Case<'a> = (i64, &'a [(&'a str, Option<f64>)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                2,
                &[
                    ("a", Some(1.0)),
                    ("b", Some(2.0)),
                    ("c", Some(3.0)),
                    ("d", Some(4.0)),
                    ("a", Some(2.0)),
                    ("b", Some(3.0)),
                    ("c", Some(4.0)),
                    ("d", Some(5.0)),
                ],
                &[
                    "a 1",
                    "b 2",
                    "c 3",
                    "d 4",
                    "a expired",
                    "b expired",
                    "c 4",
                    "d 5",
                ],
            ),
            (
                2,
                &[
                    ("a", Some(1.0)),
                    ("b", Some(2.0)),
                    ("c", Some(3.0)),
                    ("d", Some(1.0)),
                    ("a", Some(2.0)),
                    ("b", None),
                    ("d", Some(2.0)),
                ],
                &[
                    "a 1",
                    "b 2",
                    "c 3",
                    "d expired",
                    "a expired",
                    "b expired",
                    "d 2",
                ],
            ),
        ];
        for (k, events, expected) in cases {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build("top", vals![*k, "metric"], vec![], vec![out.node()]);
            h.send_all(&node, events.iter().map(|(s, m)| svc(s, *m)));
            assert_eq!(shown(out.events()), *expected);
        }
    }

    #[test]
    fn top_sends_the_others_and_the_demoted_to_demote() {
        let h = Harness::new();
        let (out, low) = (h.sink("out"), h.sink("low"));
        let node = h.build(
            "top",
            vals![1, "metric"],
            vec![("demote".into(), low.node().into())],
            vec![out.node()],
        );
        h.send_all(
            &node,
            [
                svc("a", Some(1.0)),
                svc("b", Some(2.0)),
                svc("c", Some(0.0)),
            ],
        );
        assert_eq!(
            shown(out.events()),
            ["a 1", "a expired", "b 2", "c expired"]
        );
        assert_eq!(
            shown(low.events()),
            ["a expired", "a 1", "b expired", "c 0"]
        );
        assert_eq!(node.describe(), "top(1, \"metric\", demote=…)");
        // The top set survives a checkpoint: d (1) stays out.
        let copy = h.build("top", vals![1, "metric"], vec![], vec![out.node()]);
        copy.load_state(node.save_state().unwrap()).unwrap();
        h.send(&copy, svc("d", Some(1.0)));
        assert_eq!(shown(out.events()), ["d expired"]);
    }

    #[test]
    fn fresh_instances_are_independent_and_reload_keeps_windows() {
        for name in [
            "moving_event_window",
            "fixed_event_window",
            "moving_time_window",
            "fixed_time_window",
            "fixed_offset_time_window",
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
                // Window [0, 2) ends: the state kept held 1.
                "fixed_offset_time_window" => vec![vec![1.0]],
                _ => vec![vec![1.0, 3.0]],
            };
            assert_eq!(got, expected, "{name} kept its state over the reload");
            h.send(&changed, at(2.6, 4.0));
            let got = metrics(out.lists());
            let expected: Vec<Vec<f64>> = match name {
                "fixed_event_window" | "fixed_time_window" | "fixed_offset_time_window" => vec![],
                _ => vec![vec![4.0]],
            };
            assert_eq!(got, expected, "{name} with other args starts afresh");
        }
    }

    #[test]
    fn event_windows_survive_a_checkpoint() {
        for (name, expected) in [
            ("moving_event_window", vec![vec![1.0, 2.0, 3.0]]),
            ("fixed_event_window", vec![vec![1.0, 2.0, 3.0]]),
        ] {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build(name, vals![3], vec![], vec![out.node()]);
            h.send(&node, at(1.0, 1.0));
            h.send(&node, at(2.0, 2.0));
            let restored = h.build(name, vals![3], vec![], vec![out.node()]);
            restored.load_state(node.save_state().unwrap()).unwrap();
            out.take();
            h.send(&restored, at(3.0, 3.0));
            assert_eq!(metrics(out.lists()), expected, "{name}");
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
