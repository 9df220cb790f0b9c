//! Recording: every event sources deliver, written to a file as it arrives
//! (`dmon record`, the shell's `record()`), for `dmon replay`.
//!
//! The recorder is a [`pipeline::Observer`]: the dispatch thread hands it
//! each batch (shared events, no copies) and goes on. A writer thread of its
//! own encodes and writes them, so a slow disk never slows dispatch: at most
//! [`MAX_PENDING`] events wait for it, holding no more than the recorder's
//! share of `--memory-limit`, and a batch that does not fit is dropped whole
//! and counted.
//!
//! Two formats: NDJSON (one event per line, the JSON codec's encoding) and
//! Riemann frames (a 4-byte big-endian length, then a protobuf `Msg`
//! holding events, as a Riemann TCP client sends them).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prost::Message;

use crate::codec::riemann::{to_proto, Msg};
use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::memory::{Charge, MemoryBudget, Share};
use crate::pipeline;
use crate::warn_limited;

/// Events waiting for the writer at most; a batch beyond is dropped.
pub const MAX_PENDING: usize = 100_000;
/// Events per Riemann frame at most, so a replay reads small frames.
pub const EVENTS_PER_FRAME: usize = 1_000;
/// The writer flushes when no batch came for this long, and at least this
/// often under load, so a reader of the file (`tail -f`) sees events soon.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

static DROP_LOG: LogLimiter = LogLimiter::new(1);

/// How a recording is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Riemann TCP frames: 4-byte big-endian length + protobuf Msg.
    Riemann,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Riemann => "riemann",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(name: &str) -> Result<Format, String> {
        match name {
            "ndjson" => Ok(Format::Ndjson),
            "riemann" => Ok(Format::Riemann),
            _ => Err(format!("{name:?}: the formats are ndjson and riemann")),
        }
    }
}

/// What a finished recording wrote.
#[derive(Debug)]
pub struct Recorded {
    pub written: u64,
    /// Events the writer could not keep up with (or lost to a write error).
    pub dropped: u64,
    /// The write error that stopped the recording, if one did.
    pub error: Option<io::Error>,
}

/// A recording in progress; see the module documentation.
pub struct Recorder {
    /// Taken by [`Recorder::finish`]: later batches are not recorded.
    tx: Mutex<Option<Sender<Waiting>>>,
    shared: Arc<Shared>,
    /// Where waiting batches are charged ([`Share::Recorder`]).
    memory: Arc<MemoryBudget>,
    writer: Mutex<Option<JoinHandle<Option<io::Error>>>>,
    /// Where it writes, for messages.
    pub target: String,
}

/// A batch waiting for the writer, and the memory it holds until written.
type Waiting = (Vec<Arc<Event>>, Charge);

struct Shared {
    pending: AtomicUsize,
    written: AtomicU64,
    dropped: AtomicU64,
}

impl Recorder {
    /// Records into the file at `path` (created or truncated), or to
    /// stdout for `-`; waiting batches are charged to `memory`.
    pub fn create(
        path: &Path,
        format: Format,
        memory: Arc<MemoryBudget>,
    ) -> io::Result<Arc<Recorder>> {
        if path.as_os_str() == "-" {
            return Ok(Recorder::start(
                Box::new(io::stdout()),
                format,
                "stdout".into(),
                memory,
            ));
        }
        let file = File::create(path)?;
        Ok(Recorder::start(
            Box::new(file),
            format,
            path.display().to_string(),
            memory,
        ))
    }

    /// Records into `out`, from its own writer thread.
    pub fn start(
        out: Box<dyn Write + Send>,
        format: Format,
        target: String,
        memory: Arc<MemoryBudget>,
    ) -> Arc<Recorder> {
        // Batches, not events: the event bound is `pending`.
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            let target = target.clone();
            thread::Builder::new()
                .name("dmon-record".into())
                .spawn(move || write_all(rx, BufWriter::new(out), format, &shared, &target))
                .expect("spawn the recording thread")
        };
        Arc::new(Recorder {
            tx: Mutex::new(Some(tx)),
            shared,
            memory,
            writer: Mutex::new(Some(writer)),
            target,
        })
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops recording: what was queued is written and flushed, and the
    /// file closed. Later calls find nothing more to do.
    pub fn finish(&self) -> Recorded {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let error = writer.and_then(|w| {
            w.join()
                .unwrap_or_else(|_| Some(io::Error::other("the recording thread panicked")))
        });
        Recorded {
            written: self.written(),
            dropped: self.dropped(),
            error,
        }
    }
}

