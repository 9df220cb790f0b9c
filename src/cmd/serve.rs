//! `dmon serve`: the server, headless.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pyo3::Python;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::cluster_view::ClusterView;
use crate::checkpoint::Checkpoint;
use crate::console::{LineSink, Stdout};
use crate::pipeline::{self, Pipeline};
use crate::python::{self, loader};
use crate::recent;
use crate::server::{riemann_tcp, Addresses, ListenErrors, Listeners, Server};
use crate::sinks::senders::server_context;
use crate::state_dir::StateDir;
use crate::stats::Stats;
use crate::tls::{Identity, PemFile, ServerTls};

/// Where the server listens and what it runs; shared by every command that
/// runs a server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// Stream module: a .py or .hy file; NAME for NAME.py (or NAME.hy) in the
    /// current directory; or else a module name found on PYTHONPATH.
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
    /// Address for Riemann protocol clients over TCP ("off" to disable).
    #[arg(long, value_name = "HOST:PORT", env = "DMON_RIEMANN_TCP", default_value = "127.0.0.1:5555", value_parser = parse_listener)]
    pub riemann_tcp: Listener,
    /// Address for Riemann protocol clients over UDP ("off" to disable).
    #[arg(long, value_name = "HOST:PORT", env = "DMON_RIEMANN_UDP", default_value = "127.0.0.1:5555", value_parser = parse_listener)]
    pub riemann_udp: Listener,
    /// Largest Riemann TCP message accepted, in bytes; larger ones get an
    /// error reply and the connection is closed.
    #[arg(long, value_name = "BYTES", default_value_t = riemann_tcp::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Most events (and states) in one Riemann message; a message with more
    /// is refused whole with an error reply naming the limit.
    #[arg(long, value_name = "N", env = "DMON_MAX_EVENTS_PER_MESSAGE", default_value_t = riemann_tcp::DEFAULT_MAX_EVENTS, value_parser = at_least_one)]
    pub max_events_per_message: usize,
    /// Longest Riemann query accepted, in bytes.
    #[arg(long, value_name = "BYTES", env = "DMON_MAX_QUERY_BYTES", default_value_t = riemann_tcp::DEFAULT_MAX_QUERY_BYTES, value_parser = at_least_one)]
    pub max_query_bytes: usize,
    /// Most simple predicates (`host = "a"`, `tagged "x"`…) in one Riemann
    /// query.
    #[arg(long, value_name = "N", env = "DMON_MAX_QUERY_TERMS", default_value_t = riemann_tcp::DEFAULT_MAX_QUERY_TERMS, value_parser = at_least_one)]
    pub max_query_terms: usize,
    /// Most events in one Riemann query's reply; a query matching more gets
    /// an error reply (replies are also capped at --max-frame bytes).
    #[arg(long, value_name = "N", env = "DMON_MAX_QUERY_RESULTS", default_value_t = riemann_tcp::DEFAULT_MAX_QUERY_RESULTS, value_parser = at_least_one)]
    pub max_query_results: usize,
    /// Most Riemann TCP connections open at once; one more is closed at once.
    #[arg(long, value_name = "N", env = "DMON_MAX_CONNECTIONS", default_value_t = riemann_tcp::DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Seconds a Riemann TCP connection may go without sending a complete
    /// message, or without reading a reply, before it is closed; also how
    /// long an HTTP request's headers may take, an HTTP client may go
    /// without reading what it is sent (a stalled subscriber), and an HTTP
    /// subscription may go with nothing sent to it but keep-alives.
    #[arg(long, value_name = "SECS", env = "DMON_IDLE_TIMEOUT", default_value = "120" /* DEFAULT_IDLE_TIMEOUT */, value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// Address for HTTP: the dashboard (`/`), index queries and
    /// subscriptions (`/index`, WebSocket or SSE) and Prometheus `/metrics`
    /// ("off", the default, to disable); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", env = "DMON_HTTP", default_value = "off", value_parser = parse_listener)]
    pub http: Listener,
    /// Most HTTP connections open at once; one more is closed at once.
    #[arg(long, value_name = "N", env = "DMON_HTTP_MAX_CONNECTIONS", default_value_t = crate::server::http::DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub http_max_connections: usize,
    /// Most HTTP subscriptions (WebSocket or SSE) open at once; one more
    /// gets 503.
    #[arg(long, value_name = "N", env = "DMON_HTTP_MAX_SUBSCRIBERS", default_value_t = crate::server::http::DEFAULT_MAX_SUBSCRIBERS, value_parser = at_least_one)]
    pub http_max_subscribers: usize,
    /// Seconds between keep-alives to each HTTP subscriber: a WebSocket
    /// ping, which must be answered (pong) before the next one, or an SSE
    /// comment line (`: keep-alive`). A subscriber that does not answer, or
    /// whose connection fails a write, is dropped (http_subscribers_dropped);
    /// one sent nothing but keep-alives for --idle-timeout is closed
    /// (http_subscribers_idle), freeing its slot.
    #[arg(long, value_name = "SECS", env = "DMON_HTTP_KEEPALIVE", default_value = "15" /* crate::server::http::DEFAULT_KEEPALIVE */, value_parser = parse_secs)]
    pub http_keepalive: Duration,
    /// PEM certificate (or chain) for TLS on Riemann TCP and --http (HTTPS,
    /// WSS); needs --tls-key. On SIGHUP both files are read again: new
    /// connections get the new certificate, open ones keep theirs. With the
    /// shell's --connect: the client certificate to present (mutual TLS).
    #[arg(long, value_name = "FILE", env = "DMON_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "DMON_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: Riemann TCP and --http clients must present a
    /// certificate signed by this CA (PEM); others are refused at the
    /// handshake.
    #[arg(
        long,
        value_name = "FILE",
        env = "DMON_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// A file whose first line is a token every --http request must carry,
    /// as `Authorization: Bearer TOKEN` or as the password of HTTP Basic
    /// authentication (browsers ask for it); at least 16 bytes.
    #[arg(long, value_name = "FILE", env = "DMON_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// The SMTP relay email() sends through: address, TLS, login.
    #[command(flatten)]
    pub smtp: super::smtp_opts::SmtpOpts,
    /// Seconds between the events dmon makes about itself (services "dmon
    /// ingest rate", "dmon dropped", "dmon index size", …, tagged "dmon");
    /// 0 turns them off. They go into the index (queries, the dashboard,
    /// /metrics), not through the streams: see --self-events-to-streams.
    #[arg(
        long,
        value_name = "SECS",
        env = "DMON_INSTRUMENT_INTERVAL",
        default_value_t = 10.0
    )]
    pub instrument_interval: f64,
    /// Send dmon's events about itself (--instrument-interval) through the
    /// stream module's roots, as Riemann does, instead of only into the
    /// index: for streams that alert on them (`where('tagged "dmon"', …)`).
    /// Then every root sees them: printer(), email(), forward(), graphite()
    /// and over() too, unless they filter them out; and a cluster gateway
    /// publishes them to its workers.
    #[arg(long, env = "DMON_SELF_EVENTS_TO_STREAMS")]
    pub self_events_to_streams: bool,
    /// Events that may wait in the pipeline at once; when it is full,
    /// sources stop reading (UDP datagrams then overflow the kernel's
    /// buffer, counted as kernel_drops).
    #[arg(long, value_name = "N", env = "DMON_MAX_IN_FLIGHT", default_value_t = pipeline::DEFAULT_MAX_IN_FLIGHT, value_parser = at_least_one)]
    pub max_in_flight: usize,
    /// Events one UDP datagram (JSON or Riemann) may carry; the rest are
    /// refused and counted.
    #[arg(long, value_name = "N", env = "DMON_MAX_DATAGRAM_EVENTS", default_value_t = pipeline::DEFAULT_MAX_EVENTS_PER_DATAGRAM, value_parser = at_least_one)]
    pub max_datagram_events: usize,
    /// Minutes of received events kept in memory for the shell's
    /// try_stream() to replay (a dry run of a new stream on recent
    /// traffic); 0 keeps none.
    #[arg(long, value_name = "MINUTES", env = "DMON_RECENT_MINUTES", default_value_t = recent::DEFAULT_MINUTES, value_parser = parse_minutes)]
    pub recent_minutes: f64,
    /// Most events those minutes may hold, whatever the rate, so memory
    /// stays bounded; past it the oldest go first (counted as
    /// recent_dropped).
    #[arg(long, value_name = "N", env = "DMON_RECENT_MAX_EVENTS", default_value_t = recent::DEFAULT_MAX_EVENTS, value_parser = at_least_one)]
    pub recent_max_events: usize,
    /// Most memory, in MiB, that what peers send and ask for may make dmon
    /// hold: Riemann messages being received and decoded (a quarter),
    /// events waiting for the streams (a quarter), query replies over
    /// Riemann TCP and HTTP (an eighth), subscribers', outputs' and the
    /// recorder's queues and the recent events try_stream() replays (a
    /// sixteenth each). Each is charged its decoded size, tags and
    /// attributes included. A message or reply that does not fit is
    /// refused with "server busy" (counted in memory_<share>_refused);
    /// sources that can wait (UDP) wait; the recent events drop their
    /// oldest. stats() and /metrics show each share's use
    /// (memory_<share>_bytes).
    #[arg(long, value_name = "MIB", env = "DMON_MEMORY_LIMIT", default_value_t = crate::memory::DEFAULT_LIMIT_MIB, value_parser = at_least_one)]
    pub memory_limit: usize,
    /// Seconds a stop (Ctrl-C, SIGTERM, or leaving the shell) may spend
    /// processing the events already received and letting the sinks send;
    /// past it dmon stops as a second signal does (exit status 1), counting
    /// the events left as unprocessed, so a slow stream with a long queue
    /// cannot hold a stop up for ever.
    #[arg(long, value_name = "SECS", env = "DMON_SHUTDOWN_GRACE", default_value = "30" /* DEFAULT_SHUTDOWN_GRACE */, value_parser = parse_secs)]
    pub shutdown_grace: Duration,
    /// Keep the index and every stream node's state (`by` forks, counters,
    /// windows, rates, throttles…; not what Python code keeps itself) in
    /// DIR/state.json, written every --checkpoint-secs and at a clean stop,
    /// and restored at start: a restart loses nothing, a crash at most one
    /// interval. Windows are not flushed at a stop: they carry on after the
    /// restart. Created if missing.
    #[arg(
        long,
        value_name = "DIR",
        env = "DMON_STATE_DIR",
        conflicts_with = "consume"
    )]
    pub state_dir: Option<PathBuf>,
    /// Seconds between saves of the state: to --state-dir, or a cluster
    /// worker's checkpoints to NATS, which a standby restores on takeover.
    #[arg(long, value_name = "SECS", env = "DMON_CHECKPOINT_SECS", default_value = "5", value_parser = parse_secs)]
    pub checkpoint_secs: Duration,
    /// Clustering: gateway (--publish) or worker (--consume) through NATS.
    #[command(flatten)]
    pub cluster: super::cluster_opts::ClusterOpts,
}

