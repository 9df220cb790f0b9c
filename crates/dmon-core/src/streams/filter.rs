//! Filters: nodes that forward only some events.
//!
//! | function | example |
//! |---|---|
//! | `when(pred, *children)` | `when(lambda e: e.state == "warning", email("ops@example.com"))` |
//! | `where(test, *children, else_=None)` | `where('service =~ "cpu%" and metric > 0.9', printer("hot: "))` |
//! | `over(x, *children)` | `over(0.9, email("ops@example.com"))` |
//! | `under(x, *children)` | `under(0.1, printer("low: "))` |
//! | `within(low, high, *children)` | `within(0.5, 0.9, printer("elevated: "))` |
//! | `without(low, high, *children)` | `without(0, 100, printer("out of range: "))` |
//! | `tagged(*tags_and_children)` | `tagged("prod", "web", index())` |
//! | `tagged_all(*tags_and_children)` | `tagged_all("prod", "web", index())` |
//! | `tagged_any(*tags_and_children)` | `tagged_any("db", "cache", index())` |
//! | `expired(*children)` | `expired(printer("gone: "))` |
//! | `not_expired(*children)` | `not_expired(index())` |
//! | `match(field, value, *children)` | `match("service", ["cpu", "load"], printer())` |

use std::sync::Arc;

use super::entry::Entry;
use super::value::{Args, BuildError, Function, Value};
use super::{emit_to, Node, NodeCore, NodeError, NodeRef};
use crate::event::{now_secs, Event};
use crate::node_core;
use crate::query::Query;
use crate::streams::context::Context;

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "when",
        params: "pred, *children",
        summary: "Forward the events for which `pred(event)` is true.",
        details: "",
        example: r#"when(lambda e: e.state == "warning", email("ops@example.com"))"#,
        build: build_when,
    },
    Entry {
        name: "where",
        params: "test, *children, else_=None",
        summary: "Forward the events matching a query (Riemann's language, compiled once) or a predicate; the others go to `else_`.",
        details: "No Python runs per event when `test` is a query string.",
        example: r#"where('service =~ "cpu%" and metric > 0.9', printer("hot: "), else_=index())"#,
        build: build_where,
    },
    Entry {
        name: "over",
        params: "x, *children",
        summary: "Forward the events whose metric is greater than `x`.",
        details: "Events without a metric do not pass.",
        example: r#"over(0.9, email("ops@example.com"))"#,
        build: build_over,
    },
    Entry {
        name: "under",
        params: "x, *children",
        summary: "Forward the events whose metric is less than `x`.",
        details: "Events without a metric do not pass.",
        example: r#"under(0.1, printer("low: "))"#,
        build: build_under,
    },
    Entry {
        name: "within",
        params: "low, high, *children",
        summary: "Forward the events whose metric is between `low` and `high`, both included.",
        details: "Events without a metric do not pass. Riemann 0.2.12 removed it in favour of `where`; dmon keeps it.",
        example: r#"within(0.5, 0.9, printer("elevated: "))"#,
        build: build_within,
    },
    Entry {
        name: "without",
        params: "low, high, *children",
        summary: "Forward the events whose metric is below `low` or above `high`.",
        details: "Events without a metric do not pass. Riemann 0.2.12 removed it in favour of `where`; dmon keeps it.",
        example: r#"without(0, 100, printer("out of range: "))"#,
        build: build_without,
    },
    Entry {
        name: "tagged",
        params: "*tags_and_children",
        summary: "Forward the events that carry every one of the tags (the same as `tagged_all`).",
        details: "The tags are the leading str arguments, or one list of str; the child streams follow.",
        example: r#"tagged("prod", "web", index())"#,
        build: build_tagged,
    },
    Entry {
        name: "tagged_all",
        params: "*tags_and_children",
        summary: "Forward the events that carry every one of the tags.",
        details: "The tags are the leading str arguments, or one list of str; the child streams follow.",
        example: r#"tagged_all(["prod", "web"], index())"#,
        build: build_tagged_all,
    },
    Entry {
        name: "tagged_any",
        params: "*tags_and_children",
        summary: "Forward the events that carry at least one of the tags.",
        details: "The tags are the leading str arguments, or one list of str; the child streams follow.",
        example: r#"tagged_any("db", "cache", index())"#,
        build: build_tagged_any,
    },
    Entry {
        name: "expired",
        params: "*children",
        summary: "Forward the expired events: state \"expired\", or older than their ttl.",
        details: "An event is expired when its state is \"expired\" or when now - time > ttl (ttl 60 s when the event has none), as Riemann's `expired?`. Now is processing time (the context clock). An event without a time expires only by its state.",
        example: r#"expired(printer("gone: "))"#,
        build: build_expired,
    },
    Entry {
        name: "not_expired",
        params: "*children",
        summary: "Forward the events that are not expired (see `expired`).",
        details: "The opposite of `expired`: state is not \"expired\" and now - time <= ttl (ttl 60 s by default), now being processing time (the context clock). Events without a time pass unless their state is \"expired\".",
        example: r#"not_expired(index())"#,
        build: build_not_expired,
    },
    Entry {
        name: "match",
        params: "field, value, *children",
        summary: "Forward the events whose `field` matches `value`: equal to it, any of a list, passing a function, or a dict of patterns.",
        details: "`field` is a field or attribute name, or a function of the event. `value` is compared for equality (numbers by value; None matches a missing field), a list or tuple means any of its items (each matched the same way), and a function is called with the field's value and passes when truthy. For a regular expression pass its search method: `match(\"service\", re.compile(r\"^cpu\").search, ...)`. A dict matches when each of its values matches (the same way, recursively) that key of the field's value: an event's field or attribute, a dict's entry, None when absent (Riemann's map pattern); `match(lambda e: e, {\"state\": \"ok\", \"host\": [\"a\", \"b\"]}, ...)` tests the event itself.",
        example: r#"match("service", ["cpu", "load"], printer("busy: "))"#,
        build: build_match,
    },
];

