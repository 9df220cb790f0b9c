//! `serve --state-dir`: the index and the streams' state survive a restart
//! (SIGTERM) and a crash (SIGKILL, losing at most one interval), under the
//! reload rules when the module changed; a corrupt state file is set
//! aside, an unusable directory refused.

use crate::common;
use crate::shell_support;

use common::{num, run_dmon, text, Server, TempDir, TIMEOUT};
use serde_json::{json, Value};
use shell_support::{stat, Kind, Shell, Start};

/// A counter per host, a moving and a fixed window (an hour: it closes
/// only when told to), and the index.
const MODULE: &str = r#"
from dmon.streams import *
from dmon import folds

count_stream = by("host", counter(printer("count ")))
window_stream = moving_event_window(10, smap(folds.count, printer("window ")))
fixed_stream = fixed_time_window(3600, smap(folds.count, printer("fixed ")))
index_stream = index()
"#;

/// Logs each save, the signal a crash test waits for.
const SAVES_LOGGED: (&str, &str) = ("DMON_LOG", "info,dmon_server::state_dir=debug");

fn event(host: &str, service: &str, time: f64) -> Value {
    json!({"host": host, "service": service, "metric": 1, "time": time, "ttl": 3600})
}

/// Sends each (host, service) and waits for its counter's line: the
/// counts it printed.
fn send_counted(s: &mut Server, events: &[(&str, &str)], time: f64) -> Vec<(String, f64)> {
    events
        .iter()
        .map(|(host, service)| {
            s.send(event(host, service, time));
            let printed = s.expect_printed("count ");
            (text(&printed, "host").to_owned(), num(&printed, "metric"))
        })
        .collect()
}

fn counted(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(h, n)| (h.to_string(), *n)).collect()
}

/// The window sizes `moving_event_window(10)` printed for the next `n`
/// events.
fn window_sizes(s: &mut Server, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| num(&s.expect_printed("window "), "metric"))
        .collect()
}

/// The services in the index, sorted, through `dmon query`.
fn indexed_services(s: &Server) -> Vec<String> {
    let addr = format!("127.0.0.1:{}", s.riemann_tcp);
    let run = run_dmon(&["query", "--riemann-tcp", &addr, "--json", "true"], None);
    assert!(run.status.success(), "dmon query failed: {}", run.stderr);
    let mut services: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).expect("NDJSON");
            text(&e, "service").to_owned()
        })
        .collect();
    services.sort();
    services
}

fn restored_line(s: &mut Server) -> String {
    s.expect_stderr("saying the state was restored", |l| {
        l.contains("state restored from ")
    })
}

#[test]
fn counters_by_forks_windows_and_the_index_survive_sigterm() {
    let state = TempDir::new();
    let dir = state.path().join("state");
    let flags = ["--state-dir", dir.to_str().unwrap()];
    let t0 = common::now();

    let mut first = Server::start_with(MODULE, "py", &flags);
    let counts = send_counted(&mut first, &[("a", "a1"), ("a", "a2"), ("b", "b1")], t0);
    assert_eq!(counts, counted(&[("a", 1.0), ("a", 2.0), ("b", 1.0)]));
    assert_eq!(window_sizes(&mut first, 3), [1.0, 2.0, 3.0]);
    let done = first.terminate();
    assert!(done.status.success(), "{:?}", done.stderr);
    // The stop did not flush the hour's window: it goes on after the restart.
    assert!(done.printed("fixed ").is_empty(), "{:?}", done.stdout);
    let stats = done.stats();
    assert!(stats.count("state_saves") >= 1, "{:?}", stats.0);
    assert_eq!(stats.count("state_save_failures"), 0);
    assert!(stats.count("state_save_bytes") > 0);
    assert!(dir.join("state.json").is_file());
    assert!(!dir.join(".state.json.tmp").exists());

    let mut second = Server::start_with(MODULE, "py", &flags);
    let restored = restored_line(&mut second);
    assert!(restored.contains(": 3 index events, "), "{restored}");
    assert_eq!(indexed_services(&second), ["a1", "a2", "b1"]);
    let counts = send_counted(&mut second, &[("a", "a3"), ("b", "b2")], t0 + 1.0);
    assert_eq!(counts, counted(&[("a", 3.0), ("b", 2.0)]));
    assert_eq!(window_sizes(&mut second, 2), [4.0, 5.0]);
    assert_eq!(indexed_services(&second), ["a1", "a2", "a3", "b1", "b2"]);
    // An event past the hour closes the window: every event of both runs.
    second.send(event("c", "late", t0 + 3700.0));
    assert_eq!(num(&second.expect_printed("fixed "), "metric"), 5.0);
    let done = second.terminate();
    assert!(done.status.success(), "{:?}", done.stderr);

    // A third start sees what the second left: b's count goes on at 3.
    let mut third = Server::start_with(MODULE, "py", &flags);
    let counts = send_counted(&mut third, &[("b", "b3")], t0 + 3701.0);
    assert_eq!(counts, counted(&[("b", 3.0)]));
    third.terminate();
}

