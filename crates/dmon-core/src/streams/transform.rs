//! Transforms: nodes that change the events they forward.
//!
//! | function | example |
//! |---|---|
//! | `smap(f, *children)` | `fixed_time_window(60, smap(folds.mean, printer()))` |
//! | `smapcat(f, *children)` | `fixed_time_window(60, smapcat(lambda es: [e for e in es if e.metric > 1], index()))` |
//! | `sflatten(*children)` | `rollup(5, 3600, sflatten(email("ops@example.com")))` |
//! | `sfilter(f, *children)` | `sfilter(lambda e: e.metric > 1, printer())` |
//! | `sreduce(f, *children, init=None)` | `sreduce(lambda acc, e: e if e.metric > acc.metric else acc, printer())` |
//! | `with_(*field_values_and_children)` | `with_({"state": "ok", "ttl": 60}, index())` |
//! | `default(*field_values_and_children)` | `default("ttl", 300, index())` |
//! | `adjust(*args_and_children)` | `adjust("service", lambda s: s + " rate", printer())` |
//! | `scale(factor, *children)` | `scale(1 / 1024, index())` |
//! | `tag(tags, *children)` / `untag(tags, *children)` | `tag(["web", "prod"], index())` |
//! | `counter(*children, init=0)` | `counter(index())` |
//! | `ewma_timeless(r, *children)` | `ewma_timeless(0.5, printer())` |
//! | `ewma(halflife, *children)` | `ewma(60, printer())` |
//! | `project(*tests_and_children)` | `project('service = "enq"', 'service = "deq"', smap(folds.quotient, printer()))` |

use std::sync::{Arc, Mutex};

use smol_str::SmolStr;

use super::entry::Entry;
use super::filter::{FnPredicate, Predicate};
use super::folds::{add, mul};
use super::value::{field, set_field, Args, BuildError, Function, Value};
use super::{emit, emit_list, lock, Node, NodeCore, NodeError, NodeRef};
use crate::event::{Event, Number};
use crate::query::Query;
use crate::streams::context::Context;
use crate::{keep_state_in, node_core};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "smap",
        params: "f, *children",
        summary: "Forward `f(event)`: an Event, a dict of fields, a list of either, or None for nothing.",
        details: "A list of events (from a window) is given to `f` whole, so `smap(folds.mean, …)` folds each window; a list returned is forwarded as a list.",
        example: "fixed_time_window(60, smap(folds.mean, printer()))",
        build: build_smap,
    },
    Entry {
        name: "smapcat",
        params: "f, *children",
        summary: "Forward each event of `f(event)` (a list of Events or dicts; an Event, a dict or None also do) one by one.",
        details: "Riemann's `smapcat`. A list of events (from a window) is given to `f` whole, as smap does, so `smapcat(folds.extremes, …)` forwards a window's minimum then its maximum; unlike smap, a list returned is forwarded as separate events, never as a list.",
        example: r#"fixed_time_window(60, smapcat(lambda es: [e for e in es if e.metric > 1], index()))"#,
        build: build_smapcat,
    },
    Entry {
        name: "sflatten",
        params: "*children",
        summary: "Forward the events of each list received (a window's, a fold's) one by one.",
        details: "Riemann's `sflatten`. A single event passes as it is. Children that take lists whole (smap, email, coroutines) get single events instead: the example mails each held event on its own rather than one mail per rollup.",
        example: r#"rollup(5, 3600, sflatten(email("ops@example.com")))"#,
        build: build_sflatten,
    },
    Entry {
        name: "sfilter",
        params: "f, *children",
        summary: "Forward the events for which `f(event)` is truthy.",
        details: "",
        example: "sfilter(lambda e: e.metric > 1, printer())",
        build: build_sfilter,
    },
    Entry {
        name: "sreduce",
        params: "f, *children, init=None",
        summary: "Running reduce: `acc = f(acc, event)`, forwarding `acc` after each event.",
        details: "Without `init`, the first event becomes the accumulator and is not forwarded (Riemann). `acc` is forwarded like smap's result: an Event, a dict, a list, or None for nothing.",
        example: "sreduce(lambda acc, e: e if e.metric > acc.metric else acc, printer())",
        build: build_sreduce,
    },
    Entry {
        name: "with_",
        params: "*field_values_and_children",
        summary: "Set fields: `with_(\"state\", \"ok\", child)` or `with_({\"state\": \"ok\", \"ttl\": 60}, child)`.",
        details: "Any field or attribute name; None removes it.",
        example: r#"with_({"state": "ok", "ttl": 60}, index())"#,
        build: build_with,
    },
    Entry {
        name: "default",
        params: "*field_values_and_children",
        summary: "Like `with_`, but only sets fields that are absent (None).",
        details: "",
        example: r#"default("ttl", 300, index())"#,
        build: build_default,
    },
    Entry {
        name: "adjust",
        params: "*args_and_children",
        summary: "`adjust(field, f, …)` sets field to `f(value)`; `adjust(f, …)` forwards `f(event)` like smap.",
        details: "",
        example: r#"adjust("service", lambda s: s + " rate", printer())"#,
        build: build_adjust,
    },
    Entry {
        name: "scale",
        params: "factor, *children",
        summary: "Multiply the metric by `factor`.",
        details: "Events without a metric pass unchanged. Integer × integer stays an integer.",
        example: "scale(1 / 1024, index())",
        build: build_scale,
    },
    Entry {
        name: "tag",
        params: "tags, *children",
        summary: "Add a tag or a list of tags (no duplicates).",
        details: "As in Riemann, the new tags come first, then the event's own: tag(\"x\") of tags [\"a\"] gives [\"x\", \"a\"].",
        example: r#"tag(["web", "prod"], index())"#,
        build: build_tag,
    },
    Entry {
        name: "untag",
        params: "tags, *children",
        summary: "Remove a tag or a list of tags.",
        details: "",
        example: r#"untag("staging", index())"#,
        build: build_untag,
    },
    Entry {
        name: "counter",
        params: "*children, init=0",
        summary: "Metric := running sum of the metrics; an event tagged \"reset\" sets the sum to its metric.",
        details: "Events without a metric pass through unchanged (Riemann).",
        example: "counter(index())",
        build: build_counter,
    },
    Entry {
        name: "ewma_timeless",
        params: "r, *children",
        summary: "Exponential moving average per event: metric := r × metric + (1 − r) × previous.",
        details: "`r` between 0 and 1: 1 forwards the latest metric. The average starts at 0. Events without a metric pass unchanged.",
        example: "ewma_timeless(0.5, printer())",
        build: build_ewma_timeless,
    },
    Entry {
        name: "ewma",
        params: "halflife, *children",
        summary: "Exponential moving average weighted by event time: a metric's weight halves every `halflife` seconds.",
        details: "Event time (Riemann's `ewma`): with d the seconds since the previous event and k = 0.5^(1/halflife), avg := (1 − k) × metric + avg × k^d; a late event adds (1 − k) × metric × k^|d|; events at the same time add (1 − k) × metric. The average starts at 0, so it warms up over a few half-lives. Forwards each event with the average as metric and the latest event time. Events without a metric pass unchanged; an event without time takes the clock's.",
        example: "ewma(60, printer())",
        build: build_ewma,
    },
    Entry {
        name: "project",
        params: "*tests_and_children",
        summary: "Keep the latest event matching each test (query or predicate) and forward them as one list on every match.",
        details: "One slot per test, in order: the list keeps the positions, with None (an empty slot) for a test nothing matched yet; nodes taking events one by one get the events only. An expired event (state \"expired\", or older than its ttl by the clock) is forwarded once in its slot, then the slot is emptied (Riemann). At least one test is needed (Riemann's `(project [])` accepts none and never forwards; dmon refuses it as a mistake).",
        example: r#"project('service = "enq"', 'service = "deq"', smap(folds.quotient, printer()))"#,
        build: build_project,
    },
];

