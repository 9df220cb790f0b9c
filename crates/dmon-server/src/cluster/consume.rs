//! A worker (`serve --consume URL --partitions LIST`): holds its group's
//! lease or stands by for it, and while it holds it, runs its partitions'
//! events through the pipeline.
//!
//! One durable pull consumer per partition (`dmon-p<p>`) and one task per
//! partition, sequential, so each host's events keep their order. A batch
//! of messages is decoded, sent to the dispatch thread as one
//! [`Work::Acked`], and once processed its messages wait for the next
//! checkpoint: the checkpointer stops the tasks between batches, snapshots
//! the state, writes it, and only then acknowledges what the snapshot
//! includes. A worker that takes over restores that checkpoint and gets
//! every later message redelivered (at least once: those it sees twice
//! are counted as `redelivered`), so no acknowledged event is missing from
//! its state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tokio::task::JoinHandle;

use super::checkpoint;
use super::lease::{Lease, LeaseError};
use super::{decode_batch, subject, ClusterError, Connection, Partitions};
use crate::checkpoint::{self as state, Checkpoint};
use crate::log_limit::LogLimiter;
use crate::pipeline::{Pipeline, Work};
use crate::stats::{ComponentCounters, ComponentReport};
use crate::warn_limited;

/// Messages one fetch asks for.
const FETCH_MESSAGES: usize = 200;

/// How long a fetch waits for messages before asking again (and seeing a
/// stop or a checkpoint).
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Messages delivered to a worker and not yet acknowledged, per partition:
/// they wait for the next checkpoint, so this bounds what a checkpoint
/// interval may hold (JetStream stops delivering past it).
const MAX_ACK_PENDING: i64 = 20_000;

/// Pause after a failed fetch or consumer lookup (NATS away).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

static NATS_LOG: LogLimiter = LogLimiter::new(10);

/// Counts a failure talking to NATS, and logs it (rate-limited): the
/// caller retries.
macro_rules! nats_failed {
    ($counters:expr, $($arg:tt)+) => {{
        $counters.nats_errors.fetch_add(1, Ordering::Relaxed);
        warn_limited!(NATS_LOG, $($arg)+);
    }};
}

static BAD_LOG: LogLimiter = LogLimiter::new(10);

/// What a worker is asked to do.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub partitions: Partitions,
    pub partition_count: u32,
    /// This node's name: the lease's value, and in logs.
    pub node: String,
    pub lease: Duration,
    pub checkpoint_every: Duration,
}

/// The worker's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub group: String,
    pub owner: AtomicBool,
    /// Events run through the pipeline from NATS.
    pub consumed: AtomicU64,
    /// Of those, events of messages delivered before (to this worker or
    /// the previous owner): the duplicates at-least-once allows.
    pub redelivered: AtomicU64,
    /// Of the redelivered, events the state already had (from the
    /// checkpoint, or processed since): acknowledged, not processed again.
    pub skipped: AtomicU64,
    /// Messages that did not decode, terminated (not redelivered).
    pub bad_messages: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Size of the last checkpoint written.
    pub checkpoint_bytes: AtomicU64,
    /// Times this worker took the group's lease.
    pub takeovers: AtomicU64,
    /// Failures talking to NATS (fetches, the lease, checkpoints, acks),
    /// each retried.
    pub nats_errors: AtomicU64,
}

/// [`WorkerCounters`]' values, in `dmon stats` as `cluster_worker`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerSnapshot {
    pub group: String,
    /// "owner" or "standby".
    pub role: &'static str,
    pub consumed: u64,
    pub redelivered: u64,
    pub skipped: u64,
    pub bad_messages: u64,
    pub checkpoints: u64,
    pub checkpoint_bytes: u64,
    pub takeovers: u64,
    pub nats_errors: u64,
}

/// `dmon stats`' `cluster_worker` object.
impl ComponentCounters for WorkerCounters {
    fn report(&self) -> ComponentReport {
        let mut report = ComponentReport::default();
        if let Ok(snapshot) = serde_json::to_value(self.snapshot()) {
            report.fields.insert("cluster_worker".into(), snapshot);
        }
        report
    }
}

