//! `forward(host, port=5555, tls_ca=None, tls_cert=None, tls_key=None)`:
//! each event to another dmon or a Riemann server, through
//! [`crate::sinks::forward`]; its catalog entry, arguments and what it
//! queues.

use std::sync::Arc;

use super::{host, opt_string, port};
use super::{SinkNode, SinkOutput};
use crate::event::Event;
use crate::sinks::forward::{self, ForwardSink};
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError};
use crate::streams::{quote, NodeRef};
use crate::tls::{ClientTls, Identity, PemFile};

pub const ENTRY: Entry = Entry {
    name: "forward",
    params: "host, port=5555, tls_ca=None, tls_cert=None, tls_key=None",
    summary: "Send each event to another dmon or a Riemann server, over Riemann's protocol on TCP, in acknowledged batches.",
    details: "Events wait in a queue (10,000 at most: beyond that they are dropped, counted and logged) and go in messages of up to 500, each acknowledged before the next. A receiver that is down or does not answer is retried with backoff (0.1 s doubling to 5 s) on a new connection, so everything that fit the queue arrives, at least once. Every node sending to the same host and port shares one queue and one connection, across `by` forks and reloads; their counters are the `sinks` of `stats()` and show on the node in `streams()`. With `tls_ca` (a PEM file of CA certificates) the connection is TLS and the receiver's certificate must be signed by one of them and carry `host`; `tls_cert` and `tls_key` add a client certificate, for a receiver that requires one (`--tls-client-ca`). The files are read when the module loads: one that cannot be used is an error then. A failed handshake is retried as a receiver that is down is. The sink's target is then `tls://host:port` (nodes sharing it use the first one's files). In Riemann these are the `:tls? true`, `:ca-cert`, `:cert` and `:key` of the `tcp-client` given to `forward`.",
    example: r#"forward("riemann.example.com", 5555)"#,
    build: build_forward,
};

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
