//! `dmon bench`: throughput and peak memory of the event path.
//!
//! Every figure is printed beside a baseline measured right before it, as a
//! ratio, so numbers compare across machines that differ by 2-3x from day
//! to day: a naive single thread that parses each event with `serde_json`
//! into a typed struct and keeps a `HashMap` mean per (host, service).
//!
//! Scenarios (1,000 hosts x 10 services, ~200-byte JSON events):
//! (a) decode -> when(Python lambda) -> average -> index, in-process;
//! (b) decode -> average -> index, native nodes only;
//! (c) decode alone;
//! (f) decode -> by("host", "service", average(2, index())), native;
//! (g) memory: 100,000 distinct hosts through `by`, then idle until the
//!     forks expire (on a virtual clock): resident memory before, with the
//!     forks, and after they expired;
//! (d) end-to-end over UDP from a load-generator process at fixed rates,
//!     reporting the drop rate;
//! (e) Riemann TCP, 100 events per message, acknowledged, from a
//!     load-generator process, through `where(query) -> index`, beside the
//!     loopback limit: the same generator against a sink that only reads
//!     frames and acknowledges them.
//! (h) decode -> sdo(average -> index, forward, graphite), the outputs
//!     sending to local sinks that read and discard (and acknowledge, for
//!     forward), beside the same tree without the outputs, measured right
//!     before it: the cost of sending events on.
//! (t) (e)'s server and load in plain text and over TLS, alternately,
//!     beside the baseline ([`tls`]);
//! (n) workers (`serve --consume`) draining NATS JetStream, 1, 2 and 3 of
//!     them, after the stream was loaded as a gateway publishes
//!     ([`cluster`]); skipped without `nats-server`.
//! (r) `dmon replay` of an NDJSON file of the same events (with times),
//!     through (a)'s streams on a virtual clock; printed beside (a), which
//!     runs right before it, as a ratio to (a). Then (a) again while a
//!     recording (`dmon record`, the shell's `record()`) writes every event
//!     to a file: what recording costs dispatch.
//! (p) `dmon replay` of a generated NDJSON file (half of `--events`,
//!     10,000 host/service keys, 1,000 s of event time) through
//!     `by("host", "service", average(6, index()))`, beside a baseline
//!     that reads the same file ([`replay_by`]); target 1.5x.
//! (k) `by("host", rate(5, index()))` on a virtual clock with 1 k, 10 k,
//!     100 k and 1 M keys, half of `--events` each: ns per event, as a
//!     ratio to the 1 k case and to the baseline ([`scaling`]); target:
//!     100 k keys within 1.2x of 1 k.
//! (i) the idle server's dispatch thread, as % of a core, with 1 M (half
//!     of `--events`) `by` forks each holding a `rate(5)` ([`idle`]);
//!     target under 1 %.
//!
//! (a) and (b) run like the server does: one thread decodes and hands
//! batches over the bounded channel to the dispatch thread. With
//! `--recent`, each runs again with the recent-traffic ring on. Every
//! in-process scenario reports its allocations per event, every thread's
//! ([`crate::alloc_count`]).

mod cluster;
mod idle;
mod replay_by;
mod scaling;
mod tls;

use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::mpsc;

use crate::codec::json;
use crate::console::LineSink;
use crate::event::{now_secs, Event};
use crate::pipeline::{Pipeline, Root, Work, CHANNEL_CAPACITY};
use crate::python::{self, loader};
use crate::server::{Listeners, Server};
use crate::sinks::email::Mailer;
use crate::sinks::senders::{server_context, Senders};
use crate::sinks::SinkSnapshot;
use crate::streams::aggregate::Average;
use crate::streams::context::Context;
use crate::streams::index::IndexNode;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Events per in-process scenario.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Send rates (events/s) for the UDP scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![50_000u64, 100_000, 200_000])]
    pub udp_rates: Vec<u64>,
    /// Seconds per UDP rate.
    #[arg(long, default_value_t = 3)]
    pub udp_seconds: u64,
    /// Run only these scenarios (a, b, c, d, e, f, g, h, i, k, n, p, r, s, t),
    /// comma-separated; the baseline always runs, and (a) with (r).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Internal: act as the UDP load generator: send to this address.
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    pub generate: Option<SocketAddr>,
    /// Riemann TCP connections the load generator uses (scenario e).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Internal: act as the Riemann TCP load generator against this address.
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    pub generate_riemann: Option<SocketAddr>,
    /// Internal: the Riemann load generator speaks TLS, trusting this CA.
    #[arg(long, hide = true, value_name = "FILE")]
    pub generate_tls_ca: Option<std::path::PathBuf>,
    /// Also run (a) and (b) with the recent-traffic ring on (the serve
    /// defaults: 5 minutes, at most 200,000 events), each right after
    /// the same scenario with it off, to show what the ring costs.
    #[arg(long)]
    pub recent: bool,
    /// Internal: the load generator's rate.
    #[arg(long, hide = true, default_value_t = 100_000)]
    pub rate: u64,
}

