//! Mail over SMTP, through lettre: the `email` sink.
//!
//! The `email` stream node only composes a [`Mail`] and queues it in the
//! server's [`Mailer`]. The sink machinery ([`super`]) sends it on its own
//! thread, trying each mail three times; a full queue drops the mail. Both
//! are logged (rate-limited) and counted, and neither ever blocks the event
//! path.
//!
//! Event fields come from any peer, so nothing a sender writes may break or
//! forge a mail: control characters are escaped (a `\r\nBcc:` in a host
//! stays inside its line), and the subject is cut to [`SUBJECT_MAX_CHARS`] (a
//! header line over RFC 5322's 998 octets makes servers refuse the mail).
//! Body lines need no cut: lettre sends a body with any line over 76
//! characters quoted-printable or base64, whose lines are short, and the
//! SMTP transport dot-stuffs the data.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};

use super::{Failure, Policy, Refused, Retry, Sink, SinkHandle, SinkSnapshot, SinkStats};
use crate::event::{push_escaped, Event};

/// Mails waiting for the SMTP worker; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;
/// Delays before the second and third attempt of one mail.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
const SMTP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SENDER: &str = "dmon@localhost";
/// The longest subject sent, in characters, its ellipsis included: well
/// inside one header line however lettre encodes it, and more than a mail
/// client shows.
pub const SUBJECT_MAX_CHARS: usize = 200;
const ELLIPSIS: char = '…';

/// A composed mail, ready for the worker.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub subject: String,
    pub body: String,
    /// Called when the mail finally fails, so its sender (the `email` node)
    /// can count the error where the user looks for it.
    pub on_failure: Option<FailureHook>,
}

/// A callback for a mail that could not be sent.
#[derive(Clone)]
pub struct FailureHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for FailureHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureHook")
    }
}

impl Mail {
    /// Riemann's mailer style: the subject summarises host, service and state;
    /// the body lists every field of the event.
    pub fn for_event(event: &Event, from: &Mailbox, to: &[Mailbox], subject: Option<&str>) -> Mail {
        Mail {
            from: from.clone(),
            to: to.to_vec(),
            subject: subject_line(&subject.map_or_else(|| event.summary(), str::to_owned)),
            body: describe_fields(event),
            on_failure: None,
        }
    }

    /// One mail for a list of events (from `rollup`, a window): the subject
    /// summarises the first and counts the rest; the body lists each.
    pub fn for_events(
        events: &[std::sync::Arc<Event>],
        from: &Mailbox,
        to: &[Mailbox],
        subject: Option<&str>,
    ) -> Mail {
        let first = events.first().map(|e| e.summary()).unwrap_or_default();
        let default_subject = match events.len() {
            0 | 1 => first,
            n => {
                // The count survives a long first summary.
                let more = format!(" and {} more", n - 1);
                let room = SUBJECT_MAX_CHARS - more.chars().count();
                format!("{}{more}", subject_line_within(&first, room))
            }
        };
        Mail {
            from: from.clone(),
            to: to.to_vec(),
            subject: subject_line(subject.unwrap_or(&default_subject)),
            body: events
                .iter()
                .map(|e| describe_fields(e))
                .collect::<Vec<_>>()
                .join("\n"),
            on_failure: None,
        }
    }
}

/// `text` made fit for a Subject header: control characters escaped, and
/// cut to [`SUBJECT_MAX_CHARS`] characters ending in an ellipsis if longer.
/// Applying it twice changes nothing.
pub fn subject_line(text: &str) -> String {
    subject_line_within(text, SUBJECT_MAX_CHARS)
}

fn subject_line_within(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    push_escaped(&mut out, text);
    if let Some((cut, _)) = out.char_indices().nth(max_chars) {
        // Room for the ellipsis: the result has exactly `max_chars`.
        let keep = out[..cut].char_indices().last().map_or(0, |(i, _)| i);
        out.truncate(keep);
        out.push(ELLIPSIS);
    }
    out
}

/// One line per present field: `name: value`. Strings from the event have
/// their control characters escaped, so a field is always one line and
/// cannot pass for another field.
pub fn describe_fields(e: &Event) -> String {
    let mut out = String::new();
    let line = |out: &mut String, name: &str, value: &str| {
        push_escaped(out, name);
        out.push_str(": ");
        push_escaped(out, value);
        out.push('\n');
    };
    let strings = [
        ("host", &e.host),
        ("service", &e.service),
        ("state", &e.state),
        ("description", &e.description),
    ];
    for (name, v) in strings {
        if let Some(v) = v {
            line(&mut out, name, v);
        }
    }
    if let Some(t) = e.time {
        let _ = writeln!(out, "time: {t}");
    }
    if let Some(t) = e.ttl {
        let _ = writeln!(out, "ttl: {t}");
    }
    if let Some(m) = e.metric {
        let _ = writeln!(out, "metric: {m}");
    }
    if !e.tags.is_empty() {
        let tags: Vec<&str> = e.tags.iter().map(|t| &**t).collect();
        line(&mut out, "tags", &tags.join(", "));
    }
    for (k, v) in &e.attributes {
        line(&mut out, k, v);
    }
    out
}

