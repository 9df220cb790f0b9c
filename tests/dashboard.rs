//! The dashboard at `/` on `--http`, in real headless Chromium driven by
//! selenium (tests/support/dashboard_check.py; Debian's chromium and
//! chromium-driver, selenium pinned in tests/requirements.txt: ./test.sh
//! installs them), and the JSON routes it reads, `/stats` and `/series`,
//! with curl; then dmon restarts on the same port and the page must
//! resubscribe by itself. Leaves a screenshot in
//! `target/test-artifacts/dashboard.png`.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Indexes every event; prints the critical ones. A small tree, so the
/// page's stream tree has depth.
const MODULE: &str = r#"
from dmon.streams import *

stream = sdo(index(), where('state = "critical"', printer("critical: ")))
"#;

/// The browser script's whole run, Chromium's start included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// `curl` of `path`: (status, headers, body).
fn curl(port: u16, path: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (./test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (
        status.trim().parse().unwrap_or(0),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

fn curl_json(port: u16, path: &str) -> Value {
    let (status, _, body) = curl(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Where the screenshot goes: `target/test-artifacts/` (whatever the
/// target directory is).
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

#[test]
fn the_dashboard_shows_live_events_states_sparklines_streams_query_errors_and_reconnects() {
    let mut s = Server::start_with(MODULE, "py", &["--http", "127.0.0.1:0"]);
    assert_ne!(s.http, 0, "no \"Listening for HTTP on:\" line");

    // The page and its assets, embedded, same-origin only.
    let (status, headers, body) = curl(s.http, "/");
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    assert!(body.contains(r#"<script src="/dashboard.js""#), "{body}");
    for (path, kind) in [
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let (status, headers, _) = curl(s.http, path);
        assert_eq!(status, 200, "{path}");
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{headers}"
        );
    }
    let (status, _, routes) = curl(s.http, "/routes");
    assert_eq!(status, 200);
    for route in [
        "GET /index?query=Q",
        "GET /stats",
        "GET /series",
        "GET /metrics",
    ] {
        assert!(routes.contains(route), "{routes}");
    }

    // The browser: events over UDP shown within a second, a state change,
    // sparklines, the stream tree's rates, a bad query's error.
    let screenshot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    // The script's screenshot on failure, from an earlier run.
    let _ = std::fs::remove_file(screenshot.with_file_name("dashboard-failed.png"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dashboard_check.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args([s.http.to_string(), s.port.to_string()])
        .arg(&screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (the test venv on PATH, with selenium; ./test.sh sets it up)");
    let mut stdin = child.stdin.take().unwrap();
    let mut browser = Browser {
        stdout: Lines::spawn("dashboard_check stdout", child.stdout.take().unwrap()),
        stderr: Lines::spawn("dashboard_check stderr", child.stderr.take().unwrap()),
        child: KillOnDrop(child),
        deadline: Instant::now() + SCRIPT_TIMEOUT,
    };
    if let Err(why) = browser.stdout.wait_for(SCRIPT_TIMEOUT, |l| l == "RESTART") {
        let output = browser.output();
        s.fail(&format!("the browser checks stopped ({why}):\n{output}"));
    }

    // The browser waits: the JSON routes, on what it sent.
    check_json_routes(&s);
    let http = s.http;
    let finished = s.terminate();
    assert_eq!(finished.printed("critical: ").len(), 2);

    // dmon again on the same HTTP port: the page must reconnect.
    let listen = format!("127.0.0.1:{http}");
    let mut s = Server::start_with(MODULE, "py", &["--http", &listen]);
    assert_eq!(s.http, http);
    writeln!(stdin, "{}", s.port).expect("tell the browser script the new UDP port");
    let left = browser.deadline.saturating_duration_since(Instant::now());
    let exit = wait_timeout(&mut browser.child.0, left);
    let output = browser.output();
    match exit {
        Some(st) if st.success() => {}
        Some(st) => s.fail(&format!("the browser checks failed ({st}):\n{output}")),
        None => s.fail(&format!(
            "the browser checks took over {SCRIPT_TIMEOUT:?}:\n{output}"
        )),
    }
    println!("{output}");
    assert!(output.contains("dashboard checks passed"), "{output}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
    s.terminate();
}

/// The selenium script, running.
struct Browser {
    child: KillOnDrop,
    stdout: Lines,
    stderr: Lines,
    deadline: Instant,
}

impl Browser {
    /// What it printed so far (all of it once it has exited).
    fn output(&mut self) -> String {
        let out = self
            .stdout
            .read_to_eof(Duration::from_millis(500))
            .join("\n");
        let err = self
            .stderr
            .read_to_eof(Duration::from_millis(500))
            .join("\n");
        format!("{out}\nstderr:\n{err}")
    }
}

/// `/series` and `/stats` answer as docs/src/http.md says, after the browser
/// script's events.
fn check_json_routes(s: &Server) {
    // /series: the recent points of each matching series, oldest first.
    let series = curl_json(s.http, "/series?query=service%20%3D%20%22cpu%22");
    assert_eq!(series["window_secs"], 300.0, "{series}");
    assert_eq!(series["truncated"], false);
    assert_eq!(series["max_series"], 500);
    let found: Vec<(&str, Vec<f64>)> = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let metrics = s["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[1].as_f64().unwrap())
                .collect();
            (s["host"].as_str().unwrap(), metrics)
        })
        .collect();
    assert_eq!(
        found,
        [("web1", vec![0.5, 0.7, 0.95]), ("web9", vec![1.0])],
        "{series}"
    );
    let web1 = &series["series"][0];
    assert_eq!(web1["service"], "cpu");
    let times: Vec<f64> = web1["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let now = series["now"].as_f64().unwrap();
    assert!(times.iter().all(|t| *t <= now && *t >= now - 300.0));
    // minutes: web1's points all came within the last one; a longer span
    // than the ring keeps is capped by its window.
    let recent = curl_json(s.http, "/series?query=host%20%3D%20%22web1%22&minutes=1");
    assert_eq!(recent["series"][0]["points"].as_array().unwrap().len(), 3);
    let capped = curl_json(s.http, "/series?query=true&minutes=1000");
    let since = capped["since"].as_f64().unwrap();
    assert!((capped["now"].as_f64().unwrap() - since - 300.0).abs() < 1e-6);

    for (path, status, says) in [
        ("/series", 400, "missing the query parameter"),
        ("/series?query=host%20%3D", 400, "parse error at column"),
        (
            "/series?query=true&minutes=0",
            400,
            "positive number of minutes",
        ),
        (
            "/series?query=true&minutes=x",
            400,
            "positive number of minutes",
        ),
    ] {
        let (got, _, body) = curl(s.http, path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }

    // /stats: `dmon stats`'s JSON, with every node's counters by path.
    let stats = curl_json(s.http, "/stats");
    assert!(stats["uptime_secs"].as_f64().unwrap() > 0.0);
    let nodes = stats["nodes"].as_array().unwrap();
    let node = |path: &str| {
        nodes
            .iter()
            .find(|n| n["path"] == path)
            .unwrap_or_else(|| panic!("no node {path} in {stats}"))
    };
    // Every event received, and the expired one that came back.
    let indexed = node("stream/sdo/index")["in"].as_u64().unwrap();
    assert_eq!(indexed, stats["events"].as_u64().unwrap() + 1, "{stats}");
    assert_eq!(stats["expired"], 1, "{stats}");
    // web1's and web3's critical events.
    assert_eq!(node("stream/sdo/where/printer")["in"], 2, "{stats}");
    assert_eq!(node("stream/sdo/where")["kind"], "where");
}

#[test]
fn the_dashboard_works_behind_the_http_token() {
    let dir = TempDir::new();
    let token = "dashboard-token-0123456789";
    let file = dir.write("token", token);
    let file = file.display().to_string();
    let mut s = Server::start_with(
        MODULE,
        "py",
        &["--http", "127.0.0.1:0", "--http-token-file", &file],
    );
    let (status, _, _) = curl(s.http, "/");
    assert_eq!(status, 401);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dashboard_check.py");
    let screenshot = artifacts().join("dashboard-token.png");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args([s.http.to_string(), s.port.to_string()])
        .arg(&screenshot)
        .arg(token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("run python3 (the test venv on PATH, with selenium; ./test.sh sets it up)");
    let mut browser = Browser {
        stdout: Lines::spawn("dashboard_check stdout", child.stdout.take().unwrap()),
        stderr: Lines::spawn("dashboard_check stderr", child.stderr.take().unwrap()),
        child: KillOnDrop(child),
        deadline: Instant::now() + SCRIPT_TIMEOUT,
    };
    let exit = wait_timeout(&mut browser.child.0, SCRIPT_TIMEOUT);
    let output = browser.output();
    match exit {
        Some(st) if st.success() => {}
        _ => s.fail(&format!("the browser's token check failed:\n{output}")),
    }
    assert!(output.contains("dashboard checks passed"), "{output}");
    let stats = s.terminate().stats();
    // The browser's first request, unanswered until it sent the
    // credentials, and the test's curl.
    assert!(stats.count("http_unauthorized") >= 1, "{stats:?}");
}
