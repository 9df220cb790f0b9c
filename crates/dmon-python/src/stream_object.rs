//! `dmon.streams.Stream`: a stream node as Python holds it, to send events
//! into and to look at (its kind, children and counters).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::coroutine_output::count_sent;
use super::event::event_from_py;
use super::server_binding::push_from_python;
use dmon_server::streams::NodeRef;

/// A stream node, as Python holds it. `node.send(event)` pushes one event in.
/// Subclasses (`Stream(node)` makes another handle on the same node) let
/// Python code show a node its own way: the shell's `index()` shows the
/// index as a table.
#[pyclass(name = "Stream", module = "dmon.streams", frozen, subclass)]
pub struct PyStream {
    pub node: NodeRef,
}

impl PyStream {
    pub fn new(node: NodeRef) -> Self {
        PyStream { node }
    }
}

#[pymethods]
impl PyStream {
    /// Another handle on `node`'s stream node.
    #[new]
    fn handle_on(node: &Bound<'_, PyStream>) -> Self {
        PyStream::new(Arc::clone(&node.get().node))
    }

    /// Pushes one event into this node (and on down its tree). Inside a
    /// coroutine, what it sends counts as the coroutine's output.
    fn send(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let event = event_from_py(event)?;
        count_sent(&event);
        push_from_python(py, &self.node, &event)
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.node.kind()
    }

    #[getter]
    fn children(&self) -> Vec<PyStream> {
        self.node
            .children()
            .iter()
            .map(|c| PyStream::new(Arc::clone(c)))
            .collect()
    }

    /// This node's counters: `{"in": …, "out": …, "errors": …}`.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.node.stats();
        let d = PyDict::new(py);
        d.set_item("in", s.events_in.load(Ordering::Relaxed))?;
        d.set_item("out", s.events_out.load(Ordering::Relaxed))?;
        d.set_item("errors", s.errors.load(Ordering::Relaxed))?;
        d.set_item("kept_state", s.kept_state.load(Ordering::Relaxed))?;
        if let Some(detail) = self.node.detail() {
            d.set_item("detail", detail)?;
        }
        Ok(d)
    }

    /// The node tree, `average(2, printer())` style.
    fn __repr__(&self) -> String {
        describe_tree(&self.node)
    }
}

/// `average(2, printer())` style: the node and its children, nested.
fn describe_tree(node: &NodeRef) -> String {
    let own = node.describe();
    let children: Vec<String> = node.children().iter().map(describe_tree).collect();
    if children.is_empty() {
        return own;
    }
    match own.strip_suffix(')') {
        Some(open) if !open.ends_with('(') => format!("{open}, {})", children.join(", ")),
        Some(open) => format!("{open}{})", children.join(", ")),
        None => format!("{own}({})", children.join(", ")),
    }
}
