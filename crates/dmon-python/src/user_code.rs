//! User Python code as the engine reports it: a callable's readable name
//! (part of how its node was built) and an exception as a node error with
//! its traceback.

use pyo3::prelude::*;

use super::loader_py::lambda_source;
use dmon_server::streams::NodeError;

/// Turns a Python exception into a node error carrying its traceback.
pub fn node_error(py: Python<'_>, err: PyErr) -> NodeError {
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    NodeError(format!(
        "{kind}: {}\n{}",
        err.value(py),
        format_traceback(py, &err).trim_end()
    ))
}

/// The traceback as Python's `traceback` module prints it. Not pyo3's
/// `format()`: that reads source lines from disk only, so code typed at a
/// prompt (kept in `linecache`) would show no line.
fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let Some(tb) = err.traceback(py) else {
        return String::new();
    };
    py.import("traceback")
        .and_then(|m| m.call_method1("format_tb", (tb,)))
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| format!("Traceback (most recent call last):\n{}", lines.concat()))
        .unwrap_or_default()
}

/// A readable name for a Python callable (or generator), part of how its
/// node was built (reload keeps a node's state only when that is
/// unchanged): a lambda's source text (`lambda e: e.metric > 3`), a named
/// function's `__qualname__`; neither says where in its file, so adding a
/// line above keeps the state. A lambda whose source cannot be read (Hy)
/// is named by its place: `<lambda> at streams.hy:12`.
pub fn callable_name(obj: &Bound<'_, PyAny>) -> String {
    if let Some(text) = lambda_source(obj) {
        return text;
    }
    let name = obj
        .getattr("__qualname__")
        .and_then(|n| n.extract::<String>())
        .or_else(|_| obj.repr().map(|r| r.to_string()))
        .unwrap_or_else(|_| "?".into());
    if !name.ends_with("<lambda>") {
        return name;
    }
    match defined_at(obj) {
        Some(place) => format!("{name} {place}"),
        None => name,
    }
}

/// `at FILE:LINE` (FILE relative to the current directory when inside it),
/// or for code typed at a prompt, the line typed.
fn defined_at(obj: &Bound<'_, PyAny>) -> Option<String> {
    let code = obj
        .getattr("__code__")
        .or_else(|_| obj.getattr("gi_code"))
        .ok()?;
    let file: String = code.getattr("co_filename").ok()?.extract().ok()?;
    let line: u32 = code.getattr("co_firstlineno").ok()?.extract().ok()?;
    if file.starts_with('<') {
        // The shells keep what was typed in linecache under names like
        // `<dmon-input-3>`, `<ipython-input-…>`, `<bpython-input-…>`.
        let typed: String = obj
            .py()
            .import("linecache")
            .and_then(|lc| lc.call_method1("getline", (&file, line)))
            .and_then(|l| l.extract())
            .ok()?;
        let typed = typed.trim();
        return Some(if typed.is_empty() {
            format!("in {file}")
        } else {
            format!("typed at the prompt: {typed}")
        });
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            std::path::Path::new(&file)
                .strip_prefix(cwd)
                .ok()
                .map(|p| p.display().to_string())
        })
        .unwrap_or(file);
    Some(format!("at {shown}:{line}"))
}
