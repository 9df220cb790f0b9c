//! Drives dmon's interactive shell in a real terminal: each `Shell` runs
//! `dmon` in a pane of its own tmux server (its own socket, killed on drop),
//! with its own temporary directory for the stream module, `HOME`,
//! `XDG_DATA_HOME` (shell history) and `IPYTHONDIR`.
//!
//! Nothing sleeps to synchronise: every step waits, polling the screen with
//! `tmux capture-pane` every 50 ms, for the prompt or the output it expects,
//! and fails with the whole screen after `TIMEOUT`.

// The same binary and temporary directories as the other integration tests.
pub use crate::common::{dmon_bin, TempDir};

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any one expected thing (a prompt, a line, the exit) may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A unique name for this process and call: tmux sockets.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------
// tmux
// ---------------------------------------------------------------------------

/// One tmux server on its own socket, with one session `t` (one pane).
/// The pane stays after its command exits (`remain-on-exit`), so the exit
/// status and the last output can be read. The server is killed on drop.
pub struct Tmux {
    socket: String,
    config: PathBuf,
    /// The socket file, removed on drop (tmux 3.3a leaves it behind).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Starts the server with `argv` running in a 200×50 pane. The command
    /// is executed directly (no shell), so arguments need no quoting.
    pub fn start(dir: &Path, argv: &[String]) -> Tmux {
        let config = dir.join("tmux.conf");
        std::fs::write(
            &config,
            "set -g remain-on-exit on\nset -g history-limit 20000\nset -g status off\n",
        )
        .expect("write tmux.conf");
        let mut tmux = Tmux {
            socket: unique("dmon-test"),
            config,
            socket_path: None,
        };
        let mut args: Vec<String> = [
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(argv.iter().cloned());
        let out = tmux.run(&args);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tmux.run(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !path.is_empty() {
            tmux.socket_path = Some(PathBuf::from(path));
        }
        tmux
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config)
            .env_remove("TMUX")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("run tmux (is it installed?)")
    }

    /// Types `text` literally (no Enter).
    pub fn type_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let out = self.run(&["send-keys", "-t", "t", "-l", text]);
        assert!(out.status.success(), "tmux send-keys failed");
    }

    /// Pastes `text` as a terminal paste does: all at once, newlines sent
    /// as Enter (carriage returns), bracketed if the program asked for it.
    pub fn paste(&self, text: &str) {
        let out = self.run(&["set-buffer", "-b", "dmon-test", "--", text]);
        assert!(out.status.success(), "tmux set-buffer failed");
        let out = self.run(&["paste-buffer", "-b", "dmon-test", "-d", "-p", "-t", "t"]);
        assert!(out.status.success(), "tmux paste-buffer failed");
    }

    /// Presses keys by tmux name: "Enter", "Tab", "Up", "C-c", "C-d".
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "tmux send-keys failed");
    }

    /// The pane's text, history included, wrapped lines joined, no colours.
    pub fn screen(&self) -> String {
        self.capture(false)
    }

    /// The same with colours and attributes as escape sequences.
    pub fn screen_with_escapes(&self) -> String {
        self.capture(true)
    }

    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-20000", "-t", "t"];
        if escapes {
            args.push("-e");
        }
        let out = self.run(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `ready` holds; panics with the screen after `TIMEOUT`.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        self.wait_for_within(TIMEOUT, what, ready)
    }

    pub fn wait_for_within(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the screen:\n{}\n-- end of screen --",
                    trimmed(&screen)
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The screen without its trailing blank lines.
pub fn trimmed(screen: &str) -> String {
    screen.trim_end().to_string()
}

/// Lines of the screen, trailing spaces removed.
pub fn lines(screen: &str) -> Vec<&str> {
    screen.lines().map(str::trim_end).collect()
}

/// Whether some line starts with `prefix` (printer output is a line of its own).
pub fn has_line_starting(screen: &str, prefix: &str) -> bool {
    screen.lines().any(|l| l.starts_with(prefix))
}

/// The row of `streams()` for the node at `path`, its columns joined by
/// single spaces (the table pads them to line up).
pub fn node_row(out: &str, path: &str) -> String {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(path))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no streams() row for {path}:\n{out}"))
}

/// Whether some line, trailing spaces removed, is exactly `line`.
pub fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim_end() == line)
}

// ---------------------------------------------------------------------------
// The shell
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Python,
    Ipython,
    Bpython,
    Hy,
}

