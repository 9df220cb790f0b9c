//! The command line: --version, --help, `dmon send`, and start-up errors.

mod common;

use common::*;

#[test]
fn version_prints_name_and_version() {
    let r = run_dmon(&["--version"], None);
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout.trim(), "dmon 0.1.0");
}

#[test]
fn help_lists_the_subcommands() {
    let r = run_dmon(&["--help"], None);
    assert!(r.status.success(), "{r:?}");
    assert!(r.stdout.contains("serve"), "{}", r.stdout);
    assert!(r.stdout.contains("send"), "{}", r.stdout);
}

#[test]
fn serve_help_explains_its_flags() {
    let r = run_dmon(&["serve", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    for flag in ["--streams", "--udp", "--smtp"] {
        assert!(
            r.stdout.contains(flag),
            "serve --help lacks {flag}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn send_help_explains_its_flags() {
    let r = run_dmon(&["send", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    assert!(r.stdout.contains("--udp"), "{}", r.stdout);
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
    assert!(
        stderr.contains(&file) || stderr.contains("streams.py"),
        "stderr names the module file {file}:\n{stderr}"
    );
    assert!(stderr.contains("line 3"), "stderr names line 3:\n{stderr}");
    assert!(stderr.contains("broken on purpose"), "{stderr}");
}

#[test]
fn a_module_with_a_syntax_error_fails_start_up_naming_the_line() {
    let (_s, stderr) = serve_must_fail(
        "from dmon.streams import *\n\
         \n\
         stream = when(lambda e: e.metric >, printer())\n",
    );
    assert!(stderr.contains("streams.py"), "{stderr}");
    assert!(
        stderr.contains("line 3") || stderr.contains(":3"),
        "{stderr}"
    );
    assert!(stderr.contains("SyntaxError"), "{stderr}");
}

#[test]
fn a_module_without_stream_roots_fails_with_a_clear_message() {
    let (_s, stderr) = serve_must_fail(
        "from dmon.streams import *\n\
         printer_only = printer()\n\
         stream_name = \"a string, not a stream\"\n",
    );
    let lower = stderr.to_ascii_lowercase();
    assert!(
        lower.contains("stream"),
        "message mentions streams:\n{stderr}"
    );
    assert!(
        ["no ", "none", "not find", "not found", "zero", " 0 "]
            .iter()
            .any(|w| lower.contains(w)),
        "message says none were found:\n{stderr}"
    );
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
    assert!(r.stderr.contains("nowhere.py"), "{}", r.stderr);
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
        assert!(
            stderr.contains(&format!("-m pip install {package}")),
            "{shell}: the message says how to install it: {stderr}"
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
