//! Routing: nodes that choose which child streams an event goes to.
//!
//! | function | example |
//! |---|---|
//! | `sdo(*children)` | `sdo(index(), printer())` |
//! | `split(*clauses)` | `split(("metric > 0.9", email("ops@example.com")), ("metric > 0.75", printer("warn: ")), index())` |
//! | `splitp(pred, field, *clauses)` | `splitp("<", "metric", (0.9, email("ops@example.com")), (0.75, printer("warn: ")), index())` |
//! | `by(*fields_and_children, idle=300)` | `by("host", "service", average(2, index()), idle=600)` |
//! | `exception_stream(handler, *children)` | `exception_stream(email("ops@example.com"), smap(f, index()))` |
//! | `pipe(*stages)` | `pipe(where("metric > 5"), rate(5), printer())` |

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use smol_str::SmolStr;

use super::entry::Entry;
use super::filter::{names_from, predicate_from, FieldRef, Predicate};
use super::value::{Args, BuildError, Function, Value};
use super::{
    catching_errors, copy_states, emit, emit_list, emit_list_to, emit_to, event_to_json,
    keep_states, label, lock, push, with_last_child, Node, NodeCore, NodeError, NodeRef,
};
use crate::event::{Event, Number};
use crate::node_core;
use crate::streams::context::Context;
use crate::streams::timers::{timed, Alarm};
use foldhash::{HashMap, HashMapExt};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "sdo",
        params: "*children",
        summary: "Forward every event to every child.",
        details: "Lists of events (from windows) are forwarded whole.",
        example: "sdo(index(), printer())",
        build: build_sdo,
    },
    Entry {
        name: "split",
        params: "*clauses",
        summary: "Send each event to the stream of the first `(test, stream)` clause it passes, else to a trailing default stream.",
        details: "Each clause is a tuple `(test, stream)`, `test` a query string (compiled once) or a predicate function. A bare stream after the clauses is the default. An event no clause takes, with no default, is dropped (as in Riemann).",
        example: r#"split(("metric > 0.9", email("ops@example.com")), (lambda e: e.state == "warning", printer("warn: ")), index())"#,
        build: build_split,
    },
    Entry {
        name: "splitp",
        params: "pred, field, *clauses",
        summary: "Send each event to the stream of the first `(value, stream)` clause for which `pred(value, field)` holds, else to a trailing default.",
        details: "Riemann's `splitp pred expr & clauses`. `field` is a field or attribute name, or a function of the event. `pred` is a function of two arguments, the clause's value then the event's, or one of the operators \"=\", \">\", \">=\", \"<\", \"<=\" applied in that order: `splitp(\"<\", \"metric\", (0.9, s), ...)` sends to `s` when 0.9 < metric. The comparisons are false when either side is not a number. An event no clause takes, with no default, counts as an error of the node (Riemann raises).",
        example: r#"splitp("<", "metric", (0.9, email("ops@example.com")), (0.75, printer("warn: ")), index())"#,
        build: build_splitp,
    },
    Entry {
        name: "by",
        params: "*fields_and_children, idle=300",
        summary: "Fork a fresh copy of the child streams for each distinct value of the fields, and send each event to its fork.",
        details: "The fields are the leading str arguments (or one list of str), or a single function of the event giving the key. An event without a field uses None for it. A fork that has seen no event for `idle` seconds of processing time (the context clock) is dropped with its state on the next tick, so forks of hosts that went away do not pile up (Riemann keeps them forever); `idle=None` or 0 keeps them forever. Choose `idle` longer than the children's windows. Reload keeps each fork's state.",
        example: r#"by("host", "service", average(2, index()), idle=600)"#,
        build: build_by,
    },
    Entry {
        name: "exception_stream",
        params: "handler, *children",
        summary: "Forward every event to the children; a failure of a node below them (an exception in a function, a bad result) becomes an event sent to `handler`.",
        details: "Riemann's `exception-stream`. The failure is still counted on the failing node (`streams()`), but not logged. Failures while the children are woken by time (a window flushing, a rate reporting) reach the handler too. The event: service \"dmon exception\" (Riemann: \"riemann exception\"; dmon names its own events \"dmon …\"), state \"error\", time the clock's, tags [\"exception\", the error's type (a Python exception's class name, else \"NodeError\")], description the error with its traceback, attributes \"node\" (the failing node's path and arguments) and \"event\" (the JSON of the event, or list, it failed on: Riemann's :event). The handler's own failures go to an enclosing exception_stream, else to the log. Lists are forwarded whole.",
        example: r#"exception_stream(email("ops@example.com"), smap(lambda e: e.replace(metric=1 / e.metric), index()))"#,
        build: build_exception_stream,
    },
    Entry {
        name: "pipe",
        params: "*stages",
        summary: "Chain stages: each stage is rebuilt with the next one as its last child, so `pipe(a(x), b(y), c())` is `a(x, b(y, c()))`.",
        details: "Riemann's `(pipe - (a -) (b -) c)`, written in the order events flow. Each stage but the last must be a dmon.streams function (it is built again with the same arguments and children, and the next stage after them); the last may be any stream. Where Riemann's marker may appear several times and at any depth of a stage, the next stage here is always the stage's last child: for `split`/`splitp` that is the default stream. To join several branches into one stream, pass that same stream to each branch.",
        example: r#"pipe(where("metric > 5"), rate(5), printer())"#,
        build: build_pipe,
    },
];

/// Counts `event` as forwarded by `node`, once, and gives it to each of
/// `children` (a `by` fork's).
fn forward(node: &dyn Node, children: &[NodeRef], ctx: &Context, event: &Arc<Event>) {
    node.stats().events_out.fetch_add(1, Ordering::Relaxed);
    node.stats().taps.publish(event);
    for child in children {
        push(&**child, ctx, event);
    }
}

fn build_sdo(mut args: Args) -> Result<NodeRef, BuildError> {
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Sdo {
        core: NodeCore::new(children),
    }))
}

/// `sdo(index(), printer())`: every event to every child.
pub struct Sdo {
    core: NodeCore,
}

impl Node for Sdo {
    node_core!("sdo");

