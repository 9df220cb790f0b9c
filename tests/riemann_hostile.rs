//! Hostile clients on dmon's Riemann ports, with raw sockets: garbage inside
//! a valid frame, absurd lengths, frames cut short, clients that never read
//! their acknowledgements, a thousand connections at once, garbage datagrams.
//!
//! Every socket operation has a timeout, every loop a bound.

use crate::common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dmon::codec::riemann::{Attribute, Msg, ProtoEvent, Query};
use prost::Message;

/// Every socket operation is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply longer than this is not a reply dmon would send in these tests.
const MAX_REPLY: usize = 64 * 1024 * 1024;

const INDEX_ONLY: &str = r#"
from dmon.streams import *

index_stream = index()
"#;

const PRINT_AND_INDEX: &str = r#"
from dmon.streams import *

stream = printer("got: ")
index_stream = index()
"#;

// ---------------------------------------------------------------------------
// A raw Riemann TCP connection
// ---------------------------------------------------------------------------

struct Conn {
    s: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Conn {
        Conn::try_open(port).expect("connect to dmon's Riemann TCP port")
    }

    fn try_open(port: u16) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(Conn { s })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// One frame: the 4-byte big-endian length, then `body`.
    fn send_body(&mut self, body: &[u8]) -> io::Result<()> {
        self.write(&frame(body))
    }

    fn send(&mut self, msg: &Msg) -> io::Result<()> {
        self.send_body(&msg.encode_to_vec())
    }

    fn read_reply(&mut self) -> io::Result<Msg> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_REPLY {
            return Err(io::Error::other(format!("reply of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body)?;
        Msg::decode(body.as_slice()).map_err(|e| io::Error::other(format!("bad reply: {e}")))
    }

    /// Sends `msg` and returns the reply, panicking on any I/O error.
    fn request(&mut self, msg: &Msg) -> Msg {
        self.send(msg).expect("send request");
        self.read_reply().expect("read reply")
    }

    /// Waits (bounded) for the server to close: EOF or a reset.
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!("expected the connection to close, got {n} more bytes"),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("the server did not close the connection within {IO_TIMEOUT:?}")
                }
                Err(e) if e.kind() == ErrorKind::Interrupted && Instant::now() < deadline => {}
                Err(e) => panic!("unexpected error waiting for close: {e}"),
            }
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn bytes<T: From<Vec<u8>>>(s: &str) -> Option<T> {
    Some(s.as_bytes().to_vec().into())
}

fn event(host: &str, service: &str, metric: i64) -> ProtoEvent {
    ProtoEvent {
        host: bytes(host),
        service: bytes(service),
        metric_sint64: Some(metric),
        ..ProtoEvent::default()
    }
}

fn events_msg(events: Vec<ProtoEvent>) -> Msg {
    Msg {
        events,
        ..Msg::default()
    }
}

fn query_msg(q: &str) -> Msg {
    Msg {
        query: Some(Query { string: bytes(q) }),
        ..Msg::default()
    }
}

fn error_text(reply: &Msg) -> String {
    reply
        .error
        .as_ref()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default()
}

fn assert_ok(reply: &Msg, what: &str) {
    assert_eq!(
        reply.ok,
        Some(true),
        "{what}: expected ok, got {reply:?} ({})",
        error_text(reply)
    );
}

/// A fresh connection sends one event and gets its ack, then queries it back.
fn assert_responsive(port: u16, service: &str) {
    let mut c = Conn::open(port);
    let reply = c.request(&events_msg(vec![event("probe", service, 1)]));
    assert_ok(&reply, "a fresh connection's event");
    let reply = c.request(&query_msg(&format!("service = \"{service}\"")));
    assert_ok(&reply, "a fresh connection's query");
    assert_eq!(reply.events.len(), 1, "the probe is indexed: {reply:?}");
}

// ---------------------------------------------------------------------------
// The server's memory
// ---------------------------------------------------------------------------

/// The pid of the `dmon serve` whose command line names `module` (unique: a
/// fresh temporary directory per server).
fn server_pid(module: &Path) -> u32 {
    let needle = module.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "serve") && args.contains(&needle) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "one dmon serve for {needle}: {found:?}");
    found[0]
}

// ---------------------------------------------------------------------------
// 6. Garbage inside a valid frame
// ---------------------------------------------------------------------------

