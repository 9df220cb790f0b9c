//! Stream nodes backed by user Python: a generator coroutine, and the
//! helpers that name user code and report its errors. User callables given
//! to native nodes are `value::PyFunction`s; Python runs only inside them.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::event::PyEvent;
use super::streams::PyStream;
use super::value::to_py;
use crate::event::Event;
use crate::node_core;
use crate::streams::context::Context;
use crate::streams::{lock, Node, NodeCore, NodeError, NodeRef, NodeStats, Value};

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
    if let Some(text) = super::loader::lambda_source(obj) {
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

/// How to build a coroutine again: the `@coroutine` function and its arguments.
pub struct Recipe {
    pub func: Py<PyAny>,
    pub args: Py<PyTuple>,
    pub kwargs: Option<Py<PyDict>>,
}

impl Recipe {
    /// Calls the function and primes the generator it returns.
    pub fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start_on(py, self.args.bind(py).clone())
    }

    /// Like [`Recipe::start`], with the stream arguments replaced, in order,
    /// by `children` (a fresh instance's own children).
    pub fn start_with<'py>(
        &self,
        py: Python<'py>,
        children: &[NodeRef],
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut fresh = children.iter();
        let args = self
            .args
            .bind(py)
            .iter()
            .map(|a| {
                if a.cast::<PyStream>().is_ok() {
                    if let Some(child) = fresh.next() {
                        return Ok(Bound::new(py, PyStream::new(Arc::clone(child)))?.into_any());
                    }
                }
                Ok(a)
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.start_on(py, PyTuple::new(py, args)?)
    }

    fn start_on<'py>(
        &self,
        py: Python<'py>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let generator = self
            .func
            .bind(py)
            .call(args, self.kwargs.as_ref().map(|k| k.bind(py)))?;
        if !generator.hasattr("send")? {
            return Err(PyTypeError::new_err(format!(
                "@coroutine {} must be a generator function (use `e = yield` to receive events)",
                callable_name(self.func.bind(py))
            )));
        }
        generator.call_method1("send", (py.None(),))?;
        Ok(generator)
    }
}

thread_local! {
    /// The coroutines handling an event on this thread, innermost last:
    /// what they send on counts as their output.
    static SENDING: RefCell<Vec<Arc<NodeStats>>> = const { RefCell::new(Vec::new()) };
}

/// Counts `event` as output of the coroutine now running on this thread,
/// if any (called when Python code sends an event into a stream).
pub fn count_sent(event: &Arc<Event>) {
    SENDING.with(|s| {
        if let Some(stats) = s.borrow().last() {
            stats.events_out.fetch_add(1, Ordering::Relaxed);
            stats.taps.publish(event);
        }
    });
}

/// A primed generator (or any object with `.send`) receiving each event
/// (or a list of events, from a window). `children` are the stream nodes it
/// was built with, shown in the stream tree; the coroutine itself decides
/// where events go, and what it sends counts as its output. A coroutine
/// built by `@stream` that dies on an exception is started afresh for the
/// next event, so one bad event cannot switch an alerting path off for
/// good; under `by`, each key gets its own generator, started with that
/// key's fresh children. Its state lives in a Python frame that refers to
/// its children, so a reload starts it afresh.
pub struct Coroutine {
    /// None until first needed (a fresh instance starts lazily).
    target: Mutex<Option<Py<PyAny>>>,
    recipe: Option<Arc<Recipe>>,
    name: String,
    core: NodeCore,
}

impl Coroutine {
    pub fn new(
        target: &Bound<'_, PyAny>,
        name: String,
        children: Vec<NodeRef>,
        recipe: Option<Recipe>,
    ) -> Self {
        Coroutine {
            target: Mutex::new(Some(target.clone().unbind())),
            recipe: recipe.map(Arc::new),
            name,
            core: NodeCore::new(children),
        }
    }

    /// The generator, started now if this instance has none yet.
    fn target<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>, NodeError> {
        let mut target = lock(&self.target);
        if let Some(t) = &*target {
            return Ok(t.bind(py).clone());
        }
        let recipe = self.recipe.as_ref().ok_or_else(|| {
            NodeError(format!(
                "{}: a plain primed generator cannot be copied for a rehearsal (dmon.testing, replay, try_stream); build it with @coroutine",
                self.name
            ))
        })?;
        let started = recipe
            .start_with(py, &self.core.children)
            .map_err(|err| node_error(py, err))?;
        *target = Some(started.clone().unbind());
        Ok(started)
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
            (Some(recipe), true) => match recipe.start_with(py, &self.core.children) {
                Ok(fresh) => {
                    *lock(&self.target) = Some(fresh.unbind());
                    " (the coroutine was restarted for the next event)"
                }
                Err(_) => " (restarting the coroutine failed too)",
            },
        }
    }

    fn send(
        &self,
        make_arg: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyAny>>,
    ) -> Result<(), NodeError> {
        Python::attach(|py| {
            let arg = make_arg(py).map_err(|err| node_error(py, err))?;
            let target = self.target(py)?;
            SENDING.with(|s| s.borrow_mut().push(Arc::clone(&self.core.stats)));
            let sent = target.call_method1("send", (arg,));
            SENDING.with(|s| s.borrow_mut().pop());
            match sent {
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
                    error.0.push_str(self.recover(py, &target));
                    Err(error)
                }
            }
        })
    }
}

impl Node for Coroutine {
    fn kind(&self) -> &'static str {
        "coroutine"
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
    node_core!();
    /// A `@stream` coroutine starts a new generator on fresh children; a
    /// plain generator cannot be rebuilt, so its instances share it.
    fn fresh(&self) -> NodeRef {
        let target = match &self.recipe {
            Some(_) => None,
            // A rehearsal's copy must not drive the live generator (from
            // another thread, even): it has none, and says why per event.
            None if crate::streams::detaching() => None,
            None => Python::attach(|py| lock(&self.target).as_ref().map(|t| t.clone_ref(py))),
        };
        Arc::new(Coroutine {
            target: Mutex::new(target),
            recipe: self.recipe.clone(),
            name: self.name.clone(),
            core: if self.recipe.is_some() {
                self.core.fresh()
            } else {
                NodeCore {
                    children: self.core.children.clone(),
                    stats: crate::streams::fresh_stats(&self.core.stats),
                }
            },
        })
    }
    fn handle(&self, _ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        self.send(|py| Ok(PyEvent::wrap(py, event)?.into_bound(py).into_any()))
    }
    fn takes_lists(&self) -> bool {
        true
    }
    /// The generator receives the list as a Python list of events.
    fn handle_list(&self, _ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        self.send(|py| to_py(py, &Value::events(events)))
    }
}