/// A test on one event. Native predicates (queries) and user functions
/// both implement it.
pub trait Predicate: Send + Sync {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError>;
    fn describe(&self) -> String;
    /// Tests with the node's context at hand; predicates that read the
    /// clock (`expired`) override this.
    fn test_in(&self, _ctx: &Context, event: &Arc<Event>) -> Result<bool, NodeError> {
        self.test(event)
    }
}

/// A query as a `where`/`when` predicate.
impl Predicate for Query {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        Ok(self.matches(event))
    }

    fn describe(&self) -> String {
        format!("{:?}", self.source())
    }
}

/// A function used as a predicate: a truthy result passes.
pub struct FnPredicate(pub Arc<dyn Function>);

impl Predicate for FnPredicate {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        self.0.test(&[Value::Event(Arc::clone(event))])
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// A predicate from a stream function's argument: a query string or a
/// function.
pub fn predicate(args: &mut Args, name: &str) -> Result<Arc<dyn Predicate>, BuildError> {
    let value = args.value(name)?;
    predicate_from(args, name, value)
}

/// A predicate from a value already taken (`split`'s clauses): a query
/// string or a function.
pub fn predicate_from(
    args: &Args,
    name: &str,
    value: Value,
) -> Result<Arc<dyn Predicate>, BuildError> {
    match value {
        Value::Str(q) => Query::parse(&q)
            .map(|q| Arc::new(q) as Arc<dyn Predicate>)
            .map_err(|e| args.error(format_args!("{q:?}: {e}"))),
        Value::Function(f) => Ok(Arc::new(FnPredicate(f))),
        v => Err(args.type_error(format_args!(
            "`{name}` must be a query string or a function, not {}",
            v.type_name()
        ))),
    }
}

fn build_when(mut args: Args) -> Result<NodeRef, BuildError> {
    let pred = match args.value("pred")? {
        Value::Function(f) => Arc::new(FnPredicate(f)) as Arc<dyn Predicate>,
        v => {
            return Err(args.type_error(format_args!(
                "needs a callable predicate first, like `lambda e: e.metric > 1`, not {}",
                v.type_name()
            )))
        }
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new("when", pred, children, None)))
}

fn build_where(mut args: Args) -> Result<NodeRef, BuildError> {
    let pred = predicate(&mut args, "test")?;
    let otherwise = args.stream_keyword("else_")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new("where", pred, children, otherwise)))
}

