//! dmon's Riemann protocol support, driven by real third-party clients:
//! Debian's `riemann-client` (riemann-c-client), the Python `riemann-client`
//! library (PyPI), and dmon's own `dmon send --riemann` / `dmon query`.
//! Also: `where(...)` in a stream module, and an event printing the same
//! whichever way it arrived (JSON over UDP, Riemann over TCP or UDP).
//!
//! ./test.sh installs both clients (apt riemann-c-client; riemann-client into
//! .venv). Both packages install a command named `riemann-client`: the C one
//! is always run as /usr/bin/riemann-client, the Python one only as a library.

use crate::common;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use dmon::client::RiemannClient;
use dmon::codec::riemann::{Attribute, Msg, ProtoEvent};
use prost::Message;
use serde_json::{json, Value};

/// Every socket operation and client command is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints every event and indexes it (so queries find it).
const PRINT_AND_INDEX: &str = r#"
from dmon.streams import *

stream = printer("rc: ")
index_stream = index()
"#;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The output of a command run to completion.
#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with stdin closed, for at most IO_TIMEOUT (killed after).
fn run(cmd: &mut Command) -> Out {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let status = match wait_timeout(&mut child, IO_TIMEOUT) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {IO_TIMEOUT:?}");
        }
    };
    Out {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Debian's riemann-c-client command (not the venv's Python one of the same name).
fn c_client() -> Command {
    const PATH: &str = "/usr/bin/riemann-client";
    assert!(
        Path::new(PATH).exists(),
        "{PATH} is missing: install Debian's riemann-c-client (./test.sh does)"
    );
    Command::new(PATH)
}

/// `riemann-client send ARGS… 127.0.0.1 PORT`; must succeed.
fn c_send(args: &[&str], port: u16) -> Out {
    let port = port.to_string();
    let out = run(c_client().arg("send").args(args).args(["127.0.0.1", &port]));
    assert!(
        out.status.success(),
        "riemann-client send {args:?} failed: {out:?}"
    );
    out
}

/// `riemann-client query QUERY ARGS… 127.0.0.1 PORT`.
fn c_query(query: &str, args: &[&str], port: u16) -> Out {
    let port = port.to_string();
    run(c_client()
        .args(["query", query])
        .args(args)
        .args(["127.0.0.1", &port]))
}

/// The one event in a JSON array whose `service` is `service`.
fn by_service<'a>(events: &'a [Value], service: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("service").and_then(Value::as_str) == Some(service))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one event with service {service:?} in {events:#?}"
    );
    found[0]
}

fn assert_int_metric(e: &Value, expected: i64) {
    let m = &e["metric"];
    assert!(m.is_i64(), "metric must stay an integer: {e}");
    assert_eq!(m.as_i64(), Some(expected), "{e}");
}

fn assert_float_metric(e: &Value, expected: f64) {
    let m = &e["metric"];
    assert!(m.is_f64(), "metric must stay a float: {e}");
    assert_close(m.as_f64().unwrap(), expected);
}

/// The venv's python3 with the `riemann_client` library, running `script`.
fn python(script: &Path, args: &[String]) -> Out {
    let out = run(Command::new("python3").arg(script).args(args));
    assert!(
        out.status.success(),
        "python3 {} {args:?} failed (does the python3 on PATH have riemann-client? \
         ./test.sh puts it in .venv): {out:?}",
        script.display()
    );
    out
}

fn riemann_client_to(port: u16) -> RiemannClient {
    RiemannClient::connect(SocketAddr::from(([127, 0, 0, 1], port)), IO_TIMEOUT)
        .expect("connect to dmon's Riemann TCP port")
}

fn attr(k: &str, v: &str) -> Attribute {
    Attribute {
        key: bytes(k),
        value: bytes(v),
    }
}

/// A protobuf bytes field (whichever Rust type the codec uses for it).
fn bytes<T: From<Vec<u8>>>(s: &str) -> Option<T> {
    Some(s.as_bytes().to_vec().into())
}

/// A repeated protobuf bytes field.
fn tags<T: From<Vec<u8>>>(tags: &[&str]) -> Vec<T> {
    tags.iter().map(|t| t.as_bytes().to_vec().into()).collect()
}

