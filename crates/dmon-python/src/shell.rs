//! The shell's handle on the live server, as the Python helpers in
//! `shell/dmon_shell.py` see it: inject, counters, index, taps, root swaps.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule};

use super::event::{event_from_py, PyEvent};
use super::loader::{self, StreamSource};
use super::nodes::to_node;
use super::stream_object::PyStream;
use dmon_server::client::{send_datagrams, ClientError, RiemannClient};
use dmon_server::codec::json;
use dmon_server::console::{Holdable, LineSink};
use dmon_server::event::{now_secs, Event, Number};
use dmon_server::pipeline::Observer;
use dmon_server::pipeline::{Pipeline, Root};
use dmon_server::query::Query;
use dmon_server::recent::{self, Received};
use dmon_server::rehearsal::Rehearsal;
use dmon_server::server::recorder::{Format, Recorder};
use dmon_server::server::{Addresses, Injector};
use dmon_server::streams::{walk_tree, walk_tree_refs, Node, NodeRef};

/// The embedded Python half of the shell.
pub const SHELL_SOURCE: &str = include_str!("../../../shell/dmon_shell.py");

/// Where the shell's events go: the in-process server, or a remote dmon
/// (its JSON UDP address, and its Riemann TCP address for queries).
pub enum Target {
    Local(Arc<Pipeline>),
    /// A dmon elsewhere (`--connect`): datagrams to its UDP address,
    /// queries to its Riemann TCP address, over TLS if `tls`.
    Remote {
        riemann_tcp: Option<SocketAddr>,
        tls: Option<dmon_server::tls::ClientTls>,
    },
}

/// A row of `top()`'s series: host, service, events, last metric.
type SeriesRow = (Option<String>, Option<String>, u64, Option<f64>);

#[pyclass(name = "ShellServer", module = "dmon._shell", frozen)]
pub struct ShellServer {
    target: Target,
    udp_addr: Mutex<SocketAddr>,
    /// Set once the local server runs.
    injector: Mutex<Option<Injector>>,
    riemann_tcp: Mutex<Option<SocketAddr>>,
    source: StreamSource,
    console: Arc<Holdable>,
    /// The current roots with the Python objects they came from, so a
    /// statement that leaves a root's object alone keeps its node (and its
    /// counters and state).
    roots: Mutex<Vec<(String, Py<PyAny>, NodeRef)>>,
    /// Names last reported as "not a stream", so a statement does not
    /// repeat the note for every later statement.
    not_streams: Mutex<Vec<String>>,
    /// Roots defined at the prompt under --connect, last told about.
    remote_roots: Mutex<Vec<String>>,
    /// The recording `record(path)` started, if one is on.
    recording: Mutex<Option<Arc<Recorder>>>,
    /// In cluster mode (--cluster, --publish, --consume): where index(),
    /// query(), stats() and streams() ask every node.
    cluster: Mutex<Option<ShellCluster>>,
    /// Query texts whose warnings `query()` has shown (at most
    /// [`WARNED_QUERIES`]), so asking again does not repeat them.
    warned_queries: Mutex<HashSet<String>>,
}

/// Query texts remembered as warned about; past this the set starts over
/// (a warning may then be shown again) rather than growing.
const WARNED_QUERIES: usize = 1024;

/// The shell's way to the cluster: this node's NATS connection, the
/// runtime to ask on, and this node's name (shown first).
#[cfg(feature = "cluster")]
#[derive(Clone)]
pub struct ShellCluster {
    pub conn: dmon_server::cluster::Connection,
    pub runtime: tokio::runtime::Handle,
    pub name: String,
}

/// Built without the `cluster` feature (the pip package), a shell is never
/// in cluster mode: there is no value of this type.
#[cfg(not(feature = "cluster"))]
#[derive(Clone)]
pub enum ShellCluster {}

/// Every node's events matching a query, merged, and its per-node lines.
type ClusterAnswer = (Vec<dmon_server::event::Event>, Vec<String>);

