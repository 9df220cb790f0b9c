//! dmon's engine: events in, stream nodes, events out. No Python, no async
//! runtime, no network: the crates above (the server, the Python bindings,
//! the binary) build on it, and the fuzz targets need nothing else.
//!
//! | module | what it holds |
//! |---|---|
//! | [`event`] | the event and its fields |
//! | [`clock`] | time as nodes see it: the wall clock, or a virtual one |
//! | [`codec`] | wire formats: JSON, Riemann's protocol buffers |
//! | [`query`] | Riemann's query language: parse once, match events natively |
//! | [`index`] | latest event per host/service, and expiry; an [`index::IndexWatcher`] sees what it receives |
//! | [`streams`] | the node contract, its context and timers, the registry, and the native stream nodes, one family per file |
//! | [`roots`] | the root set: every event through every root, reloads, ticks and expiry |
//! | [`testing`] | the in-process harness: events and a virtual clock in, events out |
//! | [`rehearsal`] | streams run over given events under a virtual clock, outputs captured (replay, `dmon.testing`, `try_stream`) |
//! | [`trace`] | one event's path through the streams, node by node, on a copy of them |
//! | [`console`], [`log_limit`] | where printed lines go; rate-limited logs |
//!
//! Nodes backed by user Python implement the same [`streams::Node`] trait in
//! the crates above; output nodes that send (mail, `forward`…) find where to
//! send in the context ([`streams::context::Context::outputs`]).

pub mod clock;
pub mod codec;
pub mod event;
pub mod query;

// The stream engine (feature `engine`, on by default). The fuzz targets,
// which need only the decoders and the query language, build without it.
#[cfg(feature = "engine")]
pub mod console;
#[cfg(feature = "engine")]
pub mod index;
#[cfg(feature = "engine")]
pub mod log_limit;
#[cfg(feature = "engine")]
pub mod rehearsal;
#[cfg(feature = "engine")]
pub mod roots;
#[cfg(feature = "engine")]
pub mod streams;
#[cfg(feature = "engine")]
pub mod testing;
#[cfg(feature = "engine")]
pub mod trace;