impl ServerOpts {
    /// How often to instrument, if at all.
    pub fn instrument_every(&self) -> Option<std::time::Duration> {
        (self.instrument_interval > 0.0 && self.instrument_interval.is_finite())
            .then(|| std::time::Duration::from_secs_f64(self.instrument_interval))
    }
}

/// A limit of 0 would refuse everything: a mistake, said at start-up.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Minutes: a finite number, 0 or more.
fn parse_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m >= 0.0 && m.is_finite() => Ok(m),
        Ok(_) => Err("expected a number of minutes, 0 or more (0 turns it off)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A listener address, or none ("off").
pub type Listener = Option<SocketAddr>;

fn parse_listener(s: &str) -> Result<Listener, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{e}: expected HOST:PORT or \"off\""))
}

/// A positive number of seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 => Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}")),
        _ => Err("expected a positive number of seconds".into()),
    }
}

impl ServerOpts {
    /// `--state-dir`, opened (created if missing; one that cannot be
    /// written is an error naming it), with what it holds put into
    /// `pipeline`. Call before the listeners start, so no event is
    /// processed before the state is back.
    pub fn restore_state(&self, pipeline: &Pipeline) -> anyhow::Result<Option<Arc<StateDir>>> {
        let Some(dir) = &self.state_dir else {
            return Ok(None);
        };
        let state = Arc::new(StateDir::open(dir)?);
        // `by` builds its forks' fresh copies, which may be Python's.
        Python::attach(|_| state.restore(pipeline));
        pipeline.add_counters(state.clone());
        Ok(Some(state))
    }

