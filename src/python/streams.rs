//! `dmon.streams`: the Python names for the stream nodes. Each function only
//! builds the Rust node; nothing here runs per event.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::event::{event_from_py, PyEvent};
use super::nodes::{callable_name, Coroutine, PyPredicate, Recipe};
use crate::query::Query;
use crate::streams::aggregate::Average;
use crate::streams::filter::When;
use crate::streams::index::IndexNode;
use crate::streams::output::{Email, Printer};
use crate::streams::{push, NodeRef};

/// A stream node, as Python holds it. `node.send(event)` pushes one event in.
#[pyclass(name = "Stream", module = "dmon.streams", frozen)]
pub struct PyStream {
    pub node: NodeRef,
}

#[pymethods]
impl PyStream {
    /// Pushes one event into this node (and on down its tree).
    fn send(&self, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let event = event_from_py(event)?;
        let ctx = super::context()?;
        push(&*self.node, ctx, &event);
        Ok(())
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
            .map(|c| PyStream {
                node: Arc::clone(c),
            })
            .collect()
    }

    /// This node's counters: `{"in": …, "out": …, "errors": …}`.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.node.stats();
        let d = PyDict::new(py);
        d.set_item("in", s.events_in.load(Ordering::Relaxed))?;
        d.set_item("out", s.events_out.load(Ordering::Relaxed))?;
        d.set_item("errors", s.errors.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// The node tree; an index node in the shell shows the index itself
    /// (the shell sets `dmon.streams._index_repr`).
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        if self.node.kind() == "index" {
            if let Some(hook) = py.import("dmon.streams")?.getattr_opt("_index_repr")? {
                return hook.call0()?.extract();
            }
        }
        Ok(describe_tree(&self.node))
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

/// A stream child from Python: a stream node, or anything with `.send`
/// (a primed generator), which becomes a coroutine node.
pub fn to_node(obj: &Bound<'_, PyAny>) -> PyResult<NodeRef> {
    if let Ok(s) = obj.cast::<PyStream>() {
        return Ok(Arc::clone(&s.get().node));
    }
    if obj.getattr_opt("send")?.is_some_and(|s| s.is_callable()) {
        return Ok(Arc::new(Coroutine::new(
            obj,
            callable_name(obj),
            Vec::new(),
            None,
        )));
    }
    Err(PyTypeError::new_err(format!(
        "a stream child must be a stream (like printer()) or a primed generator, not {}",
        obj.repr()?
    )))
}

fn to_nodes(children: &Bound<'_, PyTuple>) -> PyResult<Vec<NodeRef>> {
    children.iter().map(|c| to_node(&c)).collect()
}

fn wrap(node: NodeRef) -> PyStream {
    PyStream { node }
}

/// Forward the events for which pred(event) is true.
///
/// when(pred, *children), e.g. when(lambda e: e.state == "warning", email("ops@example.com"))
#[pyfunction]
#[pyo3(signature = (pred, *children))]
fn when(pred: &Bound<'_, PyAny>, children: &Bound<'_, PyTuple>) -> PyResult<PyStream> {
    if !pred.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "when() needs a callable predicate first, like `lambda e: e.metric > 1`, not {}",
            pred.repr()?
        )));
    }
    Ok(wrap(Arc::new(When::new(
        Box::new(PyPredicate::new(pred)),
        to_nodes(children)?,
    ))))
}

/// Forward the events matching a query in Riemann's language.
///
/// where(query, *children), e.g. where('service =~ "cpu%" and metric > 0.9', printer("hot: "))
/// The query is compiled once; no Python runs per event.
#[pyfunction(name = "where")]
#[pyo3(signature = (query, *children))]
fn where_query(query: &str, children: &Bound<'_, PyTuple>) -> PyResult<PyStream> {
    let query =
        Query::parse(query).map_err(|e| PyValueError::new_err(format!("where({query:?}): {e}")))?;
    Ok(wrap(Arc::new(When::named(
        "where",
        Box::new(query),
        to_nodes(children)?,
    ))))
}

/// Forward each event with metric = the running mean of all metrics, rounded.
///
/// average(round_places, *children), e.g. average(2, printer("avg: "))
#[pyfunction]
#[pyo3(signature = (round_places, *children))]
fn average(round_places: i32, children: &Bound<'_, PyTuple>) -> PyResult<PyStream> {
    Ok(wrap(Arc::new(Average::new(
        round_places,
        to_nodes(children)?,
    ))))
}

