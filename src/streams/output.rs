//! Outputs as stream nodes: they end a branch by showing, keeping or sending
//! events.
//!
//! | function | example |
//! |---|---|
//! | `printer(prefix="")` | `printer("high average: ")` |
//! | `index()` | `index_stream = index()` |
//! | `email(*to, subject=None, sender=None)` | `email("ops@example.com")` |

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lettre::message::Mailbox;

use super::registry::Entry;
use super::value::{Args, BuildError, Value};
use super::{quote, Node, NodeCore, NodeError, NodeRef};
use crate::codec::json;
use crate::context::Context;
use crate::event::Event;
use crate::node_core;
use crate::outputs::email::{parse_mailbox, FailureHook, Mail, DEFAULT_SENDER};

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "printer",
        params: "prefix=''",
        summary: "Print `prefix` and the event as one line of JSON.",
        details: "",
        example: r#"printer("high average: ")"#,
        build: build_printer,
    },
    super::index::ENTRY,
    Entry {
        name: "email",
        params: "*to, subject=None, sender=None",
        summary: "Mail each event (or each list of events, as one mail) through the SMTP server given by --smtp.",
        details: "The subject defaults to \"host service state\" (cut to 200 characters); the body lists every field, one per line, control characters escaped. Mail is queued and sent by a worker; a failure counts as an error of this node.",
        example: r#"email("ops@example.com")"#,
        build: build_email,
    },
];

fn build_printer(mut args: Args) -> Result<NodeRef, BuildError> {
    let prefix = match args.opt("prefix") {
        None => String::new(),
        Some(Value::Str(s)) => s,
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`prefix` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    args.finish()?;
    Ok(Arc::new(Printer::new(prefix)))
}

fn build_email(mut args: Args) -> Result<NodeRef, BuildError> {
    let subject = match args.keyword("subject") {
        None | Some(Value::None) => None,
        Some(Value::Str(s)) => Some(s),
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`subject` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    let sender = match args.keyword("sender") {
        None | Some(Value::None) => None,
        Some(Value::Str(s)) => Some(s),
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`sender` must be a str, not {}",
                v.type_name()
            )))
        }
    };
    let to = args.strings("to")?;
    let email = Email::new(&to, subject, sender.as_deref()).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(Arc::new(email))
}

/// `printer(prefix="")`: writes `prefix` and the event as one JSON line.
pub struct Printer {
    prefix: String,
    core: NodeCore,
}

impl Printer {
    pub fn new(prefix: impl Into<String>) -> Self {
        Printer {
            prefix: prefix.into(),
            core: NodeCore::new(Vec::new()),
        }
    }
}

impl Node for Printer {
    node_core!("printer");

    fn describe(&self) -> String {
        format!("printer({})", quote(&self.prefix))
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Printer {
            prefix: self.prefix.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, std::slice::from_ref(event));
        }
        ctx.console
            .write_line(&format!("{}{}", self.prefix, json::encode(event)));
        Ok(())
    }
}

/// `email(*to, subject=None, sender=None)`: mails each event.
pub struct Email {
    to: Vec<Mailbox>,
    from: Mailbox,
    subject: Option<String>,
    /// A mail that fails later, on the mailer's thread, counts as an error
    /// of this node: the hook holds the counters.
    core: NodeCore,
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
            core: NodeCore::new(Vec::new()),
        })
    }

    fn send(&self, ctx: &Context, mail: Mail, events: &[Arc<Event>]) -> Result<(), NodeError> {
        if let Some(capture) = &ctx.capture {
            capture.record(self, events);
            return Ok(());
        }
        let stats = Arc::clone(&self.core.stats);
        let mail = Mail {
            on_failure: Some(FailureHook(Arc::new(move || {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }))),
            ..mail
        };
        ctx.mailer.enqueue(mail).map_err(NodeError)
    }
}

impl Node for Email {
    node_core!("email");

    fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| quote(&m.to_string())).collect();
        format!("email({})", to.join(", "))
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Email {
            to: self.to.clone(),
            from: self.from.clone(),
            subject: self.subject.clone(),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let mail = Mail::for_event(event, &self.from, &self.to, self.subject.as_deref());
        self.send(ctx, mail, std::slice::from_ref(event))
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        let mail = Mail::for_events(events, &self.from, &self.to, self.subject.as_deref());
        self.send(ctx, mail, events)
    }
}