impl WorkerCounters {
    pub fn snapshot(&self) -> WorkerSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerSnapshot {
            group: self.group.clone(),
            role: if self.owner.load(Ordering::Relaxed) {
                "owner"
            } else {
                "standby"
            },
            consumed: get(&self.consumed),
            redelivered: get(&self.redelivered),
            skipped: get(&self.skipped),
            bad_messages: get(&self.bad_messages),
            checkpoints: get(&self.checkpoints),
            checkpoint_bytes: get(&self.checkpoint_bytes),
            takeovers: get(&self.takeovers),
            nats_errors: get(&self.nats_errors),
        }
    }
}

/// A running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    counters: Arc<WorkerCounters>,
}

impl Worker {
    /// Prepares the stream and the buckets (errors name the URL), then
    /// stands by for the group's lease and works while holding it, sending
    /// events to the dispatch thread through `tx`.
    pub async fn start(
        conn: Connection,
        config: WorkerConfig,
        pipeline: Arc<Pipeline>,
        tx: mpsc::Sender<Work>,
    ) -> Result<Worker, ClusterError> {
        let stream = conn.prepare(config.partition_count).await?;
        let group = config.partitions.canonical();
        let lease = Lease::open(&conn, &group, &config.node, config.lease).await?;
        let store = checkpoint::Store::open(&conn, &group).await?;
        let counters = Arc::new(WorkerCounters {
            group: group.clone(),
            ..WorkerCounters::default()
        });
        pipeline.add_counters(Arc::clone(&counters) as Arc<dyn ComponentCounters>);
        let (stop, stopped) = watch::channel(false);
        let shared = Shared {
            config,
            group,
            stream,
            pipeline,
            tx,
            counters: Arc::clone(&counters),
            done: Arc::default(),
        };
        let task = tokio::spawn(run(shared, lease, store, stopped));
        Ok(Worker {
            stop,
            task,
            counters,
        })
    }

    pub fn counters(&self) -> Arc<WorkerCounters> {
        Arc::clone(&self.counters)
    }

    /// A clean stop: no more fetching, the batches in flight finish, a
    /// last checkpoint is written and acknowledged, and the lease is
    /// released so a standby takes over at once.
    pub async fn stop(self) -> WorkerSnapshot {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!("the cluster worker failed: {e}");
        }
        self.counters.snapshot()
    }
}

/// What the worker's tasks share.
#[derive(Clone)]
struct Shared {
    config: WorkerConfig,
    group: String,
    stream: jetstream::stream::Stream,
    pipeline: Arc<Pipeline>,
    tx: mpsc::Sender<Work>,
    counters: Arc<WorkerCounters>,
    /// Per partition, the stream sequence of the last message the state
    /// includes (see [`Checkpoint::done`]).
    done: Arc<Mutex<BTreeMap<u32, u64>>>,
}

/// How a turn as owner ended.
enum Ended {
    Stopped,
    Lost,
}

