//! Outputs as stream nodes: they end a branch by showing, keeping or sending
//! events.
//!
//! | function | example |
//! |---|---|
//! | `printer(prefix="")` | `printer("high average: ")` |
//! | `index()` | `index_stream = index()` |
//! | `email(*to, subject=None, sender=None)` | `email("ops@example.com")` |
//! | `forward(host, port=5555, tls_ca=None, tls_cert=None, tls_key=None)` | `forward("riemann.example.com")` |
//! | `graphite(host, port=2003, path=None)` | `graphite("carbon.example.com")` |
//! | `influxdb(url, db, measurement=None, tags=None, precision="s", username=None, password=None)` | `influxdb("http://influx:8086", "metrics")` |
//! | `webhook(url, template=None, batch=None, headers=None)` | `webhook("https://hooks.example.com/x")` |
//!
//! `email`, `forward`, `graphite`, `influxdb` and `webhook` hand what they send to a sink (see
//! [`crate::sinks`]) without waiting; in a rehearsal they are captured
//! instead.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use lettre::message::Mailbox;

use super::entry::Entry;
use super::value::{Args, BuildError, Value};
use super::{quote, Node, NodeCore, NodeError, NodeRef};
use crate::codec::json;
use crate::event::Event;
use crate::node_core;
use crate::sinks::email::{parse_mailbox, FailureHook, Mail, DEFAULT_SENDER};
use crate::sinks::forward::{self, ForwardSink};
use crate::sinks::graphite::{self, GraphitePath, GraphiteSink, Point};
use crate::sinks::influxdb::{self, InfluxSink, Points, Precision};
use crate::sinks::outputs::Outputs;
use crate::sinks::webhook::{self, Template, WebhookSink};
use crate::sinks::{Encoded, Sink, SinkHandle};
use crate::streams::context::Context;
use crate::tls::{ClientTls, Identity, PemFile};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "printer",
        params: "prefix=''",
        summary: "Print `prefix` and the event as one line of JSON.",
        details: "",
        example: r#"printer("high average: ")"#,
        build: build_printer,
    },
    super::index::ENTRY,
    Entry {
        name: "email",
        params: "*to, subject=None, sender=None",
        summary: "Mail each event (or each list of events, as one mail) through the SMTP server given by --smtp.",
        details: "The subject defaults to \"host service state\" (cut to 200 characters); the body lists every field, one per line, control characters escaped. Mail is queued and sent by a worker; a failure counts as an error of this node.",
        example: r#"email("ops@example.com")"#,
        build: build_email,
    },
    Entry {
        name: "forward",
        params: "host, port=5555, tls_ca=None, tls_cert=None, tls_key=None",
        summary: "Send each event to another dmon or a Riemann server, over Riemann's protocol on TCP, in acknowledged batches.",
        details: "Events wait in a queue (10,000 at most: beyond that they are dropped, counted and logged) and go in messages of up to 500, each acknowledged before the next. A receiver that is down or does not answer is retried with backoff (0.1 s doubling to 5 s) on a new connection, so everything that fit the queue arrives, at least once. Every node sending to the same host and port shares one queue and one connection, across `by` forks and reloads; their counters are the `sinks` of `stats()` and show on the node in `streams()`. With `tls_ca` (a PEM file of CA certificates) the connection is TLS and the receiver's certificate must be signed by one of them and carry `host`; `tls_cert` and `tls_key` add a client certificate, for a receiver that requires one (`--tls-client-ca`). The files are read when the module loads: one that cannot be used is an error then. A failed handshake is retried as a receiver that is down is. The sink's target is then `tls://host:port` (nodes sharing it use the first one's files). In Riemann these are the `:tls? true`, `:ca-cert`, `:cert` and `:key` of the `tcp-client` given to `forward`.",
        example: r#"forward("riemann.example.com", 5555)"#,
        build: build_forward,
    },
    Entry {
        name: "graphite",
        params: "host, port=2003, path=None",
        summary: "Send each event's metric to carbon, one plaintext `path value time` line per event.",
        details: "The path is Riemann's: the host's dot-separated parts reversed, then the service with spaces as dots and a trailing decimal like `0.95` as `95` (`web1.example.com` and `api latency 0.95` make `com.example.web1.api.latency.95`). A `path` template replaces it: `{host}`, `{host_reversed}`, `{service}` (made as above), or any other field or attribute in braces, e.g. `\"servers.{host}.{service}\"`. In fields, whitespace, control characters and `/` become `_`. The time is the event's, in whole seconds; events without a metric are skipped. Queued, batched and retried as `forward` does.",
        example: r#"graphite("carbon.example.com", 2003)"#,
        build: build_graphite,
    },
    Entry {
        name: "influxdb",
        params: "url, db, measurement=None, tags=None, precision='s', username=None, password=None",
        summary: "Write each event with a metric to InfluxDB 1.x as a point, in its line protocol over HTTP, in batches.",
        details: "As Riemann's influxdb: the measurement is the service unless `measurement` names one; the tags are the event's `host`, `service` and `state` unless `tags` lists others (fields or attributes; empty ones are left out); the fields are `value`, the metric (always a float), plus `state`, `description` and attributes not taken as tags, as strings. The time is the event's, in `precision` (\"s\", \"ms\", \"us\" or \"ns\"; seconds truncated). Events without a metric or a measurement are skipped. Commas, spaces and `=` in names are escaped; backslashes and control characters there become `_`. Points wait in a queue (10,000 at most) and go up to 1,000 per `POST {url}/write?db=...`; a server that is down or answers 5xx (or 404: a database not created yet) is retried with backoff (0.1 s doubling to 5 s); another 4xx gives the batch up, counted as failed. Nodes writing to the same URL, database and precision share one queue (and the first one's credentials). For a server with `auth-enabled`, `username` and `password` go as HTTP basic authentication; without `password` it is taken from $DMON_INFLUXDB_PASSWORD when the module loads, so it need not be written in it; it is never shown (`streams()` shows the username only). Wrong credentials are a 401: the batch is given up, counted as failed, and logged.",
        example: r#"influxdb("http://influx.example.com:8086", "metrics")"#,
        build: build_influxdb,
    },
    Entry {
        name: "webhook",
        params: "url, template=None, batch=None, headers=None",
        summary: "POST each event to an HTTP endpoint as JSON, or up to `batch` events as one JSON array, or a body made from `template`.",
        details: "A `template` is JSON with placeholders: `{host}`, `{service}`, `{state}`, `{description}`, `{tags}` (joined by \", \") and attributes by name are put in JSON-escaped, to sit inside a JSON string; `{metric}`, `{time}` and `{ttl}` are numbers (null when absent), e.g. `'{\"text\": \"{host} {service} is {state}\"}'`. Only letters, digits and `_` between braces make a placeholder, so JSON's own braces stand; a template that does not make JSON is refused. `headers` is a dict of extra request headers (Content-Type is application/json). A 2xx answer is success; 5xx, 408, 429 or no answer are retried with backoff (0.1 s doubling to 5 s) on a new connection; another 4xx gives the request up, counted as failed. Requests wait in a queue (1,000 at most; beyond that events are dropped, counted and logged).",
        example: r#"webhook("https://hooks.example.com/alerts", batch=50)"#,
        build: build_webhook,
    },
];

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

