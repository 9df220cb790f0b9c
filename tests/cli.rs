//! The command line: --version, --help, `dmon send`, and start-up errors.

use crate::common;

use common::*;

#[test]
fn version_prints_name_and_version() {
    let r = run_dmon(&["--version"], None);
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout.trim(), "dmon 0.1.0");
}

/// The lines of a help text with runs of blanks made one space, trimmed:
/// `--udp <HOST:PORT>      Address…` becomes `--udp <HOST:PORT> Address…`.
fn help_lines(help: &str) -> Vec<String> {
    help.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Asserts a line of `help` starts with `entry`: an option or subcommand
/// together with its explanation (which the about text alone cannot supply).
fn assert_help_entry(help: &str, entry: &str) {
    assert!(
        help_lines(help).iter().any(|l| l.starts_with(entry)),
        "help lacks the line {entry:?}:\n{help}"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let r = run_dmon(&["--help"], None);
    assert!(r.status.success(), "{r:?}");
    let lines = help_lines(&r.stdout);
    for entry in [
        "shell Open an interactive shell (python, ipython or bpython) on a live server (the default)",
        "serve Run the server headless: receive events and run them through the streams",
        "send Send events to a running dmon (JSON arguments, key=value pairs, or NDJSON on stdin)",
        "query Ask a running dmon's index, in Riemann's query language",
        "bench Measure throughput and memory of the decode and stream paths",
        "catalog List the stream functions (or show one's documentation)",
    ] {
        assert!(
            lines.iter().any(|l| l == entry),
            "--help lacks the subcommand line {entry:?}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn serve_help_explains_its_flags() {
    let r = run_dmon(&["serve", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    for entry in [
        "--streams <FILE_OR_MODULE> Stream module: a .py or .hy file; NAME for NAME.py (or NAME.hy) in the current directory; or else a module name found on PYTHONPATH.",
        "--udp <HOST:PORT> Address to receive JSON event datagrams on; port 0 picks a free port [env: DMON_UDP=] [default: 127.0.0.1:7689]",
        "--riemann-tcp <HOST:PORT> Address for Riemann protocol clients over TCP (\"off\" to disable)",
        "--riemann-udp <HOST:PORT> Address for Riemann protocol clients over UDP (\"off\" to disable)",
        "--max-frame <BYTES> Largest Riemann TCP message accepted, in bytes;",
        "--max-events-per-message <N> Most events (and states) in one Riemann message; a message with more is refused whole with an error reply naming the limit [env: DMON_MAX_EVENTS_PER_MESSAGE=] [default: 100000]",
        "--idle-timeout <SECS> Seconds a Riemann TCP connection may go without sending a complete message, or without reading a reply, before it is closed; also how long an HTTP request's headers may take, an HTTP client may go without reading what it is sent (a stalled subscriber), and an HTTP subscription may go with nothing sent to it but keep-alives [env: DMON_IDLE_TIMEOUT=] [default: 120]",
        "--http-keepalive <SECS> Seconds between keep-alives to each HTTP subscriber: a WebSocket ping, which must be answered (pong) before the next one, or an SSE comment line (`: keep-alive`).",
        "--smtp <HOST:PORT|log> SMTP relay that email() streams send through (localhost:25 when not given). \"log\" sends nothing: each mail (From, To, Subject, body) is printed where printer() lines go (stdout; in the shell, above the prompt) and counted as sent (mails_sent), to try alerts without a relay [env: DMON_SMTP=]",
        "--smtp-tls <MODE> How the connection to the relay is secured: auto (STARTTLS when the relay offers it, plain otherwise, but never a login in the clear), starttls (STARTTLS required: no mail to a relay without it), tls (TLS from the first byte, as on port 465) or none (plain SMTP).",
        "--smtp-user <USER> User to log in to the relay as (SMTP AUTH). The password comes from the environment variable DMON_SMTP_PASSWORD or from --smtp-password-file, never from the command line",
        "--smtp-password-file <FILE> File whose first line is the password of --smtp-user (instead of DMON_SMTP_PASSWORD)",
        "--smtp-ca <FILE> PEM file of a CA to trust, besides the system's roots, for the relay's certificate",
        "--tls-cert <FILE> PEM certificate (or chain) for TLS on Riemann TCP and --http (HTTPS, WSS); needs --tls-key. On SIGHUP both files are read again: new connections get the new certificate, open ones keep theirs.",
        "--tls-client-ca <FILE> Mutual TLS: Riemann TCP and --http clients must present a certificate signed by this CA (PEM); others are refused at the handshake [env: DMON_TLS_CLIENT_CA=]",
        "--http-token-file <FILE> A file whose first line is a token every --http request must carry, as `Authorization: Bearer TOKEN` or as the password of HTTP Basic authentication (browsers ask for it); at least 16 bytes [env: DMON_HTTP_TOKEN_FILE=]",
        "--watch Reload the stream module whenever its file changes;",
        "--shutdown-grace <SECS> Seconds a stop (Ctrl-C, SIGTERM, or leaving the shell) may spend processing the events already received and letting the sinks send; past it dmon stops as a second signal does (exit status 1), counting the events left as unprocessed, so a slow stream with a long queue cannot hold a stop up for ever [env: DMON_SHUTDOWN_GRACE=] [default: 30]",
        "--instrument-interval <SECS> Seconds between the events dmon makes about itself",
        "--self-events-to-streams Send dmon's events about itself (--instrument-interval) through the stream module's roots, as Riemann does, instead of only into the index",
    ] {
        assert_help_entry(&r.stdout, entry);
    }
}

#[test]
fn send_help_explains_its_flags() {
    let r = run_dmon(&["send", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    for entry in [
        "[EVENT]... JSON objects, or key=value fields of one event. Without any, NDJSON is read from stdin",
        "--udp <HOST:PORT> Where dmon receives JSON datagrams [env: DMON_UDP=] [default: 127.0.0.1:7689]",
        "--riemann Send over Riemann's TCP protocol to --riemann-tcp instead, and wait for the server's acknowledgement",
        "--batch <N> With --riemann: most events in one message (lower it for a server whose --max-events-per-message or --max-frame is smaller) [default: 1000]",
        "--riemann-tcp <HOST:PORT> The running dmon's Riemann TCP address",
    ] {
        assert_help_entry(&r.stdout, entry);
    }
}

#[test]
fn shell_help_explains_its_flags() {
    // -h: the one-line form (--help puts explanations on lines of their own).
    let r = run_dmon(&["shell", "-h"], None);
    assert!(r.status.success(), "{r:?}");
    for entry in [
        "-s, --shell <KIND> Which shell to run [default: python]",
        "--stats-json At exit, print the counters as one `dmon stats: {json}` line (as `serve` does) instead of a short table",
        "--connect <HOST:PORT> Open the shell against a dmon already running at HOST:PORT",
        "--smtp-tls <MODE> How the connection to the relay is secured:",
        "--tls-ca <FILE> With --connect: query over TLS, trusting server certificates signed by this CA (PEM); --tls-cert and --tls-key then name the client certificate to present, for mutual TLS [env: DMON_TLS_CA=]",
    ] {
        assert_help_entry(&r.stdout, entry);
    }
}

const PRINT_ALL: &str = r#"
from dmon.streams import *

stream = printer("got: ")
"#;

#[test]
fn send_with_key_value_and_json_arguments_reaches_the_server() {
    let mut s = Server::start(PRINT_ALL);
    let addr = format!("127.0.0.1:{}", s.port);
    let r = run_dmon(
        &[
            "send",
            "--udp",
            &addr,
            "host=web1",
            "service=cpu",
            "state=warning",
            "metric=2.5",
            "tags=a,b",
        ],
        None,
    );
    assert!(r.status.success(), "dmon send failed: {r:?}");
    let e = s.expect_printed("got: ");
    assert_eq!(text(&e, "host"), "web1");
    assert_eq!(text(&e, "service"), "cpu");
    assert_eq!(text(&e, "state"), "warning");
    assert_close(num(&e, "metric"), 2.5);
    assert_eq!(e["tags"], serde_json::json!(["a", "b"]));

    let r = run_dmon(
        &[
            "send",
            "--udp",
            &addr,
            r#"{"host":"web2","service":"mem","metric":7}"#,
        ],
        None,
    );
    assert!(r.status.success(), "dmon send failed: {r:?}");
    let e = s.expect_printed("got: ");
    assert_eq!(text(&e, "host"), "web2");
    assert_close(num(&e, "metric"), 7.0);
}

#[test]
fn send_reads_ndjson_from_stdin() {
    let mut s = Server::start(PRINT_ALL);
    let addr = format!("127.0.0.1:{}", s.port);
    let input = "{\"host\":\"a\",\"service\":\"s\",\"metric\":1}\n\
                 {\"host\":\"b\",\"service\":\"s\",\"metric\":2}\n";
    let r = run_dmon(&["send", "--udp", &addr], Some(input));
    assert!(r.status.success(), "dmon send failed: {r:?}");
    let a = s.expect_printed("got: ");
    let b = s.expect_printed("got: ");
    assert_eq!(text(&a, "host"), "a");
    assert_eq!(text(&b, "host"), "b");
    // A pipe is not someone typing: no hint.
    assert_eq!(
        r.stderr,
        format!("dmon send: sent 2 event(s) in 1 datagram(s) to {addr}")
    );
}

/// Runs `dmon send ARGS…` with a terminal (a pseudo-terminal) as stdin:
/// prints the first stderr line, then types `line` and Ctrl-D and prints
/// the rest of stderr and the exit status.
const SEND_ON_A_TTY: &str = r#"
import os, pty, subprocess, sys
master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[1:-1], stdin=slave, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
os.close(slave)
print(p.stderr.readline().decode(), end="", flush=True)
os.write(master, sys.argv[-1].encode() + b"\n\x04")
rest = p.stderr.read().decode()
print(rest, end="")
print(f"exit {p.wait(timeout=10)}")
"#;

#[test]
fn send_on_a_terminal_says_it_reads_stdin() {
    let mut s = Server::start(PRINT_ALL);
    let addr = format!("127.0.0.1:{}", s.port);
    let dir = TempDir::new();
    let script = dir.write("send_on_a_tty.py", SEND_ON_A_TTY);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script)
        .args([dmon_bin(), "send", "--udp", &addr])
        .arg(r#"{"host":"typed","metric":1}"#);
    let r = run_bounded(cmd, None);
    assert!(r.status.success(), "{r:?}");
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [
            "dmon send: reading events from stdin (one JSON object per line; Ctrl-D to end)",
            &format!("dmon send: sent 1 event(s) in 1 datagram(s) to {addr}"),
            "exit 0",
        ],
        "{r:?}"
    );
    assert_eq!(text(&s.expect_printed("got: "), "host"), "typed");
}

/// Runs `dmon serve` on a module that must fail to load; returns its stderr.
fn serve_must_fail(module: &str) -> (Server, String) {
    let mut s = Server::spawn(module, "py", &[]);
    let status = match s.wait_exit(TIMEOUT) {
        Some(st) => st,
        None => s.fail("dmon serve kept running with a broken stream module"),
    };
    assert!(!status.success(), "non-zero exit for a broken module");
    let stdout = s.stdout.read_to_eof(TIMEOUT);
    assert!(
        !stdout.iter().any(|l| l.starts_with(READY_PREFIX)),
        "it must not claim to listen: {stdout:?}"
    );
    let stderr = s.stderr.read_to_eof(TIMEOUT).join("\n");
    (s, stderr)
}

#[test]
fn a_module_that_raises_at_import_fails_start_up_naming_file_and_line() {
    let (s, stderr) = serve_must_fail(
        "from dmon.streams import *\n\
         stream = printer()\n\
         raise RuntimeError(\"broken on purpose\")\n",
    );
    let file = s.module.to_string_lossy().to_string();
    // The first line says where and what; the traceback follows.
    assert_eq!(
        stderr.lines().next(),
        Some(format!("dmon: {file}:3: RuntimeError: broken on purpose").as_str()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("File \"{file}\", line 3, in <module>")),
        "the traceback names the file and line:\n{stderr}"
    );
}

#[test]
fn a_module_with_a_syntax_error_fails_start_up_naming_the_line() {
    let (s, stderr) = serve_must_fail(
        "from dmon.streams import *\n\
         \n\
         stream = when(lambda e: e.metric >, printer())\n",
    );
    let file = s.module.to_string_lossy().to_string();
    assert_eq!(
        stderr.lines().next(),
        Some(format!("dmon: {file}:3: SyntaxError: invalid syntax (streams.py, line 3)").as_str()),
        "{stderr}"
    );
}

#[test]
fn a_module_without_stream_roots_fails_with_a_clear_message() {
    let (s, stderr) = serve_must_fail(
        "from dmon.streams import *\n\
         printer_only = printer()\n\
         stream_name = \"a string, not a stream\"\n",
    );
    let file = s.module.to_string_lossy().to_string();
    let message = format!(
        "dmon: {file}: no streams: define at least one module-level name containing \
         \"stream\", e.g. `stream = printer()`"
    );
    assert_eq!(stderr.lines().last(), Some(message.as_str()), "{stderr}");
}

#[test]
fn a_missing_module_file_fails_start_up_naming_it() {
    let dir = TempDir::new();
    let missing = dir.path().join("nowhere.py");
    let missing = missing.to_str().unwrap();
    let r = run_dmon(
        &["serve", "--streams", missing, "--udp", "127.0.0.1:0"],
        None,
    );
    assert!(!r.status.success(), "{r:?}");
    assert_eq!(
        r.stderr.trim_end(),
        format!("dmon: {missing}: no such stream module file")
    );
}

#[test]
fn a_missing_ipython_or_bpython_says_how_to_install_it() {
    // A virtualenv without them (and without the base packages, as a
    // virtualenv's pyvenv.cfg says by default).
    let dir = TempDir::new();
    let venv = dir.path().join("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success());
    for (shell, package) in [("ipython", "ipython"), ("bpython", "bpython")] {
        let out = std::process::Command::new(dmon_bin())
            .args(["shell", "-s", shell, "--udp", "127.0.0.1:0"])
            .args(["--riemann-tcp", "off", "--riemann-udp", "off"])
            .env("VIRTUAL_ENV", &venv)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run dmon shell");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{shell}: must fail, got {stderr}");
        // It names the embedded Python and says how to install the package.
        let python = venv.join("bin/python");
        let python = python.display();
        assert_eq!(
            stderr.trim_end(),
            format!(
                "dmon: {shell} is not installed in the Python dmon embeds ({python}); install \
                 it with `{python} -m pip install {package}` (or into a virtualenv that is \
                 active or named by VIRTUAL_ENV), or use `dmon shell -s python`"
            ),
        );
    }
}

/// What an occupied port looks like to `dmon serve` and `dmon shell`: the
/// message names the listener, its address and the flag that moves it.
fn port_in_use_fails_naming(listener_flag: &str, busy: std::net::SocketAddr, expected: &str) {
    let busy = busy.to_string();
    for command in ["serve", "shell"] {
        let mut args = vec![command];
        for flag in ["--udp", "--riemann-tcp", "--riemann-udp"] {
            let value = match flag {
                f if f == listener_flag => busy.as_str(),
                "--udp" => "127.0.0.1:0",
                _ => "off",
            };
            args.extend([flag, value]);
        }
        let r = run_dmon(&args, None);
        assert_eq!(r.status.code(), Some(1), "dmon {command}: {r:?}");
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("dmon: "))
            .collect();
        assert_eq!(
            errors,
            [format!("dmon: {expected}")],
            "dmon {command}: stderr was\n{}",
            r.stderr
        );
    }
}

#[test]
fn a_busy_json_udp_port_is_named_with_the_flag_to_move_it() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let addr = holder.local_addr().unwrap();
    port_in_use_fails_naming(
        "--udp",
        addr,
        &format!("JSON UDP {addr} is in use (another dmon?); choose another with --udp HOST:PORT"),
    );
}

#[test]
fn a_busy_riemann_tcp_port_is_named_with_the_flags_to_move_it_or_turn_it_off() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("listen TCP");
    let addr = holder.local_addr().unwrap();
    port_in_use_fails_naming(
        "--riemann-tcp",
        addr,
        &format!(
            "Riemann TCP {addr} is in use (another dmon or Riemann?); choose another with \
             --riemann-tcp HOST:PORT or turn it off with --riemann-tcp off"
        ),
    );
}

#[test]
fn a_busy_riemann_udp_port_is_named_with_the_flags_to_move_it_or_turn_it_off() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let addr = holder.local_addr().unwrap();
    port_in_use_fails_naming(
        "--riemann-udp",
        addr,
        &format!(
            "Riemann UDP {addr} is in use (another dmon or Riemann?); choose another with \
             --riemann-udp HOST:PORT or turn it off with --riemann-udp off"
        ),
    );
}

#[test]
fn every_busy_port_is_named_in_one_error() {
    // Held by this test for its whole run, so dmon finds them taken.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("listen TCP");
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("listen TCP");
    let [udp, tcp, http] = [
        udp.local_addr().unwrap(),
        tcp.local_addr().unwrap(),
        http.local_addr().unwrap(),
    ]
    .map(|a| a.to_string());
    let r = run_dmon(
        &[
            "serve",
            "--udp",
            &udp,
            "--riemann-tcp",
            &tcp,
            "--riemann-udp",
            "127.0.0.1:0",
            "--http",
            &http,
        ],
        None,
    );
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("dmon: "))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "dmon: cannot listen on 3 addresses: --udp {udp}: address in use (another dmon?); \
             --riemann-tcp {tcp}: address in use (another dmon or Riemann?); \
             --http {http}: address in use (another dmon?); \
             choose another HOST:PORT for each (or turn it off: --riemann-tcp off, --http off)"
        )],
        "stderr was\n{}",
        r.stderr
    );
}