    /// Saves `state` every `--checkpoint-secs` and once more after the
    /// last event of a clean stop, and leaves windows open at the stop:
    /// they carry on from the saved state (flushing them too would send
    /// their events twice). Call inside the server's runtime.
    pub fn keep_state(&self, server: &mut Server, state: Arc<StateDir>) {
        let node = self.cluster.node_name();
        let (tx, every) = (server.sender(), self.checkpoint_secs);
        let (saver, last) = (Arc::clone(&state), node.clone());
        server.run_until_shutdown(move |stop| saver.save_every(tx, every, node, stop));
        server.at_last(move |p| {
            let _ = state.save(&Checkpoint::take(p, &last));
        });
        server.keep_windows_open();
    }

    /// Gives `pipeline` the limits these options set, its ring of recent
    /// events, and where dmon's own events go.
    pub fn apply_limits(&self, pipeline: &Pipeline) {
        pipeline.set_limits(self.max_in_flight, self.max_datagram_events);
        pipeline.set_self_events_to_streams(self.self_events_to_streams);
        pipeline
            .memory()
            .set_limit(self.memory_limit.saturating_mul(1 << 20));
        pipeline.recent.configure(
            self.recent_minutes * 60.0,
            self.recent_max_events,
            pipeline.memory().size(crate::memory::Share::Recent),
        );
    }

