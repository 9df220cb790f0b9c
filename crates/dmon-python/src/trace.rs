//! The shell's `trace(event)` result: a [`dmon_server::trace::Trace`] for
//! scripts and tests, printed as `dmon trace` prints it.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

use super::event::PyEvent;
use dmon_server::trace::{Step, Trace};

/// An event's path through the streams. `print(t)` shows it; `t.steps`,
/// `t.stopped_at`, `t.outputs` and `t.step(path)` hold it.
#[pyclass(name = "Trace", module = "dmon._shell", frozen)]
pub struct PyTrace(pub Trace);

/// One node the event reached: `path`, `kind`, `node` (as built),
/// `verdict` ("true", "false", "raised", "passed", "emitted", "held",
/// "throttled", "forked", "stopped", "output"), `emitted`, `error`, `detail`.
#[pyclass(name = "TraceStep", module = "dmon._shell", frozen)]
pub struct PyStep(Step);

/// One output as scripts see it: (node, kind, [events]).
type PyOutput = (String, &'static str, Vec<Py<PyEvent>>);

#[pymethods]
impl PyTrace {
    /// The event as traced (stamped with the clock's time if it had none).
    #[getter]
    fn event(&self, py: Python<'_>) -> PyResult<Py<PyEvent>> {
        PyEvent::wrap(py, &self.0.event)
    }

    /// The clock's time when it ran.
    #[getter]
    fn at(&self) -> f64 {
        self.0.at
    }

    #[getter]
    fn steps(&self) -> Vec<PyStep> {
        self.0.steps.iter().cloned().map(PyStep).collect()
    }

    /// The paths of the nodes that passed nothing on.
    #[getter]
    fn stopped_at(&self) -> Vec<String> {
        self.0.stopped_at.clone()
    }

    /// What reached the outputs: (node, kind, [events]), in order.
    #[getter]
    fn outputs(&self, py: Python<'_>) -> PyResult<Vec<PyOutput>> {
        self.0
            .outputs
            .iter()
            .map(|o| {
                let events = o
                    .events
                    .iter()
                    .map(|e| PyEvent::wrap(py, e))
                    .collect::<PyResult<_>>()?;
                Ok((o.node.clone(), o.kind, events))
            })
            .collect()
    }

    #[getter]
    fn notes(&self) -> Vec<String> {
        self.0.notes.clone()
    }

    /// The step at `path` (as `streams()` names nodes); KeyError if the
    /// event did not reach it.
    fn step(&self, path: &str) -> PyResult<PyStep> {
        match self.0.step(path) {
            Some(step) => Ok(PyStep(step.clone())),
            None => {
                let reached: Vec<&str> = self.0.steps.iter().map(|s| s.path.as_str()).collect();
                Err(PyKeyError::new_err(format!(
                    "the event did not reach {path}; it reached {}",
                    reached.join(", ")
                )))
            }
        }
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        let stopped = if self.0.stopped_at.is_empty() {
            "stopped nowhere".to_owned()
        } else {
            format!("stopped at {}", self.0.stopped_at.join(", "))
        };
        format!(
            "<Trace: {} nodes reached, {stopped}, {} outputs>",
            self.0.steps.len(),
            self.0.outputs.len()
        )
    }
}

#[pymethods]
impl PyStep {
    #[getter]
    fn path(&self) -> &str {
        &self.0.path
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind
    }
    #[getter]
    fn node(&self) -> &str {
        &self.0.node
    }
    #[getter]
    fn verdict(&self) -> &'static str {
        self.0.verdict.as_str()
    }
    #[getter]
    fn emitted(&self) -> u64 {
        self.0.emitted
    }
    #[getter]
    fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    #[getter]
    fn detail(&self) -> &str {
        &self.0.detail
    }
    fn __repr__(&self) -> String {
        format!(
            "<TraceStep {} {}: {}>",
            self.0.path, self.0.node, self.0.detail
        )
    }
}