#[test]
fn a_crash_loses_nothing_saved_before_it() {
    let state = TempDir::new();
    let dir = state.path().join("state");
    let dir_flag = dir.to_str().unwrap();
    let flags = ["--state-dir", dir_flag, "--checkpoint-secs", "0.2"];
    let t0 = common::now();

    let mut first = Server::start_env(MODULE, &flags, &[SAVES_LOGGED]);
    let counts = send_counted(&mut first, &[("a", "a1"), ("a", "a2"), ("b", "b1")], t0);
    assert_eq!(counts, counted(&[("a", 1.0), ("a", 2.0), ("b", 1.0)]));
    // A save taken after the three were processed (it holds their index
    // entries, so their counts too): then the crash.
    first.expect_stderr("a save holding the three events", |l| {
        l.contains("state saved to ") && l.contains(": 3 index events, ")
    });
    let killed = first.stop_with("KILL");
    assert!(!killed.status.success());

    let mut second = Server::start_with(MODULE, "py", &flags);
    let restored = restored_line(&mut second);
    assert!(restored.contains(": 3 index events, "), "{restored}");
    let counts = send_counted(&mut second, &[("a", "a3"), ("b", "b2")], t0 + 1.0);
    assert_eq!(counts, counted(&[("a", 3.0), ("b", 2.0)]));
    assert_eq!(window_sizes(&mut second, 2), [4.0, 5.0]);
    assert_eq!(indexed_services(&second), ["a1", "a2", "a3", "b1", "b2"]);
    second.terminate();
}

#[test]
fn restored_index_events_keep_their_ttl_and_expire_as_usual() {
    let module = r#"
from dmon.streams import *

index_stream = index()
expired_stream = expired(printer("expired "))
"#;
    let state = TempDir::new();
    let dir = state.path().join("state");
    let flags = ["--state-dir", dir.to_str().unwrap()];
    let t0 = common::now();

    let first = Server::start_with(module, "py", &flags);
    first.send(json!({"host": "short", "service": "s", "time": t0, "ttl": 2}));
    first.send(json!({"host": "long", "service": "l", "time": t0, "ttl": 3600}));
    let done = first.terminate();
    // Slow machines may see the short one expire before the stop: then
    // it is gone from the saved index and must not expire a second time.
    let expired_before = done.printed("expired ").len();
    assert!(expired_before <= 1, "{:?}", done.stdout);

    let mut second = Server::start_with(module, "py", &flags);
    if expired_before == 0 {
        let expired = second.expect_printed("expired ");
        assert_eq!(text(&expired, "host"), "short");
        assert_eq!(text(&expired, "state"), "expired");
    }
    assert_eq!(indexed_services(&second), ["l"]);
    let done = second.terminate();
    assert_eq!(done.printed("expired ").len(), 1 - expired_before);
}

