//! Where user-visible lines (the printer's output) go. The engine knows no
//! screen: the command that runs it picks the sink (stdout for `serve`, a
//! prompt-aware printer for the shell).

use std::io::Write;

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
