//! Mail over SMTP, through lettre, on a worker thread fed by a bounded queue.
//!
//! The `email` stream node only composes a [`Mail`] and queues it. The worker
//! retries a failed send a few times; a full queue drops the mail. Both are
//! logged (rate-limited) and counted, and neither ever blocks the event path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};

use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::warn_limited;

/// Mails waiting for the SMTP worker; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;
/// Delays before the second and third attempt of one mail.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
const SMTP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SENDER: &str = "dmon@localhost";

static FAILURE_LOG: LogLimiter = LogLimiter::new(5);

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
            subject: subject.map_or_else(|| event.summary(), str::to_owned),
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
            n => format!("{first} and {} more", n - 1),
        };
        Mail {
            from: from.clone(),
            to: to.to_vec(),
            subject: subject.map_or(default_subject, str::to_owned),
            body: events
                .iter()
                .map(|e| describe_fields(e))
                .collect::<Vec<_>>()
                .join("\n"),
            on_failure: None,
        }
    }
}

/// One line per present field: `name: value`.
pub fn describe_fields(e: &Event) -> String {
    let mut out = String::new();
    let strings = [
        ("host", &e.host),
        ("service", &e.service),
        ("state", &e.state),
        ("description", &e.description),
    ];
    for (name, v) in strings {
        if let Some(v) = v {
            let _ = writeln!(out, "{name}: {v}");
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
        let _ = writeln!(out, "tags: {}", tags.join(", "));
    }
    for (k, v) in &e.attributes {
        let _ = writeln!(out, "{k}: {v}");
    }
    out
}

/// Parses `"ops@example.com"` or `"Ops <ops@example.com>"`.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("invalid mail address {text:?}: {e}"))
}

#[derive(Default, Debug)]
pub struct MailerStats {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
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

pub struct Mailer {
    queue: Mutex<Option<mpsc::SyncSender<Mail>>>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    stats: Arc<MailerStats>,
}

impl Mailer {
    /// Starts the worker thread. Nothing connects until the first mail.
    pub fn start(server: SmtpServer) -> Mailer {
        let (tx, rx) = mpsc::sync_channel::<Mail>(QUEUE_CAPACITY);
        let (done_tx, done_rx) = mpsc::channel();
        let stats = Arc::new(MailerStats::default());
        let worker_stats = Arc::clone(&stats);
        thread::Builder::new()
            .name("dmon-mailer".into())
            .spawn(move || {
                let transport = SmtpTransport::builder_dangerous(server.host.clone())
                    .port(server.port)
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                for mail in rx {
                    deliver(&transport, &server, &mail, &worker_stats);
                }
                let _ = done_tx.send(());
            })
            .expect("spawn mailer thread");
        Mailer {
            queue: Mutex::new(Some(tx)),
            done: Mutex::new(Some(done_rx)),
            stats,
        }
    }

    /// Queues a mail without waiting. A full queue or a stopped mailer drops
    /// it, counted, and says why.
    pub fn enqueue(&self, mail: Mail) -> Result<(), String> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let result = match queue.as_ref() {
            None => Err("mailer is shut down; mail dropped".to_owned()),
            Some(tx) => tx.try_send(mail).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => {
                    format!("mail queue full ({QUEUE_CAPACITY} waiting); mail dropped")
                }
                mpsc::TrySendError::Disconnected(_) => "mailer stopped; mail dropped".to_owned(),
            }),
        };
        match &result {
            Ok(()) => self.stats.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    pub fn stats(&self) -> &MailerStats {
        &self.stats
    }

    /// Stops taking mail and waits up to `grace` for the queue to drain.
    /// Returns false when mails were still pending at the deadline.
    pub fn shutdown(&self, grace: Duration) -> bool {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        match self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(done) => done.recv_timeout(grace).is_ok(),
            None => true,
        }
    }
}

fn deliver(transport: &SmtpTransport, server: &SmtpServer, mail: &Mail, stats: &MailerStats) {
    let failed = || {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &mail.on_failure {
            (hook.0)();
        }
    };
    let message = match build_message(mail) {
        Ok(m) => m,
        Err(e) => {
            failed();
            warn_limited!(
                FAILURE_LOG,
                "email: cannot build mail {:?}: {e}",
                mail.subject
            );
            return;
        }
    };
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match transport.send(&message) {
            Ok(_) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => match delays.next() {
                Some(delay) => thread::sleep(*delay),
                None => {
                    failed();
                    warn_limited!(
                        FAILURE_LOG,
                        "email: sending {:?} via SMTP {}:{} failed after {} attempts: {e}",
                        mail.subject,
                        server.host,
                        server.port,
                        RETRY_DELAYS.len() + 1
                    );
                    return;
                }
            },
        }
    }
}

fn build_message(mail: &Mail) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(mail.from.clone())
        .subject(mail.subject.clone())
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
        assert_eq!(mailer.stats().failures.load(Ordering::Relaxed), 1);
        assert_eq!(hook_calls.load(Ordering::Relaxed), 1, "the sender is told");
        assert!(mailer
            .enqueue(Mail::for_event(&Event::default(), &from, &[], None))
            .is_err());
        assert_eq!(mailer.stats().dropped.load(Ordering::Relaxed), 1);
    }
}
