//! `dmon test`: runs pytest in the interpreter dmon embeds, so stream
//! modules' tests import the binary's own `dmon` module (the real nodes),
//! with dmon's small plugin (`crates/dmon-python/src/pytest_plugin.py`). This maps
//! dmon test's flags onto pytest's and hands pytest everything else.

use std::process::ExitCode;

use anyhow::Context as _;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::python;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Any other argument is pytest's: dmon test is pytest (installed where dmon's \
Python finds it: the virtualenv VIRTUAL_ENV names, or its own site-packages) \
with the `dmon` module of this binary importable. `dmon test -- --help` lists \
all of pytest's options.

Exit status (pytest's): 0 all passed, 1 a test failed, 2 interrupted (a file \
failed to import), 3 an internal error, 4 a usage error or pytest not \
installed, 5 no tests collected.")]
pub struct TestArgs {
    /// Also write the results as JUnit XML to FILE, for CI (pytest's
    /// --junitxml).
    #[arg(long, value_name = "FILE", env = "DMON_TEST_JUNIT")]
    pub junit: Option<String>,
    /// Run only the tests whose name, class name or file name contains EXPR
    /// (case-insensitively); `and`, `or`, `not` and parentheses combine
    /// words: -k "average and not slow" (pytest's -k).
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,
    /// Stop at the first failure (or file that fails to import).
    #[arg(short = 'x', long = "exitfirst")]
    pub exitfirst: bool,
    /// Do not capture output: tests' prints, printer() lines and logs appear
    /// as they happen, instead of under each failure (pytest's -s).
    #[arg(short = 's', long = "no-capture")]
    pub no_capture: bool,
    /// Test files and directories, then any of pytest's arguments. A
    /// directory is searched for test_*.py and *_test.py files; a file is
    /// run whatever its name (a stream module with tests in it);
    /// FILE::NAME runs one test (or one Test* class).
    #[arg(
        value_name = "PATH|PYTEST_ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl TestArgs {
    /// pytest's command line: dmon test's flags in pytest's spelling, then
    /// the rest as given (so a later, explicit option wins).
    fn pytest_args(self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(file) = self.junit.filter(|f| !f.is_empty()) {
            out.push(format!("--junitxml={file}"));
        }
        if let Some(expr) = self.keyword {
            out.extend(["-k".to_owned(), expr]);
        }
        if self.exitfirst {
            out.push("-x".to_owned());
        }
        if self.no_capture {
            out.push("-s".to_owned());
        }
        out.extend(self.args);
        out
    }
}

/// pytest's exit statuses dmon gives itself.
const INTERNAL_ERROR: u8 = 3;
const USAGE_ERROR: u8 = 4;

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    python::init().context("starting the embedded Python")?;
    let code = Python::attach(|py| {
        let code = run_pytest(py, args.pytest_args()).unwrap_or_else(|e| {
            // A failure to start pytest, not a test's: pytest's "internal
            // error" status, so CI does not take it for failed tests.
            e.print(py);
            eprintln!("dmon test: internal error starting pytest (above)");
            INTERNAL_ERROR
        });
        // dmon never finalises the interpreter, which is what would flush
        // a piped stdout at exit.
        let _ = py.run(
            c"import sys; sys.stdout.flush(); sys.stderr.flush()",
            None,
            None,
        );
        code
    });
    Ok(ExitCode::from(code))
}

fn run_pytest(py: Python<'_>, args: Vec<String>) -> PyResult<u8> {
    let pytest = match py.import("pytest") {
        Ok(pytest) => pytest,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyImportError>(py) => {
            eprintln!("{}", not_installed(py, &e)?);
            return Ok(USAGE_ERROR);
        }
        Err(e) => return Err(e),
    };
    let plugin = python::embedded_module(
        py,
        "dmon._pytest_plugin",
        "dmon/_pytest_plugin.py",
        python::testing::PYTEST_PLUGIN,
    )?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("plugins", PyList::new(py, [plugin])?)?;
    pytest
        .call_method("main", (args,), Some(&kwargs))?
        .call_method0("__int__")?
        .extract()
}

/// What to do when pytest is not importable, naming the Python dmon looked
/// in (which is not necessarily the `python3` on PATH).
fn not_installed(py: Python<'_>, error: &PyErr) -> PyResult<String> {
    let sys = py.import("sys")?;
    let executable: String = sys.getattr("executable")?.extract()?;
    let message = error.value(py).str()?;
    let venv = match std::env::var("VIRTUAL_ENV") {
        Ok(v) if !v.is_empty() => format!("the virtualenv {v}"),
        _ => "no virtualenv (VIRTUAL_ENV is not set)".to_owned(),
    };
    Ok(format!(
        "dmon test runs pytest; install it: pip install pytest\n  \
         dmon's Python cannot import it ({message}): {executable} in {venv}\n  \
         to install it there: {executable} -m pip install pytest"
    ))
}
