//! `dmon record`, `dmon replay` and the shell's `record()`, with the real
//! binary: recordings made from real UDP JSON and Riemann TCP senders,
//! replayed through stream modules (printer lines, per-output counts, the
//! index), at different speeds, with bad lines, and to a second running
//! dmon.

use crate::common;
use crate::shell_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{dmon_bin, num, run_dmon, text, Lines, Run, Server, Spawned, TempDir, TIMEOUT};
use dmon::codec::riemann::{Msg, ProtoEvent};
use prost::Message;
use serde_json::{json, Value};

/// Prints every event it sees (so a test knows it arrived), and indexes it.
const SEEN: &str = r#"from dmon.streams import *
seen_stream = printer("seen: ")
index_stream = index()
"#;

/// What a replay is checked with: warnings printed, everything indexed.
const CHECK: &str = r#"from dmon.streams import *
warn_stream = where('state = "warning"', printer("warn: "))
index_stream = index()
"#;

/// `dmon record FILE --streams module` on free ports, ready.
fn record(dir: &TempDir, file: &Path, extra: &[&str]) -> (Spawned, u16) {
    let module = dir.write("seen.py", SEEN);
    let mut cmd = Command::new(dmon_bin());
    cmd.env("DMON_INSTRUMENT_INTERVAL", "0")
        .arg("record")
        .arg(file)
        .arg("--streams")
        .arg(&module)
        .args(["--udp", "127.0.0.1:0", "--riemann-tcp", "127.0.0.1:0"])
        .args(["--riemann-udp", "off"])
        .args(extra);
    let mut spawned = Spawned::start(cmd);
    let tcp = spawned
        .stdout
        .all()
        .iter()
        .find_map(|l| l.strip_prefix("Listening for Riemann TCP on: 127.0.0.1 "))
        .and_then(|p| p.trim().parse().ok())
        .expect("the Riemann TCP line");
    (spawned, tcp)
}

/// Stops a `dmon record` with `signal` and returns its stderr lines.
fn stop(mut spawned: Spawned, signal: &str) -> Vec<String> {
    let pid = spawned.child.0.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap()
        .success());
    let status = common::wait_timeout(&mut spawned.child.0, TIMEOUT).expect("record exits");
    let stderr = spawned.stderr.read_to_eof(Duration::from_secs(5));
    assert!(
        status.success(),
        "dmon record: {status}\n{}",
        stderr.join("\n")
    );
    stderr
}

/// Waits until `n` events have gone through the recording server's streams.
fn wait_seen(stdout: &mut Lines, n: usize) {
    for i in 0..n {
        stdout
            .wait_for(TIMEOUT, |l| l.starts_with("seen: "))
            .unwrap_or_else(|why| panic!("event {i} of {n} never arrived: {why}"));
    }
}

fn replay(args: &[&str]) -> Run {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    run_dmon(&all, None)
}

/// The per-output count a replay's summary gives `node`.
fn count_of(stderr: &str, node: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(node)?;
        let rest = rest.trim();
        let n = rest
            .strip_suffix(" events")
            .or_else(|| rest.strip_suffix(" event"))?;
        n.trim().parse().ok()
    })
}

