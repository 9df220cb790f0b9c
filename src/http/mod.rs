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
//! | `GET /index?query=Q` | the index's matches once, as a JSON array |
//! | `GET /index?query=Q` upgraded to a WebSocket | each matching event as it is indexed, one JSON text message each ([`subscribe`]) |
//! | `GET /index?query=Q` with `Accept: text/event-stream`, or `GET /index/sse?query=Q` | the same as server-sent events |
//! | `GET /metrics` | the index's metrics and dmon's counters, Prometheus text format ([`metrics`]) |
//!
//! Hostile clients stay bounded: at most `max_connections` connections (one
//! more is closed at once), queries capped in bytes, terms and results as
//! over Riemann TCP, searches run off the async workers on a snapshot of the
//! index, at most `max_subscribers` subscriptions, and a subscriber that
//! falls behind is disconnected and counted, never waited for.

pub mod dashboard;
pub mod metrics;
pub mod subscribe;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::pipeline::Pipeline;
use crate::query::Query;
use crate::server::riemann_tcp::{self, ACCEPT_BACKOFF, MAX_SEARCHES};
use crate::warn_limited;

/// Defaults of [`Limits`] that are the HTTP listener's own.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_bytes: riemann_tcp::DEFAULT_MAX_QUERY_BYTES,
            max_query_terms: riemann_tcp::DEFAULT_MAX_QUERY_TERMS,
            max_query_results: riemann_tcp::DEFAULT_MAX_QUERY_RESULTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
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
}

impl Shared {
    pub fn new(pipeline: Arc<Pipeline>, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            pipeline,
            subscribers: Arc::new(Semaphore::new(limits.max_subscribers)),
            searches: Semaphore::new(MAX_SEARCHES),
            limits,
            shutdown,
        }
    }

    fn stats(&self) -> &crate::stats::HttpStats {
        &self.pipeline.ingest.http
    }
}

/// Serves HTTP on `listener` until `shutdown` fires.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let capped = Capped {
        slots: Arc::new(Semaphore::new(shared.limits.max_connections)),
        listener,
        shared: Arc::clone(&shared),
    };
    let serve = axum::serve(capped, router(shared));
    tokio::select! {
        _ = shutdown.changed() => {}
        result = serve => {
            if let Err(e) = result {
                tracing::warn!("the HTTP listener stopped: {e}");
            }
        }
    }
}

/// Every route, with requests and error answers counted.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(dashboard::router())
        .route("/index", get(subscribe::index))
        .route("/index/sse", get(subscribe::index_sse))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
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

impl axum::serve::Listener for Capped {
    type Io = Slotted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Slotted, SocketAddr) {
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
                    return (
                        Slotted {
                            stream,
                            _slot: slot,
                        },
                        peer,
                    );
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

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection and its slot, released when hyper (or the WebSocket it
/// became) drops it.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
