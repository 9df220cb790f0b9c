//! Workers (`serve --consume URL --partitions LIST`) against a real
//! nats-server and real dmon processes: partitions shared between workers,
//! each event processed once and in order per host; a standby taking over
//! from a killed or stopped owner and resuming `by` aggregates from the
//! checkpoint; a nats-server restart under a running worker.
//!
//! The test publishes the events itself, as a gateway does: batches of
//! events (`encode_batch`) on their host's partition's subject, waiting for
//! JetStream's ack.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::nats::Nats;
use common::{Finished, Server};
use dmon::cluster::{encode_batch, partition_of, subject, STREAM};
use dmon::event::{Event, Number};
use serde_json::Value;

/// Per host: a running sum (`counter`) and a running average, each printed
/// for every event.
const MODULE: &str = r#"
from dmon.streams import *
stream = by("host", counter(printer("c: ")), average(3, printer("a: ")))
"#;

/// Long enough for a debug build under a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The events of a run, in publishing order, and what a single node makes
/// of them per host.
#[derive(Default)]
struct Load {
    events: Vec<Event>,
    /// Per host: events so far (the next `seq`), and the sum of metrics.
    hosts: BTreeMap<String, (u64, i64)>,
}

impl Load {
    /// `n` more events spread over `hosts` hosts; metric `x` small integers,
    /// attribute `seq` each host's own sequence number.
    fn add(&mut self, hosts: usize, n: usize) -> Vec<Event> {
        let start = self.events.len();
        for i in start..start + n {
            let host = format!("host-{}", i % hosts);
            let entry = self.hosts.entry(host.clone()).or_default();
            let seq = entry.0;
            let x = ((i * 7 + seq as usize) % 10) as i64;
            entry.0 += 1;
            entry.1 += x;
            self.events.push(Event {
                host: Some(host.into()),
                service: Some("load".into()),
                metric: Some(Number::Int(x)),
                time: Some(Number::Int(common::now() as i64)),
                ttl: Some(600.0),
                attributes: [("seq".to_owned(), seq.to_string())].into(),
                ..Event::default()
            });
        }
        self.events[start..].to_vec()
    }

    /// What one node processing every event in order ends with, per host:
    /// the count, the sum, the average to 3 places.
    fn expected(&self, host: &str) -> (u64, i64, f64) {
        let (n, sum) = self.hosts[host];
        (n, sum, (sum as f64 / n as f64 * 1000.0).round() / 1000.0)
    }
}

