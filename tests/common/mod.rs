//! Shared helpers for dmon's integration tests.
//!
//! Every test drives the real `dmon` binary: it writes a stream module to a
//! fresh temporary directory, starts `dmon serve` on an ephemeral loopback UDP
//! port, waits for the readiness line on stdout, sends datagrams, and waits for
//! printer lines (stdout), log lines (stderr) or SMTP messages with a timeout.
//! Nothing sleeps to synchronise: every wait is on a line that must arrive.

pub mod heavy;
pub mod nats;
pub mod tls;

pub use heavy::heavy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long to wait for anything that must happen (readiness, a line, a mail).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The prefix of the readiness line `dmon serve` prints on stdout.
pub const READY_PREFIX: &str = "Listening for event datagrams on: ";

/// The prefix of the statistics line `dmon serve` prints last on stderr.
pub const STATS_PREFIX: &str = "dmon stats:";

pub fn dmon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dmon")
}

/// Seconds since the Unix epoch, as event `time` values use.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "dmon-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Line readers
// ---------------------------------------------------------------------------

/// Removes ANSI escape sequences (colours) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte @..~
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of one pipe, read by a background thread.
///
/// Every line received is kept in order (`all`); `wait_for` consumes lines
/// from a cursor, so successive waits see successive lines. `wait_for_keyed`
/// keeps one cursor per key (e.g. per printer prefix), so waiting for one
/// printer's lines never skips past another printer's.
pub struct Lines {
    name: String,
    rx: Receiver<String>,
    seen: Vec<String>,
    cursor: usize,
    keyed: HashMap<String, usize>,
    eof: bool,
}

impl Lines {
    pub fn spawn<R: Read + Send + 'static>(name: &str, pipe: R) -> Lines {
        let (tx, rx) = mpsc::channel();
        let thread_name = format!("read-{name}");
        thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                                buf.pop();
                            }
                            let line = strip_ansi(&String::from_utf8_lossy(&buf));
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .expect("spawn reader thread");
        Lines {
            name: name.to_string(),
            rx,
            seen: Vec::new(),
            cursor: 0,
            keyed: HashMap::new(),
            eof: false,
        }
    }

    /// Receives one more line into `seen`; false on timeout or end of file.
    fn pull(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
        }
    }

    /// Takes in every line already available, without waiting.
    pub fn poll(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
    }

    /// Waits for the next line (after the cursor) that satisfies `pred`,
    /// skipping others, and returns it. Err describes a timeout or EOF.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let mut cursor = self.cursor;
        let r = self.wait_from(&mut cursor, timeout, pred);
        self.cursor = cursor;
        r
    }

    /// Like `wait_for`, with a cursor of its own for `key` (starting where
    /// the shared cursor is when the key is first used).
    pub fn wait_for_keyed(
        &mut self,
        key: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let mut cursor = self.keyed.get(key).copied().unwrap_or(self.cursor);
        let r = self.wait_from(&mut cursor, timeout, pred);
        self.keyed.insert(key.to_string(), cursor);
        r
    }

    fn wait_from(
        &mut self,
        cursor: &mut usize,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            while *cursor < self.seen.len() {
                let i = *cursor;
                *cursor += 1;
                if pred(&self.seen[i]) {
                    return Ok(self.seen[i].clone());
                }
            }
            if !self.pull(deadline) {
                return Err(if self.eof {
                    format!("{} closed (process exited?)", self.name)
                } else {
                    format!("timed out after {timeout:?} on {}", self.name)
                });
            }
        }
    }

    /// Reads until end of file (or the timeout) and returns every line seen.
    pub fn read_to_eof(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.pull(deadline) {}
        self.seen.clone()
    }

    /// Every line received so far.
    pub fn all(&mut self) -> Vec<String> {
        self.poll();
        self.seen.clone()
    }

    pub fn dump(&mut self) -> String {
        self.poll();
        let mut s = String::new();
        for l in &self.seen {
            s.push_str("    | ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Printer lines
// ---------------------------------------------------------------------------

/// Parses the JSON event after `prefix` in a printer line.
pub fn parse_printed(line: &str, prefix: &str) -> Value {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("line {line:?} does not start with {prefix:?}"));
    serde_json::from_str(rest.trim())
        .unwrap_or_else(|e| panic!("printer line {line:?} is not prefix + JSON: {e}"))
}

/// A numeric field of a printed event (accepts ints and floats).
pub fn num(event: &Value, key: &str) -> f64 {
    event
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("event has no numeric {key:?}: {event}"))
}

/// A string field of a printed event.
pub fn text<'a>(event: &'a Value, key: &str) -> &'a str {
    event
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("event has no string {key:?}: {event}"))
}

