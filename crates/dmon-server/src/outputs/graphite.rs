//! `graphite(host, port=2003, path=None)`: each event's metric to carbon,
//! through [`crate::sinks::graphite`]; its catalog entry, arguments and
//! what it queues.

use std::sync::Arc;

use super::{host, port};
use super::{SinkNode, SinkOutput};
use crate::event::Event;
use crate::sinks::graphite::{self, GraphitePath, GraphiteSink, Point};
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError, Value};
use crate::streams::{quote, NodeRef};

pub const ENTRY: Entry = Entry {
    name: "graphite",
    params: "host, port=2003, path=None",
    summary: "Send each event's metric to carbon, one plaintext `path value time` line per event.",
    details: "The path is Riemann's: the host's dot-separated parts reversed, then the service with spaces as dots and a trailing decimal like `0.95` as `95` (`web1.example.com` and `api latency 0.95` make `com.example.web1.api.latency.95`). A `path` template replaces it: `{host}`, `{host_reversed}`, `{service}` (made as above), or any other field or attribute in braces, e.g. `\"servers.{host}.{service}\"`. In fields, whitespace, control characters and `/` become `_`. The time is the event's, in whole seconds; events without a metric are skipped. Queued, batched and retried as `forward` does.",
    example: r#"graphite("carbon.example.com", 2003)"#,
    build: build_graphite,
};

fn build_graphite(mut args: Args) -> Result<NodeRef, BuildError> {
    let host = host(&mut args)?;
    let port = port(&mut args, graphite::DEFAULT_PORT)?;
    let template = match args.opt("path") {
        None | Some(Value::None) => None,
        Some(Value::Str(t)) => Some(t),
        Some(v) => {
            return Err(args.type_error(format_args!("`path` must be a str, not {}", v.type_name())))
        }
    };
    let path = GraphitePath::interned(template.as_deref()).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(SinkNode::node(Graphite {
        host,
        port,
        custom_path: template.is_some(),
        path,
    }))
}

/// `graphite(host, port=2003, path=None)`: each event with a metric, to the
/// carbon at `host:port`.
pub struct Graphite {
    host: String,
    port: u16,
    path: &'static GraphitePath,
    custom_path: bool,
}

impl SinkOutput for Graphite {
    const KIND: &'static str = "graphite";
    type Sink = GraphiteSink;

    fn describe(&self) -> String {
        let mut d = format!("graphite({}, {}", quote(&self.host), self.port);
        if self.custom_path {
            d.push_str(&format!(", path={}", quote(self.path.template())));
        }
        d.push(')');
        d
    }
    fn sink(&self) -> GraphiteSink {
        GraphiteSink::new(&self.host, self.port)
    }
    fn item(&self, _: &Context, event: &Arc<Event>) -> Option<Point> {
        // As Riemann: a point needs a value. Only queued here: the worker
        // makes the line, off the event path.
        event
            .metric
            .is_some()
            .then(|| (Arc::clone(event), self.path))
    }
}
