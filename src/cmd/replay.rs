//! `dmon replay FILE`: a recording (from `dmon record`, the shell's
//! `record()`, or any NDJSON or Riemann capture) run through a stream
//! module on a virtual clock that follows the events' times, outputs
//! captured; or, with `--to`, sent to a running dmon at the recorded pace.
//!
//! One thread reads and decodes the file into batches (a reused line
//! buffer, the JSON or Riemann codec); the main thread, attached to Python
//! once for the whole replay, runs them through a [`Rehearsal`] (or sends
//! them). So a replay runs at the speed the server's own decode-then-dispatch
//! path does (`dmon bench`, scenario r beside a).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message;
use pyo3::Python;

use crate::client::RiemannClient;
use crate::codec::json::MAX_DATAGRAM;
use crate::codec::json::{self, DecodeError};
use crate::codec::riemann::{from_proto, to_proto, Msg};
use crate::console::LineSink;
use crate::event::{now_secs, Event, Number};
use crate::log_limit::LogLimiter;
use crate::python::{self, loader};
use crate::rehearsal::Rehearsal;
use crate::roots::Root;
use crate::server::recorder::Format;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The format is told from the content: Riemann TCP frames (a \
4-byte big-endian length, then a protobuf Msg) start with a byte from 0 to 3 (a length \
under 64 MiB); anything else is NDJSON (one event, or an array of events, per line). \
`dmon record` writes both.

Locally, the stream module's roots run on a virtual clock that follows the events' \
times, stepping through every node's deadline and expiring the index as the server \
does, so time-driven streams \
(rate, windows, throttle) emit what the event times dictate at any --speed; the clock \
stops at the last event (or --until seconds later), and the replay ends as a clean \
shutdown does, windows and rates forwarding what they hold. Outputs \
are captured: printer lines go to stdout, email() never sends. At the end, stderr \
gets the events read, the bad lines, the rate, and how many events reached each \
output node. A bad line is reported with its line number (at most 10 a second), \
counted, and skipped; the exit status is then 1. A bad Riemann frame (a corrupt length \
prefix, a message that does not decode) is reported with its byte offset, and the bytes \
after it are scanned for the next place a frame plausibly starts (a length under the \
limit, then a body that decodes as a Msg): the replay goes on from there, the bytes \
skipped counted in the summary.

With --to, the events go to a running dmon instead, at the recorded pace times \
--speed (1 by default there), each event's time shifted to when it is sent (so the \
receiver's clock and the events' agree). JSON over UDP has no acknowledgement: a \
receiver that cannot keep up drops datagrams (it counts them as kernel_drops); \
--riemann waits for each message's acknowledgement.

Examples:
  dmon replay events.ndjson --streams candidate.py
  dmon replay capture.riemann --speed 10 --streams streams.py
  dmon replay events.ndjson --to 127.0.0.1:7689
  dmon replay events.ndjson --to 127.0.0.1:5555 --riemann --speed max"
)]
pub struct ReplayArgs {
    /// The recording, or `-` for stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Stream module to replay through (as for `dmon serve`: a .py or .hy
    /// file, NAME for NAME.py, or a module on PYTHONPATH); without it, the
    /// built-in example. Not used with --to.
    #[arg(long, value_name = "FILE_OR_MODULE", env = "DMON_STREAM_MODULE")]
    pub streams: Option<String>,
    /// How fast: `max` (as fast as possible), or N times the recorded pace
    /// (2 is twice as fast, 0.5 half). Default: max, or 1 with --to.
    #[arg(long, value_name = "max|N")]
    pub speed: Option<Speed>,
    /// Send the events to the running dmon at HOST:PORT (its JSON UDP
    /// address; with --riemann its Riemann TCP address) instead of running
    /// them here; their times are shifted to when they are sent.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<SocketAddr>,
    /// With --to: send over Riemann TCP, each message acknowledged.
    #[arg(long, requires = "to")]
    pub riemann: bool,
    /// At the end, print the index's events to stdout, one `index: {json}`
    /// line each, by host and service.
    #[arg(long, conflicts_with = "to")]
    pub show_index: bool,
    /// After the last event, run the clock SECONDS further: reports, window
    /// flushes and index expiries due by then happen as they would have
    /// live. Either way the replay ends as a clean shutdown does: windows,
    /// rates, percentiles and batches forward what they still hold.
    #[arg(long, value_name = "SECONDS", conflicts_with = "to", value_parser = parse_seconds)]
    pub until: Option<f64>,
}

