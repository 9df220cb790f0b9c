//! `index()`: the node that keeps the latest event per host and service.

use std::sync::Arc;

use super::entry::Entry;
use super::value::{Args, BuildError};
use super::{Node, NodeCore, NodeError, NodeRef};
use crate::event::Event;
use crate::node_core;
use crate::streams::context::Context;

pub const ENTRY: Entry = Entry {
    name: "index",
    params: "",
    summary: "Keep the latest event per (host, service) until `time + ttl`; expired events come back into every root with state \"expired\".",
    details: "The index is the server's: every `index()` node shares it, and it survives reloads. Expiry follows the server's clock, checked every second.",
    example: "index_stream = index()",
    build: build_index,
};

fn build_index(args: Args) -> Result<NodeRef, BuildError> {
    args.finish()?;
    Ok(Arc::new(IndexNode::new()))
}

pub struct IndexNode {
    core: NodeCore,
}

impl Default for IndexNode {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexNode {
    pub fn new() -> Self {
        IndexNode {
            core: NodeCore::new(Vec::new()),
        }
    }
}

impl Node for IndexNode {
    node_core!("index");

    fn describe(&self) -> String {
        "index()".into()
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(IndexNode {
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, std::slice::from_ref(event));
        }
        ctx.index.insert(event);
        Ok(())
    }
}