    /// What one query may ask of this node (`--max-query-*`), as the
    /// cluster view answers them.
    pub fn query_limits(&self) -> crate::cluster::query::Limits {
        crate::cluster::query::Limits {
            max_query_bytes: self.max_query_bytes,
            max_query_terms: self.max_query_terms,
            max_query_results: self.max_query_results,
        }
    }

    /// The listeners these options describe, their TLS files and token
    /// read and checked (an error names the flag and the file).
    pub fn listeners(&self) -> anyhow::Result<Listeners> {
        if self.http_token_file.is_some() && self.http.is_none() {
            anyhow::bail!("--http-token-file needs --http HOST:PORT");
        }
        let http_token = self
            .http_token_file
            .as_deref()
            .map(crate::server::http::token::HttpToken::from_file)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(Arc::new);
        Ok(Listeners {
            udp: self.udp,
            riemann_tcp: self.riemann_tcp,
            riemann_udp: self.riemann_udp,
            max_frame: self.max_frame,
            tcp_limits: riemann_tcp::Limits {
                max_events: self.max_events_per_message,
                max_query_bytes: self.max_query_bytes,
                max_query_terms: self.max_query_terms,
                max_query_results: self.max_query_results,
                max_connections: self.max_connections,
                idle_timeout: self.idle_timeout,
            },
            http: self.http,
            http_limits: crate::server::http::Limits {
                max_query_bytes: self.max_query_bytes,
                max_query_terms: self.max_query_terms,
                max_query_results: self.max_query_results,
                max_connections: self.http_max_connections,
                max_subscribers: self.http_max_subscribers,
                idle_timeout: self.idle_timeout,
                keepalive: self.http_keepalive,
            },
            tls: self.server_tls()?.map(Arc::new),
            http_token,
        })
    }

