//! Links the embedded interpreter's libpython with an rpath, so the binary
//! loads the same Python it was built against (see ../shared/design/embedding-python.md).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
