//! The pip package (python/): its type stubs are the registry's, mypy
//! checks stream modules with them, and the wheel, installed in a fresh
//! virtualenv, builds trees of the same native nodes, runs them with
//! `dmon.testing`, and serves pytest and mypy there.
//!
//! The wheel is built once per run of this file by maturin (pinned in
//! tests/requirements.txt, which test.sh installs) into the target
//! directory `cargo test` uses, so the crates dmon depends on are not
//! compiled again (crates/workspace-hack and python/.cargo/config.toml
//! say how).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// Building the wheel compiles dmon-server, dmon-python and pyo3 again
/// (about 20 s here); from a cold target directory, every dependency too.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// mypy, pip and pytest runs.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory and profile directory (`debug`) of this build:
/// the dmon binary is `<target>/<profile>/dmon`.
fn target_and_profile() -> (PathBuf, String) {
    let bin = Path::new(dmon_bin());
    let profile_dir = bin.parent().expect("bin dir");
    let target = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = profile_dir
        .file_name()
        .expect("profile dir")
        .to_string_lossy()
        .into_owned();
    (target, profile)
}

/// A finished command: its status and output.
struct Done {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Done {
    fn text(&self) -> String {
        format!(
            "{}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn ok(self, what: &str) -> Done {
        assert!(self.status.success(), "{what} failed: {}", self.text());
        self
    }
}

/// Runs `cmd` to completion, killing it after `timeout`.
fn run(mut cmd: Command, timeout: Duration) -> Done {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = Lines::spawn("stdout", child.stdout.take().unwrap());
    let mut err = Lines::spawn("stderr", child.stderr.take().unwrap());
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} did not finish within {timeout:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            out.dump(),
            err.dump()
        );
    };
    Done {
        status,
        stdout: out.read_to_eof(Duration::from_secs(5)).join("\n"),
        stderr: err.read_to_eof(Duration::from_secs(5)).join("\n"),
    }
}

/// Gives `cmd`, a cargo build (or maturin's), the target directory and
/// profile of this test's own build, so it reuses what that built.
fn build_like_the_tests(cmd: &mut Command) {
    // What cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_…,
    // OUT_DIR) must not reach the build: ring's build script reruns when
    // such a variable differs, and then ring and all that depends on it
    // (rustls, async-nats, dmon-server...) rebuild, here and again by the
    // next `cargo test`.
    // What the user set (CARGO_HOME, CARGO_INCREMENTAL, CARGO_PROFILE_…)
    // stays, as test.sh's settings must reach these builds too.
    const SET_FOR_TESTS: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_TARGET_TMPDIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if SET_FOR_TESTS.iter().any(|set| name.starts_with(set)) {
            cmd.env_remove(&*name);
        }
    }
    let (target, profile) = target_and_profile();
    cmd.env("CARGO_TARGET_DIR", &target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
}

/// `python3` from PATH: the virtualenv test.sh puts first, with maturin,
/// mypy and pytest; the Python dmon embeds.
fn python() -> Command {
    Command::new("python3")
}

/// The wheel of python/, built once for this test binary.
fn wheel() -> &'static Path {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let (target, _) = target_and_profile();
        let out = target.join("package-test-wheel");
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = python();
        // --locked: the package is a member of the root workspace, so
        // it builds with the versions Cargo.lock holds. From python/, so
        // cargo reads python/.cargo/config.toml, as under pip.
        cmd.args(["-m", "maturin", "build", "--locked"])
            .current_dir(repo().join("python"))
            .args(["--interpreter", "python3", "--out"])
            .arg(&out)
            .arg("--manifest-path")
            .arg(repo().join("python/Cargo.toml"));
        build_like_the_tests(&mut cmd);
        run(cmd, BUILD_TIMEOUT).ok("maturin build");
        let wheels: Vec<PathBuf> = std::fs::read_dir(&out)
            .expect("wheel dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        assert_eq!(wheels.len(), 1, "one wheel in {}", out.display());
        wheels.into_iter().next().unwrap()
    })
}

