//! `dmon shell` (and plain `dmon`): an interactive Python shell attached to
//! the live, in-process server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::serve::ServerOpts;
use crate::console::{Holdable, LineSink, Stdout};
use crate::logs;
use crate::pipeline::Pipeline;
use crate::python::shell::{shell_module, ShellCluster, ShellServer, Target};
use crate::python::{self, loader, repl};
use crate::server::Server;
use crate::sinks::senders::server_context;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellKind {
    /// dmon's own prompt: history, completion, multi-line blocks.
    Python,
    /// IPython, in-process (pip install ipython).
    Ipython,
    /// bpython, in-process (pip install bpython).
    Bpython,
    /// Hy's own prompt, in-process (pip install hy): the same helpers, in
    /// Hy's syntax, for stream modules written in Hy.
    Hy,
}

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "In the shell, help() lists the commands: inject(), paste(), send(), \
streams(), tap(), index(), stats(), reload(), edit(), watch(), try_stream(), spark(), top(), record(); \
help(streams) the stream functions. Rebinding a name containing \
\"stream\" changes the running streams when the statement finishes. Ctrl-D or exit() stops \
the server and leaves."
)]
pub struct ShellArgs {
    /// Which shell to run.
    #[arg(short = 's', long = "shell", value_enum, default_value = "python")]
    pub kind: ShellKind,
    /// At exit, print the counters as one `dmon stats: {json}` line (as
    /// `serve` does) instead of a short table.
    #[arg(long)]
    pub stats_json: bool,
    /// Open the shell against a dmon already running at HOST:PORT (its UDP
    /// address) instead of starting one: inject() and send() go there, and
    /// index() and query() ask its --riemann-tcp address.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<SocketAddr>,
    /// With --connect: query over TLS, trusting server certificates signed
    /// by this CA (PEM); --tls-cert and --tls-key then name the client
    /// certificate to present, for mutual TLS.
    #[arg(long, value_name = "FILE", env = "DMON_TLS_CA", requires = "connect")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry
    /// (default: the IP address of --riemann-tcp).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    #[command(flatten)]
    pub server: ServerOpts,
}

/// Server output under IPython: through Python's `sys.stdout`, which
/// IPython's prompt patches so lines appear above it.
struct PythonStdout;

impl LineSink for PythonStdout {
    fn write_line(&self, line: &str) {
        let written = Python::attach(|py| -> PyResult<()> {
            let out = py.import("sys")?.getattr("stdout")?;
            out.call_method1("write", (format!("{line}\n"),))?;
            out.call_method0("flush")?;
            Ok(())
        });
        if written.is_err() {
            Stdout.write_line(line);
        }
    }
}

/// Server output under bpython: queued for bpython's own thread to show
/// (bpython's screen cannot be written from another thread).
struct BpythonQueue;

impl LineSink for BpythonQueue {
    fn write_line(&self, line: &str) {
        let queued = Python::attach(|py| -> PyResult<()> {
            shell_module(py)?.call_method1("bpython_output", (line,))?;
            Ok(())
        });
        if queued.is_err() {
            Stdout.write_line(line);
        }
    }
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Fails early, with the install command, when the chosen shell is missing.
fn check_installed(kind: ShellKind) -> anyhow::Result<()> {
    let module = match kind {
        ShellKind::Python => return Ok(()),
        ShellKind::Ipython => "IPython",
        ShellKind::Bpython => "bpython",
        ShellKind::Hy => "hy",
    };
    Python::attach(|py| match py.import(module) {
        Ok(_) => Ok(()),
        Err(_) => {
            let exe: String = py
                .import("sys")
                .and_then(|s| s.getattr("executable"))
                .and_then(|e| e.extract())
                .unwrap_or_else(|_| "python3".into());
            let package = module.to_lowercase();
            anyhow::bail!(
                "{package} is not installed in the Python dmon embeds ({exe}); install it with \
                 `{exe} -m pip install {package}` (or into a virtualenv that is active or named by \
                 VIRTUAL_ENV), or use `dmon shell -s python`"
            )
        }
    })
}

pub fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    python::init().context("starting the embedded Python")?;
    check_installed(args.kind)?;
    // TLS files are checked before anything starts.
    let (listeners, client_tls) = match args.connect {
        None => (Some(args.server.listeners()?), None),
        Some(_) => {
            let identity = args
                .server
                .tls_cert
                .as_deref()
                .zip(args.server.tls_key.as_deref());
            let tls = super::client_tls(
                args.tls_ca.as_deref(),
                identity,
                args.tls_server_name.as_deref(),
            )?;
            (None, tls)
        }
    };
    Python::attach(|py| -> PyResult<()> {
        // Ctrl-C while code runs raises KeyboardInterrupt instead of killing dmon.
        let signal = py.import("signal")?;
        signal.call_method1(
            "signal",
            (
                signal.getattr("SIGINT")?,
                signal.getattr("default_int_handler")?,
            ),
        )?;
        Ok(())
    })?;

