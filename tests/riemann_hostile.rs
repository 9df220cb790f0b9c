//! Hostile clients on dmon's Riemann ports, with raw sockets: garbage inside
//! a valid frame, absurd lengths, frames cut short, clients that never read
//! their acknowledgements, a thousand connections at once, garbage datagrams.
//!
//! Every socket operation has a timeout, every loop a bound.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// The tests that open hundreds of sockets or flood run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
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
