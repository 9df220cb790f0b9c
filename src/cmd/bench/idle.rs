//! Scenario (i): the dispatch thread's CPU while nothing arrives, with 1 M
//! `by` forks (half of `--events`), each holding a `rate(5)`. The forks
//! are made by one event per host (`ttl` 1 s); each reports its first
//! interval, is woken once more at the second's end (the event has
//! expired: nothing to report, the rate falls quiet), and `by` keeps them
//! until they have been idle 300 s, so whatever the thread does after that
//! is the timer machinery's own. The real
//! server runs the pipeline (wall clock, Python's dispatch thread, its
//! tick task). The target, timers costing only what is due, is under
//! 1 % of a core.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{build, cpu_secs, fresh_context, rss_kib, serve_udp, thread_cpu_secs};
use crate::event::{now_secs, Event, Number};
use crate::pipeline::{Pipeline, Root};
use crate::streams::Value;

/// `rate`'s interval: its first report is due this long after a fork's
/// event.
const INTERVAL: f64 = 5.0;
/// How long the idle server is watched.
const WATCH: Duration = Duration::from_secs(5);

pub(super) fn idle_forks(forks: usize) -> anyhow::Result<()> {
    let rate = build("rate", vec![Value::Float(INTERVAL)], vec![])?;
    let by = build("by", vec![Value::from("host")], vec![rate])?;
    let pipeline = Arc::new(Pipeline::new(
        fresh_context(),
        vec![Root {
            name: "bench_stream".into(),
            node: Arc::clone(&by),
        }],
    ));
    let made = Instant::now();
    let t = now_secs();
    for i in 0..forks {
        pipeline.process(Event {
            host: Some(smol_str::format_smolstr!("host-{i:07}.example")),
            service: Some("cpu".into()),
            metric: Some(Number::Float(1.0)),
            time: Some(Number::Float(t)),
            ttl: Some(1.0),
            ..Event::default()
        });
    }
    let made = made.elapsed();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let server = serve_udp(&runtime, &pipeline)?;
    // Until the last fork's second interval, when its rate falls quiet:
    // intervals begin when the fork's event is processed.
    let settled = Duration::from_secs_f64(2.0 * INTERVAL + 1.0);
    thread::sleep(settled);
    let (dispatch, process, watching) =
        (thread_cpu_secs("dmon-dispatch"), cpu_secs(), Instant::now());
    thread::sleep(WATCH);
    let secs = watching.elapsed().as_secs_f64();
    let dispatch = (thread_cpu_secs("dmon-dispatch") - dispatch) / secs;
    let process = (cpu_secs() - process) / secs;
    let rss = rss_kib();
    let detail = by.detail().unwrap_or_default();
    let queued = pipeline.context().timers.len();
    runtime.block_on(server.shutdown());
    println!(
        "(i) idle server, by(host, rate(5)) with {forks} forks ({detail}, {queued} wake-ups queued): dispatch thread {:.1} % of a core, \
         the process {:.1} %, over {secs:.1} s (target < 1 %); RSS {:.0} MiB; forks made in {:.2} s",
        100.0 * dispatch,
        100.0 * process,
        rss as f64 / 1024.0,
        made.as_secs_f64(),
    );
    Ok(())
}
