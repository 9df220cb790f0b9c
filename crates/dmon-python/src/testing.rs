//! `dmon.testing`: run streams over events with time under control, in
//! plain Python tests (pytest or `dmon test`).
//!
//! ```python
//! from dmon.testing import run
//! out = run(average_stream, [{"host": "a", "metric": 9, "time": 1}], until=60)
//! assert [e.host for e in out.printed_events] == ["a"]
//! ```
//!
//! A thin layer over [`dmon_server::rehearsal::Rehearsal`]: fresh copies of the
//! given trees, a virtual clock following event times, outputs captured.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};

use super::event::{event_from_py, PyEvent};

/// `dmon test`'s pytest plugin (`dmon._pytest_plugin`): usage, header,
/// `--junit`, `--no-capture`, Ctrl-C.
pub const PYTEST_PLUGIN: &str = include_str!("pytest_plugin.py");
use super::loader::roots_of;
use super::nodes::to_node;
use super::stream_object::PyStream;
use dmon_server::console::LineSink;
use dmon_server::event::Event;
use dmon_server::rehearsal::Rehearsal;
use dmon_server::roots::Root;
use dmon_server::streams::capture::{Output, Outputs};
use dmon_server::streams::{lock, Node, NodeRef, TAP_DROPS};

/// Events a watched node may emit between two fed events before the
/// watch misses some (reported as an error, never silently).
const WATCH_CAPACITY: usize = 65_536;

/// The `dmon.testing` module.
pub fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, "dmon.testing")?;
    m.add_function(wrap_pyfunction!(run, &m)?)?;
    m.add_function(wrap_pyfunction!(at, &m)?)?;
    m.add_class::<Run>()?;
    m.add_class::<At>()?;
    m.add_class::<PyEvent>()?;
    m.setattr("__all__", vec!["run", "at", "Run", "Event"])?;
    m.setattr(
        "__doc__",
        "Run streams over events with a virtual clock, outputs captured: run(tree, events, until=...).",
    )?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("dmon.testing", &m)?;
    Ok(m)
}

/// Lines `printer` wrote during a run.
#[derive(Default)]
struct Printed(Mutex<Vec<String>>);

impl LineSink for Printed {
    fn write_line(&self, line: &str) {
        lock(&self.0).push(line.to_owned());
    }
}

/// A step of the clock among `run()`'s events: `at(60)`.
#[pyclass(name = "At", module = "dmon.testing", frozen)]
pub struct At {
    #[pyo3(get)]
    time: f64,
}

#[pymethods]
impl At {
    fn __repr__(&self) -> String {
        format!("at({})", self.time)
    }
}

/// Moves the clock to `time` at this place in `run()`'s events, through
/// every deadline on the way (windows flush, rates report, the index
/// expires).
///
/// Example: run(tree, [{"metric": 1, "time": 1}, at(60), {"metric": 2, "time": 61}])
#[pyfunction]
fn at(time: f64) -> At {
    At { time }
}

/// One item of `run()`'s events: an event, or a step of the clock.
enum Step {
    Event(Arc<Event>),
    To(f64),
}

fn step(item: &Bound<'_, PyAny>) -> PyResult<Step> {
    match item.cast::<At>() {
        Ok(at) => Ok(Step::To(at.get().time)),
        Err(_) => event_from_py(item).map(Step::Event),
    }
}