/// Publishes `events` as a gateway would: per partition, in order, in
/// batches of 50, each acknowledged by JetStream (retried while NATS comes
/// back).
fn publish(url: &str, events: &[Event], partitions: u32) {
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut by_partition: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
        for e in events {
            by_partition
                .entry(partition_of(e.host.as_deref(), partitions))
                .or_default()
                .push(e.clone());
        }
        for (p, events) in by_partition {
            for batch in events.chunks(50) {
                let payload = bytes::Bytes::from(encode_batch(batch));
                let deadline = Instant::now() + WAIT;
                loop {
                    let acked = match js.publish(subject(p), payload.clone()).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if acked {
                        break;
                    }
                    assert!(Instant::now() < deadline, "JetStream never took a batch");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Messages delivered and not yet acknowledged, all partitions together
/// (what the owner holds until its next checkpoint), and those not yet
/// delivered.
fn pending(url: &str, partitions: u32) -> (u64, u64) {
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(STREAM).await.unwrap();
        let (mut acks, mut waiting) = (0, 0);
        for p in 0..partitions {
            if let Ok(info) = stream.consumer_info(format!("dmon-p{p}")).await {
                acks += info.num_ack_pending as u64;
                waiting += info.num_pending;
            }
        }
        (acks, waiting)
    })
}

fn worker(url: &str, partitions: &str, name: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--consume",
        url,
        "--partitions",
        partitions,
        "--node-name",
        name,
    ];
    args.extend_from_slice(extra);
    Server::start_with(MODULE, "py", &args)
}

/// The three groups of 16 partitions, and a worker for each (named
/// `<prefix><group>`), each owning its group.
type Groups = [(&'static str, std::ops::RangeInclusive<u32>); 3];

fn three_workers(url: &str, prefix: &str) -> (Groups, Vec<Server>) {
    let groups = [("0-5", 0..=5), ("6-10", 6..=10), ("11-15", 11..=15)];
    let mut workers: Vec<Server> = groups
        .iter()
        .map(|(g, _)| worker(url, g, &format!("{prefix}{g}"), &[]))
        .collect();
    for (w, (g, _)) in workers.iter_mut().zip(&groups) {
        let took = format!("took over partitions {g}");
        w.expect_stderr(&took, |l| l.contains(&took));
    }
    (groups, workers)
}

/// Worker A owning partitions 0-3, then B standing by for them.
fn owner_and_standby(url: &str, flags: &[&str]) -> (Server, Server) {
    let mut a = worker(url, "0-3", "A", flags);
    a.expect_stderr("A owns", |l| l.contains("took over partitions 0-3"));
    let mut b = worker(url, "0-3", "B", flags);
    b.expect_stderr("B stands by", |l| {
        l.contains("standing by for partitions 0-3 (held by A)")
    });
    (a, b)
}

fn attr_seq(e: &Value) -> u64 {
    e["attributes"]["seq"].as_str().unwrap().parse().unwrap()
}

/// Reads `c: ` lines from `w` until every host of `load` has printed its
/// last event; returns every line read, parsed.
fn until_done(w: &mut Server, load: &Load, hosts: &[String]) -> Vec<Value> {
    let mut left: HashMap<&str, u64> = hosts
        .iter()
        .map(|h| (h.as_str(), load.hosts[h].0 - 1))
        .collect();
    let mut seen = Vec::new();
    while !left.is_empty() {
        let e = w.expect_printed("c: ");
        let host = e["host"].as_str().unwrap().to_owned();
        if left.get(host.as_str()) == Some(&attr_seq(&e)) {
            left.remove(host.as_str());
        }
        seen.push(e);
    }
    seen
}

fn worker_stats(f: &Finished) -> Value {
    f.stats().0["cluster_worker"].clone()
}

/// The last counter and average each host printed.
fn finals(f: &Finished) -> HashMap<String, (i64, f64)> {
    let mut out: HashMap<String, (i64, f64)> = HashMap::new();
    for e in f.printed("c: ") {
        let host = e["host"].as_str().unwrap().to_owned();
        out.entry(host).or_default().0 = e["metric"].as_i64().unwrap();
    }
    for e in f.printed("a: ") {
        let host = e["host"].as_str().unwrap().to_owned();
        out.entry(host).or_default().1 = e["metric"].as_f64().unwrap();
    }
    out
}

fn assert_single_node_results(load: &Load, got: &HashMap<String, (i64, f64)>, hosts: &[String]) {
    for host in hosts {
        let (_, sum, avg) = load.expected(host);
        let (c, a) = got
            .get(host)
            .unwrap_or_else(|| panic!("{host} printed nothing"));
        assert_eq!(*c, sum, "{host}: counter");
        assert!(
            (a - avg).abs() < 1e-9,
            "{host}: average {a}, expected {avg}"
        );
    }
}

#[test]
fn three_workers_process_every_event_once_in_order_per_host() {
    let nats = Nats::start();
    let url = nats.url();
    let (groups, mut workers) = three_workers(&url, "w");

    let mut load = Load::default();
    let events = load.add(200, 30_000);
    publish(&url, &events, 16);
    // Not a batch of events: counted, terminated, skipped.
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let ack = js.publish(subject(3), "not protobuf \u{ff}\u{ff}".into());
        ack.await.unwrap().await.unwrap();
    });

    let mut finished = Vec::new();
    for (mut w, (_, range)) in workers.drain(..).zip(groups.iter().cloned()) {
        let mine: Vec<String> = load
            .hosts
            .keys()
            .filter(|h| range.contains(&partition_of(Some(h), 16)))
            .cloned()
            .collect();
        assert!(!mine.is_empty());
        until_done(&mut w, &load, &mine);
        finished.push((w.terminate(), mine));
    }

    let mut total = 0;
    let mut everyone: Vec<String> = Vec::new();
    for (f, mine) in &finished {
        assert!(f.status.success(), "{:?}", f.stderr);
        // Every host of the group, and no other; each host's events once
        // and in order: seq 0, 1, 2…, the counter the running sum.
        let mut next: HashMap<String, (u64, i64)> = HashMap::new();
        for e in f.printed("c: ") {
            let host = e["host"].as_str().unwrap().to_owned();
            assert!(mine.contains(&host), "{host} is not this worker's");
            let (seq, sum) = next.entry(host.clone()).or_default();
            assert_eq!(attr_seq(&e), *seq, "{host}: out of order or twice");
            let x = e["metric"].as_i64().unwrap() - *sum;
            *seq += 1;
            *sum += x;
            total += 1;
        }
        for h in mine {
            assert_eq!(next[h].0, load.hosts[h].0, "{h}: events processed");
        }
        assert_single_node_results(&load, &finals(f), mine);
        let s = worker_stats(f);
        assert_eq!(s["role"], "standby", "released at the end: {s}");
        assert_eq!(s["redelivered"], 0, "{s}");
        let bad = if mine.iter().any(|h| partition_of(Some(h), 16) == 3) {
            1
        } else {
            0
        };
        assert_eq!(s["bad_messages"], bad, "{s}");
        assert!(s["checkpoints"].as_u64().unwrap() >= 1, "{s}");
        everyone.extend(mine.iter().cloned());
    }
    let consumed: u64 = finished
        .iter()
        .map(|(f, _)| worker_stats(f)["consumed"].as_u64().unwrap())
        .sum();
    assert_eq!(consumed, 30_000);
    // All acknowledged (or terminated): the work queue is empty.
    assert_eq!(pending(&url, 16), (0, 0));
    assert_eq!(total, 30_000, "every event printed once across the workers");
    assert_eq!(everyone.len(), 200);
}

#[test]
fn a_standby_takes_over_from_a_killed_owner_and_resumes_from_the_checkpoint() {
    let nats = Nats::start();
    let url = nats.url();
    // All four partitions in one group; a short lease, and checkpoints
    // rare enough that the kill lands between two.
    let flags = [
        "--partition-count",
        "4",
        "--lease-secs",
        "2",
        "--checkpoint-secs",
        "10",
    ];
    let (mut a, mut b) = owner_and_standby(&url, &flags);

    let mut load = Load::default();
    let first = load.add(50, 5_000);
    publish(&url, &first, 4);
    let hosts: Vec<String> = load.hosts.keys().cloned().collect();
    until_done(&mut a, &load, &hosts);
    // A checkpoint has acknowledged the first part (JetStream says so).
    let deadline = Instant::now() + WAIT;
    while pending(&url, 4) != (0, 0) {
        assert!(Instant::now() < deadline, "never checkpointed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The second part is processed by A, not yet checkpointed: killed.
    let second = load.add(50, 5_000);
    publish(&url, &second, 4);
    until_done(&mut a, &load, &hosts);
    a.signal("KILL");
    let killed = Instant::now();
    b.expect_stderr("B takes over", |l| l.contains("took over partitions 0-3"));
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(5),
        "took {takeover:?} with a 2 s lease"
    );
    b.expect_stderr("B restores", |l| {
        l.contains("restored the checkpoint of partitions 0-3 from A")
    });
    let third = load.add(50, 2_000);
    publish(&url, &third, 4);
    until_done(&mut b, &load, &hosts);
    let f = b.terminate();
    let s = worker_stats(&f);
    // What A processed after its checkpoint came again: the duplicates.
    let redelivered = s["redelivered"].as_u64().unwrap();
    assert!(redelivered > 0, "{s}");
    // Processed again unless the checkpoint already had them.
    let again = redelivered - s["skipped"].as_u64().unwrap();
    assert_eq!(s["consumed"].as_u64().unwrap(), again + 2_000, "{s}");
    assert_eq!(f.printed("c: ").len() as u64, again + 2_000);
    assert_eq!(s["takeovers"], 1, "{s}");
    // Sums and averages over all 12 000 events, as a single node has them:
    // the checkpoint's, then everything after it once.
    assert_single_node_results(&load, &finals(&f), &hosts);
    println!("takeover after SIGKILL: {takeover:?}; redelivered {redelivered}");
}

#[test]
fn a_clean_stop_hands_over_at_once() {
    let nats = Nats::start();
    let url = nats.url();
    let flags = ["--partition-count", "4", "--lease-secs", "10"];
    let (mut a, mut b) = owner_and_standby(&url, &flags);
    let mut load = Load::default();
    let first = load.add(40, 3_000);
    publish(&url, &first, 4);
    let hosts: Vec<String> = load.hosts.keys().cloned().collect();
    until_done(&mut a, &load, &hosts);

    let stopping = Instant::now();
    let fa = a.terminate();
    b.expect_stderr("B takes over", |l| l.contains("took over partitions 0-3"));
    let handover = stopping.elapsed();
    assert!(
        handover < Duration::from_secs(4),
        "{handover:?}: not at once (the lease is 10 s)"
    );
    assert!(fa
        .stderr
        .iter()
        .any(|l| l.contains("released partitions 0-3")));
    let sa = worker_stats(&fa);
    assert_eq!(sa["consumed"], 3_000, "{sa}");

    let second = load.add(40, 2_000);
    publish(&url, &second, 4);
    until_done(&mut b, &load, &hosts);
    let fb = b.terminate();
    let sb = worker_stats(&fb);
    // The last checkpoint had it all: nothing again.
    assert_eq!(sb["redelivered"], 0, "{sb}");
    assert_eq!(sb["consumed"], 2_000, "{sb}");
    assert_single_node_results(&load, &finals(&fb), &hosts);
    println!("handover on a clean stop: {handover:?}");
}

#[test]
fn a_worker_carries_on_across_a_nats_restart() {
    let mut nats = Nats::start();
    let url = nats.url();
    let flags = [
        "--partition-count",
        "4",
        "--lease-secs",
        "3",
        "--checkpoint-secs",
        "1",
    ];
    let mut w = worker(&url, "0-3", "W", &flags);
    w.expect_stderr("W owns", |l| l.contains("took over partitions 0-3"));
    let mut load = Load::default();
    let first = load.add(40, 3_000);
    publish(&url, &first, 4);
    let hosts: Vec<String> = load.hosts.keys().cloned().collect();
    until_done(&mut w, &load, &hosts);

    // Down long enough for a renewal to fail (counted), then back.
    nats.kill();
    w.expect_stderr("a failed renewal", |l| l.contains("renewing the lease"));
    nats.restart();
    w.expect_stderr("W reconnects", |l| l.ends_with(": connected"));
    let second = load.add(40, 3_000);
    publish(&url, &second, 4);
    until_done(&mut w, &load, &hosts);
    let f = w.terminate();
    assert!(f.status.success());
    for l in f.stderr.iter().filter(|l| !l.contains("IO error")) {
        eprintln!("DBG {l}");
    }
    // Nothing lost; what came twice (if the restart outlasted the lease,
    // the worker restored its checkpoint) is counted, and the sums are a
    // single node's all the same.
    assert_single_node_results(&load, &finals(&f), &hosts);
    let s = worker_stats(&f);
    assert!(s["nats_errors"].as_u64().unwrap() > 0, "counted: {s}");
    assert_eq!(
        s["consumed"].as_u64().unwrap() + s["skipped"].as_u64().unwrap(),
        6_000 + s["redelivered"].as_u64().unwrap(),
        "{s}"
    );
}

#[test]
fn a_worker_without_nats_says_which_url_and_flag() {
    let url = common::nats::nowhere();
    let mut w = Server::spawn(MODULE, "py", &["--consume", &url, "--partitions", "0-3"]);
    let status = w.wait_exit(WAIT).expect("exits");
    assert!(!status.success());
    let line = w.expect_stderr("the error", |l| l.contains("--consume"));
    assert!(line.contains(&url), "{line}");
}

#[test]
fn an_owner_whose_lease_is_taken_stops_consuming_and_stands_by() {
    let nats = Nats::start();
    let url = nats.url();
    let flags = ["--partition-count", "4", "--lease-secs", "3"];
    let mut w = worker(&url, "0-1,3", "W", &flags);
    w.expect_stderr("W owns", |l| l.contains("took over partitions 0-1,3"));
    // Someone else writes the lease (key: the group, `,` as `_`).
    let kv = |op: &'static str| {
        runtime().block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            let kv = js.get_key_value("dmon_leases").await.unwrap();
            match op {
                "take" => {
                    kv.put("0-1_3", "intruder".into()).await.unwrap();
                }
                _ => kv.delete("0-1_3").await.unwrap(),
            }
        })
    };
    kv("take");
    w.expect_stderr("W loses it", |l| l.contains("the lease is now intruder's"));
    w.expect_stderr("W stands by", |l| {
        l.contains("standing by for partitions 0-1,3 (held by intruder)")
    });
    // Released: W takes it again, and works.
    kv("release");
    w.expect_stderr("W owns again", |l| l.contains("took over partitions 0-1,3"));
    let mut load = Load::default();
    let events: Vec<Event> = load
        .add(40, 1_000)
        .into_iter()
        .filter(|e| partition_of(e.host.as_deref(), 4) != 2)
        .collect();
    let hosts: Vec<String> = load
        .hosts
        .keys()
        .filter(|h| partition_of(Some(h), 4) != 2)
        .cloned()
        .collect();
    publish(&url, &events, 4);
    until_done(&mut w, &load, &hosts);
    let f = w.terminate();
    let s = worker_stats(&f);
    assert_eq!(s["takeovers"], 2, "{s}");
    assert_eq!(s["consumed"].as_u64().unwrap(), events.len() as u64, "{s}");
    assert_single_node_results(&load, &finals(&f), &hosts);
}

