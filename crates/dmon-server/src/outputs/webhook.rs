//! `webhook(url, template=None, batch=None, headers=None)`: each event's
//! body to an HTTP endpoint, through [`crate::sinks::webhook`]; its
//! catalog entry, arguments and the body it encodes.

use std::sync::Arc;

use super::{opt_string, url};
use super::{SinkNode, SinkOutput};
use crate::event::Event;
use crate::sinks::webhook::{self, Template, WebhookSink};
use crate::sinks::Encoded;
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError, Value};
use crate::streams::{quote, NodeRef};

pub const ENTRY: Entry = Entry {
    name: "webhook",
    params: "url, template=None, batch=None, headers=None",
    summary: "POST each event to an HTTP endpoint as JSON, or up to `batch` events as one JSON array, or a body made from `template`.",
    details: "A `template` is JSON with placeholders: `{host}`, `{service}`, `{state}`, `{description}`, `{tags}` (joined by \", \") and attributes by name are put in JSON-escaped, to sit inside a JSON string; `{metric}`, `{time}` and `{ttl}` are numbers (null when absent), e.g. `'{\"text\": \"{host} {service} is {state}\"}'`. Only letters, digits and `_` between braces make a placeholder, so JSON's own braces stand; a template that does not make JSON is refused. `headers` is a dict of extra request headers (Content-Type is application/json). A 2xx answer is success; 5xx, 408, 429 or no answer are retried with backoff (0.1 s doubling to 5 s) on a new connection; another 4xx gives the request up, counted as failed. Requests wait in a queue (1,000 at most; beyond that events are dropped, counted and logged).",
    example: r#"webhook("https://hooks.example.com/alerts", batch=50)"#,
    build: build_webhook,
};

fn build_webhook(mut args: Args) -> Result<NodeRef, BuildError> {
    let url = url(&mut args)?;
    let template = match opt_string(&mut args, "template")? {
        Some(t) => Some(Template::parse(&t).map_err(|e| args.error(e))?),
        None => None,
    };
    let batch = match args.opt("batch") {
        None | Some(Value::None) => None,
        Some(Value::Int(n)) if (1..=100_000).contains(&n) => Some(n as usize),
        Some(Value::Int(n)) => {
            return Err(args.error(format_args!("`batch` must be 1 to 100000, not {n}")))
        }
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`batch` must be an int, not {}",
                v.type_name()
            )))
        }
    };
    if batch.is_some() && template.is_some() {
        return Err(args.error(
            "`batch` and `template` do not go together: a template makes one request's body",
        ));
    }
    let headers = match args.opt("headers") {
        None | Some(Value::None) => Vec::new(),
        Some(Value::Map(pairs)) => {
            let mut headers = Vec::new();
            for (k, v) in pairs {
                let Value::Str(v) = v else {
                    return Err(args.type_error(format_args!(
                        "header {k:?} must be a str, not {}",
                        v.type_name()
                    )));
                };
                let bad = |s: &str| s.chars().any(|c| c.is_control());
                if k.is_empty() || k.contains([':', ' ']) || bad(&k) || bad(&v) {
                    return Err(args.error(format_args!("bad header {k:?}: {v:?}")));
                }
                headers.push((k, v));
            }
            headers
        }
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`headers` must be a dict of str, not {}",
                v.type_name()
            )))
        }
    };
    args.finish()?;
    Ok(SinkNode::node(Webhook {
        url,
        template,
        batch,
        headers,
    }))
}

/// `webhook(url, ...)`: each event's body, to the endpoint.
pub struct Webhook {
    url: String,
    template: Option<Template>,
    batch: Option<usize>,
    headers: Vec<(String, String)>,
}

impl SinkOutput for Webhook {
    const KIND: &'static str = "webhook";
    type Sink = WebhookSink;

    fn describe(&self) -> String {
        let mut d = format!("webhook({}", quote(&self.url));
        if let Some(t) = &self.template {
            d.push_str(&format!(", template={}", quote(t.text())));
        }
        if let Some(n) = self.batch {
            d.push_str(&format!(", batch={n}"));
        }
        d.push(')');
        d
    }
    fn sink(&self) -> WebhookSink {
        WebhookSink::new(&self.url, &self.headers, self.batch)
    }
    fn item(&self, _: &Context, event: &Arc<Event>) -> Option<webhook::Body> {
        Some(Encoded::with(|buf| {
            webhook::push_body(buf, event, self.template.as_ref())
        }))
    }
}
