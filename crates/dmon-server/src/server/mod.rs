//! Servers: sources that receive events from the network (JSON over UDP,
//! Riemann over TCP and UDP, HTTP), decode them on their own tasks and
//! hand batches to the pipeline; and [`Server`], which runs every source
//! of the one list ([`source::sources`]).

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod http_listener;
pub mod injector;
pub mod listen_error;
pub mod recorder;
pub mod riemann_tcp;
pub mod riemann_udp;
pub mod source;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use injector::{Injector, Stopped};
pub use listen_error::{ListenError, ListenErrors};
pub use source::{Addresses, BoundSource, Feed, Source, SourceKind};

use crate::instrument::Instrumenter;
use crate::pipeline::{Pipeline, Work, CHANNEL_CAPACITY};
use crate::stats::Stats;

/// How often the dispatch thread looks for nodes' wake-ups that are due
/// (windows, `rate`, `coalesce`): they fire at this resolution. A tick
/// with nothing due costs one look at the earliest deadline.
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// How long shutdown waits for sinks (mail, `forward`, `graphite`) to send
/// what they hold.
const SINK_GRACE: Duration = Duration::from_secs(5);

/// Where a server listens. `None` turns a listener off.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// JSON events over UDP.
    pub udp: SocketAddr,
    pub riemann_tcp: Option<SocketAddr>,
    pub riemann_udp: Option<SocketAddr>,
    /// Largest Riemann TCP frame accepted, in bytes.
    pub max_frame: usize,
    /// What one Riemann TCP client may make the server hold or do.
    pub tcp_limits: riemann_tcp::Limits,
    /// Index queries, subscriptions and `/metrics` over HTTP.
    #[cfg(feature = "http")]
    pub http: Option<SocketAddr>,
    #[cfg(feature = "http")]
    pub http_limits: crate::server::http::Limits,
    /// TLS on Riemann TCP and HTTP (`--tls-cert`), if set.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The token HTTP requests must carry (`--http-token-file`), if set.
    #[cfg(feature = "http")]
    pub http_token: Option<Arc<crate::server::http::token::HttpToken>>,
}

/// Every listener the server has, in the order of their flags; those
/// turned off are in it too, with no address.
pub fn sources(listen: &Listeners) -> Vec<Box<dyn Source>> {
    vec![
        Box::new(udp::JsonUdp { addr: listen.udp }),
        Box::new(riemann_tcp::RiemannTcp {
            addr: listen.riemann_tcp,
            max_frame: listen.max_frame,
            limits: listen.tcp_limits.clone(),
            tls: listen.tls.clone(),
        }),
        Box::new(riemann_udp::RiemannUdp {
            addr: listen.riemann_udp,
        }),
        #[cfg(feature = "http")]
        Box::new(http_listener::HttpListener {
            addr: listen.http,
            limits: listen.http_limits.clone(),
            tls: listen.tls.clone(),
            token: listen.http_token.clone(),
        }),
    ]
}

/// A source whose socket is open, with what it is and where.
pub struct Bound {
    pub kind: &'static SourceKind,
    pub addr: SocketAddr,
    pub source: Box<dyn BoundSource>,
}

/// Binds every source that is on; every failure is kept, so all busy
/// ports are said at once rather than one per attempt.
pub fn bind_all(sources: Vec<Box<dyn Source>>) -> Result<Vec<Bound>, Vec<ListenError>> {
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for source in sources {
        let (kind, Some(addr)) = (source.kind(), source.addr()) else {
            continue;
        };
        match source.bind(addr).and_then(|b| Ok((b.local_addr()?, b))) {
            Ok((addr, source)) => bound.push(Bound { kind, addr, source }),
            Err(error) => failed.push(ListenError { kind, addr, error }),
        }
    }
    if failed.is_empty() {
        Ok(bound)
    } else {
        Err(failed)
    }
}

