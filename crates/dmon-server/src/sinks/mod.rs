//! Sinks: where output nodes send events out of dmon — an SMTP relay
//! ([`email`]), another dmon or a Riemann server ([`forward`]), carbon
//! ([`graphite`]), InfluxDB ([`influxdb`]), any HTTP endpoint
//! ([`webhook`]).
//!
//! A sink is one file implementing [`Sink`]: how to connect, how to send a
//! batch, and which failures are worth another try. Everything else is
//! written once, here, in [`SinkHandle`]:
//! - a bounded queue the event path hands items to without waiting; a full
//!   queue drops the item, counted, and logged at most once per
//!   [`DROP_LOG_INTERVAL`]; so does one whose items would not fit in the
//!   sinks' share of `--memory-limit` (each item charged what it keeps
//!   alive, [`Weigh`], until it was sent or given up);
//! - a worker thread that takes batches (up to [`Policy::batch`] items, or
//!   what came within [`Policy::linger`] of the first), sends them, and on a
//!   failure drops the connection, waits, reconnects and tries again
//!   ([`Retry`]);
//! - a drain on shutdown, bounded by a grace period, after which what is
//!   left is counted as dropped;
//! - the counters ([`SinkStats`]) behind `stats`, `streams()` and
//!   self-instrumentation.
//!
//! Sinks are started once per (kind, target) in a context's [`Sinks`] and
//! shared by every node that sends there — `by`'s forks and the nodes of a
//! reloaded module too — so a target gets one connection, not one per node.

#[cfg(feature = "mail")]
pub mod email;
pub mod forward;
pub mod graphite;
pub mod influxdb;
pub mod senders;
pub mod webhook;

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::log_limit::LogLimiter;
pub use crate::memory::Weigh;
use crate::memory::{Charge, MemoryBudget, Share};
use crate::warn_limited;

/// How often a sink that keeps dropping (full queue) or failing says so.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a sink's worker batches and retries.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Items waiting at most; beyond this the event path drops them.
    pub capacity: usize,
    /// Most items in one [`Sink::send`].
    pub batch: usize,
    /// How long the first item of a batch waits for others to join it.
    pub linger: Duration,
    pub retry: Retry,
}

/// What happens to a batch that failed with a retryable [`Failure`].
#[derive(Clone, Copy, Debug)]
pub enum Retry {
    /// One more attempt after each of these delays, then the batch is
    /// given up (mail: three attempts, then the mail is reported lost).
    After(&'static [Duration]),
    /// Attempts until it goes, `first` apart at first, doubling up to
    /// `max`: nothing that fits the queue is lost while the target is down.
    Backoff { first: Duration, max: Duration },
}

impl Retry {
    /// The wait after the `failures`-th failed attempt, or `None` to give up.
    fn delay(&self, failures: u32) -> Option<Duration> {
        match *self {
            Retry::After(delays) => delays.get(failures as usize - 1).copied(),
            Retry::Backoff { first, max } => {
                Some(first.saturating_mul(1 << (failures - 1).min(16)).min(max))
            }
        }
    }
}

/// Why a batch (or a connection) failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// Whether the same batch may go through later (a refused connection, a
    /// timeout), as opposed to one the target refused for what it holds.
    pub retryable: bool,
    /// Items at the front of the batch that did go before the failure.
    pub done: usize,
}

impl Failure {
    /// A failure another attempt may get past.
    pub fn retry(message: impl fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            retryable: true,
            done: 0,
        }
    }

    /// A failure no retry can fix: the batch is given up.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Failure {
            retryable: false,
            ..Failure::retry(message)
        }
    }

    /// The first `done` items of the batch went before it failed.
    pub fn after(self, done: usize) -> Self {
        Failure { done, ..self }
    }
}