/// A checkpoint bigger than nats-server's 1 MiB payload limit is cut into
/// chunks and reads back whole; the next one goes to the other slot and
/// the manifest names it.
#[test]
fn a_large_checkpoint_is_chunked_and_reads_back_whole() {
    use dmon::checkpoint::Checkpoint;
    use dmon::cluster::checkpoint::{Store, CHUNK_BYTES};
    let nats = Nats::start();
    runtime().block_on(async {
        let conn = dmon::cluster::connect(&nats.url(), "t", &Default::default())
            .await
            .unwrap();
        let mut store = Store::open(&conn, "0-2,5").await.unwrap();
        assert!(store.read().await.unwrap().is_none());
        let index: Vec<Value> = (0..4_000)
            .map(|i| serde_json::json!({"host": format!("h{i}"), "description": "x".repeat(600)}))
            .collect();
        let big = Checkpoint {
            node: "n1".into(),
            at: 1.0,
            index,
            ..Checkpoint::default()
        };
        let bytes = store.write(&big).await.unwrap();
        assert!(bytes > 2 * CHUNK_BYTES as u64, "{bytes}");
        let back = store.read().await.unwrap().unwrap();
        assert_eq!(back.node, "n1");
        assert_eq!(back.index, big.index);
        // A smaller one after it, in the other slot: the manifest moves.
        let small = Checkpoint {
            node: "n2".into(),
            ..Checkpoint::default()
        };
        store.write(&small).await.unwrap();
        let mut other = Store::open(&conn, "0-2,5").await.unwrap();
        let back = other.read().await.unwrap().unwrap();
        assert_eq!(back.node, "n2");
        assert!(back.index.is_empty());
    });
}