/// Parses `"ops@example.com"` or `"Ops <ops@example.com>"`.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("invalid mail address {text:?}: {e}"))
}

/// Where to send mail: an SMTP relay, plain SMTP (no TLS), as a local relay is.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for SmtpServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT, got {s:?}"))?;
        let port = port.parse().map_err(|_| format!("invalid port in {s:?}"))?;
        Ok(SmtpServer {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
        })
    }
}

/// One mail per batch, three attempts: a mail is an alert someone reads,
/// so a lost one is reported as such rather than retried for ever.
const POLICY: Policy = Policy {
    capacity: QUEUE_CAPACITY,
    batch: 1,
    linger: Duration::ZERO,
    retry: Retry::After(&RETRY_DELAYS),
};

/// SMTP through lettre, as a [`Sink`].
struct EmailSink {
    server: SmtpServer,
}

impl Sink for EmailSink {
    type Item = Mail;
    type Conn = SmtpTransport;

    fn kind(&self) -> &'static str {
        "email"
    }
    fn target(&self) -> String {
        super::target(&self.server.host, self.server.port)
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<SmtpTransport, Failure> {
        // lettre connects on each send.
        Ok(SmtpTransport::builder_dangerous(self.server.host.clone())
            .port(self.server.port)
            .timeout(Some(SMTP_TIMEOUT))
            .build())
    }
    fn send(&mut self, transport: &mut SmtpTransport, batch: &[Mail]) -> Result<(), Failure> {
        for mail in batch {
            let message = build_message(mail).map_err(Failure::fatal)?;
            transport.send(&message).map_err(Failure::retry)?;
        }
        Ok(())
    }
    fn gave_up(&mut self, mails: &[Mail]) {
        for hook in mails.iter().filter_map(|m| m.on_failure.as_ref()) {
            (hook.0)();
        }
    }
    fn give_up_message(&self, mails: &[Mail], attempts: u32, failure: &Failure) -> String {
        let subject = mails.first().map(|m| m.subject.as_str()).unwrap_or("");
        let e = &failure.message;
        if failure.retryable {
            format!(
                "email: sending {subject:?} via SMTP {}:{} failed after {attempts} attempts: {e}",
                self.server.host, self.server.port,
            )
        } else {
            format!("email: cannot build mail {subject:?}: {e}")
        }
    }
}

/// The mail sink of a server: `email()` nodes queue mail here.
pub struct Mailer {
    handle: SinkHandle<Mail>,
    started: bool,
}

impl Mailer {
    /// Starts the worker thread. Nothing connects until the first mail.
    pub fn start(server: SmtpServer) -> Mailer {
        Mailer {
            handle: SinkHandle::start(EmailSink { server }),
            started: true,
        }
    }

    /// A mailer that sends nothing (a rehearsal's: its `email()` nodes are
    /// captured before they reach it).
    pub fn disabled() -> Mailer {
        Mailer {
            handle: SinkHandle::disabled("email", POLICY),
            started: false,
        }
    }

    /// Queues a mail without waiting. A full queue or a stopped mailer drops
    /// it, counted, and says why.
    pub fn enqueue(&self, mail: Mail) -> Result<(), String> {
        self.handle.offer(mail).map_err(|why| match why {
            Refused::Full => format!("mail queue full ({QUEUE_CAPACITY} waiting); mail dropped"),
            Refused::Closed => "mailer is shut down; mail dropped".to_owned(),
        })
    }

    /// `queued` (accepted), `sent`, `failed` (given up), `dropped` (queue
    /// full or shut down), …
    pub fn stats(&self) -> &SinkStats {
        self.handle.stats()
    }

    /// The counters with the sink's name; `None` for a disabled mailer.
    pub fn snapshot(&self) -> Option<SinkSnapshot> {
        self.started.then(|| self.handle.snapshot())
    }

    /// Stops taking mail; see [`Mailer::finish`].
    pub fn close(&self) {
        self.handle.close();
    }

    /// After [`Mailer::close`]: waits until `deadline` for the queue to
    /// drain; returns the mails still unsent then.
    pub fn finish(&self, deadline: Instant) -> u64 {
        self.handle.finish(deadline)
    }

    /// Stops taking mail and waits up to `grace` for the queue to drain.
    /// Returns false when mails were still pending at the deadline.
    pub fn shutdown(&self, grace: Duration) -> bool {
        self.handle.shutdown(grace)
    }
}

