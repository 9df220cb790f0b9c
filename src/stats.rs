//! Counters: what came in, what was bad, what each node did. Exact numbers
//! live here; logs are rate-limited and only sample them.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::streams::NodeSnapshot;

/// Counted by every source (UDP today).
#[derive(Default, Debug)]
pub struct IngestStats {
    pub datagrams: AtomicU64,
    /// Datagrams with at least one bad part.
    pub bad_datagrams: AtomicU64,
    /// Events decoded and handed to the pipeline.
    pub events: AtomicU64,
    /// Objects or fragments that could not become events.
    pub bad_events: AtomicU64,
    /// Riemann protocol messages (TCP frames and UDP datagrams).
    pub messages: AtomicU64,
    /// Riemann messages that were invalid, oversized or cut short.
    pub bad_messages: AtomicU64,
    /// Riemann TCP connections accepted.
    pub connections: AtomicU64,
    /// Queries answered.
    pub queries: AtomicU64,
    /// Times a source had to wait because the pipeline was full.
    pub pipeline_full: AtomicU64,
}

/// A snapshot of every counter, printed as `dmon stats: {json}` at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub uptime_secs: f64,
    pub datagrams: u64,
    pub bad_datagrams: u64,
    pub events: u64,
    pub bad_events: u64,
    pub messages: u64,
    pub bad_messages: u64,
    pub connections: u64,
    pub queries: u64,
    pub pipeline_full: u64,
    /// Events run through the roots, expired ones included.
    pub processed: u64,
    pub expired: u64,
    pub indexed: u64,
    pub mails_queued: u64,
    pub mails_sent: u64,
    pub mail_failures: u64,
    pub mails_dropped: u64,
    pub nodes: Vec<NodeSnapshot>,
}
