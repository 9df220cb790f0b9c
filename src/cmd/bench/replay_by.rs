//! Scenario (p): `dmon replay` of a generated NDJSON file (1 M events by
//! default, 10,000 host/service keys, 1,000 s of event time, ~200-byte
//! lines) through `by("host", "service", average(6, index()))`, beside a
//! baseline run right before it on the same file: one thread reading its
//! lines, `serde_json` into a struct, a `HashMap` mean per key. The
//! replay's target is 1.5x that baseline.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;

use super::{
    build, peak_rss_kib, report, reset_peak_rss, sample_event, Allocations, Discard, Means,
    Outcome, RemoveOnDrop,
};
use crate::cmd::replay::{replay, Reader, Speed};
use crate::roots::Root;
use crate::streams::Value;

/// Seconds of event time the file covers, whatever its size.
const SPAN_SECS: f64 = 1_000.0;

/// Runs the scenario over `n` events.
pub(super) fn replay_by(n: usize) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("dmon-bench-by-{}.ndjson", std::process::id()));
    let file = RemoveOnDrop(path.clone());
    let bytes = write_file(&file.0, n)?;
    println!(
        "(p) a {:.0} MB NDJSON file: {n} events ({} bytes a line), 10,000 host/service keys, {SPAN_SECS:.0} s of event time",
        bytes as f64 / 1e6,
        bytes / n.max(1) as u64,
    );
    let base = file_baseline(&path)?;
    report(
        "  baseline on the file: lines -> serde_json + HashMap",
        &base,
        base.rate(),
    );
    let index = build("index", vec![], vec![])?;
    let average = build("average", vec![Value::Int(6)], vec![index])?;
    let by = build(
        "by",
        vec![Value::from("host"), Value::from("service")],
        vec![average],
    )?;
    let roots = vec![Root {
        name: "bench_stream".into(),
        node: by,
    }];
    reset_peak_rss();
    let allocations = Allocations::start();
    let replayed = replay(
        Reader::open(&path)?,
        roots,
        Speed::Max,
        Arc::new(Discard),
        false,
        None,
    )?;
    if replayed.events as usize != n || replayed.bad != 0 {
        bail!(
            "the replay read {} events ({} bad) of {n}",
            replayed.events,
            replayed.bad
        );
    }
    let o = Outcome {
        events: n,
        elapsed: replayed.elapsed,
        peak_rss_kib: peak_rss_kib(),
        allocations: allocations.so_far(),
    };
    report(
        "(p) replay file -> by(host, service, average(6, index))",
        &o,
        base.rate(),
    );
    println!(
        "    replay = {:.2}x the baseline on the same file (target 1.5x)",
        o.rate() / base.rate()
    );
    Ok(())
}

/// Writes `n` sample events, dated evenly over [`SPAN_SECS`]; its size.
fn write_file(path: &Path, n: usize) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let t0 = 1_700_000_000.0;
    let step = SPAN_SECS / n.max(1) as f64;
    for i in 0..n {
        let sample = sample_event(i);
        // `{…}` becomes `{…,"time":T}`.
        out.write_all(&sample.as_bytes()[..sample.len() - 1])?;
        writeln!(out, r#","time":{:.3}}}"#, t0 + i as f64 * step)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// The baseline, reading the file as the replay does (a buffered reader,
/// a reused line buffer): what a plain program would do with it.
fn file_baseline(path: &Path) -> anyhow::Result<Outcome> {
    reset_peak_rss();
    let allocations = Allocations::start();
    let start = Instant::now();
    let mut input = std::io::BufReader::with_capacity(1 << 18, std::fs::File::open(path)?);
    let mut line = Vec::with_capacity(512);
    let mut means = Means::default();
    let mut events = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        means.add(serde_json::from_slice(&line)?);
        events += 1;
    }
    std::hint::black_box(means.last);
    Ok(Outcome {
        events,
        elapsed: start.elapsed(),
        peak_rss_kib: peak_rss_kib(),
        allocations: allocations.so_far(),
    })
}
