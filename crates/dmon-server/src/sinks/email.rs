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
//!
//! The relay ([`Relay`]) may want TLS and a login: STARTTLS or TLS from the
//! first byte ([`SmtpTls`]), then AUTH. What the user asked for is never
//! weakened: a relay that cannot give it gets no mail (and no password),
//! and such a refusal, like a rejected login, is given up at once rather
//! than retried. [`spawn_check`] tries all of it once at start-up, without
//! sending mail, so a wrong password shows before the first alert is lost.
//!
//! `--smtp log` ([`Mailer::start_log`]) sends nothing: each mail is written
//! whole where `printer()` lines go, to try alerts without a relay.
//!
//! Times in a mail are ISO 8601 in UTC (`time: 2026-12-06T23:01:02Z`): a
//! person reads it, not a program.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::Message;

use super::{Failure, Policy, Refused, Retry, Sink, SinkHandle, SinkSnapshot, SinkStats};
use crate::console::LineSink;
use crate::event::{push_escaped, Event, Number};

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

/// The mail queue is bounded by its count of small mails, made by dmon
/// from templates, not by what peers send: it is charged to a budget of
/// its own, not to `--memory-limit`'s sinks share.
impl super::Weigh for Mail {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.subject.len() + self.body.len()
    }
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

impl Mail {
    /// The whole mail as text, as `--smtp log` prints it: a first line
    /// saying it was not sent, then the headers and the body, indented.
    pub fn to_text(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.to_string()).collect();
        let mut out = format!(
            "mail (--smtp log: not sent)\n  From: {}\n  To: {}\n  Subject: {}\n",
            self.from,
            to.join(", "),
            subject_line(&self.subject)
        );
        for line in self.body.trim_end_matches('\n').split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.push_str("  ");
                out.push_str(line);
            }
        }
        out
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
        let shown = iso8601(t).unwrap_or_else(|| t.to_string());
        let _ = writeln!(out, "time: {shown}");
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

/// `t` (unix seconds) in ISO 8601, UTC: `2026-12-06T23:01:02Z`, with a
/// fraction of a second only when there is one (to the microsecond, about
/// what an f64 of today's seconds holds). `None` outside the years
/// 0000-9999, which ISO 8601 writes only by agreement, and for NaN or
/// infinity: the caller shows the number as it is.
pub fn iso8601(t: Number) -> Option<String> {
    let micros: i128 = match t {
        Number::Int(secs) => i128::from(secs) * 1_000_000,
        // `as` saturates: an absurd time comes out of range below.
        Number::Float(secs) if secs.is_finite() => (secs * 1e6).round() as i128,
        Number::Float(_) => return None,
    };
    let secs = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's
    // civil_from_days): eras of 400 years, years starting in March.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// Parses `"ops@example.com"` or `"Ops <ops@example.com>"`.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("invalid mail address {text:?}: {e}"))
}

/// Where to send mail: an SMTP relay's address.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Default for SmtpServer {
    /// A relay on this machine, as a local MTA is.
    fn default() -> Self {
        SmtpServer {
            host: "localhost".into(),
            port: 25,
        }
    }
}

/// How the connection to the relay is secured (`--smtp-tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// STARTTLS when the relay offers it, plain otherwise; a login is never
    /// sent in the clear.
    #[default]
    Auto,
    /// Plain SMTP, no TLS: a relay on this machine.
    None,
    /// STARTTLS, required: a relay that does not offer it gets no mail.
    Starttls,
    /// TLS from the first byte (implicit TLS, "SMTPS", port 465).
    Tls,
}

impl SmtpTls {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [SmtpTls; 4] = [
        SmtpTls::Auto,
        SmtpTls::None,
        SmtpTls::Starttls,
        SmtpTls::Tls,
    ];

    /// As `--smtp-tls` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SmtpTls::Auto => "auto",
            SmtpTls::None => "none",
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }
}

