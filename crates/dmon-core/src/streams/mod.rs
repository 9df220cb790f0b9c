//! Stream nodes: small composable functions an event flows through.
//!
//! Every node implements [`Node`]; children are other nodes. Natively written
//! nodes live here, one family per file, each registered once in its
//! family's `ENTRIES` (see [`registry`]): the Python names, `help()` and the
//! catalog chapter (docs/src/stream-functions.md) come from that registration. Nodes backed by user
//! Python (a predicate, a coroutine) implement the same trait in the
//! `dmon` crate's `python` module, and so do its outputs that send (mail,
//! `forward`…), which find the server's sinks in the [`context`].
//!
//! The contract, decided once for every node:
//! - **Spec and instance.** A node built from Python is also its own spec:
//!   [`Node::fresh`] builds an instance with the same arguments, fresh state
//!   and fresh children, sharing the counters (so `by` forks add up in
//!   `streams()` under one path).
//! - **Time.** Nodes read the time from `ctx.clock` (wall or virtual). A
//!   node that must act when time passes (windows flush when traffic
//!   stops) sets an [`Alarm`](crate::streams::timers::Alarm) to its next deadline
//!   and is woken then ([`Node::wake`]); nothing else is ever woken, so
//!   idle nodes and `by` forks cost nothing per tick. Each time-driven node
//!   says whether it follows event time or processing time.
//! - **Lists.** Windows, `rollup`, `batch`, `percentiles` emit a list of
//!   events with [`emit_list`]. A node that wants lists whole (folds through
//!   `smap`, `email`, coroutines) says so with [`Node::takes_lists`]; any
//!   other node receives the list's events one by one. A list may hold
//!   empty slots ([`empty_slot`]: `project`'s tests nothing matched yet),
//!   None to Python and left out for nodes taking events one by one.
//! - **Reload.** [`carry_over`] moves state from the previous tree to the
//!   nodes whose place and arguments are unchanged ([`Node::keep_state`]).
//! - **Checkpoints.** A node with state saves it as JSON
//!   ([`Node::save_state`]) and takes it back ([`Node::load_state`],
//!   refusing a malformed one with an error), so a restart or a cluster
//!   takeover loses nothing; the tree is started after, so deadlines in the
//!   state re-arm. `Harness::restart_between` tests a node against an
//!   uninterrupted one.
//! - **Errors.** A node's failure on an event is counted on the node and
//!   logged, or, below an `exception_stream`, sent to its handler as an
//!   event ([`catching_errors`]); other events go on.

pub mod aggregate;
pub mod capture;
pub mod context;
pub mod entry;
pub mod estimate;
pub mod filter;
pub mod folds;
pub mod index;
pub mod printer;
pub mod registry;
pub mod route;
pub mod state;
pub mod time;
pub mod timers;
pub mod transform;
pub mod value;
pub mod window;

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use serde::Serialize;

use crate::event::Event;
use crate::log_limit::LogLimiter;
use crate::streams::context::Context;
use crate::warn_limited;

pub use entry::Entry;
pub use value::{Args, BuildError, Function, Value};

pub type NodeRef = Arc<dyn Node>;

/// A failure while one node handled one event. The event is counted as an
/// error on that node; other events go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NodeError(pub String);

/// Events in, events forwarded to children, and errors, per node; and the
/// live observers of what the node lets through. Shared by a node and its
/// fresh instances (`by`'s forks).
#[derive(Default, Debug)]
pub struct NodeStats {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub errors: AtomicU64,
    pub taps: Taps,
    /// Whether the node took its state over from the previous streams at
    /// the last reload.
    pub kept_state: AtomicBool,
    /// Where the node sits in the running streams
    /// (`average_stream/average/when`), set when its root is installed;
    /// logs name the node by it.
    path: RwLock<Option<Arc<str>>>,
    /// How the registry built the node, for [`with_last_child`].
    recipe: std::sync::OnceLock<Arc<Recipe>>,
}