#[test]
fn garbage_in_a_valid_frame_is_refused_and_the_connection_stays_usable() {
    let s = Server::start(INDEX_ONLY);
    let mut c = Conn::open(s.riemann_tcp);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("an over-long varint", vec![0xff; 10]),
        (
            "a truncated length-delimited field",
            b"\x32\x05abc".to_vec(),
        ),
        ("wire type 7", vec![0x0f]),
        ("field number 0", vec![0x00, 0x01]),
        ("events (field 6) as a varint", vec![0x30, 0x01]),
        (
            "an event whose host runs past its end",
            b"\x32\x04\x22\x09ab".to_vec(),
        ),
        ("text", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (i, (what, body)) in garbage.iter().enumerate() {
        c.send_body(body).expect("send garbage");
        let reply = c
            .read_reply()
            .unwrap_or_else(|e| panic!("no reply to {what}: {e}"));
        assert_eq!(reply.ok, Some(false), "{what} must be refused: {reply:?}");
        assert!(!error_text(&reply).is_empty(), "{what}: no error text");
        // The framing was intact: the same connection still works.
        let reply = c.request(&events_msg(vec![event(
            "h",
            &format!("after-{i}"),
            i as i64,
        )]));
        assert_ok(&reply, &format!("the event after {what}"));
    }
    // An empty frame is an empty message: acknowledged.
    c.send_body(&[]).expect("send empty frame");
    assert_ok(&c.read_reply().expect("reply"), "an empty frame");

    let reply = c.request(&query_msg("service =~ \"after-%\""));
    assert_ok(&reply, "query");
    assert_eq!(reply.events.len(), garbage.len(), "{reply:?}");

    let stats = s.terminate().stats();
    assert_eq!(
        stats.count("bad_messages"),
        garbage.len() as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.count("events"), garbage.len() as u64, "{:?}", stats.0);
}

/// What real clients send (collectd: empty service, ttl = inf, invalid
/// UTF-8) is decoded leniently, not refused.
#[test]
fn junk_fields_are_decoded_leniently() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let mut c = Conn::open(s.riemann_tcp);
    let junk = ProtoEvent {
        host: Some(b"bad\xffhost".to_vec().into()),
        service: Some(Vec::new().into()),
        ttl: Some(f32::INFINITY),
        metric_d: Some(f64::NAN),
        metric_f: Some(1.5),
        attributes: vec![
            Attribute {
                key: None,
                value: bytes("orphan"),
            },
            Attribute {
                key: bytes("k"),
                value: None,
            },
        ],
        tags: vec![b"t\xfe".to_vec().into()],
        ..ProtoEvent::default()
    };
    assert_ok(&c.request(&events_msg(vec![junk])), "junk event");
    let e = s.expect_printed("got: ");
    assert_eq!(text(&e, "host"), "bad\u{fffd}host", "{e}");
    assert_eq!(text(&e, "service"), "", "{e}");
    assert!(
        e.get("ttl").is_none(),
        "an infinite ttl counts as absent: {e}"
    );
    // A NaN double is skipped for the next metric field.
    assert_eq!(e["metric"].as_f64(), Some(1.5), "{e}");
    assert_eq!(e["tags"], serde_json::json!(["t\u{fffd}"]), "{e}");
    assert_eq!(e["attributes"], serde_json::json!({"k": ""}), "{e}");
    let t = num(&e, "time");
    assert!((t - now()).abs() < 60.0, "no time: the receive time ({e})");

    // A query that is not UTF-8 gets a reply; the connection goes on.
    let reply = c.request(&Msg {
        query: Some(Query {
            string: Some(b"host = \"\xff\"".to_vec().into()),
        }),
        ..Msg::default()
    });
    assert!(reply.ok.is_some(), "{reply:?}");
    let reply = c.request(&query_msg("service = \"\""));
    assert_ok(&reply, "query for the empty service");
    assert_eq!(reply.events.len(), 1, "{reply:?}");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("bad_messages"), 0, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 7. Absurd lengths
// ---------------------------------------------------------------------------

#[test]
fn a_two_gigabyte_length_is_refused_quickly_without_allocating() {
    let s = Server::start(INDEX_ONLY);
    let pid = server_pid(&s.module);
    assert_responsive(s.riemann_tcp, "warm-up");
    let before = rss_kib(pid);

    let started = Instant::now();
    for len in [0x8000_0000u32, u32::MAX, 8 * 1024 * 1024 + 1] {
        let mut c = Conn::open(s.riemann_tcp);
        c.write(&len.to_be_bytes()).expect("send length");
        // A few bytes of the promised body.
        c.write(&[0u8; 100]).expect("send some body");
        let reply = c
            .read_reply()
            .unwrap_or_else(|e| panic!("no error reply to a length of {len}: {e}"));
        assert_eq!(reply.ok, Some(false), "{reply:?}");
        let why = error_text(&reply);
        assert!(
            why.contains(&len.to_string()) && why.contains("exceeds the maximum"),
            "the reason names the length: {why:?}"
        );
        c.expect_closed();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusing took {:?}",
        started.elapsed()
    );

    let after = rss_kib(pid);
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_responsive(s.riemann_tcp, "after-2g");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("bad_messages"), 3, "{:?}", stats.0);
}

#[test]
fn max_frame_is_configurable() {
    let s = Server::start_with(INDEX_ONLY, "py", &["--max-frame", "1000"]);
    let mut c = Conn::open(s.riemann_tcp);
    // Exactly at the limit: accepted (the body is garbage, so refused as
    // such, but the connection stays open).
    c.send_body(&[0xff; 1000]).expect("send");
    let reply = c.read_reply().expect("reply");
    assert_eq!(reply.ok, Some(false));
    assert!(
        !error_text(&reply).contains("exceeds"),
        "1000 bytes is within --max-frame 1000: {reply:?}"
    );
    assert_ok(
        &c.request(&events_msg(vec![event("h", "fits", 1)])),
        "a small event",
    );
    // One over: refused and closed.
    c.send_body(&[0u8; 1001]).expect("send");
    let reply = c.read_reply().expect("reply");
    assert_eq!(reply.ok, Some(false));
    assert!(error_text(&reply).contains("exceeds"), "{reply:?}");
    c.expect_closed();
    assert_responsive(s.riemann_tcp, "after-limit");
}

/// A client that sends a whole oversized message before reading (as every
/// client does) must still get the refusal, not a bare reset, even when the
/// message is larger than the socket buffers.
#[test]
fn an_oversized_message_sent_whole_still_gets_its_refusal() {
    let s = Server::start(INDEX_ONLY);
    let body = events_msg(vec![ProtoEvent {
        description: bytes(&"x".repeat(40 * 1024 * 1024)),
        ..event("h", "huge", 1)
    }])
    .encode_to_vec();
    let mut c = Conn::open(s.riemann_tcp);
    // The server stops reading after the length, so the write may fail.
    let write = c.write(&frame(&body));
    let reply = c.read_reply();
    assert!(
        matches!(&reply, Ok(r) if r.ok == Some(false) && error_text(r).contains("exceeds")),
        "a 40 MiB message over the default --max-frame got {reply:?} (the write gave {write:?})"
    );
    assert_responsive(s.riemann_tcp, "after-huge");
}

/// Connections that each announce a frame of the largest allowed size and
/// then send nothing more must not hold up everyone else. (Each costs the
/// server nothing until its bytes arrive; the frame memory budget is for
/// bytes that did.)
#[test]
fn clients_holding_max_size_frames_open_do_not_stall_others() {
    let _heavy = heavy();
    let s = Server::start(INDEX_ONLY);
    let mut probe = Conn::open(s.riemann_tcp);
    let mut idle = Vec::new();
    // 8 MiB (the default --max-frame) each: 48 of them announce 384 MiB.
    // After each one, a probe on another connection must still get its ack.
    for i in 0..48 {
        let mut c = Conn::open(s.riemann_tcp);
        c.write(&(8u32 * 1024 * 1024).to_be_bytes())
            .expect("send length");
        c.write(b"\x0a").expect("send a byte");
        idle.push(c);
        let started = Instant::now();
        probe
            .send(&events_msg(vec![event("h", "beside-idle", i)]))
            .expect("send probe");
        let reply = probe.read_reply();
        assert!(
            matches!(&reply, Ok(r) if r.ok == Some(true)),
            "a client beside {} idle, half-sent 8 MiB frames got {reply:?} after {:?}",
            i + 1,
            started.elapsed()
        );
    }
    drop(idle);
    assert_responsive(s.riemann_tcp, "after-idle");
}