    /// The listeners' TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_flags(cert, key);
        let client_ca = self
            .tls_client_ca
            .as_ref()
            .map(|ca| PemFile::new("--tls-client-ca", ca));
        Ok(Some(ServerTls::load(identity, client_ca)?))
    }

    /// What these options leave open to the network: with TLS, UDP
    /// listeners reachable from it (UDP cannot be encrypted); without, every
    /// listener reachable from it, and an HTTP token sent over plain HTTP.
    /// One line each, naming the flag that changes it.
    pub fn plaintext_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.tls_cert.is_some() {
            let mut exposed = Vec::new();
            if !self.udp.ip().is_loopback() {
                exposed.push(format!(
                    "JSON UDP on {} (bind it to loopback with --udp 127.0.0.1:{})",
                    self.udp,
                    self.udp.port()
                ));
            }
            if let Some(addr) = self.riemann_udp.filter(|a| !a.ip().is_loopback()) {
                exposed.push(format!(
                    "Riemann UDP on {addr} (turn it off with --riemann-udp off)"
                ));
            }
            if !exposed.is_empty() {
                warnings.push(format!(
                    "TLS is on, but UDP cannot be encrypted: anyone who reaches {} can send events in plain text",
                    exposed.join(" and ")
                ));
            }
        } else {
            warnings.extend(self.open_listener_warnings());
            if let (Some(_), Some(http)) = (&self.http_token_file, self.http) {
                if !http.ip().is_loopback() {
                    warnings.push(format!(
                        "--http-token-file without --tls-cert: the token crosses the network in plain text to {http}"
                    ));
                }
            }
        }
        warnings
    }

    /// Without TLS: one line for each listener other hosts can reach, with
    /// what anyone who reaches it can do and the flags that restrict it.
    fn open_listener_warnings(&self) -> Vec<String> {
        let off_loopback = |addr: &SocketAddr| !addr.ip().is_loopback();
        let mut warnings = Vec::new();
        if let Some(addr) = self.riemann_tcp.filter(off_loopback) {
            warnings.push(format!(
                "Riemann TCP on {addr} is reachable from other hosts without TLS: anyone who \
                 reaches it can send events and query the index (restrict it with \
                 --riemann-tcp 127.0.0.1:{}, or add --tls-cert, --tls-key and --tls-client-ca)",
                addr.port()
            ));
        }
        let udp = [
            (
                "Riemann UDP",
                self.riemann_udp,
                "--riemann-udp",
                " or --riemann-udp off",
            ),
            ("JSON UDP", Some(self.udp), "--udp", ""),
        ];
        for (what, addr, flag, off) in udp {
            if let Some(addr) = addr.filter(off_loopback) {
                warnings.push(format!(
                    "{what} on {addr} is reachable from other hosts, and UDP has no TLS: \
                     anyone who reaches it can send events (restrict it with \
                     {flag} 127.0.0.1:{}{off}, or a firewall)",
                    addr.port()
                ));
            }
        }
        if let (None, Some(addr)) = (&self.http_token_file, self.http.filter(off_loopback)) {
            warnings.push(format!(
                "HTTP on {addr} is reachable from other hosts without TLS or a token: anyone \
                 who reaches it can read the index, subscribe to it and scrape /metrics \
                 (restrict it with --http 127.0.0.1:{}, or add --http-token-file with \
                 --tls-cert and --tls-key)",
                addr.port()
            ));
        }
        warnings
    }
}

