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

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query as Params, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{parse_query, search, with_warnings, HttpError, Shared, LOG};
use crate::codec::json;
use crate::event::Event;
use crate::index::{Subscription, SUBSCRIBER_BACKLOG};
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
    answer(shared, params, mode, ws)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/index/sse`: SSE whatever the Accept header says.
pub async fn index_sse(
    State(shared): State<Arc<Shared>>,
    Params(params): Params<IndexParams>,
) -> Response {
    answer(shared, params, Mode::Sse, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    shared: Arc<Shared>,
    params: IndexParams,
    mode: Mode,
    ws: Option<WebSocketUpgrade>,
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
        return Ok(with_warnings(json_array(&found), &query));
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
    let subscription = shared.pipeline.context().index.subscribe();
    let subscribe = params.subscribe.as_deref() == Some("true");
    let first = if subscribe {
        search(&shared, &query).await?
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
    let response = match ws {
        Some(ws) => {
            let shared = Arc::clone(&shared);
            ws
                // Clients send nothing that matters; big messages are refused.
                .max_message_size(64 * 1024)
                .on_upgrade(move |socket| websocket(socket, shared, first, rx))
        }
        None => sse_stream(Arc::clone(&shared), first, rx).into_response(),
    };
    let response = with_warnings(response, &query);
    tokio::spawn(pump(shared, subscription, query, tx, slot));
    Ok(response)
}

fn json_array(events: &[Arc<Event>]) -> Response {
    let mut body = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&json::encode(e));
    }
    body.push_str("]\n");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Filters the index's feed with `query` into the subscriber's queue until
/// the subscriber leaves, falls behind (dropped and counted), or the server
/// stops. Holds the subscriber's slot.
async fn pump(
    shared: Arc<Shared>,
    mut subscription: Subscription,
    query: Arc<Query>,
    out: mpsc::Sender<Arc<Event>>,
    _slot: OwnedSemaphorePermit,
) {
    let mut shutdown = shared.shutdown.clone();
    let dropped = |why: String| {
        shared
            .stats()
            .subscribers_dropped
            .fetch_add(1, Ordering::Relaxed);
        warn_limited!(LOG, "http: dropped a subscriber: {why}");
    };
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

/// Sends `first`, then every event the pump queues, one JSON text message
/// each; ends when the client closes, the pump ends, or a send takes longer
/// than [`SEND_TIMEOUT`].
async fn websocket(
    mut socket: WebSocket,
    shared: Arc<Shared>,
    first: Vec<Arc<Event>>,
    mut queue: mpsc::Receiver<Arc<Event>>,
) {
    let sent = &shared.stats().subscription_events;
    for e in first {
        if !send(&mut socket, &e).await {
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        tokio::select! {
            event = queue.recv() => match event {
                Some(e) => {
                    if !send(&mut socket, &e).await {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            // Reading also answers pings; a close or an error ends it.
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, e: &Event) -> bool {
    let message = Message::Text(json::encode(e).into());
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// `first`, then every event the pump queues, as server-sent events (one
/// `data:` line of JSON each), with keep-alive comments so a dead client is
/// noticed.
fn sse_stream(
    shared: Arc<Shared>,
    first: Vec<Arc<Event>>,
    queue: mpsc::Receiver<Arc<Event>>,
) -> impl IntoResponse {
    let state = (shared, first.into_iter(), queue);
    let stream = futures_util::stream::unfold(state, |(shared, mut first, mut queue)| async move {
        let event = match first.next() {
            Some(e) => e,
            None => queue.recv().await?,
        };
        shared
            .stats()
            .subscription_events
            .fetch_add(1, Ordering::Relaxed);
        let message = sse::Event::default().data(json::encode(&event));
        Some((Ok::<_, Infallible>(message), (shared, first, queue)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