pub fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// The `dmon stats: {JSON}` line printed on stderr at exit.
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

impl Stats {
    /// Finds the last stats line in `stderr` and parses its JSON.
    pub fn find(stderr: &[String]) -> Option<Stats> {
        let line = stderr.iter().rev().find(|l| l.contains(STATS_PREFIX))?;
        let at = line.find(STATS_PREFIX)? + STATS_PREFIX.len();
        serde_json::from_str(line[at..].trim()).ok().map(Stats)
    }

    /// A top-level counter; panics (showing the stats) if it is missing.
    pub fn count(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .unwrap_or_else(|| panic!("stats have no counter {key:?}: {}", self.0))
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.0
            .get("nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The node with this `path` (e.g. `stream/when/printer`).
    pub fn node(&self, path: &str) -> Value {
        self.nodes()
            .into_iter()
            .find(|n| n.get("path").and_then(Value::as_str) == Some(path))
            .unwrap_or_else(|| panic!("stats have no node {path:?}: {}", self.0))
    }

    /// The sink of this kind (`forward`, `graphite`, `email`) and target
    /// (`127.0.0.1:5555`), from `sinks`.
    pub fn sink(&self, kind: &str, target: &str) -> Value {
        self.0
            .get("sinks")
            .and_then(Value::as_array)
            .and_then(|sinks| {
                sinks
                    .iter()
                    .find(|s| s["kind"] == kind && s["target"] == target)
            })
            .cloned()
            .unwrap_or_else(|| panic!("stats have no {kind} sink {target:?}: {}", self.0))
    }

    /// One counter (`in`, `out`, `errors`) of a node.
    pub fn node_count(&self, path: &str, field: &str) -> u64 {
        let node = self.node(path);
        node.get(field)
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .unwrap_or_else(|| panic!("node {path:?} has no counter {field:?}: {node}"))
    }
}

// ---------------------------------------------------------------------------
// UDP client
// ---------------------------------------------------------------------------

/// A child process killed on drop, so a failing assertion leaves no server
/// behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `dmon serve` that a test set up itself (its own arguments, directory or
/// environment), started and ready: killed on drop.
pub struct Spawned {
    pub child: KillOnDrop,
    pub stdout: Lines,
    pub stderr: Lines,
    /// The JSON UDP port from the readiness line.
    pub port: u16,
}

impl Spawned {
    /// Runs `cmd` (a `dmon serve …`) with piped output and waits for its
    /// readiness line; panics with its stderr when it never comes.
    pub fn start(mut cmd: Command) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(KillOnDrop)
            .expect("spawn dmon serve");
        let mut stdout = Lines::spawn("dmon stdout", child.0.stdout.take().unwrap());
        let mut stderr = Lines::spawn("dmon stderr", child.0.stderr.take().unwrap());
        let ready = stdout
            .wait_for(TIMEOUT, |l| l.starts_with(READY_PREFIX))
            .unwrap_or_else(|why| panic!("not ready: {why}\n{}", stderr.dump()));
        let port = ready.rsplit(' ').next().unwrap().parse().unwrap();
        Spawned {
            child,
            stdout,
            stderr,
            port,
        }
    }
}

/// A UDP socket bound to an ephemeral loopback port, connected to a server.
pub struct Udp {
    sock: UdpSocket,
}

impl Udp {
    pub fn to(port: u16) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP client");
        sock.connect(("127.0.0.1", port))
            .expect("connect UDP client");
        Udp { sock }
    }

    /// The sender address the server sees, e.g. `127.0.0.1:40123`.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    pub fn send_bytes(&self, bytes: &[u8]) {
        let n = self.sock.send(bytes).expect("send datagram");
        assert_eq!(n, bytes.len(), "short datagram send");
    }

    pub fn send_str(&self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    pub fn send_json(&self, v: &Value) {
        self.send_str(&v.to_string());
    }
}

