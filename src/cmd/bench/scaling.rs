//! Scenario (k): what one event costs `by("host", rate(5, index()))` as
//! its keys grow: 1 k, 10 k, 100 k and 1 M distinct hosts, the same number
//! of events each time (half of `--events`), cycling over the hosts and
//! dated evenly over the same [`SPAN_SECS`] of virtual time. Each key's
//! fork is made first, by one event per key, timed apart (what a new key
//! costs); the figure is then what an event costs a running `by`, its
//! rates' wake-ups included. They run in a [`Rehearsal`], as `dmon replay`
//! runs streams: the clock follows the events and steps through every
//! rate's deadline and the index's expiries on the way. Events are built in
//! memory (no decoding), so the figure is the streams' own. The target is
//! 100 k keys within 1.2x the cost of 1 k.

use std::sync::Arc;
use std::time::Instant;

use smol_str::SmolStr;

use super::{build, peak_rss_kib, reset_peak_rss, Allocations, Discard};
use crate::event::{Event, Number};
use crate::rehearsal::Rehearsal;
use crate::roots::Root;
use crate::streams::Value;

/// Virtual seconds every run covers: two of `rate`'s intervals, so each
/// key reports about once, however many keys there are.
const SPAN_SECS: f64 = 10.0;

const KEYS: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// Runs the scenario with `n` events per key count; `baseline` is the
/// baseline's events/s, measured right before.
pub(super) fn by_keys(n: usize, baseline: f64) -> anyhow::Result<()> {
    let base_ns = 1e9 / baseline;
    let mut first_ns = None;
    for keys in KEYS {
        // Outside the timing: the events only borrow these.
        let hosts: Vec<SmolStr> = (0..keys)
            .map(|k| smol_str::format_smolstr!("host-{k:07}.example"))
            .collect();
        let rate = build(
            "rate",
            vec![Value::Int(5)],
            vec![build("index", vec![], vec![])?],
        )?;
        let roots = vec![Root {
            name: "bench_stream".into(),
            node: build("by", vec![Value::from("host")], vec![rate])?,
        }];
        let t0 = 1_700_000_000.0;
        let step = SPAN_SECS / n.max(1) as f64;
        reset_peak_rss();
        let mut r = Rehearsal::counting(roots, t0, Arc::new(Discard));
        let making = Instant::now();
        for host in &hosts {
            r.feed(Event {
                host: Some(host.clone()),
                service: Some("cpu".into()),
                time: Some(Number::Float(t0)),
                ttl: Some(60.0),
                ..Event::default()
            });
        }
        let fork_ns = making.elapsed().as_secs_f64() * 1e9 / keys as f64;
        let allocations = Allocations::start();
        let start = Instant::now();
        for i in 0..n {
            r.feed(Event {
                host: Some(hosts[i % keys].clone()),
                service: Some("cpu".into()),
                metric: Some(Number::Float((i % 7) as f64)),
                time: Some(Number::Float(t0 + i as f64 * step)),
                ttl: Some(60.0),
                ..Event::default()
            });
        }
        r.advance_to(t0 + SPAN_SECS);
        let elapsed = start.elapsed();
        let allocations = allocations.so_far();
        let ns = elapsed.as_secs_f64() * 1e9 / n.max(1) as f64;
        let first = *first_ns.get_or_insert(ns);
        println!(
            "(k) by(host, rate(5, index)), {keys:>7} keys: {ns:>7.0} ns/event, {:>5.2}x the 1 k-key cost, {:>5.2}x baseline; \
             {:.1} allocs/event, peak RSS {:.0} MiB, index {} events ({n} events over {SPAN_SECS:.0} virtual s in {:.2} s; a new key's fork {fork_ns:.0} ns)",
            ns / first,
            base_ns / ns,
            allocations as f64 / n.max(1) as f64,
            peak_rss_kib() as f64 / 1024.0,
            r.ctx().index.len(),
            elapsed.as_secs_f64(),
        );
        // Dropped outside the timing: a million forks take a while to free.
        drop(r);
    }
    println!("    target: 100 k keys within 1.20x the 1 k-key cost");
    Ok(())
}