// ---------------------------------------------------------------------------
// 8. Frames cut short
// ---------------------------------------------------------------------------

#[test]
fn a_frame_cut_short_closes_only_that_connection() {
    let mut s = Server::start(INDEX_ONLY);
    let mut other = Conn::open(s.riemann_tcp);
    assert_ok(
        &other.request(&events_msg(vec![event("h", "before", 1)])),
        "before",
    );

    // Half a frame, then the write side closed: the server closes too.
    let body = events_msg(vec![event("h", "cut", 1)]).encode_to_vec();
    let whole = frame(&body);
    let mut cut = Conn::open(s.riemann_tcp);
    let cut_addr = cut.s.local_addr().expect("local address");
    cut.write(&whole[..whole.len() / 2]).expect("send half");
    cut.s.shutdown(Shutdown::Write).expect("shutdown write");
    cut.expect_closed();

    // Half a length prefix, then gone.
    let mut cut = Conn::open(s.riemann_tcp);
    cut.write(&[0, 0]).expect("send half a length");
    drop(cut);

    // Half a frame, and the client just sits there: others are served.
    let mut stuck = Conn::open(s.riemann_tcp);
    let stuck_addr = stuck.s.local_addr().expect("local address");
    stuck
        .write(&whole[..whole.len() - 1])
        .expect("send all but one byte");

    assert_ok(
        &other.request(&events_msg(vec![event("h", "after", 2)])),
        "the other connection",
    );
    assert_responsive(s.riemann_tcp, "fresh");
    drop(stuck);

    // One warning each for the half frame and the stuck one (half a length
    // prefix is a client leaving between messages, not a bad message).
    for (what, addr) in [("half", cut_addr), ("stuck", stuck_addr)] {
        let warning = format!(
            "riemann tcp {addr}: frame cut short after its length ({} bytes expected): early eof",
            body.len()
        );
        s.expect_stderr(&format!("a warning about the {what} frame"), |l| {
            l.ends_with(&warning)
        });
    }
    let reply = other.request(&query_msg("service = \"cut\""));
    assert_ok(&reply, "query");
    assert!(reply.events.is_empty(), "no cut event got in: {reply:?}");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("bad_messages"), 2, "{:?}", stats.0);
    assert_eq!(stats.count("events"), 3, "{:?}", stats.0);
}

#[test]
fn the_server_stops_promptly_with_stuck_clients_connected() {
    let s = Server::start(INDEX_ONLY);
    let body = events_msg(vec![event("h", "stuck", 1)]).encode_to_vec();
    let whole = frame(&body);
    // Mid-frame, mid-length, between messages, and waiting on an ack it
    // will not read.
    let mut mid_frame = Conn::open(s.riemann_tcp);
    mid_frame.write(&whole[..whole.len() - 1]).expect("send");
    let mut mid_length = Conn::open(s.riemann_tcp);
    mid_length.write(&whole[..2]).expect("send");
    let mut idle = Conn::open(s.riemann_tcp);
    assert_ok(
        &idle.request(&events_msg(vec![event("h", "idle", 1)])),
        "idle",
    );
    let mut big_frame = Conn::open(s.riemann_tcp);
    big_frame
        .write(&(8u32 * 1024 * 1024).to_be_bytes())
        .expect("send");
    let started = Instant::now();
    let done = s.terminate();
    assert!(
        done.status.success(),
        "dmon serve exited with {}: {}",
        done.status,
        done.stderr.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
    assert_eq!(done.stats().count("events"), 1, "{:?}", done.stats().0);
    drop((mid_frame, mid_length, idle, big_frame));
}

// ---------------------------------------------------------------------------
// 9. A client that never reads its acknowledgements
// ---------------------------------------------------------------------------

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let _heavy = heavy();
    let s = Server::start(INDEX_ONLY);
    // 200 events with 2 KB descriptions: every `true` query answers ~400 KB.
    let mut c = Conn::open(s.riemann_tcp);
    let desc = "d".repeat(2000);
    let events: Vec<ProtoEvent> = (0..200)
        .map(|i| ProtoEvent {
            description: bytes(&desc),
            ..event("big", &format!("svc-{i}"), i)
        })
        .collect();
    assert_ok(&c.request(&events_msg(events)), "the index fill");
    let pid = server_pid(&s.module);
    let before = rss_kib(pid);

    // The flooder sends queries (each padded to 60 KB, so its own socket
    // buffers fill quickly too) and reads nothing, until its writes block.
    let pad = "x".repeat(60_000);
    let flood = frame(&query_msg(&format!("true or description = \"{pad}\"")).encode_to_vec());
    let mut flooder = Conn::open(s.riemann_tcp);
    flooder
        .s
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent = 0;
    let stalled = loop {
        if sent == 2000 {
            break false;
        }
        match flooder.s.write_all(&flood) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("flooder write failed after {sent} queries: {e}"),
        }
    };
    assert!(
        stalled,
        "the server kept reading {sent} queries (~{} MB of replies) from a client that \
         reads nothing: replies are buffered without bound",
        sent * 400 / 1000
    );

    // The replies wait in socket buffers, not in the server.
    let during = rss_kib(pid);
    eprintln!("flood: {sent} queries sent; RSS {before} KiB before, {during} KiB stalled");
    assert!(
        during < before + 100 * 1024,
        "RSS grew from {before} KiB to {during} KiB while a client did not read"
    );

    // Meanwhile another client is served promptly.
    let started = Instant::now();
    let mut other = Conn::open(s.riemann_tcp);
    for i in 0..20 {
        let reply = other.request(&events_msg(vec![event("other", "beside-flood", i)]));
        assert_ok(&reply, "the other client's event");
    }
    let reply = other.request(&query_msg("service = \"beside-flood\""));
    assert_ok(&reply, "the other client's query");
    assert_eq!(reply.events.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the other client took {:?}",
        started.elapsed()
    );
    drop(flooder);
    assert_responsive(s.riemann_tcp, "after-flood");
}

// ---------------------------------------------------------------------------
// 10. A thousand connections at once
// ---------------------------------------------------------------------------

fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_concurrent_connections_are_all_acknowledged() {
    const N: usize = 1000;
    const THREADS: usize = 8;
    let _heavy = heavy();
    let limit = open_files_limit();
    assert!(
        limit >= 2 * N as u64 + 200,
        "this test needs `ulimit -n` of at least {} (the server inherits it); it is {limit}",
        2 * N + 200
    );
    let s = Server::start(INDEX_ONLY);
    let port = s.riemann_tcp;
    let connected = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let connected = Arc::clone(&connected);
            let acked = Arc::clone(&acked);
            thread::spawn(move || -> Result<(), String> {
                let ids: Vec<usize> = (t..N).step_by(THREADS).collect();
                let mut conns = Vec::new();
                for &i in &ids {
                    let c = Conn::try_open(port).map_err(|e| format!("connect #{i}: {e}"))?;
                    conns.push(c);
                    connected.fetch_add(1, Ordering::SeqCst);
                }
                // Everyone is connected before anyone sends.
                while connected.load(Ordering::SeqCst) < N {
                    if Instant::now() > deadline {
                        return Err("not all connections opened in time".into());
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                for (c, &i) in conns.iter_mut().zip(&ids) {
                    c.send(&events_msg(vec![event(
                        "many",
                        &format!("conn-{i}"),
                        i as i64,
                    )]))
                    .map_err(|e| format!("send #{i}: {e}"))?;
                }
                for (c, &i) in conns.iter_mut().zip(&ids) {
                    let reply = c.read_reply().map_err(|e| format!("ack #{i}: {e}"))?;
                    if reply.ok != Some(true) {
                        return Err(format!("#{i} refused: {reply:?}"));
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = workers
        .into_iter()
        .filter_map(|w| w.join().expect("worker panicked").err())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(acked.load(Ordering::SeqCst), N);

    let mut c = Conn::open(port);
    let reply = c.request(&query_msg("service =~ \"conn-%\""));
    assert_ok(&reply, "query");
    assert_eq!(reply.events.len(), N, "every event is indexed");
    assert_responsive(port, "after-thousand");

    let stats = s.terminate().stats();
    // The N, the query's and assert_responsive's.
    assert_eq!(stats.count("connections"), N as u64 + 2, "{:?}", stats.0);
    assert_eq!(stats.count("events"), N as u64 + 1, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 0, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 11. UDP
// ---------------------------------------------------------------------------

#[test]
fn a_garbage_datagram_is_counted_and_a_valid_one_processed() {
    let mut s = Server::start(PRINT_AND_INDEX);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.connect(("127.0.0.1", s.riemann_udp)).expect("connect");
    udp.send(&[0xff; 16]).expect("send garbage");
    udp.send(b"\x32\x04\x22\x09ab").expect("send truncated");
    let good = events_msg(vec![event("u", "valid-udp", 5)]).encode_to_vec();
    udp.send(&good).expect("send valid");
    let e = s.expect_printed("got: ");
    assert_eq!(text(&e, "service"), "valid-udp");
    assert_eq!(e["metric"].as_i64(), Some(5), "{e}");
    let from = udp.local_addr().expect("local address");
    for (what, len) in [("the garbage", 16), ("the truncated message", 6)] {
        let warning = format!("riemann udp {from}: invalid message ({len} bytes): ");
        s.expect_stderr(&format!("a warning about {what}"), |l| l.contains(&warning));
    }
    // The largest datagram IPv4 carries (65,507 bytes) is accepted whole.
    let mut big = events_msg(vec![ProtoEvent {
        description: bytes(&"y".repeat(65_400)),
        ..event("u", "big-udp", 6)
    }])
    .encode_to_vec();
    let pad = 65_507 - big.len();
    big = events_msg(vec![ProtoEvent {
        description: bytes(&"y".repeat(65_400 + pad)),
        ..event("u", "big-udp", 6)
    }])
    .encode_to_vec();
    assert_eq!(big.len(), 65_507);
    udp.send(&big).expect("send a 65,507-byte datagram");
    let e = s.expect_printed("got: ");
    assert_eq!(text(&e, "service"), "big-udp");
    assert_eq!(text(&e, "description").len(), 65_400 + pad);

    let stats = s.terminate().stats();
    assert_eq!(stats.count("bad_messages"), 2, "{:?}", stats.0);
    assert_eq!(stats.count("messages"), 4, "{:?}", stats.0);
    assert_eq!(stats.count("events"), 2, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 12. Limits: amplification, queries, connections, idleness
// ---------------------------------------------------------------------------

/// A well-behaved client acknowledging one event at a time until `stop`;
/// returns every ack's latency, sorted.
fn ack_probe(
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let mut c = Conn::open(port);
        let mut latencies = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) || latencies.is_empty() {
            let started = Instant::now();
            let reply = c.request(&events_msg(vec![event("probe", "acks", i)]));
            assert_ok(&reply, "the probe's event");
            latencies.push(started.elapsed());
            i += 1;
            thread::sleep(Duration::from_millis(5));
        }
        latencies.sort();
        latencies
    })
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// One 8 MiB frame of `0x32 0x00` (an empty event) decodes to 4,194,304
/// events: 1.8 GiB before the fix. Three attackers send three each, at
/// once; each is refused before decoding, naming the limit. Bounds: RSS
/// peak under 300 MiB (the frames themselves are 3 × 8 MiB, dmon idles at
/// ~40 MiB; a single decoded frame would be ~1.8 GiB), the probe's ack p99
/// under 1 s (a debug build; before the fix acks took seconds).
#[test]
fn an_amplifying_frame_is_refused_before_decoding() {
    const ATTACKERS: usize = 3;
    const ROUNDS: usize = 3;
    const EVENTS: usize = 4 * 1024 * 1024;
    let _heavy = heavy();
    let mut s = Server::start(INDEX_ONLY);
    let port = s.riemann_tcp;
    let pid = server_pid(&s.module);
    assert_responsive(port, "warm-up");
    let body = Arc::new([0x32u8, 0x00].repeat(EVENTS));
    assert_eq!(body.len(), 8 * 1024 * 1024, "the default --max-frame");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = ack_probe(port, Arc::clone(&stop));
    let (replies, peak) = peak_rss_during(pid, || {
        let attackers: Vec<_> = (0..ATTACKERS)
            .map(|_| {
                let body = Arc::clone(&body);
                thread::spawn(move || {
                    let mut c = Conn::open(port);
                    (0..ROUNDS)
                        .map(|_| {
                            c.send_body(&body).expect("send the frame");
                            error_text(&c.read_reply().expect("a reply to the frame"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        attackers
            .into_iter()
            .flat_map(|a| a.join().expect("attacker"))
            .collect::<Vec<_>>()
    });
    stop.store(true, Ordering::SeqCst);
    let latencies = probe.join().expect("probe");
    let expected =
        format!("message holds {EVENTS} events; the limit is 100000 (--max-events-per-message)");
    for reply in &replies {
        assert_eq!(reply, &expected);
    }
    eprintln!(
        "amplification: RSS peak {peak} KiB; {} probe acks, p99 {:?}",
        latencies.len(),
        p99(&latencies)
    );
    assert!(peak < 300 * 1024, "RSS peaked at {peak} KiB");
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "probe ack p99 {:?}",
        p99(&latencies)
    );
    s.expect_stderr("the refusal's warning", |l| l.ends_with(&expected));
    assert_responsive(port, "after-amplification");
    let stats = s.terminate().stats();
    let refused = (ATTACKERS * ROUNDS) as u64;
    assert_eq!(stats.count("bad_messages"), refused, "{:?}", stats.0);
    assert_eq!(
        stats.count("refused_events"),
        refused * EVENTS as u64,
        "{:?}",
        stats.0
    );
    // The probe's events and the two assert_responsive's, nothing else.
    assert_eq!(
        stats.count("events"),
        latencies.len() as u64 + 2,
        "{:?}",
        stats.0
    );
}

/// A message body of one event whose encoded fields are `inner`: field 6,
/// its length as a 4-byte varint (up to 256 MiB), then `inner`.
fn one_event(inner: &[u8]) -> Vec<u8> {
    let n = inner.len() as u32;
    let mut body = vec![
        0x32,
        (n & 0x7f) as u8 | 0x80,
        ((n >> 7) & 0x7f) as u8 | 0x80,
        ((n >> 14) & 0x7f) as u8 | 0x80,
        (n >> 21) as u8,
    ];
    body.extend_from_slice(inner);
    body
}

/// One event holding 4,194,302 empty attributes (`0x4a 0x00`), in an 8 MiB
/// frame: under the events cap, but it would decode to over 500 MiB. It is
/// charged at its decoded size, which exceeds what large messages may use
/// of the default --memory-limit, so it is refused before decoding. Bound:
/// RSS stays under 300 MiB.
#[test]
fn a_frame_that_decodes_too_large_is_refused_by_the_budget() {
    let _heavy = heavy();
    let s = Server::start(INDEX_ONLY);
    let pid = server_pid(&s.module);
    let body = one_event(&[0x4au8, 0x00].repeat(4 * 1024 * 1024 - 3));
    assert!(body.len() <= 8 * 1024 * 1024);
    let (reply, peak) = peak_rss_during(pid, || {
        let mut c = Conn::open(s.riemann_tcp);
        c.send_body(&body).expect("send");
        let reply = c.read_reply().expect("a reply");
        // The framing was intact: the connection goes on.
        assert_ok(
            &c.request(&events_msg(vec![event("h", "after-budget", 1)])),
            "the next event",
        );
        reply
    });
    let why = error_text(&reply);
    assert!(
        why.starts_with(&format!(
            "server busy: the message (1 events, {} bytes) decodes to about",
            body.len()
        )) && why.contains("MiB dmon keeps for large messages being received (--memory-limit)"),
        "{why}"
    );
    eprintln!("decoded budget: RSS peak {peak} KiB");
    assert!(peak < 300 * 1024, "RSS peaked at {peak} KiB");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("bad_messages"), 1, "{:?}", stats.0);
    assert_eq!(stats.count("refused_events"), 1, "{:?}", stats.0);
    assert_eq!(stats.count("events"), 1, "{:?}", stats.0);
}

#[test]
fn max_events_per_message_is_configurable() {
    let s = Server::start_with(INDEX_ONLY, "py", &["--max-events-per-message", "1000"]);
    let mut c = Conn::open(s.riemann_tcp);
    let batch = |n: usize, service: &str| {
        events_msg(
            (0..n)
                .map(|i| event(&format!("h{i}"), service, i as i64))
                .collect(),
        )
    };
    assert_ok(&c.request(&batch(1000, "at-limit")), "1000 events");
    let reply = c.request(&batch(1001, "over-limit"));
    assert_eq!(reply.ok, Some(false), "{reply:?}");
    assert_eq!(
        error_text(&reply),
        "message holds 1001 events; the limit is 1000 (--max-events-per-message)"
    );
    // Refused whole; the connection goes on.
    let reply = c.request(&query_msg("service = \"over-limit\""));
    assert_ok(&reply, "query");
    assert!(reply.events.is_empty(), "{reply:?}");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("events"), 1000, "{:?}", stats.0);
    assert_eq!(stats.count("refused_events"), 1001, "{:?}", stats.0);
    assert_eq!(stats.count("bad_messages"), 1, "{:?}", stats.0);
}

/// Indexes `n` events (1 KB descriptions, metric = i) in batches.
fn fill_index(port: u16, n: usize) {
    let mut c = Conn::open(port);
    let desc = "d".repeat(1000);
    for start in (0..n).step_by(1000) {
        let events = (start..(start + 1000).min(n))
            .map(|i| ProtoEvent {
                description: bytes(&desc),
                ..event("fill", &format!("svc-{i}"), i as i64)
            })
            .collect();
        assert_ok(&c.request(&events_msg(events)), "the index fill");
    }
}

/// 5,000 keys indexed, `--max-query-results 1000`: `true` is refused with
/// the limit named; a query within it is answered. Then 20 clients send
/// queries answered with 1,000 events (~1 MB each) and never read. Bounds:
/// RSS grows by under 100 MiB (before: every reply queued; 20 clients took
/// 1.3 GiB), the probe's ack p99 under 1 s.
#[test]
fn query_replies_are_capped_and_non_readers_hold_little() {
    let _heavy = heavy();
    let s = Server::start_with(INDEX_ONLY, "py", &["--max-query-results", "1000"]);
    let port = s.riemann_tcp;
    let pid = server_pid(&s.module);
    fill_index(port, 5000);
    let mut c = Conn::open(port);
    let reply = c.request(&query_msg("true"));
    assert_eq!(reply.ok, Some(false), "{}", error_text(&reply));
    assert_eq!(
        error_text(&reply),
        "query matches 5000 events; the limit is 1000 (--max-query-results); narrow the query"
    );
    let reply = c.request(&query_msg("service =~ \"svc-%\" and metric < 1000"));
    assert_ok(&reply, "a query within the limit");
    assert_eq!(reply.events.len(), 1000);
    let before = rss_kib(pid);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = ack_probe(port, Arc::clone(&stop));
    let query = frame(&query_msg("service =~ \"svc-%\" and metric < 1000").encode_to_vec());
    let (sent, peak) = peak_rss_during(pid, || {
        let flooders: Vec<_> = (0..20)
            .map(|_| {
                let query = query.clone();
                thread::spawn(move || {
                    let mut c = Conn::open(port);
                    c.s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                    // Until the server stops reading (its reply is stuck),
                    // at most 200 queries.
                    let sent = (0..200)
                        .take_while(|_| c.s.write_all(&query).is_ok())
                        .count();
                    (c, sent)
                })
            })
            .collect();
        let flooders = flooders
            .into_iter()
            .map(|f| f.join().expect("flooder"))
            .collect::<Vec<_>>();
        // No signal says the server has answered what it will: watch its
        // memory for a while with the flooders' queries pending.
        thread::sleep(Duration::from_secs(2));
        flooders
    });
    let during = rss_kib(pid);
    stop.store(true, Ordering::SeqCst);
    let latencies = probe.join().expect("probe");
    let sent: usize = sent.iter().map(|(_, n)| n).sum();
    eprintln!(
        "non-readers: {sent} queries; RSS {before} KiB before, peak {peak} KiB, {during} KiB after; probe p99 {:?}",
        p99(&latencies)
    );
    assert!(
        peak < before + 100 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "probe ack p99 {:?}",
        p99(&latencies)
    );
    assert_responsive(port, "after-non-readers");
    let done = s.terminate();
    let stats = done.stats();
    assert_eq!(
        stats.count("refused_queries"),
        1,
        "{:?}\n{}",
        stats.0,
        done.stderr.join("\n")
    );
}

/// A 1 MB query (over --max-query-bytes, 64 KiB) and one of 5,000 terms
/// (over --max-query-terms, 1,000) are refused within 1 s each; heavy
/// queries within the limits (1,000 terms over 20,000 keys, from 4
/// clients) run while a probe's ack p99 stays under 1 s: they hold neither
/// the index lock nor an async worker.
#[test]
fn oversized_and_complex_queries_are_refused_and_heavy_ones_do_not_stall_ingest() {
    let _heavy = heavy();
    let mut s = Server::start(INDEX_ONLY);
    let port = s.riemann_tcp;
    fill_index(port, 20_000);
    let mut c = Conn::open(port);

    let long = format!("host = \"{}\"", "x".repeat(1024 * 1024));
    let started = Instant::now();
    let reply = c.request(&query_msg(&long));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error_text(&reply),
        format!(
            "query of {} bytes; the limit is 65536 (--max-query-bytes)",
            long.len()
        )
    );
    let terms = |n: usize| {
        (0..n)
            .map(|i| format!("service = \"x{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    // Bare attribute names (truthiness): 5,000 terms in under 64 KiB.
    let complex = (0..5000)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(" or ");
    assert!(complex.len() < 65536);
    let started = Instant::now();
    let reply = c.request(&query_msg(&complex));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error_text(&reply),
        "query has 5000 terms; the limit is 1000 (--max-query-terms)"
    );
    s.expect_stderr("the refusal's warning", |l| {
        l.ends_with("refused a query: query has 5000 terms; the limit is 1000 (--max-query-terms)")
    });

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = ack_probe(port, Arc::clone(&stop));
    let heavy_query = query_msg(&terms(1000));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let q = heavy_query.clone();
            thread::spawn(move || {
                let mut c = Conn::open(port);
                c.s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                for _ in 0..2 {
                    let reply = c.request(&q);
                    assert_ok(&reply, "a heavy query within the limits");
                    assert!(reply.events.is_empty());
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("heavy reader");
    }
    stop.store(true, Ordering::SeqCst);
    let latencies = probe.join().expect("probe");
    eprintln!(
        "heavy queries: {} probe acks meanwhile, p99 {:?}, max {:?}",
        latencies.len(),
        p99(&latencies),
        latencies.last()
    );
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "probe ack p99 {:?}",
        p99(&latencies)
    );
    let stats = s.terminate().stats();
    assert_eq!(stats.count("refused_queries"), 2, "{:?}", stats.0);
}

/// `--max-connections 5`: a sixth is closed at once and counted; once one
/// leaves, a new one is served.
#[test]
fn connections_over_the_cap_are_closed_and_counted() {
    let mut s = Server::start_with(INDEX_ONLY, "py", &["--max-connections", "5"]);
    let port = s.riemann_tcp;
    let mut open: Vec<Conn> = (0..5)
        .map(|i| {
            let mut c = Conn::open(port);
            assert_ok(
                &c.request(&events_msg(vec![event("h", "capped", i)])),
                "a connection within the cap",
            );
            c
        })
        .collect();
    let mut sixth = Conn::open(port);
    let _ = sixth.send(&events_msg(vec![event("h", "sixth", 6)]));
    sixth.expect_closed();
    s.expect_stderr("the refusal's warning", |l| {
        l.contains("connection refused: 5 connections are open, the limit (--max-connections)")
    });
    drop(open.pop());
    // The server frees the slot when it sees the close; until then a new
    // connection may still be refused (and counted). Bounded retries.
    let mut refused = 1;
    let served = (0..100).any(|_| {
        let mut c = Conn::open(port);
        match c
            .send(&events_msg(vec![event("h", "after-leave", 7)]))
            .and_then(|()| c.read_reply())
        {
            Ok(r) if r.ok == Some(true) => true,
            _ => {
                refused += 1;
                thread::sleep(Duration::from_millis(20));
                false
            }
        }
    });
    assert!(served, "no connection was served after one left");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("refused_connections"), refused, "{:?}", stats.0);
    assert_eq!(stats.count("events"), 6, "{:?}", stats.0);
}

/// CPU seconds `pid` has used (utime + stime from /proc/PID/stat).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// dmon with 64 file descriptors (`prlimit`), and 100 connections held:
/// accepting fails with EMFILE. Before the fix a core spun on it; now the
/// listener pauses 100 ms per failure. Bound: under 0.5 s of CPU over 2 s
/// held (spinning is ~2 s), and at most ~10 failures a second counted.
/// Once the clients leave, it serves again.
#[test]
fn out_of_file_descriptors_the_listener_backs_off() {
    let _heavy = heavy();
    let dir = TempDir::new();
    let module = dir.write("streams.py", INDEX_ONLY);
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=64:64", dmon_bin(), "serve", "--streams"])
        .arg(&module)
        .args(["--udp", "127.0.0.1:0", "--riemann-tcp", "127.0.0.1:0"])
        .args(["--riemann-udp", "off"]);
    let mut s = Spawned::start(cmd);
    let pid = s.child.0.id();
    let line = s
        .stdout
        .all()
        .into_iter()
        .find(|l| l.starts_with("Listening for Riemann TCP on: "))
        .expect("the Riemann TCP line");
    let port: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let started = Instant::now();

    let held: Vec<Conn> = (0..100).map(|_| Conn::open(port)).collect();
    s.stderr
        .wait_for(TIMEOUT, |l| {
            l.contains("riemann tcp accept failed") && l.contains("pausing 100ms")
        })
        .unwrap_or_else(|why| panic!("no EMFILE warning: {why}\n{}", s.stderr.dump()));
    let cpu_before = cpu_secs(pid);
    thread::sleep(Duration::from_secs(2));
    let cpu = cpu_secs(pid) - cpu_before;
    eprintln!("EMFILE: {cpu:.2} s of CPU over 2 s with 100 connections held");
    assert!(
        cpu < 0.5,
        "dmon used {cpu:.2} s of CPU in 2 s out of file descriptors"
    );
    drop(held);
    assert_responsive(port, "after-emfile");
    let elapsed = started.elapsed().as_secs_f64();

    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    wait_timeout(&mut s.child.0, TIMEOUT).expect("dmon exits after SIGTERM");
    let stderr = s.stderr.read_to_eof(Duration::from_secs(5));
    let stats = Stats::find(&stderr).expect("a stats line");
    let failures = stats.count("accept_failures");
    assert!(
        failures >= 1 && failures as f64 <= elapsed * 10.0 + 10.0,
        "{failures} accept failures in {elapsed:.1} s: {:?}",
        stats.0
    );
}

/// `--idle-timeout 2`: a client that sent half a length prefix, one that
/// sent a length and part of its body, and one that sent nothing are all
/// closed within 2 s (checked: between 1.5 s and 8 s), counted in
/// `idle_closed`; a client sending every 0.5 s stays.
#[test]
fn idle_connections_are_closed_and_counted() {
    let mut s = Server::start_with(INDEX_ONLY, "py", &["--idle-timeout", "2"]);
    let port = s.riemann_tcp;
    let started = Instant::now();
    let mut half_length = Conn::open(port);
    half_length.write(&[0, 0]).expect("send half a length");
    let mut half_body = Conn::open(port);
    half_body
        .write(&100u32.to_be_bytes())
        .expect("send a length");
    half_body.write(&[0x32; 10]).expect("send part of the body");
    let mut silent = Conn::open(port);
    let mut active = Conn::open(port);
    for i in 0..6 {
        assert_ok(
            &active.request(&events_msg(vec![event("h", "active", i)])),
            "the active client",
        );
        thread::sleep(Duration::from_millis(500));
    }
    for (what, c) in [
        ("half a length", &mut half_length),
        ("half a body", &mut half_body),
        ("nothing", &mut silent),
    ] {
        c.expect_closed();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
            "the client that sent {what} was closed after {elapsed:?}"
        );
    }
    // Three seconds in, the active client is still served.
    assert_ok(
        &active.request(&events_msg(vec![event("h", "active", 6)])),
        "the active client, after the deadline",
    );
    s.expect_stderr("the idle warning", |l| {
        l.contains("no complete message for 2s (--idle-timeout); closing")
    });
    let stats = s.terminate().stats();
    assert_eq!(stats.count("idle_closed"), 3, "{:?}", stats.0);
    assert_eq!(
        stats.count("bad_messages"),
        1,
        "the half body: {:?}",
        stats.0
    );
    assert_eq!(stats.count("events"), 7, "{:?}", stats.0);
}

// ---------------------------------------------------------------------------
// 13. The memory budget (--memory-limit)
// ---------------------------------------------------------------------------

/// A forward()-sized batch: 500 events of ordinary size.
fn forward_batch(round: usize) -> Msg {
    events_msg(
        (0..500)
            .map(|i| ProtoEvent {
                description: bytes("an ordinary description of what happened"),
                ..event(&format!("host-{i}"), &format!("batch-{round}"), i)
            })
            .collect(),
    )
}

/// 32 clients each send all but the last byte of an 8 MiB frame and stall:
/// 256 MiB of frames held, the whole of the old budget. Every other
/// client's 500-event batch must still be acknowledged at once (before:
/// refused "server busy" for as long as the stall lasted); large frames
/// that do not fit in the three quarters of the messages share they may
/// use are refused instead, counted in memory_messages_refused.
#[test]
fn clients_stalled_inside_huge_frames_do_not_refuse_others_batches() {
    const STALLERS: usize = 32;
    let _heavy = heavy();
    let s = Server::start(INDEX_ONLY);
    let port = s.riemann_tcp;
    let pid = server_pid(&s.module);
    let frame_len = 8 * 1024 * 1024;
    let body = vec![0u8; frame_len - 1];
    let (mut stalled, peak) = peak_rss_during(pid, || {
        let stallers: Vec<_> = (0..STALLERS)
            .map(|_| {
                let body = body.clone();
                thread::spawn(move || {
                    let mut c = Conn::open(port);
                    c.write(&(frame_len as u32).to_be_bytes()).expect("length");
                    // A refused one is closed before its body is read: the
                    // write may then fail, which is the refusal too.
                    let _ = c.write(&body);
                    c
                })
            })
            .collect();
        let stalled: Vec<Conn> = stallers
            .into_iter()
            .map(|t| t.join().expect("staller"))
            .collect();
        let mut batcher = Conn::open(port);
        for round in 0..5 {
            let started = Instant::now();
            let reply = batcher.request(&forward_batch(round));
            assert_ok(
                &reply,
                &format!("batch {round} beside {STALLERS} stalled frames"),
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        stalled
    });
    // The stallers that did not fit got "server busy" and were closed.
    let mut refused = 0;
    for c in &mut stalled {
        c.s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(reply) = c.read_reply() {
            let why = error_text(&reply);
            assert!(
                why.starts_with("server busy: the 8388608-byte message"),
                "{why}"
            );
            assert!(why.contains("--memory-limit"), "{why}");
            refused += 1;
        }
    }
    drop(stalled);
    eprintln!("stalled frames: {refused} of {STALLERS} refused; RSS peak {peak} KiB");
    // 1 GiB limit: messages 256 MiB, large ones 192 MiB: 24 frames of 8 MiB.
    assert_eq!(refused, STALLERS - 24);
    assert!(peak < 400 * 1024, "RSS peaked at {peak} KiB");
    let stats = s.terminate().stats();
    assert_eq!(
        stats.count("memory_messages_refused"),
        refused as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.count("events"), 5 * 500, "{:?}", stats.0);
}

/// One 1 MB frame of 100,000 minimal events decodes to ~45 MB. Eight
/// clients send two each, as fast as they are acknowledged: before, RSS
/// reached three times the documented 256 MiB. With `--memory-limit 256`
/// what they can make dmon hold (messages being decoded, events waiting for
/// the streams, the recent events) stays within the limit: peak RSS under
/// the limit plus what dmon holds idle. Every event is processed or was
/// refused whole ("server busy", retried by the client until it fits).
#[test]
fn many_clients_of_large_frames_stay_within_the_memory_limit() {
    const CLIENTS: usize = 8;
    const FRAMES: usize = 2;
    const EVENTS: usize = 100_000;
    let _heavy = heavy();
    let s = Server::start_with(INDEX_ONLY, "py", &["--memory-limit", "256"]);
    let port = s.riemann_tcp;
    let pid = server_pid(&s.module);
    assert_responsive(port, "warm-up");
    let idle = rss_kib(pid);
    // Field 6 (an event) of 8 bytes: host "h", service "s", metric_sint64.
    let one = [0x32u8, 0x08, 0x22, 0x01, b'h', 0x1a, 0x01, b's', 0x68, 0x02];
    let body = Arc::new(one.repeat(EVENTS));
    assert_eq!(body.len(), 1_000_000);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = ack_probe(port, Arc::clone(&stop));
    let (busy, peak) = peak_rss_during(pid, || {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let body = Arc::clone(&body);
                thread::spawn(move || {
                    let mut c = Conn::open(port);
                    let mut busy = 0;
                    let mut sent = 0;
                    while sent < FRAMES {
                        c.send_body(&body).expect("send the frame");
                        let reply = c.read_reply().expect("a reply");
                        if reply.ok == Some(true) {
                            sent += 1;
                        } else {
                            let why = error_text(&reply);
                            assert!(why.starts_with("server busy"), "{why}");
                            busy += 1;
                            assert!(busy < 10_000, "refused for ever: {why}");
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                    busy
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .sum::<usize>()
    });
    stop.store(true, Ordering::SeqCst);
    let latencies = probe.join().expect("probe");
    eprintln!(
        "large frames: RSS idle {idle} KiB, peak {peak} KiB; {busy} busy replies; probe ack p99 {:?}",
        p99(&latencies)
    );
    // Before, p99 reached a second (release build); measured here (debug)
    // about 70 ms.
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "probe ack p99 {:?}",
        p99(&latencies)
    );
    assert!(
        peak < idle + 256 * 1024,
        "RSS peaked at {peak} KiB, idle {idle} KiB, limit 256 MiB"
    );
    let stats = s.terminate().stats();
    assert_eq!(
        stats.count("events"),
        (CLIENTS * FRAMES * EVENTS) as u64 + 1 + latencies.len() as u64,
        "{:?}",
        stats.0
    );
}

/// A frame holding one event with 4,194,302 empty tags (8 MiB) would
/// decode to about 235 MB: it is refused by the budget before decoding.
/// One of 1,048,574 empty tags (2 MiB) fits, and is kept as the one tag
/// it says (tags are a set). Twelve of each, each a service of its own:
/// before, the index held 117 MiB per 8 MiB frame, growing linearly.
#[test]
fn empty_tags_cannot_amplify_a_frame_into_gigabytes() {
    let _heavy = heavy();
    let s = Server::start(INDEX_ONLY);
    let port = s.riemann_tcp;
    let pid = server_pid(&s.module);
    assert_responsive(port, "warm-up");
    let tagged = |service: &str, tags: usize| {
        // host, service and a ttl of an hour (a slow machine's rounds must
        // not expire the first events), then field 7 (a tag) empty, `tags`
        // times.
        let mut inner = vec![0x22, 0x01, b'h', 0x1a, service.len() as u8];
        inner.extend_from_slice(service.as_bytes());
        inner.push(0x45);
        inner.extend_from_slice(&3600f32.to_le_bytes());
        inner.extend_from_slice(&[0x3a, 0x00].repeat(tags));
        one_event(&inner)
    };
    let (replies, peak) = peak_rss_during(pid, || {
        let mut c = Conn::open(port);
        (0..12)
            .flat_map(|i| {
                let huge = tagged(&format!("huge-{i:02}"), 4_194_302 - 11);
                assert!(huge.len() <= 8 * 1024 * 1024);
                c.send_body(&huge).expect("send");
                let huge = c.read_reply().expect("a reply");
                let small = tagged(&format!("small-{i:02}"), 1_048_574);
                c.send_body(&small).expect("send");
                let small = c.read_reply().expect("a reply");
                [huge, small]
            })
            .collect::<Vec<_>>()
    });
    for pair in replies.chunks(2) {
        let why = error_text(&pair[0]);
        assert!(
            why.starts_with("server busy: the message (1 events,")
                && why.contains("--memory-limit"),
            "{why}"
        );
        assert_ok(&pair[1], "a 2 MiB frame of empty tags");
    }
    let mut c = Conn::open(port);
    let reply = c.request(&query_msg("service =~ \"small-%\""));
    assert_eq!(reply.events.len(), 12, "{}", error_text(&reply));
    for e in &reply.events {
        assert_eq!(e.tags, vec![bytes::Bytes::new()], "one empty tag");
    }
    let after = rss_kib(pid);
    eprintln!("empty tags: RSS peak {peak} KiB, {after} KiB after");
    assert!(peak < 400 * 1024, "RSS peaked at {peak} KiB");
    assert!(after < 200 * 1024, "RSS after is {after} KiB");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("memory_messages_refused"), 12, "{:?}", stats.0);
}
