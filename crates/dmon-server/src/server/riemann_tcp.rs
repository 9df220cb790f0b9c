//! Riemann's TCP protocol (default `127.0.0.1:5555`): 4-byte big-endian
//! length, then a protobuf `Msg`.
//!
//! Each connection answers one request at a time, in order, as Riemann's
//! clients expect. Events are acknowledged once they have been through every
//! root (so a query sent after the ack sees them, and a full pipeline slows
//! the sender instead of dropping); a query is answered from the index.
//!
//! Memory and CPU stay bounded under hostile clients ([`Limits`]):
//! - at most `max_connections` connections; one over is closed at once, and
//!   an accept that fails for want of file descriptors pauses the listener
//!   for [`ACCEPT_BACKOFF`] instead of spinning;
//! - a connection with no complete frame for `idle_timeout` (even one that
//!   sent half a length prefix) or that does not read a reply for as long is
//!   closed;
//! - a frame over `max_frame` gets an error reply and the connection is
//!   closed before anything is allocated; a body must arrive within
//!   [`BODY_DEADLINE`];
//! - a message's events are counted on the wire before it is decoded (two
//!   bytes can decode to a 400-byte event): over `max_events` it is refused
//!   whole. Every message is charged to the memory budget's
//!   [`Share::Messages`] (`--memory-limit`), first its bytes and then its
//!   decoded size, held until its events were processed; one that does not
//!   fit is refused at once ("server busy") rather than queued. Messages
//!   over [`LARGE_MESSAGE`](crate::memory::LARGE_MESSAGE) may use only three
//!   quarters of the share, so clients holding huge frames (even stalled
//!   mid-body) cannot refuse everyone else's ordinary batches;
//! - with TLS ([`Shared::tls`]), the handshake must finish within
//!   `idle_timeout`; a failed one (a plain-text client, no or a refused
//!   client certificate) is logged and counted;
//! - a query is capped in bytes and terms, runs on a snapshot of the index
//!   off the async workers (so ingest never waits on it), at most
//!   [`MAX_SEARCHES`] at once, and its reply is capped in events and bytes;
//!   a reply is charged to [`Share::Replies`] until it is written. A
//!   client that stops reading stalls only itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::source::{BoundSource, Feed, Source, SourceKind};

use crate::codec::riemann::{from_proto, to_proto, Attribute, Msg, ProtoEvent};
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::memory::{Charge, Share};
use crate::pipeline::{Pipeline, Work};
use crate::query::Query;
use crate::tls::ServerTls;
use crate::warn_limited;

/// Default largest frame accepted.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// Frames up to this size are decoded on the async worker that read them;
/// larger ones on a blocking thread.
const SMALL_FRAME: usize = 64 * 1024;
/// How long a client may take to send a frame's body once its length has
/// arrived; a client that stalls mid-frame must not hold memory for ever.
const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the listener pauses when accepting fails for want of resources
/// (file descriptors): retrying at once would spin a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Queries searched at once; each holds a copy of the index's pointers.
pub const MAX_SEARCHES: usize = 2;

/// Defaults of [`Limits`].
pub const DEFAULT_MAX_EVENTS: usize = 100_000;
pub const DEFAULT_MAX_QUERY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_QUERY_TERMS: usize = 1_000;
pub const DEFAULT_MAX_QUERY_RESULTS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

static BAD_CLIENT_LOG: LogLimiter = LogLimiter::new(10);
/// Once a second: a listener out of file descriptors fails every accept.
static ACCEPT_LOG: LogLimiter = LogLimiter::new(1);

/// What one client may make the server hold or do; each is a `dmon serve`
/// flag, named in the error reply when it is exceeded.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Events (and states) in one message (`--max-events-per-message`).
    pub max_events: usize,
    /// Bytes of one query's text (`--max-query-bytes`).
    pub max_query_bytes: usize,
    /// Simple predicates in one query (`--max-query-terms`).
    pub max_query_terms: usize,
    /// Events in one query's reply (`--max-query-results`).
    pub max_query_results: usize,
    /// Connections open at once (`--max-connections`).
    pub max_connections: usize,
    /// How long a connection may go without a complete frame, or without
    /// reading a reply (`--idle-timeout`).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: DEFAULT_MAX_EVENTS,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_query_terms: DEFAULT_MAX_QUERY_TERMS,
            max_query_results: DEFAULT_MAX_QUERY_RESULTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What every connection shares.
