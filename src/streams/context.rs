//! The services stream nodes reach while they handle an event: the clock,
//! the index, the mailer and the other sinks, and the console. One context per running server,
//! and one per rehearsal (replays, `dmon.testing`, `try_stream`), whose
//! clock is virtual and whose outputs are captured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::timers::{Schedule, Timers};
use crate::clock::{Clock, WallClock};
use crate::console::LineSink;
use crate::index::Index;
use crate::memory::MemoryBudget;
use crate::sinks::email::Mailer;
use crate::sinks::{SinkSnapshot, Sinks};
use crate::streams::capture::Capture;

pub struct Context {
    /// What "now" is for time-driven nodes: the wall clock in a server, a
    /// virtual clock in tests and replays.
    pub clock: Arc<dyn Clock>,
    /// The wake-ups time-driven nodes asked for.
    pub timers: Timers,
    pub index: Index,
    pub mailer: Mailer,
    /// The sinks of `forward`, `graphite`…, started as nodes first need them.
    pub sinks: Sinks,
    pub console: Arc<dyn LineSink>,
    /// In a rehearsal: where output nodes report what reached them (and
    /// `email()` sends nothing).
    pub capture: Option<Arc<Capture>>,
    /// What peers can make dmon hold, by bytes (`--memory-limit`): the
    /// sinks' queues draw on it, and so does everything the server holds.
    pub memory: Arc<MemoryBudget>,
}

impl Context {
    pub fn new(mailer: Mailer, console: Arc<dyn LineSink>) -> Self {
        Self::with_clock(Arc::new(WallClock), mailer, console)
    }

    pub fn with_clock(clock: Arc<dyn Clock>, mailer: Mailer, console: Arc<dyn LineSink>) -> Self {
        let memory = Arc::<MemoryBudget>::default();
        Context {
            clock,
            timers: Timers::default(),
            index: Index::new(),
            mailer,
            sinks: Sinks::new(Arc::clone(&memory)),
            console,
            capture: None,
            memory,
        }
    }

    /// A rehearsal's context: virtual time, its own index, outputs
    /// captured, no mail sent.
    pub fn rehearsal(
        clock: Arc<dyn Clock>,
        console: Arc<dyn LineSink>,
        capture: Arc<Capture>,
    ) -> Self {
        Context {
            capture: Some(capture),
            sinks: Sinks::disabled(),
            ..Self::with_clock(clock, Mailer::disabled(), console)
        }
    }

    /// Every sink's counters, the mailer's first.
    pub fn sink_snapshots(&self) -> Vec<SinkSnapshot> {
        let mut all: Vec<SinkSnapshot> = self.mailer.snapshot().into_iter().collect();
        all.extend(self.sinks.snapshots());
        all
    }

    /// Stops every sink taking events and gives them all, together, up to
    /// `grace` to send what they hold; logs what was left. True when
    /// everything went.
    pub fn drain_sinks(&self, grace: Duration) -> bool {
        self.mailer.close();
        self.sinks.close();
        let deadline = Instant::now() + grace;
        let mail_left = self.mailer.finish(deadline);
        if mail_left > 0 {
            tracing::warn!("mail still queued after {grace:?} was not sent");
        }
        self.sinks.finish(deadline, grace) && mail_left == 0
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
