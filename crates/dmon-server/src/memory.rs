//! One memory budget by bytes (`--memory-limit`) that every buffer a peer
//! can fill draws on, so no client, however hostile, can make dmon hold more
//! than the limit in them.
//!
//! The limit is split into [`Share`]s, one per kind of buffer, each a fixed
//! fraction: a flood of one kind (unread query replies, say) cannot take
//! the memory another needs (the acknowledgements of everyone's events).
//! A buffer charges what it holds before holding it ([`MemoryBudget::try_charge`]
//! or, where waiting is the right answer, [`MemoryBudget::charge`]) and the
//! [`Charge`] gives it back when dropped. Events are charged
//! [`Event::retained_bytes`](crate::event::Event::retained_bytes): their
//! decoded size, tags and attributes included.
//!
//! Large Riemann messages draw on [`Share::Messages`] only up to three
//! quarters of it ([`MemoryBudget::try_charge_large`]): the last quarter is
//! kept for ordinary batches, so clients holding huge frames (even stalled
//! mid-body) cannot refuse everyone else's `forward()` batches.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// The default `--memory-limit`, MiB.
pub const DEFAULT_LIMIT_MIB: usize = 1024;

/// A charge over this many bytes is a large message: it may not use the
/// quarter of [`Share::Messages`] kept for ordinary batches.
pub const LARGE_MESSAGE: usize = 1024 * 1024;

/// A kind of buffer, with its fraction of the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Riemann TCP messages being received and decoded.
    Messages,
    /// Events received and waiting for the streams (every source).
    Pipeline,
    /// Query replies waiting to be written: Riemann TCP and HTTP `/index`.
    Replies,
    /// Events queued for HTTP subscribers (WebSocket, SSE).
    Subscribers,
    /// Events queued for outputs (forward, graphite, influxdb, webhook, email).
    Sinks,
    /// Events waiting for the recorder's writer (`dmon record`, `record()`).
    Recorder,
    /// The ring of recent events the shell's try_stream() replays.
    Recent,
}

impl Share {
    pub const ALL: [Share; 7] = [
        Share::Messages,
        Share::Pipeline,
        Share::Replies,
        Share::Subscribers,
        Share::Sinks,
        Share::Recorder,
        Share::Recent,
    ];

    /// As stats and `/metrics` name it (`memory_<name>_bytes`).
    pub fn name(self) -> &'static str {
        match self {
            Share::Messages => "messages",
            Share::Pipeline => "pipeline",
            Share::Replies => "replies",
            Share::Subscribers => "subscribers",
            Share::Sinks => "sinks",
            Share::Recorder => "recorder",
            Share::Recent => "recent",
        }
    }

    /// Sixteenths of the limit. They add up to 14: the last eighth is
    /// headroom for what no peer controls (the index, Python, the code).
    fn sixteenths(self) -> usize {
        match self {
            Share::Messages | Share::Pipeline => 4,
            Share::Replies => 2,
            Share::Subscribers | Share::Sinks | Share::Recorder | Share::Recent => 1,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One share's room (permits are bytes) and what it refused.
struct Pool {
    room: Arc<Semaphore>,
    size: AtomicUsize,
    refused: AtomicU64,
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            room: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            refused: AtomicU64::new(0),
        }
    }

    /// Grows or shrinks the room to `size`; what is held stays held.
    fn resize(&self, size: usize) {
        let old = self.size.swap(size, Ordering::Relaxed);
        if size > old {
            self.room.add_permits(size - old);
        } else {
            self.room.forget_permits(old - size);
        }
    }

    fn used(&self) -> usize {
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.room.available_permits())
    }

    /// A charge of `bytes` already taken from this pool's room.
    fn charged(&self, bytes: usize) -> Charge {
        Charge {
            room: Arc::clone(&self.room),
            large: None,
            bytes,
        }
    }
}

/// The budget: the limit and every share's use of it.
pub struct MemoryBudget {
    limit: AtomicUsize,
    pools: Vec<Pool>,
    /// The part of [`Share::Messages`] large messages may use.
    large: Pool,
}

