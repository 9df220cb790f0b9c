//! Stream nodes backed by user Python: a predicate for `when`, and a
//! generator coroutine. Both plug into the engine through the same traits as
//! native nodes; Python runs only inside them.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::event::PyEvent;
use crate::context::Context;
use crate::event::Event;
use crate::streams::filter::Predicate;
use crate::streams::{Node, NodeError, NodeRef, NodeStats};

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

/// A readable name for a Python callable (or generator): its
/// `__qualname__` or repr, and where it was defined, so three lambdas in
/// one module can be told apart in logs and `streams()`:
/// `<lambda> at streams.py:12`, or `<lambda> typed at the prompt: …`.
pub fn callable_name(obj: &Bound<'_, PyAny>) -> String {
    let name = obj
        .getattr("__qualname__")
        .and_then(|n| n.extract::<String>())
        .or_else(|_| obj.repr().map(|r| r.to_string()))
        .unwrap_or_else(|_| "?".into());
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

/// A Python callable used as a predicate: truthy result forwards the event.
pub struct PyPredicate {
    func: Py<PyAny>,
    name: String,
}

impl PyPredicate {
    pub fn new(func: &Bound<'_, PyAny>) -> Self {
        PyPredicate {
            func: func.clone().unbind(),
            name: callable_name(func),
        }
    }
}

impl Predicate for PyPredicate {
    fn test(&self, event: &Arc<Event>) -> Result<bool, NodeError> {
        Python::attach(|py| {
            let e = PyEvent::wrap(py, event)?;
            self.func.bind(py).call1((e,))?.is_truthy()
        })
        .map_err(|err| Python::attach(|py| node_error(py, err)))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// How to build a coroutine again: the `@stream` function and its arguments.
pub struct Recipe {
    pub func: Py<PyAny>,
    pub args: Py<PyTuple>,
    pub kwargs: Option<Py<PyDict>>,
}

impl Recipe {
    /// Calls the function and primes the generator it returns.
    pub fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let generator = self
            .func
            .bind(py)
            .call(self.args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py)))?;
        if !generator.hasattr("send")? {
            return Err(PyTypeError::new_err(format!(
                "@stream {} must be a generator function (use `e = yield` to receive events)",
                callable_name(self.func.bind(py))
            )));
        }
        generator.call_method1("send", (py.None(),))?;
        Ok(generator)
    }
}

/// A primed generator (or any object with `.send`) receiving each event.
/// `children` are the stream nodes it was built with, shown in the stream
/// tree; the coroutine itself decides where events go. A coroutine built by
/// `@stream` that dies on an exception is started afresh for the next
/// event, so one bad event cannot switch an alerting path off for good.
pub struct Coroutine {
    target: Mutex<Py<PyAny>>,
    recipe: Option<Recipe>,
    name: String,
    children: Vec<NodeRef>,
    stats: NodeStats,
}

impl Coroutine {
    pub fn new(
        target: &Bound<'_, PyAny>,
        name: String,
        children: Vec<NodeRef>,
        recipe: Option<Recipe>,
    ) -> Self {
        Coroutine {
            target: Mutex::new(target.clone().unbind()),
            recipe,
            name,
            children,
            stats: NodeStats::default(),
        }
    }

    /// After a failure: a finished generator is replaced by a fresh one when
    /// it can be; says what happened, for the error message.
    fn recover(&self, py: Python<'_>, target: &Bound<'_, PyAny>) -> &'static str {
        let finished = target
            .getattr("gi_frame")
            .map(|f| f.is_none())
            .unwrap_or(false);
        match (&self.recipe, finished) {
            (_, false) => "",
            (None, true) => {
                " (the generator has finished and cannot be restarted; rebuild this stream)"
            }
            (Some(recipe), true) => match recipe.start(py) {
                Ok(fresh) => {
                    *self.target.lock().unwrap_or_else(|p| p.into_inner()) = fresh.unbind();
                    " (the coroutine was restarted for the next event)"
                }
                Err(_) => " (restarting the coroutine failed too)",
            },
        }
    }
}

impl Node for Coroutine {
    fn kind(&self) -> &'static str {
        "coroutine"
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
    fn children(&self) -> &[NodeRef] {
        &self.children
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, _ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        Python::attach(|py| {
            let e = PyEvent::wrap(py, event).map_err(|err| node_error(py, err))?;
            let target = self
                .target
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone_ref(py);
            let target = target.bind(py);
            match target.call_method1("send", (e,)) {
                Ok(_) => Ok(()),
                Err(err) => {
                    let mut error = if err.is_instance_of::<PyStopIteration>(py) {
                        NodeError(format!(
                            "coroutine {} has finished (it returned instead of waiting for the next event)",
                            self.name
                        ))
                    } else {
                        node_error(py, err)
                    };
                    error.0.push_str(self.recover(py, target));
                    Err(error)
                }
            }
        })
    }
}
