//! The `email` node, against a real SMTP server (tests/support/smtp_sink.py)
//! and against an SMTP server that is down or hangs.

use crate::common;

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MODULE: &str = r#"
from dmon.streams import *

crit_stream = when(
    lambda e: e.state == "critical",
    email("ops@example.com", "oncall@example.com"),
)
warn_stream = when(
    lambda e: e.state == "warning",
    email("team@example.com", subject="dmon alert: warning", sender="alerts@example.com"),
)
"#;

fn rcpts(msg: &Value) -> Vec<String> {
    let mut v: Vec<String> = msg["rcpt_tos"]
        .as_array()
        .expect("rcpt_tos")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn email_delivers_subject_recipients_and_every_field() {
    let mut sink = SmtpSink::start();
    let s = Server::start_with(MODULE, "py", &["--smtp", &sink.addr()]);

    s.send(json!({
        "host": "web1", "service": "cpu", "state": "critical",
        "description": "load too high", "metric": 2.5, "ttl": 60,
        "time": 1_700_000_000.5,
        "tags": ["prod"], "attributes": {"region": "eu-west"}
    }));
    let msg = sink.next_message();
    assert_eq!(rcpts(&msg), ["oncall@example.com", "ops@example.com"]);
    assert_eq!(msg["mail_from"], "dmon@localhost", "default sender");
    assert_eq!(
        msg["subject"], "web1 cpu critical",
        "default subject: host service state"
    );
    let body = msg["body"].as_str().unwrap();
    for field in [
        "host: web1",
        "service: cpu",
        "state: critical",
        "description: load too high",
        "metric: 2.5",
        "ttl: 60",
        // For people: ISO 8601 in UTC, not epoch seconds.
        "time: 2023-11-14T22:13:20.5Z",
        "prod",
        "region",
        "eu-west",
    ] {
        assert!(body.contains(field), "mail body lacks {field:?}:\n{body}");
    }

    // The second root: explicit subject and sender.
    s.send(json!({"host": "db2", "service": "disk", "state": "warning", "metric": 91}));
    let msg = sink.next_message();
    assert_eq!(rcpts(&msg), ["team@example.com"]);
    assert_eq!(msg["mail_from"], "alerts@example.com");
    assert_eq!(msg["subject"], "dmon alert: warning");
    let body = msg["body"].as_str().unwrap();
    assert!(body.contains("host: db2"), "mail body:\n{body}");
    assert!(body.contains("metric: 91"), "mail body:\n{body}");
    // No time sent: the receive time, in ISO 8601 too.
    let time = time_line(body);
    assert!(is_iso_8601_utc(time), "{time:?} in\n{body}");

    // An ok event sends nothing.
    s.send(json!({"host": "web1", "service": "cpu", "state": "ok", "metric": 0.1}));
    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mails_sent"), 2);
    assert_eq!(stats.count("mail_failures"), 0);
    assert_eq!(stats.count("mails_dropped"), 0);
    assert_eq!(stats.node_count("crit_stream/when/email", "in"), 1);
    assert_eq!(stats.node_count("warn_stream/when/email", "in"), 1);
    assert_eq!(stats.node("crit_stream/when/email")["kind"], "email");
    assert_eq!(sink.messages_so_far().len(), 2, "no mail for the ok event");
}

/// The value of a mail body's `time:` line.
fn time_line(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("time: "))
        .unwrap_or_else(|| panic!("no time line in\n{body}"))
}

/// `2026-12-06T23:01:02Z`, with a fraction of a second or without.
fn is_iso_8601_utc(text: &str) -> bool {
    let Some(rest) = text.strip_suffix('Z') else {
        return false;
    };
    let (whole, fraction) = rest.split_once('.').unwrap_or((rest, "1"));
    let shape = whole.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    shape
        && whole.len() == 19
        && !fraction.is_empty()
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !fraction.ends_with('0')
}