impl pipeline::Observer for Recorder {
    fn observe(&self, events: &[Arc<Event>]) {
        let n = events.len();
        if n == 0 {
            return;
        }
        let shared = &self.shared;
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        // Finished: these arrived after the recording stopped.
        let Some(tx) = tx.as_ref() else { return };
        let bytes = events.iter().map(|e| e.retained_bytes()).sum();
        let charge = match self.memory.try_charge(Share::Recorder, bytes) {
            Ok(charge) if shared.pending.fetch_add(n, Ordering::Relaxed) + n <= MAX_PENDING => {
                charge
            }
            over => {
                if over.is_ok() {
                    shared.pending.fetch_sub(n, Ordering::Relaxed);
                }
                let total = shared.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                warn_limited!(
                    DROP_LOG,
                    "recording to {}: the writer is behind; {n} events dropped ({total} in all)",
                    self.target
                );
                return;
            }
        };
        if tx.send((events.to_vec(), charge)).is_err() {
            // The writer stopped on an error, which it reported.
            shared.pending.fetch_sub(n, Ordering::Relaxed);
            shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The writer thread: writes batches until the channel closes; returns the
/// write error that stopped it, if any (what came after is counted as
/// dropped).
fn write_all(
    rx: Receiver<Waiting>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    format: Format,
    shared: &Shared,
    target: &str,
) -> Option<io::Error> {
    let mut error = None;
    let mut dirty = false;
    let mut last_flush = Instant::now();
    let mut frame = Vec::new();
    loop {
        // The charge is given back once the batch is written.
        let (batch, _held) = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => {
                if dirty && error.is_none() {
                    if let Err(e) = out.flush() {
                        tracing::error!("recording to {target} stopped: {e}");
                        error = Some(e);
                    }
                    dirty = false;
                    last_flush = Instant::now();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let n = batch.len();
        if error.is_some() {
            shared.pending.fetch_sub(n, Ordering::Relaxed);
            shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        let wrote = match format {
            Format::Ndjson => write_ndjson(&mut out, &batch),
            Format::Riemann => write_frames(&mut out, &batch, &mut frame),
        }
        .and_then(|()| {
            if last_flush.elapsed() < FLUSH_EVERY {
                dirty = true;
                return Ok(());
            }
            last_flush = Instant::now();
            dirty = false;
            out.flush()
        });
        // Pending until written: the batch is held in memory until then.
        shared.pending.fetch_sub(n, Ordering::Relaxed);
        match wrote {
            Ok(()) => {
                shared.written.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!("recording to {target} stopped: {e}");
                shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
                error = Some(e);
            }
        }
    }
    if error.is_none() {
        if let Err(e) = out.flush() {
            error = Some(e);
        }
    }
    error
}

fn write_ndjson(out: &mut impl Write, events: &[Arc<Event>]) -> io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut *out, &**e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes `events` as Riemann frames of at most [`EVENTS_PER_FRAME`].
fn write_frames(out: &mut impl Write, events: &[Arc<Event>], buf: &mut Vec<u8>) -> io::Result<()> {
    for chunk in events.chunks(EVENTS_PER_FRAME) {
        let msg = Msg {
            events: chunk.iter().map(|e| to_proto(e)).collect(),
            ..Msg::default()
        };
        buf.clear();
        buf.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
        msg.encode(buf).map_err(io::Error::other)?;
        out.write_all(buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json;
    use crate::pipeline::Observer;

    /// A `Write` whose bytes the test can read while the recorder owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn events(n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    json::decode_event(&format!(r#"{{"host":"h{i}","time":{i},"metric":1.5}}"#))
                        .unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn ndjson_lines_decode_back_to_the_events() {
        let out = Sink::default();
        let r = Recorder::start(
            Box::new(out.clone()),
            Format::Ndjson,
            "test".into(),
            Arc::default(),
        );
        let sent = events(3);
        r.observe(&sent);
        let done = r.finish();
        assert_eq!((done.written, done.dropped), (3, 0));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let back: Vec<Event> = text
            .lines()
            .map(|l| json::decode_event(l).unwrap())
            .collect();
        assert_eq!(
            back,
            sent.iter().map(|e| Event::clone(e)).collect::<Vec<_>>()
        );
        // After finish, batches are ignored, not written.
        r.observe(&events(1));
        assert_eq!(r.finish().written, 3);
    }

    #[test]
    fn riemann_frames_hold_at_most_a_frame_of_events() {
        let out = Sink::default();
        let r = Recorder::start(
            Box::new(out.clone()),
            Format::Riemann,
            "test".into(),
            Arc::default(),
        );
        r.observe(&events(EVENTS_PER_FRAME + 5));
        assert_eq!(r.finish().written, EVENTS_PER_FRAME as u64 + 5);
        let bytes = out.0.lock().unwrap().clone();
        let mut sizes = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let msg = Msg::decode(&bytes[at + 4..at + 4 + len]).unwrap();
            sizes.push(msg.events.len());
            at += 4 + len;
        }
        assert_eq!(sizes, [EVENTS_PER_FRAME, 5]);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        /// Blocks every write until the test lets it go.
        struct Gate(Arc<Mutex<()>>);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                drop(self.0.lock().unwrap());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let r = Recorder::start(
            Box::new(Gate(Arc::clone(&gate))),
            Format::Ndjson,
            "test".into(),
            Arc::default(),
        );
        let batch = events(MAX_PENDING / 2);
        r.observe(&batch);
        r.observe(&batch);
        r.observe(&batch); // no room: dropped whole
        assert_eq!(r.dropped(), batch.len() as u64);
        drop(held);
        let done = r.finish();
        assert_eq!(done.written, 2 * batch.len() as u64);
        assert_eq!(done.dropped, batch.len() as u64);
    }

    #[test]
    fn a_write_error_stops_the_recording_and_is_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::other("disk full"))
            }
        }
        let r = Recorder::start(
            Box::new(Full),
            Format::Ndjson,
            "test".into(),
            Arc::default(),
        );
        // More than BufWriter's buffer, so the write reaches the file.
        r.observe(&events(1000));
        let done = r.finish();
        assert_eq!(done.written, 0);
        assert_eq!(done.dropped, 1000);
        assert!(done.error.unwrap().to_string().contains("disk full"));
    }
}
