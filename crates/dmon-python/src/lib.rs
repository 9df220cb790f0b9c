//! dmon's Python layer, over `dmon-server`: interpreter start, the `dmon`
//! module (a thin binding over the Rust nodes), stream module loading, the
//! shells' glue, `dmon test`'s pytest plugin, and the dispatch thread that
//! may call into user Python. The binary embeds it; the pip package
//! (python/) builds it as an extension module, without the `cluster`
//! feature.
//!
//! Python runs only at user callables. The dispatch thread stays attached to
//! the interpreter and detaches only while it waits for the next batch, so
//! one GIL acquisition serves a whole batch and idle servers hold nothing
//! (see docs/src/embedding-python.md).

pub mod coroutine_output;
pub mod event;
pub mod loader;
pub mod loader_py;
pub mod nodes;
pub mod repl;
pub mod server_binding;
pub mod shell;
pub mod stream_object;
pub mod streams;
pub mod testing;
pub mod trace;
pub mod user_code;
pub mod value;

use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};

use pyo3::prelude::*;
use pyo3::types::PyModule;
use tokio::sync::mpsc;

use dmon_server::pipeline::{Pipeline, Work};
use dmon_server::server::Injector;
use dmon_server::streams::context::Context;

#[pymodule]
fn dmon(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fill_module(m)
}

/// Fills the `dmon` module: `dmon.streams`, `dmon.folds`, `dmon.testing`,
/// `Event`, `__version__`. The binary's built-in module and the pip package's
/// extension (python/src/lib.rs) both call this, so they offer the same
/// names, backed by the same native nodes.
pub fn fill_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let streams = PyModule::new(py, "dmon.streams")?;
    streams::register(&streams)?;
    m.add("streams", &streams)?;
    m.add("folds", streams.getattr("folds")?)?;
    m.add("Event", streams.getattr("Event")?)?;
    let testing = testing::module(py)?;
    m.add("testing", &testing)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("dmon.streams", &streams)?;
    Ok(())
}

/// Starts the Python dmon links, on the calling (main) thread, with the
/// `dmon` module importable and the virtualenv named by `VIRTUAL_ENV` (if
/// any) in use: PATH does not choose the interpreter, so an activated
/// virtualenv counts through its `VIRTUAL_ENV` too.
pub fn init() -> PyResult<()> {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return Ok(());
    }
    pyo3::append_to_inittab!(dmon);
    start_linked_interpreter();
    // Python is running now: this only tells pyo3 so (it skips its own
    // `Py_InitializeEx` when the interpreter is already initialised).
    Python::initialize();
    Python::attach(|py| {
        let sys = py.import("sys")?;
        sys.setattr("argv", vec!["dmon"])?;
        if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
            let prefix: String = sys.getattr("prefix")?.extract()?;
            if !venv.is_empty() && prefix != venv {
                use_virtualenv(py, &venv)?;
            }
        }
        Ok(())
    })
}

/// The installation of the Python dmon was built against (recorded by
/// build.rs): its prefix, exec prefix and executable.
const BUILD_PREFIX: &str = env!("DMON_PYTHON_PREFIX");
const BUILD_EXEC_PREFIX: &str = env!("DMON_PYTHON_EXEC_PREFIX");
pub const BUILD_EXECUTABLE: &str = env!("DMON_PYTHON_EXECUTABLE");