/// The pins of pytest and what it needs, from tests/requirements.txt, so
/// the fresh virtualenv gets the versions the rest of the tests use.
fn pytest_pins() -> Vec<String> {
    let requirements =
        std::fs::read_to_string(repo().join("tests/requirements.txt")).expect("requirements");
    let wanted = ["pytest", "pluggy", "iniconfig", "packaging", "pygments"];
    let pins: Vec<String> = requirements
        .lines()
        .filter(|l| {
            l.split_once("==")
                .is_some_and(|(name, _)| wanted.contains(&name.trim().to_lowercase().as_str()))
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        pins.len(),
        wanted.len(),
        "tests/requirements.txt pins {wanted:?}: {pins:?}"
    );
    pins
}

/// mypy from PATH's Python, with its cache in `cache`.
fn mypy(cache: &Path, flag: &str) -> Command {
    let mut cmd = python();
    cmd.args(["-m", "mypy", flag, "--no-color-output", "--cache-dir"])
        .arg(cache)
        .env_remove("MYPYPATH");
    cmd
}

// ---------------------------------------------------------------------------
// Stubs
// ---------------------------------------------------------------------------

/// python/dmon/streams.pyi and folds.pyi are what `dmon catalog --stubs`
/// prints from the registry, so a new stream function or parameter cannot
/// go untyped.
#[test]
fn the_committed_stubs_are_the_generated_ones() {
    for module in ["streams", "folds"] {
        let out = run_dmon(&["catalog", "--stubs", module], None);
        assert!(out.status.success(), "{}", out.stderr);
        let path = repo().join(format!("python/dmon/{module}.pyi"));
        let committed = std::fs::read_to_string(&path).expect("committed stub");
        // run_dmon joins lines; the stub ends with one newline.
        assert!(
            committed == format!("{}\n", out.stdout),
            "{} differs from the registry; regenerate it: \
             cargo run -q -- catalog --stubs {module} > python/dmon/{module}.pyi",
            path.display()
        );
    }
    // Every stream function is in the stub, typed.
    let streams = std::fs::read_to_string(repo().join("python/dmon/streams.pyi")).unwrap();
    for name in [
        "average", "where", "by", "rate", "printer", "index", "email",
    ] {
        assert!(
            streams.contains(&format!("def {name}(")),
            "streams.pyi lacks {name}"
        );
    }
    assert!(streams.contains("def average(places: int, *children: _Child) -> Stream:"));
}

/// `--stubs` takes a module name and says which ones exist.
#[test]
fn catalog_stubs_names_the_modules_it_knows() {
    let out = run_dmon(&["catalog", "--stubs", "nope"], None);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("invalid value 'nope'") && out.stderr.contains("streams, folds"),
        "{}",
        out.stderr
    );
}

/// The package is a member of the root workspace: one Cargo.lock, so it
/// builds the versions the binary is tested with, and it leaves NATS out.
#[test]
fn the_package_builds_in_the_root_workspace_without_nats() {
    assert!(
        !repo().join("python/Cargo.lock").exists(),
        "python/Cargo.lock: the package must use the root's lock"
    );
    let tree = cargo_tree(&[
        "-e",
        "normal",
        "--manifest-path",
        repo()
            .join("python/Cargo.toml")
            .to_str()
            .expect("utf-8 path"),
    ]);
    for needed in ["dmon-python ", "dmon-server ", "dmon-core ", "pyo3 "] {
        assert!(
            tree.lines().any(|l| l.starts_with(needed)),
            "no {needed}in\n{tree}"
        );
    }
    for absent in ["async-nats ", "axum "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(absent)),
            "{absent}in\n{tree}"
        );
    }
}

