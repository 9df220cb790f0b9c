//! `dmon.streams`: the Python names for the stream nodes. Each function only
//! builds the Rust node; nothing here runs per event.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::coroutine_output::count_sent;
use super::event::PyEvent;
use super::nodes::{is_stream, to_node, Coroutine, Recipe};
use super::stream_object::PyStream;
use super::user_code::callable_name;
use super::value::{to_py, to_value};
use dmon_server::catalog;
use dmon_server::streams::folds::{self, NativeFold};
use dmon_server::streams::Function;

/// Builds the registered stream function `name` from Python arguments: the
/// leading positional arguments and the keywords become values, the
/// trailing streams its children. Every `dmon.streams` function calls this.
#[pyfunction]
#[pyo3(signature = (name, args, kwargs=None))]
fn build(
    name: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyStream> {
    let entry = catalog::find(name)
        .ok_or_else(|| PyValueError::new_err(format!("no stream function {name:?}")))?;
    let mut positional = Vec::new();
    let mut children = Vec::new();
    for arg in args.iter() {
        if is_stream(&arg)? {
            children.push(to_node(&arg)?);
        } else if !children.is_empty() {
            return Err(PyTypeError::new_err(format!(
                "{}: {} comes after a child stream; child streams come last, and must be streams (like printer())",
                entry.signature(),
                arg.repr()?
            )));
        } else {
            positional.push(to_value(&arg)?);
        }
    }
    let named = match kwargs {
        None => Vec::new(),
        Some(k) => k
            .iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, to_value(&v)?)))
            .collect::<PyResult<_>>()?,
    };
    entry
        .build(positional, named, children)
        .map(PyStream::new)
        .map_err(|e| {
            if e.wrong_type {
                PyTypeError::new_err(e.message)
            } else {
                PyValueError::new_err(e.message)
            }
        })
}

/// Runs the fold `name` over a list of events (`dmon.folds.mean(events)`).
#[pyfunction]
fn fold<'py>(
    py: Python<'py>,
    name: &str,
    events: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let fold =
        folds::find(name).ok_or_else(|| PyValueError::new_err(format!("no fold {name:?}")))?;
    let events = to_value(events)?;
    // The time of a run (`dmon.testing.run`'s virtual clock), else the server's.
    let now = super::server_binding::now(py);
    let out = NativeFold(fold)
        .call_at(&[events], now)
        .map_err(|e| PyTypeError::new_err(e.0))?;
    to_py(py, &out)
}

/// Pass an event on to each target (from inside a coroutine).
///
/// send(event, *targets), e.g. send(e.replace(metric=0), *targets)
#[pyfunction]
#[pyo3(signature = (event, *targets))]
fn send(event: &Bound<'_, PyAny>, targets: &Bound<'_, PyTuple>) -> PyResult<()> {
    for target in targets.iter() {
        // A stream counts what it is sent itself (`Stream.send`); a plain
        // generator target is counted here.
        if target.cast::<PyStream>().is_err() {
            if let Ok(e) = event.cast::<PyEvent>() {
                count_sent(&e.get().inner);
            }
        }
        target.call_method1("send", (event,))?;
    }
    Ok(())
}

/// The result of `@coroutine`: calling it builds a primed coroutine node.
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
        Ok(PyStream::new(Arc::new(Coroutine::new(
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
/// Calling the result primes the generator. Also spelt `@stream`, which a
/// module's root named `stream` shadows. Example:
///     @coroutine
///     def doubler(*targets):
///         while True:
///             e = yield
///             send(e.replace(metric=e.metric * 2), *targets)
#[pyfunction]
fn coroutine(func: &Bound<'_, PyAny>) -> PyResult<StreamFunction> {
    if !func.is_callable() {
        return Err(PyTypeError::new_err(
            "@coroutine decorates a generator function",
        ));
    }
    Ok(StreamFunction {
        func: func.clone().unbind(),
    })
}

/// Makes the Python function for each registered stream function: it has
/// the registered name, signature and docstring, and calls [`build`].
const CONSTRUCTORS: &str = r#"
import inspect

def make(name, params, doc, build):
    def constructor(*args, **kwargs):
        return build(name, args, kwargs)
    constructor.__name__ = constructor.__qualname__ = name
    constructor.__module__ = "dmon.streams"
    constructor.__doc__ = doc
    constructor.__signature__ = inspect.signature(eval(f"lambda {params}: None"))
    return constructor

def make_fold(name, doc, run):
    def fold(events):
        return run(name, events)
    fold.__name__ = fold.__qualname__ = name
    fold.__module__ = "dmon.folds"
    fold.__doc__ = doc
    fold._dmon_fold = name
    return fold
"#;

/// Names `dmon.streams` exports besides the registered stream functions.
pub const HELPERS: [&str; 7] = [
    "Event",
    "Stream",
    "send",
    "coroutine",
    // The decorator's first name. The seed's own example binds a root
    // `stream = ...`, which shadows it: hence `coroutine`.
    "stream",
    "StreamFunction",
    "folds",
];

/// Fills the `dmon.streams` module, and `dmon.folds` beside it.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyEvent>()?;
    m.add_class::<PyStream>()?;
    m.add_class::<StreamFunction>()?;
    m.add_function(wrap_pyfunction!(send, m)?)?;
    m.add_function(wrap_pyfunction!(coroutine, m)?)?;
    m.add("stream", m.getattr("coroutine")?)?;
    let helpers = PyModule::from_code(
        py,
        &std::ffi::CString::new(CONSTRUCTORS).expect("no NUL"),
        c"<dmon constructors>",
        c"dmon._constructors",
    )?;
    let build = wrap_pyfunction!(build, m)?;
    let mut exports: Vec<&str> = HELPERS.to_vec();
    for entry in catalog::entries() {
        let f = helpers.call_method1("make", (entry.name, entry.params, entry.doc(), &build))?;
        m.add(entry.name, f)?;
        exports.push(entry.name);
    }
    // For the shell's help(): each family's names, in catalog order.
    let catalog: Vec<(&str, Vec<&str>)> = catalog::families()
        .map(|f| (f.title, f.entries.iter().map(|e| e.name).collect()))
        .collect();
    m.setattr("_catalog", catalog)?;
    m.setattr(
        "__doc__",
        "dmon's stream functions: compose them into module-level names containing `stream`.",
    )?;
    let folds_module = PyModule::new(py, "folds")?;
    let run = wrap_pyfunction!(fold, m)?;
    let mut names = Vec::new();
    for f in folds::FOLDS {
        let doc = format!("{}(events)\n\n{}", f.name, f.summary);
        folds_module.add(
            f.name,
            helpers.call_method1("make_fold", (f.name, doc, &run))?,
        )?;
        names.push(f.name);
    }
    folds_module.setattr("__all__", names)?;
    folds_module.setattr(
        "__doc__",
        "Folds: functions from a list of events to one event, for smap() after a window.",
    )?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("dmon.folds", &folds_module)?;
    m.setattr("folds", folds_module)?;
    // Last: pyo3's `add` appends to `__all__`, which lists the exports only.
    m.setattr("__all__", exports)?;
    Ok(())
}