/// Runs `tree` over `events` with a virtual clock and returns what reached
/// its outputs.
///
/// run(tree, events, until=None, start=None, watch=())
///
/// `tree` is a stream, a list of streams, or a stream module (its roots).
/// It runs as a fresh copy: its state and counters are left as they were,
/// so one tree serves many tests. `events` are Events or dicts; the clock
/// starts at `start` (default: the first event's time, else 0), follows
/// event times and `at(t)` steps among the events, and ends at `until`
/// (default: where the events left it) —
/// windows, rates and expiry fire as time passes. With `until`, time ends
/// there: windows, rates, percentiles and batches then forward what they
/// hold, as at a server's clean shutdown. `email()` sends nothing:
/// its mails are in `.mailed`. `watch` lists nodes of the tree whose
/// emitted events `.leaving(node)` returns.
///
/// Example: run(rate(5, printer()), [{"metric": 10, "time": 1}], until=6).printed
#[pyfunction]
#[pyo3(signature = (tree, events, until=None, start=None, watch=None))]
fn run(
    tree: &Bound<'_, PyAny>,
    events: &Bound<'_, PyAny>,
    until: Option<f64>,
    start: Option<f64>,
    watch: Option<&Bound<'_, PyAny>>,
) -> PyResult<Run> {
    let roots = roots_from(tree)?;
    // Taken one at a time as the clock goes: a generator of a million
    // events never exists as a million events at once.
    let mut steps = events
        .try_iter()
        .map_err(|_| PyTypeError::new_err("run(): `events` must be a list of events or dicts"))?
        .map(|e| step(&e?));
    let first = steps.next().transpose()?;
    let start = start
        .or_else(|| match &first {
            Some(Step::Event(e)) => e.time.map(|t| t.as_f64()),
            Some(Step::To(t)) => Some(*t),
            None => None,
        })
        .unwrap_or(0.0);
    let watched: Vec<NodeRef> = match watch {
        None => Vec::new(),
        Some(w) => w
            .try_iter()?
            .map(|n| to_node(&n?))
            .collect::<PyResult<_>>()?,
    };
    let printed = Arc::new(Printed::default());
    let mut rehearsal = Rehearsal::new(roots, start, printed.clone());
    let mut taps = Vec::with_capacity(watched.len());
    for node in &watched {
        let stats = rehearsal.stats_of(node).ok_or_else(|| {
            PyValueError::new_err(format!(
                "run(): watch: {} is not a node of the tree being run",
                node.describe()
            ))
        })?;
        taps.push((
            node.clone(),
            stats.taps.subscribe(WATCH_CAPACITY),
            Vec::new(),
        ));
    }
    let drops_before = TAP_DROPS.load(Ordering::Relaxed);
    let ctx = Arc::clone(rehearsal.ctx());
    super::with_context(&ctx, || -> PyResult<()> {
        let mut next = first;
        while let Some(step) = next {
            match step {
                Step::Event(event) => rehearsal.feed(Arc::unwrap_or_clone(event)),
                Step::To(t) => rehearsal.advance_to(t),
            }
            drain(&mut taps);
            next = steps.next().transpose()?;
        }
        if let Some(t) = until {
            // The run's time ends there: what windows hold is forwarded.
            rehearsal.advance_to(t);
            rehearsal.flush();
            drain(&mut taps);
        }
        Ok(())
    })?;
    if !taps.is_empty() && TAP_DROPS.load(Ordering::Relaxed) != drops_before {
        return Err(PyRuntimeError::new_err(format!(
            "run(): a watched node emitted more than {WATCH_CAPACITY} events for one event; watch fewer nodes or feed fewer events"
        )));
    }
    let errors = rehearsal
        .root_set()
        .roots()
        .iter()
        .map(|r| count_errors(&*r.node))
        .sum();
    let printed = std::mem::take(&mut *lock(&printed.0));
    Ok(Run {
        outputs: rehearsal.take_outputs(),
        counts: rehearsal.counts(),
        index: ctx.index.snapshot(),
        printed,
        watched: taps.into_iter().map(|(n, _, got)| (n, got)).collect(),
        errors,
        now: rehearsal.now(),
    })
}

type Watch = (NodeRef, mpsc::Receiver<Arc<Event>>, Vec<Arc<Event>>);

fn drain(taps: &mut [Watch]) {
    for (_, rx, got) in taps {
        got.extend(rx.try_iter());
    }
}

/// Errors counted anywhere in a tree (forks share their template's).
fn count_errors(node: &dyn Node) -> u64 {
    node.stats().errors.load(Ordering::Relaxed)
        + node
            .children()
            .iter()
            .map(|c| count_errors(&**c))
            .sum::<u64>()
}

/// The roots `tree` stands for: one stream, a list of them, or a module's.
fn roots_from(tree: &Bound<'_, PyAny>) -> PyResult<Vec<Root>> {
    if let Ok(module) = tree.cast::<PyModule>() {
        let roots = roots_of(&module.dict()).map_err(|e| PyValueError::new_err(e.0))?;
        if roots.is_empty() {
            return Err(PyValueError::new_err(format!(
                "run(): module {} has no streams (module-level names containing \"stream\")",
                module.name()?
            )));
        }
        return Ok(roots);
    }
    if tree.cast::<PyList>().is_ok() || tree.cast::<PyTuple>().is_ok() {
        return tree
            .try_iter()?
            .enumerate()
            .map(|(i, t)| {
                Ok(Root {
                    name: format!("stream{i}"),
                    node: to_node(&t?)?,
                })
            })
            .collect();
    }
    Ok(vec![Root {
        name: "stream".into(),
        node: to_node(tree)?,
    }])
}

