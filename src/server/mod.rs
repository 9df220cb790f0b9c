//! Servers: sources that receive events from the network (JSON over UDP,
//! Riemann over TCP and UDP), decode them on their own tasks and hand
//! batches to the pipeline; and [`Server`], which runs them all.

pub mod injector;
pub mod recorder;
pub mod riemann_tcp;
pub mod riemann_udp;
pub mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use injector::{Injector, Stopped};

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
    pub http: Option<SocketAddr>,
    pub http_limits: crate::http::Limits,
    /// TLS on Riemann TCP and HTTP (`--tls-cert`), if set.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The token HTTP requests must carry (`--http-token-file`), if set.
    pub http_token: Option<Arc<crate::http::token::HttpToken>>,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub udp: SocketAddr,
    pub riemann_tcp: Option<SocketAddr>,
    pub riemann_udp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// One of the server's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    JsonUdp,
    RiemannTcp,
    RiemannUdp,
    Http,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::JsonUdp => "JSON UDP",
            ListenerKind::RiemannTcp => "Riemann TCP",
            ListenerKind::RiemannUdp => "Riemann UDP",
            ListenerKind::Http => "HTTP",
        }
    }

    /// The command-line flag that sets its address.
    pub fn flag(self) -> &'static str {
        match self {
            ListenerKind::JsonUdp => "--udp",
            ListenerKind::RiemannTcp => "--riemann-tcp",
            ListenerKind::RiemannUdp => "--riemann-udp",
            ListenerKind::Http => "--http",
        }
    }

    /// Whether its flag takes `off`.
    pub fn can_be_off(self) -> bool {
        self != ListenerKind::JsonUdp
    }

    /// Who else likely holds its port.
    fn suspect(self) -> &'static str {
        match self {
            ListenerKind::JsonUdp | ListenerKind::Http => "another dmon?",
            ListenerKind::RiemannTcp | ListenerKind::RiemannUdp => "another dmon or Riemann?",
        }
    }
}

/// A listener that could not be opened on its address.
// The io error is part of the message, not a `source`: reports that print
// the chain would show it twice.
#[derive(Debug, thiserror::Error)]
#[error("{} {addr}: {error}", kind.name())]
pub struct ListenError {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl ListenError {
    fn on(kind: ListenerKind, addr: SocketAddr) -> impl Fn(io::Error) -> ListenError + Copy {
        move |error| ListenError { kind, addr, error }
    }

    /// `--udp 127.0.0.1:7689: address in use (another dmon?)`.
    fn brief(&self) -> String {
        let flag = self.kind.flag();
        let addr = self.addr;
        if self.error.kind() == io::ErrorKind::AddrInUse {
            format!("{flag} {addr}: address in use ({})", self.kind.suspect())
        } else {
            format!("{flag} {addr}: {}", self.error)
        }
    }
}

/// Every listener that could not be opened, in the order of their flags
/// (`--udp`, `--riemann-tcp`, `--riemann-udp`, `--http`); never empty.
///
/// Said with the flags that move them (and turn them off, for those that
/// can be): one failure as `Riemann TCP 127.0.0.1:5555 is in use (another
/// dmon or Riemann?); choose another with …`, several in one line naming
/// each flag and address.
#[derive(Debug)]
pub struct ListenErrors(pub Vec<ListenError>);

impl std::error::Error for ListenErrors {}

impl fmt::Display for ListenErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off: Vec<&str> = self
            .0
            .iter()
            .filter(|e| e.kind.can_be_off())
            .map(|e| e.kind.flag())
            .collect();
        if let [e] = &self.0[..] {
            let (listener, addr) = (e.kind.name(), e.addr);
            if e.error.kind() == io::ErrorKind::AddrInUse {
                write!(f, "{listener} {addr} is in use ({})", e.kind.suspect())?;
            } else {
                write!(f, "cannot listen for {listener} on {addr}: {}", e.error)?;
            }
            write!(f, "; choose another with {} HOST:PORT", e.kind.flag())?;
            if !off.is_empty() {
                write!(f, " or turn it off with {} off", off[0])?;
            }
            return Ok(());
        }
        let each: Vec<String> = self.0.iter().map(ListenError::brief).collect();
        write!(
            f,
            "cannot listen on {} addresses: {}; choose another HOST:PORT for each",
            self.0.len(),
            each.join("; "),
        )?;
        if !off.is_empty() {
            let off: Vec<String> = off.iter().map(|flag| format!("{flag} off")).collect();
            write!(f, " (or turn it off: {})", off.join(", "))?;
        }
        Ok(())
    }
}

/// Keeps a bound listener, or adds why it could not be bound to `failed`.
fn keep<T>(
    bound: Result<(T, SocketAddr), ListenError>,
    failed: &mut Vec<ListenError>,
) -> Option<(T, SocketAddr)> {
    bound.map_err(|e| failed.push(e)).ok()
}

fn bind_udp(
    kind: ListenerKind,
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, SocketAddr), ListenError> {
    let on = ListenError::on(kind, addr);
    let socket = udp::bind(addr).map_err(on)?;
    let bound = socket.local_addr().map_err(on)?;
    Ok((socket, bound))
}

