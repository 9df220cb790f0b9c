//! One view of the cluster: `dmon serve --cluster URL` nodes register in
//! NATS and answer `dmon query --cluster URL`, which merges every node's
//! matches; a node killed outright is reported, then no longer expected.
//! Real nats-server, real dmon processes, loopback only.

use crate::common;
use crate::shell_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::nats::Nats;
use common::{dmon_bin, Server, TempDir};
use serde_json::json;
use shell_support::{Kind, Shell, Start};

const MODULE: &str = r#"from dmon.streams import *

index_stream = index()
seen_stream = printer("seen: ")
"#;

/// How long a SIGKILLed node may stay registered: the registration's ttl
/// (10 s) and the server's expiry sweep, with room.
const LAPSE: Duration = Duration::from_secs(30);

fn node(nats: &Nats, name: &str) -> Server {
    Server::start_with(
        MODULE,
        "py",
        &["--cluster", &nats.url(), "--node-name", name],
    )
}

/// Sends `host`'s cpu and mem events to `server` and waits until both are
/// processed (printed).
fn feed(server: &mut Server, host: &str, cpu: f64) {
    server.send(json!({"host": host, "service": "cpu", "metric": cpu}));
    server.send(json!({"host": host, "service": "mem", "metric": 50}));
    for _ in 0..2 {
        server.expect_printed("seen: ");
    }
}

fn query(nats: &Nats, args: &[&str]) -> Output {
    Command::new(dmon_bin())
        .args(["query", "--cluster", &nats.url()])
        .args(args)
        .output()
        .expect("run dmon query")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The table's rows (host, service, metric), without header and footer.
fn rows(stdout: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "no table: {stdout}");
    lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[0].into(), cells[1].into(), cells[2].into())
        })
        .collect()
}

fn row(host: &str, service: &str, metric: &str) -> (String, String, String) {
    (host.into(), service.into(), metric.into())
}

