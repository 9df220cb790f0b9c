//! reload() under load: while another thread streams 20,000 events over
//! Riemann TCP into the plain shell's server, the prompt reloads the stream
//! module again and again. Every event must reach exactly one generation of
//! the streams: none lost in a swap, none run twice; and a native node's
//! state (a `counter`) carries on across every reload, so its count ends
//! at exactly 20,000. TCP, not UDP: each
//! message is acknowledged once it has been through the streams, so a kernel
//! drop cannot pass for a swap bug, and the record is complete at the last ack.

use crate::shell_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dmon::client::RiemannClient;
use dmon::event::Event;
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

# One running count of every event, kept across reloads.
count_stream = with_({"host": "all", "service": "count", "metric": 1, "ttl": 3600},
                     counter(index()))
"#;

const EVENTS: usize = 20_000;
const PER_MESSAGE: usize = 20;
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
    // The harness turns the Riemann listeners off; this one is needed.
    opts.env
        .push(("DMON_RIEMANN_TCP".into(), "127.0.0.1:0".into()));
    let shell = Shell::start(opts);
    assert!(
        shell
            .banner
            .contains("streams: record_stream, count_stream"),
        "banner: {}",
        shell.banner
    );
    let riemann_tcp = riemann_tcp_port(&shell.banner);

    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let sent = send_all(riemann_tcp);
            // Also on failure, so the reload loop below ends.
            done.store(true, Ordering::SeqCst);
            sent
        })
    };

    // Reload at the prompt for as long as events are arriving.
    let mut reloads_while_sending = 0;
    while !done.load(Ordering::SeqCst) {
        let out = shell.type_line("reload()");
        assert!(
            has_line(&out, "streams: record_stream, count_stream"),
            "reload() #{}:\n{out}",
            reloads_while_sending + 1
        );
        if !done.load(Ordering::SeqCst) {
            reloads_while_sending += 1;
        }
    }
    let sent = sender.join().expect("sender thread");
    assert!(
        reloads_while_sending >= MIN_RELOADS,
        "only {reloads_while_sending} reloads finished while the events were being sent"
    );

    // The counter's state went from generation to generation.
    let count = shell.type_line(r#"print("count", query('host = "all"')[0].metric)"#);
    let counted = format!("count {EVENTS}");
    let count_ok = has_line(&count, &counted);

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
        "{reloads_while_sending} reloads while sending; sender: {sent:?}; \
         dmon stats: messages {} (bad {}), events {}, processed {}, pipeline_full {}",
        stat(&stats, "messages"),
        stat(&stats, "bad_messages"),
        stat(&stats, "events"),
        stat(&stats, "processed"),
        stats["pipeline_full"].as_u64().unwrap_or(0),
    );
    eprintln!("{counters}");
    // Every message was acknowledged, so every event was processed.
    let messages = sent.unwrap_or_else(|e| panic!("the sender failed: {e}; {counters}"));
    assert_eq!(messages, EVENTS.div_ceil(PER_MESSAGE) as u64, "{counters}");
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
    assert_eq!(stat(&stats, "messages"), messages, "{counters}");
    assert_eq!(stat(&stats, "events"), EVENTS as u64, "{counters}");
    assert_eq!(stat(&stats, "processed"), EVENTS as u64, "{counters}");
    assert!(count_ok, "expected {counted:?}; {counters}:\n{count}");
}

/// The port of the banner's `Riemann TCP 127.0.0.1:PORT`.
fn riemann_tcp_port(banner: &str) -> u16 {
    banner
        .split("Riemann TCP 127.0.0.1:")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no `Riemann TCP 127.0.0.1:PORT` in the banner {banner:?}"))
}

/// Sends the EVENTS events in messages of PER_MESSAGE, paced at
/// EVENTS_PER_SEC, each acknowledged before the next; returns the number of
/// messages.
fn send_all(riemann_tcp: u16) -> Result<u64, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], riemann_tcp));
    let mut client = RiemannClient::connect(addr, Duration::from_secs(20))
        .map_err(|e| format!("connect to Riemann TCP {addr}: {e}"))?;
    let interval = Duration::from_nanos(1_000_000_000 * PER_MESSAGE as u64 / EVENTS_PER_SEC);
    let start = Instant::now();
    let mut messages = 0u64;
    for (k, first) in (0..EVENTS).step_by(PER_MESSAGE).enumerate() {
        // Pacing (not synchronisation): the sending spans many reloads.
        let due = start + interval * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let events: Vec<Event> = (first..(first + PER_MESSAGE).min(EVENTS))
            .map(|i| Event {
                host: Some(format!("e{i}").into()),
                ..Event::default()
            })
            .collect();
        // Acknowledged only once the events went through the streams.
        client
            .send_events(&events)
            .map_err(|e| format!("message {k} (events from e{first}): {e}"))?;
        messages += 1;
    }
    Ok(messages)
}
