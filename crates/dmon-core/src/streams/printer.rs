//! `printer(prefix="")`: the output that shows events, on the console.

use std::sync::Arc;

use super::entry::Entry;
use super::value::{Args, BuildError, Value};
use super::{quote, Node, NodeCore, NodeError, NodeRef};
use crate::codec::json;
use crate::event::Event;
use crate::node_core;
use crate::streams::context::Context;

pub const ENTRY: Entry = Entry {
    name: "printer",
    params: "prefix=''",
    summary: "Print `prefix` and the event as one line of JSON.",
    details: "",
    example: r#"printer("high average: ")"#,
    build: build_printer,
};

/// The outputs that stay in the process: what the core's own catalog
/// offers of the output family (the server adds those that send).
pub const ENTRIES: &[Entry] = &[ENTRY, super::index::ENTRY];

fn build_printer(mut args: Args) -> Result<NodeRef, BuildError> {
    let prefix = match args.opt("prefix") {
        None => String::new(),
        Some(Value::Str(s)) => s,
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`prefix` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    args.finish()?;
    Ok(Arc::new(Printer::new(prefix)))
}

/// `printer(prefix="")`: writes `prefix` and the event as one JSON line.
pub struct Printer {
    prefix: String,
    core: NodeCore,
}

impl Printer {
    pub fn new(prefix: impl Into<String>) -> Self {
        Printer {
            prefix: prefix.into(),
            core: NodeCore::new(Vec::new()),
        }
    }
}

impl Node for Printer {
    node_core!("printer");

    fn describe(&self) -> String {
        format!("printer({})", quote(&self.prefix))
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Printer {
            prefix: self.prefix.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, std::slice::from_ref(event));
        }
        ctx.console
            .write_line(&format!("{}{}", self.prefix, json::encode(event)));
        Ok(())
    }
}