/// The pip package and dmon-server without its optional parts (which
/// [`wheel`] and `the_server_builds_without_its_optional_parts` build)
/// build each crate they share with the rest of the tests with the same
/// features, so they reuse its build in the target
/// directory instead of building serde, tokio and the crates above them
/// again. crates/workspace-hack asks for the features; this finds what it
/// misses.
#[test]
fn partial_builds_share_the_tests_builds_of_dependencies() {
    let tests = dependency_features(&[
        "-e",
        "normal,build,dev",
        "-p",
        "dmon",
        "-p",
        "dmon-server",
        "-p",
        "dmon-core",
        "-p",
        "dmon-python",
    ]);
    for (build, args) in [
        (
            "the pip package",
            &["-e", "normal,build", "-p", "dmon-wheel"][..],
        ),
        (
            "dmon-server --no-default-features",
            &[
                "-e",
                "normal,build",
                "-p",
                "dmon-server",
                "--no-default-features",
            ][..],
        ),
    ] {
        let partial = dependency_features(args);
        assert!(partial.len() > 50, "{build}: {partial:?}");
        let differ: Vec<&String> = partial.difference(&tests).collect();
        assert!(
            differ.is_empty(),
            "{build} builds these with other features than the tests (add the tests' \
             features to crates/workspace-hack/Cargo.toml):\n{differ:#?}"
        );
    }
}

/// The server builds without its optional parts (cluster, http, mail),
/// as a user's `--no-default-features` build would, and under test.sh
/// (whose clippy wrapper and `-D warnings` it inherits) without a lint.
/// The pip package's build covers dmon-python without cluster.
#[test]
fn the_server_builds_without_its_optional_parts() {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--locked",
        "-p",
        "dmon-server",
        "--no-default-features",
    ])
    .current_dir(repo());
    build_like_the_tests(&mut cmd);
    let done = run(cmd, BUILD_TIMEOUT).ok("cargo build -p dmon-server --no-default-features");
    assert!(
        !done.stderr.contains("warning:"),
        "the build warned:\n{}",
        done.stderr
    );
}

/// `cargo tree --prefix none` of the root workspace with `args`.
fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--prefix", "none"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// "name version [features]" of each dependency (not the workspace's own
/// crates) that a build with `args` compiles.
fn dependency_features(args: &[&str]) -> std::collections::BTreeSet<String> {
    let mut all = vec!["-f", "{p} [{f}]"];
    all.extend_from_slice(args);
    cargo_tree(&all)
        .lines()
        .filter(|l| !l.contains(" (/"))
        .map(|l| l.replace(" (proc-macro)", "").replace(" (*)", ""))
        .collect()
}

// ---------------------------------------------------------------------------
// mypy with the stubs of the source tree
// ---------------------------------------------------------------------------

/// A stream module with two type errors, at lines 6 and 9, and correct
/// uses of the typed API around them.
const BAD_MODULE: &str = r#"from dmon.streams import *
from dmon import folds
from dmon.testing import run, at

ok_stream = by("host", rate(60, smap(folds.mean, printer("rate: "))))
bad_stream = average("2", printer())
stream = when(lambda e: e.metric > 1.5, index())
windows_stream = fixed_time_window(60, smap(folds.count, index()))
typo_stream = when(lambda e: e.metric.upper() == "X", index())

out = run([ok_stream, stream], [{"host": "a", "metric": 2, "time": 1}, at(61)], until=120)
hosts: list[str] = [e.host for e in out.printed_events]
"#;

#[test]
fn mypy_passes_the_examples_and_reports_type_errors_at_their_lines() {
    let dir = TempDir::new();
    let cache = dir.path().join("mypy-cache");
    // The example modules and their tests (unannotated, so their bodies
    // are checked only with --check-untyped-defs).
    let mut cmd = mypy(&cache, "--check-untyped-defs");
    cmd.env("MYPYPATH", repo().join("python"))
        .arg(repo().join("examples"));
    let clean = run(cmd, TOOL_TIMEOUT).ok("mypy on examples/");
    let modules = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "py")
        })
        .count();
    assert!(
        clean.stdout.contains(&format!(
            "Success: no issues found in {modules} source files"
        )),
        "{}",
        clean.text()
    );

    let bad = dir.write("bad_streams.py", BAD_MODULE);
    let mut cmd = mypy(&cache, "--strict");
    cmd.env("MYPYPATH", repo().join("python")).arg(&bad);
    let checked = run(cmd, TOOL_TIMEOUT);
    assert_eq!(checked.status.code(), Some(1), "{}", checked.text());
    let errors: Vec<&str> = checked
        .stdout
        .lines()
        .filter(|l| l.contains(": error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{}", checked.text());
    assert!(
        errors[0].ends_with(
            "bad_streams.py:6: error: Argument 1 to \"average\" has incompatible type \"str\"; expected \"int\"  [arg-type]"
        ),
        "{}",
        checked.text()
    );
    assert!(
        errors[1].contains(
            "bad_streams.py:9: error: Item \"float\" of \"float | Any\" has no attribute \"upper\""
        ),
        "{}",
        checked.text()
    );
}

