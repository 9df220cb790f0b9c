//! The gateway (`serve --publish URL`): what the sources receive goes to
//! JetStream, to its host's partition, instead of (or, with
//! `--also-process`, as well as) through this node's streams.
//!
//! The publisher is a task between the sources and the dispatch thread
//! ([`Gateway::in_front_of`]): events are grouped by partition and batched
//! (up to [`BATCH_EVENTS`] events or [`BATCH_BYTES`], or [`LINGER`] after
//! the first; at once when a sender waits for its ack and nothing more is
//! queued), each batch published with a `Nats-Msg-Id` unique to it, many
//! at once ([`MAX_BATCHES_IN_FLIGHT`]). A source's unit of work (a UDP
//! read, a Riemann message) is released, its permits given back and its
//! `done` told, only once JetStream acknowledged every batch holding its
//! events: a Riemann TCP client's `ok` means "stored in JetStream".
//!
//! Bounded: the pipeline's permits (`--max-in-flight`) are held until
//! JetStream's ack, so while NATS is unreachable the sources back up (UDP
//! overflows the kernel's buffer, counted as kernel drops; Riemann TCP
//! clients wait) instead of memory growing. A publish that times out or
//! finds no JetStream is retried, same batch and same Msg-Id (JetStream
//! stores it once), with backoff, for as long as it takes; a batch
//! JetStream refuses (the stream is full) is dropped, counted, and its
//! Riemann TCP senders get an error reply.
//!
//! Per-host order is kept while NATS answers; a batch retried after an
//! outage may land after a later batch of its partition.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{connect, partition_of, subject, ClusterError, Connection, NatsAuth};
use crate::event::{Event, Number};
use crate::log_limit::LogLimiter;
use crate::pipeline::{Permits, Pipeline, Work, CHANNEL_CAPACITY};
use crate::stats::{ComponentCounters, ComponentReport};
use crate::warn_limited;

/// Most events in one published batch.
pub const BATCH_EVENTS: usize = 500;

/// Most bytes in one published batch: well under nats-server's default
/// 1 MiB message limit, whatever the events carry.
pub const BATCH_BYTES: usize = 256 * 1024;

/// How long a partition's batch may wait for more events.
pub const LINGER: Duration = Duration::from_millis(5);

/// Batches published and not yet acknowledged, at most.
pub const MAX_BATCHES_IN_FLIGHT: usize = 64;

/// Backoff between retries of one batch.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a clean stop waits for JetStream to acknowledge what is still
/// held; past it the rest is counted as failed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The gateway's counters (one gateway per process), in [`crate::stats::Stats`]
/// as `cluster_published`, `cluster_publish_*`.
pub struct PublishCounters {
    /// Events JetStream acknowledged.
    pub published: AtomicU64,
    /// Batches JetStream acknowledged.
    pub batches: AtomicU64,
    /// Publishes retried (timed out, NATS or JetStream unreachable).
    pub retries: AtomicU64,
    /// Events JetStream refused, or still unacknowledged when a stop's
    /// grace ran out.
    pub failed: AtomicU64,
    /// Events received and not yet acknowledged by JetStream (a gauge).
    pub waiting: AtomicU64,
}

/// `dmon stats`' `cluster_published`, `cluster_publish_*`.
impl ComponentCounters for PublishCounters {
    fn report(&self) -> ComponentReport {
        ComponentReport::counts(&[
            ("cluster_published", &self.published),
            ("cluster_publish_batches", &self.batches),
            ("cluster_publish_retries", &self.retries),
            ("cluster_publish_failed", &self.failed),
            ("cluster_publish_waiting", &self.waiting),
        ])
    }
}

pub static COUNTERS: PublishCounters = PublishCounters {
    published: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    waiting: AtomicU64::new(0),
};

static RETRY_LOG: LogLimiter = LogLimiter::per(1, Duration::from_secs(5));
static REFUSED_LOG: LogLimiter = LogLimiter::per(1, Duration::from_secs(5));

