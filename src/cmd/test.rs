//! `dmon test`: runs the tests of stream modules, pytest-style, in the
//! interpreter dmon embeds. Collection, running and reporting are Python
//! (`src/python/test_runner.py`); this only parses the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pyo3::prelude::*;

use crate::python;

const RUNNER_SOURCE: &str = include_str!("../python/test_runner.py");

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 all passed, 1 a test failed, 2 a usage error or a file that \
                  failed to import, 3 an internal error, 5 no tests collected (as pytest)."
)]
pub struct TestArgs {
    /// Test files and directories. A directory is searched for test_*.py and
    /// *_test.py files; a file is run whatever its name (a stream module with
    /// tests in it); FILE::NAME runs one test (or one Test* class).
    #[arg(value_name = "PATH", default_value = ".")]
    pub paths: Vec<String>,
    /// Also write the results as JUnit XML to FILE, for CI.
    #[arg(long, value_name = "FILE", env = "DMON_TEST_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Run only the tests whose name, class name or file name contains EXPR
    /// (case-insensitively); `and`, `or`, `not` and parentheses combine
    /// words, as in pytest: -k "average and not slow".
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,
    /// Stop at the first failure (or file that fails to import).
    #[arg(short = 'x', long = "exitfirst")]
    pub exitfirst: bool,
    /// Do not capture output: tests' prints, printer() lines and logs appear
    /// as they happen, instead of under each failure.
    #[arg(short = 's', long = "no-capture")]
    pub no_capture: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    python::init().context("starting the embedded Python")?;
    let code = Python::attach(|py| {
        run_main(py, args).unwrap_or_else(|e| {
            // A bug of the runner, not of the tests: pytest's "internal
            // error" status, so CI does not take it for failed tests.
            e.print(py);
            eprintln!("dmon test: internal error of the test runner (above)");
            INTERNAL_ERROR
        })
    });
    Ok(ExitCode::from(code))
}

/// pytest's exit status for an error of the runner itself.
const INTERNAL_ERROR: u8 = 3;

fn run_main(py: Python<'_>, args: TestArgs) -> PyResult<u8> {
    let junit = args
        .junit
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    let runner = python::embedded_module(
        py,
        "dmon._test_runner",
        "dmon/_test_runner.py",
        RUNNER_SOURCE,
    )?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("junit", junit)?;
    kwargs.set_item("keyword", args.keyword)?;
    kwargs.set_item("exitfirst", args.exitfirst)?;
    kwargs.set_item("capture", !args.no_capture)?;
    runner
        .call_method("main", (args.paths,), Some(&kwargs))?
        .extract()
}
