//! The HTTP listener (`--http HOST:PORT`, off by default): a dashboard,
//! index queries, live subscriptions (WebSocket and SSE, as Riemann's), and
//! Prometheus `/metrics`.
//!
//! | route | what it answers |
//! |---|---|
//! | `GET /` | the dashboard: one page, its assets embedded (`/dashboard.js`, `/dashboard.css`) ([`dashboard`]) |
//! | `GET /routes` | a short text naming the routes |
//! | `GET /stats` | dmon's counters and every stream node's, as JSON (`dmon stats`'s) |
//! | `GET /series?query=Q&minutes=M` | recent (time, metric) points of each matching host and service, as JSON |
//! | `GET /index?query=Q` | the index's matches once, as a JSON array (a query's warnings, e.g. an unquoted word, in `X-Dmon-Query-Warning` headers, as for every route taking a query) |
//! | `GET /index?query=Q` upgraded to a WebSocket | each matching event as it is indexed, one JSON text message each ([`subscribe`]) |
//! | `GET /index?query=Q` with `Accept: text/event-stream`, or `GET /index/sse?query=Q` | the same as server-sent events |
//! | `GET /metrics` | the index's metrics and dmon's counters, Prometheus text format ([`metrics`]) |
//!
//! Hostile clients stay bounded: at most `max_connections` connections (one
//! more is closed at once), a request's headers read within `idle_timeout`
//! and no write to a client stalled longer than that (a client that stops
//! reading is closed), queries capped in bytes, terms and results as
//! over Riemann TCP, searches run off the async workers on a snapshot of the
//! index, at most `max_subscribers` subscriptions, and a subscriber that
//! falls behind is disconnected and counted, never waited for. Subscribers
//! get keep-alives every `keepalive`, so a dead one is found, and one sent
//! nothing else for `idle_timeout` is closed, so idle subscribers cannot
//! hold every slot.
//!
//! With `--tls-cert` every connection is HTTPS (WSS for subscriptions),
//! its handshake bounded by `idle_timeout` like a request's headers; with
//! `--http-token-file` every request must carry the token ([`token`]).

pub mod dashboard;
pub mod metrics;
pub mod subscribe;
pub mod token;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::pipeline::Pipeline;
use crate::query::Query;
use crate::server::riemann_tcp::{self, ACCEPT_BACKOFF, MAX_SEARCHES};
use crate::tls::ServerTls;
use crate::warn_limited;
use token::HttpToken;

/// Defaults of [`Limits`] that are the HTTP listener's own.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

static LOG: LogLimiter = LogLimiter::new(10);

/// What HTTP clients may make the server hold or do; each is a flag, named
/// in the error it gets.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of one query's text (`--max-query-bytes`, shared with Riemann TCP).
    pub max_query_bytes: usize,
    /// Simple predicates in one query (`--max-query-terms`).
    pub max_query_terms: usize,
    /// Events in one answer, or in a subscription's first matches
    /// (`--max-query-results`).
    pub max_query_results: usize,
    /// Connections open at once (`--http-max-connections`).
    pub max_connections: usize,
    /// Subscriptions open at once (`--http-max-subscribers`).
    pub max_subscribers: usize,
    /// How long a request's headers may take to arrive, and a write to a
    /// client may stall, before the connection is closed (`--idle-timeout`,
    /// shared with Riemann TCP).
    pub idle_timeout: Duration,
    /// How often a subscriber gets a keep-alive (a WebSocket ping, which
    /// must be answered before the next, or an SSE comment)
    /// (`--http-keepalive`).
    pub keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_bytes: riemann_tcp::DEFAULT_MAX_QUERY_BYTES,
            max_query_terms: riemann_tcp::DEFAULT_MAX_QUERY_TERMS,
            max_query_results: riemann_tcp::DEFAULT_MAX_QUERY_RESULTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            idle_timeout: riemann_tcp::DEFAULT_IDLE_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
        }
    }
}

