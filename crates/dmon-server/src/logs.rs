//! Where log records go: to stderr (`serve`, the other commands), or, in
//! the shell, above the prompt in a short one-line form through the same
//! [`LineSink`] as printer output. The most recent records are kept in a
//! bounded ring (the shell's `logs()`), and the level can be changed while
//! dmon runs (the shell's `log_level()`).

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, reload, EnvFilter, Layer, Registry};

use crate::console::LineSink;

/// How many records `recent` can return.
pub const RING_CAPACITY: usize = 1000;

/// One log record as kept in the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub level: Level,
    /// Unix seconds.
    pub time: f64,
    /// The whole message, tracebacks included.
    pub message: String,
}

impl LogRecord {
    /// The short form the shell shows: level (in colour), the message's
    /// first line, and a pointer to the rest.
    pub fn short(&self, color: bool) -> String {
        let level = self.level.as_str();
        let level = if color {
            let code = match self.level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                _ => "2",
            };
            format!("\x1b[{code}m{level}\x1b[0m")
        } else {
            level.to_owned()
        };
        let mut lines = self.message.lines();
        let first = lines.next().unwrap_or("");
        let rest = lines.count();
        if rest == 0 {
            format!("{level} {first}")
        } else {
            format!("{level} {first} (+{rest} lines: logs())")
        }
    }
}

/// The logging set-up of this process: ring, console and level.
struct Logs {
    ring: Mutex<VecDeque<LogRecord>>,
    console: RwLock<Option<(Arc<dyn LineSink>, bool)>>,
    /// Set while records go to the console rather than to stderr.
    on_console: AtomicBool,
    level: reload::Handle<EnvFilter, Registry>,
}

static LOGS: OnceLock<Logs> = OnceLock::new();

/// Installs the process's logger: records that pass `filter` (an
/// `EnvFilter` directive such as "info") go to stderr and to the ring.
/// Later calls do nothing.
pub fn init(filter: &str) {
    if LOGS.get().is_some() {
        return;
    }
    let (level_layer, level) = reload::Layer::new(EnvFilter::new(filter));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_filter(filter::filter_fn(|_| !on_console()));
    if LOGS
        .set(Logs {
            ring: Mutex::new(VecDeque::with_capacity(64)),
            console: RwLock::new(None),
            on_console: AtomicBool::new(false),
            level,
        })
        .is_ok()
    {
        // A second global subscriber (tests in one process) is refused; ours
        // stays in charge then.
        let _ = tracing_subscriber::registry()
            .with(level_layer)
            .with(stderr)
            .with(RingLayer)
            .try_init();
    }
}

fn on_console() -> bool {
    LOGS.get()
        .is_some_and(|l| l.on_console.load(Ordering::Relaxed))
}

/// From now on, records are written to `sink` in the short form instead of
/// to stderr (the shell: above the prompt).
pub fn to_console(sink: Arc<dyn LineSink>, color: bool) {
    if let Some(logs) = LOGS.get() {
        *logs.console.write().unwrap_or_else(|p| p.into_inner()) = Some((sink, color));
        logs.on_console.store(true, Ordering::Relaxed);
    }
}

/// Records go to stderr again (the shell has closed its prompt).
pub fn to_stderr() {
    if let Some(logs) = LOGS.get() {
        logs.on_console.store(false, Ordering::Relaxed);
        logs.console
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// The last `n` records, oldest first.
pub fn recent(n: usize) -> Vec<LogRecord> {
    let Some(logs) = LOGS.get() else {
        return Vec::new();
    };
    let ring = logs.ring.lock().unwrap_or_else(|p| p.into_inner());
    ring.iter()
        .skip(ring.len().saturating_sub(n))
        .cloned()
        .collect()
}

/// The levels `set_level` takes, most to least verbose.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Changes which records pass from now on.
pub fn set_level(level: &str) -> Result<(), String> {
    let level = level.trim().to_ascii_lowercase();
    let level = if level == "warning" {
        "warn".into()
    } else {
        level
    };
    if !LEVELS.contains(&level.as_str()) {
        return Err(format!(
            "unknown log level {level:?}; use one of {}",
            LEVELS.join(", ")
        ));
    }
    let logs = LOGS.get().ok_or("logging is not set up")?;
    logs.level
        .reload(EnvFilter::new(&level))
        .map_err(|e| e.to_string())
}

/// Keeps every record that passed the level in the ring, and shows it on
/// the console when one is set.
struct RingLayer;

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &TracingEvent<'_>, _: LayerContext<'_, S>) {
        let Some(logs) = LOGS.get() else { return };
        let mut message = MessageText::default();
        event.record(&mut message);
        let record = LogRecord {
            level: *event.metadata().level(),
            time: crate::event::now_secs(),
            message: message.0,
        };
        if logs.on_console.load(Ordering::Relaxed) {
            let console = logs.console.read().unwrap_or_else(|p| p.into_inner());
            if let Some((sink, color)) = console.as_ref() {
                sink.write_line(&record.short(*color));
            }
        }
        let mut ring = logs.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(record);
    }
}

/// The `message` field, then any other fields as ` key=value`.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(level: Level, message: &str) -> LogRecord {
        LogRecord {
            level,
            time: 0.0,
            message: message.into(),
        }
    }

    #[test]
    fn short_form_is_one_line_with_the_level() {
        assert_eq!(
            record(Level::WARN, "mail failed").short(false),
            "WARN mail failed"
        );
        assert_eq!(
            record(Level::WARN, "node failed\nTraceback\n  line").short(false),
            "WARN node failed (+2 lines: logs())"
        );
        assert_eq!(
            record(Level::ERROR, "x").short(true),
            "\x1b[31mERROR\x1b[0m x"
        );
    }

    #[test]
    fn unknown_levels_are_refused_by_name() {
        let err = set_level("loud").unwrap_err();
        assert!(err.starts_with("unknown log level \"loud\""), "{err}");
    }
}