fn build_email(mut args: Args) -> Result<NodeRef, BuildError> {
    let subject = match args.keyword("subject") {
        None | Some(Value::None) => None,
        Some(Value::Str(s)) => Some(s),
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`subject` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    let sender = match args.keyword("sender") {
        None | Some(Value::None) => None,
        Some(Value::Str(s)) => Some(s),
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`sender` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    let to = args.strings("to")?;
    let email = Email::new(&to, subject, sender.as_deref()).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(Arc::new(email))
}

/// The target host: a non-empty str.
fn host(args: &mut Args) -> Result<String, BuildError> {
    let host = args.string("host")?;
    if host.trim().is_empty() {
        return Err(args.error("`host` must not be empty"));
    }
    Ok(host)
}

fn port(args: &mut Args, default: u16) -> Result<u16, BuildError> {
    match args.opt("port") {
        None | Some(Value::None) => Ok(default),
        Some(Value::Int(p)) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| args.error(format_args!("`port` must be 1 to 65535, not {p}"))),
        Some(v) => {
            Err(args.type_error(format_args!("`port` must be an int, not {}", v.type_name())))
        }
    }
}

fn build_forward(mut args: Args) -> Result<NodeRef, BuildError> {
    let host = host(&mut args)?;
    let port = port(&mut args, forward::DEFAULT_PORT)?;
    let files = TlsFiles {
        ca: opt_string(&mut args, "tls_ca")?,
        cert: opt_string(&mut args, "tls_cert")?,
        key: opt_string(&mut args, "tls_key")?,
    };
    // Read now, so a file that cannot be used stops the module loading
    // rather than showing as failures at the first event.
    let tls = files.load(&host).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(SinkNode::node(Forward {
        host,
        port,
        files,
        tls,
    }))
}

/// `forward`'s `tls_ca`, `tls_cert` and `tls_key`, as given.
struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsFiles {
    /// The client TLS for `host`, if `tls_ca` is given.
    fn load(&self, host: &str) -> Result<Option<ClientTls>, String> {
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Identity {
                cert: PemFile::new("tls_cert", cert),
                key: PemFile::new("tls_key", key),
            }),
            (None, None) => None,
            _ => return Err("`tls_cert` and `tls_key` go together".into()),
        };
        let Some(ca) = &self.ca else {
            return match identity {
                Some(_) => Err("`tls_cert` needs `tls_ca`: a client certificate is for TLS".into()),
                None => Ok(None),
            };
        };
        ClientTls::for_host(&PemFile::new("tls_ca", ca), identity.as_ref(), host)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// `, tls_ca="..."` and the rest, for `describe`.
    fn describe(&self) -> String {
        [
            ("tls_ca", &self.ca),
            ("tls_cert", &self.cert),
            ("tls_key", &self.key),
        ]
        .iter()
        .filter_map(|(name, v)| Some(format!(", {name}={}", quote(v.as_deref()?))))
        .collect()
    }
}

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

