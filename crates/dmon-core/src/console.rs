//! Where user-visible lines (the printer's output) go. The engine knows no
//! screen: the command that runs it picks the sink (stdout for `serve`, a
//! prompt-aware printer for the shell).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

pub trait LineSink: Send + Sync {
    fn write_line(&self, line: &str);
}

/// Writes each line to stdout and flushes, so pipes see lines as they happen.
pub struct Stdout;

impl LineSink for Stdout {
    fn write_line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the server down.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

/// Most lines held while the terminal is lent out; past it the oldest go,
/// and a line says how many.
pub const HELD_LINES_MAX: usize = 10_000;

/// A sink the shell can hold while a full-screen program (the help pager,
/// an editor) has the terminal: lines written meanwhile would land on that
/// program's screen and vanish with it, so they wait and are written when
/// the terminal comes back.
pub struct Holdable {
    inner: Arc<dyn LineSink>,
    held: Mutex<Option<Held>>,
}

#[derive(Default)]
struct Held {
    lines: VecDeque<String>,
    dropped: u64,
}

impl Holdable {
    pub fn new(inner: Arc<dyn LineSink>) -> Self {
        Holdable {
            inner,
            held: Mutex::new(None),
        }
    }

    /// From now on, lines wait.
    pub fn hold(&self) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Held::default);
    }

    /// Writes the lines that waited, in order, and stops holding.
    pub fn release(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(held) = held else { return };
        if held.dropped > 0 {
            self.inner.write_line(&format!(
                "({} earlier lines were dropped while the terminal was in use)",
                held.dropped
            ));
        }
        for line in held.lines {
            self.inner.write_line(&line);
        }
    }
}

impl LineSink for Holdable {
    fn write_line(&self, line: &str) {
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = held.as_mut() {
                if held.lines.len() == HELD_LINES_MAX {
                    held.lines.pop_front();
                    held.dropped += 1;
                }
                held.lines.push_back(line.to_owned());
                return;
            }
        }
        self.inner.write_line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<String>>);
    impl LineSink for Collect {
        fn write_line(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_owned());
        }
    }

    #[test]
    fn held_lines_wait_and_come_out_in_order() {
        let out = Arc::new(Collect(Mutex::default()));
        let sink = Holdable::new(out.clone());
        sink.write_line("before");
        sink.hold();
        sink.write_line("during 1");
        sink.write_line("during 2");
        assert_eq!(*out.0.lock().unwrap(), ["before"]);
        sink.release();
        sink.write_line("after");
        assert_eq!(
            *out.0.lock().unwrap(),
            ["before", "during 1", "during 2", "after"]
        );
    }

    #[test]
    fn holding_keeps_the_newest_lines_and_counts_the_rest() {
        let out = Arc::new(Collect(Mutex::default()));
        let sink = Holdable::new(out.clone());
        sink.hold();
        for i in 0..HELD_LINES_MAX + 5 {
            sink.write_line(&i.to_string());
        }
        sink.release();
        let lines = out.0.lock().unwrap();
        assert_eq!(lines.len(), HELD_LINES_MAX + 1);
        assert!(
            lines[0].starts_with("(5 earlier lines were dropped"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "5");
    }
}
