//! Python objects as stream nodes: a stream child given from Python (a
//! `Stream`, or a primed generator), and the coroutine node that drives a
//! generator. User callables given to native nodes are `value::PyFunction`s.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::coroutine_output::counting_as;
use super::event::PyEvent;
use super::server_binding::with_context;
use super::stream_object::PyStream;
use super::user_code::{callable_name, node_error};
use dmon_server::event::Event;
use dmon_server::node_core;
use dmon_server::streams::context::Context;
use dmon_server::streams::{lock, Node, NodeCore, NodeError, NodeRef};

/// A stream child from Python: a stream node, or anything with `.send`
/// (a primed generator), which becomes a coroutine node.
pub fn to_node(obj: &Bound<'_, PyAny>) -> PyResult<NodeRef> {
    if let Ok(s) = obj.cast::<PyStream>() {
        return Ok(Arc::clone(&s.get().node));
    }
    if is_stream(obj)? {
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

/// A stream node, or a generator (not a plain function) that takes events.
pub fn is_stream(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.cast::<PyStream>().is_ok()
        || (!obj.is_callable() && obj.getattr_opt("send")?.is_some_and(|s| s.is_callable())))
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

    /// Sends the generator one argument; what it sends on goes into `ctx`.
    fn send(
        &self,
        ctx: &Context,
        make_arg: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyAny>>,
    ) -> Result<(), NodeError> {
        Python::attach(|py| {
            let arg = make_arg(py).map_err(|err| node_error(py, err))?;
            let target = self.target(py)?;
            let sent = with_context(ctx, || {
                counting_as(&self.core.stats, || target.call_method1("send", (arg,)))
            });
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
            None if dmon_server::streams::detaching() => None,
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
                    stats: dmon_server::streams::fresh_stats(&self.core.stats),
                }
            },
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        self.send(ctx, |py| {
            Ok(PyEvent::wrap(py, event)?.into_bound(py).into_any())
        })
    }
    fn takes_lists(&self) -> bool {
        true
    }
    /// The generator receives the list as a Python list of events.
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        self.send(ctx, |py| {
            let events = events
                .iter()
                .map(|e| PyEvent::wrap(py, e))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, events)?.into_any())
        })
    }
}