/// Sends `events` in one message and requires the acknowledgement.
fn send_acked(port: u16, events: Vec<ProtoEvent>) {
    let reply = riemann_client_to(port)
        .request(&Msg {
            events,
            ..Msg::default()
        })
        .expect("the message is acknowledged");
    assert_eq!(reply.ok, Some(true), "{reply:?}");
}

/// Whole seconds since the epoch: a time that stays in the index (not expired).
fn now_secs() -> i64 {
    now() as i64
}

// ---------------------------------------------------------------------------
// 1. Debian's riemann-client (riemann-c-client)
// ---------------------------------------------------------------------------

#[test]
fn c_client_sends_over_tcp_and_udp_and_queries_back() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let (tcp, udp) = (s.riemann_tcp, s.riemann_udp);
    assert!(tcp != 0 && udp != 0, "Riemann listeners not announced");

    // TCP: a double metric, tags, an attribute, ttl, state, description.
    c_send(
        &[
            "--host",
            "web1",
            "--service",
            "cpu",
            "--state",
            "ok",
            "--metric-d",
            "2.5",
            "--ttl",
            "60",
            "--tag",
            "prod",
            "--tag",
            "eu",
            "--attribute",
            "dc=eu",
            "--description",
            "busy cpu",
        ],
        tcp,
    );
    let e = s.expect_printed("rc: ");
    assert_eq!(text(&e, "host"), "web1");
    assert_eq!(text(&e, "service"), "cpu");
    assert_eq!(text(&e, "state"), "ok");
    assert_eq!(text(&e, "description"), "busy cpu");
    assert_float_metric(&e, 2.5);
    assert_close(num(&e, "ttl"), 60.0);
    assert_eq!(e["tags"], json!(["prod", "eu"]));
    assert_eq!(e["attributes"]["dc"], "eu", "{e}");
    // The client sets no time field it means us to ignore: time is set.
    let t = num(&e, "time");
    assert!((t - now()).abs() < 60.0, "time {t} is not about now: {e}");

    // TCP: an integer metric stays an integer; so does a negative one
    // (sint64 is zigzag-encoded) and one beyond a double's precision.
    c_send(&["-h", "web1", "-S", "mem", "--metric-sint64", "42"], tcp);
    assert_int_metric(&s.expect_printed("rc: "), 42);
    c_send(&["-h", "web1", "-S", "delta", "--metric-sint64=-5"], tcp);
    assert_int_metric(&s.expect_printed("rc: "), -5);
    c_send(
        &[
            "-h",
            "web1",
            "-S",
            "big",
            "--metric-sint64=9007199254740993",
        ],
        tcp,
    );
    let line = s.expect_stdout("with the big integer", |l| {
        l.starts_with("rc: ") && l.contains("\"big\"")
    });
    assert!(
        line.contains("\"metric\":9007199254740993"),
        "2^53+1 must print exactly: {line}"
    );
    let _ = s.expect_printed("rc: ");

    // TCP: a whole-numbered double stays a float; a float metric is widened
    // to the decimal the client meant.
    c_send(&["-h", "web1", "-S", "load", "--metric-d", "3"], tcp);
    let e = s.expect_printed("rc: ");
    assert_float_metric(&e, 3.0);
    c_send(&["-h", "web1", "-S", "disk", "--metric-f", "0.1"], tcp);
    let e = s.expect_printed("rc: ");
    assert_float_metric(&e, 0.1);
    assert_eq!(e["metric"].as_f64(), Some(0.1), "{e}");

    // UDP (-U): no reply, so wait for each printed line.
    c_send(
        &[
            "-U",
            "-h",
            "web2",
            "-S",
            "udp-int",
            "--metric-sint64",
            "7",
            "--tag",
            "udp",
            "--attribute",
            "via=udp",
            "--ttl",
            "120",
        ],
        udp,
    );
    let e = s.expect_printed("rc: ");
    assert_eq!(text(&e, "host"), "web2");
    assert_eq!(text(&e, "service"), "udp-int");
    assert_int_metric(&e, 7);
    assert_eq!(e["tags"], json!(["udp"]));
    assert_eq!(e["attributes"]["via"], "udp", "{e}");
    assert_close(num(&e, "ttl"), 120.0);
    c_send(
        &["-U", "-h", "web2", "-S", "udp-float", "--metric-d", "0.25"],
        udp,
    );
    let e = s.expect_printed("rc: ");
    assert_eq!(text(&e, "service"), "udp-float");
    assert_float_metric(&e, 0.25);

    // Query back, as JSON.
    let out = c_query("host = \"web1\"", &["-j"], tcp);
    assert!(out.status.success(), "query failed: {out:?}");
    let found: Vec<Value> = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("query -j output is not a JSON array ({e}): {out:?}"));
    let services: Vec<&str> = found
        .iter()
        .map(|e| e["service"].as_str().unwrap_or(""))
        .collect();
    // The index answers sorted by host, then service.
    assert_eq!(
        services,
        ["big", "cpu", "delta", "disk", "load", "mem"],
        "{found:#?}"
    );
    let cpu = by_service(&found, "cpu");
    assert_eq!(cpu["host"], "web1");
    assert_eq!(cpu["state"], "ok");
    assert_eq!(cpu["description"], "busy cpu");
    assert_eq!(cpu["metric_d"].as_f64(), Some(2.5), "{cpu}");
    assert_eq!(cpu["metric_f"].as_f64(), Some(2.5), "{cpu}");
    assert!(cpu.get("metric_sint64").is_none(), "{cpu}");
    assert_eq!(cpu["ttl"].as_f64(), Some(60.0), "{cpu}");
    assert_eq!(cpu["tags"], json!(["prod", "eu"]));
    assert_eq!(cpu["attributes"]["dc"], "eu", "{cpu}");
    let mem = by_service(&found, "mem");
    assert_eq!(mem["metric_sint64"].as_i64(), Some(42), "{mem}");
    assert_eq!(mem["metric_f"].as_f64(), Some(42.0), "{mem}");
    assert!(mem.get("metric_d").is_none(), "{mem}");
    assert_eq!(
        by_service(&found, "delta")["metric_sint64"].as_i64(),
        Some(-5)
    );
    assert_eq!(
        by_service(&found, "big")["metric_sint64"].as_i64(),
        Some(9007199254740993)
    );
    assert_eq!(by_service(&found, "load")["metric_d"].as_f64(), Some(3.0));

    // The UDP events are in the index too.
    let out = c_query("service =~ \"udp-%\"", &["-j"], tcp);
    assert!(out.status.success(), "query failed: {out:?}");
    let found: Vec<Value> = serde_json::from_str(out.stdout.trim()).expect("JSON array");
    assert_eq!(found.len(), 2, "{found:#?}");
    let ui = by_service(&found, "udp-int");
    assert_eq!(ui["metric_sint64"].as_i64(), Some(7), "{ui}");
    assert_eq!(ui["tags"], json!(["udp"]));
    assert_eq!(ui["attributes"]["via"], "udp");
    assert_eq!(ui["ttl"].as_f64(), Some(120.0));
    assert_eq!(
        by_service(&found, "udp-float")["metric_d"].as_f64(),
        Some(0.25)
    );

    // The C client's own text format.
    let out = c_query("service = \"cpu\" and tagged \"prod\"", &[], tcp);
    assert!(out.status.success(), "query failed: {out:?}");
    for want in [
        "host = web1",
        "service = cpu",
        "state = ok",
        "description = busy cpu",
        "metric_d = 2.5",
        "tags = [ prod eu ]",
        "dc = eu",
    ] {
        assert!(
            out.stdout.contains(want),
            "query output lacks {want:?}:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("service = mem"),
        "only cpu matches:\n{}",
        out.stdout
    );

    // Nothing matches: an empty array.
    let out = c_query("service = \"nope\"", &["-j"], tcp);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "[]");

    // A bad query: the client reports the server's error and fails.
    let out = c_query("service = ", &[], tcp);
    assert!(!out.status.success(), "a bad query must fail: {out:?}");
    assert!(
        out.stderr.contains("parse error at column"),
        "the server's parse error reaches the client: {out:?}"
    );

    let done = s.terminate();
    let stats = done.stats();
    // 6 sends and 5 queries over TCP, one connection each; 2 over UDP.
    assert_eq!(stats.count("connections"), 11, "{:?}", stats.0);
    assert_eq!(stats.count("queries"), 5, "{:?}", stats.0);
    assert_eq!(stats.count("events"), 8, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 0, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 2. The Python riemann-client library
// ---------------------------------------------------------------------------

const PY_CLIENT: &str = r#"
import json, sys
from riemann_client.client import Client
from riemann_client.transport import TCPTransport, UDPTransport, RiemannError

phase, tcp, udp, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

if phase == "send":
    with Client(TCPTransport("127.0.0.1", tcp, timeout=10)) as c:
        r = c.event(host="py1", service="py-int", metric_sint64=42, state="ok",
                    description="from python", tags=["a", "b"],
                    attributes={"dc": "eu", "team": "ops"}, ttl=300.0, time=now)
        print("ACK", r.ok, flush=True)
        r = c.event(host="py1", service="py-double", metric_d=2.5, time=now)
        print("ACK", r.ok, flush=True)
        r = c.event(host="py1", service="py-float", metric_f=0.25, time=now)
        print("ACK", r.ok, flush=True)
        # Two events in one message.
        r = c.events({"host": "py1", "service": "py-batch-1", "metric_sint64": -3},
                     {"host": "py1", "service": "py-batch-2", "metric_d": 0.001})
        print("ACK", r.ok, flush=True)
    with Client(UDPTransport("127.0.0.1", udp)) as c:
        c.event(host="py1", service="py-udp", metric_sint64=7, tags=["u"])
        print("SENT UDP", flush=True)
elif phase == "query":
    with Client(TCPTransport("127.0.0.1", tcp, timeout=10)) as c:
        print("ALL", json.dumps(c.query('host = "py1"')), flush=True)
        try:
            c.query("metric >")
            print("NOERR", flush=True)
        except RiemannError as e:
            print("ERR", e, flush=True)
        # The same connection still answers after the error.
        print("INT", json.dumps(c.query('service = "py-int" and metric = 42')), flush=True)
"#;

#[test]
fn python_riemann_client_sends_and_queries() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let script = s.dir().join("py_client.py");
    std::fs::write(&script, PY_CLIENT).expect("write script");
    let now = now_secs();
    let (tcp, udp) = (s.riemann_tcp, s.riemann_udp);
    let args = |phase: &str| {
        vec![
            phase.to_string(),
            tcp.to_string(),
            udp.to_string(),
            now.to_string(),
        ]
    };

    let out = python(&script, &args("send"));
    let acks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ACK"))
        .collect();
    assert_eq!(acks, ["ACK True"; 4], "{out:?}");

    let mut printed = Vec::new();
    for _ in 0..6 {
        printed.push(s.expect_printed("rc: "));
    }
    let e = by_service(&printed, "py-int");
    assert_eq!(text(e, "host"), "py1");
    assert_int_metric(e, 42);
    assert_eq!(text(e, "state"), "ok");
    assert_eq!(text(e, "description"), "from python");
    assert_eq!(e["tags"], json!(["a", "b"]));
    assert_eq!(e["attributes"], json!({"dc": "eu", "team": "ops"}));
    assert_close(num(e, "ttl"), 300.0);
    assert_eq!(
        e["time"].as_i64(),
        Some(now),
        "an int time stays an int: {e}"
    );
    assert_float_metric(by_service(&printed, "py-double"), 2.5);
    assert_float_metric(by_service(&printed, "py-float"), 0.25);
    assert_int_metric(by_service(&printed, "py-batch-1"), -3);
    assert_float_metric(by_service(&printed, "py-batch-2"), 0.001);
    let u = by_service(&printed, "py-udp");
    assert_int_metric(u, 7);
    assert_eq!(u["tags"], json!(["u"]));

    let out = python(&script, &args("query"));
    let line = |prefix: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {out:?}"))
            .to_string()
    };
    let all: Vec<Value> = serde_json::from_str(&line("ALL ")).expect("JSON list");
    assert_eq!(all.len(), 6, "{all:#?}");
    let e = by_service(&all, "py-int");
    assert_eq!(e["metric_sint64"], json!(42));
    assert_eq!(e["metric_f"].as_f64(), Some(42.0), "metric_f is always set");
    assert!(e.get("metric_d").is_none(), "{e}");
    assert_eq!(e["tags"], json!(["a", "b"]));
    assert_eq!(e["attributes"], json!({"dc": "eu", "team": "ops"}));
    assert_eq!(e["state"], "ok");
    assert_eq!(e["description"], "from python");
    assert_eq!(e["ttl"].as_f64(), Some(300.0));
    assert_eq!(e["time"], json!(now));
    let d = by_service(&all, "py-double");
    assert_eq!(d["metric_d"].as_f64(), Some(2.5), "{d}");
    assert_eq!(d["metric_f"].as_f64(), Some(2.5), "{d}");
    assert!(d.get("metric_sint64").is_none(), "{d}");
    let f = by_service(&all, "py-float");
    assert_eq!(f["metric_d"].as_f64(), Some(0.25), "{f}");
    assert_eq!(f["metric_f"].as_f64(), Some(0.25), "{f}");
    assert_eq!(by_service(&all, "py-batch-1")["metric_sint64"], json!(-3));
    assert_eq!(
        by_service(&all, "py-batch-2")["metric_d"].as_f64(),
        Some(0.001)
    );
    assert_eq!(by_service(&all, "py-udp")["metric_sint64"], json!(7));

    let err = line("ERR ");
    assert!(
        err.contains("parse error at column"),
        "a bad query raises RiemannError with the parse error: {err:?} ({out:?})"
    );
    let one: Vec<Value> = serde_json::from_str(&line("INT ")).expect("JSON list");
    assert_eq!(one.len(), 1, "{one:#?}");
    assert_eq!(one[0]["service"], "py-int");

    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 6, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 0, "{:?}", stats.0);
    // Two good queries and the bad one.
    assert_eq!(stats.count("queries"), 3, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 3. where(...) in a stream module
// ---------------------------------------------------------------------------

#[test]
fn where_filters_with_compiled_queries() {
    let mut s = Server::start(
        r#"
from dmon.streams import *

hot_stream = where('service =~ "cpu%" and metric > 0.9', printer("hot: "))
prod_stream = where('tagged "prod" and not state = "ok"', printer("prod: "))
attr_stream = where('dc = "eu" or (metric_f >= 10 and description ~= "^disk")', printer("attr: "))
nil_stream = where('metric = nil', printer("nil: "))
all_stream = printer("all: ")
"#,
    );
    let ev = |service: &str| ProtoEvent {
        host: bytes("h1"),
        service: bytes(service),
        ..ProtoEvent::default()
    };
    let events = vec![
        ProtoEvent {
            metric_d: Some(0.95),
            ..ev("cpu-user")
        },
        ProtoEvent {
            metric_d: Some(0.5),
            ..ev("cpu")
        },
        ProtoEvent {
            metric_d: Some(0.99),
            ..ev("memory")
        },
        ProtoEvent {
            metric_sint64: Some(1),
            ..ev("cpu-sys")
        },
        ProtoEvent {
            metric_d: Some(2.0),
            ..ev("xcpu")
        },
        ev("cpu-nometric"),
        ProtoEvent {
            tags: tags(&["prod"]),
            state: bytes("critical"),
            metric_sint64: Some(0),
            ..ev("tagged-critical")
        },
        ProtoEvent {
            tags: tags(&["prod"]),
            state: bytes("ok"),
            metric_sint64: Some(0),
            ..ev("tagged-ok")
        },
        ProtoEvent {
            tags: tags(&["dev"]),
            state: bytes("critical"),
            metric_sint64: Some(0),
            ..ev("untagged-critical")
        },
        ProtoEvent {
            attributes: vec![attr("dc", "eu")],
            metric_sint64: Some(0),
            ..ev("attr-eu")
        },
        ProtoEvent {
            attributes: vec![attr("dc", "us")],
            metric_sint64: Some(0),
            ..ev("attr-us")
        },
        ProtoEvent {
            description: bytes("disk full"),
            metric_f: Some(12.0),
            ..ev("disk-full")
        },
        ProtoEvent {
            description: bytes("a disk"),
            metric_f: Some(12.0),
            ..ev("not-disk")
        },
    ];
    let total = events.len();
    send_acked(s.riemann_tcp, events);
    // The acknowledgement comes once every root has seen the events.
    for _ in 0..total {
        let _ = s.expect_printed("all: ");
    }

    let done = s.terminate();
    let services = |prefix: &str| -> Vec<String> {
        done.printed(prefix)
            .iter()
            .map(|e| text(e, "service").to_string())
            .collect()
    };
    assert_eq!(services("hot: "), ["cpu-user", "cpu-sys"]);
    assert_eq!(services("prod: "), ["tagged-critical"]);
    assert_eq!(services("attr: "), ["attr-eu", "disk-full"]);
    assert_eq!(services("nil: "), ["cpu-nometric"]);
    // The int metric passes through where() as an int.
    let hot = done.printed("hot: ");
    assert_int_metric(&hot[1], 1);
    assert_float_metric(&hot[0], 0.95);

    let stats = done.stats();
    assert_eq!(
        stats.node_count("hot_stream/where", "in"),
        total as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.node_count("hot_stream/where", "out"), 2);
    assert_eq!(stats.node_count("hot_stream/where/printer", "in"), 2);
}

#[test]
fn where_with_a_bad_query_fails_at_load_with_the_column() {
    let mut s = Server::spawn(
        r#"
from dmon.streams import *

stream = where('service = "cpu" and metric >', printer("x: "))
"#,
        "py",
        &[],
    );
    let status = s.wait_exit(TIMEOUT);
    let stderr = s.stderr.read_to_eof(Duration::from_secs(5)).join("\n");
    match status {
        Some(st) => assert!(!st.success(), "a bad where() must fail: {stderr}"),
        None => s.fail("dmon serve kept running with a bad where() query"),
    }
    assert!(
        stderr.contains("parse error at column"),
        "the load error names the column: {stderr}"
    );
}

// ---------------------------------------------------------------------------
// 4. dmon send --riemann and dmon query
// ---------------------------------------------------------------------------

/// The cells of a `dmon query` table row, cut at the header's column starts.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    let names = [
        "host",
        "service",
        "state",
        "metric",
        "age",
        "ttl",
        "description",
    ];
    let starts: Vec<usize> = names
        .iter()
        .map(|n| {
            header
                .find(n)
                .unwrap_or_else(|| panic!("header lacks {n:?}: {header:?}"))
        })
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "columns out of order: {header:?}"
    );
    lines[1..lines.len() - 1]
        .iter()
        .map(|line| {
            (0..names.len())
                .map(|i| {
                    let end = starts.get(i + 1).copied().unwrap_or(usize::MAX);
                    let from = starts[i].min(line.len());
                    line[from..end.min(line.len())].trim().to_string()
                })
                .collect()
        })
        .collect()
}