/// Initialises the interpreter as its own executable would start: with the
/// home and program name of the installation dmon links, so CPython does not
/// take its prefix from whatever `python3` is first on PATH (another
/// installation's standard library under this libpython breaks `_socket`
/// and friends). Leaves the GIL released, as pyo3 expects.
fn start_linked_interpreter() {
    use pyo3::ffi;
    let cstring = |s: &str| std::ffi::CString::new(s).expect("build.rs paths have no NUL");
    // A user's explicit PYTHONHOME wins, as it does for `python3`: CPython
    // reads it itself. Otherwise the build's home, while it is still there
    // (a moved installation falls back to CPython's own search).
    let user_home = std::env::var_os("PYTHONHOME").is_some_and(|h| !h.is_empty());
    let home = if user_home || !std::path::Path::new(BUILD_PREFIX).is_dir() {
        None
    } else if BUILD_EXEC_PREFIX == BUILD_PREFIX {
        Some(cstring(BUILD_PREFIX))
    } else {
        Some(cstring(&format!("{BUILD_PREFIX}:{BUILD_EXEC_PREFIX}")))
    };
    let program = cstring(BUILD_EXECUTABLE);
    // Python cannot start (e.g. no standard library): report it and exit
    // the way `python3` does; there is no interpreter to raise into.
    let check = |status: ffi::PyStatus| {
        // SAFETY: inspects a status CPython just returned.
        if unsafe { ffi::PyStatus_Exception(status) } != 0 {
            unsafe { ffi::Py_ExitStatusException(status) }
        }
    };

    // SAFETY: CPython's documented embedding sequence, on the main thread,
    // before any other Python call.
    unsafe {
        let mut pre = std::mem::MaybeUninit::<ffi::PyPreConfig>::uninit();
        ffi::PyPreConfig_InitPythonConfig(pre.as_mut_ptr());
        let mut pre = pre.assume_init();
        // Coercing the C locale would set LC_CTYPE in the environment that
        // $EDITOR and other children inherit.
        pre.coerce_c_locale = 0;
        pre.coerce_c_locale_warn = 0;
        pre.parse_argv = 0;
        check(ffi::Py_PreInitialize(&pre));

        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // As pyo3's `Py_InitializeEx(0)`: SIGINT stays with dmon (tokio in
        // `serve`; the shell installs Python's handler itself).
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        check(ffi::PyConfig_SetBytesString(
            &mut config,
            &mut config.program_name,
            program.as_ptr(),
        ));
        if let Some(home) = &home {
            check(ffi::PyConfig_SetBytesString(
                &mut config,
                &mut config.home,
                home.as_ptr(),
            ));
        }
        check(ffi::Py_InitializeFromConfig(&config));
        ffi::PyConfig_Clear(&mut config);
        ffi::PyEval_SaveThread();
    }
}

/// Makes a virtualenv named by `VIRTUAL_ENV` (but not activated) the
/// interpreter's, as if its own python were running: its packages come
/// first, the base packages stay only if its `pyvenv.cfg` includes system
/// site-packages, and `sys.executable`/`sys.prefix` point into it.
fn use_virtualenv(py: Python<'_>, venv: &str) -> PyResult<()> {
    let locals = pyo3::types::PyDict::new(py);
    locals.set_item("venv", venv)?;
    py.run(
        c"import os, site, sys
site_dir = os.path.join(venv, 'lib', f'python{sys.version_info[0]}.{sys.version_info[1]}', 'site-packages')
base_sites = set(site.getsitepackages() + [site.getusersitepackages()])
include_system = False
try:
    with open(os.path.join(venv, 'pyvenv.cfg')) as cfg:
        for line in cfg:
            key, _, value = line.partition('=')
            if key.strip() == 'include-system-site-packages':
                include_system = value.strip().lower() == 'true'
except OSError:
    include_system = True  # not a venv we understand: only add to the path
before = [p for p in sys.path if include_system or p not in base_sites]
site.addsitedir(site_dir)
# addsitedir appends; the virtualenv's packages must win over the base ones.
sys.path[:] = [p for p in sys.path if p not in before and p not in base_sites] + before
sys.executable = os.path.join(venv, 'bin', 'python')
sys.prefix = sys.exec_prefix = venv
",
        Some(&locals),
        None,
    )
}

/// A Python module whose source is embedded in the binary, imported once
/// under `name` (later calls return the same module).
pub fn embedded_module<'py>(
    py: Python<'py>,
    name: &str,
    filename: &str,
    source: &str,
) -> PyResult<Bound<'py, PyModule>> {
    if let Ok(m) = py.import(name) {
        return Ok(m);
    }
    let cstr = |s: &str| std::ffi::CString::new(s).expect("embedded Python has no NUL bytes");
    let m = PyModule::from_code(py, &cstr(source), &cstr(filename), &cstr(name))?;
    py.import("sys")?.getattr("modules")?.set_item(name, &m)?;
    Ok(m)
}

pub use server_binding::with_context;

/// Binds the `dmon.streams` module to a server's context: Python's pushes
/// from threads that run no nodes (the shell's) go there. A later binding
/// replaces it.
pub fn bind_context(ctx: Arc<Context>) -> PyResult<()> {
    Python::attach(|py| server_binding::bind(py, ctx))
}

/// The bound server runs: Python's pushes from threads other than its
/// dispatch thread go through `injector` to be done there.
pub fn dispatch_through(injector: Injector) -> PyResult<()> {
    Python::attach(|py| server_binding::dispatch_through(py, injector))
}

/// Runs the pipeline's dispatch loop on its own thread, attached to Python
/// except while waiting for work.
pub fn spawn_dispatcher(pipeline: Arc<Pipeline>, rx: mpsc::Receiver<Work>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("dmon-dispatch".into())
        .spawn(move || {
            Python::attach(|py| {
                // Python's pushes on this thread are into its own pipeline.
                with_context(pipeline.context(), || {
                    pipeline.run_dispatch(rx, |rx| py.detach(|| rx.blocking_recv()));
                })
            })
        })
        .expect("spawn dispatch thread")
}