pub struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub tx: mpsc::Sender<Work>,
    pub max_frame: usize,
    pub limits: Limits,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    searches: Semaphore,
    /// TLS on every connection (`--tls-cert`), if set.
    pub tls: Option<Arc<ServerTls>>,
}

impl Shared {
    pub fn new(
        pipeline: Arc<Pipeline>,
        tx: mpsc::Sender<Work>,
        max_frame: usize,
        limits: Limits,
    ) -> Self {
        Shared {
            pipeline,
            tx,
            max_frame,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            searches: Semaphore::new(MAX_SEARCHES),
            limits,
            tls: None,
        }
    }

    /// Every connection speaks TLS first.
    pub fn with_tls(mut self, tls: Option<Arc<ServerTls>>) -> Self {
        self.tls = tls;
        self
    }
}

/// Riemann over TCP (`--riemann-tcp`).
pub static KIND: SourceKind = SourceKind {
    name: "riemann-tcp",
    label: "Riemann TCP",
    flag: "--riemann-tcp",
    can_be_off: true,
    suspect: "another dmon or Riemann?",
    announce: "Listening for Riemann TCP on:",
    ready: false,
};

/// The Riemann TCP listener, as configured.
pub struct RiemannTcp {
    pub addr: Option<SocketAddr>,
    /// Largest frame accepted, in bytes.
    pub max_frame: usize,
    pub limits: Limits,
    pub tls: Option<Arc<ServerTls>>,
}

impl Source for RiemannTcp {
    fn kind(&self) -> &'static SourceKind {
        &KIND
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    fn bind(self: Box<Self>, addr: SocketAddr) -> std::io::Result<Box<dyn BoundSource>> {
        let listener = bind_tcp(addr)?;
        Ok(Box::new(BoundTcp {
            listener,
            source: *self,
        }))
    }
}

/// A Riemann TCP listener whose socket is open.
struct BoundTcp {
    listener: std::net::TcpListener,
    source: RiemannTcp,
}

impl BoundSource for BoundTcp {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn run(self: Box<Self>, feed: Feed) -> JoinHandle<std::io::Result<()>> {
        let RiemannTcp {
            max_frame,
            limits,
            tls,
            ..
        } = self.source;
        let shared = Shared::new(feed.pipeline, feed.tx, max_frame, limits).with_tls(tls);
        let listener = self.listener;
        tokio::spawn(async move {
            run(
                TcpListener::from_std(listener)?,
                Arc::new(shared),
                feed.shutdown,
            )
            .await;
            Ok(())
        })
    }
}

/// Opens a TCP listening socket, non-blocking for the runtime to take
/// over (as [`TcpListener::bind`] would, with `SO_REUSEADDR`).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts connections until `shutdown` fires.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let tcp = &shared.pipeline.ingest.tcp;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = Arc::clone(&shared.connections).try_acquire_owned() else {
                    // Closed at once: holding it open would cost what the
                    // limit is there to bound.
                    tcp.refused_connections.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        BAD_CLIENT_LOG,
                        "riemann tcp {peer}: connection refused: {} connections are open, the limit (--max-connections)",
                        shared.limits.max_connections
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                shared
                    .pipeline
                    .ingest
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&shared),
                    slot,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                tcp.accept_failures.fetch_add(1, Ordering::Relaxed);
                if !out_of_resources(&e) {
                    warn_limited!(BAD_CLIENT_LOG, "riemann tcp accept failed: {e}");
                    continue;
                }
                warn_limited!(
                    ACCEPT_LOG,
                    "riemann tcp accept failed: {e}; pausing {ACCEPT_BACKOFF:?} (raise `ulimit -n` or lower --max-connections, now {})",
                    shared.limits.max_connections
                );
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Errors that retrying at once cannot cure: out of file descriptors or
/// memory.
fn out_of_resources(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = shared.tls.clone() else {
        let (read, write) = stream.into_split();
        return serve_frames(read, write, peer, shared, slot, shutdown).await;
    };
    let handshake = tokio::select! {
        _ = shutdown.changed() => return,
        handshake = tls.accept(stream, shared.limits.idle_timeout) => handshake,
    };
    match handshake {
        Ok(stream) => {
            let (read, write) = tokio::io::split(stream);
            serve_frames(read, write, peer, shared, slot, shutdown).await
        }
        Err(why) => {
            shared
                .pipeline
                .ingest
                .tcp
                .tls_failures
                .fetch_add(1, Ordering::Relaxed);
            warn_limited!(BAD_CLIENT_LOG, "riemann tcp {peer}: {why}");
        }
    }
}

