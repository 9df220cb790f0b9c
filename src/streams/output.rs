//! Outputs as stream nodes: they end a branch by showing or sending events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lettre::message::Mailbox;

use super::{quote, Node, NodeError, NodeStats};
use crate::codec::json;
use crate::context::Context;
use crate::event::Event;
use crate::outputs::email::{parse_mailbox, FailureHook, Mail, DEFAULT_SENDER};

/// `printer(prefix="")`: writes `prefix` and the event as one JSON line.
///
/// ```python
/// printer("high average: ")
/// ```
pub struct Printer {
    prefix: String,
    stats: NodeStats,
}

impl Printer {
    pub fn new(prefix: impl Into<String>) -> Self {
        Printer {
            prefix: prefix.into(),
            stats: NodeStats::default(),
        }
    }
}

impl Node for Printer {
    fn kind(&self) -> &'static str {
        "printer"
    }
    fn describe(&self) -> String {
        format!("printer({})", quote(&self.prefix))
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        ctx.console
            .write_line(&format!("{}{}", self.prefix, json::encode(event)));
        Ok(())
    }
}

/// `email(*to, subject=None, sender=None)`: mails each event. The subject
/// defaults to "host service state"; the body lists every field.
///
/// ```python
/// email("ops@example.com")
/// ```
pub struct Email {
    to: Vec<Mailbox>,
    from: Mailbox,
    subject: Option<String>,
    /// Shared with the mails in flight: a mail that fails later, on the
    /// mailer's thread, counts as an error of this node.
    stats: Arc<NodeStats>,
}

impl Email {
    /// Fails on an address that is not one, so mistakes surface at start-up.
    pub fn new(
        to: &[String],
        subject: Option<String>,
        sender: Option<&str>,
    ) -> Result<Self, String> {
        if to.is_empty() {
            return Err("email() needs at least one recipient".into());
        }
        Ok(Email {
            to: to
                .iter()
                .map(|a| parse_mailbox(a))
                .collect::<Result<_, _>>()?,
            from: parse_mailbox(sender.unwrap_or(DEFAULT_SENDER))?,
            subject,
            stats: Arc::default(),
        })
    }
}

impl Node for Email {
    fn kind(&self) -> &'static str {
        "email"
    }
    fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| quote(&m.to_string())).collect();
        format!("email({})", to.join(", "))
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let stats = Arc::clone(&self.stats);
        let mail = Mail {
            on_failure: Some(FailureHook(Arc::new(move || {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }))),
            ..Mail::for_event(event, &self.from, &self.to, self.subject.as_deref())
        };
        ctx.mailer.enqueue(mail).map_err(NodeError)
    }
}
