//! Python values to engine [`Value`]s and back, and user callables as
//! engine [`Function`]s: the one place stream arguments cross the border.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use super::event::PyEvent;
use super::nodes::to_node;
use super::stream_object::PyStream;
use super::user_code::{callable_name, node_error};
use dmon_server::streams::folds::{self, NativeFold};
use dmon_server::streams::{Function, NodeError, Value};

/// The attribute that marks `dmon.folds` functions, naming their fold.
pub const FOLD_MARK: &str = "_dmon_fold";

/// Converts an argument or a function's result.
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::None);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(obj.extract::<f64>()?),
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?.to_owned()));
    }
    if let Ok(e) = obj.cast::<PyEvent>() {
        return Ok(Value::Event(Arc::clone(&e.get().inner)));
    }
    if let Ok(s) = obj.cast::<PyStream>() {
        return Ok(Value::Stream(Arc::clone(&s.get().node)));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return d
            .iter()
            .map(|(k, v)| Ok((k.str()?.to_string(), to_value(&v)?)))
            .collect::<PyResult<_>>()
            .map(Value::Map);
    }
    // A set is a list to stream functions (`match`'s any-of).
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
    {
        return obj
            .try_iter()?
            .map(|item| to_value(&item?))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Some(mark) = obj.getattr_opt(FOLD_MARK)? {
        let name: String = mark.extract()?;
        if let Some(fold) = folds::find(&name) {
            return Ok(Value::Function(Arc::new(NativeFold(fold))));
        }
    }
    if obj.is_callable() {
        return Ok(Value::Function(Arc::new(PyFunction::new(obj))));
    }
    if obj.getattr_opt("send")?.is_some_and(|s| s.is_callable()) {
        return Ok(Value::Stream(to_node(obj)?));
    }
    Err(PyTypeError::new_err(format!(
        "dmon cannot use {} ({}) here",
        obj.repr()?,
        obj.get_type().name()?
    )))
}

/// A value as Python sees it.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    match v {
        Value::None => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Int(i) => i.into_bound_py_any(py),
        Value::Float(f) => f.into_bound_py_any(py),
        Value::Str(s) => s.into_bound_py_any(py),
        Value::List(items) => {
            let items = items
                .iter()
                .map(|i| to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        }
        Value::Map(pairs) => {
            let d = PyDict::new(py);
            for (k, v) in pairs {
                d.set_item(k, to_py(py, v)?)?;
            }
            Ok(d.into_any())
        }
        Value::Event(e) => Ok(PyEvent::wrap(py, e)?.into_bound(py).into_any()),
        Value::Stream(node) => Ok(Bound::new(
            py,
            PyStream {
                node: Arc::clone(node),
            },
        )?
        .into_any()),
        Value::Function(f) => match f.as_any().downcast_ref::<PyFunction>() {
            Some(own) => Ok(own.func.bind(py).clone()),
            None => f.describe().into_bound_py_any(py),
        },
    }
}

/// A user callable (a lambda, a function) used by a native node.
pub struct PyFunction {
    func: Py<PyAny>,
    name: String,
}

impl PyFunction {
    pub fn new(func: &Bound<'_, PyAny>) -> Self {
        PyFunction {
            func: func.clone().unbind(),
            name: callable_name(func),
        }
    }

    fn call_py<'py>(&self, py: Python<'py>, args: &[Value]) -> PyResult<Bound<'py, PyAny>> {
        let args = args
            .iter()
            .map(|a| to_py(py, a))
            .collect::<PyResult<Vec<_>>>()?;
        self.func.bind(py).call1(PyTuple::new(py, args)?)
    }
}

impl Function for PyFunction {
    fn call(&self, args: &[Value]) -> Result<Value, NodeError> {
        Python::attach(|py| {
            self.call_py(py, args)
                .and_then(|r| to_value(&r))
                .map_err(|err| node_error(py, err))
        })
    }

    /// Python's truthiness of the result, whatever its type.
    fn test(&self, args: &[Value]) -> Result<bool, NodeError> {
        Python::attach(|py| {
            self.call_py(py, args)
                .and_then(|r| r.is_truthy())
                .map_err(|err| node_error(py, err))
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
