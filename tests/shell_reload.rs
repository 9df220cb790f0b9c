//! reload() under load: while another thread streams 20,000 events over UDP
//! into the plain shell's server, the prompt reloads the stream module again
//! and again. Every event must reach exactly one generation of the streams:
//! none lost in a swap, none run twice.

mod common;
mod shell_support;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shell_support::{has_line, stat, Kind, Shell, Start, TempDir};

/// Records each event's host, one line per event, flushed per line; each
/// reload opens the file again (appending) and starts a new generator.
const RECORDER: &str = r#"from dmon.streams import *
import os

_out = open(os.environ["DMON_RECORD"], "a", buffering=1)


def _record():
    while True:
        e = yield
        _out.write(e.host + "\n")


record_stream = _record()
next(record_stream)
"#;

const EVENTS: usize = 20_000;
const PER_DATAGRAM: usize = 20;
/// Offered load: 10,000 events/s, so sending takes about two seconds.
const EVENTS_PER_SEC: u64 = 10_000;
const MIN_RELOADS: usize = 5;

#[test]
fn reload_under_load_loses_and_doubles_no_event() {
    let dir = TempDir::new();
    let streams = dir.write("recorder.py", RECORDER);
    let record = dir.path().join("record.txt");
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.env
        .push(("DMON_RECORD".into(), record.display().to_string()));
    let shell = Shell::start(opts);
    assert!(
        shell.banner.contains("streams: record_stream"),
        "banner: {}",
        shell.banner
    );

    let port = shell.port;
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            let interval =
                Duration::from_nanos(1_000_000_000 * PER_DATAGRAM as u64 / EVENTS_PER_SEC);
            let start = Instant::now();
            let mut datagrams = 0u64;
            for (k, first) in (0..EVENTS).step_by(PER_DATAGRAM).enumerate() {
                let due = start + interval * k as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let payload: String = (first..(first + PER_DATAGRAM).min(EVENTS))
                    .map(|i| format!("{{\"host\":\"e{i}\"}}\n"))
                    .collect();
                sock.send_to(payload.as_bytes(), ("127.0.0.1", port))
                    .expect("send datagram");
                datagrams += 1;
            }
            done.store(true, Ordering::SeqCst);
            datagrams
        })
    };

    // Reload at the prompt for as long as events are arriving.
    let mut reloads_while_sending = 0;
    while !done.load(Ordering::SeqCst) {
        let out = shell.type_line("reload()");
        assert!(
            has_line(&out, "streams: record_stream"),
            "reload() #{}:\n{out}",
            reloads_while_sending + 1
        );
        if !done.load(Ordering::SeqCst) {
            reloads_while_sending += 1;
        }
    }
    let datagrams_sent = sender.join().expect("sender thread");
    assert!(
        reloads_while_sending >= MIN_RELOADS,
        "only {reloads_while_sending} reloads finished while the events were being sent"
    );

    // Wait until every event is recorded, or the record stops growing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_len = 0;
    let mut last_change = Instant::now();
    loop {
        let len = std::fs::read_to_string(&record)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if len >= EVENTS || Instant::now() >= deadline {
            break;
        }
        if len != last_len {
            last_len = len;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }

    // Leave first, so the counters can explain a shortfall.
    shell.tmux.keys(&["C-d"]);
    let stats = shell.assert_clean_exit();

    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for host in recorded.lines() {
        *seen.entry(host).or_default() += 1;
    }
    let missing: Vec<String> = (0..EVENTS)
        .map(|i| format!("e{i}"))
        .filter(|h| !seen.contains_key(h.as_str()))
        .collect();
    let mut doubled: Vec<(&str, usize)> = seen
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(h, n)| (*h, *n))
        .collect();
    doubled.sort();
    let unknown: Vec<&str> = seen
        .keys()
        .filter(|h| {
            h.strip_prefix('e')
                .and_then(|n| n.parse::<usize>().ok())
                .is_none_or(|n| n >= EVENTS)
        })
        .copied()
        .collect();
    let counters = format!(
        "{reloads_while_sending} reloads while sending; {datagrams_sent} datagrams sent; \
         dmon stats: datagrams {} (bad {}), events {} (bad {}), processed {}, pipeline_full {}",
        stat(&stats, "datagrams"),
        stat(&stats, "bad_datagrams"),
        stat(&stats, "events"),
        stat(&stats, "bad_events"),
        stat(&stats, "processed"),
        stats["pipeline_full"].as_u64().unwrap_or(0),
    );
    eprintln!("{counters}");
    assert!(
        missing.is_empty(),
        "{} of {EVENTS} events were never recorded (first: {:?}); {counters}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        doubled.is_empty(),
        "{} events were recorded more than once (first: {:?}); {counters}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    assert!(unknown.is_empty(), "unexpected lines: {unknown:?}");
    assert_eq!(recorded.lines().count(), EVENTS, "{counters}");
    assert_eq!(stat(&stats, "datagrams"), datagrams_sent, "{counters}");
    assert_eq!(stat(&stats, "processed"), EVENTS as u64, "{counters}");
}