/// Answers a connection's frames, one at a time, until it closes, breaks a
/// limit or the server stops.
async fn serve_frames<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Small buffers: a thousand idle connections cost little; large frames
    // are read straight into their own buffer.
    let mut read = BufReader::with_capacity(8 * 1024, read);
    let mut write = BufWriter::new(write);
    let idle = shared.limits.idle_timeout;
    let tcp = &shared.pipeline.ingest.tcp;
    loop {
        let len = tokio::select! {
            _ = shutdown.changed() => return,
            len = tokio::time::timeout(idle, read.read_u32()) => match len {
                Ok(Ok(len)) => len as usize,
                Ok(Err(_)) => return, // closed between messages
                Err(_) => {
                    tcp.idle_closed.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        BAD_CLIENT_LOG,
                        "riemann tcp {peer}: no complete message for {idle:?} (--idle-timeout); closing"
                    );
                    return;
                }
            },
        };
        let (reply, close) = match request(&mut read, len, peer, &shared).await {
            Ok(reply) => (Some(reply), false),
            Err(Close(reply)) => (reply.map(Reply::from), true),
        };
        if let Some(reply) = reply {
            match tokio::time::timeout(idle, send(&mut write, &reply.bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tcp.idle_closed.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        BAD_CLIENT_LOG,
                        "riemann tcp {peer}: did not read a {}-byte reply for {idle:?} (--idle-timeout); closing",
                        reply.bytes.len()
                    );
                    return;
                }
            }
        }
        if close {
            return;
        }
    }
}

/// Ends the connection, after an optional last reply.
struct Close(Option<Msg>);

/// An encoded reply, and the memory it holds until written.
struct Reply {
    bytes: Vec<u8>,
    _memory: Option<Charge>,
}

impl From<Msg> for Reply {
    fn from(msg: Msg) -> Self {
        Reply {
            bytes: msg.encode_to_vec(),
            _memory: None,
        }
    }
}