#[test]
fn a_changed_module_keeps_the_state_of_the_nodes_it_did_not_change() {
    let before = r#"
from dmon.streams import *

count_stream = by("host", counter(printer("count ")))
total_stream = counter(printer("total "))
"#;
    // A root added above the others, and the total's counter built
    // another way: it starts fresh and the log names it.
    let after = r#"
from dmon.streams import *

new_stream = counter(printer("new "))
count_stream = by("host", counter(printer("count ")))
total_stream = counter(printer("total "), init=100)
"#;
    let state = TempDir::new();
    let dir = state.path().join("state");
    let flags = ["--state-dir", dir.to_str().unwrap()];
    let t0 = common::now();

    let mut first = Server::start_with(before, "py", &flags);
    let counts = send_counted(&mut first, &[("a", "x"), ("a", "y")], t0);
    assert_eq!(counts, counted(&[("a", 1.0), ("a", 2.0)]));
    assert_eq!(num(&first.expect_printed("total "), "metric"), 1.0);
    assert_eq!(num(&first.expect_printed("total "), "metric"), 2.0);
    first.terminate();

    let mut second = Server::start_with(after, "py", &flags);
    let unmatched = second.expect_stderr("naming the node that starts fresh", |l| {
        l.contains("state not restored")
    });
    assert!(
        unmatched.contains("total_stream/counter (counter(init=0))"),
        "{unmatched}"
    );
    assert!(!unmatched.contains("count_stream"), "{unmatched}");
    let counts = send_counted(&mut second, &[("a", "z")], t0 + 1.0);
    assert_eq!(counts, counted(&[("a", 3.0)]));
    assert_eq!(num(&second.expect_printed("total "), "metric"), 101.0);
    assert_eq!(num(&second.expect_printed("new "), "metric"), 1.0);
    second.terminate();
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_counted_and_dmon_starts_empty() {
    let state = TempDir::new();
    let dir = state.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), "{\"index\": [trunc").unwrap();
    let flags = ["--state-dir", dir.to_str().unwrap()];

    let mut s = Server::start_with(MODULE, "py", &flags);
    let said = s.expect_stderr("about the corrupt state", |l| {
        l.contains("state.json.corrupt")
    });
    assert!(said.contains("ERROR"), "{said}");
    assert!(said.contains("starting with an empty index"), "{said}");
    assert_eq!(
        std::fs::read_to_string(dir.join("state.json.corrupt")).unwrap(),
        "{\"index\": [trunc"
    );
    let counts = send_counted(&mut s, &[("a", "a1")], common::now());
    assert_eq!(counts, counted(&[("a", 1.0)]));
    let done = s.terminate();
    assert!(done.status.success());
    assert_eq!(done.stats().count("state_corrupt"), 1);
    // The stop wrote a good state in its place.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["index"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_state_dir_that_cannot_be_made_is_a_start_up_error_naming_it() {
    let state = TempDir::new();
    let file = state.write("a-file", "");
    let dir = file.join("state");
    let dir_flag = dir.to_str().unwrap();
    let mut s = Server::spawn(MODULE, "py", &["--state-dir", dir_flag]);
    let status = s.wait_exit(TIMEOUT).expect("dmon exits");
    assert_eq!(status.code(), Some(1));
    let said = s.expect_stderr("the error", |l| l.starts_with("dmon: "));
    assert!(
        said.contains(&format!("--state-dir {dir_flag}: ")),
        "{said}"
    );
    assert!(said.contains("Not a directory"), "{said}");
}

#[test]
fn the_shell_keeps_its_state_in_the_state_dir_too() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", MODULE);
    let state = dir.path().join("state");
    let start = || {
        let mut opts = Start::new(Kind::Python, &dir, &streams);
        opts.args = vec!["--state-dir".into(), state.display().to_string()];
        Shell::start(opts)
    };
    let shell = start();
    shell.run_expect(r#"inject(host="a", metric=1)"#, r#""metric":1}"#);
    shell.run_expect(r#"inject(host="a", metric=1)"#, r#""metric":2}"#);
    let stats = shell.exit();
    assert!(stat(&stats, "state_saves") >= 1, "stats: {stats}");

    let shell = start();
    shell.run_expect(r#"inject(host="a", metric=1)"#, r#"count {"host":"a""#);
    shell.wait_for("the count going on from 2", |s| {
        s.lines()
            .any(|l| l.starts_with("count ") && l.ends_with(r#""metric":3}"#))
    });
    shell.run_expect("stats()", "state: ");
    shell.exit();
}