#[test]
fn dmon_send_riemann_and_dmon_query_round_trip() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "host=web1",
            "service=cpu",
            "metric=2",
            "tags=a,b",
            "dc=eu",
        ],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    assert!(r.stderr.contains("acknowledged"), "{r:?}");
    let e = s.expect_printed("rc: ");
    assert_int_metric(&e, 2);
    assert_eq!(e["tags"], json!(["a", "b"]));
    assert_eq!(e["attributes"], json!({"dc": "eu"}));
    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "host=web2",
            "service=cpu",
            "metric=0.5",
            "state=warning",
            "ttl=300",
            "description=hello",
        ],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    assert_float_metric(&s.expect_printed("rc: "), 0.5);

    // The table.
    let r = run_dmon(
        &["query", "--riemann-tcp", &addr, "service = \"cpu\""],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "host",
            "service",
            "state",
            "metric",
            "age",
            "ttl",
            "description"
        ],
        "{}",
        r.stdout
    );
    assert_eq!(*lines.last().unwrap(), "2 event(s)", "{}", r.stdout);
    let rows = table_rows(&r.stdout);
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    assert_eq!(rows[0][..4], ["web1", "cpu", "", "2"], "{}", r.stdout);
    assert_eq!(rows[0][5..], ["", ""], "{}", r.stdout);
    assert_eq!(
        rows[1][..4],
        ["web2", "cpu", "warning", "0.5"],
        "{}",
        r.stdout
    );
    assert_eq!(rows[1][5..], ["300", "hello"], "{}", r.stdout);
    for row in &rows {
        let age = row[4]
            .strip_suffix('s')
            .and_then(|a| a.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("age {:?} is not N.Ns: {}", row[4], r.stdout));
        assert!((0.0..60.0).contains(&age), "age {age}: {}", r.stdout);
    }

    // NDJSON.
    let r = run_dmon(
        &[
            "query",
            "--json",
            "--riemann-tcp",
            &addr,
            "tagged \"a\" or state = \"warning\"",
        ],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(events.len(), 2, "{}", r.stdout);
    assert_eq!(events[0]["host"], "web1");
    assert_int_metric(&events[0], 2);
    assert_eq!(events[0]["tags"], json!(["a", "b"]));
    assert_eq!(events[0]["attributes"], json!({"dc": "eu"}));
    assert_eq!(events[1]["host"], "web2");
    assert_float_metric(&events[1], 0.5);
    assert_eq!(events[1]["state"], "warning");
    assert_eq!(events[1]["description"], "hello");
    assert_close(num(&events[1], "ttl"), 300.0);

    // No match.
    let r = run_dmon(
        &["query", "--riemann-tcp", &addr, "host = \"nobody\""],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout.lines().last(), Some("0 event(s)"), "{r:?}");
    let r = run_dmon(
        &[
            "query",
            "--json",
            "--riemann-tcp",
            &addr,
            "host = \"nobody\"",
        ],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout.trim(), "", "{r:?}");

    // A bad query.
    let r = run_dmon(&["query", "--riemann-tcp", &addr, "metric > > 3"], None);
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    assert!(r.stderr.contains("parse error at column"), "{r:?}");
    assert_eq!(r.stdout.trim(), "", "{r:?}");

    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 2, "{:?}", stats.0);
    assert_eq!(stats.count("queries"), 5, "{:?}", stats.0);
}