/// What reached a tree's outputs in one `run()`. Iterating gives the
/// events in the order they reached outputs.
#[pyclass(name = "Run", module = "dmon.testing", frozen)]
pub struct Run {
    outputs: Outputs,
    counts: Vec<(String, u64)>,
    index: Vec<Arc<Event>>,
    printed: Vec<String>,
    watched: Vec<(NodeRef, Vec<Arc<Event>>)>,
    errors: u64,
    now: f64,
}

/// `(node, kind, [events])`, as `Run.outputs` lists them.
type OutputTuple = (String, &'static str, Vec<Py<PyEvent>>);

fn events_list(py: Python<'_>, events: &[Arc<Event>]) -> PyResult<Vec<Py<PyEvent>>> {
    events.iter().map(|e| PyEvent::wrap(py, e)).collect()
}

impl Run {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = Output<'a>> {
        self.outputs.iter().filter(move |o| o.kind == kind)
    }

    /// The events that reached outputs of `kind`, in order.
    fn events_of_kind(&self, py: Python<'_>, kind: &str) -> PyResult<Vec<Py<PyEvent>>> {
        self.of_kind(kind)
            .flat_map(|o| o.events)
            .map(|e| PyEvent::wrap(py, e))
            .collect()
    }

    fn flat(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.outputs.iter().flat_map(|o| o.events)
    }
}

#[pymethods]
impl Run {
    /// Every event that reached an output, in order.
    #[getter]
    fn events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyEvent>>> {
        self.flat().map(|e| PyEvent::wrap(py, e)).collect()
    }

    /// `(node, kind, [events])` per output, in order: `node` is the output
    /// as written (`printer("high: ")`), `kind` its function's name.
    #[getter]
    fn outputs(&self, py: Python<'_>) -> PyResult<Vec<OutputTuple>> {
        self.outputs
            .iter()
            .map(|o| Ok((o.node.to_string(), o.kind, events_list(py, o.events)?)))
            .collect()
    }

    /// The lines `printer()` nodes printed.
    #[getter]
    fn printed(&self) -> Vec<String> {
        self.printed.clone()
    }

    /// The events `printer()` nodes received.
    #[getter]
    fn printed_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyEvent>>> {
        self.events_of_kind(py, "printer")
    }

    /// The mails `email()` would have sent: one list of events per mail.
    #[getter]
    fn mailed(&self, py: Python<'_>) -> PyResult<Vec<Vec<Py<PyEvent>>>> {
        self.of_kind("email")
            .map(|o| events_list(py, o.events))
            .collect()
    }

    /// The events `index()` nodes received, in order.
    #[getter]
    fn indexed(&self, py: Python<'_>) -> PyResult<Vec<Py<PyEvent>>> {
        self.events_of_kind(py, "index")
    }

    /// The index at the end of the run (expired events removed).
    #[getter]
    fn index(&self, py: Python<'_>) -> PyResult<Vec<Py<PyEvent>>> {
        events_list(py, &self.index)
    }

    /// Events per output node: `{"printer('high: ')": 2, ...}`.
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (node, n) in &self.counts {
            d.set_item(node, n)?;
        }
        Ok(d)
    }

    /// Errors nodes of the tree counted (an exception in a predicate, …);
    /// each was logged.
    #[getter]
    fn errors(&self) -> u64 {
        self.errors
    }

    /// The virtual time the run ended at.
    #[getter]
    fn now(&self) -> f64 {
        self.now
    }

    /// The events `node` (given in `watch=`) emitted, in order.
    fn leaving(&self, py: Python<'_>, node: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyEvent>>> {
        let node = node.cast::<PyStream>().map_err(|_| {
            PyTypeError::new_err("leaving(): give a stream node that was in watch=")
        })?;
        let wanted = node.get().node.stats() as *const _;
        self.watched
            .iter()
            .find(|(n, _)| std::ptr::eq(n.stats(), wanted))
            .map(|(_, got)| events_list(py, got))
            .unwrap_or_else(|| {
                Err(PyValueError::new_err(format!(
                    "leaving(): {} was not watched; pass it in run(..., watch=[node])",
                    node.get().node.describe()
                )))
            })
    }

    fn __len__(&self) -> usize {
        self.flat().count()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.events(py)?)?
            .try_iter()
            .map(|i| i.into_any())
    }

    fn __repr__(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect();
        format!(
            "<Run until t={}: {} events out{}{}>",
            self.now,
            self.flat().count(),
            if counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts.join(", "))
            },
            if self.errors > 0 {
                format!(", {} errors", self.errors)
            } else {
                String::new()
            }
        )
    }
}