// ---------------------------------------------------------------------------
// dmon serve
// ---------------------------------------------------------------------------

/// What `dmon serve` left behind when it exited.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn stats(&self) -> Stats {
        Stats::find(&self.stderr).unwrap_or_else(|| {
            panic!(
                "no `{STATS_PREFIX} {{JSON}}` line on stderr; stderr was:\n{}",
                self.stderr.join("\n")
            )
        })
    }

    /// Every stdout line that starts with `prefix`, parsed as a printed event.
    pub fn printed(&self, prefix: &str) -> Vec<Value> {
        self.stdout
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| parse_printed(l, prefix))
            .collect()
    }
}

/// A running `dmon serve`; killed on drop unless it was terminated.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Riemann TCP and UDP ports (0 when turned off).
    pub riemann_tcp: u16,
    pub riemann_udp: u16,
    /// HTTP port (0 unless `--http` was given).
    pub http: u16,
    pub stdout: Lines,
    pub stderr: Lines,
    pub module: PathBuf,
    dir: TempDir,
}

impl Server {
    /// Starts `dmon serve` with `module` as a Python stream module.
    pub fn start(module: &str) -> Server {
        Server::start_with(module, "py", &[])
    }

    /// Starts `dmon serve` with `module` as a Hy stream module.
    pub fn start_hy(module: &str) -> Server {
        Server::start_with(module, "hy", &[])
    }

    /// Starts `dmon serve` with the module in a file `streams.<ext>` and
    /// extra command-line arguments; waits until it is listening.
    pub fn start_with(module: &str, ext: &str, extra: &[&str]) -> Server {
        Server::spawn(module, ext, extra).ready()
    }