#[test]
fn an_address_that_cannot_be_bound_is_named_with_the_reason() {
    // TEST-NET-1 (RFC 5737): never an address of this machine.
    let r = run_dmon(
        &[
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--riemann-tcp",
            "192.0.2.1:5555",
            "--riemann-udp",
            "off",
        ],
        None,
    );
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    assert!(
        r.stderr.lines().any(|l| l
            == "dmon: cannot listen for Riemann TCP on 192.0.2.1:5555: Cannot assign requested \
                address (os error 99); choose another with --riemann-tcp HOST:PORT or turn it \
                off with --riemann-tcp off"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_name_that_is_neither_a_file_here_nor_a_module_says_what_was_looked_for() {
    let dir = TempDir::new();
    let out = std::process::Command::new(dmon_bin())
        .args([
            "serve",
            "--streams",
            "no_such_streams",
            "--udp",
            "127.0.0.1:0",
        ])
        .args(["--riemann-tcp", "off", "--riemann-udp", "off"])
        .env_remove("PYTHONPATH")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dmon serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let cwd = dir.path().display().to_string();
    for looked_for in [
        "no file no_such_streams.py or no_such_streams.hy in the current directory".to_string(),
        format!("({cwd})"),
        "no module 'no_such_streams' on the Python path".to_string(),
    ] {
        assert!(
            stderr.contains(&looked_for),
            "says {looked_for:?}: {stderr}"
        );
    }
}

/// The catalog chapter's tables are what `dmon catalog --markdown` prints
/// from the registry, so the book lists every stream function.
#[test]
fn the_catalog_chapter_is_the_registry() {
    let out = std::process::Command::new(dmon_bin())
        .args(["catalog", "--markdown"])
        .output()
        .expect("run dmon catalog");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let chapter = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/src/stream-functions.md"
    ))
    .expect("docs/src/stream-functions.md");
    let begin = "<!-- catalog: begin -->\n";
    let end = "<!-- catalog: end -->";
    let start = chapter.find(begin).expect("the chapter marks its catalog") + begin.len();
    let stop = chapter
        .find(end)
        .expect("the chapter marks its catalog's end");
    assert!(
        chapter[start..stop] == generated,
        "docs/src/stream-functions.md's catalog differs from the registry; replace the text \
         between the catalog markers with the output of `cargo run -q -- catalog --markdown`"
    );
}

#[test]
fn catalog_shows_one_function_and_names_a_missing_one() {
    let run = |name: &str| {
        std::process::Command::new(dmon_bin())
            .args(["catalog", name])
            .output()
            .expect("run dmon catalog")
    };
    let out = run("where");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("where(test, *children, else_=None)\n"),
        "{text}"
    );
    assert!(text.contains("Example:\n    where("), "{text}");
    let out = run("nope");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no stream function or fold named \"nope\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A limit of 0 would refuse everything; dmon says so instead of starting.
#[test]
fn a_zero_limit_is_refused_at_start_up() {
    for flag in [
        "--max-connections",
        "--max-in-flight",
        "--max-datagram-events",
    ] {
        let r = run_dmon(&["serve", flag, "0"], None);
        assert!(!r.status.success(), "{flag} 0 started");
        assert!(
            r.stderr.contains(&format!(
                "invalid value '0' for '{flag} <N>': must be at least 1"
            )),
            "{flag}: {}",
            r.stderr
        );
    }
}