/// A registered stream function's arguments, as [`Entry::build`] was
/// given them: enough to build the node again with one more child.
pub struct Recipe {
    pub entry: &'static Entry,
    pub positional: Vec<Value>,
    pub named: Vec<(String, Value)>,
    pub children: Vec<NodeRef>,
}

impl std::fmt::Debug for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipe({})", self.entry.name)
    }
}

/// Remembers how the registry built `node` (its kind is the function's
/// name); nodes sharing its counters (`fresh` instances) share it.
pub(crate) fn remember_recipe(node: &NodeRef, recipe: Recipe) {
    if node.kind() == recipe.entry.name {
        // A node that is already someone's (a rebuilt `pipe` stage) keeps its own.
        let _ = node.stats().recipe.set(Arc::new(recipe));
    }
}

/// `node` built again by its stream function, with the same arguments and
/// children and `child` after them, as if written last in its call
/// (`pipe`'s stages). Nodes the registry did not build (coroutines)
/// cannot be.
pub fn with_last_child(node: &NodeRef, child: NodeRef) -> Result<NodeRef, BuildError> {
    let recipe = node.stats().recipe.get().ok_or_else(|| BuildError {
        message: "takes no next stage: only dmon.streams functions do (a coroutine takes its targets as arguments)".into(),
        wrong_type: true,
    })?;
    let mut children = recipe.children.clone();
    children.push(child);
    recipe
        .entry
        .build(recipe.positional.clone(), recipe.named.clone(), children)
}

impl NodeStats {
    /// The node's path in the running streams, once installed.
    pub fn path(&self) -> Option<Arc<str>> {
        self.path.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_path(&self, path: &str) {
        *self.path.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(path));
    }

    /// Continues the counts of the node this one replaces.
    fn add(&self, old: &NodeStats) {
        for (mine, theirs) in [
            (&self.events_in, &old.events_in),
            (&self.events_out, &old.events_out),
            (&self.errors, &old.errors),
        ] {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Events tap observers missed, all nodes together (`Stats::tap_drops`).
pub static TAP_DROPS: AtomicU64 = AtomicU64::new(0);

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

    pub fn publish(&self, event: &Arc<Event>) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut observers = self.observers.lock().unwrap_or_else(|p| p.into_inner());
        observers.retain(|tx| match tx.try_send(Arc::clone(event)) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                TAP_DROPS.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        });
        if observers.is_empty() {
            self.active.store(false, Ordering::Release);
        }
    }
}

/// What every node holds besides its own arguments and state: its children
/// and its counters.
pub struct NodeCore {
    pub children: Vec<NodeRef>,
    pub stats: Arc<NodeStats>,
}

impl NodeCore {
    pub fn new(children: Vec<NodeRef>) -> Self {
        NodeCore {
            children,
            stats: Arc::default(),
        }
    }

    /// For [`Node::fresh`]: fresh children, the same counters (new ones
    /// inside [`detached_copy`]).
    pub fn fresh(&self) -> Self {
        NodeCore {
            children: self.children.iter().map(|c| c.fresh()).collect(),
            stats: fresh_stats(&self.stats),
        }
    }
}

/// Each copied node's counters, by the original's counters' address.
type StatsCopies = Vec<(usize, Arc<NodeStats>)>;

thread_local! {
    /// While [`detached_copy`] runs on this thread: the copies so far.
    static DETACHING: std::cell::RefCell<Option<StatsCopies>> =
        const { std::cell::RefCell::new(None) };
}

/// The counters a fresh instance gets: the same as `stats`, except inside
/// [`detached_copy`], where each node gets new ones.
pub fn fresh_stats(stats: &Arc<NodeStats>) -> Arc<NodeStats> {
    DETACHING.with_borrow_mut(|copying| match copying {
        None => Arc::clone(stats),
        Some(copied) => {
            let key = Arc::as_ptr(stats) as usize;
            if let Some((_, new)) = copied.iter().find(|(k, _)| *k == key) {
                // Two places in one tree share counters only as forks do.
                return Arc::clone(new);
            }
            let new = Arc::new(NodeStats::default());
            if let Some(recipe) = stats.recipe.get() {
                let _ = new.recipe.set(Arc::clone(recipe));
            }
            copied.push((key, Arc::clone(&new)));
            new
        }
    })
}