/// What every request shares.
pub struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub limits: Limits,
    /// One permit per open subscription.
    subscribers: Arc<Semaphore>,
    /// Searches and `/metrics` renderings at once; each holds a copy of the
    /// index's pointers.
    searches: Semaphore,
    /// Fires at shutdown, so subscriptions end instead of holding it up.
    shutdown: watch::Receiver<bool>,
    /// HTTPS (`--tls-cert`), if set.
    pub tls: Option<Arc<ServerTls>>,
    /// The token requests must carry (`--http-token-file`), if set.
    pub token: Option<Arc<HttpToken>>,
}

impl Shared {
    pub fn new(pipeline: Arc<Pipeline>, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            pipeline,
            subscribers: Arc::new(Semaphore::new(limits.max_subscribers)),
            searches: Semaphore::new(MAX_SEARCHES),
            limits,
            shutdown,
            tls: None,
            token: None,
        }
    }

    /// HTTPS, and a token every request must carry.
    pub fn secured(mut self, tls: Option<Arc<ServerTls>>, token: Option<Arc<HttpToken>>) -> Self {
        self.tls = tls;
        self.token = token;
        self
    }

    fn stats(&self) -> &crate::stats::HttpStats {
        &self.pipeline.ingest.http
    }
}

/// Serves HTTP on `listener` until `shutdown` fires.
///
/// hyper serves each connection itself (rather than `axum::serve`) for
/// what a hostile client needs bounded and axum's loop does not set: a
/// deadline on a request's headers, and on a stalled write ([`Slotted`]).
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut capped = Capped {
        slots: Arc::new(Semaphore::new(shared.limits.max_connections)),
        listener,
        shared: Arc::clone(&shared),
    };
    let router = router(Arc::clone(&shared));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout);
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            io = capped.accept() => io,
        };
        // The connection's requests can tell whether it failed.
        let service = TowerToHyperService::new(router.clone().layer(Extension(io.failed.clone())));
        let http1 = http1.clone();
        let mut shutdown = shutdown.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Some(tls) = &shared.tls else {
                return serve_connection(io, &http1, service, &shared, shutdown).await;
            };
            let handshake = tokio::select! {
                _ = shutdown.changed() => return,
                handshake = tls.accept(io, shared.limits.idle_timeout) => handshake,
            };
            match handshake {
                Ok(io) => serve_connection(io, &http1, service, &shared, shutdown).await,
                Err(why) => {
                    shared.stats().tls_failures.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(LOG, "http {peer}: {why}");
                }
            }
        });
    }
}

/// Serves one connection's requests until it closes or the server stops.
async fn serve_connection<IO>(
    io: IO,
    http1: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    // A client that closes, times out or breaks the protocol ends here;
    // there is nothing more to tell it.
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        count_refused_head(shared, &e);
    }
}

/// Counts a request hyper answered itself, never reaching the router: a
/// request head it could not parse (400), a URI over its 65,534 bytes (414)
/// or a head over its buffer (431).
fn count_refused_head(shared: &Shared, e: &hyper::Error) {
    if !e.is_parse() || e.is_parse_version_h2() {
        return;
    }
    let stats = shared.stats();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    warn_limited!(LOG, "http: request refused before routing: {e}");
}

/// Every route, with requests and error answers counted.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(dashboard::router())
        .route("/index", get(subscribe::index))
        .route("/index/sse", get(subscribe::index_sse))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            token::require,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), count))
        .with_state(shared)
}

async fn count(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let stats = shared.stats();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_client_error() || response.status().is_server_error() {
        stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    response
}

async fn not_found(request: Request) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such path: {}; try /index?query=true or /metrics",
            request.uri().path()
        ),
    )
}

/// An error answer: a status and one line of text saying why.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

/// The response header carrying each of a query's warnings
/// ([`Query::warnings`]), one header per warning, so the JSON answers stay
/// as they were.
pub const QUERY_WARNING: &str = "x-dmon-query-warning";

/// `response` with `query`'s warnings in [`QUERY_WARNING`] headers.
pub fn with_warnings(mut response: Response, query: &Query) -> Response {
    for warning in query.warnings() {
        // Raw UTF-8 (a field name may be a non-ASCII word): header values
        // may hold any byte but controls, and warnings have none.
        if let Ok(value) = header::HeaderValue::from_bytes(warning.as_bytes()) {
            response.headers_mut().append(QUERY_WARNING, value);
        }
    }
    response
}

