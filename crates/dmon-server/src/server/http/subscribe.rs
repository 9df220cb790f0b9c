//! `GET /index`: the index's matches once (JSON), or a live subscription
//! over a WebSocket or server-sent events, as Riemann's `/index` offers.
//!
//! A subscription sees each event as it is indexed and each event expired
//! from the index (state "expired"), filtered by its query; with
//! `subscribe=true` it first gets the current matches (at most
//! `--max-query-results`). SSE is chosen by `Accept: text/event-stream`
//! (what a browser's `EventSource` sends) or by the path `/index/sse` (for
//! clients that cannot set headers); every message is one event as JSON.
//!
//! The dispatch thread never waits for a subscriber: the index publishes
//! into a broadcast channel, and a task per subscriber (the pump) filters
//! with its query into a bounded queue that the connection drains. A
//! subscriber whose queue is full, or that fell [`SUBSCRIBER_BACKLOG`]
//! events behind on the broadcast, is disconnected and counted in
//! `http_subscribers_dropped`.
//!
//! A subscription to what never comes would otherwise hold its slot for
//! ever: every `--http-keepalive` the connection gets a keep-alive (a
//! WebSocket ping, or an SSE `: keep-alive` comment), so a dead peer is
//! found (a write fails or stalls, or a ping goes unanswered until the
//! next: dropped and counted), and one sent nothing but keep-alives for
//! `--idle-timeout` is closed and counted in `http_subscribers_idle`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query as Params, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{parse_query, search, with_warnings, ConnectionFailed, HttpError, Shared, LOG};
use crate::codec::json;
use crate::event::Event;
use crate::index_feed::{Subscription, SUBSCRIBER_BACKLOG};
use crate::memory::{Charge, Share};
use crate::query::Query;
use crate::warn_limited;

/// Matching events a subscriber's connection may have waiting; a
/// subscriber further behind is dropped.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// How long a WebSocket may take to accept one message before it is
/// dropped as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub struct IndexParams {
    query: Option<String>,
    subscribe: Option<String>,
}

/// How the answer goes out.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Once,
    WebSocket,
    Sse,
}

