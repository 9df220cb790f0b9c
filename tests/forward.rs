//! `forward`: dmon to dmon over Riemann TCP, with the receiver killed and
//! restarted mid-stream; and a receiver that never acknowledges.

use crate::common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dmon::client::RiemannClient;
use dmon::event::{Event, Number};
use serde_json::json;

const RECEIVER: &str = "from dmon.streams import *\n\ngot_stream = printer(\"got: \")\n";

/// A receiving `dmon serve` with its Riemann TCP listener on `port` (0:
/// any), and that port.
fn receiver(dir: &TempDir, port: u16) -> (Spawned, u16) {
    let module = dir.write("receiver.py", RECEIVER);
    let mut cmd = Command::new(dmon_bin());
    cmd.env("DMON_INSTRUMENT_INTERVAL", "0")
        .arg("serve")
        .arg("--streams")
        .arg(&module)
        .args(["--udp", "127.0.0.1:0", "--riemann-udp", "off"])
        .args(["--riemann-tcp", &format!("127.0.0.1:{port}")]);
    let mut r = Spawned::start(cmd);
    let port = r
        .stdout
        .all()
        .iter()
        .find_map(|l| {
            l.strip_prefix("Listening for Riemann TCP on: 127.0.0.1 ")?
                .parse()
                .ok()
        })
        .expect("the receiver announces its Riemann TCP port");
    (r, port)
}

fn seq_event(i: i64) -> Event {
    Event {
        host: Some("h".into()),
        service: Some("seq".into()),
        metric: Some(Number::Int(i)),
        ..Event::default()
    }
}

/// The sequence numbers in a receiver's `got: ` lines.
fn seqs(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l.starts_with("got: "))
        .map(|l| num(&parse_printed(l, "got: "), "metric") as i64)
        .collect()
}

fn riemann_client(port: u16) -> RiemannClient {
    RiemannClient::connect(SocketAddr::from(([127, 0, 0, 1], port)), TIMEOUT)
        .expect("connect to dmon's Riemann TCP port")
}

/// Events sent to a dmon that forwards them to another; the receiver is
/// killed (SIGKILL) while events flow and restarted on the same port.
/// Every event the sender acknowledged fits its forward queue, so every
/// one must reach a receiver: the first before it died, or the second
/// (some may reach both: at-least-once).
#[test]
fn forward_loses_nothing_across_a_receiver_restart() {
    let dir = TempDir::new();
    let (mut first, port) = receiver(&dir, 0);
    let target = format!("127.0.0.1:{port}");
    let s = Server::start(&format!(
        "from dmon.streams import *\n\nfwd_stream = forward(\"127.0.0.1\", {port})\n"
    ));
    let mut s = s;

    // The feeder sends until the receiver is back and it has sent at least
    // MIN, but never more than MAX: everything fits the queue (10,000).
    const MIN: i64 = 2_000;
    const MAX: i64 = 8_000;
    let restarted = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (restarted, port) = (Arc::clone(&restarted), s.riemann_tcp);
        thread::spawn(move || {
            let mut client = riemann_client(port);
            let mut next = 0;
            while next < MAX && (next < MIN || !restarted.load(Ordering::SeqCst)) {
                let batch: Vec<Event> = (next..next + 10).map(seq_event).collect();
                client.send_events(&batch).expect("the sender acknowledges");
                next += 10;
                // Pacing, not synchronisation: a stream over seconds.
                thread::sleep(Duration::from_millis(5));
            }
            next
        })
    };

    // Mid-stream: the first receiver has printed some, not all.
    first
        .stdout
        .wait_for(TIMEOUT, |l| {
            l.starts_with("got: ") && l.contains("\"metric\":300")
        })
        .unwrap_or_else(|why| panic!("the first receiver got nothing: {why}"));
    first.child.0.kill().expect("kill the receiver");
    first.child.0.wait().expect("reap the receiver");
    let mut got: BTreeSet<i64> = seqs(&first.stdout.read_to_eof(TIMEOUT))
        .into_iter()
        .collect();

    // The sender noticed, and keeps the events queued.
    s.expect_stderr("the forward failure", |l| {
        l.contains(&format!("forward {target}: sending ")) && l.contains("retrying in")
    });
    let (mut second, again) = receiver(&dir, port);
    assert_eq!(again, port);
    restarted.store(true, Ordering::SeqCst);
    let sent = feeder.join().expect("the feeder");

    let deadline = Instant::now() + 3 * TIMEOUT;
    while (got.len() as i64) < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        match second.stdout.wait_for(left, |l| l.starts_with("got: ")) {
            Ok(line) => {
                got.insert(num(&parse_printed(&line, "got: "), "metric") as i64);
            }
            Err(why) => {
                let missing: Vec<i64> = (0..sent).filter(|i| !got.contains(i)).take(20).collect();
                panic!(
                    "{} of {sent} events arrived ({why}); missing, first 20: {missing:?}\n{}",
                    got.len(),
                    s.stderr.dump()
                );
            }
        }
    }
    assert_eq!(got, (0..sent).collect::<BTreeSet<_>>());

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    assert_eq!(stats.node_count("fwd_stream/forward", "in"), sent as u64);
    let sink = stats.sink("forward", &target);
    assert_eq!(sink["sent"], sent, "{sink}");
    assert_eq!(sink["dropped"], 0, "{sink}");
    assert_eq!(sink["failed"], 0, "{sink}");
    assert_eq!(sink["waiting"], 0, "{sink}");
    assert!(sink["retried"].as_u64().unwrap() >= 1, "{sink}");
    assert!(sink["connections"].as_u64().unwrap() >= 2, "{sink}");
}