impl std::str::FromStr for SmtpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SmtpTls::ALL
            .into_iter()
            .find(|mode| mode.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = SmtpTls::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown TLS mode {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A password: shown by `Debug` as hidden, so no log or error prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// `None` for an empty one: an empty password is a mistake, not a login.
    pub fn new(text: String) -> Option<Password> {
        (!text.is_empty()).then_some(Password(text))
    }

    /// The first line of `path`'s contents, without its line end: what
    /// `echo secret > file` writes.
    pub fn from_file(path: &Path) -> Result<Password, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        Password::new(line.to_owned())
            .ok_or_else(|| format!("{} has an empty first line", path.display()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// The user and password the relay wants (SMTP AUTH, PLAIN or LOGIN).
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Password,
}

/// The certificates of a PEM file, to trust besides the system's roots: a
/// relay whose certificate a private CA signed.
pub fn load_ca(path: &Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // lettre takes a file without any certificate, and trusts nothing more.
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Everything needed to hand mail to the relay: its address, how to secure
/// the connection, and the login.
#[derive(Clone)]
pub struct Relay {
    pub server: SmtpServer,
    pub tls: SmtpTls,
    login: Option<Login>,
    /// Roots and certificate checks, built once; `None` with [`SmtpTls::None`].
    tls_parameters: Option<TlsParameters>,
    /// `auto` with no login to protect and no `--smtp-ca`: STARTTLS when
    /// offered, the certificate not checked.
    opportunistic: bool,
    /// What EHLO says dmon is: this machine's name, looked up once.
    hello: ClientId,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("user", &self.login.as_ref().map(|l| &l.user))
            .finish_non_exhaustive()
    }
}

impl From<SmtpServer> for Relay {
    /// Plain SMTP without a login, as before TLS: what tests and benchmarks
    /// point at a port nothing listens on.
    fn from(server: SmtpServer) -> Relay {
        Relay {
            server,
            tls: SmtpTls::None,
            login: None,
            tls_parameters: None,
            opportunistic: false,
            hello: ClientId::default(),
        }
    }
}

/// Why the relay did not take a mail (or, at start-up, would not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayError {
    /// What happened: mostly what the relay did, worded to follow "SMTP
    /// relay HOST:PORT" (`rejected the login for user "alerts" (535 5.7.8
    /// Authentication credentials invalid)`); else lettre's words for a
    /// network failure (`Connection error: Connection refused …`).
    pub message: String,
    /// Whether `message` follows the relay's name, as a predicate.
    pub of_relay: bool,
    /// No retry can help: the relay refused for good (a 5xx reply), or the
    /// connection cannot be secured as asked.
    pub permanent: bool,
}

impl RelayError {
    fn permanent(message: String) -> RelayError {
        RelayError {
            message,
            of_relay: true,
            permanent: true,
        }
    }

    /// `message` as a sentence of its own: `the relay rejected the login…`.
    pub fn sentence(&self) -> String {
        match self.of_relay {
            true => format!("the relay {}", self.message),
            false => self.message.clone(),
        }
    }
}

/// What a session with the relay went through, for the start-up line:
/// `STARTTLS, logged in as "alerts"`.
fn describe_session(secured: &str, login: Option<&Login>) -> String {
    match login {
        Some(l) => format!("{secured}, logged in as {:?}", l.user),
        None => format!("{secured}, no login"),
    }
}

/// Which step of a session failed: its errors read differently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// TCP, TLS from the first byte, the greeting and EHLO.
    Connect,
    Starttls,
    Login,
    Send,
}

impl Relay {
    /// A relay secured as `tls` says, trusting the system's roots and
    /// `ca`'s certificates.
    pub fn new(
        server: SmtpServer,
        tls: SmtpTls,
        login: Option<Login>,
        ca: Option<Certificate>,
    ) -> Result<Relay, String> {
        // As an MTA's opportunistic TLS (Postfix's `may`): with no password
        // to protect and no CA named, `auto` encrypts what it can without
        // insisting on a certificate it can check (a local relay's is often
        // self-signed); the plain SMTP it would otherwise use checks
        // nothing either.
        let opportunistic = tls == SmtpTls::Auto && login.is_none() && ca.is_none();
        let tls_parameters = match tls {
            SmtpTls::None => {
                if ca.is_some() {
                    return Err("a CA to trust makes no sense without TLS".into());
                }
                None
            }
            SmtpTls::Auto | SmtpTls::Starttls | SmtpTls::Tls => {
                let mut builder = TlsParameters::builder(server.host.clone());
                if opportunistic {
                    builder = builder.dangerous_accept_invalid_certs(true);
                }
                if let Some(ca) = ca {
                    builder = builder.add_root_certificate(ca);
                }
                Some(builder.build().map_err(|e| format!("TLS set-up: {e}"))?)
            }
        };
        Ok(Relay {
            server,
            tls,
            login,
            tls_parameters,
            opportunistic,
            hello: ClientId::default(),
        })
    }

    /// `host:port`, as logs and `stats` name the relay.
    pub fn target(&self) -> String {
        super::target(&self.server.host, self.server.port)
    }

    /// The login's user, if any.
    pub fn user(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.user.as_str())
    }

    /// Connects, secures the connection as asked and logs in: a session
    /// ready for mail, and how it was secured.
    fn open(&self) -> Result<(SmtpConnection, &'static str), RelayError> {
        let tls = self.tls_parameters.as_ref();
        let wrapper = tls.filter(|_| self.tls == SmtpTls::Tls);
        let mut conn = SmtpConnection::connect(
            (self.server.host.as_str(), self.server.port),
            Some(SMTP_TIMEOUT),
            &self.hello,
            wrapper,
            None,
        )
        .map_err(|e| self.failed(Step::Connect, &e))?;
        let offers_starttls = conn.server_info().supports_feature(Extension::StartTls);
        let secured = match (self.tls, tls) {
            (SmtpTls::Tls, _) => "TLS",
            (SmtpTls::Auto | SmtpTls::Starttls, Some(tls)) if offers_starttls => {
                conn.starttls(tls, &self.hello)
                    .map_err(|e| self.failed(Step::Starttls, &e))?;
                match self.opportunistic {
                    true => "STARTTLS, certificate not checked",
                    false => "STARTTLS",
                }
            }
            (SmtpTls::Starttls, _) => {
                conn.abort();
                return Err(RelayError::permanent(
                    "does not offer STARTTLS, and --smtp-tls starttls was asked for: \
                     refusing to send mail in the clear"
                        .into(),
                ));
            }
            (SmtpTls::Auto, _) if self.login.is_some() => {
                conn.abort();
                return Err(RelayError::permanent(format!(
                    "does not offer STARTTLS: refusing to send the password of {:?} in the \
                     clear (--smtp-tls none would allow it)",
                    self.user().unwrap_or_default()
                )));
            }
            _ => "plain SMTP",
        };
        if let Some(login) = &self.login {
            if conn
                .server_info()
                .get_auth_mechanism(DEFAULT_MECHANISMS)
                .is_none()
            {
                conn.abort();
                // Relays commonly offer AUTH only once TLS is up.
                let hint = match offers_starttls && self.tls == SmtpTls::None {
                    true => " (it offers STARTTLS, after which it may: drop --smtp-tls none)",
                    false => "",
                };
                return Err(RelayError::permanent(format!(
                    "offers no login (AUTH PLAIN or LOGIN) over {secured}, and --smtp-user {:?} \
                     was given{hint}",
                    login.user
                )));
            }
            let credentials = Credentials::new(login.user.clone(), login.password.0.clone());
            conn.auth(DEFAULT_MECHANISMS, &credentials)
                .map_err(|e| self.failed(Step::Login, &e))?;
        }
        Ok((conn, secured))
    }

    /// Tries a session without sending mail: how it went (`STARTTLS,
    /// logged in as "alerts"`), or why it failed.
    pub fn check(&self) -> Result<String, RelayError> {
        let (mut conn, secured) = self.open()?;
        let _ = conn.quit();
        Ok(describe_session(secured, self.login.as_ref()))
    }

    /// Sends one message in a session of its own.
    fn send(&self, message: &Message) -> Result<(), RelayError> {
        let (mut conn, _) = self.open()?;
        let sent = conn.send(message.envelope(), &message.formatted());
        // As lettre's transport does: QUIT, without waiting for the reply.
        conn.abort();
        sent.map(drop).map_err(|e| self.failed(Step::Send, &e))
    }

    /// `e`, at `step`, worded for people, and whether it is for good.
    fn failed(&self, step: Step, e: &lettre::transport::smtp::Error) -> RelayError {
        if let Some(code) = e.status() {
            // lettre's Display adds "permanent error (535): "; the reply is
            // clearer as the relay wrote it.
            let reply = std::error::Error::source(e).map_or(String::new(), |s| format!(" {s}"));
            let reply = format!("{code}{reply}");
            let message = match step {
                Step::Login => format!(
                    "rejected the login for user {:?} ({reply})",
                    self.user().unwrap_or_default()
                ),
                Step::Starttls => format!("refused STARTTLS ({reply})"),
                Step::Connect => format!("refused the connection ({reply})"),
                Step::Send => format!("refused the mail ({reply})"),
            };
            return RelayError {
                message,
                of_relay: true,
                permanent: e.is_permanent(),
            };
        }
        // rustls' errors come through as InvalidData I/O errors, which a
        // plain connection does not give.
        let tls_in_play = step == Step::Starttls || self.tls == SmtpTls::Tls;
        if let Some(tls_error) =
            io_error(e).filter(|io| tls_in_play && io.kind() == std::io::ErrorKind::InvalidData)
        {
            let hint = if self.tls == SmtpTls::Tls && step == Step::Connect {
                " (is it a plain SMTP port? --smtp-tls tls is TLS from the first byte, as on \
                 port 465; a relay on port 587 or 25 takes --smtp-tls starttls)"
            } else if tls_error.to_string().contains("certificate") {
                " (if a private CA signed it, trust that CA with --smtp-ca FILE)"
            } else {
                ""
            };
            return RelayError::permanent(format!("failed the TLS handshake: {tls_error}{hint}"));
        }
        // A read timeout is WouldBlock on Unix, which lettre's
        // is_timeout() does not count.
        let timed_out = e.is_timeout()
            || io_error(e).is_some_and(|io| io.kind() == std::io::ErrorKind::WouldBlock);
        RelayError {
            message: match timed_out {
                true => format!("did not answer within {} s", SMTP_TIMEOUT.as_secs()),
                false => e.to_string(),
            },
            of_relay: timed_out,
            permanent: false,
        }
    }
}

