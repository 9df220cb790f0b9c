//! The in-process harness stream nodes are tested with: build a node from
//! the registry (the same path Python takes), feed it events under a
//! [`VirtualClock`], and read what reached the collecting [`Sink`]s. No
//! server, no threads of its own, no sleeping.
//!
//! ```ignore
//! let h = Harness::new();
//! let out = h.sink("out");
//! let rate = h.build("rate", vals![5], vec![], vec![out.node()]);
//! h.send(&rate, ev(r#"{"host":"a","metric":10,"time":1}"#));
//! h.advance_to(&rate, 5.0);
//! assert_eq!(out.metrics(), [Some(2.0)]);
//! ```
//!
//! Time follows the events, as in Riemann's test mode: an event whose
//! `time` is later than the clock moves the clock there before it is
//! pushed; `advance_to`/`advance_by` move it explicitly. Either way the
//! clock steps through every wake-up on the way, each at its deadline
//! ([`timers::advance`], the driver rehearsals use too); `jump_to` moves it
//! at once, as a stalled server's clock would, and wakes what is due there.
//! A tree's timers start the first time the harness runs it, once the clock
//! is where that first call moved it (as a server starts the roots it
//! installs).

use std::sync::{Arc, Mutex};

use crate::clock::{Clock, VirtualClock};
use crate::codec::json;
use crate::console::LineSink;
use crate::event::Event;
use crate::streams::context::Context;
use crate::streams::timers;
use crate::streams::value::{BuildError, Function, Value};
use crate::streams::{lock, push, registry, Entry, Node, NodeCore, NodeError, NodeRef};

/// Builds the `Vec<Value>` of a stream function's positional arguments:
/// `vals![5, "host"]`.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => { vec![$($crate::streams::value::Value::from($v)),*] };
}

/// A clock, a context and the lines printed, for one test.
pub struct Harness {
    pub clock: Arc<VirtualClock>,
    pub ctx: Arc<Context>,
    printed: Arc<Printed>,
    /// The trees started (by address), each once.
    started: Mutex<Vec<NodeRef>>,
    /// Where [`Harness::build`] finds stream functions: the core's
    /// registry, unless a crate above gives its whole catalog.
    find: fn(&str) -> Option<&'static Entry>,
}

#[derive(Default)]
struct Printed(Mutex<Vec<String>>);