/// Whether a [`detached_copy`] is being made on this thread (a node that
/// cannot be copied, like a plain Python generator, must not be shared).
pub fn detaching() -> bool {
    DETACHING.with_borrow(|d| d.is_some())
}

/// The counters of a [`detached_copy`], found by the original node's.
pub struct CopiedStats(StatsCopies);

impl CopiedStats {
    /// The copy's counters for the node whose counters are `original`.
    pub fn of(&self, original: &NodeStats) -> Option<&Arc<NodeStats>> {
        let key = original as *const NodeStats as usize;
        self.0.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }
}

/// A fresh instance of `node`'s tree whose counters (and taps) are its own:
/// a rehearsal of a live tree must not count into the live tree's
/// `streams()` nor show in its taps.
pub fn detached_copy(node: &NodeRef) -> (NodeRef, CopiedStats) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DETACHING.set(None);
        }
    }
    DETACHING.set(Some(Vec::new()));
    let reset = Reset;
    let copy = node.fresh();
    let copied = DETACHING.take().unwrap_or_default();
    drop(reset);
    (copy, CopiedStats(copied))
}

/// The [`Node`] methods every node answers from its `core` field.
#[macro_export]
macro_rules! node_core {
    ($kind:literal) => {
        fn kind(&self) -> &'static str {
            $kind
        }
        $crate::node_core!();
    };
    // For nodes that answer `kind` themselves (one struct, several names).
    () => {
        fn children(&self) -> &[$crate::streams::NodeRef] {
            &self.core.children
        }
        fn stats(&self) -> &$crate::streams::NodeStats {
            &self.core.stats
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    };
}

/// [`Node::keep_state`] for a node whose state is the `Mutex` in field
/// `$field`: takes the old node's state; and [`Node::copy_state`], which
/// clones it.
#[macro_export]
macro_rules! keep_state_in {
    ($field:ident) => {
        fn keep_state(&self, old: &dyn $crate::streams::Node) -> bool {
            match old.as_any().downcast_ref::<Self>() {
                Some(old) => {
                    $crate::streams::take_state(&self.$field, &old.$field);
                    true
                }
                None => false,
            }
        }
        fn copy_state(&self, from: &dyn $crate::streams::Node) -> bool {
            match from.as_any().downcast_ref::<Self>() {
                Some(from) if !std::ptr::eq(self, from) => {
                    // Cloned before this node's lock is taken: never two at once.
                    let state = $crate::streams::lock(&from.$field).clone();
                    *$crate::streams::lock(&self.$field) = state;
                    true
                }
                _ => false,
            }
        }
    };
}

/// Moves `old`'s state into `mine` (the old node is being replaced).
pub fn take_state<S>(mine: &Mutex<S>, old: &Mutex<S>) {
    if std::ptr::eq(mine, old) {
        return;
    }
    std::mem::swap(&mut *lock(mine), &mut *lock(old));
}