/// Bytes held against a share; given back when dropped.
#[must_use = "the memory is given back when the charge is dropped"]
pub struct Charge {
    room: Arc<Semaphore>,
    large: Option<Arc<Semaphore>>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `other`'s bytes to this charge (of the same share): a queue
    /// holds one charge for all its items.
    pub fn merge(&mut self, mut other: Charge) {
        debug_assert!(Arc::ptr_eq(&self.room, &other.room), "one share");
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Takes up to `bytes` of this charge into a charge of its own: what a
    /// batch taken from a queue holds until it is sent.
    pub fn split(&mut self, bytes: usize) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge {
            room: Arc::clone(&self.room),
            large: self.large.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.room.add_permits(self.bytes);
        if let Some(large) = &self.large {
            large.add_permits(self.bytes);
        }
    }
}

/// What an item held in a queue keeps alive, in bytes.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Arc<crate::event::Event> {
    fn weight(&self) -> usize {
        self.retained_bytes()
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} bytes)", self.bytes)
    }
}

/// A charge the share has no room for now: what the refusal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub share: Share,
    pub wanted: usize,
    /// The bytes the share may hold at most (for large messages, the part
    /// they may use).
    pub size: usize,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes do not fit in what is free of the {} MiB dmon keeps for {} (--memory-limit)",
            self.wanted,
            self.size >> 20,
            describe(self.share)
        )
    }
}

fn describe(share: Share) -> &'static str {
    match share {
        Share::Messages => "large messages being received",
        Share::Pipeline => "events waiting for the streams",
        Share::Replies => "query replies",
        Share::Subscribers => "subscribers' queues",
        Share::Sinks => "outputs' queues",
        Share::Recorder => "the recorder",
        Share::Recent => "recent events",
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(DEFAULT_LIMIT_MIB << 20)
    }
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        let limit = clamp(limit);
        MemoryBudget {
            limit: AtomicUsize::new(limit),
            pools: Share::ALL
                .iter()
                .map(|s| Pool::new(size_of_share(limit, *s)))
                .collect(),
            large: Pool::new(size_of_large(limit)),
        }
    }

    /// Sets the limit; what is held stays held (and counts against the new
    /// sizes). Call before sources start.
    pub fn set_limit(&self, limit: usize) {
        let limit = clamp(limit);
        self.limit.store(limit, Ordering::Relaxed);
        for share in Share::ALL {
            self.pool(share).resize(size_of_share(limit, share));
        }
        self.large.resize(size_of_large(limit));
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The bytes `share` may hold at most.
    pub fn size(&self, share: Share) -> usize {
        self.pool(share).size.load(Ordering::Relaxed)
    }

    /// The bytes `share` holds now.
    pub fn used(&self, share: Share) -> usize {
        self.pool(share).used()
    }

    /// Charges refused to `share` so far.
    pub fn refused(&self, share: Share) -> u64 {
        self.pool(share).refused.load(Ordering::Relaxed)
    }

    /// A charge of nothing against `share`, to [`Charge::merge`] into.
    pub fn nothing(&self, share: Share) -> Charge {
        self.pool(share).charged(0)
    }

    /// `bytes` against `share`, if it has room now; a refusal is counted.
    pub fn try_charge(&self, share: Share, bytes: usize) -> Result<Charge, Full> {
        let pool = self.pool(share);
        self.charge_now(share, bytes)
            .ok_or_else(|| self.refuse(share, bytes, pool))
    }

    /// `bytes` against `share`, if it has room now (more than the whole
    /// share never has); for a source that waits ([`MemoryBudget::charge`])
    /// when there is none, so nothing is counted as refused.
    pub fn charge_now(&self, share: Share, bytes: usize) -> Option<Charge> {
        let pool = self.pool(share);
        if bytes > pool.size.load(Ordering::Relaxed) {
            return None;
        }
        let bytes = want(bytes, pool);
        pool.room.try_acquire_many(bytes).ok()?.forget();
        Some(pool.charged(bytes as usize))
    }

    /// `bytes` against `share`, waiting until there is room: for a source
    /// that should slow down rather than refuse. More than the whole share
    /// waits for all of it.
    pub async fn charge(&self, share: Share, bytes: usize) -> Charge {
        let pool = self.pool(share);
        let bytes = want(bytes, pool);
        // The semaphore is never closed.
        if let Ok(permit) = pool.room.acquire_many(bytes).await {
            permit.forget();
        }
        pool.charged(bytes as usize)
    }

    /// `bytes` of a Riemann message against [`Share::Messages`]; one over
    /// [`LARGE_MESSAGE`] may use only the part of it large messages share.
    pub fn try_charge_large(&self, bytes: usize) -> Result<Charge, Full> {
        if bytes <= LARGE_MESSAGE {
            return self.try_charge(Share::Messages, bytes);
        }
        let large_size = self.large.size.load(Ordering::Relaxed);
        let room = match bytes <= large_size {
            true => self
                .large
                .room
                .try_acquire_many(want(bytes, &self.large))
                .ok(),
            false => None,
        };
        let Some(large) = room else {
            let pool = self.pool(Share::Messages);
            let mut full = self.refuse(Share::Messages, bytes, pool);
            full.size = large_size;
            return Err(full);
        };
        match self.try_charge(Share::Messages, bytes) {
            Ok(mut charge) => {
                large.forget();
                charge.large = Some(Arc::clone(&self.large.room));
                Ok(charge)
            }
            Err(full) => Err(full),
        }
    }

    fn refuse(&self, share: Share, wanted: usize, pool: &Pool) -> Full {
        pool.refused.fetch_add(1, Ordering::Relaxed);
        Full {
            share,
            wanted,
            size: pool.size.load(Ordering::Relaxed),
        }
    }

    fn pool(&self, share: Share) -> &Pool {
        &self.pools[share.index()]
    }
}