pub async fn index(
    State(shared): State<Arc<Shared>>,
    Params(params): Params<IndexParams>,
    failed: Option<Extension<ConnectionFailed>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let wants_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let (mode, ws) = match ws {
        Ok(ws) => (Mode::WebSocket, Some(ws)),
        Err(_) if wants_sse => (Mode::Sse, None),
        Err(_) => (Mode::Once, None),
    };
    answer(shared, params, mode, ws, failed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/index/sse`: SSE whatever the Accept header says.
pub async fn index_sse(
    State(shared): State<Arc<Shared>>,
    Params(params): Params<IndexParams>,
    failed: Option<Extension<ConnectionFailed>>,
) -> Response {
    answer(shared, params, Mode::Sse, None, failed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    shared: Arc<Shared>,
    params: IndexParams,
    mode: Mode,
    ws: Option<WebSocketUpgrade>,
    failed: Option<Extension<ConnectionFailed>>,
) -> Result<Response, HttpError> {
    let Some(text) = params.query else {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "missing the query parameter: /index?query=Q, e.g. query=true for everything \
             (URL-encoded Riemann query)",
        ));
    };
    let query = parse_query(&shared, text).await?;
    if mode == Mode::Once {
        let found = search(&shared, &query).await?;
        return Ok(with_warnings(json_array(&shared, found)?, &query));
    }
    let Ok(slot) = Arc::clone(&shared.subscribers).try_acquire_owned() else {
        shared
            .stats()
            .subscribers_refused
            .fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            LOG,
            "http: subscription refused: {} are open, the limit (--http-max-subscribers)",
            shared.limits.max_subscribers
        );
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} subscriptions are open, the limit (--http-max-subscribers); retry later",
                shared.limits.max_subscribers
            ),
        ));
    };
    // Subscribed before the search, so nothing indexed in between is
    // missed (it may come twice, as in Riemann).
    let subscription = shared.pipeline.index_feed().subscribe();
    let subscribe = params.subscribe.as_deref() == Some("true");
    let first = if subscribe {
        let found = search(&shared, &query).await?;
        found
            .into_iter()
            .map(|e| queued(&shared, e))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server busy: the subscription's first matches do not fit in the memory for subscribers' queues now (--memory-limit); retry later or narrow the query",
                )
            })?
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
    let ending = Ending::default();
    let pumped = ending.clone();
    let response = match ws {
        Some(ws) => {
            let shared = Arc::clone(&shared);
            ws
                // Clients send nothing that matters; big messages are refused.
                .max_message_size(64 * 1024)
                .on_upgrade(move |socket| websocket(socket, shared, first, rx, ending))
        }
        None => {
            let failed = failed.map(|Extension(f)| f).unwrap_or_default();
            sse_stream(Arc::clone(&shared), first, rx, failed, ending).into_response()
        }
    };
    let response = with_warnings(response, &query);
    tokio::spawn(pump(shared, subscription, query, tx, slot, pumped));
    Ok(response)
}

/// `events` as a JSON array, encoded a chunk at a time as the client reads,
/// so a client that does not read holds one chunk, not the whole answer.
/// What the answer keeps alive (the events, should the index drop them
/// meanwhile) is charged to [`Share::Replies`] until it is written or the
/// client leaves; an answer that does not fit gets 503.
fn json_array(shared: &Shared, events: Vec<Arc<Event>>) -> Result<Response, HttpError> {
    let bytes = events.iter().map(|e| e.retained_bytes()).sum();
    let charge = shared
        .pipeline
        .memory()
        .try_charge(Share::Replies, bytes)
        .map_err(|full| {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("server busy: the answer ({} events) does not fit in memory now ({full}); retry later or narrow the query", events.len()),
            )
        })?;
    /// Bytes encoded per chunk.
    const CHUNK: usize = 64 * 1024;
    // (events left, events written, the charge until the last chunk)
    let chunks = futures_util::stream::unfold(
        (events.into_iter(), 0, Some(charge)),
        |(mut events, mut written, mut charge)| async move {
            charge.as_ref()?;
            let mut chunk = String::with_capacity(CHUNK + 1024);
            if written == 0 {
                chunk.push('[');
            }
            while chunk.len() < CHUNK {
                let Some(e) = events.next() else {
                    chunk.push_str("]\n");
                    // The last chunk: nothing is held any more.
                    charge = None;
                    break;
                };
                if written > 0 {
                    chunk.push(',');
                }
                chunk.push_str(&json::encode(&e));
                written += 1;
            }
            Some((Ok::<_, Infallible>(chunk), (events, written, charge)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// An event queued for a subscriber, charged to [`Share::Subscribers`]
/// until sent: the queue may keep it alive after the index let it go.
type Queued = (Arc<Event>, Charge);

/// `event` charged for a subscriber's queue; `None` when the share is full
/// (counted as refused).
fn queued(shared: &Shared, event: Arc<Event>) -> Option<Queued> {
    let bytes = event.retained_bytes();
    let charge = shared
        .pipeline
        .memory()
        .try_charge(Share::Subscribers, bytes)
        .ok()?;
    Some((event, charge))
}

/// Filters the index's feed with `query` into the subscriber's queue until
/// the subscriber leaves, falls behind (dropped and counted), or the server
/// stops. Holds the subscriber's slot.
async fn pump(
    shared: Arc<Shared>,
    mut subscription: Subscription,
    query: Arc<Query>,
    out: mpsc::Sender<Queued>,
    _slot: OwnedSemaphorePermit,
    ending: Ending,
) {
    let mut shutdown = shared.shutdown.clone();
    let dropped = |why: String| ending.dropped(&shared, why);
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => return,
            _ = out.closed() => return,
            received = subscription.events.recv() => received,
        };
        match received {
            Ok(event) => {
                if !query.matches(&event) {
                    continue;
                }
                let Some(event) = queued(&shared, event) else {
                    return dropped(
                        "the memory for subscribers' queues is full (--memory-limit)".into(),
                    );
                };
                match out.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        return dropped(format!(
                            "it did not read {SUBSCRIBER_QUEUE} matching events in time"
                        ))
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(RecvError::Lagged(n)) => {
                return dropped(format!(
                    "its filter fell {n} events behind the index (backlog {SUBSCRIBER_BACKLOG})"
                ))
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// How a subscription ended, counted once: its pump and its connection
/// may both see the end (a subscriber dropped for falling behind may then
/// fail a write too).
#[derive(Clone, Default)]
struct Ending(Arc<AtomicBool>);

impl Ending {
    /// Whether the end is already known; true the first time only.
    fn first(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }

    fn is_known(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts the subscriber as disconnected for `why`, with a
    /// rate-limited warning.
    fn dropped(&self, shared: &Shared, why: String) {
        if self.first() {
            shared
                .stats()
                .subscribers_dropped
                .fetch_add(1, Ordering::Relaxed);
            warn_limited!(LOG, "http: dropped a subscriber: {why}");
        }
    }

    /// Counts the subscription as closed for having been sent nothing but
    /// keep-alives for `--idle-timeout`; says why, as a close reason.
    fn idle(&self, shared: &Shared) -> String {
        let why = format!(
            "closed: nothing matched for {} s (--idle-timeout)",
            shared.limits.idle_timeout.as_secs_f64()
        );
        if self.first() {
            shared
                .stats()
                .subscribers_idle
                .fetch_add(1, Ordering::Relaxed);
            warn_limited!(LOG, "http: a subscription was {why}");
        }
        why
    }

    /// Ended with nothing to count: the pump ended (the server stops, or it
    /// counted the end itself).
    fn quietly(&self) {
        self.first();
    }
}

/// Sends `first`, then every event the pump queues, one JSON text message
/// each, and a ping every `--http-keepalive`. Ends when the client closes,
/// the pump ends, or (counted) a send fails or takes longer than
/// [`SEND_TIMEOUT`], a ping is not answered before the next one is due, or
/// nothing but pings went out for `--idle-timeout`.
async fn websocket(
    mut socket: WebSocket,
    shared: Arc<Shared>,
    first: Vec<Queued>,
    mut queue: mpsc::Receiver<Queued>,
    ending: Ending,
) {
    let sent = &shared.stats().subscription_events;
    let limits = &shared.limits;
    let dropped = |why: &str| ending.dropped(&shared, why.to_owned());
    for (e, _held) in first {
        if !send(&mut socket, event_message(&e)).await {
            return dropped("a send failed or timed out");
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let start = tokio::time::Instant::now();
    let mut keepalive = tokio::time::interval_at(start + limits.keepalive, limits.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            event = queue.recv() => match event {
                Some((e, _held)) => {
                    if !send(&mut socket, event_message(&e)).await {
                        return dropped("a send failed or timed out");
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            // Reading also answers the client's pings; a close or an error
            // ends it.
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                if awaiting_pong {
                    return dropped(&format!(
                        "no pong within {} s of a ping (--http-keepalive)",
                        limits.keepalive.as_secs_f64()
                    ));
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    return dropped("a ping failed or timed out");
                }
                awaiting_pong = true;
            }
            _ = &mut idle => {
                let why = ending.idle(&shared);
                let close = axum::extract::ws::CloseFrame {
                    // 1001, "going away": the client may subscribe again.
                    code: 1001,
                    reason: why.into(),
                };
                let _ = send(&mut socket, Message::Close(Some(close))).await;
                return;
            }
        }
    }
}

fn event_message(e: &Event) -> Message {
    Message::Text(json::encode(e).into())
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// `first`, then every event the pump queues, as server-sent events (one
/// `data:` line of JSON each), with a `: keep-alive` comment every
/// `--http-keepalive` so a dead client is noticed (its connection's write
/// fails: counted as dropped), and closed (counted as idle) once nothing
/// else was sent for `--idle-timeout`.
fn sse_stream(
    shared: Arc<Shared>,
    first: Vec<Queued>,
    queue: mpsc::Receiver<Queued>,
    failed: ConnectionFailed,
    ending: Ending,
) -> impl IntoResponse {
    let keepalive = KeepAlive::new()
        .interval(shared.limits.keepalive)
        .text("keep-alive");
    let feed = SseFeed {
        idle: Box::pin(tokio::time::sleep(shared.limits.idle_timeout)),
        shared,
        first: first.into_iter(),
        queue,
        failed,
        ending,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        // Closed idle, or dropped by its pump: nothing more to send.
        if feed.ending.is_known() {
            return None;
        }
        let (event, _held) = match feed.first.next() {
            Some(queued) => queued,
            None => tokio::select! {
                event = feed.queue.recv() => match event {
                    Some(queued) => queued,
                    None => {
                        feed.ending.quietly();
                        return None;
                    }
                },
                _ = feed.idle.as_mut() => {
                    let why = feed.ending.idle(&feed.shared);
                    return Some((Ok(sse::Event::default().comment(why)), feed));
                }
            },
        };
        let idle_timeout = feed.shared.limits.idle_timeout;
        feed.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + idle_timeout);
        feed.shared
            .stats()
            .subscription_events
            .fetch_add(1, Ordering::Relaxed);
        let message = sse::Event::default().data(json::encode(&event));
        Some((Ok::<_, Infallible>(message), feed))
    });
    Sse::new(stream).keep_alive(keepalive)
}

/// An SSE subscription's state. Dropped before its end was known, after
/// its connection failed, it counts its subscriber as dropped: the client
/// stopped reading or went away without closing.
struct SseFeed {
    shared: Arc<Shared>,
    first: std::vec::IntoIter<Queued>,
    queue: mpsc::Receiver<Queued>,
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
    failed: ConnectionFailed,
    ending: Ending,
}

impl Drop for SseFeed {
    fn drop(&mut self) {
        if self.failed.is_set() {
            self.ending.dropped(
                &self.shared,
                "its connection failed: a reset, or a write stalled past --idle-timeout".into(),
            );
        }
    }
}