/// A receiver that takes the connection but never reads or acknowledges:
/// the forward worker waits for an ack, its queue fills, and the overflow
/// is dropped, counted and logged once — while every other stream goes on
/// at once.
#[test]
fn a_receiver_that_never_acknowledges_does_not_stall_the_streams() {
    // Never accepted: the kernel completes the handshakes, nobody reads.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");
    let mut s = Server::start(&format!(
        "from dmon.streams import *\n\n\
         fwd_stream = forward(\"127.0.0.1\", {port})\n\
         mark_stream = where('service = \"mark\"', printer(\"mark: \"))\n"
    ));
    // 12,000 events, each message acknowledged once through the roots.
    let mut client = riemann_client(s.riemann_tcp);
    for m in 0..24 {
        let batch: Vec<Event> = (m * 500..(m + 1) * 500).map(seq_event).collect();
        client.send_events(&batch).expect("dmon acknowledges");
    }
    let warning = format!("forward {target}: queue full (10000 waiting); dropping events");
    s.expect_stderr("the drop warning", |l| l.contains(&warning));

    // The worker waits 5 s for an ack; a stream stuck behind it could not
    // print within half of that.
    s.send(json!({"host": "h", "service": "mark"}));
    if let Err(why) = s
        .stdout
        .wait_for(Duration::from_millis(2500), |l| l.starts_with("mark: "))
    {
        s.fail(&format!(
            "the mark was not printed while forward hung: {why}"
        ));
    }

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    let got = stats.node_count("fwd_stream/forward", "in");
    assert_eq!(got, 12_001);
    let sink = stats.sink("forward", &target);
    let count = |k: &str| sink[k].as_u64().unwrap();
    assert_eq!(count("sent"), 0, "{sink}");
    // Each event is accounted for: dropped when the queue was full or at
    // the end of the grace period, or still in the worker's hands.
    assert_eq!(
        count("sent") + count("failed") + count("dropped") + count("waiting"),
        got,
        "{sink}"
    );
    assert!(count("dropped") >= 1_500, "{sink}");
    // Logged once per interval, not once per event.
    let warnings = done.stderr.iter().filter(|l| l.contains(&warning)).count();
    assert!((1..=2).contains(&warnings), "{warnings} drop warnings");
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains(&format!("forward {target}: "))
                && l.contains("events still unsent after 5s were dropped")),
        "{:?}",
        done.stderr
    );
    drop(hung);
}