/// The events a replay printed after `prefix`.
fn printed(stdout: &str, prefix: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn recorded_udp_and_riemann_traffic_replays_through_a_module() {
    let dir = TempDir::new();
    let file = dir.path().join("events.ndjson");
    let (mut server, tcp) = record(&dir, &file, &[]);
    let udp = common::Udp::to(server.port);
    // Recent times, so nothing expires from the replay's index.
    let t0 = common::now().floor() - 30.0;
    // Two datagrams, one of them NDJSON with two events; one event has no
    // time (it is recorded with its receive time).
    udp.send_json(
        &json!({"host": "web1", "service": "cpu", "state": "warning", "metric": 2.5, "time": t0}),
    );
    udp.send_str(&format!(
        "{}\n{}",
        json!({"host": "web2", "service": "cpu", "state": "ok", "metric": 1, "time": t0 + 1.0}),
        json!({"host": "web3", "service": "disk", "state": "warning", "tags": ["prod"]}),
    ));
    // A real Riemann TCP sender: dmon send --riemann waits for the ack.
    let db1 = json!({"host": "db1", "service": "load", "state": "warning", "metric": 7,
                     "time": t0 + 2.0, "attributes": {"dc": "eu"}});
    let sent = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &format!("127.0.0.1:{tcp}"),
            &db1.to_string(),
        ],
        None,
    );
    assert!(sent.status.success(), "{}", sent.stderr);
    wait_seen(&mut server.stdout, 4);
    let before_stop = common::now();
    let stderr = stop(server, "INT");
    assert!(
        stderr
            .iter()
            .any(|l| l == &format!("dmon record: 4 events recorded to {}", file.display())),
        "{}",
        stderr.join("\n")
    );

    let recorded: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 4);
    let web3 = recorded.iter().find(|e| e["host"] == "web3").unwrap();
    let stamped = num(web3, "time");
    assert!(
        stamped > t0 && stamped <= before_stop,
        "receive time {stamped}"
    );
    let db1 = recorded.iter().find(|e| e["host"] == "db1").unwrap();
    assert_eq!(db1["attributes"]["dc"], "eu");
    assert_eq!(num(db1, "time"), t0 + 2.0);

    let module = dir.write("check.py", CHECK);
    let out = replay(&[
        file.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
        "--show-index",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let mut warned: Vec<String> = printed(&out.stdout, "warn: ")
        .iter()
        .map(|e| text(e, "host").to_owned())
        .collect();
    warned.sort();
    assert_eq!(warned, ["db1", "web1", "web3"], "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "dmon replay: 4 events read from {} (ndjson), 0 bad lines",
            file.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        count_of(&out.stderr, r#"printer("warn: ")"#),
        Some(3),
        "{}",
        out.stderr
    );
    assert_eq!(count_of(&out.stderr, "index()"), Some(4), "{}", out.stderr);
    // The index at the end, by host and service, fields as sent.
    let index = printed(&out.stdout, "index: ");
    let hosts: Vec<&str> = index.iter().map(|e| text(e, "host")).collect();
    assert_eq!(hosts, ["db1", "web1", "web2", "web3"], "{}", out.stdout);
    assert_eq!(index[0]["attributes"]["dc"], "eu");
    assert_eq!(index[3]["tags"], json!(["prod"]));
    assert_eq!(num(&index[3], "time"), stamped);
}

#[test]
fn a_riemann_capture_replays_like_its_ndjson_twin() {
    let dir = TempDir::new();
    let capture = dir.path().join("capture.riemann");
    let (mut server, tcp) = record(&dir, &capture, &["--format", "riemann"]);
    let events: Vec<String> = (0..30)
        .map(|i| {
            json!({"host": format!("h{}", i % 3), "service": "req", "metric": i,
                   "state": if i % 10 == 0 { "warning" } else { "ok" }, "time": 5000 + i})
            .to_string()
        })
        .collect();
    let mut args = vec!["send", "--riemann", "--riemann-tcp"];
    let addr = format!("127.0.0.1:{tcp}");
    args.push(&addr);
    args.extend(events[..20].iter().map(String::as_str));
    assert!(run_dmon(&args, None).status.success());
    // The rest over JSON UDP, into the same capture.
    common::Udp::to(server.port).send_str(&events[20..].join("\n"));
    wait_seen(&mut server.stdout, 30);
    let stderr = stop(server, "TERM");
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("dmon record: 30 events recorded to ")),
        "{}",
        stderr.join("\n")
    );
    let bytes = std::fs::read(&capture).unwrap();
    assert_eq!(bytes[0], 0, "a frame length, not JSON");

    let module = dir.write("check.py", CHECK);
    let out = replay(&[
        capture.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
        "--show-index",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("30 events read from")
            && out.stderr.contains("(riemann), 0 bad frames"),
        "{}",
        out.stderr
    );
    let warned: Vec<f64> = printed(&out.stdout, "warn: ")
        .iter()
        .map(|e| num(e, "time"))
        .collect();
    assert_eq!(warned, [5000.0, 5010.0, 5020.0]);
    // The latest event of each host, metric and all, as sent.
    let index = printed(&out.stdout, "index: ");
    let latest: Vec<(String, f64)> = index
        .iter()
        .map(|e| (text(e, "host").to_owned(), num(e, "metric")))
        .collect();
    assert_eq!(
        latest,
        [
            ("h0".into(), 27.0),
            ("h1".into(), 28.0),
            ("h2".into(), 29.0)
        ]
    );
}

/// A Riemann frame: the message's length, big-endian, then the message.
fn riemann_frame(hosts: impl Iterator<Item = String>, time: i64) -> Vec<u8> {
    let msg = Msg {
        events: hosts
            .map(|h| ProtoEvent {
                host: Some(h.into_bytes().into()),
                service: Some(b"req".to_vec().into()),
                time: Some(time),
                ..ProtoEvent::default()
            })
            .collect(),
        ..Msg::default()
    };
    let body = msg.encode_to_vec();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

#[test]
fn corrupt_length_prefixes_skip_their_frames_and_the_rest_of_the_capture_replays() {
    const MESSAGES: usize = 300;
    const PER_MESSAGE: usize = 10;
    let hosts = |m: usize| (0..PER_MESSAGE).map(move |i| format!("m{m:03}-{i}"));
    let mut bytes = Vec::new();
    let mut skipped = 0;
    for m in 0..MESSAGES {
        let mut frame = riemann_frame(hosts(m), 1000);
        let len = frame.len() as u32 - 4;
        let corrupt = match m {
            // A length no frame has: over the 64 MiB limit.
            100 => Some(0x7f00_0000),
            // A plausible length, too long: it swallows the frames after it.
            200 => Some(len + 500),
            _ => None,
        };
        if let Some(corrupt) = corrupt {
            frame[..4].copy_from_slice(&u32::to_be_bytes(corrupt));
            skipped += frame.len();
        }
        bytes.extend(frame);
    }
    let dir = TempDir::new();
    let capture = dir.path().join("corrupt.riemann");
    std::fs::write(&capture, &bytes).unwrap();
    let module = dir.write("check.py", CHECK);
    let out = replay(&[
        capture.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
        "--show-index",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad input fails the run: {}",
        out.stderr
    );
    let replayed = (MESSAGES - 2) * PER_MESSAGE;
    assert!(
        out.stderr.contains(&format!(
            "{replayed} events read from {} (riemann), 2 bad frames ({skipped} bytes skipped)",
            capture.display()
        )),
        "{}",
        out.stderr
    );
    for bad in ["over 64 MiB", "invalid message"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(bad) && l.contains(" bytes to the next frame, at byte ")),
            "{bad} not reported:\n{}",
            out.stderr
        );
    }
    let indexed: Vec<String> = printed(&out.stdout, "index: ")
        .iter()
        .map(|e| text(e, "host").to_owned())
        .collect();
    let expected: Vec<String> = (0..MESSAGES)
        .filter(|m| ![100, 200].contains(m))
        .flat_map(hosts)
        .collect();
    assert_eq!(indexed, expected);
}

/// A minute of requests, 4 per second from 2 hosts, with a gap: what
/// `rate` and `fixed_time_window` emit depends on the event times only.
fn timed_events() -> String {
    let mut lines = Vec::new();
    for i in 0..80 {
        // 20 s of traffic, then 10 s of silence, then 10 s more.
        let t = 10_000.0
            + if i < 40 {
                i as f64 * 0.5
            } else {
                30.0 + (i - 40) as f64 * 0.25
            };
        lines.push(
            json!({"host": format!("web{}", i % 2), "service": "req", "metric": 1, "time": t})
                .to_string(),
        );
    }
    lines.join("\n") + "\n"
}

const TIMED: &str = r#"from dmon.streams import *
rate_stream = rate(5, printer("rate: "))
window_stream = fixed_time_window(10, smap(folds.count, printer("window: ")))
"#;

#[test]
fn time_driven_streams_emit_what_event_times_dictate_at_any_speed() {
    let dir = TempDir::new();
    let file = dir.write("timed.ndjson", &timed_events());
    let module = dir.write("timed.py", TIMED);
    let run = |speed: &str| {
        let started = Instant::now();
        let out = replay(&[
            file.to_str().unwrap(),
            "--streams",
            module.to_str().unwrap(),
            "--speed",
            speed,
        ]);
        assert!(out.status.success(), "{}", out.stderr);
        (out.stdout, started.elapsed())
    };
    let (fast, _) = run("max");
    // 40 s of recorded time at 40x: a second at least.
    let (paced, took) = run("40");
    assert!(
        took >= Duration::from_millis(950),
        "--speed 40 took {took:?}"
    );
    assert_eq!(fast, paced, "the same output at any speed");

    let rates: Vec<(f64, f64)> = printed(&fast, "rate: ")
        .iter()
        .map(|e| (num(e, "time"), num(e, "metric")))
        .collect();
    // Every 5 s of virtual time from the first event; 10 events per 5 s
    // while traffic runs (2/s), none in the silence (rate emits 0), then
    // 20 per 5 s (4/s). The clock stops at the last event (10 039.75), and
    // the replay ends as a clean shutdown: the last interval is reported
    // then, with its end as time.
    let mut expected = vec![
        (10_005.0, 2.0),
        (10_010.0, 2.0),
        (10_015.0, 2.0),
        (10_020.0, 2.0),
        (10_025.0, 0.0),
        (10_030.0, 0.0),
        (10_035.0, 4.0),
        (10_040.0, 4.0),
    ];
    assert_eq!(rates, expected, "{fast}");
    let windows = |stdout: &str| -> Vec<f64> {
        printed(stdout, "window: ")
            .iter()
            .map(|e| num(e, "metric"))
            .collect()
    };
    // Windows of 10 s by event time: 20, 20, (silence: none), and the
    // last one's 40 events, flushed at the end.
    assert_eq!(windows(&fast), [20.0, 20.0, 40.0], "{fast}");

    // --until 30: the clock runs on to 10 069.75, so the rate reports 0
    // every 5 s while its last event lives; nothing is left to flush.
    let longer = replay(&[
        file.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
        "--until",
        "30",
    ]);
    assert!(longer.status.success(), "{}", longer.stderr);
    let rates: Vec<(f64, f64)> = printed(&longer.stdout, "rate: ")
        .iter()
        .map(|e| (num(e, "time"), num(e, "metric")))
        .collect();
    expected.extend((1..=5).map(|i| (10_040.0 + 5.0 * f64::from(i), 0.0)));
    assert_eq!(rates, expected, "{}", longer.stdout);
    assert_eq!(windows(&longer.stdout), [20.0, 20.0, 40.0]);
    let bad = replay(&[file.to_str().unwrap(), "--until=-1"]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("expected a number of seconds"),
        "{}",
        bad.stderr
    );
}

#[test]
fn bad_lines_are_reported_with_their_numbers_and_the_rest_replays() {
    let dir = TempDir::new();
    let mut lines: Vec<String> = (0..20)
        .map(|i| {
            json!({"host": "a", "service": format!("s{i}"), "state": "warning", "time": 100 + i})
                .to_string()
        })
        .collect();
    lines[2] = "{\"host\": oops}".into(); // line 3
    lines[6] = "not json at all".into(); // line 7
    lines[9] = "{\"host\":\"a\",\"metric\":\"high\"}".into(); // line 10: a wrong type
    let file = dir.write("bad.ndjson", &(lines.join("\n") + "\n"));
    let module = dir.write("check.py", CHECK);
    let out = replay(&[
        file.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad input fails the run: {}",
        out.stderr
    );
    let name = file.display().to_string();
    for n in [3, 7, 10] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("dmon replay: {name}:{n}: "))),
            "line {n} not reported:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("17 events read from") && out.stderr.contains("3 bad lines"),
        "{}",
        out.stderr
    );
    assert_eq!(count_of(&out.stderr, r#"printer("warn: ")"#), Some(17));
    assert_eq!(printed(&out.stdout, "warn: ").len(), 17);

    // Many bad lines: each counted, at most 10 a second shown.
    let many: String =
        (0..500).map(|i| format!("bad {i}\n")).collect::<String>() + "{\"host\":\"ok\"}\n";
    let file = dir.write("many.ndjson", &many);
    let out = replay(&[
        file.to_str().unwrap(),
        "--streams",
        module.to_str().unwrap(),
    ]);
    let shown = out
        .stderr
        .lines()
        .filter(|l| l.contains("many.ndjson:"))
        .count();
    assert!((10..=20).contains(&shown), "{shown} shown:\n{}", out.stderr);
    assert!(
        out.stderr.contains("1 event read from") && out.stderr.contains("500 bad lines"),
        "{}",
        out.stderr
    );
}

#[test]
fn replay_to_delivers_to_a_running_dmon_with_times_shifted_to_now() {
    let target = Server::start(CHECK);
    let dir = TempDir::new();
    let lines: Vec<String> = (0..200)
        .map(|i| json!({"host": format!("h{i}"), "service": "cpu", "metric": i, "time": 1000.0 + i as f64 / 400.0}).to_string())
        .collect();
    let file = dir.write("to.ndjson", &(lines.join("\n") + "\n"));

    // JSON over UDP at the recorded pace: half a second.
    let before = common::now();
    let started = Instant::now();
    let out = replay(&[
        file.to_str().unwrap(),
        "--to",
        &format!("127.0.0.1:{}", target.port),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("200 events read from") && out.stderr.contains("JSON over UDP"),
        "{}",
        out.stderr
    );

    // Over Riemann TCP, acknowledged, as fast as possible, into the same
    // index (the same hosts: the count stays 200).
    let out = replay(&[
        file.to_str().unwrap(),
        "--to",
        &format!("127.0.0.1:{}", target.riemann_tcp),
        "--riemann",
        "--speed",
        "max",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("Riemann TCP, 1 message acknowledged"),
        "{}",
        out.stderr
    );
    let query = run_dmon(
        &[
            "query",
            "--riemann-tcp",
            &format!("127.0.0.1:{}", target.riemann_tcp),
            "--json",
            "true",
        ],
        None,
    );
    assert!(query.status.success(), "{}", query.stderr);
    let indexed: Vec<Value> = query
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(indexed.len(), 200);
    let after = common::now();
    for e in &indexed {
        let t = num(e, "time");
        assert!(
            t >= before - 1.0 && t <= after + 1.0,
            "time {t} not shifted to now: {e}"
        );
    }
    let stats = target.terminate().stats();
    assert_eq!(
        stats.count("events"),
        400,
        "every event of both replays arrived"
    );
}

#[test]
fn twenty_thousand_events_replay_through_the_example_module() {
    let dir = TempDir::new();
    let mut text = String::new();
    for i in 0..20_000 {
        let state = if i % 1000 == 0 { "warning" } else { "ok" };
        text.push_str(&format!(
            "{{\"host\":\"host-{:03}\",\"service\":\"service-{}\",\"state\":\"{state}\",\"metric\":{}.5,\"time\":{}}}\n",
            i % 100,
            i % 7,
            i % 3,
            2_000_000_000.0 + i as f64 * 0.001
        ));
    }
    let file = dir.write("big.ndjson", &text);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/streams.py");
    // From stdin, as `-`.
    let out = run_dmon(
        &["replay", "-", "--streams", example.to_str().unwrap()],
        Some(&std::fs::read_to_string(&file).unwrap()),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("dmon replay: 20000 events read from stdin (ndjson), 0 bad lines"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(" events/s"), "{}", out.stderr);
    assert_eq!(
        count_of(&out.stderr, "index()"),
        Some(20_000),
        "{}",
        out.stderr
    );
    // email() captured, never sent: 20 warnings.
    assert_eq!(
        count_of(&out.stderr, r#"email("ops@example.com")"#),
        Some(20),
        "{}",
        out.stderr
    );
    assert_eq!(line_count(&file), 20_000);
}

#[test]
fn shell_record_writes_the_live_servers_events_to_a_file() {
    use shell_support::{Kind, Shell, Start};
    let dir = shell_support::TempDir::new();
    let streams = dir.write(
        "streams.py",
        "from dmon.streams import *\nseen_stream = printer(\"seen: \")\n",
    );
    let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
    let file = dir.path().join("live.ndjson");
    let out = shell.type_line(&format!("record({:?})", file.display().to_string()));
    assert!(
        out.contains(&format!(
            "recording every event received to {} (ndjson); record() stops",
            file.display()
        )),
        "{out}"
    );
    shell.send_datagram(r#"{"host":"a","service":"x","time":1}"#);
    shell.wait_for_line_starting(r#"seen: {"host":"a""#);
    shell.run_expect(r#"inject(host="b", time=2)"#, r#"seen: {"host":"b""#);
    let out = shell.type_line("record()");
    assert!(
        out.contains(&format!("2 events recorded to {}", file.display())),
        "{out}"
    );
    // Stopped: later events are not written.
    shell.run_expect(r#"inject(host="c", time=3)"#, r#"seen: {"host":"c""#);
    let recorded: Vec<(String, f64)> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| (text(&e, "host").to_owned(), num(&e, "time")))
        .collect();
    assert_eq!(recorded, [("a".into(), 1.0), ("b".into(), 2.0)]);
    let out = shell.type_line("record()");
    assert!(out.contains("not recording"), "{out}");

    // A recording still on at exit is finished then, with a word.
    let second = dir.path().join("at-exit.riemann");
    shell.type_line(&format!(
        "record({:?}, format=\"riemann\")",
        second.display().to_string()
    ));
    shell.run_expect(r#"inject(host="d", time=4)"#, r#"seen: {"host":"d""#);
    shell.exit();
    let screen = shell.screen();
    assert!(
        screen.contains(&format!("1 event recorded to {}", second.display())),
        "{screen}"
    );
    let out = replay(&[
        second.to_str().unwrap(),
        "--streams",
        streams.to_str().unwrap(),
    ]);
    assert!(
        out.stdout.contains(r#"seen: {"host":"d","time":4"#),
        "{}",
        out.stdout
    );
}
