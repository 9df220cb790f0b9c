//! Gateways (`serve --publish URL`): the real `dmon` binary in front of a
//! real `nats-server` (tests/common/nats.rs). What a gateway receives ends
//! up in JetStream, once, on its host's partition; a Riemann TCP client's
//! `ok` means it is stored; a NATS outage delays acks instead of losing
//! events.

use crate::common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::nats::Nats;
use common::{run_dmon, Server};
use dmon::client::{ClientError, RiemannClient};
use dmon::cluster::{self, decode_batch, partition_of, subject, STREAM};
use dmon::event::{Event, Number};
use serde_json::json;

/// The cluster's partition count (the default).
const COUNT: u32 = 16;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A printer, to see whether the gateway's own streams saw anything.
const MODULE: &str = "from dmon.streams import *\n\nseen_stream = printer(\"seen: \")\n";

/// Reads what the events stream holds, as a worker would see it.
struct Store {
    rt: tokio::runtime::Runtime,
    conn: cluster::Connection,
}

impl Store {
    fn new(url: &str) -> Store {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(cluster::connect(url, "test-reader", &Default::default()))
            .unwrap();
        Store { rt, conn }
    }

    /// Every stored event with the subject of its batch, in stream order.
    fn all(&self) -> Vec<(String, Event)> {
        self.rt.block_on(async {
            let mut stream = self.conn.js.get_stream(STREAM).await.unwrap();
            let state = stream.info().await.unwrap().state.clone();
            let mut out = Vec::new();
            if state.messages == 0 {
                return out;
            }
            for seq in state.first_sequence..=state.last_sequence {
                let m = stream.get_raw_message(seq).await.unwrap();
                for e in decode_batch(&m.payload, 0.0).expect("a batch decodes") {
                    out.push((m.subject.to_string(), e));
                }
            }
            out
        })
    }

    /// Polls until at least `n` events are stored (NATS offers no signal
    /// for "the gateway published"), then returns them all.
    fn wait_for(&self, n: usize) -> Vec<(String, Event)> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let all = self.all();
            if all.len() >= n {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events stored",
                all.len()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn event(host: &str, seq: i64) -> Event {
    Event {
        host: Some(host.into()),
        service: Some("load".into()),
        metric: Some(Number::Int(seq)),
        ..Event::default()
    }
}

fn seq_of(e: &Event) -> i64 {
    match e.metric {
        Some(Number::Int(i)) => i,
        Some(Number::Float(f)) => f as i64,
        ref other => panic!("event without a sequence: {other:?}"),
    }
}

/// Checks that `stored` holds each of `expected` (host, sequence) exactly
/// once, each on its host's partition, with a time set, and each host's
/// in the order sent.
fn assert_stored_once(stored: &[(String, Event)], expected: &[(String, i64)]) {
    let mut seen: Vec<(String, i64)> = stored
        .iter()
        .map(|(subj, e)| {
            let host = e.host.as_deref().unwrap_or("");
            assert_eq!(
                subj,
                &subject(partition_of(Some(host), COUNT)),
                "{host}'s event on the wrong partition"
            );
            assert!(e.time.is_some(), "the gateway sets the receive time");
            (host.to_owned(), seq_of(e))
        })
        .collect();
    // Per-host order: a host's sequence numbers rise in stream order.
    let mut last = std::collections::HashMap::new();
    for (host, seq) in &seen {
        if let Some(before) = last.insert(host.clone(), *seq) {
            assert!(before < *seq, "{host}: {seq} stored after {before}");
        }
    }
    seen.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(seen.len(), expected.len(), "stored count");
    assert!(seen == expected, "stored events differ from those sent");
}

fn riemann(port: u16) -> RiemannClient {
    RiemannClient::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(60),
    )
    .unwrap()
}

fn gateway(nats: &Nats, extra: &[&str]) -> Server {
    let url = nats.url();
    let mut args = vec!["--publish", url.as_str(), "--node-name", "gw-test"];
    args.extend_from_slice(extra);
    Server::start_with(MODULE, "py", &args)
}

#[test]
fn a_riemann_ok_means_the_events_are_in_jetstream() {
    let nats = Nats::start();
    let gw = gateway(&nats, &[]);
    let store = Store::new(&nats.url());
    let mut client = riemann(gw.riemann_tcp);
    let mut sent = Vec::new();
    for round in 0..5 {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                let seq = round * 200 + i;
                event(&format!("web-{}", seq % 37), seq)
            })
            .collect();
        client.send_events(&events).unwrap();
        sent.extend(
            events
                .iter()
                .map(|e| (e.host.as_deref().unwrap().to_owned(), seq_of(e))),
        );
        // No waiting: the ok came after JetStream's ack.
        assert_stored_once(&store.all(), &sent);
    }
    let finished = gw.terminate();
    assert!(finished.status.success());
    let stats = finished.stats();
    assert_eq!(stats.count("cluster_published"), 1000);
    assert!(stats.count("cluster_publish_batches") >= 5);
    assert_eq!(stats.count("cluster_publish_waiting"), 0);
    assert_eq!(stats.count("cluster_publish_failed"), 0);
    assert_eq!(stats.count("processed"), 0, "not processed here");
    assert!(finished.printed("seen: ").is_empty());
}