impl Kind {
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::Ipython => "ipython",
            Kind::Bpython => "bpython",
            Kind::Hy => "hy",
        }
    }

    /// Whether a screen line is one of this shell's prompts (with or without input).
    pub fn is_prompt(self, line: &str) -> bool {
        let line = line.trim_end();
        match self {
            Kind::Python | Kind::Bpython => {
                line == ">>>"
                    || line == "..."
                    || line.starts_with(">>> ")
                    || line.starts_with("... ")
            }
            Kind::Ipython => {
                ipython_prompt_number(line).is_some()
                    || line.trim_start() == "...:"
                    || line.trim_start().starts_with("...: ")
            }
            Kind::Hy => {
                line == "=>" || line == "..." || line.starts_with("=> ") || line.starts_with("... ")
            }
        }
    }

    /// A number that grows with every new prompt: the count of prompt lines,
    /// or IPython's highest `In [N]:`.
    pub fn prompt_mark(self, screen: &str) -> usize {
        match self {
            Kind::Python | Kind::Bpython | Kind::Hy => {
                screen.lines().filter(|l| self.is_prompt(l)).count()
            }
            Kind::Ipython => screen
                .lines()
                .filter_map(ipython_prompt_number)
                .max()
                .unwrap_or(0),
        }
    }

    /// The prompt text that precedes typed input on its line.
    fn echo_prefixes(self) -> &'static [&'static str] {
        match self {
            Kind::Python | Kind::Bpython => &[">>> ", "... "],
            Kind::Ipython => &["]: ", "...: "],
            Kind::Hy => &["=> ", "... "],
        }
    }
}

/// `N` of an IPython `In [N]:` prompt line.
fn ipython_prompt_number(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("In [")?;
    let end = rest.find("]:")?;
    rest[..end].parse().ok()
}

/// How to start dmon in the terminal.
pub struct Start<'a> {
    pub kind: Kind,
    pub streams: &'a Path,
    /// Leave colours on (no `NO_COLOR`).
    pub color: bool,
    /// `dmon --streams …` instead of `dmon shell -s KIND --streams …`.
    pub no_subcommand: bool,
    /// Where shell history goes (`XDG_DATA_HOME`); shared between runs to test history.
    pub data_home: &'a Path,
    /// Extra environment for dmon.
    pub env: Vec<(String, String)>,
    /// Extra arguments for dmon.
    pub args: Vec<String>,
    /// `--stats-json`: the exit summary as the JSON line the tests read
    /// (off: the human table).
    pub stats_json: bool,
}

impl<'a> Start<'a> {
    pub fn new(kind: Kind, dir: &'a TempDir, streams: &'a Path) -> Start<'a> {
        Start {
            kind,
            streams,
            color: false,
            no_subcommand: false,
            data_home: dir.path(),
            env: Vec::new(),
            args: Vec::new(),
            stats_json: true,
        }
    }
}

/// dmon's shell running in a tmux pane.
pub struct Shell {
    pub tmux: Tmux,
    pub kind: Kind,
    /// The server's UDP port, from the banner.
    pub port: u16,
    /// The banner (first line).
    pub banner: String,
}

