//! `dmon.streams.Event`: the Python view of an [`Event`].
//!
//! Immutable like the seed's namedtuple: `e.state`, `e['state']`,
//! `e.get('metric', 0)`, `e.replace(metric=…)` (or `_replace`), `e.to_dict()`.
//! Unknown names read attributes; unknown keyword arguments set them.

use std::sync::Arc;

use smol_str::SmolStr;

use pyo3::exceptions::{PyAttributeError, PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use pyo3::IntoPyObjectExt;

use dmon_server::codec::json;
use dmon_server::event::{Event, Number, FIELDS};

#[pyclass(name = "Event", module = "dmon.streams", frozen)]
pub struct PyEvent {
    pub inner: Arc<Event>,
}

impl PyEvent {
    pub fn wrap(py: Python<'_>, event: &Arc<Event>) -> PyResult<Py<PyEvent>> {
        Py::new(
            py,
            PyEvent {
                inner: Arc::clone(event),
            },
        )
    }
}

fn number<'py>(py: Python<'py>, n: Number) -> PyResult<Bound<'py, PyAny>> {
    match n {
        Number::Int(i) => i.into_bound_py_any(py),
        Number::Float(f) => f.into_bound_py_any(py),
    }
}

fn opt_str<'py>(py: Python<'py>, s: &Option<SmolStr>) -> PyResult<Bound<'py, PyAny>> {
    s.as_deref().into_bound_py_any(py)
}

/// The value of field `name` (None when absent), or `Ok(None)` when `name`
/// is not a field.
fn field<'py>(py: Python<'py>, e: &Event, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let v = match name {
        "host" => opt_str(py, &e.host)?,
        "service" => opt_str(py, &e.service)?,
        "state" => opt_str(py, &e.state)?,
        "description" => opt_str(py, &e.description)?,
        "time" => e
            .time
            .map(|n| number(py, n))
            .transpose()?
            .into_bound_py_any(py)?,
        "ttl" => e.ttl.into_bound_py_any(py)?,
        "metric" => e
            .metric
            .map(|n| number(py, n))
            .transpose()?
            .into_bound_py_any(py)?,
        "tags" => PyList::new(py, e.tags.iter().map(|t| &**t))?.into_any(),
        "attributes" => {
            let d = PyDict::new(py);
            for (k, v) in &e.attributes {
                d.set_item(k, v)?;
            }
            d.into_any()
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn to_str(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<SmolStr>> {
    if v.is_none() {
        return Ok(None);
    }
    let s = v.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "event field `{key}` must be a str, not {}",
            type_name(v)
        ))
    })?;
    Ok(Some(SmolStr::new(s.to_str()?)))
}

fn to_number(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<Number>> {
    if v.is_none() {
        return Ok(None);
    }
    if v.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "event field `{key}` must be a number, not bool"
        )));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(Some(match v.extract::<i64>() {
            Ok(i) => Number::Int(i),
            Err(_) => Number::Float(v.extract::<f64>()?),
        }));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Some(Number::Float(v.extract()?)));
    }
    // Decimal, numpy scalars and friends: anything float() accepts.
    v.call_method0("__float__")
        .and_then(|f| f.extract::<f64>())
        .map(|f| Some(Number::Float(f)))
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "event field `{key}` must be a number, not {}",
                type_name(v)
            ))
        })
}

/// Sets one field (or attribute) of `e` from a Python value; None clears.
pub fn set_field(e: &mut Event, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    match key {
        "host" => e.host = to_str(key, v)?,
        "service" => e.service = to_str(key, v)?,
        "state" => e.state = to_str(key, v)?,
        "description" => e.description = to_str(key, v)?,
        "time" => e.time = to_number(key, v)?,
        "ttl" => e.ttl = to_number(key, v)?.map(Number::as_f64),
        "metric" => e.metric = to_number(key, v)?,
        "tags" => {
            let mut tags = Vec::new();
            if !v.is_none() {
                if v.is_instance_of::<PyString>() {
                    return Err(PyTypeError::new_err(
                        "event field `tags` must be a list of str, not str",
                    ));
                }
                for tag in v.try_iter()? {
                    tags.extend(to_str("tags", &tag?)?);
                }
            }
            e.tags = tags.into();
        }
        "attributes" => {
            let mut pairs: Vec<(SmolStr, SmolStr)> = Vec::new();
            if !v.is_none() {
                let d = v.cast::<PyDict>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "event field `attributes` must be a dict, not {}",
                        type_name(v)
                    ))
                })?;
                for (k, val) in d.iter() {
                    // Two keys can have the same str() (1 and "1"): the
                    // later one wins, and None removes the earlier.
                    let k = SmolStr::new(k.str()?.to_string());
                    if val.is_none() {
                        pairs.retain(|(key, _)| *key != k);
                    } else {
                        pairs.push((k, SmolStr::new(val.str()?.to_string())));
                    }
                }
            }
            // Built at once: inserting one by one would copy them each time.
            e.attributes = pairs.into();
        }
        other => set_attribute(e, other, v)?,
    }
    Ok(())
}