/// Locks a node's state; a panic elsewhere does not poison the stream.
pub fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub trait Node: Send + Sync + 'static {
    /// The stream function's name, e.g. `"average"`.
    fn kind(&self) -> &'static str;
    /// How the node was built, without its children, e.g. `average(2)`.
    /// Reload keeps a node's state only when this is unchanged.
    fn describe(&self) -> String {
        self.kind().to_owned()
    }
    fn children(&self) -> &[NodeRef] {
        &[]
    }
    fn stats(&self) -> &NodeStats;
    /// Handles one event, forwarding to children with [`emit`] as it sees fit.
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError>;
    /// Whether [`Node::handle_list`] takes lists whole; otherwise a list's
    /// events arrive one by one through [`Node::handle`].
    fn takes_lists(&self) -> bool {
        false
    }
    /// Handles a list of events (from a window, `rollup`, `percentiles`).
    fn handle_list(&self, ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        events.iter().try_for_each(|e| self.handle(ctx, e))
    }
    /// Runs the node's own timers due at `now` (the context's clock): the
    /// context's [`Timers`](crate::streams::timers::Timers) call it at the deadline
    /// the node's [`Alarm`](crate::streams::timers::Alarm) was set to, or later
    /// when the dispatch thread was busy. Not its children's: each node
    /// with timers has its own alarm.
    fn wake(&self, _ctx: &Context, _now: f64) {}
    /// The node's alarm, if it has timers (see [`Node::wake`]).
    fn alarm(&self) -> Option<&crate::streams::timers::Alarm> {
        None
    }
    /// The node's tree now runs (installed, reloaded with state taken
    /// over, restored from a checkpoint): a node with timers sets its alarm
    /// to what its state needs, then starts its children, as this default
    /// does.
    fn start(&self, ctx: &Context) {
        start_children(self, ctx);
    }
    /// The node's tree no longer runs (a reload replaced it): its alarms
    /// must not fire into it. Stops its children, as this default does.
    fn stop(&self) {
        stop_children(self);
    }
    /// Time ends for the tree (a clean shutdown, the end of a replay or of
    /// `dmon.testing.run(..., until=)`): a node holding events for a
    /// deadline (a window, a rate's interval) forwards now what it would
    /// forward then ([`flush_due`]); then its children flush, as this
    /// default does, so what it forwarded is flushed below it too.
    fn flush(&self, ctx: &Context) {
        flush_children(self, ctx);
    }
    /// A new instance: the same arguments and counters, fresh state, and
    /// fresh children. `by` builds one per key.
    fn fresh(&self) -> NodeRef;
    /// Takes the state of `old`, the node at the same place in the streams
    /// being replaced, built with the same arguments; true if it had state
    /// to take. Stateless nodes keep the default.
    fn keep_state(&self, _old: &dyn Node) -> bool {
        false
    }
    /// Takes a copy of the state of `from`, the node at the same place in
    /// the tree this node's tree was copied from, leaving `from` as it is;
    /// true if it had state to copy (see [`copy_states`]). Nodes whose
    /// state cannot be copied (a coroutine's Python frame) keep the
    /// default and start afresh.
    fn copy_state(&self, _from: &dyn Node) -> bool {
        false
    }
    /// A live fact for `streams()`, such as `by`'s fork count.
    fn detail(&self) -> Option<String> {
        None
    }
    /// The node's own state (not its children's) as JSON, for a cluster
    /// checkpoint ([`save_tree`]); `None`: nothing worth keeping, the node
    /// starts afresh on the worker that takes over.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Replaces the node's state with one [`Node::save_state`] gave, by a
    /// node with the same place and description.
    fn load_state(&self, _state: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    fn as_any(&self) -> &dyn Any;
}

/// [`Node::start`] for each child.
pub fn start_children(node: &(impl Node + ?Sized), ctx: &Context) {
    for child in node.children() {
        child.start(ctx);
    }
}

/// [`Node::flush`] for each child.
pub fn flush_children(node: &(impl Node + ?Sized), ctx: &Context) {
    for child in node.children() {
        child.flush(ctx);
    }
}

/// [`Node::flush`] for a node whose next deadline is `due`: wakes it as if
/// that deadline had come, then flushes its children.
pub fn flush_due(node: &(impl Node + ?Sized), ctx: &Context, due: Option<f64>) {
    if let Some(at) = due {
        node.wake(ctx, at.max(ctx.now()));
    }
    flush_children(node, ctx);
}

/// [`Node::stop`] for each child.
pub fn stop_children(node: &(impl Node + ?Sized)) {
    for child in node.children() {
        child.stop();
    }
}

