//! The services stream nodes reach while they handle an event: the clock,
//! the index, the console, and where output nodes send (the server's
//! mailer and sinks, which this crate does not know). One context per running server,
//! and one per rehearsal (replays, `dmon.testing`, `try_stream`), whose
//! clock is virtual and whose outputs are captured.

use std::any::Any;
use std::sync::Arc;

use super::timers::{Schedule, Timers};
use crate::clock::{Clock, WallClock};
use crate::console::LineSink;
use crate::index::Index;
use crate::streams::capture::Capture;

pub struct Context {
    /// What "now" is for time-driven nodes: the wall clock in a server, a
    /// virtual clock in tests and replays.
    pub clock: Arc<dyn Clock>,
    /// The wake-ups time-driven nodes asked for.
    pub timers: Timers,
    pub index: Index,
    pub console: Arc<dyn LineSink>,
    /// In a rehearsal: where output nodes report what reached them (and
    /// `email()` sends nothing).
    pub capture: Option<Arc<Capture>>,
    /// Where output nodes send (the server's mailer and sinks), owned by
    /// the crate that defines them and found by its type
    /// ([`Context::outputs`]); none in rehearsals and bare harnesses.
    outputs: Option<Arc<dyn Any + Send + Sync>>,
}

impl Context {
    /// A context on the wall clock.
    pub fn new(console: Arc<dyn LineSink>) -> Self {
        Self::with_clock(Arc::new(WallClock), console)
    }

    pub fn with_clock(clock: Arc<dyn Clock>, console: Arc<dyn LineSink>) -> Self {
        Context {
            clock,
            timers: Timers::default(),
            index: Index::new(),
            console,
            capture: None,
            outputs: None,
        }
    }

    /// A rehearsal's context: virtual time, its own index, outputs
    /// captured, nothing sent.
    pub fn rehearsal(
        clock: Arc<dyn Clock>,
        console: Arc<dyn LineSink>,
        capture: Arc<Capture>,
    ) -> Self {
        Context {
            capture: Some(capture),
            ..Self::with_clock(clock, console)
        }
    }

    /// With `outputs` as where output nodes send.
    pub fn with_outputs(mut self, outputs: Arc<dyn Any + Send + Sync>) -> Self {
        self.outputs = Some(outputs);
        self
    }

    /// Where output nodes send, if it is a `T`.
    pub fn outputs<T: Any>(&self) -> Option<&T> {
        self.outputs.as_deref()?.downcast_ref()
    }

    /// Wakes the nodes due at `now` ([`Timers::run_due`]); returns how
    /// many were woken.
    pub fn run_due_wakeups(&self, now: f64) -> usize {
        self.timers.run_due(now, |node| node.wake(self, now))
    }

    /// The clock's time.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }
}

/// Nodes' wake-ups alone (the in-process harness: no index expiry).
impl Schedule for Context {
    fn next_due(&self) -> Option<f64> {
        self.timers.next_due()
    }
    fn run_due(&self, now: f64) {
        self.run_due_wakeups(now);
    }
}
