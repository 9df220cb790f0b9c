//! `dmon serve`: the server, headless.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pyo3::Python;

use crate::console::Stdout;
use crate::context::Context;
use crate::outputs::email::{Mailer, SmtpServer};
use crate::pipeline::Pipeline;
use crate::python::{self, loader};
use crate::server::Server;

/// Where the server listens and what it runs; shared by every command that
/// runs a server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// Stream module: a .py or .hy file, or a module name found on PYTHONPATH.
    /// Without it, the example module built into dmon (examples/streams.py).
    #[arg(long, value_name = "FILE_OR_MODULE", env = "DMON_STREAM_MODULE")]
    pub streams: Option<String>,
    /// Address to receive JSON event datagrams on; port 0 picks a free port.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DMON_UDP",
        default_value = "127.0.0.1:7689"
    )]
    pub udp: SocketAddr,
    /// SMTP server that email() streams send through (plain SMTP, no auth).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DMON_SMTP",
        default_value = "localhost:25"
    )]
    pub smtp: SmtpServer,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Stops cleanly on Ctrl-C or SIGTERM: events already received are \
processed, queued mail gets a few seconds, and the final counters are logged as \
`dmon stats: {json}` on stderr."
)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerOpts,
}

/// Starts Python, loads the stream module and builds the pipeline; the
/// module's errors come back worded for the user.
pub fn prepare(opts: &ServerOpts) -> anyhow::Result<Arc<Pipeline>> {
    python::init().context("starting the embedded Python")?;
    let ctx = Arc::new(Context::new(
        Mailer::start(opts.smtp.clone()),
        Arc::new(Stdout),
    ));
    python::bind_context(Arc::clone(&ctx));
    let source = loader::StreamSource::parse(opts.streams.as_deref());
    let (_module, roots) = Python::attach(|py| loader::load(py, &source))?;
    let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
    tracing::info!("streams from {}: {}", source.describe(), names.join(", "));
    Ok(Arc::new(Pipeline::new(ctx, roots)))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let pipeline = prepare(&args.server)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::start(pipeline, args.server.udp, python::spawn_dispatcher)
            .await
            .with_context(|| format!("cannot listen on UDP {}", args.server.udp))?;
        println!(
            "Listening for event datagrams on: {} {}",
            server.udp_addr.ip(),
            server.udp_addr.port()
        );
        wait_for_stop_signal().await?;
        tracing::info!("shutting down: processing events already received");
        let stats = server.shutdown().await;
        eprintln!("dmon stats: {}", serde_json::to_string(&stats)?);
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