/// An optional str argument.
fn opt_string(args: &mut Args, name: &str) -> Result<Option<String>, BuildError> {
    match args.opt(name) {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(v) => Err(args.type_error(format_args!(
            "`{name}` must be a str, not {}",
            v.type_name()
        ))),
    }
}

/// An http:// or https:// URL.
fn url(args: &mut Args) -> Result<String, BuildError> {
    let url = args.string("url")?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        return Err(args.error(format_args!(
            "`url` must be an http:// or https:// URL, not {url:?}"
        )));
    }
    Ok(url)
}

fn build_influxdb(mut args: Args) -> Result<NodeRef, BuildError> {
    let url = url(&mut args)?;
    let db = args.string("db")?;
    if db.is_empty() {
        return Err(args.error("`db` must not be empty"));
    }
    let measurement = opt_string(&mut args, "measurement")?;
    let tags = match args.opt("tags") {
        None | Some(Value::None) => influxdb::DEFAULT_TAGS.map(String::from).to_vec(),
        Some(Value::Str(s)) => vec![s],
        Some(Value::List(items)) => {
            let mut tags = Vec::new();
            for v in items {
                match v {
                    Value::Str(s) => tags.push(s),
                    v => {
                        return Err(args.type_error(format_args!(
                            "`tags` must hold str, not {}",
                            v.type_name()
                        )))
                    }
                }
            }
            tags
        }
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`tags` must be a list of str, not {}",
                v.type_name()
            )))
        }
    };
    let precision = match opt_string(&mut args, "precision")? {
        None => Precision::S,
        Some(p) => Precision::parse(&p).map_err(|e| args.error(e))?,
    };
    let points = Points::new(measurement, &tags, precision).map_err(|e| args.error(e))?;
    let username = opt_string(&mut args, "username")?;
    let password = opt_string(&mut args, "password")?;
    let credentials = influx_credentials(username, password).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(SinkNode::node(Influx {
        url,
        db,
        points,
        credentials,
    }))
}

/// Where `influxdb`'s password is taken from when the module does not
/// give one, so it need not be written there.
pub const INFLUXDB_PASSWORD_ENV: &str = "DMON_INFLUXDB_PASSWORD";

/// `username` with `password`, else with [`INFLUXDB_PASSWORD_ENV`].
fn influx_credentials(
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<influxdb::Credentials>, String> {
    let Some(username) = username else {
        return match password {
            Some(_) => Err("`password` needs a `username`".into()),
            None => Ok(None),
        };
    };
    let password = match password {
        Some(p) => p,
        None => std::env::var(INFLUXDB_PASSWORD_ENV).map_err(|_| {
            format!("`username` needs a password: `password=` or ${INFLUXDB_PASSWORD_ENV}")
        })?,
    };
    Ok(Some(influxdb::Credentials { username, password }))
}

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

/// What an output node that sends through a sink is made of: where it
/// sends and what it queues for an event. [`SinkNode`] is the node itself,
/// written once for every such output.
pub trait SinkOutput: Send + Sync + 'static {
    /// The Python name: `forward`, `graphite`, ….
    const KIND: &'static str;
    type Sink: Sink;
    fn describe(&self) -> String;
    /// The sink for this target, started by the first node sending there.
    fn sink(&self) -> Self::Sink;
    /// What goes into the sink's queue for `event`; `None` skips it (a
    /// graphite or InfluxDB point needs a metric).
    fn item(&self, ctx: &Context, event: &Arc<Event>) -> Option<<Self::Sink as Sink>::Item>;
}