#[test]
fn dmon_query_warns_once_about_an_unquoted_word_and_keeps_riemanns_meaning() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    for fields in [
        ["host=a", "service=cpu", "dc=eu"],
        ["host=b", "service=x", "cpu=x"],
    ] {
        let mut args = vec!["send", "--riemann", "--riemann-tcp", &addr];
        args.extend(fields);
        let r = run_dmon(&args, None);
        assert!(r.status.success(), "{r:?}");
        s.expect_printed("rc: ");
    }
    let warning = "dmon query: warning: cpu is read as a field name; did you mean \"cpu\"?";

    // `cpu` is the attribute: b (service x, cpu x) matches, a does not.
    for q in ["service = cpu", "service = cpu or host = cpu"] {
        let r = run_dmon(&["query", "--json", "--riemann-tcp", &addr, q], None);
        assert!(r.status.success(), "{q}: {r:?}");
        let hosts: Vec<Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["host"].clone())
            .collect();
        assert_eq!(hosts, [json!("b")], "{q}: {r:?}");
        assert_eq!(
            r.stderr.lines().collect::<Vec<_>>(),
            [warning],
            "{q}: {r:?}"
        );
    }
    // Quoted, or an event field: no warning.
    let r = run_dmon(
        &[
            "query",
            "--riemann-tcp",
            &addr,
            "service = \"cpu\" or host = service",
        ],
        None,
    );
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    assert_eq!(r.stdout.lines().last(), Some("1 event(s)"), "{r:?}");
}

