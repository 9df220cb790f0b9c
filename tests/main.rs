//! dmon's integration tests, as one test binary: each file here is a
//! module of it. One binary links the dmon library and its dependencies
//! (tokio, pyo3, async-nats, axum, rustls…) once, where a binary per file
//! linked them, and instantiated their generic code, some forty times.
//! nextest still runs every test in its own process.
//!
//! One file's tests, by their module path:
//! `cargo nextest run -E 'test(/^http::/)'` or
//! `cargo test --test integration http::`.
//!
//! `cargo test` runs every test of a binary in one process. Tests that
//! bind the embedded Python's one context in-process (alerting.rs,
//! python_api.rs) are therefore binaries of their own (Cargo.toml), so no
//! other file's tests rebind it under them.

mod common;
mod shell_support;

mod bad_input;
mod cli;
mod cluster;
mod cluster_gateway;
mod cluster_query;
mod cluster_tls;
mod cluster_workers;
mod dashboard;
mod dmon_test;
mod docs;
mod email;
mod email_relay;
mod embedded_python;
mod forward;
mod graphite;
mod hostile_udp;
mod http;
mod hy;
mod influxdb;
mod package;
mod python_testing;
mod query_language;
mod replay;
mod riemann;
mod riemann_cases;
mod riemann_hostile;
mod serve;
mod shell;
mod shell_feedback;
mod shell_reload;
mod shell_top;
mod state_dir;
mod tls;
mod trace;
mod try_stream;
mod webhook;