// ---------------------------------------------------------------------------
// The wheel in a fresh virtualenv
// ---------------------------------------------------------------------------

/// A fresh virtualenv (no pip of its own: the outer one installs into it)
/// with the wheel and pytest.
fn fresh_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let mut cmd = python();
    cmd.args(["-m", "venv", "--without-pip"]).arg(&venv);
    run(cmd, TOOL_TIMEOUT).ok("python3 -m venv");
    let venv_python = venv.join("bin/python");
    let mut cmd = python();
    cmd.args(["-m", "pip", "--disable-pip-version-check", "--python"])
        .arg(&venv_python)
        .args(["install", "-q", "--no-deps"])
        .arg(wheel())
        .args(pytest_pins());
    run(cmd, TOOL_TIMEOUT).ok("pip install the wheel and pytest");
    venv_python
}

/// What `python -c` checks in the fresh virtualenv: the package's names,
/// trees of native nodes, dmon.testing, and the error for a stream used
/// outside a server.
const IMPORT_CHECK: &str = r#"
import sys
import dmon, dmon.streams, dmon.folds, dmon.testing
from dmon.streams import *
from dmon import Event, folds
from dmon.testing import run, at

assert dmon.__file__.startswith(sys.prefix), dmon.__file__
assert dmon.Event is dmon.streams.Event is dmon.testing.Event
tree = by("host", average(2, when(lambda e: e.metric > 1.85, printer("high: "))))
print("tree:", repr(tree))
out = run(tree, [{"host": "a", "metric": 1, "time": 1},
                 {"host": "a", "metric": 3, "time": 2},
                 {"host": "b", "metric": 0.5, "time": 3}])
print("printed:", out.printed)
print("rate:", [e.metric for e in run(rate(5, printer()), [{"metric": 10, "time": 1}, at(6)])])
print("mean:", folds.mean([Event(metric=1), Event(metric=2)]).metric)
try:
    printer().send({"host": "a"})
except RuntimeError as e:
    print("send:", e)
print("exports:", len(dmon.streams.__all__))
"#;

#[test]
fn the_wheel_installs_in_a_fresh_virtualenv_and_runs_streams() {
    let dir = TempDir::new();
    let venv_python = fresh_venv(dir.path());
    let mut cmd = Command::new(&venv_python);
    cmd.args(["-c", IMPORT_CHECK]).current_dir(dir.path());
    let out = run(cmd, TOOL_TIMEOUT).ok("python -c IMPORT_CHECK");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "tree: by(\"host\", idle=300, average(2, when(<lambda> in <string>, printer(\"high: \"))))",
        "{}",
        out.text()
    );
    // The running average of host a reaches 2 on its second event; b's
    // fork starts afresh.
    assert_eq!(
        lines[1],
        r#"printed: ['high: {"host":"a","time":2,"metric":2.0}']"#,
        "{}",
        out.text()
    );
    assert_eq!(lines[2], "rate: [2.0]", "{}", out.text());
    assert_eq!(lines[3], "mean: 1.5", "{}", out.text());
    assert_eq!(
        lines[4],
        "send: no dmon server is running in this process",
        "{}",
        out.text()
    );
    let registered = run_dmon(&["catalog"], None)
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("folds."))
        .count();
    let helpers = dmon::python::streams::HELPERS.len();
    assert_eq!(
        lines[5],
        format!("exports: {}", registered + helpers),
        "every registered function and the {helpers} helpers: {}",
        out.text()
    );

    // The stubs (hand-written and generated) against the installed
    // modules: every name, every signature, `__all__`.
    let mut cmd = Command::new(&venv_python);
    cmd.args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]);
    let site = run(cmd, TOOL_TIMEOUT).ok("purelib");
    let mut cmd = python();
    cmd.args(["-m", "mypy.stubtest", "--allowlist"])
        .arg(repo().join("python/stubtest-allowlist.txt"))
        .arg("dmon")
        .env("PYTHONPATH", site.stdout.trim())
        .env_remove("MYPYPATH")
        .current_dir(dir.path());
    let checked = run(cmd, TOOL_TIMEOUT).ok("stubtest on the installed package");
    assert!(
        checked
            .stdout
            .contains("Success: no issues found in 5 modules"),
        "{}",
        checked.text()
    );
}