/// A running server: sources, the expiry clock and the dispatch thread.
pub struct Server {
    pub pipeline: Arc<Pipeline>,
    pub bound: Addresses,
    injector: Injector,
    tx: mpsc::Sender<Work>,
    shutdown: watch::Sender<bool>,
    sources: Vec<JoinHandle<io::Result<()>>>,
    dispatcher: thread::JoinHandle<()>,
    /// Whether shutdown flushes the roots (see [`Server::keep_windows_open`]).
    flush_at_shutdown: bool,
    /// Run on the dispatch thread once everything received is processed
    /// (see [`Server::at_last`]).
    last: Vec<Work>,
}

impl Server {
    /// Binds the sources and starts processing. `spawn_dispatcher` runs the
    /// pipeline's dispatch loop on a thread of the embedder's choosing (the
    /// Python layer keeps it attached to the interpreter).
    pub async fn start<D>(
        pipeline: Arc<Pipeline>,
        listen: &Listeners,
        spawn_dispatcher: D,
    ) -> Result<Server, ListenErrors>
    where
        D: FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> thread::JoinHandle<()>,
    {
        // Bind everything first, so a busy port fails start-up cleanly.
        let bound_sources = bind_all(sources(listen)).map_err(ListenErrors)?;
        let bound = Addresses(bound_sources.iter().map(|b| (b.kind, b.addr)).collect());

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let dispatcher = spawn_dispatcher(Arc::clone(&pipeline), rx);
        let feed = Feed {
            pipeline: Arc::clone(&pipeline),
            tx: tx.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let mut sources: Vec<_> = bound_sources
            .into_iter()
            .map(|b| b.source.run(feed.clone()))
            .collect();
        let clock = tx.clone();
        let stop = shutdown_rx.clone();
        sources.push(tokio::spawn(async move {
            expiry_clock(clock, stop).await;
            Ok(())
        }));
        let injector = Injector::new(tx.clone());
        Ok(Server {
            pipeline,
            bound,
            injector,
            tx,
            shutdown,
            sources,
            dispatcher,
            flush_at_shutdown: true,
            last: Vec::new(),
        })
    }

    /// Shutdown leaves windows and rates holding their events instead of
    /// flushing them: for a cluster worker, whose state goes on in its
    /// checkpoint on the worker that takes over.
    pub fn keep_windows_open(&mut self) {
        self.flush_at_shutdown = false;
    }

    /// Runs `job` on the dispatch thread at shutdown, after the last event
    /// received was processed (and the roots flushed, if they are): the
    /// state as the stop leaves it.
    pub fn at_last(&mut self, job: impl FnOnce(&Pipeline) + Send + 'static) {
        self.last.push(Work::Call(Box::new(job)));
    }

    /// Runs the task `start` makes, given the shutdown signal, on the
    /// current runtime; shutdown waits for it to end (with the sources,
    /// before the last events are processed).
    pub fn run_until_shutdown<F>(&mut self, start: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = start(self.shutdown.subscribe());
        self.sources.push(tokio::spawn(async move {
            task.await;
            Ok(())
        }));
    }

    /// Stops receiving, processes everything already received, waits a
    /// little for sinks to send what they hold, and returns the final
    /// counters.
    pub async fn shutdown(self) -> Stats {
        let _ = self.shutdown.send(true);
        self.injector.close();
        for source in self.sources {
            match source.await {
                Ok(Err(e)) => tracing::warn!("a source stopped with an error: {e}"),
                Err(e) => tracing::warn!("a source task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
        // Everything received is queued ahead of this; a connection still
        // waiting on a client that does not read cannot hold shutdown up.
        if self.flush_at_shutdown {
            // Time ends: windows and rates forward what they hold, before
            // the sinks get their last chance to send.
            let _ = self
                .tx
                .send(Work::Call(Box::new(|p: &Pipeline| p.flush_roots())))
                .await;
        }
        for job in self.last {
            let _ = self.tx.send(job).await;
        }
        let _ = self.tx.send(Work::Stop).await;
        drop(self.tx);
        let dispatcher = self.dispatcher;
        let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
        let pipeline = Arc::clone(&self.pipeline);
        let _ = tokio::task::spawn_blocking(move || {
            crate::sinks::senders::Senders::of(pipeline.context())
                .is_none_or(|o| o.drain(SINK_GRACE))
        })
        .await;
        self.pipeline.stats()
    }
}

impl Server {
    /// Makes events about dmon itself every `every` (see
    /// [`crate::instrument`]: into the index, or through the roots), until
    /// shutdown.
    pub fn instrument(&mut self, every: Duration) {
        let tx = self.tx.clone();
        let pipeline = Arc::clone(&self.pipeline);
        let mut stop = self.shutdown.subscribe();
        let mut instrumenter = Instrumenter::new(Instrumenter::hostname(), every.as_secs_f64());
        self.sources.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    _ = ticks.tick() => {
                        let now = pipeline.context().now();
                        let latencies = pipeline.ingest_latency.snapshot();
                        let events = instrumenter.events(&pipeline.stats(), &latencies, now);
                        if !events.is_empty() && tx.send(Work::Own(events)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }));
    }

    /// The dispatch thread's channel, for sources outside this module (a
    /// cluster worker's consumers).
    pub fn sender(&self) -> mpsc::Sender<Work> {
        self.tx.clone()
    }

    /// A handle that puts events straight into the pipeline, as the shell's
    /// `inject` does; it stops working when the server shuts down.
    pub fn injector(&self) -> Injector {
        self.injector.clone()
    }
}

/// Asks the dispatch thread to run timers every [`TICK_INTERVAL`].
async fn expiry_clock(tx: mpsc::Sender<Work>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(TICK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => {
                if tx.send(Work::Tick).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn all_off() -> Listeners {
        Listeners {
            udp: "127.0.0.1:0".parse().unwrap(),
            riemann_tcp: None,
            riemann_udp: None,
            max_frame: riemann_tcp::DEFAULT_MAX_FRAME,
            tcp_limits: Default::default(),
            http: None,
            http_limits: Default::default(),
            tls: None,
            http_token: None,
        }
    }

    fn kinds() -> Vec<&'static SourceKind> {
        sources(&all_off()).iter().map(|s| s.kind()).collect()
    }

    #[test]
    fn every_source_has_its_own_name_flag_and_announcement() {
        let kinds = kinds();
        assert_eq!(kinds.len(), 4);
        for (i, a) in kinds.iter().enumerate() {
            assert_eq!(a.flag, format!("--{}", a.name), "{a:?}");
            assert!(a.announce.starts_with("Listening for "), "{a:?}");
            for b in &kinds[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.label, b.label);
                assert_ne!(a.announce, b.announce);
            }
        }
    }

    #[test]
    fn only_json_udp_cannot_be_turned_off() {
        let fixed: Vec<&str> = kinds()
            .iter()
            .filter(|k| !k.can_be_off)
            .map(|k| k.name)
            .collect();
        assert_eq!(fixed, ["udp"]);
    }

    #[test]
    fn sources_turned_off_are_listed_without_an_address_and_not_bound() {
        let listed = sources(&all_off());
        let on: Vec<&str> = listed
            .iter()
            .filter(|s| s.addr().is_some())
            .map(|s| s.kind().name)
            .collect();
        assert_eq!(on, ["udp"]);
        let bound = bind_all(listed).map_err(|e| e.len()).expect("binds");
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].kind.name, "udp");
        assert_ne!(bound[0].addr.port(), 0, "port 0 is resolved");
    }

    #[test]
    fn the_json_udp_line_is_announced_last_and_others_keep_their_order() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bound = Addresses(vec![
            (&udp::KIND, addr),
            (&riemann_tcp::KIND, addr),
            (&http_listener::KIND, addr),
        ]);
        assert_eq!(
            bound.announcements(),
            [
                "Listening for Riemann TCP on: 127.0.0.1 9",
                "Listening for HTTP on: 127.0.0.1 9",
                "Listening for event datagrams on: 127.0.0.1 9",
            ]
        );
        assert_eq!(bound.get("riemann-tcp"), Some(addr));
        assert_eq!(bound.get("riemann-udp"), None);
        assert_eq!(bound.udp(), addr);
    }
}
