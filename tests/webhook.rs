//! `webhook`, against a real HTTP server (tests/support/http_sink.py, on
//! Python's http.server) started by each test: what it received, request by
//! request; a server that answers 500 (retried with backoff) or 400 (given
//! up); and one that is down (counted, never blocking the event path).

use crate::common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// The HTTP server: its port and the requests it reports.
struct HttpSink {
    _child: KillOnDrop,
    _stdin: ChildStdin,
    port: u16,
    requests: Lines,
}

impl HttpSink {
    /// Starts it; it answers 500 to the first `fail_first` requests.
    fn start(fail_first: u32) -> HttpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/http_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(fail_first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map(KillOnDrop)
            .expect("python3 for the HTTP server");
        let stdin = child.0.stdin.take().unwrap();
        let mut requests = Lines::spawn("http sink", child.0.stdout.take().unwrap());
        let ready = requests
            .wait_for(TIMEOUT, |l| l.starts_with("READY "))
            .unwrap_or_else(|why| panic!("the HTTP server never listened: {why}"));
        let port = ready[6..].trim().parse().unwrap();
        HttpSink {
            _child: child,
            _stdin: stdin,
            port,
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next request reported for `path`.
    fn next(&mut self, path: &str) -> Value {
        let line = self
            .requests
            .wait_for_keyed(path, TIMEOUT, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["path"] == path)
            })
            .unwrap_or_else(|why| panic!("no request for {path}: {why}"));
        serde_json::from_str(&line).unwrap()
    }
}

fn body(request: &Value) -> Value {
    serde_json::from_str(request["body"].as_str().unwrap()).expect("a JSON body")
}