#[cfg(feature = "cluster")]
impl ShellCluster {
    fn query(&self, text: &str) -> Result<ClusterAnswer, String> {
        use dmon_server::cluster::query;
        let merged = self
            .runtime
            .block_on(query::query(&self.conn, text, query::DEFAULT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let report = merged.report();
        Ok((merged.events, report))
    }

    fn counters(&self, streams: bool) -> Result<Vec<(String, Option<String>)>, String> {
        use dmon_server::cluster::query;
        let found = self
            .runtime
            .block_on(query::counters(
                &self.conn,
                streams,
                query::DEFAULT_TIMEOUT,
                Some(&self.name),
            ))
            .map_err(|e| e.to_string())?;
        Ok(found
            .into_iter()
            .map(|(node, body)| (node, body.map(|b| b.get().to_owned())))
            .collect())
    }
}

#[cfg(not(feature = "cluster"))]
impl ShellCluster {
    fn query(&self, _: &str) -> Result<ClusterAnswer, String> {
        match *self {}
    }

    fn counters(&self, _: bool) -> Result<Vec<(String, Option<String>)>, String> {
        match *self {}
    }
}

impl ShellServer {
    pub fn new(
        target: Target,
        udp_addr: SocketAddr,
        source: StreamSource,
        console: Arc<Holdable>,
    ) -> Self {
        ShellServer {
            target,
            udp_addr: Mutex::new(udp_addr),
            injector: Mutex::new(None),
            riemann_tcp: Mutex::new(None),
            source,
            console,
            roots: Mutex::new(Vec::new()),
            not_streams: Mutex::new(Vec::new()),
            remote_roots: Mutex::new(Vec::new()),
            recording: Mutex::new(None),
            cluster: Mutex::new(None),
            warned_queries: Mutex::new(HashSet::new()),
        }
    }

    /// Puts the shell in cluster mode.
    pub fn attach_cluster(&self, cluster: ShellCluster) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
    }

    /// The way to the cluster, if in cluster mode.
    fn cluster(&self) -> Option<ShellCluster> {
        let c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        c.clone()
    }

    /// Stops the recording in progress, if any: the pipeline stops handing
    /// it events, and its writer writes what it holds and closes the file.
    /// Says what it wrote.
    pub fn stop_recording(&self) -> Option<String> {
        let recorder = self
            .recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        if let Target::Local(pipeline) = &self.target {
            pipeline.set_observer(None);
        }
        let done = recorder.finish();
        let mut said = format!(
            "{} event{} recorded to {}",
            done.written,
            if done.written == 1 { "" } else { "s" },
            recorder.target
        );
        if done.dropped > 0 {
            said.push_str(&format!(
                "; {} dropped (the writer fell behind)",
                done.dropped
            ));
        }
        if let Some(e) = done.error {
            said.push_str(&format!("; writing failed: {e}"));
        }
        Some(said)
    }

    /// Writes each `(name, note)` above the prompt whose name the previous
    /// call did not have, then remembers this call's names: a note is said
    /// once while its name stays, and again if the name comes back later.
    fn note_new(&self, reported: &Mutex<Vec<String>>, notes: Vec<(String, String)>) {
        let mut reported = reported.lock().unwrap_or_else(|p| p.into_inner());
        for (name, note) in &notes {
            if !reported.contains(name) {
                self.console.write_line(note);
            }
        }
        *reported = notes.into_iter().map(|(name, _)| name).collect();
    }

    /// A `*stream*` name that is not a stream is not a root.
    fn note_not_streams(&self, not_streams: &[(String, String)]) {
        let notes = not_streams
            .iter()
            .map(|(name, kind)| (name.clone(), loader::not_a_root(name, kind)))
            .collect();
        self.note_new(&self.not_streams, notes);
    }

    /// With --connect, a root defined at the prompt runs nowhere: say so
    /// rather than leave the user waiting for its output.
    fn note_remote_roots(&self, roots: &[(String, Bound<'_, PyAny>)]) {
        let notes = roots
            .iter()
            .map(|(name, _)| {
                let note = format!(
                    "`{name}` does not run: with --connect, this shell cannot change the \
                     remote dmon's streams yet (edit its stream module and reload it there)"
                );
                (name.clone(), note)
            })
            .collect();
        self.note_new(&self.remote_roots, notes);
    }

    /// Connects the handle to the started server.
    pub fn attach_server(&self, injector: Injector, bound: &Addresses) {
        *self.injector.lock().unwrap_or_else(|p| p.into_inner()) = Some(injector);
        *self.udp_addr.lock().unwrap_or_else(|p| p.into_inner()) = bound.udp();
        *self.riemann_tcp.lock().unwrap_or_else(|p| p.into_inner()) = bound.get("riemann-tcp");
    }

    fn udp_addr(&self) -> SocketAddr {
        *self.udp_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ring, for the helpers that read recent traffic (`spark`, `top`).
    fn ring(&self, helper: &str) -> PyResult<(&Arc<Pipeline>, f64)> {
        let Target::Local(pipeline) = &self.target else {
            return Err(PyRuntimeError::new_err(format!(
                "{helper}() needs the local server: with --connect, the recent events are kept by the remote dmon"
            )));
        };
        if !pipeline.recent.is_on() {
            return Err(PyRuntimeError::new_err(format!(
                "{helper}() reads the recent traffic, and this dmon keeps none (--recent-minutes 0)"
            )));
        }
        Ok((pipeline, pipeline.context().now()))
    }

    fn local(&self) -> PyResult<&Arc<Pipeline>> {
        match &self.target {
            Target::Local(pipeline) => Ok(pipeline),
            Target::Remote { .. } => Err(PyRuntimeError::new_err(
                "not available with --connect: the remote server's counters and streams are not \
                 exposed over the network yet; inject(), send(), index() and query() work",
            )),
        }
    }
}

/// Loads `shell/dmon_shell.py` into the interpreter as module `dmon_shell`.
pub fn shell_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    super::embedded_module(py, "dmon_shell", "dmon/shell/dmon_shell.py", SHELL_SOURCE)
}

#[pymethods]
impl ShellServer {
    /// Runs events through the streams and returns once they are processed
    /// (locally), or sends them as datagrams (remote).
    fn inject(&self, py: Python<'_>, events: &Bound<'_, PyList>) -> PyResult<()> {
        let now = now_secs();
        let events: Vec<Event> = events
            .iter()
            .map(|e| {
                let mut e = Event::clone(&*event_from_py(&e)?);
                // As a datagram would be: stamped with the receive time.
                e.time.get_or_insert(Number::Float(now));
                Ok(e)
            })
            .collect::<PyResult<_>>()?;
        match &self.target {
            Target::Local(_) => {
                let injector = self
                    .injector
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .ok_or_else(|| PyRuntimeError::new_err("the server is not running"))?;
                py.detach(move || injector.inject_blocking(events))
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))
            }
            Target::Remote { .. } => {
                let to = self.udp_addr();
                py.detach(move || send_datagrams(to, &events))
                    .map(|_| ())
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))
            }
        }
    }

    /// Events from JSON text, decoded as a datagram is, and one message per
    /// bad part (`line 3: key must be a string at column 15`).
    fn decode_json(&self, py: Python<'_>, text: &str) -> PyResult<(Vec<Py<PyEvent>>, Vec<String>)> {
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        if !text.trim().is_empty() {
            json::decode(text.as_bytes(), now_secs(), &mut events, &mut errors);
        }
        let events = events
            .into_iter()
            .map(|e| PyEvent::wrap(py, &Arc::new(e)))
            .collect::<PyResult<_>>()?;
        Ok((events, errors.into_iter().map(|e| e.0).collect()))
    }

    /// Starts writing every event the server receives to `path` (ndjson or
    /// riemann format), stopping the recording in progress first; returns
    /// what that one wrote, if there was one.
    fn record_start(&self, py: Python<'_>, path: &str, format: &str) -> PyResult<Option<String>> {
        let pipeline = self.local()?;
        let format: Format = format.parse().map_err(PyValueError::new_err)?;
        let recorder = Recorder::create(
            std::path::Path::new(path),
            format,
            Arc::clone(pipeline.memory()),
        )
        .map_err(|e| PyRuntimeError::new_err(format!("cannot record to {path}: {e}")))?;
        let previous = py.detach(|| self.stop_recording());
        pipeline.set_observer(Some(Arc::clone(&recorder) as Arc<dyn Observer>));
        *self.recording.lock().unwrap_or_else(|p| p.into_inner()) = Some(recorder);
        Ok(previous)
    }

    /// Stops recording; what it wrote, or None when nothing was recording.
    fn record_stop(&self, py: Python<'_>) -> Option<String> {
        py.detach(|| self.stop_recording())
    }

    fn stats_json(&self) -> PyResult<String> {
        let pipeline = self.local()?;
        serde_json::to_string(&pipeline.stats()).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    fn index_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyEvent>>> {
        self.query_events(py, "true")
    }

    /// The index's events matching a query in Riemann's language; with
    /// --connect, asked of the remote dmon over Riemann TCP.
    fn query_events(&self, py: Python<'_>, text: &str) -> PyResult<Vec<Py<PyEvent>>> {
        let events: Vec<Arc<Event>> = match &self.target {
            Target::Local(pipeline) => {
                let query = Query::parse(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
                pipeline.context().index.search(|e| query.matches(e))
            }
            Target::Remote { riemann_tcp, tls } => {
                let addr = riemann_tcp.ok_or_else(|| {
                    PyRuntimeError::new_err(
                        "no Riemann TCP address to query (--riemann-tcp is off)",
                    )
                })?;
                let text = text.to_owned();
                let tls = tls.clone();
                py.detach(move || {
                    RiemannClient::connect_with(addr, Duration::from_secs(10), tls.as_ref())
                        .map_err(ClientError::from)
                        .and_then(|mut client| client.query(&text))
                })
                .map_err(|e| match e {
                    ClientError::Refused(reason) => PyValueError::new_err(reason),
                    other => PyRuntimeError::new_err(format!("querying {addr}: {other}")),
                })?
                .into_iter()
                .map(Arc::new)
                .collect()
            }
        };
        events.iter().map(|e| PyEvent::wrap(py, e)).collect()
    }

    /// The warnings of query `text` (an unquoted word, see
    /// [`Query::warnings`]) for `query()` to print, or none when this text
    /// was warned about already or does not parse (its error comes from
    /// the query itself).
    fn query_warnings(&self, text: &str) -> Vec<String> {
        let Ok(query) = Query::parse(text) else {
            return Vec::new();
        };
        if query.warnings().is_empty() {
            return Vec::new();
        }
        let mut warned = self
            .warned_queries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if warned.len() >= WARNED_QUERIES {
            warned.clear();
        }
        if !warned.insert(text.to_owned()) {
            return Vec::new();
        }
        query.warnings().to_vec()
    }

    /// Whether index(), query(), stats() and streams() ask the cluster.
    fn in_cluster(&self) -> bool {
        self.cluster().is_some()
    }

    /// Every node's events matching a query, merged, and a line per node
    /// (answered: N events, or did not answer).
    fn cluster_query(
        &self,
        py: Python<'_>,
        text: &str,
    ) -> PyResult<(Vec<Py<PyEvent>>, Vec<String>)> {
        let cluster = self
            .cluster()
            .ok_or_else(|| PyRuntimeError::new_err("not in cluster mode"))?;
        // Said once here rather than once per node.
        Query::parse(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let (events, report) = py
            .detach(|| cluster.query(text))
            .map_err(PyRuntimeError::new_err)?;
        let events = events
            .into_iter()
            .map(|e| PyEvent::wrap(py, &Arc::new(e)))
            .collect::<PyResult<_>>()?;
        Ok((events, report))
    }

    /// Every node's `dmon stats` JSON (`streams`: its stream node
    /// counters), this node first: (node, JSON, or None when it did not
    /// answer).
    fn cluster_counters(
        &self,
        py: Python<'_>,
        streams: bool,
    ) -> PyResult<Vec<(String, Option<String>)>> {
        let cluster = self
            .cluster()
            .ok_or_else(|| PyRuntimeError::new_err("not in cluster mode"))?;
        py.detach(|| cluster.counters(streams))
            .map_err(PyRuntimeError::new_err)
    }

    /// Starts observing what `node` lets through.
    /// Every node of the running trees, with the path `streams()` prints,
    /// in the same order: for `tap("average_stream/*")`.
    fn nodes(&self) -> PyResult<Vec<(String, PyStream)>> {
        let mut found = Vec::new();
        for root in self.local()?.roots().iter() {
            walk_tree_refs(&root.path(), &root.node, &mut |path, node| {
                found.push((path.to_owned(), PyStream::new(Arc::clone(node))));
            });
        }
        Ok(found)
    }

    fn tap(&self, node: &Bound<'_, PyAny>) -> PyResult<Tap> {
        let node = node
            .cast::<PyStream>()
            .map_err(|_| PyTypeError::new_err("tap() needs a stream node"))?;
        let rx = node.get().node.stats().taps.subscribe(10_000);
        Ok(Tap {
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Makes the namespace's roots the running ones if they changed;
    /// returns the new root names, or None when nothing changed.
    pub fn sync_roots(&self, ns: &Bound<'_, PyDict>) -> PyResult<Option<Vec<String>>> {
        let loader::RootObjects {
            roots: found,
            not_streams,
        } = loader::root_objects(ns);
        self.note_not_streams(&not_streams);
        let Target::Local(pipeline) = &self.target else {
            self.note_remote_roots(&found);
            return Ok(None);
        };
        // Another thread (watch()) may be syncing and waiting, without the
        // GIL, for the swap below: wait for it without holding the GIL too.
        let mut current = loop {
            match self.roots.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => ns
                    .py()
                    .detach(|| std::thread::sleep(std::time::Duration::from_millis(1))),
            }
        };
        let unchanged = found.len() == current.len()
            && found
                .iter()
                .zip(current.iter())
                .all(|((name, obj), (cur_name, cur_obj, _))| name == cur_name && obj.is(cur_obj));
        if unchanged {
            return Ok(None);
        }
        let mut next = Vec::with_capacity(found.len());
        for (name, obj) in found {
            let reused = current
                .iter()
                .find(|(_, cur_obj, _)| obj.is(cur_obj))
                .map(|(_, _, node)| Arc::clone(node));
            let node = match reused {
                Some(node) => node,
                None => to_node(&obj)?,
            };
            next.push((name, obj.unbind(), node));
        }
        let roots = next
            .iter()
            .map(|(name, _, node)| Root {
                name: name.clone(),
                node: Arc::clone(node),
            })
            .collect();
        // The swap waits for the dispatch thread to finish its batch, which
        // may need the GIL this thread holds.
        ns.py().detach(|| pipeline.swap_roots(roots));
        let names = next.iter().map(|(n, _, _)| n.clone()).collect();
        *current = next;
        Ok(Some(names))
    }

    fn root_names(&self) -> Vec<String> {
        let current = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        current.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Imports the stream module afresh; raises RuntimeError with the
    /// file, line and reason when it fails.
    fn load_module<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyModule>> {
        if matches!(self.target, Target::Remote { .. }) {
            return Err(PyRuntimeError::new_err(
                "reload() needs the local server (not --connect)",
            ));
        }
        loader::import(py, &self.source)
            .map(|m| m.into_bound(py))
            .map_err(|e| PyRuntimeError::new_err(e.0))
    }

    /// The stream module's file, when there is one.
    fn module_path(&self, py: Python<'_>) -> Option<String> {
        loader::module_file(py, &self.source).map(|p| p.to_string_lossy().into_owned())
    }

    fn describe(&self) -> String {
        match self.target {
            Target::Local(_) => match *self.riemann_tcp.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(tcp) => format!("UDP {} — Riemann TCP {tcp}", self.udp_addr()),
                None => format!("UDP {}", self.udp_addr()),
            },
            Target::Remote {
                riemann_tcp: Some(tcp),
                ref tls,
            } => {
                let over = if tls.is_some() { " over TLS" } else { "" };
                format!(
                    "connected to {} (UDP), queries to {tcp} (Riemann TCP{over})",
                    self.udp_addr()
                )
            }
            Target::Remote {
                riemann_tcp: None, ..
            } => {
                format!("connected to {} (UDP)", self.udp_addr())
            }
        }
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// The last `n` log records, oldest first: (level, unix time, message).
    fn recent_logs(&self, n: usize) -> Vec<(String, f64, String)> {
        dmon_server::logs::recent(n)
            .into_iter()
            .map(|r| (r.level.as_str().to_owned(), r.time, r.message))
            .collect()
    }

    /// Which log records pass from now on.
    fn set_log_level(&self, level: &str) -> PyResult<()> {
        dmon_server::logs::set_level(level).map_err(PyValueError::new_err)
    }

    /// Writes a line where server output goes (above the prompt).
    fn console(&self, line: &str) {
        self.console.write_line(line);
    }

    /// Server output waits while a pager or an editor has the terminal.
    fn hold_console(&self) {
        self.console.hold();
    }

    /// Writes what waited, and goes on writing as it comes.
    fn release_console(&self) {
        self.console.release();
    }

    /// `spark()`'s data: the clock's now, and the (host, service) series'
    /// (receive time, metric) points of the last `seconds`.
    fn series(&self, host: &str, service: &str, seconds: f64) -> PyResult<(f64, Vec<(f64, f64)>)> {
        let (pipeline, now) = self.ring("spark")?;
        Ok((now, pipeline.recent.series(host, service, now - seconds)))
    }

    /// `top()`'s series: the `n` busiest of the last `seconds`, as
    /// (host, service, events, last metric).
    fn busiest(&self, seconds: f64, n: usize) -> PyResult<Vec<SeriesRow>> {
        let (pipeline, now) = self.ring("top")?;
        Ok(pipeline
            .recent
            .busiest(now - seconds, n)
            .into_iter()
            .map(|r| (r.host, r.service, r.events, r.last_metric))
            .collect())
    }

    /// The recent-traffic ring's bounds: seconds kept (0: off) and most
    /// events; None with --connect.
    fn recent_bounds(&self) -> Option<(f64, usize, usize)> {
        match &self.target {
            Target::Local(p) => Some((
                p.recent.window_secs(),
                p.recent.max_events(),
                p.recent.max_bytes(),
            )),
            Target::Remote { .. } => None,
        }
    }

    /// `trace()`'s work: `event` through a copy of the live streams, each
    /// node starting with a copy of its live state (the live nodes are
    /// left as they are), outputs captured.
    fn trace(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<super::trace::PyTrace> {
        let Target::Local(pipeline) = &self.target else {
            return Err(PyRuntimeError::new_err(
                "trace() needs the in-process server: with --connect, the live streams run in the \
                 remote dmon; there, or with `dmon trace EVENT --streams MODULE`, trace the event",
            ));
        };
        let event = Event::clone(&*event_from_py(event)?);
        let roots = pipeline.roots().to_vec();
        let now = pipeline.context().now();
        // Without the GIL: copying waits for each live node's lock, which
        // the dispatch thread may hold while it waits for the GIL.
        let (traced, run) = py.detach(|| {
            let mut run = Rehearsal::carrying_state(roots, now, Arc::new(Discard));
            let ctx = Arc::clone(run.ctx());
            let traced = super::with_context(&ctx, || dmon_server::trace::trace(&mut run, event));
            (traced, run)
        });
        // The copies' Python objects (fresh coroutines) go with the GIL held.
        drop(run);
        Ok(super::trace::PyTrace(traced))
    }

    /// `try_stream()`'s work: runs fresh copies of `candidate` and of the
    /// live streams (every root, or the one `against` names) over the
    /// events received in the last `minutes`, each on a virtual clock
    /// following event times with outputs captured (nothing printed, mailed
    /// or indexed for real), and compares what reached their outputs.
    /// Returns plain data; `dmon_shell.TryResult` words it.
    #[pyo3(signature = (candidate, minutes, against=None))]
    fn try_stream<'py>(
        &self,
        py: Python<'py>,
        candidate: &Bound<'py, PyAny>,
        minutes: f64,
        against: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let Target::Local(pipeline) = &self.target else {
            return Err(PyRuntimeError::new_err(
                "try_stream() needs the local server: with --connect, the recent events are \
                 kept by the remote dmon",
            ));
        };
        if !(minutes > 0.0 && minutes.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "try_stream(): minutes must be a positive number, not {minutes}"
            )));
        }
        let node = match to_node(candidate) {
            Ok(node) => node,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "try_stream() needs a stream to try, like \
                     try_stream(where(\"metric > 5\", printer(\"hi: \"))), not {}",
                    candidate.repr()?
                )))
            }
        };
        let ring = &pipeline.recent;
        if !ring.is_on() {
            return Err(PyRuntimeError::new_err(
                "no recent events are kept: this dmon runs with --recent-minutes 0; start it \
                 with --recent-minutes 5 (or DMON_RECENT_MINUTES=5) to try streams on recent \
                 traffic",
            ));
        }
        let (against_name, live) = live_roots(pipeline, against)?;
        let now = pipeline.context().now();
        let received = ring.since(now - minutes * 60.0);
        let (Some(first), Some(last)) = (received.first(), received.last()) else {
            return Err(PyRuntimeError::new_err(format!(
                "no events received in the last {} to try the stream on (the ring keeps {}); \
                 send some, or inject() them, and try again",
                plural(minutes, "minute"),
                plural(ring.window_secs() / 60.0, "minute"),
            )));
        };
        let (first_at, last_at) = (first.at, last.at);
        let start = start_time(first, ring.window_secs());
        let mut nodes = output_nodes(&node);
        for root in &live {
            nodes.extend(output_nodes(&root.node));
        }
        let candidate_roots = vec![Root {
            name: "try_stream".into(),
            node,
        }];
        let mut runs = [
            Rehearsal::new(candidate_roots, start, Arc::new(Discard)),
            Rehearsal::new(live, start, Arc::new(Discard)),
        ];
        // On a thread of its own: Python there (the candidate's lambdas)
        // never receives Ctrl-C, which this thread turns into a cancel
        // instead of a lambda's failure; and this thread waits without the
        // GIL, so the live server goes on meanwhile.
        let cancel = AtomicBool::new(false);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        std::thread::scope(|scope| -> PyResult<()> {
            let (runs, received, cancel) = (&mut runs, &received, &cancel);
            let worker = scope.spawn(move || {
                let _done = done_tx; // hung up when the dry run ends, however
                dry_run(runs, received, now, cancel);
            });
            loop {
                let waiting = py.detach(|| {
                    matches!(
                        done_rx.recv_timeout(Duration::from_millis(50)),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    )
                });
                if !waiting {
                    break;
                }
                if let Err(interrupt) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    let _ = py.detach(|| worker.join());
                    return Err(interrupt);
                }
            }
            py.detach(|| worker.join()).map_err(|_| {
                PyRuntimeError::new_err("try_stream(): the dry run failed (see logs())")
            })
        })?;
        let [candidate_run, live_run] = runs;
        let (candidate_out, live_out) = (candidate_run.take_outputs(), live_run.take_outputs());
        let nodes: Vec<(String, &str)> = nodes.iter().map(|(d, k)| (d.clone(), *k)).collect();
        let (candidate_out, live_out): (Vec<_>, Vec<_>) =
            (candidate_out.iter().collect(), live_out.iter().collect());
        let cmp = recent::compare(&candidate_out, &live_out, &nodes);

        let out = PyDict::new(py);
        out.set_item("events", received.len())?;
        out.set_item("first", first_at)?;
        out.set_item("last", last_at)?;
        out.set_item("minutes", minutes)?;
        out.set_item("kept_minutes", ring.window_secs() / 60.0)?;
        out.set_item("against", against_name)?;
        out.set_item(
            "live_streams",
            live_run
                .root_set()
                .roots()
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>(),
        )?;
        let rows: Vec<(String, String, u64, u64)> = cmp
            .rows
            .into_iter()
            .map(|r| (r.node, r.kind, r.candidate, r.live))
            .collect();
        out.set_item("rows", rows)?;
        let differences =
            |ds: Vec<recent::Difference>| -> PyResult<Vec<(String, String, Py<PyEvent>)>> {
                ds.into_iter()
                    .map(|d| Ok((d.node, d.kind, PyEvent::wrap(py, &d.event)?)))
                    .collect()
            };
        out.set_item("only_candidate", differences(cmp.only_candidate)?)?;
        out.set_item("only_candidate_total", cmp.only_candidate_total)?;
        out.set_item("only_live", differences(cmp.only_live)?)?;
        out.set_item("only_live_total", cmp.only_live_total)?;
        out.set_item(
            "errors",
            (node_errors(&candidate_run), node_errors(&live_run)),
        )?;
        Ok(out)
    }
}

