//! The embedded interpreter is the Python dmon links, with that Python's own
//! standard library, whatever `python3` comes first on PATH; a virtualenv
//! named by VIRTUAL_ENV adds its packages.
//!
//! The environment of these runs has no VIRTUAL_ENV and `PATH=/usr/bin:/bin`,
//! where `python3` is Debian's: on a machine where dmon links another Python
//! (pyenv's here), CPython used to take Debian's prefix and fail to import
//! `_socket`. Where both are the same installation the assertions still hold.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// A stream module that reports what the interpreter sees, once, at import.
/// Its imports need the standard library's compiled modules (`_socket`,
/// `_ssl`): under another installation's library it fails to load.
const REPORTING_MODULE: &str = r#"import json, socket, ssl, sys
print("python: " + json.dumps({
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "executable": sys.executable,
    "path": sys.path,
}), flush=True)
from dmon.streams import *
stream = printer()
"#;

/// A `dmon serve` killed on drop, so a failing assertion leaves none behind.
struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dmon serve` with the stream module `source`, in the environment of
/// these tests plus `env`; returns once it is listening, with the report the
/// module printed.
fn serve_reporting(dir: &TempDir, source: &str, env: &[(&str, &Path)]) -> (Running, Value) {
    let module = dir.write("report_streams.py", source);
    let mut cmd = Command::new(dmon_bin());
    cmd.arg("serve")
        .arg("--streams")
        .arg(&module)
        .args(["--udp", "127.0.0.1:0"])
        .args(["--riemann-tcp", "off", "--riemann-udp", "off"])
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env("PATH", "/usr/bin:/bin")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("spawn dmon serve");
    let stdout = Lines::spawn("dmon stdout", child.stdout.take().unwrap());
    let stderr = Lines::spawn("dmon stderr", child.stderr.take().unwrap());
    let mut run = Running {
        child,
        stdout,
        stderr,
    };
    let started = run
        .stdout
        .wait_for(TIMEOUT, |l| l.starts_with("python: "))
        .and_then(|report| {
            run.stdout
                .wait_for(TIMEOUT, |l| l.starts_with(READY_PREFIX))
                .map(|_| report)
        });
    let line = started.unwrap_or_else(|why| {
        panic!(
            "dmon serve did not load the module and start: {why}\n stdout:\n{} stderr:\n{}",
            run.stdout.dump(),
            run.stderr.dump()
        )
    });
    let report = serde_json::from_str(&line["python: ".len()..]).expect("the report is JSON");
    (run, report)
}

/// The installation whose libpython the running dmon has mapped: the part
/// of the library's path before `/lib/` (`<prefix>/lib/libpython3.X.so…`,
/// or Debian's `/usr/lib/<triplet>/libpython3.X.so…`).
fn linked_prefix(pid: u32) -> PathBuf {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/PID/maps");
    let library = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("libpython3"))
        })
        .unwrap_or_else(|| panic!("dmon has no libpython mapped:\n{maps}"));
    let at = library
        .find("/lib/")
        .unwrap_or_else(|| panic!("{library} is not under a prefix's lib/"));
    canonical(&library[..at])
}

fn canonical(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn field<'a>(report: &'a Value, key: &str) -> &'a str {
    report[key]
        .as_str()
        .unwrap_or_else(|| panic!("report has no {key}: {report}"))
}

#[test]
fn without_a_virtualenv_python_uses_the_linked_installations_prefix_whatever_path_says() {
    let dir = TempDir::new();
    let (run, report) = serve_reporting(&dir, REPORTING_MODULE, &[]);
    let linked = linked_prefix(run.child.id());

    assert_eq!(
        canonical(field(&report, "prefix")),
        linked,
        "sys.prefix: {report}"
    );
    assert_eq!(
        canonical(field(&report, "base_prefix")),
        linked,
        "sys.base_prefix: {report}"
    );
    let executable = canonical(field(&report, "executable"));
    assert!(
        executable.starts_with(&linked),
        "sys.executable {} is the linked installation's (under {})",
        executable.display(),
        linked.display()
    );
}

#[test]
fn a_virtualenv_named_by_virtual_env_adds_its_site_packages() {
    let dir = TempDir::new();
    let venv = dir.path().join("venv");
    // From the Python dmon was built against, as a user would make it.
    let made = Command::new(dmon::python::BUILD_EXECUTABLE)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python -m venv");
    assert!(made.success(), "python -m venv failed");
    let site_packages = std::fs::read_dir(venv.join("lib"))
        .expect("venv/lib")
        .map(|e| e.expect("venv/lib entry").path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("the venv has a site-packages");
    std::fs::write(
        site_packages.join("dmon_venv_marker.py"),
        "WHERE = 'venv'\n",
    )
    .expect("write the marker module");
    // Imported before anything prints: without the venv the module fails.
    let module = format!("import dmon_venv_marker\n{REPORTING_MODULE}");
    let (run, report) = serve_reporting(&dir, &module, &[("VIRTUAL_ENV", &venv)]);
    let linked = linked_prefix(run.child.id());

    assert_eq!(
        canonical(field(&report, "prefix")),
        canonical(&venv),
        "sys.prefix is the virtualenv: {report}"
    );
    assert_eq!(
        canonical(field(&report, "base_prefix")),
        linked,
        "sys.base_prefix is the linked installation: {report}"
    );
    let on_path = report["path"]
        .as_array()
        .expect("sys.path is a list")
        .iter()
        .filter_map(Value::as_str)
        .any(|p| Path::new(p) == site_packages);
    assert!(
        on_path,
        "{} is on sys.path: {report}",
        site_packages.display()
    );
}

#[test]
fn a_missing_shell_names_the_linked_interpreters_pip() {
    let dir = TempDir::new();
    let (run, _) = serve_reporting(&dir, REPORTING_MODULE, &[]);
    let linked = linked_prefix(run.child.id());
    drop(run);
    // A bpython that cannot be imported, whether or not the linked Python
    // has the real one.
    let stubs = dir.path().join("stubs");
    std::fs::create_dir(&stubs).expect("mkdir stubs");
    std::fs::write(
        stubs.join("bpython.py"),
        "raise ImportError('bpython hidden by the test')\n",
    )
    .expect("write the bpython stub");

    let out = Command::new(dmon_bin())
        .args(["shell", "-s", "bpython", "--udp", "127.0.0.1:0"])
        .args(["--riemann-tcp", "off", "--riemann-udp", "off"])
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONHOME")
        .env("PYTHONPATH", &stubs)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .expect("run dmon shell");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must fail: {stderr}");
    let exe = stderr
        .split_once("embeds (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(exe, _)| exe)
        .unwrap_or_else(|| panic!("the message names the embedded Python: {stderr}"));
    assert!(
        stderr.contains(&format!("`{exe} -m pip install bpython`")),
        "the message says how to install bpython with {exe}: {stderr}"
    );
    let base = Command::new(exe)
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .env_remove("PYTHONHOME")
        .output()
        .unwrap_or_else(|e| panic!("run {exe}: {e}"));
    assert!(base.status.success(), "{exe} runs");
    let base = String::from_utf8_lossy(&base.stdout);
    assert_eq!(
        canonical(base.trim()),
        linked,
        "{exe} is the Python dmon links, not another one on the machine"
    );
}

/// Datagrams the test sends, few enough that the socket's buffer holds
/// them all should the dispatch thread fall behind.
const DATAGRAMS: u64 = 40;

/// `Stream.send` from a thread that is not the server's dispatch thread
/// (here one the module starts; the shell's likewise) is done by the
/// dispatch thread: a stateful node fed from that thread and from UDP at
/// once runs on one thread only, and counts every event.
#[test]
fn pushes_from_other_threads_are_done_by_the_dispatch_thread() {
    let mut server = common::Server::start(common::TALLY_STREAMS);
    server.send(serde_json::json!({"service": "go"}));
    for i in 0..DATAGRAMS {
        server.send(serde_json::json!({"service": "udp", "metric": i}));
    }
    server.send(serde_json::json!({"service": "udp-done"}));
    let report = server.expect_printed("tally: ");
    assert_eq!(report["description"], "1 threads", "{report}");
    assert_eq!(
        report["metric"].as_u64(),
        Some(common::TALLY_FED + DATAGRAMS),
        "{report}"
    );
}