/// [`Node::start`] and [`Node::stop`] for a node whose alarm is in field
/// `alarm` and whose state (field `state`) gives its next deadline through
/// `self.$due(&state)`.
#[macro_export]
macro_rules! wakes_at {
    ($due:ident) => {
        fn alarm(&self) -> Option<&$crate::streams::timers::Alarm> {
            Some(&self.alarm)
        }
        fn start(&self, ctx: &$crate::streams::context::Context) {
            self.alarm.resume();
            let at = self.$due(&$crate::streams::lock(&self.state));
            self.alarm.set(&ctx.timers, at);
            $crate::streams::start_children(self, ctx);
        }
        fn stop(&self) {
            self.alarm.stop();
            $crate::streams::stop_children(self);
        }
    };
}

/// [`Node::flush`] for a node whose state (field `state`) gives its next
/// deadline through `self.$due(&state)`, and which holds events for it.
#[macro_export]
macro_rules! flushes_at {
    ($due:ident) => {
        fn flush(&self, ctx: &$crate::streams::context::Context) {
            let due = self.$due(&$crate::streams::lock(&self.state));
            $crate::streams::flush_due(self, ctx, due);
        }
    };
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
        node_failed(node, ctx, &err, std::slice::from_ref(event));
    }
}

/// The place of a list's event that is not there (Riemann's nil in
/// `project`'s list): one shared event, told apart by its address.
pub fn empty_slot() -> &'static Arc<Event> {
    static EMPTY: std::sync::LazyLock<Arc<Event>> =
        std::sync::LazyLock::new(|| Arc::new(Event::default()));
    &EMPTY
}

pub fn is_empty_slot(event: &Arc<Event>) -> bool {
    Arc::ptr_eq(event, empty_slot())
}

/// A list's events, its empty slots left out.
pub fn present(events: &[Arc<Event>]) -> impl Iterator<Item = &Arc<Event>> {
    events.iter().filter(|e| !is_empty_slot(e))
}

/// Gives a list of events to `node`: whole if it takes lists, else one by
/// one (empty slots left out).
pub fn push_list(node: &dyn Node, ctx: &Context, events: &[Arc<Event>]) {
    if !node.takes_lists() {
        present(events).for_each(|e| push(node, ctx, e));
        return;
    }
    let stats = node.stats();
    stats
        .events_in
        .fetch_add(present(events).count() as u64, Ordering::Relaxed);
    if node.children().is_empty() {
        present(events).for_each(|e| stats.taps.publish(e));
    }
    if let Err(err) = node.handle_list(ctx, events) {
        node_failed(node, ctx, &err, events);
    }
}

/// Counts `node`'s failure on `events` (one event, or a list it took
/// whole); sends it as an event to the innermost `exception_stream`
/// handler in force, else logs it.
pub(crate) fn node_failed(node: &dyn Node, ctx: &Context, err: &NodeError, events: &[Arc<Event>]) {
    node.stats().errors.fetch_add(1, Ordering::Relaxed);
    let handled = send_to_error_handler(node, ctx, err, events);
    let recorded = FAILURES.with_borrow_mut(|failures| match failures {
        Some(failures) => {
            failures.push((node.stats() as *const NodeStats as usize, err.0.clone()));
            true
        }
        None => false,
    });
    if recorded || handled {
        // A trace shows it, or the handler has it; the server's logs are
        // about the live streams' unhandled failures.
        return;
    }
    let what = match events {
        [one] => one.summary(),
        _ => {
            let first = events.first().map(|e| e.summary()).unwrap_or_default();
            format!("list of {} ({first}, …)", events.len())
        }
    };
    warn_limited!(
        NODE_ERROR_LOG,
        "{} failed on event {what}: {err}",
        label(node)
    );
}