/// A number of seconds, 0 or more.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(
            "expected a number of seconds, 0 or more (60 = a minute past the last event)".into(),
        ),
    }
}

/// How fast a replay goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    Max,
    /// This many times the recorded pace.
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(n) if n > 0.0 && n.is_finite() => Ok(Speed::Times(n)),
            _ => Err("expected `max` or a positive number (2 = twice the recorded pace)".into()),
        }
    }
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(&args.file)?;
    let summary = match args.to {
        Some(to) => send(
            reader,
            to,
            args.riemann,
            args.speed.unwrap_or(Speed::Times(1.0)),
        )?,
        None => {
            python::init().context("starting the embedded Python")?;
            let source = loader::StreamSource::parse(args.streams.as_deref());
            let (_module, roots) = Python::attach(|py| loader::load(py, &source))?;
            let speed = args.speed.unwrap_or(Speed::Max);
            let console = Arc::new(Console::new(speed == Speed::Max));
            let replayed = replay(
                reader,
                roots,
                speed,
                console.clone(),
                args.show_index,
                args.until,
            )?;
            console.flush();
            replayed.summary()
        }
    };
    eprint!("{summary}");
    Ok(if summary.bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Printer lines on stdout: buffered at `--speed max`, where nobody
/// watches them appear, line by line otherwise.
struct Console {
    out: Mutex<BufWriter<io::Stdout>>,
    buffered: bool,
}

impl Console {
    fn new(buffered: bool) -> Self {
        Console {
            out: Mutex::new(BufWriter::with_capacity(1 << 16, io::stdout())),
            buffered,
        }
    }

    fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

impl LineSink for Console {
    fn write_line(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stdout (`| head`) must not stop the replay.
        let _ = writeln!(out, "{line}");
        if !self.buffered {
            let _ = out.flush();
        }
    }
}

// ---------------------------------------------------------------------------
// Reading recordings
// ---------------------------------------------------------------------------

/// Events per batch handed from the reading thread.
const BATCH: usize = 1024;
/// Batches read ahead of the replay at most.
const READ_AHEAD: usize = 16;
/// The longest Riemann frame read; longer means the file is not a capture.
const MAX_FRAME: usize = 64 << 20;

/// Reads the events of a recording, NDJSON or Riemann frames, in batches,
/// reporting and counting what is bad and going on with the rest.
pub struct Reader {
    input: Box<dyn BufRead + Send>,
    /// The file as messages name it.
    pub name: String,
    pub format: Format,
    /// Lines (NDJSON) or frames (Riemann) read so far.
    position: u64,
    /// Bytes read so far (Riemann: where the next frame starts).
    offset: u64,
    buf: Vec<u8>,
    /// Riemann: bytes read from `input` and not yet consumed, from
    /// `ahead_start` on (a frame, or what is scanned after a bad one).
    ahead: Vec<u8>,
    ahead_start: usize,
    /// Riemann: bytes skipped after bad frames to find the next one.
    pub skipped: u64,
    errors: Vec<DecodeError>,
    /// Bad lines or frames.
    pub bad: u64,
    /// Events read.
    pub events: u64,
    /// What an event without a time is dated: the time of the event
    /// before it (at first, when the replay started).
    last_time: f64,
    limiter: LogLimiter,
}

impl Reader {
    /// Opens `path`, or stdin for `-`.
    pub fn open(path: &Path) -> anyhow::Result<Reader> {
        if path.as_os_str() == "-" {
            let input = BufReader::with_capacity(1 << 18, io::stdin());
            return Reader::new(Box::new(input), "stdin".into()).context("reading stdin");
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let name = path.display().to_string();
        Reader::new(
            Box::new(BufReader::with_capacity(1 << 18, file)),
            name.clone(),
        )
        .with_context(|| format!("reading {name}"))
    }

    /// Reads from `input`, telling the format from its first byte.
    pub fn new(mut input: Box<dyn BufRead + Send>, name: String) -> io::Result<Reader> {
        // A Riemann frame starts with its length, under MAX_FRAME: a first
        // byte of 0 to 3. Anything else is text, read as NDJSON lines
        // (bad ones reported), whatever its first line holds.
        let format = match input.fill_buf()?.first() {
            Some(&b) if (b as usize) < MAX_FRAME >> 24 => Format::Riemann,
            _ => Format::Ndjson,
        };
        Ok(Reader {
            input,
            name,
            format,
            position: 0,
            offset: 0,
            buf: Vec::with_capacity(4096),
            ahead: Vec::new(),
            ahead_start: 0,
            skipped: 0,
            errors: Vec::new(),
            bad: 0,
            events: 0,
            last_time: now_secs(),
            limiter: LogLimiter::new(10),
        })
    }

    /// Appends the next events (about `max`) to `out`; false once the
    /// input is over. A read error ends the input, reported.
    pub fn next_batch(&mut self, out: &mut Vec<Event>, max: usize) -> bool {
        let before = out.len();
        let more = match self.format {
            Format::Ndjson => self.ndjson(out, max),
            Format::Riemann => self.frames(out, max),
        };
        let more = more.unwrap_or_else(|e| {
            self.bad(&format!("read error: {e}"));
            false
        });
        self.events += (out.len() - before) as u64;
        if let Some(t) = out.last().and_then(|e| e.time) {
            self.last_time = t.as_f64();
        }
        more
    }

    fn ndjson(&mut self, out: &mut Vec<Event>, max: usize) -> io::Result<bool> {
        let target = out.len() + max;
        while out.len() < target {
            self.buf.clear();
            if self.input.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(false);
            }
            self.position += 1;
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let first = out.len();
            json::decode(line, self.last_time, out, &mut self.errors);
            // Events without a time were given the one before them.
            if let Some(t) = out[first..].last().and_then(|e| e.time) {
                self.last_time = t.as_f64();
            }
            for e in std::mem::take(&mut self.errors) {
                // A line decoded alone: its errors say "line 1".
                self.bad(e.0.strip_prefix("line 1: ").unwrap_or(&e.0));
            }
        }
        Ok(true)
    }

    fn frames(&mut self, out: &mut Vec<Event>, max: usize) -> io::Result<bool> {
        let target = out.len() + max;
        while out.len() < target {
            let have = self.peek(4)?;
            if have == 0 {
                return Ok(false);
            }
            self.position += 1;
            let reason = if have < 4 {
                format!("truncated: {have} of the 4 length bytes")
            } else {
                let len = frame_len(self.ahead());
                if len > MAX_FRAME {
                    format!("a length of {len} bytes, over {} MiB", MAX_FRAME >> 20)
                } else {
                    let got = self.peek(4 + len)?.min(4 + len) - 4;
                    if got < len {
                        format!("truncated: {got} of its {len} bytes")
                    } else {
                        match Msg::decode(&self.ahead()[4..4 + len]) {
                            Ok(msg) => {
                                for p in &msg.events {
                                    let e = from_proto(p, self.last_time);
                                    if let Some(t) = e.time {
                                        self.last_time = t.as_f64();
                                    }
                                    out.push(e);
                                }
                                self.consume(4 + len);
                                continue;
                            }
                            Err(e) => format!("invalid message: {e}"),
                        }
                    }
                }
            };
            self.skip_to_next_frame(&reason)?;
        }
        Ok(true)
    }

    /// After a bad frame: one corrupt length prefix must not lose the rest
    /// of a capture, so the bytes after its first are scanned for the next
    /// place a frame plausibly starts ([`Reader::frame_starts_here`]);
    /// what is skipped to get there is counted and reported.
    fn skip_to_next_frame(&mut self, reason: &str) -> io::Result<()> {
        let at = self.offset;
        self.consume(1);
        let mut skipped = 1;
        let found = loop {
            match self.frame_starts_here()? {
                Some(true) => break true,
                Some(false) => {
                    self.consume(1);
                    skipped += 1;
                }
                None => {
                    let rest = self.ahead().len();
                    self.consume(rest);
                    skipped += rest as u64;
                    break false;
                }
            }
        };
        self.skipped += skipped;
        let to = if found {
            format!("the next frame, at byte {}", self.offset)
        } else {
            "the end: no frame after it".into()
        };
        self.bad_at(at, &format!("{reason}; skipped {skipped} bytes to {to}"));
        Ok(())
    }

    /// Whether a frame plausibly starts at the next byte: a length of 1
    /// to [`MAX_FRAME`], a first byte that is one of Msg's field tags, a body
    /// that decodes as a Msg, and after it the end of the input or another
    /// length under the limit. None when too few bytes are left for a frame.
    fn frame_starts_here(&mut self) -> io::Result<Option<bool>> {
        /// Msg's fields: ok (2, a varint); error, states, query, events
        /// (3 to 6, length-delimited).
        const MSG_TAGS: [u8; 5] = [0x10, 0x1a, 0x22, 0x2a, 0x32];
        if self.peek(5)? < 5 {
            return Ok(None);
        }
        let len = frame_len(self.ahead());
        if len == 0 || len > MAX_FRAME || !MSG_TAGS.contains(&self.ahead()[4]) {
            return Ok(Some(false));
        }
        let end = 4 + len;
        let have = self.peek(end + 4)?;
        if have < end || Msg::decode(&self.ahead()[4..end]).is_err() {
            return Ok(Some(false));
        }
        Ok(Some(
            have == end || (have >= end + 4 && frame_len(&self.ahead()[end..]) <= MAX_FRAME),
        ))
    }

    /// The bytes read ahead and not consumed yet.
    fn ahead(&self) -> &[u8] {
        &self.ahead[self.ahead_start..]
    }

    /// Reads ahead until `n` bytes are unconsumed, or the input ends; how
    /// many are.
    fn peek(&mut self, n: usize) -> io::Result<usize> {
        let have = self.ahead.len() - self.ahead_start;
        if have >= n {
            return Ok(have);
        }
        // Consumed bytes are dropped once they are half of what is held,
        // so scanning byte by byte does not move the rest each time.
        if self.ahead_start * 2 >= self.ahead.len() {
            self.ahead.drain(..self.ahead_start);
            self.ahead_start = 0;
        }
        // Grown as bytes arrive, not to `n` up front: a corrupt length
        // asks for up to 64 MiB, at every byte a scan for the next frame
        // tries, near the end of a capture that holds far less.
        let want = (n - have) as u64;
        (&mut self.input).take(want).read_to_end(&mut self.ahead)?;
        Ok(self.ahead.len() - self.ahead_start)
    }

    /// Moves past `n` bytes read ahead.
    fn consume(&mut self, n: usize) {
        self.ahead_start += n;
        self.offset += n as u64;
        if self.ahead_start == self.ahead.len() {
            self.ahead.clear();
            self.ahead_start = 0;
        }
    }

    /// Counts a bad line or frame and reports it, at most 10 a second.
    fn bad(&mut self, reason: &str) {
        self.bad_at(self.offset, reason);
    }

    /// [`Reader::bad`] for the frame that started at byte `at`.
    fn bad_at(&mut self, at: u64, reason: &str) {
        self.bad += 1;
        let Some(suppressed) = self.limiter.check() else {
            return;
        };
        if suppressed > 0 {
            eprintln!(
                "dmon replay: ({suppressed} more bad {} not shown)",
                self.unit()
            );
        }
        match self.format {
            Format::Ndjson => eprintln!("dmon replay: {}:{}: {reason}", self.name, self.position),
            Format::Riemann => eprintln!(
                "dmon replay: {}: frame {} (byte {at}): {reason}",
                self.name, self.position
            ),
        }
    }

    fn unit(&self) -> &'static str {
        match self.format {
            Format::Ndjson => "lines",
            Format::Riemann => "frames",
        }
    }

    /// Reads batches on a thread of its own, up to [`READ_AHEAD`] ahead.
    fn spawn(
        mut self,
    ) -> (
        crossbeam_channel::Receiver<Vec<Event>>,
        thread::JoinHandle<Reader>,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(READ_AHEAD);
        let reading = thread::Builder::new()
            .name("dmon-replay-read".into())
            .spawn(move || {
                loop {
                    let mut batch = Vec::with_capacity(BATCH);
                    let more = self.next_batch(&mut batch, BATCH);
                    if !batch.is_empty() && tx.send(batch).is_err() {
                        break;
                    }
                    if !more {
                        break;
                    }
                }
                self
            })
            .expect("spawn the reading thread");
        (rx, reading)
    }
}

/// The length a Riemann frame's first 4 bytes give.
fn frame_len(header: &[u8]) -> usize {
    u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize
}

// ---------------------------------------------------------------------------
// Pace
// ---------------------------------------------------------------------------

/// When each event is due, at `speed` times the recorded pace, counted
/// from the first event's time.
struct Pace {
    speed: Speed,
    started: Instant,
    first: Option<f64>,
}

impl Pace {
    fn new(speed: Speed) -> Self {
        Pace {
            speed,
            started: Instant::now(),
            first: None,
        }
    }

    /// How long after the start the event at time `t` is due (`None`: at
    /// once, at `--speed max`).
    fn due(&mut self, t: f64) -> Option<Duration> {
        let Speed::Times(speed) = self.speed else {
            return None;
        };
        let first = *self.first.get_or_insert(t);
        Some(Duration::try_from_secs_f64((t - first).max(0.0) / speed).unwrap_or(Duration::MAX))
    }

    /// How long to wait before the event at `t` (`None`: it is due).
    fn wait(&mut self, t: f64) -> Option<Duration> {
        let due = self.due(t)?;
        due.checked_sub(self.started.elapsed())
            .filter(|w| *w >= Duration::from_millis(1))
    }
}

// ---------------------------------------------------------------------------
// Local replay
// ---------------------------------------------------------------------------

/// What a replay did.
pub struct Replayed {
    pub name: String,
    pub format: Format,
    pub events: u64,
    pub bad: u64,
    /// Bytes skipped after bad frames.
    pub skipped: u64,
    pub elapsed: Duration,
    /// Events per output node.
    pub counts: Vec<(String, u64)>,
}

impl Replayed {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn summary(&self) -> Summary {
        let mut text = format!(
            "dmon replay: {} read from {} ({}), {}, in {:.2} s: {:.0} events/s\n",
            plural(self.events, "event"),
            self.name,
            self.format.name(),
            bad_input(self.format, self.bad, self.skipped),
            self.elapsed.as_secs_f64(),
            self.rate(),
        );
        let width = self.counts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (node, n) in &self.counts {
            let events = if *n == 1 { "event" } else { "events" };
            text.push_str(&format!("  {node:<width$}  {n:>10} {events}\n"));
        }
        if self.counts.is_empty() {
            text.push_str("  no event reached an output node\n");
        }
        Summary {
            text,
            bad: self.bad,
        }
    }
}

/// `1 event`, `2 events`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `2 bad frames`, with the bytes skipped to find good ones, if any.
fn bad_input(format: Format, bad: u64, skipped: u64) -> String {
    let mut text = format!("{bad} bad {}", unit(format, bad));
    if skipped > 0 {
        text.push_str(&format!(" ({} skipped)", plural(skipped, "byte")));
    }
    text
}

fn unit(format: Format, n: u64) -> &'static str {
    match (format, n) {
        (Format::Ndjson, 1) => "line",
        (Format::Ndjson, _) => "lines",
        (Format::Riemann, 1) => "frame",
        (Format::Riemann, _) => "frames",
    }
}