fn build_message(mail: &Mail) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(mail.from.clone())
        // Again here: a `Mail` may be built by hand, not through `for_event`.
        .subject(subject_line(&mail.subject))
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        builder = builder.to(to.clone());
    }
    builder.body(mail.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn subject_and_body_describe_the_event() {
        let e = Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            state: Some("warning".into()),
            metric: Some(Number::Float(2.5)),
            tags: vec!["prod".into()],
            ..Event::default()
        };
        let from = parse_mailbox(DEFAULT_SENDER).unwrap();
        let to = [parse_mailbox("ops@example.com").unwrap()];
        let mail = Mail::for_event(&e, &from, &to, None);
        assert_eq!(mail.subject, "web1 cpu warning");
        assert!(mail.body.contains("metric: 2.5\n"));
        assert!(mail.body.contains("tags: prod\n"));
        assert!(build_message(&mail).is_ok());
    }

    #[test]
    fn subjects_are_cut_and_escaped_once() {
        assert_eq!(subject_line("web1 cpu ok"), "web1 cpu ok");
        let exact = "a".repeat(SUBJECT_MAX_CHARS);
        assert_eq!(subject_line(&exact), exact, "a subject that fits is kept");
        let cut = subject_line(&"é".repeat(5000));
        assert_eq!(cut, format!("{}…", "é".repeat(SUBJECT_MAX_CHARS - 1)));
        assert_eq!(subject_line(&cut), cut, "idempotent");
        let escaped = subject_line("a\r\nBcc: x@evil");
        assert_eq!(escaped, "a\\r\\nBcc: x@evil");
        assert_eq!(subject_line(&escaped), escaped, "idempotent");

        let events: Vec<Arc<Event>> = (0..3)
            .map(|_| {
                Arc::new(Event {
                    host: Some("h".repeat(1000).into()),
                    ..Event::default()
                })
            })
            .collect();
        let from = parse_mailbox(DEFAULT_SENDER).unwrap();
        let mail = Mail::for_events(&events, &from, &[], None);
        assert_eq!(mail.subject.chars().count(), SUBJECT_MAX_CHARS);
        assert!(mail.subject.ends_with("h… and 2 more"), "{}", mail.subject);
    }

    /// What goes on the wire: no line over RFC 5322's 998 octets, whatever
    /// the fields hold, and no header a field could have added.
    #[test]
    fn long_and_hostile_fields_make_a_well_formed_message() {
        let e = Event {
            host: Some(format!("{}\r\nBcc: x@evil", "h".repeat(5000)).into()),
            service: Some("é".repeat(3000).into()),
            description: Some(format!("{}\n.\n", "x".repeat(3000)).into()),
            attributes: [("k\r\nTo: y@evil".to_owned(), "v".repeat(2000))].into(),
            ..Event::default()
        };
        let from = parse_mailbox(DEFAULT_SENDER).unwrap();
        let to = [parse_mailbox("ops@example.com").unwrap()];
        let mail = Mail::for_event(&e, &from, &to, None);
        assert_eq!(
            mail.body.lines().count(),
            4,
            "one line per field:\n{}",
            mail.body
        );
        let raw = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        for line in raw.split("\r\n") {
            assert!(line.len() <= 998, "a line of {} octets", line.len());
            assert_ne!(line, ".", "a bare dot line");
        }
        let headers: Vec<&str> = raw.split("\r\n").take_while(|l| !l.is_empty()).collect();
        assert!(!headers
            .iter()
            .any(|h| h.starts_with("Bcc") || h.starts_with("To: y")));
    }

    #[test]
    fn bad_addresses_and_servers_are_rejected() {
        assert!(parse_mailbox("not an address").is_err());
        assert!("localhost".parse::<SmtpServer>().is_err());
        assert_eq!("localhost:25".parse::<SmtpServer>().unwrap().port, 25);
    }

    #[test]
    fn a_down_server_counts_failures_without_blocking() {
        // Port 1 on loopback refuses connections.
        let mailer = Mailer::start("127.0.0.1:1".parse().unwrap());
        let from = parse_mailbox(DEFAULT_SENDER).unwrap();
        let mail = Mail::for_event(
            &Event::default(),
            &from,
            std::slice::from_ref(&from),
            Some("x"),
        );
        let hook_calls = Arc::new(AtomicU64::new(0));
        let calls = Arc::clone(&hook_calls);
        let mail = Mail {
            on_failure: Some(FailureHook(Arc::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
            }))),
            ..mail
        };
        mailer.enqueue(mail).unwrap();
        assert!(mailer.shutdown(Duration::from_secs(10)));
        assert_eq!(mailer.stats().failed.load(Ordering::Relaxed), 1);
        assert_eq!(hook_calls.load(Ordering::Relaxed), 1, "the sender is told");
        assert!(mailer
            .enqueue(Mail::for_event(&Event::default(), &from, &[], None))
            .is_err());
        assert_eq!(mailer.stats().dropped.load(Ordering::Relaxed), 1);
    }
}
