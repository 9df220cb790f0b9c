//! The native half of the `dmon` Python package: `dmon._dmon`, filled by
//! the same function as the binary's built-in `dmon` module.

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_dmon")]
fn dmon_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // A failing predicate in a dmon.testing run is counted and logged, as
    // in the server: to stderr (pytest shows it with the test). Quieter by
    // default than the binary, as a library should be; DMON_LOG as there.
    let filter = std::env::var("DMON_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    dmon_server::logs::init(&filter);
    dmon_python::fill_module(m)
}
