//! dmon: a monitoring event stream processor in the spirit of Riemann, whose
//! stream language is Python.
//!
//! Events arrive over the network, are decoded, and flow through a tree of
//! stream nodes the user composes in a Python (or Hy) module. The crates,
//! each above the one before (docs/src/layout.md):
//!
//! | crate | what it holds |
//! |---|---|
//! | `dmon-core` | the engine: events, codecs, the query language, stream nodes and their registry, the index, the in-process harness |
//! | `dmon-server` | listeners, the pipeline, outputs and sinks, HTTP, cluster, stats, the state directory |
//! | `dmon-python` | the embedded interpreter, `dmon.streams`, module loading, the shells' glue |
//! | `dmon` (this one) | the binary: [`cmd`], one file per subcommand |
//!
//! The server's modules (and through them the core's) are re-exported here
//! under their own names, so `dmon::pipeline` is `dmon_server::pipeline`
//! and `dmon::streams` is `dmon_core::streams`, for the binary's commands,
//! the tests and the benches alike. Python-backed nodes implement the same
//! [`streams::Node`] trait as the native ones.

pub use dmon_server::{
    alloc_count, catalog, checkpoint, client, clock, cluster, codec, console, event, index,
    index_feed, instrument, latency, log_limit, logs, memory, node_core, outputs, pipeline, query,
    recent, rehearsal, roots, server, sinks, state_dir, stats, streams, testing, tls, trace, vals,
    wakes_at, warn_limited,
};

pub use dmon_python as python;

pub mod cmd;