#[test]
fn udp_events_from_100_hosts_are_stored_once_each_in_their_partitions() {
    let nats = Nats::start();
    let store = Store::new(&nats.url());
    let gw = gateway(&nats, &[]);
    let udp = gw.udp();
    let (total, per_datagram, chunk) = (20_000, 50, 2_000);
    let mut sent = Vec::new();
    for start in (0..total).step_by(chunk) {
        for d in (start..start + chunk).step_by(per_datagram) {
            let events: Vec<_> = (d..d + per_datagram)
                .map(|i| json!({"host": format!("host-{}", i % 100), "service": "load", "metric": i}))
                .collect();
            sent.extend((d..d + per_datagram).map(|i| (format!("host-{}", i % 100), i as i64)));
            udp.send_json(&json!(events));
        }
        // Paced, so the test does not depend on the kernel's buffer.
        store.wait_for(sent.len());
    }
    assert_stored_once(&store.all(), &sent);
    let finished = gw.terminate();
    let stats = finished.stats();
    assert_eq!(stats.count("events"), total as u64);
    assert_eq!(stats.count("cluster_published"), total as u64);
    assert_eq!(stats.count("cluster_publish_waiting"), 0);
    assert_eq!(stats.count("processed"), 0);
    assert!(
        finished.printed("seen: ").is_empty(),
        "without --also-process the gateway's streams see nothing"
    );

    // With --also-process, its streams see each event as well.
    let gw = gateway(&nats, &["--also-process"]);
    let udp = gw.udp();
    let mut more = Vec::new();
    for d in (0..1_000).step_by(per_datagram) {
        let events: Vec<_> = (d..d + per_datagram)
            .map(|i| json!({"host": format!("other-{}", i % 10), "service": "load", "metric": i}))
            .collect();
        more.extend((d..d + per_datagram).map(|i| (format!("other-{}", i % 10), i as i64)));
        udp.send_json(&json!(events));
    }
    sent.extend(more);
    assert_stored_once(&store.wait_for(sent.len()), &sent);
    let finished = gw.terminate();
    let stats = finished.stats();
    assert_eq!(stats.count("cluster_published"), 1_000);
    assert_eq!(stats.count("processed"), 1_000);
    assert_eq!(finished.printed("seen: ").len(), 1_000);
}

#[test]
fn events_sent_while_nats_is_down_are_acked_once_it_is_back_and_stored_once() {
    let mut nats = Nats::start();
    let mut gw = gateway(&nats, &[]);
    let mut client = riemann(gw.riemann_tcp);
    let batch = |round: i64| -> Vec<Event> {
        (0..300)
            .map(|i| event(&format!("db-{}", i % 23), round * 1000 + i))
            .collect()
    };
    let mut sent = Vec::new();
    let mut note = |events: &[Event]| {
        sent.extend(
            events
                .iter()
                .map(|e| (e.host.as_deref().unwrap().to_owned(), seq_of(e))),
        );
    };
    let first = batch(0);
    client.send_events(&first).unwrap();
    note(&first);

    nats.kill();
    let during = batch(1);
    note(&during);
    let sender = thread::spawn(move || client.send_events(&during).map(|()| client));
    // The gateway tried, and says it retries.
    gw.expect_stderr("a publish retried", |l| l.contains("retrying"));
    assert!(
        !sender.is_finished(),
        "the client got its reply while NATS was down"
    );
    nats.restart();
    let mut client = sender.join().unwrap().expect("acked once NATS is back");
    let after = batch(2);
    client.send_events(&after).unwrap();
    note(&after);

    let store = Store::new(&nats.url());
    assert_stored_once(&store.all(), &sent);
    let finished = gw.terminate();
    assert!(finished.status.success());
    let stats = finished.stats();
    assert!(stats.count("cluster_publish_retries") >= 1);
    assert_eq!(stats.count("cluster_published"), 900);
    assert_eq!(stats.count("cluster_publish_failed"), 0);
    assert_eq!(stats.count("cluster_publish_waiting"), 0);
}