impl LineSink for Printed {
    fn write_line(&self, line: &str) {
        lock(&self.0).push(line.to_owned());
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose clock starts at 0.
    pub fn new() -> Self {
        Self::at(0.0)
    }

    pub fn at(t: f64) -> Self {
        let clock = VirtualClock::starting_at(t);
        let printed = Arc::new(Printed::default());
        // Nothing is sent from here: an output node that would send fails.
        let ctx = Arc::new(Context::with_clock(clock.clone(), printed.clone()));
        Harness {
            clock,
            ctx,
            printed,
            started: Mutex::default(),
            find: registry::find,
        }
    }

    /// Building stream functions from `find` (a crate's whole catalog,
    /// its own outputs with the core's functions).
    pub fn with_catalog(mut self, find: fn(&str) -> Option<&'static Entry>) -> Self {
        self.find = find;
        self
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// A leaf that records what reaches it.
    pub fn sink(&self, name: &str) -> Sink {
        Sink(Arc::new(SinkNode {
            name: name.to_owned(),
            got: Arc::default(),
            core: NodeCore::new(Vec::new()),
        }))
    }

    /// Builds the registered stream function `name`; panics on bad
    /// arguments (use [`Harness::try_build`] to test those).
    pub fn build(
        &self,
        name: &str,
        positional: Vec<Value>,
        named: Vec<(String, Value)>,
        children: Vec<NodeRef>,
    ) -> NodeRef {
        self.try_build(name, positional, named, children)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn try_build(
        &self,
        name: &str,
        positional: Vec<Value>,
        named: Vec<(String, Value)>,
        children: Vec<NodeRef>,
    ) -> Result<NodeRef, BuildError> {
        (self.find)(name)
            .unwrap_or_else(|| panic!("no stream function {name:?} is registered"))
            .build(positional, named, children)
    }

    /// Starts `node`'s tree (its timers) the first time it is used, and
    /// runs what its state says is already due (a state taken over from
    /// an older node), as a server's next tick would.
    fn start(&self, node: &NodeRef) {
        let mut started = lock(&self.started);
        if !started.iter().any(|n| Arc::ptr_eq(n, node)) {
            started.push(Arc::clone(node));
            drop(started);
            node.start(&self.ctx);
            self.ctx.run_due_wakeups(self.now());
        }
    }

    /// Pushes one event into `node`, first moving the clock to the event's
    /// time when that is later (waking what is due on the way).
    pub fn send(&self, node: &NodeRef, event: Event) {
        if let Some(t) = event.time {
            if t.as_f64() > self.now() {
                self.advance_to(node, t.as_f64());
            }
        }
        self.start(node);
        push(&**node, &self.ctx, &Arc::new(event));
    }

    /// Sends each event in turn.
    pub fn send_all(&self, node: &NodeRef, events: impl IntoIterator<Item = Event>) {
        events.into_iter().for_each(|e| self.send(node, e));
    }

    /// Moves the clock to `t`, waking each node at its deadlines on the
    /// way.
    pub fn advance_to(&self, node: &NodeRef, t: f64) {
        timers::advance(&self.clock, t, &*self.ctx);
        self.start(node);
    }

    /// Moves the clock to `t` at once and wakes what is due there, each
    /// node once: what a server does after its dispatch thread stalled.
    pub fn jump_to(&self, node: &NodeRef, t: f64) {
        self.clock.advance_to(t);
        self.ctx.run_due_wakeups(t);
        self.start(node);
    }

    pub fn advance_by(&self, node: &NodeRef, dt: f64) {
        self.advance_to(node, self.now() + dt);
    }

    /// Ends time for `node`'s tree, as a clean shutdown does: what it
    /// holds for a deadline is forwarded now ([`Node::flush`]).
    pub fn flush(&self, node: &NodeRef) {
        self.start(node);
        node.flush(&self.ctx);
    }

    /// Runs `before` then `after` through two trees `build` makes (given
    /// the leaf to forward to): one uninterrupted, one restarted between
    /// them from a checkpoint (its states saved, through JSON, loaded into
    /// a fresh build, the old tree stopped). Asserts both forwarded the
    /// same during `after`, and returns that.
    pub fn restart_between(
        &self,
        build: impl Fn(NodeRef) -> NodeRef,
        before: &[Step],
        after: &[Step],
    ) -> Vec<Received> {
        let (kept_out, restarted_out) = (self.sink("kept"), self.sink("restarted"));
        let kept = build(kept_out.node());
        let old = build(restarted_out.node());
        self.run_steps(before, &[&kept, &old]);
        let saved = crate::streams::save_tree("t", &*old);
        let text = serde_json::to_string(&saved).expect("a checkpoint is JSON");
        let saved: Vec<crate::streams::SavedState> =
            serde_json::from_str(&text).expect("a checkpoint reads back");
        old.stop();
        let new = build(restarted_out.node());
        let (_, errors) = crate::streams::load_tree("t", &*new, &saved);
        assert!(errors.is_empty(), "{errors:?}");
        // Started now, as a restore starts the trees it loaded.
        self.start(&new);
        kept_out.take();
        restarted_out.take();
        self.run_steps(after, &[&kept, &new]);
        let got = kept_out.take();
        assert_eq!(restarted_out.take(), got, "restarted vs uninterrupted");
        got
    }

    fn run_steps(&self, steps: &[Step], trees: &[&NodeRef]) {
        for step in steps {
            for tree in trees {
                match step {
                    Step::Send(e) => self.send(tree, e.clone()),
                    Step::AdvanceTo(t) => self.advance_to(tree, *t),
                }
            }
        }
    }

    /// What `printer` nodes wrote, and forgets it.
    pub fn printed(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.printed.0))
    }
}

/// One step of [`Harness::restart_between`].
#[derive(Clone)]
pub enum Step {
    Send(Event),
    AdvanceTo(f64),
}

/// An event from JSON, for tests: `ev(r#"{"host":"a","metric":1,"time":5}"#)`.
pub fn ev(json_text: &str) -> Event {
    json::decode_event(json_text).unwrap_or_else(|e| panic!("bad test event {json_text}: {e}"))
}

/// A function for tests, from a Rust closure.
pub fn func(
    name: &str,
    f: impl Fn(&[Value]) -> Result<Value, NodeError> + Send + Sync + 'static,
) -> Value {
    struct Closure<F>(String, F);
    impl<F: Fn(&[Value]) -> Result<Value, NodeError> + Send + Sync + 'static> Function for Closure<F> {
        fn call(&self, args: &[Value]) -> Result<Value, NodeError> {
            (self.1)(args)
        }
        fn describe(&self) -> String {
            self.0.clone()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
    Value::Function(Arc::new(Closure(name.to_owned(), f)))
}

/// What reached a sink: one event, or one list of events.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Event(Arc<Event>),
    List(Vec<Arc<Event>>),
}

/// What reached a sink by host: `"a"` for an event, `"[b,c]"` for a list.
pub fn shape(got: Vec<Received>) -> Vec<String> {
    got.iter()
        .map(|r| match r {
            Received::Event(e) => e.host.as_deref().unwrap_or("").to_owned(),
            Received::List(l) => {
                let hosts: Vec<&str> = l.iter().map(|e| e.host.as_deref().unwrap_or("")).collect();
                format!("[{}]", hosts.join(","))
            }
        })
        .collect()
}

/// A case of [`assert_restarts`]: a stream function, its positional
/// arguments, the steps after the restart, and the [`shape`] of what they
/// forward.
pub type RestartCase = (&'static str, Vec<Value>, Vec<Step>, Vec<&'static str>);

/// For each case, [`Harness::restart_between`] `before` and the case's
/// steps, on a node built from the case with a fresh harness.
pub fn assert_restarts(before: &[Step], cases: Vec<RestartCase>) {
    for (name, args, after, want) in cases {
        let h = Harness::new();
        let got = h.restart_between(
            |out| h.build(name, args.clone(), vec![], vec![out]),
            before,
            &after,
        );
        assert_eq!(shape(got), want, "{name}{args:?}");
    }
}

/// A collecting leaf, and what it collected.
#[derive(Clone)]
pub struct Sink(Arc<SinkNode>);

pub struct SinkNode {
    name: String,
    got: Arc<Mutex<Vec<Received>>>,
    core: NodeCore,
}

impl Sink {
    pub fn node(&self) -> NodeRef {
        self.0.clone()
    }

