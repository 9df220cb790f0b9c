//! `--http`: index queries, WebSocket and SSE subscriptions, Prometheus
//! `/metrics`, driven by real clients: curl, the Python `websockets`
//! library (pinned in tests/requirements.txt) and a real Prometheus server
//! (./test.sh installs curl and prometheus).

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Indexes every event, then prints it: once "seen: " is out, the index
/// has it.
const INDEX_THEN_PRINT: &str = r#"
from dmon.streams import *

stream = index()
print_stream = printer("seen: ")
"#;

/// Every client command and poll is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Indexes every event and prints only those of host "late": for a flood.
const INDEX_PRINT_LATE: &str = r#"
from dmon.streams import *

stream = index()
print_stream = when(lambda e: e['host'] == "late", printer("seen: "))
"#;

fn start(extra: &[&str]) -> Server {
    start_module(INDEX_THEN_PRINT, extra)
}

fn start_module(module: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let s = Server::start_with(module, "py", &args);
    assert_ne!(s.http, 0, "no \"Listening for HTTP on:\" line");
    s
}

/// Sends `event` and waits until it is indexed.
fn index(s: &mut Server, event: Value) {
    s.send(event);
    s.expect_printed("seen: ");
}

/// Percent-encodes a query-string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `curl` of `path` on the server: (status, body).
fn curl(port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (./test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn query(port: u16, q: &str) -> (u16, String) {
    curl(port, &format!("/index?query={}", encode(q)), &[])
}

/// The value of one sample in `/metrics`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = curl(port, "/metrics", &[]);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn poll_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn index_queries_answer_once_as_json_and_bad_requests_get_a_status() {
    let mut s = start(&["--max-query-bytes", "200", "--max-query-results", "2"]);
    index(
        &mut s,
        json!({"host": "web1", "service": "cpu", "metric": 0.5}),
    );
    index(
        &mut s,
        json!({"host": "web2", "service": "cpu", "metric": 0.9}),
    );
    index(
        &mut s,
        json!({"host": "web2", "service": "disk", "state": "ok"}),
    );

    let (status, body) = query(s.http, r#"service = "cpu" and metric > 0.6"#);
    assert_eq!(status, 200, "{body}");
    let found: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(found[0]["host"], "web2");
    assert_eq!(found[0]["metric"], 0.9);

    let (status, body) = query(s.http, r#"host = "web1" and"#);
    assert_eq!(status, 400);
    assert!(body.starts_with("parse error at column"), "{body}");
    let (status, body) = query(s.http, &format!("host = \"{}\"", "x".repeat(300)));
    assert_eq!(status, 414);
    assert!(body.contains("--max-query-bytes"), "{body}");
    let (status, body) = query(s.http, "true");
    assert_eq!(status, 413);
    assert!(body.contains("matches 3 events") && body.contains("--max-query-results"));
    let (status, body) = curl(s.http, "/index", &[]);
    assert_eq!(status, 400);
    assert!(body.contains("query=Q"), "{body}");
    let (status, _) = curl(s.http, "/no/such/path", &[]);
    assert_eq!(status, 404);
    let (status, _) = curl(s.http, "/metrics", &["-X", "POST"]);
    assert_eq!(status, 405);

    // Still serving after all that.
    let (status, body) = query(s.http, r#"host = "web1""#);
    assert_eq!((status, body.contains("web1")), (200, true), "{body}");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_requests"), 8);
    assert_eq!(stats.count("http_bad_requests"), 6);
}

/// What the server answers `request` sent whole on a connection of its own,
/// read until the server closes it.
fn raw_answer(port: u16, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.write_all(request).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// hyper answers these itself, before any route: they are counted all
/// the same.
#[test]
fn a_uri_or_headers_too_long_are_answered_and_counted() {
    let s = start(&[]);
    // hyper's limit on a URI: 65,534 bytes.
    let uri = format!("/index?query={}", "x".repeat(70_000));
    let long_uri = format!("GET {uri} HTTP/1.1\r\nHost: dmon\r\n\r\n");
    let answer = raw_answer(s.http, long_uri.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");

    // hyper's limit on a request head (8 KiB + 400 KiB), reached exactly:
    // all of it is read, so closing sends no reset ahead of the answer.
    let mut big_head = b"GET /metrics HTTP/1.1\r\nHost: dmon\r\nX-Big: ".to_vec();
    big_head.resize(8192 + 4096 * 100, b'a');
    let answer = raw_answer(s.http, &big_head);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_requests"), 2);
    assert_eq!(stats.count("http_bad_requests"), 2);
}

/// `curl -i` of `path`: (status, the values of header `name`, body).
fn curl_header(port: u16, path: &str, name: &str) -> (u16, Vec<String>, String) {
    let (status, text) = curl(port, path, &["-i"]);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let values = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    (status, values, body.to_owned())
}

#[test]
fn an_unquoted_word_is_a_field_name_and_the_answer_says_so_in_a_header() {
    let mut s = start(&[]);
    index(&mut s, json!({"host": "a", "service": "cpu"}));
    index(&mut s, json!({"host": "b", "service": "x", "cpu": "x"}));
    let warning = "cpu is read as a field name; did you mean \"cpu\"?";
    let path = |route: &str, q: &str| format!("{route}?query={}", encode(q));

    // Riemann's meaning is kept (`cpu` is the attribute), the JSON is as
    // before, and the warning comes once, even for a word said twice.
    let (status, warnings, body) = curl_header(
        s.http,
        &path("/index", "service = cpu or host = cpu"),
        "x-dmon-query-warning",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(warnings, [warning]);
    let found: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(found[0]["host"], "b", "{body}");

    let (status, warnings, body) = curl_header(
        s.http,
        &path("/index", "service = \"cpu\""),
        "x-dmon-query-warning",
    );
    assert_eq!((status, warnings.len()), (200, 0), "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["host"],
        "a"
    );

    let (status, warnings, body) = curl_header(
        s.http,
        &path("/series", "service = cpu"),
        "x-dmon-query-warning",
    );
    assert_eq!(
        (status, warnings),
        (200, vec![warning.to_owned()]),
        "{body}"
    );
}

/// The Python `websockets` client: prints each message received (up to
/// `n`), or `status: N` when the upgrade is refused.
const WS_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

async def main(url, n):
    try:
        async with connect(url) as ws:
            print("connected", flush=True)
            for _ in range(n):
                print(await ws.recv(), flush=True)
    except InvalidStatus as e:
        print(f"status: {e.response.status_code}", flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"#;

fn ws_client(dir: &TempDir, url: &str, n: usize) -> (KillOnDrop, Lines) {
    let script = dir.write("ws_client.py", WS_CLIENT);
    let mut child = Command::new("python3")
        .arg(script)
        .args([url, &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3 (the test venv on PATH; ./test.sh sets it up)");
    let lines = Lines::spawn("ws client", child.stdout.take().unwrap());
    (KillOnDrop(child), lines)
}

fn next_json(lines: &mut Lines) -> Value {
    let line = lines
        .wait_for(IO_TIMEOUT, |l| l.starts_with('{'))
        .unwrap_or_else(|why| panic!("no event from the subscriber: {why}"));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn websocket_subscription_sends_current_matches_then_new_and_expired_events() {
    let mut s = start(&["--http-max-subscribers", "1"]);
    index(
        &mut s,
        json!({"host": "old", "service": "cpu", "metric": 1}),
    );
    index(
        &mut s,
        json!({"host": "old", "service": "mem", "metric": 1}),
    );
    let dir = TempDir::new();
    let url = format!(
        "ws://127.0.0.1:{}/index?subscribe=true&query={}",
        s.http,
        encode(r#"service = "cpu""#)
    );
    let (_client, mut lines) = ws_client(&dir, &url, 3);
    // The current match first: subscribed from then on.
    assert_eq!(next_json(&mut lines)["host"], "old");

    // The cap: a second subscriber is refused while the first is open.
    let (_second, mut refused) = ws_client(&dir, &url, 1);
    refused
        .wait_for(IO_TIMEOUT, |l| l == "status: 503")
        .expect("a second subscriber is refused with 503");

    index(
        &mut s,
        json!({"host": "new", "service": "mem", "metric": 2}),
    );
    index(
        &mut s,
        json!({"host": "new", "service": "cpu", "metric": 3, "ttl": 0.5}),
    );
    let e = next_json(&mut lines);
    assert_eq!((&e["host"], &e["metric"]), (&json!("new"), &json!(3)));
    // Expired from the index a little later, as Riemann sends it.
    let e = next_json(&mut lines);
    assert_eq!(
        (&e["host"], &e["state"]),
        (&json!("new"), &json!("expired"))
    );

    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscription_events"), 3);
    assert_eq!(stats.count("http_subscribers_refused"), 1);
}

/// `curl -N` on an SSE URL: its stdout lines, read as they come.
fn sse(port: u16, path: &str, extra: &[&str]) -> (KillOnDrop, Lines) {
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "60"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let lines = Lines::spawn("curl -N", child.stdout.take().unwrap());
    (KillOnDrop(child), lines)
}

fn next_data(lines: &mut Lines) -> Value {
    let line = lines
        .wait_for(IO_TIMEOUT, |l| l.starts_with("data: "))
        .unwrap_or_else(|why| panic!("no SSE event: {why}"));
    serde_json::from_str(&line["data: ".len()..]).unwrap()
}

#[test]
fn sse_by_accept_header_or_path_streams_matches() {
    let mut s = start(&[]);
    index(&mut s, json!({"host": "a", "service": "cpu", "metric": 1}));
    let q = encode(r#"host = "a""#);
    let (_by_header, mut header) = sse(
        s.http,
        &format!("/index?subscribe=true&query={q}"),
        &["-H", "Accept: text/event-stream"],
    );
    assert_eq!(next_data(&mut header)["service"], "cpu");
    // Without subscribe=true: only what is indexed from now on.
    let (_by_path, mut path) = sse(s.http, &format!("/index/sse?query={q}"), &[]);
    poll_until("the second subscriber", || {
        (metric(s.http, "dmon_http_subscribers") == Some(2.0)).then_some(())
    });
    index(&mut s, json!({"host": "b", "service": "cpu"}));
    index(&mut s, json!({"host": "a", "service": "disk", "metric": 7}));
    for lines in [&mut header, &mut path] {
        let e = next_data(lines);
        assert_eq!((&e["service"], &e["metric"]), (&json!("disk"), &json!(7)));
    }
}

#[test]
fn a_subscriber_that_does_not_read_is_dropped_and_ingest_goes_on() {
    let mut s = start_module(INDEX_PRINT_LATE, &["--http-max-subscribers", "1"]);
    let stalled = flood_until_a_stalled_subscriber_is_dropped(&s);
    // Its slot is free again for a reader.
    let (_reader, mut lines) = sse(s.http, "/index/sse?query=host%20%3D%20%22late%22", &[]);
    poll_until("the new subscriber", || {
        (metric(s.http, "dmon_http_subscribers") == Some(1.0)).then_some(())
    });
    index(&mut s, json!({"host": "late", "service": "cpu"}));
    assert_eq!(next_data(&mut lines)["host"], "late");
    drop(stalled);
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscribers_dropped"), 1);
    assert!(stats.count("processed") > 1000, "ingest went on");
}

/// `--memory-limit 16`: the subscribers' share is 1 MiB, less than the
/// 1,024 events of 1 kB a subscriber's queue may hold by count. A
/// subscriber that does not read is dropped when the share is full, and
/// says so; what it held is given back.
#[test]
fn a_subscriber_that_does_not_read_is_dropped_when_its_memory_share_is_full() {
    let mut s = start_module(INDEX_PRINT_LATE, &["--memory-limit", "16"]);
    let stalled = flood_until_a_stalled_subscriber_is_dropped(&s);
    s.expect_stderr("the reason", |l| {
        l.contains(
            "dropped a subscriber: the memory for subscribers' queues is full (--memory-limit)",
        )
    });
    poll_until("its memory given back", || {
        (metric(s.http, "dmon_memory_subscribers_bytes") == Some(0.0)).then_some(())
    });
    drop(stalled);
    let stats = s.terminate().stats();
    assert_eq!(
        stats.count("memory_subscribers_refused"),
        1,
        "{:?}",
        stats.0
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let s = start(&["--http-max-connections", "2"]);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", s.http)).unwrap())
        .collect();
    let mut third = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    third.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = third.write_all(b"GET /metrics HTTP/1.1\r\nHost: dmon\r\n\r\n");
    let mut buf = [0u8; 64];
    match third.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the third connection was served: {other:?}"),
    }
    drop(held);
    poll_until("a served request once the held connections closed", || {
        (curl(s.http, "/metrics", &[]).0 == 200).then_some(())
    });
    assert_eq!(s.terminate().stats().count("http_refused_connections"), 1);
}

#[test]
fn prometheus_scrapes_the_index_and_counters() {
    let mut s = start(&[]);
    index(
        &mut s,
        json!({"host": "web 1", "service": "cpu \"user\"", "metric": 2.5}),
    );
    index(&mut s, json!({"host": "web 1", "service": "no metric"}));
    let dir = TempDir::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dmon\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            s.http
        ),
    );
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (./test.sh installs it)"),
    );
    let ask = |promql: &str| -> Option<Vec<Value>> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-G"])
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
            .args(["--data-urlencode", &format!("query={promql}")])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let result = v["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    };
    let found = poll_until("prometheus to have scraped dmon_metric", || {
        ask(r#"dmon_metric{host="web 1"}"#)
    });
    assert_eq!(found.len(), 1, "the event without a metric is skipped");
    assert_eq!(found[0]["metric"]["service"], "cpu \"user\"");
    assert_eq!(found[0]["value"][1], "2.5");
    let events = ask("dmon_events_total").expect("dmon's counters");
    assert_eq!(events[0]["value"][1], "2");
    let up = ask(r#"up{job="dmon"}"#).expect("the target's health");
    assert_eq!(up[0]["value"][1], "1");
}

/// A client that holds a connection without finishing its request, or
/// without reading its answer, loses it after `--idle-timeout`: with one
/// connection allowed, the next client is served only once the server has
/// closed the stuck one.
#[test]
fn clients_that_stall_are_closed_after_the_idle_timeout() {
    let s = start_module(
        INDEX_PRINT_LATE,
        &["--http-max-connections", "1", "--idle-timeout", "1"],
    );
    let served = |s: &Server| curl(s.http, "/metrics", &[]).0 == 200;

    // Half a request, then silence.
    let mut half = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    half.write_all(b"GET /index?query=true HTTP/1.1\r\nHo")
        .unwrap();
    half.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = Vec::new();
    // Closed by the server (hyper may say 408 first), not by our timeout.
    let _ = half.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    poll_until("the slot of the half request", || served(&s).then_some(()));

    let stalled = stalled_subscriber(s.http);
    let mut flood = Flood::new(&s);
    poll_until("the stalled subscriber to be closed", || {
        flood.send();
        served(&s).then_some(())
    });
    drop(stalled);
    let stats = s.terminate().stats();
    assert!(
        stats.count("http_refused_connections") > 0,
        "the slot was held"
    );
}

/// An SSE subscriber to everything that never reads, with a small receive
/// buffer so the server's writes back up soon.
fn stalled_subscriber(port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled
        .write_all(b"GET /index/sse?query=true HTTP/1.1\r\nHost: dmon\r\n\r\n")
        .unwrap();
    stalled
}

/// Subscribes to everything without reading, then floods `s` until that
/// subscriber is dropped; returns its (still open) connection.
fn flood_until_a_stalled_subscriber_is_dropped(s: &Server) -> TcpStream {
    let stalled = stalled_subscriber(s.http);
    poll_until("the stalled subscriber", || {
        (metric(s.http, "dmon_http_subscribers") == Some(1.0)).then_some(())
    });
    let mut flood = Flood::new(s);
    poll_until("the stalled subscriber to be dropped", || {
        flood.send();
        (metric(s.http, "dmon_http_subscribers_dropped_total") == Some(1.0)).then_some(())
    });
    stalled
}

/// Indexed events of 1 kB, sent a thousand at a time, to fill what a
/// subscriber does not read.
struct Flood {
    udp: Udp,
    description: String,
    sent: u64,
}

impl Flood {
    fn new(s: &Server) -> Self {
        Flood {
            udp: s.udp(),
            description: "x".repeat(1000),
            sent: 0,
        }
    }

    fn send(&mut self) {
        for _ in 0..20 {
            let batch: Vec<Value> = (0..50)
                .map(|i| json!({"host": format!("h{i}"), "service": "load", "metric": self.sent, "description": self.description}))
                .collect();
            self.udp.send_json(&json!(batch));
            self.sent += 1;
        }
    }
}

/// A WebSocket client on a bare TCP stream, to see the server's pings and
/// answer them, or not (client libraries answer them unseen).
struct RawWs {
    stream: TcpStream,
}

/// Sends a GET of `path` with `headers` and reads the answer's head:
/// (status, the stream).
fn raw_get(port: u16, path: &str, headers: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: dmon\r\n{headers}\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), stream)
}

impl RawWs {
    /// Subscribes to `query` (`subscribe=true` too, as the dashboard does,
    /// if `dashboard`); the status when not upgraded.
    fn connect(port: u16, query: &str, dashboard: bool) -> Result<RawWs, u16> {
        let subscribe = if dashboard { "subscribe=true&" } else { "" };
        let (status, stream) = raw_get(
            port,
            &format!("/index?{subscribe}query={}", encode(query)),
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
        match status {
            101 => Ok(RawWs { stream }),
            other => Err(other),
        }
    }

    /// The next frame from the server: (opcode, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).expect("a frame");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.stream.read_exact(&mut n).unwrap();
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0u8; 8];
                self.stream.read_exact(&mut n).unwrap();
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0] & 0x0f, payload)
    }

    /// Answers a ping (a client's frames are masked: a zero mask).
    fn pong(&mut self, payload: &[u8]) {
        let mut frame = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).unwrap();
    }

    /// Answers pings until the server closes: the close frame's payload.
    fn until_closed(&mut self) -> Vec<u8> {
        loop {
            match self.frame() {
                (0x9, payload) => self.pong(&payload),
                (0x8, payload) => return payload,
                (op, payload) => panic!(
                    "frame {op:#x} {:?} on a subscription to nothing",
                    String::from_utf8_lossy(&payload)
                ),
            }
        }
    }
}

const NOTHING: &str = r#"host = "nomatch""#;

/// An SSE subscription to [`NOTHING`], once its first keep-alive came.
fn sse_to_nothing(port: u16) -> (KillOnDrop, Lines) {
    let (curl, mut lines) = sse(port, &format!("/index/sse?query={}", encode(NOTHING)), &[]);
    lines
        .wait_for(IO_TIMEOUT, |l| l == ": keep-alive")
        .expect("an SSE keep-alive comment");
    (curl, lines)
}

/// Waits until `/metrics` says `name` is `value`.
fn wait_for_metric(port: u16, name: &str, value: f64) {
    poll_until(&format!("{name} {value}"), || {
        (metric(port, name) == Some(value)).then_some(())
    });
}

/// Issue 24: subscriptions to what never comes were sent nothing, so a
/// dead one was never found. Each now gets a keep-alive every
/// `--http-keepalive`: an SSE comment, a WebSocket ping (answered, the
/// subscription goes on).
#[test]
fn subscribers_to_nothing_get_keep_alives() {
    let s = start(&["--http-keepalive", "0.2"]);
    let _sse = sse_to_nothing(s.http);
    let mut ws = RawWs::connect(s.http, NOTHING, false).expect("a WebSocket subscription");
    for _ in 0..3 {
        let (opcode, payload) = ws.frame();
        assert_eq!(opcode, 0x9, "a ping");
        ws.pong(&payload);
    }
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscribers_dropped"), 0);
    assert_eq!(stats.count("http_subscribers_idle"), 0);
}

/// Issue 24: 64 subscriptions to what never comes held every slot for
/// ever, and the dashboard got 503. One sent nothing but keep-alives for
/// `--idle-timeout` is now closed and counted, and its slot serves the
/// next subscriber.
#[test]
fn idle_subscriptions_are_closed_and_free_their_slots() {
    let s = start(&[
        "--http-max-subscribers",
        "2",
        "--idle-timeout",
        "3",
        "--http-keepalive",
        "0.2",
    ]);
    // The idle timeout leaves time, on a loaded machine too, to open both
    // and be refused a third before the first is closed.
    let (_sse, mut lines) = sse_to_nothing(s.http);
    let mut ws = RawWs::connect(s.http, NOTHING, false).expect("a second subscription");
    assert_eq!(
        RawWs::connect(s.http, "true", true).err(),
        Some(503),
        "the dashboard's subscription, over the limit"
    );
    let close = ws.until_closed();
    assert_eq!(&close[..2], &1001u16.to_be_bytes(), "going away");
    assert!(
        String::from_utf8_lossy(&close[2..]).contains("--idle-timeout"),
        "{close:?}"
    );
    lines
        .wait_for(IO_TIMEOUT, |l| l.contains("--idle-timeout"))
        .expect("the SSE subscription's closing comment");
    wait_for_metric(s.http, "dmon_http_subscribers", 0.0);
    let _dashboard =
        RawWs::connect(s.http, "true", true).expect("the dashboard's subscription, now served");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscribers_idle"), 2);
    assert_eq!(stats.count("http_subscribers_refused"), 1);
    assert_eq!(stats.count("http_subscribers_dropped"), 0);
}

/// Issue 24: a WebSocket subscriber that stops reading, sent nothing, held
/// its slot for ever. It does not answer the ping, so it is dropped and
/// counted once the next ping is due, and its slot serves the next one.
#[test]
fn a_websocket_subscriber_that_does_not_answer_pings_is_dropped() {
    let s = start(&["--http-max-subscribers", "1", "--http-keepalive", "0.2"]);
    let _silent = RawWs::connect(s.http, NOTHING, false).expect("a subscription");
    wait_for_metric(s.http, "dmon_http_subscribers_dropped_total", 1.0);
    wait_for_metric(s.http, "dmon_http_subscribers", 0.0);
    let _next = RawWs::connect(s.http, NOTHING, false).expect("the next subscriber, served");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscribers_dropped"), 1);
    assert_eq!(stats.count("http_subscribers_idle"), 0);
}

/// Issue 24: an SSE subscriber whose connection breaks (reset, as by a
/// peer that went away) was let go uncounted. The keep-alives find it, and
/// it is counted as dropped.
#[test]
fn an_sse_subscriber_whose_connection_is_reset_is_counted_as_dropped() {
    let s = start(&["--http-keepalive", "0.2"]);
    let (status, stream) = raw_get(s.http, &format!("/index/sse?query={}", encode(NOTHING)), "");
    assert_eq!(status, 200);
    // Closing with a zero linger resets the connection.
    let socket = socket2::Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
    wait_for_metric(s.http, "dmon_http_subscribers_dropped_total", 1.0);
    wait_for_metric(s.http, "dmon_http_subscribers", 0.0);
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_subscribers_dropped"), 1);
    assert_eq!(stats.count("http_subscribers_idle"), 0);
}

/// 9,900 indexed events of 6 KB each (a 60 MB answer to `query=true`);
/// 40 clients each ask for everything three times and never read. Before,
/// every answer was built whole and kept until written: RSS grew by
/// gigabytes. Now an answer is encoded a chunk at a time as it is read, and
/// what it keeps alive is charged to the replies' share of --memory-limit:
/// those that do not fit get 503 "server busy", counted in
/// memory_replies_refused. Bound: RSS grows by less than that share
/// (128 MiB of the default 1 GiB), and a reader gets the whole answer
/// once the non-readers are gone.
#[test]
fn unread_index_answers_are_bounded_by_the_memory_budget() {
    const EVENTS: usize = 9_900;
    const CLIENTS: usize = 40;
    let s = start_module("from dmon.streams import *\nstream = index()\n", &[]);
    let pid = s.pid();
    let mut client =
        dmon::client::RiemannClient::connect(([127, 0, 0, 1], s.riemann_tcp).into(), IO_TIMEOUT)
            .expect("connect over Riemann TCP");
    let description = "d".repeat(6_000);
    for start in (0..EVENTS).step_by(500) {
        let events: Vec<dmon::event::Event> = (start..(start + 500).min(EVENTS))
            .map(|i| {
                dmon::codec::json::decode_event(&format!(
                    r#"{{"host":"h","service":"svc-{i}","metric":{i},"description":"{description}"}}"#
                ))
                .expect("an event")
            })
            .collect();
        client.send_events(&events).expect("acknowledged");
    }
    let before = rss_kib(pid);
    let request = "GET /index?query=true HTTP/1.1\r\nHost: dmon\r\n\r\n".repeat(3);
    let (mut readers, peak) = peak_rss_during(pid, || {
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut c = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
                c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                c.write_all(request.as_bytes()).unwrap();
                c
            })
            .collect();
        // No signal says the server has answered what it will: watch its
        // memory for a while with every answer pending.
        std::thread::sleep(Duration::from_secs(3));
        clients
    });
    // Each client's first answer: the whole array, or 503 at once.
    let mut busy = 0;
    for c in &mut readers {
        let mut head = [0u8; 12];
        c.read_exact(&mut head).expect("an answer's status line");
        match &head[9..12] {
            b"200" => {}
            b"503" => busy += 1,
            other => panic!("status {}", String::from_utf8_lossy(other)),
        }
    }
    drop(readers);
    eprintln!(
        "unread answers: RSS {before} KiB before, peak {peak} KiB; {busy} of {CLIENTS} got 503"
    );
    assert!(busy > 0, "some answers must not fit in 128 MiB");
    assert!(
        peak < before + 128 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    let (status, body) = poll_until("a whole answer once the others left", || {
        let (status, body) = query(s.http, "true");
        (status == 200).then_some((status, body))
    });
    assert_eq!(status, 200);
    let answer: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
    assert_eq!(answer.len(), EVENTS);
    let refused = metric(s.http, "dmon_memory_replies_refused_total").expect("the counter");
    assert!(refused >= busy as f64, "{refused} refused, {busy} seen");
    assert_eq!(metric(s.http, "dmon_memory_replies_bytes"), Some(0.0));
}
