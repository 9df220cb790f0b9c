//! `dmon trace EVENT --streams MODULE`: one event's path through a fresh
//! tree of the stream module, node by node (see [`crate::trace`]); with
//! `--after FILE`, through the tree as a recording's events left it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pyo3::Python;

use crate::codec::json;
use crate::console::LineSink;
use crate::event::now_secs;
use crate::python::{self, loader};
use crate::rehearsal::Rehearsal;
use crate::trace;

use super::replay::Reader;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The event runs through a fresh copy of every root of the stream module, \
on a virtual clock at the event's time (or now), with outputs captured: nothing is printed, \
mailed, indexed or sent. Printed: a line per node the event reached, by its path as \
the shell's streams() shows it, with what it did — a filter's verdict (true, false, or \
the exception it raised), passed, emitted N events, held in a window, throttled, forked \
to a `by` key — then where it stopped and what reached the outputs.

A fresh tree holds nothing: to see a window or a throttle as earlier events left it, \
give those with --after (a recording, as `dmon replay` reads: NDJSON or Riemann); they \
run first on the clock their times set, then the event is traced. The shell's \
trace(event) does the same on a copy of the live streams, state included.

Examples:
  dmon trace '{\"host\":\"web1\",\"service\":\"cpu\",\"metric\":0.97}' --streams streams.py
  echo '{\"host\":\"web1\",\"metric\":0.97}' | dmon trace - --streams streams.py
  dmon trace '{\"host\":\"web1\",\"metric\":0.97}' --streams streams.py --after events.ndjson"
)]
pub struct TraceArgs {
    /// The event, a JSON object; `-` reads it from stdin.
    #[arg(value_name = "EVENT")]
    pub event: String,
    /// Stream module to trace through (as for `dmon serve`: a .py or .hy
    /// file, NAME for NAME.py, or a module on PYTHONPATH); without it, the
    /// built-in example.
    #[arg(long, value_name = "FILE_OR_MODULE", env = "DMON_STREAM_MODULE")]
    pub streams: Option<String>,
    /// Run these recorded events through the streams first (NDJSON or
    /// Riemann), so windows, throttles and `by` hold what they would.
    #[arg(long, value_name = "FILE")]
    pub after: Option<PathBuf>,
}

/// Printer lines of the events run first are not the trace's.
struct Discard;

impl LineSink for Discard {
    fn write_line(&self, _line: &str) {}
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let text = if args.event == "-" {
        if args.after.as_deref().is_some_and(|p| p.as_os_str() == "-") {
            anyhow::bail!("EVENT and --after cannot both be read from stdin");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the event from stdin")?;
        text
    } else {
        args.event.clone()
    };
    let text = text.trim();
    if !text.starts_with('{') {
        anyhow::bail!(
            "EVENT must be one JSON object, like '{{\"host\":\"web1\",\"metric\":0.97}}'"
        );
    }
    let event = json::decode_event(text).map_err(|e| anyhow::anyhow!("bad EVENT: {}", e.0))?;
    let mut history = match &args.after {
        Some(path) => Some(Reader::open(path)?),
        None => None,
    };
    python::init().context("starting the embedded Python")?;
    let source = loader::StreamSource::parse(args.streams.as_deref());
    let shown = Python::attach(|py| -> anyhow::Result<String> {
        let (_module, roots) = loader::load(py, &source)?;
        let mut batch = Vec::new();
        let mut more = match &mut history {
            Some(reader) => py.detach(|| reader.next_batch(&mut batch, 1024)),
            None => false,
        };
        // The clock starts at the first event's time: the history's, else
        // the traced event's.
        let start = (batch.iter().find_map(|e| e.time))
            .or(event.time)
            .map_or_else(now_secs, |t| t.as_f64());
        let mut r = Rehearsal::new(roots, start, Arc::new(Discard));
        let ctx = Arc::clone(r.ctx());
        let traced = python::with_context(&ctx, || {
            while !batch.is_empty() || more {
                batch.drain(..).for_each(|e| r.feed(e));
                if let Some(reader) = history.as_mut().filter(|_| more) {
                    more = py.detach(|| reader.next_batch(&mut batch, 1024));
                }
            }
            trace::trace(&mut r, event)
        });
        Ok(traced.to_string())
    })?;
    if let Some(reader) = &history {
        if reader.bad > 0 {
            eprintln!(
                "dmon: {} bad line(s) in {} skipped",
                reader.bad, reader.name
            );
        }
    }
    println!("{shown}");
    Ok(ExitCode::SUCCESS)
}