/// A charge is at least a byte, and at most the whole share (it then waits
/// for all of it, or is refused unless the share is empty).
fn want(bytes: usize, pool: &Pool) -> u32 {
    let size = pool.size.load(Ordering::Relaxed).max(1);
    bytes.clamp(1, size).min(u32::MAX as usize) as u32
}

fn clamp(limit: usize) -> usize {
    limit.clamp(16, Semaphore::MAX_PERMITS)
}

fn size_of_share(limit: usize, share: Share) -> usize {
    limit / 16 * share.sixteenths()
}

fn size_of_large(limit: usize) -> usize {
    size_of_share(limit, Share::Messages) / 4 * 3
}

/// Each share's use, for stats: flattened into the stats JSON as
/// `memory_limit_bytes`, `memory_<share>_bytes` (held now) and
/// `memory_<share>_refused` (charges refused so far).
#[derive(Debug, Clone, Default)]
pub struct MemoryStats {
    pub limit: u64,
    /// (share, bytes held, refusals), in [`Share::ALL`]'s order.
    pub shares: Vec<(Share, u64, u64)>,
}

impl MemoryStats {
    /// `budget`'s use; the recent ring keeps its own count of its bytes.
    pub fn of(budget: &MemoryBudget, recent_bytes: usize) -> MemoryStats {
        MemoryStats {
            limit: budget.limit() as u64,
            shares: Share::ALL
                .iter()
                .map(|&s| {
                    let used = match s {
                        Share::Recent => recent_bytes,
                        _ => budget.used(s),
                    };
                    (s, used as u64, budget.refused(s))
                })
                .collect(),
        }
    }
}

