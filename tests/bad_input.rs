//! Bad input never stops `dmon serve`: each bad datagram, bad array element
//! or raising predicate is logged on stderr (with the sender and the reason),
//! counted, and the next good event is still processed.

use crate::common;

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
/// socket and checks it is exactly `bad event from SENDER (N bytes): reason`,
/// then checks a good event still gets through. Returns what the server
/// printed by the time it exited.
fn bad_then_good(bad: &[u8], reason: &str) -> Finished {
    let mut s = Server::start(MODULE);
    let udp = s.udp();
    let sender = udp.local_addr().to_string();
    udp.send_bytes(bad);
    let warn = s.expect_stderr(&format!("WARN naming sender {sender}"), |l| {
        l.contains("WARN") && l.contains(&sender)
    });
    let expected = format!(
        " WARN bad event from {sender} ({} bytes): {reason}",
        bad.len()
    );
    assert!(
        warn.ends_with(&expected),
        "expected …{expected:?}, got {warn:?}"
    );

    udp.send_json(&json!({"host": "good", "service": "after", "metric": 1}));
    loop {
        let e = s.expect_printed("ok: ");
        if text(&e, "host") == "good" {
            break;
        }
    }

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    done
}

/// The hosts of the events printed by the "ok: " printer.
fn printed_hosts(done: &Finished) -> Vec<String> {
    done.printed("ok: ")
        .iter()
        .map(|e| text(e, "host").to_string())
        .collect()
}

#[test]
fn malformed_json_is_logged_counted_and_skipped() {
    let done = bad_then_good(
        br#"{"host": "a", "service": }"#,
        "line 1: expected value at column 26",
    );
    assert_eq!(printed_hosts(&done), ["good"]);
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 1);
}

/// The error names its line in the datagram, not in the bad object; the
/// lines around it are processed, a line holding an array included.
#[test]
fn a_bad_ndjson_line_is_named_by_its_line_in_the_datagram() {
    let done = bad_then_good(
        b"{\"host\":\"n1\"}\n{\"host\": bad}\n[{\"host\":\"n3\"},{\"host\":\"n4\"}]\n",
        "line 2: expected value at column 10",
    );
    assert_eq!(printed_hosts(&done), ["n1", "n3", "n4", "good"]);
    let stats = done.stats();
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 4);
}

#[test]
fn a_field_of_the_wrong_type_is_logged_with_its_name() {
    let done = bad_then_good(
        br#"{"host": "a", "service": "s", "metric": "abc"}"#,
        "line 1: invalid type: string \"abc\", expected a number for `metric` at column 45",
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
    // The whole log line: the datagram itself is not dumped into it.
    let done = bad_then_good(&garbage, "line 1: expected value at column 1");
    assert_eq!(printed_hosts(&done), ["good"]);
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 1);
}

#[test]
fn a_truncated_json_array_is_logged_and_skipped() {
    let done = bad_then_good(
        br#"[{"host":"a","metric":1},{"host":"b""#,
        "array after element 1: EOF while parsing an object at line 1 column 36",
    );
    // The complete element before the cut is kept; "b" is not.
    assert_eq!(printed_hosts(&done), ["a", "good"]);
    let stats = done.stats();
    assert_eq!(stats.count("datagrams"), 2);
    assert_eq!(stats.count("bad_datagrams"), 1);
    assert_eq!(stats.count("bad_events"), 1);
    assert_eq!(stats.count("events"), 2);
}

#[test]
fn a_bad_array_element_does_not_spoil_the_good_one() {
    let mut s = Server::start(MODULE);
    let udp = s.udp();
    let sender = udp.local_addr().to_string();
    // Literal bytes: the warning gives the datagram's size and the column.
    udp.send_bytes(
        br#"[{"host": "bad", "service": "s", "metric": "abc"},{"host": "fine", "service": "s", "metric": 2}]"#,
    );
    let e = s.expect_printed("ok: ");
    assert_eq!(text(&e, "host"), "fine");
    let warn = s.expect_stderr(&format!("WARN naming sender {sender}"), |l| {
        l.contains("WARN") && l.contains(&sender)
    });
    let expected = format!(
        " WARN bad event from {sender} (96 bytes): array element 0: invalid type: \
         string \"abc\", expected a number for `metric` at line 1 column 47"
    );
    assert!(
        warn.ends_with(&expected),
        "expected …{expected:?}, got {warn:?}"
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
