//! The services stream nodes reach while they handle an event: the clock,
//! the index, the mailer, and the console. One context per running server,
//! and one per rehearsal (replays, `dmon.testing`, `try_stream`), whose
//! clock is virtual and whose outputs are captured.

use std::sync::Arc;

use crate::clock::{Clock, WallClock};
use crate::console::LineSink;
use crate::index::Index;
use crate::outputs::capture::Capture;
use crate::outputs::email::Mailer;

pub struct Context {
    /// What "now" is for time-driven nodes: the wall clock in a server, a
    /// virtual clock in tests and replays.
    pub clock: Arc<dyn Clock>,
    pub index: Index,
    pub mailer: Mailer,
    pub console: Arc<dyn LineSink>,
    /// In a rehearsal: where output nodes report what reached them (and
    /// `email()` sends nothing).
    pub capture: Option<Arc<Capture>>,
}

impl Context {
    pub fn new(mailer: Mailer, console: Arc<dyn LineSink>) -> Self {
        Self::with_clock(Arc::new(WallClock), mailer, console)
    }

    pub fn with_clock(clock: Arc<dyn Clock>, mailer: Mailer, console: Arc<dyn LineSink>) -> Self {
        Context {
            clock,
            index: Index::new(),
            mailer,
            console,
            capture: None,
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
            ..Self::with_clock(clock, Mailer::disabled(), console)
        }
    }

    /// The clock's time.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }
}