/// An output node handing events to a sink without waiting: captured
/// instead in a rehearsal; its sink found (or started) in the context's
/// sinks on its first event, then kept, so forks and reloaded copies find
/// the same one.
pub struct SinkNode<O: SinkOutput> {
    output: Arc<O>,
    sink: OnceLock<Arc<SinkHandle<<O::Sink as Sink>::Item>>>,
    core: NodeCore,
}

impl<O: SinkOutput> SinkNode<O> {
    pub fn node(output: O) -> NodeRef {
        Arc::new(SinkNode {
            output: Arc::new(output),
            sink: OnceLock::new(),
            core: NodeCore::new(Vec::new()),
        })
    }

    fn sink(&self, ctx: &Context) -> Result<&Arc<SinkHandle<<O::Sink as Sink>::Item>>, NodeError> {
        if let Some(handle) = self.sink.get() {
            return Ok(handle);
        }
        let handle = Outputs::of(ctx)
            .and_then(|outputs| outputs.sinks.get_or_start(self.output.sink()))
            .ok_or_else(|| NodeError("nothing is sent from here: sinks are off".into()))?;
        Ok(self.sink.get_or_init(|| handle))
    }
}

impl<O: SinkOutput> Node for SinkNode<O> {
    fn kind(&self) -> &'static str {
        O::KIND
    }
    node_core!();

    fn describe(&self) -> String {
        self.output.describe()
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(SinkNode {
            output: Arc::clone(&self.output),
            sink: OnceLock::new(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, std::slice::from_ref(event));
            return Ok(());
        }
        if let Some(item) = self.output.item(ctx, event) {
            self.sink(ctx)?.offer_or_log(item);
        }
        Ok(())
    }
    /// The sink's target and counters, for `streams()`.
    fn detail(&self) -> Option<String> {
        let s = self.sink.get()?.snapshot();
        Some(format!("{}: {}", s.target, s.counts()))
    }
}

/// `forward(host, port=5555, tls_ca=None, ...)`: each event, to the
/// Riemann server at `host:port`, over TLS with `tls_ca`.
pub struct Forward {
    host: String,
    port: u16,
    files: TlsFiles,
    tls: Option<ClientTls>,
}

impl SinkOutput for Forward {
    const KIND: &'static str = "forward";
    type Sink = ForwardSink;

    fn describe(&self) -> String {
        format!(
            "forward({}, {}{})",
            quote(&self.host),
            self.port,
            self.files.describe()
        )
    }
    fn sink(&self) -> ForwardSink {
        ForwardSink::new(&self.host, self.port, self.tls.clone())
    }
    fn item(&self, _: &Context, event: &Arc<Event>) -> Option<Arc<Event>> {
        Some(Arc::clone(event))
    }
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

/// `influxdb(url, db, ...)`: a point for each event with a metric.
pub struct Influx {
    url: String,
    db: String,
    points: Points,
    credentials: Option<influxdb::Credentials>,
}

impl SinkOutput for Influx {
    const KIND: &'static str = "influxdb";
    type Sink = InfluxSink;

    fn describe(&self) -> String {
        // The password is left out: `streams()` shows this.
        let user = match &self.credentials {
            Some(c) => format!(", username={}", quote(&c.username)),
            None => String::new(),
        };
        format!("influxdb({}, {}{user})", quote(&self.url), quote(&self.db))
    }
    fn sink(&self) -> InfluxSink {
        InfluxSink::new(
            &self.url,
            &self.db,
            self.points.precision,
            self.credentials.as_ref(),
        )
    }
    fn item(&self, ctx: &Context, event: &Arc<Event>) -> Option<influxdb::Point> {
        // The line is made here: nodes with other measurements or tags may
        // share the sink (one per URL and database).
        let line = Encoded::with(|buf| {
            self.points.push_line(buf, event, || ctx.now());
        });
        (!line.is_empty()).then_some(line)
    }
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

/// `email(*to, subject=None, sender=None)`: mails each event.
pub struct Email {
    to: Vec<Mailbox>,
    from: Mailbox,
    subject: Option<String>,
    /// A mail that fails later, on the mailer's thread, counts as an error
    /// of this node: the hook holds the counters.
    core: NodeCore,
}

impl Email {
    /// Fails on an address that is not one, so mistakes surface at start-up.
    pub fn new(
        to: &[String],
        subject: Option<String>,
        sender: Option<&str>,
    ) -> Result<Self, String> {
        if to.is_empty() {
            return Err("email() needs at least one recipient".into());
        }
        Ok(Email {
            to: to
                .iter()
                .map(|a| parse_mailbox(a))
                .collect::<Result<_, _>>()?,
            from: parse_mailbox(sender.unwrap_or(DEFAULT_SENDER))?,
            subject,
            core: NodeCore::new(Vec::new()),
        })
    }

