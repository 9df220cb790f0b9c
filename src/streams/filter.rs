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
    predicate: Box<dyn Predicate>,
    children: Vec<NodeRef>,
    stats: NodeStats,
}

impl When {
    pub fn new(predicate: Box<dyn Predicate>, children: Vec<NodeRef>) -> Self {
        When {
            predicate,
            children,
            stats: NodeStats::default(),
        }
    }
}

impl Node for When {
    fn kind(&self) -> &'static str {
        "when"
    }
    fn describe(&self) -> String {
        format!("when({})", self.predicate.describe())
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