#[test]
fn dmon_send_riemann_fails_when_refused_or_unreachable() {
    let s = Server::start_with(PRINT_AND_INDEX, "py", &["--max-frame", "200"]);
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    let long = format!("description={}", "x".repeat(1000));
    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "host=h",
            "service=s",
            &long,
        ],
        None,
    );
    assert!(
        !r.status.success(),
        "an over-long message is refused: {r:?}"
    );
    assert!(
        r.stderr.contains("exceeds the maximum"),
        "the refusal's reason is shown: {r:?}"
    );
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 0, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 1, "{:?}", stats.0);

    // Nobody listening (the server is gone): fails, not hangs.
    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "host=h",
            "service=s",
        ],
        None,
    );
    assert!(!r.status.success(), "{r:?}");
}

/// `n` NDJSON events over 100 hosts.
fn ndjson(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"host\":\"h{}\",\"service\":\"load\",\"metric\":{i}}}\n",
                i % 100
            )
        })
        .collect()
}

#[test]
fn dmon_send_riemann_sends_200k_stdin_lines_in_acknowledged_batches() {
    let s = Server::start("from dmon.streams import *\n\nindex_stream = index()\n");
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    // Over the server's default --max-events-per-message (100,000) were
    // it one message; run_dmon bounds the time.
    let r = run_dmon(
        &["send", "--riemann", "--riemann-tcp", &addr],
        Some(&ndjson(200_000)),
    );
    assert!(r.status.success(), "{r:?}");
    let said = r.stderr.trim();
    let messages: usize = said
        .strip_prefix(&format!(
            "dmon send: 200000 event(s) acknowledged by {addr} in "
        ))
        .and_then(|rest| rest.strip_suffix(" message(s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said:?}"));
    assert!((200..=1000).contains(&messages), "{said}");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 200_000, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 0, "{:?}", stats.0);
}