#[test]
fn query_merges_every_node_and_reports_the_silent_one() {
    let nats = Nats::start();
    let mut nodes: Vec<Server> = ["n1", "n2", "n3"].iter().map(|n| node(&nats, n)).collect();
    for (i, server) in nodes.iter_mut().enumerate() {
        // Each node indexes its own hosts, given out of order.
        feed(server, &format!("web{}", 6 - i), 1.0 + i as f64);
        feed(server, &format!("db{}", i + 1), 10.0 + i as f64);
    }

    let out = query(&nats, &["service = \"cpu\""]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        rows(&stdout),
        vec![
            row("db1", "cpu", "10"),
            row("db2", "cpu", "11"),
            row("db3", "cpu", "12"),
            row("web4", "cpu", "3"),
            row("web5", "cpu", "2"),
            row("web6", "cpu", "1"),
        ],
        "{stdout}"
    );
    assert!(stdout.ends_with("6 event(s)\n"), "{stdout}");
    for n in ["n1", "n2", "n3"] {
        assert!(
            stderr
                .lines()
                .any(|l| l == format!("{n}: answered: 2 events")),
            "{stderr}"
        );
    }

    // NDJSON, as `dmon query --json` prints it.
    let out = query(&nats, &["--json", "host = \"web5\""]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["service"], "cpu");
    assert_eq!(lines[1]["service"], "mem");

    // A bad query is said once, by the asker, not once per node.
    let out = query(&nats, &["service = "]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.matches("parse error").count(),
        1,
        "the parse error once: {stderr}"
    );
    assert!(!stderr.contains("answered"), "{stderr}");

    // Everything: both services of every host.
    let (stdout, stderr) = {
        let out = query(&nats, &["true"]);
        (text(&out.stdout), text(&out.stderr))
    };
    assert!(stdout.ends_with("12 event(s)\n"), "{stdout}{stderr}");

    // SIGKILL: no clean deregistration, so it is expected and reported…
    let killed = nodes.pop().unwrap();
    killed.signal("KILL");
    let started = Instant::now();
    let out = query(&nats, &["--timeout", "1", "service = \"cpu\""]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.lines().any(|l| l == "n3: did not answer"),
        "{stderr}"
    );
    assert_eq!(
        rows(&stdout).len(),
        4,
        "the others' events still come: {stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // …until its registration lapses.
    let deadline = Instant::now() + LAPSE;
    loop {
        let out = query(&nats, &["--timeout", "1", "service = \"cpu\""]);
        let stderr = text(&out.stderr);
        if !stderr.contains("n3") {
            assert!(stderr.contains("n1: answered: 2 events"), "{stderr}");
            assert!(stderr.contains("n2: answered: 2 events"), "{stderr}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n3 still expected after {LAPSE:?}: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(killed);

    // A clean stop deregisters at once, and the counters say what each
    // node answered.
    let n2 = nodes.pop().unwrap();
    let stats = n2.terminate().stats();
    assert!(
        stats.count("cluster_queries_answered") >= 5,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.count("cluster_query_errors"), 0);
    let out = query(&nats, &["--timeout", "5", "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec!["n1: answered: 4 events"],
        "{stderr}"
    );
}

#[test]
fn limits_are_each_nodes_and_nats_down_is_named() {
    let nats = Nats::start();
    let _n1 = Server::start_with(
        MODULE,
        "py",
        &[
            "--cluster",
            &nats.url(),
            "--node-name",
            "small",
            "--max-query-results",
            "1",
        ],
    );
    let mut n1 = _n1;
    feed(&mut n1, "a", 1.0);
    let out = query(&nats, &["true"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("small: error: query matches 2 events; the limit is 1 (--max-query-results)"),
        "{stderr}"
    );
    let stats = n1.terminate().stats();
    assert_eq!(stats.count("cluster_query_errors"), 1);

    // Nothing listening: a clear error naming the URL and the flag.
    let url = nats.url();
    drop(nats);
    let out = Command::new(dmon_bin())
        .args(["query", "--cluster", &url, "true"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&url) && stderr.contains("--cluster"),
        "{stderr}"
    );
    let mut server = Server::spawn(MODULE, "py", &["--cluster", &url]);
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success());
    let err = server.stderr.dump();
    assert!(err.contains(&url) && err.contains("--cluster"), "{err}");
}

/// The python shell on a `--cluster` node: index(), query(), stats() and
/// streams() show every node, this one first.
#[test]
fn the_shell_in_cluster_mode_asks_every_node() {
    let nats = Nats::start();
    let mut far = node(&nats, "far");
    feed(&mut far, "web9", 9.0);

    let dir = TempDir::new();
    let streams = dir.write("streams.py", MODULE);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.args = ["--cluster", &nats.url(), "--node-name", "here"]
        .map(String::from)
        .to_vec();
    let shell = Shell::start(opts);
    shell.send_datagram(r#"{"host":"web1","service":"cpu","metric":1}"#);
    shell.wait_for_line_starting(r#"seen: {"host":"web1""#);

    let out = shell.run_expect(r#"query('service = "cpu"')"#, "far: answered");
    let hosts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("web"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(hosts, ["web1", "web9"], "{out}");
    assert!(out.contains("here: answered: 1 event"), "{out}");
    assert!(out.contains("far: answered: 1 event"), "{out}");

    let out = shell.run_expect("index()", "far: answered");
    assert!(out.contains("3 events in the index"), "{out}");

    let out = shell.run_expect("streams()", "== far ==");
    let here = out.find("== here ==").expect("this node's section");
    let there = out.find("== far ==").unwrap();
    assert!(here < there, "this node first: {out}");
    assert_eq!(out.matches("index_stream/index").count(), 2, "{out}");

    let out = shell.run_expect("stats()", "== far ==");
    assert!(
        out.find("== here ==").unwrap() < out.find("== far ==").unwrap(),
        "{out}"
    );
    assert!(out.contains("processed 2"), "far's counters: {out}");

    far.signal("KILL");
    let out = shell.run_expect(r#"query('service = "cpu"')"#, "far: did not answer");
    assert!(out.contains("here: answered: 1 event"), "{out}");
    assert!(out.contains("1 event in the index"), "{out}");
    shell.exit();
}

/// nats-server down under a node: the failed renewal is logged and
/// counted; once it is back, the node reconnects and answers.
#[test]
fn a_node_answers_again_after_nats_restarts() {
    let mut nats = Nats::start();
    let mut n1 = node(&nats, "n1");
    feed(&mut n1, "web1", 1.0);
    nats.kill();
    n1.expect_stderr_within(LAPSE, "the failed renewal", |l| {
        l.contains("renewing this node's registration")
    });
    nats.restart();
    let deadline = Instant::now() + LAPSE;
    loop {
        let out = query(&nats, &["--timeout", "1", "true"]);
        let stderr = text(&out.stderr);
        if stderr.contains("n1: answered: 2 events") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1 not answering after the restart: {stderr}\n{}",
            n1.stderr.dump()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = n1.terminate().stats();
    assert!(
        stats.count("cluster_query_renew_failures") >= 1,
        "{:?}",
        stats.0
    );
}