/// The whole path: Riemann TCP into a gateway, JetStream, three workers;
/// beside it the same events into one plain `dmon serve` with the same
/// module. Per host, the workers end where the single node ends.
#[test]
fn a_gateway_and_three_workers_end_as_a_single_node_does() {
    let nats = Nats::start();
    let url = nats.url();
    let (groups, mut workers) = three_workers(&url, "e2e");
    let gateway = Server::start_with(MODULE, "py", &["--publish", &url, "--node-name", "gw"]);
    let mut single = Server::start_with(MODULE, "py", &[]);

    let mut load = Load::default();
    let events = load.add(100, 10_000);
    let send = |port: u16| {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut client = dmon::client::RiemannClient::connect(addr, WAIT).unwrap();
        for chunk in events.chunks(500) {
            let msg = dmon::codec::riemann::Msg {
                events: chunk.iter().map(dmon::codec::riemann::to_proto).collect(),
                ..Default::default()
            };
            client.request(&msg).expect("acknowledged");
        }
    };
    send(gateway.riemann_tcp);
    send(single.riemann_tcp);

    let hosts: Vec<String> = load.hosts.keys().cloned().collect();
    until_done(&mut single, &load, &hosts);
    let single = single.terminate();
    let expected = finals(&single);
    assert_eq!(expected.len(), 100);
    let mut got = HashMap::new();
    let mut printed = 0;
    for (mut w, (_, range)) in workers.drain(..).zip(groups.iter().cloned()) {
        let mine: Vec<String> = hosts
            .iter()
            .filter(|h| range.contains(&partition_of(Some(h), 16)))
            .cloned()
            .collect();
        until_done(&mut w, &load, &mine);
        let f = w.terminate();
        printed += f.printed("c: ").len();
        got.extend(finals(&f));
    }
    assert_eq!(
        printed, 10_000,
        "every event processed once across the workers"
    );
    assert_eq!(
        got, expected,
        "per host: the single node's counter and average"
    );
    let gateway = gateway.terminate();
    assert!(
        gateway.printed("c: ").is_empty(),
        "the gateway only publishes"
    );
    assert_eq!(gateway.stats().count("cluster_published"), 10_000);
}
