//! dmon links libpython through pyo3, and a link argument reaches only the
//! package that emits it: dmon's own build.rs gives its binaries an rpath to
//! that libpython, not ours. Without the same rpath the fuzz targets would
//! not start wherever libpython is outside the loader's default paths (a
//! pyenv or virtualenv Python).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    pyo3_build_config::add_libpython_rpath_link_args();
}
