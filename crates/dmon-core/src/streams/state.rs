//! State: nodes that forward events according to how a value changes over
//! successive events.
//!
//! | function | example |
//! |---|---|
//! | `changed(f, *children, init=None, pairs=False)` | `changed("state", email("ops@example.com"))` |
//! | `changed_state(*children, init="ok")` | `changed_state(email("ops@example.com"))` |
//! | `stable(dt, f, *children)` | `stable(30, "state", changed_state(email("ops@example.com")))` |
//! | `runs(n, f, *children)` | `runs(3, "state", changed_state(email("ops@example.com")))` |
//!
//! `f` is a field name (`"state"`, any field or attribute) or a function
//! of the event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::entry::Entry;
use super::transform::{loaded_value, saved_value};
use super::value::{field, Args, BuildError, Function, Value};
use super::{
    emit, emit_list, event_to_json, lock, saved, saved_event, Node, NodeCore, NodeError, NodeRef,
};
use crate::event::{Event, EventKey, Number};
use crate::streams::context::Context;
use crate::streams::timers::{timed, Alarm};
use crate::{keep_state_in, node_core, wakes_at};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "changed",
        params: "f, *children, init=None, pairs=False",
        summary: "Forward an event when `f` (a field name or a function) differs from the previous event's.",
        details: "`init` is the value assumed before the first event: with the default None, the first event passes unless its value is None. With `pairs=True` (Riemann's `:pairs? true`) forward `[previous, event]` as one list instead; before the first event the previous is an empty slot (None in Python, Riemann's nil).",
        example: r#"changed("state", email("ops@example.com"))"#,
        build: build_changed,
    },
    Entry {
        name: "changed_state",
        params: "*children, init=\"ok\"",
        summary: "Forward an event when its state differs from the previous state of the same host and service.",
        details: "Riemann's `(by [:host :service] (changed :state))`, in one node: a map of (host, service) to last state, each new key starting from `init` (\"ok\", so a new host that is fine stays quiet; pass init=None to forward every first state). An event with state \"expired\" is compared, then its key is forgotten, so the map does not grow with hosts that went away.",
        example: r#"changed_state(email("ops@example.com"))"#,
        build: build_changed_state,
    },
    Entry {
        name: "stable",
        params: "dt, f, *children",
        summary: "Forward events only once `f` (a field name or a function) has kept its value for `dt` seconds, then the events held meanwhile.",
        details: "Riemann's `stable`. When the value changes, the event is held; events with the same value are held too until one is `dt` seconds (event time) after the first held one, then all held events are forwarded, and later ones with that value pass at once. A change of value drops what was held (a spike or flapping is never forwarded). When no event comes, the held events are forwarded once the clock is `dt` seconds past the first one's time (checked on every tick, as Riemann's timer). Events without time take the clock's.",
        example: r#"stable(30, "state", changed_state(email("ops@example.com")))"#,
        build: build_stable,
    },
    Entry {
        name: "runs",
        params: "n, f, *children",
        summary: "Forward an event when it and the n − 1 events before it share the value of `f` (a field name or a function).",
        details: "Riemann's `runs`, for flap damping: the last `n` events are kept; while their values of `f` are equal, each new one is forwarded. `n` must be at least 1 (Riemann's `runs` of 0 forwards nothing; dmon refuses it as a mistake).",
        example: r#"runs(3, "state", changed_state(email("ops@example.com")))"#,
        build: build_runs,
    },
];

/// What a node compares: a field of the event, or a function's result.
#[derive(Clone)]
pub enum Key {
    Field(String),
    Fn(Arc<dyn Function>),
}

impl Key {
    fn from_args(args: &mut Args) -> Result<Key, BuildError> {
        match args.value("f")? {
            Value::Str(name) => Ok(Key::Field(name)),
            Value::Function(f) => Ok(Key::Fn(f)),
            v => Err(args.type_error(format_args!(
                "`f` must be a field name (like \"state\") or a function, not {}",
                v.type_name()
            ))),
        }
    }

    fn of(&self, e: &Arc<Event>) -> Result<Value, NodeError> {
        match self {
            Key::Field(name) => Ok(field(e, name)),
            Key::Fn(f) => f.call(&[Value::Event(Arc::clone(e))]),
        }
    }

    fn describe(&self) -> String {
        match self {
            Key::Field(name) => format!("{name:?}"),
            Key::Fn(f) => f.describe(),
        }
    }
}