#[test]
fn a_batch_jetstream_refuses_gets_the_riemann_client_an_error() {
    let nats = Nats::start();
    // The events stream made beforehand, tiny: JetStream refuses what
    // does not fit (discard new).
    let store = Store::new(&nats.url());
    store.rt.block_on(async {
        store.conn.prepare(COUNT).await.unwrap();
        let mut config = store
            .conn
            .js
            .get_stream(STREAM)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
        config.max_bytes = 4096;
        store.conn.js.update_stream(config).await.unwrap();
    });
    let gw = gateway(&nats, &[]);
    let mut client = riemann(gw.riemann_tcp);
    client.send_events(&[event("small", 1)]).unwrap();
    // One host: one partition, one batch, refused whole.
    let big: Vec<Event> = (0..500).map(|i| event("big", i)).collect();
    match client.send_events(&big) {
        Err(ClientError::Refused(why)) => assert!(why.contains("not stored"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The connection stays usable.
    client.send_events(&[event("small", 2)]).unwrap();
    let finished = gw.terminate();
    let stats = finished.stats();
    assert_eq!(stats.count("cluster_publish_failed"), 500);
    assert_eq!(stats.count("cluster_published"), 2);
}

#[test]
fn without_nats_at_start_up_serve_publish_exits_with_one_line_naming_the_url() {
    let url = common::nats::nowhere();
    let run = run_dmon(
        &[
            "serve",
            "--publish",
            &url,
            "--udp",
            "127.0.0.1:0",
            "--riemann-tcp",
            "off",
            "--riemann-udp",
            "off",
        ],
        None,
    );
    assert!(!run.status.success());
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("dmon: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains(&url) && errors[0].contains("--publish"),
        "{}",
        errors[0]
    );
    assert!(!run.stdout.contains("Listening"), "{}", run.stdout);
}

#[test]
fn a_clean_stop_while_nats_is_down_waits_its_grace_then_counts_the_rest_as_failed() {
    let mut nats = Nats::start();
    let mut gw = gateway(&nats, &[]);
    nats.kill();
    gw.udp()
        .send_json(&json!([{"host": "a", "metric": 1}, {"host": "b", "metric": 2}]));
    gw.expect_stderr("a publish retried", |l| l.contains("retrying"));
    let finished = gw.terminate();
    assert!(finished.status.success());
    let stats = finished.stats();
    assert_eq!(stats.count("events"), 2);
    assert_eq!(stats.count("cluster_published"), 0);
    assert_eq!(stats.count("cluster_publish_failed"), 2);
    assert_eq!(stats.count("cluster_publish_waiting"), 0);
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.contains("2 events were not acknowledged")),
        "{}",
        finished.stderr.join("\n")
    );
}

/// The gateway's counters now, from `/stats` on `--http`.
fn live_stats(http: u16) -> serde_json::Value {
    let body = ureq::get(&format!("http://127.0.0.1:{http}/stats"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn while_nats_is_down_what_the_gateway_holds_is_bounded_by_max_in_flight() {
    let mut nats = Nats::start();
    // Above a UDP read's largest batch (1,024 events and a datagram):
    // a batch larger than the budget would take the whole of it.
    let gw = gateway(&nats, &["--max-in-flight", "1500", "--http", "127.0.0.1:0"]);
    nats.kill();
    let udp = gw.udp();
    let mut sent = Vec::new();
    for d in (0..3_000).step_by(50) {
        let events: Vec<_> = (d..d + 50)
            .map(|i| json!({"host": format!("h-{}", i % 40), "metric": i}))
            .collect();
        sent.extend((d..d + 50).map(|i| (format!("h-{}", i % 40), i as i64)));
        udp.send_json(&json!(events));
    }
    // The budget fills, then the source waits and stops reading (the
    // kernel's buffer holds the rest of these few datagrams).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = live_stats(gw.http);
        let count = |key: &str| stats[key].as_u64().unwrap();
        let waiting = count("cluster_publish_waiting");
        assert!(
            waiting <= 1500,
            "holds {waiting} events, over --max-in-flight: {stats}"
        );
        if count("pipeline_full") > 0 && count("cluster_publish_retries") > 0 {
            assert!(waiting > 0 && count("cluster_published") == 0, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never filled: {stats}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    nats.restart();
    let store = Store::new(&nats.url());
    assert_stored_once(&store.wait_for(sent.len()), &sent);
    let finished = gw.terminate();
    let stats = finished.stats();
    assert_eq!(stats.count("cluster_published"), 3_000);
    assert_eq!(stats.count("cluster_publish_waiting"), 0);
    assert_eq!(stats.count("kernel_drops"), 0);
}

/// `curl -N` on a server-sent-events URL, its `data:` lines as they come.
fn sse(port: u16, path: &str, query: &str) -> (common::KillOnDrop, common::Lines) {
    let mut child = std::process::Command::new("curl")
        .args(["-sSN", "-G", &format!("http://127.0.0.1:{port}{path}")])
        .args(["--data-urlencode", &format!("query={query}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(common::KillOnDrop)
        .expect("run curl (./test.sh installs it)");
    let lines = common::Lines::spawn("curl sse", child.0.stdout.take().unwrap());
    (child, lines)
}

/// A gateway's events about itself stay in its own index (which cluster
/// queries ask) by default: published, they would run through the
/// workers' roots.
#[test]
fn a_gateway_keeps_its_own_events_in_its_index() {
    let nats = Nats::start();
    let mut gw = gateway(
        &nats,
        &["--instrument-interval", "0.2", "--http", "127.0.0.1:0"],
    );
    let store = Store::new(&nats.url());
    let (_curl, mut feed) = sse(gw.http, "/index/sse", r#"service = "dmon index size""#);
    let indexed = |gw: &mut Server, feed: &mut common::Lines| {
        if let Err(why) = feed.wait_for(TIMEOUT, |l| l.starts_with("data: ")) {
            gw.fail(&format!("no dmon event in the gateway's index: {why}"));
        }
    };
    indexed(&mut gw, &mut feed);
    let mut client = riemann(gw.riemann_tcp);
    client.send_events(&[event("web1", 1)]).unwrap();
    // Two intervals on, dmon has made its events twice more.
    indexed(&mut gw, &mut feed);
    indexed(&mut gw, &mut feed);
    let stored = store.all();
    assert_eq!(stored.len(), 1, "only the received event: {stored:?}");
    assert_eq!(stored[0].1.host.as_deref(), Some("web1"));
    let finished = gw.terminate();
    assert!(finished.status.success());
    let stats = finished.stats();
    assert_eq!(stats.count("cluster_published"), 1);
    assert_eq!(finished.printed("seen: ").len(), 0, "not processed here");
}

/// With --self-events-to-streams they go where the streams run: to
/// JetStream, for the workers, as received events do.
#[test]
fn with_self_events_to_streams_a_gateway_publishes_its_own_events() {
    let nats = Nats::start();
    let gw = gateway(
        &nats,
        &["--instrument-interval", "0.2", "--self-events-to-streams"],
    );
    let store = Store::new(&nats.url());
    let stored = store.wait_for(1);
    let host = dmon::instrument::Instrumenter::hostname();
    let (subject_of, e) = &stored[0];
    assert_eq!(e.host.as_deref(), Some(host.as_str()));
    assert!(e.has_tag("dmon"), "{e:?}");
    assert!(e.service.as_deref().unwrap().starts_with("dmon "), "{e:?}");
    assert_eq!(*subject_of, subject(partition_of(Some(&host), COUNT)));
    let finished = gw.terminate();
    assert!(finished.status.success());
    assert!(finished.stats().count("cluster_published") >= 1);
}