/// One kind of target. The worker calls these on its own thread; nothing
/// here runs on the event path.
pub trait Sink: Send + 'static {
    /// What the event path hands over: an event, a composed mail.
    type Item: Send + Weigh + 'static;
    /// An open connection; dropped after any failure, so the next attempt
    /// reconnects.
    type Conn: Send;
    /// `forward`, `graphite`, `email`.
    fn kind(&self) -> &'static str;
    /// Where it sends, as logs and `stats` name it: `127.0.0.1:5555`.
    fn target(&self) -> String;
    fn policy(&self) -> Policy;
    fn connect(&mut self) -> Result<Self::Conn, Failure>;
    /// Sends every item of `batch` (never empty), in order.
    fn send(&mut self, conn: &mut Self::Conn, batch: &[Self::Item]) -> Result<(), Failure>;
    /// `items` are given up (a fatal failure, or out of retries): counted
    /// as failed; a sink may tell their senders.
    fn gave_up(&mut self, _items: &[Self::Item]) {}
    /// The warning logged (rate-limited) when `items` are given up.
    fn give_up_message(&self, items: &[Self::Item], attempts: u32, failure: &Failure) -> String {
        format!(
            "{} {}: {} items given up after {attempts} attempts: {}",
            self.kind(),
            self.target(),
            items.len(),
            failure.message
        )
    }
}

/// A sink's counters. Every item accepted is eventually sent, failed, or
/// dropped at shutdown; `waiting` is what is queued or being sent now.
#[derive(Default, Debug)]
pub struct SinkStats {
    /// Items accepted into the queue.
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Items given up: refused by the target, or out of retries.
    pub failed: AtomicU64,
    /// Items refused because the queue was full or closed, or still unsent
    /// when the shutdown grace period ended.
    pub dropped: AtomicU64,
    /// Items queued or being sent now.
    pub waiting: AtomicU64,
    /// Connections opened (the first and every reconnect).
    pub connections: AtomicU64,
}

/// [`SinkStats`]' values, with the sink's name: the `sinks` of `dmon stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SinkSnapshot {
    pub kind: String,
    pub target: String,
    pub queued: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dropped: u64,
    pub waiting: u64,
    pub connections: u64,
}

impl SinkSnapshot {
    /// One line for people: `12 sent, 1 retried, 0 failed, 0 dropped, 3 waiting`.
    pub fn counts(&self) -> String {
        format!(
            "{} sent, {} retried, {} failed, {} dropped, {} waiting",
            self.sent, self.retried, self.failed, self.dropped, self.waiting
        )
    }
}

/// Why the event path could not hand an item over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds [`Policy::capacity`] items.
    Full,
    /// The sinks' share of `--memory-limit` is full.
    Memory,
    /// The sink is shut down (or was never started: a rehearsal's).
    Closed,
}

/// What the worker is doing, so the event path wakes it only when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// Waiting for any item.
    Idle,
    /// Holding a partial batch until it fills or its linger time is up.
    Lingering,
    /// Sending, waiting to retry, or already woken.
    Busy,
}

struct Queue<I> {
    items: VecDeque<I>,
    /// What `items` hold, charged to [`Share::Sinks`].
    charge: Charge,
    worker: Worker,
    /// No more items are taken; the worker sends what is left and stops.
    closing: bool,
    /// The grace period is over: the worker stops at its next step.
    abandoned: bool,
}

struct Shared<I> {
    queue: Mutex<Queue<I>>,
    memory: Arc<MemoryBudget>,
    wake: Condvar,
    policy: Policy,
    stats: SinkStats,
    /// The sink's name in logs: `forward 127.0.0.1:5555`.
    label: String,
    drop_log: LogLimiter,
    fail_log: LogLimiter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A started sink: the event path's end of its queue, and its counters.
/// Dropping it stops the worker (after [`SinkHandle::shutdown`], which
/// drains it first).
pub struct SinkHandle<I> {
    kind: &'static str,
    target: String,
    shared: Arc<Shared<I>>,
    /// Told when the worker has stopped; taken by the first [`Self::finish`].
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl<I: Send + Weigh + 'static> SinkHandle<I> {
    /// Starts `sink`'s worker thread. Nothing connects until the first item.
    pub fn start<S: Sink<Item = I>>(sink: S, memory: Arc<MemoryBudget>) -> Self {
        let handle = Self::new(sink.kind(), sink.target(), sink.policy(), false, memory);
        let shared = Arc::clone(&handle.shared);
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("dmon-{}", sink.kind()))
            .spawn(move || {
                work(sink, &shared);
                let _ = done_tx.send(());
            })
            .expect("spawn a sink's worker thread");
        *lock(&handle.done) = Some(done_rx);
        handle
    }

