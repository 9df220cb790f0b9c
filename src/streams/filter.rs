//! Filters: nodes that forward only some events.

use std::sync::Arc;

use super::{emit, Node, NodeError, NodeRef, NodeStats};
use crate::context::Context;
use crate::event::Event;

/// A test on one event. Native predicates (queries) and Python callables
/// both implement it.
pub trait Predicate: Send + Sync {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError>;
    fn describe(&self) -> String;
}

/// `when(pred, *children)`: forwards the events for which `pred` is true.
///
/// ```python
/// when(lambda e: e.state == "warning", email("ops@example.com"))
/// ```
pub struct When {
    kind: &'static str,
    predicate: Box<dyn Predicate>,
    children: Vec<NodeRef>,
    stats: NodeStats,
}

impl When {
    pub fn new(predicate: Box<dyn Predicate>, children: Vec<NodeRef>) -> Self {
        Self::named("when", predicate, children)
    }

    /// The same filter under another stream name: `where` takes a query.
    ///
    /// ```python
    /// where('service =~ "cpu%" and metric > 0.9', printer("hot: "))
    /// ```
    pub fn named(
        kind: &'static str,
        predicate: Box<dyn Predicate>,
        children: Vec<NodeRef>,
    ) -> Self {
        When {
            kind,
            predicate,
            children,
            stats: NodeStats::default(),
        }
    }
}

impl Node for When {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn describe(&self) -> String {
        format!("{}({})", self.kind, self.predicate.describe())
    }
    fn children(&self) -> &[NodeRef] {
        &self.children
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if self.predicate.test(event)? {
            emit(self, ctx, event);
        }
        Ok(())
    }
}
