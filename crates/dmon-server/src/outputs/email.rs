//! `email(*to, subject=None, sender=None)`: mails each event, or each list
//! of events as one mail, through the server's mailer (`--smtp`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lettre::message::Mailbox;

use crate::event::Event;
use crate::node_core;
use crate::sinks::email::{parse_mailbox, FailureHook, Mail, DEFAULT_SENDER};
use crate::sinks::senders::Senders;
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError, Value};
use crate::streams::{quote, Node, NodeCore, NodeError, NodeRef};

pub const ENTRY: Entry = Entry {
    name: "email",
    params: "*to, subject=None, sender=None",
    summary: "Mail each event (or each list of events, as one mail) through the SMTP server given by --smtp.",
    details: "The subject defaults to \"host service state\" (cut to 200 characters); the body lists every field, one per line, control characters escaped. Mail is queued and sent by a worker; a failure counts as an error of this node.",
    example: r#"email("ops@example.com")"#,
    build: build_email,
};

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
        let outputs = Senders::of(ctx)
            .ok_or_else(|| NodeError("no mail is sent from here: there is no mailer".into()))?;
        outputs.mailer.enqueue(mail).map_err(NodeError)
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
        let events: Vec<Arc<Event>> = crate::streams::present(events).cloned().collect();
        if events.is_empty() {
            return Ok(());
        }
        let mail = Mail::for_events(&events, &self.from, &self.to, self.subject.as_deref());
        self.send(ctx, mail, &events)
    }
}
