//! The command line: one file per subcommand.

pub mod bench;
pub mod catalog;
pub mod cluster_opts;
pub mod cluster_view;
pub mod query;
pub mod record;
pub mod replay;
pub mod send;
pub mod serve;
pub mod shell;
pub mod smtp_opts;
pub mod test;
pub mod trace;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use clap::{Parser, Subcommand};

use crate::client::RiemannClient;
use crate::tls::{ClientTls, Identity, PemFile};

/// dmon: a monitoring event stream processor with Python streams.
///
/// Hosts and services send events (host, service, state, metric, …) as JSON
/// over UDP; your stream module routes them: filter, average, index, mail.
///
/// With no command, dmon opens its shell (`dmon shell`) on a live server.
#[derive(Parser, Debug)]
#[command(
    name = "dmon",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    shell: shell::ShellArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open an interactive shell (python, ipython or bpython) on a live server (the default).
    Shell(shell::ShellArgs),
    /// Run the server headless: receive events and run them through the streams.
    Serve(serve::ServeArgs),
    /// Send events to a running dmon (JSON arguments, key=value pairs, or NDJSON on stdin).
    Send(send::SendArgs),
    /// Ask a running dmon's index, in Riemann's query language.
    Query(query::QueryArgs),
    /// Run the server and write every event it receives to a file, for replay.
    Record(record::RecordArgs),
    /// Run a recording through a stream module on a virtual clock, or send it to a running dmon.
    Replay(replay::ReplayArgs),
    /// Measure throughput and memory of the decode and stream paths.
    Bench(bench::BenchArgs),
    /// List the stream functions (or show one's documentation).
    Catalog(catalog::CatalogArgs),
    /// Run the tests of stream modules with pytest, in dmon's own Python.
    Test(test::TestArgs),
    /// Show one event's path through the streams: each node it reached, each filter's verdict, where it stopped.
    Trace(trace::TraceArgs),
}

impl Cli {
    pub fn run(self) -> ExitCode {
        init_logging();
        let result = match self.command {
            None => shell::run(self.shell),
            Some(Command::Shell(args)) => shell::run(args),
            Some(Command::Serve(args)) => serve::run(args),
            Some(Command::Send(args)) => send::run(args),
            Some(Command::Query(args)) => query::run(args),
            Some(Command::Record(args)) => record::run(args),
            Some(Command::Replay(args)) => replay::run(args),
            Some(Command::Bench(args)) => bench::run(args),
            Some(Command::Catalog(args)) => catalog::run(args),
            Some(Command::Test(args)) => test::run(args),
            Some(Command::Trace(args)) => trace::run(args),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("dmon: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A running dmon's Riemann TCP address, for the commands that talk to one.
#[derive(clap::Args, Debug, Clone)]
pub struct RiemannTarget {
    /// The running dmon's Riemann TCP address.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DMON_RIEMANN_TCP",
        default_value = "127.0.0.1:5555"
    )]
    pub riemann_tcp: SocketAddr,
    /// Speak TLS, trusting server certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", env = "DMON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM) to present; needs --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the IP
    /// address of --riemann-tcp).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl RiemannTarget {
    pub fn connect(&self) -> anyhow::Result<RiemannClient> {
        let tls = client_tls(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref().zip(self.tls_key.as_deref()),
            self.tls_server_name.as_deref(),
        )?;
        RiemannClient::connect_with(self.riemann_tcp, Duration::from_secs(10), tls.as_ref())
            .with_context(|| format!("cannot connect to {}", self.riemann_tcp))
    }
}

/// A client's TLS from its flags: none without `--tls-ca`.
pub fn client_tls(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> anyhow::Result<Option<ClientTls>> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let identity = identity.map(|(cert, key)| Identity::from_flags(cert, key));
    Ok(Some(ClientTls::load(
        &PemFile::new("--tls-ca", ca),
        identity.as_ref(),
        server_name,
    )?))
}

/// Logs go to stderr (the shell moves them above its prompt); `DMON_LOG`
/// (or `RUST_LOG`) filters them, default "info".
fn init_logging() {
    let filter = std::env::var("DMON_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    crate::logs::init(&filter);
}