thread_local! {
    /// The handlers of the `exception_stream`s whose subtrees run on this
    /// thread now, innermost last (see [`catching_errors`]).
    static ERROR_HANDLERS: std::cell::RefCell<Vec<NodeRef>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` (an `exception_stream`'s children at work, or starting) with
/// the failures of the nodes it runs on this thread sent to `handler` as
/// events ([`route::error_event`]); alarms set meanwhile keep the handler
/// for their wake-ups ([`error_handlers`]).
pub fn catching_errors<R>(handler: &NodeRef, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            ERROR_HANDLERS.with_borrow_mut(|h| h.pop());
        }
    }
    ERROR_HANDLERS.with_borrow_mut(|h| h.push(Arc::clone(handler)));
    let _pop = Pop;
    f()
}

/// The handlers in force on this thread, for an alarm set now to wake
/// its node under; None outside any `exception_stream`.
pub fn error_handlers() -> Option<Box<[std::sync::Weak<dyn Node>]>> {
    ERROR_HANDLERS.with_borrow(|h| (!h.is_empty()).then(|| h.iter().map(Arc::downgrade).collect()))
}

/// Runs `f` (a node's wake-up) under the handlers [`error_handlers`] gave
/// when its alarm was set, in place of this thread's.
pub fn with_error_handlers<R>(
    handlers: Option<&[std::sync::Weak<dyn Node>]>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore(Vec<NodeRef>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ERROR_HANDLERS.set(std::mem::take(&mut self.0));
        }
    }
    let Some(handlers) = handlers else {
        if ERROR_HANDLERS.with_borrow(|h| h.is_empty()) {
            return f();
        }
        let _restore = Restore(ERROR_HANDLERS.take());
        return f();
    };
    let live = handlers
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .collect();
    let _restore = Restore(ERROR_HANDLERS.replace(live));
    f()
}

/// Sends `node`'s failure to the innermost handler in force, if any; true
/// if there was one. The handler's own failures go to the next one out
/// (Riemann's rescue happens outside the inner binding).
fn send_to_error_handler(
    node: &dyn Node,
    ctx: &Context,
    err: &NodeError,
    events: &[Arc<Event>],
) -> bool {
    struct PushBack(Option<NodeRef>);
    impl Drop for PushBack {
        fn drop(&mut self) {
            if let Some(handler) = self.0.take() {
                ERROR_HANDLERS.with_borrow_mut(|h| h.push(handler));
            }
        }
    }
    let Some(handler) = ERROR_HANDLERS.with_borrow_mut(|h| h.pop()) else {
        return false;
    };
    let handler = PushBack(Some(handler));
    let event = Arc::new(route::error_event(node, err, events, ctx.now()));
    if let Some(h) = &handler.0 {
        push(&**h, ctx, &event);
    }
    true
}

thread_local! {
    /// While [`recording_failures`] runs on this thread: each failure, by
    /// the failing node's counters' address, with its message.
    static FAILURES: std::cell::RefCell<Option<Vec<(usize, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, keeping the failures of the nodes it runs on this thread
/// (instead of logging them): `(the node's counters' address, message)`.
pub fn recording_failures<R>(f: impl FnOnce() -> R) -> (R, Vec<(usize, String)>) {
    struct Reset(Option<Vec<(usize, String)>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            FAILURES.set(self.0.take());
        }
    }
    let mut reset = Reset(FAILURES.replace(Some(Vec::new())));
    let out = f();
    let failures = FAILURES.replace(reset.0.take()).unwrap_or_default();
    (out, failures)
}

/// How logs name a node: its path and how it was built,
/// `average_stream/average/when: when(lambda e: e.metric > 3)`.
pub fn label(node: &dyn Node) -> String {
    match node.stats().path() {
        Some(path) => format!("{path}: {}", node.describe()),
        None => node.describe(),
    }
}

/// Shows `node`'s observers an event it forwards: a leaf's already saw what
/// arrived ([`push`]), so they do not see it twice.
fn publish_out(node: &dyn Node, event: &Arc<Event>) {
    if !node.children().is_empty() {
        node.stats().taps.publish(event);
    }
}

/// Forwards `event` from `node` to each of its children.
pub fn emit(node: &dyn Node, ctx: &Context, event: &Arc<Event>) {
    node.stats().events_out.fetch_add(1, Ordering::Relaxed);
    publish_out(node, event);
    for child in node.children() {
        push(&**child, ctx, event);
    }
}

/// Forwards `event` from `node` to one of its children (routing nodes).
pub fn emit_to(node: &dyn Node, child: &dyn Node, ctx: &Context, event: &Arc<Event>) {
    node.stats().events_out.fetch_add(1, Ordering::Relaxed);
    node.stats().taps.publish(event);
    push(child, ctx, event);
}

/// Forwards a list of events from `node` to each of its children, as one
/// list (see [`Node::takes_lists`]). An empty list is not sent.
pub fn emit_list(node: &dyn Node, ctx: &Context, events: &[Arc<Event>]) {
    emit_list_to(node, node.children(), ctx, events);
}

/// Like [`emit_list`], to some of `node`'s children (routing nodes).
pub fn emit_list_to(node: &dyn Node, children: &[NodeRef], ctx: &Context, events: &[Arc<Event>]) {
    if events.is_empty() {
        return;
    }
    let stats = node.stats();
    stats
        .events_out
        .fetch_add(present(events).count() as u64, Ordering::Relaxed);
    present(events).for_each(|e| publish_out(node, e));
    for child in children {
        push_list(&**child, ctx, events);
    }
}

/// Reload: for each node of `new` whose place and description match a node
/// of `old`, takes that node's state ([`Node::keep_state`]) and continues
/// its counters. The same node object in both trees is left as it is.
pub fn carry_over(new: &dyn Node, old: &dyn Node) {
    for_each_same_node(new, old, &mut |new, old| {
        let kept = new.keep_state(old);
        new.stats().kept_state.store(kept, Ordering::Relaxed);
        new.stats().add(old.stats());
    });
}

/// Like [`carry_over`], state only: for `by`, whose forks share their
/// counters with the templates that already carried them over.
pub fn keep_states(new: &dyn Node, old: &dyn Node) {
    for_each_same_node(new, old, &mut |new, old| {
        new.keep_state(old);
    });
}

/// For a copy of `from`'s tree (a [`detached_copy`]): each node of `new`
/// takes a copy of the state of the node at the same place in `from`
/// ([`Node::copy_state`]); `from` is left as it is.
pub fn copy_states(new: &dyn Node, from: &dyn Node) {
    for_each_same_node(new, from, &mut |new, from| {
        new.copy_state(from);
    });
}

/// Visits, parents first, each node of `new` with the node of `old` at the
/// same place (the same path segments: kind, and position among siblings
/// of that kind, `when#1`) when both were built alike (kind and
/// description). The same node object in both trees is left out, with
/// everything below it.
fn for_each_same_node(new: &dyn Node, old: &dyn Node, visit: &mut dyn FnMut(&dyn Node, &dyn Node)) {
    if std::ptr::addr_eq(new, old) {
        return;
    }
    if new.kind() == old.kind() && new.describe() == old.describe() {
        visit(new, old);
    }
    for (segment, child) in segments(new.children()) {
        if let Some((_, old_child)) = segments(old.children()).find(|(s, _)| *s == segment) {
            for_each_same_node(&**child, &**old_child, visit);
        }
    }
}

/// Each child with its path segment: its kind, with `#i` when siblings
/// share the kind.
pub(crate) fn segments(children: &[NodeRef]) -> impl Iterator<Item = (String, &NodeRef)> {
    children.iter().enumerate().map(move |(i, child)| {
        let same_kind = children.iter().filter(|c| c.kind() == child.kind()).count();
        let segment = if same_kind > 1 {
            format!("{}#{i}", child.kind())
        } else {
            child.kind().to_owned()
        };
        (segment, child)
    })
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
    /// Took its state over from the previous streams at the last reload.
    pub kept_state: bool,
    /// A live fact, such as `by`'s fork count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Visits `node` and its descendants, depth first, with their paths: the
/// root's (`average_stream/average`), then the kind of each node below it
/// (`average_stream/average/when`). Siblings of the same kind are told
/// apart by their position: `when#0`, `when#1`.
pub fn walk_tree(path: &str, node: &dyn Node, visit: &mut dyn FnMut(&str, &dyn Node)) {
    visit(path, node);
    for (segment, child) in segments(node.children()) {
        walk_tree(&format!("{path}/{segment}"), &**child, visit);
    }
}

/// [`walk_tree`], handing out each node's shared reference.
pub fn walk_tree_refs(path: &str, node: &NodeRef, visit: &mut dyn FnMut(&str, &NodeRef)) {
    visit(path, node);
    for (segment, child) in segments(node.children()) {
        walk_tree_refs(&format!("{path}/{segment}"), child, visit);
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
            kept_state: s.kept_state.load(Ordering::Relaxed),
            detail: n.detail(),
        });
    });
}