/// The listeners that could not be opened, as the error `dmon` exits with
/// (said with the flags that move them: see [`ListenErrors`]).
pub fn cannot_listen(e: ListenErrors) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Prints where the server listens; the JSON UDP line comes last, as the
/// readiness signal scripts wait for.
pub fn announce(bound: &Addresses) {
    for line in bound.announcements() {
        println!("{line}");
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Stops cleanly on Ctrl-C or SIGTERM: events already received are \
processed, what sinks hold (mail, forward, graphite) gets a few seconds, and the final counters are logged as \
`dmon stats: {json}` on stderr. A second Ctrl-C or SIGTERM stops at once (exit \
status 1), counting what was left unprocessed; so does a stop that takes longer \
than --shutdown-grace."
)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Reload the stream module whenever its file changes; a module that
    /// fails to load is logged and the running streams stay.
    #[arg(long)]
    pub watch: bool,
}

/// Starts Python, loads the stream module and builds the pipeline; the
/// module's errors come back worded for the user.
pub fn prepare(opts: &ServerOpts) -> anyhow::Result<Arc<Pipeline>> {
    prepare_with(opts, Arc::new(Stdout))
}

/// [`prepare`], with printed lines going to `console`.
pub fn prepare_with(
    opts: &ServerOpts,
    console: Arc<dyn LineSink>,
) -> anyhow::Result<Arc<Pipeline>> {
    // First: a relay's flags that do not add up stop dmon before anything starts.
    let mailer = opts.smtp.start_mailer(Arc::clone(&console))?;
    python::init().context("starting the embedded Python")?;
    let ctx = Arc::new(server_context(mailer, console));
    python::bind_context(Arc::clone(&ctx))?;
    let source = loader::StreamSource::parse(opts.streams.as_deref());
    let (_module, roots) = Python::attach(|py| loader::load(py, &source))?;
    let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
    tracing::info!("streams from {}: {}", source.describe(), names.join(", "));
    let pipeline = Pipeline::new(ctx, roots);
    opts.apply_limits(&pipeline);
    Ok(Arc::new(pipeline))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let pipeline = prepare(&args.server)?;
    if args.watch {
        watch(
            loader::StreamSource::parse(args.server.streams.as_deref()),
            Arc::clone(&pipeline),
        )?;
    }
    serve_until_stopped(pipeline, &args.server, announce, "", |_| ExitCode::SUCCESS)
}

