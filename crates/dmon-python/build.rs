//! Records the home of the Python pyo3 builds against, so the binary
//! starts it with its own standard library whatever `python3` is on PATH at
//! run time (CPython would otherwise derive its prefix from the program
//! found on PATH); and links libpython with an rpath for this crate's own
//! tests (the binary's build script does so for the binary).
use std::process::Command;

/// Asks the interpreter pyo3 builds against for its base installation (a
/// virtualenv's base, not the virtualenv): prefix, exec prefix, executable.
const BASE_QUERY: &str = "import os, sys
print(sys.base_prefix)
print(sys.base_exec_prefix)
print(getattr(sys, '_base_executable', None) or os.path.realpath(sys.executable))";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // pyo3 chooses its interpreter from these; the choice reaches us
    // through its config, but the base behind a same-named virtualenv may
    // change without it.
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    pyo3_build_config::add_libpython_rpath_link_args();

    let config = pyo3_build_config::get();
    let python = config
        .executable()
        .expect("pyo3 found no Python interpreter to build against (set PYO3_PYTHON)");
    let out = Command::new(python)
        .args(["-c", BASE_QUERY])
        .env_remove("PYTHONHOME")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{python} could not report its installation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("Python paths are UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    let [prefix, exec_prefix, executable] = lines[..] else {
        panic!("unexpected answer from {python}: {stdout:?}");
    };
    println!("cargo:rustc-env=DMON_PYTHON_PREFIX={prefix}");
    println!("cargo:rustc-env=DMON_PYTHON_EXEC_PREFIX={exec_prefix}");
    println!("cargo:rustc-env=DMON_PYTHON_EXECUTABLE={executable}");
}