/// A connected gateway, ready to sit in front of a dispatcher.
pub struct Gateway {
    conn: Connection,
    count: u32,
    /// Msg-Ids are this, `-`, a sequence: the node's name and when it
    /// started, so a restarted gateway of the same name does not reuse ids
    /// JetStream still remembers (and would drop as duplicates).
    id_prefix: String,
    also_process: bool,
}

impl Gateway {
    /// Connects to `url` as `node`, and makes sure the events stream exists
    /// with `count` partitions.
    pub async fn start(
        url: &str,
        node: &str,
        count: u32,
        also_process: bool,
        auth: &NatsAuth,
    ) -> Result<Gateway, ClusterError> {
        let conn = connect(url, node, auth).await?;
        conn.prepare(count).await?;
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        tracing::info!(
            "gateway: publishing received events to {} ({count} partitions){}",
            conn.url,
            if also_process {
                ", and processing them here"
            } else {
                ""
            }
        );
        Ok(Gateway {
            conn,
            count,
            id_prefix: format!("{node}-{boot:x}"),
            also_process,
        })
    }

    /// Wraps `spawn` (which starts the dispatch thread on the channel it is
    /// given) so that the sources' channel goes through the publisher
    /// first. Must be called within a Tokio runtime (as `Server::start`
    /// does).
    pub fn in_front_of<D>(
        self,
        spawn: D,
    ) -> impl FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> JoinHandle<()>
    where
        D: FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> JoinHandle<()>,
    {
        move |pipeline, rx| {
            let (local, local_rx) = mpsc::channel(CHANNEL_CAPACITY);
            let dispatcher = spawn(Arc::clone(&pipeline), local_rx);
            tokio::spawn(Publisher::new(self, pipeline, local).run(rx));
            dispatcher
        }
    }
}

/// `spawn` behind `gateway`'s publisher, or `spawn` itself without one.
pub fn through<D>(
    gateway: Option<Gateway>,
    spawn: D,
) -> impl FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> JoinHandle<()>
where
    D: FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> JoinHandle<()>,
{
    move |pipeline, rx| match gateway {
        Some(gateway) => {
            pipeline.add_counters(Arc::new(&COUNTERS));
            gateway.in_front_of(spawn)(pipeline, rx)
        }
        None => spawn(pipeline, rx),
    }
}

/// A source's unit of work, held by every batch holding its events: when
/// the last lets go, its permits go back and its sender is told (or, if a
/// batch failed, `done` is dropped unanswered: a Riemann TCP client gets
/// an error reply).
struct Ticket {
    permits: Option<Permits>,
    done: Option<oneshot::Sender<()>>,
    failed: AtomicBool,
}