impl serde::Serialize for MemoryStats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + 2 * self.shares.len()))?;
        map.serialize_entry("memory_limit_bytes", &self.limit)?;
        for (share, used, refused) in &self.shares {
            map.serialize_entry(&format!("memory_{}_bytes", share.name()), used)?;
            map.serialize_entry(&format!("memory_{}_refused", share.name()), refused)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn shares_are_fixed_fractions_of_the_limit() {
        let budget = MemoryBudget::new(1024 * MIB);
        assert_eq!(budget.size(Share::Messages), 256 * MIB);
        assert_eq!(budget.size(Share::Pipeline), 256 * MIB);
        assert_eq!(budget.size(Share::Replies), 128 * MIB);
        assert_eq!(budget.size(Share::Recent), 64 * MIB);
        let total: usize = Share::ALL.iter().map(|s| budget.size(*s)).sum();
        assert_eq!(total, 896 * MIB, "an eighth is left as headroom");
    }

    #[test]
    fn a_charge_is_given_back_when_dropped_and_refusals_are_counted() {
        let budget = MemoryBudget::new(16 * MIB);
        let replies = budget.size(Share::Replies);
        let held = budget.try_charge(Share::Replies, replies - 10).unwrap();
        assert_eq!(budget.used(Share::Replies), replies - 10);
        let full = budget.try_charge(Share::Replies, 11).unwrap_err();
        assert_eq!(full.share, Share::Replies);
        assert!(full.to_string().contains("query replies"), "{full}");
        assert_eq!(budget.refused(Share::Replies), 1);
        // Other shares are untouched by this one's use.
        assert!(budget.try_charge(Share::Sinks, 11).is_ok());
        drop(held);
        assert_eq!(budget.used(Share::Replies), 0);
        assert!(budget.try_charge(Share::Replies, 11).is_ok());
    }

    #[test]
    fn large_messages_leave_a_quarter_for_ordinary_batches() {
        let budget = MemoryBudget::new(64 * MIB);
        let messages = budget.size(Share::Messages);
        assert_eq!(messages, 16 * MIB);
        let mut held = Vec::new();
        while let Ok(c) = budget.try_charge_large(2 * MIB) {
            held.push(c);
        }
        assert_eq!(held.len(), 6, "12 of the 16 MiB");
        let full = budget.try_charge_large(2 * MIB).unwrap_err();
        assert_eq!(full.size, 12 * MIB);
        // Ordinary batches still fit, up to the whole share.
        let small: Vec<_> = (0..4)
            .map(|_| budget.try_charge_large(MIB).expect("an ordinary batch"))
            .collect();
        assert!(budget.try_charge_large(MIB).is_err());
        drop(small);
        held.pop();
        assert!(budget.try_charge_large(2 * MIB).is_ok());
    }

    #[test]
    fn more_than_a_whole_share_is_refused_even_when_it_is_empty() {
        let budget = MemoryBudget::new(16 * MIB);
        assert!(budget.try_charge(Share::Replies, 2 * MIB + 1).is_err());
        assert!(budget.try_charge_large(3 * MIB + 1).is_err());
        assert!(budget.try_charge_large(3 * MIB).is_ok());
        assert_eq!(budget.refused(Share::Messages), 1);
    }

    #[test]
    fn a_queue_holds_one_charge_and_batches_split_it() {
        let budget = MemoryBudget::new(16 * MIB);
        let mut queue = budget.nothing(Share::Sinks);
        for _ in 0..10 {
            queue.merge(budget.try_charge(Share::Sinks, 1000).unwrap());
        }
        assert_eq!(budget.used(Share::Sinks), 10_000);
        let batch = queue.split(4000);
        assert_eq!((batch.bytes(), queue.bytes()), (4000, 6000));
        drop(batch);
        assert_eq!(budget.used(Share::Sinks), 6000);
        drop(queue.split(usize::MAX));
        assert_eq!(budget.used(Share::Sinks), 0);
        drop(queue);
        assert_eq!(budget.used(Share::Sinks), 0);
    }

    #[test]
    fn a_limit_change_keeps_what_is_held() {
        let budget = MemoryBudget::new(16 * MIB);
        let held = budget.try_charge(Share::Pipeline, 4 * MIB).unwrap();
        budget.set_limit(32 * MIB);
        assert_eq!(budget.size(Share::Pipeline), 8 * MIB);
        assert_eq!(budget.used(Share::Pipeline), 4 * MIB);
        drop(held);
        assert_eq!(budget.used(Share::Pipeline), 0);
        assert!(budget.try_charge(Share::Pipeline, 8 * MIB).is_ok());
    }

    #[tokio::test]
    async fn charge_waits_for_room() {
        let budget = Arc::new(MemoryBudget::new(16 * MIB));
        let all = budget.size(Share::Pipeline);
        let held = budget.charge(Share::Pipeline, all).await;
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.charge(Share::Pipeline, 100).await.bytes() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), 100);
    }
}