async fn request<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    len: usize,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Reply, Close> {
    let stats = &shared.pipeline.ingest;
    if len > shared.max_frame {
        stats.bad_messages.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            BAD_CLIENT_LOG,
            "riemann tcp {peer}: frame of {len} bytes exceeds the maximum of {} bytes; closing",
            shared.max_frame
        );
        return Err(Close(Some(Msg::refused(format!(
            "frame of {len} bytes exceeds the maximum of {} bytes",
            shared.max_frame
        )))));
    }
    let memory = &shared.pipeline.memory();
    let charge = match memory.try_charge_large(len) {
        Ok(charge) => charge,
        Err(full) => {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                BAD_CLIENT_LOG,
                "riemann tcp {peer}: refused a {len}-byte frame: {full}"
            );
            return Err(Close(Some(Msg::refused(format!(
                "server busy: the {len}-byte message does not fit in memory now ({full}); retry later"
            )))));
        }
    };
    let mut body = vec![0u8; len];
    let deadline = BODY_DEADLINE.min(shared.limits.idle_timeout);
    let received = match tokio::time::timeout(deadline, read.read_exact(&mut body)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            // Idle mid-frame: a connection closed for idleness, too.
            stats.tcp.idle_closed.fetch_add(1, Ordering::Relaxed);
            let flag = if deadline == shared.limits.idle_timeout {
                " (--idle-timeout)"
            } else {
                ""
            };
            Err(format!("not received within {deadline:?}{flag}"))
        }
    };
    if let Err(why) = received {
        stats.bad_messages.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            BAD_CLIENT_LOG,
            "riemann tcp {peer}: frame cut short after its length ({len} bytes expected): {why}"
        );
        return Err(Close(None));
    }
    stats.messages.fetch_add(1, Ordering::Relaxed);

    // Counted on the wire, before decoding allocates anything.
    let (body, shape) = off_workers(len, body, |body| {
        let shape = Shape::of(&body);
        (body, shape)
    })
    .await;
    let items = shape.events + shape.states;
    let refuse = |why: String, reply: String| {
        stats.bad_messages.fetch_add(1, Ordering::Relaxed);
        stats
            .tcp
            .refused_events
            .fetch_add(items as u64, Ordering::Relaxed);
        warn_limited!(
            BAD_CLIENT_LOG,
            "riemann tcp {peer}: refused a message: {why}"
        );
        // The framing is intact, so the connection stays usable.
        Reply::from(Msg::refused(reply))
    };
    if items > shared.limits.max_events {
        let why = format!(
            "message holds {items} events; the limit is {} (--max-events-per-message)",
            shared.limits.max_events
        );
        return Ok(refuse(why.clone(), why));
    }
    // Held until the events were processed, so several such messages at
    // once cannot multiply memory. The decoded size counts the frame
    // itself, so the frame's own charge is given back first.
    let decoded = shape.decoded_bytes(len);
    drop(charge);
    let charge = match memory.try_charge_large(decoded) {
        Ok(charge) => charge,
        Err(full) => {
            let mib = decoded.div_ceil(1 << 20);
            return Ok(refuse(
                format!("the message ({items} events, {len} bytes) decodes to about {mib} MiB: {full}"),
                format!("server busy: the message ({items} events, {len} bytes) decodes to about {mib} MiB: {full}; retry later or send smaller batches"),
            ));
        }
    };

    // Decoding from `Bytes` lets string fields borrow the frame, not copy it.
    let decoded = off_workers(len, body, |body| Msg::decode(bytes::Bytes::from(body))).await;
    let msg = match decoded {
        Ok(msg) => msg,
        Err(e) => {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                BAD_CLIENT_LOG,
                "riemann tcp {peer}: invalid message ({len} bytes): {e}"
            );
            // The framing is intact, so the connection stays usable.
            return Ok(Reply::from(Msg::refused(format!(
                "invalid protobuf message: {e}"
            ))));
        }
    };
    if let Some(text) = msg.query_text() {
        drop(msg);
        return Ok(answer_query(shared, text, peer).await);
    }
    let now = now_secs();
    let events: Vec<_> = msg.events.iter().map(|e| from_proto(e, now)).collect();
    drop(msg);
    stats
        .events
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    if events.is_empty() {
        return Ok(Reply::from(Msg::acknowledged()));
    }
    let (done, processed) = oneshot::channel();
    // Room in the pipeline first (bounded in events, --max-in-flight), so a
    // full pipeline slows this client instead of queueing without bound.
    let permits = match shared.pipeline.try_reserve(events.len()) {
        Some(permits) => permits,
        None => {
            stats.pipeline_full.fetch_add(1, Ordering::Relaxed);
            shared.pipeline.reserve(events.len()).await
        }
    };
    let work = Work::Reserved(events, permits.holding(charge), Some(done));
    let work = match shared.tx.try_send(work) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(work)) => {
            stats.pipeline_full.fetch_add(1, Ordering::Relaxed);
            Some(work)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(Close(Some(Msg::refused("server is shutting down"))))
        }
    };
    if let Some(work) = work {
        shared
            .tx
            .send(work)
            .await
            .map_err(|_| Close(Some(Msg::refused("server is shutting down"))))?;
    }
    match processed.await {
        Ok(()) => Ok(Reply::from(Msg::acknowledged())),
        Err(_) if shared.tx.is_closed() => Err(Close(Some(Msg::refused("server is shutting down")))),
        // Dropped unanswered while the server runs: a gateway's JetStream
        // refused the events (counted there; see `cluster::publish`).
        Err(_) => Ok(Reply::from(Msg::refused(
            "the events were not stored: NATS JetStream refused them (see the gateway's log); retry later",
        ))),
    }
}