fn build_over(args: Args) -> Result<NodeRef, BuildError> {
    metric_filter("over", args, |x| MetricTest::Over(x[0]))
}

fn build_under(args: Args) -> Result<NodeRef, BuildError> {
    metric_filter("under", args, |x| MetricTest::Under(x[0]))
}

fn build_within(args: Args) -> Result<NodeRef, BuildError> {
    metric_filter("within", args, |x| MetricTest::Within(x[0], x[1]))
}

fn build_without(args: Args) -> Result<NodeRef, BuildError> {
    metric_filter("without", args, |x| MetricTest::Without(x[0], x[1]))
}

/// A filter on the metric: `over(x)`, `within(low, high)`.
fn metric_filter(
    kind: &'static str,
    mut args: Args,
    test: fn(&[f64]) -> MetricTest,
) -> Result<NodeRef, BuildError> {
    let bounds = match kind {
        "within" | "without" => {
            let (low, high) = (args.number("low")?, args.number("high")?);
            if low > high {
                return Err(args.error(format_args!(
                    "`low` must not be greater than `high`, not {} > {}",
                    Value::Float(low),
                    Value::Float(high)
                )));
            }
            vec![low, high]
        }
        _ => vec![args.number("x")?],
    };
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new(
        kind,
        Arc::new(test(&bounds)),
        children,
        None,
    )))
}

/// What `over`, `under`, `within` and `without` test; an event without a
/// metric fails every one.
enum MetricTest {
    Over(f64),
    Under(f64),
    Within(f64, f64),
    Without(f64, f64),
}

impl Predicate for MetricTest {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        let Some(m) = event.metric.map(|m| m.as_f64()) else {
            return Ok(false);
        };
        Ok(match *self {
            MetricTest::Over(x) => m > x,
            MetricTest::Under(x) => m < x,
            MetricTest::Within(low, high) => low <= m && m <= high,
            MetricTest::Without(low, high) => m < low || m > high,
        })
    }
    fn describe(&self) -> String {
        let n = |x: f64| Value::Float(x).to_string();
        match *self {
            MetricTest::Over(x) | MetricTest::Under(x) => n(x),
            MetricTest::Within(a, b) | MetricTest::Without(a, b) => format!("{}, {}", n(a), n(b)),
        }
    }
}

fn build_tagged(args: Args) -> Result<NodeRef, BuildError> {
    tag_filter("tagged", true, args)
}

fn build_tagged_all(args: Args) -> Result<NodeRef, BuildError> {
    tag_filter("tagged_all", true, args)
}

fn build_tagged_any(args: Args) -> Result<NodeRef, BuildError> {
    tag_filter("tagged_any", false, args)
}

fn tag_filter(kind: &'static str, all: bool, mut args: Args) -> Result<NodeRef, BuildError> {
    let tags = names(&mut args, "tags")?;
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new(
        kind,
        Arc::new(Tagged { all, tags }),
        children,
        None,
    )))
}

/// The leading positional arguments as names, each a str, or one list of
/// str: `tagged`'s tags, `by`'s fields. At least one is needed.
pub(crate) fn names(args: &mut Args, what: &str) -> Result<Vec<String>, BuildError> {
    let given = args.rest();
    names_from(args, what, given)
}

/// [`names`] from values already taken.
pub(crate) fn names_from(
    args: &Args,
    what: &str,
    mut given: Vec<Value>,
) -> Result<Vec<String>, BuildError> {
    if let [Value::List(_)] = given.as_slice() {
        if let Some(Value::List(items)) = given.pop() {
            given = items;
        }
    }
    if given.is_empty() {
        return Err(args.error(format_args!("needs at least one of `{what}` (a str)")));
    }
    given
        .into_iter()
        .map(|v| match v {
            Value::Str(s) => Ok(s),
            v => Err(args.type_error(format_args!(
                "`{what}` must be str, not {}",
                match v {
                    Value::Function(_) | Value::Stream(_) | Value::None => v.type_name().to_owned(),
                    _ => format!("{v} ({})", v.type_name()),
                }
            ))),
        })
        .collect()
}

/// Whether an event carries all (or any) of the tags.
struct Tagged {
    all: bool,
    tags: Vec<String>,
}