#[test]
fn dmon_send_riemann_batches_fit_a_lower_limit_with_batch_and_refusals_are_counted() {
    let s = Server::start_with(
        "from dmon.streams import *\n\nindex_stream = index()\n",
        "py",
        &["--max-events-per-message", "100"],
    );
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    let input = ndjson(1000);

    // Each message of 1000 is refused, said once, and exit status is 1.
    let r = run_dmon(&["send", "--riemann", "--riemann-tcp", &addr], Some(&input));
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(
        lines[0].starts_with(&format!("dmon send: {addr} refused 1000 event(s): "))
            && lines[0].contains("--max-events-per-message"),
        "{r:?}"
    );
    assert_eq!(
        lines[1],
        format!("dmon send: 0 event(s) acknowledged by {addr} in 1 message(s); 1000 refused")
    );

    // Sending goes on after a refusal, over a new connection if need be.
    let mut two = ndjson(150);
    two.push_str(&ndjson(10));
    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "--batch",
            "150",
        ],
        Some(&two),
    );
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "dmon send: 10 event(s) acknowledged by {addr} in 2 message(s); 150 refused"
        )),
        "{r:?}"
    );

    let r = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &addr,
            "--batch",
            "100",
        ],
        Some(&input),
    );
    assert!(r.status.success(), "{r:?}");
    assert_eq!(
        r.stderr,
        format!("dmon send: 1000 event(s) acknowledged by {addr} in 10 message(s)")
    );
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 1010, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 5. The same event, whichever way it arrives
// ---------------------------------------------------------------------------

