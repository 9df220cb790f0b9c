//! dmon: a monitoring event stream processor in the spirit of Riemann, whose
//! stream language is Python.
//!
//! Events arrive over the network, are decoded, and flow through a tree of
//! stream nodes the user composes in a Python (or Hy) module.
//!
//! | module | what it holds |
//! |---|---|
//! | [`event`] | the event and its fields |
//! | [`codec`] | wire formats: JSON today |
//! | [`server`] | sources (UDP) and the running [`server::Server`] |
//! | [`pipeline`] | the root set and the dispatch loop |
//! | [`streams`] | the node trait and the native stream nodes, one family per file |
//! | [`index`] | latest event per host/service, and expiry |
//! | [`outputs`] | services that send events out (mail) |
//! | [`context`] | what nodes reach while handling an event |
//! | [`console`] | where printed lines go |
//! | [`stats`], [`log_limit`] | counters, and rate-limited logs |
//! | [`python`] | the embedded interpreter, `dmon.streams`, module loading |
//! | [`cmd`] | one file per `dmon` subcommand |
//!
//! The engine (everything but `python` and `cmd`) knows no Python and no
//! screen: Python-backed nodes implement the same [`streams::Node`] trait.

pub mod cmd;
pub mod codec;
pub mod console;
pub mod context;
pub mod event;
pub mod index;
pub mod log_limit;
pub mod outputs;
pub mod pipeline;
pub mod python;
pub mod server;
pub mod stats;
pub mod streams;