    /// A sink that takes nothing (a rehearsal's mailer: its outputs are
    /// captured before they reach it).
    pub fn disabled(kind: &'static str, policy: Policy) -> Self {
        Self::new(kind, String::new(), policy, true, Arc::default())
    }

    fn new(
        kind: &'static str,
        target: String,
        policy: Policy,
        closed: bool,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        let label = format!("{kind} {target}");
        SinkHandle {
            kind,
            target,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    items: VecDeque::new(),
                    charge: memory.nothing(Share::Sinks),
                    worker: Worker::Busy,
                    closing: closed,
                    abandoned: false,
                }),
                memory,
                wake: Condvar::new(),
                policy,
                stats: SinkStats::default(),
                label,
                drop_log: LogLimiter::per(1, DROP_LOG_INTERVAL),
                fail_log: match policy.retry {
                    // Each given-up item is news (a lost mail): a few a second.
                    Retry::After(_) => LogLimiter::new(5),
                    // The same outage, retried: once in a while.
                    Retry::Backoff { .. } => LogLimiter::per(1, DROP_LOG_INTERVAL),
                },
            }),
            done: Mutex::new(None),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn stats(&self) -> &SinkStats {
        &self.shared.stats
    }

    /// Queues `item` without waiting; counts it as dropped if it cannot be.
    pub fn offer(&self, item: I) -> Result<(), Refused> {
        let shared = &*self.shared;
        let charge = shared.memory.try_charge(Share::Sinks, item.weight());
        let mut q = lock(&shared.queue);
        let refused = if q.closing {
            Some(Refused::Closed)
        } else if q.items.len() >= shared.policy.capacity {
            Some(Refused::Full)
        } else {
            None
        };
        let refused = match (refused, charge) {
            (None, Ok(charge)) => {
                q.charge.merge(charge);
                None
            }
            (None, Err(_)) => Some(Refused::Memory),
            (why, _) => why,
        };
        if let Some(why) = refused {
            drop(q);
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        q.items.push_back(item);
        let wake = match q.worker {
            Worker::Idle => true,
            Worker::Lingering => q.items.len() >= shared.policy.batch,
            Worker::Busy => false,
        };
        if wake {
            // Once per wait: later items find it busy.
            q.worker = Worker::Busy;
        }
        drop(q);
        shared.stats.queued.fetch_add(1, Ordering::Relaxed);
        shared.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if wake {
            shared.wake.notify_one();
        }
        Ok(())
    }

    /// [`Self::offer`] for the event path of a node: a refusal is counted,
    /// and logged at most once per [`DROP_LOG_INTERVAL`].
    pub fn offer_or_log(&self, item: I) {
        if let Err(why) = self.offer(item) {
            let shared = &*self.shared;
            let reason = match why {
                Refused::Full => format!("queue full ({} waiting)", shared.policy.capacity),
                Refused::Memory => "the sinks' share of memory is full (--memory-limit)".to_owned(),
                Refused::Closed => "shut down".to_owned(),
            };
            warn_limited!(
                shared.drop_log,
                "{}: {reason}; dropping events ({} dropped so far)",
                shared.label,
                shared.stats.dropped.load(Ordering::Relaxed)
            );
        }
    }

    /// The counters, with the sink's name.
    pub fn snapshot(&self) -> SinkSnapshot {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkSnapshot {
            kind: self.kind.to_owned(),
            target: self.target.clone(),
            queued: get(&s.queued),
            sent: get(&s.sent),
            retried: get(&s.retried),
            failed: get(&s.failed),
            dropped: get(&s.dropped),
            waiting: get(&s.waiting),
            connections: get(&s.connections),
        }
    }

    /// Takes no more items; the worker sends what is queued and stops.
    pub fn close(&self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
    }

    /// After [`Self::close`]: waits until the worker has sent everything,
    /// or until `deadline`, when what is still unsent is given up (queued
    /// items counted as dropped). Returns how many items were unsent then.
    pub fn finish(&self, deadline: Instant) -> u64 {
        let Some(done) = lock(&self.done).take() else {
            return 0;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(
            done.recv_timeout(left),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            return 0;
        }
        let shared = &*self.shared;
        let mut q = lock(&shared.queue);
        q.abandoned = true;
        let queued = q.items.len() as u64;
        q.items.clear();
        drop(q.charge.split(usize::MAX));
        drop(q);
        shared.wake.notify_all();
        let unsent = shared.stats.waiting.load(Ordering::Relaxed);
        shared.stats.dropped.fetch_add(queued, Ordering::Relaxed);
        shared.stats.waiting.fetch_sub(queued, Ordering::Relaxed);
        unsent
    }

    /// [`Self::close`], then [`Self::finish`] within `grace`; true when
    /// everything was sent.
    pub fn shutdown(&self, grace: Duration) -> bool {
        self.close();
        self.finish(Instant::now() + grace) == 0
    }
}

impl<I> Drop for SinkHandle<I> {
    /// Nobody is left to hand it items or to wait for it: a server drains
    /// its sinks ([`SinkHandle::shutdown`]) before letting go of them, so
    /// the worker stops at its next step rather than retrying for ever.
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        q.closing = true;
        q.abandoned = true;
        drop(q);
        self.shared.wake.notify_all();
    }
}