/// Prints nothing: a dry run's printer lines are captured, not shown.
struct Discard;

impl LineSink for Discard {
    fn write_line(&self, _line: &str) {}
}

/// Feeds the received events to each dry run, then moves its clock to
/// `now`, with Python streams (coroutines) pushing into the run's context;
/// stops early when `cancel` is set.
fn dry_run(runs: &mut [Rehearsal], received: &[Received], now: f64, cancel: &AtomicBool) {
    for run in runs {
        let ctx = Arc::clone(run.ctx());
        super::with_context(&ctx, || {
            for r in received {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                run.feed(Event::clone(&r.event));
            }
            run.advance_to(now);
        });
    }
}

/// The live streams to compare with: every root, or the one `against`
/// names (a root's name, or a stream: a root, or any other tree); with
/// the root's name when it is one.
fn live_roots(
    pipeline: &Pipeline,
    against: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Option<String>, Vec<Root>)> {
    let roots = pipeline.roots();
    let Some(against) = against else {
        return Ok((None, roots.to_vec()));
    };
    let names = || {
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            "none are running".to_owned()
        } else {
            format!("the live streams are {}", names.join(", "))
        }
    };
    if let Ok(name) = against.extract::<String>() {
        return match roots.iter().find(|r| r.name == name) {
            Some(root) => Ok((Some(name), vec![root.clone()])),
            None => Err(PyValueError::new_err(format!(
                "try_stream(): against={name:?} is not a live stream; {}",
                names()
            ))),
        };
    }
    let node = to_node(against).map_err(|_| {
        PyTypeError::new_err(format!(
            "try_stream(): against must name a live stream (against=\"average_stream\") or be \
             a stream, not {}",
            against.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    match roots.iter().find(|r| Arc::ptr_eq(&r.node, &node)) {
        Some(root) => Ok((Some(root.name.clone()), vec![root.clone()])),
        // Any tree will do to compare with; it has no live name.
        None => Ok((
            None,
            vec![Root {
                name: "against".into(),
                node,
            }],
        )),
    }
}

/// Where the dry runs' clock starts: the first event's time when it lies
/// in the ring's window before its receipt (a sender's clock a little
/// behind), else its receive time (a clock far off would make the dry run
/// cross the gap).
fn start_time(first: &Received, window_secs: f64) -> f64 {
    match first.event.time.map(|t| t.as_f64()) {
        Some(t) if t <= first.at && t >= first.at - window_secs => t,
        _ => first.at,
    }
}

/// The output nodes of a tree (`printer`, `index`, `email`), as
/// `(describe, kind)`, so each has a row even when nothing reached it.
fn output_nodes(node: &NodeRef) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    walk_tree("", &**node, &mut |_, n: &dyn Node| {
        if matches!(n.kind(), "printer" | "index" | "email") {
            found.push((n.describe(), n.kind()));
        }
    });
    found
}

/// Errors the nodes of a dry run counted (a predicate that raised).
fn node_errors(run: &Rehearsal) -> u64 {
    run.root_set()
        .node_snapshots()
        .iter()
        .map(|n| n.errors)
        .sum()
}

/// `5 minutes`, `1 minute`, `0.5 minutes`.
fn plural(n: f64, what: &str) -> String {
    if n == 1.0 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A live view of one node's events; `next(timeout)` returns an Event or None.
#[pyclass(name = "Tap", module = "dmon._shell", frozen)]
pub struct Tap {
    rx: Mutex<Option<mpsc::Receiver<Arc<Event>>>>,
}

#[pymethods]
impl Tap {
    /// Waits up to `timeout` seconds; Ctrl-C raises KeyboardInterrupt.
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Py<PyEvent>>> {
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        let got = py.detach(|| {
            let guard = self.rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.as_ref().and_then(|rx| rx.recv_timeout(wait).ok())
        });
        py.check_signals()?;
        got.map(|e| PyEvent::wrap(py, &e)).transpose()
    }

    fn close(&self) {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
