//! Which server Python's pushes reach (`Stream.send`, and the clock
//! `dmon.folds` read), passed in rather than kept in a process-wide static.
//! A thread running nodes (a pipeline's dispatch thread, a coroutine
//! handling an event, a rehearsal) names the context it runs them in, for as
//! long as it does; any other thread (the shell's, one user code starts)
//! reaches the server whose handle the Rust side stored on the
//! `dmon.streams` module, through its dispatch thread once it runs, so
//! nodes only ever run one event at a time. With neither (the pip package,
//! `dmon test` outside a run), Python is told that no server runs.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use scoped_tls::scoped_thread_local;

use dmon_server::event::Event;
use dmon_server::server::Injector;
use dmon_server::streams::context::Context;
use dmon_server::streams::{lock, push, NodeRef};

/// The attribute of `dmon.streams` that holds the [`ServerHandle`].
const HANDLE: &str = "_server";

/// A server, as the `dmon.streams` module holds it.
#[pyclass(name = "Server", module = "dmon.streams", frozen)]
pub struct ServerHandle {
    ctx: Arc<Context>,
    /// The way to the server's dispatch thread, once it runs.
    dispatch: Mutex<Option<Injector>>,
}

/// Stores a handle on `ctx` on `dmon.streams`: Python on threads that run
/// no nodes pushes into it from now on (replacing any earlier server).
pub fn bind(py: Python<'_>, ctx: Arc<Context>) -> PyResult<()> {
    let server = ServerHandle {
        ctx,
        dispatch: Mutex::new(None),
    };
    py.import("dmon.streams")?.setattr(HANDLE, server)
}

/// The bound server runs now: from here on, pushes from threads that run
/// no nodes are done by its dispatch thread, through `injector`.
pub fn dispatch_through(py: Python<'_>, injector: Injector) -> PyResult<()> {
    *lock(&bound_server(py)?.get().dispatch) = Some(injector);
    Ok(())
}

// The context this thread runs nodes in now, set by [`with_context`] for
// as long as it runs `f` (scoped-tls: a borrowed value in thread-local
// storage, put back as it was when `f` returns or unwinds).
scoped_thread_local!(static RUNNING_IN: Context);

/// Runs `f` with Python's pushes on this thread going into `ctx`: a
/// rehearsal's streams must not reach the server's, and a coroutine sends
/// on in the context it was handed.
pub fn with_context<R>(ctx: &Context, f: impl FnOnce() -> R) -> R {
    RUNNING_IN.set(ctx, f)
}

/// Calls `f` with the context this thread runs nodes in, if any.
fn in_running_context<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    RUNNING_IN.is_set().then(|| RUNNING_IN.with(f))
}

/// The server `dmon.streams` was bound to.
fn bound_server<'py>(py: Python<'py>) -> PyResult<Bound<'py, ServerHandle>> {
    py.import("dmon.streams")?
        .getattr_opt(HANDLE)?
        .ok_or_else(no_server)?
        .cast_into::<ServerHandle>()
        .map_err(|_| no_server())
}

/// Pushes `event` into `node` (and down its tree) for Python code: in the
/// context this thread runs nodes in, else into the bound server.
/// A push from another thread is handed to the server's dispatch thread,
/// and waited for (with the GIL released, which that thread may need), so
/// it cannot run a node at the same time as the dispatch thread does, and
/// is done when `send` returns.
pub fn push_from_python(py: Python<'_>, node: &NodeRef, event: &Arc<Event>) -> PyResult<()> {
    if in_running_context(|ctx| push(&**node, ctx, event)).is_some() {
        return Ok(());
    }
    let server = bound_server(py)?;
    let server = server.get();
    let dispatch = lock(&server.dispatch).clone();
    let Some(dispatch) = dispatch else {
        push(&**node, &server.ctx, event);
        return Ok(());
    };
    let (node, event) = (Arc::clone(node), Arc::clone(event));
    py.detach(|| dispatch.run_blocking(move |pipeline| push(&*node, pipeline.context(), &event)))
        .map_err(|stopped| PyRuntimeError::new_err(format!("dmon: {stopped}")))
}

/// The time for Python code: a run's (`dmon.testing.run`'s virtual
/// clock), else the bound server's, else the system's.
pub fn now(py: Python<'_>) -> f64 {
    in_running_context(Context::now)
        .or_else(|| bound_server(py).ok().map(|s| s.get().ctx.now()))
        .unwrap_or_else(dmon_server::event::now_secs)
}

/// The error for using a stream outside a running server.
pub fn no_server() -> PyErr {
    PyRuntimeError::new_err("no dmon server is running in this process")
}