/// The event for index `i`: host and service cycle over 1,000 x 10.
pub fn sample_event(i: usize) -> String {
    format!(
        r#"{{"host":"host-{:04}.example.com","service":"service-{}","state":"ok","description":"synthetic benchmark event number {i:07} of the dmon load test run","metric":{}.{:03},"ttl":60,"tags":["bench","prod"]}}"#,
        i % 1000,
        (i / 1000) % 10,
        i % 3,
        i % 997,
    )
}

struct Outcome {
    events: usize,
    elapsed: Duration,
    peak_rss_kib: u64,
    /// Allocations during the run, by every thread (see [`Allocations`]).
    allocations: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// `2.0 allocs/event`, or `- allocs/event` where nothing counted
    /// (the counting allocator is the binary's, not the tests').
    fn allocs_per_event(&self) -> String {
        if self.allocations == 0 || self.events == 0 {
            return "- allocs/event".into();
        }
        format!(
            "{:.1} allocs/event",
            self.allocations as f64 / self.events as f64
        )
    }
}

/// Counts the allocations from its creation on, every thread's.
struct Allocations(u64);

impl Allocations {
    fn start() -> Self {
        Allocations(crate::alloc_count::allocations())
    }

    fn so_far(&self) -> u64 {
        crate::alloc_count::allocations().saturating_sub(self.0)
    }
}