/// Runs the recording through `roots` on a virtual clock (see the module
/// documentation); printer lines go to `console`. The clock runs on
/// `until` seconds past the last event, then the roots are flushed
/// ([`Rehearsal::flush`]). With `show_index`, the index's events are
/// written to `console` at the end (`index: {json}`).
pub fn replay(
    reader: Reader,
    roots: Vec<Root>,
    speed: Speed,
    console: Arc<dyn LineSink>,
    show_index: bool,
    until: Option<f64>,
) -> anyhow::Result<Replayed> {
    let started = Instant::now();
    let (name, format) = (reader.name.clone(), reader.format);
    let (batches, reading) = reader.spawn();
    let mut pace = Pace::new(speed);
    let rehearsal = Python::attach(|py| -> Option<Rehearsal> {
        // The clock starts at the first event: a replay has no other now.
        let first = py.detach(|| batches.recv().ok())?;
        let start = first
            .iter()
            .find_map(|e| e.time)
            .map_or_else(now_secs, Number::as_f64);
        let mut rehearsal = Rehearsal::counting(roots, start, console.clone());
        let ctx = Arc::clone(rehearsal.ctx());
        python::with_context(&ctx, || {
            let mut batch = Some(first);
            while let Some(events) = batch {
                for e in events {
                    if let Some(wait) = e.time.and_then(|t| pace.wait(t.as_f64())) {
                        py.detach(|| thread::sleep(wait));
                    }
                    rehearsal.feed(e);
                }
                batch = py.detach(|| batches.recv().ok());
            }
            if let Some(seconds) = until {
                let end = rehearsal.now() + seconds;
                rehearsal.advance_to(end);
            }
            rehearsal.flush();
        });
        Some(rehearsal)
    });
    let reader = reading
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
    let elapsed = started.elapsed();
    let counts = rehearsal
        .as_ref()
        .map(Rehearsal::counts)
        .unwrap_or_default();
    if let (true, Some(r)) = (show_index, &rehearsal) {
        let mut events = r.ctx().index.snapshot();
        events.sort_by_key(|e| e.key());
        for e in events {
            console.write_line(&format!("index: {}", json::encode(&e)));
        }
    }
    // Freeing a million indexed events takes seconds: off the caller's
    // path (a process that exits now does not wait for it).
    if let Some(r) = rehearsal {
        thread::spawn(move || drop(r));
    }
    Ok(Replayed {
        name,
        format,
        events: reader.events,
        bad: reader.bad,
        skipped: reader.skipped,
        elapsed,
        counts,
    })
}

