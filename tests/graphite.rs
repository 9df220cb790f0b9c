//! `graphite`, against a real carbon-cache (Debian's graphite-carbon)
//! started by each test with its own configuration and storage in a
//! temporary directory: the points must be on disk, in whisper files,
//! readable with `whisper-fetch`.

use crate::common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A carbon-cache listening for plaintext lines on loopback.
struct Carbon {
    child: KillOnDrop,
    port: u16,
    /// Read on, so carbon never blocks on a full pipe.
    _output: [Lines; 2],
}

impl Carbon {
    /// Starts carbon-cache on `port` (0: a free one), storing under
    /// `storage`, with its configuration, pid and logs in `conf`; waits
    /// for its line receiver.
    fn start(storage: &Path, conf: &TempDir, port: u16) -> Carbon {
        let port = match port {
            0 => TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port(),
            p => p,
        };
        let dir = conf.path().display().to_string();
        let storage = storage.display().to_string();
        // PICKLE_RECEIVER_PORT 0 turns it off; CACHE_QUERY_PORT 0 picks any.
        let config = format!(
            "[cache]\n\
             STORAGE_DIR = {storage}/\n\
             LOCAL_DATA_DIR = {storage}/whisper/\n\
             WHITELISTS_DIR = {dir}/lists/\n\
             CONF_DIR = {dir}/\n\
             LOG_DIR = {dir}/log/\n\
             PID_DIR = {dir}/\n\
             USER =\n\
             MAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = inf\n\
             MAX_CREATES_PER_MINUTE = inf\n\
             WHISPER_AUTOFLUSH = True\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\n\
             LINE_RECEIVER_PORT = {port}\n\
             ENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_PORT = 0\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = 0\n"
        );
        let config_file = conf.write("carbon.conf", &config);
        // One point a second, kept an hour.
        conf.write(
            "storage-schemas.conf",
            "[everything]\npattern = .*\nretentions = 1s:1h\n",
        );
        let mut child = Command::new("carbon-cache")
            .arg(format!("--config={}", config_file.display()))
            .args(["--nodaemon", "--debug", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(KillOnDrop)
            .expect("carbon-cache (Debian's graphite-carbon; ./test.sh installs it)");
        let mut out = Lines::spawn("carbon stdout", child.0.stdout.take().unwrap());
        let mut err = Lines::spawn("carbon stderr", child.0.stderr.take().unwrap());
        let ready = format!("CarbonReceiverFactory starting on {port}");
        if let Err(why) = out.wait_for(TIMEOUT, |l| l.contains(&ready)) {
            panic!(
                "carbon-cache never listened: {why}\n{}{}",
                out.dump(),
                err.dump()
            );
        }
        Carbon {
            child,
            port,
            _output: [out, err],
        }
    }

    fn kill(mut self) {
        self.child.0.kill().expect("kill carbon-cache");
        self.child.0.wait().expect("reap carbon-cache");
    }
}

/// The whisper file of a metric path.
fn whisper_file(storage: &Path, path: &str) -> PathBuf {
    let mut file = storage.join("whisper");
    for part in path.split('.') {
        file.push(part);
    }
    file.set_extension("wsp");
    file
}

/// The value stored at second `time` in the whisper file, if any.
fn fetch(file: &Path, time: i64) -> Option<f64> {
    let out = Command::new("whisper-fetch")
        .args(["--json", &format!("--from={}", time - 5)])
        .arg(format!("--until={}", time + 5))
        .arg(file)
        .output()
        .expect("whisper-fetch (Debian's python3-whisper)");
    assert!(
        out.status.success(),
        "whisper-fetch {}: {out:?}",
        file.display()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("whisper-fetch --json");
    let (start, step) = (v["start"].as_i64()?, v["step"].as_i64()?);
    let i = usize::try_from((time - start) / step).ok()?;
    v["values"].get(i)?.as_f64()
}

/// Waits until `path`'s whisper file holds `value` at `time`: carbon
/// writes its cache out on its own schedule and says nothing, so this
/// polls, with a deadline.
fn expect_point(storage: &Path, path: &str, time: i64, value: f64) {
    let file = whisper_file(storage, path);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = file.exists().then(|| fetch(&file, time)).flatten();
        if got == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} holds {got:?} at {time}, not {value} ({} exists: {})",
            file.display(),
            file.exists()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Riemann's paths (host reversed, service spaces as dots, `0.95` as
/// `95`), a template, fields that would break a line, an event without a
/// metric; `by`'s forks, the template node and a reload all share one
/// connection.
#[test]
fn graphite_points_land_in_whisper_files() {
    let storage = TempDir::new();
    let conf = TempDir::new();
    let carbon = Carbon::start(storage.path(), &conf, 0);
    let port = carbon.port;
    let module = |extra: &str| {
        format!(
            "from dmon.streams import *\n\n\
             graphite_stream = by(\"host\", graphite(\"127.0.0.1\", {port}))\n\
             disk_stream = where('service = \"disk\"', graphite(\"127.0.0.1\", {port}, \
             path=\"servers.{{host}}.{{region}}.{{service}}\"))\n{extra}"
        )
    };
    let mut s = Server::start_with(&module(""), "py", &["--watch"]);
    let t = now() as i64 - 10;
    s.send(json!({"host": "web1.example.com", "service": "api latency 0.95", "metric": 12.5, "time": t}));
    s.send(json!({"host": "web1.example.com", "service": "api latency 0.95", "metric": 13.5, "time": t + 1}));
    s.send(
        json!({"host": "web2", "service": "disk", "metric": 91, "time": t,
                  "attributes": {"region": "eu"}}),
    );
    s.send(json!({"host": "evil\nx 1 1", "service": "cpu", "metric": 7, "time": t}));
    s.send(json!({"host": "web1.example.com", "service": "no metric", "time": t}));
    let st = storage.path();
    expect_point(st, "com.example.web1.api.latency.95", t, 12.5);
    expect_point(st, "com.example.web1.api.latency.95", t + 1, 13.5);
    expect_point(st, "web2.disk", t, 91.0);
    expect_point(st, "servers.web2.eu.disk", t, 91.0);
    expect_point(st, "evil_x_1_1.cpu", t, 7.0);

    // A reload: the same nodes find the same sink.
    std::fs::write(&s.module, module("extra_stream = printer(\"x: \")\n"))
        .expect("rewrite the module");
    s.expect_stderr("the reload", |l| l.contains("reloaded "));
    s.send(json!({"host": "web3", "service": "load", "metric": 1.25, "time": t}));
    expect_point(st, "web3.load", t, 1.25);

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    let sink = stats.sink("graphite", &format!("127.0.0.1:{port}"));
    assert_eq!(sink["sent"], 6, "{sink}");
    assert_eq!(sink["dropped"], 0, "{sink}");
    assert_eq!(sink["connections"], 1, "one connection for all: {sink}");
    assert!(
        !storage.path().join("whisper/com/example/web1/no").exists(),
        "an event without a metric was sent"
    );
    // Nothing but the expected series: no line was forged.
    let mut top: Vec<String> = std::fs::read_dir(storage.path().join("whisper"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["com", "evil_x_1_1", "servers", "web2", "web3"]);
    carbon.kill();
}

/// Carbon killed and started again on the same port: the sink notices the
/// closed connection before writing into it, reconnects, and the next
/// point arrives.
#[test]
fn graphite_reconnects_when_carbon_restarts() {
    let storage = TempDir::new();
    let first_conf = TempDir::new();
    let first = Carbon::start(storage.path(), &first_conf, 0);
    let port = first.port;
    let s = Server::start(&format!(
        "from dmon.streams import *\n\ngraphite_stream = graphite(\"127.0.0.1\", {port})\n"
    ));
    let t = now() as i64 - 10;
    s.send(json!({"host": "h1", "service": "s", "metric": 1, "time": t}));
    expect_point(storage.path(), "h1.s", t, 1.0);

    first.kill();
    let second_conf = TempDir::new();
    let second = Carbon::start(storage.path(), &second_conf, port);
    s.send(json!({"host": "h2", "service": "s", "metric": 2, "time": t}));
    expect_point(storage.path(), "h2.s", t, 2.0);

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let sink = done.stats().sink("graphite", &format!("127.0.0.1:{port}"));
    assert_eq!(sink["sent"], 2, "{sink}");
    assert_eq!(sink["connections"], 2, "{sink}");
    assert_eq!(sink["dropped"], 0, "{sink}");
    second.kill();
}
