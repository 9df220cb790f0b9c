//! Where a server's output nodes send: the mailer, the other sinks
//! (started as nodes first need them) and the memory budget their queues
//! draw on, kept in the context ([`Context::with_outputs`]) for the output
//! nodes ([`crate::outputs`]) to find.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "mail")]
use super::email::Mailer;
use super::{SinkSnapshot, SinkStats, Sinks};
use crate::memory::MemoryBudget;
use crate::streams::context::Context;

pub struct Senders {
    #[cfg(feature = "mail")]
    pub mailer: Mailer,
    /// The sinks of `forward`, `graphite`…
    pub sinks: Sinks,
    /// What peers can make dmon hold, by bytes (`--memory-limit`): the
    /// sinks' queues draw on it, and so does everything the server holds.
    pub memory: Arc<MemoryBudget>,
}

impl Senders {
    /// Outputs sending mail through `mailer` (built without `mail`, there
    /// is no mailer and no email() to send), within the default memory
    /// budget (its limit can be changed later).
    pub fn new(#[cfg(feature = "mail")] mailer: Mailer) -> Arc<Senders> {
        let memory = Arc::<MemoryBudget>::default();
        Arc::new(Senders {
            #[cfg(feature = "mail")]
            mailer,
            sinks: Sinks::new(Arc::clone(&memory)),
            memory,
        })
    }

    /// The outputs of `ctx`, if it has a server's.
    pub fn of(ctx: &Context) -> Option<&Senders> {
        ctx.outputs()
    }

    /// The mailer's counters (none without the `mail` feature).
    pub fn mail_stats(&self) -> Option<&SinkStats> {
        #[cfg(feature = "mail")]
        return Some(self.mailer.stats());
        #[cfg(not(feature = "mail"))]
        None
    }

    /// Every sink's counters, the mailer's first.
    pub fn snapshots(&self) -> Vec<SinkSnapshot> {
        #[cfg(feature = "mail")]
        let mut all: Vec<SinkSnapshot> = self.mailer.snapshot().into_iter().collect();
        #[cfg(not(feature = "mail"))]
        let mut all = Vec::new();
        all.extend(self.sinks.snapshots());
        all
    }

    /// Stops every sink taking events and gives them all, together, up to
    /// `grace` to send what they hold; logs what was left. True when
    /// everything went.
    pub fn drain(&self, grace: Duration) -> bool {
        #[cfg(feature = "mail")]
        self.mailer.close();
        self.sinks.close();
        let deadline = Instant::now() + grace;
        #[cfg(feature = "mail")]
        let mail_left = self.mailer.finish(deadline);
        #[cfg(not(feature = "mail"))]
        let mail_left = 0;
        if mail_left > 0 {
            tracing::warn!("mail still queued after {grace:?} was not sent");
        }
        self.sinks.finish(deadline, grace) && mail_left == 0
    }
}

/// A context on the wall clock whose output nodes send through a server's
/// outputs, mail through `mailer` (none without the `mail` feature).
pub fn server_context(
    #[cfg(feature = "mail")] mailer: Mailer,
    console: Arc<dyn crate::console::LineSink>,
) -> Context {
    Context::new(console).with_outputs(Senders::new(
        #[cfg(feature = "mail")]
        mailer,
    ))
}