impl Predicate for Tagged {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        Ok(if self.all {
            self.tags.iter().all(|t| event.has_tag(t))
        } else {
            self.tags.iter().any(|t| event.has_tag(t))
        })
    }
    fn describe(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| super::quote(t)).collect();
        tags.join(", ")
    }
}

fn build_expired(args: Args) -> Result<NodeRef, BuildError> {
    expiry_filter("expired", true, args)
}

fn build_not_expired(args: Args) -> Result<NodeRef, BuildError> {
    expiry_filter("not_expired", false, args)
}

fn expiry_filter(kind: &'static str, expired: bool, mut args: Args) -> Result<NodeRef, BuildError> {
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new(
        kind,
        Arc::new(Expiry { expired }),
        children,
        None,
    )))
}

/// Passes expired events (or, with `expired` false, the others).
struct Expiry {
    expired: bool,
}

impl Predicate for Expiry {
    /// Without a context, against the wall clock.
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        Ok(event.is_expired(now_secs()) == self.expired)
    }
    fn test_in(&self, ctx: &Context, event: &Arc<Event>) -> Result<bool, NodeError> {
        Ok(event.is_expired(ctx.now()) == self.expired)
    }
    fn describe(&self) -> String {
        String::new()
    }
}

/// Where a node reads a value from each event: a field (or attribute) by
/// name, or a function of the event.
#[derive(Clone)]
pub(crate) enum FieldRef {
    Name(String),
    Func(Arc<dyn Function>),
}

impl FieldRef {
    /// From a stream function's argument `name`: a str or a function.
    pub(crate) fn from_args(args: &mut Args, name: &str) -> Result<FieldRef, BuildError> {
        match args.value(name)? {
            Value::Str(s) => Ok(FieldRef::Name(s)),
            Value::Function(f) => Ok(FieldRef::Func(f)),
            v => Err(args.type_error(format_args!(
                "`{name}` must be a field name (str) or a function of the event, not {}",
                v.type_name()
            ))),
        }
    }

    pub(crate) fn get(&self, event: &Arc<Event>) -> Result<Value, NodeError> {
        match self {
            FieldRef::Name(name) => Ok(super::value::field(event, name)),
            FieldRef::Func(f) => f.call(&[Value::Event(Arc::clone(event))]),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            FieldRef::Name(name) => super::quote(name),
            FieldRef::Func(f) => f.describe(),
        }
    }
}

fn build_match(mut args: Args) -> Result<NodeRef, BuildError> {
    let field = FieldRef::from_args(&mut args, "field")?;
    let value = args.value("value")?;
    if let Value::Stream(_) = value {
        return Err(args.type_error("`value` must be a value, a list or a function, not a stream"));
    }
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(When::new(
        "match",
        Arc::new(Match { field, value }),
        children,
        None,
    )))
}