impl<I: Weigh> Shared<I> {
    /// Waits for the next batch and moves it into `batch`, and what it
    /// holds into `held`; false when the sink is closed and drained, or
    /// abandoned.
    fn next_batch(&self, batch: &mut VecDeque<I>, held: &mut Option<Charge>) -> bool {
        let mut q = lock(&self.queue);
        let mut due = None;
        loop {
            if q.abandoned {
                return false;
            }
            if q.items.is_empty() {
                if q.closing {
                    return false;
                }
                q.worker = Worker::Idle;
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let due = *due.get_or_insert_with(|| Instant::now() + self.policy.linger);
            let now = Instant::now();
            if q.items.len() >= self.policy.batch || q.closing || now >= due {
                if q.items.len() <= self.policy.batch {
                    // The whole queue, in O(1): the event path is never
                    // held up while items are moved. `batch` is empty
                    // and gives its room back to the queue.
                    std::mem::swap(&mut q.items, batch);
                } else {
                    batch.extend(q.items.drain(..self.policy.batch));
                }
                let bytes = batch.iter().map(Weigh::weight).sum();
                *held = Some(q.charge.split(bytes));
                q.worker = Worker::Busy;
                return true;
            }
            q.worker = Worker::Lingering;
            q = self
                .wake
                .wait_timeout(q, due - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits `delay` before a retry; false if the sink was abandoned
    /// meanwhile (shutdown's grace period is over).
    fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut q = lock(&self.queue);
        q.worker = Worker::Busy;
        loop {
            if q.abandoned {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            q = self
                .wake
                .wait_timeout(q, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// `n` items left the sink, counted in `counter`.
    fn settle(&self, n: usize, counter: &AtomicU64) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.waiting.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// The worker: batches, sends, retries, until closed and drained.
fn work<S: Sink>(mut sink: S, shared: &Shared<S::Item>) {
    let mut conn = None;
    let mut batch = VecDeque::with_capacity(shared.policy.batch);
    let mut held = None;
    while shared.next_batch(&mut batch, &mut held) {
        deliver(&mut sink, shared, &mut conn, &mut batch);
        batch.clear();
        held = None;
    }
}

/// Sends one batch: reconnects and retries as the policy says, until it
/// went, was given up, or the sink was abandoned.
fn deliver<S: Sink>(
    sink: &mut S,
    shared: &Shared<S::Item>,
    conn: &mut Option<S::Conn>,
    batch: &mut VecDeque<S::Item>,
) {
    let stats = &shared.stats;
    let mut failures = 0;
    loop {
        let result = match conn {
            Some(c) => sink.send(c, batch.make_contiguous()),
            None => match sink.connect() {
                Ok(c) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    sink.send(conn.insert(c), batch.make_contiguous())
                }
                Err(f) => Err(f),
            },
        };
        let failure = match result {
            Ok(()) => {
                shared.settle(batch.len(), &stats.sent);
                return;
            }
            Err(f) => f,
        };
        *conn = None;
        let done = failure.done.min(batch.len());
        if done > 0 {
            shared.settle(done, &stats.sent);
            batch.drain(..done);
            if batch.is_empty() {
                return;
            }
        }
        failures += 1;
        let delay = match failure.retryable {
            true => shared.policy.retry.delay(failures),
            false => None,
        };
        let Some(delay) = delay else {
            warn_limited!(
                shared.fail_log,
                "{}",
                sink.give_up_message(batch.make_contiguous(), failures, &failure)
            );
            sink.gave_up(batch.make_contiguous());
            shared.settle(batch.len(), &stats.failed);
            return;
        };
        if let Retry::Backoff { .. } = shared.policy.retry {
            // It never gives up, so it says it is failing.
            warn_limited!(
                shared.fail_log,
                "{}: sending {} items failed ({} attempts so far): {}; retrying in {:.1} s",
                shared.label,
                batch.len(),
                failures,
                failure.message,
                delay.as_secs_f64()
            );
        }
        stats.retried.fetch_add(1, Ordering::Relaxed);
        if !shared.pause(delay) {
            shared.settle(batch.len(), &stats.dropped);
            return;
        }
    }
}

/// Something [`Sinks`] can report on and stop, whatever its items.
trait Control: Send + Sync {
    fn snapshot(&self) -> SinkSnapshot;
    fn close(&self);
    fn finish(&self, deadline: Instant) -> u64;
}

impl<I: Send + Weigh + 'static> Control for SinkHandle<I> {
    fn snapshot(&self) -> SinkSnapshot {
        SinkHandle::snapshot(self)
    }
    fn close(&self) {
        SinkHandle::close(self)
    }
    fn finish(&self, deadline: Instant) -> u64 {
        SinkHandle::finish(self, deadline)
    }
}

struct Started {
    kind: &'static str,
    target: String,
    control: Arc<dyn Control>,
    handle: Arc<dyn Any + Send + Sync>,
}

/// The sinks nodes of one context send to, one per (kind, target), started
/// by the first node that needs it.
pub struct Sinks {
    enabled: bool,
    started: Mutex<Vec<Started>>,
    /// Where queued items are charged (`--memory-limit`'s sinks share).
    memory: Arc<MemoryBudget>,
}

impl Default for Sinks {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Sinks {
    /// Sinks whose queues are charged to `memory`.
    pub fn new(memory: Arc<MemoryBudget>) -> Self {
        Sinks {
            enabled: true,
            started: Mutex::default(),
            memory,
        }
    }

    /// Starts nothing: a rehearsal's outputs are captured instead.
    pub fn disabled() -> Self {
        Sinks {
            enabled: false,
            ..Self::default()
        }
    }

    /// The sink for `sink`'s kind and target: the one already started, or
    /// `sink` started now. `None` where sinks are off.
    pub fn get_or_start<S: Sink>(&self, sink: S) -> Option<Arc<SinkHandle<S::Item>>> {
        if !self.enabled {
            return None;
        }
        let (kind, target) = (sink.kind(), sink.target());
        let mut started = lock(&self.started);
        if let Some(s) = started
            .iter()
            .find(|s| s.kind == kind && s.target == target)
        {
            return Arc::clone(&s.handle).downcast().ok();
        }
        let handle = Arc::new(SinkHandle::start(sink, Arc::clone(&self.memory)));
        started.push(Started {
            kind,
            target,
            control: handle.clone(),
            handle: handle.clone(),
        });
        Some(handle)
    }

    pub fn snapshots(&self) -> Vec<SinkSnapshot> {
        lock(&self.started)
            .iter()
            .map(|s| s.control.snapshot())
            .collect()
    }

    /// Closes every sink. See [`Sinks::finish`].
    pub fn close(&self) {
        lock(&self.started).iter().for_each(|s| s.control.close());
    }

    /// After [`Sinks::close`]: waits for every sink to drain, until
    /// `deadline`; logs each that could not and returns false if any.
    pub fn finish(&self, deadline: Instant, grace: Duration) -> bool {
        let started: Vec<_> = lock(&self.started)
            .iter()
            .map(|s| (s.kind, s.target.clone(), Arc::clone(&s.control)))
            .collect();
        let mut drained = true;
        for (kind, target, control) in started {
            let unsent = control.finish(deadline);
            if unsent > 0 {
                drained = false;
                tracing::warn!(
                    "{kind} {target}: {unsent} events still unsent after {grace:?} were dropped"
                );
            }
        }
        drained
    }
}

/// What a node encoded for its sink (an InfluxDB line, a webhook body): short
/// ones are kept inline, so handing one over allocates nothing (the
/// queue's ring is reused) and nothing is freed on the worker's thread.
// Large inline on purpose: that is the point of it.
#[allow(clippy::large_enum_variant)]
pub enum Encoded {
    Inline {
        len: u8,
        bytes: [u8; ENCODED_INLINE],
    },
    Heap(Box<[u8]>),
}

/// Bytes an [`Encoded`] keeps inline: a typical event or line.
pub const ENCODED_INLINE: usize = 230;

impl Encoded {
    pub fn new(b: &[u8]) -> Self {
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= ENCODED_INLINE => {
                let mut bytes = [0; ENCODED_INLINE];
                bytes[..b.len()].copy_from_slice(b);
                Encoded::Inline { len, bytes }
            }
            _ => Encoded::Heap(b.into()),
        }
    }

    /// Encodes with `encode` into a buffer reused by the thread (the event
    /// path's), then keeps the result.
    pub fn with(encode: impl FnOnce(&mut Vec<u8>)) -> Self {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            encode(buf);
            Encoded::new(buf)
        })
    }

    /// What it keeps on the heap, beyond itself.
    fn heap_bytes(&self) -> usize {
        match self {
            Encoded::Inline { .. } => 0,
            Encoded::Heap(b) => b.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Inline { len, bytes } => &bytes[..*len as usize],
            Encoded::Heap(b) => b,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl Weigh for Encoded {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.heap_bytes()
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The first address `host` resolves to, as a retryable failure if none.
pub fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::retry(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| Failure::retry(format!("{host} resolves to no address")))
}

/// How long one HTTP request may take, connecting included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for one connection's worth of requests: a sink's
/// [`Sink::Conn`], dropped (with the connection it keeps alive) after a
/// failure, so the next attempt connects anew.
pub fn http_agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        // Statuses are read here, to tell what is worth a retry.
        .http_status_as_error(false)
        .build();
    ureq::Agent::new_with_config(config)
}

/// POSTs `body` to `url`. A status other than 2xx fails: 5xx, 404 (an
/// InfluxDB database not created yet), 408 and 429 may pass later and are
/// retried, like a refused connection or a timeout; any other 4xx is about
/// the body, which no retry changes.
pub fn http_post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
) -> Result<(), Failure> {
    let mut request = agent.post(url).header("Content-Type", content_type);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut response = request
        .send(body)
        .map_err(|e| Failure::retry(format!("POST failed: {e}")))?;
    let status = response.status().as_u16();
    // Read to the end, so the connection can carry the next request.
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text: String = text.trim().chars().take(200).collect();
    let message = format!("HTTP {status}: {text}");
    match status {
        404 | 408 | 429 | 500..=599 => Err(Failure::retry(message)),
        _ => Err(Failure::fatal(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A target in memory: what arrived, in which batches; failing while
    /// `down` is set.
    #[derive(Clone, Default)]
    struct Memory {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        down: Arc<AtomicBool>,
        connects: Arc<AtomicU64>,
        given_up: Arc<Mutex<Vec<u32>>>,
        policy: Option<Policy>,
    }

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            4
        }
    }

    const FAST: Policy = Policy {
        capacity: 100,
        batch: 10,
        linger: Duration::from_millis(20),
        retry: Retry::Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(40),
        },
    };

    impl Sink for Memory {
        type Item = u32;
        type Conn = ();
        fn kind(&self) -> &'static str {
            "memory"
        }
        fn target(&self) -> String {
            "here".into()
        }
        fn policy(&self) -> Policy {
            self.policy.unwrap_or(FAST)
        }
        fn connect(&mut self) -> Result<(), Failure> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Failure::retry("refused"));
            }
            self.connects.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn send(&mut self, _: &mut (), batch: &[u32]) -> Result<(), Failure> {
            if batch.contains(&666) {
                return Err(Failure::fatal("no such number"));
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(Failure::retry("reset"));
            }
            self.batches.lock().unwrap().push(batch.to_vec());
            Ok(())
        }
        fn gave_up(&mut self, items: &[u32]) {
            self.given_up.lock().unwrap().extend_from_slice(items);
        }
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn received(m: &Memory) -> Vec<u32> {
        m.batches.lock().unwrap().concat()
    }

    #[test]
    fn queued_items_are_charged_to_the_sinks_share_until_sent() {
        // 1 KiB: the sinks' sixteenth is 64 bytes, sixteen 4-byte items.
        let memory = Arc::new(MemoryBudget::new(1024));
        let m = Memory::default();
        m.down.store(true, Ordering::SeqCst);
        let sink = SinkHandle::start(m.clone(), Arc::clone(&memory));
        let refused: Vec<_> = (0..20).filter_map(|i| sink.offer(i).err()).collect();
        assert_eq!(refused.len(), 4);
        assert!(refused.iter().all(|r| matches!(r, Refused::Memory)));
        assert_eq!(memory.used(Share::Sinks), 64);
        assert_eq!(memory.refused(Share::Sinks), 4);
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 4);
        m.down.store(false, Ordering::SeqCst);
        wait_until("16 items sent", || received(&m).len() == 16);
        wait_until("their memory given back", || memory.used(Share::Sinks) == 0);
        sink.offer(99).unwrap();
        wait_until("the next item", || received(&m).len() == 17);
    }

    #[test]
    fn batches_by_size_and_by_time_in_order() {
        let m = Memory::default();
        let sink = SinkHandle::start(m.clone(), Arc::default());
        for i in 0..25 {
            sink.offer(i).unwrap();
        }
        wait_until("25 items", || received(&m).len() == 25);
        assert_eq!(received(&m), (0..25).collect::<Vec<_>>());
        let batches = m.batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 10), "{batches:?}");
        // A lone item goes once its linger time is up.
        sink.offer(99).unwrap();
        wait_until("the lone item", || received(&m).len() == 26);
        assert!(sink.shutdown(Duration::from_secs(5)));
        let s = sink.snapshot();
        assert_eq!((s.queued, s.sent, s.waiting, s.dropped), (26, 26, 0, 0));
        assert_eq!(s.connections, 1, "one connection for every batch");
    }