/// The lines a replay ends with, and whether it met bad input.
struct Summary {
    text: String,
    bad: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------
// Replay to a running dmon
// ---------------------------------------------------------------------------

/// Events per Riemann message sent.
const EVENTS_PER_MESSAGE: usize = 1000;

/// Where `--to` sends, and what is gathered for the next send.
enum Outbox {
    Udp {
        socket: UdpSocket,
        datagram: Vec<u8>,
        line: Vec<u8>,
        sent: u64,
    },
    Riemann {
        client: RiemannClient,
        events: Vec<Event>,
        sent: u64,
    },
}

impl Outbox {
    fn push(&mut self, e: &Event) -> anyhow::Result<()> {
        match self {
            Outbox::Udp { datagram, line, .. } => {
                line.clear();
                serde_json::to_writer(&mut *line, e)?;
                line.push(b'\n');
                if !datagram.is_empty() && datagram.len() + line.len() > MAX_DATAGRAM {
                    self.flush()?;
                }
                if let Outbox::Udp { datagram, line, .. } = self {
                    datagram.extend_from_slice(line);
                }
            }
            Outbox::Riemann { events, .. } => {
                events.push(e.clone());
                if events.len() >= EVENTS_PER_MESSAGE {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Outbox::Udp {
                socket,
                datagram,
                sent,
                ..
            } => {
                if !datagram.is_empty() {
                    socket.send(datagram)?;
                    datagram.clear();
                    *sent += 1;
                }
            }
            Outbox::Riemann {
                client,
                events,
                sent,
            } => {
                if !events.is_empty() {
                    let msg = Msg {
                        events: events.iter().map(to_proto).collect(),
                        ..Msg::default()
                    };
                    client.request(&msg)?;
                    events.clear();
                    *sent += 1;
                }
            }
        }
        Ok(())
    }
}

/// Sends the recording to the dmon at `to`, paced, times shifted to now.
fn send(reader: Reader, to: SocketAddr, riemann: bool, speed: Speed) -> anyhow::Result<Summary> {
    let mut outbox = if riemann {
        let client = RiemannClient::connect(to, Duration::from_secs(10))
            .with_context(|| format!("cannot connect to {to}"))?;
        Outbox::Riemann {
            client,
            events: Vec::with_capacity(EVENTS_PER_MESSAGE),
            sent: 0,
        }
    } else {
        let bind: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(to)?;
        Outbox::Udp {
            socket,
            datagram: Vec::with_capacity(MAX_DATAGRAM),
            line: Vec::new(),
            sent: 0,
        }
    };
    let (name, format) = (reader.name.clone(), reader.format);
    let (batches, reading) = reader.spawn();
    let mut pace = Pace::new(speed);
    let start_wall = now_secs();
    let mut sending = || -> anyhow::Result<()> {
        for batch in batches.iter() {
            for mut e in batch {
                let t = e.time.map_or(f64::NAN, Number::as_f64);
                if let Some(wait) = pace.wait(t) {
                    // What is due goes out before the pause.
                    outbox.flush()?;
                    thread::sleep(wait);
                }
                let sent_at = match pace.due(t) {
                    Some(due) => start_wall + due.as_secs_f64(),
                    None => now_secs(),
                };
                e.time = Some(Number::Float(sent_at));
                outbox.push(&e)?;
            }
        }
        outbox.flush()
    };
    let outcome = sending().with_context(|| format!("sending to {to}"));
    // Unblocks the reading thread if sending stopped early.
    drop(batches);
    let reader = reading
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
    outcome?;
    let elapsed = pace.started.elapsed().as_secs_f64();
    let how = match outbox {
        Outbox::Udp { sent, .. } => format!("JSON over UDP, {}", plural(sent, "datagram")),
        Outbox::Riemann { sent, .. } => {
            format!("Riemann TCP, {} acknowledged", plural(sent, "message"))
        }
    };
    Ok(Summary {
        text: format!(
            "dmon replay: {} read from {name} ({}), {}, sent to {to} ({how}) in {elapsed:.2} s\n",
            plural(reader.events, "event"),
            format.name(),
            bad_input(format, reader.bad, reader.skipped),
        ),
        bad: reader.bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Box::new(io::Cursor::new(bytes.to_vec())), "test".into()).unwrap()
    }

    fn read_all(r: &mut Reader) -> Vec<Event> {
        let mut out = Vec::new();
        while r.next_batch(&mut out, 2) {}
        out
    }

    #[test]
    fn ndjson_is_read_past_bad_lines_which_are_counted() {
        let mut r = reader(b"\n\n{\"host\":\"a\",\"time\":5}\nnot json\n\n[{\"host\":\"b\"},{\"host\":\"c\",\"time\":7}]\n{\"host\":\"d\"");
        assert_eq!(r.format, Format::Ndjson);
        let events = read_all(&mut r);
        let hosts: Vec<_> = events.iter().map(|e| e.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        // An event without a time takes the time of the one before it.
        assert_eq!(events[1].time, Some(Number::Float(5.0)));
        assert_eq!((r.events, r.bad), (3, 2));
        assert_eq!(r.position, 7, "lines counted, blank ones included");
    }

    fn frame(hosts: &[&str]) -> Vec<u8> {
        let m = Msg {
            events: hosts
                .iter()
                .map(|h| {
                    to_proto(&Event {
                        host: Some((*h).into()),
                        time: Some(Number::Int(10)),
                        ..Event::default()
                    })
                })
                .collect(),
            ..Msg::default()
        };
        let body = m.encode_to_vec();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    }

    #[test]
    fn riemann_frames_are_read_and_a_bad_frame_skipped() {
        let mut bytes = frame(&["a", "b"]);
        bytes.extend([0, 0, 0, 2, 0xff, 0xff]); // not a Msg
        bytes.extend(frame(&["c"]));
        bytes.extend([0, 0, 1, 0, 1, 2]); // truncated
        let mut r = reader(&bytes);
        assert_eq!(r.format, Format::Riemann);
        let events = read_all(&mut r);
        let hosts: Vec<_> = events.iter().map(|e| e.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(r.bad, 2);
    }

    #[test]
    fn a_corrupt_length_prefix_is_skipped_and_the_frames_after_it_read() {
        let hosts: Vec<String> = (0..50).map(|i| format!("host{i}")).collect();
        for corrupt in [0xffff_ffff_u32, 1000, 3] {
            let mut bytes = Vec::new();
            let mut corrupted_at = 0;
            for (i, h) in hosts.iter().enumerate() {
                let mut f = frame(&[h, "x"]);
                if i == 10 {
                    corrupted_at = bytes.len();
                    f[..4].copy_from_slice(&corrupt.to_be_bytes());
                }
                bytes.extend(f);
            }
            let frame_len = frame(&[&hosts[10], "x"]).len() as u64;
            let mut r = reader(&bytes);
            let events = read_all(&mut r);
            let read: Vec<_> = events.iter().map(|e| e.host.as_deref().unwrap()).collect();
            let expected: Vec<_> = (0..50)
                .filter(|i| *i != 10)
                .flat_map(|i| [hosts[i].as_str(), "x"])
                .collect();
            assert_eq!(read, expected, "length {corrupt} at byte {corrupted_at}");
            assert_eq!((r.bad, r.skipped), (1, frame_len), "length {corrupt}");
        }
    }

    #[test]
    fn text_that_starts_badly_is_still_ndjson() {
        let mut r = reader(b"oops\n{\"host\":\"a\"}\n");
        assert_eq!(r.format, Format::Ndjson);
        assert_eq!(read_all(&mut r).len(), 1);
        assert_eq!(r.bad, 1);
    }

    #[test]
    fn an_empty_input_has_no_events() {
        let mut r = reader(b"\n  \n");
        assert!(read_all(&mut r).is_empty());
        assert_eq!((r.events, r.bad), (0, 0));
    }

    #[test]
    fn speed_parses() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("2.5".parse::<Speed>(), Ok(Speed::Times(2.5)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn pace_scales_recorded_gaps() {
        let mut pace = Pace::new(Speed::Times(4.0));
        assert_eq!(pace.due(100.0), Some(Duration::ZERO));
        assert_eq!(pace.due(102.0), Some(Duration::from_millis(500)));
        assert_eq!(Pace::new(Speed::Max).due(5.0), None);
    }
}