/// One node's saved state in a checkpoint, found again by its path and
/// description (as reload matches nodes).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SavedState {
    pub path: String,
    pub describe: String,
    pub state: serde_json::Value,
}

/// The state of every node of a tree that has some ([`Node::save_state`]),
/// with its path below `path`.
pub fn save_tree(path: &str, node: &dyn Node) -> Vec<SavedState> {
    let mut out = Vec::new();
    walk_tree(path, node, &mut |path, n| {
        if let Some(state) = n.save_state() {
            out.push(SavedState {
                path: path.to_owned(),
                describe: n.describe(),
                state,
            });
        }
    });
    out
}

/// Gives each node of a tree the state saved at its path by a node built
/// the same way; returns how many took one, and the errors of those that
/// refused theirs (they keep their own state).
pub fn load_tree(path: &str, node: &dyn Node, saved: &[SavedState]) -> (usize, Vec<String>) {
    let by_path: std::collections::HashMap<&str, &SavedState> =
        saved.iter().map(|s| (s.path.as_str(), s)).collect();
    let (mut loaded, mut errors) = (0, Vec::new());
    walk_tree(path, node, &mut |path, n| {
        let Some(s) = by_path.get(path) else { return };
        if s.describe != n.describe() {
            return;
        }
        match n.load_state(s.state.clone()) {
            Ok(()) => loaded += 1,
            Err(e) => errors.push(format!("{path}: {e}")),
        }
    });
    (loaded, errors)
}

