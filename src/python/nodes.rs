//! Stream nodes backed by user Python: a predicate for `when`, and a
//! generator coroutine. Both plug into the engine through the same traits as
//! native nodes; Python runs only inside them.

use std::sync::Arc;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyTracebackMethods;

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
    let trace = err
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    NodeError(format!("{kind}: {}\n{}", err.value(py), trace.trim_end()))
}

/// A short readable name for a Python callable: its `__qualname__` or repr.
pub fn callable_name(obj: &Bound<'_, PyAny>) -> String {
    obj.getattr("__qualname__")
        .and_then(|n| n.extract::<String>())
        .or_else(|_| obj.repr().map(|r| r.to_string()))
        .unwrap_or_else(|_| "?".into())
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

/// A primed generator (or any object with `.send`) receiving each event.
/// `children` are the stream nodes it was built with, shown in the stream
/// tree; the coroutine itself decides where events go.
pub struct Coroutine {
    target: Py<PyAny>,
    name: String,
    children: Vec<NodeRef>,
    stats: NodeStats,
}

impl Coroutine {
    pub fn new(target: &Bound<'_, PyAny>, name: String, children: Vec<NodeRef>) -> Self {
        Coroutine {
            target: target.clone().unbind(),
            name,
            children,
            stats: NodeStats::default(),
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
            match self.target.bind(py).call_method1("send", (e,)) {
                Ok(_) => Ok(()),
                Err(err) if err.is_instance_of::<PyStopIteration>(py) => Err(NodeError(format!(
                    "coroutine {} has finished (it returned instead of waiting for the next event)",
                    self.name
                ))),
                Err(err) => Err(node_error(py, err)),
            }
        })
    }
}
