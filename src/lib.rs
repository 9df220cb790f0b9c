//! dmon: a monitoring event stream processor in the spirit of Riemann, whose
//! stream language is Python.
//!
//! Events arrive over the network, are decoded, and flow through a tree of
//! stream nodes the user composes in a Python (or Hy) module.
//!
//! | module | what it holds |
//! |---|---|
//! | [`event`] | the event and its fields |
//! | [`clock`] | time as nodes see it: the wall clock, or a virtual one |
//! | [`cluster`] | several nodes through NATS JetStream: partitions, gateways, workers, leases, checkpoints, cluster queries |
//! | [`checkpoint`], [`state_dir`] | the index and the nodes' state, taken and restored under the reload rules; kept in a local directory across restarts (`serve --state-dir`) |
//! | [`codec`] | wire formats: JSON, Riemann's protocol buffers |
//! | [`server`] | sources (JSON over UDP, Riemann over TCP and UDP) and the running [`server::Server`] |
//! | [`http`] | the HTTP listener: the dashboard, index queries, WebSocket/SSE subscriptions, Prometheus `/metrics` |
//! | [`client`] | a Riemann TCP client (`dmon send --riemann`, `dmon query`, benchmarks) |
//! | [`tls`] | TLS for the Riemann TCP and HTTP listeners (reloadable, mutual) and for the client |
//! | [`pipeline`] | the root set and the dispatch loop |
//! | [`streams`] | the node contract, the registry, and the native stream nodes, one family per file |
//! | [`timers`] | wake-ups at deadlines for time-driven nodes, and the virtual-time driver |
//! | [`testing`] | the in-process harness: events and a virtual clock in, events out |
//! | [`rehearsal`] | streams run over given events under a virtual clock, outputs captured (replay, `dmon.testing`, `try_stream`) |
//! | [`trace`] | one event's path through the streams, node by node, on a copy of them (the shell's `trace`, `dmon trace`) |
//! | [`index`] | latest event per host/service, and expiry |
//! | [`instrument`], [`latency`] | events about dmon itself, into the index (or, asked, through the roots); a latency histogram |
//! | [`sinks`] | where output nodes send events out (mail, `forward`, `graphite`, `influxdb`, `webhook`): one queue, batching, retry and counters machinery |
//! | [`outputs`] | outputs captured instead of sent, in rehearsals |
//! | [`context`] | what nodes reach while handling an event |
//! | [`console`] | where printed lines go |
//! | [`alloc_count`] | the binary's allocator: mimalloc, counting allocations for `dmon bench` |
//! | [`stats`], [`log_limit`], [`logs`] | counters, rate-limited logs, and where log records go |
//! | [`query`] | Riemann's query language: parse once, match events natively |
//! | [`memory`] | the memory budget by bytes (`--memory-limit`) every buffer a peer can fill draws on, in shares |
//! | [`recent`] | the last minutes of incoming events, for trying a stream on them |
//! | [`python`] | the embedded interpreter, `dmon.streams`, module loading |
//! | [`cmd`] | one file per `dmon` subcommand |
//!
//! The engine (everything but `python` and `cmd`) knows no Python and no
//! screen: Python-backed nodes implement the same [`streams::Node`] trait.

pub mod alloc_count;
pub mod catalog;
pub mod checkpoint;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod codec;
pub mod console;
pub mod event;
pub mod http;
pub mod index;
pub mod index_feed;
pub mod instrument;
pub mod latency;
pub mod log_limit;
pub mod logs;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod python;
pub mod query;
pub mod recent;
pub mod rehearsal;
pub mod roots;
pub mod server;
pub mod sinks;
pub mod state_dir;
pub mod stats;
pub mod streams;
pub mod testing;
pub mod tls;
pub mod trace;