/// An event as checkpoints keep it: its JSON.
pub fn event_to_json(e: &Event) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or(serde_json::Value::Null)
}

pub fn event_from_json(v: serde_json::Value) -> Result<Arc<Event>, String> {
    serde_json::from_value::<Event>(v)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Field `key` of a saved state (an object) as `T`; a missing field reads
/// as null, so only an `Option` may be missing. Events read as `Event`
/// (see [`arcs`]).
pub fn saved<T: serde::de::DeserializeOwned>(
    state: &serde_json::Value,
    key: &str,
) -> Result<T, String> {
    if !state.is_object() {
        return Err(format!("the saved state is not an object: {state}"));
    }
    let v = state.get(key).cloned().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(v).map_err(|e| format!("saved `{key}`: {e}"))
}

/// Field `key` of a saved state: an event, or null for none, as nodes hold
/// it.
pub fn saved_event(state: &serde_json::Value, key: &str) -> Result<Option<Arc<Event>>, String> {
    Ok(saved::<Option<Event>>(state, key)?.map(Arc::new))
}

/// Saved events as the shared events nodes hold.
pub fn arcs(events: Vec<Event>) -> Vec<Arc<Event>> {
    events.into_iter().map(Arc::new).collect()
}

/// Events as checkpoints keep them: a list of their JSON.
pub fn events_to_json<'a>(events: impl IntoIterator<Item = &'a Arc<Event>>) -> serde_json::Value {
    events.into_iter().map(|e| event_to_json(e)).collect()
}

/// A metric as checkpoints keep it: an integer stays one.
pub fn number_to_json(n: crate::event::Number) -> serde_json::Value {
    match n {
        crate::event::Number::Int(i) => i.into(),
        crate::event::Number::Float(f) => f.into(),
    }
}

pub fn number_from_json(v: &serde_json::Value) -> Result<crate::event::Number, String> {
    if let Some(i) = v.as_i64() {
        return Ok(crate::event::Number::Int(i));
    }
    v.as_f64()
        .map(crate::event::Number::Float)
        .ok_or_else(|| format!("not a number: {v}"))
}

/// Quotes a string argument for `describe` strings.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}