impl Shell {
    pub fn start(opts: Start<'_>) -> Shell {
        let home = opts.data_home.join("home");
        std::fs::create_dir_all(&home).expect("create home");
        // sh runs dmon and prints its exit status; `trap : INT` keeps sh
        // alive through the Ctrl-C the tests press (dmon itself gets the
        // default disposition back on exec). The exit status comes from
        // sh rather than from tmux's `pane_dead_status`, which tmux 3.3a
        // sometimes never fills in (it leaves the child a zombie).
        let mut argv: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            r#"trap : INT; "$@"; echo "EXIT=$?""#.into(),
            "sh".into(),
            "env".into(),
        ];
        if opts.color {
            argv.extend(["-u".into(), "NO_COLOR".into()]);
        } else {
            argv.push("NO_COLOR=1".into());
        }
        argv.push(format!(
            "XDG_DATA_HOME={}",
            opts.data_home.join("data").display()
        ));
        argv.push(format!("HOME={}", home.display()));
        argv.push(format!("IPYTHONDIR={}", home.join("ipython").display()));
        argv.push(format!("XDG_CONFIG_HOME={}", home.join("config").display()));
        // Only the JSON UDP listener, on a free port: tests run in parallel.
        argv.push("DMON_RIEMANN_TCP=off".into());
        argv.push("DMON_RIEMANN_UDP=off".into());
        // No events about dmon itself in the counts and screens tests check.
        argv.push("DMON_INSTRUMENT_INTERVAL=0".into());
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
            argv.push(format!("VIRTUAL_ENV={}", venv.to_string_lossy()));
        }
        for (k, v) in &opts.env {
            argv.push(format!("{k}={v}"));
        }
        argv.push(dmon_bin().into());
        if !opts.no_subcommand {
            argv.extend(["shell".into(), "-s".into(), opts.kind.arg().into()]);
        }
        argv.extend([
            "--streams".into(),
            opts.streams.display().to_string(),
            "--udp".into(),
            "127.0.0.1:0".into(),
        ]);
        if opts.stats_json {
            argv.push("--stats-json".into());
        }
        argv.extend(opts.args.iter().cloned());
        let tmux = Tmux::start(opts.data_home, &argv);
        let kind = opts.kind;
        let screen = tmux.wait_for(
            &format!("the {} shell's banner and prompt", kind.arg()),
            |s| {
                exit_code(s).is_some()
                    || (s.contains("UDP 127.0.0.1:") && s.lines().any(|l| kind.is_prompt(l)))
            },
        );
        if let Some(code) = exit_code(&screen) {
            panic!(
                "dmon exited with status {code} instead of opening the {} shell:\n{}",
                kind.arg(),
                trimmed(&screen)
            );
        }
        let banner = screen
            .lines()
            .find(|l| l.contains("UDP 127.0.0.1:"))
            .expect("banner line")
            .trim_end()
            .to_string();
        Shell {
            port: parse_port(&banner),
            tmux,
            kind,
            banner,
        }
    }

    pub fn screen(&self) -> String {
        self.tmux.screen()
    }

    pub fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        self.tmux.wait_for(what, ready)
    }

    /// Waits for a line starting with `prefix` (a printer line, say).
    pub fn wait_for_line_starting(&self, prefix: &str) -> String {
        self.wait_for(&format!("a line starting with {prefix:?}"), |s| {
            has_line_starting(s, prefix)
        })
    }

    /// Whether the last non-blank line of the screen is a prompt.
    pub fn at_prompt(&self, screen: &str) -> bool {
        screen
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| self.kind.is_prompt(l))
    }

    /// Types one line and Enter, then waits until a new prompt is shown
    /// (the statement has finished, or a continuation prompt is up).
    /// Returns what the statement printed: the lines between its echo and
    /// the new prompt.
    pub fn type_line(&self, text: &str) -> String {
        let before = self.kind.prompt_mark(&self.screen());
        self.type_at_prompt(text);
        self.tmux.keys(&["Enter"]);
        let screen = self.wait_for(&format!("the prompt after {text:?}"), |s| {
            self.kind.prompt_mark(s) > before && self.at_prompt(s)
        });
        self.output_of(&screen, text)
    }

    /// Types `text` at the prompt, without Enter, and waits until it shows
    /// on the prompt line: Enter then comes as a keystroke of its own, as
    /// when a person types.
    pub fn type_at_prompt(&self, text: &str) {
        self.tmux.type_text(text);
        if text.is_empty() {
            return;
        }
        self.wait_for(&format!("{text:?} typed at the prompt"), |s| {
            s.lines()
                .rev()
                .find(|l| self.kind.is_prompt(l))
                .is_some_and(|l| l.contains(text))
        });
    }

    /// Types a line and Enter where no prompt follows (input to `paste()`),
    /// and waits until it is echoed and the cursor has moved past it.
    pub fn type_input(&self, text: &str) {
        let rows_before = self.cursor_row();
        self.tmux.type_text(text);
        // Enter only once the line is echoed, as a person types it: under
        // load, bpython's screen may still be switching to `input()`, and an
        // Enter sent ahead went missing there.
        self.wait_for(&format!("the echo of input line {text:?}"), |s| {
            text.is_empty() || s.lines().any(|l| l.trim_end().ends_with(text))
        });
        self.tmux.keys(&["Enter"]);
        self.wait_for(&format!("the cursor past input line {text:?}"), |_| {
            self.cursor_row() > rows_before
        });
    }

    /// The cursor's row counted from the top of the history (grows as lines
    /// scroll by).
    pub fn cursor_row(&self) -> usize {
        let out = self.tmux.run(&[
            "display-message",
            "-p",
            "-t",
            "t",
            "#{e|+:#{history_size},#{cursor_y}}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// The lines after the last echo of `input` (a prompt line ending with
    /// it), up to the final prompt.
    pub fn output_of(&self, screen: &str, input: &str) -> String {
        let all = lines(screen);
        let last_prompt = all
            .iter()
            .rposition(|l| self.kind.is_prompt(l))
            .unwrap_or(all.len());
        let echo = all[..last_prompt].iter().rposition(|l| {
            self.kind.is_prompt(l)
                && (input.is_empty()
                    || self
                        .kind
                        .echo_prefixes()
                        .iter()
                        .any(|p| l.ends_with(format!("{p}{input}").trim_end())))
        });
        match echo {
            Some(i) => all[i + 1..last_prompt].join("\n"),
            None => String::new(),
        }
    }

    /// Runs a statement and waits until its output contains `expected`.
    pub fn run_expect(&self, text: &str, expected: &str) -> String {
        let out = self.type_line(text);
        if out.contains(expected) {
            return out;
        }
        // Output produced by the server can reach the screen just after the prompt.
        self.wait_for(&format!("{expected:?} after {text:?}"), |s| {
            self.output_since(s, text).contains(expected)
        });
        self.output_since(&self.screen(), text)
    }

    /// Everything after the last echo of `input`, prompts included.
    pub fn output_since(&self, screen: &str, input: &str) -> String {
        let all = lines(screen);
        let echo = all.iter().rposition(|l| {
            self.kind.is_prompt(l)
                && self
                    .kind
                    .echo_prefixes()
                    .iter()
                    .any(|p| l.ends_with(format!("{p}{input}").trim_end()))
        });
        match echo {
            Some(i) => all[i + 1..].join("\n"),
            None => String::new(),
        }
    }

    /// Sends one datagram to the server from this (the test) process.
    pub fn send_datagram(&self, payload: &str) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        sock.send_to(payload.as_bytes(), ("127.0.0.1", self.port))
            .expect("send datagram");
    }

    /// Runs `paste()` and waits for its invitation, the whole line.
    pub fn start_paste(&self) {
        self.type_at_prompt("paste()");
        self.tmux.keys(&["Enter"]);
        self.wait_for("paste()'s invitation", |s| {
            has_line(
                s,
                "paste JSON events; end with a blank line or Ctrl-D, Ctrl-C cancels",
            )
        });
    }

    /// Leaves with `exit()`, as every shell takes it, and asserts a clean
    /// exit; returns the stats.
    pub fn exit(&self) -> Value {
        self.type_at_prompt("exit()");
        self.tmux.keys(&["Enter"]);
        self.assert_clean_exit()
    }

    /// Waits for dmon to exit; returns its status and the final screen.
    pub fn wait_exit(&self) -> (i32, String) {
        let screen = self.wait_for("dmon to exit (the EXIT=N line)", |s| exit_code(s).is_some());
        (exit_code(&screen).unwrap(), screen)
    }

    /// Leaves the shell as a user does (Ctrl-D, or `exit()` in IPython,
    /// where Ctrl-D asks first) and checks it stopped cleanly.
    pub fn leave(&self) -> Value {
        match self.kind {
            Kind::Ipython => {
                self.type_at_prompt("exit()");
                self.tmux.keys(&["Enter"]);
            }
            Kind::Python | Kind::Bpython | Kind::Hy => self.tmux.keys(&["C-d"]),
        }
        self.assert_clean_exit()
    }

    /// Asserts dmon exited with 0, printed its stats, and released its port;
    /// returns the stats.
    pub fn assert_clean_exit(&self) -> Value {
        let (code, screen) = self.wait_exit();
        assert_eq!(
            code,
            0,
            "dmon exit status; the screen:\n{}",
            trimmed(&screen)
        );
        let stats = stats_from(&screen).unwrap_or_else(|| {
            panic!(
                "no `dmon stats: {{json}}` line after exit; the screen:\n{}",
                trimmed(&screen)
            )
        });
        assert!(
            UdpSocket::bind(("127.0.0.1", self.port)).is_ok(),
            "UDP port {} is still bound after dmon exited",
            self.port
        );
        stats
    }
}

/// N of the `EXIT=N` line the pane's sh prints when dmon exits.
pub fn exit_code(screen: &str) -> Option<i32> {
    screen
        .lines()
        .rev()
        .find_map(|l| l.trim_end().strip_prefix("EXIT="))
        .and_then(|n| n.parse().ok())
}

/// The port from the banner's `UDP 127.0.0.1:PORT`.
pub fn parse_port(banner: &str) -> u16 {
    // `— UDP 127.0.0.1:PORT`: the JSON datagram port (not a Riemann one).
    let rest = banner
        .split("— UDP 127.0.0.1:")
        .nth(1)
        .or_else(|| banner.split("UDP 127.0.0.1:").nth(1))
        .unwrap_or_else(|| panic!("no `UDP 127.0.0.1:PORT` in the banner {banner:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in the banner {banner:?}"))
}

/// The JSON of the `dmon stats: {json}` line on the screen.
pub fn stats_from(screen: &str) -> Option<Value> {
    let line = screen
        .lines()
        .rev()
        .find(|l| l.starts_with("dmon stats: "))?;
    serde_json::from_str(line["dmon stats: ".len()..].trim()).ok()
}

/// A counter from the stats JSON.
pub fn stat(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key:?} in {stats}"))
}
