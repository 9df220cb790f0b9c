//! Stream nodes: small composable functions an event flows through.
//!
//! Every node implements [`Node`]; children are other nodes. Natively written
//! nodes live here, one family per file; nodes backed by user Python (a
//! predicate, a coroutine) implement the same trait in `crate::python`.
//!
//! | file | nodes |
//! |---|---|
//! | [`filter`] | `when(pred, *children)` |
//! | [`aggregate`] | `average(places, *children)` |
//! | [`output`] | `printer(prefix)`, `email(*to)` |
//! | [`index`] | `index()` |

pub mod aggregate;
pub mod filter;
pub mod index;
pub mod output;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use serde::Serialize;

use crate::context::Context;
use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::warn_limited;

pub type NodeRef = Arc<dyn Node>;

/// A failure while one node handled one event. The event is counted as an
/// error on that node; other events go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NodeError(pub String);

/// Events in, events forwarded to children, and errors, per node; and the
/// live observers of what the node lets through.
#[derive(Default, Debug)]
pub struct NodeStats {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub errors: AtomicU64,
    pub taps: Taps,
    /// Where the node sits in the running streams
    /// (`average_stream/average/when`), set when its root is installed;
    /// logs name the node by it.
    path: RwLock<Option<Arc<str>>>,
}

impl NodeStats {
    /// The node's path in the running streams, once installed.
    pub fn path(&self) -> Option<Arc<str>> {
        self.path.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_path(&self, path: &str) {
        *self.path.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(path));
    }
}

/// Observers of one node's events (the shell's `tap`). Costs one relaxed
/// load per event while nobody watches; a slow observer misses events
/// rather than slowing the pipeline.
#[derive(Default, Debug)]
pub struct Taps {
    active: AtomicBool,
    observers: Mutex<Vec<mpsc::SyncSender<Arc<Event>>>>,
}

impl Taps {
    /// Starts observing; drop the receiver to stop.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        self.observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        self.active.store(true, Ordering::Release);
        rx
    }

    fn publish(&self, event: &Arc<Event>) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut observers = self.observers.lock().unwrap_or_else(|p| p.into_inner());
        observers.retain(|tx| {
            !matches!(
                tx.try_send(Arc::clone(event)),
                Err(mpsc::TrySendError::Disconnected(_))
            )
        });
        if observers.is_empty() {
            self.active.store(false, Ordering::Release);
        }
    }
}

pub trait Node: Send + Sync {
    /// The stream function's name, e.g. `"average"`.
    fn kind(&self) -> &'static str;
    /// How the node was built, e.g. `average(2)`.
    fn describe(&self) -> String {
        self.kind().to_owned()
    }
    fn children(&self) -> &[NodeRef] {
        &[]
    }
    fn stats(&self) -> &NodeStats;
    /// Handles one event, forwarding to children with [`emit`] as it sees fit.
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError>;
}

static NODE_ERROR_LOG: LogLimiter = LogLimiter::new(10);

/// Gives `event` to `node`, counting it; an error is counted and logged on
/// that node and goes no further.
pub fn push(node: &dyn Node, ctx: &Context, event: &Arc<Event>) {
    node.stats().events_in.fetch_add(1, Ordering::Relaxed);
    if node.children().is_empty() {
        // Nothing leaves a leaf, so its observers see what arrives.
        node.stats().taps.publish(event);
    }
    if let Err(err) = node.handle(ctx, event) {
        node.stats().errors.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            NODE_ERROR_LOG,
            "{} failed on event {}: {err}",
            label(node),
            event.summary()
        );
    }
}

/// How logs name a node: its path and how it was built,
/// `average_stream/average/when: when(<lambda> at streams.py:12)`.
pub fn label(node: &dyn Node) -> String {
    match node.stats().path() {
        Some(path) => format!("{path}: {}", node.describe()),
        None => node.describe(),
    }
}

/// Forwards `event` from `node` to each of its children.
pub fn emit(node: &dyn Node, ctx: &Context, event: &Arc<Event>) {
    node.stats().events_out.fetch_add(1, Ordering::Relaxed);
    node.stats().taps.publish(event);
    for child in node.children() {
        push(&**child, ctx, event);
    }
}

/// A node's counters, for `stats` output and the shell.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeSnapshot {
    /// Root name, then the kind of each node from the root down:
    /// `average_stream/average/when/printer`.
    pub path: String,
    pub kind: &'static str,
    pub describe: String,
    #[serde(rename = "in")]
    pub events_in: u64,
    #[serde(rename = "out")]
    pub events_out: u64,
    pub errors: u64,
}

/// Visits `node` and its descendants, depth first, with their paths: the
/// root's (`average_stream/average`), then the kind of each node below it
/// (`average_stream/average/when`). Siblings of the same kind are told
/// apart by their position: `when#0`, `when#1`.
pub fn walk_tree(path: &str, node: &dyn Node, visit: &mut dyn FnMut(&str, &dyn Node)) {
    visit(path, node);
    let children = node.children();
    for (i, child) in children.iter().enumerate() {
        let same_kind = children.iter().filter(|c| c.kind() == child.kind()).count();
        let segment = if same_kind > 1 {
            format!("{}#{i}", child.kind())
        } else {
            child.kind().to_owned()
        };
        walk_tree(&format!("{path}/{segment}"), &**child, visit);
    }
}

/// Tells every node of a root's tree its path, for logs.
pub fn assign_paths(root_path: &str, node: &dyn Node) {
    walk_tree(root_path, node, &mut |path, n| n.stats().set_path(path));
}

/// Appends a snapshot of `node` and its descendants (see [`walk_tree`]).
pub fn snapshot_tree(path: &str, node: &dyn Node, out: &mut Vec<NodeSnapshot>) {
    walk_tree(path, node, &mut |path, n| {
        let s = n.stats();
        out.push(NodeSnapshot {
            path: path.to_owned(),
            kind: n.kind(),
            describe: n.describe(),
            events_in: s.events_in.load(Ordering::Relaxed),
            events_out: s.events_out.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
        });
    });
}

/// Quotes a string argument for `describe` strings.
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}