    fn send(&self, ctx: &Context, mail: Mail, events: &[Arc<Event>]) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, events);
            return Ok(());
        }
        let stats = Arc::clone(&self.core.stats);
        let mail = Mail {
            on_failure: Some(FailureHook(Arc::new(move || {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }))),
            ..mail
        };
        let outputs = Outputs::of(ctx)
            .ok_or_else(|| NodeError("no mail is sent from here: there is no mailer".into()))?;
        outputs.mailer.enqueue(mail).map_err(NodeError)
    }
}

impl Node for Email {
    node_core!("email");

    fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| quote(&m.to_string())).collect();
        format!("email({})", to.join(", "))
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Email {
            to: self.to.clone(),
            from: self.from.clone(),
            subject: self.subject.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mail = Mail::for_event(event, &self.from, &self.to, self.subject.as_deref());
        self.send(ctx, mail, std::slice::from_ref(event))
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        let events: Vec<Arc<Event>> = super::present(events).cloned().collect();
        if events.is_empty() {
            return Ok(());
        }
        let mail = Mail::for_events(&events, &self.from, &self.to, self.subject.as_deref());
        self.send(ctx, mail, &events)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;
    use crate::vals;

    #[test]
    fn forward_and_graphite_check_their_arguments() {
        let h = Harness::new();
        let describe = |name, args, named| h.build(name, args, named, vec![]).describe();
        assert_eq!(
            describe("forward", vals!["riemann.example.com"], vec![]),
            r#"forward("riemann.example.com", 5555)"#
        );
        assert_eq!(
            describe("graphite", vals!["carbon", 2004], vec![]),
            r#"graphite("carbon", 2004)"#
        );
        let path = vec![("path".to_owned(), "servers.{host}.{service}".into())];
        assert_eq!(
            describe("graphite", vals!["carbon"], path),
            r#"graphite("carbon", 2003, path="servers.{host}.{service}")"#
        );
        let refused = |name, args, named| {
            h.try_build(name, args, named, vec![])
                .err()
                .unwrap_or_else(|| panic!("{name} built"))
                .message
        };
        assert!(refused("forward", vals![""], vec![]).contains("`host` must not be empty"));
        assert!(refused("forward", vals!["h", 70000], vec![]).contains("1 to 65535"));
        assert!(refused("forward", vals!["h", "x"], vec![]).contains("must be an int"));
        let bad_path = vec![("path".to_owned(), "a b.{host}".into())];
        assert!(refused("graphite", vals!["h"], bad_path).contains("whitespace"));

        let named = |pairs: &[(&str, &str)]| -> Vec<(String, crate::streams::value::Value)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).into()))
                .collect()
        };
        let cert_only = named(&[("tls_cert", "c.pem")]);
        assert!(refused("forward", vals!["h"], cert_only).contains("go together"));
        let no_ca = named(&[("tls_cert", "c.pem"), ("tls_key", "k.pem")]);
        assert!(refused("forward", vals!["h"], no_ca).contains("`tls_cert` needs `tls_ca`"));
        let missing_ca = named(&[("tls_ca", "/nonexistent/ca.pem")]);
        assert!(refused("forward", vals!["h"], missing_ca)
            .contains("tls_ca /nonexistent/ca.pem: No such file"));

        let db = vals!["http://influx:8086", "m"];
        let password_only = named(&[("password", "pw")]);
        assert!(refused("influxdb", db.clone(), password_only).contains("needs a `username`"));
        let both = named(&[("username", "u"), ("password", "pw")]);
        let described = describe("influxdb", db, both);
        assert_eq!(
            described,
            r#"influxdb("http://influx:8086", "m", username="u")"#
        );
    }
}