/// Forwards what a user function returned: nothing, one event, or a list.
fn emit_result(node: &dyn Node, ctx: &Context, v: Value) -> Result<(), NodeError> {
    let was_list = matches!(v, Value::List(_));
    let events = v
        .into_events()
        .map_err(|e| NodeError(format!("{}: {e}", node.describe())))?;
    if was_list {
        emit_list(node, ctx, &events);
    } else if let Some(e) = events.first() {
        emit(node, ctx, e);
    }
    Ok(())
}

fn arc(e: Event) -> Arc<Event> {
    Arc::new(e)
}

// ---------------------------------------------------------------- smap

fn build_smap(args: Args) -> Result<NodeRef, BuildError> {
    build_mapping(args, "smap")
}

fn build_smapcat(args: Args) -> Result<NodeRef, BuildError> {
    build_mapping(args, "smapcat")
}

fn build_mapping(mut args: Args, kind: &'static str) -> Result<NodeRef, BuildError> {
    let f = args.function("f")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Smap {
        kind,
        f,
        core: NodeCore::new(children),
    }))
}

/// `smap(f, *children)` (and `adjust(f, *children)`): forwards `f(event)`,
/// or `f(list)` for a list; `smapcat` forwards a list result's events one
/// by one.
pub struct Smap {
    kind: &'static str,
    f: Arc<dyn Function>,
    core: NodeCore,
}

impl Smap {
    fn forward(&self, ctx: &Context, v: Value) -> Result<(), NodeError> {
        if self.kind != "smapcat" {
            return emit_result(self, ctx, v);
        }
        let events = v
            .into_events()
            .map_err(|e| NodeError(format!("{}: {e}", self.describe())))?;
        events.iter().for_each(|e| emit(self, ctx, e));
        Ok(())
    }
}

impl Node for Smap {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        format!("{}({})", self.kind, self.f.describe())
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        Arc::new(Smap {
            kind: self.kind,
            f: Arc::clone(&self.f),
            core: self.core.fresh(),
        })
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let v = self.f.call(&[Value::Event(Arc::clone(event))])?;
        self.forward(ctx, v)
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        let v = self.f.call_at(&[Value::events(events)], ctx.now())?;
        self.forward(ctx, v)
    }
}

// ---------------------------------------------------------------- sflatten

fn build_sflatten(mut args: Args) -> Result<NodeRef, BuildError> {
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Sflatten {
        core: NodeCore::new(children),
    }))
}

/// `sflatten(*children)`: a list's events, one by one.
pub struct Sflatten {
    core: NodeCore,
}

impl Node for Sflatten {
    node_core!("sflatten");

    fn fresh(&self) -> NodeRef {
        Arc::new(Sflatten {
            core: self.core.fresh(),
        })
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        emit(self, ctx, event);
        Ok(())
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        super::present(events).for_each(|e| emit(self, ctx, e));
        Ok(())
    }
}

// ---------------------------------------------------------------- sfilter

fn build_sfilter(mut args: Args) -> Result<NodeRef, BuildError> {
    let f = args.function("f")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Sfilter {
        f,
        core: NodeCore::new(children),
    }))
}

/// `sfilter(f, *children)`: forwards events for which `f` is truthy.
pub struct Sfilter {
    f: Arc<dyn Function>,
    core: NodeCore,
}

impl Node for Sfilter {
    node_core!("sfilter");

    fn describe(&self) -> String {
        format!("sfilter({})", self.f.describe())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Sfilter {
            f: Arc::clone(&self.f),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if self.f.test(&[Value::Event(Arc::clone(event))])? {
            emit(self, ctx, event);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- sreduce

fn build_sreduce(mut args: Args) -> Result<NodeRef, BuildError> {
    let f = args.function("f")?;
    let init = match args.keyword("init") {
        None | Some(Value::None) => None,
        Some(v) => Some(v),
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Sreduce {
        f,
        acc: Mutex::new(init.clone()),
        init,
        core: NodeCore::new(children),
    }))
}

/// A value as a checkpoint keeps it, tagged so that it reads back as the
/// same kind (`{"int": 2}` stays an int, an event an event); `None` for a
/// function or a stream, which cannot be saved.
pub(super) fn saved_value(v: &Value) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match v {
        Value::None => json!({ "none": null }),
        Value::Bool(b) => json!({ "bool": b }),
        Value::Int(i) => json!({ "int": i }),
        Value::Float(f) => json!({ "float": f }),
        Value::Str(s) => json!({ "str": s }),
        Value::List(items) => {
            json!({ "list": items.iter().map(saved_value).collect::<Option<Vec<_>>>()? })
        }
        Value::Map(pairs) => json!({ "map": pairs
            .iter()
            .map(|(k, v)| Some(json!([k, saved_value(v)?])))
            .collect::<Option<Vec<_>>>()? }),
        Value::Event(e) => json!({ "event": super::event_to_json(e) }),
        Value::Function(_) | Value::Stream(_) => return None,
    })
}

pub(super) fn loaded_value(v: &serde_json::Value) -> Result<Value, String> {
    let bad = || format!("not a saved value: {v}");
    let (tag, inner) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    Ok(match tag.as_str() {
        "none" => Value::None,
        "bool" => Value::Bool(inner.as_bool().ok_or_else(bad)?),
        "int" => Value::Int(inner.as_i64().ok_or_else(bad)?),
        "float" => Value::Float(inner.as_f64().ok_or_else(bad)?),
        "str" => Value::Str(inner.as_str().ok_or_else(bad)?.to_owned()),
        "list" => Value::List(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(loaded_value)
                .collect::<Result<_, _>>()?,
        ),
        "map" => Value::Map(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([serde_json::Value::String(k), v]) => Ok((k.clone(), loaded_value(v)?)),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
        ),
        "event" => Value::Event(super::event_from_json(inner.clone())?),
        _ => return Err(bad()),
    })
}

/// `sreduce(f, *children, init=None)`; state: the accumulator (None until
/// the first event when there is no `init`).
pub struct Sreduce {
    f: Arc<dyn Function>,
    init: Option<Value>,
    acc: Mutex<Option<Value>>,
    core: NodeCore,
}

impl Node for Sreduce {
    node_core!("sreduce");
    keep_state_in!(acc);