/// `--smtp log`: no relay, no warning about one; each mail is printed
/// whole on stdout, where printer() lines go, and counted as sent.
#[test]
fn smtp_log_prints_each_mail_instead_of_sending_it() {
    let mut s = Server::start_with(MODULE, "py", &["--smtp", "log"]);
    s.send(json!({
        "host": "web1", "service": "cpu", "state": "critical",
        "description": "load too high", "metric": 2.5, "time": 1_700_000_000
    }));
    s.expect_stdout("starting a mail", |l| l == "mail (--smtp log: not sent)");
    let mut next = |what: &str| s.expect_stdout(what, |_| true);
    assert_eq!(next("From"), "  From: dmon@localhost");
    assert_eq!(next("To"), "  To: ops@example.com, oncall@example.com");
    assert_eq!(next("Subject"), "  Subject: web1 cpu critical");
    assert_eq!(next("the blank line"), "");
    let mut body = Vec::new();
    while body
        .last()
        .is_none_or(|l: &String| !l.starts_with("  metric: "))
    {
        body.push(next("the body"));
    }
    assert_eq!(
        body,
        [
            "  host: web1",
            "  service: cpu",
            "  state: critical",
            "  description: load too high",
            "  time: 2023-11-14T22:13:20Z",
            "  metric: 2.5",
        ]
    );
    // The second root's mail, with its own subject and sender.
    s.send(json!({"host": "db2", "service": "disk", "state": "warning"}));
    s.expect_stdout("the second mail", |l| l == "  Subject: dmon alert: warning");

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mails_sent"), 2, "{}", stats.0);
    assert_eq!(stats.count("mail_failures"), 0, "{}", stats.0);
    assert_eq!(stats.sink("email", "log")["sent"], 2, "{}", stats.0);
    assert!(
        done.stderr.iter().any(|l| l.contains("email: --smtp log")),
        "says so at start-up: {:?}",
        done.stderr
    );
    let warnings: Vec<&String> = done
        .stderr
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("relay"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A relay's flag with `--smtp log` is a mistake, said at start-up.
#[test]
fn smtp_log_refuses_a_relay_s_flags() {
    let r = run_dmon(&["serve", "--smtp", "log", "--smtp-tls", "starttls"], None);
    assert!(!r.status.success(), "{r:?}");
    assert!(
        r.stderr.contains(
            "--smtp-tls has no use with --smtp log, which prints each mail instead of sending it"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn smtp_down_is_logged_counted_and_events_keep_flowing() {
    // A port nobody listens on: bind, note the port, close.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let smtp = format!("127.0.0.1:{port}");
    let mut s = Server::start_with(
        r#"
from dmon.streams import *

alert_stream = when(lambda e: e.state == "critical", email("ops@example.com"))
log_stream = printer("seen: ")
"#,
        "py",
        &["--smtp", &smtp],
    );
    s.send(json!({"host": "web1", "service": "cpu", "state": "critical", "metric": 9}));
    let first = s.expect_printed("seen: ");
    assert_eq!(text(&first, "host"), "web1");
    // Three refused attempts, 0.25 s and 1 s apart, then one warning that
    // names the mail (its default subject), the server and the attempts.
    let failed =
        format!("email: sending \"web1 cpu critical\" via SMTP {smtp} failed after 3 attempts: ");
    let line = s.expect_stderr("reporting the failed mail", |l| l.contains(&failed));
    assert!(line.contains(" WARN "), "logged as a warning: {line:?}");

    s.send(json!({"host": "later", "service": "cpu", "state": "ok", "metric": 1}));
    let after = s.expect_printed("seen: ");
    assert_eq!(text(&after, "host"), "later");

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mail_failures"), 1, "{}", stats.0);
    assert_eq!(stats.count("mails_dropped"), 0, "{}", stats.0);
    assert_eq!(stats.count("mails_sent"), 0);
}

/// How long one SMTP attempt waits for a silent server (SMTP_TIMEOUT in
/// crates/dmon-server/src/sinks/email.rs): a stream that waited for the mail would stall at
/// least this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn a_hung_smtp_server_does_not_stall_the_streams() {
    // Accepts TCP connections (the kernel completes the handshake) but never
    // says hello: each of the mailer's 3 attempts hangs for SMTP_TIMEOUT.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    hung.set_nonblocking(true).unwrap();
    let smtp = hung.local_addr().unwrap().to_string();
    let mut s = Server::start_with(
        r#"
from dmon.streams import *

alert_stream = when(lambda e: e.state == "critical", email("ops@example.com"))
log_stream = when(lambda e: e.state == "ok", printer("seen: "))
"#,
        "py",
        &["--smtp", &smtp],
    );
    s.send(json!({"host": "web1", "service": "cpu", "state": "critical"}));
    // dmon's start-up check of the relay connected first (it hangs too),
    // then the mail's first attempt: from now on the mail hangs.
    let deadline = Instant::now() + TIMEOUT;
    let mut connections = Vec::new();
    while connections.len() < 2 {
        match hung.accept() {
            Ok((conn, _)) => connections.push(conn),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => s.fail(&format!("dmon never connected to the SMTP server: {e}")),
        }
    }
    let mut conn = connections.pop().unwrap();
    let sent = Instant::now();
    s.send(json!({"host": "web2", "service": "cpu", "state": "ok"}));
    // Half the SMTP timeout: a stream stuck behind the mail cannot make it.
    let printed = s
        .stdout
        .wait_for(SMTP_TIMEOUT / 2, |l| l.starts_with("seen: "));
    let took = sent.elapsed();
    match printed {
        Ok(line) => assert_eq!(text(&parse_printed(&line, "seen: "), "host"), "web2"),
        Err(why) => s.fail(&format!(
            "the ok event was not printed within {:?} of being sent while the mail hung ({why})",
            SMTP_TIMEOUT / 2
        )),
    }
    // The mail was still hanging when the event came out: dmon holds the
    // connection open, waiting for a greeting, and has reported nothing.
    conn.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("dmon's SMTP connection is no longer waiting ({other:?}) after {took:?}"),
    }
    let stderr = s.stderr.all();
    assert!(
        !stderr.iter().any(|l| l.contains("email: sending")),
        "a mail failure was logged before the event came out: {stderr:?}"
    );
}

/// The decoded body, with `\n` line ends: a quoted-printable body decodes
/// with the `\r\n` of the wire.
fn body_of(msg: &Value) -> String {
    msg["body"].as_str().unwrap().replace("\r\n", "\n")
}

/// Header lines of a raw message: up to the first empty line.
fn header_lines(raw: &str) -> Vec<&str> {
    raw.split("\r\n")
        .flat_map(|l| l.split('\n'))
        .take_while(|l| !l.is_empty())
        .collect()
}

/// Event fields are the sender's: a host of 5,000 characters once made a
/// subject line over RFC 5322's 998 octets, the server answered `500 Line
/// too long` and the alert was lost. Each hostile mail below must arrive,
/// its subject cut to 200 characters but starting with the right text, its
/// body holding the whole field with control characters escaped, and no
/// line of it (headers included) longer than 998 octets. A `\r\nBcc:` in a
/// host must stay text: no Bcc header, no extra recipient. The sink is
/// aiosmtpd, which refuses lines over 1,000 octets as real servers do.
#[test]
fn hostile_fields_neither_lose_nor_forge_a_mail() {
    let mut sink = SmtpSink::start();
    let s = Server::start_with(MODULE, "py", &["--smtp", &sink.addr()]);
    let check_lines = |msg: &Value| {
        let raw = msg["data"].as_str().unwrap();
        for line in raw.split("\r\n").flat_map(|l| l.split('\n')) {
            assert!(line.len() <= 998, "a line of {} octets:\n{raw}", line.len());
        }
        assert_eq!(rcpts(msg), ["oncall@example.com", "ops@example.com"]);
        assert!(msg.get("parse_error").is_none(), "{msg}");
    };

    // A long ASCII host: one word, nothing lettre could fold at.
    let long_host = "h".repeat(5000);
    s.send(json!({"host": long_host, "service": "cpu", "state": "critical"}));
    let msg = sink.next_message();
    check_lines(&msg);
    let subject = msg["subject"].as_str().unwrap();
    assert_eq!(subject.chars().count(), 200, "{subject}");
    assert_eq!(subject, format!("{}…", "h".repeat(199)));
    let body = body_of(&msg);
    assert!(
        body.contains(&format!("host: {long_host}\n")),
        "{:?}",
        body.replace(&long_host, "<long host>")
    );

    // A long non-ASCII host: encoded (RFC 2047) as well as cut.
    let wide_host = "é".repeat(3000);
    s.send(json!({"host": wide_host, "service": "cpu", "state": "critical"}));
    let msg = sink.next_message();
    check_lines(&msg);
    assert_eq!(msg["subject"], format!("{}…", "é".repeat(199)));
    assert!(body_of(&msg).contains(&wide_host));

    // A header injection attempt.
    s.send(json!({"host": "web1\r\nBcc: x@evil", "service": "cpu", "state": "critical"}));
    let msg = sink.next_message();
    check_lines(&msg);
    assert_eq!(msg["subject"], "web1\\r\\nBcc: x@evil cpu critical");
    let raw = msg["data"].as_str().unwrap();
    let headers = header_lines(raw);
    assert!(
        !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("bcc")),
        "a forged header:\n{raw}"
    );
    let body = body_of(&msg);
    assert!(body.contains("host: web1\\r\\nBcc: x@evil\n"), "{body:?}");

    // A description with a 3,000-character line and a line of a single
    // dot (SMTP's end of data), which would end the mail early if sent raw,
    // and a line that would pass for another field.
    let long_line = "x".repeat(3000);
    let description = format!("{long_line}\n.\nstate: ok\nend");
    s.send(
        json!({"host": "web2", "service": "cpu", "state": "critical",
                  "description": description, "metric": 7}),
    );
    let msg = sink.next_message();
    check_lines(&msg);
    assert_eq!(msg["subject"], "web2 cpu critical");
    let body = body_of(&msg);
    assert!(
        body.contains(&format!("description: {long_line}\\n.\\nstate: ok\\nend\n")),
        "{body:?}"
    );
    assert!(
        body.contains("metric: 7\n"),
        "the mail goes on past the dot: {body:?}"
    );
    assert!(
        !body.lines().any(|l| l == "state: ok"),
        "a forged field: {body:?}"
    );

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.count("mails_sent"), 4, "{}", stats.0);
    assert_eq!(stats.count("mail_failures"), 0, "{}", stats.0);
}