    let mut plain = None;
    let console: Arc<dyn LineSink> = match args.kind {
        ShellKind::Python => {
            let (editor, sink) = repl::editor(color())?;
            plain = Some(editor);
            match sink {
                Some(sink) => Arc::new(sink),
                None => Arc::new(Stdout),
            }
        }
        ShellKind::Ipython => Arc::new(PythonStdout),
        ShellKind::Bpython => Arc::new(BpythonQueue),
        // Hy's prompt reads with Python's input(): lines go straight out.
        ShellKind::Hy => Arc::new(Stdout),
    };
    // Held while help()'s pager or edit()'s editor has the terminal.
    let held = Arc::new(Holdable::new(console));
    let console: Arc<dyn LineSink> = held.clone();
    // Loaded now, on this thread: BpythonQueue loads it for the first log
    // line, and a background thread's line (the SMTP relay's check) loading
    // it meanwhile could leave setup() to find a half-run module.
    Python::attach(|py| shell_module(py).map(drop))?;
    // Log records go above the prompt too, in their short form (logs()
    // shows them whole).
    logs::to_console(Arc::clone(&console), color());
    let ctx = Arc::new(server_context(
        args.server.smtp.start_mailer(Arc::clone(&console))?,
        Arc::clone(&console),
    ));
    python::bind_context(Arc::clone(&ctx))?;
    let source = loader::StreamSource::parse(args.server.streams.as_deref());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pipeline = Pipeline::new(Arc::clone(&ctx), Vec::new());
    args.server.apply_limits(&pipeline);
    let pipeline = Arc::new(pipeline);
    let (target, first_addr) = match args.connect {
        Some(remote) => (
            Target::Remote {
                riemann_tcp: args.server.riemann_tcp,
                tls: client_tls,
            },
            remote,
        ),
        None => (Target::Local(Arc::clone(&pipeline)), args.server.udp),
    };
    let local = args.connect.is_none();
    let handle = Python::attach(|py| {
        Py::new(
            py,
            ShellServer::new(target, first_addr, source.clone(), held),
        )
    })?;

    // The module's streams are in place before the first datagram arrives.
    let namespace = Python::attach(|py| -> anyhow::Result<Py<PyDict>> {
        let ns = PyDict::new(py);
        shell_module(py)?.call_method1("setup", (&handle, &ns))?;
        if local {
            let module = loader::import(py, &source)?;
            shell_module(py)?.call_method1("adopt", (module,))?;
            let roots = handle.get().sync_roots(&ns)?;
            if roots.as_ref().is_none_or(|r| r.is_empty()) {
                return Err(loader::no_streams(&source).into());
            }
        }
        Ok(ns.unbind())
    })?;
    let server = if let Some(listeners) = listeners {
        for warning in args.server.plaintext_warnings() {
            tracing::warn!("{warning}");
        }
        // Gateway (--publish): received events go to JetStream first.
        let gateway = runtime.block_on(super::serve::gateway(&args.server))?;
        let spawn_dispatcher = crate::cluster::publish::through(gateway, python::spawn_dispatcher);
        let state = args.server.restore_state(&pipeline)?;
        let mut server = runtime
            .block_on(Server::start(pipeline, &listeners, spawn_dispatcher))
            .map_err(super::serve::cannot_listen)?;
        // Spawned inside the runtime the server runs on.
        let _guard = runtime.enter();
        if let Some(every) = args.server.instrument_every() {
            server.instrument(every);
        }
        if let Some(state) = state {
            args.server.keep_state(&mut server, state);
        }
        handle.get().attach_server(server.injector(), &server.bound);
        python::dispatch_through(server.injector())?;
        Some(server)
    } else {
        None
    };
    // One view of the cluster: register, answer, and ask the cluster.
    let cluster_view = match &server {
        Some(server) => runtime.block_on(super::cluster_view::ClusterView::start(
            &args.server.cluster,
            args.server.query_limits(),
            Arc::clone(&server.pipeline),
        ))?,
        None => None,
    };
    if let Some(view) = &cluster_view {
        handle.get().attach_cluster(ShellCluster {
            conn: view.conn.clone(),
            runtime: runtime.handle().clone(),
            name: view.name.clone(),
        });
    }
    let udp_addr = server.as_ref().map_or(first_addr, |s| s.bound.udp());
    Python::attach(|py| {
        shell_module(py)?
            .call_method1("set_address", (udp_addr.ip().to_string(), udp_addr.port()))
            .map(drop)
    })?;

    let outcome = match (args.kind, plain.as_mut()) {
        (ShellKind::Python, Some(editor)) => {
            let banner = Python::attach(|py| {
                shell_module(py)?
                    .call_method0("banner")?
                    .extract::<String>()
            })?;
            repl::run(editor, &banner);
            Ok(())
        }
        (kind, _) => Python::attach(|py| {
            let entry = match kind {
                ShellKind::Ipython => "run_ipython",
                ShellKind::Hy => "run_hy",
                _ => "run_bpython",
            };
            match shell_module(py)?.call_method0(entry) {
                Err(e) if !e.is_instance_of::<PySystemExit>(py) => Err(e),
                _ => Ok(()),
            }
        }),
    };
    drop(namespace);
    logs::to_stderr();
    if let Some(view) = cluster_view {
        runtime.block_on(view.stop());
    }
    if let Some(server) = server {
        let pipeline = Arc::clone(&server.pipeline);
        let grace = args.server.shutdown_grace;
        // The timer is made inside the runtime, which it needs.
        let finished =
            runtime.block_on(async { tokio::time::timeout(grace, server.shutdown()).await });
        // After the shutdown: everything received is in the recording.
        if let Some(recorded) = handle.get().stop_recording() {
            eprintln!("{recorded}");
        }
        let Ok(stats) = finished else {
            super::serve::forced_stop(&pipeline, &super::serve::grace_over(grace));
        };
        if args.stats_json {
            eprintln!("dmon stats: {}", serde_json::to_string(&stats)?);
        } else {
            eprintln!("{}", stats.summary());
        }
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}