    fn describe(&self) -> String {
        match &self.init {
            Some(init) => format!("sreduce({}, init={init})", self.f.describe()),
            None => format!("sreduce({})", self.f.describe()),
        }
    }
    /// The accumulator, when it is plain data (no function or stream).
    fn save_state(&self) -> Option<serde_json::Value> {
        let acc = match &*lock(&self.acc) {
            None => serde_json::Value::Null,
            Some(v) => saved_value(v)?,
        };
        Some(serde_json::json!({ "acc": acc }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let acc = match state.get("acc") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(loaded_value(v)?),
        };
        *lock(&self.acc) = acc;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Sreduce {
            f: Arc::clone(&self.f),
            init: self.init.clone(),
            acc: Mutex::new(self.init.clone()),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(acc) = lock(&self.acc).clone() else {
            *lock(&self.acc) = Some(Value::Event(Arc::clone(event)));
            return Ok(());
        };
        // The lock is not held while user code runs.
        let next = self.f.call(&[acc, Value::Event(Arc::clone(event))])?;
        *lock(&self.acc) = Some(next.clone());
        emit_result(self, ctx, next)
    }
}

// ---------------------------------------------------------------- with_, default

fn build_with(args: Args) -> Result<NodeRef, BuildError> {
    build_set_fields(args, "with_", false)
}

fn build_default(args: Args) -> Result<NodeRef, BuildError> {
    build_set_fields(args, "default", true)
}

/// `(name, value)` pairs from `{"state": "ok"}` or `"state", "ok", …`,
/// each checked against the event's field types.
fn field_values(args: &mut Args) -> Result<Vec<(String, Value)>, BuildError> {
    let rest = args.rest();
    let pairs = match rest.as_slice() {
        [Value::Map(pairs)] => pairs.clone(),
        [] => return Err(args.error("needs fields to set: a dict, or name, value pairs")),
        items if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|kv| match &kv[0] {
                Value::Str(k) => Ok((k.clone(), kv[1].clone())),
                other => Err(args.type_error(format_args!(
                    "field names must be str, not {other} ({})",
                    other.type_name()
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(args
                .error("takes a dict of fields, or name, value pairs, before the child streams"))
        }
    };
    let mut scratch = Event::default();
    for (k, v) in &pairs {
        set_field(&mut scratch, k, v).map_err(|e| args.type_error(e))?;
    }
    Ok(pairs)
}

fn build_set_fields(
    mut args: Args,
    kind: &'static str,
    only_absent: bool,
) -> Result<NodeRef, BuildError> {
    let fields = field_values(&mut args)?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(SetFields {
        kind,
        fields,
        only_absent,
        core: NodeCore::new(children),
    }))
}

/// `with_` and `default`: set fields (`default`: only absent ones).
pub struct SetFields {
    kind: &'static str,
    fields: Vec<(String, Value)>,
    only_absent: bool,
    core: NodeCore,
}

fn is_absent(v: &Value) -> bool {
    match v {
        Value::None => true,
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

impl Node for SetFields {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        format!("{}({})", self.kind, Value::Map(self.fields.clone()))
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        Arc::new(SetFields {
            kind: self.kind,
            fields: self.fields.clone(),
            only_absent: self.only_absent,
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mut e = Event::clone(event);
        for (k, v) in &self.fields {
            if !self.only_absent || is_absent(&field(&e, k)) {
                set_field(&mut e, k, v).map_err(NodeError)?;
            }
        }
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- adjust

fn build_adjust(mut args: Args) -> Result<NodeRef, BuildError> {
    let node: NodeRef = match args.value("field_or_f")? {
        Value::Function(f) => {
            let children = args.children();
            args.finish()?;
            Arc::new(Smap {
                kind: "adjust",
                f,
                core: NodeCore::new(children),
            })
        }
        Value::Str(name) => {
            let f = args.function("f")?;
            let children = args.children();
            args.finish()?;
            Arc::new(AdjustField {
                field: name,
                f,
                core: NodeCore::new(children),
            })
        }
        v => {
            return Err(args.type_error(format_args!(
                "takes a field name and a function, or a function, first; not {}",
                v.type_name()
            )))
        }
    };
    Ok(node)
}

/// `adjust(field, f, *children)`: field := f(field's value).
pub struct AdjustField {
    field: String,
    f: Arc<dyn Function>,
    core: NodeCore,
}

impl Node for AdjustField {
    node_core!("adjust");

    fn describe(&self) -> String {
        format!("adjust({:?}, {})", self.field, self.f.describe())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(AdjustField {
            field: self.field.clone(),
            f: Arc::clone(&self.f),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let v = self.f.call(&[field(event, &self.field)])?;
        let mut e = Event::clone(event);
        set_field(&mut e, &self.field, &v).map_err(NodeError)?;
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- scale

fn number_arg(args: &mut Args, name: &str) -> Result<Number, BuildError> {
    match args.value(name)? {
        Value::Int(i) => Ok(Number::Int(i)),
        Value::Float(f) if f.is_finite() => Ok(Number::Float(f)),
        v => Err(args.type_error(format_args!(
            "`{name}` must be a finite number, not {v} ({})",
            v.type_name()
        ))),
    }
}

fn build_scale(mut args: Args) -> Result<NodeRef, BuildError> {
    let factor = number_arg(&mut args, "factor")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Scale {
        factor,
        core: NodeCore::new(children),
    }))
}

/// `scale(factor, *children)`.
pub struct Scale {
    factor: Number,
    core: NodeCore,
}

impl Node for Scale {
    node_core!("scale");

    fn describe(&self) -> String {
        format!("scale({})", self.factor)
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Scale {
            factor: self.factor,
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        match event.metric {
            None => emit(self, ctx, event),
            Some(m) => {
                let mut e = Event::clone(event);
                e.metric = Some(mul(m, self.factor));
                emit(self, ctx, &arc(e));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- tag, untag

fn tags_arg(args: &mut Args) -> Result<Vec<SmolStr>, BuildError> {
    let bad = |args: &Args, v: &Value| {
        args.type_error(format_args!(
            "`tags` must be a str or a list of str, not {v} ({})",
            v.type_name()
        ))
    };
    match args.value("tags")? {
        Value::Str(s) => Ok(vec![SmolStr::new(s)]),
        Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(SmolStr::new(s)),
                v => Err(bad(args, v)),
            })
            .collect(),
        v => Err(bad(args, &v)),
    }
}

fn build_tag(args: Args) -> Result<NodeRef, BuildError> {
    build_tagging(args, "tag")
}

fn build_untag(args: Args) -> Result<NodeRef, BuildError> {
    build_tagging(args, "untag")
}

fn build_tagging(mut args: Args, kind: &'static str) -> Result<NodeRef, BuildError> {
    let mut tags = tags_arg(&mut args)?;
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Tag {
        kind,
        tags,
        core: NodeCore::new(children),
    }))
}

/// `tag` (adds the tags missing) and `untag` (removes them).
pub struct Tag {
    kind: &'static str,
    tags: Vec<SmolStr>,
    core: NodeCore,
}

impl Node for Tag {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| format!("{t:?}")).collect();
        format!("{}([{}])", self.kind, tags.join(", "))
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        Arc::new(Tag {
            kind: self.kind,
            tags: self.tags.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mut e = Event::clone(event);
        let tagging = self.kind == "tag";
        // Tags are shared: built anew only when they change.
        let changes = if tagging {
            !e.tags.starts_with(&self.tags)
        } else {
            e.tags.iter().any(|t| self.tags.contains(t))
        };
        if changes {
            let mut tags = e.tags.to_vec();
            if tagging {
                // As Riemann's `(distinct (concat new old))`: the new tags
                // first, then the event's own, each once.
                let mut new: Vec<SmolStr> = Vec::with_capacity(self.tags.len() + tags.len());
                for t in self.tags.iter().chain(tags.iter()) {
                    if !new.contains(t) {
                        new.push(t.clone());
                    }
                }
                tags = new;
            } else {
                tags.retain(|t| !self.tags.contains(t));
            }
            e.tags = tags.into();
        }
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- counter

fn build_counter(mut args: Args) -> Result<NodeRef, BuildError> {
    let init = match args.keyword("init") {
        None => Number::Int(0),
        Some(Value::Int(i)) => Number::Int(i),
        Some(Value::Float(f)) if f.is_finite() => Number::Float(f),
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`init` must be a number, not {v} ({})",
                v.type_name()
            )))
        }
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Counter {
        init,
        count: Mutex::new(init),
        core: NodeCore::new(children),
    }))
}

/// `counter(*children, init=0)`; state: the running sum.
pub struct Counter {
    init: Number,
    count: Mutex<Number>,
    core: NodeCore,
}

impl Node for Counter {
    node_core!("counter");
    keep_state_in!(count);

    fn describe(&self) -> String {
        format!("counter(init={})", self.init)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(super::number_to_json(*lock(&self.count)))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.count) = super::number_from_json(&state)?;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Counter {
            init: self.init,
            count: Mutex::new(self.init),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(m) = event.metric else {
            emit(self, ctx, event);
            return Ok(());
        };
        let total = {
            let mut count = lock(&self.count);
            *count = if event.has_tag("reset") {
                m
            } else {
                add(*count, m)
            };
            *count
        };
        let mut e = Event::clone(event);
        e.metric = Some(total);
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- ewma_timeless

fn build_ewma_timeless(mut args: Args) -> Result<NodeRef, BuildError> {
    let r = args.number("r")?;
    if !(0.0..=1.0).contains(&r) {
        return Err(args.error(format_args!("`r` must be between 0 and 1, not {r}")));
    }
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(EwmaTimeless {
        r,
        avg: Mutex::new(0.0),
        core: NodeCore::new(children),
    }))
}

/// `ewma_timeless(r, *children)`; state: the average.
pub struct EwmaTimeless {
    r: f64,
    avg: Mutex<f64>,
    core: NodeCore,
}

impl Node for EwmaTimeless {
    node_core!("ewma_timeless");
    keep_state_in!(avg);

    fn describe(&self) -> String {
        format!("ewma_timeless({})", self.r)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "avg": *lock(&self.avg) }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.avg) = super::saved(&state, "avg")?;
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(EwmaTimeless {
            r: self.r,
            avg: Mutex::new(0.0),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(m) = event.metric else {
            emit(self, ctx, event);
            return Ok(());
        };
        let avg = {
            let mut avg = lock(&self.avg);
            let next = self.r * m.as_f64() + (1.0 - self.r) * *avg;
            // A non-finite metric would stick forever.
            if next.is_finite() {
                *avg = next;
            }
            *avg
        };
        let mut e = Event::clone(event);
        e.metric = Some(Number::Float(avg));
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- ewma

fn build_ewma(mut args: Args) -> Result<NodeRef, BuildError> {
    let halflife = args.positive("halflife")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Ewma::new(halflife, children)))
}

/// `ewma(halflife, *children)`; state: the latest event time and the
/// average, as Riemann's `ewma`.
pub struct Ewma {
    halflife: f64,
    state: Mutex<EwmaState>,
    core: NodeCore,
}

#[derive(Default, Clone)]
struct EwmaState {
    time: Option<f64>,
    avg: f64,
}

impl Ewma {
    fn new(halflife: f64, children: Vec<NodeRef>) -> Self {
        Ewma {
            halflife,
            state: Mutex::default(),
            core: NodeCore::new(children),
        }
    }
}

impl Node for Ewma {
    node_core!("ewma");
    keep_state_in!(state);

    fn describe(&self) -> String {
        format!("ewma({})", self.halflife)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let s = lock(&self.state);
        Some(serde_json::json!({"time": s.time, "avg": s.avg}))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        *lock(&self.state) = EwmaState {
            time: super::saved(&state, "time")?,
            avg: super::saved(&state, "avg")?,
        };
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Ewma {
            halflife: self.halflife,
            state: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(m) = event.metric else {
            emit(self, ctx, event);
            return Ok(());
        };
        let m = m.as_f64();
        if !m.is_finite() {
            emit(self, ctx, event);
            return Ok(());
        }
        let k = 0.5f64.powf(1.0 / self.halflife);
        let c_new = 1.0 - k;
        let t_new = event.time.map_or_else(|| ctx.now(), Number::as_f64);
        let (avg, time) = {
            let mut s = lock(&self.state);
            let t_old = s.time.unwrap_or(t_new);
            let dt = t_new - t_old;
            if dt > 0.0 {
                s.avg = c_new * m + s.avg * k.powf(dt);
                s.time = Some(t_new);
            } else {
                s.avg += c_new * m * k.powf(-dt);
                s.time = Some(t_old);
            }
            (s.avg, s.time)
        };
        let mut e = Event::clone(event);
        e.metric = Some(Number::Float(avg));
        e.time = time.map(Number::Float);
        emit(self, ctx, &arc(e));
        Ok(())
    }
}

// ---------------------------------------------------------------- project

fn build_project(mut args: Args) -> Result<NodeRef, BuildError> {
    let mut tests: Vec<Arc<dyn Predicate>> = Vec::new();
    for v in args.rest() {
        tests.push(match v {
            Value::Str(q) => {
                Arc::new(Query::parse(&q).map_err(|e| args.error(format_args!("{q:?}: {e}")))?)
            }
            Value::Function(f) => Arc::new(FnPredicate(f)),
            v => {
                return Err(args.type_error(format_args!(
                    "tests must be query strings or functions, not {}",
                    v.type_name()
                )))
            }
        });
    }
    if tests.is_empty() {
        return Err(args.error("needs at least one test (a query string or a function)"));
    }
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Project {
        slots: Mutex::new(vec![None; tests.len()]),
        tests,
        core: NodeCore::new(children),
    }))
}

/// `project(*tests_and_children)`; state: the latest event per test.
pub struct Project {
    tests: Vec<Arc<dyn Predicate>>,
    slots: Mutex<Vec<Option<Arc<Event>>>>,
    core: NodeCore,
}

impl Node for Project {
    node_core!("project");
    keep_state_in!(slots);

    fn describe(&self) -> String {
        let tests: Vec<String> = self.tests.iter().map(|t| t.describe()).collect();
        format!("project({})", tests.join(", "))
    }
    /// The latest event per test, in the tests' order (null: none yet).
    fn save_state(&self) -> Option<serde_json::Value> {
        let slots: Vec<_> = lock(&self.slots)
            .iter()
            .map(|e| e.as_deref().map(super::event_to_json))
            .collect();
        Some(serde_json::json!({ "slots": slots }))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let slots: Vec<Option<Event>> = super::saved(&state, "slots")?;
        if slots.len() != self.tests.len() {
            return Err(format!(
                "{} saved slots for {} tests",
                slots.len(),
                self.tests.len()
            ));
        }
        *lock(&self.slots) = slots.into_iter().map(|e| e.map(Arc::new)).collect();
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Project {
            tests: self.tests.clone(),
            slots: Mutex::new(vec![None; self.tests.len()]),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mut matched = Vec::new();
        for (i, t) in self.tests.iter().enumerate() {
            if t.test(event)? {
                matched.push(i);
            }
        }
        if matched.is_empty() {
            return Ok(());
        }
        let now = ctx.now();
        let out: Vec<Arc<Event>> = {
            let mut slots = lock(&self.slots);
            for i in matched {
                slots[i] = Some(Arc::clone(event));
            }
            slots
                .iter_mut()
                .map(|slot| {
                    let Some(e) = slot.as_ref() else {
                        return Arc::clone(super::empty_slot());
                    };
                    if e.is_expired(now) {
                        // Forwarded once as expired, then forgotten.
                        let expired = if e.state.as_deref() == Some("expired") {
                            Arc::clone(e)
                        } else {
                            arc(e.expired_copy(now))
                        };
                        *slot = None;
                        expired
                    } else {
                        Arc::clone(e)
                    }
                })
                .collect()
        };
        emit_list(self, ctx, &out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::carry_over;
    use crate::testing::{ev, func, Harness, Received};
    use crate::vals;

    fn metric_fn() -> Value {
        func("metric", |a| match &a[0] {
            Value::Event(e) => Ok(Value::from_number(e.metric)),
            _ => Ok(Value::None),
        })
    }

    fn send_metrics(h: &Harness, node: &NodeRef, metrics: &[&str]) {
        for m in metrics {
            h.send(node, ev(&format!(r#"{{"host":"a","metric":{m}}}"#)));
        }
    }

    #[test]
    fn smap_forwards_results_none_dicts_and_lists() {
        let h = Harness::new();
        let out = h.sink("out");
        let f = func("f", |a| {
            let Value::Event(e) = &a[0] else {
                unreachable!()
            };
            Ok(match e.metric.map(|m| m.as_f64() as i64) {
                Some(0) => Value::None,
                Some(1) => Value::Map(vec![("service".into(), "one".into())]),
                Some(2) => Value::List(vec![Value::Event(Arc::clone(e)); 2]),
                _ => Value::Event(Arc::clone(e)),
            })
        });
        let node = h.build("smap", vec![f], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["0", "1", "2", "3"]);
        let got = out.take();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0], Received::Event(e) if e.service.as_deref() == Some("one")));
        assert!(matches!(&got[1], Received::List(l) if l.len() == 2));
        assert!(matches!(&got[2], Received::Event(e) if e.metric == Some(Number::Int(3))));
    }

    #[test]
    fn smap_folds_a_list_whole() {
        let h = Harness::new();
        let out = h.sink("out");
        let mean = Value::Function(Arc::new(crate::streams::folds::NativeFold(
            crate::streams::folds::find("mean").unwrap(),
        )));
        let node = h.build("smap", vec![mean], vec![], vec![out.node()]);
        let list: Vec<Arc<Event>> = ["1", "2", "6"]
            .iter()
            .map(|m| arc(ev(&format!(r#"{{"metric":{m}}}"#))))
            .collect();
        crate::streams::push_list(&*node, &h.ctx, &list);
        assert_eq!(out.metrics(), [Some(3.0)]);
        let err = h.try_build("smap", vals![1], vec![], vec![]).err().unwrap();
        assert!(err.wrong_type);
        assert!(err
            .message
            .starts_with("smap(f, *children): `f` must be a function"));
    }

    /// Riemann's smapcat-test: `#(vector % %)` doubles each event.
    #[test]
    fn smapcat_forwards_each_event_of_the_result_one_by_one() {
        let h = Harness::new();
        let out = h.sink("out");
        let twice = func("twice", |a| {
            Ok(Value::List(vec![a[0].clone(), a[0].clone()]))
        });
        let node = h.build("smapcat", vec![twice], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["0", "1"]);
        let got = out.take();
        assert!(
            got.iter().all(|r| matches!(r, Received::Event(_))),
            "{got:?}"
        );
        let metrics: Vec<_> = got
            .iter()
            .map(|r| match r {
                Received::Event(e) => e.metric.map(|m| m.as_f64()),
                Received::List(_) => None,
            })
            .collect();
        assert_eq!(metrics, [Some(0.0), Some(0.0), Some(1.0), Some(1.0)]);
        // A window's list goes to a native fold whole; its events come out apart.
        let extremes = Value::Function(Arc::new(crate::streams::folds::NativeFold(
            crate::streams::folds::find("extremes").unwrap(),
        )));
        let node = h.build("smapcat", vec![extremes], vec![], vec![out.node()]);
        let list: Vec<Arc<Event>> = ["3", "1", "6"]
            .iter()
            .map(|m| arc(ev(&format!(r#"{{"metric":{m}}}"#))))
            .collect();
        crate::streams::push_list(&*node, &h.ctx, &list);
        let got = out.take();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Received::Event(e) if e.metric == Some(Number::Int(1))));
        assert!(matches!(&got[1], Received::Event(e) if e.metric == Some(Number::Int(6))));
        // None forwards nothing; something not an event is the node's error.
        let node = h.build(
            "smapcat",
            vec![func("none", |_| Ok(Value::None))],
            vec![],
            vec![out.node()],
        );
        send_metrics(&h, &node, &["1"]);
        assert!(out.take().is_empty());
        let node = h.build("smapcat", vec![metric_fn()], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["1"]);
        assert_eq!(
            node.stats()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// Riemann's sflatten-test: lists in, their events out one by one.
    #[test]
    fn sflatten_forwards_a_lists_events_one_by_one() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("sflatten", vec![], vec![], vec![out.node()]);
        let list = |ms: &[&str]| -> Vec<Arc<Event>> {
            ms.iter()
                .map(|m| arc(ev(&format!(r#"{{"metric":{m}}}"#))))
                .collect()
        };
        crate::streams::push_list(&*node, &h.ctx, &list(&["0", "1"]));
        crate::streams::push_list(&*node, &h.ctx, &list(&["2", "3"]));
        send_metrics(&h, &node, &["4"]);
        let got = out.take();
        assert!(
            got.iter().all(|r| matches!(r, Received::Event(_))),
            "{got:?}"
        );
        assert_eq!(got.len(), 5);
        assert_eq!(
            node.stats()
                .events_out
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
    }

    #[test]
    fn sfilter_passes_truthy() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("sfilter", vec![metric_fn()], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["0", "2", "null", "1.5"]);
        assert_eq!(out.metrics(), [Some(2.0), Some(1.5)]);
    }

    fn max_fn() -> Value {
        func("max", |a| {
            let (Value::Event(acc), Value::Event(e)) = (&a[0], &a[1]) else {
                return Ok(a[1].clone());
            };
            Ok(Value::Event(
                if e.metric.unwrap().as_f64() > acc.metric.unwrap().as_f64() {
                    Arc::clone(e)
                } else {
                    Arc::clone(acc)
                },
            ))
        })
    }

    #[test]
    fn sreduce_without_init_starts_from_the_first_event() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("sreduce", vec![max_fn()], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["3", "1", "5", "2"]);
        assert_eq!(out.metrics(), [Some(3.0), Some(5.0), Some(5.0)]);
        // fresh: independent accumulator.
        let fresh = node.fresh();
        send_metrics(&h, &fresh, &["1", "0"]);
        assert_eq!(out.metrics(), [Some(1.0)]);
        // reload with the same args keeps the accumulator.
        let reloaded = h.build("sreduce", vec![max_fn()], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        send_metrics(&h, &reloaded, &["4"]);
        assert_eq!(out.metrics(), [Some(5.0)]);
    }

    /// Checkpoints keep plain accumulators (an event here; numbers, text,
    /// lists and dicts of them) as the same kinds, and not functions.
    #[test]
    fn sreduce_saves_and_loads_its_accumulator() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("sreduce", vec![max_fn()], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["3", "5"]);
        let saved = node.save_state().unwrap();
        let copy = h.build("sreduce", vec![max_fn()], vec![], vec![out.node()]);
        copy.load_state(serde_json::from_str(&saved.to_string()).unwrap())
            .unwrap();
        out.take();
        send_metrics(&h, &copy, &["4"]);
        assert_eq!(out.metrics(), [Some(5.0)]);

        let plain = Value::Map(vec![
            ("n".into(), Value::Int(2)),
            ("x".into(), Value::Float(2.0)),
            (
                "l".into(),
                Value::List(vec![Value::None, Value::Bool(true), Value::Str("s".into())]),
            ),
        ]);
        let back = loaded_value(&saved_value(&plain).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{plain:?}"));
        assert!(saved_value(&max_fn()).is_none());
    }

    #[test]
    fn sreduce_with_init_emits_from_the_first_event() {
        let h = Harness::new();
        let out = h.sink("out");
        let init = Value::from(ev(r#"{"metric":4}"#));
        let node = h.build(
            "sreduce",
            vec![max_fn()],
            vec![("init".into(), init)],
            vec![out.node()],
        );
        send_metrics(&h, &node, &["3", "7"]);
        assert_eq!(out.metrics(), [Some(4.0), Some(7.0)]);
    }

    #[test]
    fn with_and_default_set_fields() {
        let h = Harness::new();
        let cases: &[(&str, Vec<Value>, &str, &str)] = &[
            (
                "with_",
                vals!["state", "ok"],
                r#"{"state":"bad","metric":1}"#,
                r#"{"state":"ok","metric":1}"#,
            ),
            (
                "with_",
                vec![Value::Map(vec![
                    ("state".into(), "ok".into()),
                    ("ttl".into(), 60.into()),
                    ("host".into(), Value::None),
                ])],
                r#"{"host":"a","state":"bad"}"#,
                r#"{"state":"ok","ttl":60}"#,
            ),
            (
                "default",
                vals!["state", "ok", "ttl", 300],
                r#"{"state":"bad"}"#,
                r#"{"state":"bad","ttl":300}"#,
            ),
            (
                "default",
                vec![Value::Map(vec![("tags".into(), Value::List(vals!["x"]))])],
                r#"{"tags":[]}"#,
                r#"{"tags":["x"]}"#,
            ),
        ];
        for (name, args, input, want) in cases {
            let out = h.sink("out");
            let node = h.build(name, args.clone(), vec![], vec![out.node()]);
            h.send(&node, ev(input));
            assert_eq!(*out.events()[0], ev(want), "{name}({args:?}) on {input}");
        }
        for (args, msg) in [
            (
                vals!["state"],
                "takes a dict of fields, or name, value pairs",
            ),
            (vec![], "needs fields to set"),
            (
                vals!["metric", "x"],
                "event field `metric` must be a number",
            ),
            (vals![1, "x"], "field names must be str"),
        ] {
            let err = h.try_build("with_", args, vec![], vec![]).err().unwrap();
            assert!(err.message.contains(msg), "{err}");
        }
    }

    #[test]
    fn adjust_a_field_or_the_event() {
        let h = Harness::new();
        let out = h.sink("out");
        let suffix = func("suffix", |a| match &a[0] {
            Value::Str(s) => Ok(Value::Str(format!("{s} rate"))),
            _ => Ok(Value::None),
        });
        let node = h.build(
            "adjust",
            vec!["service".into(), suffix],
            vec![],
            vec![out.node()],
        );
        h.send(&node, ev(r#"{"service":"foo"}"#));
        assert_eq!(out.events()[0].service.as_deref(), Some("foo rate"));
        let node = h.build("adjust", vec![metric_fn()], vec![], vec![out.node()]);
        // Like smap: the function's result is forwarded (here, a number is not an event).
        crate::streams::push(&*node, &h.ctx, &arc(ev(r#"{"metric":1}"#)));
        assert_eq!(
            node.stats()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let err = h
            .try_build("adjust", vals![3], vec![], vec![])
            .err()
            .unwrap();
        assert!(err.wrong_type, "{err}");
    }

    #[test]
    fn scale_multiplies_metrics() {
        let h = Harness::new();
        let cases: &[(Value, &str, Option<Number>)] = &[
            (2.into(), "3", Some(Number::Int(6))),
            (0.5.into(), "3", Some(Number::Float(1.5))),
            (2.into(), "null", None),
        ];
        for (factor, m, want) in cases {
            let out = h.sink("out");
            let node = h.build("scale", vec![factor.clone()], vec![], vec![out.node()]);
            send_metrics(&h, &node, &[m]);
            assert_eq!(out.events()[0].metric, *want, "scale({factor}) of {m}");
        }
        assert!(h.try_build("scale", vals!["x"], vec![], vec![]).is_err());
    }

    #[test]
    fn tag_and_untag() {
        let h = Harness::new();
        let cases: &[(&str, Value, &str, &[&str])] = &[
            // Riemann's streams_test: (tag "foo") of tags ["bar"] is
            // ["foo" "bar"].
            ("tag", "x".into(), r#"{"tags":["a"]}"#, &["x", "a"]),
            (
                "tag",
                Value::List(vals!["a", "b", "b"]),
                r#"{"tags":["c","a"]}"#,
                &["a", "b", "c"],
            ),
            ("tag", "x".into(), r#"{"tags":["a","x"]}"#, &["x", "a"]),
            ("tag", "x".into(), r#"{"tags":["x","a"]}"#, &["x", "a"]),
            ("untag", "a".into(), r#"{"tags":["a","b"]}"#, &["b"]),
            (
                "untag",
                Value::List(vals!["a", "b"]),
                r#"{"tags":["a","b","c"]}"#,
                &["c"],
            ),
        ];
        for (name, tags, input, want) in cases {
            let out = h.sink("out");
            let node = h.build(name, vec![tags.clone()], vec![], vec![out.node()]);
            h.send(&node, ev(input));
            let got: Vec<String> = out.events()[0].tags.iter().map(|t| t.to_string()).collect();
            assert_eq!(got, *want, "{name}({tags})");
        }
        let err = h.try_build("tag", vals![1], vec![], vec![]).err().unwrap();
        assert!(
            err.message
                .contains("`tags` must be a str or a list of str"),
            "{err}"
        );
    }

    #[test]
    fn counter_sums_resets_and_passes_metricless_events() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build(
            "counter",
            vec![],
            vec![("init".into(), 10.into())],
            vec![out.node()],
        );
        for e in [
            r#"{"metric":1}"#,
            r#"{"metric":2}"#,
            r#"{"host":"x"}"#,
            r#"{"metric":5,"tags":["reset"]}"#,
            r#"{"metric":1}"#,
        ] {
            h.send(&node, ev(e));
        }
        assert_eq!(
            out.metrics(),
            [Some(11.0), Some(13.0), None, Some(5.0), Some(6.0)]
        );
        let fresh = node.fresh();
        send_metrics(&h, &fresh, &["1"]);
        assert_eq!(out.metrics(), [Some(11.0)]);
        // Reload keeps the sum with the same init, not with another.
        let same = h.build("counter", vec![], vec![("init".into(), 10.into())], vec![]);
        carry_over(&*same, &*node);
        let other = h.build("counter", vec![], vec![], vec![out.node()]);
        carry_over(&*other, &*same);
        send_metrics(&h, &other, &["1"]);
        assert_eq!(out.metrics(), [Some(1.0)]);
        let same2 = h.build(
            "counter",
            vec![],
            vec![("init".into(), 10.into())],
            vec![out.node()],
        );
        carry_over(&*same2, &*same);
        send_metrics(&h, &same2, &["1"]);
        assert_eq!(out.metrics(), [Some(7.0)]);
    }

    #[test]
    fn ewma_timeless_weights_by_r() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("ewma_timeless", vals![0.5], vec![], vec![out.node()]);
        send_metrics(&h, &node, &["4", "null", "8", "0"]);
        assert_eq!(out.metrics(), [Some(2.0), None, Some(5.0), Some(2.5)]);
        let err = h
            .try_build("ewma_timeless", vals![1.5], vec![], vec![])
            .err()
            .unwrap();
        assert_eq!(
            err.message,
            "ewma_timeless(r, *children): `r` must be between 0 and 1, not 1.5"
        );
    }

    #[test]
    fn ewma_decays_with_event_time() {
        let h = Harness::new();
        let out = h.sink("out");
        // halflife 1: k = 0.5, c_new = 0.5.
        let node = h.build("ewma", vals![1], vec![], vec![out.node()]);
        for e in [
            r#"{"metric":8,"time":10}"#,    // 0.5*8 = 4
            r#"{"metric":8,"time":10}"#,    // same time: 4 + 4 = 8
            r#"{"metric":0,"time":12}"#,    // 0 + 8 * 0.25 = 2
            r#"{"metric":8,"time":11}"#,    // late: 2 + 0.5*8*0.5 = 4
            r#"{"host":"none","time":13}"#, // no metric: unchanged
        ] {
            h.send(&node, ev(e));
        }
        let got: Vec<_> = out
            .events()
            .iter()
            .map(|e| (e.metric.map(|m| m.as_f64()), e.time.map(|t| t.as_f64())))
            .collect();
        assert_eq!(
            got,
            [
                (Some(4.0), Some(10.0)),
                (Some(8.0), Some(10.0)),
                (Some(2.0), Some(12.0)),
                (Some(4.0), Some(12.0)),
                (None, Some(13.0)),
            ]
        );
        let reloaded = h.build("ewma", vals![1], vec![], vec![out.node()]);
        carry_over(&*reloaded, &*node);
        h.send(&reloaded, ev(r#"{"metric":0,"time":13}"#));
        assert_eq!(out.metrics(), [Some(2.0)]);
        let fresh = node.fresh();
        h.send(&fresh, ev(r#"{"metric":2,"time":14}"#));
        assert_eq!(out.metrics(), [Some(1.0)]);
        assert!(h.try_build("ewma", vals![0], vec![], vec![]).is_err());
    }

    #[test]
    fn project_keeps_the_latest_per_test_and_expires_once() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build(
            "project",
            vals![r#"service = "enq""#, r#"service = "deq""#],
            vec![],
            vec![out.node()],
        );
        let services = |out: &crate::testing::Sink| -> Vec<Vec<String>> {
            out.lists()
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|e| {
                            if crate::streams::is_empty_slot(e) {
                                return "None".to_owned();
                            }
                            format!(
                                "{}:{}",
                                e.service.as_deref().unwrap_or(""),
                                e.metric.map_or("-".into(), |m| m.to_string())
                            )
                        })
                        .collect()
                })
                .collect()
        };
        for e in [
            r#"{"service":"deq","metric":2,"time":1}"#,
            r#"{"service":"other","metric":9,"time":1}"#,
            r#"{"service":"enq","metric":6,"time":2}"#,
            r#"{"service":"deq","metric":3,"time":3}"#,
            r#"{"service":"enq","state":"expired","time":4}"#,
            r#"{"service":"deq","metric":4,"time":5}"#,
        ] {
            h.send(&node, ev(e));
        }
        assert_eq!(
            services(&out),
            [
                vec!["None", "deq:2"],
                vec!["enq:6", "deq:2"],
                vec!["enq:6", "deq:3"],
                vec!["enq:-", "deq:3"],
                vec!["None", "deq:4"],
            ]
        );
        // A stored event past its ttl (by the clock) is forwarded once, expired.
        h.send(
            &node,
            ev(r#"{"service":"enq","metric":1,"time":6,"ttl":10}"#),
        );
        out.take();
        h.send(&node, ev(r#"{"service":"deq","metric":5,"time":20}"#));
        let lists = out.lists();
        assert_eq!(lists[0][0].state.as_deref(), Some("expired"));
        assert_eq!(lists[0].len(), 2);
        h.send(&node, ev(r#"{"service":"deq","metric":6,"time":21}"#));
        assert_eq!(services(&out), [vec!["None", "deq:6"]]);
        let err = h
            .try_build("project", vec![], vec![], vec![])
            .err()
            .unwrap();
        assert!(err.message.contains("needs at least one test"), "{err}");
        // Reload keeps the slots; fresh starts empty.
        let reloaded = h.build(
            "project",
            vals![r#"service = "enq""#, r#"service = "deq""#],
            vec![],
            vec![out.node()],
        );
        carry_over(&*reloaded, &*node);
        h.send(&reloaded, ev(r#"{"service":"enq","metric":1,"time":22}"#));
        assert_eq!(services(&out), [vec!["enq:1", "deq:6"]]);
        let fresh = node.fresh();
        h.send(&fresh, ev(r#"{"service":"enq","metric":1,"time":22}"#));
        assert_eq!(services(&out), [vec!["enq:1", "None"]]);
    }

    #[test]
    fn stateful_nodes_survive_a_checkpoint() {
        use crate::testing::Step::Send;
        let at = |t: u32, service: &str, m: u32| {
            Send(ev(&format!(
                r#"{{"service":"{service}","metric":{m},"time":{t}}}"#
            )))
        };
        let project = vals![r#"service = "enq""#, r#"service = "deq""#];
        // Stream function, arguments, metrics forwarded after the restart.
        type Case = (&'static str, Vec<Value>, Vec<Vec<f64>>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // (4 + 2) / 2, not 2 / 2 as a fresh average would give.
            ("ewma_timeless", vals![0.5], vec![vec![2.0]]),
            ("ewma", vals![1], vec![vec![0.5 * 4.0 * 0.5 + 0.5 * 2.0]]),
            // The enq slot filled before the restart.
            ("project", project, vec![vec![4.0, 2.0]]),
        ];
        for (name, args, want) in cases {
            let h = Harness::new();
            let got = h.restart_between(
                |out| h.build(name, args.clone(), vec![], vec![out]),
                &[at(1, "enq", 4)],
                &[at(2, "deq", 2)],
            );
            let metrics: Vec<Vec<f64>> = got
                .iter()
                .map(|r| match r {
                    Received::Event(e) => vec![e.metric.unwrap().as_f64()],
                    Received::List(l) => l.iter().map(|e| e.metric.unwrap().as_f64()).collect(),
                })
                .collect();
            assert_eq!(metrics, want, "{name}");
        }
        let h = Harness::new();
        let node = h.build("project", vals![r#"service = "enq""#], vec![], vec![]);
        let two_slots = serde_json::json!({"slots": [null, null]});
        assert!(node.load_state(two_slots).is_err());
        let ewma = h.build("ewma", vals![1], vec![], vec![]);
        assert!(ewma.load_state(serde_json::json!({"avg": "x"})).is_err());
    }
}