/// Runs `f` on a large frame on a blocking thread, so that scanning or
/// decoding megabytes does not hold up every connection on the two async
/// workers; small frames are not worth the hop.
async fn off_workers<T: Send + 'static>(
    len: usize,
    body: Vec<u8>,
    f: impl FnOnce(Vec<u8>) -> T + Send + 'static,
) -> T {
    if len <= SMALL_FRAME {
        return f(body);
    }
    match tokio::task::spawn_blocking(move || f(body)).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// How many of each repeated field a message holds, counted on the wire.
/// Malformed input stops the count; decoding then reports it, having
/// allocated no more than what was counted.
#[derive(Default, Debug, PartialEq)]
struct Shape {
    events: usize,
    states: usize,
    tags: usize,
    attributes: usize,
}

impl Shape {
    fn of(body: &[u8]) -> Shape {
        let mut shape = Shape::default();
        each_field(body, |field, inner| match field {
            4 => {
                shape.states += 1;
                each_field(inner, |f, _| shape.tags += usize::from(f == 7));
            }
            6 => {
                shape.events += 1;
                each_field(inner, |f, _| match f {
                    7 => shape.tags += 1,
                    9 => shape.attributes += 1,
                    _ => {}
                });
            }
            _ => {}
        });
        shape
    }

    /// A generous estimate of the memory decoding takes: the frame, the
    /// decoded message, and the events built from it with their strings.
    fn decoded_bytes(&self, len: usize) -> usize {
        use std::mem::size_of;
        let event = size_of::<ProtoEvent>() + size_of::<Event>();
        let tag = size_of::<bytes::Bytes>() + size_of::<smol_str::SmolStr>();
        // A map entry: two Strings and the tree's share of a node.
        let attribute = size_of::<Attribute>() + 2 * size_of::<String>() + 16;
        (self.events + self.states) * event
            + self.tags * tag
            + self.attributes * attribute
            + 2 * len
    }
}

/// Calls `f(field number, payload)` for each length-delimited field of a
/// protobuf message, skipping the others, until the end or malformed input.
// This and `varint` read every byte of every frame: plain loops and
// comparisons, not iterator or Option chains, which an unoptimised build
// (the tests') runs several times slower.
fn each_field(buf: &[u8], mut f: impl FnMut(u64, &[u8])) {
    let mut pos = 0;
    while pos < buf.len() {
        let Some(key) = varint(buf, &mut pos) else {
            return;
        };
        match key & 7 {
            0 => {
                if varint(buf, &mut pos).is_none() {
                    return;
                }
            }
            1 => pos += 8,
            2 => {
                let Some(n) = varint(buf, &mut pos) else {
                    return;
                };
                // varint stops at the end, so `pos <= buf.len()` here.
                if n > (buf.len() - pos) as u64 {
                    return;
                }
                let end = pos + n as usize;
                f(key >> 3, &buf[pos..end]);
                pos = end;
            }
            5 => pos += 4,
            // Groups: not in Riemann's protocol.
            _ => return,
        }
    }
}

/// The varint at `pos`, moving past it; None if cut short or over 10 bytes.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    while *pos < buf.len() && shift < 70 {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
    }
    None
}

/// Answers a query from the index, within the query limits; the reply
/// holds its memory until written.
async fn answer_query(shared: &Shared, text: String, peer: SocketAddr) -> Reply {
    let stats = &shared.pipeline.ingest;
    stats.queries.fetch_add(1, Ordering::Relaxed);
    let limits = &shared.limits;
    let refuse = |why: String| {
        stats.tcp.refused_queries.fetch_add(1, Ordering::Relaxed);
        warn_limited!(BAD_CLIENT_LOG, "riemann tcp {peer}: refused a query: {why}");
        Reply::from(Msg::refused(why))
    };
    if text.len() > limits.max_query_bytes {
        return refuse(format!(
            "query of {} bytes; the limit is {} (--max-query-bytes)",
            text.len(),
            limits.max_query_bytes
        ));
    }
    // Parsing (regexes compile) and searching run off the async workers,
    // and the search off the index lock (see Index::search): a slow query
    // delays only its own client.
    let Ok(_searching) = shared.searches.acquire().await else {
        return Reply::from(Msg::refused("server is shutting down"));
    };
    let pipeline = Arc::clone(&shared.pipeline);
    let max_terms = limits.max_query_terms;
    let (max_results, max_bytes) = (limits.max_query_results, shared.max_frame);
    let answered = tokio::task::spawn_blocking(move || {
        let query = Query::parse(&text).map_err(|e| Refusal::Invalid(e.to_string()))?;
        if query.terms() > max_terms {
            return Err(Refusal::Limit(format!(
                "query has {} terms; the limit is {max_terms} (--max-query-terms)",
                query.terms()
            )));
        }
        search(&pipeline, &query, max_results, max_bytes).map_err(Refusal::Limit)
    })
    .await
    .unwrap_or_else(|e| Err(Refusal::Invalid(format!("query failed: {e}"))));
    let bytes = match answered {
        Ok(bytes) => bytes,
        Err(Refusal::Invalid(why)) => return Reply::from(Msg::refused(why)),
        Err(Refusal::Limit(why)) => return refuse(why),
    };
    match shared
        .pipeline
        .memory()
        .try_charge(Share::Replies, bytes.len())
    {
        Ok(charge) => Reply {
            bytes,
            _memory: Some(charge),
        },
        Err(full) => refuse(format!(
            "server busy: the {}-byte reply does not fit in memory now ({full}); retry later",
            bytes.len()
        )),
    }
}