    /// Everything received so far, in order, and forgets it.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *lock(&self.0.got))
    }

    /// Every event received so far (lists flattened), and forgets them.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.take()
            .into_iter()
            .flat_map(|r| match r {
                Received::Event(e) => vec![e],
                Received::List(l) => l,
            })
            .collect()
    }

    /// The lists received so far (a single event counts as a list of one).
    pub fn lists(&self) -> Vec<Vec<Arc<Event>>> {
        self.take()
            .into_iter()
            .map(|r| match r {
                Received::Event(e) => vec![e],
                Received::List(l) => l,
            })
            .collect()
    }

    /// The metrics of the events received, and forgets them.
    pub fn metrics(&self) -> Vec<Option<f64>> {
        self.events()
            .iter()
            .map(|e| e.metric.map(|m| m.as_f64()))
            .collect()
    }

    /// The hosts of the events received, and forgets them.
    pub fn hosts(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e.host.as_deref().unwrap_or("").to_owned())
            .collect()
    }
}

impl Node for SinkNode {
    fn kind(&self) -> &'static str {
        "sink"
    }
    fn describe(&self) -> String {
        format!("sink({:?})", self.name)
    }
    fn stats(&self) -> &crate::streams::NodeStats {
        &self.core.stats
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn takes_lists(&self) -> bool {
        true
    }
    fn handle(&self, _ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        lock(&self.got).push(Received::Event(Arc::clone(event)));
        Ok(())
    }
    fn handle_list(&self, _ctx: &Context, events: &[Arc<Event>]) -> Result<(), NodeError> {
        lock(&self.got).push(Received::List(events.to_vec()));
        Ok(())
    }
    /// Forks of a sink (under `by`) record into the same list.
    fn fresh(&self) -> NodeRef {
        Arc::new(SinkNode {
            name: self.name.clone(),
            got: Arc::clone(&self.got),
            core: self.core.fresh(),
        })
    }
}