/// Riemann's `riemann.common/match`: a function is applied, a list means
/// any of its items, a dict means each of its keys' patterns matches that
/// key of `x`, anything else is compared for equality.
pub(crate) fn matches(pattern: &Value, x: &Value) -> Result<bool, NodeError> {
    match pattern {
        Value::Function(f) => f.test(std::slice::from_ref(x)),
        Value::Map(pairs) => {
            for (key, pattern) in pairs {
                if !matches(pattern, &member(x, key))? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Value::List(items) => {
            for item in items {
                if matches(item, x)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        other => Ok(other == x),
    }
}

/// `x`'s `key`, as Clojure's `get`: an event's field or attribute, a
/// dict's entry; None when there is none.
fn member(x: &Value, key: &str) -> Value {
    match x {
        Value::Event(e) => super::value::field(e, key),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Value::None, |(_, v)| v.clone()),
        _ => Value::None,
    }
}

/// `match(field, value)`.
struct Match {
    field: FieldRef,
    value: Value,
}

impl Predicate for Match {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        matches(&self.value, &self.field.get(event)?)
    }
    fn describe(&self) -> String {
        format!("{}, {}", self.field.describe(), self.value)
    }
}

/// `when`, `where` and every native filter (`over`, `tagged`, `expired`,
/// `match`, …): forwards the events that pass the predicate to the
/// children, the others to the `else_` child if there is one.
/// `where("metric > 1", printer())`
pub struct When {
    kind: &'static str,
    predicate: Arc<dyn Predicate>,
    /// How many of the children take passing events; an `else_` child
    /// comes after them.
    then: usize,
    core: NodeCore,
}

impl When {
    /// How many of the children take the events that pass (the rest is
    /// the `else_` child).
    pub fn passing_children(&self) -> usize {
        self.then
    }

    pub fn new(
        kind: &'static str,
        predicate: Arc<dyn Predicate>,
        mut children: Vec<NodeRef>,
        otherwise: Option<NodeRef>,
    ) -> Self {
        let then = children.len();
        children.extend(otherwise);
        When {
            kind,
            predicate,
            then,
            core: NodeCore::new(children),
        }
    }
}

impl Node for When {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        let otherwise = if self.then < self.core.children.len() {
            ", else_=…"
        } else {
            ""
        };
        let args = self.predicate.describe();
        if args.is_empty() && otherwise.is_empty() {
            return self.kind.to_owned();
        }
        format!("{}({args}{otherwise})", self.kind)
    }
    node_core!();
    fn fresh(&self) -> NodeRef {
        Arc::new(When {
            kind: self.kind,
            predicate: Arc::clone(&self.predicate),
            then: self.then,
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let (then, otherwise) = self.core.children.split_at(self.then);
        let targets = if self.predicate.test_in(ctx, event)? {
            then
        } else {
            otherwise
        };
        for child in targets {
            emit_to(self, &**child, ctx, event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::streams::{NodeError, Value};
    use crate::testing::{ev, func, Harness};
    use crate::vals;

    #[test]
    fn where_routes_matches_to_children_and_the_rest_to_else() {
        let h = Harness::new();
        let (yes, no) = (h.sink("yes"), h.sink("no"));
        let node = h.build(
            "where",
            vals!["metric > 1"],
            vec![("else_".into(), no.node().into())],
            vec![yes.node()],
        );
        h.send(&node, ev(r#"{"host":"a","metric":2}"#));
        h.send(&node, ev(r#"{"host":"b","metric":0}"#));
        assert_eq!(yes.hosts(), ["a"]);
        assert_eq!(no.hosts(), ["b"]);
    }

    #[test]
    fn where_rejects_a_bad_query_at_build_time() {
        let h = Harness::new();
        let err = h
            .try_build("where", vals!["metric >"], vec![], vec![])
            .err()
            .unwrap();
        assert!(
            err.message
                .starts_with("where(test, *children, else_=None): \"metric >\""),
            "{err}"
        );
    }

    /// Builds `name(args…)` over a sink, sends the events, and returns the
    /// hosts that passed.
    fn passing(h: &Harness, name: &str, args: Vec<Value>, events: &[&str]) -> Vec<String> {
        let out = h.sink("out");
        let node = h.build(name, args, vec![], vec![out.node()]);
        for e in events {
            h.send(&node, ev(e));
        }
        out.hosts()
    }

    #[test]
    fn metric_filters_compare_and_drop_events_without_a_metric() {
        let events = [
            r#"{"host":"m0","metric":0}"#,
            r#"{"host":"m1","metric":1}"#,
            r#"{"host":"m2","metric":2.5}"#,
            r#"{"host":"m5","metric":5}"#,
            r#"{"host":"m9","metric":9}"#,
            r#"{"host":"none"}"#,
        ];
        let cases: &[(&str, Vec<Value>, &[&str])] = &[
            ("over", vals![2], &["m2", "m5", "m9"]),
            ("over", vals![5], &["m9"]),
            ("under", vals![2.5], &["m0", "m1"]),
            ("under", vals![0], &[]),
            ("within", vals![1, 5], &["m1", "m2", "m5"]),
            ("within", vals![2.5, 2.5], &["m2"]),
            ("without", vals![1, 5], &["m0", "m9"]),
        ];
        for (name, args, want) in cases {
            let h = Harness::new();
            assert_eq!(
                passing(&h, name, args.clone(), &events),
                *want,
                "{name}({args:?})"
            );
        }
    }

    #[test]
    fn tag_filters_need_all_or_any_of_the_tags() {
        let events = [
            r#"{"host":"ab","tags":["a","b"]}"#,
            r#"{"host":"a","tags":["a"]}"#,
            r#"{"host":"c","tags":["c"]}"#,
            r#"{"host":"none"}"#,
        ];
        let cases: &[(&str, Vec<Value>, &[&str])] = &[
            ("tagged", vals!["a", "b"], &["ab"]),
            ("tagged", vals!["a"], &["ab", "a"]),
            ("tagged_all", vals!["a", "b"], &["ab"]),
            ("tagged_all", vec![Value::List(vals!["b", "a"])], &["ab"]),
            ("tagged_any", vals!["b", "c"], &["ab", "c"]),
            ("tagged_any", vec![Value::List(vals!["a"])], &["ab", "a"]),
            ("tagged_any", vals!["z"], &[]),
        ];
        for (name, args, want) in cases {
            let h = Harness::new();
            assert_eq!(
                passing(&h, name, args.clone(), &events),
                *want,
                "{name}({args:?})"
            );
        }
    }

    #[test]
    fn expired_follows_riemanns_expired_with_the_context_clock() {
        let events = [
            r#"{"host":"state","state":"expired"}"#,
            r#"{"host":"fresh","time":50}"#,
            r#"{"host":"old","time":30}"#,
            r#"{"host":"edge","time":40}"#,
            r#"{"host":"short-ttl","time":95,"ttl":2}"#,
            r#"{"host":"long-ttl","time":10,"ttl":100}"#,
            r#"{"host":"timeless","state":"ok"}"#,
        ];
        let h = Harness::at(100.0);
        assert_eq!(
            passing(&h, "expired", vec![], &events),
            ["state", "old", "short-ttl"]
        );
        assert_eq!(
            passing(&h, "not_expired", vec![], &events),
            ["fresh", "edge", "long-ttl", "timeless"]
        );
        // The clock moves on: what was fresh expires.
        h.clock.advance_to(200.0);
        assert_eq!(
            passing(&h, "expired", vec![], &[r#"{"host":"fresh","time":50}"#]),
            ["fresh"]
        );
    }

    /// Each `match(args)` passes the hosts wanted of `events`.
    fn assert_matches_pass(events: &[&str], cases: Vec<(Vec<Value>, &[&str])>) {
        for (args, want) in cases {
            let h = Harness::new();
            assert_eq!(
                passing(&h, "match", args.clone(), events),
                want,
                "match({args:?})"
            );
        }
    }

    #[test]
    fn match_compares_a_field_with_a_value_a_list_or_a_function() {
        let events = [
            r#"{"host":"a","service":"cpu","metric":1}"#,
            r#"{"host":"b","service":"load","metric":2}"#,
            r#"{"host":"c","service":"disk","metric":3,"region":"eu"}"#,
            r#"{"host":"d"}"#,
        ];
        let starts_with_d = func("startswith_d", |args| {
            Ok(Value::Bool(
                matches!(&args[0], Value::Str(s) if s.starts_with('d')),
            ))
        });
        let service_of = func("service_of", |args| match &args[0] {
            Value::Event(e) => Ok(crate::streams::value::field(e, "service")),
            _ => unreachable!(),
        });
        let cases: Vec<(Vec<Value>, &[&str])> = vec![
            (vals!["service", "cpu"], &["a"]),
            (vals!["metric", 2], &["b"]),
            (vals!["metric", 3.0], &["c"]),
            (
                vec!["service".into(), Value::List(vals!["cpu", "disk"])],
                &["a", "c"],
            ),
            (vec!["service".into(), starts_with_d.clone()], &["c"]),
            (vec!["service".into(), Value::None], &["d"]),
            (vals!["region", "eu"], &["c"]),
            (vec![service_of, "load".into()], &["b"]),
            (
                vec![
                    "service".into(),
                    Value::List(vec!["load".into(), starts_with_d]),
                ],
                &["b", "c"],
            ),
        ];
        assert_matches_pass(&events, cases);
    }

    /// Riemann's match-test, "Maps": `(match identity {:state #"^mi",
    /// :host "other"})`; and a dict against a dict-valued field.
    #[test]
    fn match_with_a_dict_matches_each_key_of_the_value() {
        let events = [
            r#"{"host":"a"}"#,
            r#"{"host":"b","state":"migas"}"#,
            r#"{"host":"other","state":"migas","region":"eu"}"#,
        ];
        let identity = func("identity", |args| Ok(args[0].clone()));
        let starts_mi = func("starts_mi", |args| {
            Ok(Value::Bool(
                matches!(&args[0], Value::Str(s) if s.starts_with("mi")),
            ))
        });
        let pattern = |pairs: Vec<(&str, Value)>| {
            Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };
        let cases: Vec<(Vec<Value>, &[&str])> = vec![
            (
                vec![
                    identity.clone(),
                    pattern(vec![("state", starts_mi), ("host", "other".into())]),
                ],
                &["other"],
            ),
            (
                vec![identity.clone(), pattern(vec![("state", Value::None)])],
                &["a"],
            ),
            (
                vec![
                    identity,
                    pattern(vec![("host", Value::List(vals!["a", "b"]))]),
                ],
                &["a", "b"],
            ),
            (
                vec!["attributes".into(), pattern(vec![("region", "eu".into())])],
                &["other"],
            ),
            (
                vec!["host".into(), pattern(vec![("x", Value::None)])],
                &["a", "b", "other"],
            ),
        ];
        assert_matches_pass(&events, cases);
    }

    #[test]
    fn a_failing_match_function_counts_an_error_on_the_node() {
        let h = Harness::new();
        let out = h.sink("out");
        let boom = func("boom", |_| Err(NodeError("boom".into())));
        let node = h.build("match", vec!["host".into(), boom], vec![], vec![out.node()]);
        h.send(&node, ev(r#"{"host":"a"}"#));
        assert!(out.hosts().is_empty());
        assert_eq!(node.stats().errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn native_filters_describe_their_arguments() {
        let h = Harness::new();
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("over", vals![0.9], "over(0.9)"),
            ("under", vals![5], "under(5)"),
            ("within", vals![1, 2.5], "within(1, 2.5)"),
            ("without", vals![0, 100], "without(0, 100)"),
            ("tagged", vals!["a", "b"], r#"tagged("a", "b")"#),
            (
                "tagged_any",
                vec![Value::List(vals!["x"])],
                r#"tagged_any("x")"#,
            ),
            ("expired", vec![], "expired"),
            ("not_expired", vec![], "not_expired"),
            (
                "match",
                vec!["service".into(), Value::List(vals!["a", 1])],
                r#"match("service", ["a", 1])"#,
            ),
        ];
        for (name, args, want) in cases {
            assert_eq!(h.build(name, args, vec![], vec![]).describe(), want);
        }
    }

    #[test]
    fn native_filters_reject_bad_arguments_clearly() {
        let h = Harness::new();
        let cases: Vec<(&str, Vec<Value>, &str, bool)> = vec![
            (
                "tagged",
                vec![],
                "tagged(*tags_and_children): needs at least one of `tags` (a str)",
                false,
            ),
            (
                "tagged_any",
                vals!["a", 1],
                "tagged_any(*tags_and_children): `tags` must be str, not 1 (int)",
                true,
            ),
            (
                "within",
                vals![5, 1],
                "within(low, high, *children): `low` must not be greater than `high`, not 5 > 1",
                false,
            ),
            (
                "over",
                vals!["x"],
                "over(x, *children): `x` must be a number, not \"x\" (str)",
                true,
            ),
            (
                "match",
                vals!["host"],
                "match(field, value, *children): missing argument `value`",
                false,
            ),
            (
                "match",
                vals![1, 1],
                "match(field, value, *children): `field` must be a field name (str) or a function of the event, not int",
                true,
            ),
            (
                "expired",
                vals![60],
                "expired(*children): unexpected argument 60 (int); child streams come last, and must be streams (like printer())",
                true,
            ),
        ];
        for (name, args, message, wrong_type) in cases {
            let err = h.try_build(name, args, vec![], vec![]).err().unwrap();
            assert_eq!(err.message, message);
            assert_eq!(err.wrong_type, wrong_type, "{message}");
        }
    }

    #[test]
    fn predicate_is_send_and_sync() {
        use super::Predicate;
        fn boxed(p: Box<dyn Predicate>) -> String {
            p.describe()
        }
        assert_eq!(
            boxed(Box::new(crate::query::Query::parse("true").unwrap())),
            "\"true\""
        );
    }
}
