//! The output family of stream functions: they end a branch by showing,
//! keeping or sending events. `printer` and `index` are the core's
//! ([`crate::streams::printer`], [`crate::streams::index`]); those that
//! send out of the process are here, each sending through the server's
//! sinks ([`crate::sinks`]), which the core does not know.
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
//! instead. Those that send through a [`SinkNode`] are each one file in
//! `outputs/` (its entry, arguments and what it queues) and one line in
//! [`ENTRIES`]; so is `email` (feature `mail`), which sends through the
//! mailer rather than a sink.

use std::sync::{Arc, OnceLock};

#[cfg(feature = "mail")]
mod email;
mod forward;
mod graphite;
mod influxdb;
mod webhook;

use crate::event::Event;
use crate::node_core;
use crate::sinks::senders::Senders;
use crate::sinks::{Sink, SinkHandle};
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError, Value};
use crate::streams::{Node, NodeCore, NodeError, NodeRef};

pub const ENTRIES: &[Entry] = &[
    crate::streams::printer::ENTRY,
    crate::streams::index::ENTRY,
    #[cfg(feature = "mail")]
    email::ENTRY,
    forward::ENTRY,
    graphite::ENTRY,
    influxdb::ENTRY,
    webhook::ENTRY,
];

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
        let handle = Senders::of(ctx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rehearsal::Rehearsal;
    use crate::testing::{ev, Harness};
    use crate::vals;

    #[test]
    fn forward_and_graphite_check_their_arguments() {
        let h = harness();
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

    /// A harness building from the whole catalog, outputs included.
    fn harness() -> Harness {
        Harness::new().with_catalog(crate::catalog::find)
    }

    fn root(node: NodeRef) -> Vec<crate::roots::Root> {
        vec![crate::roots::Root {
            name: "stream".into(),
            node,
        }]
    }

    struct Discard;
    impl crate::console::LineSink for Discard {
        fn write_line(&self, _: &str) {}
    }

    #[test]
    fn outputs_are_captured_in_order_and_mail_is_not_sent() {
        let h = harness();
        let printer = h.build("printer", vals!["p: "], vec![], vec![]);
        let email = h.build("email", vals!["ops@example.com"], vec![], vec![]);
        let tree = h.build("sdo", vec![], vec![], vec![printer, email]);
        let mut r = Rehearsal::new(root(tree), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","time":1}"#));
        r.feed(ev(r#"{"host":"b","time":2}"#));
        let outputs = r.take_outputs();
        let seen: Vec<(&str, Option<&str>)> = outputs
            .iter()
            .map(|o| (o.kind, o.events[0].host.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("printer", Some("a")),
                ("email", Some("a")),
                ("printer", Some("b")),
                ("email", Some("b"))
            ]
        );
        assert_eq!(
            r.counts(),
            [
                (r#"printer("p: ")"#.to_owned(), 2),
                (r#"email("ops@example.com")"#.to_owned(), 2)
            ]
        );
        // Nothing tried to send: a rehearsal has nothing to send with, and
        // an output node that tried would have failed, counted.
        let errors: u64 = r.root_set().node_snapshots().iter().map(|n| n.errors).sum();
        assert_eq!(errors, 0);
    }

    #[test]
    fn forward_and_graphite_are_captured_and_start_no_sink() {
        let h = harness();
        // Port 1: nothing listens, and nothing may try.
        let forward = h.build("forward", vals!["127.0.0.1", 1], vec![], vec![]);
        let graphite = h.build("graphite", vals!["127.0.0.1", 1], vec![], vec![]);
        let tree = h.build("sdo", vec![], vec![], vec![forward, graphite]);
        let mut r = Rehearsal::new(root(tree), 0.0, Arc::new(Discard));
        r.feed(ev(r#"{"host":"a","metric":1,"time":1}"#));
        let kinds: Vec<&str> = r.take_outputs().iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["forward", "graphite"]);
        let errors: u64 = r.root_set().node_snapshots().iter().map(|n| n.errors).sum();
        assert_eq!(errors, 0, "an output node tried to send");
    }
}