/// Serves until Ctrl-C or SIGTERM (what `serve` and `record` share): opens
/// the listeners, calls `announce` once they are bound, and on a signal
/// processes the events already received, prints the final counters and
/// returns what `finish(false)` says; a second signal, or a stop still
/// going after `--shutdown-grace`, stops at once, after `finish(true)`.
/// `also` names what the clean stop also finishes, for its log line.
pub(crate) fn serve_until_stopped(
    pipeline: Arc<Pipeline>,
    opts: &ServerOpts,
    announce: impl FnOnce(&Addresses),
    also: &str,
    finish: impl FnOnce(bool) -> ExitCode,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first: once "Listening" is printed, a SIGTERM must already
        // mean a clean shutdown, not the default kill.
        let mut stop = StopSignals::install()?;
        let listeners = opts.listeners()?;
        for warning in opts.plaintext_warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(tls) = &listeners.tls {
            reload_on_hangup(Arc::clone(tls))?;
        }
        // Gateway (--publish): received events go to JetStream first.
        let spawn_dispatcher =
            crate::cluster::publish::through(gateway(opts).await?, python::spawn_dispatcher);
        let state = opts.restore_state(&pipeline)?;
        let mut server = Server::start(pipeline, &listeners, spawn_dispatcher)
            .await
            .map_err(cannot_listen)?;
        python::dispatch_through(server.injector())?;
        if let Some(every) = opts.instrument_every() {
            server.instrument(every);
        }
        if let Some(state) = state {
            opts.keep_state(&mut server, state);
        }
        // One view of the cluster: register and answer cluster queries.
        let cluster_view = ClusterView::start(
            &opts.cluster,
            opts.query_limits(),
            Arc::clone(&server.pipeline),
        )
        .await?;
        // Cluster worker (--consume): stands by for or consumes its partitions.
        let worker = start_worker(opts, &server).await?;
        if worker.is_some() {
            server.keep_windows_open();
        }
        announce(&server.bound);
        stop.wait().await;
        if let Some(view) = cluster_view {
            view.stop().await;
        }
        let grace = opts.shutdown_grace;
        tracing::info!(
            "shutting down: processing{also} events already received for at most {} s (--shutdown-grace; Ctrl-C or SIGTERM again to stop at once)",
            grace.as_secs_f64()
        );
        let pipeline = Arc::clone(&server.pipeline);
        let finishing = async {
            // Cluster worker: its last batches, checkpoint and lease go first.
            if let Some(worker) = worker {
                worker.stop().await;
            }
            server.shutdown().await
        };
        tokio::select! {
            stats = finishing => {
                eprintln!("dmon stats: {}", serde_json::to_string(&stats)?);
                Ok(finish(false))
            }
            _ = stop.wait() => {
                finish(true);
                forced_stop(&pipeline, "stopped at once")
            }
            _ = tokio::time::sleep(grace) => {
                finish(true);
                forced_stop(&pipeline, &grace_over(grace))
            }
        }
    })
}

/// Reads the TLS files again on every SIGHUP (certificates are renewed
/// while the server runs); a reload that fails keeps the files in use.
fn reload_on_hangup(tls: Arc<ServerTls>) -> std::io::Result<()> {
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let tls = Arc::clone(&tls);
            // File reads and key parsing, off the async workers.
            let reloaded = tokio::task::spawn_blocking(move || {
                tls.reload().map(|()| tls.cert_path().display().to_string())
            })
            .await;
            match reloaded {
                Ok(Ok(cert)) => tracing::info!(
                    "SIGHUP: reloaded the TLS certificate and key ({cert}); new connections use them"
                ),
                Ok(Err(e)) => tracing::error!(
                    "SIGHUP: TLS reload failed, still using the previous certificate: {e}"
                ),
                Err(e) => tracing::error!("SIGHUP: TLS reload failed: {e}"),
            }
        }
    });
    Ok(())
}

/// The gateway `--publish` asks for, connected, or why not (naming the
/// URL and the flag).
pub(crate) async fn gateway(
    opts: &ServerOpts,
) -> anyhow::Result<Option<crate::cluster::publish::Gateway>> {
    let cluster = &opts.cluster;
    let Some(url) = &cluster.publish else {
        return Ok(None);
    };
    crate::cluster::publish::Gateway::start(
        url,
        &cluster.node_name(),
        cluster.partition_count,
        cluster.also_process,
        &cluster.nats.load()?,
    )
    .await
    .map(Some)
    .map_err(|e| anyhow::anyhow!("{e} (--publish)"))
}

/// Cluster worker: with --consume, connects to NATS and starts the worker
/// (see [`crate::cluster::consume`]); a NATS it cannot reach is an error
/// naming the URL and the flag.
async fn start_worker(
    opts: &ServerOpts,
    server: &Server,
) -> anyhow::Result<Option<crate::cluster::consume::Worker>> {
    let Some(url) = &opts.cluster.consume else {
        return Ok(None);
    };
    let Some(partitions) = opts.cluster.partitions()? else {
        anyhow::bail!("--consume needs --partitions");
    };
    let node = opts.cluster.node_name();
    let config = crate::cluster::consume::WorkerConfig {
        partitions,
        partition_count: opts.cluster.partition_count,
        node: node.clone(),
        lease: opts.cluster.lease(),
        checkpoint_every: opts.checkpoint_secs,
    };
    let auth = opts.cluster.nats.load()?;
    let start = async {
        let conn = crate::cluster::connect(url, &node, &auth).await?;
        crate::cluster::consume::Worker::start(
            conn,
            config,
            Arc::clone(&server.pipeline),
            server.sender(),
        )
        .await
    };
    let worker = start.await.map_err(|e| anyhow::anyhow!("--consume: {e}"))?;
    Ok(Some(worker))
}

