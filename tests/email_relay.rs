//! `email()` through relays that want TLS and a login: a real aiosmtpd
//! relay (tests/support/smtp_relay.py) with a certificate from a test CA,
//! requiring STARTTLS and AUTH, or TLS from the first byte, or neither.
//! dmon must deliver when it can, and otherwise refuse clearly: say so once
//! at start-up, count each mail lost, send nothing in the clear, and keep
//! processing events.

use crate::common;

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use common::tls::Pki;
use common::*;
use serde_json::{json, Value};

const USER: &str = "alerts";
const PASSWORD: &str = "correct horse battery staple";

const MODULE: &str = r#"
from dmon.streams import *

alert_stream = when(lambda e: e.state == "critical", email("ops@example.com", subject="relay test"))
log_stream = printer("seen: ")
"#;

const EMAIL_NODE: &str = "alert_stream/when/email";

/// How the relay is reached.
#[derive(Clone, Copy)]
enum Mode {
    /// STARTTLS required first, then AUTH.
    Starttls,
    /// TLS from the first byte, then AUTH.
    Tls,
    /// No TLS offered, no AUTH.
    Plain,
    /// STARTTLS offered, neither it nor AUTH required: a local relay.
    StarttlsOpen,
}

/// tests/support/smtp_relay.py, with a certificate for 127.0.0.1 signed by
/// its own test CA; killed on drop.
struct Relay {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    stdout: Lines,
    stderr: Lines,
    pki: Pki,
}

