//! The native half of the `dmon` Python package: `dmon._dmon`, filled by
//! the same function as the binary's built-in `dmon` module.

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_dmon")]
fn dmon_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    dmon::python::fill_module(m)
}