    #[test]
    fn a_dead_target_is_retried_with_backoff_and_nothing_is_lost() {
        let m = Memory::default();
        m.down.store(true, Ordering::SeqCst);
        let sink = SinkHandle::start(m.clone(), Arc::default());
        for i in 0..30 {
            sink.offer(i).unwrap();
        }
        wait_until("a few retries", || {
            sink.stats().retried.load(Ordering::Relaxed) >= 3
        });
        assert!(received(&m).is_empty());
        m.down.store(false, Ordering::SeqCst);
        wait_until("everything", || received(&m).len() == 30);
        assert_eq!(received(&m), (0..30).collect::<Vec<_>>());
        assert!(sink.shutdown(Duration::from_secs(5)));
        let s = sink.snapshot();
        assert_eq!((s.sent, s.failed, s.dropped, s.waiting), (30, 0, 0, 0));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let m = Memory::default();
        m.down.store(true, Ordering::SeqCst);
        let sink = SinkHandle::start(m.clone(), Arc::default());
        let start = Instant::now();
        let refused = (0..1000).filter(|&i| sink.offer(i).is_err()).count();
        assert!(start.elapsed() < Duration::from_secs(1));
        // At most capacity waiting, plus one batch in the worker's hands.
        assert!((1000 - 110..=1000 - 100).contains(&refused), "{refused}");
        assert_eq!(sink.snapshot().dropped, refused as u64);
        m.down.store(false, Ordering::SeqCst);
        assert!(sink.shutdown(Duration::from_secs(5)));
        assert_eq!(received(&m).len(), 1000 - refused);
    }

