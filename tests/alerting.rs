//! examples/alerting.py — a per-host error rate mailed at most 5 times an
//! hour, state-change mails, and latency percentiles per service — run
//! in-process through the real embedded Python and the native nodes, on a
//! virtual clock: ten minutes of traffic take milliseconds, and no test
//! sleeps.

use std::sync::{Arc, Mutex};

use dmon::clock::VirtualClock;
use dmon::console::LineSink;
use dmon::pipeline::Pipeline;
use dmon::python::{self, loader};
use dmon::sinks::email::Mailer;
use dmon::sinks::senders::Senders;
use dmon::streams::context::Context;
use dmon::streams::NodeSnapshot;
use dmon::testing::ev;
use pyo3::prelude::*;

/// Unix time the run starts at.
const T0: f64 = 1_800_000_000.0;

#[derive(Default)]
struct Printed(Mutex<Vec<String>>);
impl LineSink for Printed {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

struct Run {
    clock: Arc<VirtualClock>,
    pipeline: Pipeline,
    printed: Arc<Printed>,
}

impl Run {
    fn start() -> Run {
        python::init().unwrap();
        let clock = VirtualClock::starting_at(T0);
        let printed = Arc::new(Printed::default());
        // Mail goes nowhere (port 1): the email nodes' counters say what
        // was sent to them.
        let mailer = Mailer::start("127.0.0.1:1".parse().unwrap());
        let ctx = Arc::new(
            Context::with_clock(clock.clone(), printed.clone()).with_outputs(Senders::new(mailer)),
        );
        python::bind_context(Arc::clone(&ctx)).unwrap();
        let module = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alerting.py");
        let roots = Python::attach(|py| {
            loader::load(py, &loader::StreamSource::Path(module.into()))
                .map(|(_, roots)| roots)
                .unwrap_or_else(|e| panic!("{}", e.0))
        });
        Run {
            clock,
            pipeline: Pipeline::new(ctx, roots),
            printed,
        }
    }

    /// Moves the clock to `T0 + s` and runs the timers there, as the
    /// server's tick does.
    fn at(&self, s: f64) {
        self.clock.advance_to(T0 + s);
        self.pipeline.tick(T0 + s);
    }

    /// An event at `T0 + s`.
    fn send(&self, s: f64, json: &str) {
        self.at(s);
        let mut e = ev(json);
        e.time = Some(dmon::event::Number::Float(T0 + s));
        self.pipeline.process(e);
    }

    /// The node of root `root` whose kind is `kind` (the only one).
    fn node(&self, root: &str, kind: &str) -> NodeSnapshot {
        let nodes: Vec<NodeSnapshot> = self
            .pipeline
            .stats()
            .nodes
            .into_iter()
            .filter(|n| n.path.starts_with(&format!("{root}/")) && n.kind == kind)
            .collect();
        assert_eq!(nodes.len(), 1, "one {kind} under {root}: {nodes:?}");
        nodes[0].clone()
    }
}

#[test]
fn the_usual_alerting_runs_on_a_virtual_clock() {
    let run = Run::start();
    let mut indexed_at_90 = None;
    for second in 0..600u64 {
        let s = second as f64;
        if s == 90.0 {
            indexed_at_90 = run.pipeline.context().index.get("web1", "api latency 0.95");
        }
        // web1: 40 errors a minute (0.67/s), web2: 10 a minute (0.17/s).
        if !second.is_multiple_of(3) {
            run.send(
                s,
                r#"{"host":"web1","service":"requests","state":"error","metric":1}"#,
            );
        }
        if second.is_multiple_of(6) {
            run.send(
                s,
                r#"{"host":"web2","service":"requests","state":"error","metric":1}"#,
            );
        }
        // 100 latencies, 1..100 ms, in the first 50 seconds.
        if s < 50.0 {
            for m in [2.0 * s + 1.0, 2.0 * s + 2.0] {
                run.send(
                    s,
                    &format!(r#"{{"host":"web1","service":"api latency","metric":{m}}}"#),
                );
            }
        }
        // The API check: ok, critical from 100 s, ok again from 300 s.
        if second.is_multiple_of(10) {
            let state = if (100.0..300.0).contains(&s) {
                "critical"
            } else {
                "ok"
            };
            run.send(
                s,
                &format!(r#"{{"host":"web1","service":"api","state":"{state}","ttl":3600}}"#),
            );
        }
    }
    // Traffic stops; the timers still fire.
    for s in 600..=720 {
        run.at(s as f64);
    }

    // Ten minutes of web1 above 0.5/s: the throttle let 5 mails through.
    let throttle = run.node("error_rate_stream", "throttle");
    assert!(throttle.events_in >= 6, "{throttle:?}");
    assert_eq!(run.node("error_rate_stream", "email").events_in, 5);
    assert_eq!(
        run.node("error_rate_stream", "by").detail.as_deref(),
        Some("forks 2")
    );

    // ok -> critical, critical -> ok.
    assert_eq!(run.node("state_change_stream", "email").events_in, 2);

    // The minute's latencies, one event per point.
    let printed = run.printed.0.lock().unwrap().clone();
    let latency = |point: &str| -> f64 {
        let service = format!(r#""service":"api latency {point}""#);
        let line = printed
            .iter()
            .find(|l| l.starts_with("latency: ") && l.contains(&service))
            .unwrap_or_else(|| panic!("no {point} latency in {printed:?}"));
        let json: serde_json::Value = serde_json::from_str(&line["latency: ".len()..]).unwrap();
        json["metric"].as_f64().unwrap()
    };
    assert!((50.0..=51.0).contains(&latency("0.5")), "{printed:?}");
    assert!((95.0..=96.0).contains(&latency("0.95")), "{printed:?}");
    assert!((99.0..=100.0).contains(&latency("0.99")), "{printed:?}");
    // The index held them (until they expired, a minute later).
    let indexed = indexed_at_90.expect("api latency 0.95 indexed after the first minute");
    assert_eq!(indexed.metric.map(|m| m.as_f64()), Some(latency("0.95")));
}
