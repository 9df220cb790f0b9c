//! Links the embedded interpreter's libpython with an rpath, so the binary
//! (and the tests) load the Python they were built against. A link argument
//! applies only to its own package's targets, so dmon-python's build script,
//! which records that Python's home, cannot give it to the binary.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    pyo3_build_config::add_libpython_rpath_link_args();
}