#[test]
fn an_event_prints_the_same_over_json_udp_riemann_tcp_and_riemann_udp() {
    let mut s = Server::start(
        r#"
from dmon.streams import *

stream = printer("p: ")
"#,
    );
    let t = now_secs();
    let cases: Vec<(Value, ProtoEvent)> = vec![
        // Integer metric and time.
        (
            json!({
                "host": "same", "service": "int", "state": "warning", "description": "d",
                "time": t, "ttl": 600, "metric": 3, "tags": ["a", "b"],
                "attributes": {"dc": "eu", "team": "ops"}
            }),
            ProtoEvent {
                host: bytes("same"),
                service: bytes("int"),
                state: bytes("warning"),
                description: bytes("d"),
                time: Some(t),
                ttl: Some(600.0),
                metric_sint64: Some(3),
                tags: tags(&["a", "b"]),
                attributes: vec![attr("dc", "eu"), attr("team", "ops")],
                ..ProtoEvent::default()
            },
        ),
        // Float metric, fractional time, fractional ttl.
        (
            json!({
                "host": "same", "service": "float", "time": t as f64 + 0.25,
                "ttl": 1.5, "metric": 2.5, "tags": ["x"], "attributes": {"k": "v"}
            }),
            ProtoEvent {
                host: bytes("same"),
                service: bytes("float"),
                time: Some(t),
                time_micros: Some(t * 1_000_000 + 250_000),
                ttl: Some(1.5),
                metric_d: Some(2.5),
                tags: tags(&["x"]),
                attributes: vec![attr("k", "v")],
                ..ProtoEvent::default()
            },
        ),
        // A whole-numbered float metric stays a float on every path.
        (
            json!({"host": "same", "service": "whole", "time": t, "metric": 4.0}),
            ProtoEvent {
                host: bytes("same"),
                service: bytes("whole"),
                time: Some(t),
                metric_d: Some(4.0),
                ..ProtoEvent::default()
            },
        ),
    ];
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.connect(("127.0.0.1", s.riemann_udp)).expect("connect");
    for (as_json, as_proto) in cases {
        let mut lines = Vec::new();
        s.send(as_json.clone());
        lines.push(s.expect_stdout("from JSON UDP", |l| l.starts_with("p: ")));
        send_acked(s.riemann_tcp, vec![as_proto.clone()]);
        lines.push(s.expect_stdout("from Riemann TCP", |l| l.starts_with("p: ")));
        let datagram = Msg {
            events: vec![as_proto],
            ..Msg::default()
        }
        .encode_to_vec();
        udp.send(&datagram).expect("send datagram");
        lines.push(s.expect_stdout("from Riemann UDP", |l| l.starts_with("p: ")));
        assert_eq!(lines[0], lines[1], "JSON UDP vs Riemann TCP for {as_json}");
        assert_eq!(lines[0], lines[2], "JSON UDP vs Riemann UDP for {as_json}");
    }
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 9, "{:?}", stats.0);
}