/// The I/O error under a lettre error, if any.
fn io_error(e: &lettre::transport::smtp::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

/// Checks `relay` once, on a thread of its own (a relay that does not
/// answer takes [`SMTP_TIMEOUT`]), sending no mail, and logs one line:
/// that it is fine and how, or what is wrong. Nothing stops for it: mail
/// that then fails is counted as ever.
pub fn spawn_check(relay: Relay) {
    let spawned = std::thread::Builder::new()
        .name("dmon-smtp-check".into())
        .spawn(move || match relay.check() {
            Ok(how) => tracing::info!("email: SMTP relay {} ok ({how})", relay.target()),
            Err(e) if e.permanent => tracing::warn!(
                "email: SMTP relay {} {}; mail will fail until this is fixed",
                relay.target(),
                e.message
            ),
            Err(e) => tracing::warn!(
                "email: SMTP relay {} is not taking mail now: {}; each mail will still be tried",
                relay.target(),
                e.sentence()
            ),
        });
    if let Err(e) = spawned {
        tracing::warn!("email: cannot check the SMTP relay: {e}");
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
    relay: Relay,
}

impl Sink for EmailSink {
    type Item = Mail;
    type Conn = ();

    fn kind(&self) -> &'static str {
        "email"
    }
    fn target(&self) -> String {
        self.relay.target()
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<(), Failure> {
        // A session of its own for each mail: see `send`.
        Ok(())
    }
    fn send(&mut self, _: &mut (), batch: &[Mail]) -> Result<(), Failure> {
        for mail in batch {
            let message = build_message(mail)
                .map_err(|e| Failure::fatal(format!("cannot build the mail: {e}")))?;
            self.relay.send(&message).map_err(|e| match e.permanent {
                true => Failure::fatal(e.sentence()),
                false => Failure::retry(e.sentence()),
            })?;
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
        let (e, target) = (&failure.message, self.relay.target());
        if failure.retryable {
            format!(
                "email: sending {subject:?} via SMTP {target} failed after {attempts} attempts: {e}"
            )
        } else {
            format!("email: sending {subject:?} via SMTP {target} failed, not retried: {e}")
        }
    }
}

/// `--smtp log`: each mail written whole to the console (where `printer()`
/// lines go: stdout, or above the shell's prompt), one write per mail so
/// other lines cannot come between its own; counted as sent.
struct LogSink {
    console: Arc<dyn LineSink>,
}

impl Sink for LogSink {
    type Item = Mail;
    type Conn = ();

    fn kind(&self) -> &'static str {
        "email"
    }
    fn target(&self) -> String {
        "log".into()
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    fn send(&mut self, _: &mut (), batch: &[Mail]) -> Result<(), Failure> {
        for mail in batch {
            self.console.write_line(&mail.to_text());
        }
        Ok(())
    }
}

/// The mail sink of a server: `email()` nodes queue mail here.
pub struct Mailer {
    handle: SinkHandle<Mail>,
    started: bool,
}

impl Mailer {
    /// Starts the worker thread for plain SMTP to `server`, without a
    /// login. Nothing connects until the first mail.
    pub fn start(server: SmtpServer) -> Mailer {
        Mailer::start_relay(server.into())
    }

    /// Starts the worker thread for `relay`. Nothing connects until the
    /// first mail.
    pub fn start_relay(relay: Relay) -> Mailer {
        Mailer {
            handle: SinkHandle::start(EmailSink { relay }, Arc::default()),
            started: true,
        }
    }

    /// Starts the worker thread for `--smtp log`: each mail is written to
    /// `console` instead of sent, and counted as sent.
    pub fn start_log(console: Arc<dyn LineSink>) -> Mailer {
        Mailer {
            handle: SinkHandle::start(LogSink { console }, Arc::default()),
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
            Refused::Memory => "the mail queue's memory is full; mail dropped".to_owned(),
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
            time: Some(Number::Int(1_796_598_062)),
            ttl: Some(60.0),
            tags: ["prod"].into(),
            ..Event::default()
        };
        let from = parse_mailbox(DEFAULT_SENDER).unwrap();
        let to = [parse_mailbox("ops@example.com").unwrap()];
        let mail = Mail::for_event(&e, &from, &to, None);
        assert_eq!(mail.subject, "web1 cpu warning");
        assert!(mail.body.contains("metric: 2.5\n"));
        assert!(mail.body.contains("tags: prod\n"));
        // A time for people; a ttl stays seconds.
        assert!(
            mail.body.contains("time: 2026-12-06T23:01:02Z\n"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("ttl: 60\n"), "{}", mail.body);
        assert!(build_message(&mail).is_ok());

        // --smtp log's text: the whole mail, every line of the body.
        let text = mail.to_text();
        assert!(text.starts_with("mail (--smtp log: not sent)\n"), "{text}");
        assert!(text.contains("\n  From: dmon@localhost\n"), "{text}");
        assert!(text.contains("\n  To: ops@example.com\n"), "{text}");
        assert!(
            text.contains("\n  Subject: web1 cpu warning\n\n  host: web1\n"),
            "{text}"
        );
        assert!(text.ends_with("\n  tags: prod"), "{text}");
    }

    #[test]
    fn times_are_iso_8601_in_utc() {
        let iso = |t| iso8601(t).unwrap_or_else(|| "none".into());
        assert_eq!(iso(Number::Int(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso(Number::Int(1_796_598_062)), "2026-12-06T23:01:02Z");
        assert_eq!(iso(Number::Float(1_796_598_062.0)), "2026-12-06T23:01:02Z");
        // A fraction only when there is one, without trailing zeros.
        assert_eq!(
            iso(Number::Float(1_796_598_062.25)),
            "2026-12-06T23:01:02.25Z"
        );
        assert_eq!(
            iso(Number::Float(1_796_598_062.1)),
            "2026-12-06T23:01:02.1Z"
        );
        assert_eq!(iso(Number::Float(0.000_001)), "1970-01-01T00:00:00.000001Z");
        // A leap day, before 1970, and the ends of years 0001-9999.
        assert_eq!(iso(Number::Int(1_709_208_000)), "2024-02-29T12:00:00Z");
        assert_eq!(iso(Number::Int(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(iso(Number::Float(-0.5)), "1969-12-31T23:59:59.5Z");
        assert_eq!(iso(Number::Int(253_402_300_799)), "9999-12-31T23:59:59Z");
        assert_eq!(iso(Number::Int(-62_135_596_800)), "0001-01-01T00:00:00Z");
        // Out of ISO 8601's years, or no number: shown as it is.
        for t in [
            Number::Int(253_402_300_800),
            Number::Int(i64::MIN),
            Number::Int(i64::MAX),
            Number::Float(1e300),
            Number::Float(f64::NAN),
            Number::Float(f64::INFINITY),
        ] {
            assert_eq!(iso8601(t), None, "{t}");
        }
        let far = Event {
            time: Some(Number::Float(1e12)),
            ..Event::default()
        };
        assert_eq!(describe_fields(&far), "time: 1000000000000\n");
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
    fn a_password_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("dmon-email-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            Password::from_file(&path)
        };
        let secret = |p: Password| p.0;
        assert_eq!(secret(file("lf", "s3cret\n").unwrap()), "s3cret");
        assert_eq!(secret(file("crlf", "s3cret\r\n").unwrap()), "s3cret");
        assert_eq!(secret(file("bare", "s3 cret").unwrap()), "s3 cret");
        assert_eq!(
            secret(file("more", "s3cret\nnot this\n").unwrap()),
            "s3cret"
        );
        assert!(file("empty", "").unwrap_err().contains("empty first line"));
        assert!(file("blank", "\nlater\n")
            .unwrap_err()
            .contains("empty first line"));
        let missing = Password::from_file(&dir.join("missing")).unwrap_err();
        assert!(missing.starts_with("cannot read "), "{missing}");
        assert!(Password::new(String::new()).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_debug_output_shows_the_password() {
        let login = Login {
            user: "alerts".into(),
            password: Password::new("s3cret".into()).unwrap(),
        };
        let server: SmtpServer = "127.0.0.1:2525".parse().unwrap();
        let relay = Relay::new(server, SmtpTls::None, Some(login.clone()), None).unwrap();
        for shown in [
            format!("{login:?}"),
            format!("{relay:?}"),
            format!("{relay:#?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert!(
            format!("{relay:?}").contains("alerts"),
            "the user is no secret"
        );
    }

    #[test]
    fn tls_modes_and_their_checks() {
        // --smtp-tls spells them as name() does, which messages use.
        for mode in SmtpTls::ALL {
            assert_eq!(mode.name().parse(), Ok(mode));
            assert_eq!(mode.name().to_uppercase().parse(), Ok(mode));
        }
        let unknown = "ssl".parse::<SmtpTls>().unwrap_err();
        assert!(unknown.contains("auto, none, starttls, tls"), "{unknown}");
        assert_eq!(SmtpTls::default(), SmtpTls::Auto);

        let server: SmtpServer = "localhost:587".parse().unwrap();
        for mode in [SmtpTls::Auto, SmtpTls::Starttls, SmtpTls::Tls] {
            let relay = Relay::new(server.clone(), mode, None, None).unwrap();
            assert!(relay.tls_parameters.is_some(), "{mode:?}");
            assert_eq!(relay.target(), "localhost:587");
        }
        let plain = Relay::new(server.clone(), SmtpTls::None, None, None).unwrap();
        assert!(plain.tls_parameters.is_none());
        assert_eq!(SmtpServer::default(), "localhost:25".parse().unwrap());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("dmon-email-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |text: &str| {
            let path = dir.join("ca.pem");
            std::fs::write(&path, text).unwrap();
            load_ca(&path).map(drop)
        };
        assert!(ca("").unwrap_err().ends_with("holds no PEM certificate"));
        assert!(
            ca("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .ends_with("holds no PEM certificate")
        );
        assert!(load_ca(&dir.join("missing")).is_err());
        // Well-formed PEM around a certificate that is not one: refused
        // when the roots are built, at start-up.
        let bad = Certificate::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("PEM, however wrong its contents");
        let server: SmtpServer = "localhost:587".parse().unwrap();
        assert!(Relay::new(server, SmtpTls::Starttls, None, Some(bad)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
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