/// One event per request with its headers; batches as JSON arrays; a
/// template with fields that try to break out of their string.
#[test]
fn webhook_posts_events_batches_and_templates() {
    let mut http = HttpSink::start(0);
    let module = format!(
        "from dmon.streams import *\n\n\
         one_stream = where('service = \"a\"', webhook({one:?}, headers={{\"Authorization\": \"Bearer t0k\"}}))\n\
         batch_stream = where('service = \"b\"', webhook({batch:?}, batch=3))\n\
         slack_stream = where('service = \"c\"', webhook({slack:?}, \
         template='{{\"text\": \"{{host}} {{service}} is {{state}}\", \"value\": {{metric}}}}'))\n",
        one = http.url("/one"),
        batch = http.url("/batch"),
        slack = http.url("/slack"),
    );
    let s = Server::start(&module);
    s.send(json!({"host": "h1", "service": "a", "metric": 1.5, "time": 100}));
    s.send(json!([
        {"host": "h1", "service": "b", "metric": 1, "time": 100},
        {"host": "h2", "service": "b", "metric": 2, "time": 100},
        {"host": "h3", "service": "b", "metric": 3, "time": 100},
    ]));
    s.send(
        json!({"host": "web\"1\n\", \"x\": \"", "service": "c", "state": "critical", "metric": 7}),
    );

    let one = http.next("/one");
    assert_eq!(one["headers"]["authorization"], "Bearer t0k");
    assert_eq!(one["headers"]["content-type"], "application/json");
    assert_eq!(
        body(&one),
        json!({"host": "h1", "service": "a", "metric": 1.5, "time": 100})
    );

    // The three may come in one request or a few, each an array, in order.
    let mut hosts = Vec::new();
    while hosts.len() < 3 {
        let b = body(&http.next("/batch"));
        let events = b.as_array().expect("a batch is an array");
        assert!(!events.is_empty() && events.len() <= 3, "{b}");
        hosts.extend(
            events
                .iter()
                .map(|e| e["host"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(hosts, ["h1", "h2", "h3"]);

    let slack = body(&http.next("/slack"));
    assert_eq!(
        slack,
        json!({"text": "web\"1\n\", \"x\": \" c is critical", "value": 7})
    );

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    let sink = stats.sink("webhook", &format!("{} batch=3", http.url("/batch")));
    assert_eq!((&sink["sent"], &sink["failed"]), (&json!(3), &json!(0)));
    let sink = stats.sink("webhook", &http.url("/slack"));
    assert_eq!(
        (&sink["sent"], &sink["connections"]),
        (&json!(1), &json!(1))
    );
}

/// 500s are retried, further apart each time, until one goes; a 400 is
/// given up at once. Both counted.
#[test]
fn webhook_retries_500s_with_backoff_and_gives_up_on_400() {
    let mut http = HttpSink::start(3);
    let module = format!(
        "from dmon.streams import *\n\n\
         ok_stream = where('service = \"ok\"', webhook({ok:?}))\n\
         bad_stream = where('service = \"bad\"', webhook({bad:?}))\n",
        ok = http.url("/ok"),
        bad = http.url("/bad"),
    );
    let s = Server::start(&module);
    s.send(json!({"host": "h", "service": "ok", "metric": 1, "time": 100}));
    let attempts: Vec<Value> = (0..4).map(|_| http.next("/ok")).collect();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &json!(500), &json!(200)]
    );
    assert!(attempts.iter().all(|a| a["body"] == attempts[0]["body"]));
    let at: Vec<f64> = attempts
        .iter()
        .map(|a| a["time"].as_f64().unwrap())
        .collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.1 s, 0.2 s, 0.4 s: doubling.
    for (gap, least) in gaps.iter().zip([0.1, 0.2, 0.4]) {
        assert!(*gap >= least * 0.9, "gaps {gaps:?}");
    }

    s.send(json!({"host": "h", "service": "bad", "metric": 1, "time": 100}));
    assert_eq!(http.next("/bad")["status"], 400);

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    let ok = stats.sink("webhook", &http.url("/ok"));
    assert_eq!(ok["sent"], 1, "{ok}");
    assert_eq!(ok["retried"], 3, "{ok}");
    assert_eq!(ok["failed"], 0, "{ok}");
    assert_eq!(
        ok["connections"], 4,
        "a new connection after each failure: {ok}"
    );
    let bad = stats.sink("webhook", &http.url("/bad"));
    assert_eq!(
        (&bad["sent"], &bad["failed"]),
        (&json!(0), &json!(1)),
        "{bad}"
    );
    assert_eq!(bad["retried"], 0, "{bad}");
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("given up") && l.contains("HTTP 400")),
        "no warning for the 400"
    );
}

/// Nothing listens: events keep flowing past the webhook; what does not
/// fit its queue is dropped, counted, and the drop logged once.
#[test]
fn webhook_to_a_dead_server_never_blocks() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/dead");
    let mut s = Server::start(&format!(
        "from dmon.streams import *\n\n\
         stream = sdo(webhook({url:?}), where('service = \"last\"', printer(\"seen: \")))\n"
    ));
    let start = Instant::now();
    for chunk in 0..30 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"host": "h", "service": "s", "metric": chunk * 100 + i}))
            .collect();
        s.send(Value::Array(events));
    }
    s.send(json!({"host": "h", "service": "last", "metric": 1}));
    s.expect_printed("seen: ");
    assert!(start.elapsed() < TIMEOUT);

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let sink = done.stats().sink("webhook", &url);
    assert_eq!(sink["sent"], 0, "{sink}");
    // The batch in the worker's hands may still be settling as the stats
    // are written: waiting, then dropped.
    let lost = sink["dropped"].as_u64().unwrap() + sink["waiting"].as_u64().unwrap();
    assert_eq!(lost, 3001, "everything, counted: {sink}");
    assert!(sink["retried"].as_u64().unwrap() >= 1, "{sink}");
    let full = done
        .stderr
        .iter()
        .filter(|l| l.contains("queue full"))
        .count();
    assert_eq!(full, 1, "the drops are logged once");
}