/// Why a query gets an error reply: it is invalid, or over a limit
/// (counted in `refused_queries`).
enum Refusal {
    Invalid(String),
    Limit(String),
}

/// The encoded reply to `query`, or why it is refused: more than
/// `max_results` events, or more than `max_bytes` encoded.
fn search(
    pipeline: &Pipeline,
    query: &Query,
    max_results: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let found = pipeline.context().index.search(|e| query.matches(e));
    if found.len() > max_results {
        return Err(format!(
            "query matches {} events; the limit is {max_results} (--max-query-results); narrow the query",
            found.len()
        ));
    }
    let mut size = 2; // `ok`
    let mut events = Vec::with_capacity(found.len());
    for e in &found {
        let proto = to_proto(e);
        size += prost::encoding::message::encoded_len(6, &proto);
        if size > max_bytes {
            return Err(format!(
                "the reply to this query would exceed {max_bytes} bytes, the frame limit (--max-frame); narrow the query"
            ));
        }
        events.push(proto);
    }
    Ok(Msg {
        ok: Some(true),
        events,
        ..Msg::default()
    }
    .encode_to_vec())
}

async fn send<W: AsyncWriteExt + Unpin>(write: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    write.write_u32(bytes.len() as u32).await?;
    write.write_all(bytes).await?;
    write.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_counts_on_the_wire() {
        let msg = Msg {
            events: vec![
                ProtoEvent {
                    tags: vec!["a".into(), "b".into()],
                    attributes: vec![Attribute::default()],
                    metric_sint64: Some(3),
                    ..ProtoEvent::default()
                },
                ProtoEvent::default(),
            ],
            ..Msg::default()
        };
        let shape = Shape::of(&msg.encode_to_vec());
        assert_eq!(
            shape,
            Shape {
                events: 2,
                states: 0,
                tags: 2,
                attributes: 1
            }
        );
        // Two bytes per empty event: the amplification the count guards.
        assert_eq!(Shape::of(&[0x32, 0x00].repeat(1000)).events, 1000);
        // Malformed input stops the count at the last whole field.
        let mut cut = [0x32, 0x00].repeat(3);
        cut.extend_from_slice(&[0x32, 0x05, 0x00]);
        assert_eq!(Shape::of(&cut).events, 3);
        assert_eq!(Shape::of(&[0xff; 12]).events, 0);
    }

    #[test]
    fn varints_read_as_prost_writes_them() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            prost::encoding::encode_varint(value, &mut buf);
            buf.push(0x99);
            let mut pos = 0;
            assert_eq!(varint(&buf, &mut pos), Some(value), "{buf:x?}");
            assert_eq!(pos, buf.len() - 1, "stops after the varint: {buf:x?}");
            // Cut short by one byte: no value.
            let mut pos = 0;
            assert_eq!(varint(&buf[..buf.len() - 2], &mut pos), None);
        }
        // Ten bytes at most, as protobuf's varints.
        let mut pos = 0;
        assert_eq!(varint(&[0x80; 11], &mut pos), None);
        assert_eq!(pos, 10);
    }
}