fn init_arg(args: &mut Args, default: Value) -> Value {
    args.keyword("init").unwrap_or(default)
}

fn init_suffix(init: &Value, default: &Value) -> String {
    if init == default {
        String::new()
    } else {
        format!(", init={init}")
    }
}

// ---------------------------------------------------------------- changed

fn build_changed(mut args: Args) -> Result<NodeRef, BuildError> {
    let key = Key::from_args(&mut args)?;
    let init = init_arg(&mut args, Value::None);
    let pairs = match args.keyword("pairs") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`pairs` must be True or False, not {v} ({})",
                v.type_name()
            )))
        }
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Changed {
        key,
        pairs,
        previous: Mutex::new((init.clone(), None)),
        init,
        core: NodeCore::new(children),
    }))
}

/// `changed(f, *children, init=None, pairs=False)`; state: the previous
/// value, and with `pairs` the previous event.
pub struct Changed {
    key: Key,
    init: Value,
    pairs: bool,
    previous: Mutex<(Value, Option<Arc<Event>>)>,
    core: NodeCore,
}

impl Node for Changed {
    node_core!("changed");
    keep_state_in!(previous);

    fn describe(&self) -> String {
        format!(
            "changed({}{}{})",
            self.key.describe(),
            init_suffix(&self.init, &Value::None),
            if self.pairs { ", pairs=True" } else { "" }
        )
    }
    /// The previous value, when it is plain data (see `sreduce`), and with
    /// `pairs` the previous event.
    fn save_state(&self) -> Option<serde_json::Value> {
        let previous = lock(&self.previous);
        Some(serde_json::json!({
            "value": saved_value(&previous.0)?,
            "event": previous.1.as_deref().map(event_to_json),
        }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let value = loaded_value(state.get("value").unwrap_or(&serde_json::Value::Null))?;
        *lock(&self.previous) = (value, saved_event(&state, "event")?);
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Changed {
            key: self.key.clone(),
            init: self.init.clone(),
            pairs: self.pairs,
            previous: Mutex::new((self.init.clone(), None)),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let value = self.key.of(event)?;
        let (changed, before) = {
            let mut previous = lock(&self.previous);
            let changed = previous.0 != value;
            let kept = self.pairs.then(|| Arc::clone(event));
            let (_, before) = std::mem::replace(&mut *previous, (value, kept));
            (changed, before)
        };
        if !changed {
            return Ok(());
        }
        if self.pairs {
            let before = before.unwrap_or_else(|| Arc::clone(super::empty_slot()));
            emit_list(self, ctx, &[before, Arc::clone(event)]);
        } else {
            emit(self, ctx, event);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- changed_state

fn build_changed_state(mut args: Args) -> Result<NodeRef, BuildError> {
    let init = match init_arg(&mut args, Value::from("ok")) {
        v @ (Value::Str(_) | Value::None) => v,
        v => {
            return Err(args.type_error(format_args!(
                "`init` must be a state (a str) or None, not {}",
                v.type_name()
            )))
        }
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(ChangedState {
        init,
        states: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `changed_state(*children, init="ok")`; state: the last state of each
/// (host, service).
pub struct ChangedState {
    init: Value,
    states: Mutex<HashMap<EventKey, Value>>,
    core: NodeCore,
}

impl Node for ChangedState {
    node_core!("changed_state");
    keep_state_in!(states);

    fn describe(&self) -> String {
        match init_suffix(&self.init, &Value::from("ok")).strip_prefix(", ") {
            Some(init) => format!("changed_state({init})"),
            None => "changed_state()".to_owned(),
        }
    }
    /// Each key's last state, as [host, service, state].
    fn save_state(&self) -> Option<serde_json::Value> {
        let states: Vec<_> = lock(&self.states)
            .iter()
            .map(|((host, service), v)| {
                Some(serde_json::json!([
                    host.as_deref(),
                    service.as_deref(),
                    saved_value(v)?
                ]))
            })
            .collect::<Option<_>>()?;
        Some(serde_json::json!({ "states": states }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let saved_states: Vec<(Option<String>, Option<String>, serde_json::Value)> =
            saved(&state, "states")?;
        let mut states = HashMap::with_capacity(saved_states.len());
        for (host, service, v) in saved_states {
            states.insert(
                (host.map(Into::into), service.map(Into::into)),
                loaded_value(&v)?,
            );
        }
        *lock(&self.states) = states;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(ChangedState {
            init: self.init.clone(),
            states: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn detail(&self) -> Option<String> {
        Some(format!("{} keys", lock(&self.states).len()))
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let state = field(event, "state");
        let changed = {
            let mut states = lock(&self.states);
            let key = event.key();
            let changed = *states.get(&key).unwrap_or(&self.init) != state;
            if event.state.as_deref() == Some("expired") {
                states.remove(&key);
            } else {
                states.insert(key, state);
            }
            changed
        };
        if changed {
            emit(self, ctx, event);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- stable

fn build_stable(mut args: Args) -> Result<NodeRef, BuildError> {
    let dt = args.positive("dt")?;
    let key = Key::from_args(&mut args)?;
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| Stable {
        dt,
        alarm,
        key,
        state: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `stable(dt, f, *children)`; state: the current value (None before the
/// first event) and the events held since it changed.
pub struct Stable {
    dt: f64,
    alarm: Alarm,
    key: Key,
    state: Mutex<StableState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct StableState {
    value: Option<Value>,
    /// Held events with their times; empty once the value is stable.
    held: Vec<(f64, Arc<Event>)>,
}

impl Stable {
    /// When the held events have been stable for `dt`.
    fn due(&self, s: &StableState) -> Option<f64> {
        s.held.first().map(|(t, _)| t + self.dt)
    }

    /// The held events, let go (the value stayed for `dt`).
    fn release(s: &mut StableState) -> Vec<Arc<Event>> {
        std::mem::take(&mut s.held)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }
}

impl Node for Stable {
    node_core!("stable");
    keep_state_in!(state);
    wakes_at!(due);

    fn describe(&self) -> String {
        format!("stable({}, {})", self.dt, self.key.describe())
    }
    /// The current value, when it is plain data (see `sreduce`), and the
    /// held events with their times.
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        let value = match &s.value {
            Some(v) => saved_value(v)?,
            None => serde_json::Value::Null,
        };
        let held: Vec<_> = s
            .held
            .iter()
            .map(|(t, e)| serde_json::json!([t, event_to_json(e)]))
            .collect();
        Some(serde_json::json!({"value": value, "held": held}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let value = match state.get("value") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(loaded_value(v)?),
        };
        let held: Vec<(f64, Event)> = saved(&state, "held")?;
        *lock(&self.state) = StableState {
            value,
            held: held.into_iter().map(|(t, e)| (t, Arc::new(e))).collect(),
        };
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| Stable {
            dt: self.dt,
            alarm,
            key: self.key.clone(),
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let value = self.key.of(event)?;
        let t = event.time.map_or_else(|| ctx.now(), Number::as_f64);
        let out: Vec<Arc<Event>> = {
            let mut s = lock(&self.state);
            let out = if s.value.as_ref() != Some(&value) {
                s.value = Some(value);
                s.held = vec![(t, Arc::clone(event))];
                Vec::new()
            } else if s.held.is_empty() {
                vec![Arc::clone(event)]
            } else {
                s.held.push((t, Arc::clone(event)));
                if t - s.held[0].0 >= self.dt {
                    Self::release(&mut s)
                } else {
                    Vec::new()
                }
            };
            self.alarm.set(&ctx.timers, self.due(&s));
            out
        };
        out.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
    fn wake(&self, ctx: &Context, now: f64) {
        let due_now = |s: &mut StableState| match self.due(s) {
            Some(due) if now >= due => Self::release(s),
            _ => Vec::new(),
        };
        let out = self
            .alarm
            .roll(&ctx.timers, &self.state, due_now, |s| self.due(s));
        out.iter().for_each(|e| emit(self, ctx, e));
    }
}

// ---------------------------------------------------------------- runs

fn build_runs(mut args: Args) -> Result<NodeRef, BuildError> {
    let n = args.count("n")?;
    let key = Key::from_args(&mut args)?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Runs {
        n,
        key,
        last: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `runs(n, f, *children)`; state: the values of the last `n` events.
pub struct Runs {
    n: usize,
    key: Key,
    last: Mutex<VecDeque<Value>>,
    core: NodeCore,
}

impl Node for Runs {
    node_core!("runs");
    keep_state_in!(last);

    fn describe(&self) -> String {
        format!("runs({}, {})", self.n, self.key.describe())
    }
    /// The last values, when they are plain data (see `sreduce`).
    fn save_state(&self) -> Option<serde_json::Value> {
        let last: Vec<_> = lock(&self.last)
            .iter()
            .map(saved_value)
            .collect::<Option<_>>()?;
        Some(serde_json::json!({ "last": last }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let saved_last: Vec<serde_json::Value> = saved(&state, "last")?;
        let last = saved_last
            .iter()
            .map(loaded_value)
            .collect::<Result<VecDeque<_>, _>>()?;
        *lock(&self.last) = last;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Runs {
            n: self.n,
            key: self.key.clone(),
            last: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let value = self.key.of(event)?;
        let run = {
            let mut last = lock(&self.last);
            last.push_back(value);
            while last.len() > self.n {
                last.pop_front();
            }
            last.len() == self.n && last.iter().all(|v| *v == last[0])
        };
        if run {
            emit(self, ctx, event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::carry_over;
    use crate::testing::{ev, func, Harness};
    use crate::vals;

    fn state_events(states: &[&str]) -> Vec<Event> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| ev(&format!(r#"{{"host":"h{i}","state":"{s}"}}"#)))
            .collect()
    }

    #[test]
    fn changed_by_field_or_function_from_init() {
        let big = func("big", |a| match &a[0] {
            Value::Event(e) => Ok(Value::Bool(e.metric.is_some_and(|m| m.as_f64() > 2.0))),
            _ => Ok(Value::None),
        });
        #[rustfmt::skip]
        let cases: &[(Option<Value>, &[&str], &[&str])] = &[
            (None, &["ok", "ok", "bad", "bad", "ok"], &["h0", "h2", "h4"]),
            (Some("ok".into()), &["ok", "ok", "bad", "ok"], &["h2", "h3"]),
        ];
        let h = Harness::new();
        for (init, states, want) in cases {
            let out = h.sink("out");
            let named = init
                .clone()
                .map(|i| vec![("init".to_owned(), i)])
                .unwrap_or_default();
            let node = h.build("changed", vals!["state"], named, vec![out.node()]);
            h.send_all(&node, state_events(states));
            assert_eq!(out.hosts(), *want, "changed(init={init:?}) over {states:?}");
        }
        let out = h.sink("out");
        let node = h.build(
            "changed",
            vec![big],
            vec![("init".into(), false.into())],
            vec![out.node()],
        );
        for (h_, m) in [("a", 1), ("b", 3), ("c", 4), ("d", 0)] {
            h.send(&node, ev(&format!(r#"{{"host":"{h_}","metric":{m}}}"#)));
        }
        assert_eq!(out.hosts(), ["b", "d"]);
        let err = h
            .try_build("changed", vals![1], vec![], vec![])
            .err()
            .unwrap();
        assert_eq!(
            err.message,
            "changed(f, *children, init=None, pairs=False): `f` must be a field name (like \"state\") or a function, not int"
        );
    }

    /// Riemann's changed-test, "with previous event and arbitrary fn":
    /// pairs of (previous, current) states from init "ok".
    #[test]
    fn changed_with_pairs_forwards_the_previous_event_and_the_current() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build(
            "changed",
            vals!["state"],
            vec![("init".into(), "ok".into()), ("pairs".into(), true.into())],
            vec![out.node()],
        );
        h.send_all(
            &node,
            state_events(&["ok", "bad", "bad", "ok", "ok", "evil", "bad"]),
        );
        let pairs: Vec<Vec<String>> = out
            .lists()
            .iter()
            .map(|l| {
                l.iter()
                    .map(|e| e.host.as_deref().unwrap().to_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            pairs,
            [["h0", "h1"], ["h2", "h3"], ["h4", "h5"], ["h5", "h6"]]
        );
        assert_eq!(
            node.describe(),
            r#"changed("state", init="ok", pairs=True)"#
        );
        // No event before the first change: an empty slot stands for it.
        let node = h.build(
            "changed",
            vals!["state"],
            vec![("pairs".into(), true.into())],
            vec![out.node()],
        );
        h.send_all(&node, state_events(&["ok"]));
        let lists = out.lists();
        assert!(crate::streams::is_empty_slot(&lists[0][0]));
        assert_eq!(lists[0][1].state.as_deref(), Some("ok"));
        let err = h
            .try_build(
                "changed",
                vals!["state"],
                vec![("pairs".into(), 1.into())],
                vec![],
            )
            .err()
            .unwrap();
        assert!(
            err.message
                .ends_with("`pairs` must be True or False, not 1 (int)"),
            "{err}"
        );
    }

    #[test]
    fn changed_keeps_its_value_on_reload_and_fresh_starts_over() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("changed", vals!["state"], vec![], vec![out.node()]);
        h.send_all(&node, state_events(&["ok"]));
        let reloaded = h.build("changed", vals!["state"], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        h.send_all(&reloaded, state_events(&["ok"]));
        let other = h.build("changed", vals!["host"], vec![], vec![out.node()]);
        carry_over(&*other, &*reloaded);
        h.send_all(&other, state_events(&["ok"]));
        assert_eq!(out.hosts(), ["h0", "h0"]);
        let fresh = reloaded.fresh();
        h.send_all(&fresh, state_events(&["ok"]));
        assert_eq!(out.hosts(), ["h0"]);
    }

    #[test]
    fn changed_state_per_host_and_service_forgets_expired_keys() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("changed_state", vec![], vec![], vec![out.node()]);
        let send = |host: &str, state: &str| {
            h.send(
                &node,
                ev(&format!(
                    r#"{{"host":"{host}","service":"s","state":"{state}"}}"#
                )),
            )
        };
        let states = |out: &crate::testing::Sink| -> Vec<String> {
            out.events()
                .iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e.host.as_deref().unwrap(),
                        e.state.as_deref().unwrap()
                    )
                })
                .collect()
        };
        send("a", "ok");
        send("b", "critical");
        send("a", "warning");
        send("b", "critical");
        send("a", "warning");
        send("a", "ok");
        assert_eq!(states(&out), ["b:critical", "a:warning", "a:ok"]);
        assert_eq!(node.detail().as_deref(), Some("2 keys"));
        send("b", "expired");
        assert_eq!(states(&out), ["b:expired"]);
        assert_eq!(node.detail().as_deref(), Some("1 keys"));
        // b starts over from init.
        send("b", "ok");
        assert!(out.events().is_empty());
        // init=None forwards every first state.
        let node = h.build(
            "changed_state",
            vec![],
            vec![("init".into(), Value::None)],
            vec![out.node()],
        );
        assert_eq!(node.describe(), "changed_state(init=None)");
        h.send(&node, ev(r#"{"host":"a","state":"ok"}"#));
        assert_eq!(out.hosts(), ["a"]);
        let err = h
            .try_build(
                "changed_state",
                vec![],
                vec![("init".into(), 1.into())],
                vec![],
            )
            .err()
            .unwrap();
        assert!(err.wrong_type, "{err}");
    }

    #[test]
    fn changed_state_reload_keeps_the_map() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("changed_state", vec![], vec![], vec![out.node()]);
        h.send(&node, ev(r#"{"host":"a","state":"bad"}"#));
        let reloaded = h.build("changed_state", vec![], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        h.send(&reloaded, ev(r#"{"host":"a","state":"bad"}"#));
        assert_eq!(out.hosts(), ["a"]);
        let fresh = reloaded.fresh();
        assert_eq!(fresh.detail().as_deref(), Some("0 keys"));
    }

    fn timed(t: f64, state: &str) -> Event {
        ev(&format!(r#"{{"host":"{t}","state":"{state}","time":{t}}}"#))
    }

    /// (time, state) of the events sent.
    type Timed = (f64, &'static str);

    #[test]
    fn stable_drops_spikes_and_flapping_and_releases_stable_values() {
        #[rustfmt::skip]
        let cases: &[(&str, &[Timed], &[&str])] = &[
            // The first value is held dt, then released with what followed.
            ("stable start", &[(0.0, "ok"), (3.0, "ok"), (5.0, "ok"), (6.0, "ok")], &["0", "3", "5", "6"]),
            // A spike shorter than dt is dropped.
            ("spike", &[(0.0, "ok"), (5.0, "ok"), (6.0, "bad"), (7.0, "ok"), (12.0, "ok")], &["0", "5", "7", "12"]),
            // Flapping never stabilizes.
            ("flapping", &[(0.0, "ok"), (1.0, "bad"), (2.0, "ok"), (3.0, "bad"), (4.0, "ok")], &[]),
        ];
        for (name, input, want) in cases {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build("stable", vals![5, "state"], vec![], vec![out.node()]);
            for (t, s) in *input {
                h.send(&node, timed(*t, s));
            }
            assert_eq!(out.hosts(), *want, "{name}");
        }
    }

    #[test]
    fn stable_flushes_on_tick_when_traffic_stops() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("stable", vals![5, "state"], vec![], vec![out.node()]);
        h.send(&node, timed(0.0, "ok"));
        h.send(&node, timed(2.0, "ok"));
        h.advance_to(&node, 4.9);
        assert!(out.hosts().is_empty());
        h.advance_to(&node, 5.0);
        assert_eq!(out.hosts(), ["0", "2"]);
        h.send(&node, timed(6.0, "ok"));
        assert_eq!(out.hosts(), ["6"]);
        // Reload keeps what is held; a fresh instance holds nothing.
        h.send(&node, timed(7.0, "bad"));
        let reloaded = h.build("stable", vals![5, "state"], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        let fresh = reloaded.fresh();
        h.advance_to(&fresh, 20.0);
        assert!(out.hosts().is_empty());
        h.advance_to(&reloaded, 20.0);
        assert_eq!(out.hosts(), ["7"]);
        let err = h
            .try_build("stable", vals![0, "state"], vec![], vec![])
            .err()
            .unwrap();
        assert!(err.message.contains("`dt` must be greater than 0"), "{err}");
    }

    #[test]
    fn runs_forwards_the_newest_of_n_equal_values() {
        #[rustfmt::skip]
        let cases: &[(usize, &[&str], &[&str])] = &[
            (3, &["ok", "ok", "ok", "ok", "bad", "ok", "ok", "ok"], &["h2", "h3", "h7"]),
            (1, &["ok", "bad"], &["h0", "h1"]),
            (2, &["ok", "bad", "ok", "bad"], &[]),
        ];
        for (n, states, want) in cases {
            let h = Harness::new();
            let out = h.sink("out");
            let node = h.build("runs", vals![*n as i64, "state"], vec![], vec![out.node()]);
            h.send_all(&node, state_events(states));
            assert_eq!(out.hosts(), *want, "runs({n}) over {states:?}");
        }
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("runs", vals![2, "state"], vec![], vec![out.node()]);
        h.send_all(&node, state_events(&["ok"]));
        let reloaded = h.build("runs", vals![2, "state"], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        h.send_all(&reloaded, state_events(&["ok"]));
        assert_eq!(out.hosts(), ["h0"]);
        let fresh = reloaded.fresh();
        h.send_all(&fresh, state_events(&["ok"]));
        assert!(out.hosts().is_empty());
        let err = h
            .try_build("runs", vals![0, "state"], vec![], vec![])
            .err()
            .unwrap();
        assert!(err.message.contains("`n` must be a whole number"), "{err}");
    }

    #[test]
    fn stateful_nodes_survive_a_checkpoint() {
        use crate::testing::Step::{AdvanceTo, Send};
        let at = |t: u32, host: &str, state: &str| {
            Send(ev(&format!(
                r#"{{"host":"{host}","state":"{state}","time":{t}}}"#
            )))
        };
        let before = [
            at(1, "a", "ok"),
            at(2, "b", "critical"),
            at(3, "c", "critical"),
        ];
        let by_state = || vals!["state"];
        #[rustfmt::skip]
        let cases: Vec<crate::testing::RestartCase> = vec![
            // The previous state was critical: d's is no change.
            ("changed", by_state(), vec![at(4, "d", "critical"), at(5, "e", "ok")], vec!["e"]),
            // b's last state was critical, a new host starts from ok.
            ("changed_state", vals![], vec![at(4, "b", "critical"), at(5, "d", "ok"), at(6, "a", "warning")], vec!["a"]),
            // Critical held since 2: released by the timer at 12.
            ("stable", vals![10, "state"], vec![AdvanceTo(13.0)], vec!["b", "c"]),
            // Two criticals before the restart, the third makes a run.
            ("runs", vals![3, "state"], vec![at(4, "d", "critical")], vec!["d"]),
        ];
        crate::testing::assert_restarts(&before, cases);
        // changed(pairs=True) keeps the previous event too.
        let h = Harness::new();
        let pairs = vec![("pairs".to_owned(), Value::Bool(true))];
        let got = h.restart_between(
            |out| h.build("changed", by_state(), pairs.clone(), vec![out]),
            &before[..2],
            &[at(4, "d", "ok")],
        );
        assert_eq!(got.len(), 1);
        // A value that is a function cannot be kept: nothing is saved.
        let f = func("f", |_| Ok(func("g", |_| Ok(Value::None))));
        let node = h.build("changed", vec![f], vec![], vec![]);
        h.send(&node, ev(r#"{"host":"a"}"#));
        assert!(node.save_state().is_none());
        let runs = h.build("runs", vals![2, "state"], vec![], vec![]);
        assert!(runs.load_state(serde_json::json!({"last": [1]})).is_err());
        assert!(runs.load_state(serde_json::json!([])).is_err());
    }
}