/// Parses `text` within the query limits. Parsing compiles regexes, so it
/// runs off the async workers.
pub async fn parse_query(shared: &Shared, text: String) -> Result<Arc<Query>, HttpError> {
    let limits = &shared.limits;
    if text.len() > limits.max_query_bytes {
        return Err(HttpError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "query of {} bytes; the limit is {} (--max-query-bytes)",
                text.len(),
                limits.max_query_bytes
            ),
        ));
    }
    let max_terms = limits.max_query_terms;
    tokio::task::spawn_blocking(move || {
        let query = Query::parse(&text)
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        if query.terms() > max_terms {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "query has {} terms; the limit is {max_terms} (--max-query-terms)",
                    query.terms()
                ),
            ));
        }
        Ok(Arc::new(query))
    })
    .await
    .unwrap_or_else(|e| {
        Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query failed: {e}"),
        ))
    })
}

/// The index's events matching `query`, sorted by host and service, or an
/// error when there are more than `--max-query-results`.
pub async fn search(shared: &Shared, query: &Arc<Query>) -> Result<Vec<Arc<Event>>, HttpError> {
    let Ok(_searching) = shared.searches.acquire().await else {
        return Err(shutting_down());
    };
    let pipeline = Arc::clone(&shared.pipeline);
    let q = Arc::clone(query);
    let found =
        tokio::task::spawn_blocking(move || pipeline.context().index.search(|e| q.matches(e)))
            .await
            .map_err(|e| {
                HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("search failed: {e}"),
                )
            })?;
    let max = shared.limits.max_query_results;
    if found.len() > max {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "query matches {} events; the limit is {max} (--max-query-results); narrow the query",
                found.len()
            ),
        ));
    }
    Ok(found)
}

fn shutting_down() -> HttpError {
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down")
}

/// A TCP listener that holds at most `slots` connections: one more is
/// closed at once and counted. An accept that fails (out of file
/// descriptors) pauses the listener rather than spinning.
struct Capped {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Capped {
    async fn accept(&mut self) -> (Slotted, std::net::SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn_limited!(
                        LOG,
                        "http accept failed: {e}; pausing {ACCEPT_BACKOFF:?} (raise `ulimit -n` or lower --http-max-connections)"
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    let slotted = Slotted {
                        stream,
                        _slot: slot,
                        stall_limit: self.shared.limits.idle_timeout,
                        stalled: None,
                        failed: ConnectionFailed::default(),
                    };
                    return (slotted, peer);
                }
                Err(_) => {
                    self.shared
                        .stats()
                        .refused_connections
                        .fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        LOG,
                        "http {peer}: connection refused: {} connections are open, the limit (--http-max-connections)",
                        self.shared.limits.max_connections
                    );
                }
            }
        }
    }
}

/// Set once a write to a connection failed (stalled past `--idle-timeout`,
/// or refused by the peer), or a read did (a reset). Its requests carry
/// it, so an SSE subscription ended by its connection breaking is told
/// from one its client closed.
#[derive(Clone, Default)]
pub struct ConnectionFailed(Arc<AtomicBool>);

impl ConnectionFailed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A connection and its slot, released when hyper (or the WebSocket it
/// became) drops it. A write that cannot go on for `stall_limit` (a client
/// that stopped reading: an SSE or WebSocket subscriber, a huge answer)
/// fails, which closes the connection, so no client holds a slot and its
/// buffers by not reading.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    stall_limit: Duration,
    /// Since the first write that could not go on.
    stalled: Option<Pin<Box<Sleep>>>,
    failed: ConnectionFailed,
}

impl Slotted {
    /// What a write's `poll` returned, with the stall deadline applied.
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(done) = &polled {
            if done.is_err() {
                self.failed.set();
            }
            self.stalled = None;
            return polled;
        }
        let limit = self.stall_limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.failed.set();
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?} (--idle-timeout)"),
        )))
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        // A reset peer, not one that closed: as a failed write.
        if let Poll::Ready(Err(_)) = &polled {
            self.failed.set();
        }
        polled
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch_stall(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch_stall(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch_stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