/// Print prefix and the event as one line of JSON.
///
/// printer(prefix=""), e.g. printer("high average: ")
#[pyfunction]
#[pyo3(signature = (prefix=String::new()))]
fn printer(prefix: String) -> PyStream {
    wrap(Arc::new(Printer::new(prefix)))
}

/// Keep the latest event per (host, service); re-inject expired ones.
///
/// Expired events come back into every root with state "expired".
/// index(), e.g. index_stream = index()
#[pyfunction]
fn index() -> PyStream {
    wrap(Arc::new(IndexNode::new()))
}

/// Mail each event through the SMTP server given by --smtp.
///
/// email(*to, subject=None, sender=None), e.g. email("ops@example.com")
#[pyfunction]
#[pyo3(signature = (*to, subject=None, sender=None))]
fn email(to: Vec<String>, subject: Option<String>, sender: Option<String>) -> PyResult<PyStream> {
    Email::new(&to, subject, sender.as_deref())
        .map(|n| wrap(Arc::new(n)))
        .map_err(PyValueError::new_err)
}

/// Pass an event on to each target (from inside a coroutine).
///
/// send(event, *targets), e.g. send(e.replace(metric=0), *targets)
#[pyfunction]
#[pyo3(signature = (event, *targets))]
fn send(event: &Bound<'_, PyAny>, targets: &Bound<'_, PyTuple>) -> PyResult<()> {
    for target in targets.iter() {
        target.call_method1("send", (event,))?;
    }
    Ok(())
}

/// The result of `@stream`: calling it builds a primed coroutine node.
#[pyclass(name = "StreamFunction", module = "dmon.streams", frozen)]
pub struct StreamFunction {
    func: Py<PyAny>,
}

#[pymethods]
impl StreamFunction {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyStream> {
        let recipe = Recipe {
            func: self.func.clone_ref(py),
            args: args.clone().unbind(),
            kwargs: kwargs.map(|k| k.clone().unbind()),
        };
        let generator = recipe.start(py)?;
        let children = args
            .iter()
            .filter_map(|a| a.cast::<PyStream>().ok().map(|s| Arc::clone(&s.get().node)))
            .collect();
        let name = callable_name(self.func.bind(py));
        Ok(wrap(Arc::new(Coroutine::new(
            &generator,
            name,
            children,
            Some(recipe),
        ))))
    }

    #[getter]
    fn __name__(&self, py: Python<'_>) -> PyResult<String> {
        self.func.bind(py).getattr("__name__")?.extract()
    }

    #[getter]
    fn __doc__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.func.bind(py).getattr("__doc__")?.unbind())
    }
}

/// Decorator: make a generator function a stream constructor.
///
/// Calling the result primes the generator. Example:
///     @stream
///     def doubler(*targets):
///         while True:
///             e = yield
///             send(e.replace(metric=e.metric * 2), *targets)
#[pyfunction]
fn stream(func: &Bound<'_, PyAny>) -> PyResult<StreamFunction> {
    if !func.is_callable() {
        return Err(PyTypeError::new_err(
            "@stream decorates a generator function",
        ));
    }
    Ok(StreamFunction {
        func: func.clone().unbind(),
    })
}

pub const EXPORTS: [&str; 11] = [
    "Event",
    "Stream",
    "when",
    "where",
    "average",
    "printer",
    "index",
    "email",
    "send",
    "stream",
    "StreamFunction",
];

/// Fills the `dmon.streams` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEvent>()?;
    m.add_class::<PyStream>()?;
    m.add_class::<StreamFunction>()?;
    m.add_function(wrap_pyfunction!(when, m)?)?;
    m.add_function(wrap_pyfunction!(where_query, m)?)?;
    m.add_function(wrap_pyfunction!(average, m)?)?;
    m.add_function(wrap_pyfunction!(printer, m)?)?;
    m.add_function(wrap_pyfunction!(index, m)?)?;
    m.add_function(wrap_pyfunction!(email, m)?)?;
    m.add_function(wrap_pyfunction!(send, m)?)?;
    m.add_function(wrap_pyfunction!(stream, m)?)?;
    m.add("__all__", EXPORTS.to_vec())?;
    m.add(
        "__doc__",
        "dmon's stream functions: compose them into module-level names containing `stream`.",
    )?;
    Ok(())
}

/// The error for using a stream outside a running server.
pub fn no_server() -> PyErr {
    PyRuntimeError::new_err("no dmon server is running in this process")
}