async fn run(
    shared: Shared,
    lease: Lease,
    mut store: checkpoint::Store,
    mut stopped: watch::Receiver<bool>,
) {
    let group = shared.group.clone();
    let lease = Arc::new(lease);
    let retry = shared.config.lease / 5;
    loop {
        // Standing by.
        let mut said = None;
        let revision = loop {
            if *stopped.borrow() {
                return;
            }
            match lease.take().await {
                Ok(revision) => break revision,
                Err(LeaseError::Held(holder)) => {
                    if said.as_ref() != Some(&holder) {
                        tracing::info!("standing by for partitions {group} (held by {holder})");
                        said = Some(holder);
                    }
                }
                Err(LeaseError::Nats(e)) => {
                    nats_failed!(
                        shared.counters,
                        "cluster worker {group}: taking the lease: {e}"
                    )
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stopped.changed() => {}
            }
        };
        // Without the checkpoint, this node's state may be another's past:
        // no consuming until it is read.
        let saved = match store.read().await {
            Ok(saved) => saved,
            Err(checkpoint::ReadError::Nats(e)) => {
                nats_failed!(
                    shared.counters,
                    "cannot read the checkpoint of partitions {group}: {e}; standing by"
                );
                let _ = lease.release(revision).await;
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            Err(checkpoint::ReadError::Corrupt(e)) => {
                tracing::warn!(
                    "the checkpoint of partitions {group} is unreadable ({e}); starting afresh"
                );
                None
            }
        };
        shared.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        shared.counters.owner.store(true, Ordering::Relaxed);
        tracing::info!("took over partitions {group}");
        // Taking the lease back (NATS was away): when nobody checkpointed
        // since this node did, nobody acknowledged anything either, and
        // this node's state (all of it, Python's too) is the newest.
        let mine = !crate::streams::lock(&shared.done).is_empty()
            && saved.as_ref().is_none_or(|s| s.node == shared.config.node);
        match saved {
            _ if mine => {
                tracing::info!(
                    "partitions {group}: taken back, nobody checkpointed since this node: state kept"
                )
            }
            Some(saved) => {
                *crate::streams::lock(&shared.done) = saved.done.clone();
                let from = saved.node.clone();
                let Some(done) = state::restore(&shared.tx, saved).await else {
                    return;
                };
                tracing::info!(
                    "restored the checkpoint of partitions {group} from {from}: {} index events, {} node states",
                    done.index_events,
                    done.nodes
                );
                for e in done.errors.iter().take(5) {
                    tracing::warn!("restoring the checkpoint of partitions {group}: {e}");
                }
            }
            None => tracing::info!("no checkpoint of partitions {group} yet: starting afresh"),
        }
        let ended = own(&shared, &lease, revision, &store, &mut stopped).await;
        shared.counters.owner.store(false, Ordering::Relaxed);
        match ended {
            Ended::Stopped => return,
            Ended::Lost => tracing::warn!(
                "lost the lease of partitions {group}: stopped consuming, standing by"
            ),
        }
    }
}

/// Works while holding the lease: consumes, renews, checkpoints.
async fn own(
    shared: &Shared,
    lease: &Arc<Lease>,
    revision: u64,
    store: &checkpoint::Store,
    stopped: &mut watch::Receiver<bool>,
) -> Ended {
    let group = &shared.group;
    let gate = Arc::new(RwLock::new(()));
    let unacked: Arc<Mutex<Vec<jetstream::Message>>> = Arc::default();
    let (halt, halted) = watch::channel(false);
    let tasks: Vec<JoinHandle<()>> = shared
        .config
        .partitions
        .iter()
        .map(|p| {
            tokio::spawn(consume_partition(
                shared.clone(),
                p,
                Arc::clone(&gate),
                Arc::clone(&unacked),
                halted.clone(),
            ))
        })
        .collect();
    // Renewals and checkpoints each on their own task: a checkpoint NATS
    // is slow to take must not delay a renewal, nor the news of a lost
    // lease.
    let revision = Arc::new(AtomicU64::new(revision));
    let mut renewing = tokio::spawn(keep_lease(
        Arc::clone(lease),
        Arc::clone(&revision),
        shared.config.lease,
        Arc::clone(&shared.counters),
    ));
    let checkpointer = tokio::spawn(checkpoint_loop(
        shared.clone(),
        store.clone(),
        Arc::clone(&gate),
        Arc::clone(&unacked),
        halted.clone(),
    ));
    tokio::select! {
        _ = stopped.changed() => {}
        holder = &mut renewing => {
            let holder = holder.unwrap_or_else(|_| "unknown".into());
            tracing::warn!("partitions {group}: the lease is now {holder}'s");
            // At once: another worker consumes these partitions now. What
            // was processed and not acknowledged goes to it again.
            tasks.iter().for_each(|t| t.abort());
            checkpointer.abort();
            return Ended::Lost;
        }
    }
    // A clean stop: the tasks finish their batch, then a last checkpoint.
    let _ = halt.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let mut store = checkpointer.await.unwrap_or_else(|_| store.clone());
    write_checkpoint(shared, &mut store, &gate, &unacked).await;
    renewing.abort();
    match lease.release(revision.load(Ordering::Relaxed)).await {
        Ok(()) => tracing::info!("released partitions {group}"),
        Err(e) => tracing::warn!("releasing the lease of partitions {group}: {e}"),
    }
    Ended::Stopped
}

/// Renews the lease every lease/3; returns who holds it once this node
/// no longer does: taken by another, or not renewed for a whole lease
/// (NATS away), after which another may have taken it.
async fn keep_lease(
    lease: Arc<Lease>,
    revision: Arc<AtomicU64>,
    every: Duration,
    counters: Arc<WorkerCounters>,
) -> String {
    let mut last_renewed = Instant::now();
    let mut ticks = tokio::time::interval(every / 3);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match lease.renew(revision.load(Ordering::Relaxed)).await {
            Ok(r) => {
                revision.store(r, Ordering::Relaxed);
                last_renewed = Instant::now();
            }
            Err(LeaseError::Held(holder)) => return holder,
            Err(LeaseError::Nats(e)) => {
                nats_failed!(counters, "renewing the lease: {e}");
                if last_renewed.elapsed() >= every {
                    return "unknown (not renewed for a whole lease)".to_owned();
                }
            }
        }
    }
}

/// Writes a checkpoint every `--checkpoint-secs` until halted; gives the
/// store back.
async fn checkpoint_loop(
    shared: Shared,
    mut store: checkpoint::Store,
    gate: Arc<RwLock<()>>,
    unacked: Arc<Mutex<Vec<jetstream::Message>>>,
    mut halted: watch::Receiver<bool>,
) -> checkpoint::Store {
    let mut ticks = tokio::time::interval(shared.config.checkpoint_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => write_checkpoint(&shared, &mut store, &gate, &unacked).await,
            _ = halted.changed() => return store,
        }
    }
}

