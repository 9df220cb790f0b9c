//! The HTTP listener ([`crate::server::http`]: the dashboard, index queries and
//! subscriptions, `/metrics`) as one of the server's sources.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::riemann_tcp::bind_tcp;
use super::source::{BoundSource, Feed, Source, SourceKind};
use crate::server::http::token::HttpToken;
use crate::server::http::{self, Limits, Shared};
use crate::tls::ServerTls;

/// HTTP (`--http`), off by default.
pub static KIND: SourceKind = SourceKind {
    name: "http",
    label: "HTTP",
    flag: "--http",
    can_be_off: true,
    suspect: "another dmon?",
    announce: "Listening for HTTP on:",
    ready: false,
};

/// The HTTP listener, as configured.
pub struct HttpListener {
    pub addr: Option<SocketAddr>,
    pub limits: Limits,
    pub tls: Option<Arc<ServerTls>>,
    /// The token every request must carry (`--http-token-file`), if set.
    pub token: Option<Arc<HttpToken>>,
}

impl Source for HttpListener {
    fn kind(&self) -> &'static SourceKind {
        &KIND
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    fn bind(self: Box<Self>, addr: SocketAddr) -> io::Result<Box<dyn BoundSource>> {
        let listener = bind_tcp(addr)?;
        Ok(Box::new(BoundHttp {
            listener,
            source: *self,
        }))
    }
}

/// An HTTP listener whose socket is open.
struct BoundHttp {
    listener: std::net::TcpListener,
    source: HttpListener,
}

impl BoundSource for BoundHttp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn run(self: Box<Self>, feed: Feed) -> JoinHandle<io::Result<()>> {
        let HttpListener {
            limits, tls, token, ..
        } = self.source;
        let shared = Shared::new(feed.pipeline, limits, feed.shutdown.clone()).secured(tls, token);
        let listener = self.listener;
        tokio::spawn(async move {
            http::run(
                TcpListener::from_std(listener)?,
                Arc::new(shared),
                feed.shutdown,
            )
            .await;
            Ok(())
        })
    }
}