/// A stream module, its tests, and a test that must fail, as a user would
/// keep them in a project of their own.
const USER_STREAMS: &str = r#"from dmon.streams import *

OPS = "ops@example.com"

# Mail ops when a host's error rate is above 0.5/s over a minute.
error_rate_stream = where(
    'state = "error"',
    by("host", rate(60, where("metric > 0.5", email(OPS, subject="errors")))),
)
"#;

const USER_TESTS: &str = r#"from dmon.testing import run, at

import mystreams


def errors(host: str, n: int, start: float) -> list[dict[str, object]]:
    return [
        {"host": host, "service": "api", "state": "error", "metric": 1, "time": start + i}
        for i in range(n)
    ]


def test_a_burst_of_errors_mails_once_per_minute() -> None:
    out = run(mystreams, errors("web1", 40, 0) + [at(61)])
    assert [[e.host for e in mail] for mail in out.mailed] == [["web1"]]


def test_a_few_errors_mail_nobody() -> None:
    out = run(mystreams, errors("web2", 10, 0), until=120)
    assert out.mailed == []


def test_this_one_fails_on_purpose() -> None:
    out = run(mystreams, errors("web3", 10, 0), until=120)
    assert len(out.mailed) == 1
"#;

#[test]
fn pytest_and_mypy_run_stream_module_tests_in_the_fresh_virtualenv() {
    let dir = TempDir::new();
    let venv_python = fresh_venv(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("mystreams.py"), USER_STREAMS).unwrap();
    std::fs::write(project.join("test_mystreams.py"), USER_TESTS).unwrap();

    let mut cmd = Command::new(&venv_python);
    cmd.args(["-c", "import mystreams; print(mystreams.error_rate_stream)"])
        .current_dir(&project);
    let imported = run(cmd, TOOL_TIMEOUT).ok("import mystreams");
    assert!(
        imported
            .stdout
            .starts_with("where(\"state = \\\"error\\\"\", by(\"host\""),
        "{}",
        imported.text()
    );

    let mut cmd = Command::new(&venv_python);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q"])
        .current_dir(&project);
    let tested = run(cmd, TOOL_TIMEOUT);
    assert_eq!(tested.status.code(), Some(1), "{}", tested.text());
    assert!(
        tested.stdout.contains("1 failed, 2 passed"),
        "{}",
        tested.text()
    );
    assert!(
        tested
            .stdout
            .contains("FAILED test_mystreams.py::test_this_one_fails_on_purpose"),
        "{}",
        tested.text()
    );

    // The repository's example tests, which `dmon test examples/` runs,
    // pass under pytest too.
    let tests = ["test_streams.py", "test_alerting.py", "test_first_alert.py"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(repo().join("examples").join(f))
                .unwrap()
                .matches("\ndef test_")
                .count()
        })
        .sum::<usize>();
    let mut cmd = Command::new(&venv_python);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q"])
        .arg(repo().join("examples"))
        // Nothing written into the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir.path());
    let examples = run(cmd, TOOL_TIMEOUT).ok("pytest examples/");
    assert!(
        examples.stdout.contains(&format!("{tests} passed")),
        "{}",
        examples.text()
    );

    // mypy finds the installed package's stubs (py.typed), no MYPYPATH.
    let mut cmd = mypy(&dir.path().join("mypy-cache"), "--strict");
    cmd.arg("--python-executable")
        .arg(&venv_python)
        .arg(".")
        .current_dir(&project);
    let typed = run(cmd, TOOL_TIMEOUT).ok("mypy with the installed package");
    assert!(
        typed
            .stdout
            .contains("Success: no issues found in 2 source files"),
        "{}",
        typed.text()
    );
}