    /// Waits until a spawned server is listening; notes its ports.
    fn ready(self) -> Server {
        let mut server = self;
        let line = server
            .stdout
            .wait_for(TIMEOUT, |l| l.starts_with(READY_PREFIX));
        let line = match line {
            Ok(l) => l,
            Err(why) => server.fail(&format!("dmon serve never became ready: {why}")),
        };
        let rest = line[READY_PREFIX.len()..].trim();
        let mut parts = rest.split_whitespace();
        let host = parts.next().unwrap_or("");
        let port = parts.next().and_then(|p| p.parse::<u16>().ok());
        match (host, port) {
            ("127.0.0.1", Some(p)) if p != 0 => server.port = p,
            _ => server.fail(&format!("bad readiness line {line:?}")),
        }
        // The Riemann listeners are announced before the readiness line.
        for line in server.stdout.all() {
            let port = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u16>().ok())
            };
            if let Some(p) = port("Listening for Riemann TCP on: ") {
                server.riemann_tcp = p;
            }
            if let Some(p) = port("Listening for Riemann UDP on: ") {
                server.riemann_udp = p;
            }
            if let Some(p) = port("Listening for HTTP on: ") {
                server.http = p;
            }
        }
        server
    }

    /// [`Server::start_with`], with extra environment variables.
    pub fn start_env(module: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Server::spawn_env(module, "py", extra, env);
        server.ready()
    }

    /// Spawns `dmon serve` without waiting for readiness.
    pub fn spawn(module: &str, ext: &str, extra: &[&str]) -> Server {
        Server::spawn_env(module, ext, extra, &[])
    }

    /// [`Server::spawn`], with extra environment variables.
    pub fn spawn_env(module: &str, ext: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new();
        let path = dir.write(&format!("streams.{ext}"), module);
        let mut cmd = Command::new(dmon_bin());
        // dmon's events about itself would add to the counts tests check;
        // a test that wants them passes --instrument-interval.
        cmd.env("DMON_INSTRUMENT_INTERVAL", "0");
        cmd.arg("serve")
            .arg("--streams")
            .arg(&path)
            .args(["--udp", "127.0.0.1:0"])
            .args([
                "--riemann-tcp",
                "127.0.0.1:0",
                "--riemann-udp",
                "127.0.0.1:0",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn dmon serve");
        let stdout = Lines::spawn("dmon stdout", child.stdout.take().unwrap());
        let stderr = Lines::spawn("dmon stderr", child.stderr.take().unwrap());
        Server {
            child,
            port: 0,
            riemann_tcp: 0,
            riemann_udp: 0,
            http: 0,
            stdout,
            stderr,
            module: path,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, for its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new UDP client connected to this server.
    pub fn udp(&self) -> Udp {
        Udp::to(self.port)
    }

    /// Sends one datagram holding `v` (an object or an array) as JSON.
    pub fn send(&self, v: Value) {
        self.udp().send_json(&v);
    }

    pub fn send_str(&self, s: &str) {
        self.udp().send_str(s);
    }

    /// Panics with `msg` and everything the server printed so far.
    pub fn fail(&mut self, msg: &str) -> ! {
        let exited = match self.child.try_wait() {
            Ok(Some(st)) => format!("exited: {st}"),
            _ => "still running".to_string(),
        };
        panic!(
            "{msg}\n  dmon {exited}\n  module {}:\n{}\n  stdout:\n{}  stderr:\n{}",
            self.module.display(),
            std::fs::read_to_string(&self.module).unwrap_or_default(),
            self.stdout.dump(),
            self.stderr.dump()
        );
    }

    /// Waits for the next stdout line starting with `prefix` and returns the
    /// event printed on it. Each prefix has its own cursor: successive calls
    /// with one prefix return successive lines of that printer.
    pub fn expect_printed(&mut self, prefix: &str) -> Value {
        let found = self
            .stdout
            .wait_for_keyed(prefix, TIMEOUT, |l| l.starts_with(prefix));
        match found {
            Ok(line) => parse_printed(&line, prefix),
            Err(why) => self.fail(&format!("no printer line {prefix:?}: {why}")),
        }
    }

    /// Waits for the next stdout line satisfying `pred`.
    pub fn expect_stdout(&mut self, what: &str, pred: impl FnMut(&str) -> bool) -> String {
        match self.stdout.wait_for(TIMEOUT, pred) {
            Ok(line) => line,
            Err(why) => self.fail(&format!("no stdout line {what}: {why}")),
        }
    }

    /// Waits for the next stderr line satisfying `pred`.
    pub fn expect_stderr(&mut self, what: &str, pred: impl FnMut(&str) -> bool) -> String {
        self.expect_stderr_within(TIMEOUT, what, pred)
    }

    pub fn expect_stderr_within(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        match self.stderr.wait_for(timeout, pred) {
            Ok(line) => line,
            Err(why) => self.fail(&format!("no stderr line {what}: {why}")),
        }
    }

    /// Waits for the server to exit on its own (e.g. a start-up failure).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }

    /// Sends SIGTERM (with the `kill` command), waits for the exit and for
    /// both pipes to close, and returns everything printed.
    pub fn terminate(self) -> Finished {
        self.stop_with("TERM")
    }

    /// Sends `signal` (e.g. "INT" for Ctrl-C) and collects what dmon printed
    /// until it exits.
    pub fn stop_with(self, signal: &str) -> Finished {
        self.signal(signal);
        self.finish(signal)
    }

    /// Sends `signal` (e.g. "TERM") with the `kill` command, without waiting.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the exit after SIG`signal` (sent with `signal`) and for both
    /// pipes to close, and returns everything printed.
    pub fn finish(mut self, signal: &str) -> Finished {
        let status = match wait_timeout(&mut self.child, TIMEOUT) {
            Some(s) => s,
            None => self.fail(&format!(
                "dmon serve did not exit within the timeout after SIG{signal}"
            )),
        };
        let stdout = self.stdout.read_to_eof(Duration::from_secs(5));
        let stderr = self.stderr.read_to_eof(Duration::from_secs(5));
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, polling, for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// One-shot dmon commands
// ---------------------------------------------------------------------------

/// The result of a `dmon` command run to completion.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// The lines of stdout starting with `word ` (PASSED, FAILED, ERROR: how
/// pytest's short summary, `dmon test -rA`, reports each test), without it.
pub fn marked<'a>(r: &'a Run, word: &str) -> Vec<&'a str> {
    let prefix = format!("{word} ");
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Runs `dmon ARGS…` with `stdin` (or /dev/null), waiting at most TIMEOUT.
pub fn run_dmon(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(dmon_bin());
    cmd.args(args);
    run_bounded(cmd, stdin)
}

/// Runs `cmd` with `stdin` (or /dev/null), waiting at most TIMEOUT (then
/// it is killed and the test fails with what it printed).
pub fn run_bounded(mut cmd: Command, stdin: Option<&str>) -> Run {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe: ChildStdin = child.stdin.take().unwrap();
        let input = input.to_string();
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let mut out = Lines::spawn("stdout", child.stdout.take().unwrap());
    let mut err = Lines::spawn("stderr", child.stderr.take().unwrap());
    let status = match wait_timeout(&mut child, TIMEOUT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {TIMEOUT:?}\n stdout:\n{} stderr:\n{}",
                out.dump(),
                err.dump()
            );
        }
    };
    let stdout = out.read_to_eof(Duration::from_secs(5)).join("\n");
    let stderr = err.read_to_eof(Duration::from_secs(5)).join("\n");
    Run {
        status,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------
// SMTP sink
// ---------------------------------------------------------------------------

/// tests/support/smtp_sink.py, run with `python3` from PATH (the venv that
/// test.sh puts first, which has aiosmtpd).
pub struct SmtpSink {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
    stdout: Lines,
    stderr: Lines,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 smtp_sink.py (is the test venv on PATH? run ./test.sh)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = Lines::spawn("smtp sink stdout", child.stdout.take().unwrap());
        let mut stderr = Lines::spawn("smtp sink stderr", child.stderr.take().unwrap());
        let port = match stdout.wait_for(TIMEOUT, |l| l.starts_with("READY ")) {
            Ok(line) => line["READY ".len()..].trim().parse::<u16>().expect("port"),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "SMTP sink did not start ({why}); it needs aiosmtpd in the python3 on \
                     PATH (./test.sh sets up .venv).\n stderr:\n{}",
                    stderr.dump()
                );
            }
        };
        SmtpSink {
            child,
            _stdin: stdin,
            port,
            stdout,
            stderr,
        }
    }

    /// `127.0.0.1:PORT`, for `dmon serve --smtp`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for the next message the sink received.
    pub fn next_message(&mut self) -> Value {
        match self.stdout.wait_for(TIMEOUT, |l| l.starts_with('{')) {
            Ok(line) => serde_json::from_str(&line).expect("sink line is JSON"),
            Err(why) => panic!(
                "no mail reached the SMTP sink: {why}\n sink stderr:\n{}",
                self.stderr.dump()
            ),
        }
    }

    /// Every message received so far (without waiting).
    pub fn messages_so_far(&mut self) -> Vec<Value> {
        self.stdout
            .all()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("sink line is JSON"))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in KiB (VmRSS).
/// The highest RSS of `pid` (KiB) while `during` runs, sampled every 10 ms.
pub fn peak_rss_during<T>(pid: u32, during: impl FnOnce() -> T) -> (T, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_kib(pid))
        })
    };
    let result = during();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    (result, sampler.join().expect("sampler"))
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Events the tally module's own thread sends once it receives "go" (its
/// `range(300)`).
pub const TALLY_FED: u64 = 300;

/// A stream module whose `tally_stream` coroutine counts the events it
/// receives and the threads it ran on; "go" starts a thread sending it
/// [`TALLY_FED`] events, then "fed-done". Once two senders have said they
/// are done (a service ending in "-done"), it prints the count (metric)
/// and "N threads" (description) on `tally: `.
pub const TALLY_STREAMS: &str = r#"import threading
from dmon.streams import *

seen = {"n": 0, "threads": set(), "done": set()}

def feed():
    for i in range(300):
        tally_stream.send(Event(service="fed", metric=i))
    tally_stream.send(Event(service="fed-done"))

@coroutine
def tally(*targets):
    while True:
        e = yield
        seen["threads"].add(threading.get_ident())
        if e.service == "go":
            threading.Thread(target=feed, daemon=True).start()
        elif e.service.endswith("-done"):
            seen["done"].add(e.service)
            if len(seen["done"]) == 2:
                threads = len(seen["threads"])
                send(e.replace(service="tally", metric=seen["n"],
                               description=f"{threads} threads"), *targets)
        else:
            seen["n"] += 1

tally_stream = tally(printer("tally: "))
"#;
