//! dmon's server: what runs around the engine (`dmon-core`, re-exported
//! here under its own module names) to make it a monitoring server. No
//! Python: Python-backed nodes plug in from `dmon-python` through the
//! core's [`streams::Node`] trait.
//!
//! | module | what it holds |
//! |---|---|
//! | [`server`] | sources (a [`server::source::Source`] per listener: JSON over UDP, Riemann over TCP and UDP, HTTP) and the running [`server::Server`] |
//! | [`pipeline`] | the dispatch loop feeding a [`roots::RootSet`]: queues, permits, counters |
//! | [`catalog`] | every stream function: the core's families and the outputs below |
//! | [`outputs`] | the output stream functions that send (mail, `forward`, `graphite`, `influxdb`, `webhook`) |
//! | [`sinks`] | where they send: one queue, batching, retry and counters machinery, and the server's [`sinks::senders::Senders`] |
//! | [`index_feed`] | the index's live feed to subscribers |
//! | `cluster` | (feature `cluster`) several nodes through NATS JetStream: partitions, gateways, workers, leases, checkpoints, cluster queries |
//! | [`checkpoint`], [`state_dir`] | the index and the nodes' state, taken and restored under the reload rules; kept in a local directory across restarts (`serve --state-dir`) |
//! | [`client`] | a Riemann TCP client (`dmon send --riemann`, `dmon query`, benchmarks) |
//! | [`tls`] | TLS for the Riemann TCP and HTTP listeners (reloadable, mutual) and for the client |
//! | [`instrument`], [`latency`] | events about dmon itself, into the index (or, asked, through the roots); a latency histogram |
//! | [`stats`], [`logs`] | counters (components report theirs: [`stats::ComponentCounters`]), and where log records go |
//! | [`memory`] | the memory budget by bytes (`--memory-limit`) every buffer a peer can fill draws on, in shares |
//! | [`recent`] | the last minutes of incoming events, for trying a stream on them |
//! | [`alloc_count`] | the binary's allocator: mimalloc, counting allocations for `dmon bench` |
//!
//! Features (all on by default): `cluster`, `http` (the HTTP listener,
//! `server::http`) and `mail` (`email()`). The pip package builds without
//! `cluster` and `http`.

// The engine, re-exported under its own names: `crate::event`,
// `dmon::streams`… mean the same here, in the tests and in the crates above.
pub use dmon_core::{
    clock, codec, console, event, index, log_limit, node_core, query, rehearsal, roots, streams,
    testing, trace, vals, wakes_at, warn_limited,
};

pub mod alloc_count;
pub mod catalog;
pub mod checkpoint;
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod index_feed;
pub mod instrument;
pub mod latency;
pub mod logs;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod recent;
pub mod server;
pub mod sinks;
pub mod state_dir;
pub mod stats;
pub mod tls;
