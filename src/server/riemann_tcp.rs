//! Riemann's TCP protocol (default `127.0.0.1:5555`): 4-byte big-endian
//! length, then a protobuf `Msg`.
//!
//! Each connection answers one request at a time, in order, as Riemann's
//! clients expect. Events are acknowledged once they have been through every
//! root (so a query sent after the ack sees them, and a full pipeline slows
//! the sender instead of dropping); a query is answered from the index.
//!
//! Memory stays bounded under hostile clients: a frame over `max_frame` gets
//! an error reply and the connection is closed before anything is allocated;
//! all connections together hold at most [`FRAME_BUDGET`] bytes of large
//! frames, and a large frame that does not fit is refused at once rather
//! than queued (so idle senders of huge frames cannot starve small ones); a
//! body must arrive within [`BODY_DEADLINE`]. A client that stops reading
//! stalls only itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::codec::riemann::{from_proto, Msg};
use crate::event::now_secs;
use crate::log_limit::LogLimiter;
use crate::pipeline::{Pipeline, Work};
use crate::query::Query;
use crate::warn_limited;

/// Default largest frame accepted.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// Bytes of large frames all connections may hold at once.
pub const FRAME_BUDGET: usize = 256 * 1024 * 1024;
/// Frames up to this size are not counted against the budget: a connection
/// holds at most one, so they are bounded by the number of connections.
const SMALL_FRAME: usize = 64 * 1024;
/// How long a client may take to send a frame's body once its length has
/// arrived; a client that stalls mid-frame must not hold memory for ever.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

static BAD_CLIENT_LOG: LogLimiter = LogLimiter::new(10);

/// What every connection shares.
pub struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub tx: mpsc::Sender<Work>,
    pub max_frame: usize,
    /// Permits are KiB of frame memory.
    budget: Semaphore,
}

impl Shared {
    pub fn new(pipeline: Arc<Pipeline>, tx: mpsc::Sender<Work>, max_frame: usize) -> Self {
        Shared {
            pipeline,
            tx,
            max_frame,
            budget: Semaphore::new(FRAME_BUDGET / 1024),
        }
    }
}

/// Accepts connections until `shutdown` fires.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.pipeline.ingest.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_connection(stream, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(e) => {
                    warn_limited!(BAD_CLIENT_LOG, "riemann tcp accept failed: {e}");
                }
            },
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (read, write) = stream.into_split();
    // Small buffers: a thousand idle connections cost little; large frames
    // are read straight into their own buffer.
    let mut read = BufReader::with_capacity(8 * 1024, read);
    let mut write = BufWriter::new(write);
    loop {
        let len = tokio::select! {
            _ = shutdown.changed() => return,
            len = read.read_u32() => match len {
                Ok(len) => len as usize,
                Err(_) => return, // closed between messages
            },
        };
        let reply = match request(&mut read, len, peer, &shared).await {
            Ok(reply) => reply,
            Err(Close(reply)) => {
                if let Some(reply) = reply {
                    let _ = send(&mut write, &reply).await;
                }
                return;
            }
        };
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

/// Ends the connection, after an optional last reply.
struct Close(Option<Msg>);

async fn request(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    len: usize,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Msg, Close> {
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
    let _budget = if len > SMALL_FRAME {
        let kib = len.div_ceil(1024) as u32;
        match shared.budget.try_acquire_many(kib) {
            Ok(permit) => Some(permit),
            Err(_) => {
                stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                warn_limited!(BAD_CLIENT_LOG, "riemann tcp {peer}: refused a {len}-byte frame: large frames in flight already fill the {} MiB budget", FRAME_BUDGET >> 20);
                return Err(Close(Some(Msg::refused(format!(
                    "server busy: too many large messages in flight; retry the {len}-byte message later"
                )))));
            }
        }
    } else {
        None
    };
    let mut body = vec![0u8; len];
    let received = match tokio::time::timeout(BODY_DEADLINE, read.read_exact(&mut body)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not received within {BODY_DEADLINE:?}")),
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
    // Decoding from `Bytes` lets string fields borrow the frame, not copy it.
    let msg = match Msg::decode(bytes::Bytes::from(body)) {
        Ok(msg) => msg,
        Err(e) => {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                BAD_CLIENT_LOG,
                "riemann tcp {peer}: invalid message ({len} bytes): {e}"
            );
            // The framing is intact, so the connection stays usable.
            return Ok(Msg::refused(format!("invalid protobuf message: {e}")));
        }
    };
    if let Some(text) = msg.query_text() {
        return Ok(answer_query(&shared.pipeline, &text));
    }
    let now = now_secs();
    let events: Vec<_> = msg.events.iter().map(|e| from_proto(e, now)).collect();
    stats
        .events
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    if events.is_empty() {
        return Ok(Msg::acknowledged());
    }
    let (done, processed) = oneshot::channel();
    let work = Work::Acked(events, done);
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
    processed
        .await
        .map(|()| Msg::acknowledged())
        .map_err(|_| Close(Some(Msg::refused("server is shutting down"))))
}

/// The index's events matching `text`, or the parse error.
pub fn answer_query(pipeline: &Pipeline, text: &str) -> Msg {
    pipeline.ingest.queries.fetch_add(1, Ordering::Relaxed);
    match Query::parse(text) {
        Ok(query) => Msg {
            ok: Some(true),
            events: pipeline
                .context()
                .index
                .search(|e| query.matches(e))
                .iter()
                .map(|e| crate::codec::riemann::to_proto(e))
                .collect(),
            ..Msg::default()
        },
        Err(e) => Msg::refused(e.to_string()),
    }
}

async fn send<W: AsyncWriteExt + Unpin>(write: &mut W, msg: &Msg) -> std::io::Result<()> {
    let bytes = msg.encode_to_vec();
    write.write_u32(bytes.len() as u32).await?;
    write.write_all(&bytes).await?;
    write.flush().await
}
