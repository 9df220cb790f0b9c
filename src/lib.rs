//! dmon: a monitoring event stream processor in the spirit of Riemann, whose
//! stream language is Python.
//!
//! Events arrive over the network, are decoded, and flow through a tree of
//! stream nodes the user composes in a Python (or Hy) module. The engine
//! (events, codecs, queries, stream nodes, the index, the harness) is the
//! `dmon-core` crate, re-exported here under its own module names; this
//! crate adds:
//!
//! | module | what it holds |
//! |---|---|
//! | [`server`] | sources (a [`server::source::Source`] per listener: JSON over UDP, Riemann over TCP and UDP, HTTP) and the running [`server::Server`] |
//! | [`pipeline`] | the dispatch loop feeding a [`roots::RootSet`]: queues, permits, counters |
//! | [`catalog`] | every stream function: the core's families and the outputs below |
//! | [`outputs`] | the output stream functions that send (mail, `forward`, `graphite`, `influxdb`, `webhook`) |
//! | [`sinks`] | where they send: one queue, batching, retry and counters machinery, and the server's [`sinks::senders::Senders`] |
//! | [`http`] | the HTTP listener: the dashboard, index queries, WebSocket/SSE subscriptions, Prometheus `/metrics` |
//! | [`index_feed`] | the index's live feed to subscribers |
//! | [`cluster`] | several nodes through NATS JetStream: partitions, gateways, workers, leases, checkpoints, cluster queries |
//! | [`checkpoint`], [`state_dir`] | the index and the nodes' state, taken and restored under the reload rules; kept in a local directory across restarts (`serve --state-dir`) |
//! | [`client`] | a Riemann TCP client (`dmon send --riemann`, `dmon query`, benchmarks) |
//! | [`tls`] | TLS for the Riemann TCP and HTTP listeners (reloadable, mutual) and for the client |
//! | [`instrument`], [`latency`] | events about dmon itself, into the index (or, asked, through the roots); a latency histogram |
//! | [`stats`], [`logs`] | counters (components report theirs: [`stats::ComponentCounters`]), and where log records go |
//! | [`memory`] | the memory budget by bytes (`--memory-limit`) every buffer a peer can fill draws on, in shares |
//! | [`recent`] | the last minutes of incoming events, for trying a stream on them |
//! | [`alloc_count`] | the binary's allocator: mimalloc, counting allocations for `dmon bench` |
//! | [`python`] | the embedded interpreter, `dmon.streams`, module loading, the shell's glue |
//! | [`cmd`] | one file per `dmon` subcommand |
//!
//! Python-backed nodes implement the same [`streams::Node`] trait as the
//! native ones.

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
pub mod cluster;
pub mod cmd;
pub mod index_feed;
pub mod instrument;
pub mod latency;
pub mod logs;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod python;
pub mod recent;
pub mod server;
pub mod sinks;
pub mod state_dir;
pub mod stats;
pub mod tls;