async fn bind_tcp(
    kind: ListenerKind,
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), ListenError> {
    let on = ListenError::on(kind, addr);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(on)?;
    let bound = listener.local_addr().map_err(on)?;
    Ok((listener, bound))
}

/// A running server: sources, the expiry clock and the dispatch thread.
pub struct Server {
    pub pipeline: Arc<Pipeline>,
    pub udp_addr: SocketAddr,
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
        use ListenerKind::*;
        // Bind everything first, so a busy port fails start-up cleanly, and
        // try every listener, so all busy ports are said at once rather
        // than one per attempt.
        let mut failed = Vec::new();
        let udp = keep(bind_udp(JsonUdp, listen.udp), &mut failed);
        let tcp = match listen.riemann_tcp {
            Some(addr) => keep(bind_tcp(RiemannTcp, addr).await, &mut failed),
            None => None,
        };
        let riemann_udp = match listen.riemann_udp {
            Some(addr) => keep(bind_udp(RiemannUdp, addr), &mut failed),
            None => None,
        };
        let http = match listen.http {
            Some(addr) => keep(bind_tcp(Http, addr).await, &mut failed),
            None => None,
        };
        let Some((udp_socket, udp_addr)) = udp else {
            return Err(ListenErrors(failed));
        };
        if !failed.is_empty() {
            return Err(ListenErrors(failed));
        }
        let (tcp_listener, riemann_tcp) = tcp.unzip();
        let (riemann_udp_socket, riemann_udp) = riemann_udp.unzip();
        let (http_listener, http) = http.unzip();
        let bound = Addresses {
            udp: udp_addr,
            riemann_tcp,
            riemann_udp,
            http,
        };

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let dispatcher = spawn_dispatcher(Arc::clone(&pipeline), rx);
        let mut sources = vec![tokio::spawn(udp::run(
            udp_socket,
            Arc::clone(&pipeline),
            tx.clone(),
            shutdown_rx.clone(),
        ))];
        if let Some(listener) = tcp_listener {
            let shared = Arc::new(
                riemann_tcp::Shared::new(
                    Arc::clone(&pipeline),
                    tx.clone(),
                    listen.max_frame,
                    listen.tcp_limits.clone(),
                )
                .with_tls(listen.tls.clone()),
            );
            let stop = shutdown_rx.clone();
            sources.push(tokio::spawn(async move {
                riemann_tcp::run(listener, shared, stop).await;
                Ok(())
            }));
        }
        if let Some(socket) = riemann_udp_socket {
            sources.push(tokio::spawn(riemann_udp::run(
                socket,
                Arc::clone(&pipeline),
                tx.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(listener) = http_listener {
            let shared = Arc::new(
                crate::http::Shared::new(
                    Arc::clone(&pipeline),
                    listen.http_limits.clone(),
                    shutdown_rx.clone(),
                )
                .secured(listen.tls.clone(), listen.http_token.clone()),
            );
            let stop = shutdown_rx.clone();
            sources.push(tokio::spawn(async move {
                crate::http::run(listener, shared, stop).await;
                Ok(())
            }));
        }
        let clock = tx.clone();
        let stop = shutdown_rx.clone();
        sources.push(tokio::spawn(async move {
            expiry_clock(clock, stop).await;
            Ok(())
        }));
        let injector = Injector::new(tx.clone());
        Ok(Server {
            pipeline,
            udp_addr: bound.udp,
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
            crate::sinks::outputs::Outputs::of(pipeline.context())
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
    use super::*;

    fn failed(kind: ListenerKind, addr: &str, error: io::ErrorKind) -> ListenError {
        ListenError {
            kind,
            addr: addr.parse().unwrap(),
            error: io::Error::from(error),
        }
    }

    #[test]
    fn one_failure_names_its_listener_and_the_flags_that_move_it() {
        let one = ListenErrors(vec![failed(
            ListenerKind::RiemannUdp,
            "127.0.0.1:5555",
            io::ErrorKind::AddrInUse,
        )]);
        assert_eq!(
            one.to_string(),
            "Riemann UDP 127.0.0.1:5555 is in use (another dmon or Riemann?); choose another \
             with --riemann-udp HOST:PORT or turn it off with --riemann-udp off"
        );
    }

    #[test]
    fn several_failures_are_said_in_one_line_each_with_its_flag() {
        let all = ListenErrors(vec![
            failed(
                ListenerKind::JsonUdp,
                "127.0.0.1:7689",
                io::ErrorKind::AddrInUse,
            ),
            failed(
                ListenerKind::Http,
                "10.9.9.9:80",
                io::ErrorKind::AddrNotAvailable,
            ),
        ]);
        let said = all.to_string();
        assert!(
            said.starts_with(
                "cannot listen on 2 addresses: --udp 127.0.0.1:7689: address in use \
                 (another dmon?); --http 10.9.9.9:80: "
            ),
            "{said}"
        );
        assert!(
            said.ends_with("; choose another HOST:PORT for each (or turn it off: --http off)"),
            "{said}"
        );
        assert!(!said.contains('\n'), "{said}");
    }
}