impl Ticket {
    fn new(permits: Option<Permits>, done: Option<oneshot::Sender<()>>) -> Arc<Ticket> {
        Arc::new(Ticket {
            permits,
            done,
            failed: AtomicBool::new(false),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Permits first, as the dispatch thread does: no longer queued.
        drop(self.permits.take());
        if let Some(done) = self.done.take() {
            if !self.failed.load(Ordering::Relaxed) {
                let _ = done.send(());
            }
        }
    }
}

/// A partition's batch being filled: its events already encoded (a
/// Riemann `Msg` is its events' encodings one after the other).
#[derive(Default)]
struct Pending {
    payload: Vec<u8>,
    events: u64,
    tickets: Vec<Arc<Ticket>>,
    since: Option<Instant>,
    /// A sender waits for its ack (Riemann TCP, `inject`): not worth
    /// lingering for once nothing more is queued.
    awaited: bool,
}

/// A batch being published: until JetStream acknowledged it, dropping it
/// (refused, or abandoned at stop) fails its tickets.
struct Batch {
    subject: String,
    id: String,
    payload: Bytes,
    events: u64,
    tickets: Vec<Arc<Ticket>>,
    stored: bool,
}

impl Drop for Batch {
    fn drop(&mut self) {
        COUNTERS.waiting.fetch_sub(self.events, Ordering::Relaxed);
        if !self.stored {
            COUNTERS.failed.fetch_add(self.events, Ordering::Relaxed);
            for t in &self.tickets {
                t.failed.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct Publisher {
    gateway: Gateway,
    pipeline: Arc<Pipeline>,
    local: mpsc::Sender<Work>,
    pending: Vec<Pending>,
    /// Full batches waiting for a slot, in the order made. Not bounded
    /// in batches: their events hold the sources' permits, which are.
    /// Never waiting for a slot elsewhere keeps the loop reading its
    /// channel during an outage (ticks go on, a stop is seen).
    ready: VecDeque<Batch>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    seq: u64,
    /// One event's encoding, reused.
    scratch: Vec<u8>,
}

impl Publisher {
    fn new(gateway: Gateway, pipeline: Arc<Pipeline>, local: mpsc::Sender<Work>) -> Self {
        let pending = (0..gateway.count).map(|_| Pending::default()).collect();
        Publisher {
            gateway,
            pipeline,
            local,
            pending,
            ready: VecDeque::new(),
            slots: Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT)),
            tasks: JoinSet::new(),
            seq: 0,
            scratch: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        loop {
            let due = self.pending.iter().filter_map(|p| p.since).min();
            let slots = Arc::clone(&self.slots);
            let work = tokio::select! {
                work = rx.recv() => work,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now) + LINGER), if due.is_some() => {
                    self.flush_due();
                    self.launch().await;
                    continue;
                }
                // The semaphore is never closed.
                Ok(slot) = slots.acquire_owned(), if !self.ready.is_empty() => {
                    if let Some(batch) = self.ready.pop_front() {
                        self.send(batch, slot).await;
                    }
                    self.launch().await;
                    continue;
                }
            };
            // Reap finished publishes (their results are in the counters).
            while self.tasks.try_join_next().is_some() {}
            match work {
                None => {
                    // Every sender is gone: the dispatcher's channel closes
                    // when this returns.
                    self.finish().await;
                    return;
                }
                Some(Work::Stop) => {
                    self.finish().await;
                    let _ = self.local.send(Work::Stop).await;
                    return;
                }
                Some(Work::Tick) => {
                    let _ = self.local.send(Work::Tick).await;
                }
                // A job for the streams' side (a worker's checkpoint): it
                // goes where the streams run.
                Some(Work::Call(job)) => {
                    let _ = self.local.send(Work::Call(job)).await;
                }
                // dmon's own events sent through the roots: the
                // cluster's roots run on its workers, so they are
                // published like received events.
                Some(Work::Own(events)) if self.pipeline.self_events_to_streams() => {
                    self.publish_unreceived(events).await;
                }
                // Otherwise they stay here, in this node's index, which
                // cluster queries ask.
                Some(Work::Own(events)) => {
                    let _ = self.local.send(Work::Own(events)).await;
                }
                Some(Work::Events(events)) => self.publish_unreceived(events).await,
                Some(Work::Acked(events, done)) => {
                    let ticket = Ticket::new(None, Some(done));
                    self.take_received(events, ticket).await;
                }
                Some(Work::Reserved(events, permits, done)) => {
                    let ticket = Ticket::new(Some(permits), done);
                    self.take_received(events, ticket).await;
                }
            }
            if rx.is_empty() {
                // Nothing more to batch with for now: a waiting sender
                // gets its ack without the linger.
                for p in 0..self.pending.len() {
                    if self.pending[p].awaited {
                        self.flush(p);
                    }
                }
                self.launch().await;
            }
        }
    }

    /// Received events: published, and with `--also-process` run here as
    /// well, the ticket then also waiting for that.
    async fn take_received(&mut self, events: Vec<Event>, ticket: Arc<Ticket>) {
        let local = self.gateway.also_process.then(|| events.clone());
        self.take(events, Arc::clone(&ticket)).await;
        if let Some(events) = local {
            let (done, processed) = oneshot::channel();
            tokio::spawn(async move {
                let _ = processed.await;
                drop(ticket);
            });
            let _ = self.local.send(Work::Acked(events, done)).await;
        }
    }

    /// Events no source received (dmon's own sent through the roots,
    /// benchmarks'): published, nobody waiting for the ack, and with
    /// `--also-process` run through this node's roots too.
    async fn publish_unreceived(&mut self, events: Vec<Event>) {
        let local = self.gateway.also_process.then(|| events.clone());
        self.take(events, Ticket::new(None, None)).await;
        if let Some(events) = local {
            let _ = self.local.send(Work::Events(events)).await;
        }
    }

    /// Puts events into their partitions' batches, publishing those that
    /// fill up.
    async fn take(&mut self, events: Vec<Event>, ticket: Arc<Ticket>) {
        COUNTERS
            .waiting
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // Workers see the receive time, not the time they get the event.
        let now = self.pipeline.context().now();
        for mut event in events {
            if event.time.is_none() {
                event.time = Some(Number::Float(now));
            }
            let p = partition_of(event.host.as_deref(), self.gateway.count) as usize;
            let pending = &mut self.pending[p];
            append_event(&mut self.scratch, &mut pending.payload, &event);
            pending.events += 1;
            if !pending
                .tickets
                .last()
                .is_some_and(|t| Arc::ptr_eq(t, &ticket))
            {
                pending.tickets.push(Arc::clone(&ticket));
                pending.awaited |= ticket.done.is_some();
            }
            pending.since.get_or_insert_with(Instant::now);
            if pending.events as usize >= BATCH_EVENTS || pending.payload.len() >= BATCH_BYTES {
                self.flush(p);
            }
        }
        self.launch().await;
    }

    /// Closes the batches that have waited [`LINGER`].
    fn flush_due(&mut self) {
        let now = Instant::now();
        for p in 0..self.pending.len() {
            if self.pending[p].since.is_some_and(|s| now >= s + LINGER) {
                self.flush(p);
            }
        }
    }

    /// Closes partition `p`'s batch: it waits for a slot.
    fn flush(&mut self, p: usize) {
        if self.pending[p].events == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.pending[p]);
        self.seq += 1;
        let batch = Batch {
            subject: subject(p as u32),
            id: format!("{}-{}", self.gateway.id_prefix, self.seq),
            payload: Bytes::from(pending.payload),
            events: pending.events,
            tickets: pending.tickets,
            stored: false,
        };
        self.ready.push_back(batch);
    }

    /// Sends the ready batches there are free slots for.
    async fn launch(&mut self) {
        while !self.ready.is_empty() {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                return;
            };
            if let Some(batch) = self.ready.pop_front() {
                self.send(batch, slot).await;
            }
        }
    }

    async fn send(&mut self, batch: Batch, slot: OwnedSemaphorePermit) {
        let conn = self.gateway.conn.clone();
        // Sent from here, in order, so a partition's batches reach
        // JetStream in the order received (per-host order); only the wait
        // for the ack, and retries, go to their own task.
        let sent = send(&conn, &batch).await;
        self.tasks.spawn(publish(conn, batch, slot, sent));
    }

    /// Publishes everything held and waits (at most [`STOP_GRACE`]) for
    /// JetStream to acknowledge it; the rest is counted as failed.
    async fn finish(&mut self) {
        let held = COUNTERS.waiting.load(Ordering::Relaxed);
        if held > 0 {
            tracing::info!("gateway: waiting for JetStream to acknowledge {held} events");
        }
        for p in 0..self.pending.len() {
            self.flush(p);
        }
        let flushed = tokio::time::timeout(STOP_GRACE, async {
            while let Some(batch) = self.ready.pop_front() {
                // The semaphore is never closed.
                if let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await {
                    self.send(batch, slot).await;
                }
            }
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if flushed.is_err() {
            let left = COUNTERS.waiting.load(Ordering::Relaxed);
            tracing::warn!(
                "gateway: {left} events were not acknowledged by JetStream ({}) within {STOP_GRACE:?}; counted as failed",
                self.gateway.conn.url
            );
            // Dropped unsent or unacknowledged: counted as failed.
            self.ready.clear();
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// Appends `event` to a batch's payload as [`super::encode_batch`] frames
/// it (field 6 of a Riemann `Msg`, length-delimited), so a batch is
/// encoded as it fills, with no copy of its events kept.
fn append_event(scratch: &mut Vec<u8>, payload: &mut Vec<u8>, event: &Event) {
    scratch.clear();
    crate::codec::riemann::encode_event(event, scratch);
    crate::codec::riemann::push_msg_event(payload, scratch);
}

/// Publishes `batch` until JetStream stores it or refuses it.
/// Hands `batch` to the client, for JetStream to acknowledge.
async fn send(conn: &Connection, batch: &Batch) -> Result<PublishAckFuture, PublishError> {
    let message = PublishMessage::build()
        .payload(batch.payload.clone())
        .message_id(&batch.id);
    conn.js.send_publish(batch.subject.clone(), message).await
}

/// Waits for JetStream's answer to `batch` (first `sent`), publishing it
/// again until JetStream stores it or refuses it.
async fn publish(
    conn: Connection,
    mut batch: Batch,
    _slot: OwnedSemaphorePermit,
    sent: Result<PublishAckFuture, PublishError>,
) {
    let mut backoff = RETRY_FIRST;
    let mut sent = Some(sent);
    loop {
        let sent = match sent.take() {
            Some(sent) => sent,
            None => send(&conn, &batch).await,
        };
        let result = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                batch.stored = true;
                COUNTERS
                    .published
                    .fetch_add(batch.events, Ordering::Relaxed);
                COUNTERS.batches.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if refused(&e) => {
                warn_limited!(
                    REFUSED_LOG,
                    "NATS {}: JetStream refused a batch of {} events for {}: {e}; not stored (Riemann TCP senders get an error)",
                    conn.url,
                    batch.events,
                    batch.subject
                );
                // Dropping the batch counts it and fails its tickets.
                return;
            }
            Err(e) => {
                COUNTERS.retries.fetch_add(1, Ordering::Relaxed);
                warn_limited!(
                    RETRY_LOG,
                    "NATS {}: publishing to {} failed ({e}); retrying ({} events waiting)",
                    conn.url,
                    batch.subject,
                    COUNTERS.waiting.load(Ordering::Relaxed)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Whether JetStream answered no (the stream is full, the message too
/// large), as opposed to not answering: only the latter is worth a retry.
fn refused(e: &PublishError) -> bool {
    use std::error::Error as _;
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => true,
        PublishErrorKind::Other => e
            .source()
            .is_some_and(|s| s.downcast_ref::<async_nats::jetstream::Error>().is_some()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{decode_batch, encode_batch};

    #[test]
    fn a_batch_filled_event_by_event_is_what_encode_batch_makes() {
        let events: Vec<Event> = (0..3)
            .map(|i| Event {
                host: Some(format!("h{i}").into()),
                metric: Some(Number::Int(i)),
                time: Some(Number::Float(1.5)),
                ..Event::default()
            })
            .collect();
        let (mut scratch, mut payload) = (Vec::new(), Vec::new());
        for e in &events {
            append_event(&mut scratch, &mut payload, e);
        }
        assert_eq!(payload, encode_batch(&events));
        assert_eq!(decode_batch(&payload, 0.0).unwrap(), events);
    }

    #[test]
    fn a_ticket_answers_when_its_last_batch_lets_go_and_not_if_one_failed() {
        let (done, mut told) = oneshot::channel();
        let ticket = Ticket::new(None, Some(done));
        let held = Arc::clone(&ticket);
        drop(ticket);
        assert!(told.try_recv().is_err(), "a batch still holds it");
        drop(held);
        assert!(told.try_recv().is_ok());

        let (done, mut told) = oneshot::channel();
        let ticket = Ticket::new(None, Some(done));
        ticket.failed.store(true, Ordering::Relaxed);
        drop(ticket);
        assert!(
            matches!(told.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "dropped unanswered"
        );
    }
}