impl Relay {
    fn start(mode: Mode) -> Relay {
        let pki = Pki::new("relay");
        let cert = pki.server("relay");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_relay.py");
        let mode = match mode {
            Mode::Starttls => "starttls",
            Mode::Tls => "tls",
            Mode::Plain => "plain",
            Mode::StarttlsOpen => "starttls-open",
        };
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--mode", mode, "--user", USER, "--password", PASSWORD])
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 smtp_relay.py (is the test venv on PATH? run ./test.sh)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = Lines::spawn("smtp relay stdout", child.stdout.take().unwrap());
        let mut stderr = Lines::spawn("smtp relay stderr", child.stderr.take().unwrap());
        let port = match stdout.wait_for(TIMEOUT, |l| l.starts_with("READY ")) {
            Ok(line) => line["READY ".len()..].trim().parse().expect("port"),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("SMTP relay did not start ({why}):\n{}", stderr.dump());
            }
        };
        Relay {
            child,
            _stdin: stdin,
            port,
            stdout,
            stderr,
            pki,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate, for --smtp-ca.
    fn ca(&self) -> String {
        self.pki.ca.display().to_string()
    }

    /// Waits for the next line the relay printed satisfying `pred`, as JSON.
    fn next(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let found = self.stdout.wait_for(TIMEOUT, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v))
        });
        match found {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(why) => panic!(
                "the relay printed no {what}: {why}\n stdout:\n{}\n stderr:\n{}",
                self.stdout.dump(),
                self.stderr.dump()
            ),
        }
    }

    fn next_message(&mut self) -> Value {
        self.next("message", |v| v.get("mail_from").is_some())
    }

    /// Every JSON line the relay printed so far with `key`.
    fn lines_with(&mut self, key: &str) -> Vec<Value> {
        self.stdout
            .all()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get(key).is_some())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `dmon serve` with the test module, `args` and `env` (nothing of the
/// SMTP environment of whoever runs the tests leaks in).
struct Dmon {
    spawned: Spawned,
    _dir: TempDir,
}

impl Dmon {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Dmon {
        let dir = TempDir::new();
        let module = dir.write("streams.py", MODULE);
        Dmon {
            spawned: Spawned::start(dmon_command(&module, args, env)),
            _dir: dir,
        }
    }

    fn send(&self, event: Value) {
        Udp::to(self.spawned.port).send_json(&event);
    }

    fn fail(&mut self, msg: &str) -> ! {
        panic!(
            "{msg}\n  stdout:\n{}  stderr:\n{}",
            self.spawned.stdout.dump(),
            self.spawned.stderr.dump()
        );
    }

    /// The next stderr line holding `text`.
    fn expect_stderr(&mut self, text: &str) -> String {
        match self.spawned.stderr.wait_for(TIMEOUT, |l| l.contains(text)) {
            Ok(line) => line,
            Err(why) => self.fail(&format!("no stderr line with {text:?}: {why}")),
        }
    }

    /// The next event printed by the `seen: ` printer.
    fn expect_seen(&mut self) -> Value {
        match self
            .spawned
            .stdout
            .wait_for(TIMEOUT, |l| l.starts_with("seen: "))
        {
            Ok(line) => parse_printed(&line, "seen: "),
            Err(why) => self.fail(&format!("no printed event: {why}")),
        }
    }

    /// SIGTERM, then everything printed until the exit.
    fn terminate(mut self) -> Finished {
        let pid = self.spawned.child.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let Some(status) = wait_timeout(&mut self.spawned.child.0, TIMEOUT) else {
            self.fail("dmon did not exit after SIGTERM")
        };
        Finished {
            status,
            stdout: self.spawned.stdout.read_to_eof(Duration::from_secs(5)),
            stderr: self.spawned.stderr.read_to_eof(Duration::from_secs(5)),
        }
    }
}

fn dmon_command(module: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(dmon_bin());
    for var in [
        "DMON_SMTP",
        "DMON_SMTP_TLS",
        "DMON_SMTP_USER",
        "DMON_SMTP_PASSWORD",
        "DMON_SMTP_PASSWORD_FILE",
        "DMON_SMTP_CA",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DMON_INSTRUMENT_INTERVAL", "0")
        .envs(env.iter().copied())
        .arg("serve")
        .arg("--streams")
        .arg(module)
        .args(["--udp", "127.0.0.1:0"])
        .args(["--riemann-tcp", "off", "--riemann-udp", "off"])
        .args(args);
    cmd
}

fn critical(host: &str) -> Value {
    json!({"host": host, "service": "cpu", "state": "critical", "metric": 9})
}

/// The start-up line that says the relay is fine, and how.
fn ok_line(relay: &Relay, how: &str) -> String {
    format!("email: SMTP relay {} ok ({how})", relay.addr())
}

/// Checks what a mail that arrived says, and that it came encrypted from
/// the user.
fn assert_delivered(msg: &Value, host: &str) {
    assert_eq!(msg["rcpt_tos"], json!(["ops@example.com"]), "{msg}");
    assert_eq!(msg["subject"], "relay test", "{msg}");
    let body = msg["body"].as_str().unwrap();
    assert!(body.contains(&format!("host: {host}")), "{msg}");
    // The receive time, for people: ISO 8601 in UTC, whole seconds or not.
    let time = body
        .lines()
        .find_map(|l| l.strip_prefix("time: "))
        .unwrap_or_else(|| panic!("no time line: {msg}"));
    assert!(
        time.starts_with("20") && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time:?}: {msg}"
    );
    assert_eq!(msg["tls"], true, "sent encrypted: {msg}");
    assert_eq!(msg["user"], USER, "sent logged in: {msg}");
}

/// A mail lost to the relay's refusal: counted once as the mailer's
/// failure and as the email node's error, not retried, and none arrived.
fn assert_one_mail_refused(done: &Finished, relay: &mut Relay) {
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mail_failures"), 1, "{}", stats.0);
    assert_eq!(stats.count("mails_sent"), 0, "{}", stats.0);
    assert_eq!(stats.node_count(EMAIL_NODE, "errors"), 1, "{}", stats.0);
    let sink = stats.sink("email", &relay.addr());
    assert_eq!(sink["retried"], 0, "a refusal is not retried: {sink}");
    assert!(
        relay.lines_with("mail_from").is_empty(),
        "the relay received mail"
    );
}

#[test]
fn starttls_and_login_deliver() {
    let mut relay = Relay::start(Mode::Starttls);
    let ca = relay.ca();
    let mut dmon = Dmon::start(
        &[
            "--smtp",
            &relay.addr(),
            "--smtp-tls",
            "starttls",
            "--smtp-user",
            USER,
            "--smtp-ca",
            &ca,
        ],
        &[("DMON_SMTP_PASSWORD", PASSWORD)],
    );
    let line = dmon.expect_stderr(&ok_line(&relay, "STARTTLS, logged in as \"alerts\""));
    assert!(line.contains(" INFO "), "{line}");
    // The check logged in, over TLS, and sent nothing.
    let auth = relay.next("login", |v| v.get("auth").is_some());
    assert_eq!(auth, json!({"auth": "ok", "user": USER, "tls": true}));
    assert!(relay.lines_with("mail_from").is_empty());

    dmon.send(critical("web1"));
    assert_delivered(&relay.next_message(), "web1");

    let done = dmon.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mails_sent"), 1, "{}", stats.0);
    assert_eq!(stats.count("mail_failures"), 0, "{}", stats.0);
}

/// Without --smtp-tls (auto), a relay that offers STARTTLS gets it: this
/// one takes nothing before it.
#[test]
fn auto_uses_starttls_when_offered() {
    logs_in_and_delivers(Mode::Starttls, None, "STARTTLS", "web2");
}

/// Without a login to protect, auto encrypts what it can as an MTA does:
/// STARTTLS with a certificate it cannot check (no --smtp-ca here), rather
/// than plain text or no mail at all.
#[test]
fn auto_without_a_login_takes_starttls_without_checking_the_certificate() {
    let mut relay = Relay::start(Mode::StarttlsOpen);
    let mut dmon = Dmon::start(&["--smtp", &relay.addr()], &[]);
    dmon.expect_stderr(&ok_line(
        &relay,
        "STARTTLS, certificate not checked, no login",
    ));
    dmon.send(critical("web3"));
    let msg = relay.next_message();
    assert_eq!(msg["rcpt_tos"], json!(["ops@example.com"]), "{msg}");
    assert_eq!(msg["tls"], true, "sent encrypted: {msg}");
    assert_eq!(msg["user"], Value::Null, "{msg}");
    assert_eq!(dmon.terminate().stats().count("mails_sent"), 1);
}

/// The password comes from a file, and shows nowhere, not even at debug
/// level.
#[test]
fn the_password_file_works_and_the_password_is_never_printed() {
    let mut relay = Relay::start(Mode::Starttls);
    let dir = TempDir::new();
    let file = dir.write("smtp-password", &format!("{PASSWORD}\n"));
    let ca = relay.ca();
    let mut dmon = Dmon::start(
        &[
            "--smtp",
            &relay.addr(),
            "--smtp-tls",
            "starttls",
            "--smtp-user",
            USER,
            "--smtp-password-file",
            file.to_str().unwrap(),
            "--smtp-ca",
            &ca,
        ],
        &[("DMON_LOG", "debug")],
    );
    dmon.expect_stderr(&ok_line(&relay, "STARTTLS, logged in as \"alerts\""));
    dmon.send(critical("web3"));
    assert_delivered(&relay.next_message(), "web3");
    let done = dmon.terminate();
    assert_eq!(done.stats().count("mails_sent"), 1);
    for line in done.stdout.iter().chain(&done.stderr) {
        assert!(!line.contains(PASSWORD), "the password printed: {line}");
        assert!(
            !line.contains("horse"),
            "part of the password printed: {line}"
        );
    }
}

#[test]
fn a_wrong_password_is_reported_at_start_up_and_each_mail_counted() {
    let mut relay = Relay::start(Mode::Starttls);
    let ca = relay.ca();
    let mut dmon = Dmon::start(
        &[
            "--smtp",
            &relay.addr(),
            "--smtp-user",
            USER,
            "--smtp-ca",
            &ca,
        ],
        &[("DMON_SMTP_PASSWORD", "wrong")],
    );
    let report = format!(
        "email: SMTP relay {} rejected the login for user \"alerts\" (535 5.7.8 Authentication \
         credentials invalid); mail will fail until this is fixed",
        relay.addr()
    );
    let line = dmon.expect_stderr(&report);
    assert!(line.contains(" WARN "), "{line}");
    let auth = relay.next("login", |v| v.get("auth").is_some());
    assert_eq!(auth, json!({"auth": "failed", "user": USER, "tls": true}));

    dmon.send(critical("web4"));
    assert_eq!(text(&dmon.expect_seen(), "host"), "web4");
    let lost = dmon.expect_stderr("email: sending \"relay test\" via SMTP");
    assert!(
        lost.ends_with(
            "failed, not retried: the relay rejected the login for user \"alerts\" \
             (535 5.7.8 Authentication credentials invalid)"
        ),
        "{lost}"
    );
    // The server goes on.
    dmon.send(json!({"host": "later", "service": "cpu", "state": "ok"}));
    assert_eq!(text(&dmon.expect_seen(), "host"), "later");

    let done = dmon.terminate();
    assert_one_mail_refused(&done, &mut relay);
    let reports = done.stderr.iter().filter(|l| l.contains(&report)).count();
    assert_eq!(reports, 1, "reported once at start-up");
    // The check's login and the mail's, each refused once.
    let again = relay.next("the mail's login", |v| v.get("auth").is_some());
    assert_eq!(again["auth"], "failed", "{again}");
    let logins = relay.lines_with("auth");
    assert_eq!(logins.len(), 2, "{logins:?}");
}

/// Implicit TLS against a relay that speaks plain SMTP: the handshake
/// fails, said as such, and nothing goes in the clear.
#[test]
fn tls_against_a_plain_relay_fails_clearly() {
    let mut relay = Relay::start(Mode::Plain);
    let mut dmon = Dmon::start(&["--smtp", &relay.addr(), "--smtp-tls", "tls"], &[]);
    let line = dmon.expect_stderr(&format!(
        "email: SMTP relay {} failed the TLS handshake: ",
        relay.addr()
    ));
    assert!(line.contains("is it a plain SMTP port?"), "{line}");
    assert!(
        line.ends_with("; mail will fail until this is fixed"),
        "{line}"
    );
    dmon.send(critical("web5"));
    dmon.expect_stderr("failed, not retried: the relay failed the TLS handshake");
    assert_eq!(text(&dmon.expect_seen(), "host"), "web5");
    let done = dmon.terminate();
    assert_one_mail_refused(&done, &mut relay);
}

/// Required STARTTLS against a relay that does not offer it: no mail in
/// the clear.
#[test]
fn starttls_against_a_relay_without_it_sends_nothing() {
    let mut relay = Relay::start(Mode::Plain);
    let mut dmon = Dmon::start(&["--smtp", &relay.addr(), "--smtp-tls", "starttls"], &[]);
    dmon.expect_stderr(&format!(
        "email: SMTP relay {} does not offer STARTTLS, and --smtp-tls starttls was asked for: \
         refusing to send mail in the clear; mail will fail until this is fixed",
        relay.addr()
    ));
    dmon.send(critical("web6"));
    dmon.expect_stderr("failed, not retried: the relay does not offer STARTTLS");
    let done = dmon.terminate();
    assert_one_mail_refused(&done, &mut relay);
}

#[test]
fn implicit_tls_delivers() {
    logs_in_and_delivers(Mode::Tls, Some("tls"), "TLS", "web7");
}

/// Mail for `host` through a relay in `mode`, with `--smtp-tls` set to
/// `tls` (none: auto), the test CA and the login: the start-up line says
/// `secured`, and the mail arrives encrypted from the user.
fn logs_in_and_delivers(mode: Mode, tls: Option<&str>, secured: &str, host: &str) {
    let mut relay = Relay::start(mode);
    let (addr, ca) = (relay.addr(), relay.ca());
    let mut args = vec!["--smtp", &addr, "--smtp-user", USER, "--smtp-ca", &ca];
    if let Some(tls) = tls {
        args.extend(["--smtp-tls", tls]);
    }
    let mut dmon = Dmon::start(&args, &[("DMON_SMTP_PASSWORD", PASSWORD)]);
    dmon.expect_stderr(&ok_line(
        &relay,
        &format!("{secured}, logged in as \"alerts\""),
    ));
    dmon.send(critical(host));
    assert_delivered(&relay.next_message(), host);
    let done = dmon.terminate();
    assert_eq!(done.stats().count("mails_sent"), 1);
}

/// A certificate no trusted CA signed is refused, not waved through (no
/// --smtp-ca here), and the report says how to trust it.
#[test]
fn an_untrusted_certificate_is_refused() {
    let mut relay = Relay::start(Mode::Starttls);
    let mut dmon = Dmon::start(
        &["--smtp", &relay.addr(), "--smtp-user", USER],
        &[("DMON_SMTP_PASSWORD", PASSWORD)],
    );
    let line = dmon.expect_stderr(&format!(
        "email: SMTP relay {} failed the TLS handshake: ",
        relay.addr()
    ));
    assert!(line.contains("--smtp-ca FILE"), "{line}");
    dmon.send(critical("web8"));
    dmon.expect_stderr("failed, not retried: the relay failed the TLS handshake");
    let done = dmon.terminate();
    assert_one_mail_refused(&done, &mut relay);
    assert!(relay.lines_with("auth").is_empty(), "no login was tried");
}

/// Flags that cannot make a working relay stop dmon at once, naming the
/// flag.
#[test]
fn a_missing_password_stops_dmon_at_start_up() {
    let dir = TempDir::new();
    let module = dir.write("streams.py", MODULE);
    let missing = dir.path().join("no-such-file");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "--smtp-user",
                USER,
                "--smtp-password-file",
                missing.to_str().unwrap(),
            ],
            "dmon: --smtp-password-file: cannot read ",
        ),
        (
            vec!["--smtp-user", USER],
            "dmon: --smtp-user \"alerts\" needs a password: set DMON_SMTP_PASSWORD or give \
             --smtp-password-file FILE",
        ),
        (
            vec!["--smtp-tls", "none", "--smtp-ca", missing.to_str().unwrap()],
            "dmon: --smtp-ca has no use with --smtp-tls none",
        ),
    ];
    for (args, error) in cases {
        let mut child = dmon_command(&module, &args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(KillOnDrop)
            .expect("spawn dmon");
        let mut stderr = Lines::spawn("dmon stderr", child.0.stderr.take().unwrap());
        let status = wait_timeout(&mut child.0, TIMEOUT).expect("dmon exits");
        let lines = stderr.read_to_eof(Duration::from_secs(5));
        assert!(!status.success(), "{args:?}: {status}");
        assert!(
            lines.iter().any(|l| l.starts_with(error)),
            "{args:?}: expected {error:?} in:\n{}",
            lines.join("\n")
        );
    }
}