/// Snapshots the state between batches, writes it, then acknowledges the
/// messages it includes. A failed write keeps them for the next one.
async fn write_checkpoint(
    shared: &Shared,
    store: &mut checkpoint::Store,
    gate: &RwLock<()>,
    unacked: &Mutex<Vec<jetstream::Message>>,
) {
    let _quiet = gate.write().await;
    let Some(mut taken): Option<Checkpoint> = state::take(&shared.tx, &shared.config.node).await
    else {
        return;
    };
    taken.done = crate::streams::lock(&shared.done).clone();
    match store.write(&taken).await {
        Ok(bytes) => {
            shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .checkpoint_bytes
                .store(bytes, Ordering::Relaxed);
        }
        Err(e) => {
            nats_failed!(
                shared.counters,
                "checkpoint of partitions {}: {e}; acknowledging later",
                shared.group
            );
            return;
        }
    }
    let messages = std::mem::take(&mut *crate::streams::lock(unacked));
    for m in messages {
        if let Err(e) = m.ack().await {
            // Not acknowledged: JetStream redelivers it (a duplicate).
            nats_failed!(shared.counters, "acknowledging a message: {e}");
        }
    }
}

/// The partition's consumer, made afresh, and the last stream sequence the
/// previous one had delivered. A new owner starts from a new consumer so
/// that what its predecessor had been given and not acknowledged comes
/// again now, not after the predecessor's ack wait; the work queue keeps
/// every unacknowledged message, so a new consumer starts at the first.
async fn fresh_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    config: pull::Config,
) -> Result<(jetstream::consumer::Consumer<pull::Config>, u64), String> {
    use async_nats::jetstream::context::ConsumerInfoErrorKind;
    let delivered = match stream.consumer_info(name).await {
        Ok(info) => {
            stream
                .delete_consumer(name)
                .await
                .map_err(|e| e.to_string())?;
            info.delivered.stream_sequence
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => 0,
        Err(e) => return Err(e.to_string()),
    };
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| e.to_string())?;
    Ok((consumer, delivered))
}

