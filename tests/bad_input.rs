//! Bad input never stops `dmon serve`: each bad datagram, bad array element
//! or raising predicate is logged on stderr (with the sender and the reason),
//! counted, and the next good event is still processed.

mod common;

use common::*;
use serde_json::json;

const MODULE: &str = r#"
from dmon.streams import *

def check(e):
    if e.service == "boom":
        raise ValueError("kaboom from the predicate")
    return True

stream = when(check, printer("ok: "))
"#;

/// Sends `bad` from its own socket, waits for the WARN line naming that
/// socket, then checks a good event still gets through. Returns the WARN line
/// and what the server printed by the time it exited.
fn bad_then_good(bad: &[u8]) -> (String, Finished) {
    let mut s = Server::start(MODULE);
    let udp = s.udp();
    let sender = udp.local_addr().to_string();
    udp.send_bytes(bad);
    let warn = s.expect_stderr(&format!("WARN naming sender {sender}"), |l| {
        l.contains("WARN") && l.contains(&sender)
    });

    udp.send_json(&json!({"host": "good", "service": "after", "metric": 1}));
    loop {
        let e = s.expect_printed("ok: ");
        if text(&e, "host") == "good" {
            break;
        }
    }

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    (warn, done)
}

/// The hosts of the events printed by the "ok: " printer.
fn printed_hosts(done: &Finished) -> Vec<String> {
    done.printed("ok: ")
        .iter()
        .map(|e| text(e, "host").to_string())
        .collect()
}

fn mentions_any(line: &str, words: &[&str]) -> bool {
    let l = line.to_ascii_lowercase();
    words.iter().any(|w| l.contains(w))
}

/// Words a JSON syntax error reason would contain (serde_json says e.g.
/// "expected value at line 1 column 26" or "EOF while parsing a list").
const SYNTAX: &[&str] = &[
    "json",
    "eof",
    "expect",
    "invalid",
    "pars",
    "syntax",
    "malformed",
    "column",
    "key must",
];

#[test]
fn malformed_json_is_logged_counted_and_skipped() {
    let (warn, done) = bad_then_good(br#"{"host": "a", "service": }"#);
    assert!(mentions_any(&warn, SYNTAX), "no reason in {warn:?}");
    assert_eq!(printed_hosts(&done), ["good"]);
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 1);
}

#[test]
fn a_field_of_the_wrong_type_is_logged_with_its_name() {
    let (warn, done) = bad_then_good(br#"{"host": "a", "service": "s", "metric": "abc"}"#);
    assert!(
        warn.contains("metric"),
        "the reason names the field: {warn:?}"
    );
    assert_eq!(printed_hosts(&done), ["good"]);
    let stats = done.stats();
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 1);
}

#[test]
fn a_60_kb_garbage_datagram_is_logged_and_skipped() {
    // Bytes that are neither JSON nor UTF-8, with no newlines.
    let garbage: Vec<u8> = (0..60 * 1024u32)
        .map(|i| match (i * 7919) % 251 {
            b if b as u8 == b'\n' => 0xff,
            b => b as u8,
        })
        .collect();
    let (warn, done) = bad_then_good(&garbage);
    assert_eq!(printed_hosts(&done), ["good"]);
    let stats = done.stats();
    assert!(
        warn.len() < 8 * 1024,
        "the log line should not dump the whole datagram ({} bytes)",
        warn.len()
    );
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert!(stats.count("bad_events") >= 1);
    assert_eq!(stats.count("events"), 1);
}

#[test]
fn a_truncated_json_array_is_logged_and_skipped() {
    let (warn, done) = bad_then_good(br#"[{"host":"a","metric":1},{"host":"b""#);
    assert!(mentions_any(&warn, SYNTAX), "no reason in {warn:?}");
    // The complete element before the cut may be salvaged; "b" never is.
    let hosts = printed_hosts(&done);
    assert!(
        hosts == ["good"] || hosts == ["a", "good"],
        "printed {hosts:?}"
    );
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert!(stats.count("bad_events") >= 1);
    assert_eq!(stats.count("events"), hosts.len() as u64);
}

#[test]
fn a_bad_array_element_does_not_spoil_the_good_one() {
    let mut s = Server::start(MODULE);
    let udp = s.udp();
    let sender = udp.local_addr().to_string();
    udp.send_json(&json!([
        {"host": "bad", "service": "s", "metric": "abc"},
        {"host": "fine", "service": "s", "metric": 2}
    ]));
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "fine");
    let warn = s.expect_stderr(&format!("WARN naming sender {sender}"), |l| {
        l.contains("WARN") && l.contains(&sender)
    });
    assert!(
        warn.contains("metric"),
        "the reason names the field: {warn:?}"
    );

    let done = s.terminate();
    assert_eq!(done.printed("ok: ").len(), 1);
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 1);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("events"), 1);
    assert_eq!(stats.count("bad_events"), 1);
}

#[test]
fn a_non_object_array_element_is_a_bad_event() {
    let mut s = Server::start(MODULE);
    s.send(json!([42, {"host": "fine", "service": "s"}, "text"]));
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "fine");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 1);
    assert_eq!(stats.count("bad_events"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
}

#[test]
fn a_raising_predicate_is_logged_with_traceback_and_counted() {
    let mut s = Server::start(MODULE);
    s.send(json!({"host": "h", "service": "boom", "metric": 1}));
    s.expect_stderr("with the exception", |l| {
        l.contains("kaboom from the predicate")
    });
    // The traceback follows the exception line in the same log record.
    s.expect_stderr("with its traceback", |l| l.contains("Traceback"));
    let stderr = s.stderr.all().join("\n");
    assert!(
        stderr.contains("ValueError"),
        "exception type logged:\n{stderr}"
    );
    s.expect_stderr("the traceback naming the module file", |l| {
        l.contains("streams.py\", line")
    });

    s.send(json!({"host": "good", "service": "after", "metric": 1}));
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "good");

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    assert_eq!(done.printed("ok: ").len(), 1);
    let stats = done.stats();
    assert_eq!(stats.node_count("stream/when", "errors"), 1);
    assert_eq!(stats.node_count("stream/when", "in"), 2);
    assert_eq!(stats.count("events"), 2);
    assert_eq!(
        stats.count("bad_events"),
        0,
        "a raising predicate is not bad input"
    );
}

#[test]
fn a_raising_coroutine_is_logged_and_the_stream_keeps_working() {
    let mut s = Server::start(
        r#"
from dmon.streams import *

@stream
def fragile(*targets):
    while True:
        e = yield
        if e.service == "boom":
            raise RuntimeError("coroutine blew up")
        send(e, *targets)

stream = fragile(printer("ok: "))
"#,
    );
    s.send(json!({"host": "first", "service": "s"}));
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "first");
    s.send(json!({"host": "h", "service": "boom"}));
    s.expect_stderr("with the exception", |l| l.contains("coroutine blew up"));
    s.expect_stderr("with its traceback", |l| l.contains("Traceback"));

    // A generator that raised is finished; the stream must still deliver
    // later events (dmon restarts it or keeps the node alive).
    s.send(json!({"host": "good", "service": "after"}));
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "good");
    let done = s.terminate();
    let stats = done.stats();
    let errors: u64 = stats
        .nodes()
        .iter()
        .filter_map(|n| n.get("errors").and_then(|v| v.as_u64()))
        .sum();
    assert_eq!(errors, 1, "one error counted on a node: {}", stats.0);
}