    fn fresh(&self) -> NodeRef {
        Arc::new(Sdo {
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        emit(self, ctx, event);
        Ok(())
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        emit_list(self, ctx, events);
        Ok(())
    }
}

/// The `(x, stream)` clauses among the remaining positional arguments, and
/// the default stream (the children): the clauses' streams then the
/// default make the node's children, clause `i` being child `i`.
fn clauses(args: &mut Args, what: &str) -> Result<(Vec<Value>, Vec<NodeRef>), BuildError> {
    let mut firsts = Vec::new();
    let mut streams = Vec::new();
    for clause in args.rest() {
        match clause {
            Value::List(pair) if pair.len() == 2 && matches!(pair[1], Value::Stream(_)) => {
                let mut pair = pair.into_iter();
                firsts.extend(pair.next());
                if let Some(Value::Stream(s)) = pair.next() {
                    streams.push(s);
                }
            }
            v => {
                return Err(args.type_error(format_args!(
                    "each clause must be a tuple ({what}, stream), not {}",
                    match v {
                        Value::Function(_) | Value::None => v.type_name().to_owned(),
                        _ => format!("{v} ({})", v.type_name()),
                    }
                )))
            }
        }
    }
    if firsts.is_empty() {
        return Err(args.error(format_args!("needs at least one ({what}, stream) clause")));
    }
    let defaults = args.children();
    if defaults.len() > 1 {
        return Err(args.type_error(format_args!(
            "takes one default stream after the clauses, not {}",
            defaults.len()
        )));
    }
    streams.extend(defaults);
    Ok((firsts, streams))
}

/// `describe` of the clauses: `("metric > 1", …), …`.
fn describe_clauses(firsts: impl Iterator<Item = String>, default: bool) -> String {
    let mut parts: Vec<String> = firsts.map(|f| format!("({f}, …)")).collect();
    if default {
        parts.push("…".into());
    }
    parts.join(", ")
}

fn build_split(mut args: Args) -> Result<NodeRef, BuildError> {
    let (tests, children) = clauses(&mut args, "test")?;
    let tests = tests
        .into_iter()
        .map(|t| predicate_from(&args, "test", t))
        .collect::<Result<Vec<_>, _>>()?;
    args.finish()?;
    Ok(Arc::new(Split {
        tests,
        core: NodeCore::new(children),
    }))
}

/// `split(("metric > 0.9", critical), ok)`: the first clause whose test
/// passes takes the event; clause `i`'s stream is child `i`, the default
/// (if any) the last child.
pub struct Split {
    tests: Vec<Arc<dyn Predicate>>,
    core: NodeCore,
}

impl Node for Split {
    node_core!("split");

    fn describe(&self) -> String {
        let default = self.core.children.len() > self.tests.len();
        let clauses = describe_clauses(self.tests.iter().map(|t| t.describe()), default);
        format!("split({clauses})")
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Split {
            tests: self.tests.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mut target = self.tests.len();
        for (i, test) in self.tests.iter().enumerate() {
            if test.test_in(ctx, event)? {
                target = i;
                break;
            }
        }
        // Past the clauses: the default, when there is one.
        if let Some(child) = self.core.children.get(target) {
            emit_to(self, &**child, ctx, event);
        }
        Ok(())
    }
}

/// `splitp`'s comparison of a clause's value with the event's.
#[derive(Clone)]
enum Compare {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
    Func(Arc<dyn Function>),
}

impl Compare {
    const OPERATORS: [(&'static str, Compare); 5] = [
        ("=", Compare::Eq),
        (">", Compare::Gt),
        (">=", Compare::Ge),
        ("<", Compare::Lt),
        ("<=", Compare::Le),
    ];

    /// `pred(clause_value, event_value)`.
    fn test(&self, a: &Value, b: &Value) -> Result<bool, NodeError> {
        let numbers = || a.as_f64().zip(b.as_f64());
        Ok(match self {
            Compare::Eq => a == b,
            Compare::Gt => numbers().is_some_and(|(a, b)| a > b),
            Compare::Ge => numbers().is_some_and(|(a, b)| a >= b),
            Compare::Lt => numbers().is_some_and(|(a, b)| a < b),
            Compare::Le => numbers().is_some_and(|(a, b)| a <= b),
            Compare::Func(f) => f.test(&[a.clone(), b.clone()])?,
        })
    }

    fn describe(&self) -> String {
        match self {
            Compare::Func(f) => f.describe(),
            op => Self::OPERATORS
                .iter()
                .find(|(_, o)| std::mem::discriminant(o) == std::mem::discriminant(op))
                .map(|(name, _)| super::quote(name))
                .unwrap_or_default(),
        }
    }
}

fn build_splitp(mut args: Args) -> Result<NodeRef, BuildError> {
    let compare = match args.value("pred")? {
        Value::Function(f) => Compare::Func(f),
        Value::Str(op) => match Compare::OPERATORS.iter().find(|(name, _)| *name == op) {
            Some((_, c)) => c.clone(),
            None => {
                return Err(args.error(format_args!(
                    "`pred` must be one of \"=\", \">\", \">=\", \"<\", \"<=\" or a function of two arguments, not {op:?}"
                )))
            }
        },
        v => {
            return Err(args.type_error(format_args!(
                "`pred` must be an operator (str) or a function of two arguments, not {}",
                v.type_name()
            )))
        }
    };
    let field = FieldRef::from_args(&mut args, "field")?;
    let (values, children) = clauses(&mut args, "value")?;
    args.finish()?;
    Ok(Arc::new(SplitP {
        compare,
        field,
        values,
        core: NodeCore::new(children),
    }))
}

/// `splitp("<", "metric", (0.9, critical), ok)`: the first clause for which
/// `pred(value, field)` holds takes the event; clause `i`'s stream is
/// child `i`, the default (if any) the last child.
pub struct SplitP {
    compare: Compare,
    field: FieldRef,
    values: Vec<Value>,
    core: NodeCore,
}

impl Node for SplitP {
    node_core!("splitp");

    fn describe(&self) -> String {
        let default = self.core.children.len() > self.values.len();
        let clauses = describe_clauses(self.values.iter().map(|v| v.to_string()), default);
        format!(
            "splitp({}, {}, {clauses})",
            self.compare.describe(),
            self.field.describe()
        )
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(SplitP {
            compare: self.compare.clone(),
            field: self.field.clone(),
            values: self.values.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let x = self.field.get(event)?;
        let mut target = self.values.len();
        for (i, value) in self.values.iter().enumerate() {
            if self.compare.test(value, &x)? {
                target = i;
                break;
            }
        }
        match self.core.children.get(target) {
            Some(child) => {
                emit_to(self, &**child, ctx, event);
                Ok(())
            }
            None => Err(NodeError(format!(
                "no clause matches {} = {x} and there is no default stream",
                self.field.describe()
            ))),
        }
    }
}

/// One part of a `by` key: small, hashable, and cheap for short strings.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum KeyPart {
    None,
    Bool(bool),
    Int(i64),
    /// The bits of a float that is not a whole number.
    Float(u64),
    Str(SmolStr),
    /// Anything else, by its text.
    Other(Box<str>),
}

impl KeyPart {
    fn of(v: &Value) -> KeyPart {
        match v {
            Value::None => KeyPart::None,
            Value::Bool(b) => KeyPart::Bool(*b),
            Value::Int(i) => KeyPart::Int(*i),
            // 2.0 and 2 are equal values, so the same key.
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => KeyPart::Int(*f as i64),
            Value::Float(f) => KeyPart::Float(f.to_bits()),
            Value::Str(s) => KeyPart::Str(SmolStr::new(s)),
            other => KeyPart::Other(other.to_string().into()),
        }
    }

    /// The key part for an event's field; the string fields without going
    /// through a [`Value`] (no allocation for a short host name).
    fn of_field(event: &Event, name: &str) -> KeyPart {
        let text = |s: &Option<SmolStr>| {
            s.as_ref()
                .map_or(KeyPart::None, |s| KeyPart::Str(s.clone()))
        };
        match name {
            "host" => text(&event.host),
            "service" => text(&event.service),
            "state" => text(&event.state),
            "description" => text(&event.description),
            other => KeyPart::of(&super::value::field(event, other)),
        }
    }
}

impl KeyPart {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            KeyPart::None => json!(null),
            KeyPart::Bool(b) => json!(b),
            KeyPart::Int(i) => json!(i),
            KeyPart::Float(bits) => json!({ "float": f64::from_bits(*bits) }),
            KeyPart::Str(s) => json!(s.as_str()),
            KeyPart::Other(s) => json!({ "other": &**s }),
        }
    }

    fn from_json(v: &serde_json::Value) -> Result<KeyPart, String> {
        use serde_json::Value as J;
        Ok(match v {
            J::Null => KeyPart::None,
            J::Bool(b) => KeyPart::Bool(*b),
            J::Number(n) => KeyPart::Int(n.as_i64().ok_or("a key part out of range")?),
            J::String(s) => KeyPart::Str(SmolStr::new(s)),
            J::Object(o) => match (o.get("float"), o.get("other")) {
                (Some(f), _) => KeyPart::Float(f.as_f64().ok_or("a bad float key part")?.to_bits()),
                (_, Some(J::String(s))) => KeyPart::Other(s.as_str().into()),
                _ => return Err(format!("a bad key part: {v}")),
            },
            J::Array(_) => return Err(format!("a bad key part: {v}")),
        })
    }
}

impl Key {
    /// `["1", part]`, `["2", a, b]` or `["m", parts…]`.
    fn to_json(&self) -> serde_json::Value {
        let (tag, parts): (&str, Vec<&KeyPart>) = match self {
            Key::One(p) => ("1", vec![p]),
            Key::Two(a, b) => ("2", vec![a, b]),
            Key::Many(ps) => ("m", ps.iter().collect()),
        };
        let mut out = vec![serde_json::Value::from(tag)];
        out.extend(parts.into_iter().map(KeyPart::to_json));
        serde_json::Value::Array(out)
    }

    fn from_json(v: &serde_json::Value) -> Result<Key, String> {
        let bad = || format!("a bad fork key: {v}");
        let items = v.as_array().ok_or_else(bad)?;
        let (tag, rest) = items.split_first().ok_or_else(bad)?;
        let parts = rest
            .iter()
            .map(KeyPart::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match (tag.as_str(), parts.as_slice()) {
            (Some("1"), [p]) => Key::One(p.clone()),
            (Some("2"), [a, b]) => Key::Two(a.clone(), b.clone()),
            (Some("m"), _) => Key::Many(parts.into()),
            _ => return Err(bad()),
        })
    }
}

/// A fork's key: one part for one field (no allocation for a short host
/// name), several for several fields.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Key {
    One(KeyPart),
    Two(KeyPart, KeyPart),
    Many(Box<[KeyPart]>),
}

/// What a `by` keys its forks on.
#[derive(Clone)]
enum KeyOf {
    Fields(Vec<String>),
    Func(Arc<dyn Function>),
}

/// One fork: its copies of the template children, and when it last saw an
/// event (processing time).
struct Fork {
    children: Arc<[NodeRef]>,
    last_seen: f64,
}

const DEFAULT_IDLE: f64 = 300.0;

/// Idle forks are looked for at most this many times per `idle` period:
/// each look visits every fork, so a crowd of busy keys must not make it
/// run at every event. A fork goes at most `idle / IDLE_SWEEPS` late.
const IDLE_SWEEPS: f64 = 4.0;

fn build_by(mut args: Args) -> Result<NodeRef, BuildError> {
    let idle = match args.keyword("idle") {
        None => Some(DEFAULT_IDLE),
        Some(Value::None) => None,
        Some(v) => match v.as_f64() {
            Some(0.0) => None,
            Some(x) if x > 0.0 && x.is_finite() => Some(x),
            Some(x) => {
                return Err(args.error(format_args!(
                    "`idle` must be a number of seconds ≥ 0 or None, not {x}"
                )))
            }
            None => {
                return Err(args.type_error(format_args!(
                    "`idle` must be a number of seconds or None, not {}",
                    v.type_name()
                )))
            }
        },
    };
    let mut given = args.rest();
    let key = match given.as_slice() {
        [] => {
            return Err(args.error(
                "needs the fields to fork by (str arguments) or a function of the event first",
            ))
        }
        [Value::Function(_)] => match given.pop() {
            Some(Value::Function(f)) => KeyOf::Func(f),
            _ => unreachable!(),
        },
        _ => KeyOf::Fields(names_from(&args, "fields", given)?),
    };
    let children = args.children();
    args.finish()?;
    Ok(timed(|alarm| By {
        key,
        idle,
        alarm,
        forks: Mutex::default(),
        core: NodeCore::new(children),
    }))
}

/// `by("host", rate(60, index()))`: a fresh copy of the children per key.
/// Its children are the templates the forks are made from (they give the
/// forks their paths and counters, and never see an event themselves).
pub struct By {
    key: KeyOf,
    /// Seconds without events after which a fork is dropped; None: never.
    idle: Option<f64>,
    /// When to look for idle forks.
    alarm: Alarm,
    /// foldhash: fast on short keys, and seeded per process, so senders
    /// cannot aim for collisions.
    forks: Mutex<HashMap<Key, Fork>>,
    core: NodeCore,
}

impl By {
    fn key_of(&self, event: &Arc<Event>) -> Result<Key, NodeError> {
        Ok(match &self.key {
            KeyOf::Fields(fields) => match fields.as_slice() {
                [one] => Key::One(KeyPart::of_field(event, one)),
                [a, b] => Key::Two(KeyPart::of_field(event, a), KeyPart::of_field(event, b)),
                many => Key::Many(many.iter().map(|f| KeyPart::of_field(event, f)).collect()),
            },
            KeyOf::Func(f) => match f.call(&[Value::Event(Arc::clone(event))])? {
                Value::List(parts) => Key::Many(parts.iter().map(KeyPart::of).collect()),
                one => Key::One(KeyPart::of(&one)),
            },
        })
    }

    /// A new fork's children, from the templates.
    fn new_children(&self) -> Arc<[NodeRef]> {
        self.core.children.iter().map(|c| c.fresh()).collect()
    }

    /// The key of the fork `event` goes to, as a trace shows it:
    /// `host=web1`, `host=web1, service=cpu`, or the key function's value.
    pub fn fork_label(&self, event: &Arc<Event>) -> Result<String, NodeError> {
        let key = self.key_of(event)?;
        let parts: Vec<&KeyPart> = match &key {
            Key::One(p) => vec![p],
            Key::Two(a, b) => vec![a, b],
            Key::Many(ps) => ps.iter().collect(),
        };
        let shown = |p: &KeyPart| match p {
            KeyPart::None => "None".to_owned(),
            KeyPart::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            KeyPart::Int(i) => i.to_string(),
            KeyPart::Float(bits) => f64::from_bits(*bits).to_string(),
            KeyPart::Str(s) => s.to_string(),
            KeyPart::Other(s) => s.to_string(),
        };
        Ok(match &self.key {
            KeyOf::Fields(fields) => fields
                .iter()
                .zip(parts)
                .map(|(f, p)| format!("{f}={}", shown(p)))
                .collect::<Vec<_>>()
                .join(", "),
            KeyOf::Func(_) => parts.into_iter().map(shown).collect::<Vec<_>>().join(", "),
        })
    }

    pub fn fork_count(&self) -> usize {
        lock(&self.forks).len()
    }

    /// When the fork last seen at `last_seen` may be dropped: strictly
    /// after `idle` has passed (a fork idle exactly `idle` stays), and not
    /// sooner than a sweep's share of `idle` after `now`.
    fn sweep_at(&self, last_seen: f64, now: f64) -> Option<f64> {
        let idle = self.idle?;
        Some((last_seen + idle).next_up().max(now + idle / IDLE_SWEEPS))
    }

    /// Every fork's children.
    fn fork_children(&self) -> Vec<Arc<[NodeRef]>> {
        lock(&self.forks)
            .values()
            .map(|f| Arc::clone(&f.children))
            .collect()
    }
}

/// Pairs two forks' children at the same place (the same kind, and the
/// same position among siblings of that kind, as reload pairs children).
fn pair_children(new: &[NodeRef], old: &[NodeRef], f: impl Fn(&dyn Node, &dyn Node)) {
    fn segment(children: &[NodeRef], i: usize) -> (&'static str, Option<usize>) {
        let kind = children[i].kind();
        let shared = children.iter().filter(|c| c.kind() == kind).count() > 1;
        (kind, shared.then_some(i))
    }
    for i in 0..new.len() {
        let mine = segment(new, i);
        if let Some(j) = (0..old.len()).find(|&j| segment(old, j) == mine) {
            f(&*new[i], &*old[j]);
        }
    }
}

impl Node for By {
    node_core!("by");

    fn describe(&self) -> String {
        let key = match &self.key {
            KeyOf::Fields(fields) => fields
                .iter()
                .map(|f| super::quote(f))
                .collect::<Vec<_>>()
                .join(", "),
            KeyOf::Func(f) => f.describe(),
        };
        let idle = self
            .idle
            .map_or("None".to_owned(), |x| Value::Float(x).to_string());
        format!("by({key}, idle={idle})")
    }
    fn fresh(&self) -> NodeRef {
        timed(|alarm| By {
            key: self.key.clone(),
            idle: self.idle,
            alarm,
            forks: Mutex::default(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let key = self.key_of(event)?;
        let now = ctx.now();
        let found = lock(&self.forks).get_mut(&key).map(|fork| {
            fork.last_seen = now;
            Arc::clone(&fork.children)
        });
        let children = match found {
            Some(children) => children,
            None => {
                // Built outside the lock: a child's fresh() may take time.
                let children = self.new_children();
                children.iter().for_each(|c| c.start(ctx));
                self.alarm.set(&ctx.timers, self.sweep_at(now, now));
                let mut forks = lock(&self.forks);
                let fork = forks.entry(key).or_insert(Fork {
                    children,
                    last_seen: now,
                });
                Arc::clone(&fork.children)
            }
        };
        forward(self, &children, ctx, event);
        Ok(())
    }
    /// Drops the idle forks (their timers go with them), and sets the
    /// alarm for the next one to go idle.
    fn wake(&self, ctx: &Context, now: f64) {
        let Some(idle) = self.idle else { return };
        let gone: Vec<Fork> = {
            let mut forks = lock(&self.forks);
            let mut oldest = f64::INFINITY;
            let mut gone = Vec::new();
            forks.retain(|_, fork| {
                let keep = now - fork.last_seen <= idle;
                if keep {
                    oldest = oldest.min(fork.last_seen);
                } else {
                    gone.push(Fork {
                        children: Arc::clone(&fork.children),
                        last_seen: fork.last_seen,
                    });
                }
                keep
            });
            // After a crowd of hosts went away, give the memory back.
            if forks.capacity() > 64 && forks.len() * 4 < forks.capacity() {
                forks.shrink_to_fit();
            }
            if !forks.is_empty() {
                self.alarm.set(&ctx.timers, self.sweep_at(oldest, now));
            }
            gone
        };
        // A dropped fork's children may still be held elsewhere (a tap):
        // they must not wake again.
        for fork in gone {
            fork.children.iter().for_each(|c| c.stop());
        }
    }
    fn alarm(&self) -> Option<&Alarm> {
        Some(&self.alarm)
    }
    /// Sets the alarm for idle forks and starts every fork's children (not
    /// the templates: they see no events, so have nothing to time).
    fn start(&self, ctx: &Context) {
        self.alarm.resume();
        let now = ctx.now();
        let oldest = lock(&self.forks)
            .values()
            .map(|f| f.last_seen)
            .reduce(f64::min);
        if let Some(oldest) = oldest {
            self.alarm.set(&ctx.timers, self.sweep_at(oldest, now));
        }
        for children in self.fork_children() {
            children.iter().for_each(|c| c.start(ctx));
        }
    }
    fn stop(&self) {
        self.alarm.stop();
        for children in self.fork_children() {
            children.iter().for_each(|c| c.stop());
        }
    }
    fn flush(&self, ctx: &Context) {
        for children in self.fork_children() {
            children.iter().for_each(|c| c.flush(ctx));
        }
    }
    /// Takes each of the old forks, rebuilt from the new templates with
    /// each child's state moved over (not its counters: forks share those
    /// with their templates, which reload already carried over).
    fn keep_state(&self, old: &dyn Node) -> bool {
        let Some(old) = old.as_any().downcast_ref::<Self>() else {
            return false;
        };
        if std::ptr::eq(self, old) {
            return false;
        }
        let old_forks = std::mem::take(&mut *lock(&old.forks));
        if old_forks.is_empty() {
            return false;
        }
        let mut forks = HashMap::with_capacity(old_forks.len());
        for (key, fork) in old_forks {
            let children = self.new_children();
            pair_children(&children, &fork.children, keep_states);
            forks.insert(
                key,
                Fork {
                    children,
                    last_seen: fork.last_seen,
                },
            );
        }
        *lock(&self.forks) = forks;
        true
    }
    /// Copies each of `from`'s forks: built from this node's templates,
    /// each child taking a copy of its state.
    fn copy_state(&self, from: &dyn Node) -> bool {
        let Some(from) = from.as_any().downcast_ref::<Self>() else {
            return false;
        };
        if std::ptr::eq(self, from) {
            return false;
        }
        let from_forks: Vec<(Key, Arc<[NodeRef]>, f64)> = lock(&from.forks)
            .iter()
            .map(|(k, f)| (k.clone(), Arc::clone(&f.children), f.last_seen))
            .collect();
        let mut forks = HashMap::with_capacity(from_forks.len());
        for (key, from_children, last_seen) in from_forks {
            let children = self.new_children();
            pair_children(&children, &from_children, copy_states);
            forks.insert(
                key,
                Fork {
                    children,
                    last_seen,
                },
            );
        }
        *lock(&self.forks) = forks;
        true
    }
    fn detail(&self) -> Option<String> {
        Some(format!("forks {}", self.fork_count()))
    }
    /// Each fork: its key, when it last saw an event, and its children's
    /// states by their path below the fork.
    fn save_state(&self) -> Option<serde_json::Value> {
        let forks: Vec<(Key, f64, Arc<[NodeRef]>)> = lock(&self.forks)
            .iter()
            .map(|(k, f)| (k.clone(), f.last_seen, Arc::clone(&f.children)))
            .collect();
        let saved: Vec<serde_json::Value> = forks
            .into_iter()
            .map(|(key, last_seen, children)| {
                let states: Vec<super::SavedState> = super::segments(&children)
                    .flat_map(|(segment, child)| super::save_tree(&segment, &**child))
                    .collect();
                serde_json::json!({"key": key.to_json(), "last_seen": last_seen, "children": states})
            })
            .collect();
        Some(serde_json::json!({ "forks": saved }))
    }
    /// Rebuilds the saved forks from the templates, each child taking its
    /// saved state; forks the saved state does not name are dropped.
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let Some(serde_json::Value::Array(saved)) = state.get("forks") else {
            return Err("no forks in the saved state".into());
        };
        let mut forks = HashMap::with_capacity(saved.len());
        for fork in saved {
            let key = Key::from_json(fork.get("key").unwrap_or(&serde_json::Value::Null))?;
            let states: Vec<super::SavedState> =
                serde_json::from_value(fork.get("children").cloned().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            let children = self.new_children();
            for (segment, child) in super::segments(&children) {
                let (_, errors) = super::load_tree(&segment, &**child, &states);
                if let Some(e) = errors.first() {
                    return Err(e.clone());
                }
            }
            let last_seen = fork
                .get("last_seen")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            forks.insert(
                key,
                Fork {
                    children,
                    last_seen,
                },
            );
        }
        *lock(&self.forks) = forks;
        Ok(())
    }
}

// ---------------------------------------------------------------- exception_stream

fn build_exception_stream(mut args: Args) -> Result<NodeRef, BuildError> {
    let mut children = args.children();
    match args.stream_keyword("handler")? {
        Some(handler) => children.insert(0, handler),
        None if children.is_empty() => {
            return Err(args.type_error("needs a handler stream first (like printer())"))
        }
        None => {}
    }
    args.finish()?;
    Ok(Arc::new(ExceptionStream {
        core: NodeCore::new(children),
    }))
}

/// `exception_stream(handler, *children)`: child 0 is the handler, which
/// the failures below the other children reach as events (through
/// [`catching_errors`], which [`super::push`] consults).
pub struct ExceptionStream {
    core: NodeCore,
}

impl ExceptionStream {
    fn handler(&self) -> &NodeRef {
        &self.core.children[0]
    }
    fn guarded(&self) -> &[NodeRef] {
        &self.core.children[1..]
    }
}

impl Node for ExceptionStream {
    node_core!("exception_stream");

    fn fresh(&self) -> NodeRef {
        Arc::new(ExceptionStream {
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        catching_errors(self.handler(), || forward(self, self.guarded(), ctx, event));
        Ok(())
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        catching_errors(self.handler(), || {
            emit_list_to(self, self.guarded(), ctx, events)
        });
        Ok(())
    }
    /// The children's alarms, set while they start, keep the handler for
    /// their wake-ups (as Riemann binds the handler while building them).
    fn start(&self, ctx: &Context) {
        self.handler().start(ctx);
        catching_errors(self.handler(), || {
            self.guarded().iter().for_each(|c| c.start(ctx))
        });
    }
}

/// The event a failure of `node` on `events` becomes for an
/// `exception_stream` handler (Riemann's `exception->event`).
pub(crate) fn error_event(
    node: &dyn Node,
    err: &NodeError,
    events: &[Arc<Event>],
    now: f64,
) -> Event {
    let original = match events {
        [one] => event_to_json(one),
        _ => serde_json::Value::Array(events.iter().map(|e| event_to_json(e)).collect()),
    };
    Event {
        time: Some(Number::Float(now)),
        service: Some(SmolStr::new_static("dmon exception")),
        state: Some(SmolStr::new_static("error")),
        description: Some(SmolStr::new(&err.0)),
        tags: ["exception", error_type(&err.0)].into(),
        attributes: [("node", label(node)), ("event", original.to_string())].into(),
        ..Event::default()
    }
}

/// A Python exception's class name, from `ZeroDivisionError: division by
/// zero`; "NodeError" for dmon's own errors.
fn error_type(message: &str) -> &str {
    match message.split_once(": ") {
        Some((name, _))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.') =>
        {
            name
        }
        _ => "NodeError",
    }
}

// ---------------------------------------------------------------- pipe

fn build_pipe(mut args: Args) -> Result<NodeRef, BuildError> {
    let mut stages = args.children();
    let Some(mut next) = stages.pop() else {
        return Err(args.type_error("needs at least one stage (a stream, like printer())"));
    };
    let signature = args.signature.clone();
    args.finish()?;
    for (i, stage) in stages.iter().enumerate().rev() {
        next = with_last_child(stage, next).map_err(|e| BuildError {
            message: format!(
                "{signature}: stage {} ({}): {}",
                i + 1,
                stage.describe(),
                e.message
            ),
            ..e
        })?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::streams::{carry_over, push_list};
    use crate::testing::{ev, func, Harness, Received, Sink};
    use crate::vals;

    fn clause(first: impl Into<Value>, stream: &Sink) -> Value {
        Value::List(vec![first.into(), Value::Stream(stream.node())])
    }

    #[test]
    fn sdo_forwards_every_event_and_every_list_to_every_child() {
        let h = Harness::new();
        let (a, b) = (h.sink("a"), h.sink("b"));
        let node = h.build("sdo", vec![], vec![], vec![a.node(), b.node()]);
        h.send(&node, ev(r#"{"host":"x"}"#));
        assert_eq!(a.hosts(), ["x"]);
        assert_eq!(b.hosts(), ["x"]);
        let list: Vec<_> = ["y", "z"]
            .iter()
            .map(|host| Arc::new(ev(&format!(r#"{{"host":"{host}"}}"#))))
            .collect();
        push_list(&*node, &h.ctx, &list);
        assert_eq!(a.take(), [Received::List(list.clone())]);
        assert_eq!(b.take(), [Received::List(list)]);
    }

    /// Riemann's example: critical above 0.9, warning above 0.75, else ok.
    #[test]
    fn split_sends_to_the_first_matching_clause_then_the_default() {
        let h = Harness::new();
        let (crit, warn, ok) = (h.sink("crit"), h.sink("warn"), h.sink("ok"));
        let above_75 = func("above_75", |args| match &args[0] {
            Value::Event(e) => Ok(Value::Bool(e.metric.is_some_and(|m| m.as_f64() > 0.75))),
            _ => unreachable!(),
        });
        let node = h.build(
            "split",
            vec![clause("metric > 0.9", &crit), clause(above_75, &warn)],
            vec![],
            vec![ok.node()],
        );
        assert_eq!(node.children().len(), 3);
        for (host, m) in [("a", 0.95), ("b", 0.8), ("c", 0.5), ("d", 0.91)] {
            h.send(&node, ev(&format!(r#"{{"host":"{host}","metric":{m}}}"#)));
        }
        h.send(&node, ev(r#"{"host":"none"}"#));
        assert_eq!(crit.hosts(), ["a", "d"]);
        assert_eq!(warn.hosts(), ["b"]);
        assert_eq!(ok.hosts(), ["c", "none"]);
        assert_eq!(
            node.describe(),
            r#"split(("metric > 0.9", …), (above_75, …), …)"#
        );
    }

    #[test]
    fn split_without_a_default_drops_what_no_clause_takes() {
        let h = Harness::new();
        let hot = h.sink("hot");
        let node = h.build("split", vec![clause("metric > 1", &hot)], vec![], vec![]);
        h.send(&node, ev(r#"{"host":"a","metric":2}"#));
        h.send(&node, ev(r#"{"host":"b","metric":0}"#));
        assert_eq!(hot.hosts(), ["a"]);
        assert_eq!(node.stats().errors.load(Ordering::Relaxed), 0);
        assert_eq!(node.describe(), r#"split(("metric > 1", …))"#);
    }

    #[test]
    fn splitp_compares_clause_values_with_the_field_in_riemanns_order() {
        let metric_over = func("metric_over", |args| {
            Ok(Value::Bool(
                args[1]
                    .as_f64()
                    .zip(args[0].as_f64())
                    .is_some_and(|(m, limit)| m > limit),
            ))
        });
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            // (splitp < metric 0.9 crit 0.75 warn ok): 0.9 < metric.
            (
                "<".into(),
                vec![
                    ("0.95", "crit"),
                    ("0.8", "warn"),
                    ("0.9", "warn"),
                    ("0.1", "ok"),
                    ("null", "ok"),
                ],
            ),
            (
                "<=".into(),
                vec![("0.9", "crit"), ("0.75", "warn"), ("0.7", "ok")],
            ),
            (
                metric_over,
                vec![("0.95", "crit"), ("0.76", "warn"), ("0.75", "ok")],
            ),
            (
                ">".into(),
                vec![("0.1", "crit"), ("0.8", "crit"), ("0.95", "ok")],
            ),
            (">=".into(), vec![("0.9", "crit"), ("0.95", "ok")]),
            (
                "=".into(),
                vec![("0.9", "crit"), ("0.75", "warn"), ("0.5", "ok")],
            ),
        ];
        for (pred, sends) in cases {
            let h = Harness::new();
            let (crit, warn, ok) = (h.sink("crit"), h.sink("warn"), h.sink("ok"));
            let node = h.build(
                "splitp",
                vec![
                    pred.clone(),
                    "metric".into(),
                    clause(0.9, &crit),
                    clause(0.75, &warn),
                ],
                vec![],
                vec![ok.node()],
            );
            for (m, want) in sends {
                h.send(&node, ev(&format!(r#"{{"metric":{m}}}"#)));
                let got: Vec<&str> = [("crit", &crit), ("warn", &warn), ("ok", &ok)]
                    .into_iter()
                    .filter(|(_, s)| !s.events().is_empty())
                    .map(|(name, _)| name)
                    .collect();
                assert_eq!(got, [want], "splitp({pred:?}) with metric {m}");
            }
        }
    }

    #[test]
    fn splitp_without_a_default_counts_an_error_when_nothing_matches() {
        let h = Harness::new();
        let (ok, bad) = (h.sink("ok"), h.sink("bad"));
        let state_of = func("state_of", |args| match &args[0] {
            Value::Event(e) => Ok(crate::streams::value::field(e, "state")),
            _ => unreachable!(),
        });
        let node = h.build(
            "splitp",
            vec![
                "=".into(),
                state_of,
                clause("ok", &ok),
                clause("critical", &bad),
            ],
            vec![],
            vec![],
        );
        h.send(&node, ev(r#"{"host":"a","state":"critical"}"#));
        h.send(&node, ev(r#"{"host":"b","state":"ok"}"#));
        h.send(&node, ev(r#"{"host":"c","state":"warning"}"#));
        assert_eq!(ok.hosts(), ["b"]);
        assert_eq!(bad.hosts(), ["a"]);
        assert_eq!(node.stats().errors.load(Ordering::Relaxed), 1);
        assert_eq!(
            node.describe(),
            r#"splitp("=", state_of, ("ok", …), ("critical", …))"#
        );
    }

    fn by_average(h: &Harness, out: &Sink, fields: Vec<Value>, idle: Option<Value>) -> NodeRef {
        let avg = h.build("average", vals![0], vec![], vec![out.node()]);
        let named = idle
            .map(|v| vec![("idle".to_owned(), v)])
            .unwrap_or_default();
        h.build("by", fields, named, vec![avg])
    }

    fn send_metrics(h: &Harness, node: &NodeRef, events: &[(&str, f64)]) {
        for (host, m) in events {
            h.send(node, ev(&format!(r#"{{"host":"{host}","metric":{m}}}"#)));
        }
    }

    #[test]
    fn by_keeps_independent_state_per_key() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = by_average(&h, &out, vals!["host"], None);
        send_metrics(
            &h,
            &node,
            &[("a", 1.0), ("b", 10.0), ("a", 3.0), ("b", 20.0)],
        );
        assert_eq!(
            out.metrics(),
            [Some(1.0), Some(10.0), Some(2.0), Some(15.0)]
        );
        assert_eq!(node.detail().as_deref(), Some("forks 2"));
        // The forks count on their template.
        let template = &node.children()[0];
        assert_eq!(template.stats().events_in.load(Ordering::Relaxed), 4);
        assert_eq!(node.stats().events_out.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn by_keys_on_several_fields_a_missing_one_as_none_or_a_function() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = by_average(&h, &out, vals!["host", "service"], None);
        for e in [
            r#"{"host":"a","service":"x","metric":1}"#,
            r#"{"host":"a","service":"y","metric":5}"#,
            r#"{"host":"a","metric":7}"#,
            r#"{"host":"a","service":"x","metric":3}"#,
            r#"{"host":"a","metric":9}"#,
        ] {
            h.send(&node, ev(e));
        }
        assert_eq!(
            out.metrics(),
            [Some(1.0), Some(5.0), Some(7.0), Some(2.0), Some(8.0)]
        );
        assert_eq!(node.detail().as_deref(), Some("forks 3"));

        let region = func("region", |args| match &args[0] {
            Value::Event(e) => Ok(crate::streams::value::field(e, "region")),
            _ => unreachable!(),
        });
        let node = by_average(&h, &out, vec![region], None);
        for e in [
            r#"{"host":"a","region":"eu","metric":2}"#,
            r#"{"host":"b","region":"eu","metric":4}"#,
            r#"{"host":"c","region":"us","metric":10}"#,
        ] {
            h.send(&node, ev(e));
        }
        assert_eq!(out.metrics(), [Some(2.0), Some(3.0), Some(10.0)]);
        assert_eq!(node.describe(), "by(region, idle=300)");
    }

    #[test]
    fn by_drops_forks_idle_longer_than_idle_on_tick() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = by_average(&h, &out, vals!["host"], Some(Value::Int(10)));
        h.advance_to(&node, 1.0);
        send_metrics(&h, &node, &[("a", 4.0)]);
        h.advance_to(&node, 5.0);
        send_metrics(&h, &node, &[("b", 1.0)]);
        h.advance_to(&node, 11.0);
        assert_eq!(
            node.detail().as_deref(),
            Some("forks 2"),
            "exactly idle: kept"
        );
        h.advance_to(&node, 11.5);
        assert_eq!(node.detail().as_deref(), Some("forks 1"));
        h.advance_to(&node, 14.0);
        send_metrics(&h, &node, &[("b", 3.0)]);
        h.advance_to(&node, 20.0);
        assert_eq!(
            node.detail().as_deref(),
            Some("forks 1"),
            "b was seen at 14"
        );
        h.advance_to(&node, 24.5);
        assert_eq!(node.detail().as_deref(), Some("forks 0"));
        // A host that comes back starts over.
        send_metrics(&h, &node, &[("a", 10.0)]);
        assert_eq!(out.metrics(), [Some(4.0), Some(1.0), Some(2.0), Some(10.0)]);
    }

    #[test]
    fn by_with_idle_none_or_zero_keeps_forks_forever() {
        for idle in [Value::None, Value::Int(0)] {
            let h = Harness::new();
            let out = h.sink("out");
            let node = by_average(&h, &out, vals!["host"], Some(idle.clone()));
            send_metrics(&h, &node, &[("a", 1.0), ("b", 1.0)]);
            h.advance_to(&node, 1e9);
            assert_eq!(node.detail().as_deref(), Some("forks 2"), "idle={idle}");
            assert_eq!(node.describe(), r#"by("host", idle=None)"#);
        }
    }

    #[test]
    fn by_holds_a_hundred_thousand_hosts_and_lets_them_go() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = h.build("by", vals!["host"], vec![], vec![out.node()]);
        for i in 0..100_000 {
            h.send(&node, ev(&format!(r#"{{"host":"host-{i}"}}"#)));
        }
        assert_eq!(node.detail().as_deref(), Some("forks 100000"));
        assert_eq!(out.events().len(), 100_000);
        h.advance_to(&node, 301.0);
        assert_eq!(node.detail().as_deref(), Some("forks 0"));
        let by = node.as_any().downcast_ref::<By>().unwrap();
        assert!(lock(&by.forks).capacity() < 1000);
    }

    /// Each fork's children keep their own timers, started with the fork;
    /// the templates see no events and are never woken (a fill_in template
    /// would fill in from the start).
    #[test]
    fn by_forks_wake_on_their_own_and_the_templates_never() {
        let h = Harness::new();
        let out = h.sink("out");
        let filled = Value::Map(vec![("service".into(), Value::from("filled"))]);
        let fill = h.build(
            "fill_in",
            vec![Value::Int(1), filled],
            vec![],
            vec![out.node()],
        );
        let node = h.build("by", vals!["host"], vec![], vec![fill]);
        h.advance_to(&node, 5.0);
        assert!(out.take().is_empty(), "no forks: nothing fills in");
        assert!(h.ctx.timers.is_empty(), "nothing asked to be woken");
        send_metrics(&h, &node, &[("a", 1.0), ("b", 1.0)]);
        assert_eq!(out.take().len(), 2);
        h.advance_to(&node, 6.0);
        let got = out.events();
        assert_eq!(got.len(), 2, "one filler per fork");
        assert!(got.iter().all(|e| e.service.as_deref() == Some("filled")));
        assert!(got.iter().all(|e| e.time.map(|t| t.as_f64()) == Some(6.0)));
        // Two forks' fillers and by's idle sweep: all that is queued.
        assert_eq!(h.ctx.timers.len(), 3);
    }

    #[test]
    fn by_reload_keeps_each_forks_state_when_nothing_changed() {
        let h = Harness::new();
        let out = h.sink("out");
        let old = by_average(&h, &out, vals!["host"], None);
        send_metrics(&h, &old, &[("a", 10.0), ("b", 2.0)]);
        out.take();

        let same = by_average(&h, &out, vals!["host"], None);
        carry_over(&*same, &*old);
        assert_eq!(same.detail().as_deref(), Some("forks 2"));
        assert!(same.stats().kept_state.load(Ordering::Relaxed));
        send_metrics(&h, &same, &[("a", 4.0), ("b", 4.0), ("c", 1.0)]);
        assert_eq!(out.metrics(), [Some(7.0), Some(3.0), Some(1.0)]);
        // Counters continue once, through the templates.
        assert_eq!(
            same.children()[0].stats().events_in.load(Ordering::Relaxed),
            5
        );

        // The child changed: the forks stay, their state does not.
        let avg1 = h.build("average", vals![1], vec![], vec![out.node()]);
        let changed = h.build("by", vals!["host"], vec![], vec![avg1]);
        carry_over(&*changed, &*same);
        assert_eq!(changed.detail().as_deref(), Some("forks 3"));
        send_metrics(&h, &changed, &[("a", 1.0)]);
        assert_eq!(out.metrics(), [Some(1.0)]);

        // by's own arguments changed: nothing is kept.
        let other = by_average(&h, &out, vals!["host"], Some(Value::Int(60)));
        carry_over(&*other, &*changed);
        assert_eq!(other.detail().as_deref(), Some("forks 0"));
        send_metrics(&h, &other, &[("a", 5.0)]);
        assert_eq!(out.metrics(), [Some(5.0)]);
    }

    /// A checkpoint's round trip: the state saved by one tree (through
    /// JSON text), loaded into another built the same way, carries on as
    /// the first would have.
    #[test]
    fn by_saves_and_loads_each_forks_state() {
        let h = Harness::new();
        let out = h.sink("out");
        let build = |h: &Harness| {
            let avg = h.build("average", vals![0], vec![], vec![out.node()]);
            let count = h.build("counter", vals![], vec![], vec![out.node()]);
            let win = h.build("fixed_time_window", vals![100], vec![], vec![]);
            let rate = h.build("rate", vals![10], vec![], vec![]);
            h.build(
                "by",
                vals!["host", "metric"],
                vec![],
                vec![avg, count, win, rate],
            )
        };
        let old = build(&h);
        for e in [
            r#"{"host":"a","metric":1,"time":1}"#,
            r#"{"host":"a","metric":1,"time":2}"#,
            r#"{"host":"b","metric":2.5,"time":3}"#,
            r#"{"metric":7,"time":4}"#,
        ] {
            h.send(&old, ev(e));
        }
        let saved = crate::streams::save_tree("s/by", &*old);
        let text = serde_json::to_string(&saved).unwrap();
        let saved: Vec<crate::streams::SavedState> = serde_json::from_str(&text).unwrap();

        let new = build(&h);
        let (loaded, errors) = crate::streams::load_tree("s/by", &*new, &saved);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(loaded >= 1);
        assert_eq!(new.detail().as_deref(), Some("forks 3"));
        out.take();
        for e in [
            r#"{"host":"a","metric":1,"time":5}"#,
            r#"{"metric":7,"time":6}"#,
        ] {
            h.send(&new, ev(e));
        }
        // average, then counter, per event: the old forks' totals go on.
        assert_eq!(out.metrics(), [Some(1.0), Some(3.0), Some(7.0), Some(14.0)]);
        // Another tree: nothing loads where the description differs.
        let avg1 = h.build("average", vals![1], vec![], vec![]);
        let other = h.build("by", vals!["host"], vec![], vec![avg1]);
        assert_eq!(crate::streams::load_tree("s/by", &*other, &saved).0, 0);
    }

    #[test]
    fn stateful_nodes_survive_a_checkpoint_under_by() {
        use crate::testing::Step::{AdvanceTo, Send};
        let at = |t: u32, host: &str, state: &str| {
            Send(ev(&format!(
                r#"{{"host":"{host}","state":"{state}","time":{t}}}"#
            )))
        };
        let h = Harness::new();
        let got = h.restart_between(
            |out| {
                let rollup = h.build("rollup", vals![1, 10], vec![], vec![out.clone()]);
                let changed = h.build("changed", vals!["state"], vec![], vec![out]);
                h.build("by", vals!["host"], vec![], vec![rollup, changed])
            },
            &[at(1, "a", "ok"), at(2, "a", "ok"), at(3, "b", "ok")],
            &[at(4, "b", "ok"), at(5, "a", "critical"), AdvanceTo(20.0)],
        );
        // Each fork's rollup and changed go on: a's and b's held events are
        // flushed at their forks' deadlines, a's change of state passes.
        assert_eq!(crate::testing::shape(got), ["a", "[a,a]", "[b]"]);
    }

    #[test]
    fn by_fresh_has_no_forks_and_its_own_state() {
        let h = Harness::new();
        let out = h.sink("out");
        let node = by_average(&h, &out, vals!["host"], None);
        send_metrics(&h, &node, &[("a", 10.0)]);
        let fresh = node.fresh();
        assert_eq!(fresh.detail().as_deref(), Some("forks 0"));
        assert_eq!(fresh.describe(), node.describe());
        send_metrics(&h, &fresh, &[("a", 2.0)]);
        send_metrics(&h, &node, &[("a", 2.0)]);
        assert_eq!(out.metrics(), [Some(10.0), Some(2.0), Some(6.0)]);
    }

    fn boom() -> Value {
        func("boom", |_| {
            Err(NodeError(
                "ZeroDivisionError: division by zero\nTraceback (most recent call last): …".into(),
            ))
        })
    }

    fn errors(node: &NodeRef) -> u64 {
        node.stats().errors.load(Ordering::Relaxed)
    }

    /// Riemann's exception-stream-test, "direct fn": the child sees the
    /// event, its failure reaches the handler as an event.
    #[test]
    fn exception_stream_sends_failures_below_it_to_the_handler() {
        let h = Harness::at(5.0);
        let (handler, out) = (h.sink("handler"), h.sink("out"));
        let failing = h.build("smap", vec![boom()], vec![], vec![]);
        let node = h.build(
            "exception_stream",
            vec![],
            vec![],
            vec![handler.node(), out.node(), Arc::clone(&failing)],
        );
        h.send(&node, ev(r#"{"host":"a","metric":2}"#));
        assert_eq!(out.hosts(), ["a"]);
        let got = handler.events();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(e.service.as_deref(), Some("dmon exception"));
        assert_eq!(e.state.as_deref(), Some("error"));
        assert_eq!(e.time.map(|t| t.as_f64()), Some(5.0));
        assert!(e
            .description
            .as_deref()
            .unwrap()
            .starts_with("ZeroDivisionError: division by zero\n"));
        let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, ["exception", "ZeroDivisionError"]);
        assert_eq!(e.attributes.get("node"), Some("smap(boom)"));
        let original: serde_json::Value =
            serde_json::from_str(e.attributes.get("event").unwrap()).unwrap();
        assert_eq!(original["host"], "a");
        // Still counted on the failing node; the handler is child 0.
        assert_eq!(errors(&failing), 1);
        assert_eq!(node.describe(), "exception_stream");
        // Outside the exception_stream, failures are only counted.
        h.send(&failing, ev(r#"{"host":"b"}"#));
        assert_eq!(errors(&failing), 2);
        assert!(handler.take().is_empty());
    }

    /// Riemann's exception-stream-test, "scheduled fn": a failure below a
    /// rate, when the rate reports on the clock, reaches the handler too.
    #[test]
    fn exception_stream_catches_failures_of_children_woken_by_time() {
        let h = Harness::new();
        let handler = h.sink("handler");
        let failing = h.build("smap", vec![boom()], vec![], vec![]);
        let rate = h.build("rate", vals![1], vec![], vec![failing]);
        let node = h.build(
            "exception_stream",
            vec![],
            vec![],
            vec![handler.node(), rate],
        );
        h.send(&node, ev(r#"{"metric":2}"#));
        assert!(handler.take().is_empty());
        h.advance_to(&node, 1.0);
        let got = handler.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].state.as_deref(), Some("error"));
        // The same tree outside an exception_stream: counted, not handled.
        let h = Harness::new();
        let failing = h.build("smap", vec![boom()], vec![], vec![]);
        let rate = h.build("rate", vals![1], vec![], vec![Arc::clone(&failing)]);
        h.send(&rate, ev(r#"{"metric":2}"#));
        h.advance_to(&rate, 2.0);
        assert_eq!(errors(&failing), 2);
        assert!(handler.take().is_empty());
    }

    #[test]
    fn a_failing_handler_reaches_the_enclosing_exception_stream() {
        let h = Harness::new();
        let (outer_handler, list_out) = (h.sink("outer"), h.sink("list"));
        let inner_handler = h.build("smap", vec![boom()], vec![], vec![]);
        let inner = h.build(
            "exception_stream",
            vec![],
            vec![],
            vec![
                Arc::clone(&inner_handler),
                h.build("smap", vec![boom()], vec![], vec![]),
                list_out.node(),
            ],
        );
        let outer = h.build(
            "exception_stream",
            vec![],
            vec![],
            vec![outer_handler.node(), inner],
        );
        h.send(&outer, ev(r#"{"host":"a"}"#));
        let got = outer_handler.events();
        assert_eq!(got.len(), 1);
        // The inner handler failed on the inner failure's event.
        let original: serde_json::Value =
            serde_json::from_str(got[0].attributes.get("event").unwrap()).unwrap();
        assert_eq!(original["service"], "dmon exception");
        assert_eq!(errors(&inner_handler), 1);
        // Lists pass whole.
        let list = vec![
            Arc::new(ev(r#"{"host":"x"}"#)),
            Arc::new(ev(r#"{"host":"y"}"#)),
        ];
        push_list(&*outer, &h.ctx, &list);
        assert!(list_out.take().contains(&Received::List(list)));
    }

    /// Riemann's pipe-test, "Chained stages": `(pipe ! (smap inc !) (smap
    /// (partial * 2) !))`.
    #[test]
    fn pipe_makes_each_stage_the_last_child_of_the_one_before() {
        let h = Harness::new();
        let out = h.sink("out");
        let arith = |name: &str, f: fn(i64) -> i64| {
            func(name, move |a| match &a[0] {
                Value::Event(e) => {
                    let mut e = Event::clone(e);
                    e.metric = e.metric.map(|m| Number::Int(f(m.as_f64() as i64)));
                    Ok(Value::Event(Arc::new(e)))
                }
                _ => unreachable!(),
            })
        };
        let inc = h.build("smap", vec![arith("inc", |x| x + 1)], vec![], vec![]);
        let double = h.build("smap", vec![arith("double", |x| x * 2)], vec![], vec![]);
        let other = h.sink("other");
        let tee = h.build("sdo", vec![], vec![], vec![other.node()]);
        let node = h.build("pipe", vec![], vec![], vec![inc, tee, double, out.node()]);
        assert_eq!(node.kind(), "smap");
        for m in [1, 2, 3] {
            h.send(&node, ev(&format!(r#"{{"metric":{m}}}"#)));
        }
        assert_eq!(out.metrics(), [Some(4.0), Some(6.0), Some(8.0)]);
        // A stage's own children stay, before the next stage.
        assert_eq!(other.metrics(), [Some(2.0), Some(3.0), Some(4.0)]);
        // One stage is that stage.
        let only = h.build("sdo", vec![], vec![], vec![]);
        let piped = h.build("pipe", vec![], vec![], vec![Arc::clone(&only)]);
        assert!(Arc::ptr_eq(&only, &piped));
    }

    #[test]
    fn pipe_rebuilds_stages_with_their_arguments_even_a_split_default() {
        let h = Harness::new();
        let (hot, rest) = (h.sink("hot"), h.sink("rest"));
        let split = h.build("split", vec![clause("metric > 1", &hot)], vec![], vec![]);
        let node = h.build("pipe", vec![], vec![], vec![split, rest.node()]);
        assert_eq!(node.describe(), r#"split(("metric > 1", …), …)"#);
        h.send(&node, ev(r#"{"host":"a","metric":2}"#));
        h.send(&node, ev(r#"{"host":"b","metric":0}"#));
        assert_eq!(hot.hosts(), ["a"]);
        assert_eq!(rest.hosts(), ["b"]);
    }

    #[test]
    fn pipe_rejects_stages_that_cannot_take_the_next() {
        let h = Harness::new();
        let s = h.sink("s");
        let cases: Vec<(Vec<NodeRef>, &str)> = vec![
            (
                vec![],
                "pipe(*stages): needs at least one stage (a stream, like printer())",
            ),
            (
                vec![s.node(), s.node()],
                r#"pipe(*stages): stage 1 (sink("s")): takes no next stage: only dmon.streams functions do (a coroutine takes its targets as arguments)"#,
            ),
            (
                vec![h.build("index", vec![], vec![], vec![]), s.node()],
                "pipe(*stages): stage 1 (index()): index(): takes no child streams",
            ),
        ];
        for (stages, message) in cases {
            let err = h.try_build("pipe", vec![], vec![], stages).err().unwrap();
            assert_eq!(err.message, message);
            assert!(err.wrong_type, "{message}");
        }
    }

    #[test]
    fn route_nodes_reject_bad_arguments_clearly() {
        let h = Harness::new();
        let s = h.sink("s");
        type Case<'a> = (
            &'a str,
            Vec<Value>,
            Vec<(String, Value)>,
            usize,
            &'a str,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "by",
                vec![],
                vec![],
                0,
                "by(*fields_and_children, idle=300): needs the fields to fork by (str arguments) or a function of the event first",
                false,
            ),
            (
                "by",
                vals!["host", 3],
                vec![],
                0,
                "by(*fields_and_children, idle=300): `fields` must be str, not 3 (int)",
                true,
            ),
            (
                "by",
                vals!["host"],
                vec![("idle".into(), Value::Int(-1))],
                0,
                "by(*fields_and_children, idle=300): `idle` must be a number of seconds ≥ 0 or None, not -1",
                false,
            ),
            (
                "split",
                vals!["metric > 1"],
                vec![],
                0,
                "split(*clauses): each clause must be a tuple (test, stream), not \"metric > 1\" (str)",
                true,
            ),
            (
                "split",
                vec![clause("metric > 1", &s)],
                vec![],
                2,
                "split(*clauses): takes one default stream after the clauses, not 2",
                true,
            ),
            (
                "split",
                vec![],
                vec![],
                1,
                "split(*clauses): needs at least one (test, stream) clause",
                false,
            ),
            (
                "splitp",
                vec!["~".into(), "metric".into(), clause(1, &s)],
                vec![],
                0,
                "splitp(pred, field, *clauses): `pred` must be one of \"=\", \">\", \">=\", \"<\", \"<=\" or a function of two arguments, not \"~\"",
                false,
            ),
        ];
        for (name, args, named, defaults, message, wrong_type) in cases {
            let children = (0..defaults).map(|_| s.node()).collect();
            let err = h.try_build(name, args, named, children).err().unwrap();
            assert_eq!(err.message, message);
            assert_eq!(err.wrong_type, wrong_type, "{message}");
        }
    }
}