/// How long a forced stop waits for the per-node counters, which a node
/// stuck in Python may hold up.
const FORCED_STATS_WAIT: Duration = Duration::from_millis(500);

/// Why a stop that outlasted `--shutdown-grace` ended, for
/// [`forced_stop`]'s log line.
pub(crate) fn grace_over(grace: Duration) -> String {
    format!(
        "stopped after the {} s of --shutdown-grace",
        grace.as_secs_f64()
    )
}

/// A second signal, or a stop past `--shutdown-grace`: exits now, whatever
/// the dispatch thread is stuck in, with the counters and what was left
/// unprocessed; `why` begins the log line saying so.
pub(crate) fn forced_stop(pipeline: &Arc<Pipeline>, why: &str) -> ! {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(pipeline);
    let _ = std::thread::Builder::new()
        .name("dmon-final-stats".into())
        .spawn(move || {
            let _ = tx.send(p.stats());
        });
    let mut stats: Stats = rx
        .recv_timeout(FORCED_STATS_WAIT)
        .unwrap_or_else(|_| pipeline.counters());
    stats.unprocessed = stats.queued;
    let stuck = match &stats.dispatch_busy_in {
        Some(path) => format!(
            "; the dispatch thread was {:.1} s into {path}",
            stats.dispatch_busy_secs
        ),
        None => String::new(),
    };
    tracing::warn!(
        "{why}: {} events received were not processed{stuck}",
        stats.unprocessed
    );
    match serde_json::to_string(&stats) {
        Ok(json) => eprintln!("dmon stats: {json}"),
        Err(e) => eprintln!("dmon stats: unavailable: {e}"),
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // Not a return: that would wait for the dispatch thread.
    std::process::exit(1)
}

/// How often `--watch` looks at the module file.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Reloads the stream module when its file's contents change. Contents,
/// not modification times: those are too coarse to see a save that lands
/// right after a truncate, and an editor's half-written file is simply
/// followed by the finished one.
fn watch(source: loader::StreamSource, pipeline: Arc<Pipeline>) -> anyhow::Result<()> {
    let path = Python::attach(|py| loader::module_file(py, &source))
        .context("--watch needs a stream module file (--streams FILE or a module name)")?;
    let contents = move || std::fs::read(&path).ok();
    let mut last = contents();
    tracing::info!("watching {} for changes", source.describe());
    std::thread::Builder::new()
        .name("dmon-watch".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH_INTERVAL);
            let now = contents();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match Python::attach(|py| loader::load(py, &source)) {
                Ok((_, roots)) => {
                    let names: Vec<String> = roots.iter().map(|r| r.name.clone()).collect();
                    // Swap, then say so: once the line is out, new events
                    // go through the new streams.
                    pipeline.swap_roots(roots);
                    let kept: Vec<String> = pipeline
                        .stats()
                        .nodes
                        .into_iter()
                        .filter(|n| n.kept_state)
                        .map(|n| n.path)
                        .collect();
                    let kept = if kept.is_empty() {
                        "no node kept state".to_owned()
                    } else {
                        format!("state kept by {}", kept.join(", "))
                    };
                    tracing::info!(
                        "reloaded {}: {}; {kept}",
                        source.describe(),
                        names.join(", ")
                    );
                }
                Err(e) => tracing::error!("reload failed; the running streams are unchanged: {e}"),
            }
        })?;
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment they are installed.
pub(crate) struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
