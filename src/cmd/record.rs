//! `dmon record FILE`: the server, as `dmon serve` runs it, writing every
//! event it receives to FILE for `dmon replay`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::serve::{self, ServerOpts};
use crate::console::{LineSink, Stdout};
use crate::pipeline::Observer;
use crate::server::recorder::{Format, Recorded, Recorder};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Runs the server exactly as `dmon serve` does (same flags, same \
defaults, the stream module included) and writes every event a sender delivers (JSON or \
Riemann, over UDP or TCP) to FILE as it arrives, with the time it carried, or its receive \
time if it had none, so `dmon replay FILE` keeps the pace. dmon's own events \
(--instrument-interval) and expired events are not recorded. The file is flushed within \
a fraction of a second, and on Ctrl-C or SIGTERM, which stop the server cleanly; the \
number of events recorded is printed on exit. The file is written by a thread of its \
own, off the event path: when it falls behind, events are left out of the file (not \
out of the streams) and counted as dropped.

With FILE `-` the recording goes to stdout, and the \"Listening\" lines and printer \
output go to stderr.

Examples:
  dmon record events.ndjson --streams streams.py
  dmon record --format riemann capture.riemann"
)]
pub struct RecordArgs {
    /// Where to write: a file (created, or truncated), or `-` for stdout.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// ndjson: one JSON event per line; riemann: Riemann TCP frames (a
    /// 4-byte big-endian length, then a protobuf Msg of up to 1,000 events).
    #[arg(
        long,
        value_name = "ndjson|riemann",
        env = "DMON_RECORD_FORMAT",
        default_value = "ndjson"
    )]
    pub format: Format,
    #[command(flatten)]
    pub server: ServerOpts,
}

/// Printed lines on stderr, when stdout carries the recording.
struct Stderr;

impl LineSink for Stderr {
    fn write_line(&self, line: &str) {
        eprintln!("{line}");
    }
}

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let to_stdout = args.file.as_os_str() == "-";
    let console: Arc<dyn LineSink> = if to_stdout {
        Arc::new(Stderr)
    } else {
        Arc::new(Stdout)
    };
    let pipeline = serve::prepare_with(&args.server, console)?;
    // Before the listeners open: the first event is recorded too.
    let recorder = Recorder::create(&args.file, args.format, Arc::clone(pipeline.memory()))
        .with_context(|| format!("cannot record to {}", args.file.display()))?;
    pipeline.set_observer(Some(Arc::clone(&recorder) as Arc<dyn Observer>));
    let observed = Arc::clone(&pipeline);
    let target = recorder.target.clone();
    let format = args.format.name();
    let announce = |bound: &crate::server::Addresses| {
        for line in bound.announcements() {
            if to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        tracing::info!("recording every event received to {target} ({format})");
    };
    // At a forced stop too: what the writer has is still worth keeping.
    let finish = |_forced| {
        observed.set_observer(None);
        report(&recorder, recorder.finish())
    };
    serve::serve_until_stopped(pipeline, &args.server, announce, " and recording", finish)
}

/// Says how many events were recorded; a write error fails the command.
fn report(recorder: &Recorder, recorded: Recorded) -> ExitCode {
    let dropped = match recorded.dropped {
        0 => String::new(),
        n => format!(", {n} dropped (the writer fell behind)"),
    };
    let events = if recorded.written == 1 {
        "event"
    } else {
        "events"
    };
    eprintln!(
        "dmon record: {} {events} recorded to {}{dropped}",
        recorded.written, recorder.target
    );
    match recorded.error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!(
                "dmon record: writing {} failed: {e}; the recording stops there",
                recorder.target
            );
            ExitCode::FAILURE
        }
    }
}