/// Discards printed lines (no scenario prints, but the context needs a sink).
struct Discard;
impl LineSink for Discard {
    fn write_line(&self, _: &str) {}
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(to) = args.generate {
        generate(to, args.rate, args.events)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(to) = args.generate_riemann {
        let tls = crate::cmd::client_tls(args.generate_tls_ca.as_deref(), None, None)?;
        generate_riemann(to, args.events, args.connections, tls.as_ref())?;
        return Ok(ExitCode::SUCCESS);
    }
    let wants = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let samples: Vec<Vec<u8>> = (0..10_000).map(|i| sample_event(i).into_bytes()).collect();
    let avg_len = samples.iter().map(Vec::len).sum::<usize>() / samples.len();
    println!(
        "dmon bench: {} events per scenario, {avg_len}-byte events, {} cores",
        args.events,
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    python::init()?;
    python::bind_context(fresh_context())?;

    // The baseline runs again right before each scenario: on a shared
    // machine speed drifts within a minute, and a ratio is only as good as
    // its two figures are close in time.
    let baseline_now = || {
        let base = baseline(&samples, args.events);
        report(
            "  baseline: serde_json struct + HashMap mean, 1 thread",
            &base,
            base.rate(),
        );
        base.rate()
    };
    if wants("a") || wants("r") {
        let base = baseline_now();
        let roots = python_roots()?;
        let a = pipelined(roots, &samples, args.events, true);
        report(
            "(a) decode -> when(python lambda) -> average -> index",
            &a,
            base,
        );
        if args.recent {
            let base = baseline_now();
            let o = pipelined_with(
                fresh_context(),
                python_roots()?,
                &samples,
                args.events,
                true,
                None,
                true,
            );
            report("(a) with the recent-traffic ring on", &o, base);
        }
        if wants("r") {
            let r = replay_file(&samples, args.events)?;
            report(
                "(r) replay NDJSON file -> (a)'s streams, virtual clock",
                &r,
                base,
            );
            println!(
                "    replay = {:.2}x (a) (both beside the same baseline)",
                r.rate() / a.rate()
            );
            recording(&samples, args.events, a.rate(), base)?;
        }
    }
    if wants("b") {
        let base = baseline_now();
        let o = pipelined(native_roots(), &samples, args.events, false);
        report("(b) decode -> average -> index (native)", &o, base);
        if args.recent {
            let base = baseline_now();
            let o = pipelined_with(
                fresh_context(),
                native_roots(),
                &samples,
                args.events,
                false,
                None,
                true,
            );
            report("(b) with the recent-traffic ring on", &o, base);
        }
    }
    if wants("s") {
        for subscribers in [0, 4] {
            let base = baseline_now();
            let (o, matched, lagged) = subscribed(&samples, args.events, subscribers);
            report(
                &format!("(s) (b) with {subscribers} index subscribers (HTTP's feed)"),
                &o,
                base,
            );
            if subscribers > 0 {
                println!("    each subscriber matched {matched} events, fell {lagged} behind");
            }
        }
    }
    if wants("c") {
        let base = baseline_now();
        report("(c) decode only", &decode_only(&samples, args.events), base);
    }
    if wants("f") {
        let base = baseline_now();
        let o = pipelined(by_roots()?, &samples, args.events, false);
        report(
            "(f) decode -> by(host, service, average -> index)",
            &o,
            base,
        );
    }
    if wants("g") {
        by_memory(100_000)?;
    }
    if wants("p") {
        replay_by::replay_by(args.events / 2)?;
    }
    if wants("k") {
        scaling::by_keys(args.events / 2, baseline_now())?;
    }
    if wants("i") {
        idle::idle_forks(args.events / 2)?;
    }
    if wants("h") {
        outputs(&samples, args.events, baseline_now)?;
    }
    if wants("n") {
        cluster::workers(args.events, baseline_now)?;
    }
    if wants("d") {
        udp(&args)?;
    }
    if wants("e") {
        riemann_tcp(&args)?;
    }
    if wants("t") {
        tls::riemann_tls(&args, baseline_now)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report(name: &str, o: &Outcome, baseline: f64) {
    println!(
        "{name:<55} {:>12.0} events/s  {:>5.2}x baseline  peak RSS {:>7.1} MiB  {:>17}  ({} events in {:.2} s)",
        o.rate(),
        o.rate() / baseline,
        o.peak_rss_kib as f64 / 1024.0,
        o.allocs_per_event(),
        o.events,
        o.elapsed.as_secs_f64()
    );
}

/// The event as a naive program would parse it.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // parsed as a real program would, though only some fields are used
struct PlainEvent {
    host: Option<String>,
    service: Option<String>,
    state: Option<String>,
    description: Option<String>,
    time: Option<f64>,
    ttl: Option<f64>,
    metric: Option<f64>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The baseline's work on a parsed event: a running mean per (host,
/// service).
#[derive(Default)]
struct Means {
    by_key: std::collections::HashMap<(String, String), (f64, u64)>,
    last: f64,
}

impl Means {
    fn add(&mut self, e: PlainEvent) {
        let (Some(host), Some(service), Some(metric)) = (e.host, e.service, e.metric) else {
            return;
        };
        let m = self.by_key.entry((host, service)).or_default();
        m.0 += metric;
        m.1 += 1;
        self.last = m.0 / m.1 as f64;
    }
}

/// Starts an in-process server running `pipeline`, taking JSON over UDP
/// only, on a free port.
fn serve_udp(
    runtime: &tokio::runtime::Runtime,
    pipeline: &Arc<Pipeline>,
) -> anyhow::Result<Server> {
    let listen = Listeners {
        udp: "127.0.0.1:0".parse()?,
        riemann_tcp: None,
        riemann_udp: None,
        max_frame: 0,
        tcp_limits: Default::default(),
        http: None,
        http_limits: Default::default(),
        tls: None,
        http_token: None,
    };
    Ok(runtime.block_on(Server::start(
        Arc::clone(pipeline),
        &listen,
        python::spawn_dispatcher,
    ))?)
}

/// The baseline: one thread, `serde_json` into a typed struct, a `HashMap`
/// keyed mean per (host, service).
fn baseline(samples: &[Vec<u8>], n: usize) -> Outcome {
    reset_peak_rss();
    let allocations = Allocations::start();
    let mut means = Means::default();
    let start = Instant::now();
    for i in 0..n {
        means.add(serde_json::from_slice(&samples[i % samples.len()]).expect("bench events parse"));
    }
    std::hint::black_box(means.last);
    Outcome {
        events: n,
        elapsed: start.elapsed(),
        peak_rss_kib: peak_rss_kib(),
        allocations: allocations.so_far(),
    }
}

/// `by("host", "service", average(2, index()))`, built through the registry
/// as `dmon.streams` builds it.
fn by_node(idle: Option<f64>) -> anyhow::Result<crate::streams::NodeRef> {
    use crate::catalog;
    use crate::streams::Value;
    let build = |name: &str, positional, named, children| {
        catalog::find(name)
            .with_context(|| format!("no stream function {name}"))?
            .build(positional, named, children)
            .map_err(anyhow::Error::msg)
    };
    let index = build("index", vec![], vec![], vec![])?;
    let average = build("average", vec![Value::Int(2)], vec![], vec![index])?;
    let named = idle.map_or(Vec::new(), |t| vec![("idle".to_owned(), Value::Float(t))]);
    build(
        "by",
        vec![Value::from("host"), Value::from("service")],
        named,
        vec![average],
    )
}

fn by_roots() -> anyhow::Result<Vec<Root>> {
    Ok(vec![Root {
        name: "bench_stream".into(),
        node: by_node(None)?,
    }])
}

/// Resident memory now, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Scenario (g): `hosts` distinct hosts through `by` (no index, so only
/// the forks hold memory), then the virtual clock moves past the idle time
/// and the forks expire. Prints resident memory at each step.
fn by_memory(hosts: usize) -> anyhow::Result<()> {
    use crate::catalog;
    use crate::clock::{Clock, VirtualClock};
    use crate::streams::Value;
    const IDLE: f64 = 300.0;
    let clock = VirtualClock::starting_at(1_000.0);
    let ctx = Context::with_clock(clock.clone(), Arc::new(Discard));
    let average = catalog::find("average")
        .context("no average")?
        .build(vec![Value::Int(2)], vec![], vec![])
        .map_err(anyhow::Error::msg)?;
    let by = catalog::find("by")
        .context("no by")?
        .build(
            vec![Value::from("host")],
            vec![("idle".into(), Value::Float(IDLE))],
            vec![average],
        )
        .map_err(anyhow::Error::msg)?;
    let release = || {
        // mimalloc returns freed pages to the system lazily; ask now, so
        // the figure shows what is still in use.
        // SAFETY: mi_collect takes no pointers; it only frees unused pages.
        unsafe { libmimalloc_sys::mi_collect(true) };
        rss_kib()
    };
    let before = release();
    for i in 0..hosts {
        let e = Event {
            host: Some(format!("host-{i:06}.example.com").into()),
            service: Some("cpu".into()),
            metric: Some(crate::event::Number::Float(i as f64)),
            ..Event::default()
        };
        crate::streams::push(&*by, &ctx, &Arc::new(e));
    }
    let with_forks = release();
    let forks = by.detail().unwrap_or_default();
    crate::streams::timers::advance(&clock, clock.now() + IDLE + 1.0, &ctx);
    let after = release();
    println!(
        "(g) by(host) memory: before {:.1} MiB, {hosts} hosts ({forks}) {:.1} MiB, after idle expiry ({}) {:.1} MiB ({:+.1}% of before)",
        before as f64 / 1024.0,
        with_forks as f64 / 1024.0,
        by.detail().unwrap_or_default(),
        after as f64 / 1024.0,
        (after as f64 - before as f64) / before as f64 * 100.0
    );
    Ok(())
}

fn native_roots() -> Vec<Root> {
    vec![Root {
        name: "bench_stream".into(),
        node: Arc::new(Average::new(2, vec![Arc::new(IndexNode::new())])),
    }]
}

/// A context of its own for each scenario, so no index outlives its run
/// (its events would expire into the next one).
fn fresh_context() -> Arc<Context> {
    // Nothing in the benchmarks mails; port 1 refuses if anything did.
    let nowhere = "127.0.0.1:1".parse().expect("a valid address");
    Arc::new(server_context(Mailer::start(nowhere), Arc::new(Discard)))
}

fn python_roots() -> anyhow::Result<Vec<Root>> {
    Python::attach(|py| {
        let ns = PyDict::new(py);
        py.run(
            c"from dmon.streams import *\nbench_stream = when(lambda e: e.state == \"ok\", average(2, index()))\n",
            Some(&ns),
            None,
        )?;
        Ok(loader::roots_of(&ns)?)
    })
}

/// Peak resident memory since the last reset, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a new peak-memory window (Linux: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn decode_only(samples: &[Vec<u8>], n: usize) -> Outcome {
    reset_peak_rss();
    let mut events = Vec::with_capacity(1);
    let mut errors = Vec::new();
    let allocations = Allocations::start();
    let start = Instant::now();
    let mut decoded = 0;
    for i in 0..n {
        json::decode(
            &samples[i % samples.len()],
            now_secs(),
            &mut events,
            &mut errors,
        );
        decoded += events.len();
        events.clear();
    }
    assert!(
        errors.is_empty() && decoded == n,
        "bench events must decode"
    );
    Outcome {
        events: decoded,
        elapsed: start.elapsed(),
        peak_rss_kib: peak_rss_kib(),
        allocations: allocations.so_far(),
    }
}

/// Decodes on this thread and processes on a dispatch thread, as the server does.
fn pipelined(roots: Vec<Root>, samples: &[Vec<u8>], n: usize, with_python: bool) -> Outcome {
    pipelined_with(fresh_context(), roots, samples, n, with_python, None, false)
}

/// [`pipelined`], with `recorder` (if any) seeing every event as a
/// source's would, and with the recent-traffic ring on (as `serve` has it)
/// when `recent`: both take the events as a source's, sent as acknowledged
/// work.
fn pipelined_with(
    ctx: Arc<Context>,
    roots: Vec<Root>,
    samples: &[Vec<u8>],
    n: usize,
    with_python: bool,
    recorder: Option<Arc<crate::server::recorder::Recorder>>,
    recent: bool,
) -> Outcome {
    reset_peak_rss();
    let pipeline = Pipeline::new(ctx, roots);
    if recent {
        pipeline.recent.configure(
            crate::recent::DEFAULT_MINUTES * 60.0,
            crate::recent::DEFAULT_MAX_EVENTS,
            crate::memory::MemoryBudget::default().size(crate::memory::Share::Recent),
        );
    }
    let pipeline = Arc::new(pipeline);
    let as_source = recorder.is_some() || recent;
    if let Some(r) = recorder {
        pipeline.set_observer(Some(r));
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let allocations = Allocations::start();
    let start = Instant::now();
    let dispatcher = if with_python {
        python::spawn_dispatcher(Arc::clone(&pipeline), rx)
    } else {
        let p = Arc::clone(&pipeline);
        thread::Builder::new()
            .name("dmon-dispatch".into())
            .spawn(move || p.run_dispatch(rx, |rx| rx.blocking_recv()))
            .expect("spawn dispatch thread")
    };
    let mut errors = Vec::new();
    let mut sent = 0;
    while sent < n {
        let mut batch: Vec<Event> = Vec::with_capacity(256);
        while batch.len() < 256 && sent < n {
            json::decode(
                &samples[sent % samples.len()],
                now_secs(),
                &mut batch,
                &mut errors,
            );
            sent += 1;
        }
        let work = if as_source {
            // Nobody waits for the acknowledgement.
            Work::Acked(batch, tokio::sync::oneshot::channel().0)
        } else {
            Work::Events(batch)
        };
        if tx.blocking_send(work).is_err() {
            break;
        }
    }
    drop(tx);
    dispatcher.join().expect("dispatcher");
    let elapsed = start.elapsed();
    let processed = pipeline.stats().processed as usize;
    assert_eq!(processed, n, "every event must be processed");
    Outcome {
        events: processed,
        elapsed,
        peak_rss_kib: peak_rss_kib(),
        allocations: allocations.so_far(),
    }
}

/// Scenario (s): (b)'s native streams with `subscribers` threads reading
/// the index's feed, as `--http` subscribers' pumps do, each filtering with
/// a query that matches a tenth of the events. Returns the outcome, and
/// what the first subscriber matched and missed for lagging.
fn subscribed(samples: &[Vec<u8>], n: usize, subscribers: usize) -> (Outcome, u64, u64) {
    use tokio::sync::broadcast::error::RecvError;
    reset_peak_rss();
    let pipeline = Arc::new(Pipeline::new(fresh_context(), native_roots()));
    let query = Arc::new(crate::query::Query::parse(r#"service = "service-1""#).expect("a query"));
    let readers: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut sub = pipeline.index_feed().subscribe();
            let query = Arc::clone(&query);
            thread::spawn(move || {
                let (mut matched, mut lagged) = (0u64, 0u64);
                loop {
                    match sub.events.blocking_recv() {
                        Ok(e) if e.host.as_deref() == Some(STOP) => break,
                        Ok(e) => matched += u64::from(query.matches(&e)),
                        Err(RecvError::Lagged(k)) => lagged += k,
                        Err(RecvError::Closed) => break,
                    }
                }
                (matched, lagged)
            })
        })
        .collect();
    const STOP: &str = "bench: stop";
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let allocations = Allocations::start();
    let start = Instant::now();
    let p = Arc::clone(&pipeline);
    let dispatcher = thread::spawn(move || p.run_dispatch(rx, |rx| rx.blocking_recv()));
    let (mut errors, mut sent) = (Vec::new(), 0);
    while sent < n {
        let mut batch: Vec<Event> = Vec::with_capacity(256);
        while batch.len() < 256 && sent < n {
            json::decode(
                &samples[sent % samples.len()],
                now_secs(),
                &mut batch,
                &mut errors,
            );
            sent += 1;
        }
        if tx.blocking_send(Work::Events(batch)).is_err() {
            break;
        }
    }
    drop(tx);
    dispatcher.join().expect("dispatcher");
    let elapsed = start.elapsed();
    let allocations = allocations.so_far();
    pipeline.context().index.insert(&Arc::new(Event {
        host: Some(STOP.into()),
        ..Event::default()
    }));
    let counts: Vec<(u64, u64)> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or((0, 0)))
        .collect();
    let (matched, lagged) = counts.first().copied().unwrap_or((0, 0));
    let o = Outcome {
        events: pipeline.stats().processed as usize,
        elapsed,
        peak_rss_kib: peak_rss_kib(),
        allocations,
    };
    (o, matched, lagged)
}

/// Scenario (r): `n` sample events, dated 10 µs apart, written to an NDJSON
/// file in the temporary directory (removed after), then replayed as
/// `dmon replay FILE --streams …` does, through (a)'s streams. The clock
/// runs from opening the file to the last event through the streams.
fn replay_file(samples: &[Vec<u8>], n: usize) -> anyhow::Result<Outcome> {
    use super::replay::{replay, Reader, Speed};
    use std::io::Write as _;
    let path =
        std::env::temp_dir().join(format!("dmon-bench-replay-{}.ndjson", std::process::id()));
    let file = RemoveOnDrop(path.clone());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file.0)?);
    let t0 = 1_700_000_000.0;
    for i in 0..n {
        let sample = &samples[i % samples.len()];
        // `{…}` becomes `{…,"time":T}`.
        out.write_all(&sample[..sample.len() - 1])?;
        writeln!(out, r#","time":{}}}"#, t0 + i as f64 * 1e-5)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let roots = python_roots()?;
    reset_peak_rss();
    let allocations = Allocations::start();
    let reader = Reader::open(&path)?;
    let replayed = replay(reader, roots, Speed::Max, Arc::new(Discard), false, None)?;
    let allocations = allocations.so_far();
    if replayed.events as usize != n || replayed.bad != 0 {
        bail!(
            "the replay read {} events ({} bad) of {n}",
            replayed.events,
            replayed.bad
        );
    }
    Ok(Outcome {
        events: n,
        elapsed: replayed.elapsed,
        peak_rss_kib: peak_rss_kib(),
        allocations,
    })
}

/// Removes a scenario's file however the scenario ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// With (r): (a) again while a recorder writes every event to an NDJSON
/// file in the temporary directory (removed after), as `dmon record` and
/// the shell's `record()` do; its rate beside (a)'s, and what the
/// recorder wrote and dropped.
fn recording(samples: &[Vec<u8>], n: usize, a_rate: f64, base: f64) -> anyhow::Result<()> {
    use crate::server::recorder::{Format, Recorder};
    let path =
        std::env::temp_dir().join(format!("dmon-bench-record-{}.ndjson", std::process::id()));
    let recorder = Recorder::create(&path, Format::Ndjson, Default::default())?;
    let o = pipelined_with(
        fresh_context(),
        python_roots()?,
        samples,
        n,
        true,
        Some(Arc::clone(&recorder)),
        false,
    );
    let writing = Instant::now();
    let done = recorder.finish();
    let _ = std::fs::remove_file(&path);
    if let Some(e) = done.error {
        bail!("recording to {}: {e}", path.display());
    }
    report("(a) while recording every event to a file", &o, base);
    println!(
        "    recording = {:.2}x (a); {} events written, {} dropped; the writer finished {:.2} s after the last event",
        o.rate() / a_rate,
        done.written,
        done.dropped,
        writing.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A stream function built through the registry, as `dmon.streams` does.
fn build(
    name: &str,
    positional: Vec<crate::streams::Value>,
    children: Vec<crate::streams::NodeRef>,
) -> anyhow::Result<crate::streams::NodeRef> {
    crate::catalog::find(name)
        .with_context(|| format!("no stream function {name}"))?
        .build(positional, vec![], children)
        .map_err(anyhow::Error::msg)
}

/// Scenario (h): `sdo(average(2, index()))` alone, then with `forward` and
/// `graphite` beside `average`, each sending to a local sink that reads
/// and discards (acknowledging each message, for `forward`); both as
/// ratios to the baseline, and the second to the first (the median of
/// [`OUTPUT_ROUNDS`] rounds); and the process's CPU time, with to without. What the sinks sent and dropped is printed too: the event
/// path never waits for them, so a sink slower than the pipeline drops.
fn outputs(samples: &[Vec<u8>], n: usize, baseline_now: impl Fn() -> f64) -> anyhow::Result<()> {
    use crate::streams::Value;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let forward_sink = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let forward_port = forward_sink.local_addr()?.port();
    runtime.spawn(frame_sink(forward_sink));
    let graphite_sink = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let graphite_port = graphite_sink.local_addr()?.port();
    runtime.spawn(discard_sink(graphite_sink));

    let tree = |outputs: bool| -> anyhow::Result<Vec<Root>> {
        let index = build("index", vec![], vec![])?;
        let mut children = vec![build("average", vec![Value::Int(2)], vec![index])?];
        if outputs {
            let target = |port: u16| vec![Value::from("127.0.0.1"), Value::Int(port.into())];
            children.push(build("forward", target(forward_port), vec![])?);
            children.push(build("graphite", target(graphite_port), vec![])?);
        }
        Ok(vec![Root {
            name: "bench_stream".into(),
            node: build("sdo", vec![], children)?,
        }])
    };
    // On a shared machine one run says little: rounds of baseline,
    // without, with, each pair compared, and the median ratio reported.
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut sinks = Vec::new();
    let mut worker_ns: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut pipeline_ns = Vec::new();
    for _ in 0..OUTPUT_ROUNDS {
        let base = baseline_now();
        let cpu = cpu_secs();
        let without = pipelined(tree(false)?, samples, n, false);
        let cpu_without = cpu_secs() - cpu;
        report("(h) decode -> sdo(average -> index)", &without, base);
        let ctx = fresh_context();
        let cpu = cpu_secs();
        let with = pipelined_with(
            Arc::clone(&ctx),
            tree(true)?,
            samples,
            n,
            false,
            None,
            false,
        );
        report("(h) ... + forward + graphite", &with, base);
        // Before the drain, while the workers still run: what each cost
        // per event (the pipeline's own, too), a figure the machine's
        // noise moves far less than the rates.
        for (kind, secs) in [
            ("forward", thread_cpu_secs("dmon-forward")),
            ("graphite", thread_cpu_secs("dmon-graphite")),
        ] {
            worker_ns
                .entry(kind)
                .or_default()
                .push(secs * 1e9 / n as f64);
        }
        pipeline_ns.push(cpu_without * 1e9 / n as f64);
        let outputs = Senders::of(&ctx).context("the benchmark's context has outputs")?;
        outputs.drain(Duration::from_secs(30));
        // Until the sinks are drained: all that sending cost, the local
        // sinks' reading included (they run in this process).
        cpu_ratios.push((cpu_secs() - cpu) / cpu_without);
        ratios.push(with.rate() / without.rate());
        sinks.extend(outputs.sinks.snapshots());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let count = |kind: &str, f: fn(&SinkSnapshot) -> u64| -> u64 {
        sinks.iter().filter(|s| s.kind == kind).map(f).sum()
    };
    let percents: Vec<String> = ratios.iter().map(|r| format!("{:.0}", 100.0 * r)).collect();
    println!(
        "(h) with outputs: {:.0} % of the rate without, median of {OUTPUT_ROUNDS} rounds ({} %; target 80 %); \
         CPU time {:.2}x; forward {} sent, {} dropped; graphite {} sent, {} dropped",
        100.0 * median(&mut ratios),
        percents.join(", "),
        median(&mut cpu_ratios),
        count("forward", |s| s.sent),
        count("forward", |s| s.dropped),
        count("graphite", |s| s.sent),
        count("graphite", |s| s.dropped),
    );
    println!(
        "(h) CPU per event, median: the tree without outputs {:.0} ns (decode included); forward's worker {:.0} ns, graphite's {:.0} ns",
        median(&mut pipeline_ns),
        median(worker_ns.get_mut("forward").expect("measured")),
        median(worker_ns.get_mut("graphite").expect("measured")),
    );
    Ok(())
}

/// CPU time, user and system, of this process's threads named `name`
/// (from /proc; 0 where it cannot be read).
fn thread_cpu_secs(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut secs = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the name in parentheses: state is field 3, utime 14, stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        secs += (field(14) + field(15)) / ticks;
    }
    secs
}

/// Rounds of scenario (h).
const OUTPUT_ROUNDS: usize = 5;

/// CPU time this process has used, user and system, in seconds.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Reads and discards: a carbon that stores nothing.
async fn discard_sink(listener: tokio::net::TcpListener) {
    use tokio::io::AsyncReadExt;
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}

/// Scenario (d): an in-process server, a load-generator child process per rate.
fn udp(args: &BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let exe = std::env::current_exe()?;
    for &rate in &args.udp_rates {
        reset_peak_rss();
        let roots = python_roots()?;
        let pipeline = Arc::new(Pipeline::new(fresh_context(), roots));
        let server = serve_udp(&runtime, &pipeline)?;
        let count = (rate * args.udp_seconds) as usize;
        let start = Instant::now();
        let status = Command::new(&exe)
            .args(["bench", "--generate", &server.bound.udp().to_string()])
            .args(["--rate", &rate.to_string(), "--events", &count.to_string()])
            .stdout(Stdio::null())
            .status()
            .context("running the load generator")?;
        if !status.success() {
            bail!("load generator failed: {status}");
        }
        let sent_for = start.elapsed();
        // Wait until the kernel queue and pipeline are drained: counters stop moving.
        let mut last = u64::MAX;
        loop {
            let now = pipeline.stats().processed;
            if now == last || now as usize >= count {
                break;
            }
            last = now;
            thread::sleep(Duration::from_millis(200));
        }
        let stats = runtime.block_on(server.shutdown());
        let received = stats.events as usize;
        let dropped = count.saturating_sub(received);
        println!(
            "(d) UDP end-to-end at {:>7} events/s offered: sent {count} in {:.2} s ({:.0}/s), processed {}, dropped {} ({:.3} %), peak RSS {:.1} MiB",
            rate,
            sent_for.as_secs_f64(),
            count as f64 / sent_for.as_secs_f64(),
            stats.processed,
            dropped,
            100.0 * dropped as f64 / count as f64,
            peak_rss_kib() as f64 / 1024.0,
        );
    }
    Ok(())
}

/// The load generator: `count` events, one per datagram, paced to `rate`/s.
fn generate(to: SocketAddr, rate: u64, count: usize) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let samples: Vec<Vec<u8>> = (0..10_000).map(|i| sample_event(i).into_bytes()).collect();
    let start = Instant::now();
    let per_tick = (rate / 1000).max(1) as usize; // paced every millisecond
    let mut sent = 0;
    while sent < count {
        for _ in 0..per_tick.min(count - sent) {
            socket.send_to(&samples[sent % samples.len()], to)?;
            sent += 1;
        }
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
    Ok(())
}

/// Events per Riemann message in scenario (e).
const RIEMANN_BATCH: usize = 100;

/// Scenario (e): the same generator against a frame-reading sink (the
/// loopback limit), then against dmon's Riemann TCP server.
fn riemann_tcp(args: &BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let run_generator = |to: SocketAddr| run_riemann_generator(args, to, None);
    let sink = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let sink_addr = sink.local_addr()?;
    runtime.spawn(frame_sink(sink));
    let total = riemann_total(args);
    let sink_time = run_generator(sink_addr)?;
    let sink_rate = total as f64 / sink_time.as_secs_f64();

    reset_peak_rss();
    let dmon_rate = riemann_server_rate(&runtime, None, total, run_generator)?;
    println!(
        "(e) Riemann TCP, {RIEMANN_BATCH}/msg, {} connections, where(query) -> index {:>10.0} events/s  peak RSS {:>7.1} MiB  \
         (loopback limit, frame-reading sink: {:.0} events/s; dmon = {:.0} % of it)",
        args.connections,
        dmon_rate,
        peak_rss_kib() as f64 / 1024.0,
        sink_rate,
        100.0 * dmon_rate / sink_rate,
    );
    Ok(())
}

/// Events (e)'s generator sends in all: whole messages, evenly over the
/// connections.
fn riemann_total(args: &BenchArgs) -> usize {
    let connections = args.connections.max(1);
    args.events.div_ceil(RIEMANN_BATCH).div_ceil(connections) * connections * RIEMANN_BATCH
}

/// Runs the Riemann load generator process against `to` (over TLS,
/// trusting `tls_ca`, if given) and returns how long it took.
fn run_riemann_generator(
    args: &BenchArgs,
    to: SocketAddr,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<Duration> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "--generate-riemann", &to.to_string()])
        .args(["--events", &args.events.to_string()])
        .args(["--connections", &args.connections.to_string()]);
    if let Some(ca) = tls_ca {
        cmd.arg("--generate-tls-ca").arg(ca);
    }
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .context("running the Riemann load generator")?;
    if !status.success() {
        bail!("Riemann load generator failed: {status}");
    }
    Ok(start.elapsed())
}

/// (e)'s server, `where(query) -> index`, on Riemann TCP (with `tls`, if
/// given), fed by `run_generator`: its rate in events/s, once every event
/// was processed.
fn riemann_server_rate(
    runtime: &tokio::runtime::Runtime,
    tls: Option<Arc<crate::tls::ServerTls>>,
    total: usize,
    run_generator: impl FnOnce(SocketAddr) -> anyhow::Result<Duration>,
) -> anyhow::Result<f64> {
    let query = crate::query::Query::parse(r#"service =~ "service-%" and metric >= 0"#)
        .map_err(anyhow::Error::msg)?;
    let roots = vec![Root {
        name: "bench_stream".into(),
        node: Arc::new(crate::streams::filter::When::new(
            "where",
            Arc::new(query),
            vec![Arc::new(IndexNode::new())],
            None,
        )),
    }];
    let pipeline = Arc::new(Pipeline::new(fresh_context(), roots));
    let listen = Listeners {
        udp: "127.0.0.1:0".parse()?,
        riemann_tcp: Some("127.0.0.1:0".parse()?),
        riemann_udp: None,
        max_frame: crate::server::riemann_tcp::DEFAULT_MAX_FRAME,
        tcp_limits: Default::default(),
        http: None,
        http_limits: Default::default(),
        tls,
        http_token: None,
    };
    let server = runtime.block_on(Server::start(
        Arc::clone(&pipeline),
        &listen,
        python::spawn_dispatcher,
    ))?;
    let addr = server.bound.get("riemann-tcp").expect("riemann tcp is on");
    let dmon_time = run_generator(addr)?;
    let stats = runtime.block_on(server.shutdown());
    if stats.processed as usize != total {
        bail!("dmon processed {} of {total} events", stats.processed);
    }
    Ok(total as f64 / dmon_time.as_secs_f64())
}

/// Reads frames and acknowledges each without decoding it: the most any
/// Riemann TCP server could do on this loopback.
async fn frame_sink(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ack = prost::Message::encode_to_vec(&crate::codec::riemann::Msg::acknowledged());
    while let Ok((mut stream, _)) = listener.accept().await {
        let ack = ack.clone();
        tokio::spawn(async move {
            let mut body = Vec::new();
            while let Ok(len) = stream.read_u32().await {
                body.resize(len as usize, 0);
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let mut reply = (ack.len() as u32).to_be_bytes().to_vec();
                reply.extend_from_slice(&ack);
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The Riemann load generator: `count` events in messages of
/// [`RIEMANN_BATCH`], spread over `connections`, each waiting for its ack
/// as real clients do.
fn generate_riemann(
    to: SocketAddr,
    count: usize,
    connections: usize,
    tls: Option<&crate::tls::ClientTls>,
) -> anyhow::Result<()> {
    use crate::client::RiemannClient;
    let messages: Vec<Vec<u8>> = (0..100)
        .map(|m| {
            let events: Vec<Event> = (0..RIEMANN_BATCH)
                .map(|i| {
                    let text = sample_event(m * RIEMANN_BATCH + i);
                    json::decode_event(&text).expect("sample events decode")
                })
                .collect();
            prost::Message::encode_to_vec(&crate::codec::riemann::Msg {
                events: events.iter().map(crate::codec::riemann::to_proto).collect(),
                ..Default::default()
            })
        })
        .collect();
    let per_connection = count.div_ceil(RIEMANN_BATCH).div_ceil(connections.max(1));
    thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..connections.max(1))
            .map(|c| {
                let messages = &messages;
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut client = RiemannClient::connect_with(to, Duration::from_secs(30), tls)?;
                    for n in 0..per_connection {
                        client.send_raw(&messages[(c + n * connections) % messages.len()])?;
                        client.read_reply()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        }
        Ok(())
    })
}
