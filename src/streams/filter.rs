//! Filters: nodes that forward only some events.
//!
//! | function | example |
//! |---|---|
//! | `when(pred, *children)` | `when(lambda e: e.state == "warning", email("ops@example.com"))` |
//! | `where(test, *children, else_=None)` | `where('service =~ "cpu%" and metric > 0.9', printer("hot: "))` |

use std::sync::Arc;

use super::registry::Entry;
use super::value::{Args, BuildError, Function, Value};
use super::{emit_to, Node, NodeCore, NodeError, NodeRef};
use crate::context::Context;
use crate::event::Event;
use crate::query::Query;

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
];

/// A test on one event. Native predicates (queries) and user functions
/// both implement it.
pub trait Predicate: Send + Sync {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError>;
    fn describe(&self) -> String;
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
    match args.value(name)? {
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

/// `when` and `where`: forwards the events that pass to the children, the
/// others to the `else_` child if there is one.
pub struct When {
    kind: &'static str,
    predicate: Arc<dyn Predicate>,
    /// How many of the children take passing events; an `else_` child
    /// comes after them.
    then: usize,
    core: NodeCore,
}

impl When {
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
        format!("{}({}{otherwise})", self.kind, self.predicate.describe())
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
        Arc::new(When {
            kind: self.kind,
            predicate: Arc::clone(&self.predicate),
            then: self.then,
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let (then, otherwise) = self.core.children.split_at(self.then);
        let targets = if self.predicate.test(event)? {
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
    use crate::testing::{ev, Harness};
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
}