    #[test]
    fn shutdown_gives_up_after_the_grace_period() {
        let m = Memory::default();
        m.down.store(true, Ordering::SeqCst);
        let sink = SinkHandle::start(m.clone(), Arc::default());
        for i in 0..25 {
            sink.offer(i).unwrap();
        }
        let start = Instant::now();
        assert!(!sink.shutdown(Duration::from_millis(100)));
        assert!(start.elapsed() < Duration::from_secs(2));
        wait_until("the worker lets go", || {
            sink.stats().waiting.load(Ordering::Relaxed) == 0
        });
        let s = sink.snapshot();
        assert_eq!((s.sent, s.dropped), (0, 25));
        assert_eq!(sink.offer(1), Err(Refused::Closed));
    }

    #[test]
    fn fatal_failures_and_exhausted_retries_give_up() {
        static DELAYS: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(1)];
        let m = Memory {
            policy: Some(Policy {
                batch: 1,
                retry: Retry::After(&DELAYS),
                ..FAST
            }),
            ..Memory::default()
        };
        let sink = SinkHandle::start(m.clone(), Arc::default());
        sink.offer(666).unwrap();
        sink.offer(1).unwrap();
        wait_until("1", || received(&m) == [1]);
        m.down.store(true, Ordering::SeqCst);
        sink.offer(2).unwrap();
        assert!(sink.shutdown(Duration::from_secs(5)));
        assert_eq!(*m.given_up.lock().unwrap(), [666, 2]);
        let s = sink.snapshot();
        assert_eq!((s.sent, s.failed, s.retried), (1, 2, 2));
    }

    #[test]
    fn sinks_are_shared_by_kind_and_target() {
        let sinks = Sinks::default();
        let a = sinks.get_or_start(Memory::default()).unwrap();
        let b = sinks.get_or_start(Memory::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(sinks.snapshots().len(), 1);
        assert!(Sinks::disabled().get_or_start(Memory::default()).is_none());
        sinks.close();
        assert!(sinks.finish(Instant::now() + Duration::from_secs(5), Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = Retry::Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let d: Vec<u128> = (1..=8).map(|f| r.delay(f).unwrap().as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(r.delay(1000), Some(Duration::from_secs(5)));
    }
}