/// Consumes one partition until halted (or aborted).
async fn consume_partition(
    shared: Shared,
    p: u32,
    gate: Arc<RwLock<()>>,
    unacked: Arc<Mutex<Vec<jetstream::Message>>>,
    mut halted: watch::Receiver<bool>,
) {
    let name = format!("dmon-p{p}");
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subject(p),
        ack_policy: AckPolicy::Explicit,
        // Messages wait for the next checkpoint before their ack.
        ack_wait: (shared.config.checkpoint_every * 4).max(Duration::from_secs(30)),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    let pause = |halted: &mut watch::Receiver<bool>| {
        let mut halted = halted.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = halted.changed() => {}
            }
        }
    };
    let (consumer, delivered_before) = loop {
        if *halted.borrow() {
            return;
        }
        match fresh_consumer(&shared.stream, &name, config.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                nats_failed!(shared.counters, "partition {p}: consumer {name}: {e}");
                pause(&mut halted).await;
            }
        }
    };
    // Whether the last fetch found nothing: then the next one waits for a
    // message; otherwise it takes what is there at once.
    let mut idle = true;
    loop {
        if *halted.borrow() {
            return;
        }
        // A waiting fetch returns only when it is full or expires, so under
        // a backlog smaller than a full fetch each would wait out
        // FETCH_WAIT: with a backlog, take what is there (no wait); when
        // idle, wait for the first message and return with it.
        let batch = if idle {
            consumer
                .batch()
                .max_messages(1)
                .expires(FETCH_WAIT)
                .messages()
                .await
        } else {
            consumer
                .fetch()
                .max_messages(FETCH_MESSAGES)
                .messages()
                .await
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                nats_failed!(shared.counters, "partition {p}: fetching: {e}");
                pause(&mut halted).await;
                continue;
            }
        };
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => messages.push(m),
                Err(e) => {
                    nats_failed!(shared.counters, "partition {p}: fetching: {e}");
                    break;
                }
            }
        }
        idle = messages.is_empty();
        if idle {
            continue;
        }
        // Between here and the stash, a checkpoint waits.
        let _batch = gate.read().await;
        let now = shared.pipeline.context().now();
        let done = crate::streams::lock(&shared.done)
            .get(&p)
            .copied()
            .unwrap_or(0);
        let mut last = done;
        let mut events = Vec::new();
        let mut keep = Vec::with_capacity(messages.len());
        for m in messages {
            let (seq, delivered) = m
                .info()
                .map(|i| (i.stream_sequence, i.delivered))
                .unwrap_or((0, 1));
            match decode_batch(&m.payload, now) {
                Ok(decoded) => {
                    let n = decoded.len() as u64;
                    let in_state = seq != 0 && seq <= done;
                    // Events the state has were delivered before, whatever
                    // the (recreated) consumer's counts say: after NATS
                    // restarts, the old consumer's delivered sequence can
                    // be behind what this node processed.
                    if delivered > 1 || seq <= delivered_before || in_state {
                        shared.counters.redelivered.fetch_add(n, Ordering::Relaxed);
                    }
                    if in_state {
                        // Already in the state: acknowledged with the next
                        // checkpoint, not processed twice.
                        shared.counters.skipped.fetch_add(n, Ordering::Relaxed);
                    } else {
                        events.extend(decoded);
                        last = last.max(seq);
                    }
                    keep.push(m);
                }
                Err(e) => {
                    shared.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        BAD_LOG,
                        "partition {p}: a message of {} bytes is not a batch of events ({e}); skipped",
                        m.payload.len()
                    );
                    // Terminated: never delivered again.
                    if let Err(e) = m.ack_with(AckKind::Term).await {
                        nats_failed!(shared.counters, "terminating a bad message: {e}");
                    }
                }
            }
        }
        let n = events.len() as u64;
        if n > 0 {
            let (done, processed) = oneshot::channel();
            if shared.tx.send(Work::Acked(events, done)).await.is_err() || processed.await.is_err()
            {
                // The server is stopping: unacknowledged, redelivered.
                return;
            }
            shared.counters.consumed.fetch_add(n, Ordering::Relaxed);
        }
        crate::streams::lock(&shared.done).insert(p, last);
        crate::streams::lock(&unacked).extend(keep);
    }
}
