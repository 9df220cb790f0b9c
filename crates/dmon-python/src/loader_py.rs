//! The loader's Python half (loader.py), embedded in the binary and imported
//! once per interpreter: importing stream modules and reading lambdas'
//! source text.

use pyo3::prelude::*;
use pyo3::types::PyModule;

const LOADER_SOURCE: &str = include_str!("loader.py");

/// The `dmon._loader` module.
pub fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    super::embedded_module(py, "dmon._loader", "dmon/_loader.py", LOADER_SOURCE)
}

/// A lambda's source text on one line, if it can be read (see
/// `lambda_source` in loader.py).
pub fn lambda_source(func: &Bound<'_, PyAny>) -> Option<String> {
    module(func.py())
        .and_then(|l| l.call_method1("lambda_source", (func,)))
        .and_then(|text| text.extract::<Option<String>>())
        .ok()
        .flatten()
}
