//! `index()`: the node that keeps the latest event per host and service.

use std::sync::Arc;

use super::{Node, NodeError, NodeStats};
use crate::context::Context;
use crate::event::Event;

/// `index()`: stores each event in the server's index, where it lives until
/// `time + ttl`; expired events are re-injected with state "expired".
///
/// ```python
/// index_stream = index()
/// ```
#[derive(Default)]
pub struct IndexNode {
    stats: NodeStats,
}

impl IndexNode {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Node for IndexNode {
    fn kind(&self) -> &'static str {
        "index"
    }
    fn describe(&self) -> String {
        "index()".into()
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        ctx.index.insert(event);
        Ok(())
    }
}
