//! Scenario (n): workers taking events from NATS JetStream.
//!
//! A real `nats-server` (JetStream on, its store in a temporary directory)
//! is started; for 1, 2 and 3 workers, `dmon serve --consume` workers,
//! each with its share of the 16 partitions and (b)'s tree (`average ->
//! index`), are started and take their partitions; then the events are
//! published as a gateway does (batches per partition, each acknowledged)
//! and the time runs until the workers have drained the stream. Workers
//! checkpoint (and so acknowledge) every 0.5 s, so the end may be up to
//! that late.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::sample_event;
use crate::cluster::{self, encode_batch, partition_of, subject, Connection, STREAM};
use crate::codec::json;
use crate::event::{Event, Number};

/// Partitions in the benchmark's cluster.
const PARTITIONS: u32 = 16;

/// Events per published batch, as a gateway batches.
const BATCH: usize = 500;

/// Publishes awaiting their ack at once.
const IN_FLIGHT: usize = 256;

/// How long anything the scenario waits for may take.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs (n), each worker count beside `baseline_now()`'s baseline.
pub fn workers(events: usize, baseline_now: impl Fn() -> f64) -> anyhow::Result<()> {
    if Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        println!("(n) skipped: no nats-server on PATH (Debian's package `nats-server`)");
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("dmon-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_all(events, &dir, baseline_now);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_all(events: usize, dir: &Path, baseline_now: impl Fn() -> f64) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut nats = Reaped(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(dir.join("store"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nats-server")?,
    );
    wait_for_line(nats.0.stderr.take().expect("piped"), "Server is ready")
        .context("nats-server did not start")?;
    let url = format!("nats://127.0.0.1:{port}");
    let module = dir.join("bench_streams.py");
    std::fs::write(
        &module,
        "from dmon.streams import *\n\nstream = average(2, index())\n",
    )?;
    let loaded = batches(events);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let conn = runtime.block_on(async {
        let conn = cluster::connect(&url, "dmon-bench", &Default::default()).await?;
        conn.prepare(PARTITIONS).await?;
        anyhow::Ok(conn)
    })?;
    for workers in 1..=3u32 {
        let base = baseline_now();
        // Started on an empty stream, each owning its partitions before
        // the load arrives: the steady state, not a takeover.
        let started = (0..workers)
            .map(|i| spawn_worker(&url, &module, share(i, workers)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let start = Instant::now();
        let published = runtime.block_on(publish(&conn, &loaded))?;
        let elapsed = runtime.block_on(drained(&conn, start))?;
        line(
            &format!("(n) {workers} worker(s): published and drained, average -> index"),
            events,
            elapsed,
            base,
        );
        println!(
            "    publishing alone took {:.2} s ({:.0} events/s into JetStream)",
            published.as_secs_f64(),
            events as f64 / published.as_secs_f64()
        );
        stop(started);
    }
    Ok(())
}

/// Stops workers as an operator would (SIGTERM: last checkpoint, lease
/// released), and waits for them.
fn stop(workers: Vec<Reaped>) {
    for mut w in workers {
        // SAFETY: kill only signals a worker this scenario started.
        unsafe { libc::kill(w.0.id() as i32, libc::SIGTERM) };
        let _ = w.0.wait();
    }
}

/// A result line as [`super::report`] prints them, without the peak RSS:
/// the work is done by other processes.
fn line(name: &str, events: usize, elapsed: Duration, baseline: f64) {
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<55} {rate:>12.0} events/s  {:>5.2}x baseline  ({events} events in {:.2} s)",
        rate / baseline,
        elapsed.as_secs_f64()
    );
}

/// The events as partition batches, ready to publish.
fn batches(events: usize) -> Vec<(u32, Vec<u8>)> {
    let mut by_partition: Vec<Vec<Event>> = vec![Vec::new(); PARTITIONS as usize];
    let mut out = Vec::new();
    let (mut decoded, mut errors) = (Vec::new(), Vec::new());
    for i in 0..events {
        decoded.clear();
        json::decode(sample_event(i).as_bytes(), 0.0, &mut decoded, &mut errors);
        for mut e in decoded.drain(..) {
            e.time = Some(Number::Int(1_700_000_000 + (i / 1000) as i64));
            let p = partition_of(e.host.as_deref(), PARTITIONS);
            let pending = &mut by_partition[p as usize];
            pending.push(e);
            if pending.len() == BATCH {
                out.push((p, encode_batch(pending)));
                pending.clear();
            }
        }
    }
    for (p, pending) in by_partition.iter().enumerate() {
        if !pending.is_empty() {
            out.push((p as u32, encode_batch(pending)));
        }
    }
    out
}

/// Publishes every batch, keeping [`IN_FLIGHT`] unacknowledged; the time it
/// took.
async fn publish(conn: &Connection, batches: &[(u32, Vec<u8>)]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for (p, payload) in batches {
        if pending.len() == IN_FLIGHT {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                pending.pop_front().expect("full");
            ack.await?;
        }
        pending.push_back(conn.js.publish(subject(*p), payload.clone().into()).await?);
    }
    for ack in pending {
        ack.await?;
    }
    Ok(start.elapsed())
}

/// Waits until the workers took every message and acknowledged it (the
/// work queue is empty); the time since `since`.
async fn drained(conn: &Connection, since: Instant) -> anyhow::Result<Duration> {
    let mut stream = conn.js.get_stream(STREAM).await?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = stream.info().await?.state.messages;
        if left == 0 {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the workers left {left} batches after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker `i` of `n`'s partitions: an even share of the 16.
fn share(i: u32, n: u32) -> String {
    let first = PARTITIONS * i / n;
    let last = PARTITIONS * (i + 1) / n - 1;
    format!("{first}-{last}")
}

fn spawn_worker(url: &str, module: &Path, partitions: String) -> anyhow::Result<Reaped> {
    let exe = std::env::current_exe()?;
    let mut child = Reaped(
        Command::new(exe)
            .args(["serve", "--consume", url, "--partitions", &partitions])
            .arg("--streams")
            .arg(module)
            .args([
                "--udp",
                "127.0.0.1:0",
                "--riemann-tcp",
                "off",
                "--riemann-udp",
                "off",
            ])
            .args(["--checkpoint-secs", "0.5", "--instrument-interval", "0"])
            .args(["--node-name", &format!("bench-{partitions}")])
            // Its log says when it took its partitions, whatever the
            // bench's own log level.
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a worker")?,
    );
    wait_for_line(
        child.0.stderr.take().expect("piped"),
        "took over partitions",
    )
    .with_context(|| format!("worker for partitions {partitions} never took them"))?;
    Ok(child)
}

/// Reads `pipe` on a thread until a line containing `what` (then keeps
/// draining it, so the child never blocks on a full pipe).
fn wait_for_line(
    pipe: impl std::io::Read + Send + 'static,
    what: &'static str,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if !told && line.contains(what) {
                let _ = tx.send(());
                told = true;
            }
        }
    });
    rx.recv_timeout(PATIENCE)
        .map_err(|_| anyhow::anyhow!("no line with {what:?} within {PATIENCE:?}"))
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