fn set_attribute(e: &mut Event, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    if v.is_none() {
        e.attributes.remove(key);
    } else {
        e.attributes.insert(key, v.str()?.to_string());
    }
    Ok(())
}

/// An event from what Python code hands us: an `Event`, a dict of fields, or
/// a JSON object string.
pub fn event_from_py(v: &Bound<'_, PyAny>) -> PyResult<Arc<Event>> {
    if let Ok(e) = v.cast::<PyEvent>() {
        return Ok(Arc::clone(&e.get().inner));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut e = Event::default();
        for (k, val) in d.iter() {
            set_field(&mut e, &k.str()?.to_string(), &val)?;
        }
        return Ok(Arc::new(e));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return json::decode_event(s.to_str()?)
            .map(Arc::new)
            .map_err(|e| PyValueError::new_err(format!("invalid JSON event: {e}")));
    }
    Err(PyTypeError::new_err(format!(
        "expected an Event, a dict or a JSON string, not {}",
        type_name(v)
    )))
}

#[pymethods]
impl PyEvent {
    /// The event's fields, as a namedtuple's `_fields`.
    #[classattr]
    fn _fields(py: Python<'_>) -> PyResult<Py<pyo3::types::PyTuple>> {
        Ok(pyo3::types::PyTuple::new(py, FIELDS)?.unbind())
    }

    /// `Event(host="web1", service="cpu", metric=2.5)`, or `Event({"host": …})`.
    #[new]
    #[pyo3(signature = (fields=None, **kwargs))]
    fn new(
        fields: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut e = match fields {
            Some(f) => Event::clone(&*event_from_py(f)?),
            None => Event::default(),
        };
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                set_field(&mut e, &k.str()?.to_string(), &v)?;
            }
        }
        Ok(PyEvent { inner: Arc::new(e) })
    }

    #[getter]
    fn host<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        opt_str(py, &self.inner.host)
    }
    #[getter]
    fn service<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        opt_str(py, &self.inner.service)
    }
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        opt_str(py, &self.inner.state)
    }
    #[getter]
    fn description<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        opt_str(py, &self.inner.description)
    }
    #[getter]
    fn time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(field(py, &self.inner, "time")?.expect("time is a field"))
    }
    #[getter]
    fn ttl(&self) -> Option<f64> {
        self.inner.ttl
    }
    #[getter]
    fn metric<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(field(py, &self.inner, "metric")?.expect("metric is a field"))
    }
    #[getter]
    fn tags<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(field(py, &self.inner, "tags")?.expect("tags is a field"))
    }
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(field(py, &self.inner, "attributes")?.expect("attributes is a field"))
    }

    /// Attributes read as names: `e.region` for attribute "region".
    fn __getattr__(&self, name: &str) -> PyResult<String> {
        self.inner
            .attributes
            .get(name)
            .map(str::to_owned)
            .ok_or_else(|| {
                PyAttributeError::new_err(format!("event has no field or attribute {name:?}"))
            })
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        if let Some(v) = field(py, &self.inner, key)? {
            return Ok(v);
        }
        match self.inner.attributes.get(key) {
            Some(v) => v.into_bound_py_any(py),
            None => Err(PyKeyError::new_err(key.to_owned())),
        }
    }

    fn __contains__(&self, key: &str) -> bool {
        FIELDS.contains(&key) || self.inner.attributes.contains_key(key)
    }

    /// `e.get("metric", 0)`: the value, or `default` when absent or None.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let found = match field(py, &self.inner, key)? {
            Some(v) if !v.is_none() => Some(v),
            Some(_) => None,
            None => self
                .inner
                .attributes
                .get(key)
                .map(|v| v.into_bound_py_any(py))
                .transpose()?,
        };
        match found.or(default) {
            Some(v) => Ok(v),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// A copy with some fields changed: `e.replace(metric=0, state="ok")`.
    #[pyo3(signature = (**changes))]
    fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<PyEvent> {
        let mut e = Event::clone(&self.inner);
        if let Some(changes) = changes {
            for (k, v) in changes.iter() {
                set_field(&mut e, &k.str()?.to_string(), &v)?;
            }
        }
        Ok(PyEvent { inner: Arc::new(e) })
    }

    /// The namedtuple spelling of `replace`, for streams written that way.
    #[pyo3(signature = (**changes))]
    fn _replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<PyEvent> {
        self.replace(changes)
    }

    /// The present fields as a dict (attributes under "attributes").
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for name in FIELDS {
            let v = field(py, &self.inner, name)?.expect("a field");
            let empty = match name {
                "tags" => self.inner.tags.is_empty(),
                "attributes" => self.inner.attributes.is_empty(),
                _ => v.is_none(),
            };
            if !empty {
                d.set_item(name, v)?;
            }
        }
        Ok(d)
    }

    /// The event as a JSON object, as the printer shows it.
    fn to_json(&self) -> String {
        json::encode(&self.inner)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyEvent>()
            .is_ok_and(|o| *o.get().inner == *self.inner)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for (k, v) in self.to_dict(py)?.iter() {
            parts.push(format!("{}={}", k.str()?, v.repr()?));
        }
        Ok(format!("Event({})", parts.join(", ")))
    }
}
